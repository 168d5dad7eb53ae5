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

    def absorbable(src: ir.Node, into: ir.Node) -> bool:
        orig = origin.get(id(src), src)
        if id(orig) in protected:
            return False
        if src.op is ir.Op.CONST:
            return True
        if src.op is not ir.Op.MAP:
            return False
        if src.shape not in ((), tuple(into.shape)) and src.src and not _cheap(src.arg.expr):
            # a row (N, 1) or vector broadcast into a larger map: inlined, its formula would run
            # once per entry instead of once per row (LayerNorm's -(v + eps)^(-3/2)/2: a power
            # per entry)
            return False
        return consumers.get(id(orig), 0) == 1 or src.shape == () or not src.src

    def visit(node: ir.Node, orig: ir.Node) -> ir.Node:
        out = _visit(node)
        origin[id(out)] = orig
        return out

    def _visit(node: ir.Node) -> ir.Node:
        if node.op in _REDUCTIONS:
            return _scale_out(node)
        if node.op is not ir.Op.MAP:
            return node
        fn: ir.Elementwise = node.arg
        changed = False
        operands: list[tuple[sp.Symbol, ir.Node]] = []
        subs: dict[sp.Symbol, sp.Expr] = {}
        fresh = 0
        for sym, src in zip(fn.args, node.src):
            if absorbable(src, node):
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

    def _scale_out(node: ir.Node) -> ir.Node:
        """``rowsum(c * A)`` as ``c * rowsum(A)`` (likewise a column or total sum), where the
        scaled map is read by this sum alone: the factor goes to the small result, and the pass
        over A that only scaled it is gone (LayerNorm's ``-d`` before its row sum)."""
        (src,) = node.src
        if not absorbable(src, src) or len(src.src) != 1:
            return node
        (arg,) = src.arg.args
        coeff, rest = src.arg.expr.as_coeff_Mul()
        if rest != arg or coeff == 1 or tuple(src.src[0].shape) != tuple(src.shape):
            return node
        total = ir.Node(node.op, (src.src[0],), node.arg, node.shape)
        u = sp.Symbol("u", real=True)
        return make_map(src.arg.name, coeff * u, [(u, total)], node.shape)

    return prog.rewrite(visit)


#: the sums a constant factor moves out of (it then scales their smaller result)
_REDUCTIONS = frozenset({ir.Op.ROWSUM, ir.Op.SUM_ROWS, ir.Op.SUM})


def _cheap(expr: sp.Expr) -> bool:
    """At most one arithmetic operation and no function or non-integer power: as cheap per
    entry as the load of a broadcast value it replaces."""
    if any(isinstance(e, sp.Function) or (isinstance(e, sp.Pow) and not e.exp.is_Integer)
           for e in sp.preorder_traversal(expr)):
        return False
    return sp.count_ops(expr) <= 1
