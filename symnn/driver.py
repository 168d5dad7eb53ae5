"""The pipeline, one line per stage: declare -> IR -> derive -> simplify -> lower/emit -> load."""

from __future__ import annotations

import builtins
import types
from pathlib import Path

from .declare import Network
from .emit import check_backend, emit_numpy, require_concrete, write_atomic
from .errors import SpecTypeError
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


def emit_source(net: Network, backend: str = "numpy", dtype: str = "float64") -> str:
    """The text of the emitted module (nothing is written)."""
    check_backend(backend, dtype)
    require_concrete(_require_network(net))
    return emit_numpy(net, derive_program(net).program, dtype).source


def compile(net: Network, backend: str = "numpy", dtype: str = "float64", *,
            check_finite: bool = True) -> Kernel:  # noqa: A001 - public API name
    """Derive, simplify, emit and load the kernels of ``net``.

    Example:
        >>> import numpy as np, symnn as sn
        >>> net = sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 1, "sigmoid")], loss="bce")
        >>> k = sn.compile(net)
        >>> k.forward(net.init_params(seed=0), np.zeros((5, 2))).shape
        (5, 1)
    """
    source = emit_source(net, backend, dtype)
    module = types.ModuleType(f"symnn_kernel_{net.name}")
    module.__file__ = f"<symnn {net.name} {backend} {dtype}>"
    exec(builtins.compile(source, module.__file__, "exec"), module.__dict__)
    return Kernel(net, module, backend, dtype, source, check_finite=check_finite)


def emit(net: Network, path: str | Path, backend: str = "numpy", dtype: str = "float64") -> list[Path]:
    """Write the standalone kernels of ``net`` under ``path``; return the written paths.

    ``path`` ending in ``.py`` names the file; otherwise it is a directory that receives
    ``<network name>.py``. Files are written atomically.
    """
    source = emit_source(net, backend, dtype)
    target = Path(path)
    if target.suffix != ".py":
        target = target / f"{net.name}.py"
    write_atomic(target, source)
    return [target]
