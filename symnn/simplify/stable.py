"""Pass ``stabilise``: rewrite element-wise expressions into numerically stable forms.

* ``log(1 + exp(v))`` -> ``Softplus(v)`` (printed ``max(v,0) + log1p(exp(-|v|))``), so BCE from
  logits is finite at v = 40 (float64) / 17 (float32) and at v = -800.
* ``exp(v) - 1`` -> ``expm1(v)`` (ELU at small negative inputs), ``1 + erf(v)`` ->
  ``OnePlusErf(v)``, printed ``erfc(-v)`` (GELU at negative inputs).
* every ``exp(v)`` that appears in a ``1 + exp(v)`` denominator -> written with ``Sigmoid``
  (printed in the ``exp(-|x|)`` form): SymPy's own sigmoid derivative
  ``exp(-x)/(1+exp(-x))**2`` is NaN for x <= -710, its rewrite ``Sigmoid(x)*(1-Sigmoid(x))``
  never is.

tanh is left alone: the printers map it to libm/NumPy ``tanh``, which saturates exactly.
Every rewrite is checked numerically (30 digits) against the plain expression at probe
points before it is accepted; a rewrite that fails the check is not applied.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp
from sympy.codegen.cfunctions import expm1

from .. import ir
from ..functions import OnePlusErf, Sigmoid, Softplus, plain
from ..program import Program


_S = sp.Dummy("S", real=True)
_PROBE = (-30, -2.5, -0.3, 0.7, 1.9, 25)


def _agrees(a: sp.Expr, b: sp.Expr) -> bool:
    syms = sorted(a.free_symbols | b.free_symbols, key=str)
    for k, x in enumerate(_PROBE):
        point = {s: sp.Float(x + 0.37 * j * (1 + k % 2), 30) for j, s in enumerate(syms)}
        va = sp.N(plain(a).subs(point), 30)
        vb = sp.N(plain(b).subs(point), 30)
        if not (va.is_number and vb.is_number):
            return False
        if sp.Abs(va - vb) > 1e-20 + 1e-18 * sp.Abs(vb):  # in SymPy: exp(exp(25)) overflows a complex
            return False
    return True


def _one_plus_exp_arg(e: sp.Expr) -> sp.Expr | None:
    if isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args:
        other = e.args[0] if e.args[1] == 1 else e.args[1]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _pair(e: sp.Expr, func: type, sign: int, stable: type) -> sp.Expr | None:
    """``e`` (an Add holding the terms c*func(v) and sign*c) with that pair as
    ``c*stable(v)``: exp(v) - 1 -> expm1(v) (sign -1), 1 + erf(v) -> OnePlusErf(v) (sign +1)."""
    if not isinstance(e, sp.Add):
        return None
    for t in e.args:
        c, f = t.as_coeff_Mul()
        if isinstance(f, func) and sign * c in e.args:
            rest = [u for u in e.args if u is not t and u != sign * c]
            return sp.Add(*rest, c * stable(f.args[0]))
    return None


@functools.lru_cache(maxsize=4096)
def stabilise_expr(expr: sp.Expr) -> sp.Expr:
    """The stable form of one scalar expression (unchanged when no rule applies).

    Remembered: the same maps recur in every kernel of a network and across networks (a
    derivation of a batch-normalised CNN stabilised 1,235 expressions, most of them repeats).
    An expression no rule rewrote is returned without the numeric check, which compares a
    rewrite with the original at 30 digits and was most of the pass's time."""
    expr0 = expr
    # exp(v) - 1 -> expm1(v): ELU's alpha*(exp(x) - 1) keeps full precision at small |x|
    expr = expr.replace(lambda e: _pair(e, sp.exp, -1, expm1) is not None, lambda e: _pair(e, sp.exp, -1, expm1))
    # 1 + erf(v) -> erfc(-v): GELU at negative inputs, where 1 + erf cancels
    expr = expr.replace(lambda e: _pair(e, sp.erf, 1, OnePlusErf) is not None,
                        lambda e: _pair(e, sp.erf, 1, OnePlusErf))
    out = expr.replace(
        lambda e: isinstance(e, sp.log) and _one_plus_exp_arg(e.args[0]) is not None,
        lambda e: Softplus(_one_plus_exp_arg(e.args[0])),
    )
    args = {_one_plus_exp_arg(e) for e in sp.preorder_traversal(out)} - {None}
    for v in sorted(args, key=sp.default_sort_key):
        # exp(v) = (1-S)/S with S = sigmoid(-v); exp(-v) = S/(1-S)
        cand = out.xreplace({sp.exp(v): (1 - _S) / _S, sp.exp(-v): _S / (1 - _S)})
        cand = sp.factor(sp.cancel(cand))
        if cand.has(sp.exp(v)) or cand.has(sp.exp(-v)):
            continue
        cand = cand.xreplace({_S: Sigmoid(-v)})
        # 1 - sigmoid(-u) = sigmoid(u): keep the argument's sign as the user wrote it
        cand = cand.replace(
            lambda e: isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args
            and any(isinstance(-t, Sigmoid) for t in e.args),
            lambda e: Sigmoid(-[-t for t in e.args if isinstance(-t, Sigmoid)][0].args[0]),
        )
        # sigmoid(u) - 1 = -sigmoid(-u): no cancellation where sigmoid(u) is near 1
        cand = cand.replace(
            lambda e: isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.NegativeOne in e.args
            and any(isinstance(t, Sigmoid) for t in e.args),
            lambda e: -Sigmoid(-[t for t in e.args if isinstance(t, Sigmoid)][0].args[0]),
        )
        if _agrees(cand, out):
            out = cand
    if out == expr0:  # no rule applied
        return expr0
    if _agrees(out, expr0):
        return out
    return expr if _agrees(expr, expr0) else expr0


@dataclass(frozen=True)
class Stabilised:
    """One accepted rewrite of an element-wise map into a stable form, for the derivation."""

    name: str
    before: sp.Expr
    after: sp.Expr


def stabilise(prog: Program, log: list[Stabilised] | None = None) -> Program:
    """Every map rewritten by :func:`stabilise_expr`; each distinct rewrite is logged once."""
    def visit(node: ir.Node, orig: ir.Node) -> ir.Node:
        if node.op is not ir.Op.MAP:
            return node
        fn: ir.Elementwise = node.arg
        new = stabilise_expr(fn.expr)
        if new == fn.expr:
            return node
        if log is not None and all((r.before, r.after) != (fn.expr, new) for r in log):
            log.append(Stabilised(fn.name, fn.expr, new))
        new_fn = ir.Elementwise(fn.name, fn.args, new)
        return ir.map_(new_fn, *node.src, shape=node.shape)

    return prog.rewrite(visit)



