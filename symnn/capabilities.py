"""What a loss declares about itself, read wherever the code once recognised a loss by its name.

A loss (built-in or :class:`symnn.Loss`) carries its capabilities as fields:

* ``targets`` (:class:`Targets`): what ``Y`` may hold. It decides the checks on ``Y``, whether
  the kernels take integer labels (the C ``*_labels`` entry points, ``Y`` of shape (N,)), the
  targets the gradient check draws and the C test harness builds, and how ``predict`` turns
  outputs into labels.
* ``classification``: the outputs are class probabilities, so accuracy and ``predict``'s labels
  mean something (needs class targets).
* ``min_outputs``: the narrowest output layer the loss makes sense on (cross-entropy over one
  class is constant).
* ``requires``: the registry activation the output layer must use (cross-entropy: softmax).
* ``link`` (:class:`Link`): the output activation family the loss is the negative
  log-likelihood of. An output activation and a loss with the same link fuse into a stable
  form from the logits (:data:`symnn.simplify.fuse.FUSION_RULES`, each rewrite proved by SymPy
  on the loss's own expression); a loss and an activation with different links are refused.

A user loss has the capabilities it declares and nothing else: by default real targets, no
labels, no accuracy, no fusion, whatever its name, so a user loss called ``"bce"`` is never
given the built-in's rewrite.
"""

from __future__ import annotations

import functools

import enum
import numbers
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from . import naming
from .errors import ConfigError, DataError, SpecError, SpecTypeError

_MAX_WIDTH = 2**31 - 1


class Targets(enum.Enum):
    """What a loss's targets are; the value is the spelling in spec and model files."""

    #: any real numbers, ``Y`` of shape (N, K)
    REAL = "real"
    #: each element a probability in [0, 1] (binary cross-entropy)
    PROBABILITY = "probability"
    #: rows that are one-hot or probabilities summing to 1, or integer class labels (N,)
    ONE_HOT_OR_LABELS = "one_hot_or_labels"


class Link(enum.Enum):
    """An output activation family and the loss that is its negative log-likelihood (the
    canonical link of a generalised linear model): paired, the loss's gradient with respect to
    the logits is ``p - y`` and the pair has a stable fused form."""

    #: element-wise sigmoid outputs, each an independent probability
    LOGISTIC = "logistic"
    #: softmax rows, one distribution over the outputs per row
    SOFTMAX = "softmax"


#: the fields of a loss that are its declared capabilities (persisted, hashed, written to
#: specs) and what a loss that declares nothing has
LOSS_DEFAULTS: Mapping[str, object] = MappingProxyType(
    {"targets": Targets.REAL, "classification": False, "min_outputs": 1, "requires": None, "link": None})
LOSS_CAPABILITIES = tuple(LOSS_DEFAULTS)

#: a link's fused form holds only for these targets (softmax + cross-entropy assumes rows
#: summing to 1: its SymPy proof substitutes ``y_K = 1 - sum(y_1..y_K-1)``)
LINK_TARGETS: dict[Link, frozenset[Targets]] = {
    Link.LOGISTIC: frozenset(Targets),
    Link.SOFTMAX: frozenset({Targets.ONE_HOT_OR_LABELS}),
}

#: the target kind the emitted C test harness builds for each declared target set
C_TARGET_KIND: dict[Targets, str] = {
    Targets.REAL: "real",
    Targets.PROBABILITY: "unit",
    Targets.ONE_HOT_OR_LABELS: "onehot",
}


def _enum(cls: type[enum.Enum], value: object, what: str) -> Any:
    """``value`` as a member of ``cls``: a member or its string value; ConfigError otherwise."""
    if isinstance(value, cls):
        return value
    choices = ", ".join(repr(m.value) for m in cls)
    if not isinstance(value, str):
        raise SpecTypeError(f"{what} must be one of {choices}, got {type(value).__name__} {naming.shown(value)}")
    try:
        return cls(value)
    except ValueError:
        raise ConfigError(f"{what} must be one of {choices}, got {naming.shown(value)}") from None


def declared_targets(value: object, what: str) -> Targets:
    """A declared ``targets=``: a :class:`Targets` member or its value (``"probability"``)."""
    return _enum(Targets, value, f"{what}: targets")


def declared_link(value: object, what: str) -> Link | None:
    """A declared ``link=``: None, a :class:`Link` member or its value (``"logistic"``)."""
    return None if value is None else _enum(Link, value, f"{what}: link")


def declared_min_outputs(value: object, what: str) -> int:
    """A declared ``min_outputs=``: an integer in [1, 2**31 - 1] (not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise SpecTypeError(f"{what}: min_outputs must be an integer, got {type(value).__name__}")
    if not 1 <= int(value) <= _MAX_WIDTH:
        raise ConfigError(f"{what}: min_outputs must be in [1, {_MAX_WIDTH}], got {int(value)}")
    return int(value)


def declared_classification(value: object, kind: Targets, what: str) -> bool:
    """A declared ``classification=``: a bool, True only with class targets (accuracy compares
    labels, which real-valued targets do not have)."""
    if not isinstance(value, (bool, np.bool_)):
        raise SpecTypeError(f"{what}: classification must be True or False, got {type(value).__name__}")
    if value and kind is Targets.REAL:
        raise ConfigError(f"{what}: classification=True needs class targets "
                          f"(targets={Targets.PROBABILITY.value!r} or {Targets.ONE_HOT_OR_LABELS.value!r})")
    return bool(value)


def check_link_targets(link: Link | None, kind: Targets, what: str) -> None:
    """Refuse a link whose fused form does not hold for the declared targets."""
    if link is not None and kind not in LINK_TARGETS[link]:
        allowed = ", ".join(sorted(repr(t.value) for t in LINK_TARGETS[link]))
        raise ConfigError(f"{what}: link={link.value!r} needs targets {allowed}, got {kind.value!r}")


def check_output(act: Any, loss: Any, width: object, where: str) -> None:
    """Refuse an output layer (activation ``act``, ``width`` outputs, named ``where``: "layer 3")
    that the loss's declared capabilities rule out: the activation it requires, its narrowest
    output, a different link (BCE's independent probabilities on a softmax row)."""
    if loss.requires is not None and (act.user or act.name != loss.requires):
        raise SpecError(f"loss {loss.name!r} needs a {loss.requires} output layer, but {where} uses {act.name!r}")
    if isinstance(width, numbers.Integral) and width < loss.min_outputs:
        raise SpecError(f"{loss.name} needs an output width >= {loss.min_outputs}, got {width}")
    if loss.link is not None and act.link is not None and act.link is not loss.link:
        raise SpecError(f"{loss.name} on a {act.name} output is not a valid combination: the loss is declared "
                        f"for link {loss.link.value!r}, {act.name} has link {act.link.value!r}"
                        f"{_losses_for(act.link)}")


def _losses_for(link: Link) -> str:
    """``"; use cross_entropy"``: the registry losses declared for ``link``, as a hint."""
    from . import registry  # late: the registry imports this module

    names = [n for n in registry.loss_names() if registry.loss(n).link is link]
    return f"; use {' or '.join(names)}" if names else ""


def _probabilities(name: str, arr: np.ndarray) -> None:
    # comparisons, not unit_interval: a NaN is the finiteness check's to refuse (and lets
    # check_finite=False through), not this one's
    if (arr < 0).any() or (arr > 1).any():
        raise DataError(f"{name} targets must lie in [0, 1]")


#: how far a class row's sum may be from 1: numpy.allclose's rule (atol 1e-6 + rtol 1e-5 * 1)
ROW_SUM_TOLERANCE = 1e-6 + 1e-5


_min, _max = np.minimum.reduce, np.maximum.reduce

#: the bits of 1.0 per float dtype: a non-negative float's bits order as unsigned integers do,
#: so an array lies in [+0, 1] exactly when the maximum of its bits is at most these
_ONE_BITS = {np.dtype(np.float64): (np.dtype(np.uint64), 0x3FF0000000000000),
             np.dtype(np.float32): (np.dtype(np.uint32), 0x3F800000)}


def unit_interval(arr: np.ndarray) -> bool:
    """Every entry in [0, 1] (NaN and infinity fail). It runs on every kernel call that takes
    probabilities, so the common case is one integer reduction over the bits, with no
    temporary; an array it cannot decide (-0.0, another dtype) gets the comparisons."""
    if not arr.size:
        return True
    bits = _ONE_BITS.get(arr.dtype)
    if bits is not None and _max(arr.view(bits[0]), axis=None) <= bits[1]:
        return True
    return bool(_min(arr, axis=None) >= 0 and _max(arr, axis=None) <= 1)  # NaN fails both


@functools.lru_cache(maxsize=64)
def _ones(dtype: np.dtype, k: int) -> np.ndarray:
    ones = np.ones(k, dtype=dtype)
    ones.flags.writeable = False
    return ones


def simplex_rows(arr: np.ndarray) -> bool:
    """Every entry in [0, 1] and every row summing to 1 within :data:`ROW_SUM_TOLERANCE`
    (NaN and infinity fail). It runs on every kernel call that takes class rows: the row sums
    are one product with a vector of ones (a NaN or infinity carries into its row's sum),
    which on rows of ten classes costs a fifth of ``sum(axis=1)``; ``np.allclose`` would cost
    15 µs on small arrays."""
    if not unit_interval(arr):
        return False
    if not arr.size:
        return True
    sums = np.dot(arr, _ones(arr.dtype, arr.shape[1])) if arr.dtype in _ONE_BITS else arr.sum(axis=1)
    return bool(_min(sums) >= 1.0 - ROW_SUM_TOLERANCE and _max(sums) <= 1.0 + ROW_SUM_TOLERANCE)


def _simplex_rows(name: str, arr: np.ndarray) -> None:
    if not simplex_rows(arr):
        raise DataError(f"{name} targets must be one-hot or probability rows summing to 1")


def _any(name: str, arr: np.ndarray) -> None:
    """Real targets: any finite value (finiteness is checked with every array)."""


#: the check on a (N, K) array of targets, per declared kind
TARGET_CHECKS: dict[Targets, Callable[[str, np.ndarray], None]] = {
    Targets.REAL: _any,
    Targets.PROBABILITY: _probabilities,
    Targets.ONE_HOT_OR_LABELS: _simplex_rows,
}


def check_target_values(loss: Any, arr: np.ndarray, where: str | None = None) -> None:
    """Refuse (N, K) targets outside what ``loss`` declares, with a DataError naming it (and
    ``where`` they are: one output's targets of several)."""
    TARGET_CHECKS[loss.targets](loss.name if where is None else f"{where}: {loss.name}", arr)


__all__ = ["C_TARGET_KIND", "LINK_TARGETS", "LOSS_CAPABILITIES", "LOSS_DEFAULTS", "Link", "TARGET_CHECKS", "Targets", "check_link_targets",
           "check_output", "check_target_values", "declared_classification", "declared_link",
           "declared_min_outputs", "declared_targets"]
