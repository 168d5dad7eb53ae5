"""Dropout: inverted, hidden layers only, masks from an emitted counter-based RNG that gives the
same bits on both backends; off in forward/loss; its gradient checked numerically."""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.errors import ConfigError, SpecError, SpecTypeError

BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
#: the optimiser of the training tests (sn.train compiles with it); the tests of the kernels
#: outside training use it too, so in C they load the kernel the training test compiles (one
#: compiler run, not two): the forward and loss they test do not depend on the optimiser
ADAM = sn.Adam(lr=0.01)


def _net(p1: float = 0.3, p2: float = 0.5) -> sn.Network:
    return sn.Network([sn.Dense(4, 16, "relu", dropout=p1), sn.Dense(16, 8, "tanh", dropout=p2),
                       sn.Dense(8, 3, "softmax")], loss="cross_entropy", name="drop")


def test_declaration_errors() -> None:
    with pytest.raises(ConfigError, match="dropout"):
        sn.Dense(2, 2, "relu", dropout=1.0)
    with pytest.raises(SpecTypeError, match="dropout"):
        sn.Dense(2, 2, "relu", dropout="0.5")
    with pytest.raises(SpecError, match="hidden layers only"):
        sn.Network([sn.Dense(2, 2, "relu"), sn.Dense(2, 1, "sigmoid", dropout=0.2)], loss="bce")


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_off_outside_training(backend: str) -> None:
    plain = sn.Network([sn.Dense(4, 16, "relu"), sn.Dense(16, 8, "tanh"), sn.Dense(8, 3, "softmax")],
                       loss="cross_entropy", name="drop")
    k, k0 = sn.compile(_net(), backend=backend, optimizer=ADAM), sn.compile(plain, backend=backend)
    p = _net().init_params(seed=0)
    X, y = np.random.default_rng(0).normal(size=(7, 4)), np.arange(7) % 3
    np.testing.assert_array_equal(k.forward(p, X), k0.forward(p, X))
    assert k.loss_and_grad(p, X, y)[0] == k0.loss_and_grad(p, X, y)[0]


def test_masks_are_bernoulli_and_keyed_by_seed_and_step() -> None:
    k = sn.compile(_net(), optimizer="sgd")
    draw = k.module._dropout_mask
    m = draw(7, 1, 1, 2000, 50, 0.3)
    assert set(np.unique(m)) == {0.0, 1.0}
    kept = m.mean()
    assert abs(kept - 0.7) < 4 * np.sqrt(0.21 / m.size)  # within 4 sigma
    assert np.array_equal(m, draw(7, 1, 1, 2000, 50, 0.3))
    for other in (draw(8, 1, 1, 2000, 50, 0.3), draw(7, 2, 1, 2000, 50, 0.3), draw(7, 1, 2, 2000, 50, 0.3)):
        assert not np.array_equal(m, other)
    # columns and rows are not correlated (a counter-hash weakness would show here)
    assert abs(np.corrcoef(m[:, 0], m[:, 1])[0, 1]) < 0.1


def test_masked_gradient_against_central_differences() -> None:
    k = sn.compile(_net(), optimizer="sgd")
    mod = k.module
    p = _net().init_params(seed=1)
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(6, 4)), np.arange(6) % 3
    Y = np.eye(3)[y]
    masks = [mod._dropout_mask(3, 5, 1, 6, 16, 0.3), mod._dropout_mask(3, 5, 2, 6, 8, 0.5)]
    _, g = mod._loss_and_grad_train(p, X, Y, masks)
    for name in p:
        num = np.zeros_like(p[name])
        for idx in np.ndindex(p[name].shape):
            h = 1e-6
            hi = {**p, name: p[name].copy()}
            lo = {**p, name: p[name].copy()}
            hi[name][idx] += h
            lo[name][idx] -= h
            num[idx] = (mod._loss_and_grad_train(hi, X, Y, masks)[0] - mod._loss_and_grad_train(lo, X, Y, masks)[0]) / (2 * h)
        assert np.linalg.norm(g[name] - num) <= 1e-7 * max(np.linalg.norm(num), 1e-12), name


def _trained(make, backends=("numpy", "c")):
    """``(X, y, {backend: result})``: 4 epochs of Adam on one seeded problem (masks keyed by seed 5)."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, 4)), rng.integers(0, 3, 80)
    return X, y, {be: sn.train(make(), X, y, optimizer=ADAM, epochs=4, batch_size=16, seed=5,
                               backend=be) for be in backends}


@pytest.mark.needs_cc
def test_backends_train_identically_with_dropout() -> None:
    X, y, runs = _trained(_net)
    again = _trained(_net, ("c",))[2]["c"]
    for name in runs["c"].params:
        assert np.array_equal(runs["c"].params[name], again.params[name])
        a, b = runs["c"].params[name], runs["numpy"].params[name]
        assert np.linalg.norm(a - b) <= 1e-12 * max(np.linalg.norm(b), 1.0), name
    other_seed = sn.train(_net(), X, y, optimizer=ADAM, epochs=4, batch_size=16, seed=6, backend="c",
                          params=_net().init_params(seed=5))
    assert not np.array_equal(other_seed.params["W1"], runs["c"].params["W1"])


def test_dropout_survives_save_and_load(tmp_path) -> None:
    m = sn.load(sn.save(tmp_path / "d.npz", _net(), _net().init_params(seed=0)))
    assert [layer.dropout for layer in m.network.layers] == [0.3, 0.5, 0.0]


# -- dropout in a layer graph: sn.Dropout(p), and Dense(..., dropout=p) called on a tensor ------------
def _graph(p1: float = 0.3, p2: float = 0.5, *, with_dropout: bool = True) -> sn.Network:
    """x -> Dense(relu, dropout p1) -> LayerNorm -> Dropout(p2), + skip -> Dense(softmax)."""
    x = sn.Input(4)
    h = sn.Dense(4, 16, "relu", dropout=p1 if with_dropout else 0.0)(x)
    n = sn.LayerNorm(16)(h)
    r = sn.Dropout(p2)(n) if with_dropout else n
    y = sn.Dense(16, 3, "softmax")(h + r)
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", name="gdrop")


def test_graph_dropout_declaration_errors() -> None:
    with pytest.raises(ConfigError, match="Dropout p"):
        sn.Dropout(1.0)
    with pytest.raises(SpecTypeError, match="Dropout p"):
        sn.Dropout("0.5")
    x = sn.Input(4)
    with pytest.raises(SpecError, match="dropout applies to hidden values only"):
        sn.Network(inputs=x, outputs=sn.Dropout(0.2)(sn.Dense(4, 3, "softmax")(x)), loss="cross_entropy")
    with pytest.raises(SpecError, match="dropout applies to hidden values only"):
        sn.Network(inputs=x, outputs=sn.Dense(4, 1, "sigmoid", dropout=0.2)(x), loss="bce")


def test_graph_masks_are_numbered_by_call() -> None:
    """One mask per call with dropout, in call order; a layer called twice draws two."""
    x = sn.Input(4)
    d = sn.Dropout(0.25)
    h = sn.Dense(4, 4, "tanh")(d(x))
    y = sn.Dense(4, 2)(d(h))
    net = sn.Network(inputs=x, outputs=y, loss="mse")
    from symnn.graph import dropout_masks

    assert dropout_masks(net) == [("M1", 1, 4, 0.25), ("M2", 2, 4, 0.25)]
    assert dropout_masks(_graph()) == [("M1", 1, 16, 0.3), ("M2", 2, 16, 0.5)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_graph_dropout_is_off_outside_training(backend: str) -> None:
    k = sn.compile(_graph(), backend=backend, optimizer=ADAM)
    k0 = sn.compile(_graph(with_dropout=False), backend=backend, optimizer=ADAM)
    p = _graph().init_params(seed=0)
    X, y = np.random.default_rng(0).normal(size=(7, 4)), np.arange(7) % 3
    np.testing.assert_array_equal(k.forward(p, X), k0.forward(p, X))
    assert k.loss_and_grad(p, X, y)[0] == k0.loss_and_grad(p, X, y)[0]


def test_graph_masked_gradient_matches_torch_autograd() -> None:
    """The training kernel with the emitted generator's masks against the same network in PyTorch
    with those masks applied as torch.nn.Dropout applies its own (x * M / (1 - p)): float64,
    1e-10. (The C train step is pinned to this kernel by the training test below.)"""
    torch = pytest.importorskip("torch")
    net = _graph()
    k = sn.compile(net, backend="numpy", optimizer="sgd")
    p = net.init_params(seed=1)
    X, y = np.random.default_rng(1).normal(size=(6, 4)), np.arange(6) % 3
    masks = [k.module._dropout_mask(3, 5, 1, 6, 16, 0.3), k.module._dropout_mask(3, 5, 2, 6, 16, 0.5)]
    assert all(0 < m.mean() < 1 for m in masks)  # both masks drop some entries and keep some
    L, g = k.module._loss_and_grad_train(p, X, np.eye(3)[y], masks)
    tp = {name: torch.tensor(v, dtype=torch.float64, requires_grad=True) for name, v in p.items()}
    F = torch.nn.functional
    h = torch.relu(torch.tensor(X) @ tp["dense1.weight"].T + tp["dense1.bias"]) * torch.tensor(masks[0]) / 0.7
    n = F.layer_norm(h, (16,), tp["layernorm1.weight"], tp["layernorm1.bias"], eps=1e-5)
    z = (h + n * torch.tensor(masks[1]) / 0.5) @ tp["dense2.weight"].T + tp["dense2.bias"]
    loss = F.cross_entropy(z, torch.tensor(y))
    loss.backward()
    assert abs(L - loss.item()) <= 1e-10 * abs(loss.item())
    for name, t in tp.items():
        ref = t.grad.numpy()
        assert np.linalg.norm(g[name] - ref) <= 1e-10 * max(np.linalg.norm(ref), 1e-300), name


@pytest.mark.needs_cc
def test_graph_backends_train_identically_with_dropout() -> None:
    _, _, runs = _trained(_graph)
    plain = _trained(lambda: _graph(with_dropout=False), ("c",))[2]["c"]
    for name in runs["c"].params:
        a, b = runs["c"].params[name], runs["numpy"].params[name]
        assert np.linalg.norm(a - b) <= 1e-12 * max(np.linalg.norm(b), 1.0), name
    assert not np.array_equal(runs["c"].params["dense1.weight"], plain.params["dense1.weight"])


def test_graph_dropout_survives_save_load_and_spec(tmp_path) -> None:
    net = _graph()
    m = sn.load(sn.save(tmp_path / "d.npz", net, net.init_params(seed=0)))
    assert [layer.drop_probability for layer in m.network.layers] == \
        [layer.drop_probability for layer in net.layers]
    again = sn.loads_spec(sn.dumps_spec(net)).network
    assert [layer.drop_probability for layer in again.layers] == [0.3, 0.0, 0.5, 0.0, 0.0]
    assert sn.emit_source(again, "numpy") == sn.emit_source(net, "numpy")
