"""The C backend's entry in :mod:`symnn.backends.registry`: emit ``NAME.h``/``NAME.c`` (and
the example ``main.c``, ``train_main.c``, ``Makefile``), load through a cffi build into the
locked module cache (several networks share one build)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ... import naming
from ...capabilities import Targets
from ...declare import Network
from ...kernel import Kernel
from ...optim import Optimizer
from ...program import Program
from ..registry import Backend
from .emit import CEmitResult, emit_c, emit_c_example


def files(net: Network, program: Program, dtype: str, optimizer: Optimizer | None,
          train_prog: Program | None, example: bool) -> dict[str, str]:
    result = emit_c(net, program, dtype, optimizer, train_prog)
    out = dict(result.files)
    if example:
        out.update(emit_c_example(net, result, dtype))
    return out


def load(nets: Sequence[Network], programs: Sequence[tuple[Program, Program | None]], dtype: str,
         check_finite: bool, optimizer: Optimizer | None, blas: bool, openmp: bool,
         flush_denormals: bool = False) -> list[Kernel]:
    """Emit every network's C and build them into one extension (the kernels of all and cffi's
    glue compiled at the same time, then linked)."""
    results = [emit_c(n, program, dtype, optimizer, train_prog) for n, (program, train_prog) in zip(nets, programs)]
    return _build(nets, results, dtype, check_finite, optimizer, blas, openmp, flush_denormals)


def rebuild(net: Network, emitted: object, dtype: str, check_finite: bool, optimizer: Optimizer | None,
            blas: bool = False, openmp: bool = False, flush_denormals: bool = False) -> Kernel:
    """The kernel of emitted C (what a pickled kernel carries): built through the module cache
    (a hit where this machine built it before), with no derivation."""
    assert isinstance(emitted, CEmitResult)
    return _build([net], [emitted], dtype, check_finite, optimizer, blas, openmp, flush_denormals)[0]


def _build(nets: Sequence[Network], results: Sequence[CEmitResult], dtype: str, check_finite: bool,
           optimizer: Optimizer | None, blas: bool, openmp: bool, flush_denormals: bool) -> list[Kernel]:
    from ...build import build
    from .wrapper import CKernelModule

    sources: dict[str, str] = {}
    cdef: list[str] = []
    net_of = {r.prefix: n for n, r in zip(nets, results)}
    for r in results:
        sources.update(r.files)
        cdef += [line for line in r.cdef.splitlines() if line not in cdef]  # shared status codes once
        # the Python API's checks in C, built into the extension only (not the emitted files)
        sources[f"{r.prefix}__pycheck.c"], decls = _pycheck(net_of[r.prefix], r, dtype, optimizer)
        # their declarations for cffi's glue, which is compiled apart and sees headers only
        guard = f"{r.prefix.upper()}__PYCHECK_H"
        sources[f"{r.prefix}__pycheck.h"] = (f'#ifndef {guard}\n#define {guard}\n#include "{r.prefix}.h"\n'
                                             + "\n".join(decls) + "\n#endif\n")
        cdef += decls
    prefix = results[0].prefix if len(results) == 1 else "group_" + "_".join(r.prefix for r in results)[:40]
    ext = build(prefix, sources, "\n".join(cdef) + "\n", blas=blas, openmp=openmp, flush_denormals=flush_denormals)
    n_state = len(optimizer.state) if optimizer is not None else None
    kernels = []
    for n, r in zip(nets, results):
        kernel = Kernel(n, CKernelModule(ext, r.prefix, dtype, n.param_layout(), r.labels, n_state=n_state,
                                         dropout=n.has_dropout, sample_shape=_image_shape(n),
                                         label_rows=naming.length_form(n.output_steps[0]) if n.step_labels else (0, 1)),
                        "c", dtype, r.source, check_finite=check_finite, optimizer=optimizer,
                        build={"blas": blas, "openmp": openmp, "flush_denormals": flush_denormals})
        kernel.emitted = r
        kernels.append(kernel)
    return kernels




def _label_rows(net: Network) -> str:
    """The labels of a row as C: 1, or a sequence output's steps (``8``, or ``steps`` for a
    run-time length)."""
    if not net.step_labels:
        return "1"
    a, b = naming.length_form(net.output_steps[0])
    return "steps" if (a, b) == (1, 0) else str(b)


def _image_shape(net: Network) -> tuple[int, ...] | None:
    """The sample shape of a network's one input, when it is an image or a sequence (rank > 1)."""
    shapes = net.input_shapes
    if len(shapes) != 1 or len(shapes[0][1]) < 2:
        return None
    # a sequence of run-time length (T, F): (None, F), X (n, T, F) for any T
    return tuple(None if naming.has_length(d) else int(d) for d in shapes[0][1])


#: what the extension's C checks of a loss's targets (templates/c/_pycheck.c.jinja) take as kind
_TARGET_CHECK_KIND = {Targets.REAL: 0, Targets.PROBABILITY: 1, Targets.ONE_HOT_OR_LABELS: 2}


def _pycheck(net: Network, result, dtype: str, optimizer: Optimizer | None) -> tuple[str, list[str]]:
    """The extension-only C entries that check a call's arguments and run its kernel
    (templates/c/_pycheck.c.jinja), and their cffi declarations."""
    from ...render import render

    prefix, real = result.prefix, f"{result.prefix}_real"
    # (lo, hi, kind, K): a block's rows of K entries each (a sequence output's steps) checked alike
    # kind 3: a sequence output's class rows, where a row of zeros is a padded step; columns as
    # (a, b) for a*steps + b (a run-time sequence length's multiples; a = 0 for fixed sizes)
    blocks = [(naming.length_form(lo), naming.length_form(hi),
               3 if len(shape) == 2 and loss.takes_labels else _TARGET_CHECK_KIND[loss.targets], int(shape[-1]))
              for loss, (lo, hi), shape in zip(net.losses or (net.loss,), net.column_blocks(net.output_widths),
                                               net.output_shapes)]
    real_bits = 8 * np.dtype(dtype).itemsize  # the width of the float the finiteness test reads as bits
    source = render("c/_pycheck.c.jinja", prefix=prefix, real=real, real_bits=real_bits, blocks=blocks,
                    labels=result.labels, length=net.has_run_time_length, in_form=naming.length_form(net.n_in),
                    out_form=naming.length_form(net.n_out), n_out=naming.length_form(net.n_out)[1],
                    # labels per row (a sequence output's: one per step) and the classes of each
                    step_labels=net.step_labels, label_rows=_label_rows(net),
                    label_classes=int(net.output_shapes[0][-1]),
                    n_params=net.param_layout()[-1][2],
                    train=optimizer is not None, n_state=bool(optimizer is not None and optimizer.state),
                    dropout=net.has_dropout)
    decls = [f"int {prefix}__py_run(int, int, const {real} *, const {real} *, const void *, int, int32_t *, "
             f"ptrdiff_t, ptrdiff_t, {real} *, {real} *, {real} *, size_t);"]
    if optimizer is not None:
        decls.append(f"int {prefix}__py_train_step(int, {real} *, {real} *, const {real} *, const void *, int, "
                     f"int32_t *, ptrdiff_t, ptrdiff_t, int64_t, uint64_t, {real} *, {real} *, size_t);")
    return source, decls


C = Backend("c", ".c", files, load, flushes_denormals=True, rebuild=rebuild, runs_any_length=True)
