"""Numerically stable scalar functions the simplifier introduces and the printers know.

They never appear in user input and are never differentiated: the simplifier rewrites
already-derived expressions into them (``1/(1+exp(-x))`` -> ``Sigmoid(x)``) after checking
the rewrite, and each printer gives them a stable implementation (``exp(-|x|)`` forms,
``log1p``). ``rewrite(sp.exp)`` turns them back into the plain formula for checks.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
from sympy.codegen.cfunctions import expm1

from .errors import CodegenError


class Sigmoid(sp.Function):
    """Logistic function 1/(1+exp(-x)), printed in the ``exp(-|x|)`` form."""

    nargs = 1
    is_real = True

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))

    def _latex(self, printer, exp=None):
        s = r"\sigma\left(%s\right)" % printer._print(self.args[0])
        return s if exp is None else r"%s^{%s}" % (s, exp)


class Softplus(sp.Function):
    """log(1+exp(x)), printed as ``max(x,0) + log1p(exp(-|x|))``."""

    nargs = 1
    is_real = True

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))

    def _latex(self, printer, exp=None):
        s = r"\operatorname{softplus}\left(%s\right)" % printer._print(self.args[0])
        return s if exp is None else r"%s^{%s}" % (s, exp)


class _PassThrough(sp.Function):
    """``F(x, lo, hi)`` that keeps x inside bounds for the printed code only: derivative 1 in x
    (the chain rule passes the formula's own slope), the mathematics rewrites it to x, LaTeX
    prints x. :class:`Clamp` and :class:`Guard` differ only in what the bounds mean."""

    nargs = 3
    is_real = True

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex == 1:
            return sp.S.One
        return sp.S.Zero

    def _eval_rewrite_as_exp(self, x, lo, hi, **kwargs):
        return x

    def _latex(self, printer, exp=None):
        s = printer._print(self.args[0])
        return s if exp is None else r"\left(%s\right)^{%s}" % (s, exp)


class Clamp(_PassThrough):
    """``Clamp(x, lo, hi)``: x limited to [lo, hi] with NaN propagated, where an activation has
    already saturated to its limit (see :mod:`symnn.saturate`); derivative 1."""

    @classmethod
    def eval(cls, x, lo, hi):
        if x.is_Number and lo.is_Number and hi.is_Number:
            if x is sp.nan:
                return sp.nan
            return lo if x < lo else hi if x > hi else x
        return None


class Guard(_PassThrough):
    """``Guard(x, lo, hi)``: x kept inside the open domain ``(lo, hi)`` that a user loss or
    activation declared, where its formula is undefined at the ends (``log(p)`` at p = 0).

    The printers clip x into ``guard_bounds(lo, hi, dtype)``, a few ulps inside each finite end
    (NaN propagated). Inside that interval the guard changes nothing; outside it the formula and
    its derivative are evaluated at the clipped point: the derivative is 1, like
    :class:`Clamp`'s, so the chain rule passes the formula's own slope there (finite) rather
    than 0. The mathematics never sees it: :func:`plain` removes it, LaTeX prints its argument.
    """


def guard_bounds(lo: sp.Expr, hi: sp.Expr, dtype: str) -> tuple[float, float]:
    """Where :class:`Guard` clips in ``dtype``: ``[lo + eps*max(1, |lo|), hi - eps*max(1, |hi|)]``
    with ``eps`` the dtype's machine epsilon (2**-52 float64, 2**-23 float32), each end rounded
    to the dtype towards the inside of the domain; an infinite end stays infinite.

    Why this eps: for the domain (0, 1) the clipped ends are 2.2e-16 and 1 - 2.2e-16 (float64),
    1.2e-7 and 1 - 1.2e-7 (float32), both exact in the dtype, so ``log(p)``, ``log(1 - p)`` and
    ``1/p`` stay finite (``-log(eps)`` is 36.0 and 15.9), and any prediction the dtype can
    tell apart from the end by more than an epsilon is untouched. The ``max(1, |end|)`` keeps
    the step at least one ulp for ends beyond 1, so the clipped end is never the end itself.
    """
    np_dtype = np.dtype(dtype).type
    eps = float(np.finfo(np_dtype).eps)

    def inward(end: sp.Expr, side: int) -> float:
        v = float(end)
        if math.isinf(v):
            return v
        target = v + side * eps * max(1.0, abs(v))
        with np.errstate(over="ignore"):  # an end past float32's range rounds to inf first
            rounded = np_dtype(target)
        if side * (float(rounded) - v) <= 0:  # rounding fell back onto (or past) the end
            rounded = np.nextafter(rounded, np_dtype(side * math.inf))
        return float(rounded)

    inner = inward(lo, +1), inward(hi, -1)
    if not inner[0] < inner[1]:
        raise CodegenError(f"the domain ({float(lo):g}, {float(hi):g}) is too narrow for {dtype}: "
                           f"nothing lies {eps:.3g} (relative) inside both ends")
    return inner


class OnePlusErf(sp.Function):
    """1 + erf(x), printed as ``erfc(-x)``: no cancellation at negative x (GELU).

    Its own class because SymPy rewrites ``erfc(-x)`` to ``2 - erfc(x)`` on construction."""

    nargs = 1
    is_real = True

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 + sp.erf(x)

    def _latex(self, printer, exp=None):
        s = r"\left(1 + \operatorname{erf}\left(%s\right)\right)" % printer._print(self.args[0])
        return s if exp is None else r"%s^{%s}" % (s, exp)


def plain(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every stable function written back as its defining formula (a
    :class:`Clamp` or :class:`Guard` becomes its argument)."""
    return expr.replace(lambda e: isinstance(e, (Sigmoid, Softplus, Clamp, Guard, OnePlusErf, expm1)), lambda e: e.rewrite(sp.exp))
