"""Checks and normal forms for the scalar SymPy expressions users hand to symnn.

Activations and losses are arbitrary SymPy expressions, so everything that can go wrong with
them is caught here, at declaration time, with a message naming the expression: wrong type
(S7), stray symbols (S5/S12), no dependence on the variable (S6), derivatives SymPy cannot
produce (S8), complex values on the real line (S9), kinks (S10) and removable singularities
(S11). :func:`derivative` is the one place ``sympy.diff`` is called on element-wise code, so
the conventions (ReLU'(0) = 0, i.e. ``Heaviside(0) = 0``) are applied in one place.

An expression defined only on an interval (``log(p)``, ``sqrt(x)``) declares it as its
*domain* ``(lo, hi)``: the checks then probe inside that open interval only, and the emitted
code keeps the variable inside it (:class:`symnn.functions.Guard`).
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Iterable

import numpy as np
import sympy as sp

from .errors import ConfigError, InvalidExpressionError, NonDifferentiableError, SpecError, SpecTypeError
from .simplify.cost import cheapest


class NonSmoothWarning(UserWarning):
    """A user expression has kinks (Abs, Max, sign, Piecewise...) or is piecewise constant."""


#: Probe points for domain and singularity checks (exact rationals, so SymPy evaluates exactly).
PROBES = tuple(sp.Rational(v) for v in ("-3", "-1", "-1/1000", "0", "1/1000", "1", "3"))

#: A declared domain: the open interval ``(lo, hi)`` (floats, one side may be infinite).
Domain = tuple[float, float]

#: where probes sit inside a bounded domain, as fractions of its width (both ends are probed
#: 1/1000 of the width inside, as the real-line probes straddle 0 at +-1/1000)
_INTERVAL_STEPS = tuple(sp.Rational(v) for v in ("1/1000", "1/4", "1/2", "3/4", "999/1000"))
#: ... and the distances from the finite end of a half-line
_HALF_LINE_STEPS = tuple(sp.Rational(v) for v in ("1/1000", "1", "3"))

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


def _real_number(value: object, what: str) -> float:
    """A domain end as a float: int, float, NumPy or SymPy real (``sp.oo`` included), not bool."""
    if isinstance(value, (bool, np.bool_)):
        raise SpecTypeError(f"{what} must be a real number, got bool {value!r}")
    if isinstance(value, sp.Basic):
        if not (value.is_number and value.is_extended_real):
            raise SpecTypeError(f"{what} must be a real number, got {value!r}")
        return float(value)
    if not isinstance(value, numbers.Real):
        raise SpecTypeError(f"{what} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def require_domain(value: object, what: str) -> Domain | None:
    """Validate a declared domain: ``None``, or ``(lo, hi)`` with ``lo < hi`` (either end may
    be infinite, written ``math.inf`` or ``sp.oo``). ``(-inf, inf)`` is the real line: None."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise SpecTypeError(f"{what}: domain must be a pair (lo, hi), got {value!r}")
    lo = _real_number(value[0], f"{what}: domain lower end")
    hi = _real_number(value[1], f"{what}: domain upper end")
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise ConfigError(f"{what}: domain (lo, hi) needs lo < hi, got ({value[0]}, {value[1]})")
    if (lo, hi) == (-math.inf, math.inf):
        return None
    return lo, hi


def domain_text(domain: Domain) -> str:
    """``(0, 1)``, ``(0, inf)``, ``(1/10, 1/2)``: a domain as the user would write it."""
    return "(" + ", ".join(str(exact_bound(v)) if math.isfinite(v) else repr(v) for v in domain) + ")"


def exact_bound(v: float) -> sp.Expr:
    """A domain end as an exact SymPy number: the shortest decimal that reads back as ``v``
    (``0.1`` -> ``1/10``), or ``oo``/``-oo``."""
    if math.isinf(v):
        return sp.oo if v > 0 else -sp.oo
    return sp.Rational(repr(v))


def probe_points(domain: Domain | None) -> tuple[sp.Rational, ...]:
    """The exact points the checks evaluate at: :data:`PROBES` on the real line; in a domain,
    those of them inside it plus points near each finite end and across it."""
    if domain is None:
        return PROBES
    lo, hi = (exact_bound(v) for v in domain)
    inside = {v for v in PROBES if lo < v < hi}
    if lo.is_finite and hi.is_finite:
        inside |= {lo + (hi - lo) * t for t in _INTERVAL_STEPS}
    elif lo.is_finite:
        inside |= {lo + d for d in _HALF_LINE_STEPS}
    else:
        inside |= {hi - d for d in _HALF_LINE_STEPS}
    return tuple(sorted(inside))


def warn_non_smooth(expr: sp.Expr, what: str, *, shown: sp.Expr | None = None,
                    stacklevel: int = 2) -> None:
    """S10: warn about kinks and flat pieces of ``expr``, printing ``shown`` (default ``expr``):
    the expression as the user wrote it, in the user's symbols."""
    show = expr if shown is None else shown
    if expr.has(*_PIECEWISE_CONSTANT):
        warnings.warn(
            f"{what} {show} is piecewise constant: zero gradient almost everywhere",
            NonSmoothWarning,
            stacklevel=stacklevel + 1,
        )
    elif expr.has(*_NON_SMOOTH):
        warnings.warn(
            f"{what} {show} is not smooth; its derivative at a kink is taken as 0",
            NonSmoothWarning,
            stacklevel=stacklevel + 1,
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


def _probe_values(
    expr: sp.Expr, var: sp.Symbol, points: tuple[sp.Rational, ...]
) -> dict[sp.Rational, sp.Expr]:
    """``expr`` at every probe point, to 30 digits.

    A float pass comes first: exp(exp(exp(exp(x)))) at x = 3 would make SymPy build a number
    with billions of digits (it ran a machine out of memory); beyond a double it counts as inf.
    """
    as_float = sp.lambdify(var, expr, modules="math")
    out: dict[sp.Rational, sp.Expr] = {}
    for at in points:
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


def check_elementwise(
    expr: object,
    var: sp.Symbol,
    what: str,
    *,
    user: bool = True,
    domain: Domain | None = None,
    shown: sp.Expr | None = None,
) -> sp.Expr:
    """Run S5-S11 on a one-variable element-wise expression.

    Args:
        user: warn about kinks (S10); a caller that warns itself passes False.
        domain: probe only inside this open interval (S9 "unless the user declares a domain").
        shown: the expression messages print, when ``expr`` is a derived form of it (a loss
            with its target fixed at a probe value is reported as the user wrote it).

    Returns the expression in a *real* symbol named like ``var`` (``var`` itself when it is
    already real).
    """
    expr = require_scalar_expr(expr, what)
    require_symbols(expr, {var}, what)
    if not var.is_real:  # check on the real line: SymPy then gives d|x|/dx = sign(x)
        real = sp.Symbol(var.name, real=True)
        expr, var = expr.xreplace({var: real}), real
    show = expr if shown is None else shown
    if var not in expr.free_symbols:
        raise SpecError(f"{what} {show} does not depend on {var}: its derivative is identically 0")
    reduced = cheapest(expr)
    if var not in reduced.free_symbols:  # (x-2)/(2-x): the emitted code would be the constant
        raise SpecError(f"{what} {show} is the constant {reduced} wherever it is defined: "
                        "its derivative is identically 0")
    if user:
        warn_non_smooth(expr, what, shown=show, stacklevel=3)
    d = derivative(expr, var, what)
    if cheapest(d) == 0:  # sin(x)**2 + cos(x)**2: constant although no rewrite shows it
        raise SpecError(f"{what} {show} is constant: its derivative is identically 0")
    points = probe_points(domain)
    values = _probe_values(expr, var, points)
    for at, v in values.items():
        if v.is_number and not _is_bad_number(v) and sp.im(v) != 0:
            raise InvalidExpressionError(f"{what} {show} is not real at {var} = {at} (value {v}); "
                                         + _domain_hint(var, domain))
    slopes = _probe_values(d, var, points)
    for at in points:
        for label, val in (("value", values[at]), ("derivative", slopes[at])):
            if _is_bad_number(val) or sp.im(val) != 0:
                raise NonDifferentiableError(
                    f"{what} {show}: the {label} is undefined at {var} = {at} "
                    f"({label} {val}); rewrite the expression without the singularity "
                    "(e.g. with Piecewise giving the limit)"
                    + ("" if domain is None else f" or narrow its domain {domain_text(domain)}")
                )
    return expr


#: where an output activation's values are sampled (both signs) to see whether they stay in a
#: loss's domain: around 0, where activations bend, and far out, where they saturate
_RANGE_PROBES = tuple(sp.Rational(v) for v in ("0", "1/1000", "1/2", "1", "3", "10", "100", "10000"))


def outside_values(expr: sp.Expr, var: sp.Symbol, interval: Domain,
                   domain: Domain | None = None) -> list[tuple[float, float]]:
    """``[(x, expr(x))]`` for sampled ``x`` (inside ``domain`` if given) where the value is
    finite, real and outside the closed ``interval``: evidence that ``expr`` leaves it (an
    empty list proves nothing)."""
    lo, hi = interval
    points = sorted({s * v for v in _RANGE_PROBES for s in (-1, 1)}, key=abs)  # the nearest to 0 first
    if domain is not None:
        points = [v for v in points if domain[0] < v < domain[1]] + list(probe_points(domain))
    out = []
    for at, v in _probe_values(expr, var, tuple(points)).items():
        if _is_bad_number(v) or sp.im(v) != 0:
            continue
        value = float(v)
        if not lo <= value <= hi:
            out.append((float(at), value))
    return out


def _domain_hint(var: sp.Symbol, domain: Domain | None) -> str:
    """What to do about a non-real value: declare a domain, or the declared one is too wide."""
    if domain is not None:
        return f"that point is inside its declared domain {domain_text(domain)}: narrow the domain"
    return (f"it must be real for every real {var}, or declare the interval where it is defined "
            f"with domain=(lo, hi) (e.g. domain=(0, 1) for a probability)")
