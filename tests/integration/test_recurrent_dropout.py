"""Dropout between a stacked recurrent layer's layers (``sn.LSTM(..., dropout=p)``, PyTorch's
``dropout=``): while training, each layer's output sequence but the last one's is multiplied by
an inverted-dropout mask; ``forward``, ``loss`` and ``loss_and_grad`` leave it out (``eval()``).

The masks are drawn by the emitted counter-based generator (both backends, the same bits), so
PyTorch cannot draw them; the training gradient is held instead to autograd through the same
stack run layer by layer with those masks applied between the layers, float64, 1e-10 relative
(a few hundred roundings per entry at u = 2**-53, as the other recurrent tests)."""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.errors import ConfigError, SpecTypeError
from symnn.graph import dropout_masks

torch = pytest.importorskip("torch")

from tests.layer_graphs import rel  # noqa: E402

nn = torch.nn
T, F, H, N, P = 4, 3, 5, 6, 0.4
SEED, STEP = 7, 3
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]


def _net(kind: str = "LSTM", layers: int = 3, bidirectional: bool = True, p: float = P) -> sn.Network:
    """The stack with dropout between its layers, then an sn.Dropout of its own (numbered after
    the stack's masks) and a Dense head on the last state."""
    x = sn.Input(T, F, name="x")
    h = getattr(sn, kind)(F, H, num_layers=layers, bidirectional=bidirectional, dropout=p, name="rec")(x)
    width = (2 if bidirectional else 1) * H
    y = sn.Dense(width, 2, name="fc")(sn.Dropout(0.25, name="drop")(h))
    return sn.Network(inputs=x, outputs=y, loss="mse", name="rdrop")


def _data(net: sn.Network) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return net.init_params(seed=1), rng.normal(size=(N, T, F)), rng.normal(size=(N, 2))


def test_masks_are_numbered_between_the_layers_then_the_output() -> None:
    width = T * 2 * H  # each layer's output sequence, both directions
    assert dropout_masks(_net()) == [("M1", 1, width, P), ("M2", 2, width, P), ("M3", 3, 2 * H, 0.25)]
    assert dropout_masks(_net(layers=1)) == [("M1", 1, 2 * H, 0.25)]  # one layer: nothing between
    x = sn.Input(T, F)
    assert not sn.Network(inputs=x, outputs=sn.GRU(F, H, num_layers=2)(x), loss="mse").has_dropout
    assert sn.Network(inputs=x, outputs=sn.GRU(F, H, num_layers=2, dropout=0.1)(x), loss="mse").has_dropout


def _torch_gradient(kind: str, params: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray,
                    masks: list[np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
    """Autograd through the stack run one layer at a time (bidirectional, three layers), the
    masks applied to the first two layers' outputs as ``out * M / (1 - p)``, the last mask to
    the last state."""
    layers, grads = [], {}
    seq = torch.tensor(X)
    for k in range(3):
        layer = getattr(nn, kind)(F if k == 0 else 2 * H, H, bidirectional=True, batch_first=True).double()
        with torch.no_grad():
            for name, value in layer.named_parameters():
                value.copy_(torch.tensor(params[f"rec.{name.replace('_l0', f'_l{k}')}"]))
        out, state = layer(seq)
        seq = out * torch.tensor(masks[k]).reshape(N, T, 2 * H) / (1 - P) if k < 2 else out
        layers.append(layer)
    h = state[0] if kind == "LSTM" else state
    fc = nn.Linear(2 * H, 2).double()
    with torch.no_grad():
        fc.weight.copy_(torch.tensor(params["fc.weight"]))
        fc.bias.copy_(torch.tensor(params["fc.bias"]))
    last = torch.cat((h[-2], h[-1]), 1) * torch.tensor(masks[2]) / 0.75
    loss = ((fc(last) - torch.tensor(Y)) ** 2).mean()
    loss.backward()
    for k, layer in enumerate(layers):
        grads.update({f"rec.{name.replace('_l0', f'_l{k}')}": v.grad.numpy() for name, v in layer.named_parameters()})
    grads.update({"fc.weight": fc.weight.grad.numpy(), "fc.bias": fc.bias.grad.numpy()})
    return loss.item(), grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_the_training_gradient_is_autograds_with_the_same_masks(backend: str, kind: str) -> None:
    net = _net(kind)
    params, X, Y = _data(net)
    k = sn.compile(net, backend=backend, optimizer=sn.SGD(lr=0.1))
    loss, flat = k.train_gradient(k.new_params(params).flat, X, Y, step=STEP, seed=SEED)
    draw = sn.compile(net, backend="numpy", optimizer=sn.SGD(lr=0.1)).module._dropout_mask
    masks = [draw(SEED, STEP, key, N, width, p) for _, key, width, p in dropout_masks(net)]
    assert 0 < masks[0].mean() < 1  # a mask that keeps and drops
    want_loss, want = _torch_gradient(kind, params, X, Y, masks)
    assert abs(loss - want_loss) <= 1e-10 * abs(want_loss)
    grads = k.unpack(flat)
    for name, g in want.items():
        assert rel(grads[name], g) <= 1e-10, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_off_outside_training(backend: str) -> None:
    """forward and loss_and_grad are the network's without dropout (PyTorch's eval())."""
    params, X, Y = _data(_net())
    x = sn.Input(T, F, name="x")
    h = sn.LSTM(F, H, num_layers=3, bidirectional=True, name="rec")(x)
    plain = sn.Network(inputs=x, outputs=sn.Dense(2 * H, 2, name="fc")(h), loss="mse", name="rplain")
    k, k0 = sn.compile(_net(), backend=backend), sn.compile(plain, backend=backend)
    np.testing.assert_array_equal(k.forward(params, X), k0.forward(params, X))
    (loss, grads), (loss0, grads0) = k.loss_and_grad(params, X, Y), k0.loss_and_grad(params, X, Y)
    assert loss == loss0 and all(np.array_equal(grads[n], grads0[n]) for n in grads0)


def test_bad_dropout_is_refused() -> None:
    with pytest.raises(ConfigError, match="dropout must be in"):
        sn.LSTM(F, H, num_layers=2, dropout=1.0)
    with pytest.raises(SpecTypeError, match="dropout must be a number"):
        sn.GRU(F, H, num_layers=2, dropout="0.2")


def test_from_torch_carries_dropout_and_matches_eval() -> None:
    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(F, H, num_layers=2, dropout=0.3, batch_first=True)
            self.fc = nn.Linear(H, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.lstm(x)[0][:, -1])

    module = Stack().double().eval()
    net, params = sn.from_torch(module, input_shape=(T, F), loss="mse")
    (layer,) = [la for la in net.graph.layers if isinstance(la, sn.LSTM)]
    assert layer.dropout == 0.3 and net.has_dropout
    X = np.random.default_rng(2).normal(size=(N, T, F))
    assert rel(sn.compile(net).forward(params, X), module(torch.tensor(X)).detach().numpy()) <= 1e-10
    again = sn.loads_spec(sn.dumps_spec(net)).network  # the setting survives a spec
    assert again.graph.layers == net.graph.layers
