"""``sn.sweep``: one training per point of a hyperparameter grid, in turn or as Dask tasks.

A point is an ordinary single-process ``sn.train`` call (see :mod:`.sweep_grid`), so a sweep
adds no numerics of its own: the same point gives the same bits in this process, in a Dask
worker, or trained again alone from its row. With a client, the data are scattered once (a
copy on every worker) and every point is one task that compiles (or finds in its cache) the
kernel and trains; the workers share nothing else, which is why sweeps scale with the number
of workers. A worker that dies takes no data with it: Dask runs its points again elsewhere.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..declare import Network
from ..decision import is_classifier
from ..errors import ConfigError, SpecTypeError
from ..spec_toml import Spec, load_spec
from .cluster import check_client_argument, connect
from .sweep_grid import KEYS, BaseOptimizer, Point, Target, check_grid, check_train_kwargs, check_value, points
from .sweep_result import Outcome, SweepData, SweepResult, run_point

#: the [train] settings of a spec a sweep takes as defaults, as ``symnn train`` does
_SPEC_SETTINGS = ("epochs", "batch_size", "seed", "validation_split", "patience", "standardize", "backend",
                  "dtype")


def _network_and_defaults(net_or_spec: object) -> tuple[Network, dict[str, Any], object]:
    """The network, the keywords of ``sn.train`` its spec sets, and its base optimiser."""
    if isinstance(net_or_spec, Network):
        return net_or_spec, {"backend": "numpy"}, "adam"
    if isinstance(net_or_spec, (str, os.PathLike)):
        net_or_spec = load_spec(Path(net_or_spec))
    if isinstance(net_or_spec, Spec):
        settings = net_or_spec.train
        defaults = {"backend": "auto", **{k: settings[k] for k in _SPEC_SETTINGS if k in settings}}
        return net_or_spec.network, defaults, settings.get("optimizer", "adam")
    raise SpecTypeError(f"sweep takes an sn.Network, a spec (sn.load_spec) or a spec's path, "
                        f"got {type(net_or_spec).__name__}")


def sweep(net_or_spec: Network | Spec | str | os.PathLike[str], grid: Mapping[str, Sequence[Any]], X: object,
          Y: object, *, client: object = None, seed: int | None = None, **train_kwargs: Any) -> SweepResult:
    """Train once per point of ``grid`` and tabulate the results.

    Args:
        net_or_spec: an ``sn.Network``, or a spec (``sn.load_spec``'s result or its path),
            whose ``[train]`` table gives the defaults (backend ``"auto"``, as ``symnn train``).
        grid: key -> non-empty list of values; the points are the cartesian product in the
            grid's order (first key slowest). Keys: ``optimizer`` (a name), its
            hyperparameters (``lr``, ``momentum``, ``weight_decay``, ``beta1``, ``beta2``,
            ``eps``, ``alpha``, ``clip_norm``, ``clip_value``), the network's ``l1``/``l2``,
            and ``sn.train``'s ``epochs``, ``batch_size``, ``seed``.
        X, Y: the training data, as ``sn.train`` takes them.
        client: None (the points in turn, in this process), a ``distributed.Client``,
            ``"local:N"`` (a LocalCluster of N processes for this call) or a scheduler address.
        seed: every point's seed unless the grid sweeps ``seed`` (default: the spec's, else 0).
            One seed for all points makes them differ only by the swept settings.
        train_kwargs: the other keywords of ``sn.train`` (``optimizer=`` is the base the grid
            modifies; ``validation=``, ``validation_split=``, ``patience=``...).

    Returns:
        A :class:`~symnn.distributed.sweep_result.SweepResult`.

    Raises:
        ConfigError, SpecTypeError: a key that cannot be swept, a bad value, a bad client, a
            keyword ``sn.train`` does not take; all before any training.
    """
    checked = check_grid(grid)
    check_client_argument(client)
    check_train_kwargs(train_kwargs, checked)
    if seed is not None and "seed" in checked:
        raise ConfigError("sweep: seed given both in the grid and as a keyword; give it in one place")
    net, defaults, base = _network_and_defaults(net_or_spec)
    kwargs = {**defaults, **train_kwargs}
    base = kwargs.pop("optimizer", base)
    kwargs["seed"] = seed if seed is not None else kwargs.get("seed", 0)
    for key in (k for k, spec in KEYS.items() if spec.target is Target.TRAIN and k in kwargs):
        check_value(key, kwargs[key], key)  # the grid's values are checked; these too, before work
    data = SweepData(X, Y, kwargs.pop("validation", None))
    todo = points(net, checked, BaseOptimizer.of(base), kwargs)
    outcomes = _run(todo, data, client)
    validated = data.validation is not None or bool(kwargs.get("validation_split"))
    classified = validated and bool(kwargs.get("classification", is_classifier(net)))
    return SweepResult(tuple(checked), todo, outcomes, data, validated, classified)


def _run(todo: list[Point], data: SweepData, client: object) -> list[Outcome]:
    if client is None:
        return [run_point(p.network, data, p.train_kwargs()) for p in todo]
    with connect(client) as c:
        # once, to every worker: a point whose worker dies runs again on another, which has the data
        shared = c.scatter(data, hash=False, broadcast=True)
        run = uuid.uuid4().hex[:12]
        futures = [c.submit(run_point, p.network, shared, p.train_kwargs(), key=f"symnn-sweep-{run}-{p.index}",
                            pure=False) for p in todo]
        try:
            return c.gather(futures)
        finally:
            c.cancel([*futures, shared])


__all__ = ["sweep"]
