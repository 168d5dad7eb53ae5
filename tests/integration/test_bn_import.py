"""Batch normalisation at symnn's edges (issue 22): ``sn.from_torch`` of nn.BatchNorm1d/2d in an
nn.Sequential and in an fx-traced residual block, ``sn.to_state_dict`` back (the buffers
included, ``num_batches_tracked`` as torch's int64 0-d tensor), ``sn.from_onnx`` of
BatchNormalization and LayerNormalization exported by ``torch.onnx.export``, TOML specs and
model files of the new layers, and the command line on ``examples/cnn_bn_digits.toml``.

An imported network is checked against the module: its loss and gradients against autograd
through the module in ``train()`` mode (batch statistics), its ``forward`` against the module
in ``eval()`` mode (running statistics), float64 to 1e-10 (a few hundred roundings at
u = 2**-53 on these sizes, the normalisation's 1/sqrt included).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn import datasets
from symnn.cli import main
from symnn.errors import ModelFormatError, ShapeError, SpecError, SpecParseError, SpecTypeError

torch = pytest.importorskip("torch")
from tests.layer_graphs import rel  # noqa: E402

nn, F = torch.nn, torch.nn.functional
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cnn_bn_digits.toml"
TOL = 1e-10


def _ready(module: nn.Module, seed: int = 0) -> nn.Module:
    """float64, every parameter and running statistic moved off its initial value (a running
    mean of 0 and variance of 1 would hide swapped or dropped statistics), a count of 3."""
    torch.manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if key.endswith("num_batches_tracked"):
                value.fill_(3)
            elif key.endswith("running_var"):
                value.copy_(0.5 + torch.rand_like(value))
            else:
                value.add_(0.3 * torch.randn_like(value))
    return module


def _assert_matches_torch(module: nn.Module, net: sn.Network, params: dict, X: np.ndarray,
                          torch_loss) -> None:
    """Loss and every gradient against autograd in train() mode, forward against eval() mode;
    the gradients come back under the module's state_dict keys, a buffer's as zeros."""
    k = sn.compile(net, backend="numpy")
    loss, grads = k.loss_and_grad(params, X, torch_loss.targets)
    train = copy.deepcopy(module).train()  # a train() call updates the running statistics: a copy
    ref = torch_loss(train(torch.tensor(X)))
    ref.backward()
    assert abs(loss - ref.item()) <= TOL * abs(ref.item())
    back = sn.to_state_dict(net, grads)
    assert list(back) == list(module.state_dict())
    named = {key: p for key, p in train.named_parameters() if p.requires_grad}
    # a bias right before a batch norm has a gradient of exactly 0 (the mean is taken out),
    # computed as a sum that cancels: its rounding is relative to the gradient's scale
    scale = max(float(np.linalg.norm(p.grad.numpy())) for p in named.values())
    for key, value in back.items():
        if key in named:
            want = named[key].grad.numpy()
            assert np.linalg.norm(value.numpy() - want) <= TOL * max(np.linalg.norm(want), scale), key
        else:  # a buffer or a frozen parameter: no gradient
            assert not value.numpy().any(), key
    with torch.no_grad():
        want = copy.deepcopy(module).eval()(torch.tensor(X)).numpy()
    assert rel(k.forward(params, X), want) <= TOL


class _MSE:
    """An MSE loss on fixed targets, the targets kept for symnn's kernel."""

    def __init__(self, Y: np.ndarray) -> None:
        self.targets = Y

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out, torch.tensor(self.targets))


def _state_round_trip(module: nn.Module, net: sn.Network, params: dict) -> None:
    """``to_state_dict`` is exactly ``state_dict()``: keys, shapes, dtypes, values; and loads back."""
    state = sn.to_state_dict(net, params)
    want = module.state_dict()
    assert list(state) == list(want)
    for key, value in want.items():
        assert state[key].dtype == value.dtype and state[key].shape == value.shape, key
        assert torch.equal(state[key], value), key
    fresh = copy.deepcopy(module)
    fresh.load_state_dict({key: torch.as_tensor(v) for key, v in state.items()})


# -- from_torch ----------------------------------------------------------------------------------------
def _bn_sequential() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(12, 5), nn.BatchNorm1d(5, eps=1e-3, momentum=None), nn.Tanh(),
        nn.Linear(5, 2))


def test_a_sequential_with_batchnorm_matches_torch_in_train_and_eval() -> None:
    """Conv -> BatchNorm2d -> ReLU -> MaxPool -> Flatten -> Linear -> BatchNorm1d(momentum=None)
    -> Tanh -> Linear: the batch norms keep their settings and their buffers' values."""
    module = _ready(_bn_sequential())
    net, params = sn.from_torch(module, input_shape=(2, 4, 4))
    bn2d, bn1d = net.layers[1], net.layers[6]
    assert (type(bn2d).__name__, type(bn1d).__name__) == ("BatchNorm2d", "BatchNorm1d")
    assert (bn1d.eps, bn1d.momentum, bn2d.momentum) == (1e-3, None, 0.1)
    assert net.buffers == ("_1.running_mean", "_1.running_var", "_1.num_batches_tracked",
                           "_6.running_mean", "_6.running_var", "_6.num_batches_tracked")
    assert "_1.running_mean" not in net.trainable and net.frozen == ()
    assert params["_6.num_batches_tracked"].shape == () and params["_6.num_batches_tracked"] == 3
    X = np.random.default_rng(1).normal(size=(6, 2, 4, 4))
    _assert_matches_torch(module, net, params, X, _MSE(np.random.default_rng(2).normal(size=(6, 2))))
    _state_round_trip(module, net, params)


class ResBN(nn.Module):
    """A residual block: conv -> bn -> relu -> conv -> bn, + skip, relu; then a global pool."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4, momentum=0.3)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4, eps=1e-4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        h = F.relu(h + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h))))))
        return self.head(torch.flatten(self.pool(h), 1))


def test_a_traced_residual_block_with_batchnorm_matches_torch() -> None:
    """Each BatchNorm is named after its attribute; requires_grad=False on a batch norm's weight
    and bias freezes them (not its buffers, which are no parameters)."""
    module = _ready(ResBN())
    module.bn1.weight.requires_grad_(False)
    module.bn1.bias.requires_grad_(False)
    net, params = sn.from_torch(module, input_shape=(2, 5, 5))
    assert net.frozen == ("bn1.weight", "bn1.bias")
    assert (net.layers[2].momentum, net.layers[5].eps) == (0.3, 1e-4)
    X = np.random.default_rng(3).normal(size=(4, 2, 5, 5))
    _assert_matches_torch(module, net, params, X, _MSE(np.random.default_rng(4).normal(size=(4, 3))))
    _state_round_trip(module, net, params)


def test_a_module_with_every_parameter_frozen_imports_as_trainable() -> None:
    """requires_grad off everywhere (a module prepared for inference): the buffers are not
    parameters, so every *parameter* is frozen and the network imports as trainable."""
    module = _ready(_bn_sequential()).requires_grad_(False)
    net, _ = sn.from_torch(module, input_shape=(2, 4, 4))
    assert net.frozen == () and "_1.weight" in net.trainable


@pytest.mark.parametrize("make, match", [
    (lambda: nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2)), "Conv3d|BatchNorm3d"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 1), nn.SyncBatchNorm(2)), "SyncBatchNorm"),
])
def test_batch_norms_symnn_does_not_model_are_refused(make, match: str) -> None:
    with pytest.raises(SpecTypeError, match=match):
        sn.from_torch(make(), input_shape=(1, 3, 3))


def test_a_batchnorm_whose_state_contradicts_its_flags_is_refused() -> None:
    bn = nn.BatchNorm2d(2)
    bn.track_running_stats = False  # statistics held but not tracked: torch's eval() still uses them
    with pytest.raises(SpecTypeError, match="track_running_stats=False.*holds running statistics"):
        sn.from_torch(nn.Sequential(nn.Conv2d(1, 2, 1), bn), input_shape=(1, 3, 3))


def test_a_count_is_given_back_as_int64_and_must_be_whole() -> None:
    net, params = sn.from_torch(_ready(_bn_sequential()), input_shape=(2, 4, 4))
    assert sn.to_state_dict(net, params)["1.num_batches_tracked"].dtype == torch.int64
    with pytest.raises(ShapeError, match="num_batches_tracked counts batches"):
        sn.to_state_dict(net, {**params, "_1.num_batches_tracked": np.array(2.5)})


def test_a_count_beyond_float32s_integers_is_refused_in_float32() -> None:
    module = _ready(_bn_sequential())
    module[1].num_batches_tracked.fill_(2**24 + 1)
    assert sn.from_torch(module, input_shape=(2, 4, 4))[1]["_1.num_batches_tracked"] == 2**24 + 1
    with pytest.raises(ModelFormatError, match="not exact in float32"):
        sn.from_torch(module, input_shape=(2, 4, 4), dtype="float32")


# -- from_onnx -------------------------------------------------------------------------------------------
onnx_needed = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


class NormNet(nn.Module):
    """BatchNorm2d after a conv, BatchNorm1d (affine=False) after a Linear, LayerNorm, and a
    LayerNorm without affine parameters; eps and momentum exact in float32 (ONNX stores them
    so), momentum 0.25 written as ONNX's 0.75."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3, eps=2**-12, momentum=0.25)
        self.fc = nn.Linear(27, 4)
        self.bn1 = nn.BatchNorm1d(4, eps=2**-10, affine=False)
        self.ln = nn.LayerNorm(4, eps=2**-8)
        self.ln2 = nn.LayerNorm(4, eps=2**-9, elementwise_affine=False)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.out(self.ln2(self.ln(self.bn1(self.fc(torch.flatten(h, 1))))))


def _exported(module: nn.Module, sample_shape: tuple[int, ...]):
    """The module (in eval mode: BatchNormalization's inference form) as torch's TorchScript
    exporter writes it, without folding the batch norm into the conv."""
    onnx = pytest.importorskip("onnx")
    buf = io.BytesIO()
    x = torch.zeros((2, *sample_shape), dtype=torch.float64)
    torch.onnx.export(copy.deepcopy(module).eval(), (x,), buf, dynamo=False, do_constant_folding=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return onnx.load_from_string(buf.getvalue())


@onnx_needed
def test_batch_and_layer_norms_exported_to_onnx_match_torch() -> None:
    module = _ready(NormNet())
    module.bn1.num_batches_tracked.fill_(0)  # ONNX has no count: it imports as 0
    module.bn.num_batches_tracked.fill_(0)
    proto = _exported(module, (2, 3, 3))
    assert {"BatchNormalization", "LayerNormalization"} <= {n.op_type for n in proto.graph.node}
    net, params = sn.from_onnx(proto, loss="mse")
    kinds = [(type(layer).__name__, layer.name) for layer in net.layers]
    assert ("BatchNorm2d", "bn") in kinds and ("BatchNorm1d", "bn1") in kinds and ("LayerNorm", "ln") in kinds
    bn, bn1 = net.layers[net.graph.names.index("bn")], net.layers[net.graph.names.index("bn1")]
    assert (bn.momentum, bn.eps, bn.affine) == (0.25, 2**-12, True)
    assert bn1.affine is False and abs(bn1.momentum - 0.1) < 1e-7  # float32's 0.9 in the file
    for key, value in module.state_dict().items():
        assert np.array_equal(params[key], value.numpy()), key
    X = np.random.default_rng(4).normal(size=(5, 2, 3, 3))
    _assert_matches_torch(module, net, params, X, _MSE(np.random.default_rng(5).normal(size=(5, 2))))


def _graph(nodes, inputs, outputs, inits):
    from onnx import helper

    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                             opset_imports=[helper.make_opsetid("", 17)])


def _bn_model(**attrs):
    """One BatchNormalization on (N, 2, 3, 3) with its four weights as initializers, then a
    Flatten (an output is features)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(v, np.float32), f"bn.{k}") for k, v in
             (("weight", [1.5, 2]), ("bias", [0, 1]), ("running_mean", [0.5, -1]), ("running_var", [1, 2]))]
    outputs = ["b", "mean", "var"] if attrs.get("training_mode") else ["b"]
    node = helper.make_node("BatchNormalization", ["x"] + [t.name for t in inits], outputs, **attrs)
    flatten = helper.make_node("Flatten", ["b"], ["y"], axis=1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 18])
    assert onnx
    return _graph([node, flatten], [x], [y], inits)


@onnx_needed
def test_an_onnx_batchnorm_built_by_hand_reads_its_defaults() -> None:
    net, params = sn.from_onnx(_bn_model(), loss="mse")
    bn, _ = net.layers
    assert bn.name == "bn" and bn.eps == float(np.float32(1e-5)) and abs(bn.momentum - 0.1) < 1e-7
    assert list(params) == ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    X = np.random.default_rng(6).normal(size=(2, 2, 3, 3))
    mean, var = np.array([0.5, -1])[:, None, None], np.array([1.0, 2])[:, None, None]
    want = (X - mean) / np.sqrt(var + bn.eps) * np.array([1.5, 2])[:, None, None] + np.array([0, 1])[:, None, None]
    assert rel(sn.compile(net, backend="numpy").forward(params, X), want.reshape(2, -1)) <= TOL


@onnx_needed
@pytest.mark.parametrize("attrs, error, match", [
    ({"training_mode": 1}, SpecTypeError, "training_mode=1 is not supported"),
    ({"spatial": 1}, SpecTypeError, "attribute 'spatial' is not one BatchNormalization takes"),
    ({"momentum": 1.5}, SpecError, "momentum=1.5 is outside"),
    ({"epsilon": 0.0}, SpecError, "epsilon=0.0 is outside"),
])
def test_onnx_batchnorm_settings_symnn_does_not_read_are_refused(attrs, error, match: str) -> None:
    with pytest.raises(error, match=match):
        sn.from_onnx(_bn_model(**attrs), loss="mse")


@onnx_needed
def test_an_onnx_layernorm_over_another_axis_is_refused() -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones(3, np.float32), "ln.weight"),
             numpy_helper.from_array(np.zeros(3, np.float32), "ln.bias")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3])
    # axis 1 of (N, 2, 3): the whole sample (2, 3) normalised at once, not each step's 3 features
    node = helper.make_node("LayerNormalization", ["x", "ln.weight", "ln.bias"], ["y"], axis=1)
    with pytest.raises(SpecError, match="symnn's LayerNorm normalises the last axis of"):
        sn.from_onnx(_graph([node], [x], [y], inits), loss="mse")


# -- specs and model files -----------------------------------------------------------------------------
def _bn_net() -> sn.Network:
    x = sn.Input(2, 4, 4)
    h = sn.BatchNorm2d(3, momentum=None, name="bn")(sn.Conv2d(2, 3, 3, padding=1)(x))
    h = sn.BatchNorm2d(3, eps=1e-3, affine=False, track_running_stats=False)(h)
    h = sn.BatchNorm1d(48, momentum=0.3)(sn.Flatten()(h))
    return sn.Network(inputs=x, outputs=sn.Dense(48, 3, "softmax")(h), loss="cross_entropy", name="bn_net")


def test_batchnorm_fields_round_trip_through_a_toml_spec() -> None:
    """Every field, momentum=None written as "none" (TOML has no null)."""
    net = _bn_net()
    text = sn.dumps_spec(net)
    assert 'momentum = "none"' in text and "track_running_stats = false" in text
    back = sn.loads_spec(text).network
    assert back.layers == net.layers and back.graph.names == net.graph.names and sn.dumps_spec(back) == text


@pytest.mark.parametrize("written, tampered, match", [
    ('momentum = "none"', 'momentum = "cumulative"', "momentum: expected a number in \\[0, 1\\] or 'none'"),
    ('momentum = "none"', "momentum = nan", "momentum must be a real in \\[0, 1\\]"),
    ('momentum = "none"', "momentum = 1.5", "momentum must be a real in \\[0, 1\\]"),
    ('momentum = "none"', "momentum = true", "momentum must be a real"),
    ("eps = 0.001", "eps = 0.0", "eps must be a real in \\(0, 1\\)"),
    ("eps = 0.001", 'eps = "1e-3"', "eps must be a real"),
    ("affine = false", "affine = 0", "affine must be True or False"),
    ("track_running_stats = false", 'track_running_stats = "no"', "track_running_stats must be True or False"),
    ("num_features = 48", "num_features = 47", "BatchNorm1d\\(47\\) applied to samples of 48"),
    ("num_features = 48", "num_features = -48", "num_features: a size must be a positive integer"),
    ("num_features = 48", "num_features = 4.8e1", "num_features: a size must be a positive integer"),
])
def test_a_spec_s_batchnorm_values_are_validated(written: str, tampered: str, match: str) -> None:
    text = sn.dumps_spec(_bn_net())
    assert written in text
    with pytest.raises(SpecParseError, match=match):
        sn.loads_spec(text.replace(written, tampered, 1), "net.toml")


def test_a_model_file_keeps_batchnorm_settings_and_buffers(tmp_path: Path) -> None:
    net = _bn_net()
    params = {k: v + 0.5 for k, v in net.init_params(seed=0).items()}
    model = sn.load(sn.save(tmp_path / "bn.npz", net, params))
    assert model.network == net and model.network.layers[1].momentum is None
    for name, value in params.items():
        assert np.array_equal(model.params[name], value) and model.params[name].shape == value.shape, name


# -- the example on the command line -------------------------------------------------------------------
def test_the_cli_checks_trains_emits_and_prints_the_bn_example(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    X, y = datasets.load_digits()
    csv = tmp_path / "digits.csv"
    np.savetxt(csv, np.column_stack([X[:64], y[:64]]), delimiter=",", fmt="%g")
    spec = str(EXAMPLE)
    assert main(["check", spec, "--backend", "numpy"]) == 0
    assert main(["train", spec, "--data", str(csv), "--backend", "numpy", "--epochs", "1",
                 "--out", str(tmp_path / "m.npz")]) == 0
    model = sn.load(tmp_path / "m.npz")
    assert model.params["bn1.num_batches_tracked"] == 2  # 64 rows in batches of 32
    assert model.predict(X[:64].reshape(64, 1, 8, 8)).shape == (64,)
    capsys.readouterr()
    assert main(["latex", spec, "--text"]) == 0
    assert capsys.readouterr().out == sn.derive(model.network).text() + "\n"
    assert main(["report", spec, "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 0


def test_a_gradient_check_takes_a_relu_after_a_batchnorm() -> None:
    """A batch norm centres each channel at 0, ReLU's kink, and couples the rows: no batch keeps
    every pre-activation away from the kink, so ``sample_point`` (what ``symnn check`` draws)
    keeps the farthest batch and the check steps clear of the kinks entry by entry."""
    x = sn.Input(1, 5, 5)
    h = sn.BatchNorm2d(3, name="bn")(sn.Conv2d(1, 3, 3, padding=1, bias=False, name="conv")(x))
    net = sn.Network(inputs=x, outputs=sn.Dense(75, 3, "softmax", name="fc")(sn.Flatten()(sn.Activate("relu")(h))),
                     loss="cross_entropy", name="relubn")
    params, X, Y = sn.sample_point(net, n=4)
    report = sn.gradcheck(sn.compile(net), params, X, Y)
    assert report.passed and report.n_checked > 0, report

