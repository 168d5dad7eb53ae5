"""What every backend's emission shares: the spec hash, the network's description, the
printed pieces of a train step, and the checks of a backend name and a network's sizes.

The backends themselves live in ``symnn/backends/<name>/`` (printer, lowering, emission,
loading) and are listed in :mod:`symnn.backends.registry`; files are written atomically
(:mod:`symnn.fileio`), so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import hashlib

import sympy as sp

from .capabilities import LOSS_CAPABILITIES
from .declare import Network, _np_dtype
from .errors import ConfigError, SpecError
from .fileio import write_atomic  # noqa: F401  (re-exported: the writers import it from here)
from .optim import Optimizer, split_invariant, update_program
from .render import CODEGEN_VERSION


def spec_hash(net: Network, dtype: str, optimizer: "Optimizer | None" = None) -> str:
    """Hash of the canonical network description (SymPy ``srepr``), dtype, optimiser and
    codegen version."""
    parts = [CODEGEN_VERSION, dtype, net.name, repr(net.l1), repr(net.l2)]
    for k, loss in enumerate(net.losses or (net.loss,)):
        if k:  # the second output on: its own loss and every weight (one output: hashes unchanged)
            parts.append(f"output {k} loss" if k > 1 else f"loss weights={net.loss_weights!r}; output 1 loss")
        parts += _loss_parts(loss)
    if len(net.losses) == 1 and net.loss_weights not in ((1.0,), ()):
        parts.append(f"loss weights={net.loss_weights!r}")
    if optimizer is not None:
        parts += [optimizer.describe()]
    if net.frozen:  # only then: the hashes of networks without frozen parameters are unchanged
        parts.append(f"frozen={net.frozen!r}")
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


def _loss_parts(loss) -> list[str]:
    parts = [loss.name, sp.srepr(loss.expr), loss.reduction]
    if loss.domain is not None:  # only then: hashes of networks without one are unchanged
        parts.append(f"domain={loss.domain!r}")
    if loss.user:  # a built-in's capabilities follow from its name; a user loss's are declared
        parts.append("user loss: " + ", ".join(f"{k}={getattr(loss, k)!r}" for k in LOSS_CAPABILITIES))
    return parts


def loss_summary(net: Network) -> str:
    """``cross_entropy (mean-reduced)``; with several outputs each output's loss and weight."""
    if not net.several_outputs:
        return f"{net.loss.name} ({net.loss.reduction}-reduced)"
    return " + ".join(f"{w:g} * {loss.name} on {name} ({loss.reduction}-reduced)"
                      for name, loss, w in zip(net.output_names, net.losses, net.loss_weights))


def packing(net: Network) -> list[str]:
    """Where each input and output sits in the packed X, output and Y the kernels take (a
    network with several inputs or outputs; none for one of each)."""
    lines = []
    if net.several_inputs:
        lines.append("X packs the inputs side by side: " + ", ".join(
            f"{name} in columns {lo}..{hi - 1}"
            for name, (lo, hi) in zip(net.input_names, net.column_blocks(net.input_widths))))
    if net.several_outputs:
        lines.append("the output and Y pack the outputs side by side: " + ", ".join(
            f"{name} in columns {lo}..{hi - 1}" + (" (targets one-hot)" if loss.takes_labels else "")
            for name, loss, (lo, hi) in zip(net.output_names, net.losses, net.column_blocks(net.output_widths))))
    return lines


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
        lines.append(f"loss: {loss_summary(net)}{reg}")
        return lines + packing(net)
    for i, layer in enumerate(net.layers, 1):
        drop = f", dropout {layer.dropout:g} in training" if layer.dropout else ""
        lines.append(f"layer {i}: Dense({layer.in_features} -> {layer.out_features}), {layer.activation.name}{drop}")
    reg = "".join(f", {k}={v!r}" for k, v in (("l1", net.l1), ("l2", net.l2)) if v)
    lines.append(f"loss: {net.loss.name} ({net.loss.reduction}-reduced){reg}")
    return lines


def check_backend(backend: str, dtype: str, allow_auto: bool = False) -> None:
    from .backends.registry import names

    choices = names() + (("auto",) if allow_auto else ())
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


def require_concrete(net: Network) -> None:
    if not net.is_concrete:
        raise SpecError("compiling needs integer layer widths; this network has symbolic widths")
