"""Strict NumPy printer for element-wise expressions.

Customisations versus SymPy's ``NumPyPrinter``:

* strict: an unsupported function raises :class:`~symnn.errors.UnsupportedFunctionError`
  naming it, never partial code;
* numbers print as plain Python literals with 17 significant digits (``repr(float)``), never
  ``numpy.float64(...)`` or ``numpy.sqrt(2)``: NumPy scalars would upcast float32 arrays, Python
  scalars do not (NEP 50); a number past double's range prints ``np.inf``/``np.nan``, never the
  bare ``inf`` that raised NameError on every call (issue 18, item 7; the declaration refuses
  non-finite constants, so this is the last line);
* ``Max(x, 0)`` prints ``np.maximum`` (NaN-propagating, unlike ``fmax``);
* ``Heaviside(u, 0)`` prints ``np.where(u > 0, ...)``: the step is 0 at 0 (ReLU'(0) = 0); a
  product ``c * Heaviside(u, 0)`` prints ``c*(u > 0)`` (a third faster than ``np.where`` on small
  arrays; identical for finite ``c``, NaN rather than 0 where ``c`` is already infinite);
* ``Piecewise`` prints nested ``np.where`` (not ``np.select``), constant branches as ``_f(v)``
  so the result keeps the kernel's dtype;
* ``Sigmoid``/``Softplus`` print as the module's stable helpers, ``erf`` as SciPy's ``erf``;
* ``Guard`` (a declared domain) prints as ``_clamp`` to :func:`~symnn.functions.guard_bounds`
  of the printer's dtype, the same bounds the C printer uses.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
from sympy.printing.numpy import NumPyPrinter

from ...errors import UnsupportedFunctionError
from ...functions import Clamp, Guard, Sigmoid, Softplus, guard_bounds
from ..kinks import minmax_args, piecewise_parts, require_step, split_step
from ..literals import folded

try:  # SymPy >= 1.13
    from sympy.printing.codeprinter import PrintMethodNotImplementedError
except ImportError:  # pragma: no cover
    PrintMethodNotImplementedError = NotImplementedError  # type: ignore[misc,assignment]


def py_literal(value: float) -> str:
    """A Python expression for ``value``: its ``repr``, or ``np.inf``/``-np.inf``/``np.nan``."""
    if math.isfinite(value):
        return repr(value)
    return "np.nan" if math.isnan(value) else ("-" if value < 0 else "") + "np.inf"


class SymnnNumPyPrinter(NumPyPrinter):
    """Prints one scalar expression over array names as a NumPy expression string."""

    def __init__(self, dtype: str = "float64") -> None:
        super().__init__({"strict": True, "fully_qualified_modules": True})
        self.helpers: set[str] = set()
        self.dtype = dtype  # only a domain Guard's bounds depend on it

    def doprint_expr(self, expr: sp.Expr) -> str:
        # fold every constant into one 17-digit literal (exponents stay integers)
        expr = folded(expr)
        try:
            text = self.doprint(expr)
        except PrintMethodNotImplementedError as exc:
            raise UnsupportedFunctionError(
                f"the NumPy backend cannot print {expr}: {exc}"
            ) from exc
        return text.replace("numpy.", "np.")

    def _as_ordered_terms(self, expr: sp.Expr, order: str | None = None) -> list[sp.Expr]:
        """A sum's terms in SymPy's order, but a term without a minus sign first where there is
        one: ``a - y`` is one NumPy operation where ``-y + a`` is two (a negation, then a sum),
        and both give the same bits (negation is exact, IEEE addition commutes)."""
        terms = list(super()._as_ordered_terms(expr, order=order))
        for i, term in enumerate(terms):
            if not term.could_extract_minus_sign():
                return [term] + terms[:i] + terms[i + 1:]
        return terms

    # -- numbers -----------------------------------------------------------------------
    def _print_Float(self, expr: sp.Float) -> str:
        return py_literal(float(expr))

    def _print_Rational(self, expr: sp.Rational) -> str:
        return py_literal(float(expr)) if expr.q != 1 else str(expr.p)

    def _print_Half(self, expr: sp.Expr) -> str:
        return "0.5"

    def _print_Integer(self, expr: sp.Integer) -> str:
        return str(int(expr))

    def _print_NumberSymbol(self, expr: sp.Expr) -> str:
        return py_literal(float(expr))

    _print_Pi = _print_NumberSymbol
    _print_Exp1 = _print_NumberSymbol

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, e = expr.args
        if base.is_number and not e.is_number or (base.is_number and e.is_number):
            if expr.is_number:
                return py_literal(float(expr))
        if e.is_Number and float(e) == 0.5:  # 1/2 or, after nfloat, 0.5
            return f"np.sqrt({self._print(base)})"
        if e.is_Number and float(e) == -0.5:
            return f"1/np.sqrt({self._print(base)})"
        if e == -1:
            return f"1/{self.parenthesize(base, 60)}"
        if e.is_Integer and e < 0:
            return f"1/{self.parenthesize(base, 60)}**{-int(e)}"
        return f"{self.parenthesize(base, 60)}**{self.parenthesize(e, 60)}"

    def _print_Mul(self, expr: sp.Mul) -> str:
        if expr.is_number:
            return py_literal(float(expr))
        step = split_step(expr)
        if step is not None:
            u, rest = step
            return f"{self.parenthesize(rest, 50)}*({self._print(u)} > 0)"
        return super()._print_Mul(expr)

    # -- kinks ---------------------------------------------------------------------------
    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        return f"np.where({self._print(require_step(expr))} > 0, _f(1), _f(0))"

    def _print_Max(self, expr: sp.Max) -> str:
        args = [self._print(a) for a in minmax_args(expr)]
        out = args[0]
        for a in args[1:]:
            out = f"np.maximum({out}, {a})"
        return out

    def _print_Min(self, expr: sp.Min) -> str:
        args = [self._print(a) for a in minmax_args(expr)]
        out = args[0]
        for a in args[1:]:
            out = f"np.minimum({out}, {a})"
        return out

    def _branch(self, value: sp.Expr) -> str:
        return f"_f({self._print(value)})" if value.is_number else self._print(value)

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        pairs, last = piecewise_parts(expr)
        out = self._branch(last)
        for value, c in reversed(pairs):
            out = f"np.where({self._print(c)}, {self._branch(value)}, {out})"
        return out

    def _print_sign(self, expr: sp.sign) -> str:
        return f"np.sign({self._print(expr.args[0])})"

    # -- stable helpers and functions NumPy lacks -----------------------------------------
    def _print_Sigmoid(self, expr: Sigmoid) -> str:
        self.helpers.add("sigmoid")
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_Softplus(self, expr: Softplus) -> str:
        self.helpers.add("softplus")
        return f"_softplus({self._print(expr.args[0])})"

    def _print_Clamp(self, expr: Clamp) -> str:
        self.helpers.add("clamp")
        x, lo, hi = expr.args
        bounds = [repr(float(b)) if b.is_finite else ("-" if b < 0 else "") + "np.inf" for b in (lo, hi)]
        return f"_clamp({self._print(x)}, {bounds[0]}, {bounds[1]})"

    def _print_Guard(self, expr: Guard) -> str:
        self.helpers.add("clamp")
        x, lo, hi = expr.args
        bounds = [repr(b) if np.isfinite(b) else ("-" if b < 0 else "") + "np.inf"
                  for b in guard_bounds(lo, hi, self.dtype)]
        return f"_clamp({self._print(x)}, {bounds[0]}, {bounds[1]})"

    def _print_erf(self, expr: sp.Expr) -> str:
        self.helpers.add("erf")
        return f"_erf({self._print(expr.args[0])})"

    def _print_erfc(self, expr: sp.Expr) -> str:
        self.helpers.add("erf")
        return f"_erfc({self._print(expr.args[0])})"

    def _print_OnePlusErf(self, expr: sp.Expr) -> str:
        return self._print(sp.erfc(-expr.args[0], evaluate=False))
