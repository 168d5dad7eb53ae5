"""Numerically stable scalar functions the simplifier introduces and the printers know.

They never appear in user input and are never differentiated: the simplifier rewrites
already-derived expressions into them (``1/(1+exp(-x))`` -> ``Sigmoid(x)``) after checking
the rewrite, and each printer gives them a stable implementation (``exp(-|x|)`` forms,
``log1p``). ``rewrite(sp.exp)`` turns them back into the plain formula for checks.
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.cfunctions import expm1


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


class Clamp(sp.Function):
    """``Clamp(x, lo, hi)``: x limited to [lo, hi] with NaN propagated, where an activation has
    already saturated to its limit (see :mod:`symnn.saturate`); derivative 1."""

    nargs = 3
    is_real = True

    @classmethod
    def eval(cls, x, lo, hi):
        if x.is_Number and lo.is_Number and hi.is_Number:
            if x is sp.nan:
                return sp.nan
            return lo if x < lo else hi if x > hi else x
        return None

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex == 1:
            return sp.S.One
        return sp.S.Zero

    def _eval_rewrite_as_exp(self, x, lo, hi, **kwargs):
        return x

    def _latex(self, printer, exp=None):
        s = printer._print(self.args[0])
        return s if exp is None else r"\left(%s\right)^{%s}" % (s, exp)


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
    :class:`Clamp` becomes its argument)."""
    return expr.replace(lambda e: isinstance(e, (Sigmoid, Softplus, Clamp, OnePlusErf, expm1)), lambda e: e.rewrite(sp.exp))
