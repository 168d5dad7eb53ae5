"""Who computes a step's gradient: this process (:class:`LocalSteps`, the reference) or the
workers of a Dask cluster (:class:`ClusterSteps`). Both return the same vector, bit for bit:
the weighted gradient of the step's blocks with their weighted loss last, summed along the
schedule's tree (:mod:`symnn.distributed.schedule`).

On a cluster the parts are made once on their workers and kept there, and each worker runs a
Dask actor (:class:`~symnn.distributed.worker.PartsActor`): a step is one actor call per worker,
straight from the driver to the worker (no scheduler in the loop), carrying theta. A step
whose calls fail because a worker died is run again from the same parameters after the parts
are placed again (re-scattered from the driver's arrays, or recomputed by Dask from their
graph) on the workers still alive: the result is the undisturbed run's, since neither the
batches nor the order of the sum depend on the workers.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import numpy as np

from ..errors import WorkerLostError
from .parts import Source
from .schedule import Node, Schedule, ranges, tree_sum
from .worker import PartMissing, PartsActor, Recipe, forget_run, part_rows, ready_part, step_nodes, store_part


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

    return (distributed.KilledWorker, FutureCancelledError, CommClosedError, OSError, TimeoutError, PartMissing)


class ClusterSteps:
    """Parts kept on the cluster's workers, one actor per worker stepping over its parts."""

    #: how many times one step is tried again after workers died under it
    RETRIES = 4

    def __init__(self, client: Any, recipe: Recipe, source: Source) -> None:
        self.client = client
        self.source = source
        self.pieces = source.local() if source.in_memory else None
        self.n = source.n_parts
        self.run = uuid.uuid4().hex
        self._warned = False
        self._recipe = recipe
        self._held: list[Any] = []
        self.sizes: tuple[int, ...] = ()
        self._retrying(self._place)

    # -- placement -----------------------------------------------------------------------------
    def _workers(self) -> list[str]:
        workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            raise WorkerLostError("the Dask cluster has no workers")
        return workers

    def _retrying(self, attempt: Any) -> Any:
        """``attempt()``, placed again and retried while workers die under it (at most
        :data:`RETRIES` times more; then :class:`WorkerLostError`)."""
        failures = _failures()
        for tries in range(self.RETRIES + 1):
            try:
                if tries and attempt != self._place:
                    self._place()  # the parts again, on the workers alive now
                return attempt()
            except failures as exc:
                if tries == self.RETRIES:
                    raise WorkerLostError(f"{tries + 1} tries failed as Dask workers died: {exc}") from exc
        raise AssertionError("unreachable")

    def _place(self) -> None:
        """Assign contiguous part ranges to the live workers, make every part on its worker and
        keep it there, and start one actor per worker. Tasks may run elsewhere if their worker
        died meanwhile; a part that is then not where its actor is fails the next step
        (PartMissing), which places everything again."""
        client = self.client
        self._release()
        workers = self._workers()
        self.assignment = list(zip(ranges(self.n, len(workers)), workers))
        recipe = client.scatter(self._recipe, hash=False)
        stored, actors = [], []
        for (a, b), worker in self.assignment:
            for j in range(a, b):
                part = self._make_part(j, worker, recipe)
                self._held.append(part)  # kept referenced: Dask makes it again if its worker dies
                stored.append(client.submit(store_part, self.run, j, part, workers=[worker], allow_other_workers=True,
                                            pure=False))
            actors.append(client.submit(PartsActor, recipe, self.run, workers=[worker], allow_other_workers=True,
                                        actor=True, pure=False))
        self._held += [recipe, *actors]
        rows = tuple(int(r) for r in client.gather(stored))
        if self.sizes and rows != self.sizes:
            raise WorkerLostError(f"the parts came back with other sizes ({rows}, not {self.sizes}): the data changed "
                                  "under the run")
        self.sizes = rows
        with client.as_current():  # an actor's handle binds the client current where it is made
            self.actors = [f.result() for f in actors]

    def _make_part(self, j: int, worker: str, recipe: Any) -> Any:
        client = self.client
        if self.source.in_memory:
            raw = client.scatter(self.pieces[j], workers=[worker], hash=False)
        else:
            raw = client.compute(self.source.tasks[j], workers=[worker], allow_other_workers=True)
        return client.submit(ready_part, recipe, raw, workers=[worker], allow_other_workers=True, pure=False)

    # -- steps ---------------------------------------------------------------------------------
    def step(self, schedule: Schedule, theta: np.ndarray, epoch: int, s: int, step: int) -> np.ndarray | None:
        return self._retrying(lambda: self._try_step(schedule, theta, epoch, s, step))

    def _try_step(self, schedule: Schedule, theta: np.ndarray, epoch: int, s: int, step: int) -> np.ndarray | None:
        # one actor call per worker, straight to it (theta travels in the call)
        calls = [actor.step(schedule, theta, epoch, s, step, a, b)
                 for actor, ((a, b), _) in zip(self.actors, self.assignment)]
        known: dict[Node, np.ndarray | None] = {}
        for call in calls:
            nodes, used = call.result()
            known.update(nodes)
            self._note_backend(used)
        return tree_sum(self.n, known)

    def _note_backend(self, used: str) -> None:
        if used != self._recipe.backend and not self._warned:
            self._warned = True
            warnings.warn(f"a Dask worker has no C compiler: its parts are trained with the {used} kernel "
                          f"(results are then not bitwise equal to a {self._recipe.backend} run)",
                          RuntimeWarning, stacklevel=3)

    def _release(self) -> None:
        """Drop the parts kept on the workers (those still alive) and the run's futures."""
        if getattr(self, "actors", None):  # on every live worker; a dead one took its parts with it
            self.client.run(forget_run, self.run, on_error="ignore")
        self.actors = []
        if self._held:
            self.client.cancel(self._held)
        self._held = []

    def close(self) -> None:
        self._release()
