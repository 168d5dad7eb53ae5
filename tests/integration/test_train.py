"""sn.train: determinism, validation and early stopping, non-finite guard, settings checks."""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.errors import ConfigError, NonFiniteError

BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]


def _data(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1).astype(int)
    return X, y


def _net() -> sn.Network:
    return sn.Network([sn.Dense(4, 16, "tanh"), sn.Dense(16, 3, "softmax")], loss="cross_entropy",
                      name="train_net")


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_weights_and_it_learns(backend: str) -> None:
    X, y = _data()
    runs = [sn.train(_net(), X, y, optimizer=sn.Adam(lr=0.02), epochs=30, batch_size=16, seed=3,
                     backend=backend) for _ in range(2)]
    for k in runs[0].params:
        assert np.array_equal(runs[0].params[k], runs[1].params[k])
    h = runs[0].history.train_loss
    assert len(h) == 30 and h[-1] < 0.5 * h[0]
    assert runs[0].accuracy(X, y) > 0.9
    assert runs[0].steps == 30 * 8


def test_early_stopping_restores_the_best_epoch() -> None:
    X, y = _data(200)
    res = sn.train(_net(), X, y, optimizer=sn.Adam(lr=0.2), epochs=60, batch_size=8, seed=0,
                   validation_split=0.3, patience=3)
    h = res.history
    assert len(h.val_loss) < 60  # stopped early
    best = int(np.nanargmin(h.val_loss)) + 1
    assert res.best_epoch == best and len(h.val_loss) == best + 3
    # the returned weights are the best epoch's: recompute its validation loss
    rng = np.random.default_rng(0)
    val = rng.permutation(200)[:60]
    assert res.kernel.loss(res.params, X[val], y[val]) == pytest.approx(h.val_loss[best - 1], rel=1e-12)
    assert all(0 <= a <= 1 for a in h.val_accuracy)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_training_names_epoch_step_and_tensor(backend: str) -> None:
    X, _ = _data()
    net = sn.Network([sn.Dense(4, 1, "identity")], loss="mse", name="diverge")
    with pytest.raises(NonFiniteError, match=r"epoch \d+, step \d+: (parameter (W|b)1|gradient of (W|b)1|the loss)"):
        sn.train(net, X * 100, X[:, :1], optimizer=sn.SGD(lr=10.0), epochs=50, backend=backend)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_non_finite_training_names_the_layer_of_a_graph() -> None:
    """A layer graph's tensors are ``<layer>.<param>``: the message names the layer whole."""
    x = sn.Input(4, name="x")
    net = sn.Network(inputs=x, outputs=sn.Dense(8, 1, name="fc")(sn.Dense(4, 8, "relu", name="hidden")(x)),
                     loss="mse")
    X = np.random.default_rng(0).normal(size=(16, 4)) * 1e170
    with pytest.raises(NonFiniteError, match=r"gradient of hidden\.weight \(layer hidden\)"):
        sn.train(net, X, np.ones((16, 1)), epochs=1, optimizer=sn.SGD(lr=1e10))


@pytest.mark.parametrize("kwargs,match", [
    (dict(epochs=0), "epochs"), (dict(batch_size=-1), "batch_size"), (dict(epochs=True), "epochs"),
    (dict(validation_split=1.0), "validation_split"), (dict(patience=2), "patience"),
    (dict(validation_split=0.2, validation=(np.zeros((2, 4)), np.zeros(2, int))), "not both"),
])
def test_bad_settings_fail_before_any_work(kwargs: dict, match: str) -> None:
    X, y = _data()
    with pytest.raises(ConfigError, match=match):
        sn.train(_net(), X, y, **kwargs)


def test_progress_bar_and_training_curve(tmp_path, capsys) -> None:
    pytest.importorskip("tqdm")
    pytest.importorskip("matplotlib")
    X, y = _data()
    res = sn.train(_net(), X, y, epochs=3, validation_split=0.25, progress=True)
    assert "symnn train" in capsys.readouterr().err
    png = res.history.plot(tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_nan_validation_loss_is_never_an_improvement() -> None:
    X, y = _data()
    k = sn.compile(_net(), optimizer=sn.Adam(lr=0.01))
    real_loss, calls = k.module._loss, []

    def flaky(*args):  # finite at the first epoch's validation, NaN afterwards
        calls.append(1)
        return real_loss(*args) if len(calls) == 1 else float("nan")

    k.module._loss = flaky
    res = sn.train(_net(), X, y, kernel=k, epochs=10, validation_split=0.25, patience=2)
    assert res.best_epoch == 1 and len(res.history.val_loss) == 3
