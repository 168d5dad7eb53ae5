"""Pass ``simplify_loops``: the passes of the whole program, run inside each loop's body.

A loop body (:class:`symnn.ir.Scan`) is a graph of its own, which the program-level passes do not
enter. This pass gives each body the same treatment, and one more that only a loop needs:

* a pullback's body reads what the forward loop *stored* (its carries and residuals: an LSTM's
  gates, ``tanh(c)``) instead of computing it again. The chain rule derived the body from the
  forward step, so it refers to the forward step's values; each one the forward loop stored is
  replaced by its columns of the stored step, after the derivatives of the stored activations
  have been written in their outputs (sigmoid' = a(1 - a), as ``reuse_forward_values`` does for
  a dense layer). What nothing reads any more is not emitted: the product ``h W^T`` and the
  exponentials of the gates are not recomputed in the backward loop.
* steps and invariants the body no longer reads are dropped from the loop (the sequence of
  previous carries, when the derivative no longer needs them).
* ``fuse_elementwise`` and ``stabilise`` on every body, forward and backward.

The derivation keeps printing the chain rule's own body (``Scan.record`` and the derived
program); only the emitted program changes, and the tests compare the two.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from .. import ir
from ..autodiff.elementwise import make_map
from ..autodiff.scan import STORED_STEP
from ..program import Program
from .inline import fuse_elementwise
from .reuse import in_outputs
from .stable import stabilise



def simplify_loops(prog: Program) -> Program:
    consumers = prog.consumers()

    def visit(node: ir.Node, orig: ir.Node) -> ir.Node:
        if node.op is not ir.Op.SCAN:
            return node
        body: ir.Scan = node.arg
        # the forward loop as the chain rule saw it (``orig``: this pass may have rebuilt its body)
        stored = _stored(orig) if body.record is not None else {}
        seed = _first_step_seed(node) if body.record is not None else None
        if seed is not None:
            # the previous carries' sequence, which that step will read: made anyway where
            # something besides this loop reads it (the recurrent weight's product)
            pruned = _body(node, body, stored, seed, consumers.get(id(orig.src[2]), 0) > 1)
            if pruned is not None:
                return pruned
        return _body(node, body, stored, None)

    return prog.rewrite(visit)


def _body(node: ir.Node, body: ir.Scan, stored: dict[int, tuple[ir.Node, int]],
          seed: ir.Node | None, prev_made: bool = False) -> ir.Node | None:
    """The loop on its simplified body; ``seed``: a pullback whose outputs' cotangent lies in the
    first step it runs alone (:func:`_first_step_seed`) starts from it as its carry and reads no
    step of that cotangent (None where the body then needs no previous carry: see below)."""
    outputs = {"carry": body.new_carry, "out": body.out}
    outputs.update({f"residual{i}": r for i, r in enumerate(body.residuals)})
    mini = Program(outputs)
    if seed is not None:
        dout = body.steps[0]
        zero = make_map("zero", sp.Integer(0), [], dout.shape)
        mini = mini.rewrite(lambda n, orig: zero if orig is dout else n)
    if stored:
        mini = _read_stored(mini, stored, body.steps[STORED_STEP])
    mini = stabilise(fuse_elementwise(mini)).rewrite(_joined)
    residuals = tuple(mini.outputs[f"residual{i}"] for i in range(len(body.residuals)))
    out = mini.outputs["out"]
    if residuals:  # the residuals' maps were protected as outputs: the concat is theirs
        out = ir.concat(mini.outputs["carry"], *residuals)
    if seed is None:
        return _pruned(node, body, mini.outputs["carry"], out, residuals)
    # the unread step keeps the pullback's layout (STORED_STEP) and reads, in place, the sequence
    # of the carries each step started from, which is made anyway (``prev_made``, or the body
    # reads it): the mostly-zero cotangent sequence is never made. Where nothing else reads the
    # previous carries, they would be made for this step alone: the cotangent is read as before.
    if not prev_made and id(body.steps[1]) not in {id(n) for n in ir.toposort([mini.outputs["carry"], out])}:
        return None
    k = len(body.steps)
    seeded = ir.scan(body, seed, [node.src[2], *node.src[2:1 + k]], node.src[1 + k:])
    return _pruned(seeded, body, mini.outputs["carry"], out, residuals)


def _first_step_seed(node: ir.Node) -> ir.Node | None:
    """For a pullback loop whose outputs' cotangent (its first step sequence, zeros and blocks)
    is zero but in the first step the loop runs (the step T-1 of a network that reads a forward
    loop's last state), that step's block, (N, S); else None.

    Then ``g_t = dL/dC_t + delta_{t+1}`` is ``delta_{t+1}`` at every step but the first, whose
    ``delta`` is the zero the loop starts from: starting from ``dL/dC_{T-1}`` instead, the loop
    computes the same values and neither builds the T-step sequence (T - 1 steps of zeros) nor
    adds a step of it to the carry at every step. As PyTorch's backward of ``h_n`` does."""
    body: ir.Scan = node.arg
    if body.reset or not _is_zero(node.src[0]):
        return None
    seq = node.src[1]
    width = int(body.steps[0].shape[1])
    rows = seq.shape[0]
    first = ir.column((body.length - 1) * width) if body.reverse else 0
    parts = seq.src if seq.op is ir.Op.CONCAT else (seq,)
    blocks: list[tuple[int, ir.Node]] = []
    at: int | sp.Expr = 0
    for part in parts:
        if not _is_zero(part):
            lo, hi = sp.expand(at - first), sp.expand(at + part.shape[1] - first)
            if not (lo.is_Integer and hi.is_Integer and 0 <= int(lo) and int(hi) <= width):
                return None
            blocks.append((int(lo), part))
        at = ir.column(at + part.shape[1])
    if not blocks:
        return None
    pieces, col = [], 0
    for lo, part in blocks:
        if lo > col:
            pieces.append(make_map("zero", sp.Integer(0), [], (rows, lo - col)))
        pieces.append(part)
        col = lo + int(part.shape[1])
    if col < width:
        pieces.append(make_map("zero", sp.Integer(0), [], (rows, width - col)))
    return pieces[0] if len(pieces) == 1 else ir.concat(*pieces)


def _is_zero(node: ir.Node) -> bool:
    return node.op is ir.Op.MAP and not node.src and node.arg.expr == 0


def _blocks(node: ir.Node) -> list[tuple[int, int, ir.Node | None]]:
    """``node``'s columns as blocks (lo, hi, value), None for zeros (a slice's padded cotangent)."""
    if node.op is not ir.Op.CONCAT:
        return [(0, int(node.shape[1]), None if _is_zero(node) else node)]
    out, lo = [], 0
    for part in node.src:
        hi = lo + int(part.shape[1])
        out.append((lo, hi, None if _is_zero(part) else part))
        lo = hi
    return out


def _joined(node: ir.Node, orig: ir.Node) -> ir.Node:
    """A sum of blocks of columns padded with zeros where no two overlap (a gradient gathered from
    the slices of one value: an LSTM's four gates) as the one concatenation of the blocks: no
    padded copies and no additions of zeros."""
    if node.op is not ir.Op.MAP or len(node.src) < 2 or len(node.shape) != 2 \
            or sp.expand(node.arg.expr - sum(node.arg.args)) != 0 \
            or any(tuple(x.shape) != tuple(node.shape) or x.op is not ir.Op.CONCAT and not _is_zero(x)
                   for x in node.src):
        return node
    filled: list[tuple[int, int, ir.Node]] = []
    for x in node.src:
        filled += [(lo, hi, v) for lo, hi, v in _blocks(x) if v is not None]
    filled.sort(key=lambda b: b[0])
    if any(a[1] > b[0] for a, b in zip(filled, filled[1:])):
        return node  # two blocks overlap: a true sum
    rows, width = node.shape[0], int(node.shape[1])
    parts, at = [], 0
    for lo, hi, v in filled:
        if lo > at:
            parts.append(make_map("zero", sp.Integer(0), [], (rows, lo - at)))
        parts.append(v)
        at = hi
    if at < width:
        parts.append(make_map("zero", sp.Integer(0), [], (rows, width - at)))
    return parts[0] if len(parts) == 1 else ir.concat(*parts)


def _stored(node: ir.Node) -> dict[int, tuple[ir.Node, int]]:
    """The forward step's values that its loop stored, by id: (the value, its first column in
    the stored step). A stored concatenation (an LSTM's carried h and c) stores its parts too."""
    forward = node.src[1 + STORED_STEP]
    fwd: ir.Scan = forward.arg
    found: dict[int, tuple[ir.Node, int]] = {}
    offset = 0
    for value in (fwd.new_carry, *fwd.residuals):
        found[id(value)] = (value, offset)
        if value.op is ir.Op.CONCAT:
            inner = offset
            for part in value.src:
                found.setdefault(id(part), (part, inner))
                inner += int(part.shape[1])
        offset += int(value.shape[1])
    return found


def _read_stored(prog: Program, stored: dict[int, tuple[ir.Node, int]], step: ir.Node) -> Program:
    """Derivatives of stored activations in their outputs, then stored values read from ``step``."""
    # an activation a = f(z) the forward loop stored: its operand z -> a
    producers = {id(v.src[0]): v for v, _ in stored.values()
                 if v.op is ir.Op.MAP and len(v.src) == 1 and len(v.arg.args) == 1}

    def derivatives(node: ir.Node, orig: ir.Node) -> ir.Node:
        return node if id(orig) in stored else in_outputs(node, producers)

    prog = prog.rewrite(derivatives)
    width = int(step.shape[1])

    def read(node: ir.Node, orig: ir.Node) -> ir.Node:
        hit = stored.get(id(orig))
        if hit is None:
            return node
        value, lo = hit
        hi = lo + int(value.shape[1])
        return step if (lo, hi) == (0, width) else ir.slice_(step, lo, hi)

    return prog.rewrite(read)


def _pruned(node: ir.Node, body: ir.Scan, new_carry: ir.Node, out: ir.Node,
            residuals: tuple[ir.Node, ...]) -> ir.Node:
    """The loop on its new body, without the steps and invariants that body no longer reads."""
    used = {id(n) for n in ir.toposort([new_carry, out])}
    k = len(body.steps)
    seqs, invs = node.src[1:1 + k], node.src[1 + k:]
    keep_s = [i for i, p in enumerate(body.steps) if id(p) in used]
    keep_v = [j for j, p in enumerate(body.invariants) if id(p) in used]
    if body.record is not None:  # a pullback keeps the layout of its first steps (STORED_STEP)
        keep_s = sorted({*keep_s, *range(STORED_STEP + 1)})
    new = replace(body, steps=tuple(body.steps[i] for i in keep_s),
                  invariants=tuple(body.invariants[j] for j in keep_v), new_carry=new_carry, out=out,
                  residuals=residuals)
    return ir.scan(new, node.src[0], [seqs[i] for i in keep_s], [invs[j] for j in keep_v])
