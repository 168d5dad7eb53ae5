"""Which loops of a plan keep their carried state in the steps they store (the C backend's layout).

A loop over time stores each step's output, (N, T*E), and its carry (an LSTM's (h, c)) is the
first S columns of that output. Laid out as the plan says, the carry is a buffer of its
own: the step writes the new state into its stored step and the loop copies it into the carry
at every step, and the pullback copies the first state and the stored steps' states but the
last into one more sequence, the states each step started from, which the backward loop and
the recurrent weight's gradient read (``symnn.autodiff.scan``: ``_shifted``).

Here the loop's output gets one step more, rows (T + 1)*E apart: in front for a forward loop
(slot 0 holds the first state, step t lies in slot t + 1), at the end for a reverse one (step t
in slot t, the first state in slot T). The carry is then a pointer to the slot of the step before
(no copy at each step), and the states each step started from are T slots where they lie (no copy
at all): the backward loop reads its step there, and the weight's gradient sums over those rows
in groups of T, one group a sample (``PREFIX__gemm_tn_grouped``). The same values in the same
order: every result is bitwise the one the copies gave.

A loop qualifies when every reader of its output, its carry and those states reads them where
they lie (:func:`slotted_loops`); any other reader (a stacked layer's input projection reading
the output as N*T rows) leaves the loop as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ... import ir
from ...lower import READS_IN_PLACE, KernelPlan, Loop, LoopHead, StepRole, StepWrite, loop_ends, readers_of


@dataclass(frozen=True)
class SlotLoop:
    """A loop whose output ``y`` takes a slot for its first state (:mod:`symnn.backends.c.slots`)."""

    y: str
    head: LoopHead
    carry: str  # the carried value: a pointer to the previous slot
    init: str  # its first value, copied into slot 0
    new: str  # the new carry: columns [0, S) of the stored step
    carry_at: int  # the loop's CARRY statement
    #: the step's values its maps now write straight into the stored step's first columns (a
    #: GRU's new h, an RNN's step), copied there and into the carry at every step before
    parts: tuple[str, ...] = ()
    #: the states each step started from (the pullback's concatenation), now slots 0..T-1; None
    #: where the kernel has no pullback of the loop
    prev: str | None = None
    #: the statements that made ``prev`` from the stored steps, which go
    chain: tuple[int, ...] = ()
    #: the views of ``prev`` as N*T rows (a reshape, a block of its columns): rows in groups of T
    grouped: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return self.head.width

    @property
    def first_slot(self) -> int | sp.Expr:
        """Where the first state lies, in reals from ``y``'s pointer: a step before step 0 (forward),
        or after step T - 1 (reverse)."""
        return self.head.length * self.width if self.head.reverse else -self.width

    @property
    def prev_at(self) -> int:
        """Where the states each step started from begin, from ``y``'s pointer: the first state's
        slot (forward), or step 1 (reverse: step t started from step t + 1's state)."""
        return self.width if self.head.reverse else -self.width

    @property
    def carried(self) -> int:
        return self.head.carried


def _map_in_step(plan: KernelPlan, made: dict[str, int], readers: dict[str, list[int]], name: str,
                 begin: int, end: int, concat: int | None) -> bool:
    """Whether the element-wise map that makes ``name`` in the loop can write it straight into the
    stored step (columns from 0): everything else that reads it reads in place, later in the step
    (or is the step's concatenation ``concat``, or the loop's END, which then copies nothing)."""
    i = made.get(name, -1)
    return begin < i < end and plan.stmts[i].kind is ir.Op.MAP and all(
        i < r <= end and (r in (end, concat) or plan.stmts[r].kind in READS_IN_PLACE)
        for r in readers.get(name, []))


def _new_in_step(plan: KernelPlan, made: dict[str, int], readers: dict[str, list[int]],
                 in_place: dict[str, StepWrite], y: str, begin: int, end: int) -> tuple[str, ...] | None:
    """How the step's output and its new carry come to lie in the stored step, the carry in its
    first S columns: None where they cannot, else the maps to write there (:attr:`SlotLoop.parts`).
    The output: its concatenation written there (``step_writes``), or one map (an RNN's step, its
    own carry). The carry: the output itself, a part written there at column 0, a concatenation
    of parts written there from column 0, or a map that is the output's first part (a GRU's h)."""
    out, new = plan.stmts[end].operands[:2]
    head: LoopHead = plan.stmts[end].payload
    ow = in_place.get(out)
    if ow is None:  # one map, the step's output and its carry
        ok = new == out and head.carried == head.width \
            and _map_in_step(plan, made, readers, out, begin, end, None)
        return (out,) if ok else None
    if ow.role is not StepRole.OUT or ow.into != y:
        return None
    if new == out:
        return ()
    w = in_place.get(new)
    if w is not None and w.role is StepRole.PART and w.into == y and w.offset == 0:
        return ()
    i, concat = made.get(new), made[out]
    if w is None:  # a map, the first part of the step's output
        st = plan.stmts[concat]
        ok = st.operands.count(new) == 1 and st.operands[0] == new and st.src_shapes[0][1] == head.carried \
            and _map_in_step(plan, made, readers, new, begin, end, concat)
        return (new,) if ok else None
    if w.role is not StepRole.CARRY or i is None or plan.stmts[i].kind is not ir.Op.CONCAT:
        return None
    st, at = plan.stmts[i], 0
    for part, shape in zip(st.operands, st.src_shapes):
        pw = in_place.get(part)
        if pw is None or pw.role is not StepRole.PART or pw.into != y or pw.offset != at:
            return None
        at = ir.column(at + shape[1])
    return () if at == head.carried else None


def _grouped_rows(plan: KernelPlan, readers: dict[str, list[int]], rows: str, views: set[str],
                  tile: int) -> list[str] | None:
    """The reshape ``rows`` of the states to N*T rows and its blocks of columns read in place,
    where every reader is such a block or a product ``A.T @ rows`` of at least a tile of columns
    (a recurrent weight's gradient, which reads the rows in groups); else None."""
    names, todo = [], [rows]
    while todo:
        name = todo.pop()
        names.append(name)
        for k in readers.get(name, []):
            use = plan.stmts[k]
            if use.kind is ir.Op.SLICE and use.target in views:
                todo.append(use.target)
            elif not (use.kind is ir.Op.MATMUL and tuple(use.payload) == (True, False)
                      and use.operands[1] == name and use.operands[0] != name
                      and isinstance(use.shape[1], int) and use.shape[1] >= tile):
                return None
    return names


def _prev_chain(plan: KernelPlan, readers: dict[str, list[int]], made: dict[str, int], y: str, init: str,
                head: LoopHead, r1: int, views: set[str],
                tile: int) -> tuple[str, tuple[int, ...], tuple[str, ...]] | None:
    """The pullback's states-each-step-started-from, built from ``y`` by the reshape ``r1``:
    ``[init, steps 0..T-2 of y's first S columns]`` (``_shifted``), read only by a loop's steps
    and by reshapes to N*T rows that products read in groups (:func:`_grouped_rows`). Returns
    (its name, the statements that go, the row views), or None: where the rows would have to be
    copied out of the slots (a weight of fewer columns than a tile), the slot in front would only
    add to the work, and the loop keeps its carry."""
    stmts = plan.stmts
    T, S = head.length, head.carried

    def only(name: str) -> int | None:
        r = readers.get(name, [])
        return r[0] if len(r) == 1 else None

    s1 = only(stmts[r1].target)
    if s1 is None or stmts[s1].kind is not ir.Op.SLICE or tuple(stmts[s1].payload) != (0, S):
        return None
    r2 = only(stmts[s1].target)
    if r2 is None or stmts[r2].kind is not ir.Op.RESHAPE:
        return None
    s2 = only(stmts[r2].target)
    # forward: steps 0..T-2, after the first state; reverse: steps 1..T-1, before it
    lo, hi = (S, T * S) if head.reverse else (0, (T - 1) * S)
    if s2 is None or stmts[s2].kind is not ir.Op.SLICE \
            or any(sp.expand(sp.Integer(a) - b if isinstance(a, int) else a - b) != 0
                   for a, b in zip(stmts[s2].payload, (lo, hi))):
        return None
    cc = only(stmts[s2].target)
    parts = (stmts[s2].target, init) if head.reverse else (init, stmts[s2].target)
    if cc is None or stmts[cc].kind is not ir.Op.CONCAT or stmts[cc].operands != parts:
        return None
    prev = stmts[cc].target
    grouped: list[str] = []
    for j in readers.get(prev, []):
        st = stmts[j]
        if st.kind is Loop.STEP and st.target in views:
            continue
        if st.kind is not ir.Op.RESHAPE:
            return None
        names = _grouped_rows(plan, readers, st.target, views, tile)
        if names is None:
            return None
        grouped.extend(names)
    return prev, (r1, s1, r2, s2), tuple(grouped)


def slotted_loops(plan: KernelPlan, views: set[str], in_place: dict[str, StepWrite],
                  tile: int) -> dict[str, SlotLoop]:
    """The loops of ``plan`` whose output takes a slot for its first state, by their output's name.

    A loop qualifies when it runs untruncated (either way) over a fixed or run-time length of at
    least 2, its output is no output of the kernel, the step writes its new carry into the stored
    step's first S columns, the carry is read only inside the loop and in place (views of its
    columns, element-wise maps, products of at least ``tile`` k), and the output is read only in
    place: blocks of its columns (``views``), a later loop's steps, and the pullback's
    states-each-step-started-from, whose readers are a loop's steps and its reshapes to N*T rows,
    read in groups by products ``A.T @ rows`` of at least ``tile`` columns."""
    stmts = plan.stmts
    outputs = set(plan.outputs.values())
    made = {st.target: i for i, st in enumerate(stmts)}
    readers = readers_of(plan)
    found: dict[str, SlotLoop] = {}
    for begin, end in loop_ends(plan).items():
        head: LoopHead = stmts[begin].payload
        y = stmts[begin].target
        new, carry = stmts[end].operands[1:3]
        c = made.get(carry, -1)
        if head.reset or (isinstance(head.length, int) and head.length < 2) or y in outputs \
                or c != begin - 1 or stmts[c].kind is not Loop.CARRY or head.carried > head.width:
            continue
        parts = _new_in_step(plan, made, readers, in_place, y, begin, end)
        if parts is None:
            continue
        if not all(begin < j <= end and (j == end or stmts[j].kind in READS_IN_PLACE
                                         or stmts[j].kind is ir.Op.SLICE and stmts[j].target in views)
                   for j in readers.get(carry, [])):
            continue
        # the state's products (h @ W_hh.T) of fewer than a tile of k: the weight's gradient, as
        # many columns, could not read the states in groups; every kernel then leaves the loop as
        # it was, so that the kernels' loops stay alike and share their statements' helpers
        state = {carry} | {stmts[j].target for j in readers.get(carry, []) if stmts[j].kind is ir.Op.SLICE}
        if any(st.kind is ir.Op.MATMUL and st.operands[0] in state and not st.payload[0]
               and not (isinstance(st.src_shapes[0][1], int) and st.src_shapes[0][1] >= tile)
               for st in stmts[begin + 1:end]):
            continue
        prev, chain, grouped, ok = None, (), (), True
        for j in readers.get(y, []):
            st = stmts[j]
            if j == end or (st.kind in (ir.Op.SLICE, Loop.STEP) and st.target in views):
                continue
            got = _prev_chain(plan, readers, made, y, stmts[c].operands[0], head, j, views, tile) \
                if st.kind is ir.Op.RESHAPE and prev is None else None
            if got is None:
                ok = False
                break
            prev, chain, grouped = got
        if ok:
            found[y] = SlotLoop(y, head, carry, stmts[c].operands[0], new, c, parts, prev, chain, grouped)
    return found
