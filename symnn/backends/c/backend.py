"""The C backend's entry in :mod:`symnn.backends.registry`: emit ``NAME.h``/``NAME.c`` (and
the example ``main.c``, ``train_main.c``, ``Makefile``), load through a cffi build into the
locked module cache (several networks share one compiler run)."""

from __future__ import annotations

from typing import Sequence

from ...declare import Network
from ...kernel import Kernel
from ...optim import Optimizer
from ...program import Program
from ..registry import Backend
from .emit import emit_c, emit_c_example


def files(net: Network, program: Program, dtype: str, optimizer: Optimizer | None,
          train_prog: Program | None, example: bool) -> dict[str, str]:
    result = emit_c(net, program, dtype, optimizer, train_prog)
    out = dict(result.files)
    if example:
        out.update(emit_c_example(net, result, dtype))
    return out


def load(nets: Sequence[Network], programs: Sequence[tuple[Program, Program | None]], dtype: str,
         check_finite: bool, optimizer: Optimizer | None, blas: bool, openmp: bool) -> list[Kernel]:
    """Emit every network's C and build them into one extension (one compiler run)."""
    from ...build import build
    from .wrapper import CKernelModule

    results = [emit_c(n, program, dtype, optimizer, train_prog) for n, (program, train_prog) in zip(nets, programs)]
    sources: dict[str, str] = {}
    cdef: list[str] = []
    for r in results:
        sources.update(r.files)
        cdef += [line for line in r.cdef.splitlines() if line not in cdef]  # shared status codes once
    prefix = results[0].prefix if len(results) == 1 else "group_" + "_".join(r.prefix for r in results)[:40]
    ext = build(prefix, sources, "\n".join(cdef) + "\n", blas=blas, openmp=openmp)
    n_state = len(optimizer.state) if optimizer is not None else None
    return [Kernel(n, CKernelModule(ext, r.prefix, dtype, n.param_layout(), r.labels, n_state=n_state,
                                    dropout=n.has_dropout),
                   "c", dtype, r.source, check_finite=check_finite, optimizer=optimizer,
                   build={"blas": blas, "openmp": openmp}) for n, r in zip(nets, results)]


C = Backend("c", ".c", files, load)
