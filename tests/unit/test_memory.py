"""The liveness lower bound of a kernel's work (symnn.memory): exact on a small chain, and never
above what the C lowering allocates (a work buffer smaller than the bound would hold two live
values in one place: a lowering bug or a wrong bound)."""

from __future__ import annotations

import pytest

import symnn as sn
from symnn.driver import derive_program
from symnn.lower import plan_kernel
from symnn.memory import live_peak, work_table


def test_the_bound_of_a_dense_chain_is_its_largest_live_set() -> None:
    """64-32-10 relu/softmax, forward at n rows: z1 (n x 32) is relu'd in place into a1 or read
    while a1 is written; then z2 (n x 10) and its softmax. Every value is work but the output."""
    net = sn.Network([sn.Dense(64, 32, "relu"), sn.Dense(32, 10, "softmax")], loss="cross_entropy")
    plan = plan_kernel(derive_program(net).program, "forward")
    n = 5
    sizes = {st.target: st.shape for st in plan.stmts}
    # the peak is at most every value's size at once, and at least the largest single value
    # that is not the output
    out = set(plan.outputs.values())
    single = max((n * int(s[1]) if s[0] == sn.naming.N else 0) for t, s in sizes.items() if t not in out)
    total = sum(n * int(s[1]) for t, s in sizes.items() if t not in out and len(s) == 2)
    assert single <= live_peak(plan, n) <= total
    # keeping the outputs alive to the end adds the output itself
    assert live_peak(plan, n, keep_outputs=True) >= live_peak(plan, n)


def _cnn() -> sn.Network:
    x = sn.Input(2, 6, 6)
    h = sn.MaxPool2d(2)(sn.Conv2d(2, 4, 3, padding=1, activation="relu")(x))
    y = sn.Dense(36, 3, activation="softmax")(sn.Flatten()(h))
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy")


def _residual() -> sn.Network:
    x = sn.Input(8)
    h = x + sn.Dense(8, 8, activation="tanh")(sn.LayerNorm(8)(x))
    return sn.Network(inputs=x, outputs=sn.Dense(8, 2, activation="softmax")(h), loss="cross_entropy")


@pytest.mark.parametrize("make", [_cnn, _residual,
                                  lambda: sn.Network([sn.Dense(4, 16, "relu"), sn.Dense(16, 1, "sigmoid")],
                                                     loss="bce")])
@pytest.mark.parametrize("n", [1, 7, 64])
def test_no_c_kernel_uses_less_work_than_its_schedule_keeps_alive(make, n: int) -> None:
    rows = work_table(make(), optimizer=sn.Adam(lr=0.01), n=n)
    assert [r.kernel for r in rows] == ["forward", "loss", "loss_and_grad", "train_step"]
    for r in rows:
        assert r.bound > 0 and r.work >= r.bound, r


def test_the_reports_state_each_kernels_work_and_its_bound() -> None:
    from symnn.report_doc import WORK_BATCH, report_tex
    from symnn.report_html import report_html

    net = _cnn()
    rows = {r.kernel: r for r in work_table(net, optimizer=sn.SGD(lr=0.1), n=WORK_BATCH)}
    tex = report_tex(net)
    assert "Work memory of the C kernels" in tex
    line = next(x for x in tex.splitlines() if x.startswith(r"\texttt{loss\_and\_grad}"))
    assert f"{rows['loss_and_grad'].work * 8:,}" in line and f"{rows['loss_and_grad'].bound * 8:,}" in line
    assert f"train_step {rows['train_step'].work * 8:,}" in report_html(net)


def _lstm() -> sn.Network:
    x = sn.Input(6, 3)
    return sn.Network(inputs=x, outputs=sn.Dense(8, 1, name="fc")(sn.LSTM(3, 8, name="r")(x)), loss="mse")


def _gru() -> sn.Network:
    """A GRU whose gradient reads the backward loop's stacked output in two blocks of columns
    (the input and the recurrent gates' parts): summed and multiplied where they lie."""
    x = sn.Input(5, 4)
    y = sn.Dense(8, 2, "softmax", name="fc")(sn.GRU(4, 8, name="r")(x))
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy")


def _bidirectional() -> sn.Network:
    """A two-layer bidirectional LSTM with dropout between its layers: four loops, two of them
    backwards in time (whose pullbacks run forwards), and the masks of the training program."""
    x = sn.Input(5, 3)
    h = sn.LSTM(3, 6, num_layers=2, bidirectional=True, dropout=0.2, name="r")(x)
    return sn.Network(inputs=x, outputs=sn.Dense(12, 1, name="fc")(h), loss="mse")


@pytest.mark.parametrize("make", [_cnn, _residual, _lstm, _gru, _bidirectional])
@pytest.mark.parametrize("n", [64, 200])
def test_the_train_step_needs_no_more_than_its_schedule_keeps_alive(make, n: int) -> None:
    """From the arena's design batch up, the loss-and-gradient kernel and the train step (its
    gradients kept in work, where dead temporaries lay) need at most 5 % over the liveness
    bound: storage read last through a view (a reshape, a block of columns, a step) is free
    after that read, and gradients share the space of what died before them. (Below the
    design batch the gemm helpers' fixed panels, which the bound leaves out, dominate.)"""
    rows = {r.kernel: r for r in work_table(make(), optimizer=sn.Adam(lr=0.01), n=n)}
    for kernel in ("loss_and_grad", "train_step"):
        assert rows[kernel].work <= 1.05 * rows[kernel].bound, rows[kernel]
