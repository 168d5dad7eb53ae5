"""What a sweep returns: one row per point, the trained parameters, and the way back to each run.

A row is plain data (numbers and strings), so the table survives as CSV; the parameters and
histories stay in memory beside it. Each point keeps the exact ``sn.train`` call it made
(:meth:`SweepResult.train_call`), so any row can be trained again alone, bitwise equal.
"""

from __future__ import annotations

import csv
import enum
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..declare import Network
from ..errors import ConfigError, NonFiniteError, NumericalError
from ..train import History, TrainResult, train
from .sweep_grid import Point


@dataclass
class Outcome:
    """What one point's training gave back (from a worker: no kernel, only data)."""

    params: dict[str, np.ndarray] | None
    history: History | None
    best_epoch: int | None
    steps: int | None
    seconds: float
    backend: str
    error: str | None = None


def run_point(network: Network, data: "SweepData", kwargs: dict[str, Any]) -> Outcome:
    """Train one point; a diverging one (NonFiniteError) is an outcome with its error text, so
    that one bad learning rate does not lose the other points. Runs in a Dask worker too."""
    start = time.perf_counter()
    try:
        result = train(network, data.X, data.Y, **data.extra(), **kwargs)
    except NonFiniteError as exc:
        return Outcome(None, None, None, None, time.perf_counter() - start, str(kwargs.get("backend")), str(exc))
    return Outcome(result.params, result.history, result.best_epoch, result.steps,
                   time.perf_counter() - start, result.kernel.backend)


@dataclass(frozen=True)
class SweepData:
    """The training data, one object so that a client scatters it once for every point."""

    X: Any
    Y: Any
    validation: tuple[Any, Any] | None = None

    def extra(self) -> dict[str, Any]:
        return {} if self.validation is None else {"validation": self.validation}


class Goal(enum.Enum):
    LOWER = enum.auto()
    HIGHER = enum.auto()


#: metric column -> which way is better
METRICS = {"train_loss": Goal.LOWER, "val_loss": Goal.LOWER, "val_accuracy": Goal.HIGHER}


@dataclass
class SweepResult:
    """A sweep's points, their rows (:attr:`rows`) and their trained parameters."""

    keys: tuple[str, ...]
    points: list[Point]
    outcomes: list[Outcome]
    data: SweepData
    validated: bool  #: whether the rows have validation metrics
    classified: bool  #: whether they have a validation accuracy
    rows: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.rows = [self._row(p, o) for p, o in zip(self.points, self.outcomes)]

    def _row(self, point: Point, out: Outcome) -> dict[str, Any]:
        row: dict[str, Any] = {"point": point.index, **point.values, "seed": point.seed}
        h, nan = out.history, math.nan
        row["train_loss"] = h.train_loss[-1] if h is not None else nan
        if self.validated:
            # the returned parameters are the best epoch's: its metrics are theirs
            row["val_loss"] = h.val_loss[out.best_epoch - 1] if h is not None else nan
            if self.classified:
                row["val_accuracy"] = h.val_accuracy[out.best_epoch - 1] if h is not None else nan
        row.update(best_epoch=out.best_epoch, steps=out.steps, seconds=out.seconds, backend=out.backend,
                   settings=point.describe(), error=out.error)
        return row

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric columns these rows have."""
        return tuple(m for m in METRICS if self.rows and m in self.rows[0])

    def table(self) -> Any:
        """The rows as a pandas DataFrame when pandas is installed, else the list of dicts."""
        try:
            import pandas as pd
        except ImportError:
            return [dict(r) for r in self.rows]
        return pd.DataFrame(self.rows).set_index("point")

    def best(self, metric: str | None = None) -> dict[str, Any]:
        """The row with the best ``metric`` (default ``val_loss`` with validation data, else
        ``train_loss``; accuracy counts higher as better). Failed points never win."""
        metric = metric or ("val_loss" if self.validated else "train_loss")
        if metric not in self.metrics:
            raise ConfigError(f"best: metric {metric!r} is not in these rows; they have {list(self.metrics)}")
        scored = [r for r in self.rows if not math.isnan(r[metric])]
        if not scored:
            raise NumericalError(f"best: every point's {metric} is NaN (every training failed)")
        pick = min if METRICS[metric] is Goal.LOWER else max
        return dict(pick(scored, key=lambda r: r[metric]))

    def _outcome(self, i: int) -> Outcome:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.points):
            raise ConfigError(f"point index must be an integer in [0, {len(self.points)}), got {i!r}")
        return self.outcomes[i]

    def params(self, i: int) -> dict[str, np.ndarray]:
        """Point ``i``'s trained parameters (those of its best epoch with validation data)."""
        out = self._outcome(i)
        if out.params is None:
            raise NonFiniteError(f"point {i} has no parameters: its training failed: {out.error}")
        return out.params

    def history(self, i: int) -> History:
        """Point ``i``'s per-epoch metrics."""
        out = self._outcome(i)
        if out.history is None:
            raise NonFiniteError(f"point {i} has no history: its training failed: {out.error}")
        return out.history

    def train_call(self, i: int) -> tuple[Network, dict[str, Any]]:
        """``(network, kwargs)`` such that ``sn.train(network, X, Y, **kwargs)`` on the sweep's
        data repeats point ``i`` alone (on the backend it ran on), bitwise equal."""
        self._outcome(i)
        point = self.points[i]
        kwargs = point.train_kwargs()
        if self.outcomes[i].error is None:
            kwargs["backend"] = self.outcomes[i].backend  # "auto" as it resolved there
        if self.data.validation is not None:
            kwargs["validation"] = self.data.validation
        return point.network, kwargs

    def rerun(self, i: int) -> TrainResult:
        """Train point ``i`` again, alone, in this process: :meth:`train_call` applied."""
        net, kwargs = self.train_call(i)
        return train(net, self.data.X, self.data.Y, **kwargs)

    def plot(self, path: str | Path, metric: str | None = None) -> Path:
        """A PNG of ``metric`` over the grid (see :func:`symnn.distributed.sweep_plot.plot`)."""
        from .sweep_plot import plot

        metric = metric or ("val_loss" if self.validated else "train_loss")
        if metric not in self.metrics:
            raise ConfigError(f"plot: metric {metric!r} is not in these rows; they have {list(self.metrics)}")
        return plot(self.rows, self.keys, metric, path)

    def text(self) -> str:
        """The table as aligned plain text (what ``symnn sweep`` prints), without the
        ``settings`` column, which the CSV keeps; a failed point shows its error after it."""
        columns = [c for c in self.rows[0] if c not in ("settings", "error")]
        cells = [[_cell(r[c]) for c in columns] for r in self.rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
        for r, row in zip(self.rows, cells):
            line = "  ".join(v.rjust(w) for v, w in zip(row, widths))
            lines.append(line + (f"  failed: {r['error'].splitlines()[0]}" if r["error"] else ""))
        return "\n".join(lines)

    def csv_text(self) -> str:
        """The rows as CSV text (a header line, then one line per point)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in self.rows)
        return buf.getvalue()

    def to_csv(self, path: str | Path) -> Path:
        """Write the rows as CSV, atomically."""
        from ..fileio import write_atomic

        target = Path(path)
        write_atomic(target, self.csv_text())
        return target


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


__all__ = ["METRICS", "Outcome", "SweepData", "SweepResult", "run_point"]
