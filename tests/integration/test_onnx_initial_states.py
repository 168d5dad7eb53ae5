"""``sn.from_onnx`` of recurrent ops whose initial states are graph inputs (issue 23, item 4): what
``torch.onnx.export`` writes for ``rnn(x, h0)`` / ``lstm(x, (h0, c0))``, the time-major
``initial_h`` (D, N, H) read straight from a graph input, or for a stack (L*D, N, H) through a
``Slice`` of its rows per layer's op; and the same with ``layout=1`` ((N, D, H)). Each becomes an
input of the network, each sample's (L*D, H), so a kernel takes the state batch-first, as
``sn.from_torch`` does (PyTorch's ``h_0`` transposed to (N, L*D, H)); each op's layer reads its
rows of it (``state_rows``).

Every file is held to the module it came from: the forward output and, through
``loss_and_grad``, the loss and every gradient against autograd (float64, 1e-10 relative: the
chain through T = 5 steps is a few hundred roundings at u = 2**-53), the forward against ONNX's
reference evaluator of the file itself, and the emitted C against NumPy. What symnn does not
model (a state read elsewhere too, an LSTM given only one of its states, a state declared with the
wrong shape, a Slice that is not of whole rows) is refused naming it, before any work.
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
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from tests.integration.test_recurrent_import import F, H, K, N, T, X, Y  # noqa: E402
from tests.layer_graphs import ready, rel  # noqa: E402

nn = torch.nn  # the sizes and data are the torch-import tests'; the initial states drawn here
RNG = np.random.default_rng(3)


class Started(nn.Module):
    """A batch-first recurrent module ``rnn`` started from the states it is given, and a head
    ``fc`` on its last step (``out[:, -1]``), or on both directions' final states."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn
        self.fc = nn.Linear((2 if rnn.bidirectional else 1) * H, K)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None = None) -> torch.Tensor:
        out, h = self.rnn(x, (h0, c0) if c0 is not None else h0)
        if not self.rnn.bidirectional:
            return self.fc(out[:, -1])
        h = h[0] if isinstance(h, tuple) else h
        return self.fc(torch.cat((h[-2], h[-1]), dim=1))


def _states(module: Started) -> list[np.ndarray]:
    """Time-major states (layers*D, N, H), as the module takes them: h0, and an LSTM's c0."""
    rows = (2 if module.rnn.bidirectional else 1) * module.rnn.num_layers
    count = 2 if isinstance(module.rnn, nn.LSTM) else 1
    return [RNG.normal(size=(rows, N, H)) for _ in range(count)]


def _exported(module: Started, states: list[np.ndarray], names: list[str] | None = None) -> onnx.ModelProto:
    """The module as torch.onnx.export writes it (TorchScript exporter, dynamic batch)."""
    names = names or ["x", "h0", "c0"][:1 + len(states)]
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.tensor(X), *map(torch.tensor, states)), f, dynamo=False, opset_version=17,
                          input_names=names, output_names=["y"],
                          dynamic_axes={names[0]: {0: "N"}, "y": {0: "N"}, **{k: {1: "N"} for k in names[1:]}})
    return onnx.load_from_string(f.getvalue())


def _autograd(module: Started, states: list[np.ndarray]) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
    """Autograd's mean squared error against Y, each parameter's gradient, and the output."""
    module.zero_grad()
    out = module(torch.tensor(X), *map(torch.tensor, states))
    loss = ((out - torch.tensor(Y)) ** 2).mean()
    loss.backward()
    return loss.item(), {k: p.grad.numpy() for k, p in module.named_parameters()}, out.detach().numpy()


def _batch_first(states: list[np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The kernel's inputs: X, and each time-major state (D, N, H) as (N, D, H)."""
    return {names[0]: X, **{name: s.transpose(1, 0, 2) for name, s in zip(names[1:], states)}}


CASES = [
    lambda: nn.LSTM(F, H, batch_first=True),
    lambda: nn.GRU(F, H, batch_first=True),
    lambda: nn.RNN(F, H, batch_first=True),
    lambda: nn.LSTM(F, H, batch_first=True, bidirectional=True),
    lambda: nn.GRU(F, H, batch_first=True, bidirectional=True),
    # stacks: one op per layer, each reading its rows of h_0 through a Slice
    lambda: nn.GRU(F, H, num_layers=2, batch_first=True),
    lambda: nn.RNN(F, H, num_layers=3, batch_first=True),
    lambda: nn.LSTM(F, H, num_layers=2, batch_first=True, bidirectional=True),
]


@pytest.mark.parametrize("make", CASES)
def test_exported_initial_states_become_inputs_held_to_the_module_the_file_and_autograd(make) -> None:
    module = ready(Started(make()))
    states = _states(module)
    model = _exported(module, states)
    net, params = sn.from_onnx(model, loss="mse")
    names = net.input_names
    assert names == ("x", "h0", "c0")[:1 + len(states)]
    layers = [la for la in net.graph.layers if isinstance(la, (sn.RNN, sn.GRU, sn.LSTM))]
    rows = states[0].shape[0]
    D = 2 if module.rnn.bidirectional else 1
    assert [(la.bidirectional, la.state_rows) for la in layers] == [
        (module.rnn.bidirectional, None if rows == D else (k * D, rows)) for k in range(module.rnn.num_layers)]
    k = sn.compile(net, backend="numpy")
    inputs = _batch_first(states, names)
    torch_loss, torch_grads, twin = _autograd(module, states)
    assert rel(k.forward(params, inputs), twin) <= 1e-10
    if not isinstance(module.rnn, nn.RNN):  # onnx's reference RNN implements Tanh only
        (ref,) = ReferenceEvaluator(model).run(None, {"x": X, **dict(zip(("h0", "c0"), states))})
        assert rel(k.forward(params, inputs), ref) <= 1e-10
    loss, grads = k.loss_and_grad(params, inputs, Y)
    assert abs(loss - torch_loss) <= 1e-10 * abs(torch_loss)
    kind = type(module.rnn).__name__.lower()
    for key, g in grads.items():  # symnn's layer k+1 (lstm1, lstm2...) is the torch module's layer k
        layer, _, leaf = key.partition(".")
        torch_key = (f"rnn.{leaf.replace('_l0', f'_l{int(layer[len(kind):]) - 1}')}" if layer.startswith(kind)
                     else key)
        assert rel(g, torch_grads[torch_key]) <= 1e-10, key
    other = _states(module)  # the states are inputs, not constants folded in: other states, other output
    assert rel(k.forward(params, _batch_first(other, names)), _autograd(module, other)[2]) <= 1e-10


def test_an_exported_lstm_with_its_states_runs_in_c_as_in_numpy() -> None:
    """The emitted C takes the state inputs as NumPy does, each layer of a stack its rows
    (float64: the same sums in the same order up to the gemm's blocking, 1e-14 relative)."""
    module = ready(Started(nn.LSTM(F, H, num_layers=2, batch_first=True)))
    states = _states(module)
    net, params = sn.from_onnx(_exported(module, states), loss="mse")
    inputs = _batch_first(states, net.input_names)
    kn, kc = sn.compile(net, backend="numpy"), sn.compile(net, backend="c")
    ln, gn = kn.loss_and_grad(params, inputs, Y)
    lc, gc = kc.loss_and_grad(params, inputs, Y)
    assert abs(lc - ln) <= 1e-14 * abs(ln)
    assert all(rel(gc[key], gn[key]) <= 1e-14 for key in gn)
    assert rel(kc.forward(params, inputs), _autograd(module, states)[2]) <= 1e-10


def test_input_names_that_are_not_plain_names_are_replaced() -> None:
    """An ONNX input name is a key of the kernel's inputs only where it is a plain name; else
    (torch's ``input.1``, or anything a file may hold) the input is named by its role."""
    module = ready(Started(nn.GRU(F, H, batch_first=True)))
    states = _states(module)
    net, params = sn.from_onnx(_exported(module, states, ["input.1", "h0; rm -rf /"]), loss="mse")
    assert net.input_names == ("x", "gru1_h0")
    k = sn.compile(net, backend="numpy")
    assert rel(k.forward(params, _batch_first(states, net.input_names)), _autograd(module, states)[2]) <= 1e-10


def _layout1_model(module: Started, state_dims: list | None = None, extra_reader: bool = False) -> onnx.ModelProto:
    """A one-layer GRU graph written by hand with ``layout=1``: X (N, T, F), initial_h a graph
    input (N, D, H), Y_h flattened into a Gemm."""
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    reorder = lambda a: np.concatenate([a[H:2 * H], a[:H], a[2 * H:]])  # noqa: E731
    inits = [numpy_helper.from_array(reorder(sd["rnn.weight_ih_l0"])[None], "W"),
             numpy_helper.from_array(reorder(sd["rnn.weight_hh_l0"])[None], "R"),
             numpy_helper.from_array(np.concatenate([reorder(sd["rnn.bias_ih_l0"]),
                                                     reorder(sd["rnn.bias_hh_l0"])])[None], "B"),
             numpy_helper.from_array(sd["fc.weight"], "fc.weight"), numpy_helper.from_array(sd["fc.bias"], "fc.bias")]
    nodes = [helper.make_node("GRU", ["X", "W", "R", "B", "", "state"], ["Y", "Y_h"], hidden_size=H, layout=1,
                              linear_before_reset=1),
             helper.make_node("Flatten", ["Y_h"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["out"], transB=1)]
    outputs = [helper.make_tensor_value_info("out", TensorProto.DOUBLE, ["N", K])]
    if extra_reader:  # the state read as data too
        nodes.append(helper.make_node("Flatten", ["state"], ["seen"], axis=1))
        outputs.append(helper.make_tensor_value_info("seen", TensorProto.DOUBLE, ["N", H]))
    graph = helper.make_graph(nodes, "gru1", [helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["N", T, F]),
                                              helper.make_tensor_value_info("state", TensorProto.DOUBLE,
                                                                            state_dims or ["N", 1, H])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_a_batch_first_op_takes_its_state_as_declared() -> None:
    """With ``layout=1`` the state input is already (N, D, H): the kernel takes it as it is."""
    module = ready(Started(nn.GRU(F, H, batch_first=True)))
    (h0,) = _states(module)
    model = _layout1_model(module)
    net, params = sn.from_onnx(model, loss="mse")
    assert net.input_names == ("X", "state")
    k = sn.compile(net, backend="numpy")
    inputs = {"X": X, "state": h0.transpose(1, 0, 2)}
    with torch.no_grad():
        _, h = module.rnn(torch.tensor(X), torch.tensor(h0))
        twin = module.fc(h[-1]).numpy()
    assert rel(k.forward(params, inputs), twin) <= 1e-10
    (ref,) = ReferenceEvaluator(model).run(None, inputs)
    assert rel(k.forward(params, inputs), ref) <= 1e-10


def test_states_symnn_does_not_model_are_refused_by_name() -> None:
    gru = ready(Started(nn.GRU(F, H, batch_first=True)))
    with pytest.raises(SpecError, match=r"state.*declares.*\(N, 2, 4\).*takes \(N, D, H\) = \(N, 1, 4\)"):
        sn.from_onnx(_layout1_model(gru, ["N", 2, H]), loss="mse")
    with pytest.raises(SpecTypeError, match=r"the input initial_h \('state'\) is not supported: .*a graph input read only there"):
        sn.from_onnx(_layout1_model(gru, extra_reader=True), loss="mse")
    stacked = ready(Started(nn.GRU(F, H, num_layers=2, batch_first=True)))
    model = _exported(stacked, _states(stacked))
    (cut,) = [node for node in model.graph.node if node.op_type == "Slice" and node.input[0] == "h0"][:1]
    steps = numpy_helper.from_array(np.array([2], np.int64), "two")
    model.graph.initializer.append(steps)
    del cut.input[4:]
    cut.input.append("two")  # every other row: no layer's rows
    with pytest.raises(SpecTypeError, match="Slice of the initial state 'h0' only along its first axis.*step 1"):
        sn.from_onnx(model, loss="mse")
    lstm = ready(Started(nn.LSTM(F, H, batch_first=True)))
    model = _exported(lstm, _states(lstm))
    (op,) = [node for node in model.graph.node if node.op_type == "LSTM"]
    op.input[6] = ""  # initial_c left out: the cell state would start at zero under a given h0
    del model.graph.input[2]
    with pytest.raises(SpecTypeError, match="reads 'h0' as an initial state but not the other"):
        sn.from_onnx(model, loss="mse")


def test_a_stack_started_from_its_state_ships_as_a_spec_and_c(tmp_path) -> None:
    """``symnn from-onnx`` writes the stack's layers with their ``state_rows`` into the spec,
    which reads back as the same network."""
    from symnn.cli import main
    from symnn.spec_toml import load_spec

    module = ready(Started(nn.LSTM(F, H, num_layers=2, batch_first=True)))
    path = tmp_path / "stack.onnx"
    path.write_bytes(_exported(module, _states(module)).SerializeToString())
    assert main(["from-onnx", str(path), "--out", str(tmp_path / "c"), "--name", "stack", "--loss", "mse"]) == 0
    net, _ = sn.from_onnx(onnx.load(str(path)), loss="mse")
    spec = load_spec(tmp_path / "c" / "stack.toml")
    assert [la.describe() for la in spec.network.graph.layers] == [la.describe() for la in net.graph.layers]
    assert "state_rows=(1, 2)" in " ".join(la.describe() for la in net.graph.layers)


def test_state_rows_are_checked_before_any_work() -> None:
    """``state_rows=(first, total)``: two integers, the layer's num_layers*D rows within the
    total; the states it is called on must hold that total."""
    with pytest.raises(SpecTypeError, match="state_rows must be two integers"):
        sn.GRU(F, H, state_rows=(0, 1.5))
    with pytest.raises(SpecError, match=r"state_rows=\(1, 2\): its 2 row\(s\).*within the 2 given"):
        sn.GRU(F, H, num_layers=2, state_rows=(1, 2))
    layer = sn.LSTM(F, H, state_rows=(1, 3))
    x, h0, c0 = sn.Input(T, F), sn.Input(3, H), sn.Input(2, H)
    with pytest.raises(sn.errors.LayerSizeMismatchError, match=r"initial state of shape \(2, 4\), expected \(3, 4\)"):
        layer(x, h0, c0)
    assert layer(x, h0, sn.Input(3, H)).shape == (H,)
