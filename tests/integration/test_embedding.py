"""``sn.Embedding`` end to end (issue 22, item 4): integer index inputs, the GATHER op and its
scattered gradient, on both backends and dtypes.

Gradients are held to PyTorch autograd on ``nn.Embedding`` + ``Flatten`` + ``Linear`` with a
cross-entropy, loaded from the same parameter dict (so the layouts are pinned too), with
repeated indices (their gradients accumulate) and a ``padding_idx`` that the batch names (its
row gets no gradient). Bad indices are refused before any work: IndexRangeError in Python on
both backends, ``SYMNN_ERR_INDEX`` from the C function itself, ValueError from the emitted
NumPy module on its own.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import symnn as sn
from symnn.errors import ConfigError, IndexRangeError, SpecError
from symnn.status import Status

torch = pytest.importorskip("torch")

BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
V, D, T, K = 7, 3, 4, 5  # vocabulary, embedding width, indices per sample, classes
PAD = 2
#: relative error of a gradient against its largest entry: float64 rounds sums of a few dozen
#: terms (~1e-15); float32 (unit roundoff 6e-8) the same sums, ~1e-6
RTOL = {"float64": 1e-10, "float32": 1e-5}


def _net(padding_idx: int | None = PAD, name: str = "emb") -> sn.Network:
    x = sn.Input(T, indices=True)
    h = sn.Embedding(V, D, padding_idx=padding_idx)(x)
    y = sn.Dense(T * D, K, activation="softmax")(sn.Flatten()(h))
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", name=name)


def _data(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Indices with repeats and the padding row in several samples; row 5 never named."""
    X = np.array([[0, 2, 4, 4], [6, 2, 1, 0], [3, 3, 3, 2], [1, 0, 6, 4], [2, 2, 0, 1], [4, 6, 3, 0]])[:n]
    return X, np.arange(n) % K


def _torch_modules(params: dict, padding_idx: int | None) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The torch twin of the test network (nn.Embedding, nn.Linear) at ``params``, float64."""
    emb = torch.nn.Embedding(V, D, padding_idx=padding_idx).double()
    lin = torch.nn.Linear(T * D, K).double()
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(params["embedding1.weight"]))
        lin.weight.copy_(torch.from_numpy(params["dense1.weight"]))
        lin.bias.copy_(torch.from_numpy(params["dense1.bias"]))
    return emb, lin


def _torch_grads(params: dict, X: np.ndarray, Y: np.ndarray, padding_idx: int | None) -> tuple[float, dict]:
    emb, lin = _torch_modules(params, padding_idx)
    z = lin(torch.flatten(emb(torch.from_numpy(X)), 1))
    loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(Y))
    loss.backward()
    return float(loss.detach()), {"embedding1.weight": emb.weight.grad.numpy(), "dense1.weight": lin.weight.grad.numpy(),
                         "dense1.bias": lin.bias.grad.numpy()}


def _params() -> dict[str, np.ndarray]:
    p = _net().init_params(seed=3)
    p["embedding1.weight"][PAD] = np.random.default_rng(1).normal(size=D)  # read by forward, never moved
    return p


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("padding_idx", [PAD, None])
def test_gradients_match_torch_autograd(backend: str, dtype: str, padding_idx: int | None) -> None:
    net = _net(padding_idx, name=f"emb_{dtype}_{padding_idx is None}")
    k = sn.compile(net, backend=backend, dtype=dtype)
    params, (X, Y) = _params(), _data()
    loss, grads = k.loss_and_grad(params, X, Y)  # int64 indices as they are
    want_loss, want = _torch_grads(params, X, Y, padding_idx)
    assert abs(loss - want_loss) <= RTOL[dtype] * abs(want_loss)
    for name, g in want.items():
        scale = np.abs(g).max()
        np.testing.assert_allclose(grads[name], g, rtol=0, atol=RTOL[dtype] * scale, err_msg=name)
    if padding_idx is not None:
        assert np.all(grads["embedding1.weight"][PAD] == 0)
    assert np.all(grads["embedding1.weight"][5] == 0)  # never named
    # reals holding the same integers give the same numbers
    loss_r, grads_r = k.loss_and_grad(params, X.astype(np.float64), Y)
    assert loss_r == loss and all(np.array_equal(grads_r[n], grads[n]) for n in grads)


@pytest.mark.needs_cc
def test_c_matches_numpy() -> None:
    net = _net(name="emb_cnp")
    params, (X, Y) = _params(), _data()
    kn, kc = sn.compile(net, backend="numpy"), sn.compile(net, backend="c")
    np.testing.assert_allclose(kc.forward(params, X), kn.forward(params, X), rtol=0, atol=1e-14)
    (ln, gn), (lc, gc) = kn.loss_and_grad(params, X, Y), kc.loss_and_grad(params, X, Y)
    assert abs(ln - lc) <= 1e-14 * abs(ln)
    for name in gn:
        np.testing.assert_allclose(gc[name], gn[name], rtol=0, atol=1e-14 * np.abs(gn[name]).max(), err_msg=name)


def test_gradcheck_passes_with_a_padding_row() -> None:
    """Complex step on the interpreter; the padding row's reference is 0 by declaration (its
    numeric derivative is not: the forward pass reads it)."""
    k = sn.compile(_net(name="emb_gc"), backend="numpy")
    X, Y = _data()
    report = sn.gradcheck(k, _params(), X, Y)
    assert report.ok, str(report)


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_step_moves_the_weights_like_torch_sgd(backend: str) -> None:
    net = _net(name=f"emb_sgd_{backend}")
    k = sn.compile(net, backend=backend, optimizer=sn.SGD(lr=0.5))
    params, (X, Y) = _params(), _data()
    theta, state = k.pack(params), k.init_state()
    for step in (1, 2):
        k.train_step(theta, state, X, Y, step)
    emb, lin = _torch_modules(params, PAD)
    opt = torch.optim.SGD([*emb.parameters(), *lin.parameters()], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(torch.flatten(emb(torch.from_numpy(X)), 1)),
                                          torch.from_numpy(Y)).backward()
        opt.step()
    got = k.unpack(theta)
    np.testing.assert_allclose(got["embedding1.weight"], emb.weight.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["dense1.weight"], lin.weight.detach().numpy(), rtol=0, atol=1e-12)
    assert np.array_equal(got["embedding1.weight"][PAD], params["embedding1.weight"][PAD])


def _two_inputs() -> sn.Network:
    """Real features then indices: the index block starts at column 2 of the packed X."""
    f = sn.Input(2, name="feat")
    tok = sn.Input(3, name="tok", indices=True)
    h = sn.Flatten()(sn.Embedding(V, D)(tok))
    y = sn.Dense(2 + 3 * D, K, activation="softmax")(sn.concat([f, h]))
    return sn.Network(inputs=[f, tok], outputs=y, loss="cross_entropy", name="emb_two")


BAD = {"too large": 7, "negative": -1, "fraction": 2.5}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("what", sorted(BAD))
def test_a_bad_index_is_refused_naming_input_sample_and_value(backend: str, what: str) -> None:
    net = _two_inputs()
    k = sn.compile(net, backend=backend)
    params = net.init_params(seed=0)
    tok = np.array([[0, 1, 2], [3, 4, 5], [6, 0, 1]], dtype=float)
    feat = np.zeros((3, 2))
    Y = np.arange(3)
    k.loss(params, {"feat": feat, "tok": tok}, Y)  # fine as it is
    tok[1, 2] = BAD[what]
    value = f"{BAD[what]:g}"
    with pytest.raises(IndexRangeError, match=rf"X\['tok'\]: index {value} of sample 1 \(position 2\)"):
        k.loss_and_grad(params, {"feat": feat, "tok": tok}, Y)
    with pytest.raises(IndexRangeError):  # the packed X too (the C fast path on ready buffers)
        k.forward(params, np.concatenate([feat, tok], axis=1))


@pytest.mark.needs_cc
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_c_function_returns_its_status_for_a_bad_index(dtype: str) -> None:
    """Past every Python check: the compiled public entry point itself refuses (so a C program
    embedding the kernel never reads outside the table), and the wrapper maps the code."""
    net = _two_inputs()
    k = sn.compile(net, backend="c", dtype=dtype)
    ffi, lib = k.module.ffi, k.module.lib
    ctype = f"{k.module.ctype}[]"
    flat = k.pack(net.init_params(seed=0))
    X = np.zeros((3, 2 + 3), dtype=dtype)
    X[:, 2:] = [[0, 1, 2], [3, 4, 5], [6, 0, 1]]
    out = np.empty((3, K), dtype=dtype)
    work = np.empty(int(lib.EMB_TWO_WORK_PER_ROW) * 3 + int(lib.EMB_TWO_WORK_FIXED), dtype=dtype)

    def forward(x: np.ndarray) -> int:
        return lib.emb_two_forward(ffi.from_buffer(ctype, flat), ffi.from_buffer(ctype, x), 3,
                                   ffi.from_buffer(ctype, out), ffi.from_buffer(ctype, work), work.size)

    assert forward(X) == Status.OK
    for bad in (7, -1, 2.5, np.nan, 1e30):
        x = X.copy()
        x[2, 4] = bad
        assert forward(x) == Status.ERR_INDEX == lib.SYMNN_ERR_INDEX, bad
    x = X.copy()
    x[0, 1] = 1e30  # a real input may hold anything: not an index
    assert forward(x) == Status.OK
    x = X.copy()
    x[1, 3] = -1
    with pytest.raises(IndexRangeError, match="emb_two_forward: index out of range"):
        k.module._forward(net.init_params(seed=0), x)


def test_the_emitted_numpy_module_checks_indices_itself() -> None:
    net = _net(name="emb_mod")
    module = types.ModuleType("emb_mod")
    exec(sn.emit_source(net, backend="numpy"), module.__dict__)  # noqa: S102 - our own emitted text
    params, (X, Y) = _params(), _data()
    onehot = np.eye(K)[Y]
    assert np.isclose(module.loss(params, X.astype(float), onehot), sn.compile(net).loss(params, X, Y), rtol=1e-15)
    X = X.astype(float)
    X[3, 1] = V
    with pytest.raises(ValueError, match=r"X\['X'\]: index 7 of sample 3 \(position 1\)"):
        module.loss_and_grad(params, X, onehot)


def test_declarations_are_checked() -> None:
    idx, real = sn.Input(T, indices=True), sn.Input(T)
    with pytest.raises(SpecError, match=r"embedding1 \(Embedding\) reads integer indices"):
        sn.Network(inputs=real, outputs=sn.Dense(T * D, 2)(sn.Flatten()(sn.Embedding(V, D)(real))))
    with pytest.raises(SpecError, match=r"dense1 \(Dense\) is called on the index input"):
        sn.Network(inputs=idx, outputs=sn.Dense(T, 2)(idx))
    with pytest.raises(SpecError, match="rank 1"):
        sn.Input(2, 3, indices=True)
    with pytest.raises(ConfigError, match="padding_idx"):
        sn.Embedding(V, D, padding_idx=V)
    assert sn.Embedding(V, D, padding_idx=-1).padding_idx == V - 1  # PyTorch counts it from the end
    w = sn.Embedding(V, D, padding_idx=PAD).init(np.random.default_rng(0), None)["weight"]
    assert w.shape == (V, D) and np.all(w[PAD] == 0) and np.all(w[np.arange(V) != PAD] != 0)


def test_float32_refuses_a_vocabulary_it_cannot_index_exactly() -> None:
    x = sn.Input(2, indices=True)
    big = sn.Network(inputs=x, outputs=sn.Dense(2, 1)(sn.Flatten()(sn.Embedding(2**24 + 1, 1)(x))), name="big")
    with pytest.raises(ConfigError, match="more than float32 holds exactly"):
        sn.compile(big, backend="numpy", dtype="float32")


def test_spec_and_model_files_keep_the_index_input(tmp_path) -> None:
    """The TOML spec and a saved model write ``indices = true`` on the input; read back, the
    network is equal and its kernel refuses a bad index as before."""
    net, params = _net(name="emb_io"), _params()
    text = sn.dumps_spec(net)
    assert "indices = true" in text
    assert sn.loads_spec(text).network == net
    model = sn.load(sn.save(tmp_path / "emb.npz", net, params))
    assert model.network == net and model.network.graph.index_inputs == ("X",)
    X, Y = _data()
    k = sn.compile(model.network)
    assert k.loss(model.params, X, Y) == sn.compile(net).loss(params, X, Y)
    with pytest.raises(IndexRangeError):
        k.loss(model.params, X + V, Y)
