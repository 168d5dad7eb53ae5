"""``nn.Embedding`` brought in from PyTorch and ONNX, and index inputs in the tools that draw
their own data (issue 22, item 4 follow-up).

An imported network's loss and gradients are held to autograd through the original module on
integer index batches with repeated ids and the padding row named (float64: 1e-10, a few
dozen roundings at u = 2**-53 per entry; float32: 1e-5, the same sums at u = 6e-8), its
parameters keyed as the module's ``state_dict``. What symnn does not model is refused naming
the node and the setting. ``sn.sample_point`` (hence ``sn.gradcheck`` and ``symnn check``) draws
valid token ids for index columns, and ``examples/embedding_bag.toml`` goes through the CLI.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.cli import main
from symnn.errors import SpecError, SpecTypeError

torch = pytest.importorskip("torch")

from tests.layer_graphs import assert_matches_autograd, ready, rel  # noqa: E402

nn, F = torch.nn, torch.nn.functional
ROOT = Path(__file__).resolve().parents[2]
V, D, T, K = 9, 3, 4, 3  # vocabulary, embedding width, tokens per sample, classes
PAD = 2
#: token ids with repeats (their gradients add up) and the padding row in several samples
IDS = np.array([[0, 2, 4, 4], [8, 2, 1, 0], [3, 3, 3, 2], [1, 0, 8, 4], [2, 2, 0, 1]])
LABELS = np.arange(len(IDS)) % K


def _bag(padding_idx: int | None = PAD) -> nn.Module:
    return nn.Sequential(nn.Embedding(V, D, padding_idx=padding_idx), nn.Flatten(), nn.Linear(T * D, 5),
                         nn.Tanh(), nn.Linear(5, K), nn.Softmax(dim=1))


def _ce(out: torch.Tensor) -> torch.Tensor:
    """symnn's cross-entropy on the softmax output the module returns."""
    return F.nll_loss(torch.log(out), torch.tensor(LABELS))


def test_sequential_embedding_matches_autograd_and_round_trips_its_state_dict() -> None:
    module = ready(_bag())
    net, params = sn.from_torch(module, input_shape=(T,))
    assert net.graph.index_inputs == ("X",) and net.graph.layers[0].padding_idx == PAD
    assert_matches_autograd(module, net, params, IDS, LABELS, _ce, 1e-10)  # int64 ids as they are
    k = sn.compile(net, backend="numpy")
    _, grads = k.loss_and_grad(params, IDS, LABELS)
    assert np.all(grads["_0.weight"][PAD] == 0)  # as torch: the padding row never moves
    back = sn.from_torch_state_dict(sn.to_state_dict(net, params), net)
    assert all(np.array_equal(back[name], params[name]) for name in params)
    module.load_state_dict(sn.to_state_dict(net, params))  # the module's own keys and shapes


def test_a_frozen_pretrained_table_stays_frozen() -> None:
    table = torch.from_numpy(np.random.default_rng(0).normal(size=(V, D)))
    module = nn.Sequential(nn.Embedding.from_pretrained(table, freeze=True), nn.Flatten(), nn.Linear(T * D, K))
    net, params = sn.from_torch(module.double(), input_shape=(T,), loss="mse")
    assert "_0.weight" not in net.trainable and np.array_equal(params["_0.weight"], table.numpy())


def test_float32_import_matches_float64_autograd() -> None:
    module = ready(_bag(padding_idx=None), seed=1)
    net, params = sn.from_torch(module, input_shape=(T,), dtype="float32")
    loss, grads = sn.compile(net, backend="numpy", dtype="float32").loss_and_grad(params, IDS, LABELS)
    ref = _ce(module(torch.tensor(IDS)))
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-5 * abs(ref.item())
    back = sn.to_state_dict(net, grads)
    for key, p in module.named_parameters():
        assert rel(back[key].numpy(), p.grad.numpy()) <= 1e-5, key


class TokensAndFeatures(nn.Module):
    """Token ids and real features in one forward: the ids an index input, the features not."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(V, D, padding_idx=0)
        self.fc = nn.Linear(T * D, 6)
        self.ctx = nn.Linear(2, 6)
        self.head = nn.Linear(6, K)

    def forward(self, ids, feats):
        return self.head(torch.relu(self.fc(torch.flatten(self.tok(ids), 1)) + self.ctx(feats)))


def test_traced_module_reading_ids_and_features_matches_autograd() -> None:
    module = ready(TokensAndFeatures())
    net, params = sn.from_torch(module, input_shapes=[(T,), 2], loss="mse")
    assert net.input_names == ("ids", "feats") and net.graph.index_inputs == ("ids",)
    feats = np.random.default_rng(0).normal(size=(len(IDS), 2))
    Y = np.random.default_rng(1).normal(size=(len(IDS), K))
    loss, grads = sn.compile(net, backend="numpy").loss_and_grad(params, {"ids": IDS, "feats": feats}, Y)
    ref = F.mse_loss(module(torch.tensor(IDS), torch.tensor(feats)), torch.tensor(Y))
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-10 * abs(ref.item())
    back = sn.to_state_dict(net, grads)
    assert list(back) == list(module.state_dict())
    for key, p in module.named_parameters():
        assert rel(back[key].numpy(), p.grad.numpy()) <= 1e-10, key


@pytest.mark.parametrize(("setting", "words"), [
    ({"max_norm": 1.0}, "max_norm=1.0"), ({"scale_grad_by_freq": True}, "scale_grad_by_freq=True"),
    ({"sparse": True}, "sparse=True")])
def test_an_embedding_setting_symnn_lacks_is_refused_by_name(setting: dict, words: str) -> None:
    module = nn.Sequential(nn.Embedding(V, D, **setting), nn.Flatten(), nn.Linear(T * D, K))
    with pytest.raises(SpecTypeError, match="node '_0'") as info:
        sn.from_torch(module, input_shape=(T,))
    assert f"Embedding({words})" in str(info.value)


class EmbedsAComputedTensor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D)

    def forward(self, x):
        return torch.flatten(self.emb(torch.relu(x)), 1)


def test_missing_length_and_an_embedding_of_a_computed_tensor_are_refused() -> None:
    with pytest.raises(SpecError, match=r"\(T,\) for an Embedding"):
        sn.from_torch(_bag(), loss="mse")
    with pytest.raises(SpecError, match="must read a forward argument directly"):
        sn.from_torch(EmbedsAComputedTensor(), input_shape=(T,), loss="mse")


# -- ONNX --------------------------------------------------------------------------------------

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


class EmbedMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.fc = nn.Linear(T * D, K)

    def forward(self, x):
        return self.fc(torch.flatten(self.emb(x), 1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_a_gather_exported_by_torch_is_an_embedding_matching_autograd() -> None:
    module = ready(EmbedMLP())
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.zeros((2, T), dtype=torch.int64),), buf, dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    net, params = sn.from_onnx(onnx.load_from_string(buf.getvalue()), loss="mse")
    assert net.graph.index_inputs == ("X",) and net.graph.names[0] == "emb"
    Y = np.random.default_rng(2).normal(size=(len(IDS), K))
    assert_matches_autograd(module, net, params, IDS, Y, lambda out: F.mse_loss(out, torch.tensor(Y)), 1e-10)


def _gather_model(gather_inputs: list[str], axis: int | None = None, x_type: int = TensorProto.INT64,
                  extra: list | None = None) -> onnx.ModelProto:
    attrs = {} if axis is None else {"axis": axis}
    nodes = [*(extra or []), helper.make_node("Gather", gather_inputs, ["g"], name="lookup", **attrs),
             helper.make_node("Flatten", ["g"], ["y"], axis=1)]
    table = numpy_helper.from_array(np.random.default_rng(0).normal(size=(V, D)), "table")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", x_type, ["N", T])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], [table])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_hand_built_gather_computes_the_rows_it_names() -> None:
    model = _gather_model(["table", "x"])
    net, params = sn.from_onnx(model, loss="mse")
    table = numpy_helper.to_array(model.graph.initializer[0])
    got = sn.compile(net, backend="numpy").forward(params, IDS)
    assert np.array_equal(got, table[IDS].reshape(len(IDS), -1))


@pytest.mark.parametrize(("model", "error", "words"), [
    (lambda: _gather_model(["table", "x"], axis=1), SpecTypeError, "Gather(axis=1) is not supported"),
    (lambda: _gather_model(["rows", "x"], extra=[helper.make_node("Gather", ["table", "x"], ["rows"])]),
     SpecError, "the data 'rows' is not an initializer"),
    (lambda: _gather_model(["table", "x"], x_type=TensorProto.DOUBLE), SpecError, "not the graph's integer input"),
])
def test_a_gather_symnn_does_not_read_is_refused_naming_the_node(model, error, words) -> None:
    with pytest.raises(error, match=r"node \d 'lookup' \('Gather'\)") as info:
        sn.from_onnx(model(), loss="mse")
    assert words in str(info.value)


def test_token_ids_read_by_another_node_are_refused() -> None:
    model = _gather_model(["table", "x"])
    model.graph.node.insert(0, helper.make_node("Relu", ["x"], ["r"], name="ids_as_reals"))
    with pytest.raises(SpecError, match="node 0 'ids_as_reals' \\('Relu'\\): reads the integer input 'x'"):
        sn.from_onnx(model, loss="mse")


# -- tools that draw their own data ---------------------------------------------------------------

def test_sample_point_draws_token_ids_and_gradcheck_passes() -> None:
    net = sn.load_spec(ROOT / "examples" / "embedding_bag.toml").network
    params, X, Y = sn.sample_point(net, n=6, seed=3)
    assert X.shape == (6, 6) and np.all(X == np.floor(X)) and X.min() >= 0 and X.max() < 50
    assert len(np.unique(X)) > 6  # drawn, not one constant id
    report = sn.gradcheck(sn.compile(net, backend="numpy"), params, X, Y)
    assert report.ok, str(report)


def test_symnn_check_emit_and_latex_take_the_embedding_example(tmp_path: Path, capsys) -> None:
    spec = str(ROOT / "examples" / "embedding_bag.toml")
    assert main(["check", spec, "--backend", "numpy"]) == 0
    assert main(["emit", spec, "--backend", "numpy", "--out", str(tmp_path)]) == 0
    assert main(["latex", spec]) == 0
    assert "gather" in capsys.readouterr().out
