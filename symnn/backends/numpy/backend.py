"""The NumPy backend's entry in :mod:`symnn.backends.registry`: emit ``NAME.py``, load it by
executing the emitted source in a fresh module (no file, no compiler)."""

from __future__ import annotations

import builtins
import types
from typing import Sequence

from ...declare import Network
from ...kernel import Kernel
from ...optim import Optimizer
from ...program import Program
from ..registry import Backend
from .emit import emit_numpy


def files(net: Network, program: Program, dtype: str, optimizer: Optimizer | None,
          train_prog: Program | None, example: bool) -> dict[str, str]:
    return {f"{net.name}.py": emit_numpy(net, program, dtype, optimizer, train_prog).source}


def load(nets: Sequence[Network], programs: Sequence[tuple[Program, Program | None]], dtype: str,
         check_finite: bool, optimizer: Optimizer | None, blas: bool, openmp: bool,
         flush_denormals: bool = False) -> list[Kernel]:
    return [rebuild(net, emit_numpy(net, program, dtype, optimizer, train_prog).source, dtype, check_finite, optimizer)
            for net, (program, train_prog) in zip(nets, programs)]


def rebuild(net: Network, source: object, dtype: str, check_finite: bool, optimizer: Optimizer | None,
            blas: bool = False, openmp: bool = False, flush_denormals: bool = False) -> Kernel:
    """The kernel of an emitted module's source (what a pickled kernel carries)."""
    assert isinstance(source, str)
    module = types.ModuleType(f"symnn_kernel_{net.name}")
    module.__file__ = f"<symnn {net.name} numpy {dtype}>"
    exec(builtins.compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our emitted code
    kernel = Kernel(net, module, "numpy", dtype, source, check_finite=check_finite, optimizer=optimizer)
    kernel.emitted = source
    return kernel


NUMPY = Backend("numpy", ".py", files, load, rebuild=rebuild, runs_any_length=True)
