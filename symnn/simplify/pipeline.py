"""The ordered simplification passes, each reporting op counts before and after.

``fuse_losses`` runs on the forward graph (it changes which pullback the chain rule uses);
the others run on the whole program (forward outputs, loss and every gradient together).
Dead code never reaches the program: the chain rule only follows paths to parameters (no
gradient for ``X``) and each pass rebuilds only what the outputs reach; the first row,
``eliminate_dead_code``, counts what that saved against a sweep that also differentiated the
input. Every row starts where the previous one ended.
Common subexpressions inside each map are eliminated at emission (canonical order).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .. import ir, naming
from ..autodiff.chain import Sweep, sweep
from ..autodiff.display import equation_owners
from ..graph import ForwardGraph
from ..program import Program
from .fuse import Fusion, fuse_losses
from .inline import fuse_elementwise
from .loops import simplify_loops
from .reuse import Reuse, reuse_forward_values
from .stable import Stabilised, stabilise


Counts = tuple[int, int]


@dataclass(frozen=True)
class PassReport:
    """Op counts of one pass: (tensor ops, scalar ops in element-wise maps), for the whole
    program and for the forward kernel (``yhat``) and the loss-and-gradient kernel apart;
    each pass's ``before`` is the previous pass's ``after``."""

    name: str
    before: Counts
    after: Counts
    forward: tuple[Counts, Counts] | None = None  # (before, after)
    backward: tuple[Counts, Counts] | None = None


def _kernel_counts(prog: Program) -> tuple[Counts, Counts]:
    """(forward kernel, loss-and-gradient kernel) op counts of a program."""
    fwd = ir.count_ops([prog.outputs["yhat"]])
    bwd = ir.count_ops([v for k, v in prog.outputs.items() if k != "yhat"])
    return fwd, bwd


def _report(name: str, before: Program, after: Program) -> PassReport:
    (fb, bb), (fa, ba) = _kernel_counts(before), _kernel_counts(after)
    return PassReport(name, before.op_counts(), after.op_counts(), (fb, fa), (bb, ba))


@dataclass
class Simplified:
    """The emitted ``program``; the ``derived`` one it was simplified from (the chain rule's
    own graph, after the loss fusion), the ``sweep`` that derived it, the forward graph, and
    each pass's record. The derivation is printed from ``derived`` and ``sweep``; every node
    of ``program`` knows the node of ``derived`` it computes (``program.origin``)."""

    program: Program
    reports: list[PassReport] = field(default_factory=list)
    fusions: list[Fusion] = field(default_factory=list)
    reuses: list[Reuse] = field(default_factory=list)
    stabilised: list[Stabilised] = field(default_factory=list)
    derived: Program | None = None
    sweep: Sweep | None = None
    forward: ForwardGraph | None = None


def make_program(fwd: ForwardGraph) -> Program:
    return _swept(fwd)[0]


def _swept(fwd: ForwardGraph, everything: bool = False) -> tuple[Program, Sweep]:
    """The chain rule's program; ``everything``: with the gradient of the input too (what
    a sweep that did not prune to the parameters would build, for the dead-code row)."""
    # a frozen parameter is a constant to the chain rule: no gradient, none of the work for one
    # and so is a buffer (a running statistic): training writes its new value instead, into
    # its gradient's slot of the training program (the train steps copy it from there)
    frozen = {naming.param_ident(p) for p in (*fwd.network.frozen, *fwd.network.buffers)}
    wrt = dict({k: v for k, v in fwd.params.items() if k not in frozen}, **({"X": fwd.X} if everything else {}))
    result = sweep(fwd.loss, wrt)
    grads = result.grads
    outputs = {"yhat": fwd.output, "loss": fwd.loss}
    outputs.update({naming.grad(k): v for k, v in grads.items()})
    outputs.update({naming.grad(k): v for k, v in fwd.updates})
    names: dict[int, str] = {}
    keep = []
    for label in fwd.labels:  # z1, a1, ... (Sequential); dense1_z, dense1_out, ... (graph)
        names[id(label.node)] = label.code
        keep.append(label.node)
    return Program(outputs, names, tuple(keep)), result


def simplify(fwd: ForwardGraph) -> Simplified:
    """Run every pass; return the final program and the per-pass reports."""
    out = Simplified(make_program(fwd))
    plain = out.program
    # dead code first: the chain rule only follows paths to parameters; this row counts what
    # a sweep that also differentiated the input would have built
    out.reports.append(_report("eliminate_dead_code", _swept(fwd, everything=True)[0], plain))
    fused_fwd = fuse_losses(fwd, out.fusions)
    prog, out.sweep = _swept(fused_fwd)
    out.derived, out.forward = prog, fused_fwd
    out.reports.append(_report("fuse_losses", plain, prog))
    steps = [
        ("fuse_elementwise", fuse_elementwise),
        ("reuse_forward_values", lambda p: reuse_forward_values(p, out.reuses)),
        ("fuse_elementwise", fuse_elementwise),
        ("stabilise", lambda p: stabilise(p, out.stabilised)),
        ("simplify_loops", simplify_loops),
    ]
    for name, fn in steps:
        before = prog
        prog = fn(prog)
        out.reports.append(_report(name, before, prog))
    ir.validate(prog.outputs.values())
    # which equation of the derivation each derived node belongs to: every emitted statement
    # then names the equation it computes (Stmt.origin), for the report's formula/code pairs
    owners = equation_owners(fused_fwd, out.derived, out.sweep)
    out.derived = replace(out.derived, owners=owners)
    out.program = replace(prog, owners=owners)
    return out
