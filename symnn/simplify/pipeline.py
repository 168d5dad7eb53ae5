"""The ordered simplification passes, each reporting op counts before and after.

``fuse_losses`` runs on the forward graph (it changes which pullback the chain rule uses);
the others run on the whole program (forward outputs, loss and every gradient together).
Dead code never reaches the program: the chain rule only follows paths to parameters (no
gradient for ``X``) and each pass rebuilds only what the outputs reach; the
``eliminate_dead_code`` row reports what that dropped compared with the plain derivation.
Common subexpressions inside each map are eliminated at emission (canonical order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import ir, naming
from ..derive.chain import gradients
from ..graph import ForwardGraph
from ..program import Program
from .fuse import Fusion, fuse_losses
from .inline import fuse_elementwise
from .reuse import Reuse, reuse_forward_values
from .stable import stabilise


@dataclass(frozen=True)
class PassReport:
    """Op counts of one pass: (tensor ops, scalar ops in element-wise maps)."""

    name: str
    before: tuple[int, int]
    after: tuple[int, int]


@dataclass
class Simplified:
    program: Program
    reports: list[PassReport] = field(default_factory=list)
    fusions: list[Fusion] = field(default_factory=list)
    reuses: list[Reuse] = field(default_factory=list)


def make_program(fwd: ForwardGraph) -> Program:
    grads = gradients(fwd.loss, fwd.params)
    outputs = {"yhat": fwd.output, "loss": fwd.loss}
    outputs.update({naming.grad(k): v for k, v in grads.items()})
    names: dict[int, str] = {}
    keep = []
    for i, (z, a) in enumerate(zip(fwd.z, fwd.a), 1):
        names[id(z)], names[id(a)] = naming.preact(i), naming.act(i)
        keep += [z, a]
    return Program(outputs, names, tuple(keep))


def simplify(fwd: ForwardGraph) -> Simplified:
    """Run every pass; return the final program and the per-pass reports."""
    out = Simplified(make_program(fwd))
    plain = out.program
    fused_fwd = fuse_losses(fwd, out.fusions)
    prog = make_program(fused_fwd)
    out.reports.append(PassReport("fuse_losses", plain.op_counts(), prog.op_counts()))
    steps = [
        ("fuse_elementwise", fuse_elementwise),
        ("reuse_forward_values", lambda p: reuse_forward_values(p, out.reuses)),
        ("fuse_elementwise", fuse_elementwise),
        ("stabilise", stabilise),
    ]
    for name, fn in steps:
        before = prog.op_counts()
        prog = fn(prog)
        out.reports.append(PassReport(name, before, prog.op_counts()))
    everything = ir.toposort(list(plain.outputs.values()) + [fwd.X, fwd.Y])
    reached = {id(n) for n in prog.nodes()}
    dropped = sum(1 for n in everything if not n.is_leaf and id(n) not in reached)
    final = prog.op_counts()
    out.reports.append(PassReport("eliminate_dead_code", (final[0] + dropped, final[1]), final))
    ir.validate(prog.outputs.values())
    out.program = prog
    return out
