"""A sweep's grid: which keys may vary, their values checked, and one ``sn.train`` call per point.

Everything here runs before any training, so that a misspelt key or an out-of-range value in
the tenth point fails at once, not after nine trainings (or after a cluster was started). A
point is described completely by :class:`Point`: the network (declared again when the grid
varies its penalty, a :class:`~symnn.declare.Network` being immutable), the optimiser and the
keywords of :func:`symnn.train`, so that the same call reproduces it alone.
"""

from __future__ import annotations

import enum
import inspect
import itertools
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..declare import Network
from ..errors import ConfigError, SpecTypeError
from ..optim import RULES, Optimizer, optimizer
from ..train import train


class Target(enum.Enum):
    """Where a grid key's value goes."""

    RULE = enum.auto()  #: the optimiser's name: ``sn.optimizer(name, ...)``
    HYPER = enum.auto()  #: one of the optimiser's hyperparameters (clipping included)
    PENALTY = enum.auto()  #: the network's ``l1``/``l2``: the network declared again
    TRAIN = enum.auto()  #: a keyword of ``sn.train``


class Kind(enum.Enum):
    """What a grid value is: the CLI parses ``--grid key=...`` by it, the checks refuse others."""

    NAME = enum.auto()
    REAL = enum.auto()
    INTEGER = enum.auto()


@dataclass(frozen=True)
class Key:
    target: Target
    kind: Kind
    minimum: int = 0  #: the least value of an INTEGER key


def _keys() -> dict[str, Key]:
    hyper = sorted({h for rule in RULES.values() for h in rule.defaults} | {"clip_value", "clip_norm"})
    return {"optimizer": Key(Target.RULE, Kind.NAME),
            **{h: Key(Target.HYPER, Kind.REAL) for h in hyper},
            "l1": Key(Target.PENALTY, Kind.REAL), "l2": Key(Target.PENALTY, Kind.REAL),
            "epochs": Key(Target.TRAIN, Kind.INTEGER, 1), "batch_size": Key(Target.TRAIN, Kind.INTEGER, 1),
            "seed": Key(Target.TRAIN, Kind.INTEGER, 0)}


#: grid key -> where it goes and what its values are
KEYS: dict[str, Key] = _keys()

#: keywords of ``sn.train`` a sweep sets itself, or that would make a point not one
#: single-process training (a kernel compiled with another optimiser, a client, data parts)
_NOT_TRAIN_KWARGS = frozenset({"net", "X", "Y", "kernel", "client", "parts"})


def check_value(key: str, value: object, where: str) -> None:
    """Refuse a value of the wrong kind for ``key`` (ranges are the optimiser's, the network's
    and ``sn.train``'s own checks, run on every point by :func:`points`)."""
    spec = KEYS[key]
    if spec.kind is Kind.NAME:
        if not isinstance(value, str) or value not in RULES:
            raise ConfigError(f"{where}: {value!r} is not an optimizer; available: {', '.join(sorted(RULES))}")
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpecTypeError(f"{where}: {key} takes a number, got {value!r}")
    elif spec.kind is Kind.INTEGER and (not isinstance(value, numbers.Integral) or value < spec.minimum):
        raise ConfigError(f"{where}: {key} takes an integer >= {spec.minimum}, got {value!r}")


def check_grid(grid: object) -> dict[str, tuple[Any, ...]]:
    """``grid`` as ``{key: values}`` in its own order, each key allowed and each value checked."""
    if not isinstance(grid, Mapping):
        raise SpecTypeError(f"grid must be a mapping of key -> sequence of values, got {type(grid).__name__}")
    if not grid:
        raise ConfigError(f"grid is empty; its keys are among {', '.join(KEYS)}")
    unknown = [k for k in grid if k not in KEYS]
    if unknown:
        raise ConfigError(f"grid key(s) {unknown} cannot be swept; allowed keys: {', '.join(KEYS)}")
    checked: dict[str, tuple[Any, ...]] = {}
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise SpecTypeError(f"grid[{key!r}] must be a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"grid[{key!r}] is empty: give at least one value")
        for i, value in enumerate(values):
            check_value(key, value, f"grid[{key!r}][{i}]")
        checked[key] = tuple(values)
    return checked


def check_train_kwargs(kwargs: Mapping[str, Any], grid: Mapping[str, Any]) -> None:
    """Refuse a keyword ``sn.train`` does not take, one a sweep sets itself, and one also in the
    grid (which of the two would win is a guess the caller should not have to make)."""
    taken = set(inspect.signature(train).parameters) - _NOT_TRAIN_KWARGS
    bad = sorted(set(kwargs) - taken)
    if bad:
        raise ConfigError(f"sweep: {bad} are not settings of a point's sn.train; it takes {sorted(taken)}")
    both = sorted(set(kwargs) & set(grid))
    if both:
        raise ConfigError(f"sweep: {both} given both in the grid and as a keyword; give each in one place")


#: how a ``--grid`` value of each kind is read from the command line
_PARSERS = {Kind.NAME: str.strip, Kind.REAL: float, Kind.INTEGER: int}


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["lr=0.01,0.1", "l2=0,1e-4"]`` (the CLI's ``--grid``) as a grid, each value read as
    its key's kind (integers for ``epochs``, ``batch_size``, ``seed``; names for ``optimizer``)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. lr=0.01,0.1)")
        if key not in KEYS:
            raise ConfigError(f"--grid {key!r} cannot be swept; allowed keys: {', '.join(KEYS)}")
        if key in grid:
            raise ConfigError(f"--grid {key!r} given twice; list all its values in one --grid {key}=...")
        if not text.strip():
            raise ConfigError(f"--grid {key}: no values; expected {key}=V1,V2,...")
        parse = _PARSERS[KEYS[key].kind]
        values = []
        for field in text.split(","):
            try:
                values.append(parse(field.strip()))
            except ValueError:
                raise ConfigError(f"--grid {key}: {field.strip()!r} is not "
                                  f"{'an integer' if KEYS[key].kind is Kind.INTEGER else 'a number'}") from None
        grid[key] = values
    return grid


@dataclass(frozen=True)
class BaseOptimizer:
    """The optimiser the grid's values modify: a name and the settings given with it."""

    name: str
    settings: dict[str, float]

    @classmethod
    def of(cls, value: object) -> "BaseOptimizer":
        """From an ``sn.Optimizer``, a name, or a spec's ``[train] optimizer`` table."""
        if isinstance(value, Optimizer):
            clips = {k: v for k, v in (("clip_value", value.clip_value), ("clip_norm", value.clip_norm)) if v}
            return cls(value.name, {**value.hyper, **clips})
        if isinstance(value, str):
            return cls(value, {})
        if isinstance(value, Mapping) and isinstance(value.get("name", "adam"), str):
            table = dict(value)
            return cls(table.pop("name", "adam"), table)
        raise SpecTypeError(f"optimizer must be an sn.Optimizer, a name or a table, got {value!r}")

    def for_point(self, values: Mapping[str, Any]) -> Optimizer:
        """The point's optimiser. A point that names another rule starts from that rule's
        defaults (plus the base's clipping): the base's hyperparameters belong to its rule."""
        name = values.get("optimizer", self.name)
        kept = self.settings if name == self.name else {
            k: v for k, v in self.settings.items() if k in ("clip_value", "clip_norm")}
        hyper = {**kept, **{k: v for k, v in values.items() if KEYS[k].target is Target.HYPER}}
        return optimizer(name, **hyper)


@dataclass(frozen=True)
class Point:
    """One training of a sweep: ``sn.train(network, X, Y, optimizer=optimizer, **kwargs)``."""

    index: int
    values: dict[str, Any]
    network: Network
    optimizer: Optimizer
    kwargs: dict[str, Any]

    @property
    def seed(self) -> int:
        return int(self.kwargs["seed"])

    def train_kwargs(self) -> dict[str, Any]:
        """The keywords of ``sn.train`` (data aside) that reproduce this point."""
        return {"optimizer": self.optimizer, **self.kwargs}

    def describe(self) -> str:
        """The whole setting in one line, for a table that outlives the Python session."""
        kw = ", ".join(f"{k}={v!r}" if v is None or isinstance(v, (numbers.Number, str)) else f"{k}=<given>"
                       for k, v in self.kwargs.items())
        return f"{self.optimizer.describe()}; l1={self.network.l1!r}, l2={self.network.l2!r}; {kw}"


def with_penalties(net: Network, l1: float, l2: float) -> Network:
    """``net`` declared again with the penalties ``l1``, ``l2`` (checked by the declaration)."""
    if (l1, l2) == (net.l1, net.l2):
        return net
    if net.is_graph:
        from ..graph_spec import rebuilt

        return rebuilt(net, l1=l1, l2=l2)
    return Network(list(net.layers), loss=net.loss, l1=l1, l2=l2, name=net.name, frozen=list(net.frozen))


def points(net: Network, grid: Mapping[str, Sequence[Any]], base: BaseOptimizer,
           kwargs: Mapping[str, Any]) -> list[Point]:
    """Every point of the grid's cartesian product, first key slowest, each built in full (its
    optimiser and network constructed, so checked) before any of them trains."""
    nets: dict[tuple[float, float], Network] = {}
    out = []
    for index, combo in enumerate(itertools.product(*grid.values())):
        values = dict(zip(grid, combo))
        where = ", ".join(f"{k}={v!r}" for k, v in values.items())
        l1, l2 = values.get("l1", net.l1), values.get("l2", net.l2)
        try:
            if (l1, l2) not in nets:
                nets[l1, l2] = with_penalties(net, l1, l2)
            opt = base.for_point(values)
        except (ConfigError, SpecTypeError) as exc:
            raise type(exc)(f"sweep point {index} ({where}): {exc}") from exc
        train_kw = {**kwargs, **{k: int(v) for k, v in values.items() if KEYS[k].target is Target.TRAIN}}
        out.append(Point(index, values, nets[l1, l2], opt, train_kw))
    return out


__all__ = ["KEYS", "BaseOptimizer", "Key", "Kind", "Point", "Target", "check_grid", "check_train_kwargs",
           "check_value", "parse_grid", "points",
           "with_penalties"]
