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

import functools
from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp

from .. import ir
from ..autodiff.elementwise import make_map
from ..program import Program

_A = sp.Symbol("a", real=True)
_GRID = [-50.0, -20.0, -3.0, -1.0, -0.5, -1e-3, -1e-300, 0.0, 1e-300, 1e-3, 0.5, 1.0, 3.0, 20.0, 50.0]
_FIT = [-2.0, -0.7, 0.3, 1.1, 2.5]
#: a fit whose design matrix [1, a, a^2] is worse conditioned than this determines nothing
_MAX_COND = 1e8
#: ``simplify`` has no time bound: the proof runs only on a difference (in exponentials) of at
#: most this many operations (the built-ins' identities, sigmoid' = a(1-a), have at most 18); a
#: bigger piece is left as it is, which costs a few operations and is never wrong (issue 18,
#: item 6: a product of 26 tanh factors spent over 10 minutes here)
_MAX_PROOF_OPS = 80
#: |piece - g(f)| / (1 + |piece|) on the grid (30 digits) above which the identity is refuted
_PROOF_TOL = 1e-20


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


@functools.lru_cache(maxsize=32)
def _output_at_fit(f: sp.Expr, z: sp.Symbol) -> tuple[complex | None, ...]:
    """f at the fit points, once per activation: every piece of its derivative is fitted
    against these (100 pieces of a 100-term activation spent 40 s re-evaluating them)."""
    return tuple(_num(f, z, x) for x in _FIT)


def _poly_in_output(piece: sp.Expr, f: sp.Expr, z: sp.Symbol) -> sp.Expr | None:
    """Find g with piece(z) == g(f(z)), g of degree <= 2; None if there is none."""
    rows, rhs = [], []
    for x, a in zip(_FIT, _output_at_fit(f, z)):
        p = _num(piece, z, x)
        if p is None or a is None:
            return None
        rows.append([1.0, a.real, a.real**2])
        rhs.append(p.real)
    design = np.array(rows)
    if np.linalg.cond(design) > _MAX_COND:  # f (nearly) constant at the fit points: any g fits
        return None
    coef, *_ = np.linalg.lstsq(design, np.array(rhs), rcond=None)
    if not np.allclose(design @ coef, rhs, rtol=1e-9, atol=1e-12):
        return None
    g = sum(sp.nsimplify(round(c, 9), rational=True) * _A**k for k, c in enumerate(coef))
    diff = piece - g.subs(_A, f)
    if not _vanishes_on_grid(diff, piece, z):
        return None
    claim = diff.rewrite(sp.exp)
    if sp.count_ops(claim) > _MAX_PROOF_OPS or not (_cancels(claim, z) or sp.simplify(claim) == 0):
        return None
    return sp.expand(g)


def _cancels(claim: sp.Expr, z: sp.Symbol) -> bool:
    """An exact proof that ``claim`` is 0 where it is a rational function of exp(z): each
    exp(k*z) (k an integer) becomes t**k, and ``cancel`` decides the zero of what results (what
    else depends on z stays a generator of its own, so a False is no verdict). The identities of
    the built-in activations' derivatives (a sigmoid's, a tanh's, an ELU's) are all of this kind,
    in milliseconds; SymPy's ``simplify``, a heuristic whose first call also imports
    sympy.physics (half a second of every cold compile), runs only where this says nothing."""
    t = sp.Dummy("t", positive=True)

    def integer_multiple(e: sp.Basic) -> bool:
        return isinstance(e, sp.exp) and sp.cancel(e.args[0] / z).is_Integer

    swapped = claim.replace(integer_multiple, lambda e: t ** int(sp.cancel(e.args[0] / z)))
    return sp.cancel(sp.together(swapped)) == 0


def _vanishes_on_grid(diff: sp.Expr, piece: sp.Expr, z: sp.Symbol) -> bool:
    """A cheap refutation before the proof: ``diff`` is 0 (to 30 digits, relative to the
    piece) wherever both evaluate on the probe grid. A piece that is constant at the fit points
    only (``tanh(60 z)**2``: 1 to 30 digits at |z| >= 0.3) is caught near 0 instead of by a
    ``simplify`` of minutes."""
    for x in _GRID:
        v, scale = _num(diff, z, x), _num(piece, z, x)
        if v is not None and scale is not None and abs(v) > _PROOF_TOL * (1 + abs(scale)):
            return False
    return True


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
        if id(orig) in prog.names:
            return node
        return in_outputs(node, producers, log)

    return prog.rewrite(visit)


def in_outputs(node: ir.Node, producers: dict[int, ir.Node], log: list[Reuse] | None = None) -> ir.Node:
    """The map ``node`` with each operand z that only ``f'(z)`` reads written in ``a = f(z)``, where
    ``producers[id(z)]`` is the map computing a (a forward activation; a value a loop stored)."""
    if node.op is not ir.Op.MAP:
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


_Z = sp.Symbol("z", real=True)
