"""BatchNorm1d / BatchNorm2d (issue 22, item 3) through the public API, on both backends.

Drawn networks (a Dense or a convolution, the batch norm with drawn eps, momentum, affine and
track_running_stats, an activation, a Dense softmax head) are checked against ``torch.nn``
modules loaded from the same ``state_dict``: loss and gradients against autograd in
``train()`` mode, ``forward`` against ``eval()`` with random running statistics, and a
training step against ``torch.optim`` stepping the module (whose forward in train mode moves
the running statistics). Then: buffers across several steps (SGD, Adam, clipping, weight
decay, dropout), a refused step, frozen layers, numeric differentiation, C against NumPy, the
emitted C trainer, bad declarations and the printed derivation.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import symnn as sn
from symnn.errors import LayerSizeMismatchError, SpecError, SymnnError

torch = pytest.importorskip("torch")

from tests.layer_graphs import largest, rel_max  # noqa: E402

F = torch.nn.functional
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow])
#: largest error relative to the largest entry (of the loss; of the whole gradient; of the
#: output), per dtype. The sums here have at most a few hundred terms and the batch variances
#: are O(1) (normal data), so the normalisation amplifies no rounding: float64 stays ~1e-14
#: off and float32 (unit roundoff 6e-8) ~1e-6; see test_conv_layers.py's TOL
TOL = {"float64": 1e-10, "float32": 1e-5}
#: C against NumPy, float64: the same operations in another order, a few ulps of the scale
SAME = 1e-14
N_CLASSES = 3
BUFFERS = ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked")


# -- one drawn network: a Dense or convolution, the batch norm, an activation, a Dense head --------
@dataclass(frozen=True)
class Case:
    """``kind``: "feat" (BatchNorm1d on (C,) after a Dense), "seq" (BatchNorm1d on (C, L) after a
    Conv1d) or "img" (BatchNorm2d on (C, H, W) after a Conv2d)."""

    kind: str
    cin: int
    c: int
    size: tuple[int, ...]  # () for "feat"
    affine: bool = True
    track: bool = True
    eps: float = 1e-5
    momentum: float | None = 0.1
    activation: str = "tanh"
    pre_bias: bool = True  # the convolution's bias (a Dense always has one)
    n: int = 4
    l2: float = 0.0
    dropout: float = 0.0


@st.composite
def cases(draw) -> Case:
    kind = draw(st.sampled_from(["feat", "seq", "img"]))
    size = {"feat": (), "seq": (draw(st.integers(2, 6)),),
            "img": (draw(st.integers(2, 4)), draw(st.integers(2, 4)))}[kind]
    return Case(kind, draw(st.integers(1, 3)), draw(st.integers(1, 4)), size, draw(st.booleans()),
                draw(st.booleans()), draw(st.sampled_from([1e-5, 1e-3, 0.1])),
                draw(st.sampled_from([0.1, 0.0, 0.7, 1.0, None])), draw(st.sampled_from(["tanh", "relu", "identity"])),
                draw(st.booleans()), draw(st.integers(3 if kind == "feat" else 2, 6)),
                draw(st.sampled_from([0.0, 1e-2])))


#: drawn every run: BatchNorm2d after a biased convolution with relu; BatchNorm1d on sequences
#: without affine, momentum None, eps 1e-3; on features without running statistics, L2; a
#: 2-D one with neither affine nor running statistics on a batch of two
PINNED = [
    Case("img", 2, 3, (4, 3), activation="relu", n=4),
    Case("seq", 2, 2, (5,), affine=False, eps=1e-3, momentum=None, pre_bias=False, n=3),
    Case("feat", 4, 5, (), track=False, eps=0.1, momentum=0.5, n=5, l2=1e-2),
    Case("img", 1, 2, (3, 3), affine=False, track=False, activation="identity", n=2),
]


def build(case: Case, name: str = "bnnet") -> sn.Network:
    x = sn.Input(case.cin, *case.size)
    if case.kind == "feat":
        h = sn.Dense(case.cin, case.c, name="pre")(x)
    else:
        conv = sn.Conv2d if case.kind == "img" else sn.Conv1d
        h = conv(case.cin, case.c, 3, padding=1, bias=case.pre_bias, name="pre")(x)
    bn = (sn.BatchNorm2d if case.kind == "img" else sn.BatchNorm1d)(
        case.c, case.eps, case.momentum, case.affine, case.track, name="bn")
    h = bn(h)
    if case.activation != "identity":
        h = sn.Activate(case.activation)(h)
    if case.kind != "feat":
        h = sn.Flatten()(h)
    if case.dropout:  # after Flatten: see test_dropout_on_a_feature_map_has_a_mask_per_entry
        h = sn.Dropout(case.dropout)(h)
    y = sn.Dense(h.shape[0], N_CLASSES, "softmax", name="fc")(h)
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", l2=case.l2, name=name)


class TorchBN(torch.nn.Module):
    """``case`` in ``torch.nn`` (without the dropout), attributes named like symnn's layers, so
    its ``state_dict`` keys are symnn's parameter names."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        if case.kind == "feat":
            self.pre = torch.nn.Linear(case.cin, case.c)
        else:
            conv = torch.nn.Conv2d if case.kind == "img" else torch.nn.Conv1d
            self.pre = conv(case.cin, case.c, 3, padding=1, bias=case.pre_bias)
        self.bn = (torch.nn.BatchNorm2d if case.kind == "img" else torch.nn.BatchNorm1d)(
            case.c, case.eps, case.momentum, case.affine, case.track)
        self.fc = torch.nn.Linear(case.c * math.prod(case.size), N_CLASSES)
        self.act = {"identity": lambda t: t, "relu": torch.relu, "tanh": torch.tanh}[case.activation]
        self.l2 = case.l2

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.bn(self.pre(x))).flatten(1))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weights = (self.pre.weight, self.fc.weight)  # symnn's L2: weights of Dense and conv only
        return F.cross_entropy(self.logits(x), y) + self.l2 / 2 * sum((w ** 2).sum() for w in weights)


def point(net: sn.Network, case: Case, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Parameters moved off their initial values (weight 1 and bias 0 would hide a dropped
    affine term), random running statistics (variance in [0.5, 2]), a few counted batches,
    images and labels."""
    rng = np.random.default_rng(seed)
    params = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in net.init_params(seed=seed + 1).items()
              if k not in BUFFERS}
    if case.track:
        params.update({"bn.running_mean": rng.normal(size=case.c), "bn.running_var": rng.uniform(0.5, 2, case.c),
                       "bn.num_batches_tracked": np.array(float(rng.integers(0, 5)))})
    params = {k: params[k] for k in net.param_shapes()}
    X = rng.normal(size=(case.n, case.cin, *case.size))
    return params, X, rng.integers(0, N_CLASSES, case.n)


def torch_module(case: Case, params: dict[str, np.ndarray]) -> TorchBN:
    """``TorchBN`` in float64 at ``params`` (``strict=True``: symnn's names, order and shapes
    are ``torch.nn``'s, buffers included)."""
    model = TorchBN(case).double()
    assert list(model.state_dict()) == list(params)
    model.load_state_dict({k: torch.tensor(np.asarray(v, np.float64)) for k, v in params.items()}, strict=True)
    return model


def torch_loss_and_grad(case: Case, params, X, Y) -> tuple[float, dict[str, np.ndarray]]:
    model = torch_module(case, params).train()
    loss = model.loss(torch.tensor(np.asarray(X, np.float64)), torch.tensor(Y))
    loss.backward()
    return float(loss.detach()), {k: p.grad.numpy() for k, p in model.named_parameters()}


def torch_forward(case: Case, params, X) -> np.ndarray:
    model = torch_module(case, params).eval()
    with torch.no_grad():
        return torch.softmax(model.logits(torch.tensor(np.asarray(X, np.float64))), 1).numpy()


def check_against_torch(case: Case, net: sn.Network, kernels: dict[str, sn.Kernel]) -> None:
    """Loss and every gradient against autograd in train(), forward against eval(); the
    buffers' gradients are zeros."""
    params, X, Y = point(net, case, seed=case.n + case.c)
    for dtype, tol in ((d, TOL[d]) for d in TOL if d in kernels):
        if dtype == "float32":  # a float32 point, so that PyTorch's float64 run sees the same one
            params = {k: v.astype(np.float32) for k, v in params.items()}
            X = X.astype(np.float32)
        tl, tg = torch_loss_and_grad(case, params, X, Y)
        loss, grads = kernels[dtype].loss_and_grad(params, X, Y)
        assert list(grads) == list(net.param_shapes()) and list(tg) == list(net.trainable), case
        assert abs(loss - tl) <= tol * abs(tl), (dtype, loss, tl, case)
        scale = largest(tg)
        for name, g in grads.items():
            if name in net.buffers:
                assert g.shape == params[name].shape and not np.any(g), (name, g)
                continue
            err = rel_max(g, tg[name], scale)
            assert g.shape == tg[name].shape and err <= tol, (dtype, name, err, case)
        out, ref = kernels[dtype].forward(params, X), torch_forward(case, params, X)
        assert rel_max(out, ref) <= tol, (dtype, "forward", rel_max(out, ref), case)


def torch_steps(case: Case, params, batches, optimizer: str, **kw) -> dict[str, np.ndarray]:
    """The module's ``state_dict`` after ``torch.optim`` stepped it on ``batches`` in train mode
    (its forward moves the running statistics), with symnn's clipping before the step."""
    model = torch_module(case, params).train()
    clip_norm = kw.pop("clip_norm", None)
    opt = getattr(torch.optim, optimizer)(model.parameters(), **kw)
    for X, Y in batches:
        opt.zero_grad()
        model.loss(torch.tensor(X), torch.tensor(Y)).backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        opt.step()
    return {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}


def assert_state_matches(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], tol: float, what: object) -> None:
    """Every parameter and buffer within ``tol`` of the reference in its own scale; the batch
    count exactly."""
    assert list(ours) == list(ref), what
    for name, v in ours.items():
        if name.endswith("num_batches_tracked"):
            assert float(v) == float(ref[name]), (what, name, v, ref[name])
        else:
            assert rel_max(v, ref[name]) <= tol, (what, name, rel_max(v, ref[name]))


# -- 1, 2: loss, gradients and forward against PyTorch ---------------------------------------------
@settings(max_examples=12, **SETTINGS)
@given(case=cases())
@example(case=PINNED[0])
@example(case=PINNED[1])
@example(case=PINNED[2])
@example(case=PINNED[3])
def test_numpy_loss_gradients_forward_and_a_step_match_torch(case: Case) -> None:
    """Also one SGD step (float64): the parameters and, with momentum (None: the cumulative
    average), the new running statistics and count, as torch's."""
    net = build(case)
    check_against_torch(case, net, {dtype: sn.compile(net, dtype=dtype) for dtype in TOL})
    k = sn.compile(net, optimizer=sn.SGD(lr=0.1))
    params, X, Y = point(net, case, seed=1)
    theta, state = k.pack(params), k.init_state()
    k.train_step(theta, state, X, Y, 1)
    assert_state_matches(dict(k.unpack(theta)), torch_steps(case, params, [(X, Y)], "SGD", lr=0.1), 1e-12, case)


@pytest.mark.needs_cc
def test_c_loss_gradients_and_forward_match_torch() -> None:
    """Two pinned cases (2-D with affine, features without running statistics) in float64 and
    the first in float32, each dtype's networks in one compiler run: the NumPy test above covers
    the draws, and C equals NumPy to 1e-14 below (compiling is most of this test's time)."""
    nets = [(case, build(case, f"bn{i}")) for i, case in enumerate([PINNED[0], PINNED[2]])]
    in32 = (0,)
    k64 = sn.compile_many([net for _, net in nets], backend="c", dtype="float64")
    k32 = dict(zip(in32, sn.compile_many([nets[i][1] for i in in32], backend="c", dtype="float32")))
    for i, (case, net) in enumerate(nets):
        check_against_torch(case, net, {"float64": k64[i], **({"float32": k32[i]} if i in k32 else {})})


# -- 3: training steps: parameters and buffers as torch's ------------------------------------------
#: a CNN whose convolution has no bias: a bias before a batch norm has an exactly zero gradient,
#: whose rounding noise Adam's m / sqrt(v) would blow up to a step of +-lr in either framework
CNN = Case("img", 2, 3, (4, 4), activation="relu", pre_bias=False, n=6, l2=1e-2)
STEPPERS = {  # symnn optimiser, torch.optim's name and arguments
    "sgd": (sn.SGD(lr=0.1), "SGD", dict(lr=0.1)),
    "adam": (sn.Adam(lr=0.05), "Adam", dict(lr=0.05)),
    "adam_clip": (sn.Adam(lr=0.05, clip_norm=0.05), "Adam", dict(lr=0.05, clip_norm=0.05)),
    "adamw": (sn.AdamW(lr=0.05, weight_decay=0.1), "AdamW", dict(lr=0.05, weight_decay=0.1)),
}


@functools.lru_cache(maxsize=None)
def cnn_kernel(backend: str, name: str) -> sn.Kernel:
    """CNN's kernel with one of STEPPERS, compiled once for the tests that share it (a kernel
    keeps no state between calls: theta and the optimiser state are the caller's)."""
    return sn.compile(build(CNN), backend=backend, optimizer=STEPPERS[name][0])


def batches(case: Case, k: int, seed: int = 7) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(1.0, 2.0, size=(case.n, case.cin, *case.size)), rng.integers(0, N_CLASSES, case.n))
            for _ in range(k)]


@pytest.mark.parametrize("backend, name", [("numpy", n) for n in sorted(STEPPERS)] + [
    pytest.param("c", n, marks=pytest.mark.needs_cc) for n in ("adam_clip",)])  # C equals NumPy below, step for step
def test_steps_move_parameters_and_buffers_as_torch(backend: str, name: str) -> None:
    """Four steps on batches of mean 1, variance 4: the running statistics move towards them,
    the count reaches 4, and the clipping norm and the weight decay leave the buffers alone."""
    _, torch_name, kw = STEPPERS[name]
    net = build(CNN)
    k = cnn_kernel(backend, name)
    params, _, _ = point(net, CNN)
    theta, state = k.pack(params), k.init_state()
    data = batches(CNN, 4)
    for step, (X, Y) in enumerate(data, 1):
        k.train_step(theta, state, X, Y, step)
    after = dict(k.unpack(theta))
    assert float(after["bn.num_batches_tracked"]) == float(params["bn.num_batches_tracked"]) + 4
    assert_state_matches(after, torch_steps(CNN, params, data, torch_name, **kw), 1e-10, name)


def test_cumulative_average_on_features_matches_torch() -> None:
    """momentum=None on features after a Dense, from a fresh count: after t batches the running
    mean is the plain average of the t batch means (PyTorch's factor 1/num_batches_tracked).
    (C: test_c_and_numpy_agree_on_forward_gradient_and_steps has a momentum=None batch norm.)"""
    backend = "numpy"
    case = Case("feat", 3, 4, (), momentum=None, n=5)
    net = build(case)
    k = sn.compile(net, backend=backend, optimizer=sn.SGD(lr=0.05))
    params = {**point(net, case)[0], "bn.running_mean": np.zeros(4), "bn.running_var": np.ones(4),
              "bn.num_batches_tracked": np.array(0.0)}
    theta, state = k.pack(params), k.init_state()
    data = batches(case, 3)
    for step, (X, Y) in enumerate(data, 1):
        k.train_step(theta, state, X, Y, step)
    assert_state_matches(dict(k.unpack(theta)), torch_steps(case, params, data, "SGD", lr=0.05), 1e-12, backend)


def reference_buffers(case: Case, params: dict[str, np.ndarray], X: np.ndarray) -> dict[str, np.ndarray]:
    """The buffers after one training batch from ``params``: torch's forward in train mode (the
    dropout comes after the batch norm, so it does not change what the batch norm sees)."""
    model = torch_module(case, params).train()
    with torch.no_grad():
        model.logits(torch.tensor(X))
    return {f"bn.{k}": v.numpy().astype(np.float64) for k, v in model.bn.named_buffers()}


def test_buffers_with_dropout_follow_each_batch() -> None:
    """Dropout after the batch norm: its masks are symnn's own, so the parameters are not
    torch's, but each step's new running statistics are torch's forward at the parameters
    before that step. (C runs the same masks: test_c_and_numpy_agree_on_forward_gradient_and_steps.)"""
    backend = "numpy"
    case = replace(CNN, dropout=0.5)
    net = build(case)
    k = sn.compile(net, backend=backend, optimizer=sn.Adam(lr=0.05))
    params, _, _ = point(net, case)
    theta, state = k.pack(params), k.init_state()
    for step, (X, Y) in enumerate(batches(case, 3), 1):
        before = {n: v.copy() for n, v in k.unpack(theta).items()}
        k.train_step(theta, state, X, Y, step, seed=3)
        after = dict(k.unpack(theta))
        assert_state_matches({n: after[n] for n in BUFFERS}, reference_buffers(case, before, X), 1e-12, step)
        assert float(after["bn.num_batches_tracked"]) == float(params["bn.num_batches_tracked"]) + step


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_step_leaves_the_buffers(backend: str) -> None:
    """An entry of 1e200: its square overflows the batch variance (so the new running variance
    and the gradient); the step is refused and nothing moves, buffers included. (Adam with
    clipping: the kernel the steps test above compiles, in C one compiler run for both.)"""
    net = build(CNN)
    k = cnn_kernel(backend, "adam_clip")
    params, X, Y = point(net, CNN)
    theta, state = k.pack(params), k.init_state()
    X[0, 0, 0, 0] = 1e200
    before = theta.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's overflow on the way to the refusal
        with pytest.raises(sn.NonFiniteError):
            k.train_step(theta, state, X, Y, 1)
    assert np.array_equal(theta, before)
    X[0, 0, 0, 0] = 1.0  # the same kernel then steps, and the buffers move
    k.train_step(theta, state, X, Y, 1)
    assert float(k.unpack(theta)["bn.num_batches_tracked"]) == float(params["bn.num_batches_tracked"]) + 1


def _rebuild(frozen: list[str]) -> sn.Network:
    x = sn.Input(CNN.cin, *CNN.size)
    h = sn.BatchNorm2d(CNN.c, name="bn")(sn.Conv2d(CNN.cin, CNN.c, 3, padding=1, bias=False, name="pre")(x))
    y = sn.Dense(CNN.c * 16, N_CLASSES, "softmax", name="fc")(sn.Flatten()(sn.Activate("relu")(h)))
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", l2=CNN.l2, name="bnfrozen", frozen=frozen)


@pytest.mark.parametrize("backend", BACKENDS)
def test_freezing_the_layer_freezes_weight_and_bias_not_the_statistics(backend: str) -> None:
    """``frozen=["bn"]``: weight and bias, as torch's ``requires_grad=False``; the running
    statistics still follow the batches."""
    net = _rebuild(["bn"])
    assert net.frozen == ("bn.weight", "bn.bias") and net.buffers == BUFFERS
    assert net.trainable == ("pre.weight", "fc.weight", "fc.bias")
    k = sn.compile(net, backend=backend, optimizer=sn.SGD(lr=0.1))
    params, _, _ = point(net, CNN)
    theta, state = k.pack(params), k.init_state()
    data = batches(CNN, 2)
    for step, (X, Y) in enumerate(data, 1):
        k.train_step(theta, state, X, Y, step)
    model = torch_module(CNN, params).train()
    model.bn.weight.requires_grad_(False)
    model.bn.bias.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for X, Y in data:
        opt.zero_grad()
        model.loss(torch.tensor(X), torch.tensor(Y)).backward()
        opt.step()
    ref = {k_: v.detach().numpy().astype(np.float64) for k_, v in model.state_dict().items()}
    after = dict(k.unpack(theta))
    for name in ("bn.weight", "bn.bias"):
        assert np.array_equal(after[name], params[name]), name
    assert_state_matches(after, ref, 1e-12, backend)


@pytest.mark.parametrize("name", list(BUFFERS))
def test_a_buffer_cannot_be_frozen(name: str) -> None:
    with pytest.raises(SpecError, match="running statistic|buffer"):
        _rebuild([name])


def test_dropout_on_a_feature_map_has_a_mask_per_entry() -> None:
    """Dropout on a (C, H, W) map before Flatten, as ``nn.Dropout`` after a convolution."""
    from symnn.graph import dropout_masks

    x = sn.Input(2, 4, 4)
    h = sn.Dropout(0.5)(sn.Activate("relu")(sn.Conv2d(2, 3, 3, padding=1)(x)))
    net = sn.Network(inputs=x, outputs=sn.Dense(48, 3, "softmax")(sn.Flatten()(h)), loss="cross_entropy",
                     name="dropmap")
    assert [width for _, _, width, _ in dropout_masks(net)] == [48]
    k = sn.compile(net, optimizer=sn.SGD(lr=0.1))
    theta, state = k.pack(net.init_params(seed=0)), k.init_state()
    k.train_step(theta, state, np.random.default_rng(0).normal(size=(6, 2, 4, 4)), np.arange(6) % 3, 1)


@pytest.mark.parametrize("count", [np.array(3), np.float64(3.0), np.array(3.0, np.float32)])
def test_the_count_is_taken_as_state_dict_gives_it(count: object) -> None:
    """``state_dict()``'s num_batches_tracked is a 0-d int64 tensor; ``.numpy()`` of it, or a
    count computed as a NumPy scalar, is a value of shape ()."""
    net = build(CNN)
    params, X, Y = point(net, CNN)
    k = sn.compile(net)
    loss, _ = k.loss_and_grad({**params, "bn.num_batches_tracked": count}, X, Y)
    assert loss == k.loss(params, X, Y)


# -- 4: numeric differentiation -------------------------------------------------------------------
def two_bn(l2: float = 1e-2) -> sn.Network:
    """A bias-free convolution, BatchNorm2d (momentum None), tanh, then BatchNorm1d without
    affine on the flattened 60 features, a softmax head: no bias before a batch norm (see
    test_gradcheck_passes_with_a_bias_before_the_batch_norm)."""
    x = sn.Input(2, 4, 3)
    h = sn.BatchNorm2d(3, momentum=None, name="bn")(sn.Conv2d(2, 3, 2, padding=1, bias=False, name="conv")(x))
    h = sn.BatchNorm1d(60, eps=1e-3, affine=False, name="bnf")(sn.Flatten()(sn.Activate("tanh")(h)))
    return sn.Network(inputs=x, outputs=sn.Dense(60, N_CLASSES, "softmax", name="fc")(h), loss="cross_entropy",
                      l2=l2, name="twobn")


def two_bn_point(net: sn.Network, n: int = 5, seed: int = 2):
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(v + (0.3 * rng.normal(size=v.shape) if k.endswith(("weight", "bias", "mean")) else 0.5))
              for k, v in net.init_params(seed=seed).items()}
    return params, rng.normal(size=(n, 2, 4, 3)), rng.integers(0, N_CLASSES, n)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_passes_with_batch_norms(backend: str) -> None:
    """Also numerically: the loss does not depend on the running statistics (zero gradient).
    Without L2: see test_gradcheck_passes_on_a_conv_with_l2."""
    net = two_bn(l2=0.0)
    params, X, Y = two_bn_point(net)
    report = sn.gradcheck(sn.compile(net, backend=backend), params, X, Y)
    assert report.passed and report.checked_anything and report.n_checked > 0, report


def test_gradcheck_passes_with_a_bias_before_the_batch_norm() -> None:
    """The common conv(bias) -> BatchNorm: the bias's gradient is zero in exact arithmetic (the
    batch mean removes it); the kernel returns rounding noise (1e-16), complex step exactly 0."""
    case = Case("feat", 4, 3, (), n=5)
    net = build(case)
    params, X, Y = point(net, case)
    assert sn.gradcheck(sn.compile(net), params, X, Y).passed


def test_gradcheck_passes_on_a_conv_with_l2() -> None:
    """A tanh convolution (smooth: complex step) with L2; passes with l2=0."""
    x = sn.Input(2, 4, 3)
    h = sn.Conv2d(2, 3, 2, padding=1, bias=False, activation="tanh", name="conv")(x)
    net = sn.Network(inputs=x, outputs=sn.Dense(60, 3, "softmax", name="fc")(sn.Flatten()(h)),
                     loss="cross_entropy", l2=1e-2, name="convl2")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 2, 4, 3)), np.arange(5) % 3
    assert sn.gradcheck(sn.compile(net), net.init_params(seed=0), X, Y).passed


# -- 5: C against NumPy ----------------------------------------------------------------------------
@pytest.mark.needs_cc
def test_c_and_numpy_agree_on_forward_gradient_and_steps() -> None:
    """Two batch norms and dropout, float64: forward, loss and gradient, and three Momentum
    steps (parameters, buffers and optimiser state, with the same dropout masks)."""
    x = sn.Input(2, 4, 3)
    h = sn.BatchNorm2d(3, momentum=0.3, name="bn")(sn.Conv2d(2, 3, 2, padding=1, name="conv")(x))
    h = sn.Dropout(0.3)(sn.Dense(60, 4, name="mid")(sn.Flatten()(sn.Activate("relu")(h))))
    h = sn.Activate("tanh")(sn.BatchNorm1d(4, momentum=None, name="bnf")(h))
    net = sn.Network(inputs=x, outputs=sn.Dense(4, N_CLASSES, "softmax", name="fc")(h), loss="cross_entropy",
                     name="cvsnp")
    params, X, Y = two_bn_point(net, n=6)
    kn, kc = (sn.compile(net, backend=b, optimizer=sn.Momentum(lr=0.1, momentum=0.9)) for b in ("numpy", "c"))
    assert rel_max(kc.forward(params, X), kn.forward(params, X)) <= SAME
    (ln, gn), (lc, gc) = kn.loss_and_grad(params, X, Y), kc.loss_and_grad(params, X, Y)
    assert abs(lc - ln) <= SAME * abs(ln)
    for name in gn:
        assert rel_max(gc[name], gn[name], largest(gn)) <= SAME, name
    runs = []
    for k in (kn, kc):
        theta, state = k.pack(params), k.init_state()
        for step in (1, 2, 3):
            k.train_step(theta, state, X * step, Y, step, seed=5)
        runs.append((theta, state))
    (tn, sn_), (tc, sc) = runs
    assert rel_max(tc, tn) <= SAME and rel_max(sc, sn_) <= SAME
    assert float(kc.unpack(tc)["bnf.num_batches_tracked"]) == float(params["bnf.num_batches_tracked"]) + 3


# -- 6: the emitted C trainer ----------------------------------------------------------------------
@pytest.mark.needs_cc
@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_the_emitted_c_trainer_trains_a_batch_norm_cnn(tmp_path: Path) -> None:
    """train_main.c with no Python: the loss falls, and the parameters it writes out have
    counted every batch and running statistics that moved to the data's (finite, variance > 0)."""
    from symnn import datasets

    x = sn.Input(1, 8, 8)
    h = sn.BatchNorm2d(4, name="bn")(sn.Conv2d(1, 4, 3, padding=1, bias=False, name="conv")(x))
    h = sn.MaxPool2d(2)(sn.Activate("relu")(h))
    net = sn.Network(inputs=x, outputs=sn.Dense(64, 10, "softmax", name="fc")(sn.Flatten()(h)),
                     loss="cross_entropy", name="bncnn")
    ship = tmp_path / "c"
    sn.emit(net, ship, backend="c", optimizer=sn.Adam(lr=0.01))
    built = subprocess.run(["make", "-C", str(ship)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    X, y = datasets.load_digits()
    rows = 300
    (tmp_path / "d.csv").write_text("".join(",".join(repr(float(v)) for v in np.append(r / 16.0, t)) + "\n"
                                            for r, t in zip(X[:rows], y[:rows])))
    epochs = 3
    out = subprocess.run([str(ship / "bncnn_train"), str(tmp_path / "d.csv"), str(epochs), str(tmp_path / "p.bin")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    losses = [float(line.split()[3]) for line in out.stdout.splitlines() if line.startswith("epoch ")]
    assert losses[-1] < losses[0], out.stdout
    # it learns: the batch norm's weight starts at 1 (at 0 it would stay at chance, 0.1)
    assert float(out.stdout.split("accuracy")[1].split()[0].strip(":")) > 0.5, out.stdout
    flat = np.fromfile(tmp_path / "p.bin", dtype=np.float64)
    p = {name: flat[lo:hi] for name, lo, hi, _ in net.param_layout()}
    batch = int(next(line.split()[2] for line in (ship / "train_main.c").read_text().splitlines()
                     if line.startswith("#define BATCH")))
    assert float(p["bn.num_batches_tracked"][0]) == epochs * math.ceil(rows / batch)
    assert np.all(np.isfinite(flat)) and np.all(p["bn.running_var"] > 0) and np.any(p["bn.running_mean"] != 0)


# -- 7: bad declarations -----------------------------------------------------------------------------
@pytest.mark.parametrize("layer, shape, match", [
    (sn.BatchNorm2d(3), (2, 5, 5), "BatchNorm2d\\(3\\) applied to samples of 2 channels"),
    (sn.BatchNorm1d(4), (3,), "BatchNorm1d\\(4\\) applied to samples of 3 channels"),
    (sn.BatchNorm1d(2), (3, 7), "BatchNorm1d\\(2\\) applied to samples of 3 channels"),
    (sn.BatchNorm2d(2), (2, 5), "rank 3"),
    (sn.BatchNorm1d(2), (2, 4, 4), "rank 1 or rank 2"),
])
def test_wrong_channels_or_rank_are_refused(layer, shape, match: str) -> None:
    with pytest.raises(LayerSizeMismatchError, match=match):
        layer(sn.Input(*shape))


@pytest.mark.parametrize("kw, match", [
    (dict(eps=0.0), "eps"), (dict(eps=-1e-5), "eps"), (dict(eps=1.0), "eps"), (dict(eps=float("nan")), "eps"),
    (dict(eps=True), "eps"), (dict(eps="1e-5"), "eps"),
    (dict(momentum=-0.1), "momentum"), (dict(momentum=1.5), "momentum"), (dict(momentum=float("nan")), "momentum"),
    (dict(momentum=True), "momentum"), (dict(affine=1), "affine"), (dict(track_running_stats="no"), "track"),
])
@pytest.mark.parametrize("layer", [sn.BatchNorm1d, sn.BatchNorm2d])
def test_bad_hyper_parameters_are_refused(layer, kw: dict, match: str) -> None:
    with pytest.raises(SymnnError, match=match):
        layer(3, **kw)


@pytest.mark.parametrize("c", [0, -2, 2.5, True])
def test_bad_channel_counts_are_refused(c: object) -> None:
    with pytest.raises(SymnnError, match="num_features"):
        sn.BatchNorm2d(c)


# -- 8: the derivation ----------------------------------------------------------------------------
def test_derivation_evaluates_to_the_kernel_and_names_the_statistics() -> None:
    net = two_bn()
    params, X, Y = two_bn_point(net)
    d = sn.derive(net)
    dl, dg = d.evaluate(params, X, Y)
    kl, kg = sn.compile(net).loss_and_grad(params, X, Y)
    assert abs(dl - kl) <= 1e-12 * abs(kl) and list(dg) == list(kg)
    for name in kg:
        assert np.shape(dg[name]) == kg[name].shape and rel_max(dg[name], kg[name], largest(kg)) <= 1e-12, name
    tex = d.latex()
    for named in (r"\mu^{(\mathrm{bn})}", r"\tilde{X}{}^{(\mathrm{bn})}", r"V^{(\mathrm{bn})}",
                  r"R^{(\mathrm{bn})}", r"\hat{X}{}^{(\mathrm{bnf})}", r"\gamma^{(\mathrm{bn})}"):
        assert named in tex, named
    assert "BatchNorm2d(3" in tex and "BatchNorm1d(60" in tex


@pytest.mark.parametrize("momentum", [0.1, None])
def test_the_printed_buffer_updates_are_what_the_train_step_writes(momentum) -> None:
    """The derivation's "training step: the buffers" equations, evaluated from their printed
    form, give the running statistics and count a train step writes (both batch norms, the
    momentum average and the cumulative one), and the LaTeX shows them."""
    x = sn.Input(2, 4, 4)
    h = sn.BatchNorm2d(3, momentum=momentum, name="bn")(sn.Conv2d(2, 3, 3, padding=1, name="conv")(x))
    h = sn.BatchNorm1d(48, name="bnf")(sn.Flatten()(h))
    net = sn.Network(inputs=x, outputs=sn.Dense(48, 4, "softmax", name="fc")(h), loss="cross_entropy",
                     name="bnstate")
    rng = np.random.default_rng(0)
    params = {k: v + (3.0 if k.endswith("num_batches_tracked") else 0.1 * rng.normal(size=v.shape))
              for k, v in net.init_params().items()}
    X, Y = rng.normal(size=(5, 2, 4, 4)), rng.integers(0, 4, 5)
    d = sn.derive(net)
    printed = d.evaluate_state(params, X, Y)
    assert sorted(printed) == sorted(net.buffers)
    k = sn.compile(net, optimizer=sn.SGD(lr=0.1))
    theta = k.pack(params)
    k.train_step(theta, k.init_state(), X, Y, 1)
    written = k.unpack(theta)
    for name, value in printed.items():
        assert rel_max(value, written[name]) <= 1e-14, name
    assert "Training step: the buffers" in d.latex() and r"\bar{\mu}^{(\mathrm{bn})}_{\mathrm{new}}" in d.latex()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_single_value_per_channel_is_refused_clearly_and_train_merges_a_last_row(backend: str) -> None:
    """A batch norm on features sees one value per channel in a batch of one row: its unbiased
    variance is undefined (PyTorch raises). train_step refuses it with a DataError naming the
    layer, before any work; sn.train joins a last batch of one row to the batch before it."""
    x = sn.Input(4)
    h = sn.BatchNorm1d(6, name="bn")(sn.Dense(4, 6, "relu", name="d")(x))
    net = sn.Network(inputs=x, outputs=sn.Dense(6, 3, "softmax", name="fc")(h), loss="cross_entropy",
                     name=f"single_{backend}")
    k = sn.compile(net, backend=backend, optimizer=sn.SGD(lr=0.1))
    theta, state = k.pack(net.init_params(seed=0)), k.init_state()
    before = theta.copy()
    rng = np.random.default_rng(0)
    with pytest.raises(sn.DataError, match="BatchNorm1d bn has a single value per channel"):
        k.train_step(theta, state, rng.normal(size=(1, 4)), np.array([1]), 1)
    assert np.array_equal(theta, before)
    X, y = rng.normal(size=(33, 4)), np.arange(33) % 3
    result = sn.train(net, X, y, epochs=2, batch_size=32, backend=backend, optimizer=sn.SGD(lr=0.1))
    assert np.isfinite(result.history.train_loss).all()
    assert float(result.params["bn.num_batches_tracked"]) == 2  # one batch of 33 rows per epoch
