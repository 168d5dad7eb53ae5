"""A sweep's metric as a picture: a line over one swept key, a heat map over two, else by point.

The shape of the picture follows the number of swept keys, since that is what a reader
compares: one key is a curve (on a log axis when its values are positive and span more than a
factor of ten, as learning rates and penalties do), two keys are a table whose cells are
coloured, and more keys have no natural axes, so the points are drawn in their order.
Failed points (NaN) are gaps, never zeros.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError('SweepResult.plot needs matplotlib: pip install "symnn[plot]"') from exc
    return plt


def _distinct(rows: list[dict[str, Any]], key: str) -> list[Any]:
    """The values ``key`` takes, in the order the grid gave them."""
    return list(dict.fromkeys(r[key] for r in rows))


def log_axis(values: Sequence[Any]) -> bool:
    """Whether values are best read on a log axis: all positive numbers spread over > 10x."""
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        return False
    return all(v > 0 for v in values) and max(values) > 10 * min(values)


def _line(ax: Any, rows: list[dict[str, Any]], key: str, metric: str) -> None:
    xs = _distinct(rows, key)
    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in xs)
    position = (lambda v: v) if numeric else xs.index  # names (optimizers) at 0, 1, ...
    ax.plot([position(r[key]) for r in rows], [r[metric] for r in rows], marker="o")
    if numeric and log_axis(xs):
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_xlabel(key)


def _heat_map(fig: Any, ax: Any, rows: list[dict[str, Any]], keys: Sequence[str], metric: str) -> None:
    first, second = (_distinct(rows, k) for k in keys)
    grid = np.full((len(first), len(second)), math.nan)
    for r in rows:
        grid[first.index(r[keys[0]]), second.index(r[keys[1]])] = r[metric]
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", origin="lower", cmap="viridis")
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_yticks(range(len(first)), [f"{v:g}" if isinstance(v, float) else str(v) for v in first])
    ax.set_xticks(range(len(second)), [f"{v:g}" if isinstance(v, float) else str(v) for v in second])
    ax.set_ylabel(keys[0])
    ax.set_xlabel(keys[1])
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, "failed" if math.isnan(value) else f"{value:.3g}", ha="center", va="center",
                color="white", fontsize=8)


def plot(rows: list[dict[str, Any]], keys: Sequence[str], metric: str, path: str | Path) -> Path:
    """Write the PNG of ``metric`` over the swept ``keys`` to ``path``, atomically."""
    from ..fileio import staged

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        if len(keys) == 1:
            _line(ax, rows, keys[0], metric)
            ax.set_ylabel(metric)
        elif len(keys) == 2:
            _heat_map(fig, ax, rows, keys, metric)
        else:
            from matplotlib.ticker import MaxNLocator

            ax.plot([r["point"] for r in rows], [r[metric] for r in rows], marker="o")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # points are whole numbers
            ax.set_xlabel(f"point ({', '.join(keys)}: first slowest)")
            ax.set_ylabel(metric)
        ax.set_title(f"sweep: {metric}")
        fig.tight_layout()
        target = Path(path)
        with staged(target, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return target


__all__ = ["log_axis", "plot"]
