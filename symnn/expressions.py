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

import enum
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator

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


# -- the cost budget ------------------------------------------------------------------------------
#
# What SymPy costs is not the size of what it is given: an exponent tower
# (``(((z**64)**64)**64)**64``) is an integer of millions of digits at the first probe point,
# ``Pow(9, 99999999999)`` is computed the moment it is built, and a few ``tanh`` nested with
# constants make SymPy's assumption queries exponential in the depth. Every expression therefore
# passes one budget, with the same limits whoever reads it: the spec's expression strings and
# a model file's records are priced on their syntax tree, before any SymPy object exists; an
# expression built in Python is priced when it reaches a constructor (:func:`require_scalar_expr`).
# Each reader turns its tree into :class:`Term` nodes and calls :func:`budget_problem`.
# (Issue 18, item 6; RELIABILITY.md S15.)

#: nodes of an expression: numbers, symbols, operators, calls
MAX_NODES = 500
#: function calls nested in one another (``tanh(tanh(z) + 1)`` is 2; a 10-deep ``tanh`` chain
#: with constants took SymPy 25 s to build, 6 deep 0.1 s)
MAX_CALL_DEPTH = 6
#: |exponent| of one power whose exponent is a number
MAX_EXPONENT = 64
#: product of the |exponents| of powers nested in one another's bases (``(z**8)**8``: 64). A
#: power of 3 beyond 646 is past double's range, so the probes refuse such a degree anyway
MAX_POWER_PRODUCT = 1024
#: decimal digits of one number (an integer, each part of a fraction, a decimal's mantissa)
MAX_DIGITS = 100
#: nodes of the derivative: the checks evaluate it at every probe point and each backend
#: simplifies and prints it (its size, not the expression's, sets the time: a product of n
#: factors has a derivative of n**2)
MAX_DERIVATIVE_NODES = 2000


class TermKind(enum.Enum):
    """What a node is, as far as its cost goes."""

    NUMBER = "number"  # a literal
    CONSTANT = "constant"  # pi, E, I
    SYMBOL = "symbol"
    ADD = "add"
    MUL = "mul"
    POW = "pow"  # args: (base, exponent)
    FUNCTION = "function"  # exp, tanh, Max...: nests towards MAX_CALL_DEPTH
    OTHER = "other"  # Piecewise, a condition, a tuple, a boolean: structure only


@dataclass(frozen=True)
class Term:
    """One node of an expression as a reader sees it, before SymPy: enough to price it.

    ``value`` is a NUMBER's or CONSTANT's value as a float (``inf`` past double's range; None
    for ``I``), ``digits`` a NUMBER's decimal digits, ``text`` how messages show the node.
    """

    kind: TermKind
    args: tuple["Term", ...] = ()
    value: float | None = None
    digits: int = 0
    text: str = ""


class _OverBudget(Exception):
    """Internal: carries the first problem :func:`_price` finds out to :func:`budget_problem`."""


@dataclass(frozen=True)
class _Price:
    constant: float | None  # the node's value when it is a number (None: depends on a symbol)
    growth: int  # product of the numeric exponents of the powers nested in it
    depth: int  # function calls nested in it


def _walk(term: Term) -> Iterator[Term]:
    stack = [term]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.args)


def budget_problem(term: Term) -> str | None:
    """What in ``term`` is over the budget (a sentence for an error message), or None.

    Checked: the node count, the nesting of function calls, each numeric exponent, the product
    of nested exponents, the digits of each number, and that every number and every product,
    sum or power of numbers is finite in double precision (``1e300*1e300`` is not: issue 18,
    item 7). Runs in time linear in the size of ``term``, on no SymPy object.
    """
    count = 0
    for _ in _walk(term):
        count += 1
        if count > MAX_NODES:
            return f"is too large: more than {MAX_NODES} nodes"
    try:
        _price(term)
    except _OverBudget as exc:
        return str(exc)
    return None


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise _OverBudget(f"has a constant {what} that is not finite in double precision")
    return value


def _price(term: Term) -> _Price:
    kind = term.kind
    if kind is TermKind.NUMBER:
        if term.digits > MAX_DIGITS:
            raise _OverBudget(f"has a number of {term.digits} digits (at most {MAX_DIGITS})")
        return _Price(_finite(term.value if term.value is not None else math.nan, term.text), 1, 0)
    if kind is TermKind.CONSTANT:
        return _Price(term.value, 1, 0)
    if kind is TermKind.SYMBOL:
        return _Price(None, 1, 0)
    parts = [_price(a) for a in term.args]
    growth = max((p.growth for p in parts), default=1)
    depth = max((p.depth for p in parts), default=0)
    if kind is TermKind.POW:
        return _price_pow(parts[0], parts[1], depth)
    if kind is TermKind.FUNCTION:
        if depth + 1 > MAX_CALL_DEPTH:
            raise _OverBudget(f"nests function calls more than {MAX_CALL_DEPTH} deep ({term.text})")
        return _Price(None, growth, depth + 1)
    if kind in (TermKind.ADD, TermKind.MUL):
        numbers_ = [p.constant for p in parts if p.constant is not None]
        folded = math.fsum(numbers_) if kind is TermKind.ADD else math.prod(numbers_)
        what = ("sum" if kind is TermKind.ADD else "product") + " of numbers"
        _finite(folded, what)  # the number SymPy folds them into
        constant = folded if len(numbers_) == len(parts) else None
        return _Price(constant, growth, depth)
    return _Price(None, growth, depth)


def _price_pow(base: _Price, exponent: _Price, depth: int) -> _Price:
    e = exponent.constant
    if e is None:  # a symbolic exponent (2**z): its own parts were priced
        return _Price(None, max(base.growth, exponent.growth), depth)
    if abs(e) > MAX_EXPONENT:
        raise _OverBudget(f"has a power with exponent {e:g} (at most {MAX_EXPONENT} in magnitude)")
    growth = base.growth * max(1, math.ceil(abs(e)))
    if growth > MAX_POWER_PRODUCT:
        raise _OverBudget(f"nests powers whose exponents multiply to {growth} (at most {MAX_POWER_PRODUCT})")
    if base.constant is None:
        return _Price(None, growth, depth)
    try:
        value = base.constant ** e
    except ZeroDivisionError:
        raise _OverBudget("divides by zero") from None
    except OverflowError:
        raise _OverBudget("has a power of numbers that is not finite in double precision") from None
    if isinstance(value, complex):  # (-8)**(1/3): not a real constant, the checks decide
        return _Price(None, growth, depth)
    return _Price(_finite(value, "power of numbers"), growth, depth)


def _digits(n: int) -> int:
    """Decimal digits of ``n`` from its bit length (``str`` refuses past 4,300 digits)."""
    return int(abs(n).bit_length() * math.log10(2)) + 1


def number_term(value: object, text: str | None = None) -> Term:
    """The :class:`Term` of a numeric literal: a Python int, Fraction or float, or a SymPy
    number (``text``, how messages show it, defaults to ``str(value)`` where that is short)."""
    if isinstance(value, numbers.Integral):  # int, sp.Integer
        digits = _digits(int(value))
    elif isinstance(value, numbers.Rational):  # Fraction, sp.Rational
        digits = _digits(int(value.numerator)) + _digits(int(value.denominator))
    elif isinstance(value, sp.Float):
        digits = max(1, int(value._prec * math.log10(2)))
    else:
        digits = len(repr(float(value)).lstrip("-").split("e")[0].replace(".", ""))
    try:
        as_float = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an integer or fraction past double's range
        as_float = math.inf
    if text is None:
        text = str(value) if digits <= MAX_DIGITS else f"of {digits} digits"
    return Term(TermKind.NUMBER, value=as_float, digits=digits, text=text)


#: SymPy's named constants, and the values the budget prices them at (I: none, not real)
_CONSTANTS: dict[type, float | None] = {type(sp.pi): math.pi, type(sp.E): math.e, type(sp.I): None,
                                        type(sp.EulerGamma): float(sp.EulerGamma),
                                        type(sp.GoldenRatio): float(sp.GoldenRatio)}


def is_call(cls: type) -> bool:
    """Whether nodes of SymPy class ``cls`` count as a function call towards
    :data:`MAX_CALL_DEPTH`: functions, Max and Min; not Piecewise, which only selects."""
    return (issubclass(cls, (sp.Function, sp.Max, sp.Min))) and not issubclass(cls, sp.Piecewise)


def term_from_sympy(expr: sp.Basic, limit: int = MAX_NODES) -> Term:
    """The :class:`Term` tree of a SymPy expression, cut short past ``limit`` nodes (the
    node count is then over budget anyway). A SymPy infinity or NaN is a non-finite number."""
    seen = 0

    def convert(e: sp.Basic) -> Term:
        nonlocal seen
        seen += 1
        if seen > limit:
            return Term(TermKind.OTHER)
        if isinstance(e, sp.Number):
            return number_term(e) if e.is_finite else Term(TermKind.NUMBER, value=math.nan, text=str(e))
        if type(e) in _CONSTANTS:
            return Term(TermKind.CONSTANT, value=_CONSTANTS[type(e)], text=str(e))
        if e in (sp.zoo, sp.nan):
            return Term(TermKind.NUMBER, value=math.nan, text=str(e))
        if isinstance(e, sp.Symbol):
            return Term(TermKind.SYMBOL, text=e.name)
        kind = {sp.Add: TermKind.ADD, sp.Mul: TermKind.MUL, sp.Pow: TermKind.POW}.get(type(e))
        if kind is None:
            kind = TermKind.FUNCTION if is_call(type(e)) else TermKind.OTHER
        return Term(kind, tuple(convert(a) for a in e.args), text=type(e).__name__)

    return convert(expr)


def require_budget(expr: sp.Basic, what: str) -> None:
    """Refuse (InvalidExpressionError) a SymPy expression over the budget, before any check
    that evaluates or simplifies it."""
    try:
        problem = budget_problem(term_from_sympy(expr))
    except RecursionError:  # built in Python, nested deeper than the interpreter recurses
        problem = f"nests more than {MAX_NODES} levels"
    if problem:
        raise InvalidExpressionError(f"{what} {problem}")


def require_scalar_expr(expr: object, what: str) -> sp.Expr:
    """Return ``expr`` as a SymPy scalar expression or raise S7's error; an expression over the
    cost budget is refused here too, before any symbolic work (:func:`budget_problem`)."""
    if isinstance(expr, (int, float)) and not isinstance(expr, bool):
        expr = sp.sympify(expr)
    if not isinstance(expr, sp.Expr) or isinstance(expr, sp.MatrixBase) or getattr(
        expr, "is_Matrix", False
    ):
        raise InvalidExpressionError(
            f"{what} must be a scalar SymPy expression, got {type(expr).__name__}: {expr!r}"
        )
    require_budget(expr, what)
    return expr


def count_nodes(expr: sp.Basic, limit: int) -> int:
    """Nodes of ``expr``, counting stops at ``limit + 1``."""
    count = 0
    for _ in sp.preorder_traversal(expr):
        count += 1
        if count > limit:
            break
    return count


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
    try:
        return float(value)
    except OverflowError:  # an int past double's range: the end is as good as infinite
        return math.inf if value > 0 else -math.inf


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
    if count_nodes(d, MAX_DERIVATIVE_NODES) > MAX_DERIVATIVE_NODES:
        raise InvalidExpressionError(
            f"{what} {show}: its derivative has more than {MAX_DERIVATIVE_NODES} nodes, more than "
            "symnn's budget for one expression (split it, or simplify it first)")
    if cheapest(d) == 0:  # sin(x)**2 + cos(x)**2: constant although no rewrite shows it
        raise SpecError(f"{what} {show} is constant: its derivative is identically 0")
    points = probe_points(domain)
    values = _probe_values(expr, var, points)
    for at, v in values.items():
        if v.is_number and not _is_bad_number(v) and sp.im(v) != 0:
            raise InvalidExpressionError(f"{what} {show} is not real at {var} = {at} (value {v}); "
                                         + _domain_hint(var, domain))
    _refuse_complex_parts(expr, var, points, what, show)
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


#: the functions that make a real number of a complex one: an expression real on the real line
#: only through one of them (re((-2)**x) = 2**x*cos(pi*x)) computes a complex value inside,
#: which the kernels' real arithmetic cannot (NumPy's (-2.0)**0.5 is NaN, as is C's pow)
_REAL_OF_COMPLEX = (sp.re, sp.im, sp.Abs, sp.arg, sp.conjugate)


def _refuse_complex_parts(expr: sp.Expr, var: sp.Symbol, points: tuple[sp.Rational, ...], what: str,
                          show: sp.Expr) -> None:
    """S9 inside the expression: the argument of a re/im/Abs/arg/conjugate that is complex at a
    probe point. The whole is real there, so the check on its values passes, but the kernels
    compute in real arithmetic and would give NaN (silently: the value check saw a number)."""
    for node in sp.preorder_traversal(expr):
        if isinstance(node, _REAL_OF_COMPLEX) and var in node.free_symbols:
            inner = node.args[0]
            for at, v in _probe_values(inner, var, points).items():
                if v.is_number and not _is_bad_number(v) and sp.im(v) != 0:
                    raise InvalidExpressionError(
                        f"{what} {show}: its part {inner} is not real at {var} = {at} (value {v}), and "
                        f"symnn's kernels compute in real arithmetic, so {node.func.__name__}() of it "
                        "cannot be computed; write the expression in real terms "
                        "(re((-2)**x) is 2**x*cos(pi*x))")


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
