"""Training data as P parts, each a pair of arrays (X_j, Y_j), wherever they live.

Accepted sources (:func:`source_of`):

- in-memory arrays (what ``sn.train`` takes), cut into ``parts=P`` contiguous pieces;
- dask arrays X and Y chunked along rows alike: one part per row chunk;
- dask DataFrames (or a Series for Y) with the same partitions: one part per partition, as
  :func:`read_parquet` gives them for a Parquet dataset (one part per file or row group).

On a cluster every part is materialised once, by a task pinned to the worker that will train
on it (:meth:`Source.futures`), and stays there: a step's task finds its parts in that
worker's memory, and no part is ever gathered onto the driver. Without a cluster the parts are
computed here, one after another (the single-process reference).
"""

from __future__ import annotations

import glob
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError, DataError


@dataclass
class Source:
    """P parts: ``loaders[j]()`` gives part j's raw (X_j, Y_j) in this process; ``tasks[j]`` is
    the same as a dask ``Delayed`` (None for in-memory pieces, which are scattered instead)."""

    n_parts: int
    loaders: list[Callable[[], tuple[Any, Any]]]
    tasks: list[Any] | None
    in_memory: bool

    def local(self) -> list[tuple[Any, Any]]:
        """Every part, computed in this process (the reference run and the single-process path)."""
        return [load() for load in self.loaders]


def _is_dask_collection(value: object) -> bool:
    return type(value).__module__.split(".")[0] in ("dask", "dask_expr") and hasattr(value, "__dask_graph__")


def is_distributed_source(X: object, Y: object) -> bool:
    """True when X or Y is a dask collection (an array or a dataframe)."""
    return _is_dask_collection(X) or _is_dask_collection(Y)


def positive_parts(parts: object) -> int:
    if isinstance(parts, bool) or not isinstance(parts, numbers.Integral) or int(parts) < 1:
        raise ConfigError(f"parts must be a positive integer (the number of gradient blocks per step), got {parts!r}")
    return int(parts)


def in_memory(x: np.ndarray, y: np.ndarray, parts: object) -> Source:
    """``parts`` contiguous pieces of packed in-memory arrays (rows split as numpy.array_split)."""
    p = positive_parts(parts)
    if p > x.shape[0]:
        raise ConfigError(f"parts={p} is more than the {x.shape[0]} training rows")
    bounds = np.linspace(0, x.shape[0], p + 1).round().astype(int)
    pieces = [(x[bounds[j]:bounds[j + 1]], y[bounds[j]:bounds[j + 1]]) for j in range(p)]
    return Source(p, [lambda piece=piece: piece for piece in pieces], None, True)


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """A partition's (X, Y) as NumPy arrays (a DataFrame's values)."""
    return np.asarray(getattr(x, "to_numpy", lambda: x)()), np.asarray(getattr(y, "to_numpy", lambda: y)())


def from_dask(X: object, Y: object, parts: object = None) -> Source:
    """Parts of dask collections X and Y with matching row partitions (``parts`` must be None:
    the collection's own partitions are the parts; rechunk or repartition to change them)."""
    import dask

    if parts is not None:
        raise ConfigError("parts= is for in-memory arrays; the parts of dask data are its row chunks or partitions "
                          "(rechunk or repartition it to choose them)")
    if not (_is_dask_collection(X) and _is_dask_collection(Y)):
        raise ConfigError("X and Y must both be dask collections (or both in-memory arrays)")
    xs, ys = _partitions(X, "X"), _partitions(Y, "Y")
    if len(xs) != len(ys):
        raise DataError(f"X has {len(xs)} row partitions and Y {len(ys)}: they must be partitioned alike")
    tasks = [dask.delayed(_pair, pure=True)(x, y) for x, y in zip(xs, ys)]
    loaders = [lambda t=t: dask.compute(t, scheduler="sync")[0] for t in tasks]
    return Source(len(tasks), loaders, tasks, False)


def _partitions(value: Any, what: str) -> list[Any]:
    """A dask array's row chunks (one chunk across columns) or a dataframe's partitions, as Delayed."""
    chunks = getattr(value, "chunks", None)
    if isinstance(chunks, tuple):  # a dask array
        if value.ndim > 1 and any(len(c) > 1 for c in chunks[1:]):
            value = value.rechunk({i: -1 for i in range(1, value.ndim)})
        if any(isinstance(c, float) and np.isnan(c) for c in value.chunks[0]):
            raise DataError(f"{what} has row chunks of unknown size; call compute_chunk_sizes() first")
        return list(value.to_delayed().reshape(-1))
    if hasattr(value, "to_delayed") and hasattr(value, "npartitions"):  # a dask DataFrame / Series
        return list(value.to_delayed())
    raise ConfigError(f"{what} is a dask collection of type {type(value).__name__}, not an array or a dataframe")


def read_parquet(pattern: str | Sequence[str], n_in: int) -> tuple[Any, Any]:
    """A Parquet dataset (a glob such as ``'shards/*.parquet'``, or a list of files) as dask
    DataFrames X and Y, one partition per file: the first ``n_in`` columns are X, the rest Y,
    as ``symnn train`` reads a CSV file. Needs ``pip install "symnn[distributed]"`` (pyarrow)."""
    try:
        import dask.dataframe as dd
    except ImportError as exc:
        raise ConfigError('reading Parquet needs dask.dataframe and pyarrow: pip install "symnn[distributed]"') from exc
    files = sorted(glob.glob(pattern)) if isinstance(pattern, str) else [str(p) for p in pattern]
    if not files:
        raise DataError(f"no Parquet file matches {pattern!r}")
    frame = dd.read_parquet(files, engine="pyarrow")
    columns = list(frame.columns)
    if len(columns) <= n_in:
        raise DataError(f"{files[0]}: the network takes {n_in} input columns and its targets after them; "
                        f"the Parquet data have {len(columns)} columns")
    return frame[columns[:n_in]], frame[columns[n_in:]]
