"""Padded batches (``masked=True``), truncated backpropagation through time (``truncate=k``) and
bidirectional layers of the recurrent layers, against PyTorch: ``pack_padded_sequence`` of the
samples' lengths, the state ``detach()``-ed every k steps, ``bidirectional=True`` (over packed
sequences too: the reverse direction starts at each sample's last real step). Both backends, the
printed derivation, float64.

A padded step leaves the state as it was: the last state is the one after a sample's last real
step and the sequence output is 0 at the padding (``pad_packed_sequence``). A truncated pullback
restarts its carried cotangent after steps 0, k, 2k, ...: what autograd computes when the state
entering those steps is detached, the forward pass being the whole sequence's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import symnn as sn
from symnn.errors import LayerSizeMismatchError, SpecError, SpecTypeError
from tests.layer_graphs import rel_max

T, I, H, N = 7, 3, 4, 5
LENGTHS = np.array([7, 3, 5, 1, 6])  # unsorted, one of a single step, one whole

#: (name, kind, layers, whole sequence out, masked, truncate, bidirectional): each kind masked,
#: truncated and bidirectional once
CASES = [
    ("rnn_masked_seq", "RNN", 2, True, True, None, False),
    ("gru_masked_last", "GRU", 1, False, True, None, False),
    ("lstm_masked_last", "LSTM", 2, False, True, None, False),
    ("lstm_masked_seq", "LSTM", 1, True, True, None, False),
    ("rnn_truncated", "RNN", 1, False, False, 3, False),
    ("gru_truncated_seq", "GRU", 1, True, False, 2, False),
    ("lstm_truncated", "LSTM", 2, False, False, 3, False),
    ("lstm_truncated_masked", "LSTM", 1, True, True, 1, False),
    ("rnn_bidi_seq", "RNN", 2, True, False, None, True),
    ("gru_bidi_masked_seq", "GRU", 1, True, True, None, True),
    ("lstm_bidi_masked_last", "LSTM", 2, False, True, None, True),
]


def _width(case) -> int:
    """The layer's output per step: both directions' states side by side when bidirectional."""
    return 2 * H if case[6] else H


def _net(case) -> sn.Network:
    name, kind, layers, seqs, masked, truncate, bidi = case
    x = sn.Input(T, I, name="x")
    inputs = [x, sn.Input(T, name="m")] if masked else [x]
    y = getattr(sn, kind)(I, H, num_layers=layers, return_sequences=seqs, masked=masked, truncate=truncate,
                          bidirectional=bidi)(*inputs)
    out = sn.Flatten()(y) if seqs else y
    return sn.Network(inputs=inputs if masked else x, outputs=out, loss="mse", name=name)


def _data(case, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, T, I))
    M = (np.arange(T)[None, :] < LENGTHS[:, None]).astype(float)
    Y = rng.normal(size=(N, T * _width(case) if case[3] else _width(case)))
    return X, M, Y


def _torch(case, net: sn.Network, params: dict, X, Y) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and gradients as PyTorch computes them: packed sequences where masked, the state
    detached every ``truncate`` steps where truncated; symnn's last state of a bidirectional
    layer is ``torch.cat((h_n[-2], h_n[-1]), 1)``."""
    _, kind, layers, seqs, masked, truncate, bidi = case
    mod = getattr(torch.nn, kind)(I, H, num_layers=layers, batch_first=True, bidirectional=bidi).double()
    layer = net.graph.names[0]
    with torch.no_grad():
        for k, v in mod.named_parameters():
            v.copy_(torch.tensor(params[f"{layer}.{k}"]))
    x = torch.tensor(X)
    chunk = truncate or T
    state, outs = None, []
    for a in range(0, T, chunk):
        if state is not None:
            state = tuple(s.detach() for s in state) if kind == "LSTM" else state.detach()
        part = x[:, a:a + chunk]
        if masked:
            lengths = np.clip(LENGTHS - a, 0, part.shape[1])
            alive = lengths > 0
            assert alive.all() or chunk == T or truncate is not None
            # a sample whose sequence ended before this chunk keeps its state: packed sequences
            # need a length of at least 1, so those rows are run on a dummy step and restored
            packed = torch.nn.utils.rnn.pack_padded_sequence(part, torch.tensor(np.maximum(lengths, 1)),
                                                             batch_first=True, enforce_sorted=False)
            o, new = mod(packed, state)
            o, _ = torch.nn.utils.rnn.pad_packed_sequence(o, batch_first=True, total_length=part.shape[1])
            keep = torch.tensor(alive)
            o = o * keep[:, None, None]
            if state is not None:
                pick = (lambda n, s: torch.where(keep[None, :, None], n, s))
                new = tuple(pick(n, s) for n, s in zip(new, state)) if kind == "LSTM" else pick(new, state)
            state = new
        else:
            o, state = mod(part, state)
        outs.append(o)
    out = torch.cat(outs, 1)
    if seqs:
        pred = out.reshape(N, -1)
    else:
        h = state[0] if kind == "LSTM" else state
        pred = torch.cat((h[-2], h[-1]), 1) if bidi else h[-1]
    loss = ((pred - torch.tensor(Y)) ** 2).mean()
    loss.backward()
    return loss.item(), {f"{layer}.{k}": v.grad.numpy() for k, v in mod.named_parameters()}


#: the cases C runs too, in one compiler run (each kind masked, a truncated stack); NumPy runs all
IN_C = ("rnn_masked_seq", "gru_masked_last", "lstm_masked_last", "lstm_truncated", "lstm_bidi_masked_last")


@pytest.fixture(scope="module")
def c_kernels() -> dict[str, sn.Kernel]:
    cases = [c for c in CASES if c[0] in IN_C]
    return dict(zip((c[0] for c in cases), sn.compile_many([_net(c) for c in cases], backend="c")))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_masks_and_truncation_match_torch(case, c_kernels) -> None:
    net = _net(case)
    params = net.init_params(seed=1)
    X, M, Y = _data(case)
    data = {"x": X.reshape(N, -1), "m": M} if case[4] else X.reshape(N, -1)
    want_loss, want = _torch(case, net, params, X, Y)
    kernels = {"numpy": sn.compile(net, backend="numpy")}
    if case[0] in c_kernels:
        kernels["c"] = c_kernels[case[0]]
    for backend, k in kernels.items():
        loss, grads = k.loss_and_grad(params, data, Y)
        assert abs(loss - want_loss) <= 1e-12 * max(1.0, abs(want_loss)), backend
        for name, g in want.items():
            assert rel_max(grads[name], g) <= 1e-10, (backend, name)
    # the printed derivation computes the same
    loss, grads = sn.derive(net).evaluate(params, data, Y)
    assert abs(loss - want_loss) <= 1e-12 * max(1.0, abs(want_loss))
    for name, g in want.items():
        assert rel_max(grads[name], g) <= 1e-10, name


def test_a_padded_step_holds_the_state_and_outputs_zero() -> None:
    case = CASES[3]  # an LSTM's whole sequence
    net = _net(case)
    params = net.init_params(seed=2)
    X, M, _ = _data(case)
    k = sn.compile(net, backend="numpy")
    out = k.forward(params, {"x": X.reshape(N, -1), "m": M}).reshape(N, T, H)
    assert np.all(out[M == 0] == 0.0) and np.all(np.abs(out[M == 1]).sum(axis=-1) > 0)
    # what follows the padding does not matter: other values there give the same outputs
    X2 = np.where(M[:, :, None] == 1, X, 1e3)
    assert np.array_equal(k.forward(params, {"x": X2.reshape(N, -1), "m": M}), out.reshape(N, -1))


def test_bad_masks_and_truncations_are_refused() -> None:
    x = sn.Input(T, I)
    with pytest.raises(LayerSizeMismatchError, match="mask of shape"):
        sn.LSTM(I, H, masked=True)(x, sn.Input(T + 1))
    with pytest.raises(SpecError, match="and its mask"):
        sn.GRU(I, H, masked=True)(x)
    with pytest.raises(SpecTypeError, match="truncate"):
        sn.RNN(I, H, truncate=0)
    with pytest.raises(SpecTypeError, match="masked"):
        sn.LSTM(I, H, masked="yes")
    with pytest.raises(SpecTypeError, match="bidirectional"):
        sn.GRU(I, H, bidirectional=1)
    with pytest.raises(SpecError, match="bidirectional=True, truncate=3"):
        sn.LSTM(I, H, bidirectional=True, truncate=3)
