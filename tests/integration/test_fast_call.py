"""The public kernel call on buffers already in the kernel's layout (issue 21).

``k.new_params()`` and ``k.unpack(theta)`` give a ``FlatParams``: named views into one flat
buffer. Given one as ``params`` (and one as ``out=``), with X and Y already of the kernel's dtype
and shapes, the C backend checks and runs the call in one C entry and falls back to the checked
Python path for anything it is not sure of. These tests pin that the two paths cannot be told
apart from outside: the same bits for every kernel, the same error (class and message) for every
refusal with nothing written, no allocation in steady state, and per-thread scratch so threads
can share a kernel. The NumPy backend has no fast path; it must take FlatParams and ``out=``
alike.

Four small networks: xor (examples/xor.toml, BCE), a softmax + cross-entropy net (one-hot
rows, soft rows, int32 and int64 labels), an MSE net with L2, and a two-output graph (a
cross-entropy and an MSE head, like examples/two_heads.toml). In C, per dtype, xor, mse and the
two-output graph share one compiler run (``sn.compile_many``) and the cross-entropy net is built
with Adam, its kernel serving the ``train_step`` tests (float rows and labels): four C modules.
The kernels with ``check_finite=False`` are the same sources (a cache hit, no compiler run).

"The same bits" is exact equality, not a tolerance: both paths run the same emitted kernel on
the same values, so any difference is a wrong argument, not rounding.
"""

from __future__ import annotations

import pickle
import weakref
import sys
import threading
import tracemalloc
from typing import Any, Callable, Mapping

import numpy as np
import pytest

import symnn as sn
from symnn.errors import DataError, DTypeError, EmptyBatchError, LabelRangeError, NonFiniteInputError, ShapeError
from symnn.flat import FlatParams

# the public call's checks and views on the build users get (-O3; the suite builds others at -O1: tests/conftest.py)
pytestmark = pytest.mark.native_build

DTYPES = ["float64", "float32"]
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
NAMES = ["xor", "ce", "mse", "two"]
OPT = sn.Adam(lr=0.05)


def _networks() -> dict[str, sn.Network]:
    x = sn.Input(2, name="x")
    h = sn.Dense(2, 4, "tanh")(x)
    cls, box = sn.Dense(4, 3, "softmax", name="cls")(h), sn.Dense(4, 2, name="box")(h)
    return {
        "xor": sn.Network([sn.Dense(2, 4, "tanh"), sn.Dense(4, 1, "sigmoid")], loss="bce", name="fc_xor"),
        "ce": sn.Network([sn.Dense(2, 4, "tanh"), sn.Dense(4, 3, "softmax")], loss="cross_entropy", name="fc_ce"),
        "mse": sn.Network([sn.Dense(2, 4, "tanh"), sn.Dense(4, 2)], loss="mse", l2=1e-3, name="fc_mse"),
        "two": sn.Network(inputs=x, outputs=[cls, box], loss=["cross_entropy", "mse"], loss_weights=[1.0, 0.5],
                          name="fc_two"),
    }


NETS = _networks()


def _build(backend: str, dtype: str, check_finite: bool) -> dict[str, sn.Kernel]:
    opt = {"ce": OPT}
    if backend == "numpy":
        return {n: sn.compile(net, dtype=dtype, check_finite=check_finite, optimizer=opt.get(n))
                for n, net in NETS.items()}
    others = [n for n in NAMES if n != "ce"]
    shared = sn.compile_many([NETS[n] for n in others], backend="c", dtype=dtype, check_finite=check_finite)
    return {"ce": sn.compile(NETS["ce"], backend="c", dtype=dtype, check_finite=check_finite, optimizer=OPT),
            **dict(zip(others, shared))}


@pytest.fixture(scope="module")
def kernels() -> Callable[..., dict[str, sn.Kernel]]:
    """``kernels(backend, dtype, check_finite=True)`` -> ``{name: kernel}``, built on first use."""
    built: dict[tuple[str, str, bool], dict[str, sn.Kernel]] = {}

    def get(backend: str, dtype: str, check_finite: bool = True) -> dict[str, sn.Kernel]:
        key = (backend, dtype, check_finite)
        if key not in built:
            built[key] = _build(*key)
        return built[key]

    return get


# -- data ------------------------------------------------------------------------------------------
def _one_hot(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return np.eye(k)[rng.integers(0, k, n)]


#: targets per network for n rows: BCE 0/1, cross-entropy one-hot rows, MSE reals, the two-output
#: graph's packed [one-hot cls | real box]
TARGETS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "xor": lambda rng, n: (rng.random((n, 1)) < 0.5).astype(float),
    "ce": lambda rng, n: _one_hot(rng, n, 3),
    "mse": lambda rng, n: rng.normal(size=(n, 2)),
    "two": lambda rng, n: np.concatenate([_one_hot(rng, n, 3), rng.normal(size=(n, 2))], axis=1),
}


def batch(name: str, n: int, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)).astype(dtype), TARGETS[name](rng, n).astype(dtype)


def labels(n: int, dtype: type, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, n).astype(dtype)


def strided(a: np.ndarray) -> np.ndarray:
    """The same values in a view that is not C-contiguous: what the fast path never takes."""
    return np.repeat(a, 2, axis=-1)[..., ::2]


def plain(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: np.array(v) for n, v in params.items()}


def same_bits(a: object, b: object) -> bool:
    """Exactly the same values (NaN payloads included), arrays or dicts of them, floats."""
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and list(a) == list(b) and all(same_bits(a[k], b[k]) for k in a)
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def spy_checked(monkeypatch: pytest.MonkeyPatch, k: sn.Kernel) -> list[str]:
    """Record each call of the backend module's checked entries (what the Python path runs)."""
    calls: list[str] = []
    for entry in ("_forward", "_loss", "_loss_and_grad", "_train_step"):
        real = getattr(k.module, entry, None)
        if real is not None:
            def counted(*args: Any, _real=real, _entry=entry) -> Any:
                calls.append(_entry)
                return _real(*args)
            monkeypatch.setattr(k.module, entry, counted)
    return calls


def outcome(call: Callable[[], Any]) -> tuple:
    """What a call did: ("ok", result) or ("raised", class, message)."""
    try:
        return "ok", call()
    except sn.SymnnError as exc:
        return "raised", type(exc), str(exc)


# -- 1. the same bits on both paths ------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_call_gives_the_bits_of_the_checked_call(kernels, monkeypatch, backend: str, dtype: str,
                                                      name: str) -> None:
    """FlatParams with out=, a plain dict of arrays, and a call forced onto the checked path (X not
    C-contiguous; for the two-output graph also X and Y as dicts) give the same loss, gradients,
    forward values; on C the first two never run the checked path."""
    k = kernels(backend, dtype)[name]
    X, Y = batch(name, 7, dtype)
    fp = k.new_params(seed=1)
    ref_L, ref_g = k.loss_and_grad(plain(fp), strided(X), Y)
    ref_loss, ref_fwd = k.loss(plain(fp), strided(X), Y), k.forward(plain(fp), strided(X))
    if k.network.several_outputs:
        Xd, Yd = {"x": X}, {"cls": Y[:, :3], "box": Y[:, 3:]}
        L, g = k.loss_and_grad(plain(fp), Xd, Yd)
        assert same_bits(L, ref_L) and same_bits(g, ref_g)
        assert same_bits(k.forward(plain(fp), Xd), ref_fwd) and same_bits(k.loss(plain(fp), Xd, Yd), ref_loss)
    calls = spy_checked(monkeypatch, k)
    out = k.new_params(seed=2)
    L, g = k.loss_and_grad(fp, X, Y, out=out)
    assert g is out and same_bits(L, ref_L) and same_bits(dict(out), ref_g)
    L2, g2 = k.loss_and_grad(plain(fp), X, Y)
    assert same_bits(L2, ref_L) and same_bits(dict(g2), ref_g)
    assert same_bits(k.loss(fp, X, Y), ref_loss)
    assert same_bits(k.forward(fp, X), ref_fwd) and same_bits(k.forward(plain(fp), X), ref_fwd)
    assert (calls == []) is (backend == "c")


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_call_with_labels_gives_the_bits_of_the_checked_call(kernels, monkeypatch, backend: str, dtype: str,
                                                                  label_dtype: type) -> None:
    """Integer labels (N,): int32 go to C as they are, int64 are narrowed into the thread's
    scratch after their range check; each gives the bits of the same labels given as a list
    (the checked path)."""
    k = kernels(backend, dtype)["ce"]
    X, _ = batch("ce", 9, dtype)
    y = labels(9, label_dtype)
    fp = k.new_params(seed=1)
    ref_L, ref_g = k.loss_and_grad(plain(fp), X, y.tolist())
    ref_loss = k.loss(plain(fp), X, y.tolist())
    calls = spy_checked(monkeypatch, k)
    out = k.new_params(seed=2)
    L, g = k.loss_and_grad(fp, X, y, out=out)
    assert g is out and same_bits(L, ref_L) and same_bits(dict(g), ref_g)
    assert same_bits(k.loss(fp, X, y), ref_loss)
    assert (calls == []) is (backend == "c")


@pytest.mark.parametrize("targets", ["rows", "int64", "int32"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_step_fast_and_checked_agree_and_views_follow_theta(kernels, monkeypatch, backend: str, dtype: str,
                                                                  targets: str) -> None:
    """Three Adam steps on theta = new_params().flat through the fast call and on a copy through
    the checked one (step as np.int64, which the fast call does not take) leave the same theta,
    state and losses; the FlatParams and k.unpack(theta) views show each update in place."""
    k = kernels(backend, dtype)["ce"]
    X, Y = batch("ce", 6, dtype)
    if targets != "rows":
        Y = labels(6, {"int64": np.int64, "int32": np.int32}[targets])
    fp = k.new_params(seed=4)
    theta, state = fp.flat, k.init_state()
    views = k.unpack(theta)
    ref_theta, ref_state = theta.copy(), state.copy()
    ref_losses = [k.train_step(ref_theta, ref_state, X, Y, np.int64(step)) for step in (1, 2, 3)]
    before = plain(fp)
    calls = spy_checked(monkeypatch, k)
    losses = [k.train_step(theta, state, X, Y, step) for step in (1, 2, 3)]
    assert (calls == []) is (backend == "c")
    assert same_bits(losses, ref_losses) and same_bits(theta, ref_theta) and same_bits(state, ref_state)
    for name, lo, hi, shape in k.layout:
        assert np.shares_memory(views[name], theta) and np.shares_memory(fp[name], theta)
        assert same_bits(views[name], ref_theta[lo:hi].reshape(shape)) and same_bits(fp[name], views[name])
        assert not np.array_equal(fp[name], before[name])


# -- 2. every refusal: the same error, nothing written -----------------------------------------------
def _set(arr: np.ndarray, index: tuple, value: float) -> np.ndarray:
    arr = arr.copy()
    arr[index] = value
    return arr


def _with_label(value: int, dtype: type) -> np.ndarray:
    return np.array([0, 1, 2, value, 1], dtype=dtype)


def _poison(p: FlatParams, index: int, value: float) -> FlatParams:
    p.flat[index] = value
    return p


#: (id, network, change of (params, X, Y, a FlatParams of the cross-entropy net) into the refused
#: call's arguments, error); X has 5 rows
REFUSALS: list[tuple[str, str, Callable, type]] = [
    ("nan-in-params", "xor", lambda p, X, Y, o: (_poison(p, 3, np.nan), X, Y), NonFiniteInputError),
    ("inf-in-params", "two", lambda p, X, Y, o: (_poison(p, -1, -np.inf), X, Y), NonFiniteInputError),
    ("nan-in-X", "mse", lambda p, X, Y, o: (p, _set(X, (4, 1), np.nan), Y), NonFiniteInputError),
    ("inf-in-X", "ce", lambda p, X, Y, o: (p, _set(X, (0, 0), np.inf), Y), NonFiniteInputError),
    ("nan-in-Y", "xor", lambda p, X, Y, o: (p, X, _set(Y, (2, 0), np.nan)), NonFiniteInputError),
    ("inf-in-Y", "two", lambda p, X, Y, o: (p, X, _set(Y, (1, 4), np.inf)), NonFiniteInputError),
    ("bce-target-above-1", "xor", lambda p, X, Y, o: (p, X, _set(Y, (3, 0), 1.5)), DataError),
    ("bce-target-below-0", "xor", lambda p, X, Y, o: (p, X, _set(Y, (0, 0), -0.25)), DataError),
    ("ce-row-sum-0.9", "ce", lambda p, X, Y, o: (p, X, _set(Y, (2,), [0.5, 0.3, 0.1])), DataError),
    ("ce-entry-outside-0-1", "ce", lambda p, X, Y, o: (p, X, _set(Y, (2,), [1.5, -0.5, 0.0])), DataError),
    ("two-cls-row-sum-0", "two", lambda p, X, Y, o: (p, X, _set(Y, (4, slice(0, 3)), 0.0)), DataError),
    ("int64-label-3", "ce", lambda p, X, Y, o: (p, X, _with_label(3, np.int64)), LabelRangeError),
    ("int64-label-negative", "ce", lambda p, X, Y, o: (p, X, _with_label(-1, np.int64)), LabelRangeError),
    ("int64-label-2**31", "ce", lambda p, X, Y, o: (p, X, _with_label(2**31, np.int64)), LabelRangeError),
    # 2**32 + 1 narrowed to int32 would be 1, a valid class
    ("int64-label-2**32+1", "ce", lambda p, X, Y, o: (p, X, _with_label(2**32 + 1, np.int64)), LabelRangeError),
    ("int32-label-3", "ce", lambda p, X, Y, o: (p, X, _with_label(3, np.int32)), LabelRangeError),
    ("int32-label-negative", "ce", lambda p, X, Y, o: (p, X, _with_label(-7, np.int32)), LabelRangeError),
    ("labels-of-a-float-loss", "mse", lambda p, X, Y, o: (p, X, np.zeros(5, np.int64)), ShapeError),
    ("X-3-features", "xor", lambda p, X, Y, o: (p, np.concatenate([X, X[:, :1]], axis=1), Y), ShapeError),
    ("X-1-D", "mse", lambda p, X, Y, o: (p, X[:, 0].copy(), Y), ShapeError),
    ("Y-2-columns", "xor", lambda p, X, Y, o: (p, X, np.concatenate([Y, Y], axis=1)), ShapeError),
    ("Y-one-row-more", "two", lambda p, X, Y, o: (p, X, np.concatenate([Y, Y[:1]])), ShapeError),
    ("labels-one-more", "ce", lambda p, X, Y, o: (p, X, np.zeros(6, np.int64)), ShapeError),
    ("empty-batch", "xor", lambda p, X, Y, o: (p, X[:0], Y[:0]), EmptyBatchError),
    # the cross-entropy net's FlatParams: the same names, W2 (3, 4) where xor's is (1, 4)
    ("params-of-another-layout", "xor", lambda p, X, Y, o: (o, X, Y), ShapeError),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_refusals_through_fast_inputs_match_the_checked_path(kernels, backend: str, dtype: str, case) -> None:
    """Each bad argument given in the fast call's form (FlatParams, contiguous arrays of the
    kernel's dtype, out=) is refused by loss_and_grad and loss with the class and message of the
    checked path (params as a plain dict, X not C-contiguous), and out= keeps every bit it had."""
    _, name, change, error = case
    k = kernels(backend, dtype)[name]
    X, Y = batch(name, 5, dtype)
    params, X, Y = change(k.new_params(seed=1), X, Y, kernels(backend, dtype)["ce"].new_params(seed=1))
    out = k.new_params(seed=3)
    kept = out.flat.copy()
    checked = (lambda: k.loss_and_grad(plain(params), strided(X), Y), lambda: k.loss(plain(params), strided(X), Y))
    fast = (lambda: k.loss_and_grad(params, X, Y, out=out), lambda: k.loss(params, X, Y))
    for fast_call, checked_call in zip(fast, checked):
        got, want = outcome(fast_call), outcome(checked_call)
        assert got[:2] == ("raised", error) and got == want
        assert same_bits(out.flat, kept)
    # forward reads no Y: it refuses the same bad params and X, and computes alike otherwise
    got, want = outcome(lambda: k.forward(params, X)), outcome(lambda: k.forward(plain(params), strided(X)))
    assert got[0] == want[0] and (same_bits(got[1], want[1]) if got[0] == "ok" else got == want)


def test_refusal_cases_start_from_a_valid_call(kernels) -> None:
    """The refusal table's inputs before their change compute: each case is refused for its change."""
    for _, name, _, _ in REFUSALS:
        k = kernels("numpy", "float64")[name]
        X, Y = batch(name, 5, "float64")
        L, _ = k.loss_and_grad(k.new_params(seed=1), X, Y)
        assert np.isfinite(L)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_wrong_shape_or_dtype_is_refused(kernels, backend: str, dtype: str) -> None:
    """out= that is not a FlatParams of this layout goes through the checked copy: wrong names
    ShapeError, a wrong dtype or shape or a read-only entry DTypeError; a FlatParams of
    another network's layout is such a dict (W2 of the wrong shape)."""
    k = kernels(backend, dtype)["xor"]
    X, Y = batch("xor", 5, dtype)
    fp = k.new_params(seed=1)
    other = np.float32 if dtype == "float64" else np.float64
    read_only = plain(fp)
    read_only["b2"].setflags(write=False)
    cases = [({n: v for n, v in plain(fp).items() if n != "b2"}, ShapeError),
             ({**plain(fp), "b2": np.zeros(1, other)}, DTypeError),
             ({**plain(fp), "W1": np.zeros((2, 4), dtype)}, DTypeError),
             (read_only, DTypeError),
             (kernels(backend, dtype)["ce"].new_params(seed=0), DTypeError)]
    for out, error in cases:
        with pytest.raises(error, match="out"):
            k.loss_and_grad(fp, X, Y, out=out)
    good = plain(fp)
    L, g = k.loss_and_grad(fp, X, Y, out=good)
    assert g is good and same_bits(g, plain(k.loss_and_grad(fp, X, Y)[1]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_refused_out_dict_is_not_partly_written(kernels, backend: str) -> None:
    k = kernels(backend, "float64")["xor"]
    X, Y = batch("xor", 5, "float64")
    out = {n: np.zeros_like(v) for n, v in k.new_params(seed=1).items()}
    out["W2"] = out["W2"].astype(np.float32)  # W1 and b1 come before it
    with pytest.raises(DTypeError):
        k.loss_and_grad(k.new_params(seed=1), X, Y, out=out)
    assert all(not v.any() for v in out.values())


@pytest.mark.parametrize("backend", [
    "numpy",
    pytest.param("c", marks=pytest.mark.needs_cc)])
def test_read_only_flat_out_is_refused(kernels, backend: str) -> None:
    """A FlatParams over a read-only buffer (k.unpack does not copy it) cannot be out=."""
    k = kernels(backend, "float64")["xor"]
    X, Y = batch("xor", 5, "float64")
    frozen = bytes(8 * k.n_params)
    out = k.unpack(np.frombuffer(frozen, dtype=np.float64))
    with pytest.raises(DTypeError):
        k.loss_and_grad(k.new_params(seed=1), X, Y, out=out)
    assert frozen == bytes(8 * k.n_params)


#: train_step refusals on the cross-entropy kernel with Adam: (id, change, error, message part)
TRAIN_REFUSALS: list[tuple[str, Callable, type, str]] = [
    ("nan-in-theta", lambda th, st, X, Y: (_set_in_place(th, 2, np.nan), st, X, Y), NonFiniteInputError, "theta"),
    ("inf-in-X", lambda th, st, X, Y: (th, st, _set(X, (1, 1), np.inf), Y), NonFiniteInputError, "X"),
    ("ce-row-sum-2", lambda th, st, X, Y: (th, st, X, _set(Y, (0,), [1.0, 1.0, 0.0])), DataError, "sum"),
    ("int64-label-2**32+1", lambda th, st, X, Y: (th, st, X, _with_label(2**32 + 1, np.int64)),
     LabelRangeError, "label"),
    ("int32-label-3", lambda th, st, X, Y: (th, st, X, _with_label(3, np.int32)), LabelRangeError, "label"),
    ("X-is-theta", lambda th, st, X, Y: (th, st, th[:10].reshape(5, 2), Y), DataError, "SYMNN_ERR_ALIAS"),
    ("Y-is-state", lambda th, st, X, Y: (th, st, X, st[1, :15].reshape(5, 3)), DataError, "SYMNN_ERR_ALIAS"),
]


def _set_in_place(arr: np.ndarray, index: int, value: float) -> np.ndarray:
    arr[index] = value
    return arr


@pytest.mark.parametrize("case", TRAIN_REFUSALS, ids=[c[0] for c in TRAIN_REFUSALS])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_step_refusals_match_and_leave_theta_and_state(kernels, backend: str, dtype: str, case) -> None:
    """The same error through the fast call (step an int) and the checked one (np.int64 step),
    and theta and state keep every bit after each."""
    _, change, error, part = case
    k = kernels(backend, dtype)["ce"]
    X, Y = batch("ce", 5, dtype)
    theta, state = k.new_params(seed=1).flat, k.init_state()
    k.train_step(theta, state, X, Y, 1)  # a state that is not all zeros
    theta, state, X, Y = change(theta, state, X, Y)
    kept = theta.copy(), state.copy()
    got = outcome(lambda: k.train_step(theta, state, X, Y, 2))
    want = outcome(lambda: k.train_step(theta, state, X, Y, np.int64(2)))
    assert got[:2] == ("raised", error) and part in got[2] and got == want
    assert same_bits(theta, kept[0]) and same_bits(state, kept[1])


@pytest.mark.parametrize("where", ["params", "X", "Y"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_check_finite_false_lets_nan_through_on_both_paths(kernels, backend: str, dtype: str, where: str) -> None:
    """check_finite=False: C skips its finiteness scan; a NaN target, which its [0, 1] check
    cannot place, goes to the Python check, which lets it through too; both paths give the same
    NaN bits."""
    k = kernels(backend, dtype, check_finite=False)["xor"]
    X, Y = batch("xor", 5, dtype)
    fp = k.new_params(seed=1)
    if where == "params":
        fp.flat[0] = np.nan
    X = _set(X, (0, 0), np.nan) if where == "X" else X
    Y = _set(Y, (0, 0), np.nan) if where == "Y" else Y
    got = outcome(lambda: k.loss_and_grad(fp, X, Y, out=k.new_params()))
    want = outcome(lambda: k.loss_and_grad(plain(fp), strided(X), Y))
    assert got[0] == want[0] == "ok" and np.isnan(got[1][0])
    assert same_bits(got[1][0], want[1][0]) and same_bits(dict(got[1][1]), want[1][1])
    assert same_bits(k.forward(fp, X), k.forward(plain(fp), strided(X)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_flat_params_values_are_read_at_every_call(kernels, backend: str) -> None:
    """What a kernel keeps of a FlatParams (C: a pointer to its buffer) is never a snapshot of
    its values: after a call, an assignment, a train_step on its buffer and a NaN written into
    it each show in the next call."""
    k = kernels(backend, "float64")["ce"]
    X, Y = batch("ce", 5, "float64")
    fp, out = k.new_params(seed=1), k.new_params(seed=2)

    def check() -> None:
        L, g = k.loss_and_grad(fp, X, Y, out=out)
        ref = k.loss_and_grad(plain(fp), strided(X), Y)
        assert same_bits(L, ref[0]) and same_bits(dict(g), ref[1])
        assert same_bits(k.forward(fp, X), k.forward(plain(fp), strided(X)))

    check()
    fp["W2"] = 2 * fp["W2"]
    check()
    k.train_step(fp.flat, k.init_state(), X, Y, 1)
    check()
    fp.flat[0] = np.nan
    with pytest.raises(NonFiniteInputError, match="W1"):
        k.loss_and_grad(fp, X, Y, out=out)


@pytest.mark.needs_cc
def test_one_flat_params_serves_two_kernels_of_its_layout(kernels) -> None:
    """Kernels of one network and dtype share the layout object: each takes the same FlatParams
    (its buffer's pointer cached per kernel module), in any order."""
    k, kf = kernels("c", "float64")["xor"], kernels("c", "float64", check_finite=False)["xor"]
    assert k.flat_layout is kf.flat_layout and k.module is not kf.module
    X, Y = batch("xor", 5, "float64")
    fp = k.new_params(seed=1)
    ref = k.loss_and_grad(plain(fp), strided(X), Y)
    for kernel in (k, kf, k, kf):
        L, g = kernel.loss_and_grad(fp, X, Y, out=kernel.new_params())
        assert same_bits(L, ref[0]) and same_bits(dict(g), ref[1])


# -- 3. the cross-entropy sum tolerance, from both sides ---------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.needs_cc
def test_cross_entropy_row_sums_near_the_tolerance(kernels, monkeypatch, dtype: str) -> None:
    """The Python rule accepts a row summing to 1 within 1e-6 + 1e-5; C decides only within
    0.5e-5 and hands the rest to Python. Off by 0.3e-5: C computes (the checked path is not
    run); by 0.8e-5: C is unsure, Python accepts, the same bits; by 2e-5: refused alike."""
    k = kernels("c", dtype)["ce"]
    X, Y = batch("ce", 4, dtype)
    fp = k.new_params(seed=1)
    calls = spy_checked(monkeypatch, k)
    for off, fast in ((0.3e-5, True), (0.8e-5, False)):
        Yo = _set(Y, (1,), [0.2, 0.3, 0.5 + off])
        ref = k.loss_and_grad(plain(fp), strided(X), Yo)
        calls.clear()
        L, g = k.loss_and_grad(fp, X, Yo, out=k.new_params())
        assert (calls == []) is fast
        assert same_bits(L, ref[0]) and same_bits(dict(g), ref[1])
    Yo = _set(Y, (1,), [0.2, 0.3, 0.5 + 2e-5])
    got, want = outcome(lambda: k.loss_and_grad(fp, X, Yo)), outcome(lambda: k.loss_and_grad(plain(fp), strided(X), Yo))
    assert got[:2] == ("raised", DataError) and got == want


# -- 4. misaligned and read-only X -------------------------------------------------------------------
def _misaligned(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` one byte off its dtype's alignment (C-contiguous, not aligned)."""
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    view = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    view[...] = a
    assert not view.flags.aligned and view.flags.c_contiguous
    return view


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_misaligned_and_read_only_inputs_compute_the_same(kernels, backend: str, dtype: str) -> None:
    k = kernels(backend, dtype)["ce"]
    X, Y = batch("ce", 6, dtype)
    y = labels(6, np.int64)
    fp = k.new_params(seed=1)
    frozen = X.copy()
    frozen.setflags(write=False)
    for targets in (Y, y):
        L, g = k.loss_and_grad(fp, X, targets)
        for Xv, Yv in ((_misaligned(X), targets), (X, _misaligned(targets)), (frozen, targets)):
            L2, g2 = k.loss_and_grad(fp, Xv, Yv, out=k.new_params())
            assert same_bits(L2, L) and same_bits(dict(g2), dict(g))
        assert same_bits(k.forward(fp, _misaligned(X)), k.forward(fp, X))


def test_unpack_of_a_misaligned_vector(kernels) -> None:
    k = kernels("numpy", "float64")["xor"]
    theta = k.new_params(seed=1).flat
    fp = k.unpack(_misaligned(theta))
    assert same_bits(fp.flat, theta)


# -- 5. steady state allocates nothing (C) -----------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.needs_cc
def test_steady_state_call_allocates_nothing(kernels, dtype: str) -> None:
    """After a warm-up, 200 calls of loss_and_grad(flat, X, labels, out=out) on 4096 rows: no
    NumPy memory is left behind (tracemalloc's NumPy domain), the peak of all traced memory
    over the calls stays below 4 KiB, which a per-call copy of any batch-sized buffer (X 32 KiB
    or more, the int32 labels 16 KiB, the work space) would exceed; Python's own objects (the
    returned float and tuple, cffi pointers) measure about 0.4 KiB. And no NumPy function or
    method runs in the call (sys.setprofile), which also rules out the small per-call copies
    of the parameters that a plain dict costs."""
    k = kernels("c", dtype)["ce"]
    X, _ = batch("ce", 4096, dtype)
    y = labels(4096, np.int64)
    fp, out = k.new_params(seed=1), k.new_params(seed=2)
    for _ in range(20):
        k.loss_and_grad(fp, X, y, out=out)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            k.loss_and_grad(fp, X, y, out=out)
        end, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    numpy_only = [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)]
    grown = [d for d in after.filter_traces(numpy_only).compare_to(before.filter_traces(numpy_only), "lineno")
             if d.size_diff > 0 or d.count_diff > 0]
    assert grown == [] and end - start < 1024
    assert peak - start < 4096, f"{peak - start} bytes at peak"

    assert _numpy_calls(lambda: k.loss_and_grad(fp, X, y, out=out)) == []
    # the control: a plain dict of arrays is packed into a new buffer per call, and the watch sees it
    assert "empty" in _numpy_calls(lambda: k.loss_and_grad(plain(fp), X, y, out=out))


@pytest.mark.needs_cc
def test_images_take_the_fast_path_with_no_copy() -> None:
    """A CNN's X given as (N, C, H, W), as users hold images, runs the fast path as its rows do:
    the same bits, no NumPy call, and no batch-sized allocation (the checked path packs and
    allocates a work buffer each call: 0.4 MB here)."""
    x = sn.Input(2, 6, 6)
    h = sn.MaxPool2d(2)(sn.Conv2d(2, 4, 3, padding=1, activation="relu", name="conv")(x))
    net = sn.Network(inputs=x, outputs=sn.Dense(36, 3, "softmax", name="fc")(sn.Flatten()(h)),
                     loss="cross_entropy", name="fastimg")
    k = sn.compile(net, backend="c")
    images = np.random.default_rng(0).normal(size=(64, 2, 6, 6))
    y = labels(64, np.int64) % 3
    fp, out, ref = k.new_params(seed=1), k.new_params(), k.new_params()
    loss = k.loss_and_grad(fp, images, y, out=out)[0]
    assert loss == k.loss_and_grad(fp, images.reshape(64, -1), y, out=ref)[0]
    assert np.array_equal(out._flat, ref._flat)
    assert _numpy_calls(lambda: k.loss_and_grad(fp, images, y, out=out)) == []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            k.loss_and_grad(fp, images, y, out=out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - start < 4096, f"{peak - start} bytes at peak"


@pytest.mark.needs_cc
def test_sequences_of_any_length_take_the_fast_path() -> None:
    """A C kernel whose sequences' length is given at each call (``sn.Input(None, F)``): X as
    (N, T, F) or its rows, at lengths that change from call to call, runs the fast path (no
    NumPy call, nothing allocated in steady state once the longest T was seen) with the bits of
    the checked path; the C checks refuse what Python refuses (a row of no whole number of steps,
    NaN targets), and the checked path then names it."""
    x = sn.Input(None, 3, name="x")
    h = sn.GRU(3, 5, name="rec")(x)
    net = sn.Network(inputs=x, outputs=sn.Dense(5, 2, name="fc")(h), loss="mse", name="fastany")
    k = sn.compile(net, backend="c", optimizer=sn.SGD(lr=0.01))
    fp, out = k.new_params(seed=1), k.new_params()
    rng = np.random.default_rng(0)
    for T in (7, 2, 11, 7):
        X, Y = rng.normal(size=(16, T, 3)), rng.normal(size=(16, 2))
        loss = k.loss_and_grad(fp, X, Y, out=out)[0]
        checked = k.module._loss_and_grad(k.params(fp), k.inputs(X), k.targets(Y, 16, T))
        assert loss == checked[0] and np.array_equal(out._flat, k.pack(checked[1]))
        assert np.array_equal(k.forward(fp, X), k.module._forward(k.params(fp), k.inputs(X)))
    assert _numpy_calls(lambda: k.loss_and_grad(fp, X, Y, out=out)) == []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        for T in (3, 11, 5):
            X = rng.normal(size=(16, T, 3))
            k.loss_and_grad(fp, X, Y, out=out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - start < 16 * 11 * 3 * 8 + 4096, f"{peak - start} bytes at peak"  # X itself, no work buffer
    with pytest.raises(ShapeError):
        k.loss(fp, np.zeros((4, 8)), np.zeros((4, 2)))  # 8 entries: no whole number of steps of 3
    bad = Y.copy()
    bad[3, 1] = np.nan
    with pytest.raises(NonFiniteInputError):
        k.loss(fp, X, bad)
    theta, state = k.pack(k.new_params(seed=2)), k.init_state()
    fast = k.train_step(theta, state, X, Y, 1)
    again = k.pack(k.new_params(seed=2))
    assert fast == k.module._train_step(again, k.init_state(), k.inputs(X), k.targets(Y, 16, 5), 1)
    assert np.array_equal(theta, again)


def _numpy_calls(call: Callable[[], Any]) -> list[str]:
    """The NumPy functions and array methods that ``call`` runs (sys.setprofile's c_call events)."""
    seen: list[str] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and ((getattr(arg, "__module__", None) or "").startswith("numpy")
                                  or isinstance(getattr(arg, "__self__", None), np.ndarray)):
            seen.append(arg.__qualname__)

    sys.setprofile(watch)
    try:
        call()
    finally:
        sys.setprofile(None)
    return seen


# -- 6. threads share one kernel ---------------------------------------------------------------------
@pytest.mark.needs_cc
def test_threads_share_one_kernel(kernels) -> None:
    """4 threads, each with its own out=, 200 calls each over batch sizes in a different order
    (so each thread's scratch grows while others run): every result is the single-threaded one.
    int64 labels use the per-thread int32 scratch too."""
    k = kernels("c", "float64")["ce"]
    fp = k.new_params(seed=1)
    sizes = [1, 5, 17, 64, 3, 40]
    data = {n: (batch("ce", n, "float64", seed=n)[0], labels(n, np.int64, seed=n)) for n in sizes}
    ref = {}
    for n, (X, y) in data.items():
        L, g = k.loss_and_grad(fp, X, y)
        ref[n] = L, g.flat
    wrong: list[tuple[int, int]] = []
    start = threading.Barrier(4)

    def work(t: int) -> None:
        out = k.new_params(seed=10 + t)
        order = sizes[t:] + sizes[:t] if t % 2 else list(reversed(sizes[t:] + sizes[:t]))
        start.wait()
        for i in range(200):
            n = order[i % len(order)]
            L, g = k.loss_and_grad(fp, *data[n], out=out)
            if not (L == ref[n][0] and same_bits(g.flat, ref[n][1])):
                wrong.append((t, n))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert wrong == []


# -- 7. FlatParams itself ----------------------------------------------------------------------------
def test_flat_params_assignment_copies_into_the_buffer(kernels) -> None:
    k = kernels("numpy", "float64")["xor"]
    theta = np.zeros(k.n_params)
    fp = k.unpack(theta)
    assert isinstance(fp, FlatParams) and np.shares_memory(fp.flat, theta)
    w = np.arange(8.0).reshape(4, 2)
    fp["W1"] = w
    w[0, 0] = 99.0  # assignment copied: the caller's array stays the caller's
    assert same_bits(theta[:8], np.arange(8.0)) and np.shares_memory(fp["W1"], theta)
    fp.update({"b2": [7.0]}, b1=np.ones(4))
    assert theta[-1] == 7.0 and same_bits(theta[8:12], np.ones(4))
    kept = theta.copy()
    with pytest.raises(ShapeError, match="W2"):
        fp["W2"] = np.ones((4, 1))
    with pytest.raises(KeyError):
        fp["W3"] = np.ones(1)
    for remove in (lambda: fp.pop("W1"), lambda: fp.__delitem__("W1"), fp.popitem, fp.clear,
                   lambda: fp.setdefault("W9", 0)):
        with pytest.raises(TypeError):
            remove()
    assert list(fp) == ["W1", "b1", "W2", "b2"] and same_bits(theta, kept)


def test_flat_params_pickle_and_dict(kernels) -> None:
    k = kernels("numpy", "float64")["mse"]
    fp = k.new_params(seed=3)
    copy = pickle.loads(pickle.dumps(fp))
    assert type(copy) is dict and same_bits(copy, dict(fp))
    assert not any(np.shares_memory(copy[n], fp.flat) for n in copy)
    as_dict = dict(fp)
    assert type(as_dict) is dict and all(np.shares_memory(as_dict[n], fp.flat) for n in as_dict)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flat_params_of_another_dtype_is_converted_by_value(kernels, backend: str) -> None:
    """A float32 FlatParams of the same network is not taken as the float64 kernel's layout:
    its values are converted, as for a plain dict of float32 arrays."""
    k64, k32 = kernels(backend, "float64")["xor"], kernels(backend, "float32")["xor"]
    X, Y = batch("xor", 5, "float64")
    fp32 = k32.new_params(seed=1)
    L, g = k64.loss_and_grad(fp32, X, Y, out=k64.new_params())
    ref = k64.loss_and_grad({n: v.astype(np.float64) for n, v in fp32.items()}, X, Y)
    assert same_bits(L, ref[0]) and same_bits(dict(g), ref[1])


def test_new_params_checks_values_and_copies(kernels) -> None:
    k = kernels("numpy", "float64")["xor"]
    values = plain(k.new_params(seed=5))
    fp = k.new_params(values)
    assert same_bits(dict(fp), values) and not np.shares_memory(fp["W1"], values["W1"])
    values["b1"][0] = np.nan
    with pytest.raises(NonFiniteInputError, match="b1"):
        k.new_params(values)
    with pytest.raises(ShapeError):
        k.unpack(np.zeros(k.n_params + 1))


# -- the pointers a C kernel keeps between calls (backends/c/fast.py, _holdable) ---------------------
@pytest.mark.needs_cc
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # setting strides in place (NumPy 2.4)
def test_held_inputs_are_tested_again_at_every_call(kernels) -> None:
    """X and Y called again are the same objects, so their pointers from the last call are used
    again; what can change in place is tested anew: new values are read, strides set in place
    (the same memory in Fortran order, no longer C-contiguous) send the call to the checked
    path, and NumPy refuses to resize a held array, the one way its memory could move."""
    k = kernels("c", "float64")["ce"]
    X, Y = batch("ce", 6, "float64")
    fp = k.new_params(seed=1)
    first = k.loss(fp, X, Y)
    assert weakref.getweakrefcount(X) == 1 and weakref.getweakrefcount(Y) == 1  # held
    X *= 2.0
    again = k.loss(fp, X, Y)
    assert again != first and same_bits(again, k.loss(plain(fp), strided(X), Y))
    with pytest.raises(ValueError):
        X.resize((12, 2), refcheck=False)
    X.strides = (8, 48)
    assert not X.flags.c_contiguous
    assert same_bits(k.loss(fp, X, Y), k.loss(plain(fp), np.ascontiguousarray(X), Y))
    L, g = k.loss_and_grad(fp, X, Y, out=k.new_params())
    L2, g2 = k.loss_and_grad(plain(fp), np.ascontiguousarray(X), Y)
    assert same_bits(L, L2) and same_bits(dict(g), g2)


@pytest.mark.needs_cc
def test_a_held_array_that_dies_is_never_matched_again(kernels) -> None:
    """A kernel holds the arrays of its last call (so their memory lives); a new array in place
    of one that was dropped gets a pointer of its own. Views and large arrays are not held (a
    view would keep a whole data set alive behind one batch)."""
    k = kernels("c", "float64")["xor"]
    fp = k.new_params(seed=1)
    for seed in range(5):  # each X dies when the next one is made: its address may come back
        X, Y = batch("xor", 4, "float64", seed=seed)
        assert same_bits(k.forward(fp, X), k.forward(plain(fp), strided(X)))
    data = np.random.default_rng(7).normal(size=(100, 2))
    view = data[10:20]
    k.forward(fp, view)
    assert weakref.getweakrefcount(view) == 0 and weakref.getweakrefcount(data) == 0
    big = np.random.default_rng(8).normal(size=((1 << 20) // 16 + 1, 2))  # just over 1 MiB
    k.forward(fp, big)
    assert weakref.getweakrefcount(big) == 0


@pytest.mark.needs_cc
def test_train_step_on_held_theta_tests_writeable_again(kernels) -> None:
    """theta and state of the last train_step are held; made read-only afterwards, they are
    refused as before (the checked path's DTypeError), and nothing is written."""
    k = kernels("c", "float64")["ce"]
    X, Y = batch("ce", 5, "float64")
    theta, state = k.pack(plain(k.new_params(seed=1))), k.init_state()
    k.train_step(theta, state, X, Y, 1)
    k.train_step(theta, state, X, Y, 2)
    assert weakref.getweakrefcount(theta) == 1 and weakref.getweakrefcount(state) == 1
    for arr in (theta, state):
        kept = theta.copy(), state.copy()
        arr.flags.writeable = False
        with pytest.raises(DTypeError, match="writeable"):
            k.train_step(theta, state, X, Y, 3)
        assert same_bits(theta, kept[0]) and same_bits(state, kept[1])
        arr.flags.writeable = True
