"""Strict C99 printer for element-wise expressions, in double or float.

Customisations versus SymPy's ``C99CodePrinter``:

* strict: an unsupported function raises :class:`~symnn.errors.UnsupportedFunctionError`
  naming it, never a comment in place of code (sympy #14307);
* symbols print through an accessor table (``a1`` becomes ``a1[i*32 + j]``) that the kernel
  printer sets per statement; the batch size ``N`` prints as the real-typed local ``Nr``;
* numbers fold into one literal each, printed so they round-trip exactly: 17 significant
  digits for double, the shortest float repr plus ``F`` for float; ``pi`` and ``E`` are
  literals (``M_PI`` is POSIX, not C99);
* float: every libm call takes the ``f`` suffix and every literal the ``F`` suffix, so the
  code is clean under ``-Wdouble-promotion``;
* integer powers up to 4 print as products (``x*x``), others as ``pow``;
* ``Max``/``Min`` print as NaN-propagating helpers (``fmax`` would swallow a NaN);
* every choice prints as the file's ``pick(c, a, b)``, ``c ? a : b`` by bit masks, so that loops
  vectorise without masked vector instructions (see :meth:`SymnnCPrinter.pick`);
* ``Heaviside(u, 0)`` prints ``pick(u > 0, 1, 0)``: the step is 0 at 0 (ReLU'(0) = 0); a
  product ``c * Heaviside(u, 0)`` prints ``pick(u > 0, c, 0)``, which is 0 even for an infinite
  ``c`` (PyTorch's ``threshold_backward`` convention);
* ``Piecewise`` prints nested picks, ``sign`` a NaN-propagating helper;
* ``Sigmoid``/``Softplus`` print as the file's stable ``exp(-|x|)`` helpers;
* ``exp``, ``expm1`` and ``tanh`` print as the file's own branch-free versions
  (templates/c/_vmath.jinja), which gcc vectorises where a libm call per element is not;
* ``Guard`` (a declared domain) prints as the clamp helper to
  :func:`~symnn.functions.guard_bounds` of the dtype, the same bounds the NumPy printer uses.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy.codegen.ast import float32, float64, real
from sympy.printing.c import C99CodePrinter

from ... import naming
from ...errors import UnsupportedFunctionError
from ...functions import Clamp, Guard, Sigmoid, Softplus, guard_bounds
from ..kinks import minmax_args, piecewise_parts, require_step, split_step
from ..literals import folded

try:  # SymPy >= 1.13
    from sympy.printing.codeprinter import PrintMethodNotImplementedError
except ImportError:  # pragma: no cover
    PrintMethodNotImplementedError = NotImplementedError  # type: ignore[misc,assignment]

#: SymPy functions with a C99 libm counterpart (printed with the dtype's suffix).
_LIBM = {
    "exp", "log", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
    "tanh", "asinh", "acosh", "atanh", "erf", "erfc", "log1p", "expm1", "cbrt", "exp2",
    "log2", "log10", "floor", "ceiling", "loggamma",
}
_LIBM_NAME = {"ceiling": "ceil", "loggamma": "lgamma"}


def c_literal(value: float, dtype: str) -> str:
    """A C literal that parses back to exactly ``value`` rounded to ``dtype``."""
    if dtype == "float32":
        with np.errstate(over="ignore"):  # beyond float32's range: the literal is infinite
            v32 = np.float32(value)
        if not np.isfinite(v32):
            return ("-" if v32 < 0 else "") + "INFINITY" if np.isinf(v32) else "NAN"
        text = str(v32)
        if "e" not in text and "." not in text:
            text += ".0"
        return text + "F"
    v = float(value)
    if not np.isfinite(v):
        return ("-" if v < 0 else "") + "(double)INFINITY" if np.isinf(v) else "(double)NAN"
    text = repr(v)
    if "e" not in text and "." not in text:
        text += ".0"
    return text


class SymnnCPrinter(C99CodePrinter):
    """Prints one scalar expression for one array element, in the kernel's dtype."""

    def __init__(self, dtype: str = "float64", prefix: str = "model") -> None:
        settings = {"strict": True, "type_aliases": {real: float32 if dtype == "float32" else float64}}
        super().__init__(settings)
        self.dtype = dtype
        self.prefix = prefix
        self.suffix = "f" if dtype == "float32" else ""
        self.accessors: dict[str, str] = {}
        self.helpers: set[str] = set()

    def lit(self, value: float) -> str:
        return c_literal(value, self.dtype)

    def doprint_expr(self, expr: sp.Expr) -> str:
        expr = folded(expr)
        try:
            return self.doprint(expr)
        except PrintMethodNotImplementedError as exc:
            raise UnsupportedFunctionError(f"the C backend cannot print {expr}: {exc}") from exc

    # -- leaves ---------------------------------------------------------------------------
    def _print_Symbol(self, expr: sp.Symbol) -> str:
        if expr.name == naming.N.name:
            return "Nr"
        if expr.name in self.accessors:
            return self.accessors[expr.name]
        raise UnsupportedFunctionError(f"symbol {expr.name} has no storage in this kernel")

    def _print_Float(self, expr: sp.Float) -> str:
        return self.lit(float(expr))

    def _print_Rational(self, expr: sp.Rational) -> str:
        return self.lit(float(expr)) if expr.q != 1 else self.lit(float(expr.p))

    def _print_Integer(self, expr: sp.Integer) -> str:
        return self.lit(float(expr))

    def _print_Half(self, expr: sp.Expr) -> str:
        return self.lit(0.5)

    def _print_NumberSymbol(self, expr: sp.Expr) -> str:
        return self.lit(float(expr))

    _print_Pi = _print_NumberSymbol
    _print_Exp1 = _print_NumberSymbol
    _print_One = _print_Integer
    _print_Zero = _print_Integer
    _print_NegativeOne = _print_Integer

    def _print_Infinity(self, expr: sp.Expr) -> str:
        return self.lit(float("inf"))

    def _print_NegativeInfinity(self, expr: sp.Expr) -> str:
        return self.lit(float("-inf"))

    def _print_NaN(self, expr: sp.Expr) -> str:
        return self.lit(float("nan"))

    # -- arithmetic -----------------------------------------------------------------------
    def _print_Pow(self, expr: sp.Pow) -> str:
        base, e = expr.args
        if expr.is_number:
            return self.lit(float(expr))
        if e.is_Number and float(e) == 0.5:  # 1/2 or, after nfloat, 0.5
            return f"sqrt{self.suffix}({self._print(base)})"
        if e.is_Number and float(e) == -0.5:
            return f"({self.lit(1.0)}/sqrt{self.suffix}({self._print(base)}))"
        if e.is_Integer and 1 <= abs(int(e)) <= 4:
            b = self.parenthesize(base, 70)
            prod = "*".join([b] * abs(int(e)))
            if abs(int(e)) == 1:
                return prod if e > 0 else f"{self.lit(1.0)}/{prod}"
            # parenthesised: the caller may print it as a divisor ("a/(x*x)", not "a/x*x")
            return f"({prod})" if e > 0 else f"({self.lit(1.0)}/({prod}))"
        return f"pow{self.suffix}({self._print(base)}, {self._print(e)})"

    def _print_Mul(self, expr: sp.Mul) -> str:
        if expr.is_number:
            return self.lit(float(expr))
        step = split_step(expr)
        if step is not None:
            u, rest = step
            return self.pick(f"{self._print(u)} > 0", self._print(rest), self.lit(0.0))
        return super()._print_Mul(expr)

    # -- kinks (conventions checked in backends/kinks.py) ----------------------------------
    def pick(self, cond: str, a: str, b: str) -> str:
        """``cond ? a : b`` as the file's bit-mask select (templates/c/_vmath.jinja): both arms
        computed, one kept, no branch. A ``?:`` whose arms compute becomes a branch that GCC
        fills with the arms' arithmetic, which it may not run speculatively (-ftrapping-math):
        on a target without masked vectors (AVX2, SSE) the loop then stays scalar."""
        self.helpers.add("pick")
        return f"{self.prefix}__pick({cond}, {a}, {b})"

    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        return self.pick(f"{self._print(require_step(expr))} > 0", self.lit(1.0), self.lit(0.0))

    def _minmax(self, expr: sp.Expr, helper: str) -> str:
        self.helpers.add(helper)
        args = [self._print(a) for a in minmax_args(expr)]
        out = args[0]
        for a in args[1:]:
            out = f"{self.prefix}__{helper}({out}, {a})"
        return out

    def _print_Max(self, expr: sp.Max) -> str:
        return self._minmax(expr, "max")

    def _print_Min(self, expr: sp.Min) -> str:
        return self._minmax(expr, "min")

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        pairs, last = piecewise_parts(expr)
        out = self._print(last)
        for value, c in reversed(pairs):
            out = self.pick(self._print(c), self._print(value), out)
        return out

    def _print_sign(self, expr: sp.sign) -> str:
        self.helpers.add("sign")
        return f"{self.prefix}__sign({self._print(expr.args[0])})"

    def _print_Abs(self, expr: sp.Abs) -> str:
        return f"fabs{self.suffix}({self._print(expr.args[0])})"

    # -- functions ------------------------------------------------------------------------
    def _print_Function(self, expr: sp.Expr) -> str:
        name = type(expr).__name__
        if name in _LIBM:
            args = ", ".join(self._print(a) for a in expr.args)
            return f"{_LIBM_NAME.get(name, name)}{self.suffix}({args})"
        raise UnsupportedFunctionError(
            f"the C backend has no implementation of {name} (in {expr}); "
            f"supported functions: {', '.join(sorted(_LIBM))}, Abs, Max, Min, sign, Heaviside"
        )

    def _print_Sigmoid(self, expr: Sigmoid) -> str:
        self.helpers.add("sigmoid")
        return f"{self.prefix}__sigmoid({self._print(expr.args[0])})"

    def _print_Softplus(self, expr: Softplus) -> str:
        self.helpers.add("softplus")
        return f"{self.prefix}__softplus({self._print(expr.args[0])})"

    def _print_OnePlusErf(self, expr: sp.Expr) -> str:
        return f"erfc{self.suffix}({self._print(-expr.args[0])})"

    def _print_Clamp(self, expr: Clamp) -> str:
        self.helpers.add("clamp")
        x, lo, hi = expr.args
        big = float(np.finfo(self.dtype).max)  # a float64 bound past float32's range
        bounds = [self.lit(max(float(lo), -big) if lo.is_finite else float(lo)),
                  self.lit(min(float(hi), big) if hi.is_finite else float(hi))]
        return f"{self.prefix}__clamp({self._print(x)}, {bounds[0]}, {bounds[1]})"

    def _print_Guard(self, expr: Guard) -> str:
        self.helpers.add("clamp")
        x, lo, hi = expr.args
        bounds = [self.lit(b) for b in guard_bounds(lo, hi, self.dtype)]
        return f"{self.prefix}__clamp({self._print(x)}, {bounds[0]}, {bounds[1]})"


    def _print_vmath(self, expr: sp.Expr) -> str:
        name = type(expr).__name__
        self.helpers.add(name)
        return f"{self.prefix}__{name}({self._print(expr.args[0])})"


#: functions printed as the file's vectorisable helpers rather than libm calls
VMATH = ("exp", "expm1", "tanh")
#: the functions of templates/c/_vmath.jinja a file may define: VMATH, and exp_neg (exp of a
#: non-positive argument, the sigmoid's and softplus's exp(-|x|))
VMATH_HELPERS = (*VMATH, "exp_neg")

for _name in _LIBM:
    setattr(SymnnCPrinter, f"_print_{_name}", SymnnCPrinter._print_Function)
for _name in VMATH:
    setattr(SymnnCPrinter, f"_print_{_name}", SymnnCPrinter._print_vmath)
