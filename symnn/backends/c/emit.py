"""Plan -> C statement contexts -> ``templates/c`` -> ``NAME.h``, ``NAME.c`` (and examples).

The C API (see the header template for the caller's view):

* ``NAME_forward(params, X, n, yhat, work, work_len)``
* ``NAME_loss(params, X, Y, n, loss, work, work_len)``
* ``NAME_loss_and_grad(params, X, Y, n, loss, grad, work, work_len)``
* for networks with the built-in cross-entropy, ``NAME_loss_labels`` and
  ``NAME_loss_and_grad_labels`` taking ``int32_t`` labels instead of one-hot ``Y``;
* ``NAME_work_size``, ``NAME_check_finite`` and parameter metadata.

Every kernel checks its arguments (NULL, batch size, work size, aliasing, labels) before it
writes anything, then calls an unchecked static implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from ... import ir, naming, status
from ...capabilities import C_TARGET_KIND
from . import gemm
from .arena import Need, pareto, term_code
from .config import (CONV_FIELDS, POOL_FIELDS, WINOGRAD_PANELS, SHARED_HELPER_STATEMENTS, CConfig, KernelLayout,
                     check_prefix, coefficients, dim_code, lower_kernel, share_helpers, size_code)
from .kinds import GEMM_CALLS, ROW_STAT_KINDS, SPATIAL_PARTS, CKind
from .printer import VMATH_HELPERS, c_literal
from ...declare import Network
from ...embedding import index_blocks, padding_rows
from ...graph import loss_mask_blocks
from ...emit import describe, spec_hash, train_context
from ...graph import dropout_masks
from ...optim import Optimizer
from ...lower import KERNELS, KernelPlan, Loop, has_loop, plan_kernel
from ...program import Program
from ...provenance import CodeLine, locate
from ...recurrent import GRU, LSTM, RNN
from ...render import macros, render, trim_indent

#: Emitted C API format; bump when a signature or the parameter layout changes.
FORMAT_VERSION = 1

#: How the emitted ``.c`` spells C99's ``restrict``: a macro that model.c.jinja defines as
#: ``restrict`` in C and as the compiler's ``__restrict`` in C++, so the file also builds as C++.
RESTRICT = "SYMNN_RESTRICT"

#: ``(macro, code, text)`` of every status code, from the one enum the wrapper also reads
STATUSES = status.c_table()


@dataclass(frozen=True)
class CEmitResult:
    """Emitted files by name, the cffi declarations, and what the wrappers need to know."""

    files: dict[str, str]
    cdef: str
    prefix: str
    labels: bool
    optimizer: str | None = None  # description of the emitted train_step's optimiser
    n_state: int = 0
    dropout: bool = False  # the train step takes a seed for its dropout masks
    #: kernel name -> the lines of its static implementation, with the derivation step each computes
    provenance: dict[str, list[CodeLine]] = field(default_factory=dict)
    #: kernel name -> the reals its work buffer needs, a function of the batch (``train_step``
    #: with an optimiser)
    work: dict[str, Need] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.files[f"{self.prefix}.c"]

    @property
    def header(self) -> str:
        return self.files[f"{self.prefix}.h"]


def _params_table(net: Network) -> list[dict]:
    """The parameter table of the C file: name, rows, cols (a bias is rows x 1; a convolution's
    weight (O, C/g, kh, kw) the matrix of its rows, O x C/g*kh*kw, as the IR holds it), offset."""
    table = []
    for name, lo, _, shape in net.param_layout():
        matrix = ir.matrix_shape(shape)
        table.append({"name": name, "rows": matrix[0] if matrix else 1, "cols": matrix[1] if len(matrix) == 2 else 1,
                      "offset": lo})
    return table


def emit_c(net: Network, prog: Program, dtype: str, optimizer: Optimizer | None = None,
           train_prog: Program | None = None) -> CEmitResult:
    """``train_prog``: the training program (dropout masks as inputs ``M1``...), needed when the
    network has dropout and an optimiser is given."""
    from ...driver import check_length  # the driver imports the backends: imported here

    naming.check_declared_names(net)  # the name prefixes C symbols; every name is printed in comments
    check_length(net, "c")  # every path to C code, the report's too
    prefix = check_prefix(net.name)
    #: the sequences' length is given at each call: every kernel takes it, ``steps``, after n
    length = net.has_run_time_length
    cfg = CConfig(dtype=dtype, prefix=prefix)
    printer = cfg.printer()
    real = f"{prefix}_real"
    labels = net.takes_labels
    params = _params_table(net)
    n_params = sum(p["rows"] * p["cols"] for p in params)
    # parameters by their identifier in code (W1; dense1_weight for a graph's dense1.weight);
    # the table of names the C API returns keeps the public names
    offsets = {naming.param_ident(p["name"]): p["offset"] for p in params}
    n_in, n_out = net.n_in, net.n_out  # ints, or a*T + b for a run-time length
    # a convolution's weight (O, C/g, kh, kw) as the IR holds it: the matrix (O, C/g*kh*kw)
    shapes = {naming.param_ident(p): ir.matrix_shape(shape)
              for p, shape in net.param_shapes().items()}
    # frozen parameters: no gradient derived; the kernels write zeros there, and the train step
    # updates only the other ranges
    frozen = {naming.param_ident(p) for p in net.frozen}
    frozen_ranges = net.frozen_ranges()
    # buffers (running statistics): no gradient either; the training kernel writes their new
    # values in their gradient's place, which the train step sets aside and copies in on success
    buffers = {naming.param_ident(p) for p in net.buffers}
    still = net.untrained_ranges()
    # each parameter's [lo, hi) in params (and grad)
    span = {naming.param_ident(name): (lo, hi) for name, lo, hi, _ in net.param_layout()}
    sz = f"sizeof({real})"

    layouts: dict[str, KernelLayout] = {}
    plans = {}
    masks = [{"name": name, "layer": layer, "width": width, "width_code": dim_code(width), "p": repr(p)}
             for name, layer, width, p in dropout_masks(net)] if optimizer is not None else []
    if masks and train_prog is None:
        raise ValueError("a network with dropout needs its training program to emit train_step")
    train_kernel = bool(masks) or (optimizer is not None and bool(buffers))
    if train_kernel and train_prog is None:
        raise ValueError("a network with buffers needs its training program to emit train_step")
    # with an optimiser, the train step's own loss-and-gradient kernel: the training program's
    # (dropout masks, buffers' new values) where the network has one, its gradients kept in work
    kernel_names = list(KERNELS) + (["loss_and_grad_train"] if optimizer is not None else [])
    for kname in kernel_names:
        plans[kname] = (plan_kernel(train_prog if train_kernel else prog, "loss_and_grad")
                        if kname == "loss_and_grad_train" else plan_kernel(prog, kname))
    # a network with a long kernel prints its statements as shared helpers, in every kernel; so
    # does one with a loop, whose body every kernel runs (forward, loss, gradient, train step):
    # each distinct statement compiled once, not once per kernel
    shared_helpers = any(len(plan.stmts) > SHARED_HELPER_STATEMENTS or has_loop(plan) for plan in plans.values())
    for kname, plan in plans.items():
        inputs = {"X": (naming.N, n_in)}
        if kname != "forward":
            inputs["Y"] = (naming.N, n_out)
        if kname == "loss_and_grad_train":
            inputs.update({m["name"]: (naming.N, m["width"]) for m in masks})
        if kname == "forward":
            outputs = {"yhat": "out_yhat"}
        elif kname == "loss":
            outputs = {"loss": "out_loss"}
        else:
            outputs = {"loss": "out_loss"}
            written = [p for p in shapes if p not in frozen and (p not in buffers or kname == "loss_and_grad_train")]
            outputs.update({naming.grad(p): f"out_grad + {offsets[p]}" if offsets[p] else "out_grad"
                            for p in written})
        layouts[kname] = lower_kernel(plan, printer, shapes, inputs, outputs, shared=shared_helpers,
                                      keep_outputs=kname == "loss_and_grad_train", length=length)
    # what the train step writes, in the order of its gradient pointers g[r]: the trained
    # parameters, then the buffers (their new values), each in the parameter layout's order
    in_work = layouts["loss_and_grad_train"].kept if optimizer is not None else {}
    written = ([p for p in shapes if naming.grad(p) in in_work and p not in buffers]
               + [p for p in shapes if naming.grad(p) in in_work and p in buffers])

    kernels = []
    shared = share_helpers(list(layouts.values()), prefix)  # long kernels' statements as helpers
    for kname, lay in layouts.items():
        # what the body prints, as recorded while it was lowered (backends/c/config.py, Uses)
        printed = lay.names()
        param_ptrs = [{"name": p, "init": f"params + {offsets[p]}" if offsets[p] else "params", "const": True}
                      for p in shapes if p in printed]
        args = [(f"const {real} *{RESTRICT} params", "params", bool(param_ptrs)),
                (f"const {real} *{RESTRICT} X", "X", "X" in printed)]
        if kname != "forward":
            args.append((f"const {real} *{RESTRICT} Y", "Y", "Y" in printed))
        if kname == "loss_and_grad_train":
            args += [(f"const {real} *{RESTRICT} {m['name']}", m["name"], m["name"] in printed) for m in masks]
        args.append(("ptrdiff_t n", "n", lay.uses_n))
        if length:
            args.append(("ptrdiff_t steps", "steps", lay.uses_steps))
        # every output is written: through a view, a copy or (a scalar) at the end
        if kname == "forward":
            args.append((f"{real} *{RESTRICT} out_yhat", "out_yhat", True))
        else:
            args.append((f"{real} *{RESTRICT} out_loss", "out_loss", True))
        if kname == "loss_and_grad":
            args.append((f"{real} *{RESTRICT} out_grad", "out_grad", True))
        elif kname == "loss_and_grad_train":
            args.append((f"{real} **out_g", "out_g", True))
        args.append((f"{real} *{RESTRICT} work", "work", lay.uses_work))
        plan = plans[kname]
        kernels.append({
            "name": kname,
            "impl_args": ", ".join(decl for decl, _, _ in args),
            "arg_names": [name for _, name, used in args if not used],
            "op_line": f"ops: {plan.n_tensor_ops} tensor, {plan.n_scalar_ops} scalar",
            "work_code": _formula(lay.work),
            "offset_lines": lay.offset_lines,
            "pointers": param_ptrs + lay.pointers,
            "scalars": lay.scalars,
            "calls": lay.calls,
            "uses_nr": lay.uses_nr,
            "stmts": lay.stmts,
            "scalar_outputs": [(f"out_{o}", v) for o, v in lay.outputs.items()],
            "frozen": still if kname == "loss_and_grad" else [],
            # where each gradient the train step reads lies (its g[r])
            "grad_ptrs": [(r, lay.kept[naming.grad(p)]) for r, p in enumerate(written)]
                         if kname == "loss_and_grad_train" else [],
        })

    # -- public, checked entry points -------------------------------------------------------
    need_fns: dict[Need, str] = {}  # each need of several terms: its function's name

    def need_code(need: Need) -> str:
        """The C expression (size_t) of a need at the batch ``n`` (and run-time length ``steps``)."""
        if need.single is not None:
            return _term_code(need.single)
        if need not in need_fns:
            need_fns[need] = f"{prefix}__need{len(need_fns)}"
        return f"{need_fns[need]}(n{', steps' if length else ''})"

    def bytes_n(width: object) -> str:
        code = dim_code(width)
        return f"(size_t)n*{code if code.isdigit() else f'(size_t)({code.strip(chr(40) + chr(41))})'}*{sz}"

    rp = f"const {real} *"
    x_rng = ("X", bytes_n(n_in))
    p_rng = ("params", f"(size_t){n_params}*{sz}")
    y_rng = ("Y", bytes_n(n_out))
    # what a label is, in the comments: "[0, 10)", or a sequence output's "[0, 5) per step ..."
    label_range = (f"[0, {int(net.output_shapes[0][-1])}), one per step (n*{dim_code(net.output_steps[0])}), -100 "
                   "a padded step (every step padded: SYMNN_ERR_EMPTY)" if net.step_labels else f"[0, {n_out})")
    # a sequence output's labels: one per step, (size_t)n*T of them
    per_row_labels = dim_code(net.output_steps[0]) if net.step_labels else None
    lab_rng = ("labels", f"(size_t)n*(size_t){per_row_labels}*sizeof(int32_t)" if per_row_labels
               else "(size_t)n*sizeof(int32_t)")
    work_rng = ("work", f"need*{sz}")
    publics, protos = [], []
    one_hot = coefficients(naming.N * n_out, length)  # a labels kernel's one-hot rows (n_out an int)
    work_need = {k: lay.work for k, lay in layouts.items()}
    variants = [("forward", False), ("loss", False), ("loss_and_grad", False)]
    if labels:
        variants += [("loss", True), ("loss_and_grad", True)]
    train = None
    n_state = 0
    if optimizer is not None:
        n_state = len(optimizer.state)
        lg = work_need["loss_and_grad_train"]
        mask_rows = coefficients(naming.N * sum(m["width"] for m in masks), length)
        # train_gradient's and train_step's work: the dropout masks, then the loss-and-gradient
        # kernel's own, the gradients among its temporaries. The update is written only after a
        # first pass over it has found every new value finite (all or nothing), so it keeps no
        # old values; the buffers' new values go from the gradient to the parameters.
        work_need["train_gradient"] = lg.plus(*mask_rows)
        work_need["train_step"] = lg.plus(*mask_rows)
        variants += [("train_step", False)] + ([("train_step", True)] if labels else [])
        variants += [("train_gradient", False)] + ([("train_gradient", True)] if labels else [])
        train = _train_context(optimizer, printer, real, n_params)
        train["masks"] = masks
        train["written"] = [span[p] for p in written]
        train["n_trained"] = sum(p not in buffers for p in written)
        train["frozen"] = frozen_ranges
        offset = 0
        for m in masks:  # each mask is n x width reals at the start of train_gradient's work
            m["init"] = f"work + {_term_code(coefficients(naming.N * offset, length), cast=False)}" if offset else "work"
            offset = offset + m["width"]
        train["lg_work"] = f"work + {_term_code(coefficients(naming.N * offset, length), cast=False)}" if offset else "work"
    # the masks of a sequence output's loss, named in the loss entries' comments
    loss_masks = ", ".join(f"X[:, {dim_code(b.lo)}:{dim_code(b.hi)}] ({b.name})" for b in loss_mask_blocks(net))
    for kname, with_labels in variants:
        need = work_need[kname].plus(*one_hot) if with_labels else work_need[kname]
        fname = f"{prefix}_{kname}" + ("_labels" if with_labels else "")
        is_train = kname == "train_step"
        stepped = kname in ("train_step", "train_gradient")  # takes the step (and the dropout seed)
        sig = [f"{real} *params"] if is_train else [f"{rp}params"]
        nulls = ["params == NULL"]
        ins = [] if is_train else [p_rng]
        outs: list[tuple[str, str]] = [p_rng] if is_train else []
        if is_train and n_state:
            sig.append(f"{real} *state")
            nulls.append("state == NULL")
            outs.append(("state", f"(size_t){n_state * n_params}*{sz}"))
        sig.append(f"{rp}X")
        nulls.append("X == NULL")
        ins.append(x_rng)
        if kname != "forward":
            if with_labels:
                sig.append("const int32_t *labels")
                nulls.append("labels == NULL")
                ins.append(lab_rng)
            else:
                sig.append(f"{rp}Y")
                nulls.append("Y == NULL")
                ins.append(y_rng)
        sig.append("ptrdiff_t n")
        if length:
            sig.append("ptrdiff_t steps")
        if stepped:
            sig.append("int64_t step")
            if masks:
                sig.append("uint64_t seed")
        if kname == "forward":
            sig.append(f"{real} *yhat")
            nulls.append("yhat == NULL")
            outs.append(("yhat", bytes_n(n_out)))
        else:
            sig.append(f"{real} *loss")
            nulls.append("loss == NULL")
            outs.append(("loss", sz))
        if kname in ("loss_and_grad", "train_gradient"):
            sig.append(f"{real} *grad")
            nulls.append("grad == NULL")
            outs.append(("grad", f"(size_t){n_params}*{sz}"))
        if with_labels:
            sig.append("ptrdiff_t *bad_row")
        sig += [f"{real} *work", "size_t work_len"]
        outs.append(work_rng)
        pairs = []
        for i, o in enumerate(outs):
            for other in ins + outs[i + 1:]:
                pairs.append((o, other))
        y_arg = "onehot" if with_labels else "Y"
        call_args = ["params"] + (["state" if n_state else "NULL"] if is_train else [])
        call_args += ["X"] + ([y_arg] if kname != "forward" else []) + ["n"] + (["steps"] if length else [])
        call_args += (["step"] + (["seed"] if masks else [])) if stepped else []
        call_args += ["yhat"] if kname == "forward" else ["loss"]
        call_args += ["grad"] if kname in ("loss_and_grad", "train_gradient") else []
        call_args.append("work")
        decl = f"int {fname}({', '.join(sig)})"
        publics.append({
            "doc_line": f"/* {_doc(kname, with_labels, label_range)} */",
            "decl": decl,
            "nulls": nulls,
            "empty_is_error": kname != "forward",
            "empty_ok": kname == "forward",
            "need": need_code(need),
            "dense_need": need_code(work_need[kname]),
            "alias_pairs": pairs,
            "labels": with_labels,
            "step_check": stepped,
            "call": f"{prefix}__{kname}({', '.join(call_args)})",
        })
        protos.append({"doc": _proto_doc(kname, with_labels, label_range, loss_masks), "decl": decl})
    if optimizer is not None:
        protos.append({"doc": ["One optimiser step on a gradient already computed: train_gradient's, or the sum of",
                               "several batches' weighted by their share of the rows (data-parallel training).",
                               "params and state are updated in place, grad[N_PARAMS] is overwritten (clipping).",
                               "All or nothing, as train_step; step counts from 1."],
                       "decl": f"int {prefix}_apply_gradient({real} *params, {f'{real} *state, ' if n_state else ''}"
                               f"{real} *grad, int64_t step)"})

    # every kernel's need (with its labels variant's one-hot rows): what work_size returns
    need_max = Need(pareto(set().union(*((w.plus(*one_hot) if labels and k != "forward" else w).terms
                                          for k, w in work_need.items()))))
    bound = need_max.bound()  # the header's macros: a bound of the form a*n + b (a*n*steps + b*n + c)
    per_row, fixed = bound[-2:]
    in_form, out_form = naming.length_form(n_in), naming.length_form(n_out)
    # the most reals per row (per row and step) of any array a kernel indexes: the sizes that must
    # fit in ptrdiff_t at the largest batch (and length) the kernels take
    max_row = max(per_row, in_form[1], out_form[1], 1)
    max_step = max(bound[0], in_form[0], out_form[0], 1) if length else 0
    steps_arg = "ptrdiff_t steps, " if length else ""
    protos += [
        {"doc": ["Number of reals the work buffer needs for a batch of n"
                 + (" sequences of steps steps" if length else "") + ": the most that any kernel needs."],
         "decl": f"int {prefix}_work_size(ptrdiff_t n, {steps_arg}size_t *work_len)"},
        {"doc": ["SYMNN_ERR_NONFINITE (and the first bad index) if data[0..count) holds NaN or infinity."],
         "decl": f"int {prefix}_check_finite(const {real} *data, ptrdiff_t count, ptrdiff_t *first_bad)"},
        {"doc": ["Total number of parameters (the length of params and grad)."],
         "decl": f"ptrdiff_t {prefix}_n_params(void)"},
        {"doc": ["Number of parameter tensors (W1, b1, W2, ...)."],
         "decl": f"int {prefix}_n_param_tensors(void)"},
        {"doc": ["Name of parameter tensor i, or NULL if i is out of range."],
         "decl": f"const char *{prefix}_param_name(int i)"},
        {"doc": ["Shape of parameter tensor i (a bias is rows x 1)."],
         "decl": f"int {prefix}_param_shape(int i, ptrdiff_t *rows, ptrdiff_t *cols)"},
        {"doc": ["Offset of parameter tensor i in params and grad, or -1 if i is out of range."],
         "decl": f"ptrdiff_t {prefix}_param_offset(int i)"},
        {"doc": ["A short English description of a status code."],
         "decl": f"const char *{prefix}_status_string(int status)"},
    ]
    common = {
        "spec_hash": spec_hash(net, dtype, optimizer),
        "op_summary": [f"{k['name']}: {k['op_line']}" for k in kernels],
        "title": f"symnn {dtype} kernels for {net.name!r}.",
        "network_lines": describe(net),
        "prefix": prefix,
        "real": real,
        "ctype": "float" if dtype == "float32" else "double",
        "dtype": dtype,
        "fsuf": "f" if dtype == "float32" else "",
        "lit0": c_literal(0.0, dtype),
        "lit1": c_literal(1.0, dtype),
        "labels": labels,
        "n_in": n_in,
        "n_out": n_out,
        # the sequences' length is an argument (steps): X's rows are N_IN_PER_STEP*steps + N_IN_FIXED
        "length": length,
        # the kernels' labels of a sequence output: labels per row (C), and the classes of a step
        "step_labels": per_row_labels,
        "label_range": label_range,
        "step_classes": int(net.output_shapes[0][-1]) if net.step_labels else 0,
        "n_in_code": dim_code(n_in),
        "n_out_code": dim_code(n_out),
        "in_form": in_form,
        "out_form": out_form,
        "work_per_step": bound[0] if length else 0,
        "max_step": max_step,
        "n_params": n_params,
        "n_state": n_state,
        "optimizer": optimizer.describe() if optimizer is not None else None,
        "n_tensors": len(params),
        "params": params,
        "statuses": STATUSES,
        "format_version": FORMAT_VERSION,
        "work_per_row": per_row,
        "work_fixed": fixed,
        "conv_weights": any(len(shape) > 2 for shape in net.param_shapes().values()),
        # the index inputs (an Embedding's): every public entry checks them (SYMNN_ERR_INDEX)
        "index_blocks": [dict(b._asdict(), lo_code=dim_code(b.lo), hi_code=dim_code(b.hi)) for b in index_blocks(net)],
        # the masks of a sequence output's loss: the loss entries refuse a batch of padding only
        "mask_blocks": [dict(b._asdict(), lo_code=dim_code(b.lo), hi_code=dim_code(b.hi))
                        for b in loss_mask_blocks(net)],
        "image_inputs": [(name, tuple(naming.concrete(d) for d in shape)) for name, shape in net.input_shapes
                         if len(shape) > 1],
        # each kernel's own need (the *_labels variants add n*N_OUT for the one-hot rows)
        "work_by_kernel": [(k, _formula(work_need[k])) for k in (*KERNELS, "train_step", "train_gradient") if k in work_need],
        # each kernel's own need as macros, and how much of it per row is the steps its loops
        # store (a recurrence's outputs and residuals: it grows with T; the rest does not)
        "kernel_work": [(k.upper(), *work_need[k].bound(), _stored_per_row(plans, k, length))
                        for k in (*KERNELS, "train_step", "train_gradient") if k in work_need],
        "work_max": need_code(need_max),
        "max_row": max_row,
        "guard": f"{prefix.upper()}_SYMNN_H",
        "prototypes": protos,
    }
    header = render("c/model.h.jinja", **common)
    kinds = {st["kind"] for k in kernels for st in k["stmts"]} | {h["ctx"]["kind"] for h in shared}
    helpers = set(printer.helpers)
    if kinds & ROW_STAT_KINDS:
        helpers.add("exp")
    if helpers & {"sigmoid", "softplus"}:  # their exp(-|x|)
        helpers.add("exp_neg")
    if helpers & {"sigmoid", "softplus", "clamp", "max", "min", "sign"}:  # they choose by bit masks
        helpers.add("pick")
    contexts = [*(st for k in kernels for st in k["stmts"]), *(h["ctx"] for h in shared)]
    packed = {c["gemm"] for c in contexts if c["kind"] is CKind.GEMM_PACK}  # forms called on panels packed before a loop
    plain = {GEMM_CALLS[c["kind"]] for c in contexts
             if c["kind"] in GEMM_CALLS and not c.get("packed") and not c.get("group")}
    grouped = {GEMM_CALLS[c["kind"]] for c in contexts if c["kind"] in GEMM_CALLS and c.get("group")}
    gemm_plan = gemm.plan(dtype, plain, packed, grouped)  # what the file calls
    context = dict(kernels=kernels, shared=shared, publics=publics,
                   zmax=any(k["offset_lines"] for k in kernels),
                   need_fns=[(name, need.sorted_terms()) for need, name in need_fns.items()], gemm=gemm_plan, helpers=sorted(helpers),
                   vmath=[f for f in VMATH_HELPERS if f in helpers], train=train, **spatial_context(kinds),
                   **common)
    source = render("c/model.c.jinja", **context)
    cdef = _cdef(common, protos, real)
    files = {f"{prefix}.h": header, f"{prefix}.c": source}
    return CEmitResult(files, cdef, prefix, labels, optimizer.describe() if optimizer is not None else None,
                       n_state, bool(masks), _provenance(source, prefix, kernels, context), dict(work_need))


def _stored_per_row(plans: dict[str, KernelPlan], kname: str, length: bool = False) -> int:
    """Reals per batch row of the values a kernel's loops store, one per step (what grows with
    the sequence's length): each loop's stacked output, (T*E) per row. The train step's is its
    loss-and-gradient kernel's. With a run-time length: per row and step, sum of the E."""
    plan = plans.get(kname) or plans.get("loss_and_grad_train") or plans["loss_and_grad"]
    widths = [st.shape[1] for st in plan.stmts if st.kind is Loop.BEGIN]
    if length:
        return sum(naming.length_form(w)[0] for w in widths)
    return sum(int(w) for w in widths)




def _term_code(term: tuple[int, ...], cast: bool = True) -> str:
    """A work size as C: ``(size_t)n*3 + 5`` (``cast``) or ``3*n + 5``; with a run-time length
    (a, b, c): ``(size_t)n*steps*a + (size_t)n*b + c``."""
    if len(term) == 2:
        a, b = term
        if not cast:
            return size_code(a, b)
        return f"(size_t){b}" if a == 0 else f"(size_t)n*{a}" + (f" + {b}" if b else "")
    pre = "(size_t)" if cast else ""
    parts = [code for coef, code in ((term[0], f"{pre}n*{pre}steps*{term[0]}"), (term[1], f"{pre}n*{term[1]}")) if coef]
    if term[2] or not parts:
        parts.append(f"{pre}{term[2]}" if not parts else str(term[2]))
    return " + ".join(parts)


def _formula(need: Need) -> str:
    """``3194*n + 11342`` (or ``max(256*n, 65536)``): a work need as the header prints it."""
    parts = [term_code(*term) for term in need.sorted_terms()]
    return parts[0] if len(parts) == 1 else f"max({', '.join(parts)})"


def spatial_context(kinds: set[CKind]) -> dict:
    """What ``templates/c/_spatial.jinja`` prints for a file whose contexts are of ``kinds``:
    the parts they call (none for a dense network, whose file stays as it was) and the fields
    of the geometry structs, in the order the lowering prints their initializers."""
    parts = sorted({part for k in kinds if k in SPATIAL_PARTS for part in SPATIAL_PARTS[k]})
    return {"spatial": parts, "conv_fields": CONV_FIELDS, "pool_fields": POOL_FIELDS,
            "winograd_panels": WINOGRAD_PANELS}


def _provenance(source: str, prefix: str, kernels: list[dict],
                context: dict) -> dict[str, list[CodeLine]]:
    """Each kernel's statement blocks located in ``source``: every block printed on its own by
    the macro ``model.c.jinja`` prints it with (``{{ m[s.kind](s) | trim | indent(4) }}``, on a
    line of its own indented by 4, and 4 more per loop around it), with the same context, so comments and layout are the
    template's and nothing is parsed back."""
    m = macros("c/_macros.jinja", "c/model.c.jinja", **context)
    return {
        k["name"]: locate(source, f"static void {prefix}__{k['name']}(", "\n}\n",
                          ((" " * (4 + 4 * s.get("depth", 0)) + trim_indent(getattr(m, s["kind"])(s), 4 + 4 * s.get("depth", 0)),
                            s["origins"])
                           for s in k["stmts"]))
        for k in kernels
    }


def _start_values(net: Network) -> list[str]:
    """How ``train_main.c`` starts each parameter tensor, in order: the constant its layer
    starts it at (a bias's 0, a BatchNorm weight's and running variance's 1), or ``"NAN"`` for
    a random start (uniform, scaled by its fan-in: a weight)."""
    out = []
    for value in net.init_params(seed=0).values():
        flat = np.asarray(value, dtype=np.float64).reshape(-1)
        constant = flat.size > 0 and bool(np.all(flat == flat[0])) and (value.ndim < 2 or flat.size == 1)
        out.append(repr(float(flat[0])) if constant else "NAN")
    return out


#: layers that start every parameter tensor uniform in +-1/sqrt(hidden_size), not by each
#: tensor's fan-in: PyTorch's ``reset_parameters`` of its recurrent layers (and their ``init``)
_HIDDEN_SIZE_START = (RNN, GRU, LSTM)


def _start_fans(net: Network) -> list[str]:
    """The n of each parameter tensor's random start U(-1, 1)/sqrt(n) in ``train_main.c``, in
    order (a constant start ignores it): the columns of its matrix (a weight's fan-in), or for
    every tensor of a recurrent layer, its input weights and biases too, the hidden size H."""
    fans: dict[str, int] = {}
    if net.graph is not None:
        for layer, lname in zip(net.graph.layers, net.graph.names):
            if isinstance(layer, _HIDDEN_SIZE_START):
                fans.update({f"{lname}.{p}": layer.hidden_size for p in layer.param_shapes()})
    return [repr(float(fans.get(p["name"], p["cols"]))) for p in _params_table(net)]


def emit_c_example(net: Network, result: CEmitResult, dtype: str) -> dict[str, str]:
    """``main.c`` (evaluates the network with no Python), with a train step also
    ``train_main.c`` (trains it with no Python), and their ``Makefile``."""
    length = net.has_run_time_length  # the programs read rows of one length: the first row's

    def doc(size: object) -> str:
        """A row's width as the programs' comments give it (``3*STEPS``)."""
        return dim_code(size).replace("steps", "STEPS").strip("()")

    steps = net.output_steps[0]
    common = {
        "spec_hash": spec_hash(net, dtype),
        "op_summary": [],
        "prefix": result.prefix,
        "real": f"{result.prefix}_real",
        # a tagger's programs read a label per step and call the kernels on one-hot rows
        "labels": result.labels and not net.step_labels,
        "length": length,
        "n_in": net.n_in,
        "n_out": net.n_out,
        "n_in_doc": doc(net.n_in),
        "n_out_doc": doc(net.n_out),
        "many_outputs": naming.has_length(net.n_out) or int(net.n_out) > 1,
        "several_outputs": net.several_outputs,  # no one accuracy to print
        # the outputs of one row of targets: all of them, or a sequence output's per step
        "step_width": int(net.output_shapes[0][-1]),
        "many_steps": net.has_sequence_output,
        # a tagger's CSV rows: one class label per step (the train program stores them one-hot)
        "step_labels": doc(steps) if not net.several_outputs and net.has_sequence_output
        and net.loss.takes_labels else 0,
        "fmt": "%.9g" if dtype == "float32" else "%.17g",
        "optimizer": result.optimizer,
        "n_state": result.n_state,
        "batch": 32,
        "statuses": STATUSES,
        "dropout": result.dropout,
        "starts": _start_values(net),
        "fans": _start_fans(net),
    }
    files = {"main.c": render("c/main.c.jinja", **common), "Makefile": render("c/Makefile.jinja", **common)}
    if result.optimizer is not None:
        files["train_main.c"] = render("c/train_main.c.jinja", **common)
    return files


#: the sequences' length in the C harness of a network whose length is given at each call
HARNESS_STEPS = 5


def _at_harness_length(size: object) -> int:
    """A column or size at the harness's sequence length (:data:`HARNESS_STEPS`)."""
    return int(sp.sympify(size, strict=True).subs(naming.T, HARNESS_STEPS))


def emit_c_test_harness(net: Network, result: CEmitResult, dtype: str) -> str:
    """``test_main.c``: gradient check by central differences in C, and the bad-argument cases."""
    at = _at_harness_length
    return render(
        "c/test_main.c.jinja",
        spec_hash=spec_hash(net, dtype),
        op_summary=[],
        prefix=result.prefix,
        real=f"{result.prefix}_real",
        labels=result.labels,
        # a sequence output's labels, one per step: per row (the harness's length) and their classes
        step_labels=at(net.output_steps[0]) if net.step_labels else 0,
        step_classes=int(net.output_shapes[0][-1]) if net.step_labels else 0,
        target_kind=C_TARGET_KIND[net.loss.targets],
        # several outputs, or a sequence output: each output's columns filled as its own loss
        # declares, k at a time (a sequence's steps; k = its width for features)
        target_blocks=[(at(lo), at(hi), C_TARGET_KIND[loss.targets], int(shape[-1]))
                       for loss, (lo, hi), shape in zip(net.losses, net.column_blocks(net.output_widths),
                                                        net.output_shapes)]
        if net.several_outputs or net.has_sequence_output else [],
        # a run-time length: the harness's sequences have HARNESS_STEPS steps
        length=net.has_run_time_length,
        steps=HARNESS_STEPS,
        optimizer=result.optimizer,
        n_state=result.n_state,
        dropout=result.dropout,
        fd_step="1e-3" if dtype == "float32" else "1e-6",
        n_in=at(net.n_in),
        # index inputs get valid token ids (random reals would be refused with SYMNN_ERR_INDEX),
        # so the gradient check runs through the gathers; the NaN check uses a real column
        index_blocks=[b._replace(lo=at(b.lo), hi=at(b.hi)) for b in index_blocks(net)],
        # masks of a sequence output's loss get ones (every step real); zeros must be refused
        mask_blocks=[b._replace(lo=at(b.lo), hi=at(b.hi)) for b in loss_mask_blocks(net)],
        real_column=_real_column(net, at),
        padding_ranges=_padding_ranges(net),
        # a buffer starts at its layer's value plus up to 0.5 (a positive running variance); "NAN":
        # a parameter, drawn at random
        buffer_starts=[start if name in net.buffers else "NAN"
                       for name, start in zip(net.param_shapes(), _start_values(net))] if net.buffers else [],
    )


def _padding_ranges(net: Network) -> list[tuple[int, int]]:
    """[lo, hi) in the flat parameters of each embedding's padding row: its gradient is zero by
    declaration, so the harness's difference check expects exactly zero there."""
    rows = padding_rows(net)
    return [(p["offset"] + rows[p["name"]] * p["cols"], p["offset"] + (rows[p["name"]] + 1) * p["cols"])
            for p in _params_table(net) if p["name"] in rows]


def _real_column(net: Network, at=int) -> int | None:
    """A column of the packed X that holds reals, not an index input's ids: the harness puts
    its NaN there (in an index column NaN is SYMNN_ERR_INDEX). The middle column, as always,
    when it is real; else the first real one; None when every input is indices. ``at``: a size
    at the harness's sequence length."""
    taken = {c for block in index_blocks(net) for c in range(at(block.lo), at(block.hi))}
    middle = at(net.n_in) // 2
    if middle not in taken:
        return middle
    return next((c for c in range(at(net.n_in)) if c not in taken), None)


def _train_context(optimizer: Optimizer, printer, real: str, n_params: int) -> dict:
    """The optimiser's formulas printed for one element of the flat parameter vector."""
    from ...optim import split_invariant, update_program
    from ...optim import t as step

    steps, _ = update_program(optimizer)
    hoisted, temps, reduced = split_invariant(steps)
    names = {"p", "g", "t", *optimizer.state} | {str(x) for x, _ in [*hoisted, *temps, *reduced]}
    printer.accessors = {name: name for name in names}
    ctx = train_context(optimizer, printer)
    dtype = printer.dtype
    ctx["clip_value_c"] = c_literal(optimizer.clip_value, dtype) if optimizer.clip_value else None
    ctx["clip_norm_c"] = c_literal(optimizer.clip_norm, dtype) if optimizer.clip_norm else None
    ctx["eps_c"] = c_literal(1e-6, dtype)
    ctx["uses_t"] = any(step in expr.free_symbols for _, expr in [*hoisted, *temps, *reduced])
    return ctx


def _doc(kname: str, labels: bool, label_range: str) -> str:
    return {
        "forward": "network output yhat (n x N_OUT)",
        "loss": "mean loss plus penalties",
        "loss_and_grad": "loss and its gradient with respect to every parameter",
        "train_step": "one optimiser step in place on params and state; returns the loss before it",
        "train_gradient": "the loss and gradient a train step takes (dropout masks from seed and step)",
        "loss_and_grad_train": "loss and gradient with dropout masks",
    }[kname] + (f"; int32_t labels in {label_range}" if labels else "")


#: the header's comment on the stepped kernels (their labels twins add one line)
_STEPPED_DOCS = {
    "train_gradient": ["*loss and grad[N_PARAMS] of the training program, as train_step takes them (dropout masks",
                       "from seed and step; a batch norm's new running statistics in its buffers' places); nothing",
                       "is updated. step counts from 1; a non-finite loss or gradient returns SYMNN_ERR_NONFINITE."],
    "train_step": ["One optimiser step in place: params[N_PARAMS] and state[N_STATE x N_PARAMS] are updated",
                   "(state starts at zero); step counts from 1 (step < 1 returns SYMNN_ERR_ARG).",
                   "*loss is the loss before the update."],
}


def _proto_doc(kname: str, labels: bool, label_range: str, masks: str = "") -> list[str]:
    """A public entry's comment; ``masks``: the columns of X that mask a sequence output's loss."""
    masked = [f"The loss averages over the steps the masks {masks} hold; masks summing to 0 return "
              "SYMNN_ERR_EMPTY."] if masks and kname != "forward" else []
    if kname in _STEPPED_DOCS:
        return (_STEPPED_DOCS[kname] + ([f"Targets are int32_t class labels in {label_range}."] if labels else [])
                + masked)
    if kname == "forward":
        return ["yhat[n x N_OUT] = network(X[n x N_IN]). n = 0 is valid and writes nothing."]
    lines = ["*loss = mean loss plus penalties"
             + (", grad[N_PARAMS] = its gradient, laid out like params." if kname == "loss_and_grad" else ".")]
    if labels:
        lines.append(f"Targets are int32_t class labels in {label_range}; a bad one returns SYMNN_ERR_LABEL "
                     "with its row in *bad_row (if bad_row is not NULL).")
    lines.append("n = 0 returns SYMNN_ERR_EMPTY.")
    return lines + masked


def _cdef(common: dict, protos: list[dict], real: str) -> str:
    """Declarations for cffi's ``cdef``: the typedef, integer macros and prototypes."""
    lines = [f"typedef {common['ctype']} {real};"]
    p = common["prefix"].upper()
    for name, code, _ in STATUSES:
        lines.append(f"#define {name} {code}")
    macros = {"n_params": common["n_params"], "n_state": common["n_state"], "work_per_row": common["work_per_row"],
              "work_fixed": common["work_fixed"]}
    if common["length"]:  # a run-time length: rows a*steps + b
        macros.update(n_in_per_step=common["in_form"][0], n_in_fixed=common["in_form"][1],
                      n_out_per_step=common["out_form"][0], n_out_fixed=common["out_form"][1],
                      work_per_row_step=common["work_per_step"])
    else:
        macros.update(n_in=common["n_in"], n_out=common["n_out"])
    for key in ("n_in", "n_out", "n_in_per_step", "n_in_fixed", "n_out_per_step", "n_out_fixed", "n_params",
                "n_state", "work_per_row_step", "work_per_row", "work_fixed"):
        if key in macros:
            lines.append(f"#define {p}_{key.upper()} {macros[key]}")
    lines += [f"{proto['decl']};" for proto in protos]
    return "\n".join(lines) + "\n"
