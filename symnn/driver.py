"""The pipeline, one line per stage: declare -> IR -> derive -> simplify -> lower/emit -> build -> load."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Sequence

from .declare import Network
from .embedding import check_index_precision
from .backends import registry
from .emit import check_backend, require_concrete, write_atomic
from .errors import CompilerNotFoundError, ConfigError, SpecTypeError
from .graph import build_forward
from .kernel import Kernel
from .optim import Optimizer
from .optim import optimizer as optimizer_by_name
from .simplify.pipeline import Simplified, simplify


def _require_network(net: object) -> Network:
    if not isinstance(net, Network):
        raise SpecTypeError(f"expected an sn.Network, got {type(net).__name__}")
    return net


def derive_program(net: Network, training: bool = False) -> Simplified:
    """Forward graph, chain rule and every simplification pass (``training``: with dropout).

    A network is an immutable value, so its program is remembered: compiling the same network
    for the other backend or dtype (gradcheck's float64 reference of a float32 kernel, a test
    comparing backends) derives and simplifies it once."""
    return _derive(_require_network(net), training)


@functools.lru_cache(maxsize=64)
def _derive(net: Network, training: bool) -> Simplified:
    return simplify(build_forward(net, training=training))


def _optimizer(opt: object) -> Optimizer | None:
    if opt is None or isinstance(opt, Optimizer):
        return opt
    if isinstance(opt, str):
        return optimizer_by_name(opt)
    raise SpecTypeError(f"optimizer must be an sn.Optimizer (e.g. sn.Adam(lr=1e-3)), a name or None, "
                        f"got {type(opt).__name__}")


def _train_program(net: Network, opt: Optimizer | None):
    """The training program (dropout masks as inputs, the buffers' new values in their
    gradients' places) when a train step needs one."""
    needed = opt is not None and (net.has_dropout or net.has_buffers)
    return derive_program(net, training=True).program if needed else None


def check_length(net: Network, backend: str) -> None:
    """A network whose sequences' length is given at each call (``sn.Input(None, F)``) needs a
    backend whose kernels take it then: refused, before any work, by one whose kernels fix it."""
    if net.has_run_time_length and not registry.get(backend).runs_any_length:
        raise ConfigError(f"network {net.name!r} reads sequences of run-time length (sn.Input(None, ...)); the "
                          f"{backend} backend's kernels fix every size but the batch when they are emitted: "
                          "give the length (sn.Input(T, F), with a mask for shorter sequences), or use the "
                          "numpy backend, whose kernels take any T")


def emit_files(net: Network, backend: str = "numpy", dtype: str = "float64",
               example: bool = False, optimizer: Optimizer | str | None = None) -> dict[str, str]:
    """File name -> text of everything ``emit`` would write (nothing is written).

    NumPy: ``NAME.py``. C: ``NAME.h`` and ``NAME.c``, plus ``main.c`` and a ``Makefile``
    with ``example=True``.
    """
    check_backend(backend, dtype)
    require_concrete(_require_network(net))
    check_index_precision(net, dtype)
    check_length(net, backend)
    opt = _optimizer(optimizer)
    return registry.get(backend).files(net, derive_program(net).program, dtype, opt,
                                       _train_program(net, opt), example)


def emit_source(net: Network, backend: str = "numpy", dtype: str = "float64",
                optimizer: Optimizer | str | None = None) -> str:
    """The text of the emitted module: the ``.py`` for NumPy, the ``.c`` for C."""
    files = emit_files(net, backend, dtype, optimizer=optimizer)
    suffix = registry.get(backend).source_suffix
    return next(text for name, text in files.items() if name.endswith(suffix))


def _load(backend: str, nets: Sequence[Network], dtype: str, check_finite: bool, opt: Optimizer | None,
          blas: bool = False, openmp: bool = False, flush_denormals: bool = False) -> list[Kernel]:
    """Kernels of ``nets`` from one backend (the C backend builds them into one extension)."""
    for net in nets:
        check_index_precision(net, dtype)
        check_length(net, backend)
    if not isinstance(flush_denormals, bool):
        raise ConfigError(f"flush_denormals must be True or False, not {flush_denormals!r}")
    if flush_denormals and not registry.get(backend).flushes_denormals:
        raise ConfigError(f"flush_denormals=True is for the C backend: the {backend} backend has no control of "
                          "the CPU's handling of subnormal numbers")
    programs = [(derive_program(n).program, _train_program(n, opt)) for n in nets]
    return registry.get(backend).load(nets, programs, dtype, check_finite, opt, blas, openmp, flush_denormals)


def compile_many(nets: Sequence[Network], backend: str = "c", dtype: str = "float64", *,
                 check_finite: bool = True, blas: bool = False, openmp: bool = False,
                 flush_denormals: bool = False) -> list[Kernel]:
    """Kernels for several networks; with ``backend="c"`` they share one compiled module (one
    compiler run instead of one per network, for test suites and model zoos). The networks
    need distinct names: every C symbol is prefixed with its network's name."""
    check_backend(backend, dtype)
    nets = [_require_network(n) for n in nets]
    for n in nets:
        require_concrete(n)
    if not nets:
        raise ConfigError("compile_many needs at least one network")
    names = [n.name for n in nets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"compile_many needs distinct network names; repeated: {', '.join(dupes)}")
    return _load(backend, nets, dtype, check_finite, None, *_threading(blas, openmp), flush_denormals)


def _threading(blas: object, openmp: object) -> tuple[bool, bool]:
    for name, value in (("blas", blas), ("openmp", openmp)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, not {value!r}")
    if blas and openmp:
        raise ConfigError("blas=True and openmp=True exclude each other: with blas the large products "
                          "go to OpenBLAS, which has its own threads; choose one")
    return blas, openmp


def compile(net: Network, backend: str = "numpy", dtype: str = "float64", *,
            check_finite: bool = True, optimizer: Optimizer | str | None = None,
            blas: bool = False, openmp: bool = False, flush_denormals: bool = False) -> Kernel:  # noqa: A001
    """Derive, simplify, emit and load the kernels of ``net``.

    ``backend="c"`` compiles the emitted C through cffi into the module cache (see
    :mod:`symnn.build`); ``backend="auto"`` does the same but falls back to NumPy, with a
    warning, when no C compiler is installed. With ``optimizer`` (``sn.Adam(...)``, or a name
    for the defaults) the kernel also has ``train_step``, the optimiser's formulas emitted as
    code. ``blas=True`` (C only) sends the products of at least 32,768 multiply-adds to the
    OpenBLAS that NumPy's wheels bundle, in this process only; emitted files stay standalone
    C99 unless built with ``-DSYMNN_BLAS`` (see docs/c_backend.md). ``openmp=True`` (C only)
    builds with ``-fopenmp``: products of at least 262,144 multiply-adds split their rows over
    the OpenMP threads (``OMP_NUM_THREADS``, or threadpoolctl), with results that do not depend
    on the thread count. ``flush_denormals=True`` (C only) runs the kernels with subnormal numbers
    read and written as zero (x86's DAZ/FTZ, set on entry and restored on return; emitted files
    do the same built with ``-DSYMNN_FLUSH_DENORMALS``): values below 1.2e-38 (float32) or
    2.2e-308 (float64) become 0, which a float32 recurrence over hundreds of steps, whose
    backward cotangents decay there, runs several times faster for.

    Example:
        >>> import numpy as np, symnn as sn
        >>> net = sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 1, "sigmoid")], loss="bce")
        >>> k = sn.compile(net)
        >>> k.forward(net.init_params(seed=0), np.zeros((5, 2))).shape
        (5, 1)
    """
    check_backend(backend, dtype, allow_auto=True)
    require_concrete(_require_network(net))
    opt = _optimizer(optimizer)
    blas, openmp = _threading(blas, openmp)
    if backend != "auto":
        return _load(backend, [net], dtype, check_finite, opt, blas, openmp, flush_denormals)[0]
    first, *rest = [b for b in registry.AUTO_ORDER if registry.get(b).runs_any_length or not net.has_run_time_length]
    try:
        return _load(first, [net], dtype, check_finite, opt, blas, openmp, flush_denormals)[0]
    except CompilerNotFoundError as exc:
        warnings.warn(f"backend='auto': {exc}; using the {rest[0]} backend", RuntimeWarning, stacklevel=2)
        return _load(rest[0], [net], dtype, check_finite, opt)[0]


def emit(net: Network, path: str | Path, backend: str = "numpy", dtype: str = "float64",
         optimizer: Optimizer | str | None = None) -> list[Path]:
    """Write the standalone kernels of ``net`` under ``path``; return the written paths.

    NumPy: ``path`` ending in ``.py`` names the file; otherwise it is a directory that
    receives ``<network name>.py``. C: ``path`` is a directory that receives ``NAME.h``,
    ``NAME.c``, an example ``main.c`` and a ``Makefile`` (``make`` builds ``NAME_demo``).
    Files are written atomically.
    """
    files = emit_files(net, backend, dtype, example=True, optimizer=optimizer)
    target = Path(path)
    if len(files) == 1 and target.suffix == registry.get(backend).source_suffix:  # a file name
        (text,) = files.values()
        write_atomic(target, text)
        return [target]
    written = []
    for name, text in files.items():
        write_atomic(target / name, text)
        written.append(target / name)
    return written
