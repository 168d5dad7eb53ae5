"""The carries a loop's steps started from, read where they lie in the stored sequence (issue 23).

An LSTM's or GRU's backward loop, and its recurrent weight's gradient, read the carry each step
started from: the first carry, then the stored steps' carries but the last (the reverse
direction's: all but the first, then the first carry). That sequence was made by copying the
carries' columns out of the stored sequence, then copying them again into the concatenation with
the first carry; the C lowering now has the concatenation read each step's block where it lies
(``_KernelLowering._step_blocks``). The same values land in the same places: every result must
be the same bits as with the copy, for a fixed and a run-time length, both directions, both
dtypes, at several batch sizes; and the work buffer is never larger (the copy took a slot).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.backends.c import config as c_config

pytestmark = pytest.mark.needs_cc

F, H = 3, 5


def _net(cell: type, steps: int | None, bidirectional: bool, name: str) -> sn.Network:
    x = sn.Input(steps, F, name="x")
    h = cell(F, H, bidirectional=bidirectional, name="rnn")(x)
    return sn.Network(inputs=x, outputs=sn.Dense(H * (2 if bidirectional else 1), 2, name="fc")(h), loss="mse",
                      name=name)


#: the comment of a concatenation's part read as steps where they lie
BLOCK = r"/\* ([^*]+) steps of \d+ columns, \d+ apart in \w+ \*/"
#: (cell, T (None: given at each call), bidirectional)
CASES = [(sn.LSTM, 6, False), (sn.GRU, 5, True), (sn.LSTM, None, True)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=["lstm", "gru-bidirectional", "lstm-any-length-bidirectional"])
def test_the_carries_read_in_place_are_the_same_bits(case, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cell, steps, bidirectional = case
    net = _net(cell, steps, bidirectional, f"blocks_{cell.__name__.lower()}")
    # a forward loop's carries kept in slots of its stored steps (backends/c/slots.py, tested in
    # test_step_slots.py) read them there too: off here, to hold the blocks to the copy
    monkeypatch.setattr(c_config, "slotted_loops", lambda *args: {})
    inplace = sn.compile(net, backend="c", dtype=dtype)
    blocks = re.findall(BLOCK, Path(inplace.source_path).read_text())
    assert len(blocks) >= (2 if bidirectional else 1), blocks  # a block per direction's backward loop
    with monkeypatch.context() as m:
        m.setattr(c_config._KernelLowering, "_step_blocks", lambda self: ({}, set(), {}))
        copied = sn.compile(net, backend="c", dtype=dtype)
    assert not re.findall(BLOCK, Path(copied.source_path).read_text())
    rng = np.random.default_rng(3)
    params = {k: v.astype(dtype) for k, v in net.init_params(seed=1).items()}
    for n, t in ((1, 4), (7, 6), (13, 2)):
        X = rng.normal(size=(n, steps or t, F)).astype(dtype)
        Y = rng.normal(size=(n, 2)).astype(dtype)
        got, want = inplace.loss_and_grad(params, X, Y), copied.loss_and_grad(params, X, Y)
        assert got[0] == want[0], n
        for name in want[1]:
            np.testing.assert_array_equal(got[1][name], want[1][name], err_msg=f"{name} at n={n}")
        lengths = [] if steps else [t]
        assert _work(inplace, n, lengths) <= _work(copied, n, lengths)  # the copy took a slot of its own


def _work(kernel, n: int, lengths: list[int]) -> int:
    """The work its loss_and_grad needs, in reals (the header's ``work_size``)."""
    module = kernel.module
    need = module.ffi.new("size_t *")
    assert module._work_size(n, *lengths, need) == 0
    return int(need[0])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_new_carrys_parts_written_in_the_stored_step_are_the_same_bits(dtype: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An LSTM's h and c: their maps write them into their columns of the stored step, from
    where the new carry's concatenation reads them (``symnn.lower._parts_in_place``'s
    ``carry``), where the step's output copied (h, c) back from the carried value at every step.
    The same bits as with the copy, stacked layers and both directions included."""
    from symnn import lower

    x = sn.Input(5, F, name="x")
    h = sn.LSTM(F, H, num_layers=2, bidirectional=True, name="rnn")(x)
    net = sn.Network(inputs=x, outputs=sn.Dense(2 * H, 2, name="fc")(h), loss="mse", name="carry_parts")
    written = sn.compile(net, backend="c", dtype=dtype)
    plain = lower._parts_in_place
    with monkeypatch.context() as m:
        m.setattr(lower, "_parts_in_place", lambda *args: plain(*args[:7]))  # no carry
        copied = sn.compile(net, backend="c", dtype=dtype)
    sources = [Path(k.source_path).read_text() for k in (written, copied)]
    count = [source.count("'s columns from ") for source in sources]
    # (a hidden size of 5: no loop keeps its carry in its stored steps, backends/c/slots.py)
    assert not any("the next step starts from its state" in source for source in sources)
    assert count[0] == count[1] + 3 * 4 * 2  # h and c, in the 4 forward loops of forward, loss, loss_and_grad
    rng = np.random.default_rng(4)
    params = {k: v.astype(dtype) for k, v in net.init_params(seed=2).items()}
    for n in (1, 6, 11):
        X, Y = rng.normal(size=(n, 5, F)).astype(dtype), rng.normal(size=(n, 2)).astype(dtype)
        got, want = written.loss_and_grad(params, X, Y), copied.loss_and_grad(params, X, Y)
        assert got[0] == want[0], n
        for name in want[1]:
            np.testing.assert_array_equal(got[1][name], want[1][name], err_msg=f"{name} at n={n}")
        np.testing.assert_array_equal(written.forward(params, X), copied.forward(params, X))
