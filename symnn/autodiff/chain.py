"""The reverse sweep: cotangents flow from the loss back to the parameters.

Phase 1 finds the nodes that lie on a path to a requested parameter (so no gradient is ever
built for the input ``X`` or the targets); phase 2 walks the forward graph in reverse
topological order, applies each node's pullback and accumulates cotangents.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .. import ir
from .elementwise import make_map
from .vjp import PULLBACKS

_a, _b = sp.symbols("g h", real=True)


@dataclass(frozen=True)
class SweepStep:
    """One application of a pullback rule, as the sweep made it.

    ``node`` is the forward node pulled back, ``rule`` the op whose rule was applied (the key
    of :data:`~symnn.autodiff.vjp.PULLBACKS`), ``ct_in`` the cotangent dL/d(node) it received and
    ``cts_out`` the cotangent contribution it sent to each operand (None: none flows there).
    ``accumulated`` names the operands whose cotangent already had a contribution, so the
    sweep added this one to it; ``totals`` holds each operand's cotangent after the step (the
    sum, where it accumulated). Every object is an IR node over symbolic shapes; the
    derivation prints them (:mod:`symnn.autodiff.display`)."""

    index: int
    node: ir.Node
    rule: ir.Op
    ct_in: ir.Node
    cts_out: tuple[ir.Node | None, ...]
    accumulated: tuple[int, ...] = ()
    totals: tuple[ir.Node | None, ...] = ()


@dataclass(frozen=True)
class Sweep:
    """The reverse sweep's result: the gradient of every requested parameter, the cotangent
    of every node it reached (``cotangents[id(node)]``) and the steps in the order made."""

    grads: dict[str, ir.Node]
    cotangents: dict[int, ir.Node]
    steps: tuple[SweepStep, ...]


def sweep(loss: ir.Node, wrt: dict[str, ir.Node], seed: ir.Node | None = None) -> Sweep:
    """The reverse sweep from ``loss`` to every entry of ``wrt``, with its record. ``seed``: the
    cotangent of ``loss`` (1 for a scalar loss; a loop body's pullback seeds its step's output
    with the cotangent that reaches it)."""
    order = ir.toposort([loss])
    # phase 1: which nodes depend on a target
    targets = {id(n) for n in wrt.values()}
    needed: set[int] = set()
    for node in order:
        if id(node) in targets or any(id(s) in needed for s in node.src):
            needed.add(id(node))
    # phase 2: reverse sweep
    cts: dict[int, ir.Node] = {id(loss): ir.const(1) if seed is None else seed}
    steps: list[SweepStep] = []
    for node in reversed(order):
        ct = cts.get(id(node))
        if ct is None or node.is_leaf:
            continue
        rule = PULLBACKS.get(node.op)
        if rule is None:
            why = " (a pullback's own op: symnn derives first derivatives only)" \
                if node.op in ir.PULLBACK_OPS else ""
            raise NotImplementedError(f"no pullback rule for {node.op.name}{why}")
        grads = rule(node, ct)
        if len(grads) != len(node.src):
            raise AssertionError(f"{node.op.name} pullback returned {len(grads)} cotangents")
        sent: list[ir.Node | None] = []
        added: list[int] = []
        for i, (src, g) in enumerate(zip(node.src, grads)):
            if g is None or id(src) not in needed:
                sent.append(None)
                continue
            sent.append(g)
            prev = cts.get(id(src))
            if prev is not None:
                added.append(i)
            cts[id(src)] = g if prev is None else make_map(
                "accumulate", _a + _b, [(_a, prev), (_b, g)], src.shape
            )
        totals = tuple(cts.get(id(src)) if g is not None else None for src, g in zip(node.src, sent))
        steps.append(SweepStep(len(steps), node, node.op, ct, tuple(sent), tuple(added), totals))
    out = {}
    for name, p in wrt.items():
        g = cts.get(id(p))
        out[name] = g if g is not None else make_map("zero", sp.Integer(0), [], p.shape)
    return Sweep(out, cts, tuple(steps))


def gradients(loss: ir.Node, wrt: dict[str, ir.Node]) -> dict[str, ir.Node]:
    """Backward graph: ``{name: node computing dL/d(param)}`` for every entry of ``wrt``."""
    return sweep(loss, wrt).grads
