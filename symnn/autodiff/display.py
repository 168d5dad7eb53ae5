"""The derivation's equations, read off the derived program and the sweep's records.

Nothing here knows what a dense layer or a loss is: a derivation is the derived program
(:attr:`symnn.simplify.pipeline.Simplified.derived`, the chain rule's own graph) cut into
equations at its *named* nodes, and each equation's right-hand side is its nodes printed by
one matrix-form rule and one index-form rule per op (:data:`MATRIX_FORM`, :data:`INDEX_FORM`,
as the pullbacks are one rule per op). A new op gets its LaTeX from these two rules and its
pullback's record; a new layer needs nothing here.

Named nodes: inputs and parameters; the forward graph's pre-activations ``Z`` and
activations ``A``; the loss; each parameter's gradient; the cotangent of each ``Z`` (printed
``delta = N dL/dZ``, the per-sample error) and of each ``A`` read twice; any other tensor read
twice. Everything else is written into the equation that reads it.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

import sympy as sp

from .. import ir, naming
from . import algebra as al
from ..backends.numpy.config import SPATIAL_FUNCTIONS
from .algebra import Term
from .chain import Sweep
from .elementwise import partial_tex


class Section(Enum):
    FORWARD = "forward"
    LOSS = "loss"
    BACKWARD = "backward"
    STATE = "state"  # what a training step writes into the buffers (running statistics)
    RECURRENCE = "recurrence"  # a loop's body, once per step t (:class:`Loop`)


@dataclass(frozen=True)
class Named:
    """How a node is printed: its symbol (matrix or scalar), index-form base, and ``scale``:
    the symbol stands for ``scale * value`` (N for a per-sample error, else 1)."""

    symbol: sp.Basic
    base: sp.Basic
    scale: sp.Expr
    eq_id: str | None  # None for inputs and parameters (no equation)
    section: Section | None
    shape: al.Shape


@dataclass(frozen=True)
class Equation:
    """One printed equation: ``lhs = rhs`` (matrix form) and ``index`` (index form).

    ``id`` is shared with the emitted statements that compute it (:attr:`symnn.lower.Stmt.origin`);
    ``steps`` are the sweep steps (:class:`~symnn.autodiff.chain.SweepStep` indices) whose
    cotangents it contains; ``scale``: the lhs is ``scale`` times what the code computes."""

    id: str
    section: Section
    lhs: sp.Basic
    rhs: sp.Basic
    index: sp.Eq | None
    note: str
    steps: tuple[int, ...] = ()
    scale: sp.Expr = sp.Integer(1)
    refs: tuple[str, ...] = ()  # ids of the equations whose symbols the rhs reads

    @property
    def matrix(self) -> sp.Eq:
        return sp.Eq(self.lhs, self.rhs, evaluate=False)

    # the label the old record used ("z1", "delta2", "dW1"), kept for readers of ``d.backward``
    @property
    def label(self) -> str:
        return self.id


@dataclass(frozen=True)
class FunctionDef:
    """A named element-wise function: ``name(params) = body`` (``\\tanh'(x) = 1 - tanh^2 x``)."""

    name: str
    params: tuple[sp.Symbol, ...]
    body: sp.Expr
    source: str = ""  # the map's name in code ("tanh", "dtanh"), to find its simplifications
    note: str = ""


def _shape(shape: ir.Shape) -> al.Shape:
    shape = tuple(shape)
    if len(shape) == 1:
        return (shape[0], sp.Integer(1))
    return tuple(sp.Integer(d) if isinstance(d, int) else d for d in shape)  # ints or IR expressions


def _tex_name(letter: str, layer: int | None) -> str:
    return letter if layer is None else f"{letter}^{{({layer})}}"


@dataclass
class _Cut:
    """The naming decisions over one derived program (cheap: no printing)."""

    named: dict[int, Named] = field(default_factory=dict)
    order: list[ir.Node] = field(default_factory=list)  # named non-leaf nodes, equation order
    owners: dict[int, str] = field(default_factory=dict)
    made_by: dict[int, int] = field(default_factory=dict)  # id(node) -> sweep step index
    forward_ids: set[int] = field(default_factory=set)


def _symbol(name: str, shape: al.Shape) -> sp.Basic:
    return sp.Symbol(name) if shape == () else sp.MatrixSymbol(name, *shape)


def _base(name: str, shape: al.Shape) -> sp.Basic:
    return sp.Symbol(name) if shape == () else sp.IndexedBase(name)


def cut(fwd, derived, sweep: Sweep) -> _Cut:
    """Decide which nodes of ``derived`` are named, in which order their equations come, and
    which equation every node belongs to."""
    out = _Cut()
    consumers = derived.consumers()
    used: dict[str, int] = {}

    def name(node: ir.Node, tex: str, eq_id: str | None, section: Section | None,
             scale: sp.Expr = sp.Integer(1)) -> None:
        if id(node) in out.named:
            return
        # a name a layer gives twice (each layer of a recurrent stack its P and C) is numbered
        used[tex] = used.get(tex, 0) + 1
        if used[tex] > 1:
            tex = _at(tex, str(used[tex]))
        shape = _shape(node.shape)
        out.named[id(node)] = Named(_symbol(tex, shape), _base(tex, shape), scale, eq_id, section, shape)

    name(fwd.X, "X", None, None)
    name(fwd.Y, "Y", None, None)
    param_tex = dict(fwd.param_tex)
    for ident, p in fwd.params.items():
        name(p, param_tex[ident], None, None)
    for node in ir.toposort(derived.outputs.values()):
        if node.op is ir.Op.INPUT and id(node) not in out.named:  # dropout masks
            name(node, _tex_name("M", naming.layer_of(node.arg)), None, None)
    for label in fwd.labels:
        name(label.node, label.tex, label.eq_id, Section.FORWARD)
    name(fwd.loss, "L", "loss", Section.LOSS)
    forward_nodes = ir.toposort([fwd.loss, fwd.output])
    out.forward_ids = {id(n) for n in forward_nodes}
    for ident in fwd.params:
        g = derived.outputs.get(naming.grad(ident))
        if g is None:  # a frozen parameter: no gradient derived
            continue
        p = out.named[id(fwd.params[ident])]
        name(g, r"\frac{\partial L}{\partial %s}" % p.symbol.name, naming.grad(ident), Section.BACKWARD)
    cts = sweep.cotangents
    for label in fwd.labels:
        ct = cts.get(id(label.node))
        if ct is None or ct.op is ir.Op.CONST:
            continue
        if label.ct_always or consumers.get(id(ct), 0) > 1:
            name(ct, label.ct_tex, label.ct_id, Section.BACKWARD, _batch_scale(ct))
    shared = itertools.count(1)
    ct_ids = {id(c) for c in cts.values()}
    for node in ir.toposort(derived.outputs.values()):
        # a loop is always named: its equation is the one place its body runs
        if (id(node) not in out.named and not node.is_leaf and node.shape != ()
                and (consumers.get(id(node), 0) > 1 or node.op is ir.Op.SCAN) and not _spread_scalar(node)):
            k = next(shared)
            section = Section.FORWARD if id(node) in out.forward_ids else Section.BACKWARD
            scale = _batch_scale(node) if id(node) in ct_ids else sp.Integer(1)
            name(node, f"U_{{{k}}}", f"u{k}", section, scale)
    # which sweep step made each backward node
    # (a walk that stops at what an earlier step made and at the forward graph: linear in the
    # size of the backward graph, not one sort of the whole graph per step)
    for step in sweep.steps:
        stack = [g for g in step.cts_out + step.totals if g is not None]
        while stack:
            n = stack.pop()
            if id(n) in out.made_by or id(n) in out.forward_ids or n.is_leaf:
                continue
            out.made_by[id(n)] = step.index
            stack.extend(n.src)
    # owners: each node belongs to the equation of the nearest named node reading it
    eq_nodes = [n for n in ir.toposort(derived.outputs.values())
                if id(n) in out.named and out.named[id(n)].eq_id is not None]
    for n in eq_nodes:
        eq = out.named[id(n)].eq_id
        out.owners[id(n)] = eq
        stack = list(n.src)
        while stack:
            s = stack.pop()
            if id(s) in out.named or id(s) in out.owners:
                continue
            out.owners[id(s)] = eq
            stack.extend(s.src)
    out.order = _equation_order(eq_nodes, out, sweep)
    return out


def _spread_scalar(node: ir.Node) -> bool:
    """A map of scalars over a shape (a penalty's constant spread over W): printed where read."""
    return node.op is ir.Op.MAP and all(s.shape == () for s in node.src)


def _batch_scale(node: ir.Node) -> sp.Expr:
    """N for a batch-shaped cotangent (its entries carry the batch mean's 1/N), else 1."""
    return naming.N if node.shape and node.shape[0] == naming.N else sp.Integer(1)


def _equation_order(nodes: list[ir.Node], cut_: _Cut, sweep: Sweep) -> list[ir.Node]:
    """Forward equations in graph order, then the backward ones in the order the sweep made
    them (each after every equation it reads): a stable topological sort keyed by position."""
    pos: dict[int, float] = {}
    step_of_ct = {id(s.ct_in): s.index for s in reversed(sweep.steps)}
    for i, n in enumerate(nodes):
        if id(n) in cut_.forward_ids:
            pos[id(n)] = -len(nodes) + i
        elif id(n) in step_of_ct:
            pos[id(n)] = step_of_ct[id(n)]
        else:
            pos[id(n)] = cut_.made_by.get(id(n), len(sweep.steps)) + 0.5
    deps: dict[int, set[int]] = {}
    for n in nodes:
        reads: set[int] = set()
        stack = list(n.src)
        seen: set[int] = set()
        while stack:
            s = stack.pop()
            if id(s) in seen:
                continue
            seen.add(id(s))
            if id(s) in cut_.named:
                if cut_.named[id(s)].eq_id is not None:
                    reads.add(id(s))
                continue
            stack.extend(s.src)
        deps[id(n)] = reads
    by_id = {id(n): n for n in nodes}
    users: dict[int, list[int]] = {k: [] for k in by_id}
    for k, rs in deps.items():
        for r in rs:
            users[r].append(k)
    waiting = {k: len(rs) for k, rs in deps.items()}
    ready = [(pos[k], k) for k, w in waiting.items() if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, k = heapq.heappop(ready)
        order.append(by_id[k])
        for u in users[k]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, (pos[u], u))
    return order


# -- matrix form: one rule per op --------------------------------------------------------------
class _Printer:
    """Builds each equation's right-hand side from the named nodes (matrix and index form)."""

    def __init__(self, cut_: _Cut, fwd, loops: "_Loops | None" = None) -> None:
        self.cut = cut_
        self.values = _forward_values(fwd, cut_) if fwd is not None else {}
        self.loops = loops if loops is not None else _Loops(cut_, fwd)

    def ref(self, node: ir.Node) -> Term:
        """A node as an operand: its symbol (over its scale) if named, else its formula."""
        named = self.cut.named.get(id(node))
        if named is not None:
            t = al.scalar(named.symbol) if named.shape == () else al.matrix(named.symbol, named.shape)
            return al.scale(t, 1 / named.scale) if named.scale != 1 else t
        return self.formula(node)

    def formula(self, node: ir.Node) -> Term:
        if node.op is ir.Op.CONST:
            return al.scalar(node.arg)
        return MATRIX_FORM[node.op](self, node)

    # index form
    def iref(self, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
        named = self.cut.named.get(id(node))
        if named is not None:
            if named.shape == ():
                e = named.symbol
            else:
                e = named.base[_squeeze(node, idx)]
            return e / named.scale
        if node.op is ir.Op.CONST:
            return node.arg
        return INDEX_FORM[node.op](self, node, idx, fresh)


def _squeeze(node: ir.Node, idx: tuple) -> tuple:
    """The indices of a named node's entry (every axis indexed, a single column by 1)."""
    return idx


def _spread(t: Term, src: ir.Node, shape: ir.Shape) -> Term:
    """An operand of a map spread to the map's shape, as the IR broadcasts it."""
    if t.is_scalar or tuple(src.shape) == tuple(shape):
        return t
    target = _shape(shape)
    if len(src.shape) == 1:  # a vector (d,) over rows: 1 b^T
        return al.matmul(al.matrix(al.ones((target[0], sp.Integer(1))), (target[0], 1)), al.transpose(t))
    if len(src.shape) == 2 and src.shape[1] == 1:  # a column (N, 1) over columns: c 1^T
        return al.matmul(t, al.matrix(al.ones((sp.Integer(1), target[1])), (1, target[1])))
    raise ValueError(f"cannot print a broadcast of {src.shape} to {shape}")


def _forward_values(fwd, cut_: _Cut) -> dict[sp.Expr, ir.Node]:
    """Scalar expressions, in terms of a node's operands, equal to a named forward activation:
    a derivative that reads ``sigmoid(z)`` prints ``A`` (the same value, computed once)."""
    out: dict[sp.Expr, ir.Node] = {}
    for label in fwd.labels:
        a = label.node
        if a.op is not ir.Op.MAP or len(a.src) != 1 or a.arg.tex is None:  # activations only
            continue
        fn: ir.Elementwise = a.arg
        tag = _tag(a.src[0])
        out[plain_value(fn.expr.xreplace({fn.args[0]: tag}))] = a
    return out


def plain_value(expr: sp.Expr) -> sp.Expr:
    from ..functions import plain

    return plain(expr)


def _tag(node: ir.Node) -> sp.Symbol:
    return sp.Symbol(f"_node{id(node)}", real=True)


def _map_matrix(p: _Printer, node: ir.Node) -> Term:
    fn: ir.Elementwise = node.arg
    shape = _shape(node.shape) if node.shape else ()
    operands = [_spread(p.ref(s), s, node.shape) for s in node.src]
    if fn.tex is not None:
        mats = tuple(o.expr() for o in operands)
        if node.shape == ():
            return al.scalar(al.Applied(fn.tex, *mats))
        return al.matrix(al.Apply.of(fn.tex, fn.args, fn.expr, shape, mats), shape)
    env = dict(zip(fn.args, operands))
    tags = {a: _tag(s) for a, s in zip(fn.args, node.src)}
    return _open(p, fn.expr, env, tags, shape)


def _open(p: _Printer, e: sp.Expr, env: dict[sp.Symbol, Term], tags: dict, shape: al.Shape) -> Term:
    """An element-wise expression over operand terms, written with matrix operations where
    its structure allows (sums, products, integer powers) and as an applied function elsewhere."""
    if e in env:
        return env[e]
    if not (e.free_symbols & set(env)):
        return al.scalar(e)
    if shape == ():
        return al.scalar(e.xreplace({a: t.expr() for a, t in env.items()}))
    hit = p.values.get(plain_value(e.xreplace(tags)))
    if hit is not None:
        return p.ref(hit)
    if isinstance(e, sp.Add):
        terms = [_open(p, a, env, tags, shape) for a in e.args]
        return _fold(al.add, terms)
    if isinstance(e, sp.Mul):
        return _fold(al.hadamard, [_open(p, a, env, tags, shape) for a in e.args])
    if isinstance(e, sp.Pow) and e.exp.is_Integer and e.exp >= 2:
        return al.power(_open(p, e.base, env, tags, shape), int(e.exp))
    used = [a for a in env if a in e.free_symbols]
    scalars = {a: env[a].coeff for a in used if env[a].is_scalar}
    params = tuple(a for a in used if a not in scalars)
    body = e.xreplace(scalars)
    mats = tuple(env[a].expr() for a in params)
    return al.matrix(al.Apply.of("", params, body, shape, mats), shape)


def _fold(fn: Callable[[Term, Term], Term], terms: list[Term]) -> Term:
    # scalars first, so a constant term spreads over the matrix ones (1 - A o A)
    terms = sorted(terms, key=lambda t: not t.is_scalar)
    out = terms[0]
    for t in terms[1:]:
        out = fn(out, t)
    return out


def _matmul_matrix(p: _Printer, node: ir.Node) -> Term:
    ta, tb = node.arg
    a, b = (p.ref(s) for s in node.src)
    return al.matmul(al.transpose(a) if ta else a, al.transpose(b) if tb else b)


def _add_bias_matrix(p: _Printer, node: ir.Node) -> Term:
    z, b = node.src
    return al.add(p.ref(z), _spread(p.ref(b), b, node.shape))


def _sum_rows_matrix(p: _Printer, node: ir.Node) -> Term:
    a = p.ref(node.src[0])
    n = a.shape[0]
    return al.matmul(al.transpose(a), al.matrix(al.ones((n, sp.Integer(1))), (n, 1)))


def _rowsum_matrix(p: _Printer, node: ir.Node) -> Term:
    a = p.ref(node.src[0])
    k = a.shape[1]
    return al.matmul(a, al.matrix(al.ones((k, sp.Integer(1))), (k, 1)))


def _sum_matrix(p: _Printer, node: ir.Node) -> Term:
    return al.total(p.ref(node.src[0]))


def _softmax_matrix(p: _Printer, node: ir.Node) -> Term:
    z = p.ref(node.src[0])
    return al.matrix(al.RowOp("softmax", z.expr()), z.shape)


def _logsumexp_matrix(p: _Printer, node: ir.Node) -> Term:
    z = p.ref(node.src[0])
    return al.matrix(al.RowOp("logsumexp", z.expr()), (z.shape[0], sp.Integer(1)))


def _softmax_ce_matrix(p: _Printer, node: ir.Node) -> Term:
    # logsumexp(Z) - (Y o Z) 1, the fused row loss
    zn, yn = node.src
    z, y = p.ref(zn), p.ref(yn)
    lse = al.matrix(al.RowOp("logsumexp", z.expr()), (z.shape[0], sp.Integer(1)))
    k = z.shape[1]
    yz = al.matmul(al.hadamard(y, z), al.matrix(al.ones((k, sp.Integer(1))), (k, 1)))
    return al.add(lse, al.scale(yz, -1))


def _block(p: _Printer, node: ir.Node) -> sp.Basic:
    """An operand of a column block as a matrix: a scalar spread over its shape (the zeros a
    slice's cotangent is padded with print as 0)."""
    t = p.ref(node)
    if not t.is_scalar:
        return t.expr()
    shape = _shape(node.shape)
    return sp.ZeroMatrix(*shape) if t.coeff == 0 else al.as_matrix(t, shape).expr()


def _concat_matrix(p: _Printer, node: ir.Node) -> Term:
    return al.matrix(al.BlockRow(*(_block(p, s) for s in node.src)), _shape(node.shape))


def _slice_matrix(p: _Printer, node: ir.Node) -> Term:
    (a,) = node.src
    t = al.as_matrix(p.ref(a), _shape(a.shape))
    return Term(t.coeff, al.ColSlice(t.mat, *node.arg), _shape(node.shape))


def _spatial_matrix(p: _Printer, node: ir.Node) -> Term:
    """A spatial op as its named operator on its operands (rows are images: the geometry the
    equation's note gives)."""
    geometry = node.arg if isinstance(node.arg, tuple) else ir.geometry_values(node.arg)
    operands = [al.as_matrix(p.ref(s), _shape(s.shape)).expr() for s in node.src]
    shape = _shape(node.shape)
    return al.matrix(al.Spatial(SPATIAL_FUNCTIONS[node.op][1:], geometry, shape, *operands), shape)


def _reshape_matrix(p: _Printer, node: ir.Node) -> Term:
    """The same entries in another shape: a named operator (``steps`` or ``seq``)."""
    (a,) = node.src
    t = al.as_matrix(p.ref(a), _shape(a.shape))
    rows, cols = _shape(node.shape)
    return Term(t.coeff, al.Reshape(t.mat, rows, cols), (rows, cols))


def _reshape_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    """An entry of the reshaped matrix: the entry of its operator's matrix (the operator's
    note says which of the operand's entries it is: the same row-major position)."""
    t = _reshape_matrix(p, node)
    return t.coeff * al.Entry(t.mat, *idx)


def _scan_matrix(p: _Printer, node: ir.Node) -> Term:
    """A loop as its operator applied to its operands; the operator's body is its own section."""
    loop = p.loops.of(node)
    operands = [_block(p, s) for s in node.src]
    shape = _shape(node.shape)
    return al.matrix(al.Recurrence(loop.name, loop.body, shape, *operands), shape)


def _scan_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    """An entry of a loop's value: the entry of its operator's matrix (the body, per step t,
    is printed in index form in its section)."""
    t = _scan_matrix(p, node)
    return t.coeff * al.Entry(t.mat, *idx)


def _spatial_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    """An entry of a spatial op: the entry of its operator's matrix (the operator's index sums
    run over windows of the geometry, which the matrix form names)."""
    mat = _spatial_matrix(p, node).expr()
    return mat[idx] if len(idx) == 2 else mat[idx[0], 0] if mat.shape[1] == 1 else mat[0, idx[0]]


MATRIX_FORM: dict[ir.Op, Callable[[_Printer, ir.Node], Term]] = {
    ir.Op.MATMUL: _matmul_matrix,
    ir.Op.ADD_BIAS: _add_bias_matrix,
    ir.Op.SUM_ROWS: _sum_rows_matrix,
    ir.Op.MAP: _map_matrix,
    ir.Op.SOFTMAX: _softmax_matrix,
    ir.Op.LOGSUMEXP: _logsumexp_matrix,
    ir.Op.ROWSUM: _rowsum_matrix,
    ir.Op.SOFTMAX_CE: _softmax_ce_matrix,
    ir.Op.SUM: _sum_matrix,
    ir.Op.CONCAT: _concat_matrix,
    ir.Op.SLICE: _slice_matrix,
    ir.Op.RESHAPE: _reshape_matrix,
    ir.Op.SCAN: _scan_matrix,
    **{op: _spatial_matrix for op in SPATIAL_FUNCTIONS},
}


# -- index form: one rule per op ---------------------------------------------------------------
_INDEX_POOL = ("k", "i", "m", "q", "r", "s", "u", "v")


class _Fresh:
    """Summation indices not already used in an equation."""

    def __init__(self, used: tuple) -> None:
        self.used = {str(u) for u in used}

    def __call__(self, prefer: str | None = None) -> sp.Symbol:
        """A new index: ``prefer`` (``n`` for a sum over the batch) when it is still free."""
        first = (prefer,) if prefer else ()
        for name in itertools.chain(first, _INDEX_POOL, (f"k_{i}" for i in itertools.count(1))):
            if name not in self.used:
                self.used.add(name)
                return sp.Symbol(name, integer=True)
        raise AssertionError("unreachable")


def _sum(expr: sp.Expr, k: sp.Symbol, upper: sp.Expr) -> sp.Expr:
    """``sum_k expr`` with the factors that do not depend on ``k`` written outside."""
    inside, outside = [], []
    for f in sp.Mul.make_args(expr):
        (inside if k in f.free_symbols else outside).append(f)
    if not inside:  # a sum of copies (the one column of an (N, 1) total)
        return sp.Mul(*outside) * upper
    if upper == 1:  # one term: k = 1
        return expr.xreplace({k: sp.Integer(1)})
    return sp.Mul(*outside) * sp.Sum(sp.Mul(*inside), (k, 1, upper))


def _operand_index(src: ir.Node, shape: ir.Shape, idx: tuple) -> tuple:
    if src.shape == ():
        return ()
    if tuple(src.shape) == tuple(shape):
        return idx
    if len(src.shape) == 1:
        return idx[-1:]
    return idx[:1] + (sp.Integer(1),)  # a column (N, 1): its only column


def _map_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    fn: ir.Elementwise = node.arg
    args = [p.iref(s, _operand_index(s, node.shape, idx), fresh) for s in node.src]
    if fn.tex is not None:
        return al.Applied(fn.tex, *args)
    # the forward values it reads, by name (sigmoid(z) -> a), as the matrix form does
    tags = {a: _tag(s) for a, s in zip(fn.args, node.src)}
    expr = fn.expr.xreplace(tags)
    hits = {}
    for sub in sp.preorder_traversal(expr):
        node_hit = p.values.get(plain_value(sub)) if sub.free_symbols else None
        if node_hit is not None:
            hits[sub] = p.iref(node_hit, _operand_index(node_hit, node.shape, idx), fresh)
    expr = expr.xreplace(hits)
    return expr.xreplace({t: arg for t, arg in zip(tags.values(), args)})


def _matmul_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    (r, c), (ta, tb) = idx, node.arg
    a, b = node.src
    inner = a.shape[0] if ta else a.shape[1]
    k = fresh("n" if inner == naming.N else None)
    left = p.iref(a, (k, r) if ta else (r, k), fresh)
    right = p.iref(b, (c, k) if tb else (k, c), fresh)
    return _sum(left * right, k, inner)


def _add_bias_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    z, b = node.src
    return p.iref(z, idx, fresh) + p.iref(b, idx[-1:], fresh)


def _sum_rows_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    a = node.src[0]
    n = fresh("n")
    return _sum(p.iref(a, (n, idx[0]), fresh), n, a.shape[0])


def _rowsum_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    a = node.src[0]
    k = fresh()
    return _sum(p.iref(a, (idx[0], k), fresh), k, a.shape[1])


def _sum_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    a = node.src[0]
    ks = [fresh("n" if d == naming.N else None) for d in a.shape]
    e = p.iref(a, tuple(ks), fresh)
    for k, upper in reversed(list(zip(ks, a.shape))):
        e = _sum(e, k, upper)
    return e


def _softmax_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    z = node.src[0]
    k = fresh()
    return sp.exp(p.iref(z, idx, fresh)) / _sum(sp.exp(p.iref(z, (idx[0], k), fresh)), k, z.shape[1])


def _logsumexp_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    z = node.src[0]
    k = fresh()
    return sp.log(_sum(sp.exp(p.iref(z, (idx[0], k), fresh)), k, z.shape[1]))


def _softmax_ce_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    z, y = node.src
    k = fresh()
    lse = sp.log(_sum(sp.exp(p.iref(z, (idx[0], k), fresh)), k, z.shape[1]))
    return lse - _sum(p.iref(y, (idx[0], k), fresh) * p.iref(z, (idx[0], k), fresh), k, z.shape[1])


def _concat_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    # column j of [A_1 A_2 ...] is column j - (d_1 + ... + d_{i-1}) of the block it falls in
    n, j = idx
    pieces, lo = [], 0
    for k, s in enumerate(node.src):
        hi = sp.expand(lo + s.shape[1])
        cond = sp.true if k == len(node.src) - 1 else sp.Le(j, hi)
        pieces.append((p.iref(s, (n, j - lo), fresh), cond))
        lo = hi
    return sp.Piecewise(*pieces, evaluate=False)


def _slice_index(p: _Printer, node: ir.Node, idx: tuple, fresh) -> sp.Expr:
    n, j = idx
    return p.iref(node.src[0], (n, j + node.arg[0]), fresh)


INDEX_FORM: dict[ir.Op, Callable] = {
    ir.Op.MATMUL: _matmul_index,
    ir.Op.ADD_BIAS: _add_bias_index,
    ir.Op.SUM_ROWS: _sum_rows_index,
    ir.Op.MAP: _map_index,
    ir.Op.SOFTMAX: _softmax_index,
    ir.Op.LOGSUMEXP: _logsumexp_index,
    ir.Op.ROWSUM: _rowsum_index,
    ir.Op.SOFTMAX_CE: _softmax_ce_index,
    ir.Op.SUM: _sum_index,
    ir.Op.CONCAT: _concat_index,
    ir.Op.SLICE: _slice_index,
    ir.Op.RESHAPE: _reshape_index,
    ir.Op.SCAN: _scan_index,
    **{op: _spatial_index for op in SPATIAL_FUNCTIONS},
}


def _out_index(node: ir.Node) -> tuple:
    shape = tuple(node.shape)
    n, j, i = (sp.Symbol(s, integer=True) for s in "nji")
    if shape == ():
        return ()
    if len(shape) == 1:
        return (j,)
    if shape[0] == naming.N:
        return (n, j)
    return (j, i)


# -- notes: one phrase per rule ----------------------------------------------------------------
RULE_NOTE: dict[ir.Op, str] = {
    ir.Op.MATMUL: "matrix product",
    ir.Op.ADD_BIAS: "bias added to every row",
    ir.Op.SUM_ROWS: "sum over the batch",
    ir.Op.MAP: "element-wise",
    ir.Op.SOFTMAX: "softmax of each row",
    ir.Op.LOGSUMEXP: "log-sum-exp of each row",
    ir.Op.ROWSUM: "sum of each row",
    ir.Op.SOFTMAX_CE: "softmax cross-entropy of each row",
    ir.Op.SUM: "sum of every entry",
    ir.Op.CONCAT: "blocks of columns side by side",
    ir.Op.SLICE: "a block of columns",
    ir.Op.CONV: "convolution (cross-correlation) of each image",
    ir.Op.CONV_GRAD_INPUT: "transposed convolution: the cotangent back through the kernel",
    ir.Op.CONV_GRAD_WEIGHT: "correlation of the images with the cotangent, summed over the batch",
    ir.Op.CHANNEL_BIAS: "bias added to every position of its channel",
    ir.Op.CHANNEL_SUM: "sum over the batch and each channel's positions",
    ir.Op.CHANNEL_EXPAND: "each channel's entry repeated over its positions",
    ir.Op.MAX_POOL: "maximum of each window",
    ir.Op.MAX_POOL_GRAD: "the cotangent routed to each window's first maximum",
    ir.Op.AVG_POOL: "mean of each window",
    ir.Op.AVG_POOL_GRAD: "the cotangent spread evenly over each window",
    ir.Op.GATHER: "the table's rows that each sample's indices name, side by side",
    ir.Op.GATHER_GRAD: "each block of the cotangent added into the row its index names",
    ir.Op.RESHAPE: "the same entries row-major: each sample's steps as rows, or the rows back as its sequence",
    ir.Op.SCAN: "a loop over the steps (its body: the recurrence below)",
}


def _plain_tex(tex: str) -> str:
    from ..report import plain_name

    return plain_name(tex)


def _owned(eq_node: ir.Node, eq_id: str, cut_: _Cut) -> list[ir.Node]:
    """The nodes written into one equation, operands first (a walk that stops where another
    equation's nodes begin)."""
    order: list[ir.Node] = []
    seen: set[int] = set()
    stack = [(eq_node, False)]
    while stack:
        n, done = stack.pop()
        if done:
            order.append(n)
            continue
        if id(n) in seen or cut_.owners.get(id(n)) != eq_id:
            continue
        seen.add(id(n))
        stack.append((n, True))
        stack.extend((s, False) for s in reversed(n.src))
    return order


def _label(step_node: ir.Node, cut_: _Cut, printer: "_Printer") -> str | None:
    """What a note calls the node a step pulled back through: its name, else its formula when
    short (``A1 @ W2ᵀ``)."""
    from ..report import plain

    through = cut_.named.get(id(step_node))
    if through is not None:
        return plain(through.symbol)
    text = plain(printer.formula(step_node).expr())
    return text if len(text) <= 40 else None


def _note(eq_node: ir.Node, named: Named, cut_: _Cut, sweep: Sweep,
          printer: "_Printer") -> tuple[str, tuple[int, ...]]:
    owned = _owned(eq_node, named.eq_id, cut_)
    steps = {cut_.made_by[id(n)] for n in owned if id(n) in cut_.made_by}
    if named.section is not Section.BACKWARD:
        # the ops written into this equation, operands first
        parts = []
        for n in owned:
            if n.is_leaf:
                continue
            what = RULE_NOTE[n.op]
            if n.op is ir.Op.MAP:
                fn = n.arg
                what = (f"{_plain_tex(fn.tex)}, element-wise" if fn.tex is not None
                        else f"element-wise {fn.name}")
            parts.append(what)
        return ", then ".join(dict.fromkeys(parts)), ()
    parts = []
    for s in sorted(steps):  # from the loss back, the order the sweep went
        step = sweep.steps[s]
        label = _label(step.node, cut_, printer)
        rule = RULE_NOTE[step.rule]
        if step.rule is ir.Op.MAP:
            fn = step.node.arg
            rule = (", ".join(_plain_tex(partial_tex(fn, i)) for i, g in enumerate(step.cts_out) if g is not None)
                    if fn.tex is not None else f"element-wise {fn.name}")
        parts.append(f"{rule} ({label})" if label else rule)
    parts = list(dict.fromkeys(parts))
    return ("chain rule back through " + ", ".join(parts)) if parts else "", tuple(sorted(steps))


@dataclass
class Equations:
    equations: list[Equation]
    functions: list[FunctionDef]
    symbols: dict[str, Named]  # equation id -> how its lhs is printed
    inputs: dict[str, sp.Basic]  # "X", "Y", "W1", "dense1_weight"... -> symbol (vectors as columns)
    loops: list["Loop"] = field(default_factory=list)  # each loop's body, once per step (forward loops first)


def equations(fwd, derived, sweep: Sweep, cut_: _Cut | None = None) -> Equations:
    """Every equation of the derivation, in order, with the functions they apply."""
    cut_ = cut_ or cut(fwd, derived, sweep)
    printer = _Printer(cut_, fwd)
    scans = [n for n in ir.toposort(derived.outputs.values()) if n.op is ir.Op.SCAN]
    for node in sorted(scans, key=lambda n: n.arg.record is not None):  # forward loops first: their names
        printer.loops.of(node)
    out: list[Equation] = []
    for node in cut_.order:
        named = cut_.named[id(node)]
        rhs = printer.formula(node)
        rhs = al.scale(rhs, named.scale) if named.scale != 1 else rhs
        out_idx = _out_index(node)
        fresh = _Fresh(out_idx)
        irhs = named.scale * INDEX_FORM[node.op](printer, node, out_idx, fresh)
        if named.section is Section.BACKWARD:  # (a - y)/3, not a/3 - y/3
            irhs = sp.factor_terms(irhs)
        ilhs = named.symbol if named.shape == () else named.base[_squeeze(node, out_idx)]
        note, steps = _note(node, named, cut_, sweep, printer)
        refs = sorted({cut_.named[id(n)].eq_id for n in _reads(node, cut_)})
        out.append(Equation(named.eq_id, named.section, named.symbol, rhs.expr(),
                            sp.Eq(ilhs, irhs, evaluate=False), note, steps, named.scale, tuple(refs)))
    out = _shared_gradients(fwd, derived, cut_, printer, out)
    functions: dict[str, FunctionDef] = {}
    for node in ir.toposort(derived.outputs.values()):
        if node.op is ir.Op.MAP and node.arg.tex is not None and node.arg.tex not in functions:
            fn = node.arg
            functions[fn.tex] = FunctionDef(fn.tex, fn.args, plain_value(fn.expr), fn.name, _guard_note(fn.expr))
    inputs = {}
    for nid, named in cut_.named.items():
        if named.eq_id is None:
            inputs[named.symbol.name] = named.symbol
    for ident, node in fwd.params.items():  # and by the parameter's identifier in code
        inputs[ident] = cut_.named[id(node)].symbol
    inputs["X"], inputs["Y"] = cut_.named[id(fwd.X)].symbol, cut_.named[id(fwd.Y)].symbol
    symbols = {n.eq_id: n for n in cut_.named.values() if n.eq_id is not None}
    for scan in scans:  # the functions a loop's body applies
        for node in scan.arg.nodes():
            if node.op is ir.Op.MAP and node.arg.tex is not None and node.arg.tex not in functions:
                fn = node.arg
                functions[fn.tex] = FunctionDef(fn.tex, fn.args, plain_value(fn.expr), fn.name, _guard_note(fn.expr))
    return Equations(out, list(functions.values()), symbols, inputs, printer.loops.all())


def _shared_gradients(fwd, derived, cut_: _Cut, printer: _Printer, eqs: list[Equation]) -> list[Equation]:
    """An equation for each parameter whose gradient is the very node another's is (two biases
    added to the same sum, as a recurrent layer's ``bias_ih`` and ``bias_hh``): the node has one
    name, so the second gradient reads the first's, right after it."""
    out = list(eqs)
    for ident, p in fwd.params.items():
        g = derived.outputs.get(naming.grad(ident))
        named = cut_.named.get(id(g)) if g is not None else None
        if named is None or named.eq_id == naming.grad(ident):
            continue
        tex = r"\frac{\partial L}{\partial %s}" % cut_.named[id(p)].symbol.name
        out_idx = _out_index(g)
        lhs = _symbol(tex, named.shape)
        ilhs = lhs if named.shape == () else _base(tex, named.shape)[out_idx]
        irhs = printer.iref(g, out_idx, _Fresh(out_idx))
        at = next(i for i, e in enumerate(out) if e.id == named.eq_id) + 1
        out.insert(at, Equation(naming.grad(ident), Section.BACKWARD, lhs, printer.ref(g).expr(),
                                sp.Eq(ilhs, irhs, evaluate=False), f"the same value as ({named.eq_id})",
                                (), sp.Integer(1), (named.eq_id,)))
    return out


def state_equations(fwd, derived, sweep: Sweep, updates) -> list[Equation]:
    """The buffers' new values after a training step (a BatchNorm's running statistics):
    ``(identifier, node)`` of the training graph's updates, each printed from its IR node with
    the derivation's symbols (the batch mean and variance it reads are the forward pass's
    named values), so the printed update is the one the train steps compute."""
    cut_ = cut(fwd, derived, sweep)
    printer = _Printer(cut_, fwd)
    out = []
    for ident, node in updates:
        named = cut_.named[id(fwd.params[ident])]
        # a subscript, not a prime: TeX takes {X^{(a)}}' as a second superscript of X
        name = r"%s_{\mathrm{new}}" % named.symbol.name
        lhs = sp.Symbol(name) if named.shape == () else sp.MatrixSymbol(name, *named.symbol.shape)
        rhs = printer.formula(node)
        refs = tuple(sorted({cut_.named[id(n)].eq_id for n in _reads(node, cut_)}))
        out.append(Equation(f"{ident}.new", Section.STATE, lhs, rhs.expr(), None,
                            "its value after a training step, from this batch's statistics", (),
                            sp.Integer(1), refs))
    return out


def _guard_note(expr: sp.Expr) -> str:
    """Where a declared domain guards an argument, say so: the kernels (and ``evaluate``)
    compute the formula with that argument kept a machine epsilon inside the domain."""
    from ..functions import Guard

    guards = sorted({(str(g.args[0]), str(g.args[1]), str(g.args[2])) for g in expr.atoms(Guard)})
    return "; ".join(f"computed with {x} kept a machine epsilon inside ({lo}, {hi})" for x, lo, hi in guards)


def _reads(node: ir.Node, cut_: _Cut) -> list[ir.Node]:
    found, stack, seen = [], list(node.src), set()
    while stack:
        s = stack.pop()
        if id(s) in seen:
            continue
        seen.add(id(s))
        named = cut_.named.get(id(s))
        if named is not None:
            if named.eq_id is not None:
                found.append(s)
            continue
        stack.extend(s.src)
    return found


def equation_owners(fwd, derived, sweep: Sweep) -> dict[int, str]:
    """id(node of ``derived``) -> the id of the equation it belongs to (for provenance)."""
    return cut(fwd, derived, sweep).owners


# -- loops: a SCAN's body printed once, for step t ----------------------------------------------
@dataclass(frozen=True)
class Loop:
    """One loop of the derivation (an IR ``SCAN``), its body printed once, for step t.

    ``equations`` are the body's in the order a step computes them: the very objects
    :attr:`body` runs per step when the derivation is evaluated (the loop's equation in the
    forward or backward pass applies the operator :attr:`name` to its operands). For the
    pullback of a loop (``pullback_of``: the forward loop's id), ``contributions`` are each
    invariant's cotangent from step t, printed from the inner sweep's records: the loop outputs
    their factors, and the backward pass sums them over t outside the loop, as one product."""

    id: str
    name: str
    label: str
    length: int
    reverse: bool
    equations: tuple[Equation, ...]
    contributions: tuple[Equation, ...]
    body: al.Loop
    note: str
    pullback_of: str | None = None


def _at(name: str, sub: str) -> str:
    """``name`` with the subscript ``sub`` (a name that has one already is grouped first)."""
    return "{%s}_{%s}" % (name, sub) if "_" in name else "%s_{%s}" % (name, sub)


def _view(node: ir.Node) -> bool:
    """A block of columns, or a named function of one (a gate): short enough to print where
    each reader reads it, so a body names only the values that say something."""
    if node.op is ir.Op.MAP and node.arg.tex is not None and len(node.src) == 1:
        node = node.src[0]
    return node.op is ir.Op.SLICE


def _is_zero(node: ir.Node) -> bool:
    return node.op is ir.Op.MAP and not node.src and node.arg.expr == 0


class _Loops:
    """The loops of one derivation, each built once, when first printed. A forward loop names
    its body's values after its layer's (the carry ``C^{(1)}_{t-1}``, a step ``P^{(1)}_{t}``,
    an invariant by the parameter it is), its pullback the cotangents (what step t+1 sent back,
    ``\\delta^{(1)}_{t+1}``); the values a pullback recomputes keep the names the forward loop
    gave them (names are shared by node)."""

    def __init__(self, cut_: _Cut, fwd) -> None:
        self.cut = cut_
        self.labels = {id(label.node): label for label in fwd.labels} if fwd is not None else {}
        self.names: dict[int, Named] = {}
        self.built: dict[int, Loop] = {}
        #: a forward scan's label -> (letter, superscript, loop id), for its pullback's names
        self.tags: dict[str, tuple[str, str, str]] = {}

    def all(self) -> list[Loop]:
        return list(self.built.values())

    def of(self, node: ir.Node) -> Loop:
        loop = self.built.get(id(node))
        if loop is None:
            loop = self._build(node)
            self.built[id(node)] = loop
        return loop

    def _name(self, node: ir.Node, tex: str, eq_id: str | None, section: Section | None) -> None:
        if id(node) not in self.names:
            shape = _shape(node.shape)
            self.names[id(node)] = Named(_symbol(tex, shape), _base(tex, shape), sp.Integer(1), eq_id, section, shape)

    def _outer(self, operand: ir.Node, tex: str, sub: str | None) -> str:
        """A placeholder's name after its operand's, when the operand is named (unscaled)."""
        named = self.cut.named.get(id(operand))
        if named is None or named.scale != 1 or named.shape == ():
            return tex
        return named.symbol.name if sub is None else _at(named.symbol.name, sub)

    def _build(self, node: ir.Node) -> Loop:
        body: ir.Scan = node.arg
        rec: Sweep | None = body.record
        number = len(self.built) + 1
        loop_id = f"loop{number}"
        # the carry is named after the loop's value (C^{(1)}); the body's other values are
        # marked by the forward loop's number, [1], which its pullback shares
        generic = (f"S^{{[{number}]}}", "S", f"^{{[{number}]}}")
        of = None
        if rec is None:
            label, named = self.labels.get(id(node)), self.cut.named.get(id(node))
            base = named.symbol.name if named is not None and named.scale == 1 else generic[0]
            letter = label.letter if label is not None else "S"
            sup = f"^{{[{number}]}}"
            self.tags[body.label] = (letter, sup, loop_id)
        else:
            letter, sup, of = self.tags.get(body.label.removesuffix("'"), (*generic[1:], None))
        before = "t+1" if body.reverse else "t-1"
        k = len(body.steps)
        seqs, invs = node.src[1:1 + k], node.src[1 + k:]
        if rec is None:
            self._name(body.carry, _at(base, before), None, None)
            self._name(body.new_carry, _at(base, "t"), f"{loop_id}.carry", Section.FORWARD)
        else:
            self._name(body.carry, _at(r"\delta" + sup, before), None, None)
            self._name(body.steps[0], _at(r"\bar{%s}{}%s" % (letter, sup), "t"), None, None)
        for i, (ph, seq) in enumerate(zip(body.steps, seqs)):
            self._name(ph, self._outer(seq, _at("X" + sup, f"{i + 1},t"), "t"), None, None)
        for j, (ph, inv) in enumerate(zip(body.invariants, invs)):
            self._name(ph, self._outer(inv, _at("V" + sup, str(j + 1)), None), None, None)
        forward_ids = ({id(n) for n in ir.toposort([st.node for st in rec.steps])} if rec is not None
                       else {id(n) for n in body.nodes()})
        self._name_values(body, rec, loop_id, letter, sup, forward_ids)
        return self._print(node, body, rec, loop_id, number, forward_ids, of)

    def _name_values(self, body: ir.Scan, rec: Sweep | None, loop_id: str, letter: str, sup: str,
                     forward_ids: set[int]) -> None:
        """Name the body's new carry, its output, a pullback's seed (the cotangent of the step's
        carry) and every value read twice; the rest is written where it is read."""
        nodes = body.nodes()
        consumers: dict[int, int] = {}
        for n in nodes:
            for s in n.src:
                consumers[id(s)] = consumers.get(id(s), 0) + 1
        seed = rec.steps[0].ct_in if rec is not None and rec.steps else None
        back = rec is not None
        shared = itertools.count(1)
        for n in nodes:
            if id(n) in self.names or n.is_leaf:
                continue
            section = Section.FORWARD if id(n) in forward_ids else Section.BACKWARD
            if n is body.new_carry:  # a pullback's (a forward loop's is named after its value)
                tex, eq = _at(r"\delta" + sup, "t"), "carry"
            elif n is body.out:
                tex, eq = _at(r"\bar{O}{}" + sup, "t"), "out"
            elif n is seed:
                tex, eq = _at("G" + sup, "t"), "g"
            elif consumers.get(id(n), 0) > 1 and n.shape != () and not _spread_scalar(n) and not _view(n):
                kk = next(shared)
                tex, eq = _at((r"\bar{U}{}" if back else "U") + sup, f"{kk},t"), f"u{kk}"
            else:
                continue
            self._name(n, tex, f"{loop_id}.{eq}", section)

    def _body_cut(self, body: ir.Scan, rec: Sweep | None, forward_ids: set[int]) -> _Cut:
        """The body's naming decisions, as :func:`cut` makes them for the whole program (which
        equation each node is written into, which step of the inner sweep made it)."""
        out = _Cut(named=self.names, forward_ids=forward_ids)
        eq_nodes = [n for n in body.nodes() if id(n) in self.names and self.names[id(n)].eq_id is not None]
        out.order = eq_nodes
        for n in eq_nodes:
            eq = self.names[id(n)].eq_id
            out.owners[id(n)] = eq
            stack = list(n.src)
            while stack:
                s = stack.pop()
                if id(s) in self.names or id(s) in out.owners:
                    continue
                out.owners[id(s)] = eq
                stack.extend(s.src)
        for step in rec.steps if rec is not None else ():
            stack = [g for g in step.cts_out + step.totals if g is not None]
            while stack:
                n = stack.pop()
                if id(n) in out.made_by or id(n) in forward_ids or n.is_leaf:
                    continue
                out.made_by[id(n)] = step.index
                stack.extend(n.src)
        return out

    def _print(self, node: ir.Node, body: ir.Scan, rec: Sweep | None, loop_id: str, number: int,
               forward_ids: set[int], of: str | None) -> Loop:
        cut_ = self._body_cut(body, rec, forward_ids)
        printer = _Printer(cut_, None, self)
        sweep_ = rec if rec is not None else Sweep({}, {}, ())
        eqs = []
        for n in cut_.order:
            named = self.names[id(n)]
            eqs.append(_body_equation(printer, n, named, cut_, sweep_, loop_id))
        contributions = []
        if rec is not None:
            for j, ph in enumerate(body.invariants):
                g = rec.grads.get(f"invariant{j}")
                if g is None or _is_zero(g):
                    continue
                w = self.names[id(ph)].symbol.name
                tex = r"\frac{\partial L}{\partial %s}" % _at(w, "t")  # W_t: the copy of W step t reads
                named = Named(_symbol(tex, _shape(g.shape)), _base(tex, _shape(g.shape)), sp.Integer(1),
                              f"{loop_id}.d{j + 1}", Section.BACKWARD, _shape(g.shape))
                eq = _body_equation(printer, g, named, cut_, sweep_, loop_id)
                how = f" ({eq.note})" if eq.note else ""
                note = (f"step t's share of the gradient of {_plain_tex(w)}{how}; the loop outputs its "
                        "factors, and the backward pass sums the steps' shares outside the loop, as one "
                        "product over every sample's steps")
                contributions.append(Equation(eq.id, eq.section, eq.lhs, eq.rhs, eq.index, note, eq.steps))
        ref = lambda n: printer.ref(n).expr()  # noqa: E731
        loop = al.Loop(ref(body.carry), tuple(ref(s) for s in body.steps), tuple(ref(v) for v in body.invariants),
                       tuple((e.lhs, e.rhs) for e in eqs), ref(body.new_carry), ref(body.out), body.length,
                       body.reverse, body.reset)
        direction = "t = T-1 down to 0" if body.reverse else "t = 0 up to T-1"
        if body.reset:
            direction += (f"; truncated: the carried cotangent restarts from 0 after steps 0, {body.reset}, "
                          f"{2 * body.reset}, ...")
        what = ("backpropagation through time of " + (f"loop {of.removeprefix('loop')}" if of else body.label)
                if rec is not None else f"the recurrence of {body.label}")
        note = f"{what}: {body.length} steps, {direction}"
        return Loop(loop_id, r"\mathcal{R}_{%d}" % number, body.label, body.length, body.reverse, tuple(eqs),
                    tuple(contributions), loop, note, of)


def _body_equation(printer: _Printer, node: ir.Node, named: Named, cut_: _Cut, sweep_: Sweep,
                   loop_id: str) -> Equation:
    """One equation of a loop's body (matrix and index form, note), printed by the rules every
    other equation is printed by."""
    rhs = printer.formula(node)
    out_idx = _out_index(node)
    irhs = INDEX_FORM[node.op](printer, node, out_idx, _Fresh(out_idx))
    ilhs = named.symbol if named.shape == () else named.base[out_idx]
    note, steps = _note(node, named, cut_, sweep_, printer)
    eq_id = named.eq_id if named.eq_id.startswith(loop_id + ".") else f"{loop_id}.{named.eq_id}"
    if eq_id != named.eq_id:
        note = f"recomputed as in {named.eq_id.split('.')[0]}" + (f"; {note}" if note else "")
    refs = tuple(sorted({cut_.named[id(n)].eq_id for n in _reads(node, cut_)}))
    return Equation(eq_id, Section.RECURRENCE, named.symbol, rhs.expr(), sp.Eq(ilhs, irhs, evaluate=False),
                    note, steps, sp.Integer(1), refs)

