"""Exact strings from the C printer in both dtypes (compiled and run in test_c_standalone)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from sympy.codegen.cfunctions import expm1

import symnn as sn
from symnn.backends.c.printer import SymnnCPrinter, c_literal
from symnn.errors import UnsupportedFunctionError
from symnn.functions import Sigmoid, Softplus

x, c = sp.symbols("x c", real=True)

# (expression, float64 text, float32 text)
CASES = [
    (sp.Max(x, 0), "m__max(x[e], 0.0)", "m__max(x[e], 0.0F)"),
    (c * sp.Heaviside(x, 0), "m__pick(x[e] > 0, c, 0.0)", "m__pick(x[e] > 0, c, 0.0F)"),
    (sp.Heaviside(x, 0), "m__pick(x[e] > 0, 1.0, 0.0)", "m__pick(x[e] > 0, 1.0F, 0.0F)"),
    (sp.Piecewise((x, x > 0), (sp.Rational(1, 100) * x, True)),
     "m__pick(x[e] > 0.0, x[e], 0.01*x[e])", "m__pick(x[e] > 0.0F, x[e], 0.01F*x[e])"),
    (Sigmoid(x), "m__sigmoid(x[e])", "m__sigmoid(x[e])"),
    (Softplus(x) - x * c, "-c*x[e] + m__softplus(x[e])", "-c*x[e] + m__softplus(x[e])"),
    (sp.tanh(x), "m__tanh(x[e])", "m__tanh(x[e])"),
    (expm1(x), "m__expm1(x[e])", "m__expm1(x[e])"),
    (sp.sqrt(2) * x, "1.4142135623730951*x[e]", "1.4142135F*x[e]"),
    (x / 3, "0.3333333333333333*x[e]", "0.33333334F*x[e]"),
    (sp.erf(x), "erf(x[e])", "erff(x[e])"),
    (1 / (1 + x), "1.0/(x[e] + 1.0)", "1.0F/(x[e] + 1.0F)"),
    (x**2, "(x[e]*x[e])", "(x[e]*x[e])"),
    (x**-2, "(1.0/(x[e]*x[e]))", "(1.0F/(x[e]*x[e]))"),
    (x / c**2, "x[e]/(c*c)", "x[e]/(c*c)"),
    (x**5, "pow(x[e], 5.0)", "powf(x[e], 5.0F)"),
    (sp.exp(-x**2 / 2), "m__exp(-0.5*(x[e]*x[e]))", "m__exp(-0.5F*(x[e]*x[e]))"),
    (sp.Abs(x), "fabs(x[e])", "fabsf(x[e])"),
    (sp.sign(x), "m__sign(x[e])", "m__sign(x[e])"),
    (sp.Min(x, c), "m__min(c, x[e])", "m__min(c, x[e])"),
    (sp.pi * x, "3.141592653589793*x[e]", "3.1415927F*x[e]"),
    (x / sp.Symbol("N", integer=True, positive=True), "x[e]/Nr", "x[e]/Nr"),
]


def _printer(dtype: str) -> SymnnCPrinter:
    p = SymnnCPrinter(dtype, "m")
    p.accessors = {"x": "x[e]", "c": "c"}
    return p


@pytest.mark.parametrize("expr,f64,f32", CASES, ids=[case[1] for case in CASES])
def test_exact(expr: sp.Expr, f64: str, f32: str) -> None:
    assert _printer("float64").doprint_expr(expr) == f64
    assert _printer("float32").doprint_expr(expr) == f32


@pytest.mark.parametrize("v", [1e-320, 1e38, 0.1, 1 / 3, -2.5e-7, 7.0, 2.0**-149, 3.4028234663852886e38])
def test_constants_round_trip(v: float) -> None:
    assert float(c_literal(v, "float64")) == v
    text = c_literal(v, "float32")
    assert text.endswith("F") and np.float32(text[:-1]) == np.float32(v)


def test_float32_overflow_prints_infinity() -> None:
    assert c_literal(1e308, "float32") == "INFINITY"


def test_non_finite_literals_are_typed() -> None:
    # INFINITY is a float: cast for double, so -Wdouble-promotion stays quiet
    assert c_literal(float("inf"), "float64") == "(double)INFINITY"
    assert c_literal(float("-inf"), "float32") == "-INFINITY"
    assert c_literal(float("nan"), "float64") == "(double)NAN"


@pytest.mark.parametrize("expr,name", [(sp.besselj(0, x), "besselj"), (sp.Function("f")(x), "f")])
def test_C17_unsupported_function_is_named(expr: sp.Expr, name: str) -> None:
    with pytest.raises(UnsupportedFunctionError, match=name):
        _printer("float64").doprint_expr(expr)


def test_heaviside_half_is_refused() -> None:
    with pytest.raises(UnsupportedFunctionError, match="Heaviside"):
        _printer("float64").doprint_expr(sp.Heaviside(x))


def test_C17_user_activation_fails_before_any_output(tmp_path) -> None:
    z = sp.Symbol("z")
    act = sn.Activation("bessel", sp.besselj(1, z), var=z)
    net = sn.Network([sn.Dense(2, 2, act)], loss="mse")
    with pytest.raises(UnsupportedFunctionError, match="besselj"):
        sn.emit(net, tmp_path / "out", backend="c")
    assert not (tmp_path / "out").exists()


def test_unknown_symbol_is_an_error() -> None:
    with pytest.raises(UnsupportedFunctionError, match="storage"):
        _printer("float64").doprint_expr(sp.Symbol("q", real=True) + x)
