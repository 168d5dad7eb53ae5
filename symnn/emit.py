"""Plan -> printed strings -> templates -> files.

``emit_source`` returns the text of the emitted module; :func:`emit` writes it atomically
(temporary file, then rename), so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import sympy as sp

from . import naming
from .capabilities import LOSS_CAPABILITIES
from .declare import Network, _np_dtype
from .errors import ConfigError, SpecError
from .fileio import write_atomic  # noqa: F401  (re-exported: the writers import it from here)
from .lower import KERNELS, dims, plan_kernel
from .optim import Optimizer, split_invariant, update_program
from .program import Program
from .provenance import CodeLine, locate
from .render import CODEGEN_VERSION, render

BACKENDS = ("numpy", "c")


def spec_hash(net: Network, dtype: str, optimizer: "Optimizer | None" = None) -> str:
    """Hash of the canonical network description (SymPy ``srepr``), dtype, optimiser and
    codegen version."""
    parts = [CODEGEN_VERSION, dtype, net.name, repr(net.l1), repr(net.l2), net.loss.name,
             sp.srepr(net.loss.expr), net.loss.reduction]
    if net.loss.domain is not None:  # only then: hashes of networks without one are unchanged
        parts.append(f"domain={net.loss.domain!r}")
    if net.loss.user:  # a built-in's capabilities follow from its name; a user loss's are declared
        parts.append("user loss: " + ", ".join(f"{k}={getattr(net.loss, k)!r}" for k in LOSS_CAPABILITIES))
    if optimizer is not None:
        parts += [optimizer.describe()]
    if net.graph is not None:
        parts += _graph_parts(net)
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
    for layer in net.layers:
        act = layer.activation
        parts += [str(layer.in_features), str(layer.out_features), act.name,
                  sp.srepr(act.expr) if act.expr is not None else act.kind]
        if layer.dropout:
            parts.append(f"dropout={layer.dropout!r}")
        if act.domain is not None:
            parts.append(f"domain={act.domain!r}")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _graph_parts(net: Network) -> list[str]:
    """A layer graph's canonical description: inputs, each layer (name, class, its fields with
    SymPy objects by ``srepr``), each call's operands, the outputs."""
    g = net.graph
    parts = [f"graph inputs={g.inputs!r} outputs={g.outputs!r}"]
    for layer, name in zip(g.layers, g.names):
        fields = []
        for key, value in sorted(vars(layer).items()):
            if key == "activation":
                value = (value.name, sp.srepr(value.expr) if value.expr is not None else value.kind, value.domain)
            fields.append(f"{key}={value!r}")
        parts.append(f"layer {name} {type(layer).__name__} " + " ".join(fields))
    parts += [f"call {c.layer} {c.inputs!r} {c.shape!r}" for c in g.calls]
    return parts


def describe(net: Network) -> list[str]:
    lines = []
    if net.graph is not None:
        g = net.graph
        names = [n for n, _ in g.inputs]
        for k, call in enumerate(g.calls):
            args = ", ".join(names[i] for i in call.inputs)
            layer = g.layers[call.layer]
            names.append(g.names[call.layer])
            lines.append(f"{g.names[call.layer]}: {layer.describe()} of {args}")
        reg = "".join(f", {k}={v!r}" for k, v in (("l1", net.l1), ("l2", net.l2)) if v)
        lines.append(f"loss: {net.loss.name} ({net.loss.reduction}-reduced){reg}")
        return lines
    for i, layer in enumerate(net.layers, 1):
        drop = f", dropout {layer.dropout:g} in training" if layer.dropout else ""
        lines.append(f"layer {i}: Dense({layer.in_features} -> {layer.out_features}), {layer.activation.name}{drop}")
    reg = "".join(f", {k}={v!r}" for k, v in (("l1", net.l1), ("l2", net.l2)) if v)
    lines.append(f"loss: {net.loss.name} ({net.loss.reduction}-reduced){reg}")
    return lines


@dataclass(frozen=True)
class EmitResult:
    """The emitted module, and for each kernel function ("forward", "loss", "loss_and_grad",
    "loss_and_grad_train") the lines of its body with the derivation step each computes."""

    source: str
    provenance: dict[str, list[CodeLine]] = field(default_factory=dict)


def check_backend(backend: str, dtype: str, allow_auto: bool = False) -> None:
    choices = BACKENDS + (("auto",) if allow_auto else ())
    if not isinstance(backend, str) or backend not in choices:
        raise ConfigError(f"unknown backend {backend!r}; available: {', '.join(choices)}")
    _np_dtype(dtype)
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


def train_context(optimizer: Optimizer, printer) -> dict:
    """Printed pieces of a train step: loop-invariant scalars, per-element temporaries, the
    assignments and which buffer each new value goes to. ``printer.doprint_expr`` prints."""
    steps, new = update_program(optimizer)
    hoisted, per_element, reduced = split_invariant(steps)
    return {
        "describe": optimizer.describe(),
        "state": list(optimizer.state),
        "hoisted": [(str(sym), printer.doprint_expr(e)) for sym, e in hoisted],
        "temps": [(str(sym), printer.doprint_expr(e)) for sym, e in per_element],
        "assign": [(str(sym), printer.doprint_expr(e)) for sym, e in reduced],
        "writes": [(name, str(new[name])) for name in optimizer.state],
        "p_new": str(new["p"]),
        "clip_value": optimizer.clip_value,
        "clip_norm": optimizer.clip_norm,
        "names": sorted({str(x) for x in [*(s for s, _ in hoisted), *(s for s, _ in per_element),
                                          *(s for s, _ in reduced)]}),
    }


def emit_numpy(net: Network, prog: Program, dtype: str, optimizer: Optimizer | None = None,
               train_prog: Program | None = None) -> EmitResult:
    from .backends.numpy.config import NumPyConfig, kernel_body, uses_batch_size

    naming.check_declared_names(net)  # the names are printed into the module's docstring
    printer = NumPyConfig(dtype=dtype).printer()
    labels = net.loss.takes_labels
    kernels = []
    origins: dict[str, list[tuple[str | None, ...]]] = {}
    from .graph import dropout_masks

    masks = dropout_masks(net) if optimizer is not None else []
    jobs = [(k, plan_kernel(prog, k)) for k in KERNELS]
    if masks:
        if train_prog is None:
            raise ValueError("a network with dropout needs its training program to emit train_step")
        jobs.append(("loss_and_grad_train", plan_kernel(train_prog, "loss_and_grad")))
    for kname, plan in jobs:
        body, origins[kname] = kernel_body(plan, printer)
        used = {w for line in body for w in _words(line)}
        prologue = [f'{naming.param_ident(p)} = params["{p}"]' for p in net.param_shapes()
                    if naming.param_ident(p) in used]
        if kname == "loss_and_grad_train":
            prologue += [f"{m[0]} = masks[{i}]" for i, m in enumerate(masks) if m[0] in used]
        if uses_batch_size(body) or (labels and "Y" in plan.inputs):
            prologue.append("N = X.shape[0]")
        if labels and "Y" in plan.inputs:
            prologue += ["if Y.ndim == 1:", "    Y = _onehot(Y, N)"]
        has_y = "Y" in plan.inputs or kname != "forward"
        sig = "params, X, Y" if has_y else "params, X"
        if kname == "loss_and_grad_train":
            sig += ", masks"
        if kname == "forward":
            returns, doc = plan.outputs["yhat"], f"Network output, shape (N, {net.n_out})."
        elif kname == "loss":
            returns, doc = f"float({plan.outputs['loss']})", "Mean loss (plus penalties) as a float."
        else:
            grads = ", ".join(f'"{p}": {plan.outputs[naming.grad(naming.param_ident(p))]}'
                              for p in net.param_shapes())
            returns = f"float({plan.outputs['loss']}), {{{grads}}}"
            doc = "(loss, {name: dL/dname}) with gradients shaped like the parameters."
        kernels.append(
            {
                "name": kname,
                "signature": sig,
                "check_args": sig,
                "doc": doc,
                "op_line": f"ops: {plan.n_tensor_ops} tensor, {plan.n_scalar_ops} scalar",
                "prologue": prologue,
                "body": body,
                "returns": returns,
                "public": kname in KERNELS,
            }
        )
    param_shapes = [
        (k, "(" + ", ".join(dims(v)) + ("," if len(v) == 1 else "") + ")")
        for k, v in net.param_shapes().items()
    ]
    op_summary = [f"{k['name']}: {k['op_line']}" for k in kernels]
    layout = net.param_layout()
    offsets = [(k, lo, hi, str(shape)) for k, lo, hi, shape in layout]
    source = render(
        "numpy/module.py.jinja",
        spec_hash=spec_hash(net, dtype, optimizer),
        train=train_context(optimizer, printer) if optimizer is not None else None,
        masks=[(name, repr(p), width) for name, _, width, p in masks],
        param_slices=offsets,
        n_params=layout[-1][2],
        op_summary=op_summary,
        title=f"symnn kernels for {net.name!r}.",
        network_lines=describe(net),
        dtype=dtype,
        needs_erf="erf" in printer.helpers,
        helpers=sorted(printer.helpers),
        n_in=net.n_in,
        n_out=net.n_out,
        labels=labels,
        param_names=list(net.param_shapes()),
        param_shapes=param_shapes,
        kernels=kernels,
    )
    # each body line is printed by the template as 4 spaces + line, after its function's
    # signature and prologue and before its return
    provenance = {
        k["name"]: locate(source, f"def _{k['name']}(", "\n    return ",
                          zip(("    " + line for line in k["body"]), origins[k["name"]]))
        for k in kernels
    }
    return EmitResult(source, provenance)


def _words(line: str) -> set[str]:
    import re

    return set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", line))


def require_concrete(net: Network) -> None:
    if not net.is_concrete:
        raise SpecError("compiling needs integer layer widths; this network has symbolic widths")
