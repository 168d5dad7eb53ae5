"""Who computes a step's gradient: this process (:class:`LocalSteps`, the reference) or the
workers of a Dask cluster (:class:`ClusterSteps`). Both return the same vector, bit for bit:
the weighted gradient of the step's blocks with their weighted loss last, summed along the
schedule's tree (:mod:`symnn.distributed.schedule`).

A cluster step is one task per worker, pinned to the worker that holds its parts (loosely: it
may run elsewhere if that worker is gone). A step whose tasks fail because a worker died is
run again from the same parameters after the lost parts are made again (re-scattered from the
driver's arrays, or recomputed by Dask from their graph), on the workers still alive: the
result is the undisturbed run's, since neither the batches nor the order of the sum depend
on the workers.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import WorkerLostError
from .parts import Source
from .schedule import Node, Schedule, ranges, tree_sum
from .worker import Recipe, part_rows, ready_part, step_nodes


class LocalSteps:
    """Every part in this process: the single-process run that cluster runs equal."""

    def __init__(self, recipe: Recipe, source: Source) -> None:
        self.recipe = recipe
        self.parts = [ready_part(recipe, raw) for raw in source.local()]
        self.sizes = tuple(part_rows(p) for p in self.parts)

    def step(self, schedule: Schedule, theta: np.ndarray, epoch: int, s: int, step: int) -> np.ndarray | None:
        nodes, _ = step_nodes(self.recipe, schedule, theta, epoch, s, step, 0, len(self.parts), *self.parts)
        return nodes[(0, len(self.parts))]

    def close(self) -> None:
        self.parts = []


def _failures() -> tuple[type[BaseException], ...]:
    """What a dead worker looks like to the driver (nothing else is retried)."""
    import distributed
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    return (distributed.KilledWorker, FutureCancelledError, CommClosedError, OSError, TimeoutError)


class ClusterSteps:
    """Parts materialised on the cluster's workers, one task per worker per step."""

    #: how many times one step is tried again after workers died under it
    RETRIES = 4
    #: parameters up to this size travel inside each step's tasks rather than scattered apart
    INLINE_BYTES = 1 << 20

    def __init__(self, client: Any, recipe: Recipe, source: Source, pieces: list[Any] | None = None) -> None:
        self.client = client
        self.source = source
        self.pieces = pieces if pieces is not None else (source.local() if source.in_memory else None)
        self.n = source.n_parts
        self._warned = False
        self._recipe_future = None
        self._recipe = recipe
        self._place()
        self.sizes = tuple(int(r) for r in client.gather([client.submit(part_rows, f, pure=False)
                                                          for f in self.parts]))

    # -- placement -----------------------------------------------------------------------------
    def _workers(self) -> list[str]:
        workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            raise WorkerLostError("the Dask cluster has no workers")
        return workers

    def _place(self) -> None:
        """Assign contiguous part ranges to the live workers and make every part on its worker."""
        client = self.client
        workers = self._workers()
        self.assignment = list(zip(ranges(self.n, len(workers)), workers))
        self._recipe_future = client.scatter(self._recipe, hash=False)
        self.parts: list[Any] = [None] * self.n
        for (a, b), worker in self.assignment:
            for j in range(a, b):
                self.parts[j] = self._make_part(j, worker)

    def _make_part(self, j: int, worker: str) -> Any:
        client = self.client
        if self.source.in_memory:
            raw = client.scatter(self.pieces[j], workers=[worker], hash=False)
        else:
            raw = client.compute(self.source.tasks[j], workers=[worker], allow_other_workers=True)
        return client.submit(ready_part, self._recipe_future, raw, workers=[worker], allow_other_workers=True,
                             pure=False)

    # -- steps ---------------------------------------------------------------------------------
    def step(self, schedule: Schedule, theta: np.ndarray, epoch: int, s: int, step: int) -> np.ndarray | None:
        failures = _failures()
        for attempt in range(self.RETRIES + 1):
            try:
                return self._try_step(schedule, theta, epoch, s, step)
            except failures as exc:
                if attempt == self.RETRIES:
                    raise WorkerLostError(f"step {step} failed {attempt + 1} times as workers died: {exc}") from exc
                self._place()  # the parts again, on the workers alive now
        raise AssertionError("unreachable")

    def _try_step(self, schedule: Schedule, theta: np.ndarray, epoch: int, s: int, step: int) -> np.ndarray | None:
        client = self.client
        # small parameters ride in the tasks themselves (one round trip a step); large ones are
        # scattered once a step and fetched by the workers from where they landed
        sent = theta.copy() if theta.nbytes <= self.INLINE_BYTES else client.scatter(theta, hash=False)
        futures = [client.submit(step_nodes, self._recipe_future, schedule, sent, epoch, s, step, a, b,
                                 *self.parts[a:b], workers=[worker], allow_other_workers=True, pure=False)
                   for (a, b), worker in self.assignment]
        known: dict[Node, np.ndarray | None] = {}
        try:
            for nodes, used in client.gather(futures):
                known.update(nodes)
                self._note_backend(used)
        finally:
            client.cancel(futures + ([] if isinstance(sent, np.ndarray) else [sent]))
        return tree_sum(self.n, known)

    def _note_backend(self, used: str) -> None:
        if used != self._recipe.backend and not self._warned:
            self._warned = True
            warnings.warn(f"a Dask worker has no C compiler: its parts are trained with the {used} kernel "
                          f"(results are then not bitwise equal to a {self._recipe.backend} run)",
                          RuntimeWarning, stacklevel=3)

    def close(self) -> None:
        futures = [f for f in self.parts if f is not None] + ([self._recipe_future] if self._recipe_future else [])
        self.client.cancel(futures)
        self.parts = []

