"""The pipeline, one line per stage: declare -> IR -> derive -> simplify -> lower/emit -> build -> load."""

from __future__ import annotations

import builtins
import types
import warnings
from pathlib import Path

from .declare import Network
from .emit import check_backend, emit_numpy, require_concrete, write_atomic
from .errors import CompilerNotFoundError, SpecTypeError
from .graph import build_forward
from .kernel import Kernel
from .simplify.pipeline import Simplified, simplify


def _require_network(net: object) -> Network:
    if not isinstance(net, Network):
        raise SpecTypeError(f"expected an sn.Network, got {type(net).__name__}")
    return net


def derive_program(net: Network) -> Simplified:
    """Forward graph, chain rule and every simplification pass."""
    return simplify(build_forward(_require_network(net)))


def emit_files(net: Network, backend: str = "numpy", dtype: str = "float64",
               example: bool = False) -> dict[str, str]:
    """File name -> text of everything ``emit`` would write (nothing is written).

    NumPy: ``NAME.py``. C: ``NAME.h`` and ``NAME.c``, plus ``main.c`` and a ``Makefile``
    with ``example=True``.
    """
    check_backend(backend, dtype)
    require_concrete(_require_network(net))
    program = derive_program(net).program
    if backend == "numpy":
        return {f"{net.name}.py": emit_numpy(net, program, dtype).source}
    from .emit_c import emit_c, emit_c_example

    result = emit_c(net, program, dtype)
    files = dict(result.files)
    if example:
        files.update(emit_c_example(net, result, dtype))
    return files


def emit_source(net: Network, backend: str = "numpy", dtype: str = "float64") -> str:
    """The text of the emitted module: the ``.py`` for NumPy, the ``.c`` for C."""
    files = emit_files(net, backend, dtype)
    suffix = ".py" if backend == "numpy" else ".c"
    return next(text for name, text in files.items() if name.endswith(suffix))


def _load_numpy(net: Network, dtype: str, check_finite: bool) -> Kernel:
    source = emit_source(net, "numpy", dtype)
    module = types.ModuleType(f"symnn_kernel_{net.name}")
    module.__file__ = f"<symnn {net.name} numpy {dtype}>"
    exec(builtins.compile(source, module.__file__, "exec"), module.__dict__)
    return Kernel(net, module, "numpy", dtype, source, check_finite=check_finite)


def _load_c(net: Network, dtype: str, check_finite: bool) -> Kernel:
    from .backends.c.wrapper import CKernelModule
    from .build import build
    from .emit_c import emit_c

    result = emit_c(net, derive_program(net).program, dtype)
    ext = build(result.prefix, result.files, result.cdef)
    module = CKernelModule(ext, result.prefix, dtype, net.param_shapes(), result.labels)
    return Kernel(net, module, "c", dtype, result.source, check_finite=check_finite)


def compile(net: Network, backend: str = "numpy", dtype: str = "float64", *,
            check_finite: bool = True) -> Kernel:  # noqa: A001 - public API name
    """Derive, simplify, emit and load the kernels of ``net``.

    ``backend="c"`` compiles the emitted C through cffi into the module cache (see
    :mod:`symnn.build`); ``backend="auto"`` does the same but falls back to NumPy, with a
    warning, when no C compiler is installed.

    Example:
        >>> import numpy as np, symnn as sn
        >>> net = sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 1, "sigmoid")], loss="bce")
        >>> k = sn.compile(net)
        >>> k.forward(net.init_params(seed=0), np.zeros((5, 2))).shape
        (5, 1)
    """
    check_backend(backend, dtype, allow_auto=True)
    require_concrete(_require_network(net))
    if backend == "numpy":
        return _load_numpy(net, dtype, check_finite)
    if backend == "auto":
        try:
            return _load_c(net, dtype, check_finite)
        except CompilerNotFoundError as exc:
            warnings.warn(f"backend='auto': {exc}; using the NumPy backend", RuntimeWarning, stacklevel=2)
            return _load_numpy(net, dtype, check_finite)
    return _load_c(net, dtype, check_finite)


def emit(net: Network, path: str | Path, backend: str = "numpy", dtype: str = "float64") -> list[Path]:
    """Write the standalone kernels of ``net`` under ``path``; return the written paths.

    NumPy: ``path`` ending in ``.py`` names the file; otherwise it is a directory that
    receives ``<network name>.py``. C: ``path`` is a directory that receives ``NAME.h``,
    ``NAME.c``, an example ``main.c`` and a ``Makefile`` (``make`` builds ``NAME_demo``).
    Files are written atomically.
    """
    files = emit_files(net, backend, dtype, example=True)
    target = Path(path)
    if backend == "numpy" and target.suffix == ".py":
        (text,) = files.values()
        write_atomic(target, text)
        return [target]
    written = []
    for name, text in files.items():
        write_atomic(target / name, text)
        written.append(target / name)
    return written
