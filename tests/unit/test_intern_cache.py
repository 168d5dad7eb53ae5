"""The IR's intern cache holds nodes weakly: building the same node twice still returns one
object, a node nothing references is freed with its entry, and the provenance of a program
(which keys nodes by identity) survives the freeing of the nodes the passes threw away."""

from __future__ import annotations

import gc

import sympy as sp

import symnn as sn
from symnn import ir


def _chain(width: int) -> ir.Node:
    x = ir.input_("X", (sp.Symbol("N"), width))
    w = ir.param("W1", (width, width))
    return ir.map_(ir.Elementwise("sq", (sp.Symbol("u"),), sp.Symbol("u") ** 2), ir.matmul(x, w, trans_b=True))


def test_same_node_is_one_object() -> None:
    a, b = _chain(7), _chain(7)
    assert a is b and a.src[0] is b.src[0]


def test_unreferenced_nodes_are_freed() -> None:
    gc.collect()
    before = len(ir.Node._cache)
    node = _chain(1234567)  # a width no other test builds
    assert len(ir.Node._cache) == before + 4  # input, param, matmul, map
    del node
    gc.collect()
    assert len(ir.Node._cache) == before


def test_provenance_survives_freed_intermediates() -> None:
    """Passes build nodes they then drop; ids of freed nodes are reused by later ones, so the
    program's origins/owners must not be keyed by id. Every statement of a freshly derived
    network, after many unrelated graphs were built and freed, names the right equation."""
    net = sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 2, "sigmoid")], loss="bce", name="weakprov")
    from symnn.driver import derive_program
    from symnn.lower import plan_kernel

    prog = derive_program(net).program
    for width in range(50, 90):  # churn: allocate and free many nodes (ids get reused)
        _chain(width)
    gc.collect()
    plan = plan_kernel(prog, "loss_and_grad")
    origins = {st.target: st.origin for st in plan.stmts}
    assert origins["dL_dW1"] == "dL_dW1" and origins["dL_db2"] == "dL_db2"
    assert origins["z1"] == "z1" and origins["a1"] == "a1"
    assert all(o is not None for o in origins.values())
