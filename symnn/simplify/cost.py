"""Cost-aware choice among cheap rewrites of a scalar expression.

Blind ``sympy.simplify`` can run for minutes and likes costly forms (``cosh``); instead a few
bounded rewrites are tried and the one with the fewest operations (SymPy's ``count_ops``,
with transcendental calls weighted up) is kept.
"""

from __future__ import annotations

import functools

import sympy as sp

_EXPENSIVE = ("EXP", "LOG", "TANH", "ERF", "SIGMOID", "SOFTPLUS", "POW", "DIV")


def cost(expr: sp.Expr) -> int:
    """Weighted operation count: divisions, powers and transcendental calls count 4."""
    visual = sp.count_ops(expr, visual=True)
    total = 0
    for term in sp.Add.make_args(visual):
        coeff, sym = term.as_coeff_Mul()
        if isinstance(sym, sp.Symbol):
            total += int(coeff) * (4 if sym.name in _EXPENSIVE else 1)
    return total


#: the most terms a rewrite may multiply out (:func:`expanded_terms`); beyond it only
#: ``factor_terms`` runs. ``expand`` of 12 factors ``(tanh(k z) + 1)`` makes 4,096 terms, and
#: ``cancel`` of 20 fractions ``z/(1 + k z**2)`` a numerator of 10 million before collecting:
#: each ran for minutes (issue 18, item 6)
MAX_EXPANDED_TERMS = 256


def _multinomial(terms: int, n: int, cap: int) -> int:
    """Terms of ``(a_1 + ... + a_terms)**n`` multiplied out, C(terms + n - 1, n), capped."""
    out = 1
    for k in range(1, n + 1):
        out = out * (terms + k - 1) // k
        if out > cap:
            return cap + 1
    return out


def _numer_denom_terms(expr: sp.Basic, cap: int) -> tuple[int, int]:
    """(terms of the numerator, terms of the denominator) of ``expr`` over a common denominator,
    multiplied out: an upper estimate from the tree alone, capped at ``cap + 1``."""
    def clip(v: int) -> int:
        return min(v, cap + 1)

    if isinstance(expr, sp.Add):
        parts = [_numer_denom_terms(a, cap) for a in expr.args]
        den = 1
        for _, d in parts:
            den = clip(den * d)
        return clip(sum(n for n, _ in parts) * den), den
    if isinstance(expr, sp.Mul):
        num = den = 1
        for a in expr.args:
            n, d = _numer_denom_terms(a, cap)
            num, den = clip(num * n), clip(den * d)
        return num, den
    if isinstance(expr, sp.Pow) and expr.exp.is_Integer:
        n, d = _numer_denom_terms(expr.base, cap)
        k = int(expr.exp)
        return (_multinomial(n, k, cap), _multinomial(d, k, cap)) if k >= 0 else (
            _multinomial(d, -k, cap), _multinomial(n, -k, cap))
    return 1, 1  # an atom, a function call, a symbolic power: one term here


def expanded_terms(expr: sp.Basic, cap: int = MAX_EXPANDED_TERMS) -> int:
    """An upper estimate of the terms ``expand``, ``together`` or ``cancel`` multiply out
    anywhere in ``expr`` (they work inside function arguments too), found from the tree in
    linear time; stops counting past ``cap``."""
    worst = 0
    for node in sp.preorder_traversal(expr):
        if isinstance(node, (sp.Add, sp.Mul, sp.Pow)):
            n, d = _numer_denom_terms(node, cap)
            worst = max(worst, n, d)
            if worst > cap:
                return worst
    return worst


@functools.lru_cache(maxsize=4096)
def cheapest(expr: sp.Expr) -> sp.Expr:
    """The cheapest of a few bounded algebraic rewrites of ``expr`` (ties keep the original).
    Remembered: a pure function of an immutable expression, asked again for the same maps by
    every pass, kernel and network that has them.

    The rewrites that multiply out (``cancel``, ``together``, ``expand``) run only when
    :func:`expanded_terms` stays within :data:`MAX_EXPANDED_TERMS`: their cost is that of their
    output, which can be exponential in the size of ``expr``."""
    if expr.is_Atom or expr.has(sp.Piecewise):
        return expr
    best, best_cost = expr, cost(expr)
    rewrites = (sp.factor_terms, sp.cancel, sp.together, sp.expand)
    if expanded_terms(expr) > MAX_EXPANDED_TERMS:
        rewrites = (sp.factor_terms,)
    for rewrite in rewrites:
        try:
            cand = rewrite(expr)
        except (sp.PolynomialError, TypeError, ValueError):  # not a rational function of its atoms
            continue
        c = cost(cand)
        if c < best_cost:
            best, best_cost = cand, c
    return best
