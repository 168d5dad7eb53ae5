"""Program -> KernelPlan: statements in execution order with variable names.

A plan is backend-neutral: each :class:`Stmt` names its target, its operand names and the
op-specific payload (a SymPy expression for maps). Backends print plans; they never see the
graph. Three kernels are planned from one program: ``forward`` (yhat), ``loss`` and
``loss_and_grad``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any, Mapping

import sympy as sp

from . import ir, naming
from .errors import CodegenError
from .program import Program

KERNELS = {
    "forward": ("yhat",),
    "loss": ("loss",),
    "loss_and_grad": None,  # loss and every gradient
}


@dataclass(frozen=True)
class Stmt:
    """``target = <kind>(operands, payload)``; ``shape`` is the target's symbolic shape.

    ``kind`` is the IR op the statement computes (never a leaf: leaves are names); backends
    dispatch on it through tables keyed by :class:`~symnn.ir.Op`."""

    kind: "ir.Op | Loop"
    target: str
    operands: tuple[str, ...]
    shape: ir.Shape
    payload: Any = None
    inplace: bool = False
    src_shapes: tuple[ir.Shape, ...] = ()
    #: the id of the derivation equation this statement computes (``Equation.id``: "z1",
    #: "delta2", "dL_dW1"...), from the program's provenance; backends pass it on with the
    #: lines they print, so a report pairs formula and code by id
    origin: str | None = None


@dataclass
class KernelPlan:
    name: str
    inputs: tuple[str, ...]  # "X" and, for losses, "Y"
    stmts: list[Stmt] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> variable
    n_tensor_ops: int = 0
    n_scalar_ops: int = 0


class Loop(Enum):
    """The plan statements of a loop (an IR ``SCAN``), which no graph node is: the loop's
    statements lie between its ``BEGIN`` and ``END`` and run once per step.

    ``CARRY``: ``target`` (the carried value) = operand 0 (its first value), before the loop.
    ``BEGIN``: opens the loop over the steps of ``target`` (the stacked output, (N, T*E)).
    ``STEP``: ``target`` = step t's columns of the sequence operand 0 (N, F).
    ``END``: writes operand 0 (the step's output) into step t's columns of ``target``, then
    operand 1 (the new carry) into operand 2 (the carried value), and closes the loop. Its
    further operands are the values from before the loop that the loop reads: they stay live
    until it ends, which every liveness analysis of a plan then sees."""

    CARRY = auto()
    BEGIN = auto()
    STEP = auto()
    END = auto()


@dataclass(frozen=True)
class LoopHead:
    """A loop's payload: its steps, its direction, the name of its step index, the width of
    each step's output and of its carried value."""

    length: int
    reverse: bool
    index: str
    width: int
    carried: int
    reset: int = 0  # the carry restarts from zeros after each step t with t % reset == 0


def _is_identity(node: ir.Node) -> bool:
    return (
        node.op is ir.Op.MAP
        and len(node.src) == 1
        and node.arg.expr == node.arg.args[0]
        and tuple(node.src[0].shape) == tuple(node.shape)
    )


def has_loop(plan: KernelPlan) -> bool:
    """Whether the plan runs a loop (a recurrence's steps)."""
    return any(st.kind is Loop.BEGIN for st in plan.stmts)


def alias_roots(plan: KernelPlan) -> dict[str, str]:
    """Each name a ``RESHAPE`` made (a view of its operand's storage) -> the stored name it views."""
    roots: dict[str, str] = {}
    for st in plan.stmts:
        if st.kind is ir.Op.RESHAPE:
            roots[st.target] = roots.get(st.operands[0], st.operands[0])
    return roots


#: the statements that read an operand's columns where they lie, rows apart by the operand's row
#: stride: an element-wise map indexes each operand by its stride, a product takes leading
#: dimensions, a column sum (a bias's gradient) steps its rows by it, a concatenation copies each
#: part's rows from where they lie (the carries each step of a loop started from: the first
#: carry, then a block of the stored steps). A block of columns only they read needs no copy
#: (:func:`column_views`).
READS_IN_PLACE: frozenset = frozenset({ir.Op.MAP, ir.Op.MATMUL, ir.Op.SUM_ROWS, ir.Op.CONCAT})


def readers_of(plan: KernelPlan) -> dict[str, list[int]]:
    """Each name -> the indices of the statements that read it. A loop's END copies its first
    three operands; the rest only keep values alive (:class:`Loop`), which is no read."""
    readers: dict[str, list[int]] = {}
    for i, st in enumerate(plan.stmts):
        for o in (st.operands[:3] if st.kind is Loop.END else st.operands):
            readers.setdefault(o, []).append(i)
    return readers


def column_views(plan: KernelPlan) -> set[str]:
    """The blocks of columns (``SLICE``) and a loop's steps of a sequence (``Loop.STEP``) that can
    be read where they lie instead of copied: every statement reading one reads in place
    (:data:`READS_IN_PLACE`, or is such a block itself), and it is no output. A backend may read
    them in place; :func:`last_uses` then keeps what they view alive while they are read."""
    readers = {name: [plan.stmts[i] for i in idx] for name, idx in readers_of(plan).items()}
    outputs = set(plan.outputs.values())
    views = {st.target for st in plan.stmts if st.kind in (ir.Op.SLICE, Loop.STEP) and st.target not in outputs}
    changed = True
    while changed:  # a block read by a block that is copied must be copied too
        changed = False
        for v in sorted(views):
            if not all(r.kind in READS_IN_PLACE or r.kind is ir.Op.SLICE and r.target in views
                       for r in readers.get(v, [])):
                views.discard(v)
                changed = True
    return views


class StepRole(Enum):
    """Where a loop's step writes a value that its ``END`` would otherwise copy."""

    OUT = auto()  # straight into step t's columns of the loop's output
    CARRY = auto()  # straight into the carried value's memory
    PART = auto()  # a part of a step's output written in place: straight into its columns there


@dataclass(frozen=True)
class StepWrite:
    """A value written in place (:func:`step_writes`): ``into`` is the storage it lies in (the
    loop's output, or the carried value) and ``head`` the loop's payload."""

    role: StepRole
    into: str
    head: LoopHead
    #: a ``PART``'s first column within the step
    offset: "int | sp.Expr" = 0


def loop_ends(plan: KernelPlan) -> dict[int, int]:
    """Each loop's ``BEGIN`` index -> its ``END`` index."""
    ends, open_ = {}, []
    for i, st in enumerate(plan.stmts):
        if st.kind is Loop.BEGIN:
            open_.append(i)
        elif st.kind is Loop.END:
            ends[open_.pop()] = i
    return ends


def step_writes(plan: KernelPlan, views: set[str] = frozenset()) -> dict[str, StepWrite]:
    """The concatenations of a loop's step that can be written where the loop's ``END`` would
    copy them, so that the copy goes: an LSTM's step stacks its gates and states into one block
    of its output, and its new state (h, c) into the carried value, a copy of each at every
    step otherwise.

    * The step's output (``END``'s operand 0) goes straight into step t's columns of the loop's
      output when everything else that reads it reads in place (:data:`READS_IN_PLACE`, rows
      the output's row apart) and inside the loop.
    * The new carried value (operand 1) goes straight into the carried value (operand 2) when no
      statement from the concatenation to the ``END`` reads the carried value, itself or
      through a view: each step reads the state it was given, then writes the next. (A value
      both output and new state takes the second; a truncated loop, which zeroes the carried
      value after some steps, keeps its copy.)

    Outputs of the plan are never written in place. ``views``: the blocks read in place
    (:func:`column_views`), which read what they view."""
    outputs = set(plan.outputs.values())
    readers: dict[str, list[int]] = {}
    for i, st in enumerate(plan.stmts):
        for o in st.operands:
            readers.setdefault(o, []).append(i)
    made = {st.target: i for i, st in reversed(list(enumerate(plan.stmts)))}
    found: dict[str, StepWrite] = {}
    for begin, end in loop_ends(plan).items():
        end_st = plan.stmts[end]
        out, new, carry = end_st.operands[:3]
        head = end_st.payload
        # the carried value and every view of it: reading one of them reads the carried value
        seen = {carry}
        for st in plan.stmts[begin:end]:
            if (st.kind is ir.Op.RESHAPE or st.target in views) and st.operands and st.operands[0] in seen:
                seen.add(st.target)
        for name, role in ((new, StepRole.CARRY), (out, StepRole.OUT)):
            i = made.get(name, -1)
            if not begin < i < end or plan.stmts[i].kind is not ir.Op.CONCAT or name in outputs or name in found \
                    or name in views:
                continue
            if role is StepRole.CARRY:
                st = plan.stmts[i]
                # truncation zeroes the carried value after some steps, where the new one is
                # still to be read after the loop
                if head.reset or tuple(st.shape) != tuple(plan.stmts[made[carry]].shape) or \
                        any(o in seen for later in plan.stmts[i:end] for o in later.operands):
                    continue
                found[name] = StepWrite(role, carry, head)
            else:
                others = [j for j in readers.get(name, []) if j != end]
                if new == out or not all(begin < j < end and plan.stmts[j].kind in READS_IN_PLACE for j in others):
                    continue
                found[name] = StepWrite(role, end_st.target, head)
                carried = found.get(new)  # the new carry, written into the carried value
                found.update(_parts_in_place(plan, i, begin, end, readers, made, outputs | views | set(found),
                                             new if carried is not None and carried.role is StepRole.CARRY else None))
    return found


def _parts_in_place(plan: KernelPlan, i: int, begin: int, end: int, readers: dict[str, list[int]],
                    made: dict[str, int], taken: set[str], carry: str | None = None) -> dict[str, StepWrite]:
    """The parts of the step's output (the concatenation ``i``, written in place) that their own
    element-wise maps can write straight into their columns of it: an LSTM's gates and tanh(c),
    copied into the stored step at every step otherwise. A part qualifies when a map of this
    step makes it, it appears once, and everything else that reads it reads in place, later in
    the step (its rows are then the output's row apart). ``taken``: names that may not (outputs,
    views, values already written in place). ``carry``: the new carry (a concatenation written
    into the carried value), a part of the output too: its own parts qualify alike, written
    into their columns of the stored step, from where the carry's concatenation reads them (an
    LSTM's h and c: the step's output copied (h, c) from the carried value at every step)."""
    st, head = plan.stmts[i], plan.stmts[end].payload
    into = plan.stmts[end].target
    out: dict[str, StepWrite] = {}

    def qualifies(name: str, j: int, within: Stmt, last: int) -> bool:
        return (begin < j < last and plan.stmts[j].kind is ir.Op.MAP and name not in taken
                and within.operands.count(name) == 1 and name not in out
                and all(j < r < end and (r == i or plan.stmts[r].kind in READS_IN_PLACE) for r in readers[name]))

    offset = 0
    for name, shape in zip(st.operands, st.src_shapes):
        j = made.get(name, -1)
        if name == carry and st.operands.count(name) == 1 and begin < j < i:
            inner, at = plan.stmts[j], offset
            for part, part_shape in zip(inner.operands, inner.src_shapes):
                if part not in st.operands and qualifies(part, made.get(part, -1), inner, j):
                    out[part] = StepWrite(StepRole.PART, into, head, at)
                at = ir.column(at + part_shape[1])
        elif qualifies(name, j, st, i):
            out[name] = StepWrite(StepRole.PART, into, head, offset)
        offset = ir.column(offset + shape[1])
    return out


def last_uses(plan: KernelPlan, views: set[str] = frozenset(),
              in_place: Mapping[str, StepWrite] | None = None) -> dict[str, int]:
    """The index of the statement that reads each name last (or makes it, if none reads it). A
    view's reads count as reads of what it views (a reshape's, and the ``views`` read in place:
    :func:`column_views`; a value written in place, ``in_place`` (:func:`step_writes`), is a
    view of the storage it lies in), and a loop's ``END`` reads what the loop reads
    (:class:`Loop`), so storage is free only when nothing can read it any more."""
    last: dict[str, int] = {}
    for i, st in enumerate(plan.stmts):
        for o in st.operands:
            last[o] = i
        last[st.target] = i  # a statement writing an existing value (a loop's END) keeps it live
    viewed = {st.target: st.operands[0] for st in plan.stmts
              if st.kind is ir.Op.RESHAPE or st.target in views}
    viewed.update({name: w.into for name, w in (in_place or {}).items()})
    for st in reversed(plan.stmts):  # a view of a view keeps both alive
        root = viewed.get(st.target)
        if root is not None and st.target in last:
            last[root] = max(last.get(root, -1), last[st.target])
    return last


class _Planner:
    """Statements of one kernel in execution order; a SCAN becomes a loop of its body's."""

    def __init__(self, prog: Program, out_of: dict[int, str], plan: KernelPlan) -> None:
        self.prog = prog
        self.out_of = out_of
        self.plan = plan
        self.temps = iter(f"t{i}" for i in range(10**6))
        self.loops = 0

    def name_of(self, n: ir.Node) -> str:
        if id(n) in self.out_of:
            return self.out_of[id(n)] if self.out_of[id(n)] != "yhat" else self.prog.names.get(id(n), "yhat")
        return self.prog.names.get(id(n)) or next(self.temps)

    def nodes(self, order: list[ir.Node], names: dict[int, str], consumers: dict[int, int],
              body: bool = False) -> None:
        for node in order:
            if id(node) in names:
                continue
            if node.op in (ir.Op.INPUT, ir.Op.PARAM):
                names[id(node)] = node.arg
                continue
            if node.op is ir.Op.CONST:
                names[id(node)] = repr(float(node.arg))
                continue
            if node.op is ir.Op.VAR:
                raise CodegenError(f"internal error: the placeholder {node.arg!r} outside its loop")
            if _is_identity(node) and id(node) not in self.out_of:
                names[id(node)] = names[id(node.src[0])]
                continue
            target = next(self.temps) if body else self.name_of(node)
            names[id(node)] = target
            ops = tuple(names[id(s)] for s in node.src)
            if node.op is ir.Op.SCAN:
                if body:
                    raise CodegenError("internal error: a loop inside a loop's body")
                self.scan(node, target, ops)
                continue
            payload: Any = node.arg
            inplace = False
            if node.op is ir.Op.ADD_BIAS:
                mm = node.src[0]
                inplace = mm.op is ir.Op.MATMUL and consumers.get(id(mm)) == 1 and id(mm) not in self.out_of
            elif node.op is ir.Op.CHANNEL_BIAS:  # a convolution's bias, added where it wrote
                conv = node.src[0]
                inplace = conv.op is ir.Op.CONV and consumers.get(id(conv)) == 1 and id(conv) not in self.out_of
            elif node.op is ir.Op.MAP:
                payload = node.arg.expr.xreplace(
                    {
                        a: (s.arg if s.op is ir.Op.CONST else sp.Symbol(nm, real=True))
                        for a, nm, s in zip(node.arg.args, ops, node.src)
                    }
                )
            shapes = tuple(tuple(s.shape) for s in node.src)
            self.plan.stmts.append(
                Stmt(node.op, target, ops, tuple(node.shape), payload, inplace, shapes,
                     self.prog.equation_of(node))
            )

    def scan(self, node: ir.Node, target: str, ops: tuple[str, ...]) -> None:
        """The loop of a SCAN: its carried value set to the first, then per step its sequences'
        columns, the body's statements and the step's output written into ``target``."""
        loop: ir.Scan = node.arg
        origin = self.prog.equation_of(node)
        k = len(loop.steps)
        head = LoopHead(loop.length, loop.reverse, f"s{self.loops}", int(loop.out.shape[1]),
                        int(loop.carry.shape[1]), loop.reset)
        self.loops += 1
        carry = next(self.temps)
        init, seqs, invs = ops[0], ops[1:1 + k], ops[1 + k:]
        src = node.src
        stmts = self.plan.stmts
        stmts.append(Stmt(Loop.CARRY, carry, (init,), tuple(loop.carry.shape), head, False,
                          (tuple(src[0].shape),), origin))
        stmts.append(Stmt(Loop.BEGIN, target, (), tuple(node.shape), head, False, (), origin))
        first = len(stmts)
        names: dict[int, str] = {id(loop.carry): carry}
        names.update({id(p): v for p, v in zip(loop.invariants, invs)})
        order = loop.nodes()
        read = {id(s) for n in order for s in n.src} | {id(loop.out), id(loop.new_carry)}
        for p, seq, s in zip(loop.steps, seqs, src[1:1 + k]):
            if id(p) not in read:  # a sequence the loop passes on whole (a pullback's sums read it)
                continue
            names[id(p)] = step = next(self.temps)
            stmts.append(Stmt(Loop.STEP, step, (seq,), tuple(p.shape), head, False, (tuple(s.shape),), origin))
        consumers: dict[int, int] = {}
        for n in order:
            for s in n.src:
                consumers[id(s)] = consumers.get(id(s), 0) + 1
        self.nodes(order, names, consumers, body=True)
        inside = {st.target for st in stmts[first:]}
        outer = sorted({o for st in stmts[first:] for o in st.operands if o not in inside} | {carry} | set(invs))
        outer = [o for o in outer if not _is_literal(o)]
        stmts.append(Stmt(Loop.END, target, (names[id(loop.out)], names[id(loop.new_carry)], carry, *outer),
                          tuple(node.shape), head, False, (), origin))


def _is_literal(name: str) -> bool:
    try:
        float(name)
    except ValueError:
        return False
    return True


def plan_kernel(prog: Program, kernel: str) -> KernelPlan:
    wanted = KERNELS[kernel]
    outs = {k: v for k, v in prog.outputs.items() if (k != "yhat" if wanted is None else k in wanted)}
    order = ir.toposort(outs.values())
    consumers: dict[int, int] = {}
    for n in order:
        for s in n.src:
            consumers[id(s)] = consumers.get(id(s), 0) + 1
    out_of = {id(v): k for k, v in outs.items()}
    names: dict[int, str] = {}
    inputs = tuple(sorted({n.arg for n in order if n.op is ir.Op.INPUT}))
    plan = KernelPlan(kernel, inputs)
    plan.n_tensor_ops, plan.n_scalar_ops = ir.count_ops(outs.values())
    _Planner(prog, out_of, plan).nodes(order, names, consumers)
    plan.outputs = {k: names[id(v)] for k, v in outs.items()}
    # an in-place bias add renames its matmul's (convolution's) target to the bias add's target
    stmts: list[Stmt] = []
    for st in plan.stmts:
        if st.kind in (ir.Op.ADD_BIAS, ir.Op.CHANNEL_BIAS) and st.inplace:
            # the product (convolution) it adds to: not always the statement just before (the
            # bias itself may be computed in between), and read by nothing else
            at = max(j for j, p in enumerate(stmts) if p.target == st.operands[0])
            prev = stmts[at]
            stmts[at] = Stmt(prev.kind, st.target, prev.operands, prev.shape, prev.payload, False, prev.src_shapes,
                             prev.origin)
            stmts.append(
                Stmt(st.kind, st.target, (st.target, st.operands[1]), st.shape, st.payload, True, st.src_shapes,
                     st.origin)
            )
        else:
            stmts.append(st)
    plan.stmts = stmts
    return plan


def dims(shape: ir.Shape) -> tuple[str, ...]:
    """Shape entries as code strings (the batch dimension is the run-time ``N``)."""
    return tuple(str(d) if d != naming.N else "N" for d in shape)
