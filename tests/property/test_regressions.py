"""Shrunk counterexamples found by the property tests, kept as plain regression tests."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp

import symnn as sn
from symnn.gradcheck import kink_distances, sample_point
from tests.strategies import X


def _passes(net: sn.Network, n: int = 1, seed: int = 0) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        k = sn.compile(net)
    p, Xd, Y = sample_point(net, n=n, seed=seed)
    report = sn.gradcheck(k, p, Xd, Y)
    assert report.passed or report.passed_norm, str(report)


def test_exp_exp_activation_does_not_overflow_the_stability_check() -> None:
    # stabilise's numeric agreement check converted exp(exp(25)) to a Python complex: OverflowError
    _passes(sn.Network([sn.Dense(1, 1, sn.Activation("user0", sp.exp(sp.exp(X)), var=X)),
                        sn.Dense(1, 1, "sigmoid")], loss="bce"))


def test_tiny_first_layer_weights_get_new_weights_not_an_error() -> None:
    # he-init gave W1 = 0.0017 for a 1 -> 1 ELU layer: no input row was 0.01 from the kink
    net = sn.Network([sn.Dense(1, 1, "elu"), sn.Dense(1, 1, "sigmoid")], loss="bce")
    p, Xd, _ = sample_point(net, n=1, seed=7)
    assert kink_distances(net, Xd, p).min() >= 0.01
    _passes(net, seed=7)


def test_l1_weights_stay_clear_of_the_kink_by_the_difference_step() -> None:
    # weights only 0.002 from 0 let the 5-point difference (steps up to 2e-3) straddle |w|
    net = sn.Network([sn.Dense(1, 7, "elu"), sn.Dense(7, 10, "softmax")], loss="cross_entropy", l1=0.01)
    p, _, _ = sample_point(net, n=4)
    assert min(np.abs(w).min() for k, w in p.items() if k.startswith("W")) >= 0.01
    _passes(net, n=4)


def test_targets_stay_clear_of_a_kinked_user_loss() -> None:
    # Huber's |p - y| = 1 kink was not considered when drawing targets
    p, y = sp.symbols("p y")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        huber = sn.Loss("huber", sp.Piecewise(((p - y) ** 2 / 2, sp.Abs(p - y) <= 1),
                                              (sp.Abs(p - y) - sp.Rational(1, 2), True)), pred=p, target=y)
    _passes(sn.Network([sn.Dense(2, 5, "leaky_relu"), sn.Dense(5, 5, "softplus")], loss=huber), n=16)


def test_max_with_a_complex_branch_is_an_invalid_expression() -> None:
    # Max(x, log(x)) at x = -3 made SymPy raise ValueError ("not comparable") out of the probe
    with pytest.raises(sn.InvalidExpressionError, match="not real"):
        sn.Activation("rand", sp.Max(X, sp.log(X)), var=X)


@pytest.mark.parametrize("expr", [sp.exp(sp.re((-2) ** X)), sp.im((-3) ** X) + X])
def test_a_real_part_of_a_complex_value_is_an_invalid_expression(expr: sp.Expr) -> None:
    # exp(re((-2)**x)) is real on the real line, so the value check passed, but the NumPy kernel
    # computed np.real((-2.0)**z): NaN everywhere (found by test_expressions)
    with pytest.raises(sn.InvalidExpressionError, match="not real .* real arithmetic"):
        sn.Activation("rand", expr, var=X)


def test_a_real_part_of_a_real_value_is_accepted() -> None:
    # Abs of a real argument is a kink, not a complex value: accepted, with the kink warning;
    # SymPy writes |(-2)**x| and im(sqrt(x - 5)) in real terms itself (2**x, and an atan2 form)
    with pytest.warns(sn.NonSmoothWarning):
        act = sn.Activation("rand", sp.Abs(X - 1) + sp.Abs((-2) ** X), var=X)
    net = sn.Network([sn.Dense(2, 3, act), sn.Dense(3, 1, "identity")], loss="mse")
    assert np.isfinite(sn.compile(net).forward(net.init_params(seed=0), np.ones((2, 2)))).all()


def test_towering_exponentials_are_refused_without_exhausting_memory() -> None:
    # exp(exp(exp(exp(x)))) at the probe x = 3 made SymPy build a number of ~1e8 digits (OOM)
    with pytest.raises(sn.NonDifferentiableError, match="undefined"):
        sn.Activation("rand", sp.exp(sp.exp(sp.exp(sp.exp(X)))), var=X)


def test_adaptive_difference_step_for_weights_fed_by_large_activations() -> None:
    # x*exp(x) feeds GELU activations of ~200: a 1e-3 Richardson step was truncation-bound
    net = sn.Network([sn.Dense(9, 7, sn.Activation("user18", X * sp.exp(X), var=X)), sn.Dense(7, 16, "gelu"),
                      sn.Dense(16, 14, "identity")], loss="mse")
    k = sn.compile(net)
    for seed in range(3):
        p, Xd, Y = sample_point(net, n=8, seed=seed)
        report = sn.gradcheck(k, p, Xd, Y, method="central")
        assert report.passed or report.passed_norm, str(report)


@pytest.mark.parametrize("expr", [(X - 2) / (2 - X), (-X - 2) / (X + 2), sp.sin(X) ** 2 + sp.cos(X) ** 2])
def test_constant_wherever_defined_is_refused(expr: sp.Expr) -> None:
    # (1/2 - x)/(x - 1/2) passed S6 (x is free) and the simplifier emitted `a1 = -1.0`, a scalar
    # that broke the next matmul
    with pytest.raises(sn.SpecError, match="constant"):
        sn.Activation("rand", expr, var=X)


@pytest.mark.parametrize("expr", [X + (X - 2) / (2 - X), X * sp.sin(sp.exp(X))])
def test_saturation_limit_does_not_hang(expr: sp.Expr) -> None:
    # sympy.limit (Gruntz) ran for hours on the derivative of (x-2)/(2-x) (hypothesis 6.170's
    # shrinker reached it and CI timed out); the limit is now read off mpmath at 2**200..2**500,
    # where sin(exp(x)) would need pi to 2**200 bits: periodic functions refuse such arguments
    act = sn.Activation("rand", expr, var=X)
    net = sn.Network([sn.Dense(2, 3, act), sn.Dense(3, 2, "identity")], loss="mse")
    k = sn.compile(net)
    p, Xd, Y = sample_point(net, n=4, seed=0)
    assert sn.gradcheck(k, p, Xd, Y).passed


def test_float32_bias_gradient_with_cancellation_passes_in_norm() -> None:
    # derandomized hypothesis (6.155) example: a 2-class softmax's bias gradient is [s, -s], a
    # mean of p - y with cancellation; in float32 it was 1.7e-5 off in its own norm while the
    # whole gradient was 1.4e-7 off (RELIABILITY.md's float32 target: 1e-5 in norm)
    from tests.property.test_architectures import _point

    net = sn.Network([sn.Dense(16, 16, "softsign"), sn.Dense(16, 2, "softmax")], loss="cross_entropy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        k = sn.compile(net, dtype="float32")
    p, Xd, Y = _point(net, 19, 19, "float32")
    report = sn.gradcheck(k, p, Xd, Y, seed=19)
    # the property: the check passes in norm with the whole gradient far inside float32's 1e-5
    # target. Whether the bias entry alone also meets 1e-5 in its own norm depends on how the
    # CPU's BLAS rounds the cancelling sum (1.7e-5 on one Zen 5 core, 5.9e-6 on a Zen 4 one), so
    # `passed` is not asserted either way.
    assert report.passed_norm, f"{report}\n{report.reference}"
    assert report.norm_rel_error <= 1e-6
