"""Networks with several inputs and outputs (issue 20's "done when"), end to end.

Two layer graphs: the two-input, two-output network of the issue (an "image" and a "meta" branch
joined by ``sn.concat``, a LayerNorm, a softmax head "cls" with cross-entropy and a linear head
"box" fed by a residual sum, MSE, weighted 1 and 0.5, plus L2), and a residual MLP with LayerNorm
``x -> Dense -> LayerNorm -> Dense(relu) -> + skip -> Dense(softmax)`` (one input, one output,
fed through the same dict API). Each is compiled by both backends in both dtypes and checked
against PyTorch autograd (the same model written with ``nn.Linear``, ``nn.LayerNorm``,
``torch.cat``, ``F.cross_entropy`` and the loss weights, loaded through ``sn.to_state_dict``),
numeric differentiation at ``sample_point``, and the printed derivation; dict and packed calls,
labels and one-hot targets are compared bit for bit; bad declarations and bad call arguments
must be symnn errors raised before any kernel runs; both are trained with the emitted Adam
(``train_step`` on dicts, and ``sn.train``), and emitted as standalone NumPy (imported with
symnn blocked) and C (built with its Makefile and run).

Total loss of the two-output network: ``1.0 * CE(cls) + 0.5 * MSE(box) + l2/2 * sum(W**2)``,
the cross-entropy a mean over N and the MSE a mean over N * 2.

The C kernels are three compiler runs: each network in float64 with the optimiser (those serve
the gradient checks and the training tests), and both networks in float32 in one module.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import symnn as sn
from symnn.errors import (ConfigError, DataError, DTypeError, LabelRangeError, NonFiniteInputError,
                          ShapeError, SpecError, SpecTypeError, SymnnError)

from tests import latex_checks

torch = pytest.importorskip("torch")

from tests.layer_graphs import rel, run_emitted_numpy  # noqa: E402

F = torch.nn.functional
DTYPES = ["float64", "float32"]
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
HAS_CC = bool(shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"))
#: unit roundoff of float64 and float32
U64, U32 = 2.0 ** -53, 2.0 ** -24
L2 = 1e-2
OPT = sn.Adam(lr=1e-2)


# -- the networks ---------------------------------------------------------------------------------
def multi() -> sn.Network:
    """The issue's two-input, two-output network (widths 3 and 2 in, 4 and 2 out, so a swapped
    or shifted block changes shapes), with L2 so that the penalty is seen added once, unweighted."""
    a, m = sn.Input(3, name="image"), sn.Input(2, name="meta")
    h = sn.Dense(3, 8, "tanh")(a)
    g = sn.Dense(2, 8, "relu")(m)
    j = sn.concat([h, g])
    r = sn.LayerNorm(16)(j)
    y1 = sn.Dense(16, 4, "softmax", name="cls")(r)
    y2 = sn.Dense(16, 2, name="box")(r + j)
    return sn.Network(inputs=[a, m], outputs=[y1, y2], loss=["cross_entropy", "mse"],
                      loss_weights=[1.0, 0.5], l2=L2, name="multi_io")


def resmlp() -> sn.Network:
    """x -> Dense -> LayerNorm -> relu (a Dense's: there is no stand-alone activation layer) ->
    + skip -> Dense softmax, cross-entropy."""
    x = sn.Input(5, name="x")
    h = sn.Dense(5, 8)(x)
    r = sn.Dense(8, 8, "relu")(sn.LayerNorm(8)(h))
    y = sn.Dense(8, 3, "softmax")(h + r)
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", name="resmlp")


class TorchMulti(torch.nn.Module):
    """``multi`` in PyTorch; attributes named like the layers, so ``state_dict`` keys are symnn's."""

    def __init__(self) -> None:
        super().__init__()
        self.dense1 = torch.nn.Linear(3, 8)
        self.dense2 = torch.nn.Linear(2, 8)
        self.layernorm1 = torch.nn.LayerNorm(16)
        self.cls = torch.nn.Linear(16, 4)
        self.box = torch.nn.Linear(16, 2)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits of "cls" (softmax is in the loss) and the "box" output."""
        j = torch.cat([torch.tanh(self.dense1(x["image"])), torch.relu(self.dense2(x["meta"]))], dim=1)
        r = self.layernorm1(j)
        return {"cls": self.cls(r), "box": self.box(r + j)}

    def loss(self, x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self(x)
        weights = (self.dense1.weight, self.dense2.weight, self.cls.weight, self.box.weight)
        penalty = L2 / 2 * sum((w ** 2).sum() for w in weights)
        return (1.0 * F.cross_entropy(out["cls"], y["cls"]) + 0.5 * F.mse_loss(out["box"], y["box"])
                + penalty)


class TorchResMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense1 = torch.nn.Linear(5, 8)
        self.layernorm1 = torch.nn.LayerNorm(8)
        self.dense2 = torch.nn.Linear(8, 8)
        self.dense3 = torch.nn.Linear(8, 3)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.dense1(x["x"])
        return {"dense3": self.dense3(h + torch.relu(self.dense2(self.layernorm1(h))))}

    def loss(self, x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self(x)["dense3"], y["dense3"])


#: name -> (builder, its PyTorch twin)
NETS: dict[str, tuple[Callable[[], sn.Network], Callable[[], torch.nn.Module]]] = {
    "multi_io": (multi, TorchMulti), "resmlp": (resmlp, TorchResMLP)}
NAMES = sorted(NETS)


def case(name: str, n: int = 7, seed: int = 0):
    """``(net, params, X, Y)`` with X and Y dicts keyed by the network's input and output names:
    parameters moved off their initial values (LayerNorm's weight 1 and bias 0 would hide a
    dropped affine term), normal inputs, integer labels for cross-entropy outputs."""
    net = NETS[name][0]()
    rng = np.random.default_rng(seed)
    p = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in net.init_params(seed=seed + 1).items()}
    X = {k: rng.normal(size=(n, int(w))) for k, w in zip(net.input_names, net.input_widths)}
    Y = {k: rng.integers(0, int(w), n) if loss.takes_labels else rng.normal(size=(n, int(w)))
         for k, w, loss in zip(net.output_names, net.output_widths, net.losses)}
    return net, p, X, Y


def one_hot(net: sn.Network, Y: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``Y`` with every label array written as one-hot rows."""
    return {k: np.eye(int(w))[Y[k]] if Y[k].ndim == 1 else Y[k]
            for k, w in zip(net.output_names, net.output_widths)}


def packed(net: sn.Network, X: dict[str, np.ndarray],
           Y: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The layout the emitted code takes, written out independently of symnn: inputs side by side
    in the order of ``inputs=``, targets (class labels one-hot) in the order of ``outputs=``."""
    Yh = one_hot(net, Y)
    return (np.concatenate([X[k] for k in net.input_names], axis=1),
            np.concatenate([Yh[k] for k in net.output_names], axis=1))


def torch_loss_and_grad(name: str, net: sn.Network, p, X, Y) -> tuple[float, dict[str, np.ndarray], dict]:
    """Loss, gradients (keyed like ``net.param_shapes()``) and outputs of the PyTorch twin at ``p``."""
    module = NETS[name][1]().double()
    as64 = {k: np.asarray(v, np.float64) for k, v in p.items()}
    module.load_state_dict(sn.to_state_dict(net, as64), strict=True)
    tx = {k: torch.tensor(np.asarray(v, np.float64)) for k, v in X.items()}
    ty = {k: torch.tensor(v if v.dtype.kind == "i" else np.asarray(v, np.float64)) for k, v in Y.items()}
    loss = module.loss(tx, ty)
    loss.backward()
    with torch.no_grad():
        out = module(tx)
    probs = {k: (torch.softmax(v, dim=1) if loss_.takes_labels else v).numpy()
             for (k, v), loss_ in zip(out.items(), net.losses)}
    return float(loss.detach()), {k: v.grad.numpy() for k, v in module.named_parameters()}, probs


def _up(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float arrays in float64 (labels as they are)."""
    return {k: v if v.dtype.kind == "i" else v.astype(np.float64) for k, v in values.items()}


def outputs_as_dict(net: sn.Network, out) -> dict[str, np.ndarray]:
    return out if isinstance(out, dict) else {net.output_names[0]: out}


# -- kernels: built once ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kernels() -> dict[tuple[str, str], dict[str, sn.Kernel]]:
    """``{(backend, dtype): {name: kernel}}``; the float64 kernels carry ``train_step`` (Adam)."""
    out: dict[tuple[str, str], dict[str, sn.Kernel]] = {}
    for dtype in DTYPES:
        opt = OPT if dtype == "float64" else None
        out["numpy", dtype] = {n: sn.compile(NETS[n][0](), dtype=dtype, optimizer=opt) for n in NAMES}
    if HAS_CC:
        out["c", "float64"] = {n: sn.compile(NETS[n][0](), backend="c", optimizer=OPT) for n in NAMES}
        out["c", "float32"] = dict(zip(NAMES, sn.compile_many([NETS[n][0]() for n in NAMES], backend="c",
                                                              dtype="float32")))
    return out


def test_names_and_widths_of_inputs_and_outputs() -> None:
    net = multi()
    assert net.input_names == ("image", "meta") and net.output_names == ("cls", "box")
    assert [int(w) for w in net.input_widths] == [3, 2] and [int(w) for w in net.output_widths] == [4, 2]
    assert net.loss_weights == (1.0, 0.5) and [loss.name for loss in net.losses] == ["cross_entropy", "mse"]
    assert list(net.param_shapes()) == list(TorchMulti().state_dict())
    assert resmlp().input_names == ("x",) and resmlp().output_names == ("dense3",)
    assert list(resmlp().param_shapes()) == list(TorchResMLP().state_dict())


# -- 1. against PyTorch autograd -------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_float64_matches_torch_autograd(kernels, name: str, backend: str) -> None:
    """Both sides compute each value along paths of a few tens of rounded operations (at most 4
    layers, each a product with sums of at most 16 terms, LayerNorm's two row reductions, the
    softmax) and then sum over the 7 rows; by the usual forward error bounds (Higham's
    gamma_n = n u / (1 - n u)) each side is within about 100 u of the exact value, times the
    conditioning of these sums (the terms' magnitude over the result's: O(10) at random points,
    where gradients partly cancel over rows). 2**12 u = 4.5e-13 covers both sides with room
    (measured: at most 11 u over 20 seeds) and is tighter than the contract's 1e-10; a wrong
    wiring, a dropped term or a wrong weight is off by more than 1e-3."""
    net, p, X, Y = case(name)
    k = kernels[backend, "float64"][name]
    L, g = k.loss_and_grad(p, X, Y)
    tL, tg, tout = torch_loss_and_grad(name, net, p, X, Y)
    tol = 2 ** 12 * U64
    assert list(g) == list(tg) == list(net.param_shapes())
    assert abs(L - tL) <= tol * abs(tL)
    for key in tg:
        assert g[key].shape == tg[key].shape and rel(g[key], tg[key]) <= tol, key
    out = outputs_as_dict(net, k.forward(p, X))
    assert list(out) == list(net.output_names)
    for key in out:
        assert rel(out[key], tout[key]) <= tol, key


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_float32_is_within_1e_5_of_the_float64_gradient(kernels, name: str, backend: str) -> None:
    """The float32 kernel against the float64 one at the same float32-rounded point, so only the
    arithmetic differs; the contract's 1e-5 (about 170 u of float32) norm-wise per tensor."""
    net, p, X, Y = case(name)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    X32 = {k: v.astype(np.float32) for k, v in X.items()}
    Y32 = {k: v if v.dtype.kind == "i" else v.astype(np.float32) for k, v in Y.items()}
    L32, g32 = kernels[backend, "float32"][name].loss_and_grad(p32, X32, Y32)
    L64, g64 = kernels[backend, "float64"][name].loss_and_grad(_up(p32), _up(X32), _up(Y32))
    assert abs(L32 - L64) <= 1e-5 * abs(L64)
    for key in g64:
        assert g32[key].dtype == np.float32 and rel(g32[key], g64[key]) <= 1e-5, key
    out32 = outputs_as_dict(net, kernels[backend, "float32"][name].forward(p32, X32))
    assert all(v.dtype == np.float32 for v in out32.values())


# -- 2. numeric differentiation -------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_passes_at_the_sample_point(kernels, name: str, backend: str) -> None:
    net = NETS[name][0]()
    p, X, Y = sn.sample_point(net)
    assert X.shape[1] == int(net.n_in) and (Y.ndim == 1 or Y.shape[1] == int(net.n_out))
    report = sn.gradcheck(kernels[backend, "float64"][name], p, X, Y)
    assert report.passed, str(report)
    assert report.max_rel_error <= 1e-7


# -- 3. dicts, packed arrays, labels --------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_dict_and_packed_calls_are_bitwise_equal(kernels, name: str, backend: str) -> None:
    """A dict is packed into the layout the emitted code takes; the same kernel on the same bytes
    gives the same bits."""
    net, p, X, Y = case(name, seed=1)
    k = kernels[backend, "float64"][name]
    Xp, Yp = packed(net, X, Y)
    Yh = one_hot(net, Y)
    np.testing.assert_array_equal(k.inputs(X), Xp)
    np.testing.assert_array_equal(k.targets(Yh, Xp.shape[0]), Yp)
    Ld, gd = k.loss_and_grad(p, X, Yh)
    Lp, gp = k.loss_and_grad(p, Xp, Yp)
    assert Ld == Lp and k.loss(p, X, Yh) == k.loss(p, Xp, Yp) == Lp
    for key in gp:
        np.testing.assert_array_equal(gd[key], gp[key])
    fd, fp = outputs_as_dict(net, k.forward(p, X)), outputs_as_dict(net, k.forward(p, Xp))
    for key in net.output_names:
        np.testing.assert_array_equal(fd[key], fp[key])
    # the packed output is the outputs side by side, in the order of outputs=
    assert sum(v.shape[1] for v in fd.values()) == int(net.n_out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_labels_and_one_hot_targets_agree(kernels, name: str, backend: str) -> None:
    """With several outputs, labels become the one-hot rows of the packed Y (bitwise the same
    call); with one output they take the labels kernel, a different sum over the same terms:
    only each row's true-class term is nonzero in ``sum(y * log p)``, so they agree to a few u."""
    net, p, X, Y = case(name, seed=2)
    k = kernels[backend, "float64"][name]
    Ll, gl = k.loss_and_grad(p, X, Y)
    Lh, gh = k.loss_and_grad(p, X, one_hot(net, Y))
    tol = 0.0 if net.several_outputs else 64 * U64
    assert abs(Ll - Lh) <= tol * abs(Lh)
    for key in gh:
        assert rel(gl[key], gh[key]) <= tol, key


# -- 4. bad declarations and bad arguments: symnn errors before any work ---------------------------
def _heads(**kw) -> sn.Network:
    a = sn.Input(3, name="a")
    h = sn.Dense(3, 4, "tanh")(a)
    outs = [sn.Dense(4, 2, name="p")(h), sn.Dense(4, 1, name="q")(h)]
    pick = kw.pop("outputs", lambda o: o)
    return sn.Network(inputs=a, outputs=pick(outs), **{"loss": ["mse", "mse"], **kw})


def _unnamed_inputs() -> sn.Network:
    a, b = sn.Input(3), sn.Input(2)
    return sn.Network(inputs=[a, b], outputs=[sn.Dense(3, 2)(a), sn.Dense(2, 1)(b)], loss=["mse", "mse"])


BAD_DECLARATIONS = {
    "more losses than outputs": (lambda: _heads(loss=["mse"] * 3), SpecError, "3 losses for 2 output"),
    "fewer losses than outputs": (lambda: _heads(loss=["mse"]), SpecError, "1 losses for 2 output"),
    "one loss for several outputs": (lambda: _heads(loss="mse"), SpecError, "one loss per output"),
    "loss_weights too short": (lambda: _heads(loss_weights=[1.0]), SpecError, "1 weights for 2 output"),
    "loss_weights too long": (lambda: _heads(loss_weights=[1.0] * 3), SpecError, "3 weights for 2 output"),
    "a negative loss weight": (lambda: _heads(loss_weights=[1.0, -0.5]), ConfigError, "-0.5"),
    "a NaN loss weight": (lambda: _heads(loss_weights=[float("nan"), 1.0]), ConfigError, "nan"),
    "an infinite loss weight": (lambda: _heads(loss_weights=[float("inf"), 1.0]), ConfigError, "inf"),
    "loss_weights not a list": (lambda: _heads(loss_weights="ab"), SpecTypeError, "list of numbers"),
    "all loss weights zero": (lambda: _heads(loss_weights=[0.0, 0]), ConfigError, "all zero"),
    "loss_weights on a Sequential network": (
        lambda: sn.Network([sn.Dense(3, 2)], loss="mse", loss_weights=[1.0]), SpecError, "Sequential"),
    "an output listed twice": (lambda: _heads(outputs=lambda o: [o[0], o[0]]), SpecError, "listed twice"),
    "several unnamed inputs": (_unnamed_inputs, SpecError, "needs each sn.Input(..., name=...)"),
}


@pytest.mark.parametrize("what", sorted(BAD_DECLARATIONS))
def test_bad_declarations_are_refused(what: str) -> None:
    make, error, fragment = BAD_DECLARATIONS[what]
    with pytest.raises(error) as info:
        make()
    assert fragment in str(info.value)
    assert issubclass(error, SymnnError)


def test_good_loss_weights_are_kept_and_weigh_the_losses() -> None:
    """The weighted total is the weighted sum of the one-output networks' losses (one zero weight
    is allowed: that head is then not trained), so the weights neither swap nor drop."""
    rng = np.random.default_rng(0)
    nets = {w: _heads(loss_weights=list(w)) for w in [(1.0, 0.0), (0.0, 1.0), (0.25, 3.0)]}
    p = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in nets[1.0, 0.0].init_params(seed=1).items()}
    X, Y = {"a": rng.normal(size=(6, 3))}, {"p": rng.normal(size=(6, 2)), "q": rng.normal(size=(6, 1))}
    losses = {w: sn.compile(net).loss(p, X, Y) for w, net in nets.items()}
    assert nets[0.25, 3.0].loss_weights == (0.25, 3.0)
    both = 0.25 * losses[1.0, 0.0] + 3.0 * losses[0.0, 1.0]
    assert abs(losses[0.25, 3.0] - both) <= 16 * U64 * abs(both)


class _Tripwire:
    """Stands in for a kernel's compiled module: any use of it fails the test."""

    def __getattr__(self, name: str) -> Callable[..., object]:
        def ran(*args: object) -> object:
            raise AssertionError(f"the kernel ran ({name}) before the arguments were refused")
        return ran


def _bad_calls(X: dict, Y: dict) -> dict[str, tuple[object, object, type, str]]:
    """``what -> (X, Y, error, fragment)`` for the two-output network, from a good (X, Y)."""
    Xp = np.concatenate([X["image"], X["meta"]], axis=1)
    Yp = np.concatenate([np.eye(4)[Y["cls"]], Y["box"]], axis=1)
    bad_packed = Yp.copy()
    bad_packed[0, :4] = 0.7  # a "cls" row that is not a probability row
    return {
        "X lacks an input": ({"image": X["image"]}, Y, ShapeError, "missing ['meta']"),
        "X has an unexpected key": ({**X, "other": X["meta"]}, Y, ShapeError, "unexpected"),
        "Y lacks an output": (X, {"cls": Y["cls"]}, ShapeError, "missing ['box']"),
        "Y has an unexpected key": (X, {**Y, "boxes": Y["box"]}, ShapeError, "unexpected"),
        "inputs disagree on rows": ({"image": X["image"], "meta": X["meta"][:-1]}, Y, ShapeError, "rows"),
        "labels disagree with X on rows": (X, {**Y, "cls": Y["cls"][:-1]}, ShapeError, "labels for"),
        "box targets disagree with X on rows": (X, {**Y, "box": Y["box"][:-1]}, ShapeError, "Y['box']"),
        "an input of the wrong width": ({**X, "meta": X["image"]}, Y, ShapeError, "X['meta']"),
        "a label out of range": (X, {**Y, "cls": np.where(np.arange(len(Y["cls"])) == 2, 4, Y["cls"])},
                                 LabelRangeError, "Y['cls']: label 4 at row 2"),
        "a negative label": (X, {**Y, "cls": -np.ones_like(Y["cls"])}, LabelRangeError, "Y['cls']"),
        "labels for a regression output": (X, {**Y, "box": Y["cls"]}, ShapeError, "Y['box']"),
        "one-hot rows that do not sum to 1": (X, {**Y, "cls": np.full((len(Y["cls"]), 4), 0.7)}, DataError,
                                              "Y['cls']"),
        "packed Y with a bad cls block": (Xp, bad_packed, DataError, "output 'cls'"),
        "packed X of the wrong width": (Xp[:, :4], Yp, ShapeError, "4 features"),
        "X as a list": ([X["image"], X["meta"]], Y, DTypeError, "dict keyed by ['image', 'meta']"),
        "a non-finite input": ({**X, "meta": np.where(X["meta"] > 0, np.nan, X["meta"])}, Y,
                               NonFiniteInputError, "X['meta']"),
    }


BAD_CALLS = sorted(_bad_calls({"image": np.zeros((3, 3)), "meta": np.zeros((3, 2))},
                              {"cls": np.zeros(3, int), "box": np.zeros((3, 2))}))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("what", BAD_CALLS)
def test_bad_arguments_are_refused_before_the_kernel_runs(kernels, monkeypatch, what: str,
                                                          backend: str) -> None:
    net, p, X, Y = case("multi_io")
    bad_x, bad_y, error, fragment = _bad_calls(X, Y)[what]
    k = kernels[backend, "float64"]["multi_io"]
    theta, state = k.pack(p), k.init_state()
    before = theta.copy()
    monkeypatch.setattr(k, "module", _Tripwire())
    for call in (lambda: k.loss_and_grad(p, bad_x, bad_y), lambda: k.loss(p, bad_x, bad_y),
                 lambda: k.train_step(theta, state, bad_x, bad_y, 1)):
        with pytest.raises(error) as info:
            call()
        assert fragment in str(info.value), str(info.value)
    assert np.array_equal(theta, before) and not state.any()


def _bce_heads() -> sn.Network:
    a, b = sn.Input(3, name="a"), sn.Input(2, name="b")
    h = sn.concat([sn.Dense(3, 4, "tanh")(a), sn.Dense(2, 4, "tanh")(b)])
    outs = [sn.Dense(8, 2, "sigmoid", name="flags")(h), sn.Dense(8, 1, name="size")(h)]
    return sn.Network(inputs=[a, b], outputs=outs, loss=["bce", "mse"], name="bce_heads")


def test_each_output_checks_its_own_loss_targets(monkeypatch) -> None:
    """BCE targets outside [0, 1] are refused for the BCE head, whether in a dict or in its
    columns of a packed Y; the MSE head takes any real target."""
    net = _bce_heads()
    k = sn.compile(net)
    rng = np.random.default_rng(0)
    p = net.init_params(seed=0)
    X = {"a": rng.normal(size=(5, 3)), "b": rng.normal(size=(5, 2))}
    Y = {"flags": rng.integers(0, 2, (5, 2)).astype(float), "size": 10 * rng.normal(size=(5, 1))}
    assert np.isfinite(k.loss(p, X, Y))
    monkeypatch.setattr(k, "module", _Tripwire())
    with pytest.raises(DataError, match=r"Y\['flags'\]"):
        k.loss(p, X, {**Y, "flags": Y["flags"] + 0.5})
    Yp = np.concatenate([Y["flags"], Y["size"]], axis=1)
    Yp[3, 1] = -0.25
    with pytest.raises(DataError, match="output 'flags'"):
        k.loss(p, np.concatenate([X["a"], X["b"]], axis=1), Yp)


@pytest.mark.parametrize("backend", [
    "numpy",
    pytest.param("c", marks=pytest.mark.needs_cc),
])
def test_train_step_refuses_a_dict_entry_that_aliases_theta(kernels, backend: str) -> None:
    """The aliasing rule (theta and state must not overlap X or Y; DataError on both backends,
    theta unchanged) holds when X comes in a dict: a one-input network's dict entry is used
    without a copy."""
    net, p, X, Y = case("resmlp", n=4)
    k = kernels[backend, "float64"]["resmlp"]
    theta, state = k.pack(p), k.init_state()
    view = theta[:20].reshape(4, 5)
    before = theta.copy()
    with pytest.raises(DataError, match="overlap"):
        k.train_step(theta, state, {"x": view}, Y, 1)
    assert np.array_equal(theta, before)


# -- 5. training -----------------------------------------------------------------------------------
def _task(name: str, n: int = 48):
    """A small learnable problem on dicts: classes by the largest of some input features, box
    targets a linear function of the inputs."""
    rng = np.random.default_rng(7)
    if name == "resmlp":
        X = {"x": rng.normal(size=(n, 5))}
        return X, {"dense3": X["x"][:, :3].argmax(axis=1)}
    X = {"image": rng.normal(size=(n, 3)), "meta": rng.normal(size=(n, 2))}
    cls = np.concatenate([X["image"], X["meta"][:, :1]], axis=1).argmax(axis=1)
    box = np.stack([X["image"][:, 0] + X["meta"][:, 1], 0.5 * X["image"][:, 1] - X["meta"][:, 0]], axis=1)
    return X, {"cls": cls, "box": box}


def _trajectory(k: sn.Kernel, name: str, steps: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Losses of ``steps`` full-batch Adam steps (``train_step`` on dicts) and the final theta."""
    X, Y = _task(name)
    theta = k.pack(k.network.init_params(seed=0))
    state = k.init_state()
    losses = np.array([k.train_step(theta, state, X, Y, step) for step in range(1, steps + 1)])
    return losses, theta


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_train_step_on_dicts_lowers_the_loss(kernels, name: str, backend: str) -> None:
    losses, theta = _trajectory(kernels[backend, "float64"][name], name)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(theta))
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.needs_cc
@pytest.mark.parametrize("name", NAMES)
def test_both_backends_train_the_same_trajectory(kernels, name: str) -> None:
    """Same emitted Adam, same data: the backends differ only in rounding (summation order). Each
    step's loss and update carry O(10) u of it, and 50 steps of Adam at lr 1e-2 amplify it
    mildly (measured: 2e-14 at worst); 1e-10 (~10^6 u) leaves room for that growth and is far
    below what a difference in the formulas (a moment, a bias correction, a weight) makes."""
    Ln, tn = _trajectory(kernels["numpy", "float64"][name], name)
    Lc, tc = _trajectory(kernels["c", "float64"][name], name)
    np.testing.assert_allclose(Lc, Ln, rtol=1e-10, atol=0)
    assert rel(tc, tn) <= 1e-10


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_sn_train_takes_dicts(kernels, name: str, backend: str) -> None:
    """``sn.train`` on dicts fits the task and is the same run, bit for bit, as on packed arrays."""
    k = kernels[backend, "float64"][name]
    X, Y = _task(name)
    res = sn.train(k.network, X, Y, kernel=k, epochs=15, batch_size=16, seed=0)
    losses = res.history.train_loss
    assert all(np.isfinite(losses)) and losses[-1] < 0.6 * losses[0], losses
    Xp, Yp = packed(k.network, X, Y)
    again = sn.train(k.network, Xp, Yp if k.network.several_outputs else Y[k.network.output_names[0]],
                     kernel=k, epochs=15, batch_size=16, seed=0)
    assert again.history.train_loss == losses
    for key in res.params:
        np.testing.assert_array_equal(res.params[key], again.params[key])
    probs = outputs_as_dict(k.network, res.predict_proba(X))
    labels = Y[k.network.output_names[0]]
    first = probs[k.network.output_names[0]]
    assert (first.argmax(axis=1) == labels).mean() >= 0.75



@pytest.mark.parametrize("backend", BACKENDS)
def test_standardised_training_predicts_from_dicts(kernels, tmp_path: Path, backend: str) -> None:
    """With standardize=True the statistics are taken in the packed layout; predicting from a
    dict of inputs (the result, and the model saved and loaded) standardises it the same way."""
    k = kernels[backend, "float64"]["multi_io"]
    X, Y = _task("multi_io")
    res = sn.train(k.network, X, Y, kernel=k, epochs=3, batch_size=16, seed=0, standardize=True)
    Xp, _ = packed(k.network, X, Y)
    direct = outputs_as_dict(k.network, k.forward(res.params, res.standardizer.transform(Xp)))
    for got in (res.predict_proba(X), sn.load(res.save(tmp_path / "m")).predict_proba(X, backend=backend)):
        got = outputs_as_dict(k.network, got)
        assert set(got) == set(direct)
        for key in direct:
            np.testing.assert_array_equal(got[key], direct[key])


# -- 6. the printed derivation ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_the_printed_derivation_computes_what_the_kernel_does(kernels, name: str, backend: str) -> None:
    net, p, X, Y = case(name, seed=3)
    L, g = kernels[backend, "float64"][name].loss_and_grad(p, X, Y)
    d = sn.derive(net)
    for x, y in ((X, Y), packed(net, X, Y)):
        dL, dg = d.evaluate(p, x, y)
        assert abs(float(dL) - L) <= 64 * U64 * abs(L)
        assert set(dg) == set(g)
        for key in g:
            assert rel(dg[key], g[key]) <= 1e-12, key


def test_the_derivation_prints_each_output_loss_and_the_weighted_total() -> None:
    d = sn.derive(multi())
    doc = d.latex()
    for out in ("cls", "box"):
        assert r"L^{(\mathrm{%s})}" % out in doc, out
    # the total: cls weighted 1, box 0.5 (SymPy orders the terms as it likes), then the L2 lines
    totals = [line for line in doc.splitlines() if line.startswith("L &= ")]  # matrix and index form
    assert len(totals) == 2
    for total in totals:
        assert r"0.5 L^{(\mathrm{box})}" in total and r"L^{(\mathrm{cls})}" in total, total
        assert r"0.5 L^{(\mathrm{cls})}" not in total and total.count(r"L^{(\mathrm{box})}") == 1, total
    text = d.text()
    assert "X(image) = X[:, 0:3]" in text and "X(meta) = X[:, 3:5]" in text
    assert "Y(cls) = Y[:, 0:4]" in text and "Y(box) = Y[:, 4:6]" in text
    res = sn.derive(resmlp()).latex()
    for layer in resmlp().graph.names:  # every layer appears under its own name
        assert r"\mathrm{%s}" % layer in res, layer


def test_the_derivations_are_well_formed_latex() -> None:
    pytest.importorskip("latex2mathml")
    for name in NAMES:
        assert latex_checks.problems(sn.derive(NETS[name][0]())) == [], name


# -- 7. emitted standalone sources -----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_emitted_numpy_imports_without_symnn_and_computes_the_kernel(tmp_path: Path, kernels,
                                                                     name: str) -> None:
    """The standalone module takes the packed layout; with symnn blocked it gives the kernel's
    loss, gradients and (packed) outputs bit for bit."""
    net, p, X, Y = case(name, seed=6)
    Xp, Yp = packed(net, X, Y)
    out = run_emitted_numpy(tmp_path, net, p, Xp, Yp)
    k = kernels["numpy", "float64"][name]
    L, g = k.loss_and_grad(p, X, Y)
    assert float(out["L"]) == L
    expected = outputs_as_dict(net, k.forward(p, X))
    np.testing.assert_array_equal(out["y"], np.concatenate([expected[n] for n in net.output_names], axis=1))
    for key in g:
        np.testing.assert_array_equal(out[key], g[key])


@pytest.mark.needs_cc
def test_emitted_c_builds_with_its_makefile_and_computes_the_kernel(tmp_path: Path, kernels) -> None:
    """The two-output network's standalone C, built by ``make`` and run on packed rows (inputs
    then targets): its packed outputs, loss and per-parameter gradient norms are the kernel's."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    net, p, X, Y = case("multi_io", n=4, seed=4)
    Xp, Yp = packed(net, X, Y)
    paths = sn.emit(net, tmp_path, backend="c")
    assert {q.name for q in paths} >= {"multi_io.c", "multi_io.h", "main.c", "Makefile"}
    # -O1 instead of the Makefile's -O3: a third of the build time, the same warnings asked for
    # (tests/integration/test_layer_graph.py builds one with the defaults)
    flags = "CFLAGS=-std=c99 -O1 -Wall -Wextra -pedantic"
    r = subprocess.run(["make", flags], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in r.stderr, r.stderr
    k = kernels["numpy", "float64"]["multi_io"]
    k.pack(p).tofile(tmp_path / "params.bin")
    table = np.concatenate([Xp, Yp], axis=1)
    rows = "\n".join(",".join(repr(float(v)) for v in row) for row in table) + "\n"
    r = subprocess.run(["./multi_io_demo", "params.bin"], cwd=tmp_path, input=rows, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    out = np.array([[float(v) for v in line.split()] for line in lines[:len(Xp)]])
    expected = k.forward(p, X)
    np.testing.assert_allclose(out, np.concatenate([expected[n] for n in net.output_names], axis=1),
                               rtol=1e-13, atol=1e-15)
    L, g = k.loss_and_grad(p, X, Y)
    (loss_line,) = [line for line in lines if line.startswith("loss ")]
    assert abs(float(loss_line.split()[1]) - L) <= 1e-13 * abs(L)
    norms = {parts[1]: float(parts[2])
             for parts in (line.split() for line in lines) if parts[0] == "grad_norm"}
    assert list(norms) == list(net.param_shapes())
    for key, value in norms.items():
        assert abs(value - np.linalg.norm(g[key])) <= 1e-12 * np.linalg.norm(g[key]), key
