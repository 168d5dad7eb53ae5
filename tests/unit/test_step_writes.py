"""A loop step's concatenations written where its END would copy them (``lower.step_writes``).

An LSTM's step stacks its gates and states into one block of the loop's output and its new
(h, c) into the carried value; the C lowering writes both in place instead of copying each at
every step. What may be written in place is a property of the plan: these tests pin which
values qualify, that the C kernels then copy nothing at the loop's end, and that a value is
left alone where writing it in place would be wrong (a truncated loop zeroes its carried
value; a masked step's new state is no concatenation). The numbers (C against NumPy and
PyTorch, sanitizers) are the recurrent tests' (test_recurrent*.py), which run these kernels."""

from __future__ import annotations

import warnings

import pytest

import symnn as sn
from symnn.driver import derive_program
from symnn.lower import StepRole, column_views, plan_kernel, step_writes


def _net(layer: sn.Layer, masked: bool = False) -> sn.Network:
    x = sn.Input(6, 3, name="x")
    if masked:
        m = sn.Input(6, name="m")
        return sn.Network(inputs=[x, m], outputs=sn.Dense(5, 1, name="fc")(layer(x, m)), loss="mse", name="sw")
    return sn.Network(inputs=x, outputs=sn.Dense(5, 1, name="fc")(layer(x)), loss="mse", name="sw")


def _roles(net: sn.Network, kernel: str = "loss_and_grad") -> list[StepRole]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_kernel(derive_program(net).program, kernel)
    return sorted((w.role for w in step_writes(plan, column_views(plan)).values() if w.role is not StepRole.PART),
                  key=lambda r: r.name)


def _parts(net: sn.Network, kernel: str = "loss_and_grad") -> list[int]:
    """The first columns (within the step) of the parts of a step's output that their maps write
    in place, in order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_kernel(derive_program(net).program, kernel)
    return sorted(w.offset for w in step_writes(plan, column_views(plan)).values() if w.role is StepRole.PART)


def test_the_parts_of_a_step_are_written_in_their_columns() -> None:
    """An LSTM's step output stacks (h, c) (the new carry, a concatenation written into the
    carried value), its four gates and tanh(c), each made by a map read in place: the maps write
    them straight into their columns (H = 5: 10, 15, 20, 25, 30), and h's and c's maps theirs
    too (0, 5), from where the carry's concatenation reads them; backpropagation's step output,
    the four gates' cotangents, likewise (0, 5, 10, 15). A plain RNN's step is one map, its own
    output: no parts."""
    lstm = _net(sn.LSTM(3, 5, name="r"))
    assert _parts(lstm, "forward") == [0, 5, 10, 15, 20, 25, 30]
    assert _parts(lstm) == [0, 0, 5, 5, 10, 10, 15, 15, 20, 25, 30]
    assert _parts(_net(sn.RNN(3, 5, name="r"))) == []


def test_an_lstm_writes_each_step_in_place_both_ways() -> None:
    """Forward loop and backpropagation through time: the step's block of the output and the
    new carried value, in each of a stacked LSTM's layers."""
    assert _roles(_net(sn.LSTM(3, 5, name="r")), "forward") == [StepRole.CARRY, StepRole.OUT]
    assert _roles(_net(sn.LSTM(3, 5, name="r"))) == [StepRole.CARRY] * 2 + [StepRole.OUT] * 2
    assert _roles(_net(sn.LSTM(3, 5, num_layers=2, name="r"))) == [StepRole.CARRY] * 4 + [StepRole.OUT] * 4


def test_what_would_be_wrong_in_place_keeps_its_copy() -> None:
    """A truncated loop zeroes its carried value after some steps, so backpropagation's new
    carry keeps its copy; a masked step's new state holds the old one at padded steps (an
    element-wise choice reading it, no concatenation); a plain RNN's step is one map."""
    assert _roles(_net(sn.LSTM(3, 5, truncate=2, name="r"))) == [StepRole.CARRY, StepRole.OUT, StepRole.OUT]
    assert StepRole.CARRY not in _roles(_net(sn.LSTM(3, 5, masked=True, name="r"), masked=True))
    assert _roles(_net(sn.RNN(3, 5, name="r"))) == []


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_c_loop_end_copies_nothing_and_work_shrinks(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The LSTM's emitted loops end with no copy, and the loss-and-gradient kernel's work is
    no larger at any batch, and smaller at some, than the same lowering's with every value
    copied at the END."""
    from symnn.backends.c import config
    from symnn.backends.c.emit import emit_c

    net = _net(sn.LSTM(3, 5, name="r"))
    source = sn.emit_source(net, backend="c", dtype=dtype)
    # the forward loops of forward, loss and loss_and_grad, and backpropagation through time (a
    # hidden size of 5: no loop keeps its carry in its stored steps, backends/c/slots.py)
    assert source.count("each written there in place") == 4
    assert "the next step starts from its state" not in source
    assert "[e] = t22[e]" not in source
    # each gate, tanh(c), h and c written by its map into its columns of the stored step, in
    # the three kernels' forward loops (7 each), and the gates' cotangents in backpropagation's (4)
    assert source.count("'s columns from ") == 3 * 7 + 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = derive_program(net).program
    # the carry kept in the stored steps (backends/c/slots.py, its own tests) off in both: the
    # copies at the END against none
    monkeypatch.setattr(config, "slotted_loops", lambda *args: {})
    in_place = emit_c(net, program, dtype).work["loss_and_grad"]
    monkeypatch.setattr(config, "step_writes", lambda plan, views: {})
    copied = emit_c(net, program, dtype).work["loss_and_grad"]
    # the work at every batch no larger, and smaller at some (the arena lays both out tightly
    # at its design batch, where the copies' extra values fit into dead ones' space)
    batches = (1, 8, 64, 512)
    assert all(in_place.at(n) <= copied.at(n) for n in batches)
    assert any(in_place.at(n) < copied.at(n) for n in batches)
