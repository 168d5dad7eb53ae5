"""Convolution and pooling at symnn's edges (issue 22): ``sn.from_torch`` of an nn.Sequential
CNN and of an fx-traced residual CNN block, ``sn.to_state_dict`` back, TOML specs and model
files of the new layers, and ``symnn train/emit/latex/check`` on a CNN spec.

Every imported network is checked against the module itself: autograd through the module's
own ``forward`` gives the reference loss and gradients (float64, 1e-10: a few hundred roundings
at u = 2**-53 on these sizes), and ``to_state_dict`` must give back exactly
``module.state_dict()``'s keys, shapes and values. Kernels are the NumPy backend's.
"""

from __future__ import annotations

import collections
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn import datasets
from symnn.cli import main
from symnn.errors import ConfigError, SpecError, SpecParseError, SpecTypeError

torch = pytest.importorskip("torch")
#: torch's own note on an even kernel padded "same" (it pads a copy): not symnn's concern
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

from tests.layer_graphs import assert_matches_autograd, ready, rel  # noqa: E402

nn, F = torch.nn, torch.nn.functional
ROOT = Path(__file__).resolve().parents[2]
#: float64 loss and gradients against autograd
TOL = 1e-10


def _lenet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0)), nn.Tanh(),
        nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
        nn.Flatten(), nn.Linear(6 * 5 * 3, 12), nn.ReLU(), nn.Dropout(0.2), nn.Linear(12, 3), nn.Softmax(dim=1))


def test_a_lenet_sequential_matches_autograd() -> None:
    """Conv -> ReLU -> MaxPool -> Conv -> Tanh -> AvgPool -> Flatten -> Linear -> ReLU ->
    Dropout -> Linear -> Softmax: module i is layer _i, the activations fold into the layer
    before them, and the gradients come back under the module's own keys."""
    module = ready(_lenet())
    net, params = sn.from_torch(module, input_shape=(1, 8, 8), name="lenet")
    assert net.graph.names == ("_0", "_2", "_3", "_5", "_6", "_7", "_9", "_10")
    assert [type(layer).__name__ for layer in net.layers] == [
        "Conv2d", "MaxPool2d", "Conv2d", "AvgPool2d", "Flatten", "Dense", "Dropout", "Dense"]
    assert [net.layers[i].activation.name for i in (0, 2, 5, 7)] == ["relu", "tanh", "relu", "softmax"]
    assert list(params) == [f"_{k}" for k in module.state_dict()] and net.loss.name == "cross_entropy"
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(5, 1, 8, 8)), rng.integers(0, 3, 5)
    assert_matches_autograd(module, net, params, X, y, lambda p: F.nll_loss(torch.log(p), torch.tensor(y)), TOL)


class ResCNN(nn.Module):
    """A residual CNN block (conv -> relu -> conv, + skip, relu) between a stem and a global
    average pool, the second conv without bias and padded "same"."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding="same", bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        h = F.relu(h + self.conv2(torch.relu(self.conv1(h))))
        return self.head(torch.flatten(self.pool(h), 1))


def test_a_traced_residual_cnn_block_matches_autograd() -> None:
    module = ready(ResCNN())
    net, params = sn.from_torch(module, input_shape=(2, 5, 6), name="rescnn")
    assert net.graph.names == ("stem", "conv1", "conv2", "add1", "activation1", "pool", "head")
    kinds = {name: type(layer).__name__ for name, layer in zip(net.graph.names, net.layers)}
    assert kinds["pool"] == "GlobalAvgPool" and kinds["activation1"] == "Activate"  # the relu after +
    assert net.layers[1].activation.name == "relu" and net.layers[2].activation.name == "identity"
    assert list(params) == list(module.state_dict()) and net.loss.name == "mse"
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(4, 2, 5, 6)), rng.normal(size=(4, 3))
    assert_matches_autograd(module, net, params, X, Y, lambda out: F.mse_loss(out, torch.tensor(Y)), TOL)
    # the same with input_shapes= and the image given as rows of C*H*W
    net2, _ = sn.from_torch(module, input_shapes=[(2, 5, 6)], name="rescnn")
    assert net2 == net
    assert rel(sn.compile(net).forward(params, X.reshape(4, -1)), module(torch.tensor(X)).detach().numpy()) <= TOL


def _conv1d_sequential() -> nn.Sequential:
    """1-D: an even kernel padded "same" (one more on the right), groups, a strided ceil-mode max
    pool with padding, a global pool by AdaptiveAvgPool1d(1) + Flatten."""
    return nn.Sequential(nn.Conv1d(2, 4, 4, padding="same", groups=2, bias=False), nn.LeakyReLU(0.1),
                         nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True), nn.Conv1d(4, 3, 2, dilation=2),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(3, 2))


def test_a_conv1d_sequential_matches_autograd() -> None:
    module = ready(_conv1d_sequential())
    net, params = sn.from_torch(module, input_shape=(2, 9), name="seq1d")
    assert net.layers[0].padding == (0, 0, 1, 2) and dict(net.layers[0].activation.params) == {"alpha": 0.1}
    assert type(net.layers[3]).__name__ == "GlobalAvgPool" and len(net.layers) == 5  # the Flatten is in it
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(3, 2, 9)), rng.normal(size=(3, 2))
    assert_matches_autograd(module, net, params, X, Y, lambda out: F.mse_loss(out, torch.tensor(Y)), TOL)


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)), None),
    (lambda: nn.Sequential(nn.Linear(5, 4), nn.Identity(), nn.Linear(4, 2)), None),
    (_lenet, (1, 8, 8)), (_conv1d_sequential, (2, 9)), (ResCNN, (2, 5, 6))],
    ids=["linear", "identity", "lenet", "conv1d", "traced"])
def test_to_state_dict_gives_back_the_modules_state_dict(make, shape) -> None:
    """from_torch -> to_state_dict is module.state_dict() (keys in order, shapes, values), and
    from_torch_state_dict reads it back to the same parameters; a fresh module loads it
    strictly and computes the same."""
    module = ready(make())
    net, params = sn.from_torch(module, input_shape=shape)
    state = sn.to_state_dict(net, params)
    assert list(state) == list(module.state_dict())
    for key, value in module.state_dict().items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
    back = sn.from_torch_state_dict(module.state_dict(), net)
    assert list(back) == list(params) and all(np.array_equal(back[k], params[k]) for k in params)
    fresh = make().double().eval()
    fresh.load_state_dict(state)  # strict: every key, nothing more
    X = torch.tensor(np.random.default_rng(4).normal(size=(2, *(shape or (5,)))))
    assert torch.equal(fresh(X), module(X))


class _Body(nn.Module):
    """``forward(x) = body(self, x)`` around ``conv`` (Conv2d(1, 2, 3)) and ``fc``."""

    def __init__(self, body, **modules: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        for name, mod in modules.items():
            self.add_module(name, mod)
        self.body = body

    def forward(self, x):
        return self.body(self, x)


def _flat(m, h):
    return torch.flatten(h, 1)


def _two_flattens(m, x):
    pooled = m.pool(m.conv(x))
    return torch.cat([pooled.flatten(1), torch.flatten(pooled, 1)], 1)


REFUSED = {
    "reflect padding": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten(),
                                              nn.Linear(128, 2)), SpecTypeError, r"'0'.*padding_mode='reflect'"),
    "return_indices": (lambda: nn.Sequential(nn.MaxPool2d(2, return_indices=True), nn.Flatten()),
                       SpecTypeError, r"return_indices=True"),
    "divisor_override": (lambda: nn.Sequential(nn.AvgPool2d(2, divisor_override=3), nn.Flatten()),
                         SpecTypeError, r"divisor_override=3"),
    "adaptive pool to 2x2": (lambda: nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()),
                             SpecTypeError, r"output_size=2.*output_size=1"),
    "adaptive pool without a flatten": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1)),
                                        SpecError, r"AdaptiveAvgPool\(1\) must be followed by nn.Flatten"),
    "flatten of the batch": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(0)),
                             SpecTypeError, r"start_dim=0, end_dim=-1"),
    "torch.flatten(x)": (lambda: _Body(lambda m, x: torch.flatten(m.conv(x))), SpecError,
                         r"flatten\(start_dim=0, end_dim=-1\).*torch.flatten\(x, 1\)"),
    "adaptive pool read twice": (lambda: _Body(_two_flattens, pool=nn.AdaptiveAvgPool2d(1)), SpecError,
                                 r"'pool'.*feed nothing else"),
    "attribute named like a Sequential's layer": (
        lambda: _Body(lambda m, x: m._1(_flat(m, m.conv(x))), _1=nn.Linear(72, 2)), SpecError,
        r"'_1' is the name symnn gives an nn.Sequential's module 1"),
    "a name that is no identifier": (
        lambda: nn.Sequential(collections.OrderedDict([("c;rm -rf", nn.Conv2d(1, 2, 3)), ("f", nn.Flatten())])),
        SpecError, r"cannot name a symnn layer"),
}


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_refusals_name_the_setting(what: str) -> None:
    make, error, message = REFUSED[what]
    with pytest.raises(error, match=message):
        sn.from_torch(make(), input_shape=(1, 8, 8))


def test_the_input_shape_is_asked_for_where_the_module_has_none() -> None:
    with pytest.raises(SpecError, match=r"'input'.*pass input_shape=\(C, H, W\)"):
        sn.from_torch(_lenet())
    with pytest.raises(SpecError, match=r"'x'.*pass input_shape=\(C, H, W\) for a forward of one argument"):
        sn.from_torch(ResCNN())
    with pytest.raises(ConfigError, match="input_shapes= is for a traced module.*input_shape="):
        sn.from_torch(_lenet(), input_shapes=[(1, 8, 8)])
    with pytest.raises(ConfigError, match="not both"):
        sn.from_torch(ResCNN(), input_shape=(2, 5, 6), input_shapes=[(2, 5, 6)])
    with pytest.raises(SpecError, match=r"first Linear reads samples of 5 features: input_shape=\(5,\)"):
        sn.from_torch(nn.Sequential(nn.Linear(5, 2)), input_shape=(1, 5))
    with pytest.raises(SpecTypeError, match="an input shape is a width or a tuple"):
        sn.from_torch(_lenet(), input_shape=(1, 8, 0))
    with pytest.raises(sn.errors.LayerSizeMismatchError, match="expects 1 channels"):
        sn.from_torch(_lenet(), input_shape=(3, 8, 8))
    assert sn.from_torch(nn.Sequential(nn.Linear(5, 2)), input_shape=(5,))[0].graph is None


# -- specs and model files ------------------------------------------------------------------------
def _spatial_net() -> sn.Network:
    """Every new layer, with settings off their defaults: sizes as tuples, an uneven "same"
    padding, 1-D layers (stored with a height of 1)."""
    x = sn.Input(2, 7, 6, name="image")
    h = sn.Conv2d(2, 4, (2, 3), padding="same", dilation=(1, 2), groups=2, activation="relu")(x)
    h = sn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1), ceil_mode=True)(h)
    h = sn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False, name="smooth")(h)
    a = sn.Dense(int(np.prod(h.shape)), 4, "tanh")(sn.Flatten()(h))
    s = sn.Input(3, 10, name="signal")
    g = sn.Conv1d(3, 6, 3, stride=2, padding=1, bias=False, activation="tanh")(s)
    g = sn.AvgPool1d(2)(sn.MaxPool1d(2, stride=1, padding=1)(g))
    g = sn.GlobalAvgPool()(sn.Conv1d(6, 4, 1)(g))
    return sn.Network(inputs=[x, s], outputs=sn.Dense(8, 3, "softmax")(sn.concat([a, g])),
                      loss="cross_entropy", l2=1e-3, name="spatial")


#: (written, tampered): sizes a spec may not hold; each a SpecParseError naming the node and key
BAD_SIZES = [("kernel_size = [2, 3]", "kernel_size = [2, 0]"), ("kernel_size = [3]", 'kernel_size = [3, "a"]'),
             ("kernel_size = [3]", "kernel_size = [[3]]"), ("kernel_size = [3]", "kernel_size = [1, 2, 3]"),
             ("kernel_size = [3]", "kernel_size = [1, 3]")]


def test_a_spec_of_the_new_layers_round_trips() -> None:
    net = _spatial_net()
    text = sn.dumps_spec(net)
    assert 'padding = "same"' in text and "kernel_size = [2, 3]" in text and "kernel_size = [3]" in text
    back = sn.loads_spec(text).network
    assert back == net and sn.dumps_spec(back) == text  # spec -> net -> the same spec
    assert sn.emit_source(back, backend="numpy") == sn.emit_source(net, backend="numpy")
    for written, tampered in BAD_SIZES:
        with pytest.raises(SpecParseError, match="node .*kernel_size"):
            sn.loads_spec(text.replace(written, tampered, 1), "net.toml")


def test_a_trained_cnn_saved_and_loaded_predicts_the_same(tmp_path: Path) -> None:
    X, y = datasets.load_digits()
    images, y = X[:96].reshape(-1, 1, 8, 8), y[:96]
    net = sn.load_spec(ROOT / "examples" / "cnn_digits.toml").network
    res = sn.train(net, images, y, optimizer="adam", epochs=2, batch_size=32, standardize=True, backend="numpy")
    model = sn.load(res.save(tmp_path / "cnn.npz"))
    assert model.network == net
    for name, value in res.params.items():
        assert np.array_equal(model.params[name], value), name
    np.testing.assert_array_equal(model.predict_proba(images), res.predict_proba(images))
    # an image batch (N, 1, 8, 8) and its rows (N, 64) are the same input
    np.testing.assert_array_equal(model.predict(images), model.predict(images.reshape(96, 64)))


# -- the command line -------------------------------------------------------------------------------
def test_the_cli_trains_emits_and_prints_the_cnn_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/cnn_digits.toml: train on a CSV of image rows (64 pixels row-major, then the
    label), emit the NumPy module, print the derivation."""
    X, y = datasets.load_digits()
    csv = tmp_path / "digits.csv"
    np.savetxt(csv, np.column_stack([X[:64], y[:64]]), delimiter=",", fmt="%g")
    spec = str(ROOT / "examples" / "cnn_digits.toml")
    assert main(["train", spec, "--data", str(csv), "--backend", "numpy", "--epochs", "1",
                 "--out", str(tmp_path / "m.npz")]) == 0
    assert "on 64 rows" in capsys.readouterr().out
    model = sn.load(tmp_path / "m.npz")
    assert model.predict(X[:64].reshape(64, 1, 8, 8)).shape == (64,)
    assert main(["emit", spec, "--backend", "numpy", "--out", str(tmp_path / "out")]) == 0
    path = tmp_path / "out" / "cnn_digits.py"
    assert capsys.readouterr().out.split() == [str(path)]
    mod_spec = importlib.util.spec_from_file_location("cnn_digits_emitted", path)
    emitted = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(emitted)
    params = model.network.init_params(seed=0)
    want = sn.compile(model.network, backend="numpy").forward(params, X[:4])
    np.testing.assert_allclose(emitted.forward(params, X[:4]), want, rtol=1e-12, atol=0)
    assert main(["latex", spec, "--text"]) == 0
    assert capsys.readouterr().out == sn.derive(model.network).text() + "\n"


SMALL_CNN = """[network]
name = "small_cnn"
loss = "cross_entropy"
outputs = ["head"]

[[input]]
name = "X"
shape = [1, 4, 4]

[[node]]
id = "conv"
layer = "conv2d"
name = "conv"
in_channels = 1
out_channels = 2
kernel_size = [3, 3]
padding = "same"
activation = "relu"
inputs = ["X"]

[[node]]
id = "pool"
layer = "maxpool2d"
kernel_size = [2, 2]
stride = [2, 2]
inputs = ["conv"]

[[node]]
id = "flat"
layer = "flatten"
inputs = ["pool"]

[[node]]
id = "head"
layer = "dense"
name = "head"
in_features = 8
out_features = 3
activation = "softmax"
inputs = ["flat"]
"""


def test_the_cli_checks_a_cnn_in_both_dtypes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`symnn check` on a CNN with max pooling: float64 against differences, float32 against
    float64. A max pool's window maximum less itself is 0 in both dtypes, which once made every
    row count as within float32 rounding of a kink: nothing compared, NOT CHECKED, status 1."""
    spec = tmp_path / "small_cnn.toml"
    spec.write_text(SMALL_CNN)
    assert main(["check", str(spec), "--backend", "numpy"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["numpy float64", "numpy float32"]
    assert all(": ok: " in line for line in lines) and "left out" not in lines[1]
