"""``sn.compile(..., flush_denormals=True)``: the C kernels run with subnormal numbers read and
written as zero (x86's DAZ/FTZ), and give the caller's setting back on return; by default they
are IEEE arithmetic. A float32 recurrence over hundreds of steps, whose backward cotangents decay
below 1.2e-38, runs several times faster so (docs/benchmarks_rnn.md)."""

from __future__ import annotations

import pickle
import platform

import numpy as np
import pytest

import symnn as sn
from symnn.errors import ConfigError

X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


def _net() -> sn.Network:
    return sn.Network([sn.Dense(1, 1, "identity")], loss="mse", name="subnormal")


def test_subnormal_results_are_zero_only_when_asked() -> None:
    params = {"W1": np.array([[1e-30]], dtype=np.float32), "b1": np.zeros(1, dtype=np.float32)}
    X = np.array([[1e-10], [3e-9]], dtype=np.float32)  # products 1e-40, 3e-39: float32 subnormals
    exact = sn.compile(_net(), backend="c", dtype="float32")
    flushed = sn.compile(_net(), backend="c", dtype="float32", flush_denormals=True)
    want = (X.astype(np.float64) * 1e-30).astype(np.float32)
    assert np.all(want != 0) and np.all(np.abs(want) < np.finfo(np.float32).tiny)
    got = exact.forward(params, X)
    np.testing.assert_array_equal(got, want)  # IEEE: the subnormal products themselves
    if X86:
        assert np.all(flushed.forward(params, X) == 0.0)
    else:  # no such control on this CPU: the flag changes nothing
        np.testing.assert_array_equal(flushed.forward(params, X), want)
    # the caller's own arithmetic keeps its subnormals after a flushed call
    assert np.float32(1e-30) * np.float32(1e-10) != 0
    assert flushed.build["flush_denormals"] and not exact.build["flush_denormals"]
    # a pickled kernel is rebuilt as it was built
    again = pickle.loads(pickle.dumps(flushed))
    np.testing.assert_array_equal(again.forward(params, X), flushed.forward(params, X))
    assert again.build == flushed.build


def test_normal_values_are_the_same_either_way() -> None:
    x = sn.Input(5, 3)
    net = sn.Network(inputs=x, outputs=sn.GRU(3, 4)(x), loss="mse", name="gru_flush")
    params = net.init_params(seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(6, 15)), rng.normal(size=(6, 4))
    a = sn.compile(net, backend="c").loss_and_grad(params, X, Y)
    b = sn.compile(net, backend="c", flush_denormals=True).loss_and_grad(params, X, Y)
    assert a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])


def test_flush_denormals_is_refused_where_it_cannot_apply() -> None:
    with pytest.raises(ConfigError, match="C backend"):
        sn.compile(_net(), backend="numpy", flush_denormals=True)
    with pytest.raises(ConfigError, match="True or False"):
        sn.compile(_net(), backend="c", flush_denormals="yes")
