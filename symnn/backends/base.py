"""What a backend provides: a name, its template directory and a printer factory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendConfig:
    """Fields every backend config has.

    Attributes:
        name: backend name used by ``sn.compile(..., backend=name)``.
        template_dir: directory under ``templates/`` holding this backend's templates.
        dtype: ``"float64"`` or ``"float32"``.
    """

    name: str
    template_dir: str
    dtype: str = "float64"
