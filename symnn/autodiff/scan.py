"""The pullback of a loop (``SCAN``): backpropagation through time, derived from one step.

A forward scan computes ``C_t = f(C_{t-1}, x_t; V)`` for t = 0 .. T-1 and outputs every
``C_t``. Its pullback is a second scan, run the other way, whose body is the reverse sweep of
``f`` (the chain rule of :mod:`symnn.autodiff.chain`, seeded with the step's cotangent):

    g_t = dL/dC_t (from the outputs) + delta_{t+1}       (what later steps sent back)
    delta_t, dx_t, dV_t = the pullback of f at (C_{t-1}, x_t) of g_t

so the backward recurrence ``delta_t`` from ``delta_{t+1}`` is printed and emitted from the
records of the same rules as every other gradient. The steps' cotangents of an invariant
``V`` (a recurrent weight) are summed outside the loop, as one product over all N*T rows:
``sum_t A_t^T B_t = A^T B`` with A and B the steps stacked, which is what the rules give for a
weight of a product (``h W^T``) and a bias (``z + b``). The backward scan outputs the steps'
``A``, ``B`` and ``dx``; where one is a step of a sequence the loop already has (the carry the
step started from), the sum reads that sequence instead.
"""

from __future__ import annotations

import sympy as sp

from .. import ir
from .elementwise import make_map

_a, _b = sp.symbols("g h", real=True)


def _needs(node: ir.Node) -> bool:
    """Whether a cotangent can matter for ``node``: not data, a constant, or zeros."""
    return node.op not in (ir.Op.INPUT, ir.Op.CONST) and not (node.op is ir.Op.MAP and not node.src)


def _is_sum(node: ir.Node) -> bool:
    return (node.op is ir.Op.MAP and len(node.src) == 2
            and sp.expand(node.arg.expr - node.arg.args[0] - node.arg.args[1]) == 0)


def _terms(g: ir.Node) -> list[tuple[ir.Op, tuple[ir.Node, ...]]]:
    """An invariant's cotangent at one step as a sum of terms that add up over the steps as one
    product or one column sum: ``(MATMUL, (A, B))`` for ``A^T B``, ``(SUM_ROWS, (A,))``."""
    if g.op is ir.Op.MAP and not g.src and g.arg.expr == 0:
        return []
    if _is_sum(g):
        return _terms(g.src[0]) + _terms(g.src[1])
    if g.op is ir.Op.MATMUL and g.arg == (True, False):
        return [(ir.Op.MATMUL, g.src)]
    if g.op is ir.Op.SUM_ROWS:
        return [(ir.Op.SUM_ROWS, g.src)]
    raise NotImplementedError(f"a scan invariant whose cotangent at one step is a {g.op.name}: symnn sums a "
                              "recurrent weight's (a product's) or bias's cotangents over the steps")


def carries(node: ir.Node) -> ir.Node:
    """A forward scan's carried values, stacked (N, T*S): its output, less any residual columns."""
    body: ir.Scan = node.arg
    T, S, E = body.length, body.carried, int(body.out.shape[1])
    if E == S:
        return node
    rows = node.shape[0]
    return ir.reshape(ir.slice_(ir.reshape(node, (rows * T, E)), 0, S), (rows, T * S))


def _is_zero(node: ir.Node) -> bool:
    return node.op is ir.Op.MAP and not node.src and node.arg.expr == 0


def _zero(rows, cols: int) -> ir.Node:
    return make_map("zero", sp.Integer(0), [], (rows, cols))


def _columns(x: ir.Node, lo: int, hi: int) -> ir.Node:
    """Columns lo..hi-1 of the matrix ``x``, folded through zeros and concatenations (a slice's
    padded cotangent): the blocks that lie there, not a copy of the whole."""
    rows, width = x.shape[0], int(x.shape[1])
    if (lo, hi) == (0, width):
        return x
    if _is_zero(x):
        return _zero(rows, hi - lo)
    if x.op is ir.Op.CONCAT:
        parts, at = [], 0
        for part in x.src:
            w = int(part.shape[1])
            a, b = max(lo, at), min(hi, at + w)
            if a < b:
                parts.append(_columns(part, a - at, b - at))
            at += w
        return parts[0] if len(parts) == 1 else ir.concat(*parts)
    return ir.slice_(x, lo, hi)


def step_columns(seq: ir.Node, T: int, width: int, lo: int, hi: int) -> ir.Node:
    """Columns lo..hi-1 of each step of the sequence ``seq`` (N, T*width), as a sequence
    (N, T*(hi - lo)). Where ``seq`` is zeros but for blocks that each lie inside one step (the
    cotangent of a loop's last step), or its steps stacked as rows (of every step), the result is
    built from those blocks: no sequence of mostly zeros is made to be read a block a step."""
    rows, w = seq.shape[0], hi - lo
    if (lo, hi) == (0, width):
        return seq
    if _is_zero(seq):
        return _zero(rows, T * w)
    if seq.op is ir.Op.RESHAPE and tuple(seq.src[0].shape) == (rows * T, width):
        return ir.reshape(_columns(seq.src[0], lo, hi), (rows, T * w))
    if seq.op is ir.Op.CONCAT:
        placed: list[tuple[int | sp.Expr, ir.Node]] = []  # (first column in the result, block)
        at: int | sp.Expr = 0
        simple = True
        for part in seq.src:
            pw = part.shape[1]
            if not _is_zero(part):
                t, off = _step_of(at, width)
                if t is None or not isinstance(pw, int) or off + pw > width:
                    simple = False
                    break
                a, b = max(lo, off), min(hi, off + pw)
                if a < b:
                    placed.append((ir.column(t * w + a - lo), _columns(part, a - off, b - off)))
            at = ir.column(at + pw)
        if simple:
            parts, col = [], 0
            for start, block in placed:
                if ir.column(start - col) != 0:
                    parts.append(_zero(rows, ir.column(start - col)))
                parts.append(block)
                col = ir.column(start + block.shape[1])
            if ir.column(T * w - col) != 0:
                parts.append(_zero(rows, ir.column(T * w - col)))
            return parts[0] if len(parts) == 1 else ir.concat(*parts)
    return ir.reshape(ir.slice_(ir.reshape(seq, (rows * T, width)), lo, hi), (rows, T * w))


def _step_of(at: int | sp.Expr, width: int) -> tuple[int | sp.Expr | None, int]:
    """``(t, off)`` with ``at = t*width + off``, ``0 <= off < width``: the step a column of a
    sequence of steps of ``width`` lies in and its place there; ``(None, 0)`` where no such t
    holds for every run-time length (a multiple of T that is not one of ``width``)."""
    if isinstance(at, int):
        return at // width, at % width
    poly = sp.Poly(at, *sorted(at.free_symbols, key=str))
    head = sp.expand(at - poly.coeff_monomial(1))
    if any(int(c) % width for c in sp.Poly(head, *poly.gens).coeffs()):
        return None, 0
    const = int(poly.coeff_monomial(1))
    return ir.column(head / width + const // width), const % width


def _shifted(node: ir.Node, init: ir.Node, width: int) -> ir.Node:
    """The carry each step started from, as a sequence: the first value, then the carries but
    the last (for a reverse scan: the carries but the first, then the first value)."""
    body: ir.Scan = node.arg
    T = body.length
    if T == 1:
        return init
    stacked = carries(node)
    if body.reverse:  # noqa: SIM108
        return ir.concat(ir.slice_(stacked, width, T * width), init)
    return ir.concat(init, ir.slice_(stacked, 0, (T - 1) * width))


#: the step of a pullback scan that reads the forward scan's own output (step t of the carries
#: and residuals the forward loop stored): its steps are (the output's cotangent, the carry the
#: forward step started from, the stored output, the forward steps...), and its ``record`` is the
#: reverse sweep of the forward step that made its body
STORED_STEP = 2


class _Stacks:
    """The backward scan's output and where each step value lies in it, and the sequences the
    loop reads a step of (a value that is such a step is read from its sequence)."""

    def __init__(self, rows: ir.Shape, steps: tuple[ir.Node, ...], seqs: tuple[ir.Node, ...], T: int) -> None:
        self.rows = rows
        self.seq_of = {id(p): s for p, s in zip(steps, seqs)}
        self.T = T
        self.pieces: list[ir.Node] = []
        self.offset: dict[int, int] = {}
        self.width = 0
        self.scan: ir.Node | None = None

    def add(self, piece: ir.Node) -> None:
        if id(piece) in self.offset or self._direct(piece) is not None:
            return
        self.offset[id(piece)] = self.width
        self.pieces.append(piece)
        self.width += int(piece.shape[1])

    def _direct(self, piece: ir.Node) -> ir.Node | None:
        """A step of a sequence the loop reads (or a block of its columns): that sequence, stacked."""
        lo, hi, base = 0, None, piece
        if piece.op is ir.Op.SLICE:
            (base,), (lo, hi) = piece.src, piece.arg
        seq = self.seq_of.get(id(base))
        if seq is None:
            return None
        width = int(base.shape[1])
        stacked = ir.reshape(seq, (self.rows * self.T, width))
        return stacked if hi is None else ir.slice_(stacked, lo, hi)

    def stacked(self, piece: ir.Node) -> ir.Node:
        """The steps' values of ``piece`` as one matrix (N*T, width): step t of sample n in row n*T + t."""
        direct = self._direct(piece)
        if direct is not None:
            return direct
        assert self.scan is not None
        off, width = self.offset[id(piece)], int(piece.shape[1])
        whole = ir.reshape(self.scan, (self.rows * self.T, self.width))
        return whole if width == self.width else ir.slice_(whole, off, off + width)

    def sequence(self, piece: ir.Node) -> ir.Node:
        """The steps' values of ``piece`` as a sequence (N, T*width)."""
        assert self.scan is not None
        if self.width == int(piece.shape[1]) and id(piece) in self.offset:
            return self.scan
        return ir.reshape(self.stacked(piece), (self.rows, self.T * int(piece.shape[1])))


def pullback_scan(node: ir.Node, ct: ir.Node) -> tuple[ir.Node | None, ...]:
    """The cotangents of a forward scan's operands (its first carry, sequences, invariants) from
    ``ct``, the cotangent of its stacked carries."""
    body: ir.Scan = node.arg
    if body.out is not body.new_carry and not body.residuals:
        raise NotImplementedError("symnn differentiates a scan whose steps output their carry")
    T, k = body.length, len(body.steps)
    init, seqs, invs = node.src[0], node.src[1:1 + k], node.src[1 + k:]
    rows, width = body.carry.shape[0], body.carried
    shape = tuple(body.carry.shape)
    out_shape = tuple(body.out.shape)
    delta = ir.var(f"{body.label}.dC", shape)  # the cotangent later steps sent back
    dout = ir.var(f"{body.label}.dY", shape)  # this step's own, from the outputs
    stored = ir.var(f"{body.label}.Y", out_shape)  # what the forward loop stored at this step
    # only the carried columns' cotangent: a residual's columns are the pullback's own
    d_carries = step_columns(ct, T, int(out_shape[1]), 0, width)
    seed = make_map("accumulate", _a + _b, [(_a, dout), (_b, delta)], shape)
    wrt = {"carry": body.carry}
    wrt.update({f"step{i}": p for i, (p, s) in enumerate(zip(body.steps, seqs)) if _needs(s)})
    wrt.update({f"invariant{j}": p for j, (p, v) in enumerate(zip(body.invariants, invs)) if _needs(v)})
    from .chain import sweep  # the chain rule's sweep applies this module's rule: imported here

    rec = sweep(body.new_carry, wrt, seed=seed)
    prev = _shifted(node, init, width)
    steps = (dout, body.carry, stored, *body.steps)
    assert steps[STORED_STEP] is stored
    stacks = _Stacks(rows, steps, (d_carries, prev, node, *seqs), T)
    terms = {j: _terms(rec.grads[f"invariant{j}"]) for j in range(len(invs)) if f"invariant{j}" in wrt}
    for i in range(k):
        if f"step{i}" in wrt:
            stacks.add(rec.grads[f"step{i}"])
    for ts in terms.values():
        for _, operands in ts:
            for x in operands:
                stacks.add(x)
    new_delta = rec.grads["carry"]
    if (_needs(init) and not body.truncate) or not stacks.pieces:
        stacks.add(new_delta)
    out = stacks.pieces[0] if len(stacks.pieces) == 1 else ir.concat(*stacks.pieces)
    back = ir.Scan(T, delta, steps, body.invariants, new_delta, out, not body.reverse, f"{body.label}'",
                   reset=body.truncate, record=rec)
    stacks.scan = ir.scan(back, make_map("zero", sp.Integer(0), [], shape), (d_carries, prev, node, *seqs), invs)

    d_init = None
    if _needs(init) and not body.truncate:  # truncated: nothing flows into the first carry
        first = (T - 1 if body.reverse else 0) * stacks.width + stacks.offset[id(new_delta)]
        d_init = ir.slice_(stacks.scan, first, first + width)
    d_seqs = [stacks.sequence(rec.grads[f"step{i}"]) if f"step{i}" in wrt else None for i in range(k)]
    d_invs: list[ir.Node | None] = []
    for j, inv in enumerate(invs):
        if j not in terms:
            d_invs.append(None)
            continue
        parts = []
        for op, operands in terms[j]:
            if op is ir.Op.MATMUL:
                parts.append(ir.matmul(stacks.stacked(operands[0]), stacks.stacked(operands[1]), True, False))
            else:
                parts.append(ir.sum_rows(stacks.stacked(operands[0])))
        total = parts[0] if parts else make_map("zero", sp.Integer(0), [], inv.shape)
        for p in parts[1:]:
            total = make_map("accumulate", _a + _b, [(_a, total), (_b, p)], inv.shape)
        d_invs.append(total)
    return (d_init, *d_seqs, *d_invs)


def pullback_reshape(node: ir.Node, ct: ir.Node) -> tuple[ir.Node | None]:
    """The same entries, in the operand's shape."""
    (a,) = node.src
    return (None if a.op is ir.Op.INPUT else ir.reshape(ct, a.shape),)
