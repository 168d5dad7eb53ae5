"""The backends, by name: what the driver and the CLI read instead of branching on names.

A backend is a package ``symnn/backends/<name>/`` (printer, lowering, emission, loading) that
describes itself with one :class:`Backend` and is listed here. Adding one is the recipe in
``symnn/backends/README.md``: nothing in the driver or the CLI changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..declare import Network
    from ..kernel import Kernel
    from ..optim import Optimizer
    from ..program import Program

#: (network, program, dtype, optimizer, training program, with the example files) -> files
Files = Callable[["Network", "Program", str, "Optimizer | None", "Program | None", bool], dict[str, str]]
#: (networks, their (program, training program), dtype, check_finite, optimizer, blas, openmp,
#: flush_denormals) -> kernels
Load = Callable[[Sequence["Network"], Sequence[tuple["Program", "Program | None"]], str, bool,
                 "Optimizer | None", bool, bool, bool], list["Kernel"]]
#: (network, a kernel's ``emitted`` source, dtype, check_finite, optimizer, blas, openmp,
#: flush_denormals) -> the kernel again, from its emitted source alone (no derivation)
Rebuild = Callable[["Network", object, str, bool, "Optimizer | None", bool, bool, bool], "Kernel"]


@dataclass(frozen=True)
class Backend:
    """One backend: its name (``sn.compile(..., backend=name)``), the suffix of the file
    ``sn.emit_source`` returns, how it emits files and how it loads kernels; how it loads a
    kernel again from the source a pickled kernel carries (``rebuild``: None where it cannot,
    and the kernel is then compiled again from its network); whether its kernels can run with
    subnormal numbers as zero (``sn.compile(..., flush_denormals=True)``); whether its kernels
    take sequences of a length fixed only when they are called (``sn.Input(None, F)``)."""

    name: str
    source_suffix: str
    files: Files
    load: Load
    flushes_denormals: bool = False
    rebuild: Rebuild | None = None
    runs_any_length: bool = False


#: the order ``backend="auto"`` tries them in: the first that can load wins
AUTO_ORDER = ("c", "numpy")

_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """List a backend (a third party's too) under its name."""
    _BACKENDS[backend.name] = backend
    return backend


def _builtins() -> None:
    if not all(name in _BACKENDS for name in BUILTIN):
        from .c.backend import C
        from .numpy.backend import NUMPY

        register(NUMPY)
        register(C)


#: the built-in backends' names, known without importing them (the CLI's choices)
BUILTIN = ("numpy", "c")


def names() -> tuple[str, ...]:
    """Every backend's name, the built-ins first (imports no backend)."""
    return tuple(dict.fromkeys(BUILTIN + tuple(_BACKENDS)))


def get(name: str) -> Backend:
    """The backend called ``name``; ConfigError naming the choices otherwise."""
    _builtins()
    backend = _BACKENDS.get(name) if isinstance(name, str) else None
    if backend is None:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(names())}")
    return backend
