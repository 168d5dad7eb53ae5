"""Exact strings from the NumPy printer, with a compile-and-run twin in test_backends."""

from __future__ import annotations

import pytest
import sympy as sp

from symnn.backends.numpy.printer import SymnnNumPyPrinter
from symnn.errors import UnsupportedFunctionError
from symnn.functions import Sigmoid, Softplus

x, c = sp.symbols("x c", real=True)

CASES = [
    (sp.Max(x, 0), "np.maximum(x, 0)"),
    (c * sp.Heaviside(x, 0), "c*(x > 0)"),
    (sp.Piecewise((x, x > 0), (sp.Rational(1, 100) * x, True)), "np.where(np.greater(x, 0), x, 0.01*x)"),
    (Sigmoid(x), "_sigmoid(x)"),
    (Softplus(x) - x * c, "_softplus(x) - c*x"),  # a term without a minus first: one operation fewer
    (1 - x - c, "1.0 - c - x"),
    (-x - c, "-c - x"),
    (sp.tanh(x), "np.tanh(x)"),
    (sp.sqrt(2) * x, "1.4142135623730951*x"),
    (x / 3, "0.3333333333333333*x"),
    (sp.Float("0.1", 17) * x, "0.1*x"),
    (sp.erf(x), "_erf(x)"),
    (1 / (1 + x), "1/(x + 1.0)"),
]


@pytest.mark.parametrize("expr,text", CASES, ids=[c[1] for c in CASES])
def test_exact(expr: sp.Expr, text: str) -> None:
    assert SymnnNumPyPrinter().doprint_expr(expr) == text


def test_constants_round_trip() -> None:
    p = SymnnNumPyPrinter()
    for v in (1e-320, 1e308, 0.1, 1 / 3):
        assert float(eval(p.doprint_expr(sp.Float(v, 17)))) == v


def test_strict_unsupported_function() -> None:
    with pytest.raises(UnsupportedFunctionError, match="besselj"):
        SymnnNumPyPrinter().doprint_expr(sp.besselj(0, x))


def test_step_with_a_float_zero_is_the_same_step() -> None:
    # nfloat turns Heaviside(x, 0) into Heaviside(x, 0.0): still the 0-at-0 step (both printers
    # check the convention through symnn.backends.kinks)
    assert SymnnNumPyPrinter().doprint_expr(sp.Heaviside(x, sp.Float(0.0))) == "np.where(x > 0, _f(1), _f(0))"
    with pytest.raises(UnsupportedFunctionError, match="Heaviside"):
        SymnnNumPyPrinter().doprint_expr(c * sp.Heaviside(x))
