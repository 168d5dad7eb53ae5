"""A forward loop's carried state kept in the steps it stores (issue 23; backends/c/slots.py).

The C lowering gives such a loop's output one step more: in front for a forward loop (slot 0
holds the first state, step t lies in slot t + 1), at the end for a reverse one (the first state
in slot T). The carry is a pointer to the slot of the step before (no copy at each step), and
the pullback's states-each-step-started-from are T slots where they lie (no copy at all),
the recurrent weight's gradient reading those rows in groups of T (``gemm_tn_grouped``); where
that weight has fewer columns than a register tile, the rows would have to be copied out, and the
loop keeps its carry in every kernel.
The same values are summed in the same order: every result must be the same bits as the lowering
without slots, for LSTM, GRU and RNN layers, a fixed and a run-time length, stacked, masked and
bidirectional layers, both dtypes and several batch sizes; a loop whose output is read as N*T
rows (a lower layer's, by the next layer's input product) keeps its carry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.backends.c import config as c_config

pytestmark = pytest.mark.needs_cc

F = 3
#: the marker of a loop whose carry moves along the slots, and of the grouped weight gradient
MOVED = "the next step starts from its state"
GROUPED = "__gemm_tn_grouped("

#: (name, cell, hidden, T (None: given at each call), layers, bidirectional, masked, dtype,
#: whether the loop takes slots: its state's products, and so its weight's gradient, have at least
#: a register tile of columns (32 in float32, 16 in float64); else no kernel's loop does)
CASES = [
    ("lstm", sn.LSTM, 40, 6, 1, False, False, "float32", True),
    ("lstm-narrow", sn.LSTM, 5, 6, 1, False, False, "float64", False),
    ("gru-bidirectional", sn.GRU, 20, 5, 1, True, False, "float64", True),
    ("rnn", sn.RNN, 16, 4, 1, False, False, "float64", True),
    ("lstm-any-length-bidirectional", sn.LSTM, 20, None, 1, True, False, "float64", True),
    ("lstm-stacked", sn.LSTM, 40, 5, 2, False, False, "float32", True),
    ("gru-masked", sn.GRU, 16, 5, 1, False, True, "float64", True),
]


def _net(cell: type, hidden: int, steps: int | None, layers: int, bidirectional: bool, name: str,
         masked: bool = False) -> sn.Network:
    x = sn.Input(steps, F, name="x")
    layer = cell(F, hidden, num_layers=layers, bidirectional=bidirectional, masked=masked, name="rnn")
    width = hidden * (2 if bidirectional else 1)
    if masked:
        m = sn.Input(steps, name="m")
        return sn.Network(inputs=[x, m], outputs=sn.Dense(width, 2, name="fc")(layer(x, m)), loss="mse",
                          name=name)
    return sn.Network(inputs=x, outputs=sn.Dense(width, 2, name="fc")(layer(x)), loss="mse", name=name)


def _work(kernel, n: int, lengths: list[int]) -> int:
    """The work its loss_and_grad needs, in reals (the header's ``work_size``)."""
    need = kernel.module.ffi.new("size_t *")
    assert kernel.module._work_size(n, *lengths, need) == 0
    return int(need[0])


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[7]}" for c in CASES])
def test_the_slots_give_the_same_bits(case, monkeypatch: pytest.MonkeyPatch) -> None:
    name, cell, hidden, steps, layers, bidirectional, masked, dtype, slotted = case
    net = _net(cell, hidden, steps, layers, bidirectional, f"slots_{name.replace('-', '_')}", masked)
    slots = sn.compile(net, backend="c", dtype=dtype)
    source = Path(slots.source_path).read_text()
    # forward, loss and loss_and_grad each run the loop (the last layer's; each direction's)
    assert source.count(MOVED) == 3 * slotted * (2 if bidirectional else 1), source.count(MOVED)
    assert (GROUPED in source) == (slotted and cell is not sn.RNN)  # an RNN's states are its steps
    with monkeypatch.context() as m:
        m.setattr(c_config, "slotted_loops", lambda *args: {})
        plain = sn.compile(net, backend="c", dtype=dtype)
    assert MOVED not in Path(plain.source_path).read_text()
    rng = np.random.default_rng(5)
    params = {k: v.astype(dtype) for k, v in net.init_params(seed=3).items()}
    E = 7 * hidden  # the widest stored step (an LSTM's: h, c, four gates, tanh(c))
    for n, t in ((1, 4), (7, 6), (13, 2)):
        X = rng.normal(size=(n, steps or t, F)).astype(dtype)
        if masked:  # sample i keeps its first 5 - i % 5 steps
            X = {"x": X, "m": (np.arange(steps) < steps - np.arange(n)[:, None] % steps).astype(dtype)}
        Y = rng.normal(size=(n, 2)).astype(dtype)
        got, want = slots.loss_and_grad(params, X, Y), plain.loss_and_grad(params, X, Y)
        assert got[0] == want[0], n
        for p in want[1]:
            np.testing.assert_array_equal(got[1][p], want[1][p], err_msg=f"{p} at n={n}")
        np.testing.assert_array_equal(slots.forward(params, X), plain.forward(params, X))
        lengths = [] if steps else [t]
        # the slot in front is one step more of the stored sequence (the carry's own buffer and,
        # in the loss-and-gradient kernel, the copy of T steps of states go)
        assert _work(slots, n, lengths) <= _work(plain, n, lengths) + n * E


def test_the_train_step_trains_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C train step (its own loss-and-gradient kernel, gradients kept in work) through a few
    SGD-momentum steps: the same parameters, bit for bit, with and without slots."""
    dtype = "float32"
    net = _net(sn.LSTM, 40, 6, 1, False, "slots_train")
    opt = sn.Momentum(lr=0.05, momentum=0.9)
    slots = sn.compile(net, backend="c", dtype=dtype, optimizer=opt)
    with monkeypatch.context() as m:
        m.setattr(c_config, "slotted_loops", lambda *args: {})
        plain = sn.compile(net, backend="c", dtype=dtype, optimizer=opt)
    assert MOVED in Path(slots.source_path).read_text()
    rng = np.random.default_rng(6)
    X = rng.normal(size=(9, 6, F)).astype(dtype)
    Y = rng.normal(size=(9, 2)).astype(dtype)
    params = net.init_params(seed=4)
    a, b = slots.pack(params), plain.pack(params)
    sa, sb = slots.init_state(), plain.init_state()
    for step in (1, 2, 3):
        assert slots.train_step(a, sa, X, Y, step) == plain.train_step(b, sb, X, Y, step)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)


def test_a_lower_layers_loop_keeps_its_carry() -> None:
    """A lower layer's output is read as N*T rows by the next layer's input product: its loop
    keeps its carry; the top layer's takes slots (in all three kernels: a hidden size of 32, a
    register tile of float64)."""
    stacked = _net(sn.GRU, 32, 5, 3, False, "slots_stack")
    source = sn.emit_source(stacked, backend="c")
    assert source.count(MOVED) == 3 and source.count("for (ptrdiff_t s") == 3 * 3 + 3


def test_a_layer_applied_twice_packs_its_weight_before_each_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """One LSTM read by two inputs: two loops over time share its weights, each with its own
    packed panels of W_hh (one buffer name per loop: the same name twice did not compile), its own
    slots and grouped weight gradients, summed; the same bits as without slots, and NumPy's
    result to float64's rounding."""
    x1, x2 = sn.Input(5, F, name="a"), sn.Input(5, F, name="b")
    lstm = sn.LSTM(F, 20, name="r")
    net = sn.Network(inputs=[x1, x2], outputs=sn.Dense(40, 1, name="fc")(sn.Concat()(lstm(x1), lstm(x2))),
                     loss="mse", name="slots_shared")
    slots = sn.compile(net, backend="c")
    source = Path(slots.source_path).read_text()
    assert source.count(MOVED) == 6 and "r_weight_hh_l0_pkn2" in source
    with monkeypatch.context() as m:
        m.setattr(c_config, "slotted_loops", lambda *args: {})
        plain = sn.compile(net, backend="c")
    reference = sn.compile(net, backend="numpy")
    rng = np.random.default_rng(7)
    X = {"a": rng.normal(size=(6, 5, F)), "b": rng.normal(size=(6, 5, F))}
    Y = rng.normal(size=(6, 1))
    params = net.init_params(seed=5)
    got, want, ref = (k.loss_and_grad(params, X, Y) for k in (slots, plain, reference))
    assert got[0] == want[0] and abs(got[0] - ref[0]) <= 1e-13 * abs(ref[0])
    for p in ref[1]:
        np.testing.assert_array_equal(got[1][p], want[1][p], err_msg=p)
        np.testing.assert_allclose(got[1][p], ref[1][p], rtol=1e-12, atol=1e-15, err_msg=p)
