"""Element-wise derivative helpers: ``sympy.diff`` plus the operand plumbing of MAP nodes."""

from __future__ import annotations

import sympy as sp

from .. import ir
from ..expressions import derivative


def partial(fn: ir.Elementwise, index: int) -> sp.Expr:
    """d fn / d arg[index]: a proven override when the function carries one, else sympy.diff."""
    if fn.grads is not None and fn.grads[index] is not None:
        return fn.grads[index]
    return derivative(fn.expr, fn.args[index], f"{fn.name}")


def make_map(
    name: str, expr: sp.Expr, operands: list[tuple[sp.Symbol, ir.Node]], shape: ir.Shape
) -> ir.Node:
    """A MAP node over the operands ``expr`` actually uses (unused ones are dropped)."""
    used: list[tuple[sp.Symbol, ir.Node]] = []
    seen: dict[int, sp.Symbol] = {}
    subs: dict[sp.Symbol, sp.Symbol] = {}
    for sym, node in operands:
        if sym not in expr.free_symbols:
            continue
        if id(node) in seen:  # the same node bound twice: one operand
            subs[sym] = seen[id(node)]
            continue
        seen[id(node)] = sym
        used.append((sym, node))
    if subs:
        expr = expr.xreplace(subs)
    # canonical argument symbols a0, a1, ... so identical maps intern to one node
    canon = {sym: sp.Symbol(f"u{i}", real=True) for i, (sym, _) in enumerate(used)}
    fn = ir.Elementwise(name, tuple(canon.values()), expr.xreplace(canon))
    return ir.map_(fn, *(n for _, n in used), shape=shape)
