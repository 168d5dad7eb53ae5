"""``sn.LastStep``: a sequence's last step, PyTorch's ``out[:, -1]`` (issue 23).

A bidirectional recurrent layer's last step is not its last state: the forward half is the
final state, the reverse half the state after one step. ``out[:, -1]`` of a bidirectional
module is what PyTorch models read most often; ``sn.LastStep`` of the layer's whole sequence
computes it, and ``sn.from_torch`` / ``sn.from_onnx`` import it so (they refused it before).
Each case is held to PyTorch autograd (loss and every gradient, float64, 1e-10 relative: a few
hundred roundings at u = 2**-53 through T = 6 steps), float32 within its error analysis, central
differences and the printed derivation, on both backends; a run-time length takes each call's
last step.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import symnn as sn
from symnn.errors import LayerSizeMismatchError, SpecError

torch = pytest.importorskip("torch")
from tests.layer_graphs import rel  # noqa: E402

nn = torch.nn
N, T, F, H, K = 5, 6, 3, 4, 2
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
CELLS = {"lstm": (sn.LSTM, nn.LSTM), "gru": (sn.GRU, nn.GRU)}


def _net(cell: str, steps: int | None = T) -> sn.Network:
    x = sn.Input(steps, F, name="x")
    seq = CELLS[cell][0](F, H, bidirectional=True, return_sequences=True, name="rnn")(x)
    out = sn.Dense(2 * H, K, "tanh", name="fc")(sn.LastStep(name="last")(seq))
    return sn.Network(inputs=x, outputs=out, loss="mse", name=f"last_{cell}")


class _Module(nn.Module):
    """The PyTorch model: ``fc(rnn(x)[0][:, -1])`` (time-major: ``[-1]`` of the swapped input's)."""

    def __init__(self, cell: str, batch_first: bool = True) -> None:
        super().__init__()
        self.rnn = CELLS[cell][1](F, H, batch_first=batch_first, bidirectional=True)
        self.fc = nn.Linear(2 * H, K)
        self.batch_first = batch_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_first:
            return torch.tanh(self.fc(self.rnn(x)[0][:, -1]))
        return torch.tanh(self.fc(self.rnn(x.transpose(0, 1))[0][-1]))


def _data(seed: int = 3, steps: int = T):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, steps, F)), rng.normal(size=(N, K))


def _torch(module: nn.Module, params: dict, X: np.ndarray, Y: np.ndarray) -> tuple[float, dict]:
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.from_numpy(params[name]))
    module.zero_grad()
    loss = ((module(torch.from_numpy(X)) - torch.from_numpy(Y)) ** 2).mean()
    loss.backward()
    return loss.item(), {name: p.grad.numpy().copy() for name, p in module.named_parameters()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_the_last_step_of_a_bidirectional_sequence_is_pytorchs_out_last(cell: str, backend: str) -> None:
    net = _net(cell)
    assert net.graph.calls[1].shape == (2 * H,)
    params = net.init_params(seed=1)
    X, Y = _data()
    loss, grads = sn.compile(net, backend=backend).loss_and_grad(params, X, Y)
    want, wgrads = _torch(_Module(cell).double(), params, X, Y)
    assert abs(loss - want) <= 1e-12 * abs(want)
    for name, g in wgrads.items():
        assert rel(grads[name], g) <= 1e-10, name
    k32 = sn.compile(net, backend=backend, dtype="float32")
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    loss32, grads32 = k32.loss_and_grad(p32, X.astype(np.float32), Y.astype(np.float32))
    assert abs(loss32 - want) <= 1e-5 * abs(want)  # a few hundred roundings at u = 2**-24
    for name, g in wgrads.items():
        assert rel(grads32[name], g) <= 1e-4, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_central_differences_and_the_printed_derivation(backend: str) -> None:
    net = _net("gru")
    params = net.init_params(seed=2)
    X, Y = _data(seed=4)
    kernel = sn.compile(net, backend=backend)
    report = sn.gradcheck(kernel, params, X, Y)
    assert report.passed and report.max_rel_error <= 1e-7, str(report)
    loss, grads = kernel.loss_and_grad(params, X, Y)
    dloss, dgrads = sn.derive(net).evaluate(params, X, Y)
    assert abs(float(dloss) - loss) <= 1e-12 * abs(loss)
    for name, g in grads.items():
        assert rel(dgrads[name], g) <= 1e-12, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_time_length_takes_each_calls_last_step(backend: str) -> None:
    """One kernel for every T: its last step at each call is the fixed-T network's."""
    any_t = sn.compile(_net("lstm", None), backend=backend)
    params = _net("lstm").init_params(seed=5)
    for steps in (1, 4, 7):
        X, Y = _data(seed=steps, steps=steps)
        fixed = sn.compile(_net("lstm", steps), backend=backend)
        got, want = any_t.loss_and_grad(params, X, Y), fixed.loss_and_grad(params, X, Y)
        assert abs(got[0] - want[0]) <= 1e-14 * abs(want[0])
        for name in want[1]:
            assert rel(got[1][name], want[1][name]) <= 1e-13, (steps, name)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_from_torch_imports_out_last_of_a_bidirectional_module(cell: str, batch_first: bool) -> None:
    module = _Module(cell, batch_first).double()
    net, params = sn.from_torch(module, input_shape=(T, F), loss="mse")
    assert any(isinstance(layer, sn.LastStep) for layer in net.graph.layers)
    X, Y = _data(seed=6)
    want, wgrads = _torch(module, params, X, Y)
    kernel = sn.compile(net, backend="c")
    np.testing.assert_allclose(kernel.forward(params, X), module(torch.from_numpy(X)).detach().numpy(),
                               rtol=1e-12, atol=1e-14)
    loss, grads = kernel.loss_and_grad(params, X, Y)
    assert abs(loss - want) <= 1e-12 * abs(want)
    state = sn.to_state_dict(net, grads)
    for name, g in wgrads.items():
        assert rel(np.asarray(state[name]), g) <= 1e-10, name


@pytest.mark.parametrize("batch_first", [True, False])
def test_from_onnx_imports_the_gather_of_a_bidirectional_ops_last_step(batch_first: bool) -> None:
    onnx = pytest.importorskip("onnx")
    module = _Module("gru", batch_first).double()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, T, F, dtype=torch.float64),), buf, input_names=["x"],
                          output_names=["y"], dynamo=False)
    net, params = sn.from_onnx(onnx.load_from_string(buf.getvalue()), loss="mse")
    assert any(isinstance(layer, sn.LastStep) for layer in net.graph.layers)
    X, _ = _data(seed=7)
    want = module(torch.from_numpy(X)).detach().numpy()
    for backend in ("numpy", "c"):
        np.testing.assert_allclose(sn.compile(net, backend=backend).forward(params, X), want, rtol=1e-12,
                                   atol=1e-14)


@pytest.mark.needs_cc
def test_a_spec_round_trip_keeps_the_last_step(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from symnn.cli import main

    net = _net("lstm")
    text = sn.dumps_spec(net)
    assert 'layer = "last_step"' in text
    back = sn.loads_spec(text).network
    assert back.graph.names == net.graph.names and back.graph.calls == net.graph.calls
    assert sn.dumps_spec(back) == text
    assert sn.derive(back).text() == sn.derive(net).text()
    spec = tmp_path / "last.toml"
    spec.write_text(text)
    assert main(["check", str(spec)]) == 0  # both backends, both dtypes, against central differences
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(": ok: " in line for line in lines)


def test_the_derivation_prints_the_last_steps_columns() -> None:
    pytest.importorskip("latex2mathml")
    from tests import latex_checks

    d = sn.derive(_net("gru"))
    assert latex_checks.problems(d) == []
    assert f"[:, {(T - 1) * 2 * H}:{T * 2 * H}]" in d.text()


def test_a_last_step_of_no_sequence_is_refused_before_any_work() -> None:
    x = sn.Input(F, name="x")
    with pytest.raises(LayerSizeMismatchError, match=r"LastStep takes a sequence of shape \(T, F\), got shape \(3,\)"):
        sn.LastStep()(x)
    seq = sn.Input(T, F, name="s")
    with pytest.raises(SpecError, match="LastStep takes one sequence, got 2 tensors"):
        sn.LastStep()(seq, seq)
