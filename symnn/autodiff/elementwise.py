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


def partial_tex(fn: ir.Elementwise, index: int) -> str | None:
    """How the derivation names d fn / d arg[index]: ``\\sigma'`` for a function of one
    variable, ``\\partial_{p}\\ell`` for one of several; None when ``fn`` has no name."""
    if fn.tex is None:
        return None
    if len(fn.args) == 1:
        return fn.tex + "'"
    return r"\partial_{%s} %s" % (sp.latex(fn.args[index]), fn.tex)


def make_map(
    name: str, expr: sp.Expr, operands: list[tuple[sp.Symbol, ir.Node]], shape: ir.Shape,
    tex: str | None = None,
) -> ir.Node:
    """A MAP node over the operands ``expr`` actually uses (unused ones are dropped); ``tex``:
    the name the derivation prints it by (see :class:`symnn.ir.Elementwise`)."""
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
    # canonical argument symbols u0, u1, ... so identical maps intern to one node; a named
    # function keeps its own (x, p, y): the derivation prints its definition in them
    canon = {} if tex is not None else {sym: sp.Symbol(f"u{i}", real=True) for i, (sym, _) in enumerate(used)}
    fn = ir.Elementwise(name, tuple(canon.get(s, s) for s, _ in used), expr.xreplace(canon), tex=tex)
    return ir.map_(fn, *(n for _, n in used), shape=shape)
