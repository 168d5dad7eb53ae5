"""Optimisers emitted as code: 100 steps match torch.optim, both backends; S16 validation."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import symnn as sn
from symnn.errors import ConfigError, DTypeError, SpecTypeError

HAS_TORCH = importlib.util.find_spec("torch") is not None
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
OPTIMIZERS = {
    "sgd": (dict(lr=0.05), "SGD", dict(lr=0.05)),
    "momentum": (dict(lr=0.05, momentum=0.9), "SGD", dict(lr=0.05, momentum=0.9)),
    "nesterov": (dict(lr=0.05, momentum=0.8), "SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    "adagrad": (dict(lr=0.05), "Adagrad", dict(lr=0.05)),
    "rmsprop": (dict(lr=0.01, alpha=0.9), "RMSprop", dict(lr=0.01, alpha=0.9)),
    "adam": (dict(lr=0.01), "Adam", dict(lr=0.01)),
    "adamw": (dict(lr=0.01, weight_decay=0.05), "AdamW", dict(lr=0.01, weight_decay=0.05)),
}


def _net() -> sn.Network:
    return sn.Network([sn.Dense(4, 6, "tanh"), sn.Dense(6, 3, "softmax")], loss="cross_entropy",
                      l2=1e-3, name="opt_net")


def _batches(steps: int):
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(8, 4)), rng.integers(0, 3, 8)) for _ in range(steps)]


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch oracle not installed")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_100_steps_match_torch_optim(name: str, backend: str) -> None:
    import torch

    ours, torch_name, torch_kw = OPTIMIZERS[name]
    net = _net()
    k = sn.compile(net, backend=backend, optimizer=sn.optimizer(name, **ours))
    params = net.init_params(seed=1)
    theta, state = k.pack(params), k.init_state()
    tp = {key: torch.tensor(val, requires_grad=True) for key, val in params.items()}
    topt = getattr(torch.optim, torch_name)(list(tp.values()), **torch_kw)
    for step, (X, y) in enumerate(_batches(100), 1):
        loss = k.train_step(theta, state, X, y, step)
        topt.zero_grad()
        z1 = torch.tensor(X) @ tp["W1"].T + tp["b1"]
        z2 = torch.tanh(z1) @ tp["W2"].T + tp["b2"]
        tl = torch.nn.functional.cross_entropy(z2, torch.tensor(y)) + net.l2 / 2 * (
            (tp["W1"] ** 2).sum() + (tp["W2"] ** 2).sum())
        tl.backward()
        topt.step()
        assert abs(loss - tl.item()) <= 1e-10 * abs(tl.item()), step
    ref = np.concatenate([tp[key].detach().numpy().ravel() for key in params])
    assert np.linalg.norm(theta - ref) / np.linalg.norm(ref) <= 1e-10


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch oracle not installed")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clip", [dict(clip_norm=0.05), dict(clip_value=0.01), dict(clip_value=0.02, clip_norm=0.03)])
def test_clipping_matches_torch(clip: dict, backend: str) -> None:
    import torch

    net = _net()
    k = sn.compile(net, backend=backend, optimizer=sn.Adam(lr=0.01, **clip))
    params = net.init_params(seed=1)
    theta, state = k.pack(params), k.init_state()
    tp = {key: torch.tensor(val, requires_grad=True) for key, val in params.items()}
    topt = torch.optim.Adam(list(tp.values()), lr=0.01)
    for step, (X, y) in enumerate(_batches(50), 1):
        k.train_step(theta, state, X, y, step)
        topt.zero_grad()
        z2 = torch.tanh(torch.tensor(X) @ tp["W1"].T + tp["b1"]) @ tp["W2"].T + tp["b2"]
        tl = torch.nn.functional.cross_entropy(z2, torch.tensor(y)) + net.l2 / 2 * (
            (tp["W1"] ** 2).sum() + (tp["W2"] ** 2).sum())
        tl.backward()
        if "clip_value" in clip:
            torch.nn.utils.clip_grad_value_(list(tp.values()), clip["clip_value"])
        if "clip_norm" in clip:
            torch.nn.utils.clip_grad_norm_(list(tp.values()), clip["clip_norm"])
        topt.step()
    ref = np.concatenate([tp[key].detach().numpy().ravel() for key in params])
    assert np.linalg.norm(theta - ref) / np.linalg.norm(ref) <= 1e-10


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_gradient_updates_nothing(backend: str) -> None:
    net = sn.Network([sn.Dense(2, 1, "identity")], loss="mse", name="nf")
    k = sn.compile(net, backend=backend, optimizer=sn.SGD(lr=1.0), check_finite=False)
    theta, state = k.pack(net.init_params(seed=0)), k.init_state()
    X, Y = np.array([[1e300, 1e300]]), np.array([[0.0]])
    before = theta.copy()
    with pytest.raises(sn.NonFiniteError):
        k.train_step(theta, state, X, Y, 1)
    assert np.array_equal(theta, before)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_backends_agree_and_are_deterministic(name: str) -> None:
    pytest.importorskip("cffi")
    ours = OPTIMIZERS[name][0]
    net = _net()
    runs = []
    for backend in ("numpy", "c", "c"):
        k = sn.compile(net, backend=backend, optimizer=sn.optimizer(name, **ours))
        theta, state = k.pack(net.init_params(seed=2)), k.init_state()
        for step, (X, y) in enumerate(_batches(30), 1):
            k.train_step(theta, state, X, y, step)
        runs.append(np.concatenate([theta, state.ravel()]))
    assert np.array_equal(runs[1], runs[2])  # same backend, same seed: bitwise
    assert np.linalg.norm(runs[0] - runs[1]) <= 1e-13 * np.linalg.norm(runs[0])


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="adam", lr=0.0), "lr"), (dict(name="adam", lr=-1.0), "lr"), (dict(name="sgd", lr=float("nan")), "lr"),
    (dict(name="adam", beta1=1.0), "beta1"), (dict(name="adam", beta2=-0.1), "beta2"),
    (dict(name="adam", eps=0.0), "eps"), (dict(name="momentum", momentum=1.5), "momentum"),
    (dict(name="rmsprop", alpha=1.0), "alpha"), (dict(name="adamw", weight_decay=-1e-3), "weight_decay"),
    (dict(name="adam", momentum=0.9), "no hyperparameter"), (dict(name="lbfgs"), "unknown optimizer"),
    (dict(name="adam", clip_norm=0.0), "clip_norm"), (dict(name="sgd", clip_value=float("inf")), "clip_value"),
])
def test_S16_hyperparameters_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        sn.optimizer(**kwargs)


def test_bad_types_and_missing_optimizer() -> None:
    with pytest.raises(SpecTypeError):
        sn.optimizer("adam", lr="0.1")
    with pytest.raises(SpecTypeError):
        sn.compile(_net(), optimizer=3)
    k = sn.compile(_net())
    with pytest.raises(ConfigError, match="optimizer"):
        k.init_state()
    k = sn.compile(_net(), optimizer="sgd")
    theta, state = k.pack(_net().init_params(seed=0)), k.init_state()
    X, y = _batches(1)[0]
    with pytest.raises(DTypeError, match="in place"):
        k.train_step(theta.astype(np.float32), state, X, y, 1)
    with pytest.raises(ConfigError, match="step"):
        k.train_step(theta, state, X, y, 0)
    assert state.shape == (0, theta.size)
