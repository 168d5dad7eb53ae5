"""Convolution and pooling layers (issue 22) through the public API, on both backends.

Random Conv1d/Conv2d geometries (kernel, stride, padding with PyTorch's asymmetric "same" for
even kernels, dilation, groups up to depthwise, bias on or off) followed by a max, average or
global average pool, Flatten, a Dense and a loss are checked against PyTorch autograd, whose
model is loaded from the same parameter dict (so the parameter layouts are pinned too). Then:
numeric differentiation across max-pool switches (``sn.gradcheck``), the printed derivation
evaluated against the kernel, training on the bundled digits as 8x8 images, the emitted
standalone NumPy module, the errors bad declarations and bad images get, and the parameter
shapes against ``torch.nn``'s.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st

import symnn as sn
from symnn import datasets
from symnn.errors import ConfigError, LayerSizeMismatchError, ShapeError, SpecError, SymnnError

torch = pytest.importorskip("torch")

from tests.layer_graphs import largest, rel_max, run_emitted_numpy  # noqa: E402

F = torch.nn.functional
HAS_CC = bool(shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"))
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
#: largest error relative to the largest entry (of the loss; of the whole gradient), per dtype:
#: the sums here have at most a few hundred terms, so float64 stays ~1e-14 off and float32
#: (unit roundoff 6e-8) ~1e-6. A gradient entry's rounding error is absolute at the scale of the
#: terms it sums, not of the sum: a bias gradient 1e-2 of the largest entry, a sum with
#: cancellation, came out 1.5e-5 off in its own scale in float32 (PyTorch's float32: 7e-6)
TOL = {"float64": 1e-10, "float32": 1e-5}
N_CLASSES = 3


# -- one drawn network: a convolution, a pooling, Flatten, Dense, a loss ---------------------------
@dataclass(frozen=True)
class Case:
    """A network's hyper-parameters, in the forms both symnn and ``torch.nn`` take (an int or a
    tuple of one per spatial axis, ``"same"``/``"valid"``)."""

    size: tuple[int, ...]  # (L,) or (H, W)
    c: int
    o: int
    kernel: object
    stride: object
    padding: object
    dilation: object
    groups: int
    bias: bool
    activation: str
    pool: str  # "max", "avg" or "global"
    pool_kernel: object = 2
    pool_stride: object = None
    pool_padding: object = 0
    pool_dilation: object = 1
    ceil_mode: bool = False
    count_include_pad: bool = True
    loss: str = "cross_entropy"
    l1: float = 0.0
    l2: float = 0.0

    @property
    def rank(self) -> int:
        return len(self.size)

    @property
    def conv_name(self) -> str:
        return f"conv{self.rank}d1"


def _axes(draw, rank: int, lo: int, hi: int) -> object:
    """A size per spatial axis, given as an int when all are equal (both forms get drawn)."""
    values = tuple(draw(st.integers(lo, hi)) for _ in range(rank))
    return values[0] if len(set(values)) == 1 and draw(st.booleans()) else values


@st.composite
def cases(draw) -> Case:
    rank = draw(st.sampled_from([1, 2]))
    c = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))  # groups = c: depthwise
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]), st.integers(0, 2),
                             st.tuples(*[st.integers(0, 2)] * rank)))
    pool = draw(st.sampled_from(["max", "avg", "global"]))
    return Case(
        size=tuple(draw(st.integers(5, 8)) for _ in range(rank)), c=c, o=groups * draw(st.integers(1, 2)),
        kernel=_axes(draw, rank, 1, 4), stride=1 if padding == "same" else _axes(draw, rank, 1, 2),
        padding=padding, dilation=_axes(draw, rank, 1, 2), groups=groups, bias=draw(st.booleans()),
        activation=draw(st.sampled_from(["identity", "relu", "tanh"])), pool=pool,
        pool_kernel=_axes(draw, rank, 1, 3), pool_stride=draw(st.one_of(st.none(), st.just(_axes(draw, rank, 1, 3)))),
        pool_padding=_axes(draw, rank, 0, 1), pool_dilation=_axes(draw, rank, 1, 2) if pool == "max" else 1,
        ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
        loss=draw(st.sampled_from(["cross_entropy", "mse"])),
        l1=draw(st.sampled_from([0.0, 1e-2])), l2=draw(st.sampled_from([0.0, 3e-2])))


#: drawn every run, whatever the random draws: PyTorch's asymmetric "same" (even kernels, one
#: dilated), depthwise without bias into a ceil-mode average pool not counting the padding, a
#: 1-D convolution into a padded, dilated, ceil-mode max pool, and a global average pool
PINNED = [
    Case((6, 7), 2, 4, (2, 4), 1, "same", (1, 3), 1, True, "relu", "max", (2, 3), (2, 2), (1, 1), 1, True,
         loss="mse", l2=3e-2),
    Case((7, 6), 3, 3, 3, (2, 1), 1, 1, 3, False, "tanh", "avg", 3, 2, 1, ceil_mode=True,
         count_include_pad=False, l1=1e-2),
    Case((9,), 2, 4, 3, 1, "same", 2, 2, True, "identity", "max", 3, 2, 1, 2, ceil_mode=True),
    Case((5, 8), 1, 2, (3, 2), 1, "valid", 1, 1, True, "relu", "global"),
]


def build(case: Case, name: str = "cnn") -> sn.Network:
    """The symnn network of ``case`` (raises symnn's error where a layer refuses it)."""
    rank = case.rank
    conv = (sn.Conv2d if rank == 2 else sn.Conv1d)(case.c, case.o, case.kernel, case.stride, case.padding,
                                                   case.dilation, case.groups, case.bias, case.activation)
    x = sn.Input(case.c, *case.size)
    h = conv(x)
    if case.pool == "global":
        h = sn.GlobalAvgPool()(h)
    elif case.pool == "max":
        h = (sn.MaxPool2d if rank == 2 else sn.MaxPool1d)(case.pool_kernel, case.pool_stride, case.pool_padding,
                                                          case.pool_dilation, case.ceil_mode)(h)
    else:
        h = (sn.AvgPool2d if rank == 2 else sn.AvgPool1d)(case.pool_kernel, case.pool_stride, case.pool_padding,
                                                          case.ceil_mode, case.count_include_pad)(h)
    h = sn.Flatten()(h)
    head = sn.Dense(h.shape[0], N_CLASSES, "softmax" if case.loss == "cross_entropy" else "identity")
    return sn.Network(inputs=x, outputs=head(h), loss=case.loss, l1=case.l1, l2=case.l2, name=name)


class TorchCNN(torch.nn.Module):
    """``case`` written with ``torch.nn`` modules; its attributes are named like symnn's layers,
    so its ``state_dict`` keys are symnn's parameter names."""

    def __init__(self, case: Case, features: int) -> None:
        super().__init__()
        rank = case.rank
        conv = (torch.nn.Conv2d if rank == 2 else torch.nn.Conv1d)(
            case.c, case.o, case.kernel, case.stride, case.padding, case.dilation, case.groups, case.bias)
        self.add_module(case.conv_name, conv)
        if case.pool == "global":
            self.pool = torch.nn.AdaptiveAvgPool2d(1) if rank == 2 else torch.nn.AdaptiveAvgPool1d(1)
        elif case.pool == "max":
            self.pool = (torch.nn.MaxPool2d if rank == 2 else torch.nn.MaxPool1d)(
                case.pool_kernel, case.pool_stride, case.pool_padding, case.pool_dilation, ceil_mode=case.ceil_mode)
        else:
            self.pool = (torch.nn.AvgPool2d if rank == 2 else torch.nn.AvgPool1d)(
                case.pool_kernel, case.pool_stride, case.pool_padding, case.ceil_mode, case.count_include_pad)
        self.dense1 = torch.nn.Linear(features, N_CLASSES)
        self.case = case
        self.act = {"identity": lambda t: t, "relu": torch.relu, "tanh": torch.tanh}[case.activation]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.dense1(self.pool(self.act(getattr(self, self.case.conv_name)(x))).flatten(1))
        data = F.cross_entropy(z, y) if self.case.loss == "cross_entropy" else F.mse_loss(z, y)
        weights = [getattr(self, self.case.conv_name).weight, self.dense1.weight]  # never the biases
        return (data + self.case.l2 / 2 * sum((w ** 2).sum() for w in weights)
                + self.case.l1 * sum(w.abs().sum() for w in weights))


def point(net: sn.Network, n: int = 4, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Parameters moved off their initial values (a zero bias would hide a dropped one), images
    (n, *sample shape) and targets for ``net``'s loss."""
    rng = np.random.default_rng(seed)
    params = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in net.init_params(seed=seed + 1).items()}
    X = rng.normal(size=(n, *net.input_shapes[0][1]))
    k = int(net.n_out)
    Y = rng.integers(0, k, n) if net.losses[0].takes_labels else rng.normal(size=(n, k))
    return params, X, Y


def assert_torch_refuses(case: Case) -> None:
    """What symnn refuses, PyTorch refuses too, or computes a maximum over padding alone (-inf,
    the one case symnn refuses that PyTorch runs)."""
    try:
        model = TorchCNN(case, 1).double()
        with torch.no_grad():
            out = model.pool(getattr(model, case.conv_name)(torch.ones(2, case.c, *case.size, dtype=torch.float64)))
    except (RuntimeError, ValueError):
        return
    assert case.pool == "max" and torch.isinf(out).any(), f"symnn refuses what PyTorch computes: {case}"


def torch_loss_and_grad(case: Case, params, X, Y) -> tuple[float, dict[str, np.ndarray]]:
    """PyTorch's loss and gradients, in float64, at symnn's parameters loaded into ``TorchCNN``
    (``load_state_dict(strict=True)``: the names and shapes must be ``torch.nn``'s)."""
    model = TorchCNN(case, params["dense1.weight"].shape[1]).double()
    model.load_state_dict({k: torch.tensor(np.asarray(v, np.float64)) for k, v in params.items()}, strict=True)
    y = torch.tensor(Y) if Y.dtype.kind == "i" else torch.tensor(np.asarray(Y, np.float64))
    loss = model.loss(torch.tensor(np.asarray(X, np.float64)), y)
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in model.named_parameters()}


#: PyTorch's note that its "same" with an even kernel copies the input padded (symnn pads alike)
TORCH_SAME = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def declared(case: Case, name: str = "cnn") -> sn.Network | None:
    """The network of ``case``, or None where a layer refuses the draw: with one of symnn's
    declaration errors, and only what PyTorch refuses too (or the empty max window)."""
    try:
        return build(case, name)
    except SymnnError as exc:
        assert isinstance(exc, SpecError), exc
        assert_torch_refuses(case)
        return None


def check_against_torch(case: Case, net: sn.Network, kernels: dict[str, sn.Kernel]) -> None:
    """The kernels of ``net`` (one per dtype): loss and every gradient against PyTorch autograd."""
    params, X, Y = point(net, n=3 + sum(case.size) % 3)
    for dtype, tol in TOL.items():
        if dtype == "float32":  # a float32 point, so that PyTorch's float64 run sees the same one
            params = {k: v.astype(np.float32) for k, v in params.items()}
            X, Y = X.astype(np.float32), Y if Y.dtype.kind == "i" else Y.astype(np.float32)
        tl, tg = torch_loss_and_grad(case, params, X, Y)
        loss, grads = kernels[dtype].loss_and_grad(params, X, Y)
        assert list(grads) == list(tg) == list(net.param_shapes()), case
        assert abs(loss - tl) <= tol * abs(tl), (dtype, loss, tl, case)
        scale = largest(tg)
        for name, g in grads.items():
            err = rel_max(g, tg[name], scale)
            assert g.shape == tg[name].shape and err <= tol, (dtype, name, err, case)


@TORCH_SAME
@settings(max_examples=15, **SETTINGS)
@given(case=cases())
@example(case=PINNED[0])
@example(case=PINNED[1])
@example(case=PINNED[2])
@example(case=PINNED[3])
def test_numpy_loss_and_gradients_match_torch_autograd(case: Case) -> None:
    net = declared(case)
    if net is None:
        reject()
    check_against_torch(case, net, {dtype: sn.compile(net, dtype=dtype) for dtype in TOL})


@pytest.mark.needs_cc
@TORCH_SAME
@settings(max_examples=1, **SETTINGS)
@given(drawn=st.lists(cases(), min_size=2, max_size=2))
def test_c_loss_and_gradients_match_torch_autograd(drawn: list[Case]) -> None:
    """The pinned cases and two drawn ones, each dtype's networks in one compiler run (about
    1.3 s of compiling a network; the NumPy test above covers the draws)."""
    nets = [(case, declared(case, f"cnn{i}")) for i, case in enumerate(PINNED + drawn)]
    nets = [(case, net) for case, net in nets if net is not None]
    built = {dtype: sn.compile_many([net for _, net in nets], backend="c", dtype=dtype) for dtype in TOL}
    for i, (case, net) in enumerate(nets):
        check_against_torch(case, net, {dtype: kernels[i] for dtype, kernels in built.items()})


# -- numeric differentiation across max-pool switches ------------------------------------------------
def relu_maxpool_cnn() -> sn.Network:
    x = sn.Input(2, 6, 6)
    h = sn.MaxPool2d(2)(sn.Conv2d(2, 3, 3, padding=1, activation="relu")(x))
    h = sn.MaxPool2d(3, stride=1, padding=1)(sn.Conv2d(3, 4, 2, padding=1, activation="relu")(h))  # overlapping
    assert h.shape == (4, 4, 4)
    return sn.Network(inputs=x, outputs=sn.Dense(64, 3, "softmax")(sn.Flatten()(h)), loss="cross_entropy",
                      name="reluconv")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_passes_on_relu_max_pool_cnn(backend: str) -> None:
    net = relu_maxpool_cnn()
    params, X, Y = point(net, n=4, seed=3)
    report = sn.gradcheck(sn.compile(net, backend=backend), params, X, Y)
    assert report.passed and report.checked_anything and report.n_checked > 0, report


def test_gradcheck_on_a_padded_max_pool_warns_nothing() -> None:
    net = relu_maxpool_cnn()  # its second pooling is padded
    params, X, Y = point(net, n=4, seed=3)
    k = sn.compile(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert sn.gradcheck(k, params, X, Y).passed


def near_tie() -> tuple[sn.Network, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A 1x1 convolution into a 2x2 max pool whose two largest taps differ by 1e-6 in every
    sample, at a point where a step of 1e-3 in either weight swaps them: a difference taken
    across the swap measures a chord, not the derivative."""
    x = sn.Input(2, 2, 2)
    h = sn.Flatten()(sn.MaxPool2d(2)(sn.Conv2d(2, 1, 1)(x)))
    net = sn.Network(inputs=x, outputs=sn.Dense(1, 2)(h), loss="mse", name="tie")
    params = {"conv2d1.weight": np.array([1.0, 0.5]).reshape(1, 2, 1, 1), "conv2d1.bias": np.array([0.1]),
              "dense1.weight": np.array([[0.7], [-1.2]]), "dense1.bias": np.array([0.2, -0.3])}
    # sample (2, 2, 2): taps 0 and 1 of the window are 1.0 + 0.5*0.8 = 1.4 and 1.2 + 0.5*0.4 + 1e-6
    first = np.array([[1.0, 1.2], [0.1, -0.5]])
    second = np.array([[0.8, 0.4 + 2e-6], [0.3, 0.2]])
    X = np.stack([np.stack([first, second]) * s for s in (1.0, 2.0, 3.0)])
    Y = np.array([[0.5, -0.5], [1.0, 0.0], [-1.0, 2.0]])
    return net, params, X, Y


def test_gradcheck_steps_clear_of_a_max_pool_switch() -> None:
    """Without the pooling's kink arguments the weights' entries would be judged on a chord
    across the swap (off by about half the two taps' slope difference) and fail."""
    net, params, X, Y = near_tie()
    k = sn.compile(net)
    taps = X[:, 0] * 1.0 + X[:, 1] * 0.5
    gap = np.sort(taps.reshape(3, -1), axis=1)
    assert np.all(gap[:, -1] - gap[:, -2] < 1e-5)  # the switch lies within a difference step
    report = sn.gradcheck(k, params, X, Y, method="central")
    assert report.passed and report.n_checked > 0, report
    assert {p for p, _ in report.shrunk + report.at_kink} >= {"conv2d1.weight"}, report


# -- the printed derivation -----------------------------------------------------------------------
def two_block_cnn() -> sn.Network:
    """Strided padded convolution, relu, max pool, then a grouped convolution and an average pool,
    with L2 over both convolutions' weights."""
    x = sn.Input(2, 8, 7)
    h = sn.MaxPool2d(2, ceil_mode=True)(sn.Conv2d(2, 4, 3, stride=(1, 2), padding=(1, 2), activation="relu")(x))
    h = sn.AvgPool2d(2, stride=1)(sn.Conv2d(4, 4, (2, 1), groups=2, activation="tanh")(h))
    out = sn.Dense(h.shape[0] * h.shape[1] * h.shape[2], 3, "softmax")(sn.Flatten()(h))
    return sn.Network(inputs=x, outputs=out, loss="cross_entropy", l2=1e-2, name="twoblock")


def test_derivation_evaluates_to_the_kernel() -> None:
    net = two_block_cnn()
    params, X, Y = point(net, n=5, seed=4)
    d = sn.derive(net)
    dl, dg = d.evaluate(params, X, Y)
    kl, kg = sn.compile(net).loss_and_grad(params, X, Y)
    assert abs(dl - kl) <= 1e-12 * abs(kl)
    assert list(dg) == list(kg)
    for name in kg:
        assert np.shape(dg[name]) == kg[name].shape and rel_max(dg[name], kg[name], largest(kg)) <= 1e-12, name
    tex = d.latex()
    assert r"\operatorname{conv}" in tex and r"\operatorname{maxpool}" in tex


# -- training on the digits as images --------------------------------------------------------------
@pytest.fixture(scope="module")
def digit_images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """800 digits as (N, 1, 8, 8) images scaled to [0, 1]: 400 to train on, 400 held out."""
    X, y = datasets.load_digits()
    X = (X[:800] / 16.0).reshape(-1, 1, 8, 8)
    return X[:400], y[:400], X[400:], y[400:800]


#: the optimiser digits_cnn trains with (sn.train compiles with it)
ADAM = sn.Adam(lr=1e-2)


def digits_cnn() -> sn.Network:
    x = sn.Input(1, 8, 8)
    h = sn.MaxPool2d(2)(sn.Conv2d(1, 4, 3, padding="same", activation="relu")(x))
    return sn.Network(inputs=x, outputs=sn.Dense(64, 10, "softmax")(sn.Flatten()(h)), loss="cross_entropy",
                      name="digitcnn")


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_lowers_the_loss_on_digit_images(digit_images, backend: str) -> None:
    X, y, X_test, y_test = digit_images
    net = digits_cnn()
    start = net.init_params(seed=0)
    result = sn.train(net, X, y, optimizer=ADAM, epochs=4, batch_size=32, backend=backend,
                      params=start)
    k = result.kernel
    before, after = k.loss(start, X, y), k.loss(result.params, X, y)
    assert after < 0.5 * before, (before, after)  # from about log(10) = 2.3
    assert result.accuracy(X, y) > 0.8 and result.accuracy(X_test, y_test) > 0.6  # chance: 0.1


# -- the emitted standalone NumPy module ----------------------------------------------------------
def test_emitted_numpy_module_matches_the_kernel(tmp_path: Path) -> None:
    net = two_block_cnn()
    params, X, Y = point(net, n=4, seed=5)
    kl, kg = sn.compile(net).loss_and_grad(params, X, Y)
    out = run_emitted_numpy(tmp_path, net, params, X.reshape(len(X), -1), Y)
    assert abs(float(out["L"]) - kl) <= 1e-13 * abs(kl)
    for name in kg:
        assert out[name].shape == kg[name].shape and rel_max(out[name], kg[name], largest(kg)) <= 1e-13, name


# -- bad input: symnn's errors, before any work ------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(4, 1, 8, 7), (4, 8, 8, 1), (4, 2, 8, 8), (4, 63), (4, 1, 64)])
def test_images_of_the_wrong_shape_raise_shape_error(backend: str, shape) -> None:
    """Channels-last (N, H, W, C) of the same size is refused, never read as (N, C, H, W)."""
    net = digits_cnn()
    k = sn.compile(net, backend=backend, optimizer=ADAM)  # the training test's kernel: one C build for both
    params, y = net.init_params(seed=0), np.arange(4)
    with pytest.raises(ShapeError, match="expected X of shape|features"):
        k.loss_and_grad(params, np.zeros(shape), y)
    k.loss_and_grad(params, np.zeros((4, 1, 8, 8)), y)  # the right shape, and its rows, are taken
    k.loss_and_grad(params, np.zeros((4, 64)), y)


def test_groups_must_divide_the_channels() -> None:
    with pytest.raises(ConfigError, match="groups=2 must divide"):
        sn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ConfigError, match="groups=2 must divide"):
        sn.Conv1d(2, 3, 3, groups=2)


def test_same_padding_needs_stride_one() -> None:
    with pytest.raises(ConfigError, match="stride 1"):
        sn.Conv2d(1, 2, 3, stride=2, padding="same")
    with pytest.raises(ConfigError, match="stride 1"):
        sn.Conv1d(1, 2, 3, stride=(2,), padding="same")


def test_kernel_larger_than_the_padded_input() -> None:
    x = sn.Input(1, 5, 5)
    with pytest.raises(LayerSizeMismatchError, match="larger than the padded input"):
        sn.Conv2d(1, 2, 4, dilation=2)(x)  # spans 7 > 5
    with pytest.raises(LayerSizeMismatchError, match="larger than the padded input"):
        sn.Conv1d(1, 2, 7, padding=0)(sn.Input(1, 6))
    sn.Conv1d(1, 2, 7, padding=1)(sn.Input(1, 6))  # 8 >= 7: fits


def test_max_pool_window_wholly_in_padding() -> None:
    """Two positions padded by one on each side, a window of 2 dilated by 3: its one window's
    taps are at -1 and 2, both padding (PyTorch returns -inf there and its backward pass writes
    out of bounds)."""
    with pytest.raises(ConfigError, match="wholly in the padding"):
        sn.MaxPool1d(2, stride=1, padding=1, dilation=3)(sn.Input(1, 2))
    with pytest.raises(ConfigError, match="wholly in the padding"):
        sn.MaxPool2d((1, 2), stride=1, padding=(0, 1), dilation=(1, 3))(sn.Input(2, 3, 2))
    sn.MaxPool1d(2, stride=1, padding=1, dilation=2)(sn.Input(1, 2))  # taps -1, 1: one is inside
    with pytest.raises(ConfigError, match="at most half the window"):
        sn.MaxPool2d(2, padding=2)


def test_a_conv_map_is_not_an_output() -> None:
    x = sn.Input(1, 6, 6)
    y = sn.Conv2d(1, 2, 3)(x)
    with pytest.raises(SpecError, match="sn.Flatten"):
        sn.Network(inputs=x, outputs=y, loss="mse")
    sn.Network(inputs=x, outputs=sn.Flatten()(y), loss="mse")


def test_softmax_is_not_a_convolution_activation() -> None:
    """Refused by the layer itself, by registry name as by sn.Activation."""
    with pytest.raises(SpecError, match="softmax is row-wise"):
        sn.Conv1d(1, 2, 3, activation=sn.Activation.builtin("softmax"))
    with pytest.raises(SpecError, match="softmax is row-wise"):
        sn.Conv2d(1, 2, 3, activation="softmax")


def test_input_of_rank_four() -> None:
    with pytest.raises(SpecError, match="rank 4"):
        sn.Input(1, 2, 8, 8)


# -- parameter layout ------------------------------------------------------------------------------
LAYOUTS = [
    (sn.Conv2d(3, 6, (3, 2), groups=3), torch.nn.Conv2d(3, 6, (3, 2), groups=3), (3, 7, 7)),
    (sn.Conv2d(2, 4, 3, bias=False), torch.nn.Conv2d(2, 4, 3, bias=False), (2, 6, 6)),
    (sn.Conv1d(4, 2, 5, groups=2), torch.nn.Conv1d(4, 2, 5, groups=2), (4, 9)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layer, module, sample", LAYOUTS, ids=["grouped2d", "nobias2d", "grouped1d"])
def test_parameter_shapes_are_torch_nn_shapes(layer, module, sample, backend: str) -> None:
    x = sn.Input(*sample)
    net = sn.Network(inputs=x, outputs=sn.Flatten()(layer(x)), loss="mse", name="layout")
    expected = {f"{'conv2d1' if len(sample) == 3 else 'conv1d1'}.{k}": tuple(v.shape)
                for k, v in module.state_dict().items()}
    assert net.param_shapes() == expected
    assert {k: v.shape for k, v in net.init_params(seed=0).items()} == expected
    k = sn.compile(net, backend=backend)
    params, grads = k.new_params(seed=0), k.new_params()
    assert {n: v.shape for n, v in params.items()} == expected == {n: v.shape for n, v in grads.items()}
    assert all(np.shares_memory(v, params.flat) for v in params.values())
    X = np.random.default_rng(0).normal(size=(3, *sample))
    Y = np.random.default_rng(1).normal(size=(3, int(net.n_out)))
    loss, out = k.loss_and_grad(params, X, Y, out=grads)
    _, fresh = k.loss_and_grad(dict(params), X, Y)
    for n in expected:  # the gradients landed in the 4-D (3-D) views, in torch's layout
        assert out[n].shape == expected[n] and np.array_equal(grads[n], fresh[n]), n
