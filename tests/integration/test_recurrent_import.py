"""``nn.RNN``/``GRU``/``LSTM`` brought in from PyTorch (``sn.from_torch``) and ONNX
(``sn.from_onnx``), and declared in TOML specs (issue 23, item 4).

An imported network's loss and gradients are held to autograd through the original module
(float64: 1e-10; a step's gate sums and the chain through T = 5 steps are a few hundred
roundings at u = 2**-53 per entry, far below it), its parameters keyed as the module's
``state_dict``. Each supported way of reading the result maps to ``return_sequences``
(``out[:, -1]``, ``h_n[-1]``, ``h_n.squeeze(0)``: the last state; the output flattened or fed
to the next module: the sequence; of a bidirectional module ``torch.cat((h_n[-2], h_n[-1]), 1)``
or the whole output); what symnn does not model is refused naming the module and the setting,
before any work.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
import pytest

import symnn as sn
from symnn.errors import SpecError, SpecTypeError

torch = pytest.importorskip("torch")

from tests.layer_graphs import ready, rel  # noqa: E402

nn = torch.nn
N, T, F, H, K = 6, 5, 3, 4, 2  # samples, steps, features, hidden size, outputs
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, T, F))
Y = RNG.normal(size=(N, K))


class LastStep(nn.Module):
    """``out[:, -1]`` of an LSTM: its last step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(F, H, batch_first=True)
        self.fc = nn.Linear(H, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


class StackedHidden(nn.Module):
    """``h_n[-1]`` of a two-layer LSTM: the last layer's final state."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(F, H, num_layers=2, batch_first=True)
        self.fc = nn.Linear(H, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, c) = self.lstm(x)
        return self.fc(h[-1])


class GruReshaped(nn.Module):
    """A GRU's whole output sequence, each sample flattened by ``reshape(n, -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(F, H, num_layers=2, batch_first=True)
        self.fc = nn.Linear(T * H, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, h = self.gru(x)
        return self.fc(out.reshape(x.shape[0], -1))


class GruFlattened(GruReshaped):
    """The same sequence through ``flatten(1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.fc(out.flatten(1))


class ReluRnnSqueezed(nn.Module):
    """A relu RNN without biases, its ``h_n.squeeze(0)`` (one layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(F, H, nonlinearity="relu", bias=False, batch_first=True)
        self.fc = nn.Linear(H, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.rnn(x)
        return self.fc(h.squeeze(0))


class TwoModules(nn.Module):
    """A tanh RNN's sequence fed to an LSTM (whose last step is read), and a tanh after the head."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(F, H, batch_first=True)
        self.lstm = nn.LSTM(H, 3, batch_first=True)
        self.fc = nn.Linear(3, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.rnn(x)
        out, _ = self.lstm(seq)
        return torch.tanh(self.fc(out[:, -1]))


class BiLstmClassifier(nn.Module):
    """A two-layer bidirectional LSTM read as its last layer's final states of both directions,
    ``torch.cat((h_n[-2], h_n[-1]), dim=1)`` (the BiLSTM classifier's idiom)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(F, H, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * H, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.fc(torch.cat((h[-2], h[-1]), dim=1))


class BiGruTagger(nn.Module):
    """A bidirectional GRU's whole output (each step both directions' states), fed to a
    bidirectional relu RNN whose final states are read by index (h_n[2L-2], h_n[2L-1])."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(F, H, batch_first=True, bidirectional=True)
        self.rnn = nn.RNN(2 * H, 3, nonlinearity="relu", batch_first=True, bidirectional=True)
        self.fc = nn.Linear(6, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.gru(x)
        _, h = self.rnn(seq)
        return self.fc(torch.cat([h[0], h[1]], -1))


def _mse(out: torch.Tensor) -> torch.Tensor:
    return ((out - torch.tensor(Y)) ** 2).mean()


def autograd_mse(module: nn.Module) -> tuple[float, dict[str, np.ndarray]]:
    """Autograd's mean squared error of ``module`` on X against Y, and each named parameter's
    gradient (the reference the imported networks are held to)."""
    module.zero_grad()
    loss = _mse(module(torch.tensor(X)))
    loss.backward()
    return loss.item(), {key: p.grad.numpy() for key, p in module.named_parameters()}


@pytest.mark.parametrize("make, sequences", [(LastStep, [False]), (StackedHidden, [False]),
                                             (GruReshaped, [True]), (GruFlattened, [True]),
                                             (ReluRnnSqueezed, [False]), (TwoModules, [True, False]),
                                             (BiLstmClassifier, [False]), (BiGruTagger, [True, False])])
def test_imported_recurrent_nets_match_autograd(make: Callable[[], nn.Module], sequences: list[bool]) -> None:
    module = ready(make())
    net, params = sn.from_torch(module, input_shape=(T, F), loss="mse")
    recurrent = [layer for layer in net.graph.layers if isinstance(layer, (sn.RNN, sn.GRU, sn.LSTM))]
    assert [layer.return_sequences for layer in recurrent] == sequences
    k = sn.compile(net, backend="numpy")
    loss, grads = k.loss_and_grad(params, X.reshape(N, -1), Y)
    module.zero_grad()
    out = module(torch.tensor(X))
    ref = _mse(out)
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-10 * abs(ref.item())
    back = sn.to_state_dict(net, grads)
    assert list(back) == list(module.state_dict())
    for key, p in module.named_parameters():
        assert back[key].shape == p.shape and rel(back[key].numpy(), p.grad.numpy()) <= 1e-10, key
    assert rel(k.forward(params, X.reshape(N, -1)), out.detach().numpy()) <= 1e-10
    module.load_state_dict(sn.to_state_dict(net, params))  # the module's own keys and shapes


class TimeMajorLast(nn.Module):
    """PyTorch's default layout, batch_first=False: forward reads (T, N, F) and the last step is
    ``out[-1]``; a second module reads the first's time-major output."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(F, H)
        self.lstm = nn.LSTM(H, 3, num_layers=2)
        self.fc = nn.Linear(3, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.gru(x)
        out, _ = self.lstm(seq)
        return self.fc(out[-1])


class TimeMajorSwapped(nn.Module):
    """A batch-first forward argument swapped to time-major for a bidirectional batch_first=False
    LSTM (``permute(1, 0, 2)``), its output swapped back (``transpose(0, 1)``) and flattened; a
    relu RNN reads the time-major output too, its ``h_n[-1]`` joined."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(F, H, bidirectional=True)
        self.rnn = nn.RNN(2 * H, 3, nonlinearity="relu")
        self.fc = nn.Linear(T * 2 * H, K)
        self.fc2 = nn.Linear(3, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.permute(1, 0, 2))
        _, h = self.rnn(out)
        return self.fc(out.transpose(0, 1).flatten(1)) + self.fc2(h[-1])


@pytest.mark.parametrize("backend", ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)])
@pytest.mark.parametrize("make, time_major_input, sequences", [(TimeMajorLast, True, [True, False]),
                                                               (TimeMajorSwapped, False, [True, False])])
def test_time_major_modules_import_as_batch_first_networks(make: Callable[[], nn.Module], time_major_input: bool,
                                                           sequences: list[bool], backend: str) -> None:
    """A batch_first=False module's network reads batch-first sequences (N, T, F): where its
    forward takes time-major ones, the same data transposed; loss, gradients and forward are
    autograd's, on both backends."""
    module = ready(make())
    net, params = sn.from_torch(module, input_shape=(T, F), loss="mse")
    recurrent = [layer for layer in net.graph.layers if isinstance(layer, (sn.RNN, sn.GRU, sn.LSTM))]
    assert [layer.return_sequences for layer in recurrent] == sequences
    x = torch.tensor(X.transpose(1, 0, 2).copy() if time_major_input else X)
    module.zero_grad()
    out = module(x)
    ref = _mse(out)
    ref.backward()
    k = sn.compile(net, backend=backend)
    loss, grads = k.loss_and_grad(params, X, Y)
    assert abs(loss - ref.item()) <= 1e-10 * abs(ref.item())
    back = sn.to_state_dict(net, grads)
    for key, p in module.named_parameters():
        assert rel(back[key].numpy(), p.grad.numpy()) <= 1e-10, key
    assert rel(k.forward(params, X), out.detach().numpy()) <= 1e-10


class GivenStates(nn.Module):
    """A two-layer LSTM started from the forward arguments h0, c0 (PyTorch's (L, N, H))."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(F, H, num_layers=2, batch_first=True)
        self.fc = nn.Linear(H, K)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x, (h0, c0))
        return self.fc(out[:, -1])


class EncoderDecoder(nn.Module):
    """A GRU encoder's h_n as the initial state of a GRU decoder reading a second sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.GRU(F, H, batch_first=True)
        self.dec = nn.GRU(2, H, batch_first=True)
        self.fc = nn.Linear(T * H, K)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, h = self.enc(x)
        out, _ = self.dec(y, h)
        return self.fc(out.flatten(1))


@pytest.mark.parametrize("backend", ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)])
def test_initial_states_from_forward_arguments_and_an_encoder(backend: str) -> None:
    """An initial state that is a forward argument is an input of the network, batch-first (PyTorch's
    h_0 transposed to (N, L, H)); an encoder's h_n handed to a decoder is the encoder's last state."""
    rng = np.random.default_rng(3)
    h0, c0, seq = rng.normal(size=(2, N, H)), rng.normal(size=(2, N, H)), rng.normal(size=(N, T, 2))
    cases = [(GivenStates, [(T, F), (2, H), (2, H)], (X, h0, c0), {"x": X, "h0": h0.transpose(1, 0, 2),
                                                                  "c0": c0.transpose(1, 0, 2)}),
             (EncoderDecoder, [(T, F), (T, 2)], (X, seq), {"x": X, "y": seq})]
    for make, shapes, torch_args, data in cases:
        module = ready(make())
        net, params = sn.from_torch(module, input_shapes=shapes, loss="mse")
        module.zero_grad()
        out = module(*(torch.tensor(a) for a in torch_args))
        ref = _mse(out)
        ref.backward()
        k = sn.compile(net, backend=backend)
        loss, grads = k.loss_and_grad(params, data, Y)
        assert abs(loss - ref.item()) <= 1e-10 * abs(ref.item()), make
        back = sn.to_state_dict(net, grads)
        for key, p in module.named_parameters():
            assert rel(back[key].numpy(), p.grad.numpy()) <= 1e-10, (make, key)
        assert rel(k.forward(params, data), out.detach().numpy()) <= 1e-10, make


def test_initial_states_symnn_cannot_give_are_refused() -> None:
    class LstmHandOver(nn.Module):  # c_n is not a value of symnn's LSTM
        def __init__(self) -> None:
            super().__init__()
            self.enc, self.dec, self.fc = nn.LSTM(F, H, batch_first=True), nn.LSTM(2, H, batch_first=True), nn.Linear(H, K)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            _, state = self.enc(x)
            return self.fc(self.dec(y, state)[0][:, -1])

    class StackHandOver(nn.Module):  # a stack's h_n holds every layer's final state
        def __init__(self) -> None:
            super().__init__()
            self.enc, self.dec = nn.GRU(F, H, num_layers=2, batch_first=True), nn.GRU(2, H, num_layers=2, batch_first=True)
            self.fc = nn.Linear(H, K)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            _, h = self.enc(x)
            return self.fc(self.dec(y, h)[0][:, -1])

    class StateReadTwice(nn.Module):  # the state argument read by a Linear too
        def __init__(self) -> None:
            super().__init__()
            self.gru, self.fc, self.fc2 = nn.GRU(F, H, batch_first=True), nn.Linear(H, K), nn.Linear(H, K)

        def forward(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
            return self.fc(self.gru(x, h0)[0][:, -1]) + self.fc2(h0)

    for make, words in ((LstmHandOver, "a tuple (h_0, c_0)"), (StackHandOver, "one-layer, one-direction GRU or RNN"),
                        (StateReadTwice, "read otherwise too")):
        with pytest.raises(SpecError, match=re.escape(words)):
            sn.from_torch(make(), input_shapes=[(T, F), (T, 2)], loss="mse")


def test_another_axis_order_around_a_time_major_module_is_refused() -> None:
    class Permuted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru, self.fc = nn.GRU(T, H), nn.Linear(H, K)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.gru(x.permute(2, 0, 1))[0][-1])

    with pytest.raises(SpecError, match=r"permute\(2, 0, 1\) is not supported.*transpose\(0, 1\) or permute\(1, 0, 2\)"):
        sn.from_torch(Permuted(), input_shape=(T, F), loss="mse")


class _Calls(nn.Module):
    """A one-module net whose forward is given: the refusals below."""

    def __init__(self, rnn: nn.Module, forward: Callable, width: int = H) -> None:
        super().__init__()
        self.lstm = rnn
        self.fc = nn.Linear(width, K)
        self.fc2 = nn.Linear(T * H, K)
        self._forward = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self, x)


def _last(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m.fc(m.lstm(x)[0][:, -1])


def _both(m: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """One call's output read twice: its last step and the whole sequence."""
    return m.fc(out[:, -1]) + m.fc2(out.flatten(1))


@pytest.mark.parametrize("rnn, forward, error, words", [
    (nn.LSTM(F, H), _last, SpecError, "output[:, -1] of the time-major (batch_first=False)"),
    (nn.GRU(F, H), lambda m, x: m.fc(m.lstm(x)[0].flatten(1)), SpecError, "a time-major (T, N, ...) sequence"),
    (nn.GRU(F, H, batch_first=True), lambda m, x: m.fc(m.lstm(x.transpose(0, 1))[0][:, -1]), SpecError,
     "the batch-first GRU (batch_first=True) reads node 'transpose'"),
    (nn.GRU(F, H, batch_first=True, bidirectional=True), lambda m, x: m.fc(m.lstm(x)[1][-1]), SpecError,
     "torch.cat((h_n[-2], h_n[-1]), dim=1)"),
    (nn.GRU(F, H, num_layers=2, batch_first=True, bidirectional=True), lambda m, x: m.fc(m.lstm(x)[1][0]),
     SpecError, "h_n[0]"),
    (nn.RNN(F, H, batch_first=True, bidirectional=True), lambda m, x: m.fc(m.lstm(x)[1].squeeze(0)), SpecError,
     "two final states per layer"),
    (nn.LSTM(F, H, batch_first=True), lambda m, x: m.fc(m.lstm(x)[1][1][-1]), SpecError, "c_n"),
    (nn.LSTM(F, H, num_layers=2, batch_first=True), lambda m, x: m.fc(m.lstm(x)[1][0][0]), SpecError, "h_n[0]"),
    (nn.RNN(F, H, batch_first=True), lambda m, x: m.fc(m.lstm(x)[0][:, 0]), SpecError, "out[:, -1]"),
    (nn.GRU(F, H, batch_first=True), lambda m, x: m.fc(m.lstm(x)[1]), SpecError, "h_n[-1]"),
    (nn.GRU(F, H, batch_first=True), lambda m, x: _both(m, m.lstm(x)[0]), SpecError,
     "both the whole output sequence and the last state"),
])
def test_unsupported_recurrent_modules_are_refused_by_name(rnn: nn.Module, forward: Callable, error: type,
                                                           words: str) -> None:
    with pytest.raises(error) as info:
        sn.from_torch(_Calls(rnn, forward).double(), input_shape=(T, F), loss="mse")
    assert "lstm" in str(info.value) and words in str(info.value)


class _WithState(nn.Module):
    """An LSTM given its initial state (h_0, c_0) as forward arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(F, H, batch_first=True)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        return self.lstm(x, (h0, c0))[0][:, -1]


def test_a_one_layer_state_may_be_declared_as_a_vector() -> None:
    """A one-layer module's h_0 (1, N, H) is each sample's (H,) where input_shapes says so."""
    module = _WithState().double()
    net, params = sn.from_torch(module, input_shapes=[(T, F), (H,), (H,)], loss="mse")
    h0, c0 = np.random.default_rng(4).normal(size=(2, 1, N, H))
    want = module(torch.tensor(X), torch.tensor(h0), torch.tensor(c0)).detach().numpy()
    got = sn.compile(net).forward(params, {"x": X, "h0": h0[0], "c0": c0[0]})
    assert rel(got, want) <= 1e-10


def test_a_sequence_length_is_asked_for_and_a_sequential_lstm_is_refused() -> None:
    with pytest.raises(SpecError, match=r"steps"):
        sn.from_torch(_Calls(nn.LSTM(F, H, batch_first=True), _last).double(), loss="mse")
    with pytest.raises(SpecError, match="unpacked"):
        sn.from_torch(nn.Sequential(nn.LSTM(F, H, batch_first=True), nn.Linear(H, K)), input_shape=(T, F))


# -- ONNX -------------------------------------------------------------------------------------------
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

#: PyTorch's gate k is ONNX's block ORDER[k] (LSTM: ONNX i, o, f, c; GRU: ONNX z, r, h)
_TO_ONNX = {"RNN": (0,), "GRU": (1, 0, 2), "LSTM": (0, 3, 1, 2)}  # ONNX block j is PyTorch's gate _TO_ONNX[j]


def _onnx_gates(a: np.ndarray, op: str) -> np.ndarray:
    """PyTorch's stacked gates in ONNX's order."""
    return np.concatenate([a[k * H:(k + 1) * H] for k in _TO_ONNX[op]])


def _onnx_model(module: nn.Module, op: str, read: str, attrs: dict | None = None,
                extra_inputs: dict[int, np.ndarray] | None = None) -> onnx.ModelProto:
    """The ONNX graph of ``module`` (a one-layer torch recurrent ``rnn`` then ``fc``), written by
    hand after the operator spec: layout=1, the gates and biases in ONNX's layout (a
    bidirectional module's directions stacked, ``direction="bidirectional"``), the head a Gemm;
    ``read`` is "Y_h" (the last state, flattened) or "Y" (the sequence, flattened)."""
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    sfxs = ("", "_reverse") if module.rnn.bidirectional else ("",)
    stack = lambda key: np.stack([_onnx_gates(sd[f"rnn.{key}{sfx}"], op) for sfx in sfxs])  # noqa: E731
    inits = [numpy_helper.from_array(stack("weight_ih_l0"), "W"), numpy_helper.from_array(stack("weight_hh_l0"), "R"),
             numpy_helper.from_array(np.concatenate([stack("bias_ih_l0"), stack("bias_hh_l0")], axis=1), "B"),
             numpy_helper.from_array(sd["fc.weight"], "fc.weight"), numpy_helper.from_array(sd["fc.bias"], "fc.bias")]
    inputs = ["X", "W", "R", "B"]
    for index, value in (extra_inputs or {}).items():
        inputs += [""] * (index - len(inputs)) + [f"extra{index}"]
        inits.append(numpy_helper.from_array(value, f"extra{index}"))
    settings = {"hidden_size": H, "layout": 1, **({"linear_before_reset": 1} if op == "GRU" else {}),
                **({"direction": "bidirectional"} if module.rnn.bidirectional else {}), **(attrs or {})}
    settings = {k: v for k, v in settings.items() if v is not None}
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    nodes = [helper.make_node(op, inputs, outputs, **settings),
             helper.make_node("Flatten", [read], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["out"], transB=1)]
    graph = helper.make_graph(nodes, "rec", [helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["N", T, F])],
                              [helper.make_tensor_value_info("out", TensorProto.DOUBLE, ["N", K])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


class _Onnxed(nn.Module):
    """The torch twin of :func:`_onnx_model`'s graph: ``rnn`` then ``fc`` on its last state
    (of a bidirectional module, both directions' final states) or its flattened sequence."""

    def __init__(self, rnn: nn.Module, read: str) -> None:
        super().__init__()
        self.rnn = rnn
        self.fc = nn.Linear((2 if rnn.bidirectional else 1) * (H if read == "Y_h" else T * H), K)
        self.read = read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, h = self.rnn(x)
        if self.read == "Y_h" and self.rnn.bidirectional:
            h = h[0] if isinstance(h, tuple) else h
            return self.fc(torch.cat((h[-2], h[-1]), 1))
        return self.fc(out[:, -1] if self.read == "Y_h" else out.flatten(1))


_ONNX_CASES = [("RNN", {}, lambda: nn.RNN(F, H, batch_first=True), "Y_h"),
               ("RNN", {"activations": ["Relu"]}, lambda: nn.RNN(F, H, nonlinearity="relu", batch_first=True), "Y"),
               ("GRU", {}, lambda: nn.GRU(F, H, batch_first=True), "Y_h"),
               ("GRU", {}, lambda: nn.GRU(F, H, batch_first=True), "Y"),
               ("LSTM", {}, lambda: nn.LSTM(F, H, batch_first=True), "Y_h"),
               ("LSTM", {}, lambda: nn.LSTM(F, H, batch_first=True), "Y"),
               ("GRU", {}, lambda: nn.GRU(F, H, batch_first=True, bidirectional=True), "Y_h"),
               ("LSTM", {}, lambda: nn.LSTM(F, H, batch_first=True, bidirectional=True), "Y"),
               ("RNN", {"activations": ["Relu", "Relu"]},
                lambda: nn.RNN(F, H, nonlinearity="relu", batch_first=True, bidirectional=True), "Y_h")]


@pytest.mark.parametrize("op, attrs, make, read", _ONNX_CASES)
def test_onnx_recurrent_ops_match_the_reference_evaluator_and_autograd(op: str, attrs: dict, make: Callable,
                                                                       read: str) -> None:
    module = ready(_Onnxed(make(), read))
    model = _onnx_model(module, op, read, attrs)
    onnx.checker.check_model(model)
    net, params = sn.from_onnx(model, loss="mse")
    (layer,) = [la for la in net.graph.layers if isinstance(la, (sn.RNN, sn.GRU, sn.LSTM))]
    assert type(layer).__name__ == op and layer.return_sequences == (read == "Y")
    k = sn.compile(net, backend="numpy")
    if "Relu" not in attrs.get("activations", ()):  # onnx's reference RNN implements Tanh only
        (ref,) = ReferenceEvaluator(model).run(None, {"X": X})
        assert rel(k.forward(params, X.reshape(N, -1)), ref) <= 1e-10
    twin = module(torch.tensor(X)).detach().numpy()
    assert rel(k.forward(params, X.reshape(N, -1)), twin) <= 1e-10
    # the weights moved to PyTorch's gate order: gradients are autograd's through the torch twin
    rename = {key: key.replace(f"{op.lower()}1.", "rnn.") for key in params}
    loss, grads = k.loss_and_grad(params, X.reshape(N, -1), Y)
    torch_loss, torch_grads = autograd_mse(module)
    assert abs(loss - torch_loss) <= 1e-10 * abs(torch_loss)
    for key, g in grads.items():
        assert rel(g, torch_grads[rename[key]]) <= 1e-10, key


#: each sample's length for sequence_lens: the full T, one step, and lengths between
LENGTHS = np.array([T, 1, 3, T, 2, 4], dtype=np.int32)


def _packed_twin(module: _Onnxed, x: torch.Tensor) -> torch.Tensor:
    """PyTorch's run of ``module`` over the samples packed to LENGTHS (pack_padded_sequence):
    the sequence padded with zeros after each sample's length, the last state each sample's
    after its last step (a bidirectional module's reverse direction starting there)."""
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor(LENGTHS.astype(np.int64)), batch_first=True,
                                               enforce_sorted=False)
    out, h = module.rnn(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    h = h[0] if isinstance(h, tuple) else h
    if module.read == "Y_h":
        return module.fc(torch.cat((h[-2], h[-1]), 1) if module.rnn.bidirectional else h[-1])
    return module.fc(out.flatten(1))


@pytest.mark.parametrize("op, attrs, make, read", _ONNX_CASES)
def test_onnx_sequence_lens_becomes_a_mask_input(op: str, attrs: dict, make: Callable, read: str) -> None:
    """A recurrent op's sequence_lens read from a graph input (N,) of integers: the network takes
    it as a mask input (T,) a sample (1 for the sample's first sequence_lens steps), its layer
    ``masked=True``: outputs and gradients those of PyTorch over the packed samples (1e-10)."""
    module = ready(_Onnxed(make(), read))
    model = _onnx_model(module, op, read, attrs)
    model.graph.node[0].input.append("lens")
    model.graph.input.append(helper.make_tensor_value_info("lens", TensorProto.INT32, ["N"]))
    onnx.checker.check_model(model)
    net, params = sn.from_onnx(model, loss="mse")
    (layer,) = [la for la in net.graph.layers if isinstance(la, (sn.RNN, sn.GRU, sn.LSTM))]
    assert layer.masked and net.input_shapes == (("X", (T, F)), ("lens", (T,)))
    mask = (np.arange(T) < LENGTHS[:, None]).astype(float)
    inputs = {"X": X.reshape(N, -1), "lens": mask}
    module.zero_grad()
    twin = _packed_twin(module, torch.tensor(X))
    loss_ref = _mse(twin)
    loss_ref.backward()
    grads_ref = {key: p.grad.numpy() for key, p in module.named_parameters()}
    rename = {key: key.replace(f"{op.lower()}1.", "rnn.") for key in params}
    # C for the bidirectional LSTM's sequence and the GRU's last state: each a compiler run
    c_too = (op, read, module.rnn.bidirectional) in (("LSTM", "Y", True), ("GRU", "Y_h", False))
    for backend in ("numpy", "c") if c_too else ("numpy",):
        k = sn.compile(net, backend=backend)
        assert rel(k.forward(params, inputs), twin.detach().numpy()) <= 1e-10, backend
        loss, grads = k.loss_and_grad(params, inputs, Y)
        assert abs(loss - loss_ref.item()) <= 1e-10 * loss_ref.item(), backend
        for key, g in grads.items():
            assert rel(g, grads_ref[rename[key]]) <= 1e-10, (backend, key)


def test_onnx_sequence_lens_not_a_length_input_is_refused() -> None:
    """sequence_lens declared as reals, or read by another node too, is refused by name."""
    module = ready(_Onnxed(nn.GRU(F, H, batch_first=True), "Y_h"))
    model = _onnx_model(module, "GRU", "Y_h")
    model.graph.node[0].input.append("lens")
    model.graph.input.append(helper.make_tensor_value_info("lens", TensorProto.DOUBLE, ["N"]))
    with pytest.raises(SpecError, match="sequence_lens"):
        sn.from_onnx(model, loss="mse")


@pytest.mark.parametrize("op, attrs, extra, words", [
    ("LSTM", {"direction": "reverse"}, None, "direction='reverse'"),
    ("GRU", {"linear_before_reset": None}, None, "linear_before_reset=0"),
    ("GRU", {"linear_before_reset": 0}, None, "linear_before_reset=0"),
    ("LSTM", {"activations": ["Sigmoid", "Tanh", "Relu"]}, None, "activations="),
    ("RNN", {"activations": ["Sigmoid"]}, None, "activations="),
    ("RNN", {"activation_alpha": [0.5]}, None, "activation_alpha"),
    ("LSTM", {"clip": 3.0}, None, "clip"),
    ("LSTM", {"input_forget": 1}, None, "input_forget"),
    ("LSTM", {}, {4: np.full(N, T, dtype=np.int32)}, "sequence_lens"),
    ("GRU", {}, {5: np.zeros((1, N, H))}, "initial_h"),
    ("LSTM", {}, {7: np.zeros((1, 3 * H))}, "P"),
])
def test_onnx_recurrent_settings_symnn_lacks_are_refused_by_name(op: str, attrs: dict, extra: dict | None,
                                                                  words: str) -> None:
    make = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}[op]
    model = _onnx_model(_Onnxed(make(F, H, batch_first=True), "Y_h").double(), op, "Y_h", attrs, extra)
    with pytest.raises(SpecTypeError) as info:
        sn.from_onnx(model, loss="mse")
    assert words in str(info.value) and f"'{op}'" in str(info.value)


def test_onnx_cell_state_and_both_outputs_are_refused() -> None:
    model = _onnx_model(_Onnxed(nn.LSTM(F, H, batch_first=True), "Y_h").double(), "LSTM", "Y_h")
    model.graph.node[1].input[0] = "Y_c"
    with pytest.raises(SpecError, match="Y_c"):
        sn.from_onnx(model, loss="mse")
    model.graph.node[1].input[0] = "Y_h"
    model.graph.node.append(helper.make_node("Flatten", ["Y"], ["flat2"], axis=1))
    with pytest.raises(SpecError, match="both Y"):
        sn.from_onnx(model, loss="mse")


# -- TOML specs and saved models --------------------------------------------------------------------
_SPEC = """
[network]
name = "recurrent_spec"
loss = "mse"
outputs = ["head"]

[[input]]
name = "X"
shape = [5, 3]

[[node]]
id = "rnn"
layer = "rnn"
input_size = 3
hidden_size = 4
num_layers = 2
nonlinearity = "relu"
bias = false
return_sequences = true
inputs = ["X"]

[[node]]
id = "gru"
layer = "gru"
input_size = 4
hidden_size = 4
return_sequences = true
bidirectional = true
inputs = ["rnn"]

[[node]]
id = "lstm"
layer = "lstm"
input_size = 8
hidden_size = 3
num_layers = 2
inputs = ["gru"]

[[node]]
id = "head"
layer = "dense"
in_features = 3
out_features = 2
inputs = ["lstm"]
"""


def test_recurrent_layers_declared_in_a_spec_round_trip_through_spec_and_model_files(tmp_path) -> None:
    net = sn.loads_spec(_SPEC).network
    rnn, gru, lstm = net.graph.layers[:3]
    assert rnn == sn.RNN(3, 4, 2, "relu", False, True)
    assert gru == sn.GRU(4, 4, return_sequences=True, bidirectional=True)
    assert lstm == sn.LSTM(8, 3, num_layers=2)
    assert net.param_shapes()["gru1.weight_hh_l0_reverse"] == (12, 4)
    again = sn.loads_spec(sn.dumps_spec(net)).network
    assert again.graph.layers == net.graph.layers and again.param_shapes() == net.param_shapes()
    params = net.init_params(seed=1)
    k = sn.compile(net, backend="numpy")
    want = k.forward(params, X.reshape(N, -1))
    path = sn.save(tmp_path / "rec.json", net, params)
    model = sn.load(path)
    assert model.network.graph.layers == net.graph.layers
    assert all(np.array_equal(model.params[key], params[key]) for key in params)
    assert np.array_equal(sn.compile(model.network, backend="numpy").forward(model.params, X.reshape(N, -1)), want)


def test_a_bad_recurrent_option_in_a_spec_names_the_node() -> None:
    bad = _SPEC.replace('nonlinearity = "relu"', 'nonlinearity = "sigmoid"')
    with pytest.raises(sn.errors.SymnnError, match=r"(?s)node.*nonlinearity"):
        sn.loads_spec(bad)


def test_the_cli_emits_and_trains_the_lstm_digits_example(tmp_path, capsys) -> None:
    from pathlib import Path

    from symnn.cli import main

    spec = str(Path(__file__).resolve().parents[2] / "examples" / "lstm_digits.toml")
    assert main(["emit", spec, "--backend", "numpy", "--out", str(tmp_path)]) == 0
    rows = np.hstack([RNG.normal(size=(40, 64)), (np.arange(40) % 10)[:, None]])
    data = tmp_path / "digits.csv"
    np.savetxt(data, rows, delimiter=",", fmt="%.6g")
    assert main(["train", spec, "--data", str(data), "--backend", "numpy", "--epochs", "1"]) == 0
    assert "trained 1 epochs" in capsys.readouterr().out
