"""Name -> SymPy expression tables for the built-in activations and losses.

Contract: an element-wise activation is *one* SymPy expression in the canonical variable
:data:`X` (plus named, defaulted parameters such as leaky ReLU's slope); a loss is one
element-wise SymPy expression in the prediction :data:`P` and target :data:`T` plus a
reduction. Nothing else: derivatives come from ``sympy.diff`` and stable forms from the
simplifier, so adding an entry here (or calling :func:`register_activation` /
:func:`register_loss` from user code) needs no other code.

Row-wise activations (softmax) are not element-wise; they are registered with
``kind="rowwise"`` and their Jacobian rule is the SOFTMAX pullback in :mod:`symnn.autodiff.vjp`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import sympy as sp

from . import capabilities, naming
from .capabilities import Link, Targets
from .errors import UnknownActivationError

#: Canonical scalar variable of element-wise activations (real, so ``diff(Abs(x))`` is ``sign``).
X = sp.Symbol("x", real=True)
#: Canonical prediction and target symbols of element-wise losses.
P = sp.Symbol("p", real=True)
T = sp.Symbol("y", real=True)


@dataclass(frozen=True)
class ActivationEntry:
    """A registered activation: expression in :data:`X`, parameter defaults, init hint."""

    name: str
    expr: sp.Expr | None  # None for row-wise entries
    kind: str = "elementwise"  # or "rowwise"
    params: Mapping[str, float] = field(default_factory=dict)
    init: str = "xavier"  # default initialisation scheme for layers using it
    latex: str | None = None
    domain: tuple[float, float] | None = None  # open interval the expression is defined on
    #: closed interval holding every value, stated for row-wise entries that have no expression
    #: to sample (softmax: [0, 1]); element-wise ones are sampled instead
    value_range: tuple[float, float] | None = None
    #: the output family it belongs to: a loss with the same link fuses with it (sigmoid: logistic)
    link: Link | None = None


@dataclass(frozen=True)
class LossEntry:
    """A registered loss: element-wise term in (:data:`P`, :data:`T`) and its reduction.

    ``reduction="mean"`` averages the term over every element of the output (PyTorch's
    default for MSE/BCE); ``"batch"`` sums over classes then averages over rows (cross-entropy).
    ``targets``, ``classification``, ``min_outputs``, ``requires`` and ``link`` are the loss's
    declared capabilities (:mod:`symnn.capabilities`): the code reads them, never the name.
    """

    name: str
    expr: sp.Expr
    reduction: str = "mean"
    requires: str | None = None  # output activation the loss is defined on (e.g. softmax)
    latex: str | None = None
    domain: tuple[float, float] | None = None  # open interval of predictions it is defined on
    targets: Targets = Targets.REAL
    classification: bool = False
    min_outputs: int = 1
    link: Link | None = None


_ACTIVATIONS: dict[str, ActivationEntry] = {}
_LOSSES: dict[str, LossEntry] = {}


def register_activation(
    name: str,
    expr: sp.Expr | None,
    *,
    kind: str = "elementwise",
    params: Mapping[str, float] | None = None,
    init: str = "xavier",
    latex: str | None = None,
    domain: tuple[float, float] | None = None,
    value_range: tuple[float, float] | None = None,
    link: Link | str | None = None,
) -> ActivationEntry:
    """Add an activation to the registry (an existing name is replaced); ``domain`` as for
    :class:`symnn.declare.Activation`. The name and ``latex`` pass the same checks as the
    constructor's (:func:`symnn.naming.identifier`, :func:`symnn.naming.latex_snippet`): a
    registry name is printed wherever a constructed one is."""
    from .expressions import require_domain  # late: expressions imports the simplifier

    naming.identifier(name, "activation name")
    latex = naming.latex_snippet(latex, f"activation {name!r}: latex")
    entry = ActivationEntry(name, expr, kind, MappingProxyType(dict(params or {})), init, latex,
                            require_domain(domain, f"activation {name!r}"), value_range,
                            capabilities.declared_link(link, f"activation {name!r}"))
    _ACTIVATIONS[name] = entry
    return entry


def register_loss(
    name: str,
    expr: sp.Expr,
    *,
    reduction: str = "mean",
    requires: str | None = None,
    latex: str | None = None,
    domain: tuple[float, float] | None = None,
    targets: Targets | str = Targets.REAL,
    classification: bool = False,
    min_outputs: int = 1,
    link: Link | str | None = None,
) -> LossEntry:
    """Add a loss to the registry (an existing name is replaced); ``domain`` and the
    capabilities (``targets``, ``classification``, ``min_outputs``, ``requires``, ``link``) as for
    :class:`symnn.declare.Loss`. Name and ``latex`` are checked as in :func:`register_activation`."""
    from .expressions import require_domain  # late: expressions imports the simplifier

    naming.identifier(name, "loss name")
    what = f"loss {name!r}"
    latex = naming.latex_snippet(latex, f"{what}: latex")
    if requires is not None:
        activation(requires)  # an unknown name is refused here, not when a network is built
    kind = capabilities.declared_targets(targets, what)
    fuses = capabilities.declared_link(link, what)
    capabilities.check_link_targets(fuses, kind, what)
    entry = LossEntry(name, expr, reduction, requires, latex, require_domain(domain, what), kind,
                      capabilities.declared_classification(classification, kind, what),
                      capabilities.declared_min_outputs(min_outputs, what), fuses)
    _LOSSES[name] = entry
    return entry


def closest_name(name: str, names: list[str]) -> str | None:
    """The valid name a typo most likely meant, ignoring case: an exact case-insensitive match
    first (``'Relu'`` -> ``'relu'``, where plain difflib prefers ``'elu'``), else difflib on
    the lower-cased names (``'LeakyReLU'`` -> ``'leaky_relu'``)."""
    lowered = {n.lower(): n for n in sorted(names)}
    key = name.lower()
    if key in lowered:
        return lowered[key]
    close = difflib.get_close_matches(key, list(lowered), n=1)
    return lowered[close[0]] if close else None


def _unknown(kind: str, name: str, names: list[str]) -> UnknownActivationError:
    close = closest_name(name, names) if len(name) <= naming.MAX_NAME_LENGTH else None
    hint = f" (did you mean {close!r}?)" if close else ""
    return UnknownActivationError(
        f"unknown {kind} {naming.shown(name)}{hint}; valid names: {', '.join(sorted(names))}"
    )


def activation(name: str) -> ActivationEntry:
    """Look up an activation by name, suggesting the closest valid name on a typo."""
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise _unknown("activation", str(name), list(_ACTIVATIONS))
    return _ACTIVATIONS[name]


def loss(name: str) -> LossEntry:
    """Look up a loss by name, suggesting the closest valid name on a typo."""
    if not isinstance(name, str) or name not in _LOSSES:
        raise _unknown("loss", str(name), list(_LOSSES))
    return _LOSSES[name]


def activation_names() -> list[str]:
    return sorted(_ACTIVATIONS)


def loss_names() -> list[str]:
    return sorted(_LOSSES)


# -- built-in activations: one SymPy expression each -----------------------------------------
_alpha = sp.Symbol("alpha", positive=True)
register_activation("identity", X, latex=r"\operatorname{id}")
register_activation("sigmoid", 1 / (1 + sp.exp(-X)), latex=r"\sigma", link=Link.LOGISTIC)
register_activation("tanh", sp.tanh(X), latex=r"\tanh")
register_activation("relu", sp.Max(X, 0), init="he", latex=r"\operatorname{ReLU}")
register_activation(
    "leaky_relu",
    sp.Piecewise((X, X > 0), (_alpha * X, True)),
    params={"alpha": 0.01},
    init="he",
    latex=r"\operatorname{LeakyReLU}",
)
register_activation(
    "elu",
    sp.Piecewise((X, X > 0), (_alpha * (sp.exp(X) - 1), True)),
    params={"alpha": 1.0},
    init="he",
    latex=r"\operatorname{ELU}",
)
register_activation("softplus", sp.log(1 + sp.exp(X)), latex=r"\operatorname{softplus}")
register_activation("swish", X / (1 + sp.exp(-X)), latex=r"\operatorname{swish}")
register_activation("silu", X / (1 + sp.exp(-X)), latex=r"\operatorname{SiLU}")
register_activation(
    "gelu", X / 2 * (1 + sp.erf(X / sp.sqrt(2))), init="he", latex=r"\operatorname{GELU}"
)
register_activation("softsign", X / (1 + sp.Abs(X)), latex=r"\operatorname{softsign}")
register_activation("softmax", None, kind="rowwise", latex=r"\operatorname{softmax}", value_range=(0.0, 1.0),
                    link=Link.SOFTMAX)

# -- built-in losses ---------------------------------------------------------------------------
register_loss("mse", (P - T) ** 2, latex=r"\operatorname{MSE}")
register_loss("bce", -(T * sp.log(P) + (1 - T) * sp.log(1 - P)), latex=r"\operatorname{BCE}",
              targets=Targets.PROBABILITY, classification=True, link=Link.LOGISTIC)
register_loss(
    "cross_entropy",
    -T * sp.log(P),
    reduction="batch",
    requires="softmax",
    latex=r"\operatorname{CE}",
    targets=Targets.ONE_HOT_OR_LABELS,
    classification=True,
    min_outputs=2,  # softmax over one output is constant 1
    link=Link.SOFTMAX,
)
