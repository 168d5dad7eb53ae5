"""Program -> KernelPlan: statements in execution order with variable names.

A plan is backend-neutral: each :class:`Stmt` names its target, its operand names and the
op-specific payload (a SymPy expression for maps). Backends print plans; they never see the
graph. Three kernels are planned from one program: ``forward`` (yhat), ``loss`` and
``loss_and_grad``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from . import ir, naming
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

    kind: ir.Op
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


def _is_identity(node: ir.Node) -> bool:
    return (
        node.op is ir.Op.MAP
        and len(node.src) == 1
        and node.arg.expr == node.arg.args[0]
        and tuple(node.src[0].shape) == tuple(node.shape)
    )


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
    temps = iter(f"t{i}" for i in range(10**6))
    inputs = tuple(sorted({n.arg for n in order if n.op is ir.Op.INPUT}))
    plan = KernelPlan(kernel, inputs)
    plan.n_tensor_ops, plan.n_scalar_ops = ir.count_ops(outs.values())

    def name_of(n: ir.Node) -> str:
        if id(n) in out_of:
            return out_of[id(n)] if out_of[id(n)] != "yhat" else prog.names.get(id(n), "yhat")
        return prog.names.get(id(n)) or next(temps)

    for node in order:
        if node.op in (ir.Op.INPUT, ir.Op.PARAM):
            names[id(node)] = node.arg
            continue
        if node.op is ir.Op.CONST:
            names[id(node)] = repr(float(node.arg))
            continue
        if _is_identity(node) and id(node) not in out_of:
            names[id(node)] = names[id(node.src[0])]
            continue
        target = name_of(node)
        names[id(node)] = target
        ops = tuple(names[id(s)] for s in node.src)
        payload: Any = node.arg
        inplace = False
        if node.op is ir.Op.ADD_BIAS:
            mm = node.src[0]
            inplace = mm.op is ir.Op.MATMUL and consumers.get(id(mm)) == 1 and id(mm) not in out_of
        elif node.op is ir.Op.CHANNEL_BIAS:  # a convolution's bias, added where it wrote
            conv = node.src[0]
            inplace = conv.op is ir.Op.CONV and consumers.get(id(conv)) == 1 and id(conv) not in out_of
        elif node.op is ir.Op.MAP:
            payload = node.arg.expr.xreplace(
                {
                    a: (s.arg if s.op is ir.Op.CONST else sp.Symbol(nm, real=True))
                    for a, nm, s in zip(node.arg.args, ops, node.src)
                }
            )
        shapes = tuple(tuple(s.shape) for s in node.src)
        plan.stmts.append(
            Stmt(node.op, target, ops, tuple(node.shape), payload, inplace, shapes,
                 prog.equation_of(node))
        )
    plan.outputs = {k: names[id(v)] for k, v in outs.items()}
    # an in-place bias add renames its matmul's (convolution's) target to the bias add's target
    stmts: list[Stmt] = []
    for st in plan.stmts:
        if st.kind in (ir.Op.ADD_BIAS, ir.Op.CHANNEL_BIAS) and st.inplace:
            prev = stmts.pop()
            stmts.append(
                Stmt(prev.kind, st.target, prev.operands, prev.shape, prev.payload, False, prev.src_shapes,
                     prev.origin)
            )
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
