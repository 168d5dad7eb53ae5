"""Cost-aware choice among cheap rewrites of a scalar expression.

Blind ``sympy.simplify`` can run for minutes and likes costly forms (``cosh``); instead a few
bounded rewrites are tried and the one with the fewest operations (SymPy's ``count_ops``,
with transcendental calls weighted up) is kept.
"""

from __future__ import annotations

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


def cheapest(expr: sp.Expr) -> sp.Expr:
    """The cheapest of a few bounded algebraic rewrites of ``expr`` (ties keep the original)."""
    if expr.is_Atom or expr.has(sp.Piecewise):
        return expr
    best, best_cost = expr, cost(expr)
    for rewrite in (sp.factor_terms, sp.cancel, sp.together, sp.expand):
        try:
            cand = rewrite(expr)
        except (sp.PolynomialError, TypeError, ValueError):  # not a rational function of its atoms
            continue
        c = cost(cand)
        if c < best_cost:
            best, best_cost = cand, c
    return best
