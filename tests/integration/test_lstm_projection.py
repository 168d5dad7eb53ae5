"""The projected LSTM (``sn.LSTM(..., proj_size=P)``, PyTorch's ``proj_size``): each step's hidden
state is ``(σ(o) ⊙ tanh(c)) W_hr^T``, P entries, which the next step's ``W_hh`` (4H, P) and the
next layer read; the cell state keeps H. Held to ``torch.nn.LSTM(proj_size=P)`` loaded from the
same parameters (its state_dict's names and order), float64, 1e-10 relative (a few hundred
roundings per entry at u = 2**-53), on both backends, with initial states (h_0 of P, c_0 of H),
stacked and bidirectional, imported by ``sn.from_torch``, and through the printed derivation."""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.errors import LayerSizeMismatchError, SpecTypeError

torch = pytest.importorskip("torch")

from tests.layer_graphs import rel  # noqa: E402

nn = torch.nn
T, F, H, P, N = 5, 3, 6, 4, 4
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]


def _net(layers: int, bidirectional: bool, states: bool) -> sn.Network:
    """The projected stack on x (and h0, c0, batch-first: PyTorch's transposed), the last state
    read by a Dense head."""
    rows = layers * (2 if bidirectional else 1)
    x = sn.Input(T, F, name="x")
    inputs = [x] + ([sn.Input(rows, P, name="h0"), sn.Input(rows, H, name="c0")] if states else [])
    h = sn.LSTM(F, H, num_layers=layers, bidirectional=bidirectional, proj_size=P, name="rec")(*inputs)
    y = sn.Dense(P * (2 if bidirectional else 1), 2, name="fc")(h)
    return sn.Network(inputs=inputs if states else x, outputs=y, loss="mse", name="lstmp")


def _torch_reference(net: sn.Network, layers: int, bidirectional: bool, params: dict, X: np.ndarray,
                     states: tuple[np.ndarray, np.ndarray] | None, Y: np.ndarray):
    """PyTorch's loss, gradients (keyed as symnn's) and output at the same parameters."""
    rec = nn.LSTM(F, H, num_layers=layers, bidirectional=bidirectional, proj_size=P, batch_first=True).double()
    fc = nn.Linear(P * (2 if bidirectional else 1), 2).double()
    assert [f"rec.{k}" for k in rec.state_dict()] == [k for k in params if k.startswith("rec.")]
    rec.load_state_dict({k[4:]: torch.tensor(v) for k, v in params.items() if k.startswith("rec.")})
    fc.load_state_dict({k[3:]: torch.tensor(v) for k, v in params.items() if k.startswith("fc.")})
    hx = None if states is None else tuple(torch.tensor(s.transpose(1, 0, 2).copy()) for s in states)
    _, (h, _) = rec(torch.tensor(X), hx)
    out = fc(torch.cat((h[-2], h[-1]), 1) if bidirectional else h[-1])
    loss = ((out - torch.tensor(Y)) ** 2).mean()
    loss.backward()
    grads = {f"rec.{k}": v.grad.numpy() for k, v in rec.named_parameters()}
    grads.update({f"fc.{k}": v.grad.numpy() for k, v in fc.named_parameters()})
    return loss.item(), grads, out.detach().numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layers, bidirectional, states", [(1, False, True), (2, True, False), (2, False, True)])
def test_projected_lstm_matches_torch(backend: str, layers: int, bidirectional: bool, states: bool) -> None:
    net = _net(layers, bidirectional, states)
    rng = np.random.default_rng(0)
    params = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in net.init_params(seed=1).items()}
    X = rng.normal(size=(N, T, F))
    rows = layers * (2 if bidirectional else 1)
    given = (rng.normal(size=(N, rows, P)), rng.normal(size=(N, rows, H))) if states else None
    Y = rng.normal(size=(N, 2))
    data = {"x": X, "h0": given[0], "c0": given[1]} if states else X
    want_loss, want, want_out = _torch_reference(net, layers, bidirectional, params, X, given, Y)
    k = sn.compile(net, backend=backend)
    loss, grads = k.loss_and_grad(params, data, Y)
    assert abs(loss - want_loss) <= 1e-10 * abs(want_loss)
    for name, g in want.items():
        assert rel(grads[name], g) <= 1e-10, name
    assert rel(k.forward(params, data), want_out) <= 1e-10
    if backend == "numpy" and layers == 1:  # the printed derivation computes the same
        d_loss, d_grads = sn.derive(net).evaluate(params, data, Y)
        assert abs(d_loss - want_loss) <= 1e-10 * abs(want_loss)
        assert all(rel(d_grads[name], g) <= 1e-10 for name, g in want.items())


def test_from_torch_reads_a_projected_lstm() -> None:
    class Projected(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm, self.fc = nn.LSTM(F, H, num_layers=2, proj_size=P, batch_first=True), nn.Linear(P, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.lstm(x)[0][:, -1])

    module = Projected().double()
    net, params = sn.from_torch(module, input_shape=(T, F), loss="mse")
    (layer,) = [la for la in net.graph.layers if isinstance(la, sn.LSTM)]
    assert layer.proj_size == P and list(sn.to_state_dict(net, params)) == list(module.state_dict())
    X = np.random.default_rng(1).normal(size=(N, T, F))
    assert rel(sn.compile(net).forward(params, X), module(torch.tensor(X)).detach().numpy()) <= 1e-10
    assert sn.loads_spec(sn.dumps_spec(net)).network.graph.layers == net.graph.layers


def test_bad_projections_are_refused() -> None:
    with pytest.raises(SpecTypeError, match="proj_size"):
        sn.LSTM(F, H, proj_size=H)
    with pytest.raises(SpecTypeError, match="proj_size"):
        sn.LSTM(F, H, proj_size=-1)
    x = sn.Input(T, F)
    with pytest.raises(LayerSizeMismatchError, match="initial state"):  # h0 has P entries, not H
        sn.LSTM(F, H, proj_size=P)(x, sn.Input(H), sn.Input(H))
