"""Pass ``fuse_elementwise``: compose chains of element-wise maps into one expression.

A MAP whose operand is another MAP used nowhere else (or a constant, or a scalar) absorbs
that operand's expression, so ``dL/dz = (dL/da) * f'(z)`` becomes one expression SymPy can
cancel (sigmoid + MSE, scale factors, the seed ``1``). Fewer maps also means fewer array
passes in the emitted code.
"""

from __future__ import annotations

import sympy as sp

from .. import ir
from ..autodiff.elementwise import make_map
from ..program import Program
from .cost import cheapest


def fuse_elementwise(prog: Program) -> Program:
    consumers = prog.consumers()
    protected = {id(n) for n in prog.name_nodes} | {id(n) for n in prog.outputs.values()}
    origin: dict[int, ir.Node] = {}  # rebuilt node -> the original it replaces

    def absorbable(src: ir.Node) -> bool:
        orig = origin.get(id(src), src)
        if id(orig) in protected:
            return False
        if src.op is ir.Op.CONST:
            return True
        if src.op is not ir.Op.MAP:
            return False
        return consumers.get(id(orig), 0) == 1 or src.shape == () or not src.src

    def visit(node: ir.Node, orig: ir.Node) -> ir.Node:
        out = _visit(node)
        origin[id(out)] = orig
        return out

    def _visit(node: ir.Node) -> ir.Node:
        if node.op is not ir.Op.MAP:
            return node
        fn: ir.Elementwise = node.arg
        changed = False
        operands: list[tuple[sp.Symbol, ir.Node]] = []
        subs: dict[sp.Symbol, sp.Expr] = {}
        fresh = 0
        for sym, src in zip(fn.args, node.src):
            if absorbable(src):
                changed = True
                if src.op is ir.Op.CONST:
                    subs[sym] = src.arg
                    continue
                inner: ir.Elementwise = src.arg
                rename = {}
                for a, s in zip(inner.args, src.src):
                    new = sp.Symbol(f"v{fresh}", real=True)
                    fresh += 1
                    rename[a] = new
                    operands.append((new, s))
                subs[sym] = inner.expr.xreplace(rename)
            else:
                operands.append((sym, src))
        if not changed:
            return node
        expr = cheapest(fn.expr.xreplace(subs))
        return make_map(fn.name, expr, operands, node.shape)

    return prog.rewrite(visit)
