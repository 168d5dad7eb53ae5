"""The C backend's max-pool pullback takes the ReLU before the pool with it (a CNN's usual
conv -> relu -> max pool): the map ``t * Heaviside(x, 0)`` after ``t = max_pool_grad(x, g)`` is
done in the pullback's loop, which adds a window's gradient only where the window's maximum is
positive (symnn/backends/c/config.py ``_masked_pool_grads``). The values are the unfused ones:
held to the NumPy module's gradients bit for bit where the sums agree (C vs NumPy <= 1e-14,
float64), with windows of ties, of zeros only (a relu's dead windows) and of negative maxima
made to occur; and an activation other than ReLU keeps its own pass."""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from tests.layer_graphs import rel_max


def _net(activation: str) -> sn.Network:
    x = sn.Input(2, 6, 6)
    h = sn.Conv2d(2, 4, 3, padding=1, activation=activation, name="conv")(x)
    h = sn.MaxPool2d(2, name="pool")(h)
    return sn.Network(inputs=x, outputs=sn.Dense(36, 3, "softmax", name="fc")(sn.Flatten()(h)),
                      loss="cross_entropy", name=f"pool_{activation}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_relu_mask_is_taken_in_the_pool_pullback_with_the_same_values(dtype: str) -> None:
    net = _net("relu")
    params = {k: v.astype(dtype) for k, v in net.init_params(seed=4).items()}
    params["conv.bias"][:2] = -5.0  # channels whose relu is 0 almost everywhere: dead windows, x <= 0
    rng = np.random.default_rng(9)
    X = rng.integers(-2, 3, size=(11, 2, 6, 6)).astype(dtype)  # integers: ties in windows
    labels = rng.integers(0, 3, size=11)
    kc = sn.compile(net, backend="c", dtype=dtype)
    source = open(kc.source_path).read()
    assert "max_pool_grad(c" in source and "masked by conv__out > 0" in source
    assert "pick(conv__out" not in source  # no pass of its own
    lc, gc = kc.loss_and_grad(params, X, labels)
    ln, gn = sn.compile(net, backend="numpy", dtype=dtype).loss_and_grad(params, X, labels)
    tol = 1e-14 if dtype == "float64" else 1e-5
    assert abs(lc - ln) <= tol * abs(ln)
    for key in gn:
        assert rel_max(gc[key], gn[key]) <= tol, key


def test_another_activation_keeps_its_pass() -> None:
    """tanh's derivative is no sign test: its map stays a pass of its own."""
    k = sn.compile(_net("tanh"), backend="c")
    assert "masked by" not in open(k.source_path).read()
