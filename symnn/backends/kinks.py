"""The kink conventions every printer shares, checked in one place.

``Heaviside(u, 0)`` (value 0 at 0, so ReLU'(0) = 0) and ``Piecewise`` with a final ``True``
branch are the only forms of a kink that may reach code generation; printers differ only in
the syntax they print them with.
"""

from __future__ import annotations

import sympy as sp

from ..errors import UnsupportedFunctionError


def require_step(expr: sp.Heaviside) -> sp.Expr:
    """The argument of ``Heaviside(u, 0)``; any other Heaviside is refused. (``nfloat`` turns
    the 0 into ``0.0``, which is still zero.)"""
    if len(expr.args) < 2 or not expr.args[1].is_zero:
        raise UnsupportedFunctionError(f"{expr}: Heaviside without the value 0 at 0 reached code generation")
    return expr.args[0]


def split_step(expr: sp.Mul) -> tuple[sp.Expr, sp.Expr] | None:
    """``(u, c)`` for a product ``c * Heaviside(u, 0)``, else None."""
    steps = [a for a in expr.args if isinstance(a, sp.Heaviside)]
    if not steps:
        return None
    return require_step(steps[0]), sp.Mul(*[a for a in expr.args if a is not steps[0]])


def piecewise_parts(expr: sp.Piecewise) -> tuple[list[tuple[sp.Expr, sp.Basic]], sp.Expr]:
    """``(pairs, otherwise)``: the (value, condition) pairs before a final ``True`` branch."""
    *pairs, (last, cond) = expr.args
    if cond != sp.true:
        raise UnsupportedFunctionError(f"{expr}: Piecewise needs a final True branch")
    return [tuple(p) for p in pairs], last


def minmax_args(expr: sp.Expr) -> list[sp.Expr]:
    """Max/Min arguments with numbers last, so a NaN in a variable argument is the one kept."""
    return sorted(expr.args, key=lambda a: bool(a.is_number))
