"""NumPy backend: a network's plans printed as one standalone module (``NAME.py``) that
imports only NumPy, through ``templates/numpy/module.py.jinja``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ... import ir, naming
from ...declare import Network
from ...embedding import index_blocks
from ...emit import describe, spec_hash, train_context
from ...lower import KERNELS, dims, plan_kernel
from ...optim import Optimizer
from ...program import Program
from ...provenance import CodeLine, locate
from ...render import render


@dataclass(frozen=True)
class EmitResult:
    """The emitted module, and for each kernel function ("forward", "loss", "loss_and_grad",
    "loss_and_grad_train") the lines of its body with the derivation step each computes."""

    source: str
    provenance: dict[str, list[CodeLine]] = field(default_factory=dict)


def emit_numpy(net: Network, prog: Program, dtype: str, optimizer: Optimizer | None = None,
               train_prog: Program | None = None) -> EmitResult:
    from .config import SPATIAL_FUNCTIONS, NumPyConfig, kernel_body, uses_batch_size, uses_length
    from .spatial import sources as spatial_sources

    naming.check_declared_names(net)  # the names are printed into the module's docstring
    printer = NumPyConfig(dtype=dtype).printer()
    labels = net.takes_labels
    kernels = []
    origins: dict[str, list[tuple[str | None, ...]]] = {}
    from ...graph import dropout_masks

    masks = dropout_masks(net) if optimizer is not None else []
    spatial: set[str] = set()
    jobs = [(k, plan_kernel(prog, k)) for k in KERNELS]
    if masks or (optimizer is not None and net.has_buffers):
        if train_prog is None:
            raise ValueError("a network with dropout or buffers needs its training program to emit train_step")
        jobs.append(("loss_and_grad_train", plan_kernel(train_prog, "loss_and_grad")))
    for kname, plan in jobs:
        body, origins[kname] = kernel_body(plan, printer)
        used = {w for line in body for w in _words(line)}
        spatial |= used & set(SPATIAL_FUNCTIONS.values())
        # a parameter of rank > 2 (a convolution's weight) is read as the matrix the plan uses
        prologue = [f'{naming.param_ident(p)} = params["{p}"]' + _as_matrix(shape)
                    for p, shape in net.param_shapes().items() if naming.param_ident(p) in used]
        if kname == "loss_and_grad_train":
            prologue += [f"{m[0]} = masks[{i}]" for i, m in enumerate(masks) if m[0] in used]
        if uses_batch_size(body) or (labels and "Y" in plan.inputs):
            prologue.append("N = X.shape[0]")
        if uses_length(body):
            prologue.append("T = _length(X)")
        if labels and "Y" in plan.inputs:  # class labels: (N,), or a sequence output's (N, T)
            prologue += [f"if Y.{'dtype.kind in ' + repr('iu') if net.step_labels else 'ndim == 1'}:",
                         "    Y = _onehot(Y, N)"]
        has_y = "Y" in plan.inputs or kname != "forward"
        sig = "params, X, Y" if has_y else "params, X"
        if kname == "loss_and_grad_train":
            sig += ", masks"
        if kname == "forward":
            returns, doc = plan.outputs["yhat"], f"Network output, shape (N, {net.n_out})."
        elif kname == "loss":
            returns, doc = f"float({plan.outputs['loss']})", "Mean loss (plus penalties) as a float."
        else:
            # no gradient for a frozen parameter or a buffer: zeros; the training kernel gives
            # a buffer's new value in its place (the train step takes it from there)
            written = set(net.trainable) | (set(net.buffers) if kname == "loss_and_grad_train" else set())
            grads = ", ".join(f'"{p}": ' + (f'{plan.outputs[naming.grad(naming.param_ident(p))]}{_as_shape(shape)}'
                                            if p in written else _zeros(shape))
                              for p, shape in net.param_shapes().items())
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
        frozen_slices=net.untrained_ranges(),
        index_blocks=index_blocks(net),
        buffer_slices=net.buffer_ranges(),
        train_kernel=masks or net.has_buffers,
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
        length=naming.length_form(net.n_in) if naming.has_length(net.n_in) else None,
        n_out=net.n_out,
        out_length=naming.length_form(net.n_out) if naming.has_length(net.n_out) else None,
        labels=labels,
        # a sequence output's labels (N, T): each step's class among these, -100 a padded step
        step_classes=int(net.output_shapes[0][-1]) if net.step_labels else 0,
        param_names=list(net.param_shapes()),
        param_shapes=param_shapes,
        kernels=kernels,
        spatial_source=spatial_sources(spatial) if spatial else "",
        input_shapes=[(name, shape) for name, shape in net.input_shapes if len(shape) > 1],
    )
    # each body line is printed by the template as 4 spaces + line, after its function's
    # signature and prologue and before its return
    provenance = {
        k["name"]: locate(source, f"def _{k['name']}(", "\n    return ",
                          zip(("    " + line for line in k["body"]), origins[k["name"]]))
        for k in kernels
    }
    return EmitResult(source, provenance)


def _zeros(shape: tuple) -> str:
    """A frozen parameter's gradient: zeros of its shape (nothing was derived for it)."""
    return f"np.zeros({tuple(int(d) for d in shape)!r}, dtype=DTYPE)"


def _as_matrix(shape: tuple) -> str:
    """``.reshape(O, K)``: a parameter of rank > 2 read as its IR matrix (:func:`symnn.ir.matrix_shape`);
    ``.reshape(1)`` for a scalar (a vector of one entry there); nothing for others."""
    if len(shape) == 0:
        return ".reshape(1)"
    return ".reshape({}, {})".format(*(int(d) for d in ir.matrix_shape(shape))) if len(shape) > 2 else ""


def _as_shape(shape: tuple) -> str:
    """``.reshape(O, C, kh, kw)``: a gradient of rank > 2 returned in its parameter's shape."""
    return f".reshape({', '.join(str(int(d)) for d in shape)})" if len(shape) > 2 else ""


def _words(line: str) -> set[str]:
    import re

    return set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", line))
