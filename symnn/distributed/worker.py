"""What runs inside a Dask worker: the kernel (compiled once per worker process), a part made
ready for it, and one step's gradient over the worker's parts.

A kernel travels as its recipe and its emitted source (:class:`Recipe`: the network, backend,
dtype, optimiser, build options and the C or NumPy source, never a compiled ``.so``): each
worker builds that source through its own module cache (a cache hit after the first time on
that machine), with no derivation. A worker with no C compiler derives and builds the NumPy
kernel instead, and its results say so, so that the driver can warn once (its blocks are then
no longer bitwise equal to a C run).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CompilerNotFoundError, NonFiniteError
from ..kernel import Kernel
from .schedule import Node, Schedule, cover, leaf, node_sum


@dataclass(frozen=True)
class Recipe:
    """Everything a worker needs to build the driver's kernel."""

    network: Any
    backend: str
    dtype: str
    optimizer: Any
    build: tuple[tuple[str, bool], ...]
    check_finite: bool
    #: what the driver's backend emitted (Kernel.emitted): the source the worker builds
    emitted: Any
    #: the training seed (each part's dropout masks are keyed by it and the part)
    seed: int
    #: a stable key for the per-process kernel memo (the optimiser's description is hashable)
    key: tuple = field(default=(), compare=False)


_LOCK = threading.Lock()
_KERNELS: dict[tuple, tuple[Kernel, str]] = {}


def kernel_for(recipe: Recipe) -> tuple[Kernel, str]:
    """This process's kernel for ``recipe`` and the backend it runs on (``"numpy"`` where the C
    backend was asked for and there is no compiler). Built once per process, under a lock
    (threads of one worker share it)."""
    with _LOCK:
        found = _KERNELS.get(recipe.key)
        if found is not None:
            return found
        from ..driver import compile as compile_kernel
        from ..kernel import _rebuild

        try:
            kernel = _rebuild(recipe.network, recipe.backend, recipe.dtype, recipe.check_finite, recipe.optimizer,
                              dict(recipe.build), recipe.emitted)
            used = recipe.backend
        except CompilerNotFoundError:
            kernel = compile_kernel(recipe.network, backend="numpy", dtype=recipe.dtype,
                                    check_finite=recipe.check_finite, optimizer=recipe.optimizer)
            used = "numpy"
        _KERNELS[recipe.key] = (kernel, used)
        _forget_oldest()
        return kernel, used


#: how many kernels a process keeps for data-parallel steps (a long-lived worker serves many runs)
_MAX_KERNELS = 16


def _forget_oldest() -> None:
    """Drop the oldest kernels past :data:`_MAX_KERNELS` (called under the lock)."""
    while len(_KERNELS) > _MAX_KERNELS:
        del _KERNELS[next(iter(_KERNELS))]


def ready_part(recipe: Recipe, raw: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A part's raw (X, Y) checked and converted once, as ``sn.train`` converts its data."""
    kernel, _ = kernel_for(recipe)
    x = kernel.inputs(raw[0])
    y = raw[1]
    if kernel.network.takes_labels and not kernel.network.step_labels and getattr(y, "ndim", 1) == 2 \
            and y.shape[1] == 1:
        y = y[:, 0]  # one column of class labels, as a CSV file's last column is read
    return x, kernel.training_targets(kernel.targets(y, x.shape[0], kernel.length(x)))


def part_rows(part: tuple[np.ndarray, np.ndarray]) -> int:
    return int(part[0].shape[0])


#: (schedule, part) -> (epoch, that epoch's rows of the part for each step): one permutation per
#: part this process trains on, replaced when the epoch moves on (a part may have many rows)
_ORDERS: dict[tuple[Schedule, int], tuple[int, list[np.ndarray]]] = {}
#: how many (schedule, part) orders a process keeps (the oldest go first)
_MAX_ORDERS = 1024


def _order(schedule: Schedule, epoch: int, j: int) -> list[np.ndarray]:
    with _LOCK:
        found = _ORDERS.get((schedule, j))
        if found is not None and found[0] == epoch:
            return found[1]
    order = schedule.order(epoch, j)
    with _LOCK:
        _ORDERS.pop((schedule, j), None)
        _ORDERS[(schedule, j)] = (epoch, order)
        while len(_ORDERS) > _MAX_ORDERS:
            del _ORDERS[next(iter(_ORDERS))]
    return order


def step_nodes(recipe: Recipe, schedule: Schedule, theta: np.ndarray, epoch: int, s: int, step: int, a: int, b: int,
               *parts: tuple[np.ndarray, np.ndarray]) -> tuple[dict[Node, np.ndarray | None], str]:
    """Step ``s`` of ``epoch`` (global step ``step``) over parts [a, b): each block's weighted
    gradient-and-loss, summed into the tree's nodes inside [a, b). Returns those nodes and the
    backend that computed them."""
    kernel, used = kernel_for(recipe)
    counts = schedule.step_rows(epoch, s)
    total = sum(counts)
    dropout = kernel.network.has_dropout
    leaves: dict[int, np.ndarray | None] = {}
    for j, (x, y) in zip(range(a, b), parts):
        rows = _order(schedule, epoch, j)[s]
        try:
            leaves[j] = leaf(kernel, theta, x, y, rows, step, recipe.seed, j, counts[j] / total, dropout)
        except (FloatingPointError, NonFiniteError) as exc:
            raise NonFiniteError(f"part {j}, epoch {epoch}, step {step}: {exc}") from None
    n = len(schedule.sizes)
    return {node: node_sum(node, leaves.__getitem__) for node in cover(a, b, 0, n)}, used


def recipe_of(kernel: Kernel, seed: int) -> Recipe:
    """The recipe of a compiled kernel; the kernel itself is remembered in this process, so that
    the single-process run (and workers that are threads of this process) use it as it is."""
    build = tuple(sorted(kernel.build.items()))
    key = (kernel.network, kernel.backend, str(kernel.dtype), repr(kernel.optimizer), build, kernel.check_finite)
    with _LOCK:
        _KERNELS.pop(key, None)
        _KERNELS[key] = (kernel, kernel.backend)  # the newest: the driver's own kernel for this run
        _forget_oldest()
    return Recipe(kernel.network, kernel.backend, str(kernel.dtype), kernel.optimizer, build, kernel.check_finite,
                  kernel.emitted, seed, key)


#: (run, part) -> the part's ready (X, Y), kept in the worker process for the run's steps
_PARTS: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}


class PartMissing(RuntimeError):
    """A step reached a worker that does not hold the part (it was restarted, or the part went
    elsewhere): the driver places the parts again and retries the step."""


def store_part(run: str, j: int, part: tuple[np.ndarray, np.ndarray]) -> int:
    """Keep part j of ``run`` in this worker process (a task pinned to the worker); its rows."""
    with _LOCK:
        _PARTS[run, j] = part
    return part_rows(part)


class PartsActor:
    """One per worker for a run (a Dask actor): steps over the parts stored on its worker.

    An actor's method call goes from the driver to the worker directly, not through the
    scheduler: a step costs one round trip to each worker (about 2 ms here, against 10 for a
    task), which is most of a small network's step."""

    def __init__(self, recipe: Recipe, run: str) -> None:
        self.recipe, self.run = recipe, run

    def step(self, schedule: Schedule, theta: np.ndarray, epoch: int, s: int, step: int, a: int,
             b: int) -> tuple[dict[Node, np.ndarray | None], str]:
        try:
            parts = [_PARTS[self.run, j] for j in range(a, b)]
        except KeyError as exc:
            raise PartMissing(f"part {exc.args[0][1]} of this run is not on this worker") from None
        return step_nodes(self.recipe, schedule, theta, epoch, s, step, a, b, *parts)



def forget_run(run: str) -> None:
    """Drop a run's parts from this worker process (``client.run`` calls it on every worker)."""
    with _LOCK:
        for key in [k for k in _PARTS if k[0] == run]:
            del _PARTS[key]
