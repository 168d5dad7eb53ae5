"""Saturation guards: keep an activation (and its derivative) off NaN at huge and infinite inputs.

Some textbook formulas are NaN at the ends of the floating-point line although the function
has a limit there: ``x*sigmoid(x)`` is ``-inf*0`` at ``x = -inf``, ``x/(1+|x|)`` is ``inf/inf``,
and GELU's derivative ``sqrt(2)*x*exp(-x**2/2)`` overflows to ``inf*0`` at ``x = 1.3e308``.
PyTorch returns NaN there; symnn returns the limit.

How: for each side, if the (stabilised) formula gives NaN at large inputs in float arithmetic
and the function has a finite limit ``L`` at that infinity, the input is clamped at the smallest
power of two ``T`` from which the float64 formula already gives exactly ``L`` (or NaN) at
every power of two up to the largest double. So the clamp changes none of the formula's
float64 values: it only replaces the NaN that its evaluation order produced by the value the
formula had already converged to.

``L`` is read off the function, not proved: the stable form evaluated by mpmath at 50
digits (its exponent range is unbounded, so there is no ``inf*0``) at ``2**200``,
``2**400`` and ``2**500`` must round to the same double. ``sympy.limit`` was the first
choice and was dropped: its Gruntz algorithm ran for hours on the derivative of
``(x-2)/(2-x)``, whose terms cancel exactly, and a compiler must not hang on a user's
expression. The threshold test below then requires the float formula itself to equal ``L``
over a whole range of inputs. The derivative gets its own clamp, and is passed to the chain
rule as the activation's proven partial derivative.

:class:`~symnn.functions.Clamp` is invisible to the mathematics: :func:`symnn.functions.plain` removes it (the
complex-step oracle sees the plain formula) and LaTeX prints only its argument.
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import sympy as sp

from .functions import Clamp
from .interpret import FUNCTIONS, NUMPY

_PROBES = (math.inf, 1.7976931348623157e308, 1.3e308, 1e300, 1e200, 1.4e154, 1e100, 1e20)


def _np_sigmoid(v: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1 / (1 + e), e / (1 + e))


def _np_softplus(v: np.ndarray) -> np.ndarray:
    return np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))


def _np_erfc(v: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erfc, otypes=[float])(v)


#: the interpreter's functions (erf, Heaviside(x, 0), Max, Abs...) plus the stable ones
#: the simplifier introduces, so the probe evaluates what the printers emit; NumPy as the
#: module object (interpret.NUMPY)
_NP_MODULES = [{**FUNCTIONS, "Sigmoid": _np_sigmoid, "Softplus": _np_softplus, "erfc": _np_erfc,
                "OnePlusErf": lambda v: _np_erfc(-v), "expm1": np.expm1}, NUMPY]


def _float_formula(stable: sp.Expr, x: sp.Symbol):
    """The stable form (what the printers emit) as a float64 NumPy function."""
    return sp.lambdify(x, stable, modules=_NP_MODULES)


def _nan_side(f, sign: int) -> bool:
    """Does the float64 formula give NaN at some large input of this sign?"""
    with np.errstate(all="ignore"):
        try:
            vals = np.asarray(f(np.array([sign * p for p in _PROBES])), dtype=float)
        except (NameError, TypeError, AttributeError):  # a function NumPy lacks: the printers name it
            return False
    return bool(np.isnan(vals).any())


def _mp_softplus(v):
    return mpmath.log1p(mpmath.exp(v)) if v < 0 else v + mpmath.log1p(mpmath.exp(-v))


def _periodic(fn):
    """``fn`` (sin, cos, tan) refusing arguments past 2**1100: mpmath reduces them modulo pi
    to full precision, and sin(exp(2**200)) would need pi to 2**200 bits (it never returned)."""

    def guarded(v):
        if abs(v) > _HUGE:
            raise OverflowError(f"{fn.__name__} of a number near 2**{int(mpmath.log(abs(v), 2))}")
        return fn(v)

    return guarded


_HUGE = mpmath.mpf(2) ** 1100

#: the stable functions in mpmath; the rest is SymPy's own mpmath printing
_MP_MODULES = [{"sin": _periodic(mpmath.sin), "cos": _periodic(mpmath.cos), "tan": _periodic(mpmath.tan),
                "cot": _periodic(mpmath.cot), "sec": _periodic(mpmath.sec), "csc": _periodic(mpmath.csc),
                "Sigmoid": lambda v: 1 / (1 + mpmath.exp(-v)), "Softplus": _mp_softplus,
                "OnePlusErf": lambda v: mpmath.erfc(-v), "erfc": mpmath.erfc, "expm1": mpmath.expm1,
                "Heaviside": lambda v, h0=0: mpmath.mpf(1 if v > 0 else (h0 if v == 0 else 0)),
                "sign": mpmath.sign, "Max": max, "Min": min}, "mpmath"]

#: where the limit is read: far out, yet inside the double range, so that these are inputs
#: at which the float formula, once converged, must give exactly the limit
_FAR = (2.0**200, 2.0**400, 2.0**500)


def _finite_limit(stable: sp.Expr, x: sp.Symbol, sign: int) -> float | None:
    """The double that ``stable`` (the function in its stable form) settles to as ``x`` goes
    to ``sign * inf``, or None when it does not settle to one finite double (see the module
    docstring)."""
    f = sp.lambdify(x, stable, modules=_MP_MODULES)
    seen = set()
    with mpmath.workdps(50):
        for far in _FAR:
            try:
                v = f(mpmath.mpf(sign * far))
            except (ValueError, TypeError, OverflowError, ZeroDivisionError, NameError):
                return None  # exp(exp(x)) overflows even mpmath; a pole; a function mpmath lacks
            if not (isinstance(v, (mpmath.mpf, int, float)) and mpmath.isfinite(v)):
                return None
            seen.add(float(v))
    return seen.pop() if len(seen) == 1 else None


def _threshold(f, sign: int, limit: float) -> float | None:
    """Where to clamp: the smallest power of two 2**k from which the float64 formula gives
    exactly ``limit`` (or NaN) at every power of two up to the largest double; for a formula
    that converges too slowly to reach ``limit`` in range (``1/(1+|x|)``), the largest probe
    where it is not NaN, if it is already within 1e-12 of ``limit`` there."""
    ts = np.array([2.0**k for k in range(1024)] + [1.7976931348623157e308])
    with np.errstate(all="ignore"):
        vals = np.asarray(f(sign * ts), dtype=float)
    nan = np.isnan(vals)
    ok = (vals == limit) | nan
    if ok[-1]:
        bad = np.flatnonzero(~ok)
        start = int(bad[-1]) + 1 if bad.size else 0
        while start < ts.size and nan[start]:
            start += 1
        if start < ts.size:
            return float(ts[start])
    finite = np.flatnonzero(~nan)
    if finite.size and abs(vals[finite[-1]] - limit) <= 1e-12 * max(1.0, abs(limit)):
        return float(ts[finite[-1]])
    return None


@functools.lru_cache(maxsize=256)
def bounds(expr: sp.Expr, x: sp.Symbol) -> tuple[float, float] | None:
    """``(lo, hi)`` to clamp ``x`` to, or None when the formula needs no guard."""
    lo, hi = -math.inf, math.inf
    from .simplify.stable import stabilise_expr

    stable = stabilise_expr(expr)
    f = _float_formula(stable, x)
    for sign in (-1, 1):
        if not _nan_side(f, sign):
            continue
        limit = _finite_limit(stable, x, sign)
        if limit is None:
            continue
        t = _threshold(f, sign, limit)
        if t is None:
            continue
        if sign < 0:
            lo = -t
        else:
            hi = t
    return None if (lo, hi) == (-math.inf, math.inf) else (lo, hi)


def clamp(expr: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """``expr`` with ``x`` clamped where the formula would otherwise be NaN (see module)."""
    b = bounds(expr, x)
    if b is None:
        return expr
    lo, hi = (sp.Float(v, 17) if math.isfinite(v) else (sp.oo if v > 0 else -sp.oo) for v in b)
    return expr.xreplace({x: Clamp(x, lo, hi)})
