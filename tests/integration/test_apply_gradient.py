"""A train step split in two: ``train_gradient`` (the training program's loss and gradient) and
``apply_gradient`` (the emitted optimiser update on a given gradient), the pieces data-parallel
training and gradient accumulation are built from.

Pinned: the two halves are the train step, bit for bit, on both backends and dtypes, with
dropout, clipping and a batch norm's buffers; ``apply_gradient`` keeps train_step's
all-or-nothing rule and its argument checks, in Python and in the C API's status codes.
"""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.driver import emit_files
from symnn.errors import ConfigError, DataError, NonFiniteError, ShapeError


def _nets() -> dict[str, tuple[sn.Network, sn.Optimizer]]:
    x = sn.Input(4)
    h = sn.BatchNorm1d(6, name="bn")(sn.Dense(4, 6, "tanh")(x))
    bn = sn.Network(inputs=x, outputs=sn.Dense(6, 3, "softmax")(h), loss="cross_entropy", name="bnnet")
    drop = sn.Network([sn.Dense(4, 6, "relu", dropout=0.25), sn.Dense(6, 3, "softmax")], loss="cross_entropy",
                      l2=1e-3, name="dropnet")
    return {"bn-clip-value": (bn, sn.Momentum(lr=0.1, momentum=0.9, clip_value=0.05)),
            "dropout-clip-norm": (drop, sn.Adam(lr=0.05, clip_norm=0.1))}


NETS = _nets()
HUGE_STEP = sn.Momentum(lr=1e300, momentum=0.5)
pytestmark = pytest.mark.needs_cc


@pytest.mark.parametrize("case,dtype,backend", [("bn-clip-value", "float64", "c"), ("bn-clip-value", "float32", "numpy"),
                                                ("dropout-clip-norm", "float32", "c"),
                                                ("dropout-clip-norm", "float64", "numpy")])
def test_train_gradient_then_apply_gradient_is_the_train_step(case, dtype, backend) -> None:
    net, opt = NETS[case]
    k = sn.compile(net, backend=backend, dtype=dtype, optimizer=opt)
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    theta = k.pack(net.init_params(seed=1, dtype=dtype))
    state = k.init_state()
    theta2, state2 = theta.copy(), state.copy()
    for step in (1, 2, 3):
        loss = k.train_step(theta, state, X, y, step, seed=5)
        loss2, grad = k.train_gradient(theta2, X, y, step, seed=5)
        kept = grad.copy()
        k.apply_gradient(theta2, state2, grad, step)
        assert loss == loss2 and np.array_equal(theta, theta2) and np.array_equal(state, state2)
        assert np.array_equal(grad, kept)  # the gradient is not consumed
    if net.has_buffers:  # the running statistics moved, as the train step moves them
        lo, hi = next((lo, hi) for name, lo, hi, _ in k.layout if name.endswith("running_mean"))
        assert not np.array_equal(theta[lo:hi], k.pack(net.init_params(seed=1, dtype=dtype))[lo:hi])


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_apply_gradient_refuses_bad_arguments_and_changes_nothing(backend) -> None:
    net, _ = NETS["dropout-clip-norm"]
    k = sn.compile(net, backend=backend, optimizer=HUGE_STEP)
    theta = k.pack(net.init_params(seed=1))
    state = k.init_state()
    before = theta.copy(), state.copy()
    grad = np.full(k.n_params, 1e-300)
    with pytest.raises(NonFiniteError):  # p - lr*g overflows: all or nothing
        k.apply_gradient(theta, state, np.full(k.n_params, 1e10), 1)
    bad = grad.copy()
    bad[3] = np.nan
    with pytest.raises(NonFiniteError):
        k.apply_gradient(theta, state, bad, 1)
    with pytest.raises(ShapeError):
        k.apply_gradient(theta, state, grad[:-1], 1)
    with pytest.raises(DataError, match="overlap"):
        k.apply_gradient(theta, state, theta, 1)
    with pytest.raises(ConfigError):
        k.apply_gradient(theta, state, grad, 0)
    assert np.array_equal(theta, before[0]) and np.array_equal(state, before[1])
    with pytest.raises(ConfigError, match="optimizer"):
        sn.compile(net, backend=backend).apply_gradient(theta, state, grad, 1)


def test_the_c_api_checks_apply_gradient_as_it_checks_train_step() -> None:
    net, _ = NETS["dropout-clip-norm"]
    k = sn.compile(net, backend="c", optimizer=HUGE_STEP)
    files = emit_files(net, "c", optimizer=HUGE_STEP)
    h = files["dropnet.h"]
    assert "int dropnet_apply_gradient(dropnet_real *params, dropnet_real *state, dropnet_real *grad, int64_t step);" in h
    assert "int dropnet_train_gradient(" in h
    lib, ffi = k.module.lib, k.module.ffi
    theta = k.pack(net.init_params(seed=1))
    state, grad = k.init_state(), np.full(k.n_params, 0.5)
    p = ffi.from_buffer("double[]", theta)
    s = ffi.from_buffer("double[]", state)
    g = ffi.from_buffer("double[]", grad)
    assert lib.dropnet_apply_gradient(ffi.NULL, s, g, 1) == lib.SYMNN_ERR_NULL
    assert lib.dropnet_apply_gradient(p, s, ffi.NULL, 1) == lib.SYMNN_ERR_NULL
    assert lib.dropnet_apply_gradient(p, s, g, 0) == lib.SYMNN_ERR_ARG
    assert lib.dropnet_apply_gradient(p, s, p, 1) == lib.SYMNN_ERR_ALIAS
    assert lib.dropnet_apply_gradient(p, p, g, 1) == lib.SYMNN_ERR_ALIAS
    before = theta.copy()
    grad[0] = np.inf
    assert lib.dropnet_apply_gradient(p, s, g, 1) == lib.SYMNN_ERR_NONFINITE
    assert np.array_equal(theta, before)
    grad[0] = 0.5
    assert lib.dropnet_apply_gradient(p, s, g, 1) == lib.SYMNN_OK and not np.array_equal(theta, before)
