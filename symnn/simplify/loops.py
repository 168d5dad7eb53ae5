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
    def visit(node: ir.Node, orig: ir.Node) -> ir.Node:
        if node.op is not ir.Op.SCAN:
            return node
        body: ir.Scan = node.arg
        # the forward loop as the chain rule saw it (``orig``: this pass may have rebuilt its body)
        stored = _stored(orig) if body.record is not None else {}
        outputs = {"carry": body.new_carry, "out": body.out}
        outputs.update({f"residual{i}": r for i, r in enumerate(body.residuals)})
        mini = Program(outputs)
        if stored:
            mini = _read_stored(mini, stored, body.steps[STORED_STEP])
        mini = stabilise(fuse_elementwise(mini)).rewrite(_joined)
        residuals = tuple(mini.outputs[f"residual{i}"] for i in range(len(body.residuals)))
        out = mini.outputs["out"]
        if residuals:  # the residuals' maps were protected as outputs: the concat is theirs
            out = ir.concat(mini.outputs["carry"], *residuals)
        return _pruned(node, body, mini.outputs["carry"], out, residuals)

    return prog.rewrite(visit)


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
