"""The worked sequence examples of issue 23 (examples/lstm_digits.py, examples/adding_problem.py)
at a small size, and the public hook they read per-step gradients through,
:meth:`symnn.Derivation.values`.

The per-step gradients are checked against PyTorch autograd on an unrolled twin of the same
recurrence (``retain_grad`` on every step's h_t and c_t), so the curve the example plots is the
gradient, not something shaped like it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import symnn as sn

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
#: float64, a few dozen operations per step over T = 8 steps of contracting gates: ~1e-15
#: relative to the largest entry; 1e-10 is the issue's bound against autograd
TOL = 1e-10


def _example(name: str) -> ModuleType:
    """An example script as a module (examples/ is not a package)."""
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits() -> ModuleType:
    return _example("lstm_digits")


@pytest.fixture(scope="module")
def adding() -> ModuleType:
    return _example("adding_problem")


def _torch_state_grads(kind: str, params: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray,
                       hidden: int) -> tuple[list, list]:
    """The recurrence unrolled in torch (PyTorch's equations and gate order i, f, g, o), the
    head and the mean cross-entropy; every step's h_t, and an LSTM's c_t as carried into the
    next step, keep their gradients (c_t's use in h_t = o * tanh(c_t) is within step t, so the
    carried copy's gradient is the part of dL/dc_t that comes back from later steps)."""
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    x = torch.tensor(X, dtype=torch.float64)
    n = x.shape[0]
    h = torch.zeros(n, hidden, dtype=torch.float64)
    c = torch.zeros(n, hidden, dtype=torch.float64)
    hs, cs = [], []
    for t in range(x.shape[1]):
        pre = (x[:, t] @ p["rec.weight_ih_l0"].T + p["rec.bias_ih_l0"] + h @ p["rec.weight_hh_l0"].T
               + p["rec.bias_hh_l0"])
        if kind == "lstm":
            i, f, g, o = pre.chunk(4, dim=1)
            cell = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(cell)
            c = cell.clone()  # the copy carried into step t+1: its gradient comes from later steps
            c.retain_grad()
            cs.append(c)
        else:
            h = torch.tanh(pre)
        h.retain_grad()
        hs.append(h)
    logits = h @ p["head.weight"].T + p["head.bias"]
    torch.nn.functional.cross_entropy(logits, torch.tensor(y)).backward()
    # the last step's carried c_t reaches nothing: autograd leaves its gradient None, i.e. 0
    return ([s.grad.numpy() for s in hs],
            [np.zeros((n, hidden)) if s.grad is None else s.grad.numpy() for s in cs])


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_per_step_state_gradients_equal_torch_autograd(digits: ModuleType, kind: str) -> None:
    """``dL/dh_t`` (and an LSTM's carried ``c_t``'s) for every step, from the printed backward
    recurrence through ``Derivation.values``, equal autograd's on the unrolled twin; and the
    norms the example plots are those gradients' norms."""
    hidden = 4
    net = digits.classifier(kind, hidden)
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(5, digits.T, digits.F)), rng.integers(0, 10, 5)
    params = {k: v * 2.0 for k, v in net.init_params(seed=3).items()}  # gates away from 0: sharper
    d = sn.derive(net)
    grads = digits.state_gradients(d, params, X, y)
    h_ref, c_ref = _torch_state_grads(kind, params, X, y, hidden)
    assert grads.shape == (5, digits.T, hidden * (2 if kind == "lstm" else 1))
    scale = max(np.abs(g).max() for g in h_ref + c_ref)
    for t in range(digits.T):
        np.testing.assert_allclose(grads[:, t, :hidden], h_ref[t], rtol=0, atol=TOL * scale, err_msg=f"dL/dh_{t}")
        if kind == "lstm":
            np.testing.assert_allclose(grads[:, t, hidden:], c_ref[t], rtol=0, atol=TOL * scale, err_msg=f"dL/dc_{t}")
    norms = digits.step_gradient_norms(d, params, X, y, hidden)
    np.testing.assert_allclose(norms, [np.linalg.norm(g) for g in h_ref], rtol=TOL)
    # the early steps' gradients are not the last step's copied: they decay through the chain
    assert norms[0] < 0.9 * norms[-1]


def test_values_has_every_equation_and_its_loss(digits: ModuleType) -> None:
    """``values`` keys every printed equation (and each loop body's) by id; the loss and the
    gradients in it are :meth:`evaluate`'s."""
    net = digits.classifier("lstm", 3)
    d = sn.derive(net)
    rng = np.random.default_rng(0)
    params = net.init_params(seed=0)
    X, y = rng.normal(size=(4, digits.T, digits.F)), np.arange(4)
    values = d.values(params, X, y)
    ids = [e.id for e in d.equations] + [e.id for loop in d.loops for e in loop.equations]
    assert sorted(values) == sorted(ids)
    loss, grads = d.evaluate(params, X, y)
    assert float(values["loss"]) == loss
    # the forward loop's carried state at the last step is the layer's output h_T (LSTM: [h, c])
    forward = next(loop for loop in d.loops if loop.pullback_of is None)
    np.testing.assert_array_equal(values[f"{forward.id}.carry"][:, -1, :3], values["rec"])
    with pytest.raises(sn.ShapeError):
        d.values(params, X[:, :3], y)


@pytest.mark.needs_cc
def test_digits_lstm_learns_through_the_c_train_step(digits: ModuleType) -> None:
    """Two epochs of the example's classifier (smaller LSTM) through the C train step reach an
    accuracy far above chance (0.1) on the held-out digits."""
    Xtr, Xte, ytr, yte = digits.digits_sequences()
    result = digits.train_classifier(digits.classifier("lstm", 16), Xtr, ytr, epochs=2, lr=0.02, backend="c")
    assert result.kernel.backend == "c"
    assert result.accuracy(Xte, yte) > 0.6


def test_adding_problem_targets_are_the_marked_sums(adding: ModuleType) -> None:
    """Every sequence has exactly two markers, one in each half; the target is the sum of the
    two marked numbers, and the numbers are uniform in [0, 1)."""
    T = 10
    X, y = adding.adding_data(200, T, np.random.default_rng(3))
    assert X.shape == (200, T, 2) and y.shape == (200, 1)
    marks = X[:, :, 1]
    assert set(np.unique(marks)) == {0.0, 1.0}
    assert (marks[:, :T // 2].sum(axis=1) == 1).all() and (marks[:, T // 2:].sum(axis=1) == 1).all()
    for n in range(200):
        first, second = np.flatnonzero(marks[n])
        assert y[n, 0] == X[n, first, 0] + X[n, second, 0]
    assert 0.0 <= X[:, :, 0].min() and X[:, :, 0].max() < 1.0
    with pytest.raises(sn.ConfigError):
        adding.adding_data(10, 1, np.random.default_rng(0))
