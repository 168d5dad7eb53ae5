"""Property tests: random architectures (tests/strategies.py) against numeric differentiation
and, when installed, PyTorch autograd; through the NumPy backend one network per example and
through C ten networks per compile (RELIABILITY.md "Fuzzing and property testing").

``SYMNN_HYPOTHESIS_SCALE`` multiplies the example counts (200 NumPy + 50 C per CI run)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symnn as sn
from symnn.gradcheck import sample_point
from tests.oracles import HAS_TORCH, torch_loss_and_grad, torch_supports
from tests.strategies import examples, networks

SETTINGS = dict(deadline=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _point(net: sn.Network, batch: int, seed: int, dtype: str):
    params, X, Y = sample_point(net, n=batch, seed=seed)
    if dtype == "float32":  # float32-representable point, so the float64 reference sees the same one
        params = {k: v.astype(np.float32) for k, v in params.items()}
        X = X.astype(np.float32)
        Y = Y if Y.dtype.kind == "i" else Y.astype(np.float32)
    return params, X, Y


def check_network(k, net: sn.Network, batch: int, seed: int) -> None:
    """The kernel's gradient passes numeric differentiation (float32: the float64 reference)
    and, for built-in layers in float64, equals PyTorch's."""
    params, X, Y = _point(net, batch, seed, str(k.dtype))
    loss, grads = k.loss_and_grad(params, X, Y)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    report = sn.gradcheck(k, params, X, Y, seed=seed)
    ok = report.passed or report.passed_norm
    if k.dtype == np.float32:  # the float64 gradient is itself checked numerically
        ok = ok and (report.reference.passed or report.reference.passed_norm)
    assert ok, f"{net}\n{report}\n{getattr(report, 'reference', '')}"
    if HAS_TORCH and k.dtype == np.float64 and torch_supports(net):
        tl, tg = torch_loss_and_grad(net, params, X, Y)
        assert abs(loss - tl) <= 1e-12 * max(1.0, abs(tl))
        for name, g in grads.items():
            err = np.linalg.norm(g - tg[name]) / max(np.linalg.norm(tg[name]), 1e-300)
            assert err <= 1e-10 or np.abs(g - tg[name]).max() <= 1e-13 * max(1.0, np.abs(tg[name]).max()), \
                (name, err)


@settings(max_examples=examples(60), **SETTINGS)
@given(net=networks(), batch=st.integers(1, 32), dtype=st.sampled_from(["float64", "float32"]),
       seed=st.integers(0, 2**16))
def test_numpy_backend_gradients(net: sn.Network, batch: int, dtype: str, seed: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        k = sn.compile(net, dtype=dtype)
    check_network(k, net, batch, seed)


@pytest.mark.needs_cc
@settings(max_examples=examples(2), **SETTINGS)
@given(nets=st.lists(networks(), min_size=10, max_size=10), batch=st.integers(1, 32),
       dtype=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 2**16))
def test_c_backend_gradients_ten_networks_per_compile(nets, batch: int, dtype: str, seed: int) -> None:
    nets = [sn.Network(n.layers, loss=n.loss, l1=n.l1, l2=n.l2, name=f"net{i}") for i, n in enumerate(nets)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        kernels = sn.compile_many(nets, backend="c", dtype=dtype)
    for i, (k, net) in enumerate(zip(kernels, nets)):
        check_network(k, net, batch, seed + i)
        numpy_k = sn.compile(net, dtype=dtype)
        params, X, Y = _point(net, batch, seed + i, dtype)
        lc, gc = k.loss_and_grad(params, X, Y)
        ln, gn = numpy_k.loss_and_grad(params, X, Y)
        tol = 1e-12 if dtype == "float64" else 2e-5
        for name in gc:
            scale = max(np.linalg.norm(gn[name]), 1e-30)
            assert np.linalg.norm(gc[name] - gn[name]) <= tol * scale + 1e-300, (name, net)
