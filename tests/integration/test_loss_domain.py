"""Losses and activations with a declared domain (issue 17, item 8).

A loss with ``log(p)`` is defined for predictions in (0, 1) only. Declared with
``domain=(0, 1)`` it is probed inside the domain, the network must feed it an activation whose
values stay in [0, 1], and the emitted code clips the prediction to
``[eps, 1 - eps]`` with ``eps`` the dtype's machine epsilon: a sigmoid saturated to exactly 0 or
1 gives a finite loss (the plain formula gives inf), and everywhere else the value and gradient
are the formula's own, checked here against PyTorch autograd.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import sympy as sp

import symnn as sn
from symnn.errors import ConfigError, InvalidExpressionError, SpecError, SpecTypeError
from symnn.kernel import Kernel

NEEDS_TORCH = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
DTYPES = ["float64", "float32"]

p, y, z = sp.symbols("p y z")
GAMMA = 2
POS_WEIGHT = 3


def _losses() -> dict[str, sn.Loss]:
    return {
        # focal loss (Lin et al. 2017) with alpha = 1, gamma = 2
        "focal": sn.Loss("focal", -(y * (1 - p) ** GAMMA * sp.log(p) + (1 - y) * p**GAMMA * sp.log(1 - p)),
                         pred=p, target=y, domain=(0, 1)),
        # BCE with PyTorch's pos_weight on the positive term
        "wbce": sn.Loss("wbce", -(POS_WEIGHT * y * sp.log(p) + (1 - y) * sp.log(1 - p)),
                        pred=p, target=y, domain=(0, 1)),
    }


def _loss_formula(name: str, prob: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The loss terms in plain NumPy (no guard): the reference for the saturated case."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "focal":
            return -(target * (1 - prob) ** GAMMA * np.log(prob)
                     + (1 - target) * prob**GAMMA * np.log(1 - prob))
        return -(POS_WEIGHT * target * np.log(prob) + (1 - target) * np.log(1 - prob))


def _net(name: str) -> sn.Network:
    return sn.Network([sn.Dense(4, 5, "tanh"), sn.Dense(5, 3, "sigmoid")], loss=_losses()[name],
                      name=f"dom_{name}")


_KERNELS: dict[tuple[str, str, str], Kernel] = {}  # compiled once per module run


def _kernel(name: str, backend: str, dtype: str) -> Kernel:
    key = (name, backend, dtype)
    if key not in _KERNELS:
        _KERNELS[key] = sn.compile(_net(name), backend=backend, dtype=dtype, optimizer="sgd")
    return _KERNELS[key]


def _data(dtype: str = "float64"):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(6, 4))
    Y = (rng.uniform(size=(6, 3)) < 0.5).astype(np.float64)
    Y[0] = 0.3  # a soft target: the loss is a polynomial in y, not only its 0/1 cases
    return X.astype(dtype), Y.astype(dtype)


def _torch_loss_and_grad(name: str, params: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray):
    """PyTorch's value and gradients, float64: weighted BCE from the logits (torch's own
    ``binary_cross_entropy_with_logits`` with ``pos_weight``), focal loss by its formula."""
    import torch

    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    a1 = torch.tanh(torch.tensor(X) @ t["W1"].T + t["b1"])
    logits = a1 @ t["W2"].T + t["b2"]
    target = torch.tensor(Y)
    if name == "wbce":
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, pos_weight=torch.tensor(float(POS_WEIGHT), dtype=torch.float64))
    else:
        prob = torch.sigmoid(logits)
        loss = -(target * (1 - prob) ** GAMMA * torch.log(prob)
                 + (1 - target) * prob**GAMMA * torch.log(1 - prob)).mean()
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in t.items()}


@NEEDS_TORCH
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["focal", "wbce"])
def test_loss_and_gradient_match_torch(name: str, backend: str) -> None:
    k = _kernel(name, backend, "float64")
    params = k.network.init_params(seed=3)
    params = {key: v * 2 for key, v in params.items()}  # outputs well spread over (0, 1)
    X, Y = _data()
    want_loss, want = _torch_loss_and_grad(name, params, X, Y)
    loss, grads = k.loss_and_grad(params, X, Y)
    assert k.loss(params, X, Y) == pytest.approx(want_loss, rel=1e-12)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for key, g in want.items():
        np.testing.assert_allclose(grads[key], g, rtol=1e-10, atol=1e-13 * np.abs(g).max(), err_msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["focal", "wbce"])
def test_float32_follows_float64(name: str, backend: str) -> None:
    """RELIABILITY.md's float32 target: the float32 gradient within 1e-5 (norm) of the float64
    one at the same, float32-representable parameters."""
    params32 = {key: v.astype(np.float32) for key, v in _net(name).init_params(seed=3).items()}
    X, Y = _data("float32")
    loss32, g32 = _kernel(name, backend, "float32").loss_and_grad(params32, X, Y)
    loss64, g64 = _kernel(name, backend, "float64").loss_and_grad(
        {key: v.astype(np.float64) for key, v in params32.items()}, X.astype(np.float64), Y.astype(np.float64))
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    flat32 = np.concatenate([g32[key].ravel() for key in g64]).astype(np.float64)
    flat64 = np.concatenate([g64[key].ravel() for key in g64])
    assert np.linalg.norm(flat32 - flat64) <= 1e-5 * np.linalg.norm(flat64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["focal", "wbce"])
def test_guard_keeps_saturated_predictions_finite(name: str, backend: str, dtype: str) -> None:
    """Inputs of 1e4 saturate the sigmoid to exactly 1 and 0, each against the opposite target:
    the plain formula is inf there. The guard evaluates it at 1 - eps and eps (eps the dtype's
    machine epsilon): a finite loss equal to that value, finite gradients, and a finite train step."""
    k = _kernel(name, backend, dtype)
    params = {key: np.zeros_like(v) for key, v in k.network.init_params(seed=0, dtype=dtype).items()}
    params["W1"][0, 0] = 1.0  # a1[:, 0] = tanh(x0) = +-1 exactly
    params["W2"][:, 0] = 1e4
    X = np.zeros((2, 4), dtype=dtype)
    X[:, 0] = (1e3, -1e3)
    Y = np.array([[0.0] * 3, [1.0] * 3], dtype=dtype)
    prob = k.forward(params, X)
    np.testing.assert_array_equal(prob, [[1.0] * 3, [0.0] * 3])
    assert np.isinf(_loss_formula(name, prob.astype(np.float64), Y.astype(np.float64))).all()

    eps = float(np.finfo(dtype).eps)
    want = _loss_formula(name, np.array([[1 - eps] * 3, [eps] * 3]), Y.astype(np.float64)).mean()
    loss, grads = k.loss_and_grad(params, X, Y)
    assert k.loss(params, X, Y) == pytest.approx(want, rel=4 * eps)
    assert loss == pytest.approx(want, rel=4 * eps)
    assert all(np.isfinite(g).all() for g in grads.values())
    theta, state = k.pack(params), k.init_state()
    assert k.train_step(theta, state, X, Y, 1) == pytest.approx(want, rel=4 * eps)
    assert np.isfinite(theta).all()


def test_loss_without_a_domain_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidExpressionError, match=r"loss 'b' -y\*log\(p\) - \(1 - y\)\*log\(1 - p\) is not real "
                                                     r"at p = -3 .*declare the interval where it is defined with "
                                                     r"domain=\(lo, hi\) \(e\.g\. domain=\(0, 1\)"):
        sn.Loss("b", -(y * sp.log(p) + (1 - y) * sp.log(1 - p)), pred=p, target=y)


def test_a_domain_too_wide_is_still_refused() -> None:
    with pytest.raises(InvalidExpressionError, match=r"inside its declared domain \(0, 1\): narrow the domain"):
        sn.Loss("half", -y * sp.log(p - sp.Rational(1, 2)), pred=p, target=y, domain=(0, 1))
    with pytest.raises(sn.NonDifferentiableError, match=r"undefined at p = 1/2.*narrow its domain \(0, 1\)"):
        sn.Loss("pole", y / (p - sp.Rational(1, 2)), pred=p, target=y, domain=(0, 1))


@pytest.mark.parametrize("domain,exc,message", [
    ((1, 0), ConfigError, r"needs lo < hi, got \(1, 0\)"),
    ((0, float("nan")), ConfigError, r"needs lo < hi"),
    ((0,), SpecTypeError, r"domain must be a pair"),
    ("01", SpecTypeError, r"domain must be a pair"),
    ((0, "1"), SpecTypeError, r"domain upper end must be a real number, got str"),
    ((True, 1), SpecTypeError, r"domain lower end must be a real number, got bool"),
    ((0, sp.I), SpecTypeError, r"domain upper end must be a real number"),
])
def test_domain_must_be_an_interval(domain, exc, message) -> None:
    with pytest.raises(exc, match=message):
        sn.Loss("w", -y * sp.log(p), pred=p, target=y, domain=domain)


def test_output_activation_must_stay_in_the_domain() -> None:
    wbce = _losses()["wbce"]
    for act in ("identity", "tanh", "softplus"):
        with pytest.raises(SpecError, match=rf"loss 'wbce' is defined for predictions in \(0, 1\), but layer 2's "
                                            rf"activation '{act}' gives .*use an output activation whose values "
                                            r"lie in \[0, 1\]"):
            sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 2, act)], loss=wbce)
    for act in ("sigmoid", "softmax"):
        sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 2, act)], loss=wbce)
    # a half-line domain: softplus (values > 0) feeds a Poisson-style loss, tanh does not
    poisson = sn.Loss("poisson", p - y * sp.log(p), pred=p, target=y, domain=(0, math.inf))
    sn.Network([sn.Dense(3, 2, "softplus")], loss=poisson)
    with pytest.raises(SpecError, match=r"predictions in \(0, inf\).*'tanh' gives -"):
        sn.Network([sn.Dense(3, 2, "tanh")], loss=poisson)


@NEEDS_TORCH
@pytest.mark.parametrize("backend", BACKENDS)
def test_activation_with_a_domain_is_guarded(backend: str) -> None:
    """sqrt(z) declared on (0, oo): refused without the domain; with it, torch's values and
    gradients where z > 0, and at z <= 0 the formula at eps (sqrt(eps), slope 1/(2 sqrt(eps)))."""
    import torch

    with pytest.raises(InvalidExpressionError, match=r"is not real at z = -3.*domain=\(lo, hi\)"):
        sn.Activation("root", sp.sqrt(z), var=z)
    root = sn.Activation("root", sp.sqrt(z), var=z, domain=(0, sp.oo))
    assert root.domain == (0.0, math.inf)
    net = sn.Network([sn.Dense(2, 3, root), sn.Dense(3, 1)], loss="mse", name="root_net")
    k = sn.compile(net, backend=backend)
    rng = np.random.default_rng(0)
    params = {"W1": rng.uniform(0.5, 1.5, size=(3, 2)), "b1": np.array([0.5, 0.1, -10.0]),
              "W2": rng.normal(size=(1, 3)), "b2": np.zeros(1)}
    X, Y = rng.uniform(0.5, 2.0, size=(5, 2)), rng.normal(size=(5, 1))
    t = {key: torch.tensor(v, requires_grad=True) for key, v in params.items()}
    zt = torch.tensor(X) @ t["W1"].T + t["b1"]
    eps = float(np.finfo(np.float64).eps)
    a1 = torch.sqrt(torch.clamp(zt, min=eps))  # unit 3 has z < 0: torch's clamp has slope 0 there
    out = a1 @ t["W2"].T + t["b2"]
    torch.nn.functional.mse_loss(out, torch.tensor(Y)).backward()
    np.testing.assert_allclose(k.forward(params, X), out.detach().numpy(), rtol=1e-13)
    _, grads = k.loss_and_grad(params, X, Y)
    for key in ("W2", "b2"):
        np.testing.assert_allclose(grads[key], t[key].grad.numpy(), rtol=1e-10, atol=1e-14)
    # units 1-2 (z > 0) are torch's; unit 3 is guarded: the straight-through slope, not torch's 0
    np.testing.assert_allclose(grads["W1"][:2], t["W1"].grad.numpy()[:2], rtol=1e-10)
    d_out = 2 * (k.forward(params, X) - Y) / Y.size
    slope = 0.5 / math.sqrt(eps)
    np.testing.assert_allclose(grads["b1"][2], (d_out[:, 0] * params["W2"][0, 2] * slope).sum(), rtol=1e-12)


def test_domain_survives_toml_and_model_files(tmp_path) -> None:
    from symnn.persist import load, save
    from symnn.spec_toml import dumps_spec, loads_spec

    root = sn.Activation("root", sp.sqrt(z), var=z, domain=(0, math.inf))
    net = sn.Network([sn.Dense(2, 3, root), sn.Dense(3, 2, "sigmoid")], loss=_losses()["wbce"], name="rt")
    text = dumps_spec(net)
    assert "domain = [0.0, 1.0]" in text and "domain = [0.0, inf]" in text
    assert loads_spec(text).network == net
    path = save(tmp_path / "m.npz", net, net.init_params(seed=0))
    assert load(path).network == net
