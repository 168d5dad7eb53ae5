"""Catalogue x dtype: compile, run, gradcheck; PyTorch oracle; stability cases N1-N10."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import symnn as sn
from tests.catalogue import CATALOGUE, c_catalogue, data
from tests.oracles import HAS_TORCH, torch_loss_and_grad

# the catalogue's C against NumPy on the build users get (-O3; the suite builds others at -O1: tests/conftest.py)
pytestmark = pytest.mark.native_build

BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]


def _kernel(name: str, backend: str, dtype: str = "float64") -> sn.Kernel:
    """CATALOGUE[name]'s kernel: in C from the catalogue's one module per dtype (the tests here
    only call the kernels, so they share them), in NumPy its own."""
    return c_catalogue(dtype)[name] if backend == "c" else sn.compile(CATALOGUE[name], dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_catalogue_gradcheck(name: str, dtype: str, backend: str) -> None:
    net = CATALOGUE[name]
    k = _kernel(name, backend, dtype)
    params = net.init_params(seed=3, dtype=dtype)
    X, Y = data(net, params=net.init_params(seed=3))
    report = sn.gradcheck(k, params, X, Y)
    assert report.passed, str(report)
    if dtype == "float64":
        assert report.max_rel_error <= 1e-7
    else:
        assert report.max_rel_error <= 1e-5 and report.reference.max_rel_error <= 1e-7


@pytest.mark.needs_cc
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_c_agrees_with_numpy(name: str, dtype: str) -> None:
    """Same derivation, two backends: float64 to 1e-14 relative norm; float32 to 2e-6 (each
    float32 backend alone is ~5e-7 off the float64 gradient, so their difference is up to about
    twice that; the worst measured is 9.7e-7)."""
    net = CATALOGUE[name]
    kc, kn = _kernel(name, "c", dtype), _kernel(name, "numpy", dtype)
    p = net.init_params(seed=4, dtype=dtype)
    X, Y = data(net, n=9, seed=4)
    tol = 1e-14 if dtype == "float64" else 2e-6

    def rel(a, b) -> float:
        return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-300))

    assert rel(kc.forward(p, X), kn.forward(p, X)) <= tol
    lc, gc = kc.loss_and_grad(p, X, Y)
    ln, gn = kn.loss_and_grad(p, X, Y)
    assert rel(lc, ln) <= tol and rel(kc.loss(p, X, Y), ln) <= tol
    for key in gn:
        assert gc[key].dtype == np.dtype(dtype) and gc[key].shape == gn[key].shape
        assert rel(gc[key], gn[key]) <= tol, key
    if Y.ndim == 1:  # labels and their one-hot rows take different C entry points
        onehot = np.eye(int(net.n_out))[Y]
        assert kc.loss_and_grad(p, X, onehot)[0] == lc


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_forward_and_loss_agree_with_interpreter(name: str, backend: str) -> None:
    from symnn.graph import build_forward
    from symnn.interpret import evaluate

    net = CATALOGUE[name]
    k = _kernel(name, backend)
    X, Y = data(net)
    p = net.init_params(seed=1)
    fwd = build_forward(net)
    Yd = np.eye(int(net.n_out))[Y] if Y.ndim == 1 else Y
    ref = evaluate({"y": fwd.output, "L": fwd.loss}, {**p, "X": X, "Y": Yd})
    np.testing.assert_allclose(k.forward(p, X), ref["y"], rtol=1e-13, atol=1e-15)
    assert abs(k.loss(p, X, Y) - float(ref["L"])) <= 1e-13 * max(1.0, abs(float(ref["L"])))
    assert k.loss_and_grad(p, X, Y)[0] == k.loss(p, X, Y)


@pytest.mark.parametrize("method", ["complex_step", "central"])
def test_gradcheck_catches_one_wrong_entry(method: str) -> None:
    """A gradient entry off by a relative 1e-6 must fail the check, whichever entry it is."""
    net = CATALOGUE["xor"]
    k = sn.compile(net)
    X, Y = data(net)
    p = net.init_params(seed=2)
    assert sn.gradcheck(k, p, X, Y, method=method).passed
    original = k.module._loss_and_grad
    _, grads = original(p, X, Y)
    scale = max(float(np.abs(g).max()) for g in grads.values())
    for name, g in grads.items():
        for idx in np.ndindex(g.shape):
            if method == "central" and abs(g[idx]) < 1e-6 * scale:
                continue  # below the central-difference floor (documented)

            def wrong(params, X_, Y_, name=name, idx=idx):
                loss, gr = original(params, X_, Y_)
                gr = {kk: v.copy() for kk, v in gr.items()}
                gr[name][idx] *= 1 + 1e-6
                return loss, gr

            k.module._loss_and_grad = wrong
            try:
                report = sn.gradcheck(k, p, X, Y, method=method)
            finally:
                k.module._loss_and_grad = original
            assert not report.passed, (name, idx, str(report))
            assert report.worst_param == name and report.worst_index == idx


def test_gradcheck_projection_for_large_nets() -> None:
    net = sn.Network([sn.Dense(30, 40, "tanh"), sn.Dense(40, 5, "softmax")], loss="cross_entropy")
    k = sn.compile(net)
    X = np.random.default_rng(0).normal(size=(8, 30))
    report = sn.gradcheck(k, net.init_params(seed=0), X, np.arange(8) % 5, max_entries=100)
    assert report.method == "projection/complex_step" and report.max_rel_error < 1e-10


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch oracle not installed")
@pytest.mark.parametrize("name", ["xor", "softmax_ce_relu", "mse_sigmoid", "sigmoid_bce_elu",
                                  "mse_silu_tanh", "softmax_ce_gelu_l2"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_against_torch_autograd(name: str, backend: str) -> None:
    net = CATALOGUE[name]
    k = _kernel(name, backend)
    X, Y = data(net)
    p = net.init_params(seed=5)
    loss, grads = k.loss_and_grad(p, X, Y)
    tl, tg = torch_loss_and_grad(net, p, X, Y)
    assert abs(loss - tl) <= 1e-12 * abs(tl)
    for kk in p:
        ref = tg[kk]
        err = np.linalg.norm(grads[kk] - ref) / max(np.linalg.norm(ref), 1e-300)
        assert err <= 1e-10, (kk, err)


# -- numerical stability (RELIABILITY.md N cases) ------------------------------------------------
def _one_layer(act: str, loss: str, k: int, dtype: str = "float64", backend: str = "numpy", **kw):
    net = sn.Network([sn.Dense(k, k, act)], loss=loss)
    eye = {"W1": np.eye(k, dtype=dtype), "b1": np.zeros(k, dtype=dtype)}
    return sn.compile(net, backend=backend, dtype=dtype, **kw), eye


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("label,loss,grad", [(0, 0.0, [0.0, 0.0, 0.0]), (1, 1000.0, [1.0, -1.0, 0.0])])
def test_N1_softmax_ce_extreme_logits(label, loss, grad, backend) -> None:
    k, p = _one_layer("softmax", "cross_entropy", 3, backend=backend)
    X = np.array([[1000.0, 0.0, 0.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        lv, g = k.loss_and_grad(p, X, np.array([label]))
    assert lv == loss
    np.testing.assert_array_equal(g["b1"], grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_N2_equal_large_logits(backend: str) -> None:
    k, p = _one_layer("softmax", "cross_entropy", 3, backend=backend)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        lv, g = k.loss_and_grad(p, np.full((1, 3), 800.0), np.array([0]))
    assert lv == pytest.approx(1.0986122886681098, rel=1e-15)
    np.testing.assert_allclose(g["b1"], np.array([1 / 3, 1 / 3, 1 / 3]) - [1, 0, 0], rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_N4_sigmoid_and_derivative_extremes(dtype: str, backend: str) -> None:
    import mpmath

    xs = np.array([-1000, -710, -89, 0, 30, 89, 1000], dtype=dtype)
    net = sn.Network([sn.Dense(1, 1, "sigmoid")], loss="mse")
    k = sn.compile(net, backend=backend, dtype=dtype)
    p = {"W1": np.ones((1, 1), dtype), "b1": np.zeros(1, dtype)}
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = k.forward(p, xs[:, None])[:, 0]
    assert np.all((s >= 0) & (s <= 1))
    eps = np.finfo(dtype).eps
    for x, v in zip(xs, s):
        ref = float(1 / (1 + mpmath.exp(-mpmath.mpf(float(x)))))
        if ref >= np.finfo(dtype).tiny:
            assert abs(float(v) - ref) <= 4 * eps * ref
    # derivative through MSE against target 0: dL/db = 2 s * s(1 - s)
    for x in xs:
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            _, g = k.loss_and_grad(p, np.array([[x]], dtype), np.zeros((1, 1), dtype))
        assert np.isfinite(g["b1"]).all() and g["b1"][0] >= 0


@pytest.mark.parametrize("x,y,dtype,expected", [(40.0, 0.0, "float64", 40.0), (17.0, 0.0, "float32", 17.0),
                                                (-800.0, 1.0, "float64", 800.0)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_N5_bce_from_logits(x, y, dtype, expected, backend) -> None:
    k, p = _one_layer("sigmoid", "bce", 1, dtype, backend)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        lv, g = k.loss_and_grad(p, np.array([[x]], dtype), np.array([[y]], dtype))
    assert lv == pytest.approx(expected, rel=1e-6)
    assert np.isfinite(g["b1"]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_N7_tanh_saturates_exactly(backend: str) -> None:
    k, p = _one_layer("tanh", "mse", 1, backend=backend)
    X = np.array([[20.0], [44.0], [1000.0], [-20.0], [-44.0], [-1000.0]])
    out = k.forward(p, X)[:, 0]
    np.testing.assert_array_equal(np.abs(out[1:3]), 1.0)
    np.testing.assert_array_equal(out[3:], -out[:3])


@pytest.mark.parametrize("backend", BACKENDS)
def test_N8_relu_derivative_at_zero_and_N9_nan(backend: str) -> None:
    k, p = _one_layer("relu", "mse", 1, backend=backend, check_finite=False)
    X = np.array([[0.0], [5e-324], [-0.0], [-1.0]])
    # dL/db = mean over rows of 2 (relu(x) + 1) relu'(x); check relu' per row
    per_row = [k.loss_and_grad(p, X[i:i + 1], np.full((1, 1), -1.0))[1]["b1"][0] for i in range(4)]
    assert per_row == [0.0, 2.0, 0.0, 0.0]
    assert np.isnan(k.forward(p, np.array([[np.nan]]))[0, 0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_N10_subnormals_survive(backend: str) -> None:
    """Also C14: loading a compiled module leaves the FP environment (no FTZ/DAZ) alone."""
    k, p = _one_layer("identity", "mse", 1, backend=backend)
    out = k.forward(p, np.array([[1e-310]]))
    assert out[0, 0] == 1e-310
    assert 0.25 * 2.0**-1022 != 0.0


def test_user_huber_is_not_smooth_warning_free_for_builtins() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sn.compile(CATALOGUE["softmax_ce_relu"])


def test_norm_criterion_is_separate_from_the_per_entry_one() -> None:
    from symnn.gradcheck import GradcheckReport

    wide = GradcheckReport(2e-7, "W2", (6, 43), -2.5e-6, -2.5e-6, "central", 1e-7, norm_rel_error=4e-10)
    assert not wide.passed and wide.passed_norm
    assert not GradcheckReport(2e-5, "W1", (0, 0), 1.0, 1.0, "central", 1e-7, norm_rel_error=4e-10).passed_norm
    assert not GradcheckReport(2e-7, "W1", (0, 0), 1.0, 1.0, "complex_step", 1e-9, norm_rel_error=1e-12).passed_norm
