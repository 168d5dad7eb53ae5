"""C backend: turn a :class:`~symnn.lower.KernelPlan` into plain statement contexts.

Only strings and ints leave this module; ``templates/c/_macros.jinja`` lays out one loop nest
per statement kind. Decisions made here, once, for every kernel:

* storage: parameters are views into one flat ``params`` vector (the layout of
  ``<model>_param_offset``), gradients views into ``grad``; tensors of shape () are C locals;
  every other temporary gets a slot of the caller's work buffer;
* temporaries share the work buffer where their lifetimes do not overlap (:mod:`.arena`: laid
  out at a design batch and valid at every batch ``n``, each offset the largest of a few linear
  functions of ``n``), so the work size is near the live peak, not the sum;
* loops keep the innermost index contiguous in every array they touch: ``A @ B`` as row
  updates (axpy), ``A @ B.T`` as dot products with eight explicit partial sums (vectorisable
  without reassociation, and deterministic), ``A.T @ B`` as rank-1 updates of the output;
* softmax row statistics (max, sum of exponentials) are computed once per row and shared by
  every row-wise op on the same logits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace

import sympy as sp

from ... import ir, naming
from ...errors import CodegenError
from ...lower import (KernelPlan, Loop, LoopHead, StepRole, StepWrite, Stmt, column_views, last_uses, loop_ends,
                      readers_of, step_writes)
from ..base import BackendConfig
from .arena import Arena, Need
from .gemm import GEMM_KC, TILE_ROWS, tile_cols
from .kinds import MATMUL_KINDS, CKind
from .printer import SymnnCPrinter, c_literal
from .slots import SlotLoop, slotted_loops

def check_prefix(prefix: str) -> str:
    """A network name usable as a C symbol prefix: :func:`symnn.naming.network_name`, the one
    validator of network names, checked again where the name becomes C."""
    return naming.network_name(prefix)


@dataclass(frozen=True)
class CConfig(BackendConfig):
    """C backend settings (see :class:`~symnn.backends.base.BackendConfig`).

    Attributes:
        prefix: C symbol prefix (the network name).
    """

    name: str = "c"
    template_dir: str = "c"
    prefix: str = "model"

    def printer(self) -> SymnnCPrinter:
        return SymnnCPrinter(self.dtype, self.prefix)


@dataclass
class Var:
    """A tensor in a kernel: ``rows`` x ``cols`` (``rows`` may be the batch, or a multiple of it:
    a sequence's steps stacked as rows, N*T), or a scalar. For sequences whose length T is given
    at each call (``sn.Input(None, F)``) ``rows``, ``cols`` and ``ld`` may be multiples of T
    (SymPy expressions, printed by :func:`dim_code` with the kernel's argument ``steps``)."""

    name: str
    storage: str  # "param" | "input" | "output" | "work" | "scalar" | "view" (a reshape's)
    rows: sp.Expr | int
    cols: sp.Expr | int
    ndim: int
    slot: int | None = None
    #: the distance between rows where it differs from ``cols``: a block of another array's
    #: columns read in place (:func:`symnn.lower.column_views`)
    ld: sp.Expr | int | None = None
    #: a sequence whose steps lie this far apart, not ``cols / T`` (the states a loop's steps
    #: started from, in the slots of its stored steps: :mod:`.slots`)
    step: int | None = None
    #: rows in groups of ``group``, the groups ``group_ld`` apart (those states as N*T rows)
    group: sp.Expr | int | None = None
    group_ld: sp.Expr | int | None = None

    @property
    def stride(self) -> sp.Expr | int:
        return self.cols if self.ld is None else self.ld

    @property
    def per(self) -> sp.Expr | int:
        """The rows per batch row (1 for (N, d), T for (N*T, d)); 0 for a fixed row count."""
        rows = sp.sympify(self.rows)
        if not rows.has(naming.N):
            return 0
        return naming.concrete(sp.cancel(rows / naming.N))

    @property
    def batch(self) -> bool:
        return self.per != 0

    def entries(self) -> sp.Expr:
        """The reals it holds, an expression in N (and T)."""
        return sp.expand(sp.sympify(self.rows) * self.cols)


#: the run-time sizes as the C kernels name them: the batch ``n``, the sequences' length ``steps``
_C_SIZES = {naming.N: sp.Symbol("n"), naming.T: sp.Symbol("steps")}


def dim_code(size: object) -> str:
    """A size as C: an int as itself, else its expression in ``n`` and ``steps`` (a sum in
    parentheses, so that it can be a factor: ``i*(3*steps + 2) + j``)."""
    e = sp.sympify(size, strict=True)
    if e.is_Integer:
        return str(int(e))
    text = str(sp.expand(e).xreplace(_C_SIZES))
    return f"({text})" if sp.expand(e).is_Add else text


def coefficients(size: object, length: bool) -> tuple[int, ...]:
    """A size in reals as the work buffer's layout takes it (:mod:`.arena`): (a, b) for
    ``a*n + b``, or where the kernel takes a run-time length (``length``) (a, b, c) for
    ``a*n*steps + b*n + c``."""
    if isinstance(size, int):  # a fixed size: most of them, and no SymPy needed
        return (0, size) if not length else (0, 0, size)
    e = sp.expand(sp.sympify(size, strict=True))
    with_n, c = e.coeff(naming.N, 1), e.coeff(naming.N, 0)
    a, b = with_n.coeff(naming.T, 1), with_n.coeff(naming.T, 0)
    if not all(v.is_Integer for v in (a, b, c)) or sp.expand(a * naming.N * naming.T + b * naming.N + c - e) != 0:
        raise CodegenError(f"internal error: the size {size} is not a*N*T + b*N + c")
    a, b, c = int(a), int(b), int(c)
    if not length:
        if a:
            raise CodegenError(f"internal error: the size {size} has the run-time length T")
        return (b, c)
    return (a, b, c)


def _var_from_shape(name: str, shape, storage: str) -> Var:
    shape = tuple(shape)
    if len(shape) == 0:
        return Var(name, storage, 1, 1, 0)
    if len(shape) == 1:
        return Var(name, storage, 1, naming.concrete(shape[0]), 1)
    rows = naming.concrete(shape[0])
    return Var(name, storage, rows, naming.concrete(shape[1]), 2)


#: the statements that print as lines of the kernel itself, never as a call of a shared helper:
#: a loop's opening and closing lines, and a view (a pointer the kernel declares)
KERNEL_LINES: frozenset = frozenset({ir.Op.RESHAPE, Loop.CARRY, Loop.BEGIN, Loop.STEP, Loop.END})

#: the plan's row-wise ops on logits z, which share z's row statistics (max, sum of exponentials)
ROW_OPS: frozenset[ir.Op] = frozenset({ir.Op.SOFTMAX, ir.Op.LOGSUMEXP, ir.Op.SOFTMAX_CE})

#: products whose two fixed sizes multiply to at most this are laid out in place (matmul_small)
SMALL_PRODUCT = 64


def rows_code(v: Var) -> str:
    if v.batch:
        return "n" if v.per == 1 else f"{dim_code(v.per)}*n"
    return str(int(v.rows))


def _size(v: Var) -> str:
    """The reals ``v`` holds, as C: ``n*64`` (rows times columns), or an int for fixed sizes."""
    if v.batch:
        return f"{rows_code(v)}*{dim_code(v.cols)}"
    return dim_code(sp.sympify(v.rows) * v.cols)


def fixed(code: str) -> int | None:
    """A size printed by :func:`rows_code` as an int, or None where it is a multiple of the batch."""
    return None if "n" in code else int(code)


def size_code(a: int, b: int) -> str:
    if a == 0:
        return str(b)
    term = "n" if a == 1 else f"{a}*n"
    return term if b == 0 else f"{term} + {b}"


_STEPS = re.compile(r"\bsteps\b")


def _printed(value: object) -> object:
    """A statement context with every size that is a SymPy expression printed as C
    (:func:`dim_code`), in its lists and dicts too; other values as they are."""
    if isinstance(value, sp.Basic):
        return int(value) if value.is_Integer else dim_code(value)
    if isinstance(value, dict):
        return {k: _printed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printed(v) for v in value]
    return value


def _prints_steps(value: object) -> bool:
    """Some string of a printed context names the run-time length ``steps``."""
    if isinstance(value, str):
        return bool(_STEPS.search(value))
    if isinstance(value, dict):
        return any(_prints_steps(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_prints_steps(v) for v in value)
    return False


#: a network with a kernel of more plan statements than this prints each array statement of
#: its kernels as a call of a shared helper (:attr:`KernelLayout.helpers`), one per distinct
#: statement: gcc -O3's time grows faster than linearly with the length of a function and is
#: paid again for every copy of a layer; as calls, 200 layers compile faster than 20 inline.
#: Below it (networks of up to 20 or so layers) every kernel is one function, as before.
SHARED_HELPER_STATEMENTS = 160


@dataclass(frozen=True)
class Uses:
    """The kernel-level names one statement context prints (parameters, inputs, temporaries,
    scratch, row statistics, outputs, scalars), recorded by :class:`_Names` as the context is
    lowered, never read back from its text. Which parameter views and arguments a kernel uses,
    and what a shared helper takes, follow from these.

    ``reads``/``writes``: the names whose value (a scalar) or elements (an array) the context
    reads / writes (an in-place update does both); ``order``: every name in the order first
    printed; ``batch``: it prints the run-time batch size ``n``; ``nr``: it prints ``Nr``;
    ``steps``: it prints the sequences' run-time length ``steps``."""

    order: tuple[str, ...]
    reads: frozenset[str]
    writes: frozenset[str]
    batch: bool
    nr: bool
    steps: bool = False

    @property
    def names(self) -> frozenset[str]:
        return self.reads | self.writes


class _Names:
    """How one statement context prints kernel-level names, and the record of them.

    Every name a context prints goes through :meth:`read` or :meth:`write`. In a kernel's own
    body a name prints as itself; in a shared helper (``shared``) the names become the helper's
    parameters ``p0``, ``p1``, ... in the order first printed, so that the same statement on
    other arrays (the next layer's) prints the same text and is one helper."""

    def __init__(self, shared: bool) -> None:
        self.shared = shared
        self.printed: dict[str, str] = {}
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self.nr = False

    def _print(self, name: str) -> str:
        if name not in self.printed:
            self.printed[name] = f"p{len(self.printed)}" if self.shared else name
        return self.printed[name]

    def read(self, name: str) -> str:
        self.reads.add(name)
        return self._print(name)

    def write(self, name: str) -> str:
        self.writes.add(name)
        return self._print(name)

    def label(self, name: str, placeholder: str) -> str:
        """A name only a comment mentions: itself, or in a shared helper (where it is no
        parameter) ``placeholder``."""
        return placeholder if self.shared else name

    def uses(self, batch: bool, steps: bool = False) -> Uses:
        return Uses(tuple(self.printed), frozenset(self.reads), frozenset(self.writes), batch, self.nr, steps)


@dataclass
class KernelLayout:
    """Statement contexts plus the storage they need.

    ``uses[i]`` records what ``stmts[i]`` prints. ``helpers``: for a long kernel
    (:data:`SHARED_HELPER_STATEMENTS`), the statement contexts printed as helpers, with names as
    parameters; the kernel's own statement is then a ``call`` context (``fn`` is filled in by
    the emitter, which gives equal helpers of all kernels one name)."""

    stmts: list[dict] = field(default_factory=list)
    pointers: list[dict] = field(default_factory=list)  # work/param/output views to declare
    scalars: list[str] = field(default_factory=list)
    work: Need = field(default_factory=lambda: Need.linear(0, 0))  # (0, 0, 0) with a run-time length
    #: the work offsets that take the larger of two forms (:mod:`.arena`), declared first
    offset_lines: list[str] = field(default_factory=list)
    #: output name -> the work pointer that holds it (``keep_outputs``: a train step's gradients)
    kept: dict[str, str] = field(default_factory=dict)
    uses_nr: bool = False
    outputs: dict[str, str] = field(default_factory=dict)
    uses: list[Uses] = field(default_factory=list)
    helpers: list[dict] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # the shared helpers it calls, by name

    uses_n: bool = False  # the body prints the batch size n: a loop or size, Nr, a work offset
    uses_work: bool = False  # some view lies in the work buffer
    uses_steps: bool = False  # the body prints the sequences' run-time length ``steps``

    def names(self) -> set[str]:
        """Every kernel-level name some statement prints."""
        return set().union(*(u.names for u in self.uses))


def _pointer(base: str, at: "int | sp.Expr") -> str:
    """``base`` moved by ``at`` reals, as C: ``y - 448``, ``y + 32*448``, ``y + 448*steps``."""
    at = _sized(at)
    return f"{base} - {dim_code(-at)}" if at.could_extract_minus_sign() else f"{base} + {dim_code(at)}"


def _sized(value: object) -> sp.Expr:
    """A size or column of the plan (an int, or a SymPy expression in N and T) as a SymPy
    expression. Anything else, a string above all, is refused, never parsed."""
    if isinstance(value, sp.Expr):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return sp.Integer(value)
    raise CodegenError(f"internal error: a plan size {value!r} is neither an int nor a SymPy expression")


def _biases_first(plan: KernelPlan, given: set[str]) -> KernelPlan:
    """The plan with each map of the kernel's parameters and inputs alone that lies between a
    product and the bias add of that product which reads it (a recurrent layer's
    ``b_ih + b_hh``, made after its input projection) moved to just before the product: then
    the add follows the product, and the product's gemm adds the bias as it stores
    (:meth:`_KernelLowering._added_products`). What the map reads no statement writes, and
    nothing before it read its new value: every value is unchanged."""
    stmts = list(plan.stmts)
    moved = False
    for j, st in enumerate(stmts):
        if st.kind is not ir.Op.ADD_BIAS or j < 2:
            continue
        k, i = j - 1, j - 2
        bias, between, prod = st.operands[1], stmts[k], stmts[i]
        if (prod.kind is ir.Op.MATMUL and prod.target == st.operands[0] and between.kind is ir.Op.MAP
                and between.target == bias and set(between.operands) <= given):
            stmts[i], stmts[k] = between, prod
            moved = True
    return replace(plan, stmts=stmts) if moved else plan


class _KernelLowering:
    """Lowers one plan; ``outputs`` maps output names to the C buffers that receive them."""

    def __init__(self, plan: KernelPlan, printer: SymnnCPrinter, param_shapes: dict,
                 input_shapes: dict, outputs: dict[str, str], shared: bool, keep_outputs: bool = False,
                 length: bool = False) -> None:
        self.plan = _biases_first(plan, set(param_shapes) | set(input_shapes))
        #: the statement that makes each value (the last, for a value updated in place), and how
        #: many statements read it: what the fusions below ask of the plan
        self._made = {st.target: i for i, st in enumerate(self.plan.stmts)}
        self._reads: dict[str, int] = {}
        for st in self.plan.stmts:
            for o in st.operands:
                self._reads[o] = self._reads.get(o, 0) + 1
        #: the kernel takes the sequences' length at each call (``steps``): sizes a*n*steps + b*n + c
        self.length = length
        #: the array outputs (a train step's gradients) kept in work to the kernel's end, each
        #: where the arena puts it, instead of written to the caller's buffers
        self.keep_outputs = keep_outputs
        self.kept_vars: set[str] = set()
        self.p = printer
        self.vars: dict[str, Var] = {}
        for name, shape in param_shapes.items():
            self.vars[name] = _var_from_shape(name, shape, "param")
        for name, shape in input_shapes.items():
            self.vars[name] = _var_from_shape(name, shape, "input")
        self.out_buffer = outputs  # output name -> C expression of its buffer ("grad + 8")
        self.layout = KernelLayout(work=Need.linear(*(0,) * (3 if length else 2)))
        self.alloc = Arena(3 if length else 2)
        self._held: list[int] = []  # scratch slots of the statement being lowered, not yet released
        self.stored: set[str] = set()  # softmax outputs that their row statistics filled with exp(z - max)
        self._relu_masked: set[str] = set()  # max pool pullbacks that mask by their input's sign
        self.shared = shared
        self.nm = _Names(False)  # the names of the context being lowered
        self._views: list[dict] = []  # a reshape's pointer to what it views
        self.views = column_views(plan)  # blocks of columns and steps read where they lie
        #: a loop step's concatenations written where its END would copy them
        self.in_place = step_writes(plan, self.views)
        #: the loops whose output takes a leading slot for the first state (:mod:`.slots`)
        self._slots: dict[str, SlotLoop] = slotted_loops(self.plan, self.views, self.in_place,
                                                         tile_cols(printer.dtype))
        self._slot_carry = {sl.carry: sl for sl in self._slots.values()}
        self._slot_prev = {sl.prev: sl for sl in self._slots.values() if sl.prev is not None}
        self._slot_away = {i for sl in self._slots.values() for i in sl.chain}
        for sl in self._slots.values():  # the new carry lies in the stored step: no carry to write
            w = self.in_place.get(sl.new)
            if w is not None and w.role is StepRole.CARRY:
                self.in_place[sl.new] = StepWrite(StepRole.PART, sl.y, w.head, 0)
            for name in sl.parts:  # maps that write straight into the stored step's first columns
                self.in_place[name] = StepWrite(StepRole.PART, sl.y, sl.head, 0)
        self.depth = 0  # loops open around the statement being lowered
        self._last: dict[str, int] = {}
        #: a loop's products with an invariant B (a recurrent weight): the product's target -> the
        #: buffer of B's panels, packed before the loop (:meth:`_pack_invariants`); per loop END,
        #: their slots
        self._packed: dict[str, str] = {}
        self._pack_names: dict[str, int] = {}  # a weight's packed panels: the loops packing them so far
        self._packed_slots: dict[int, list[int]] = {}
        #: a product's target -> (D, D's leading dimension) where its gemm stores C = D + op(A) @ op(B)
        #: (:meth:`_added_products`)
        self._plus: dict[str, tuple[str, object]] = {}
        #: a concatenation's part that is whole steps of a column block of a sequence (the
        #: carries a loop's steps started from): the part's name -> where it lies in the
        #: sequence (:meth:`_step_blocks`); the statements that would have copied it out
        self._blocks: dict[str, dict] = {}
        self._blocks_away: set[int] = set()

    def _begin(self, scalar_target: bool = False) -> _Names:
        """A fresh record for the next context: its names as helper parameters in a long kernel,
        except where it assigns a scalar (a C local of the kernel, which stays in its body)."""
        self.nm = _Names(self.shared and not scalar_target)
        return self.nm

    def _append(self, ctx: dict, origins: list[str | None]) -> None:
        """Add a finished context and its record; a shared one becomes a call of its helper."""
        nm = self.nm
        # a batch-sized array prints n in its loops or sizes; nothing else does
        batch = any(x in self.vars and self.vars[x].ndim > 0 and self.vars[x].batch for x in nm.printed)
        ctx = _printed(ctx)  # its sizes as C (a run-time length's multiples: of ``steps``)
        steps = _prints_steps(ctx)
        uses = nm.uses(batch, steps)
        if nm.shared:
            ctx = self._call(ctx, uses)
        ctx["depth"] = self.depth  # the loops around it: its indentation
        ctx["origins"] = origins
        self.layout.stmts.append(ctx)
        self.layout.uses.append(uses)

    def _call(self, ctx: dict, uses: Uses) -> dict:
        """The helper of a shared context (its parameters typed from the record) and the call
        that replaces it in the kernel: the arrays, then ``n`` and ``Nr`` where printed."""
        real = f"{self.p.prefix}_real"
        params, args = [], []
        for name in uses.order:
            v = self.vars.get(name)
            printed = self.nm.printed[name]
            if v is not None and v.ndim == 0:
                params.append(f"{real} {printed}")
            elif name in uses.writes:
                params.append(f"{real} *{printed}")
            else:
                params.append(f"const {real} *{printed}")
            args.append(name)
        if uses.batch:
            params.append("ptrdiff_t n")
            args.append("n")
        if uses.steps:
            params.append("ptrdiff_t steps")
            args.append("steps")
        if uses.nr:
            params.append(f"{real} Nr")
            args.append("Nr")
        self.layout.helpers.append({"ctx": ctx, "params": params})
        return {"kind": CKind.CALL, "fn": None, "helper": len(self.layout.helpers) - 1,
                "args": ", ".join(args), "note": ", ".join(sorted(uses.writes))}

    # -- storage ---------------------------------------------------------------------------
    def _declare_targets(self) -> None:
        output_of = {v: k for k, v in self.plan.outputs.items()}
        for st in self.plan.stmts:
            if st.target in self.vars:
                continue
            view = st.kind is ir.Op.RESHAPE or st.target in self.views or st.target in self.in_place
            var = _var_from_shape(st.target, st.shape, "view" if view else "work")
            if st.target in output_of:
                var.storage = "scalar" if not var.ndim else "work" if self.keep_outputs else "output"
                if var.storage == "work":
                    self.kept_vars.add(st.target)
            elif var.ndim == 0:
                var.storage = "scalar"
            self.vars[st.target] = var
        for sl in self._slots.values():  # :mod:`.slots`: the output's slots, pointers into them
            ld = _sized(sl.head.length + 1) * sl.width
            self.vars[sl.y].ld = ld
            carry = self.vars[sl.carry]
            carry.storage, carry.ld = "view", ld
            for i in sl.chain:
                self.vars[self.plan.stmts[i].target].storage = "view"
            if sl.prev is not None:
                prev = self.vars[sl.prev]
                prev.storage, prev.ld, prev.step = "view", ld, sl.width
                for name in sl.grouped:
                    rows = self.vars[name]
                    rows.ld, rows.group, rows.group_ld = sl.width, sl.head.length, ld

    def _last_uses(self) -> dict[str, int]:
        last = last_uses(self.plan, self.views, self.in_place)
        for sl in self._slots.values():  # prev and its row views read the output's slots
            seen = [sl.prev, *sl.grouped] if sl.prev is not None else []
            last[sl.y] = max([last.get(sl.y, 0), *(last.get(name, 0) for name in seen)])
            if sl.prev is not None:  # the concatenation that read the first state is gone
                cc = self._made[sl.prev]
                reads = [i for i, st in enumerate(self.plan.stmts) if sl.init in st.operands and i != cc]
                last[sl.init] = max(reads, default=sl.carry_at)
        for name in self.kept_vars:  # read after the kernel: never released
            last[name] = len(self.plan.stmts)
        return last

    def _is_output(self, var: Var) -> bool:
        """An output: in the caller's buffer, or kept in work to the end."""
        return var.storage == "output" or var.name in self.kept_vars

    def _row_ops(self) -> dict[str, list[int]]:
        users: dict[str, list[int]] = {}
        for i, st in enumerate(self.plan.stmts):
            if st.kind in ROW_OPS:
                users.setdefault(st.operands[0], []).append(i)
        return users

    # -- lowering ----------------------------------------------------------------------------
    def lower(self) -> KernelLayout:
        self._declare_targets()
        last = self._last = self._last_uses()
        self._blocks, self._blocks_away, read_at = self._step_blocks()
        for name, i in read_at.items():  # the sequence, read by the concatenation itself
            last[name] = max(last.get(name, i), i)
        dying: dict[int, list[str]] = {}
        for name, i in sorted(last.items()):
            dying.setdefault(i, []).append(name)
        shared_stats = {z: idx for z, idx in self._row_ops().items() if len(idx) > 1}
        stats_of: dict[str, tuple[str, str]] = {}
        stats_slots: dict[str, tuple[int, int]] = {}
        stats_last = {z: idx[-1] for z, idx in shared_stats.items()}
        sums = self._column_sums()  # map index -> (index of the sum it does, the output summed into)
        summed_away = {j for j, _ in sums.values()}
        pool_masks = self._masked_pool_grads()
        masked_away = set(pool_masks.values())
        added = self._added_products(sums, pool_masks)
        added_away = set(added.values())
        ends = loop_ends(self.plan)
        for i, st in enumerate(self.plan.stmts):
            if st.kind is Loop.BEGIN:  # its products' invariant panels, packed before it opens
                self._pack_invariants(i, ends[i])
            z = st.operands[0] if st.operands else None
            if z in shared_stats and z not in stats_of and st.kind in ROW_OPS:
                zv = self.vars[z]
                m, s = f"{z}_max", f"{z}_sum"
                # one max and one sum per row of z: per batch row, or per step of a sequence's rows
                per_row = self._coefficients(zv.rows)
                sm, ss = self.alloc.take(*per_row), self.alloc.take(*per_row)
                stats_of[z] = (m, s)
                stats_slots[z] = (sm, ss)
                self.layout.pointers += [
                    {"name": m, "slot": sm, "const": False},
                    {"name": s, "slot": ss, "const": False},
                ]
                store = self._softmax_of(z, shared_stats[z])
                if store is not None:  # its exponentials go straight into the softmax's output
                    self._allocate(self.vars[store])
                    self.stored.add(store)
                nm = self._begin()
                self._append({"kind": CKind.ROWSTATS, "z": nm.read(z), "m": nm.write(m), "s": nm.write(s),
                              "store": nm.write(store) if store is not None else None,
                              "rows": rows_code(zv), "cols": zv.cols}, self._origins(*shared_stats[z]))
            if i in pool_masks:  # the masked pullback writes the map's result (the map goes)
                st = Stmt(st.kind, self.plan.stmts[pool_masks[i]].target, st.operands, st.shape, st.payload)
                self._relu_masked.add(st.target)
            if i in added:  # the product's gemm writes the sum's result (the add goes)
                total = self.plan.stmts[added[i]]
                d = next(o for o in total.operands if o != st.target)
                if st.target in self._packed:
                    self._packed[total.target] = self._packed[st.target]
                self._plus[total.target] = (d, 0 if total.kind is ir.Op.ADD_BIAS else self.vars[d].stride)
                st = Stmt(st.kind, total.target, st.operands, st.shape, st.payload)
            target = self.vars[st.target]
            written = self.in_place.get(st.target)
            if written is not None and written.role is StepRole.PART:  # its map writes it there
                self._lies_in(target, written, i)
            if st.kind is ir.Op.MAP:
                self._take_over(target, st, i, last)
            if i not in self._blocks_away and i not in self._slot_away:
                self._allocate(target)
            if i in sums:  # its column sum is written in this loop: its storage lives from here
                self._allocate(self.vars[sums[i][1]])
            # each context's "origins": the plan statements it computes (a fused loop several)
            colsum_of = [sums[i][0]] if i in sums else []
            if i in summed_away:
                pass  # summed in the loop that computed its operand
            elif i in masked_away:
                pass  # masked in the max pool's pullback before it
            elif i in added_away:
                pass  # added by the gemm of the product before it
            elif i in self._blocks_away:
                pass  # a block of steps, read where it lies by the concatenation after it
            elif i in self._slot_away:
                pass  # the stored states, read where they lie in the loop's slots (.slots)
            elif i + 1 < len(self.plan.stmts) and self._fuses_bias(i + 1):
                pass  # a bias add done in the loop of the map after it
            elif self._fuses_bias(i):
                biased = self.plan.stmts[i - 1].target
                keep = last[biased] > i or self._is_output(self.vars[biased])
                self._begin()
                ctx = self._map(st, bias=self.plan.stmts[i - 1], keep=keep,
                                colsum=sums.get(i, (0, None))[1])
                self._append(ctx, self._origins(i - 1, i, *colsum_of))
            elif st.kind is ir.Op.MAP and i in sums:
                self._begin()
                self._append(self._map(st, colsum=sums[i][1]), self._origins(i, *colsum_of))
            else:
                # a loop's bounds and a view are the kernel's own lines, never a shared helper
                self._begin(scalar_target=target.ndim == 0 or st.kind in KERNEL_LINES or st.target in self.views)
                # the masking map's equation too, or the sum's
                fused = [pool_masks[i]] if i in pool_masks else [added[i]] if i in added else []
                self._append(self._stmt(st, stats_of.get(z) if z else None), self._origins(i, *fused))
                if st.kind is Loop.BEGIN:  # the statements up to its END are inside the loop
                    self.depth += 1
                elif st.kind is Loop.END:  # the step's output written: the loop closes
                    self.depth -= 1
                    self._begin(scalar_target=True)
                    self._append({"kind": CKind.LOOP_CLOSE}, self._origins(i))
            # what is read last here is free: operands, and storage read last through a view
            # (a reshape's, a step's columns), which is no operand of this statement
            for name in dying.get(i, ()):
                dead = self.vars.get(name)
                if dead is not None and dead.storage == "work" and dead.slot is not None:
                    self.alloc.release(dead.slot)
            for zz, li in stats_last.items():
                if li == i:
                    for sl in stats_slots[zz]:
                        self.alloc.release(sl)
            for sl in self._packed_slots.pop(i, ()):  # the loop is over: its packed panels too
                self.alloc.release(sl)
        self._outputs()
        # views last: what they view is declared by then (a work slot, an input, an output)
        self.layout.pointers += self._views
        placed = self.alloc.place(self.p.prefix)
        for ptr in self.layout.pointers:
            if "slot" in ptr:
                ptr["init"] = placed.inits[ptr["slot"]] + (f" + {ptr['offset']}" if ptr.get("offset") else "")
                self.layout.uses_work = True
                self.layout.uses_n |= placed.uses_n
        self.layout.offset_lines = placed.lines
        self.layout.work = placed.need
        self.layout.uses_nr = any(u.nr for u in self.layout.uses)
        self.layout.uses_n |= self.layout.uses_nr or any(u.batch for u in self.layout.uses)
        self.layout.uses_steps = any(u.steps for u in self.layout.uses) or any(
            _STEPS.search(text) for text in [*self.layout.offset_lines, *(str(p.get("init", "")) for p in self.layout.pointers)])
        return self.layout

    def _pack_invariants(self, begin: int, end: int) -> None:
        """The products inside the loop ``begin``..``end`` whose B is a parameter (a recurrent
        weight: h @ W_hh.T forward, delta @ W_hh back through time), of fixed K and at least a tile
        of columns: B's panels are packed once, here, before the loop, into a work slot live to
        the loop's end, and each step's product reads them (``gemm_*_packed``) instead of packing
        B again at every step. One buffer per weight and form."""
        jb = tile_cols(self.p.dtype)
        made: dict[tuple[str, bool], str] = {}
        for j in range(begin + 1, end):
            st = self.plan.stmts[j]
            if st.kind is not ir.Op.MATMUL or st.payload[0]:
                continue
            b, tb = self.vars[st.operands[1]], st.payload[1]
            k, nc = (b.cols, b.rows) if tb else (b.rows, b.cols)
            if b.storage != "param" or fixed(dim_code(k)) is None or fixed(dim_code(nc)) is None \
                    or int(nc) < jb or int(k) * int(nc) <= SMALL_PRODUCT:
                continue
            key = (b.name, tb)
            if key not in made:
                # one name per loop: a layer applied twice packs its weight before each of its loops
                base = f"{b.name}_pk{'t' if tb else 'n'}"
                self._pack_names[base] = uses = self._pack_names.get(base, 0) + 1
                name = made[key] = base if uses == 1 else f"{base}{uses}"
                ncp = -(-int(nc) // jb) * jb
                slot = self.alloc.take(*self._coefficients(int(k) * ncp + jb))
                self._packed_slots.setdefault(end, []).append(slot)
                self.layout.pointers.append({"name": name, "slot": slot, "const": False})
                nm = self._begin(scalar_target=True)  # a line of the kernel, before the loop
                self._append({"kind": CKind.GEMM_PACK, "gemm": "nt" if tb else "nn", "K": int(k), "Nc": int(nc),
                              "b": nm.read(b.name), "ldb": b.stride, "packed": nm.write(name)}, self._origins(j))
            self._packed[st.target] = made[key]

    def _origins(self, *indices: int, merged: Sequence[str | None] = ()) -> list[str | None]:
        """The distinct origins of the plan statements ``indices`` after those ``merged`` from a
        context this one absorbs (a fused bias add): what a statement context computes, for the
        emitted file's provenance (:mod:`symnn.provenance`)."""
        return list(dict.fromkeys([*merged, *(self.plan.stmts[i].origin for i in indices)]))

    def _take_over(self, target: Var, st: Stmt, i: int, last: dict[str, int]) -> None:
        """An element-wise map writes into the slot of an operand of its own shape whose last
        read it is: each entry is read before the same entry is written, so no second buffer
        is needed (a convolution's output and its activation share one)."""
        if target.storage != "work" or target.slot is not None:
            return
        for name in st.operands:
            o = self.vars.get(name)
            if (o is not None and o is not target and o.storage == "work" and o.slot is not None
                    and last.get(name) == i and (o.rows, o.cols) == (target.rows, target.cols)
                    and name not in self._slots):
                target.slot, o.slot = o.slot, None  # the operand's slot is the target's now: not released
                self.layout.pointers.append({"name": target.name, "slot": target.slot, "const": False})
                return

    def _coefficients(self, size: object) -> tuple[int, ...]:
        """A size in reals as the work layout takes it (:func:`coefficients`)."""
        return coefficients(size, self.length)

    def _allocate(self, var: Var) -> None:
        if var.storage == "work" and var.slot is None:
            sl = self._slots.get(var.name)
            # a loop's output with a leading slot (.slots): its pointer is one step in
            size = var.entries() if sl is None else sp.expand(_sized(var.rows) * var.stride)
            var.slot = self.alloc.take(*self._coefficients(size))
            # (a forward loop's: one step in, past the first state's slot)
            offset = sl.width if sl is not None and not sl.head.reverse else 0
            self.layout.pointers.append({"name": var.name, "slot": var.slot, "const": False, "offset": offset})
        elif var.storage == "scalar" and var.name not in self.layout.scalars:
            self.layout.scalars.append(var.name)

    # -- fusion: passes over a batch-sized tensor that read what the pass before wrote --------
    # Each fused loop computes every element exactly as the separate loops did, in the same
    # order, so the results are bitwise unchanged; what goes is a pass over memory (figures:
    # docs/benchmarks_core.md).

    def _softmax_of(self, z: str, users: list[int]) -> str | None:
        """The softmax of ``z`` among the row ops sharing its statistics: the row statistics
        then store exp(z - max) in its output, and the softmax only divides by the sum."""
        for i in users:
            st = self.plan.stmts[i]
            if st.kind is ir.Op.SOFTMAX and st.operands[0] == z:
                return st.target
        return None

    def _grid_shaped(self, name: str) -> bool:
        v = self.vars.get(name)
        return v is not None and v.ndim == 2 and v.batch

    def _fuses_bias(self, i: int) -> bool:
        """Statement ``i`` is an element-wise map right after ``z = A + b`` (or ``z += b``), reading
        z, with z's shape: one loop adds the bias and evaluates the map."""
        if not 0 < i < len(self.plan.stmts) or self.plan.stmts[i].kind is not ir.Op.MAP \
                or self.plan.stmts[i - 1].kind is not ir.Op.ADD_BIAS:
            return False
        st, prev = self.plan.stmts[i], self.plan.stmts[i - 1]
        z, t = self.vars[prev.target], self.vars[st.target]
        return (prev.target in st.operands and st.target != prev.target and self._grid_shaped(st.target)
                and (z.rows, z.cols) == (t.rows, t.cols))

    def _masked_pool_grads(self) -> dict[int, int]:
        """MAX_POOL_GRAD index -> the index of the map right after it, ``t * Heaviside(x, 0)``
        of its result t and its input x (a ReLU before the pool, back through it), t read by
        nothing else: the pool's pullback adds a window's gradient only where the window's
        maximum is positive, and the map's pass goes. The same values: t is 0 but at windows'
        maxima, and at a maximum x > 0 is what the map tested (NaN and x <= 0 give 0 both ways)."""
        reads = self._reads
        out: dict[int, int] = {}
        for i, (st, nxt) in enumerate(zip(self.plan.stmts, self.plan.stmts[1:])):
            if st.kind is not ir.Op.MAX_POOL_GRAD or nxt.kind is not ir.Op.MAP:
                continue
            x, t = st.operands[0], st.target
            if sorted(nxt.operands) != sorted((x, t)) or reads.get(t) != 1 or x == t \
                    or self._is_output(self.vars[nxt.target]) or not isinstance(nxt.payload, sp.Expr):
                continue
            sym = {v.name: v for v in nxt.payload.free_symbols}
            if set(sym) == {x, t} and nxt.payload == sym[t] * sp.Heaviside(sym[x], 0):
                out[i] = i + 1
        return out

    def _added_products(self, sums: dict[int, tuple[int, str]], pool_masks: dict[int, int]) -> dict[int, int]:
        """MATMUL index -> the index of the statement right after it that adds something to its
        result P and is P's only reader: ``P += b`` (a bias row: the input projection of a
        recurrent layer, whose add no activation follows), or a map ``D + P`` of D and P of one
        shape (a recurrent step's gates: the input's projection plus h @ W_hh.T). The gemm
        stores C = D + P in the sum's target and the add's pass goes: each entry is D's plus the
        product's whole sum, the same bits as the pass computed. Not where an activation's loop
        already adds the bias (``_fuses_bias``), for a product of a tiny fixed part (in place,
        no gemm), nor where the sum is written in place in a loop's step or read as a view."""
        reads = self._reads
        taken = set(sums) | {j for j, _ in sums.values()} | set(pool_masks) | set(pool_masks.values())
        out: dict[int, int] = {}
        for i, (st, nxt) in enumerate(zip(self.plan.stmts, self.plan.stmts[1:])):
            # P read by the add alone (an add in place, z += b, gives later readers the sum)
            alone = reads.get(st.target) == 1 or (nxt.target == st.target and st.target in nxt.operands)
            if st.kind is not ir.Op.MATMUL or self._small_product(st) or i + 1 in taken \
                    or all(st.payload) or not alone:
                continue
            p, t = self.vars[st.target], self.vars[nxt.target]
            if st.target in self.views or st.target in self.in_place or (self._is_output(p) and p is not t) \
                    or nxt.target in self.views or nxt.target in self.in_place or t.storage != p.storage \
                    or (t.rows, t.cols) != (p.rows, p.cols):
                continue
            if nxt.kind is ir.Op.ADD_BIAS:
                if nxt.operands[0] == st.target and not self._fuses_bias(i + 2):
                    out[i] = i + 1
            elif nxt.kind is ir.Op.MAP and isinstance(nxt.payload, sp.Expr) and len(nxt.operands) == 2 \
                    and st.target in nxt.operands and len(set(nxt.operands)) == 2:
                d = self.vars.get(next(o for o in nxt.operands if o != st.target))
                sym = {v.name: v for v in nxt.payload.free_symbols}
                if d is not None and d.ndim == 2 and (d.rows, d.cols) == (p.rows, p.cols) \
                        and set(sym) == set(nxt.operands) and nxt.payload == sym[d.name] + sym[st.target]:
                    out[i] = i + 1
        return out

    def _step_blocks(self) -> tuple[dict[str, dict], set[int], dict[str, int]]:
        """The parts of concatenations that are whole steps of a column block of a sequence X
        (N, T*W): X's steps stacked as rows (RESHAPE to (N*T, W)), columns lo:lo+w of them
        (SLICE), back to a sequence (RESHAPE to (N, T*w)), then steps a/w .. b/w of it (SLICE, or
        every step): the carries a loop's steps started from (the first carry, then the stored
        steps' carries but the last: ``symnn.autodiff.scan``), which an LSTM's or GRU's backward
        loop and its weight gradient read. The block of columns was copied out of the stored
        sequence, then copied again into the concatenation; here the concatenation reads each
        step's block where it lies in X, and the copy, its storage and the views of it go. The
        same values in the same places: the concatenation's bits are unchanged. Returns the
        parts, the statements that go, and X -> the concatenation's index (X lives to it)."""
        stmts, made = self.plan.stmts, self._made
        readers = readers_of(self.plan)
        outputs = set(self.plan.outputs.values())

        def only(name: str, reader: int) -> bool:
            return readers.get(name) == [reader] and name not in outputs and name not in self.in_place

        blocks: dict[str, dict] = {}
        away: set[int] = set()
        read_at: dict[str, int] = {}
        for ci, st in enumerate(stmts):
            if st.kind is not ir.Op.CONCAT or self.in_place.get(st.target) is not None:
                continue
            for part in st.operands:
                seq, first, chain, k = part, sp.Integer(0), [], made.get(part)
                if k is not None and stmts[k].kind is ir.Op.SLICE:  # some of the steps
                    if part not in self.views:
                        continue
                    seq, first = stmts[k].operands[0], _sized(stmts[k].payload[0])
                    chain.append(k)
                r2 = made.get(seq)
                if r2 is None or stmts[r2].kind is not ir.Op.RESHAPE or not only(seq, chain[0] if chain else ci):
                    continue
                s1 = made.get(stmts[r2].operands[0])
                if s1 is None or stmts[s1].kind is not ir.Op.SLICE or not only(stmts[s1].target, r2):
                    continue
                r1 = made.get(stmts[s1].operands[0])
                if r1 is None or stmts[r1].kind is not ir.Op.RESHAPE:
                    continue
                if only(stmts[r1].target, s1):  # the stacked view, read by nothing else
                    chain.append(r1)
                x = self.vars[stmts[r1].operands[0]]
                stacked, block, steps = self.vars[stmts[r1].target], self.vars[stmts[s1].target], self.vars[seq]
                lo, w, big = _sized(stmts[s1].payload[0]), _sized(block.cols), _sized(stacked.cols)
                count = sp.cancel(_sized(self.vars[part].cols) / w)
                at = sp.cancel(first / w)
                if x.ndim != 2 or x.stride != x.cols or st.operands.count(part) != 1 \
                        or (steps.rows, _sized(steps.cols)) != (x.rows, sp.cancel(_sized(x.cols) / big * w)) \
                        or not all(sp.fraction(v)[1] == 1 for v in (count, at)):
                    continue
                blocks[part] = {"x": x.name, "at": lo + at * big, "ld": x.stride, "steps": count,
                                "w": w, "step_ld": big}
                away.update([s1, r2, *chain])
                read_at[x.name] = ci
        return blocks, away, read_at

    def _small_product(self, st: Stmt) -> bool:
        """A product with a tiny fixed part (xor's 2x4 weights), laid out in place: constant-size
        loops, which the compiler unrolls; a gemm call costs more than the arithmetic."""
        t, a = self.vars[st.target], self.vars[st.operands[0]]
        ta = st.payload[0]
        sizes = [fixed(d) for d in (rows_code(t), rows_code(a) if ta else dim_code(a.cols)) if fixed(d) is not None]
        sizes.append(int(t.cols))
        return len(sizes) == 2 and sizes[0] * sizes[1] <= SMALL_PRODUCT

    def _column_sums(self) -> dict[int, tuple[int, str]]:
        """map index -> (index of a later ``c = A.sum(axis=0)`` of its output, c): the bias
        gradient summed in the loop that computes the layer's delta instead of a pass of its own.
        Only for an output c (a gradient), which nothing reads in between."""
        made = self._made
        out: dict[int, tuple[int, str]] = {}
        for j, st in enumerate(self.plan.stmts):
            if st.kind is not ir.Op.SUM_ROWS:
                continue
            i = made.get(st.operands[0])
            if i is None or i in out or self.plan.stmts[i].kind is not ir.Op.MAP \
                    or not self._grid_shaped(st.operands[0]):
                continue
            if self._is_output(self.vars[st.target]):
                out[i] = (j, st.target)
        return out

    def _outputs(self) -> None:
        """Output views (into yhat/grad) and copies for outputs no statement computed."""
        produced = {st.target for st in self.plan.stmts}
        bound: set[str] = set()
        for out, var_name in self.plan.outputs.items():
            buf = self.out_buffer.get(out, "")
            v = self.vars[var_name]
            if v.ndim == 0:
                self.layout.outputs[out] = var_name
                continue
            if var_name in produced and var_name in self.kept_vars and var_name not in bound:
                self.layout.kept[out] = var_name  # where the arena put it
                bound.add(var_name)
                continue
            if var_name in produced and v.storage == "output" and var_name not in bound:
                self.layout.pointers.append({"name": var_name, "init": buf, "const": False})
                bound.add(var_name)
                continue
            if self.keep_outputs:  # a copy into a work value of its own, alive to the end
                kept = Var(f"{out}_g", "work", v.rows, v.cols, v.ndim)
                self.vars[kept.name] = kept
                self._allocate(kept)
                self.layout.kept[out] = buf = kept.name
            # an output equal to an input, a parameter or another output: copy it
            # (in the kernel's body: the destination is an argument, not a name of the kernel)
            made = [i for i, st in enumerate(self.plan.stmts) if st.target == var_name]
            nm = _Names(False)
            self.nm = nm
            self._append({"kind": CKind.COPY, "dst": buf, "src": nm.read(var_name), "size": _size(v)},
                         self._origins(*made[-1:]))

    # -- statements ---------------------------------------------------------------------------
    def _stmt(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        """The context of one plan statement, every name printed through ``self.nm``; ``stats``:
        the shared row statistics of its logits, if any."""
        rule = STATEMENTS.get(st.kind)
        if rule is None:
            raise CodegenError(f"internal error: the C backend has no rule for statement kind "
                               f"{st.kind!r} (target {st.target!r})")
        return rule(self, st, stats)

    # -- one rule per statement kind (:data:`STATEMENTS`) -------------------------------------
    def _matmul(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        v, nm = self.vars, self.nm
        t = v[st.target]
        ta, tb = st.payload
        a, b = v[st.operands[0]], v[st.operands[1]]
        # op(A) is (M, K), op(B) is (K, Nc)
        m = rows_code(t)
        k = rows_code(a) if ta else dim_code(a.cols)
        nc = t.cols
        kind = MATMUL_KINDS[ta, tb]
        ctx = {"kind": kind, "c": nm.write(t.name), "a": nm.read(a.name), "b": nm.read(b.name),
               "M": m, "K": k, "Nc": nc, "lda": a.stride, "ldb": b.stride, "ct": None, "ta": ta, "tb": tb,
               "packed": None, "d": None, "ldd": 0}
        if b.group is not None:  # B's rows in groups (.slots): their gemm packs them from there
            plus = self._plus.get(st.target)
            ctx.update(group=dim_code(b.group), ldg=dim_code(b.group_ld),
                       scratch=nm.write(self._scratch(f"{t.name}_bp", self._panel_reals(a, k))),
                       d=nm.read(plus[0]) if plus is not None else None, ldd=plus[1] if plus is not None else 0)
            return ctx
        if self._small_product(st):
            sa, sb = dim_code(a.stride), dim_code(b.stride)
            ctx.update(kind=CKind.MATMUL_SMALL, a_at=f"k*{sa} + i" if ta else f"i*{sa} + k",
                       b_at=f"j*{sb} + k" if tb else f"k*{sb} + j")
            return ctx
        plus = self._plus.get(st.target)
        if plus is not None:  # C = D + the product (_added_products)
            ctx.update(d=nm.read(plus[0]), ldd=plus[1])
        packed = self._packed.get(st.target)
        if packed is not None:  # B's panels packed before the loop (_pack_invariants)
            ctx["packed"] = nm.read(packed)
            return ctx
        if kind is not CKind.MATMUL_TT:
            jb = tile_cols(self.p.dtype)
            ctx["scratch"] = nm.write(self._scratch(f"{t.name}_bp", self._panel_reals(a, k), hold=True))
            if kind is not CKind.MATMUL_NN and nc != "n" and int(nc) < jb:
                # fewer columns than a tile (an output layer's classes): the helper computes
                # C.T = op(B).T @ op(A).T, whose tiles are full, into this Nc x M slot
                ctx["ct"] = nm.write(self._scratch(f"{t.name}_ct", t.entries()))
            # the panel's slot was held while the tile's was taken: two scratch slots of one
            # statement are never the same slot
            self.alloc.release(self._held.pop())
        return ctx

    def _panel_reals(self, a: Var, k: str) -> object:
        """The reals of a gemm helper's panel of B: a chunk of k, at most min(K, GEMM_KC) rows, by
        one register tile, with a row spare to put it on a 64-byte boundary; where k is the batch
        (A.T @ B), n + 1 rows, which a small batch on a small device can afford."""
        jb = tile_cols(self.p.dtype)
        return (a.per * naming.N * jb + jb) if fixed(k) is None else (min(int(k), GEMM_KC) + 1) * jb

    def _add_bias(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        # in place (z += b), a is c
        nm, t = self.nm, self.vars[st.target]
        return {"kind": CKind.ADD_BIAS, "c": nm.write(t.name), "a": nm.read(st.operands[0]),
                "b": nm.read(st.operands[1]), "rows": rows_code(t), "cols": t.cols, "inplace": st.inplace}

    def _row_reduction(self, st: Stmt, kind: CKind) -> dict:
        nm, a = self.nm, self.vars[st.operands[0]]
        return {"kind": kind, "c": nm.write(st.target), "a": nm.read(a.name), "rows": rows_code(a),
                "cols": a.cols}

    def _sum_rows(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        # a block of another array's columns is summed where it lies, rows ``lda`` apart
        return self._row_reduction(st, CKind.SUM_ROWS) | {"lda": self.vars[st.operands[0]].stride}

    def _rowsum(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        return self._row_reduction(st, CKind.ROWSUM)

    def _sum(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        nm, a = self.nm, self.vars[st.operands[0]]
        if a.ndim == 0:
            return {"kind": CKind.ASSIGN, "c": nm.write(st.target), "value": nm.read(a.name)}
        return {"kind": CKind.SUM, "c": nm.write(st.target), "a": nm.read(a.name), "size": _size(a)}

    def _row_op(self, st: Stmt, stats: tuple[str, str] | None, kind: CKind) -> dict:
        nm, z = self.nm, self.vars[st.operands[0]]
        stored = st.target in self.stored  # its row statistics left exp(z - max) in it
        return {"kind": kind, "c": nm.write(st.target),
                # a stored softmax reads only the exponentials and the sums
                "z": nm.label(z.name, "the logits") if stored else nm.read(z.name),
                "rows": rows_code(z), "cols": z.cols,
                "m": None if stats is None else nm.label(stats[0], "max") if stored else nm.read(stats[0]),
                "s": nm.read(stats[1]) if stats else None, "stored": stored}

    def _softmax(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        return self._row_op(st, stats, CKind.SOFTMAX)

    def _logsumexp(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        return self._row_op(st, stats, CKind.LOGSUMEXP)

    def _softmax_ce(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        ctx = self._row_op(st, stats, CKind.SOFTMAX_CE)
        ctx["y"] = self.nm.read(st.operands[1])
        return ctx

    def _concat(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        nm, t = self.nm, self.vars[st.target]
        sl = self._slot_prev.get(st.target)
        if sl is not None:  # the states each step started from: slots 0..T-1 of the loop's output
            nm = self._begin(scalar_target=True)  # a comment of the kernel; the pointer is declared
            self._views.append({"name": t.name, "init": _pointer(sl.y, sl.prev_at), "const": True})
            return {"kind": CKind.STEP_SLOTS, "c": nm.label(t.name, "c"), "y": nm.label(sl.y, "y"),
                    "cols": sl.carried, "step": sl.width, "ld": dim_code(t.stride), "first": nm.label(sl.init, "first"),
                    "slot": dim_code(sl.head.length) if sl.head.reverse else "0"}
        written = self.in_place.get(st.target)
        if written is not None and written.role is not StepRole.PART:  # a part's: pointed there already
            self._lies_in(t, written, self.plan.stmts.index(st))
        parts, offset = [], 0
        for name in st.operands:
            cols = self.vars[name].cols
            # a part its map wrote into its columns of this step already needs no copy
            block = self._blocks.get(name)
            if block is not None:  # whole steps of a block of a sequence's columns, where they lie
                parts.append({"a": nm.read(block["x"]), "cols": block["w"], "offset": offset,
                              "ld": dim_code(block["ld"]), "at": block["at"], "steps": block["steps"],
                              "step_ld": block["step_ld"]})
            elif not (written is not None and self._lies_in_step(name, written.into)):
                parts.append({"a": nm.read(name), "cols": cols, "offset": offset,
                              "ld": dim_code(self.vars[name].stride), "steps": None})  # a part read where it lies
            offset += cols
        if not parts:  # a line of the kernel that copies nothing
            nm = self._begin(scalar_target=True)
            return {"kind": CKind.IN_PLACE, "c": nm.label(t.name, "c"),
                    "parts": [nm.label(o, "part") for o in st.operands]}
        return {"kind": CKind.CONCAT, "c": nm.write(t.name), "parts": parts, "rows": rows_code(t),
                "cols": t.cols, "ldc": t.stride}

    def _lies_in_step(self, name: str, into: str) -> bool:
        """Whether ``name`` lies in its columns of the stored step ``into`` already: written
        there by its map (``StepRole.PART``), or a concatenation whose every part is (a new carry
        whose maps wrote its parts there: :func:`symnn.lower.step_writes`)."""
        there = self.in_place.get(name)
        if there is not None and there.role is StepRole.PART:
            return there.into == into
        i = self._made.get(name)
        made = self.plan.stmts[i] if i is not None else None
        return made is not None and made.kind is ir.Op.CONCAT and all(self._lies_in_step(o, into) for o in made.operands)

    def _lies_in(self, t: Var, written: StepWrite, i: int) -> None:
        """Point ``t`` (a loop step's value written in place, :func:`symnn.lower.step_writes`)
        at where it lies: the carried value's memory (declared with the kernel's pointers), or
        step t's columns of the loop's output, rows the output's row apart (a pointer declared
        in the loop, like a step read in place)."""
        into = self.vars[written.into]
        if written.role is StepRole.CARRY:
            t.ld = into.ld
            self._views.append({"name": t.name, "init": written.into, "const": False})
            return
        head = written.head
        t.ld = into.stride
        at, what = f"{head.index}*{head.width}", f"step {head.index} of {into.name}"
        if written.role is StepRole.PART:  # its columns of the step
            at, what = f"{at} + {dim_code(written.offset)}", f"{what}'s columns from {dim_code(written.offset)}"
        outer = self.nm
        nm = self._begin(scalar_target=True)  # a line of the kernel, before the statement's own
        self._append({"kind": CKind.COLUMN_VIEW, "c": t.name, "a": nm.read(into.name), "at": at,
                      "what": f"{what}, written in place", "ld": t.ld, "writes": True},
                     self._origins(i))
        self.nm = outer

    def _slice(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        nm, t, a = self.nm, self.vars[st.target], self.vars[st.operands[0]]
        lo = st.payload[0]
        if st.target in self.views:  # read where it lies: a pointer to its first column
            t.ld = a.stride
            t.group, t.group_ld = a.group, a.group_ld
            return {"kind": CKind.COLUMN_VIEW, "c": t.name, "a": nm.read(a.name), "at": dim_code(lo),
                    "what": f"{a.name}[:, {dim_code(lo)}:{dim_code(lo + t.cols)}]", "ld": t.ld, "writes": False}
        return {"kind": CKind.SLICE, "c": nm.write(t.name), "a": nm.read(a.name), "rows": rows_code(t),
                "cols": t.cols, "lda": a.stride, "lo": lo, "hi": dim_code(lo + t.cols)}

    # -- spatial ops: calls of the functions of templates/c/_spatial.jinja ----------------------
    def _carve(self, name: str, parts: Sequence[int]) -> list[str]:
        """One work slot for a convolution's scratch, cut into ``parts`` (their reals): each
        part's pointer into it, "NULL" for a part of no reals. One slot, since two scratch
        slots of one statement could be the same (each is free once taken)."""
        total = sum(parts)
        base = self.nm.write(self._scratch(name, total)) if total else "NULL"
        out, offset = [], 0
        for size in parts:
            out.append("NULL" if size == 0 else base if offset == 0 else f"{base} + {offset}")
            offset += size
        return out

    def _conv_ctx(self, st: Stmt, kind: CKind, roles: tuple[str, str]) -> dict:
        """A convolution's context: its operands by ``roles`` (``x``, ``w``, ``g``), the rows of
        the first (the batch), the geometry, no scratch (the gemm forms add theirs: pointers in
        the order their function takes them)."""
        nm, g = self.nm, st.payload
        ctx = {"kind": kind, "c": nm.write(st.target), "rows": rows_code(self.vars[st.operands[0]]),
               "geom": _geom_init(g), "note": _conv_note(g), "scratch": []}
        return ctx | {role: nm.read(name) for role, name in zip(roles, st.operands)}

    def _panel(self, k: int) -> int:
        """Reals of the gemm helper's packed panel for a product over ``k``: a chunk of k and a
        row spare to align it, by one register tile."""
        return (min(k, GEMM_KC) + 1) * tile_cols(self.p.dtype)

    def _ct(self, cols: int, rows: int) -> int:
        """Reals of the space where the gemm helper computes a product of fewer ``cols`` than a
        register tile as its transpose (``rows`` x ``cols``), or 0 where it does not."""
        return rows * cols if cols < tile_cols(self.p.dtype) else 0

    def _direct_scratch(self, st: Stmt, ctx: dict) -> dict:
        """A direct convolution's scratch: for stride 1 the padded input plane and the output
        rows widened to the padded width (``pad_plane`` in _spatial.jinja), else none."""
        g = st.payload
        wp, hp = g.w + g.pl + g.pr, g.h + g.pt + g.pb
        stride1 = (g.sh, g.sw) == (1, 1)
        ctx["scratch"] = self._carve(f"{st.target}_pad", [hp * wp + (g.kw - 1) * g.dw if stride1 else 0,
                                                          g.ho * wp if stride1 else 0])
        return ctx

    def _winograd_scratch(self, st: Stmt, ctx: dict, ci: int, co: int, ho: int, wo: int) -> dict:
        """Winograd's scratch (``winograd`` in _spatial.jinja) for a correlation of ``ci`` input
        and ``co`` output channels onto ``ho`` x ``wo``: the transformed filters, a block's
        transformed inputs and products (16 matrices each, 16 reals apart), the padded plane and
        the gemm's panel."""
        th, tw = (ho + 1) // 2, (wo + 1) // 2
        block = WINOGRAD_PANELS * tile_cols(self.p.dtype)
        tiles = max(1, block // (th * tw)) * th * tw
        ctx["scratch"] = self._carve(f"{st.target}_wino", [16 * co * ci, 16 * (ci * tiles + 16), 16 * (co * tiles + 16),
                                                            (2 * th + 2) * (2 * tw + 2), self._panel(ci)])
        return ctx

    def _conv(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        g = st.payload
        if _direct(g):
            return self._direct_scratch(st, self._conv_ctx(st, CKind.CONV_DIRECT, ("x", "w")))
        if _winograd(g, g.c, g.o):
            return self._winograd_scratch(st, self._conv_ctx(st, CKind.CONV_WINOGRAD, ("x", "w")), g.c, g.o, g.ho, g.wo)
        ctx = self._conv_ctx(st, CKind.CONV, ("x", "w"))
        cols = 0 if _pointwise(g) else g.weight_cols * g.ho * g.wo
        ctx["scratch"] = self._carve(f"{st.target}_cols", [cols, self._panel(g.weight_cols)])
        return ctx

    def _conv_grad_input(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        g = st.payload
        if _direct(g):
            return self._direct_scratch(st, self._conv_ctx(st, CKind.CONV_GRAD_INPUT_DIRECT, ("g", "w")))
        if _winograd(g, g.o, g.c):
            ctx = self._conv_ctx(st, CKind.CONV_GRAD_INPUT_WINOGRAD, ("g", "w"))
            return self._winograd_scratch(st, ctx, g.o, g.c, g.h, g.w)
        ctx = self._conv_ctx(st, CKind.CONV_GRAD_INPUT, ("g", "w"))
        p, kg = g.ho * g.wo, g.weight_cols
        cols = 0 if _pointwise(g) else kg * p
        ctx["scratch"] = self._carve(f"{st.target}_cols",
                                     [cols, self._ct(p, kg), self._panel(g.o // g.groups)])
        return ctx

    def _conv_grad_weight(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        g = st.payload
        if _direct(g):
            return self._direct_scratch(st, self._conv_ctx(st, CKind.CONV_GRAD_WEIGHT_DIRECT, ("x", "g")))
        ctx = self._conv_ctx(st, CKind.CONV_GRAD_WEIGHT, ("x", "g"))
        p, kg, og = g.ho * g.wo, g.weight_cols, g.o // g.groups
        cols = 0 if _pointwise(g) else kg * p
        # the gemm packs (transposes) its B once a sample: of the two operands, the one of fewer
        # rows, so with fewer output channels than taps the product is taken as DW.T = cols @ G.T
        # (cnn-digits' 16 -> 32 channels 3x3: 32 rows of G packed instead of 144 of cols, 3.5 % of
        # its loss_and_grad, the gradient unchanged bit for bit)
        if og * kg <= SMALL_WEIGHT_GRAD:  # a few weights: summed directly (parts), no gemm
            ctx["scratch"] = self._carve(f"{st.target}_cols", [cols, 0, 0, 0, og * kg * 8])
            return ctx
        transposed = og < kg
        ct = self._ct(og, kg) if transposed else self._ct(kg, og)
        ctx["scratch"] = self._carve(f"{st.target}_cols", [cols, ct, self._panel(p), kg * og if transposed else 0, 0])
        return ctx

    def _channel_bias(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        nm, t = self.nm, self.vars[st.target]
        channels, positions = st.payload
        return {"kind": CKind.CHANNEL_BIAS, "c": nm.write(t.name), "a": nm.read(st.operands[0]),
                "b": nm.read(st.operands[1]), "rows": rows_code(t), "channels": channels,
                "positions": positions}

    def _channel_sum(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        nm, a = self.nm, self.vars[st.operands[0]]
        channels, positions = st.payload
        return {"kind": CKind.CHANNEL_SUM, "c": nm.write(st.target), "a": nm.read(a.name),
                "rows": rows_code(a), "channels": channels, "positions": positions}

    def _channel_expand(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        nm = self.nm
        channels, positions = st.payload
        return {"kind": CKind.CHANNEL_EXPAND, "c": nm.write(st.target), "a": nm.read(st.operands[0]),
                "channels": channels, "positions": positions}

    def _pool(self, st: Stmt, kind: CKind, operands: Sequence[str]) -> dict:
        """A pooling statement: ``operands`` name its sources in order (``x``, ``g``)."""
        nm, g = self.nm, st.payload
        ctx = {"kind": kind, "c": nm.write(st.target), "rows": rows_code(self.vars[st.operands[0]]),
               "geom": _geom_init(g), "note": _pool_note(g)}
        return ctx | {role: nm.read(name) for role, name in zip(operands, st.operands)}

    def _max_pool(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        return self._pool(st, CKind.MAX_POOL, ("x",))

    def _max_pool_grad(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        ctx = self._pool(st, CKind.MAX_POOL_GRAD, ("x", "g"))
        ctx["relu"] = int(st.target in self._relu_masked)  # _masked_pool_grads
        return ctx

    def _avg_pool(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        return self._pool(st, CKind.AVG_POOL, ("x",))

    def _avg_pool_grad(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        return self._pool(st, CKind.AVG_POOL_GRAD, ("g",))

    def _gather(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        nm, idx = self.nm, self.vars[st.operands[0]]
        vocab, dim, _ = st.payload
        return {"kind": CKind.GATHER, "c": nm.write(st.target), "i": nm.read(idx.name),
                "w": nm.read(st.operands[1]), "rows": rows_code(idx), "t": idx.cols, "vocab": vocab, "dim": dim}

    def _gather_grad(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        nm, idx = self.nm, self.vars[st.operands[0]]
        vocab, dim, padding = st.payload
        return {"kind": CKind.GATHER_GRAD, "c": nm.write(st.target), "i": nm.read(idx.name),
                "g": nm.read(st.operands[1]), "rows": rows_code(idx), "t": idx.cols, "vocab": vocab,
                "dim": dim, "padding": padding}

    # -- sequences: a view, and a loop's statements (lower.Loop) ---------------------------------
    def _reshape(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        """The operand's storage under the target's name; into an output's buffer, a copy."""
        nm, t, a = self.nm, self.vars[st.target], self.vars[st.operands[0]]
        if self._is_output(t):
            return {"kind": CKind.COPY, "dst": nm.write(t.name), "src": nm.read(a.name), "size": _size(a)}
        self._views.append({"name": t.name, "init": a.name, "const": True})
        return {"kind": CKind.VIEW, "c": nm.label(t.name, "view"), "a": nm.label(a.name, "viewed"),
                "rows": rows_code(t), "cols": t.cols}

    def _carry(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        """The carried value starts as the first: the first's slot where this is its last read,
        else a copy."""
        nm, t, a = self.nm, self.vars[st.target], self.vars[st.operands[0]]
        sl = self._slot_carry.get(st.target)
        if sl is not None:  # a pointer to slot 0 of the loop's output, which holds a copy of the first
            y = self.vars[sl.y]
            self._allocate(y)
            self._views.append({"name": t.name, "init": _pointer(y.name, sl.first_slot), "const": False})
            return {"kind": CKind.CONCAT, "c": nm.write(t.name), "rows": rows_code(t), "cols": t.cols,
                    "ldc": t.stride, "parts": [{"a": nm.read(a.name), "cols": t.cols, "offset": 0,
                                                 "ld": dim_code(a.stride), "steps": None}]}
        i = self.plan.stmts.index(st)
        if a.storage == "work" and a.slot is not None and self._last.get(a.name) == i \
                and (a.rows, a.cols) == (t.rows, t.cols) and t.slot is not None:
            self.alloc.release(t.slot)
            t.slot, a.slot = a.slot, None
            for ptr in self.layout.pointers:
                if ptr["name"] == t.name:
                    ptr["slot"] = t.slot
            return {"kind": CKind.VIEW, "c": nm.label(t.name, "carry"), "a": nm.label(a.name, "first"),
                    "rows": rows_code(t), "cols": t.cols}
        return {"kind": CKind.COPY, "dst": nm.write(t.name), "src": nm.read(a.name), "size": _size(t)}

    def _loop_begin(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        head: LoopHead = st.payload
        return {"kind": CKind.LOOP_BEGIN, "index": head.index, "length": head.length, "reverse": head.reverse,
                "last": dim_code(head.length - 1),
                "target": self.nm.label(st.target, "out")}

    def _loop_step(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        head: LoopHead = st.payload
        nm, t, a = self.nm, self.vars[st.target], self.vars[st.operands[0]]
        if st.target in self.views:  # read where it lies: a pointer to the step's first column
            t.ld = a.stride
            return {"kind": CKind.COLUMN_VIEW, "c": t.name, "a": nm.read(a.name),
                    "at": f"{head.index}*{a.step or t.cols}",
                    "what": f"step {head.index} of {a.name}", "ld": t.ld, "writes": False}
        return {"kind": CKind.LOOP_STEP, "c": nm.write(t.name), "a": nm.read(a.name), "rows": rows_code(t),
                "cols": t.cols, "stride": a.stride, "index": head.index}

    def _loop_end(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        head: LoopHead = st.payload
        nm, y = self.nm, self.vars[st.target]
        out, new, carry = st.operands[:3]
        c = self.vars[carry]
        # a step's value written in place (step_writes) is where this would copy it already
        slotted = y.name in self._slots  # the new carry lies in the step stored: the carry points there
        out_there = getattr(self.in_place.get(out), "role", None) is StepRole.OUT or slotted
        new_there = getattr(self.in_place.get(new), "role", None) is StepRole.CARRY
        return {"kind": CKind.LOOP_END, "y": nm.write(y.name), "out": nm.read(out), "rows": rows_code(y),
                "width": head.width, "stride": head.length * head.width, "index": head.index,
                "carry": nm.write(carry), "new": nm.read(new), "reset": head.reset,
                "size": _size(c), "advance": slotted,
                "copy_out": not out_there, "copy_new": not (new_there or slotted)}

    def _map_stmt(self, st: Stmt, stats: tuple[str, str] | None) -> dict:
        return self._map(st)

    def _scratch(self, name: str, size: object, hold: bool = False) -> str:
        """A work slot of ``size`` reals (an expression in N), live for the current statement only.
        Released at once (the statement's target was taken before it), so a later statement
        may take it; ``hold``: kept (in ``_held``) until the caller releases it, so that a second
        scratch slot of the same statement cannot be given the same slot."""
        slot = self.alloc.take(*self._coefficients(size))
        self.layout.pointers.append({"name": name, "slot": slot, "const": False})
        if hold:
            self._held.append(slot)
        else:
            self.alloc.release(slot)
        return name

    def _access(self, name: str, printed: str, target: Var, flat: bool) -> str:
        """How a map reads operand ``name`` (printed as ``printed``) at its target's element."""
        o = self.vars[name]
        if o.ndim == 0:
            return printed
        if flat:
            return f"{printed}[e]"
        if target.ndim == 1 or (o.ndim == 1) or (o.ndim == 2 and not o.batch and int(o.rows) == 1
                                                 and target.batch):
            return f"{printed}[j]"
        if o.cols == 1 and target.cols != 1:
            return f"{printed}[i]" if o.stride == 1 else f"{printed}[i*{dim_code(o.stride)}]"
        return f"{printed}[i*{dim_code(o.stride)} + j]"

    def _map(self, st: Stmt, bias: Stmt | None = None, keep: bool = True,
             colsum: str | None = None) -> dict:
        """``bias``: the ``z = A + b`` (or ``z += b``) before it, done in this loop (z written
        only if ``keep``: read later, or an output); ``colsum``: an output that receives the
        column sums of this map's value (both need a batch-sized 2-D target: a grid loop)."""
        nm = self.nm
        t = self.vars[st.target]
        operands = [o for o in dict.fromkeys(st.operands) if o in self.vars]
        arrays = [self.vars[o] for o in operands if self.vars[o].ndim]
        flat = all((o.ndim, o.rows, o.cols) == (t.ndim, t.rows, t.cols) and o.stride == o.cols for o in arrays) \
            and bias is None and colsum is None and t.stride == t.cols
        if t.ndim == 0:
            loop = "scalar"
        elif flat:
            loop = "flat"
        else:
            loop = "grid"
        target = nm.write(t.name)
        biased = bias.target if bias is not None else None
        bias_ctx = None
        if bias is not None:
            a, b = bias.operands
            # not kept, z is printed only in the comment, unless it is also a (z += b)
            c = (nm.write(biased) if keep else nm.read(biased) if a == biased
                 else nm.label(biased, "biased"))
            bias_ctx = {"kind": CKind.ADD_BIAS, "a": nm.read(a), "b": nm.read(b), "c": c, "keep": keep}
        # the operands it prints: in a grid loop every array (loaded once per element, below),
        # else those its formula mentions
        mentioned = {x.name for x in st.payload.free_symbols}
        printed = [o for o in operands if o != biased
                   and (o in mentioned or (loop == "grid" and self.vars[o].ndim))]
        names = {o: nm.read(o) for o in printed}
        nm.nr = naming.N.name in mentioned
        # in a shared helper the formula is over the parameters' names (and the biased value's
        # local), so that the same map on other arrays prints the same text
        rename = {x: sp.Symbol(names[x.name], real=True) for x in st.payload.free_symbols
                  if x.name in names and names[x.name] != x.name}
        if nm.shared and biased is not None:
            rename.update({x: sp.Symbol("biased", real=True) for x in st.payload.free_symbols
                           if x.name == biased})
        payload = st.payload.xreplace(rename)
        self.p.accessors = {names[o]: self._access(o, names[o], t, flat) for o in printed}
        loads = []
        if loop == "grid":
            # every array operand read once per element, unconditionally, before the value: a
            # select such as `a > 0 ? d : 0` then needs no masked load, which GCC 12.2 gets wrong
            # in a nested loop at -O3 with AVX2/AVX-512 (it loads the second vector of a
            # 16-wide row under the first one's mask: stale values in columns 8-15)
            for o in printed:
                if self.vars[o].ndim:
                    loads.append((f"{names[o]}_e", self.p.accessors[names[o]]))
                    self.p.accessors[names[o]] = f"{names[o]}_e"
        if bias is not None:
            self.p.accessors["biased" if nm.shared else biased] = "biased"
        temps = sp.numbered_symbols(f"{target}_", real=True)
        repl, (reduced,) = sp.cse([payload], symbols=temps, order="canonical")
        cse = []
        for sym, sub in repl:
            cse.append((str(sym), self.p.doprint_expr(sub)))
            self.p.accessors[str(sym)] = str(sym)
        value = self.p.doprint_expr(reduced)
        if loop == "scalar":
            dest = target
        elif loop == "flat":
            dest = f"{target}[e]"
        else:
            dest = f"{target}[i*{dim_code(t.stride)} + j]" if t.ndim == 2 else f"{target}[j]"
        size = _size(t) if t.ndim else "1"
        return {"kind": CKind.MAP, "loop": loop, "dest": dest, "cse": cse, "value": value,
                "size": size, "rows": rows_code(t), "cols": t.cols, "target": target,
                "colsum": nm.write(colsum) if colsum is not None else None, "loads": loads,
                "bias": bias_ctx}


#: how the C backend lowers each statement kind to a context: one rule per op that reaches a
#: plan (``tests/unit/test_dispatch_tables.py`` checks that none is missing)
STATEMENTS: dict[ir.Op | Loop, Callable[[_KernelLowering, Stmt, tuple[str, str] | None], dict]] = {
    ir.Op.RESHAPE: _KernelLowering._reshape,
    Loop.CARRY: _KernelLowering._carry,
    Loop.BEGIN: _KernelLowering._loop_begin,
    Loop.STEP: _KernelLowering._loop_step,
    Loop.END: _KernelLowering._loop_end,
    ir.Op.MATMUL: _KernelLowering._matmul,
    ir.Op.ADD_BIAS: _KernelLowering._add_bias,
    ir.Op.SUM_ROWS: _KernelLowering._sum_rows,
    ir.Op.MAP: _KernelLowering._map_stmt,
    ir.Op.SOFTMAX: _KernelLowering._softmax,
    ir.Op.LOGSUMEXP: _KernelLowering._logsumexp,
    ir.Op.ROWSUM: _KernelLowering._rowsum,
    ir.Op.SOFTMAX_CE: _KernelLowering._softmax_ce,
    ir.Op.SUM: _KernelLowering._sum,
    ir.Op.CONCAT: _KernelLowering._concat,
    ir.Op.SLICE: _KernelLowering._slice,
    ir.Op.CONV: _KernelLowering._conv,
    ir.Op.CONV_GRAD_INPUT: _KernelLowering._conv_grad_input,
    ir.Op.CONV_GRAD_WEIGHT: _KernelLowering._conv_grad_weight,
    ir.Op.CHANNEL_BIAS: _KernelLowering._channel_bias,
    ir.Op.CHANNEL_SUM: _KernelLowering._channel_sum,
    ir.Op.CHANNEL_EXPAND: _KernelLowering._channel_expand,
    ir.Op.MAX_POOL: _KernelLowering._max_pool,
    ir.Op.MAX_POOL_GRAD: _KernelLowering._max_pool_grad,
    ir.Op.AVG_POOL: _KernelLowering._avg_pool,
    ir.Op.AVG_POOL_GRAD: _KernelLowering._avg_pool_grad,
    ir.Op.GATHER: _KernelLowering._gather,
    ir.Op.GATHER_GRAD: _KernelLowering._gather_grad,
}


#: the fields of the geometry structs of templates/c/_spatial.jinja, in order: the IR
#: geometry's own, then the output's height and width (computed here, once)
CONV_FIELDS: tuple[str, ...] = (*(f.name for f in fields(ir.ConvGeometry)), "ho", "wo")
POOL_FIELDS: tuple[str, ...] = (*(f.name for f in fields(ir.PoolGeometry)), "ho", "wo")


def _geom_init(g: ir.ConvGeometry | ir.PoolGeometry) -> str:
    """The initializer of a geometry struct: its fields' values in order (booleans as 0/1)."""
    return ", ".join(map(str, ir.geometry_values(g)))


def _pointwise(g: ir.ConvGeometry) -> bool:
    """A 1x1 kernel of stride 1 without padding: each group's im2col is its input itself."""
    return (g.kh, g.kw, g.sh, g.sw, g.pt, g.pb, g.pl, g.pr) == (1, 1, 1, 1, 0, 0, 0, 0)


#: a convolution's weight pullback whose group has at most this many weights sums them directly
#: (``conv_grad_weight``'s ``parts``: eight partial sums each) instead of a product per sample
#: through the gemm helper, whose packed panels and register tiles cost more than the arithmetic
#: there: cnn-digits' first convolution (16 x 9 weights, 64 positions a sample, 64 samples)
#: 84 -> 26 us float32, 57 -> 37 us float64 (Xeon family 6 model 167). Its 8 reals a weight
#: are work space (16 KiB in float64 at this bound), and the partial sums stay in the L1 cache.
SMALL_WEIGHT_GRAD = 256


def _direct(g: ir.ConvGeometry) -> bool:
    """Fewer output channels per group than the smallest register tile has rows (depthwise):
    the convolution and its pullbacks as direct loops (of stride 1 over a padded plane, a few
    reals of work space: :meth:`_KernelLowering._direct_scratch`), where im2col
    and the gemm helper's packing and tiles cost more than the arithmetic. Measured at the two
    sides of that line: with one channel per group (Conv2d(64, 64, 3, groups=64) over 25x5)
    direct loops are about 2x faster, with 16 (Conv2d(1, 16, 3) over 8x8) the gemm is 2.4-3.5x
    faster."""
    return g.o // g.groups < TILE_ROWS[1]


#: the channels, in and out, from which a 3x3 convolution of stride 1 (or its pullback to the
#: input) takes Winograd's F(2x2, 3x3): 16 products for each 2x2 block of outputs instead of 36,
#: as 16 matrix products over the input channels, which with few of them (a first convolution
#: of 1 or 3 channels) are too short for the transforms and tiles to pay. cnn-digits' second
#: convolution (16 -> 32 channels over 8x8, 64 samples) 750 -> 580 us float64, 490 -> 290 us
#: float32 against im2col and one product (Xeon family 6 model 167, one thread)
WINOGRAD_CHANNELS = 8
#: the register tiles of columns (2x2 output blocks) a block of samples fills in the 16 products:
#: one (32 blocks in float32, 16 in float64), so that the block's transformed inputs and products
#: (16 x channels x blocks reals each) stay near the L1 cache. cnn-digits' loss_and_grad (a C
#: driver, alternating runs, Intel family 6 model 167): float64 2260 us with two, 2071 with one;
#: float32 1333 and 1331 us
WINOGRAD_PANELS = 1


def _winograd(g: ir.ConvGeometry, ci: int, co: int) -> bool:
    """A 3x3 correlation of stride 1, one group and no dilation, with ``ci`` input and ``co``
    output channels both at least :data:`WINOGRAD_CHANNELS`: through Winograd's F(2x2, 3x3).
    Padding of at most 2 on the top and left (the pullback's correlation reads from 2 - it)."""
    return ((g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.groups) == (3, 3, 1, 1, 1, 1, 1) and g.pt <= 2 and g.pl <= 2
            and min(ci, co) >= WINOGRAD_CHANNELS)


def _padding_note(g: ir.ConvGeometry | ir.PoolGeometry) -> str:
    """", padding top,bottom,left,right" in a call's comment, or nothing without padding."""
    pads = (g.pt, g.pb, g.pl, g.pr)
    return f", padding {g.pt},{g.pb},{g.pl},{g.pr}" if any(pads) else ""


def _conv_note(g: ir.ConvGeometry) -> str:
    """The comment of a convolution's call: its sizes in words."""
    extra = "".join([f", stride {g.sh}x{g.sw}" if (g.sh, g.sw) != (1, 1) else "", _padding_note(g),
                     f", dilation {g.dh}x{g.dw}" if (g.dh, g.dw) != (1, 1) else "",
                     f", {g.groups} groups" if g.groups != 1 else ""])
    return f"{g.c}x{g.h}x{g.w} -> {g.o}x{g.ho}x{g.wo}, {g.kh}x{g.kw} kernel{extra}"


def _pool_note(g: ir.PoolGeometry) -> str:
    """The comment of a pooling's call: its sizes in words."""
    extra = "".join([_padding_note(g),
                     f", dilation {g.dh}x{g.dw}" if (g.dh, g.dw) != (1, 1) else "",
                     ", ceil mode" if g.ceil_mode else "",
                     "" if g.count_include_pad else ", padding not counted"])
    return (f"{g.c}x{g.h}x{g.w} -> {g.c}x{g.ho}x{g.wo}, {g.kh}x{g.kw} window, "
            f"stride {g.sh}x{g.sw}{extra}")


def _frozen(value: object) -> object:
    """A context as a hashable value (dicts and lists as sorted tuples), to find equal helpers."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def share_helpers(layouts: Sequence[KernelLayout], prefix: str) -> list[dict]:
    """The distinct helpers of ``layouts`` (equal contexts with equal parameters are one), in
    order of first call, each named ``PREFIX__stmtK``; every call context gets its helper's name
    and every layout the names it calls (:attr:`KernelLayout.calls`)."""
    found: dict[object, dict] = {}
    for lay in layouts:
        for ctx in lay.stmts:
            if ctx["kind"] is not CKind.CALL:
                continue
            helper = lay.helpers[ctx["helper"]]
            key = (_frozen(helper["params"]), _frozen(helper["ctx"]))
            if key not in found:
                # an element-wise map's helper is vectorised at the full width (``__WIDE``)
                found[key] = dict(helper, name=f"{prefix}__stmt{len(found) + 1}",
                                  wide=helper["ctx"]["kind"] is CKind.MAP)
            ctx["fn"] = found[key]["name"]
            if ctx["fn"] not in lay.calls:
                lay.calls.append(ctx["fn"])
    return list(found.values())


def lower_kernel(plan: KernelPlan, printer: SymnnCPrinter, param_shapes: dict,
                 input_shapes: dict, outputs: dict[str, str], *,
                 shared: bool | None = None, keep_outputs: bool = False, length: bool = False) -> KernelLayout:
    """``shared``: print the array statements as calls of shared helpers (default: where the
    plan is longer than :data:`SHARED_HELPER_STATEMENTS`; an emitter decides once per file).
    ``keep_outputs``: the array outputs stay in work (:attr:`KernelLayout.kept`), laid out with
    the temporaries; ``outputs`` then names only the scalar ones' buffers. ``length``: the
    network's sequences have a run-time length, the kernel's argument ``steps``."""
    if shared is None:
        shared = len(plan.stmts) > SHARED_HELPER_STATEMENTS
    return _KernelLowering(plan, printer, param_shapes, input_shapes, outputs, shared, keep_outputs, length).lower()


__all__ = ["CONV_FIELDS", "CConfig", "CKind", "KernelLayout", "POOL_FIELDS", "STATEMENTS", "Uses",
           "c_literal", "check_prefix", "lower_kernel", "share_helpers", "size_code"]
