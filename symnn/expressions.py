"""Checks and normal forms for the scalar SymPy expressions users hand to symnn.

Activations and losses are arbitrary SymPy expressions, so everything that can go wrong with
them is caught here, at declaration time, with a message naming the expression: wrong type
(S7), stray symbols (S5/S12), no dependence on the variable (S6), derivatives SymPy cannot
produce (S8), complex values on the real line (S9), kinks (S10) and removable singularities
(S11). :func:`derivative` is the one place ``sympy.diff`` is called on element-wise code, so
the conventions (ReLU'(0) = 0, i.e. ``Heaviside(0) = 0``) are applied in one place.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import sympy as sp

from .errors import InvalidExpressionError, NonDifferentiableError, SpecError
from .simplify.cost import cheapest


class NonSmoothWarning(UserWarning):
    """A user expression has kinks (Abs, Max, sign, Piecewise...) or is piecewise constant."""


#: Probe points for domain and singularity checks (exact rationals, so SymPy evaluates exactly).
PROBES = tuple(sp.Rational(v) for v in ("-3", "-1", "-1/1000", "0", "1/1000", "1", "3"))

_NON_SMOOTH = (sp.Abs, sp.Max, sp.Min, sp.sign, sp.Piecewise, sp.Heaviside)
_PIECEWISE_CONSTANT = (sp.floor, sp.ceiling, sp.frac)


def require_scalar_expr(expr: object, what: str) -> sp.Expr:
    """Return ``expr`` as a SymPy scalar expression or raise S7's error."""
    if isinstance(expr, (int, float)) and not isinstance(expr, bool):
        expr = sp.sympify(expr)
    if not isinstance(expr, sp.Expr) or isinstance(expr, sp.MatrixBase) or getattr(
        expr, "is_Matrix", False
    ):
        raise InvalidExpressionError(
            f"{what} must be a scalar SymPy expression, got {type(expr).__name__}: {expr!r}"
        )
    return expr


def require_symbols(expr: sp.Expr, allowed: Iterable[sp.Symbol], what: str) -> None:
    """S5/S12: every free symbol must be one of ``allowed``."""
    allowed = set(allowed)
    extra = expr.free_symbols - allowed
    if extra:
        names = ", ".join(sorted(str(s) for s in extra))
        expected = ", ".join(sorted(str(s) for s in allowed))
        raise InvalidExpressionError(
            f"{what} {expr} has free symbols {{{names}}}; only {{{expected}}} may appear"
        )


def _sign_times_arg(e: sp.Mul) -> sp.Expr:
    sgn = next(f for f in e.args if isinstance(f, sp.sign) and f.args[0] in e.args)
    u = sgn.args[0]
    rest = list(e.args)
    rest.remove(sgn)
    rest.remove(u)
    return sp.Mul(*rest) * sp.Abs(u)


def normalise_derivative(d: sp.Expr) -> sp.Expr:
    """Apply symnn's kink conventions to a derivative SymPy produced.

    ``Heaviside(x)`` gets the explicit value 0 at 0 (``Heaviside(x, 0)``): SymPy's default
    ``Heaviside(0) = 1/2`` would make ReLU'(0) = 1/2, unlike PyTorch, JAX and TensorFlow.
    ``sign`` is kept (sign(0) = 0 is already the L1 subgradient convention). The derivative
    of ``floor``/``ceiling`` (which SymPy leaves unevaluated) is 0.
    """
    d = d.replace(
        lambda e: isinstance(e, sp.Heaviside) and (len(e.args) == 1 or e.args[1] != 0),
        lambda e: sp.Heaviside(e.args[0], 0),
    )
    # u*sign(u) = |u| for every real u (0 included): lets 1/(1+|x|) - x sign(x)/(1+|x|)**2
    # cancel to 1/(1+|x|)**2, with no cancellation error at large |x|
    d = d.replace(
        lambda e: e.is_Mul and any(isinstance(f, sp.sign) and f.args[0] in e.args for f in e.args),
        _sign_times_arg,
    )
    # floor/ceiling are piecewise constant: derivative 0 almost everywhere (and at the jumps)
    return d.replace(
        lambda e: isinstance(e, sp.Derivative) and isinstance(e.expr, (sp.floor, sp.ceiling)),
        lambda e: sp.Integer(0),
    )


def derivative(expr: sp.Expr, var: sp.Symbol, what: str = "expression") -> sp.Expr:
    """``sympy.diff`` with the kink conventions applied and S8 checked."""
    d = normalise_derivative(sp.diff(expr, var))
    bad = [
        a
        for a in sp.preorder_traversal(d)
        if isinstance(a, (sp.Derivative, sp.Subs, sp.DiracDelta))
        or (isinstance(a, sp.Function) and isinstance(a.func, sp.core.function.UndefinedFunction))
    ]
    if bad:
        raise NonDifferentiableError(
            f"{what}: SymPy cannot differentiate {expr} with respect to {var} into code; "
            f"the derivative contains {bad[0]}"
        )
    return d


def _probe_values(expr: sp.Expr, var: sp.Symbol) -> dict[sp.Rational, sp.Expr]:
    """``expr`` at every probe point, to 30 digits.

    A float pass comes first: exp(exp(exp(exp(x)))) at x = 3 would make SymPy build a number
    with billions of digits (it ran a machine out of memory); beyond a double it counts as inf.
    """
    as_float = sp.lambdify(var, expr, modules="math")
    out: dict[sp.Rational, sp.Expr] = {}
    for at in PROBES:
        try:
            as_float(float(at))
        except OverflowError:
            out[at] = sp.oo
            continue
        except (ValueError, TypeError, ZeroDivisionError, NameError, AttributeError):
            pass  # complex, a pole or a function math lacks: SymPy decides below
        try:
            out[at] = sp.N(expr.subs(var, at), 30)
        except (ValueError, TypeError):  # Max/Min or a comparison of a non-real value: not real there
            out[at] = sp.I
    return out


def _is_bad_number(v: sp.Expr) -> bool:
    return v.has(sp.nan, sp.zoo, sp.oo, -sp.oo) or not v.is_number


def check_elementwise(expr: object, var: sp.Symbol, what: str, *, user: bool = True) -> sp.Expr:
    """Run S5-S11 on a one-variable element-wise expression.

    Returns the expression in a *real* symbol named like ``var`` (``var`` itself when it is
    already real).
    """
    expr = require_scalar_expr(expr, what)
    require_symbols(expr, {var}, what)
    if not var.is_real:  # check on the real line: SymPy then gives d|x|/dx = sign(x)
        real = sp.Symbol(var.name, real=True)
        expr, var = expr.xreplace({var: real}), real
    if var not in expr.free_symbols:
        raise SpecError(f"{what} {expr} does not depend on {var}: its derivative is identically 0")
    reduced = cheapest(expr)
    if var not in reduced.free_symbols:  # (x-2)/(2-x): the emitted code would be the constant
        raise SpecError(f"{what} {expr} is the constant {reduced} wherever it is defined: "
                        "its derivative is identically 0")
    if user:
        if expr.has(*_PIECEWISE_CONSTANT):
            warnings.warn(
                f"{what} {expr} is piecewise constant: zero gradient almost everywhere",
                NonSmoothWarning,
                stacklevel=3,
            )
        elif expr.has(*_NON_SMOOTH):
            warnings.warn(
                f"{what} {expr} is not smooth; its derivative at a kink is taken as 0",
                NonSmoothWarning,
                stacklevel=3,
            )
    d = derivative(expr, var, what)
    if cheapest(d) == 0:  # sin(x)**2 + cos(x)**2: constant although no rewrite shows it
        raise SpecError(f"{what} {expr} is constant: its derivative is identically 0")
    values = _probe_values(expr, var)
    for at, v in values.items():
        if v.is_number and not _is_bad_number(v) and sp.im(v) != 0:
            raise InvalidExpressionError(
                f"{what} {expr} is not real at {var} = {at} (value {v}); "
                "activations must be real on the whole real line"
            )
    slopes = _probe_values(d, var)
    for at in PROBES:
        for label, val in (("value", values[at]), ("derivative", slopes[at])):
            if _is_bad_number(val) or sp.im(val) != 0:
                raise NonDifferentiableError(
                    f"{what} {expr}: the {label} is undefined at {var} = {at} "
                    f"({label} {val}); rewrite the expression without the singularity "
                    "(e.g. with Piecewise giving the limit)"
                )
    return expr
