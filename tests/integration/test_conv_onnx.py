"""``sn.from_onnx`` of convolutional models (issue 22): a CNN exported by ``torch.onnx.export``
is imported as a layer graph whose loss and gradients equal autograd's through the original
module (float64, 1e-10: a few hundred roundings at u = 2**-53 on these sizes), its parameters
keyed as the module's ``state_dict``; and the file stays untrusted: an unsupported node, a bad
attribute or a MaxPool with storage_order=1 is refused with an error naming the node.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import symnn as sn
from symnn.errors import ModelFormatError, SpecError, SpecTypeError

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tests.layer_graphs import assert_matches_autograd, ready, rel  # noqa: E402

nn, F = torch.nn, torch.nn.functional
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]
TOL = 1e-10


def _exported(module: nn.Module, sample_shape: tuple[int, ...]) -> onnx.ModelProto:
    """The module as torch's TorchScript exporter writes it, the batch dimension dynamic."""
    buf = io.BytesIO()
    x = torch.zeros((2, *sample_shape), dtype=torch.float64)
    torch.onnx.export(module, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return onnx.load_from_string(buf.getvalue())


def _check(module: nn.Module, sample_shape: tuple[int, ...], n_out: int, seed: int = 1) -> sn.Network:
    """Import the exported module and compare the MSE loss, every gradient (under the module's
    state_dict keys) and the forward pass with autograd through the module."""
    net, params = sn.from_onnx(_exported(module, sample_shape), loss="mse")
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(3, *sample_shape)), rng.normal(size=(3, n_out))
    assert_matches_autograd(module, net, params, X, Y, lambda out: F.mse_loss(out, torch.tensor(Y)), TOL)
    return net


class LeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0))
        self.avg = nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False, ceil_mode=True)
        self.fc1 = nn.Linear(6 * 5 * 3, 7)
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.avg(torch.tanh(self.conv2(x)))
        return self.fc2(torch.sigmoid(self.fc1(torch.flatten(x, 1))))


def test_a_lenet_exported_by_torch_matches_autograd() -> None:
    """Conv+Relu, MaxPool, Conv+Tanh (uneven stride), AveragePool (ceil_mode, count_include_pad=0),
    Flatten, Gemm+Sigmoid, Gemm: activations fold into the layer before them."""
    net = _check(ready(LeNet()), (1, 8, 8), 3)
    assert [type(layer).__name__ for layer in net.layers] == [
        "Conv2d", "MaxPool2d", "Conv2d", "AvgPool2d", "Flatten", "Dense", "Dense"]
    assert [net.layers[i].activation.name for i in (0, 2, 5, 6)] == ["relu", "tanh", "sigmoid", "identity"]


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, stride=2, padding=1)
        self.pool = nn.MaxPool1d(2)
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.gap(self.pool(torch.relu(self.conv(x)))), 1))


def test_a_conv1d_model_with_global_pool_matches_autograd() -> None:
    net = _check(ready(Conv1dNet()), (2, 11), 2)
    assert "GlobalAvgPool" in [type(layer).__name__ for layer in net.layers]


class ResBlock(nn.Module):
    """Stem, conv -> relu -> conv (no bias, "same" on an even kernel: uneven pads), + skip, relu,
    then a channel concat-free head; Reshape to (-1, F) instead of a Flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 2, padding="same", bias=False)
        self.head = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = F.relu(h + self.conv2(torch.relu(self.conv1(h))))
        return self.head(h.reshape(-1, 4 * 5 * 5))


def test_a_residual_cnn_block_matches_autograd() -> None:
    net = _check(ready(ResBlock()), (2, 5, 5), 3)
    assert net.layers[2].padding == (0, 1, 0, 1)  # "same" on a 2x2 kernel: the odd pixel after


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2)
        self.conv2 = nn.Conv2d(6, 6, 3, groups=6, stride=2)  # depthwise
        self.fc = nn.Linear(6 * 3 * 3, 2)

    def forward(self, x):
        return self.fc(torch.flatten(torch.sigmoid(self.conv2(torch.tanh(self.conv1(x)))), 1))


def test_a_grouped_dilated_conv_matches_autograd() -> None:
    net = _check(ready(Grouped()), (4, 7, 7), 2)
    assert (net.layers[0].groups, net.layers[0].dilation, net.layers[1].groups) == (2, (2, 2), 6)


# -- hand-built graphs: what the exporter does not write, and refusals ---------------------------

def _model(nodes, inits, in_shape=("N", 2, 6, 6), out="y") -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, list(in_shape))],
        [helper.make_tensor_value_info(out, TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float64 if k[0] != "s" else np.int64), k)
         for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv_net(**conv_attrs) -> onnx.ModelProto:
    """Conv(2 -> 3, 3x3) -> GlobalAveragePool -> Reshape [0, -1] -> MatMul + Add (and Concat)."""
    rng = np.random.default_rng(0)
    attrs = {"kernel_shape": [3, 3], **conv_attrs}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", **attrs),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Reshape", ["g", "s"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["mm"]), helper.make_node("Add", ["mm", "mb"], ["d"]),
             helper.make_node("Concat", ["d", "f"], ["y"], axis=1)]
    inits = {"w": rng.normal(size=(3, 2, 3, 3)), "b": rng.normal(size=3), "s": [0, -1],
             "m": rng.normal(size=(3, 2)), "mb": rng.normal(size=2)}
    return _model(nodes, inits)


def test_a_hand_built_graph_computes_what_onnx_specifies() -> None:
    """auto_pad SAME_UPPER, GlobalAveragePool + Reshape, MatMul + Add and Concat, checked against
    the same computation in torch (symnn's forward is the reference evaluator's definition)."""
    model = _conv_net(auto_pad="SAME_UPPER")
    net, params = sn.from_onnx(model, loss="mse")
    X = np.random.default_rng(1).normal(size=(2, 2, 6, 6))
    got = sn.compile(net, backend="numpy").forward(params, X)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    c = F.conv2d(torch.tensor(X), torch.tensor(init["w"]), torch.tensor(init["b"]), padding=1)
    f = c.mean(dim=(2, 3))
    want = torch.cat([f @ torch.tensor(init["m"]) + torch.tensor(init["mb"]), f], dim=1)
    assert got.shape == (2, 5) and rel(got, want.numpy()) <= TOL


@pytest.mark.parametrize(("attrs", "error", "words"), [
    ({"strides": [-1, 1]}, SpecError, "strides=[-1, 1]"),
    ({"pads": [1, 1, 1]}, SpecError, "pads=[1, 1, 1]"),
    ({"pads": [0, 0, 2, 2]}, SpecError, "uneven"),
    ({"dilations": [1, 1, 1]}, SpecError, "dilations"),
    ({"group": 2}, SpecError, "group=2"),
    ({"auto_pad": "SAME_LOWER", "strides": [1, 1], "kernel_shape": [2, 2]}, SpecError, "kernel_shape"),
    ({"auto_pad": "BOGUS"}, SpecError, "auto_pad"),
    ({"auto_pad": "VALID", "pads": [0, 0, 0, 0]}, ModelFormatError, "together"),
    ({"strides": list(range(1, 20))}, ModelFormatError, "at most 16"),
    ({"group": 1.5}, ModelFormatError, "'group'"),
])
def test_a_bad_conv_attribute_is_refused_naming_the_node(attrs, error, words) -> None:
    with pytest.raises(error, match="node 0 'conv' \\('Conv'\\)") as info:
        sn.from_onnx(_conv_net(**attrs))
    assert words in str(info.value)


def test_an_unsupported_node_is_named() -> None:
    model = _conv_net()
    model.graph.node.insert(1, helper.make_node("ConvTranspose", ["c"], ["t"], name="up"))
    with pytest.raises(SpecTypeError, match="node 1 'up' \\('ConvTranspose'\\) is not supported"):
        sn.from_onnx(model)


def _pool_net(op: str, **attrs) -> onnx.ModelProto:
    outputs = attrs.pop("outputs", ["p"])
    nodes = [helper.make_node(op, ["x"], outputs, name="pool", **attrs),
             helper.make_node("Flatten", ["p"], ["y"], axis=1)]
    return _model(nodes, {})


def test_maxpool_storage_order_and_indices_are_refused() -> None:
    with pytest.raises(SpecTypeError, match="'pool'.*storage_order=1"):
        sn.from_onnx(_pool_net("MaxPool", kernel_shape=[2, 2], storage_order=1))
    with pytest.raises(SpecTypeError, match="'pool'.*2 outputs"):
        sn.from_onnx(_pool_net("MaxPool", kernel_shape=[2, 2], outputs=["p", "i"]))
    with pytest.raises(SpecError, match="'pool'.*pads"):
        sn.from_onnx(_pool_net("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 0, 0]))


def test_onnx_pool_defaults_are_onnx_not_torch() -> None:
    """ONNX's MaxPool strides default to 1 (torch's to the window), AveragePool's
    count_include_pad to 0 (torch's to True): the imported layers take ONNX's."""
    net, _ = sn.from_onnx(_pool_net("MaxPool", kernel_shape=[2, 2]))
    assert net.layers[0].stride == (1, 1)
    net, _ = sn.from_onnx(_pool_net("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    assert net.layers[0].count_include_pad is False


@pytest.mark.parametrize("in_shape", [("N", 2, "H", 6), ("N", 2, 6, 6, 6), ("N",)])
def test_an_input_without_a_fixed_sample_shape_is_refused(in_shape) -> None:
    nodes = [helper.make_node("Flatten", ["x"], ["y"], axis=1)]
    with pytest.raises(SpecError, match="must declare its shape as \\(N, C, H, W\\)"):
        sn.from_onnx(_model(nodes, {}, in_shape))


def test_a_reshape_that_keeps_a_fixed_batch_is_refused() -> None:
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="r")]
    with pytest.raises(SpecError, match="'r'.*Reshape to \\[2, -1\\]"):
        sn.from_onnx(_model(nodes, {"s": [2, -1]}))
