"""``sn.from_onnx`` of recurrent modules as ``torch.onnx.export`` writes them (issue 23, item 4):
the time-major op (``layout=0``) between ``Transpose(perm=[1, 0, 2])`` nodes, zero initial
states built from the input's ``Shape`` (``ConstantOfShape``; ``Slice`` per layer when stacked),
``Y`` squeezed and transposed back, ``out[:, -1]`` and ``h_n[-1]`` as ``Gather`` nodes; a
bidirectional module's op with its steps' ``Transpose(perm=[0, 2, 1, 3])`` and ``Reshape``, and
``torch.cat((h_n[-2], h_n[-1]), 1)`` as a ``Concat`` of two ``Gather``s.

Each exported file is read back and held to the module it came from: the forward output and,
through ``loss_and_grad``, every gradient against autograd (float64, 1e-10 relative: a step's
gate sums and the chain through T = 5 steps are a few hundred roundings at u = 2**-53, far
below it), and the forward against ONNX's reference evaluator of the file itself. What symnn's
layers do not model is refused naming the node, before any work.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import symnn as sn
from symnn.errors import SpecError, SpecTypeError

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from tests.integration.test_recurrent_import import F, H, K, N, T, X, Y, _onnx_model, _Onnxed, autograd_mse  # noqa: E402
from tests.layer_graphs import ready, rel  # noqa: E402

nn = torch.nn  # the sizes and data are the torch-import tests' (N samples, T steps, F features...)


class Reader(nn.Module):
    """A batch-first recurrent module ``rnn`` and a head ``fc`` reading its result ``read``:
    "last" ``out[:, -1]``, "h" ``h_n[-1]``, "squeeze" ``h_n.squeeze(0)``, "flat" the sequence
    flattened, "cat" ``torch.cat((h_n[-2], h_n[-1]), 1)`` (a bidirectional module's final
    states), "first" ``out[:, 0]`` (refused), "both" the last step plus the flattened sequence
    (refused)."""

    def __init__(self, rnn: nn.Module, read: str) -> None:
        super().__init__()
        self.rnn, self.read = rnn, read
        width = (2 if rnn.bidirectional and read != "h" else 1) * rnn.hidden_size
        self.fc = nn.Linear(width * (T if read == "flat" else 1), K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h
        if self.read == "last":
            return self.fc(out[:, -1])
        if self.read == "h":
            return self.fc(h[-1])
        if self.read == "squeeze":
            return self.fc(h.squeeze(0))
        if self.read == "cat":
            return self.fc(torch.cat((h[-2], h[-1]), dim=1))
        if self.read == "first":
            return self.fc(out[:, 0])
        if self.read == "both":
            return self.fc(out[:, -1]) + out.flatten(1)[:, :K]
        return self.fc(out.flatten(1))


def _exported(module: nn.Module) -> onnx.ModelProto:
    """The module (in float64) as torch.onnx.export writes it (TorchScript exporter, dynamic batch)."""
    module = module.double().eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.tensor(X),), f, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return onnx.load_from_string(f.getvalue())


CASES = [  # (module, its readers' return_sequences in layer order)
    (lambda: nn.LSTM(F, H, batch_first=True), "last", [False]),
    (lambda: nn.GRU(F, H, num_layers=2, batch_first=True), "h", [True, False]),
    (lambda: nn.RNN(F, H, nonlinearity="relu", batch_first=True), "flat", [True]),
    (lambda: nn.LSTM(F, H, num_layers=2, batch_first=True), "last", [True, False]),
    (lambda: nn.GRU(F, H, batch_first=True), "squeeze", [False]),
    (lambda: nn.LSTM(F, H, num_layers=2, batch_first=True, bidirectional=True), "cat", [True, False]),
    (lambda: nn.GRU(F, H, batch_first=True, bidirectional=True), "flat", [True]),
    (lambda: nn.RNN(F, H, num_layers=2, batch_first=True, bidirectional=True), "cat", [True, False]),
]


@pytest.mark.parametrize("make, read, sequences", CASES)
def test_exported_recurrent_modules_match_the_module_the_file_and_autograd(make, read: str,
                                                                            sequences: list[bool]) -> None:
    module = ready(Reader(make(), read))
    model = _exported(module)
    assert any(node.op_type in ("LSTM", "GRU", "RNN") and any(a.name == "layout" and a.i == 1 for a in node.attribute)
               for node in model.graph.node) is False  # the exporter's time-major form, not layout=1
    net, params = sn.from_onnx(model, loss="mse")
    layers = [la for la in net.graph.layers if isinstance(la, (sn.RNN, sn.GRU, sn.LSTM))]
    assert [la.return_sequences for la in layers] == sequences
    k = sn.compile(net, backend="numpy")
    twin = module(torch.tensor(X)).detach().numpy()
    assert rel(k.forward(params, X.reshape(N, -1)), twin) <= 1e-10
    if not isinstance(module.rnn, nn.RNN):  # onnx's reference RNN implements Tanh only
        (ref,) = ReferenceEvaluator(model).run(None, {"x": X})
        assert rel(k.forward(params, X.reshape(N, -1)), ref) <= 1e-10
    loss, grads = k.loss_and_grad(params, X.reshape(N, -1), Y)
    torch_loss, torch_grads = autograd_mse(module)
    assert abs(loss - torch_loss) <= 1e-10 * abs(torch_loss)
    kind = type(module.rnn).__name__.lower()
    for key, g in grads.items():  # layer i+1 of symnn is layer i of the torch module
        layer, _, leaf = key.partition(".")
        torch_key = (f"rnn.{leaf.replace('_l0', f'_l{int(layer[len(kind):]) - 1}')}" if layer.startswith(kind)
                     else key)
        assert rel(g, torch_grads[torch_key]) <= 1e-10, key


#: each sample's length for sequence_lens (LENGTHS of the torch-import tests, N samples)
LENGTHS = np.array([T, 1, 3, T, 2, 4], dtype=np.int32)


def _packed(module: Reader, x: torch.Tensor) -> torch.Tensor:
    """``module`` over the samples packed to LENGTHS: its sequence 0 after each sample's length,
    its final states each sample's after its last step."""
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor(LENGTHS.astype(np.int64)), batch_first=True,
                                               enforce_sorted=False)
    out, h = module.rnn(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    h = h[0] if isinstance(h, tuple) else h
    read = {"last": lambda: out[:, -1], "h": lambda: h[-1], "cat": lambda: torch.cat((h[-2], h[-1]), dim=1),
            "flat": lambda: out.flatten(1)}[module.read]
    return module.fc(read())


@pytest.mark.parametrize("make, read", [(lambda: nn.LSTM(F, H, batch_first=True), "last"),
                                        (lambda: nn.GRU(F, H, num_layers=2, batch_first=True), "h"),
                                        (lambda: nn.LSTM(F, H, num_layers=2, batch_first=True, bidirectional=True),
                                         "cat"),
                                        (lambda: nn.GRU(F, H, batch_first=True, bidirectional=True), "flat")])
def test_exported_ops_reading_sequence_lens_match_the_packed_module(make, read: str) -> None:
    """The exporter's time-major ops, each given the graph input ``lens`` (N,) as its
    sequence_lens: a mask input of the network; the sequence's last step a padded sample's 0 (a
    LastStep of the sequence, not the last state), final states each sample's own: outputs and
    gradients PyTorch's over the packed samples (1e-10)."""
    module = ready(Reader(make(), read))
    model = _exported(module)
    ops = [node for node in model.graph.node if node.op_type in ("LSTM", "GRU", "RNN")]
    for node in ops:
        while len(node.input) < 5:
            node.input.append("")
        node.input[4] = "lens"
    model.graph.input.append(onnx.helper.make_tensor_value_info("lens", onnx.TensorProto.INT32, ["N"]))
    net, params = sn.from_onnx(model, loss="mse")
    layers = [la for la in net.graph.layers if isinstance(la, (sn.RNN, sn.GRU, sn.LSTM))]
    assert len(layers) == len(ops) and all(la.masked for la in layers)
    inputs = {"x": X.reshape(N, -1), "lens": (np.arange(T) < LENGTHS[:, None]).astype(float)}
    module.zero_grad()
    twin = _packed(module, torch.tensor(X))
    loss_ref = ((twin - torch.tensor(Y)) ** 2).mean()
    loss_ref.backward()
    k = sn.compile(net, backend="numpy")
    assert rel(k.forward(params, inputs), twin.detach().numpy()) <= 1e-10
    loss, grads = k.loss_and_grad(params, inputs, Y)
    assert abs(loss - loss_ref.item()) <= 1e-10 * loss_ref.item()
    kind = type(module.rnn).__name__.lower()
    torch_grads = {key: p.grad.numpy() for key, p in module.named_parameters()}
    for key, g in grads.items():
        layer, _, leaf = key.partition(".")
        torch_key = (f"rnn.{leaf.replace('_l0', f'_l{int(layer[len(kind):]) - 1}')}" if layer.startswith(kind)
                     else key)
        assert rel(g, torch_grads[torch_key]) <= 1e-10, key


def test_an_exported_lstm_ships_as_c_through_the_cli(tmp_path) -> None:
    """``symnn from-onnx`` emits the exported file's network and its weights as C."""
    from symnn.cli import main

    path = tmp_path / "lstm.onnx"
    path.write_bytes(_exported(ready(Reader(nn.LSTM(F, H, batch_first=True), "last"))).SerializeToString())
    assert main(["from-onnx", str(path), "--out", str(tmp_path / "c"), "--name", "seq", "--loss", "mse"]) == 0
    source = (tmp_path / "c" / "seq.c").read_text()
    assert "lstm1" in source and (tmp_path / "c" / "seq_params.h").exists()


def _with_fill(model: onnx.ModelProto, value: float) -> onnx.ModelProto:
    """The model with its zero initial state's ConstantOfShape filling ``value`` instead."""
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape":
            for attr in node.attribute:
                if attr.name == "value":
                    attr.t.CopyFrom(numpy_helper.from_array(np.array([value], dtype=np.float32)))
    return model


def _with_perm(model: onnx.ModelProto, perm: list[int]) -> onnx.ModelProto:
    """The model with its first Transpose permuting by ``perm``."""
    node = next(n for n in model.graph.node if n.op_type == "Transpose")
    next(a for a in node.attribute if a.name == "perm").ints[:] = perm
    return model


@pytest.mark.parametrize("make, error, words", [
    (lambda: _with_fill(_exported(Reader(nn.LSTM(F, H, batch_first=True), "last")), 1.0), SpecTypeError,
     "ConstantOfShape fills with [1.0]"),
    (lambda: _exported(Reader(nn.LSTM(F, H, batch_first=True), "first")), SpecError, "not step 0 alone"),
    (lambda: _exported(Reader(nn.GRU(F, H, batch_first=True), "both")), SpecError, "return_sequences"),
    (lambda: _with_perm(_exported(Reader(nn.LSTM(F, H, batch_first=True), "last")), [0, 2, 1]), SpecTypeError,
     "Transpose(perm=[0, 2, 1])"),
    (lambda: _exported(Reader(nn.GRU(F, H, batch_first=True, bidirectional=True), "h")), SpecError,
     "both directions' final states"),
])
def test_what_symnn_does_not_model_is_refused_naming_the_node(make, error: type, words: str) -> None:
    with pytest.raises(error) as info:
        sn.from_onnx(make(), loss="mse")
    assert words in str(info.value) and "node " in str(info.value)


def test_a_layout_0_op_reading_a_batch_first_x_is_refused() -> None:
    """layout=0 reads X as (T, N, F): the graph's batch-first input read directly is refused."""
    model = _onnx_model(_Onnxed(nn.LSTM(F, H, batch_first=True), "Y_h").double(), "LSTM", "Y_h", {"layout": 0})
    with pytest.raises(SpecError, match=r"layout=0 its X 'X' must be time-major"):
        sn.from_onnx(model, loss="mse")


class Joined(nn.Module):
    """Two recurrent modules over the same sequence, their outputs joined step by step
    (``torch.cat((a, b), dim=2)``, the second a bidirectional one's, or the input itself), then
    flattened into ``fc``."""

    def __init__(self, second: str) -> None:
        super().__init__()
        self.lstm = nn.LSTM(F, H, batch_first=True)
        if second != "input":
            self.gru = nn.GRU(F, H + 1, batch_first=True, bidirectional=second == "bidirectional")
        self.second = second
        width = H + (F if second == "input" else (2 if second == "bidirectional" else 1) * (H + 1))
        self.fc = nn.Linear(T * width, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.lstm(x)
        b = x if self.second == "input" else self.gru(x)[0]
        return self.fc(torch.cat((a, b), dim=2).flatten(1))


@pytest.mark.parametrize("second", ["gru", "bidirectional", "input"])
def test_recurrent_outputs_joined_step_by_step_match_the_module_the_file_and_autograd(second: str) -> None:
    """A Concat along axis 2 of sequences some recurrent ops return (transposed back to
    batch-first): each op's layer returns every step, and the join is an ``sn.concat``."""
    module = ready(Joined(second))
    model = _exported(module)
    net, params = sn.from_onnx(model, loss="mse")
    assert [la.return_sequences for la in net.graph.layers if isinstance(la, (sn.GRU, sn.LSTM))] == [True] * (
        1 if second == "input" else 2)
    k = sn.compile(net, backend="numpy")
    twin = module(torch.tensor(X)).detach().numpy()
    assert rel(k.forward(params, X.reshape(N, -1)), twin) <= 1e-10
    (ref,) = ReferenceEvaluator(model).run(None, {"x": X})
    assert rel(k.forward(params, X.reshape(N, -1)), ref) <= 1e-10
    loss, grads = k.loss_and_grad(params, X.reshape(N, -1), Y)
    torch_loss, torch_grads = autograd_mse(module)
    assert abs(loss - torch_loss) <= 1e-10 * abs(torch_loss)
    for key, g in grads.items():  # the layers are named by kind (lstm1, gru1), the modules lstm, gru
        layer, _, leaf = key.partition(".")
        assert rel(g, torch_grads[f"{layer.rstrip('1')}.{leaf}" if layer in ("lstm1", "gru1") else key]) <= 1e-10, key
