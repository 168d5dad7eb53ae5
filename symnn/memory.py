"""Work memory: what a kernel's schedule needs at least, against what the C lowering asks for.

The emitted C kernels take one caller-owned work buffer (its size in the header, per kernel).
The *liveness lower bound* of a kernel is the largest total size of the intermediate values
its statement order keeps alive at once: a value lives from the statement that computes it to
the last one that reads it, and an element-wise map that reads an operand of its shape for the
last time may write over it (one memory for both, as the C lowering does); parameters, inputs
and the caller's outputs are not work (the train step's gradients are: it keeps them in its
work). No allocation of that schedule's values can use less, so ``work / bound`` says how much
the layout of the work buffer (:mod:`symnn.backends.c.arena`) and the scratch that products and
convolutions add cost over the schedule itself. Inside a loop the C lowering writes some of a
step's values straight into the loop's output, which this bound does not model, so a recurrent
kernel's work can come out a few per cent under it (lstm-seq: 0.98). ``symnn report`` and
``benchmarks/cnn_peers.py`` print the table; the figures are reals (bytes: times the dtype's size).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from . import ir, naming
from .lower import KERNELS, KernelPlan, column_views, last_uses, plan_kernel, step_writes


@dataclass(frozen=True)
class WorkRow:
    """One kernel at one batch size: ``work`` the C kernel's buffer, ``bound`` the liveness
    lower bound of its schedule, both in reals."""

    kernel: str
    work: int
    bound: int

    @property
    def ratio(self) -> float:
        return self.work / self.bound if self.bound else float("inf") if self.work else 1.0


def _size(shape: tuple, n: int, t: int = 1) -> int:
    out = 1
    for d in shape:
        out *= int(sp.sympify(d).subs({naming.N: n, naming.T: t}))
    return out if shape else 0  # a scalar lives in a register, not in work


def live_peak(plan: KernelPlan, n: int, keep_outputs: bool = False, t: int = 1) -> int:
    """Reals: the largest total size of the values alive together in ``plan`` at batch ``n``
    (and sequence length ``t``, for a network whose length is given at each call).
    ``keep_outputs``: count the plan's outputs as work alive to the end (the train step's
    gradient, which the update reads after the whole backward pass)."""
    outputs = set(plan.outputs.values())
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    size: dict[str, int] = {}
    shape: dict[str, tuple] = {}
    # a step's value written where its loop's END would copy it (step_writes) lies in that
    # storage: no memory of its own, like a reshape's view
    in_place = step_writes(plan, column_views(plan))
    uses = last_uses(plan, in_place=in_place)  # a view's reads are its storage's, a loop's END reads what the loop does
    for i, st in enumerate(plan.stmts):
        if st.target not in first:  # an in-place statement (z += b) keeps its value's slot
            first[st.target] = i
            # a view (a reshape) is its operand's storage: no memory of its own
            size[st.target] = 0 if st.kind is ir.Op.RESHAPE or st.target in in_place else _size(tuple(st.shape), n, t)
            shape[st.target] = tuple(st.shape)
    for v in first:
        last[v] = uses.get(v, first[v])
    # an element-wise map may write over an operand of its shape that it reads last (the C
    # lowering does): the two values are one memory, from the operand's first statement to the
    # map's value's last
    owner: dict[str, str] = {}
    for i, st in enumerate(plan.stmts):
        if st.kind is ir.Op.MAP and first.get(st.target) == i and st.target not in outputs:
            for o in st.operands:
                if o in first and o not in outputs and o != st.target and last[o] == i \
                        and shape[o] == shape[st.target] and o not in owner.values():
                    owner[st.target] = o
                    break
    def root(v: str) -> str:
        while v in owner:
            v = owner[v]
        return v
    end = len(plan.stmts) - 1
    work = {v for v in first if v not in outputs or keep_outputs}
    span: dict[str, tuple[int, int, int]] = {}  # root -> (start, stop, size)
    for v in work:
        stop = end if v in outputs else last[v]
        r = root(v)
        start, stop0, sz = span.get(r, (first[r], stop, size[r]))
        span[r] = (min(start, first[v]), max(stop0, stop), max(sz, size[v]))
    events = [0] * (len(plan.stmts) + 1)
    for start, stop, sz in span.values():
        events[start] += sz
        events[stop + 1] -= sz
    peak = alive = 0
    for delta in events[:-1]:
        alive += delta
        peak = max(peak, alive)
    return peak


def work_table(net, dtype: str = "float64", optimizer=None, n: int = 64, t: int = 16) -> list[WorkRow]:
    """Per kernel of ``net`` (and ``train_step`` with ``optimizer``): the C work buffer and the
    liveness bound at batch ``n`` (and, for sequences whose length is given at each call,
    length ``t``)."""
    from .backends.c.emit import emit_c
    from .driver import _train_program, derive_program

    program = derive_program(net).program
    train = _train_program(net, optimizer)  # with dropout masks and buffers' updates, where it has them
    result = emit_c(net, program, dtype, optimizer, train)
    rows = []
    for kname in KERNELS:
        rows.append(WorkRow(kname, result.work[kname].at(n, t), live_peak(plan_kernel(program, kname), n, t=t)))
    if optimizer is not None and "train_step" in result.work:
        bound = live_peak(plan_kernel(train or program, "loss_and_grad"), n, keep_outputs=True, t=t)
        rows.append(WorkRow("train_step", result.work["train_step"].at(n, t), bound))
    return rows


def format_table(rows: list[WorkRow], itemsize: int, n: int) -> list[str]:
    """Markdown lines: each kernel's work and bound in bytes at batch ``n``, and their ratio."""
    lines = [f"| kernel (N = {n}) | C work (bytes) | liveness bound (bytes) | work / bound |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.kernel} | {r.work * itemsize:,} | {r.bound * itemsize:,} | {r.ratio:.2f} |")
    return lines
