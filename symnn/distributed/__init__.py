"""Past one machine: data-parallel training and sweeps on Dask (``dask.distributed``).

The core of symnn keeps its four run-time dependencies; everything here imports Dask lazily
and says how to install it (``pip install "symnn[distributed]"``) when it is missing.
"""

from .parts import read_parquet

__all__ = ["read_parquet"]
