"""The reverse sweep: cotangents flow from the loss back to the parameters.

Phase 1 finds the nodes that lie on a path to a requested parameter (so no gradient is ever
built for the input ``X`` or the targets); phase 2 walks the forward graph in reverse
topological order, applies each node's pullback and accumulates cotangents.
"""

from __future__ import annotations

import sympy as sp

from .. import ir
from .elementwise import make_map
from .vjp import PULLBACKS

_a, _b = sp.symbols("g h", real=True)


def gradients(loss: ir.Node, wrt: dict[str, ir.Node]) -> dict[str, ir.Node]:
    """Backward graph: ``{name: node computing dL/d(param)}`` for every entry of ``wrt``."""
    order = ir.toposort([loss])
    # phase 1: which nodes depend on a target
    targets = {id(n) for n in wrt.values()}
    needed: set[int] = set()
    for node in order:
        if id(node) in targets or any(id(s) in needed for s in node.src):
            needed.add(id(node))
    # phase 2: reverse sweep
    cts: dict[int, ir.Node] = {id(loss): ir.const(1)}
    for node in reversed(order):
        ct = cts.get(id(node))
        if ct is None or node.is_leaf:
            continue
        rule = PULLBACKS.get(node.op)
        if rule is None:
            raise NotImplementedError(f"no pullback rule for {node.op.name}")
        grads = rule(node, ct)
        if len(grads) != len(node.src):
            raise AssertionError(f"{node.op.name} pullback returned {len(grads)} cotangents")
        for src, g in zip(node.src, grads):
            if g is None or id(src) not in needed:
                continue
            prev = cts.get(id(src))
            cts[id(src)] = g if prev is None else make_map(
                "accumulate", _a + _b, [(_a, prev), (_b, g)], src.shape
            )
    out = {}
    for name, p in wrt.items():
        g = cts.get(id(p))
        out[name] = g if g is not None else make_map("zero", sp.Integer(0), [], p.shape)
    return out
