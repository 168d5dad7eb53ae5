"""The kernels' results do not depend on the vector width the compiler's tuning picks (GCC's
-march=native tunes Zen 4 for 256-bit loops and Zen 5 for 512-bit ones): the element-wise maps do
the same operations on every element at either width, and the sums of products over k that the
templates write as loops are fused multiply-adds (``NAME__MADD``) where the target has them, not
``acc += a*b``, which GCC vectorised as vector products added in order with only the scalar
tail's fused."""

from __future__ import annotations

import platform

import numpy as np
import pytest

import symnn as sn

#: -mprefer-vector-width is x86's option
pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="-mprefer-vector-width is an x86 option")


def test_the_wide_build_gives_the_bits_of_the_narrow_one(monkeypatch) -> None:
    """Element-wise maps (tanh and its derivative: the loops the width changes), a softmax head on
    one-hot targets (the loss's sum of y * z) and Adam with clip_norm (its sum of squares):
    loss, every gradient and a train step bitwise equal across the two builds (float64; the
    float32 file prints the same loops with fmaf).
    Before the sums over k were written as fused multiply-adds (``__MADD``), a product's sum
    over the batch rows differed here in its last bit."""
    x = sn.Input(18)
    h = sn.Dense(18, 8, activation="tanh", name="hidden")(x)
    y = sn.Dense(8, 4, activation="softmax", name="fc")(h)
    net = sn.Network(inputs=x, outputs=y, loss="cross_entropy", name="widths")
    rng = np.random.default_rng(5)
    X, labels = rng.normal(size=(7, 18)), rng.integers(0, 4, 7)
    onehot = np.eye(4)[labels]
    for dtype in ("float64",):
        results = []
        for width in ("-mprefer-vector-width=512", "-mprefer-vector-width=256"):
            monkeypatch.setenv("SYMNN_CFLAGS", width)
            k = sn.compile(net, backend="c", dtype=dtype, optimizer=sn.Adam(lr=0.01, clip_norm=0.5))
            params = k.new_params(seed=1)
            loss, grads = k.loss_and_grad(params, X.astype(dtype), onehot.astype(dtype))
            theta, state = k.pack(params), k.init_state()
            k.train_step(theta, state, X.astype(dtype), labels, 1)
            results.append((loss, {key: g.copy() for key, g in grads.items()}, theta.copy(), state.copy()))
        (l0, g0, t0, s0), (l1, g1, t1, s1) = results
        assert l0 == l1 and np.array_equal(t0, t1) and np.array_equal(s0, s1)
        assert all(np.array_equal(g0[key], g1[key]) for key in g0)


def test_wide_map_helpers_give_the_bits_of_the_tuned_width(monkeypatch) -> None:
    """A recurrent network's element-wise maps are helpers vectorised 512 bits wide where the
    target has AVX-512 (``NAME__WIDE``); built with -DSYMNN_MAPS_256 they follow GCC's tuning.
    An LSTM's loss and every gradient (sigmoids, tanhs, their derivatives at every step) are
    bitwise the same from both builds, in both dtypes."""
    x = sn.Input(5, 3)
    h = sn.LSTM(3, 6, name="lstm")(x)
    net = sn.Network(inputs=x, outputs=sn.Dense(6, 2, name="fc")(h), loss="mse", name="wide_maps")
    source = sn.emit_source(net, backend="c", dtype="float64")
    assert "static WIDE_MAPS__WIDE void" in source and "prefer-vector-width=512" in source
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(9, 5, 3)), rng.normal(size=(9, 2))
    for dtype in ("float64", "float32"):
        results = []
        for flags in ("", "-DSYMNN_MAPS_256"):
            monkeypatch.setenv("SYMNN_CFLAGS", flags)
            k = sn.compile(net, backend="c", dtype=dtype)
            loss, grads = k.loss_and_grad(k.new_params(seed=2), X.astype(dtype), Y.astype(dtype))
            results.append((loss, {key: g.copy() for key, g in grads.items()}))
        (l0, g0), (l1, g1) = results
        assert l0 == l1 and all(np.array_equal(g0[key], g1[key]) for key in g0), dtype
