"""Padded batches of sequences with real targets (issue 23): a masked recurrent layer's every-step
output (``masked=True, return_sequences=True``), and what maps its steps one by one after it
(Dense, LayerNorm, Activate, Dropout), carry the layer's mask to the output's loss, as Keras's
masks do: each step's loss terms are weighed by its mask and the mean is over the masked steps
(times the width for a mean over entries), so padding adds nothing. PyTorch's counterpart is
``pack_padded_sequence`` and ``((pred - y)**2 * m).sum() / (m.sum() * K)``; each case is held to
it (loss and every gradient, float64, 1e-10 relative: a few hundred roundings at u = 2**-53
through T = 5 steps) on both backends, float32 within its error analysis, and to central
differences. A batch of padding only is 0/0: a DataError, SYMNN_ERR_EMPTY in C (the harness of
tests/integration/test_c_standalone.py). A flattened sequence is features, not steps: no mask.
"""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.errors import DataError, PaddingOnlyError

torch = pytest.importorskip("torch")
from tests.layer_graphs import rel  # noqa: E402

nn = torch.nn
N, T, F, H, K = 7, 5, 3, 4, 2
LENGTHS = np.array([5, 3, 1, 4, 2, 5, 1])
BACKENDS = ["numpy", "c"]


def _net(head: str, length: int | None = T) -> sn.Network:
    """A masked LSTM's every step, then per step: ``mse`` a Dense (MSE), ``bce`` LayerNorm,
    tanh and a sigmoid Dense (BCE: the fused logits form), ``flat`` the steps flattened into
    the loss (features: no mask), ``add`` a residual tanh Dense added to the steps, ``cat`` the
    steps joined with the unmasked input's (Keras ANDs the masks of a join: the LSTM's), then a
    Dense (MSE)."""
    x, m = sn.Input(length, F, name="x"), sn.Input(length, name="m")
    h = sn.LSTM(F, H, return_sequences=True, masked=True, name="lstm")(x, m)
    if head == "add":
        h = h + sn.Dense(H, H, "tanh", name="res")(h)
    elif head == "cat":
        h = sn.concat([h, x])
    if head == "bce":
        h = sn.Activate("tanh")(sn.LayerNorm(H, name="ln")(h))
        out = sn.Dense(H, K, "sigmoid", name="fc")(h)
    elif head == "flat":
        out = sn.Flatten()(sn.Dense(H, K, name="fc")(h))
    else:
        out = sn.Dense(H + F if head == "cat" else H, K, name="fc")(h)
    return sn.Network(inputs=[x, m], outputs=out, loss="bce" if head == "bce" else "mse", name=f"masked_{head}")


def _data(seed: int = 6, steps: int = T, lengths: np.ndarray = LENGTHS, head: str = "mse"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, steps, F))
    M = (np.arange(steps)[None, :] < np.minimum(lengths, steps)[:, None]).astype(np.float64)
    Y = rng.uniform(size=(N, steps, K)) if head == "bce" else rng.normal(size=(N, steps, K))
    return X, M, (Y.reshape(N, -1) if head == "flat" else Y)


def _torch(head: str, params: dict, X: np.ndarray, M: np.ndarray, Y: np.ndarray) -> tuple[float, dict]:
    """PyTorch's loss and gradients: the packed LSTM, zeros at the padded steps
    (``pad_packed_sequence``), the head per step, the loss masked (mse, bce) or over every entry
    (flat)."""
    modules = {"lstm": nn.LSTM(F, H, batch_first=True).double(),
               "fc": nn.Linear(H + F if head == "cat" else H, K).double()}
    if head == "bce":
        modules["ln"] = nn.LayerNorm(H).double()
    if head == "add":
        modules["res"] = nn.Linear(H, H).double()
    with torch.no_grad():
        for prefix, module in modules.items():
            for name, p in module.named_parameters():
                p.copy_(torch.from_numpy(params[f"{prefix}.{name}"]))
    lengths = torch.from_numpy(M.sum(axis=1).astype(np.int64))
    packed = nn.utils.rnn.pack_padded_sequence(torch.from_numpy(X), lengths, batch_first=True, enforce_sorted=False)
    out, _ = nn.utils.rnn.pad_packed_sequence(modules["lstm"](packed)[0], batch_first=True, total_length=X.shape[1])
    y, m = torch.from_numpy(Y), torch.from_numpy(M)[..., None]
    if head == "add":
        out = out + torch.tanh(modules["res"](out))
    elif head == "cat":
        out = torch.cat((out, torch.from_numpy(X)), dim=-1)
    if head == "bce":
        z = modules["fc"](torch.tanh(modules["ln"](out)))
        terms = nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
        loss = (terms * m).sum() / (m.sum() * K)
    elif head == "flat":
        loss = ((modules["fc"](out).reshape(N, -1) - y) ** 2).mean()
    else:
        loss = (((modules["fc"](out) - y) ** 2) * m).sum() / (m.sum() * K)
    loss.backward()
    return loss.item(), {f"{prefix}.{name}": p.grad.numpy() for prefix, module in modules.items()
                         for name, p in module.named_parameters()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("head", ["mse", "bce", "flat", "add", "cat"])
def test_padded_steps_of_real_targets_are_left_out_as_pytorch_masks_them(backend: str, head: str) -> None:
    net = _net(head)
    params = net.init_params(seed=2)
    X, M, Y = _data(head=head)
    loss_ref, grads_ref = _torch(head, params, X, M, Y)
    k = sn.compile(net, backend=backend)
    data = {"x": X, "m": M}
    loss, grads = k.loss_and_grad(params, data, Y)
    assert abs(loss - loss_ref) <= 1e-10 * abs(loss_ref)
    assert k.loss(params, data, Y) == pytest.approx(loss, rel=1e-14)
    for key, g in grads_ref.items():
        assert rel(grads[key], g) <= 1e-10, key
    junk = Y.copy()  # what the targets hold at padded steps does not matter, but for a flattened output
    if head == "flat":
        junk[:, 0] += 1.0
        assert k.loss(params, data, junk) != pytest.approx(loss, rel=1e-6)
    else:
        junk[M == 0] = 1e3 if head == "mse" else 0.5
        assert k.loss(params, data, junk) == pytest.approx(loss, rel=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_within_its_error_analysis(backend: str) -> None:
    """float32 against PyTorch's float64: each gradient entry a chain of T (F + H) products at
    u = 2**-24 through gates of derivative <= 1, T (F + H) u ~ 1.4e-5 by norm; 1e-4 is that with
    room for the mask's mean."""
    net = _net("mse")
    params = net.init_params(seed=2)
    X, M, Y = _data()
    loss_ref, grads_ref = _torch("mse", params, X, M, Y)
    k = sn.compile(net, backend=backend, dtype="float32")
    loss, grads = k.loss_and_grad({p: v.astype(np.float32) for p, v in params.items()},
                                  {"x": X.astype(np.float32), "m": M.astype(np.float32)}, Y.astype(np.float32))
    assert abs(loss - loss_ref) <= 1e-4 * abs(loss_ref)
    for key, g in grads_ref.items():
        assert rel(grads[key], g) <= 1e-4, key


def test_any_length_takes_each_calls_masks() -> None:
    """One C kernel for every T (``sn.Input(None, F)``): each call's masks weigh its steps."""
    net = _net("mse", length=None)
    params = net.init_params(seed=2)
    k = sn.compile(net, backend="c")
    for steps in (3, 8):
        X, M, Y = _data(seed=steps, steps=steps, lengths=np.minimum(LENGTHS + steps - 5, steps).clip(1))
        loss_ref, grads_ref = _torch("mse", params, X, M, Y)
        loss, grads = k.loss_and_grad(params, {"x": X, "m": M}, Y)
        assert abs(loss - loss_ref) <= 1e-10 * abs(loss_ref)
        assert all(rel(grads[key], g) <= 1e-10 for key, g in grads_ref.items())


def test_against_central_differences() -> None:
    net = _net("bce")
    params = net.init_params(seed=3)
    X, M, Y = _data(head="bce")
    report = sn.gradcheck(sn.compile(net, backend="numpy"), params, {"x": X, "m": M}, Y)
    assert report.passed, report


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_of_padding_only_is_refused_before_any_work(backend: str) -> None:
    net = _net("mse")
    params = net.init_params(seed=2)
    X, M, Y = _data()
    k = sn.compile(net, backend=backend)
    data = {"x": X, "m": np.zeros_like(M)}
    grads = k.new_params() if backend == "c" else None
    for g in (grads or {}).values():
        g[...] = 7.0
    with pytest.raises(DataError, match=r"X\['m'\]: every step is padding"):
        k.loss(params, data, Y)
    with pytest.raises(DataError, match="every step is padding"):
        k.loss_and_grad(params, data, Y, **({"out": grads} if grads is not None else {}))
    if grads is not None:  # nothing written where the batch was refused
        assert all((g == 7.0).all() for g in grads.values())
    assert k.forward(params, data).shape == (N, T, K)  # forward needs no step: it computes no mean


def test_the_derivation_prints_the_mean_over_the_masked_steps() -> None:
    """The loss and its delta are printed from the records the kernels come from: the steps'
    loss terms times the mask, over the mask's sum (times K = 2 for MSE's mean over entries)."""
    tex = sn.derive(_net("mse")).latex()
    delta = next(line for line in tex.split("\n") if line.startswith(r"{\delta^{(\mathrm{fc})}}"))
    assert r"\frac{" in delta and r"{2 \sum_{k=1}^{5 N}" in delta


def test_sequences_of_different_masks_are_not_joined() -> None:
    """Two masks meeting in a join would need their AND (Keras's merge layers): refused by name,
    before any kernel is built, rather than a loss over steps one of them pads."""
    x, m1, m2 = sn.Input(T, F, name="x"), sn.Input(T, name="m1"), sn.Input(T, name="m2")
    a = sn.GRU(F, H, return_sequences=True, masked=True, name="a")(x, m1)
    b = sn.GRU(F, H, return_sequences=True, masked=True, name="b")(x, m2)
    out = sn.Dense(H, K, name="fc")(a + b)
    net = sn.Network(inputs=[x, m1, m2], outputs=out, loss="mse")
    with pytest.raises(sn.SpecError, match=r"layer '\w+' joins sequences padded by different masks \('m1', 'm2'\)"):
        sn.compile(net, backend="numpy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_skips_a_batch_of_padding_only(backend: str) -> None:
    """``sn.train`` takes no step on a mini-batch whose every step is padding (its mean loss is
    0/0): nothing to learn, no step counted (Adam's bias correction), the epoch's loss over the
    batches taken. A whole epoch of padding only is refused."""
    net = _net("mse")
    X, M, Y = _data()
    M[[1, 4]] = 0.0  # two samples with no real step
    res = sn.train(net, {"x": X, "m": M}, Y, batch_size=1, epochs=2, backend=backend, seed=3)
    assert res.steps == 2 * (N - 2)
    assert np.isfinite(res.history.train_loss).all()
    # the same run, step by step: the batches of one sample each, in the run's order, the padded
    # ones left out; each step's Adam count the number of steps taken before it, plus one
    k = res.kernel
    theta, state = k.pack(net.init_params(seed=3)), k.init_state()
    rng, step = np.random.default_rng(3), 0
    for _ in range(2):
        for i in rng.permutation(N):
            if M[i].any():
                step += 1
                k.train_step(theta, state, {"x": X[i:i + 1], "m": M[i:i + 1]}, Y[i:i + 1], step)
    assert all(np.array_equal(res.params[name], value) for name, value in k.unpack(theta).items())
    with pytest.raises(PaddingOnlyError, match="every step is padding|every batch is padding only"):
        sn.train(net, {"x": X, "m": np.zeros_like(M)}, Y, batch_size=2, epochs=1, backend=backend)


def test_training_skips_a_batch_of_padded_labels_only() -> None:
    """The same for a tagger's class labels: a sample whose every label is -100 (PyTorch's
    ignore_index) is no step on its own; the C kernel would refuse it (SYMNN_ERR_EMPTY)."""
    x = sn.Input(T, F, name="x")
    out = sn.Dense(H, 3, "softmax", name="fc")(sn.GRU(F, H, return_sequences=True, name="gru")(x))
    net = sn.Network(inputs=x, outputs=out, loss="cross_entropy")
    rng = np.random.default_rng(4)
    X, labels = rng.normal(size=(N, T, F)), rng.integers(0, 3, size=(N, T))
    labels[[0, 5]] = -100
    res = sn.train(net, X, labels, batch_size=1, epochs=1, backend="c", seed=1)
    assert res.steps == N - 2 and np.isfinite(res.history.train_loss).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_data_parallel_training_leaves_out_blocks_of_padding_only(backend: str) -> None:
    """Data-parallel steps (``parts=``): a part's block whose every step is padding adds
    nothing to the step's gradient (its share is zero, not NaN); a step of such blocks only is
    no step. Before, the run stopped with a NonFiniteError (0/0) at the first such block."""
    net = _net("mse")
    X, M, Y = _data()
    M[[0, 1, 4]] = 0.0  # parts of 4 and 3 samples, one row of each a step: 4 steps an epoch
    res = sn.train(net, {"x": X, "m": M}, Y, batch_size=2, epochs=3, parts=2, backend=backend, seed=1)
    assert np.isfinite(res.history.train_loss).all() and 0 < res.steps < 3 * 4  # some steps had no step
    assert all(np.isfinite(v).all() for v in res.params.values())
    with pytest.raises(PaddingOnlyError, match="every block is padding only"):
        sn.train(net, {"x": X, "m": np.zeros_like(M)}, Y, batch_size=2, epochs=1, parts=2, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("target", ["masks", "labels"])
def test_a_data_parallel_step_is_the_mean_over_every_kept_step(backend: str, target: str) -> None:
    """A data-parallel step weighs each part's block by its kept steps (masks' sum, labelled
    steps), not its rows: its gradient is that of the mean over every kept step of the step, as
    one process takes it on the whole batch, wherever the padding lies. One step an epoch (each
    part's block is the whole part) under SGD: the update of ``parts=2`` is the whole batch's
    (float64, summed in another order). By rows, the parts of 4 and 3 samples would weigh 4/7 and
    3/7 where their 13 and 8 kept steps of 21 weigh 13/21 and 8/21."""
    if target == "masks":
        net = _net("mse")
        X, M, Y = _data()
        data, y = {"x": X, "m": M}, Y
    else:  # a tagger's labels, -100 at padded steps (LENGTHS' steps labelled)
        x = sn.Input(T, F, name="x")
        out = sn.Dense(H, 3, "softmax", name="fc")(sn.GRU(F, H, return_sequences=True, name="gru")(x))
        net = sn.Network(inputs=x, outputs=out, loss="cross_entropy", name="tagger")
        rng = np.random.default_rng(8)
        data, y = rng.normal(size=(N, T, F)), rng.integers(0, 3, size=(N, T))
        y[np.arange(T)[None, :] >= LENGTHS[:, None]] = -100
    kw = dict(batch_size=N, epochs=1, optimizer=sn.SGD(lr=0.5), backend=backend, seed=1)
    start = net.init_params(seed=1)
    whole = sn.train(net, data, y, **kw)
    split = sn.train(net, data, y, parts=2, **kw)
    assert whole.steps == split.steps == 1
    for name, p0 in start.items():
        assert rel(split.params[name] - p0, whole.params[name] - p0) <= 1e-12, name
