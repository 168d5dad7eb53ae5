"""Pass ``reuse_forward_values``: write derivatives in terms of the forward output.

Where a backward map reads a pre-activation ``z`` only through ``f'(z)`` and the forward pass
already computed ``a = f(z)``, the derivative is rewritten in ``a``: sigmoid' = a(1-a),
tanh' = 1-a^2, exp' = a, ReLU' = [a > 0]. Three candidate forms are tried for each piece of
the expression that depends on ``z`` alone:

1. direct substitution of ``f(z)`` by ``a`` (SymPy already wrote tanh' = 1 - tanh(z)^2);
2. a polynomial of degree <= 2 in ``a``, fitted numerically and then *proved* by SymPy
   (``simplify(piece - g(f(z))) == 0``);
3. for piecewise/step pieces, the same piece evaluated at ``a`` instead of ``z``, accepted
   only when it agrees on a dense grid of probe points including the kink (ReLU, leaky ReLU).

Each accepted rewrite is recorded (before -> after) for the derivation report.
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp

from .. import ir
from ..derive.elementwise import make_map
from ..program import Program

_A = sp.Symbol("a", real=True)
_GRID = [-50.0, -20.0, -3.0, -1.0, -0.5, -1e-3, -1e-300, 0.0, 1e-300, 1e-3, 0.5, 1.0, 3.0, 20.0, 50.0]
_FIT = [-2.0, -0.7, 0.3, 1.1, 2.5]


@dataclass(frozen=True)
class Reuse:
    """One accepted rewrite: ``before`` in ``z`` equals ``after`` in ``a = f(z)``."""

    activation: str
    before: sp.Expr
    after: sp.Expr
    how: str


def _num(expr: sp.Expr, var: sp.Symbol, x: float) -> complex | None:
    try:
        v = complex(sp.N(expr.subs(var, sp.Float(x, 30)), 30))
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v.real) and np.isfinite(v.imag) else None


def _poly_in_output(piece: sp.Expr, f: sp.Expr, z: sp.Symbol) -> sp.Expr | None:
    """Find g with piece(z) == g(f(z)), g of degree <= 2; None if there is none."""
    rows, rhs = [], []
    for x in _FIT:
        p, a = _num(piece, z, x), _num(f, z, x)
        if p is None or a is None:
            return None
        rows.append([1.0, a.real, a.real**2])
        rhs.append(p.real)
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    if not np.allclose(np.array(rows) @ coef, rhs, rtol=1e-9, atol=1e-12):
        return None
    g = sum(sp.nsimplify(round(c, 9), rational=True) * _A**k for k, c in enumerate(coef))
    diff = piece - g.subs(_A, f)
    if sp.simplify(diff.rewrite(sp.exp)) != 0:
        return None
    return sp.expand(g)


def _same_at_output(piece: sp.Expr, f: sp.Expr, z: sp.Symbol) -> sp.Expr | None:
    """piece(a) if it equals piece(z) on the probe grid (step functions of a sign-preserving f)."""
    at_a = piece.subs(z, _A)
    for x in _GRID:
        a = _num(f, z, x)
        lhs, rhs = _num(piece, z, x), (None if a is None else _num(at_a, _A, a.real))
        if lhs is None or rhs is None or not mpmath.almosteq(lhs, rhs, 1e-14, 1e-300):
            return None
    return at_a


def _rewrite_piece(piece: sp.Expr, f: sp.Expr, z: sp.Symbol) -> tuple[sp.Expr, str] | None:
    direct = piece.subs(f, _A)
    if z not in direct.free_symbols:
        return direct, "substitution"
    if piece.has(sp.Heaviside, sp.Piecewise, sp.sign):
        found = _same_at_output(piece, f, z)
        return (found, "step function of the sign") if found is not None else None
    found = _poly_in_output(piece, f, z)
    return (found, "polynomial identity") if found is not None else None


def express_in_output(expr: sp.Expr, f: sp.Expr, z: sp.Symbol) -> tuple[sp.Expr, list[tuple[sp.Expr, sp.Expr, str]]] | None:
    """Rewrite ``expr`` so that ``z`` appears only through ``a = f(z)``; None if impossible."""
    done: list[tuple[sp.Expr, sp.Expr, str]] = []

    def walk(e: sp.Basic) -> sp.Basic | None:
        if z not in e.free_symbols:
            return e
        if isinstance(e, sp.Expr) and e.free_symbols == {z} and e != z:
            r = _rewrite_piece(e, f, z)
            if r is not None:
                done.append((e, r[0], r[1]))
                return r[0]
        if isinstance(e, sp.Mul):  # the product of the factors in z alone is one piece
            only_z = [t for t in e.args if t.free_symbols == {z}]
            rest = [t for t in e.args if t.free_symbols != {z}]
            if len(only_z) > 1:
                piece = sp.Mul(*only_z)
                r = _rewrite_piece(piece, f, z)
                if r is not None:
                    done.append((piece, r[0], r[1]))
                    rest_new = [walk(t) for t in rest]
                    if any(t is None for t in rest_new):
                        return None
                    return sp.Mul(r[0], *rest_new)
        if e.is_Atom:
            return None
        args = [walk(a) for a in e.args]
        if any(a is None for a in args):
            return None
        return e.func(*args)

    out = walk(expr)
    if out is None or z in out.free_symbols:
        return None
    return out, done


def reuse_forward_values(prog: Program, log: list[Reuse] | None = None) -> Program:
    # activation maps a = f(z): z -> (a node, f in the map's own argument symbol)
    producers: dict[int, ir.Node] = {}
    for node in prog.nodes():
        if node.op is ir.Op.MAP and len(node.src) == 1 and node.src[0].op is not ir.Op.MAP:
            if id(node) in prog.names:  # a named forward activation
                producers[id(node.src[0])] = node

    def visit(node: ir.Node, orig: ir.Node) -> ir.Node:
        if node.op is not ir.Op.MAP or id(orig) in prog.names:
            return node
        fn: ir.Elementwise = node.arg
        expr = fn.expr
        operands = list(zip(fn.args, node.src))
        changed = False
        for i, (sym, src) in enumerate(list(operands)):
            act = producers.get(id(src))
            if act is None:
                continue
            f = act.arg.expr.xreplace({act.arg.args[0]: sym})
            found = express_in_output(expr, f, sym)
            if found is None:
                continue
            new_expr, pieces = found
            a_sym = sp.Symbol(f"{sym.name}_out", real=True)
            expr = new_expr.xreplace({_A: a_sym})
            operands[i] = (a_sym, act)
            changed = True
            if log is not None:
                for before, after, how in pieces:
                    log.append(Reuse(act.arg.name, before.xreplace({sym: _Z}), after, how))
        if not changed:
            return node
        return make_map(fn.name, expr, operands, node.shape)

    return prog.rewrite(visit)


_Z = sp.Symbol("z", real=True)
