"""Recurrent layers (issue 23): ``sn.RNN``, ``sn.GRU``, ``sn.LSTM`` against PyTorch and numeric
differentiation, on both backends.

Drawn stacks (kind, sizes, T, layers, bias, whole sequence or last state, with or without
initial states as further inputs, MSE on the output or cross-entropy after a Dense head) are
checked against ``torch.nn.RNN/GRU/LSTM(batch_first=True)`` loaded from the same parameter
dict (so PyTorch's names, layouts and gate order are pinned too): loss, every gradient and the
forward pass. Then: central differences, training steps against ``torch.optim`` (with
``clip_grad_norm_``), emitted code that does not grow with T, and a long sequence.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import symnn as sn

torch = pytest.importorskip("torch")

from tests.layer_graphs import largest, rel_max  # noqa: E402

F = torch.nn.functional
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow])
#: largest error relative to the largest entry (of the loss; of the whole gradient; of the
#: output), per dtype. A step is a few dozen products and sums, repeated T <= 7 times through
#: at most 3 layers of contracting gates (sigmoid, tanh: derivatives <= 1), so float64 stays
#: ~1e-15 off and float32 (unit roundoff 6e-8) ~1e-6 off the float64 reference
TOL = {"float64": 1e-10, "float32": 1e-5}
#: C against NumPy, float64: the same operations in another order, a few ulps of the scale
SAME = 1e-14
N_CLASSES = 3
#: the torch module of each kind, and its keyword arguments
TORCH = {"rnn_tanh": ("RNN", dict(nonlinearity="tanh")), "rnn_relu": ("RNN", dict(nonlinearity="relu")),
         "gru": ("GRU", {}), "lstm": ("LSTM", {})}


# -- one drawn network: a recurrent stack, optionally its initial states, a loss ---------------------
@dataclass(frozen=True)
class Case:
    """``states``: the initial states are inputs (``h0``, and ``c0`` for an LSTM), per sample
    (layers, H), or (H,) with ``flat_state`` for one layer. ``loss``: "mse" on the layer's
    output, or "ce" (cross-entropy) after a Dense softmax head."""

    kind: str
    inp: int
    hidden: int
    T: int
    layers: int = 1
    bias: bool = True
    seqs: bool = False
    states: bool = False
    flat_state: bool = False
    loss: str = "mse"
    n: int = 3
    bidi: bool = False

    @property
    def directions(self) -> int:
        return 2 if self.bidi else 1

    @property
    def state_names(self) -> tuple[str, ...]:
        if not self.states:
            return ()
        return ("h0", "c0") if self.kind == "lstm" else ("h0",)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.hidden,) if self.flat_state else (self.directions * self.layers, self.hidden)

    @property
    def width(self) -> int:
        """The recurrent layer's output per sample, flattened."""
        return (self.T if self.seqs else 1) * self.directions * self.hidden


@st.composite
def cases(draw) -> Case:
    layers = draw(st.integers(1, 3))
    states = draw(st.booleans())
    bidi = draw(st.booleans())
    return Case(draw(st.sampled_from(sorted(TORCH))), draw(st.integers(1, 6)), draw(st.integers(1, 6)),
                draw(st.integers(1, 7)), layers, draw(st.booleans()), draw(st.booleans()), states,
                states and layers == 1 and not bidi and draw(st.booleans()), draw(st.sampled_from(["mse", "ce"])),
                draw(st.integers(1, 4)), bidi)


#: drawn every run (and the C test's cases): each kind; stacked with both states and the
#: whole sequence; one layer's state as (H,); no bias (the GRU's bias_hh sits inside its step);
#: T = 1 with sizes of one; a relu stack of three under a softmax head; bidirectional stacks (their
#: initial states, 2*layers rows, in PyTorch's order)
PINNED = [
    Case("lstm", 3, 4, 5, layers=2, seqs=True, states=True),
    Case("gru", 2, 3, 4, states=True, flat_state=True, loss="ce"),
    Case("rnn_relu", 3, 2, 6, layers=3, bias=False, loss="ce", n=4),
    Case("rnn_tanh", 1, 1, 1, seqs=True, n=2),
    Case("gru", 2, 4, 3, layers=2, bias=False, seqs=True, states=True),
    Case("lstm", 2, 3, 7, bias=False, loss="ce"),
    Case("lstm", 3, 4, 5, layers=2, states=True, loss="ce", bidi=True),
    Case("gru", 2, 3, 4, layers=2, seqs=True, states=True, bidi=True),
]


def build(case: Case, name: str = "recnet") -> sn.Network:
    x = sn.Input(case.T, case.inp, name="x")
    inputs = [x] + [sn.Input(*case.state_shape, name=s) for s in case.state_names]
    cls, kw = TORCH[case.kind]
    layer = getattr(sn, cls)(case.inp, case.hidden, num_layers=case.layers, bias=case.bias,
                             return_sequences=case.seqs, name="rec", bidirectional=case.bidi, **kw)
    y = layer(*inputs)
    if case.seqs:
        y = sn.Flatten()(y)
    if case.loss == "ce":
        y = sn.Dense(case.width, N_CLASSES, "softmax", name="head")(y)
    return sn.Network(inputs=inputs if case.states else x, outputs=y,
                      loss="cross_entropy" if case.loss == "ce" else "mse", name=name)


class TorchRec(torch.nn.Module):
    """``case`` in ``torch.nn``, attributes named like symnn's layers, so that its ``state_dict``
    keys are symnn's parameter names."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        cls, kw = TORCH[case.kind]
        self.rec = getattr(torch.nn, cls)(case.inp, case.hidden, num_layers=case.layers, bias=case.bias,
                                          batch_first=True, bidirectional=case.bidi, **kw)
        if case.loss == "ce":
            self.head = torch.nn.Linear(case.width, N_CLASSES)
        self.case = case

    def output(self, x: torch.Tensor, states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The network's output before the head's softmax: (N, width) or the logits."""
        c = self.case
        n = x.shape[0]
        # symnn's initial states are batch first, (N, D*layers, H); PyTorch's (D*layers, N, H)
        rows = c.directions * c.layers
        given = tuple(s.reshape(n, rows, c.hidden).transpose(0, 1).contiguous() for s in states)
        hx = None if not given else (given if c.kind == "lstm" else given[0])
        out, state = self.rec(x.reshape(n, c.T, c.inp), hx)
        if c.seqs:
            out = out.reshape(n, -1)
        elif c.bidi:  # symnn's last state: each direction's final one, side by side
            h = state[0] if c.kind == "lstm" else state
            out = torch.cat((h[-2], h[-1]), 1)
        else:
            out = out[:, -1]
        return self.head(out) if c.loss == "ce" else out

    def loss(self, x: torch.Tensor, states: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
        out = self.output(x, states)
        return F.cross_entropy(out, y) if self.case.loss == "ce" else F.mse_loss(out, y)


def point(net: sn.Network, case: Case, seed: int = 0) -> tuple[dict[str, np.ndarray], object, np.ndarray]:
    """Parameters moved off their initial values, sequences as (N, T, F) (with the initial
    states: a dict by input name) and targets."""
    rng = np.random.default_rng(seed)
    params = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in net.init_params(seed=seed + 1).items()}
    X: object = rng.normal(size=(case.n, case.T, case.inp))
    if case.states:
        X = {"x": X, **{s: rng.normal(size=(case.n, *case.state_shape)) for s in case.state_names}}
    Y = rng.integers(0, N_CLASSES, case.n) if case.loss == "ce" else rng.normal(size=(case.n, case.width))
    return params, X, Y


def as_dtype(params: dict[str, np.ndarray], X: object, dtype: str) -> tuple[dict[str, np.ndarray], object]:
    cast = {k: np.asarray(v, dtype) for k, v in params.items()}
    if isinstance(X, dict):
        return cast, {k: np.asarray(v, dtype) for k, v in X.items()}
    return cast, np.asarray(X, dtype)


def _torch_args(case: Case, X: object) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    data = X if isinstance(X, dict) else {"x": X}
    as_t = lambda a: torch.tensor(np.asarray(a, np.float64))  # noqa: E731
    return as_t(data["x"]), tuple(as_t(data[s]) for s in case.state_names)


def torch_module(case: Case, params: dict[str, np.ndarray]) -> TorchRec:
    """``TorchRec`` in float64 at ``params`` (``strict=True``: symnn's names, order and shapes
    are ``torch.nn``'s)."""
    model = TorchRec(case).double()
    assert list(model.state_dict()) == list(params)
    model.load_state_dict({k: torch.tensor(np.asarray(v, np.float64)) for k, v in params.items()}, strict=True)
    return model


def torch_loss_and_grad(case: Case, params, X, Y) -> tuple[float, dict[str, np.ndarray]]:
    model = torch_module(case, params)
    x, states = _torch_args(case, X)
    loss = model.loss(x, states, torch.tensor(Y))
    loss.backward()
    return float(loss.detach()), {k: p.grad.numpy() for k, p in model.named_parameters()}


def torch_forward(case: Case, params, X) -> np.ndarray:
    model = torch_module(case, params)
    with torch.no_grad():
        out = model.output(*_torch_args(case, X))
    return (torch.softmax(out, 1) if case.loss == "ce" else out).numpy()


def check_against_torch(case: Case, net: sn.Network, kernels: dict[str, sn.Kernel], seed: int = 0) -> None:
    """Loss, every gradient and the forward pass of each dtype's kernel against autograd in
    float64 at the same (rounded) point."""
    params, X, Y = point(net, case, seed)
    for dtype, kernel in kernels.items():
        p, x = as_dtype(params, X, dtype)  # float32: PyTorch's float64 run sees the same point
        tl, tg = torch_loss_and_grad(case, p, x, Y)
        loss, grads = kernel.loss_and_grad(p, x, Y)
        tol = TOL[dtype]
        assert list(grads) == list(tg), case
        assert abs(loss - tl) <= tol * abs(tl), (dtype, loss, tl, case)
        scale = largest(tg)
        for name, g in grads.items():
            err = rel_max(g, tg[name], scale)
            assert g.shape == tg[name].shape and err <= tol, (dtype, name, err, case)
        out, ref = kernel.forward(p, x), torch_forward(case, p, x)
        assert out.shape == ref.shape and rel_max(out, ref) <= tol, (dtype, "forward", rel_max(out, ref), case)


# -- 1: loss, gradients and forward against PyTorch --------------------------------------------------
@settings(max_examples=12, **SETTINGS)
@given(case=cases())
@example(case=PINNED[0])
@example(case=PINNED[1])
@example(case=PINNED[2])
@example(case=PINNED[3])
@example(case=PINNED[4])
@example(case=PINNED[5])
@example(case=PINNED[6])
@example(case=PINNED[7])
def test_numpy_loss_gradients_and_forward_match_torch(case: Case) -> None:
    net = build(case)
    check_against_torch(case, net, {dtype: sn.compile(net, dtype=dtype) for dtype in TOL})


#: the pinned cases C runs in float32 too (an LSTM stack with its states, a GRU under a head, a
#: bidirectional GRU stack)
IN32 = (0, 1, 7)
#: the pinned cases C runs in float64: every kind, stacks, states, no bias, a single step, a
#: bidirectional LSTM stack (the rest run on NumPy, which C equals to 1e-14 below)
IN64 = (0, 1, 2, 3, 6)


@functools.lru_cache(maxsize=None)
def c_kernels(dtype: str) -> dict[int, sn.Kernel]:
    """The pinned cases' C kernels of one dtype (float32: ``IN32``), by index into PINNED, in
    one compiler run (compiling is most of the C tests' time; the draws run on NumPy above and
    C equals NumPy below)."""
    which = IN64 if dtype == "float64" else IN32
    kernels = sn.compile_many([build(PINNED[i], f"rec{i}") for i in which], backend="c", dtype=dtype)
    return dict(zip(which, kernels))


@pytest.mark.needs_cc
@pytest.mark.parametrize("dtype", sorted(TOL))
def test_c_loss_gradients_and_forward_match_torch(dtype: str) -> None:
    for i, kernel in c_kernels(dtype).items():
        check_against_torch(PINNED[i], build(PINNED[i], f"rec{i}"), {dtype: kernel})


@pytest.mark.needs_cc
def test_c_equals_numpy() -> None:
    """Forward, loss and gradient of the pinned cases C runs, float64, C against NumPy to 1e-14."""
    for i in IN64:
        case = PINNED[i]
        net = build(case, f"rec{i}")
        kc, kn = c_kernels("float64")[i], sn.compile(net)
        params, X, Y = point(net, case, seed=3)
        assert rel_max(kc.forward(params, X), kn.forward(params, X)) <= SAME, case
        (lc, gc), (ln, gn) = kc.loss_and_grad(params, X, Y), kn.loss_and_grad(params, X, Y)
        assert abs(lc - ln) <= SAME * abs(ln), case
        for name in gn:
            assert rel_max(gc[name], gn[name], largest(gn)) <= SAME, (name, case)


def test_sequences_as_rows_or_as_steps_are_the_same_data() -> None:
    """X as (N, T, F) (PyTorch's batch-first layout) or as its rows (N, T*F); the initial
    states as (N, layers, H) or (N, layers*H)."""
    case = PINNED[0]
    net = build(case)
    k = sn.compile(net)
    params, X, Y = point(net, case)
    rows = {name: v.reshape(case.n, -1) for name, v in X.items()}
    assert X["x"].ndim == 3 and X["h0"].ndim == 3
    assert k.loss_and_grad(params, X, Y)[0] == k.loss_and_grad(params, rows, Y)[0]
    assert np.array_equal(k.forward(params, X), k.forward(params, rows))


@pytest.mark.parametrize("shape", [(3, 6, 3), (3, 5, 2), (3, 3, 5), (3, 14)],
                         ids=["longer", "narrower", "steps-last", "rows"])
def test_sequences_of_another_shape_are_refused(shape: tuple[int, ...]) -> None:
    """A GRU over (T=5, F=3): one step too many, a feature short, PyTorch's batch_first=False
    habit of (N, F, T) (the same number of entries), or rows one entry short: ShapeError
    naming the expected shape, before any work."""
    case = Case("gru", 3, 2, 5)
    net = build(case)
    params, _, Y = point(net, case)
    with pytest.raises(sn.ShapeError, match=r"\(n, 5, 3\)|expects 15"):
        sn.compile(net).loss(params, np.zeros(shape), Y)


# -- 2: numeric differentiation ------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [Case("lstm", 2, 3, 4, layers=2, states=True, loss="ce"),
                                  Case("gru", 3, 2, 5, seqs=True, bidi=True)], ids=["lstm", "bigru"])
def test_central_differences_agree(backend: str, case: Case) -> None:
    """Central differences, float64: every checked entry within 1e-7 relative (the report's
    per-entry tolerance), and the whole gradient norm-wise too."""
    net = build(case, f"gc_{case.kind}")
    params, X, Y = point(net, case, seed=5)
    report = sn.gradcheck(sn.compile(net, backend=backend), params, X, Y, method="central")
    assert report.n_checked and report.passed and report.tolerance <= 1e-7, report
    assert report.norm_rel_error <= 1e-7, report


# -- 3: training steps against torch.optim -------------------------------------------------------------
#: an LSTM stack under a softmax head; the gradient's norm stays above 0.04 over the steps, so a
#: clipping norm of 0.01 scales every step
TRAIN = Case("lstm", 3, 4, 5, layers=2, loss="ce", n=6)
STEPPERS = {  # symnn optimiser, torch.optim's name and arguments (clip_norm: clip_grad_norm_ first)
    "sgd": (sn.SGD(lr=0.1), "SGD", dict(lr=0.1)),
    "sgd_clip": (sn.SGD(lr=0.5, clip_norm=0.01), "SGD", dict(lr=0.5, clip_norm=0.01)),
    "adam": (sn.Adam(lr=0.05), "Adam", dict(lr=0.05)),
    "adam_clip": (sn.Adam(lr=0.05, clip_norm=0.01), "Adam", dict(lr=0.05, clip_norm=0.01)),
}


def torch_steps(case: Case, params, batches, optimizer: str, **kw) -> dict[str, np.ndarray]:
    """The module's ``state_dict`` after ``torch.optim`` stepped it on ``batches``, with
    symnn's clipping (``clip_grad_norm_``) before each step."""
    model = torch_module(case, params)
    clip_norm = kw.pop("clip_norm", None)
    opt = getattr(torch.optim, optimizer)(model.parameters(), **kw)
    for X, Y in batches:
        opt.zero_grad()
        model.loss(*_torch_args(case, X), torch.tensor(Y)).backward()
        if clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            assert norm > 2 * clip_norm  # the clipping is doing something
        opt.step()
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("backend, name", [("numpy", n) for n in sorted(STEPPERS)] + [
    pytest.param("c", n, marks=pytest.mark.needs_cc) for n in ("adam_clip",)])  # C equals NumPy above
def test_three_steps_move_parameters_as_torch(backend: str, name: str) -> None:
    net = build(TRAIN, f"train_{name}")
    opt, torch_name, kw = STEPPERS[name]
    k = sn.compile(net, backend=backend, optimizer=opt)
    params, _, _ = point(net, TRAIN)
    rng = np.random.default_rng(11)
    data = [(rng.normal(size=(TRAIN.n, TRAIN.T, TRAIN.inp)), rng.integers(0, N_CLASSES, TRAIN.n))
            for _ in range(3)]
    theta, state = k.pack(params), k.init_state()
    for step, (X, Y) in enumerate(data, 1):
        k.train_step(theta, state, X, Y, step)
    after, ref = dict(k.unpack(theta)), torch_steps(TRAIN, params, data, torch_name, **kw)
    assert list(after) == list(ref)
    for key, v in after.items():
        assert not np.array_equal(v, params[key]), key  # every parameter moved
        assert rel_max(v, ref[key]) <= 1e-10, (name, key, rel_max(v, ref[key]))


# -- 4: emitted code does not grow with T ------------------------------------------------------------
def lstm_net(T: int) -> sn.Network:
    """An LSTM's last state under a Dense head, MSE: the same network at every T."""
    x = sn.Input(T, 3)
    return sn.Network(inputs=x, outputs=sn.Dense(5, 1, name="fc")(sn.LSTM(3, 5, name="lstm")(x)), loss="mse",
                      name="lstmseq")


def _shape_of(text: str) -> str:
    """``text`` with every integer literal (and the spec hash) replaced by a placeholder."""
    return re.sub(r"\d+", "#", re.sub(r"(Spec hash:|SPEC_HASH\W*)\s*\"?[0-9a-fA-F]+", r"\1 H", text))


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_emitted_sources_do_not_grow_with_T(backend: str, tmp_path: Path) -> None:
    """T = 8 and T = 512: every emitted file the same apart from numbers (a loop over t, not
    T copies of the step); the numbers do differ (T is in them)."""
    texts = {}
    for T in (8, 512):
        paths = sn.emit(lstm_net(T), tmp_path / str(T), backend=backend)
        texts[T] = {p.name: p.read_text() for p in paths}
    assert list(texts[8]) == list(texts[512])
    for name, text in texts[8].items():
        other = texts[512][name]
        assert abs(len(other) - len(text)) < 0.05 * len(text), name
        assert _shape_of(text) == _shape_of(other), name
    assert texts[8] != texts[512]


def c_header(T: int, where: Path) -> str:
    (header,) = [p for p in sn.emit(lstm_net(T), where / str(T), backend="c") if p.suffix == ".h"]
    return header.read_text()


def _macro(text: str, name: str) -> int:
    m = re.search(rf"#define LSTMSEQ_{name} (\d+)", text)
    assert m, name
    return int(m.group(1))


def test_c_work_is_fixed_plus_a_share_per_step(tmp_path: Path) -> None:
    """The header's work bound, ``WORK_PER_ROW * n + WORK_FIXED``: the fixed part (the weights'
    scratch) does not depend on T, and each row's part is affine in T (the stored steps, one
    block per step): no scratch that grows faster than the sequence."""
    headers = {T: c_header(T, tmp_path) for T in (8, 16, 512)}
    fixed = {T: _macro(h, "WORK_FIXED") for T, h in headers.items()}
    row = {T: _macro(h, "WORK_PER_ROW") for T, h in headers.items()}
    assert fixed[8] == fixed[16] == fixed[512], fixed
    per_step = (row[16] - row[8]) // 8
    assert per_step > 0 and row[16] - row[8] == 8 * per_step, row
    assert row[512] - row[8] == 504 * per_step, row


#: the kernels whose work the header should state one by one
KERNELS = ("forward", "loss", "loss_and_grad")


def test_c_header_states_each_kernels_work(tmp_path: Path) -> None:
    """Each kernel's work per row in the header (``LSTMSEQ_<KERNEL>_WORK_PER_ROW``): the forward
    pass's and the gradient's, whose stored activations grow with T, the gradient's the most; and
    how much of it is the steps the loops store (``_STORED_PER_ROW``): T times one step's, the
    rest independent of T."""
    headers = {T: c_header(T, tmp_path) for T in (8, 512)}
    per_row = {T: {k: _macro(h, f"{k.upper()}_WORK_PER_ROW") for k in KERNELS} for T, h in headers.items()}
    stored = {T: {k: _macro(h, f"{k.upper()}_STORED_PER_ROW") for k in KERNELS} for T, h in headers.items()}
    assert per_row[8]["loss_and_grad"] < per_row[512]["loss_and_grad"]
    assert per_row[512]["forward"] <= per_row[512]["loss_and_grad"]
    for k in KERNELS:
        assert stored[512][k] == 64 * stored[8][k] > 0  # T steps of one step's values
        assert stored[8][k] <= per_row[8][k]


# -- 5: a long sequence -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm"])
def test_a_long_sequence_stays_finite_and_exact(backend: str, kind: str) -> None:
    """T = 300 steps, float64, loss on every step's state: the gradient sums 300 steps'
    contributions through a backward recurrence 300 deep, and still matches autograd."""
    case = Case(kind, 2, 4, 300, seqs=True, states=True, n=2)
    net = build(case, f"long_{kind}")
    params, X, Y = point(net, case, seed=7)
    k = sn.compile(net, backend=backend)
    loss, grads = k.loss_and_grad(params, X, Y)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
    check_against_torch(case, net, {"float64": k}, seed=7)


def _pullbacks(net: sn.Network) -> list:
    from symnn import ir
    from symnn.driver import derive_program

    prog = derive_program(net).program
    return [n for n in ir.toposort(list(prog.outputs.values()))
            if n.op is ir.Op.SCAN and n.arg.record is not None]


def _is_zeros(node) -> bool:
    from symnn import ir

    return node.op is ir.Op.MAP and not node.src and node.arg.expr == 0


@pytest.mark.parametrize("kind,layers", [("LSTM", 1), ("GRU", 2), ("RNN", 1)])
def test_a_last_state_pullback_starts_from_its_cotangent(kind: str, layers: int) -> None:
    """Reading the last state only, the outputs' cotangent lies in the step the backward loop
    runs first: the emitted loop starts from it (its carry's first value) and builds no T-step
    sequence of zeros to read a step of (its first step reads the previous carries, which it
    reads anyway); every other pullback and a tagger's, whose every step has a cotangent, keep
    the sequence. The gradients stay PyTorch's (the tests above)."""
    x = sn.Input(6, 3)
    h = getattr(sn, kind)(3, 5, num_layers=layers)(x)
    last = _pullbacks(sn.Network(inputs=x, outputs=sn.Dense(5, 2)(h), loss="mse"))
    assert len(last) == layers
    seeded = [p for p in last if not _is_zeros(p.src[0]) and p.src[1] is p.src[2]]
    assert len(seeded) == 1  # the top layer's: a lower layer's cotangent is every step's
    x = sn.Input(6, 3)
    h = getattr(sn, kind)(3, 5, return_sequences=True)(x)
    (tagger,) = _pullbacks(sn.Network(inputs=x, outputs=sn.Dense(5, 2)(h), loss="mse"))
    assert _is_zeros(tagger.src[0]) and tagger.src[1] is not tagger.src[2]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_loops_weight_is_packed_once(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The products with the recurrent weight inside the loops (h @ W_hh.T forward, delta @ W_hh
    back through time) read W_hh's panels packed once before each loop, not packed again at
    every step: the emitted C packs before the loop and calls the packed product in it, and
    its loss and gradients are bitwise those of the lowering that packs at every step."""
    from symnn.backends.c import config

    x = sn.Input(7, 3)
    net = sn.Network(inputs=x, outputs=sn.Dense(20, 2, name="fc")(sn.LSTM(3, 20, num_layers=2, name="lstm")(x)),
                     loss="mse", name="packed")
    source = sn.emit_source(net, backend="c", dtype=dtype)
    assert "packed before the loop" in source
    body = source[source.index("static void packed__loss_and_grad("):]
    packs, loop = body.index("_nt_pack("), body.index("for (ptrdiff_t s0")
    assert packs < loop  # before the forward loop, once
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(6, 7, 3)).astype(dtype), rng.normal(size=(6, 2)).astype(dtype)
    results = []
    for pack in (True, False):
        if not pack:
            monkeypatch.setattr(config._KernelLowering, "_pack_invariants", lambda self, begin, end: None)
        k = sn.compile(net, backend="c", dtype=dtype)
        loss, grads = k.loss_and_grad(k.new_params(seed=3), X, Y)
        results.append((loss, {key: g.copy() for key, g in grads.items()}))
    (l0, g0), (l1, g1) = results
    assert l0 == l1 and all(np.array_equal(g0[key], g1[key]) for key in g0)
