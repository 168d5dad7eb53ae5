"""The user-facing network description: ``Network``, ``Dense``, ``Activation``, ``Loss``.

Everything here is validated eagerly, before any symbolic work, so a mistake is reported
where it was made and names the layer concerned (RELIABILITY.md S1-S14).
"""

from __future__ import annotations

import numbers
import sys
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import sympy as sp

from . import capabilities, ir, naming, registry
from .capabilities import Link, Targets
from .errors import (
    ConfigError,
    InvalidExpressionError,
    LayerSizeMismatchError,
    SpecError,
    SpecTypeError,
)
from .expressions import (
    Domain,
    check_elementwise,
    domain_text,
    outside_values,
    require_domain,
    require_scalar_expr,
    require_symbols,
    warn_non_smooth,
)
from .layers import (Emitted, Graph, Layer, Shape, Tensor, is_sequence_of, register_layer, rows_as_steps,
                     steps_as_rows, trace)

_MAX_WIDTH = 2**31 - 1
Width = int | sp.Symbol


def _width(value: object, what: str) -> Width:
    """Validate a layer width: a positive int (NumPy ints too) or a SymPy symbol."""
    if isinstance(value, (bool, np.bool_)):
        raise SpecTypeError(f"{what}: width must be an integer, got bool {value!r}")
    if isinstance(value, sp.Symbol):
        if value.is_positive is False or value.is_integer is False:
            raise SpecError(f"{what}: symbolic width {value} must be a positive integer symbol")
        return value
    if isinstance(value, sp.Integer):
        value = int(value)
    if not isinstance(value, numbers.Integral):
        raise SpecTypeError(
            f"{what}: width must be an integer, got {type(value).__name__} {value!r}"
        )
    value = int(value)
    if value < 1:
        raise SpecError(f"{what}: width must be >= 1, got {value}")
    if value > _MAX_WIDTH:
        raise SpecError(f"{what}: width must be <= {_MAX_WIDTH}, got a {value.bit_length()}-bit number")
    return value


#: largest magnitude of a built-in activation's parameter: every network is emitted for float32
#: too, where a larger one prints as inf (and ELU's alpha=1e308 overflowed the simplifier's
#: float fit)
_PARAM_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Activation:
    """An activation function: one SymPy expression of one variable, or row-wise softmax.

    ``domain=(lo, hi)`` declares an expression defined only on that open interval
    (``log(z)``: ``domain=(0, math.inf)``): it is checked there only, and the emitted code
    keeps the input inside it (:class:`symnn.functions.Guard`; an input at or beyond an end is
    evaluated a few ulps inside it).

    Example:
        >>> import sympy as sp, symnn as sn
        >>> z = sp.Symbol("z")
        >>> swish = sn.Activation("swish", z / (1 + sp.exp(-z)), var=z)
        >>> swish.expr
        x/(1 + exp(-x))
    """

    name: str
    expr: sp.Expr | None = None  # in registry.X; None for row-wise
    var: sp.Symbol | None = None
    kind: str = "elementwise"
    init: str = "xavier"
    user: bool = True
    latex_name: str | None = None
    params: tuple[tuple[str, float], ...] = ()  # a built-in's parameters, e.g. (("alpha", 0.2),)
    domain: Domain | None = None  # the open interval the expression is defined on; None: all reals
    link: Link | None = None  # a built-in's output family (sigmoid: logistic), keys the loss fusions

    def __init__(
        self,
        name: str,
        expr: object = None,
        var: sp.Symbol | None = None,
        *,
        init: str = "xavier",
        latex: str | None = None,
        domain: object = None,
    ) -> None:
        naming.identifier(name, "activation name")
        latex = naming.latex_snippet(latex, f"activation {name!r}: latex")
        if var is None:
            raise InvalidExpressionError(f"activation {name!r}: pass var=<the SymPy symbol of expr>")
        if not isinstance(var, sp.Symbol):
            raise InvalidExpressionError(f"activation {name!r}: var must be a SymPy Symbol")
        if init not in _SCHEMES:
            raise ConfigError(f"activation {name!r}: init must be one of {sorted(_SCHEMES)}")
        domain = require_domain(domain, f"activation {name!r}")
        expr = check_elementwise(expr, var, f"activation {name!r}", domain=domain)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "expr", expr.xreplace({sp.Symbol(var.name, real=True): registry.X}))
        object.__setattr__(self, "var", registry.X)
        object.__setattr__(self, "kind", "elementwise")
        object.__setattr__(self, "init", init)
        object.__setattr__(self, "user", True)
        object.__setattr__(self, "latex_name", latex)
        object.__setattr__(self, "params", ())
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "link", None)

    @classmethod
    def builtin(cls, name: str, **params: float) -> "Activation":
        """A registry activation, optionally with parameters (``builtin("leaky_relu", alpha=0.2)``)."""
        entry = registry.activation(name)
        unknown = set(params) - set(entry.params)
        if unknown:
            raise ConfigError(
                f"activation {name!r} has parameters {sorted(entry.params) or 'none'}, "
                f"got {sorted(unknown)}"
            )
        self = object.__new__(cls)
        expr = entry.expr
        values = {**entry.params, **params}
        if expr is not None:
            subs = {}
            for pname, val in values.items():
                # "not <=" also refuses NaN; an int of any size compares without overflow
                if not isinstance(val, numbers.Real) or isinstance(val, bool) or not abs(val) <= _PARAM_MAX:
                    raise ConfigError(f"activation {name!r}: {pname} must be a finite real of magnitude "
                                      f"at most {_PARAM_MAX:.4g} (float32's largest), got {val!r}")
                subs[sp.Symbol(pname, positive=True)] = sp.nsimplify(val, rational=True) if float(
                    val
                ) == round(float(val), 12) else sp.Float(val, 17)
            expr = expr.subs(subs)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "expr", expr)
        object.__setattr__(self, "var", registry.X if expr is not None else None)
        object.__setattr__(self, "kind", entry.kind)
        object.__setattr__(self, "init", entry.init)
        object.__setattr__(self, "user", False)
        object.__setattr__(self, "latex_name", entry.latex)
        object.__setattr__(self, "params", tuple(sorted((k, float(v)) for k, v in values.items())))
        object.__setattr__(self, "domain", entry.domain)
        object.__setattr__(self, "link", entry.link)
        return self

    @property
    def is_rowwise(self) -> bool:
        return self.kind == "rowwise"


def activation(name: str, **params: float) -> Activation:
    """Registry activation by name, e.g. ``sn.activation("leaky_relu", alpha=0.2)``."""
    return Activation.builtin(name, **params)


@dataclass(frozen=True)
class Loss:
    """A loss: one element-wise SymPy expression of a prediction and a target symbol.

    ``reduction="mean"`` averages over all output elements (PyTorch's MSE/BCE default);
    ``"batch"`` sums over the output columns and averages over the rows.

    ``domain=(lo, hi)`` declares the open interval of predictions the loss is defined on
    (``domain=(0, 1)`` for a loss with ``log(p)`` and ``log(1 - p)``): the expression is checked
    there only (with the target at 1/3), the network's output activation must take its values in
    ``[lo, hi]``, and the emitted code clips the prediction a few ulps inside the ends
    (:func:`symnn.functions.guard_bounds`), so a sigmoid saturated to exactly 0 or 1 gives a
    finite loss and gradient. The target is data: it is not guarded.

    The keyword-only capabilities say what the loss is, since the code never goes by its name
    (:mod:`symnn.capabilities`; the defaults declare nothing):

    * ``targets``: ``"real"`` (default), ``"probability"`` (each target in [0, 1]) or
      ``"one_hot_or_labels"`` (rows summing to 1, or integer labels (N,): the kernels then take
      labels, the C API gets its ``*_labels`` entry points);
    * ``classification=True``: outputs are class probabilities (accuracy, ``predict`` labels);
    * ``min_outputs``: the narrowest output layer it accepts;
    * ``requires``: the registry activation the output layer must use (``"softmax"``);
    * ``link``: ``"logistic"`` or ``"softmax"``, the output family the loss is the negative
      log-likelihood of: on such an output it is fused into a stable form from the logits, once
      SymPy proves the rewrite for this expression (a loss that is not BCE/cross-entropy fails
      that proof with a SpecError).

    Example (Huber, delta = 1):
        >>> import sympy as sp, symnn as sn
        >>> p, y = sp.symbols("p y")
        >>> e = p - y
        >>> huber = sn.Loss("huber", sp.Piecewise((e**2 / 2, sp.Abs(e) <= 1),
        ...                                       (sp.Abs(e) - sp.Rational(1, 2), True)),
        ...                 pred=p, target=y)
    """

    name: str
    expr: sp.Expr
    reduction: str = "mean"
    requires: str | None = None
    user: bool = True
    latex_name: str | None = None
    domain: Domain | None = None  # the predictions the loss is defined on; None: all reals
    targets: Targets = Targets.REAL
    classification: bool = False
    min_outputs: int = 1
    link: Link | None = None

    def __init__(
        self,
        name: str,
        expr: object,
        pred: sp.Symbol | None = None,
        target: sp.Symbol | None = None,
        *,
        reduction: str = "mean",
        latex: str | None = None,
        domain: object = None,
        targets: Targets | str = Targets.REAL,
        classification: bool = False,
        min_outputs: int = 1,
        requires: str | None = None,
        link: Link | str | None = None,
    ) -> None:
        naming.identifier(name, "loss name")
        latex = naming.latex_snippet(latex, f"loss {name!r}: latex")
        if not isinstance(pred, sp.Symbol) or not isinstance(target, sp.Symbol) or pred == target:
            raise InvalidExpressionError(
                f"loss {name!r}: pass pred=<prediction Symbol> and target=<target Symbol> "
                "(two different SymPy symbols)"
            )
        if reduction not in ("mean", "batch"):
            raise ConfigError(f"loss {name!r}: reduction must be 'mean' or 'batch', got {reduction!r}")
        what = f"loss {name!r}"
        expr = require_scalar_expr(expr, what)
        require_symbols(expr, {pred, target}, what)
        if pred not in expr.free_symbols:
            raise InvalidExpressionError(f"{what} {expr} does not depend on the prediction {pred}")
        if target not in expr.free_symbols:
            raise InvalidExpressionError(f"{what} {expr} does not use the target symbol {target}")
        domain = require_domain(domain, what)
        caps = _loss_capabilities(targets, classification, min_outputs, requires, link, what)
        canonical = expr.subs({pred: registry.P, target: registry.T}, simultaneous=True)
        # the prediction-derivative must exist and be real (the target is data, not
        # differentiated, so it is fixed at a probe value); messages and the kink warning
        # print the expression as written, in the user's symbols
        probe = expr.subs(target, sp.Rational(1, 3))
        warn_non_smooth(probe, what, shown=expr, stacklevel=2)
        check_elementwise(probe, pred, what, user=False, domain=domain, shown=expr)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "expr", canonical)
        object.__setattr__(self, "reduction", reduction)
        object.__setattr__(self, "user", True)
        object.__setattr__(self, "latex_name", latex)
        object.__setattr__(self, "domain", domain)
        for key, value in caps.items():
            object.__setattr__(self, key, value)

    @classmethod
    def builtin(cls, name: str) -> "Loss":
        entry = registry.loss(name)
        self = object.__new__(cls)
        for k, v in (
            ("name", name),
            ("expr", entry.expr),
            ("reduction", entry.reduction),
            ("requires", entry.requires),
            ("user", False),
            ("latex_name", entry.latex),
            ("domain", entry.domain),
            ("targets", entry.targets),
            ("classification", entry.classification),
            ("min_outputs", entry.min_outputs),
            ("link", entry.link),
        ):
            object.__setattr__(self, k, v)
        return self

    @property
    def takes_labels(self) -> bool:
        """Whether the kernels accept integer class labels (N,) for ``Y``."""
        return self.targets is Targets.ONE_HOT_OR_LABELS

    @property
    def averages_entries(self) -> bool:
        """Whether the mean is over every output entry (``reduction="mean"``), not over the rows."""
        return self.reduction == "mean"


def _loss_capabilities(targets: object, classification: object, min_outputs: object, requires: object,
                       link: object, what: str) -> dict[str, object]:
    """A user loss's declared capabilities, checked (:mod:`symnn.capabilities`)."""
    kind = capabilities.declared_targets(targets, what)
    fuses = capabilities.declared_link(link, what)
    capabilities.check_link_targets(fuses, kind, what)
    if requires is not None:
        if not isinstance(requires, str):
            raise SpecTypeError(f"{what}: requires must be an activation name, got {type(requires).__name__}")
        registry.activation(requires)  # an unknown name: UnknownActivationError with a suggestion
    return {"targets": kind, "classification": capabilities.declared_classification(classification, kind, what),
            "min_outputs": capabilities.declared_min_outputs(min_outputs, what), "requires": requires,
            "link": fuses}


@register_layer
@dataclass(frozen=True)
class Dense(Layer):
    """A dense layer ``a = f(X @ W.T + b)`` with ``W`` of shape (out, in), like ``nn.Linear``.

    In a layer graph (``sn.Dense(64, 32, "relu")(x)``) its parameters are ``<name>.weight`` and
    ``<name>.bias``; in the Sequential form they are ``W<l>`` and ``b<l>``."""

    in_features: Width
    out_features: Width
    activation: Activation = field(default=None)  # type: ignore[assignment]
    dropout: float = 0.0
    name: str | None = None

    KIND = "dense"
    PARAM_TEX = {"weight": "W", "bias": "b"}
    REGULARISED = ("weight",)
    OUTPUT_TEX = "A"

    def __init__(self, in_features: object, out_features: object, activation: object = "identity",
                 *, dropout: float = 0.0, name: str | None = None):
        object.__setattr__(self, "name", None if name is None else naming.layer_name(name))
        object.__setattr__(self, "in_features", _width(in_features, "Dense input"))
        object.__setattr__(self, "out_features", _width(out_features, "Dense output"))
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise SpecTypeError(f"Dense dropout must be a real number in [0, 1), got {dropout!r}")
        if not 0.0 <= dropout < 1.0:  # compares an int of any size, and refuses NaN
            raise ConfigError(f"Dense dropout must be in [0, 1), got {dropout!r}")
        object.__setattr__(self, "dropout", float(dropout))
        if isinstance(activation, str):
            activation = Activation.builtin(activation)
        elif not isinstance(activation, Activation):
            raise SpecTypeError(
                "Dense activation must be a registry name or an sn.Activation, got "
                f"{type(activation).__name__}"
            )
        object.__setattr__(self, "activation", activation)

    # -- the layer protocol (graph form) ----------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[Width, ...]]:
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        if len(shapes) != 1:
            raise SpecError(f"Dense takes one tensor, got {len(shapes)}")
        if is_sequence_of(shapes[0], self.in_features):  # each step of a sequence, as nn.Linear on (N, T, F)
            return (shapes[0][0], self.out_features)
        if shapes[0] != (self.in_features,):
            raise LayerSizeMismatchError(f"Dense({self.in_features}, {self.out_features}) applied to a "
                                         f"tensor of shape {shapes[0]}: it expects ({self.in_features},), or a "
                                         f"sequence of steps (T, {self.in_features})")
        return (self.out_features,)

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        from .graph import apply_activation

        (x,) = inputs
        steps = bool(shapes) and len(shapes[0]) == 2  # a sequence: every step's product at once
        rows = steps_as_rows(x, self.in_features) if steps else x
        z = ir.add_bias(ir.matmul(rows, params["weight"], trans_b=True), params["bias"])
        a = apply_activation(self.activation, z)
        return Emitted(rows_as_steps(a, x.shape[0]) if steps else a, ((z, "Z"),))

    def init(self, rng: np.random.Generator, scheme: str | None) -> dict[str, np.ndarray]:
        fan_in, fan_out = int(self.in_features), int(self.out_features)
        if _SCHEMES[scheme or self.activation.init] == "he":
            w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_out, fan_in))
        else:
            a = np.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-a, a, size=(fan_out, fan_in))
        return {"weight": w, "bias": np.zeros(fan_out)}

    @property
    def drop_probability(self) -> float:
        return self.dropout

    @property
    def output_activation(self) -> "Activation":
        return self.activation

    def describe(self) -> str:
        drop = f", dropout {self.dropout:g} in training" if self.dropout else ""
        return f"Dense({self.in_features} -> {self.out_features}), {self.activation.name}{drop}"


@register_layer
@dataclass(frozen=True)
class Activate(Layer):
    """An activation applied on its own, as ``torch.nn.ReLU()`` or ``F.relu`` after an addition
    (``sn.Activate("relu")(a + b)``): no parameters; any registry name or ``sn.Activation``.
    Softmax only on an output, as for a Dense."""

    activation: Activation
    name: str | None = None

    KIND = "activation"
    OUTPUT_TEX = "A"

    def __init__(self, activation: object, *, name: str | None = None) -> None:
        object.__setattr__(self, "name", None if name is None else naming.layer_name(name))
        if isinstance(activation, str):
            activation = Activation.builtin(activation)
        elif not isinstance(activation, Activation):
            raise SpecTypeError("Activate takes a registry name or an sn.Activation, got "
                                f"{type(activation).__name__}")
        object.__setattr__(self, "activation", activation)

    @property
    def output_activation(self) -> Activation:
        return self.activation

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        if len(shapes) != 1:
            raise SpecError(f"Activate takes one tensor, got {len(shapes)}")
        if len(shapes[0]) > 2 and self.activation.is_rowwise:
            raise LayerSizeMismatchError(f"softmax applies to a tensor of features or to each step of a sequence "
                                         f"(T, F), got shape {shapes[0]}: flatten it first")
        if self.activation.is_rowwise and shapes[0][-1] == 1:
            raise SpecError("softmax over a single feature is constant 1")
        return shapes[0]

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        from .graph import apply_activation

        (x,) = inputs
        if self.activation.is_rowwise and shapes and len(shapes[0]) == 2:  # each step's softmax
            rows = steps_as_rows(x, shapes[0][1])
            return Emitted(rows_as_steps(apply_activation(self.activation, rows), x.shape[0]), ((x, "Z"),))
        return Emitted(apply_activation(self.activation, x), ((x, "Z"),))

    def describe(self) -> str:
        return self.activation.name


def _state_dict_key(paths: Mapping[str, str], param: str) -> str:
    """``param``'s ``state_dict()`` key given the module path of each nested layer (``paths``):
    ``<path>.<leaf>`` for those, else :func:`symnn.torch_fx.state_dict_key`'s rule."""
    from .torch_fx import state_dict_key

    layer, dot, leaf = param.rpartition(".")
    path = paths.get(layer)
    return f"{path}.{leaf}" if path is not None and dot else state_dict_key(param)


@dataclass(frozen=True)
class Network:
    """A stack of dense layers and a loss, optionally with L1/L2 weight penalties.

    The loss is ``mean(loss terms) + l2/2 * sum(W**2) + l1 * sum(|W|)`` over weight matrices
    (biases are not regularised). ``name`` prefixes every emitted C symbol and names the emitted
    files, so it is checked by :func:`symnn.naming.network_name` (a plain identifier, not
    ``main``, ``math``...); activation and loss names and their ``latex`` are checked by
    :func:`symnn.naming.identifier` and :func:`symnn.naming.latex_snippet`.
    """

    layers: tuple[Dense, ...]
    loss: Loss
    l1: float = 0.0
    l2: float = 0.0
    name: str = "mlp"
    graph: Graph | None = None  # the layer graph, for a network built by calling layers on tensors
    #: one loss per output, in the order of ``outputs=`` (``(loss,)`` for one output)
    losses: tuple[Loss, ...] = ()
    #: the weight of each output's loss in the total (all 1.0 unless ``loss_weights=`` says)
    loss_weights: tuple[float, ...] = ()
    #: the parameters that training leaves as they are (``frozen=``), in the parameters' order:
    #: no gradient is derived for them (their gradient is 0) and no optimiser step touches them
    frozen: tuple[str, ...] = ()
    #: ``((layer name, module path), ...)``: the layers imported from a nested PyTorch module
    #: (``blocks.0.conv``), whose parameters :meth:`state_dict_key` keys under that path
    module_paths: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        layers: Sequence[Dense] | None = None,
        loss: "str | Loss | Sequence[str | Loss]" = "mse",
        *,
        inputs: Tensor | Sequence[Tensor] | None = None,
        outputs: Tensor | Sequence[Tensor] | None = None,
        loss_weights: Sequence[float] | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        name: str = "mlp",
        frozen: Sequence[str] = (),
    ) -> None:
        if inputs is not None or outputs is not None:
            if layers is not None:
                raise SpecError("give either a list of layers (the Sequential form) or inputs= and "
                                "outputs= (a layer graph), not both")
            self._init_graph(inputs, outputs, loss, loss_weights, l1, l2, name)
            self._freeze(frozen)
            return
        if loss_weights is not None:
            raise SpecError("loss_weights= weighs the losses of a layer graph's several outputs; a "
                            "Sequential network has one output and one loss")
        if layers is None:
            raise SpecError("a network needs a list of layers, or inputs= and outputs= of a layer graph")
        if isinstance(layers, Dense):
            layers = [layers]
        if not isinstance(layers, (list, tuple)):
            raise SpecTypeError(f"layers must be a list of sn.Dense, got {type(layers).__name__}")
        if not layers:
            raise SpecError("network has no layers: give at least one sn.Dense")
        for i, layer in enumerate(layers, 1):
            if not isinstance(layer, Dense):
                raise SpecTypeError(f"layer {i}: expected sn.Dense, got {type(layer).__name__}")
        for i, (a, b) in enumerate(zip(layers, layers[1:]), 1):
            if sp.sympify(a.out_features) != sp.sympify(b.in_features):
                raise LayerSizeMismatchError(
                    f"layer {i} outputs {a.out_features} features but layer {i + 1} "
                    f"expects {b.in_features}"
                )
        for i, layer in enumerate(layers[:-1], 1):
            if layer.activation.is_rowwise:
                raise SpecError(f"layer {i}: softmax is only supported on the output layer")
        loss = _as_loss(loss)
        _check_penalties(l1, l2)
        naming.network_name(name)  # before any name is printed: it names files and C symbols
        last = layers[-1]
        out = last.out_features
        capabilities.check_output(last.activation, loss, out, f"layer {len(layers)}")
        if last.activation.is_rowwise and out == 1:
            raise SpecError(f"layer {len(layers)}: softmax over a single output is constant 1")
        if last.dropout:
            raise SpecError(f"layer {len(layers)} is the output layer: dropout applies to hidden layers only")
        if loss.domain is not None:
            _require_output_in_domain(last.activation, loss, len(layers))
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "loss", loss)
        object.__setattr__(self, "l1", float(l1))
        object.__setattr__(self, "l2", float(l2))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "losses", (loss,))
        object.__setattr__(self, "loss_weights", (1.0,))
        self._freeze(frozen)

    def _freeze(self, frozen: object) -> None:
        """``frozen``: parameter names (``W1``, ``conv2d1.weight``) or, in a layer graph, layer
        names (each of its parameters), resolved to the parameters in their order. Freezing
        every parameter leaves nothing to train, and is refused."""
        if isinstance(frozen, str) or not isinstance(frozen, (list, tuple)):
            raise SpecTypeError(f"frozen must be a list of parameter or layer names, got {frozen!r}")
        shapes = self.param_shapes()
        layer_names = set(self.graph.names) if self.graph is not None else set()
        chosen: set[str] = set()
        buffers = set(self.buffers)
        for entry in frozen:
            if not isinstance(entry, str):
                raise SpecTypeError(f"frozen: a name is a string, got {type(entry).__name__}")
            if entry in buffers:
                raise SpecError(f"frozen: {naming.shown(entry)} is a running statistic, which training "
                                "updates from the batches and never by a gradient; freeze its layer's parameters")
            if entry in shapes:
                chosen.add(entry)
            elif entry in layer_names:
                chosen |= {p for p in shapes if p.startswith(f"{entry}.") and p not in buffers}
            else:
                raise SpecError(f"frozen: {naming.shown(entry)} is neither a parameter {list(shapes)} nor a layer"
                                + (f" {sorted(layer_names)}" if layer_names else ""))
        if shapes and chosen == set(shapes) - buffers:
            raise SpecError("frozen: every parameter is frozen, so there is nothing to train")
        object.__setattr__(self, "frozen", tuple(p for p in shapes if p in chosen))

    def state_dict_key(self, param: str) -> str:
        """The PyTorch ``state_dict()`` key of parameter ``param``: ``<module path>.<leaf>`` for a
        layer imported from a nested module (:attr:`module_paths`), else the parameter's name
        (an nn.Sequential's module ``_3.weight`` is ``3.weight``: :func:`symnn.torch_fx.state_dict_key`)."""
        return _state_dict_key(dict(self.module_paths), param)

    def set_module_paths(self, paths: Mapping[str, str]) -> None:
        """Record the PyTorch module each of the layers ``paths`` names came from (``from_torch``
        of a nested module, or a spec's ``module =``), after checking that each is a layer of
        the graph, each path a module's qualified name (:func:`symnn.naming.module_path`), and
        that no two parameters get one ``state_dict`` key. Called once, right after the network
        is made (a network is a value: nothing else changes it)."""
        if self.graph is None:
            raise SpecError("module paths name the layers of a layer graph; a Sequential network has none")
        names = set(self.graph.names)
        if len(set(paths.values())) != len(paths):
            raise SpecError(f"module paths {naming.shown(sorted(paths.values()), 120)}: a module is one layer, but "
                            "two layers name the same module")
        for layer, path in paths.items():
            if layer not in names:
                raise SpecError(f"module path {naming.shown(path)}: {naming.shown(layer)} is not a layer of the network")
            naming.module_path(path, f"the module path of layer {naming.shown(layer)}")
        keys: dict[str, str] = {}
        for param in self.param_shapes():
            key = _state_dict_key(paths, param)
            if key in keys:
                raise SpecError(f"parameters {naming.shown(keys[key])} and {naming.shown(param)} would both be the "
                                f"state_dict entry {naming.shown(key)}")
            keys[key] = param
        object.__setattr__(self, "module_paths", tuple((n, paths[n]) for n in self.graph.names if n in paths))

    def frozen_ranges(self) -> list[tuple[int, int]]:
        """``[(start, stop)]``: where the frozen parameters sit in the flat vector
        (:meth:`param_layout`)."""
        return self._ranges(self.frozen)

    def _ranges(self, names: Sequence[str]) -> list[tuple[int, int]]:
        chosen = set(names)
        return [(lo, hi) for name, lo, hi, _ in self.param_layout() if name in chosen]

    def untrained_ranges(self) -> list[tuple[int, int]]:
        """``[(start, stop)]``, in order: the frozen parameters and the buffers, the ranges
        both backends' optimiser updates leave alone (a buffer is then written on its own)."""
        return self._ranges((*self.frozen, *self.buffers))

    @property
    def trainable(self) -> tuple[str, ...]:
        """The parameters that have a gradient and that training updates (all but ``frozen``
        and the ``buffers``)."""
        skip = set(self.frozen) | set(self.buffers)
        return tuple(p for p in self.param_shapes() if p not in skip)

    @property
    def buffers(self) -> tuple[str, ...]:
        """The state entries of the flat vector (a BatchNorm's ``running_mean``,
        ``running_var`` and ``num_batches_tracked``, as in PyTorch's ``state_dict``): no
        gradient (a kernel returns zeros there); ``forward`` reads them and ``train_step``
        writes their new values after each successful step."""
        if self.graph is None:
            return ()
        return tuple(f"{lname}.{b}" for layer, lname in zip(self.graph.layers, self.graph.names)
                     for b in layer.buffers())

    def buffer_ranges(self) -> list[tuple[int, int]]:
        """``[(start, stop)]``: where the :attr:`buffers` sit in the flat vector."""
        return self._ranges(self.buffers)

    @property
    def has_buffers(self) -> bool:
        return bool(self.buffers)

    def _init_graph(self, inputs: object, outputs: object, loss: object, loss_weights: object,
                    l1: object, l2: object, name: str) -> None:
        """The graph form: trace the tensors, then the checks of the Sequential form on the
        layers and on each output with its own loss."""
        ins = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if inputs is None or outputs is None or not ins or not outs:
            raise SpecError("a layer graph needs inputs= (sn.Input tensors) and outputs= (layer outputs)")
        losses = _per_output_losses(loss, len(outs))
        weights = _loss_weights(loss_weights, len(outs))
        graph = trace(ins, outs)
        out_calls = [graph.calls[v - len(graph.inputs)] for v in graph.outputs]
        for call, out_name in zip(out_calls, graph.output_names):
            if graph.layers[call.layer].drop_probability:
                raise SpecError(f"output {out_name} is made with dropout: dropout applies to hidden values only "
                                "(at inference it is the identity; drop it there)")
        for call, out_name in zip(out_calls, graph.output_names):
            if len(call.shape) not in (1, 2):
                raise SpecError(f"output {out_name} has samples of shape {call.shape}: an output is features (K,) "
                                "or a sequence of them (T, K); apply sn.Flatten() (or a GlobalAvgPool) before it")
        for call in graph.calls:
            layer = graph.layers[call.layer]
            act = layer.output_activation
            if act is not None and act.is_rowwise and call not in out_calls:
                raise SpecError(f"layer {graph.names[call.layer]}: softmax is only supported on an output layer")
        _check_penalties(l1, l2)
        naming.network_name(name)
        for call, out_name, head_loss in zip(out_calls, graph.output_names, losses):
            out_layer = graph.layers[call.layer]
            last = out_layer.output_activation or Activation.builtin("identity")
            where = f"output {out_name}" if len(outs) > 1 else f"output layer {out_name}"
            capabilities.check_output(last, head_loss, call.shape[-1], f"the {where}")
            if head_loss.domain is not None:
                _require_output_in_domain(last, head_loss, out_name)
        object.__setattr__(self, "layers", graph.layers)
        object.__setattr__(self, "loss", losses[0])
        object.__setattr__(self, "l1", float(l1))  # type: ignore[arg-type]
        object.__setattr__(self, "l2", float(l2))  # type: ignore[arg-type]
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "graph", graph)
        object.__setattr__(self, "losses", losses)
        object.__setattr__(self, "loss_weights", weights)

    # -- facts derived from the declaration -----------------------------------------------
    @property
    def is_graph(self) -> bool:
        """Built by calling layers on tensors (parameters ``<layer>.<param>``)."""
        return self.graph is not None

    @property
    def output_activation(self) -> Activation:
        """The activation of the layer that makes the (first) output (identity for a layer
        without one)."""
        return self.output_activations[0]

    @property
    def output_activations(self) -> tuple[Activation, ...]:
        """The activation that makes each output, in the order of ``outputs=``."""
        if self.graph is None:
            return (self.layers[-1].activation,)
        acts = []
        for v in self.graph.outputs:
            layer = self.graph.layers[self.graph.calls[v - len(self.graph.inputs)].layer]
            acts.append(layer.output_activation or Activation.builtin("identity"))
        return tuple(acts)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The names that key the inputs where a kernel takes a dict (``("X",)`` for one unnamed)."""
        return ("X",) if self.graph is None else tuple(n for n, _ in self.graph.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The names that key the outputs and their targets: each output's layer name (``Y``
        for a Sequential network)."""
        return ("Y",) if self.graph is None else self.graph.output_names

    @property
    def input_shapes(self) -> tuple[tuple[str, tuple[Width, ...]], ...]:
        """``((name, sample shape), ...)``: each input's name and one sample's shape."""
        if self.graph is None:
            return (("X", (self.layers[0].in_features,)),)
        return self.graph.inputs

    @property
    def input_widths(self) -> tuple[Width, ...]:
        """Each input's entries per sample (an image (C, H, W): C*H*W, its row in the kernels)."""
        if self.graph is None:
            return (self.layers[0].in_features,)
        return tuple(naming.entries(shape) for _, shape in self.graph.inputs)

    @property
    def output_shapes(self) -> tuple[tuple[Width, ...], ...]:
        """Each output's sample shape: features (K,), or a sequence of them (T, K), one row of
        targets per step (sequence tagging: a Dense applied to each step of a recurrent
        layer's ``return_sequences=True``)."""
        if self.graph is None:
            return ((self.layers[-1].out_features,),)
        return tuple(tuple(self.graph.value_shape(v)) for v in self.graph.outputs)

    @property
    def output_widths(self) -> tuple[Width, ...]:
        """Each output's entries per sample (a sequence (T, K): T*K, its row in the kernels)."""
        return tuple(naming.entries(shape) for shape in self.output_shapes)

    @property
    def output_steps(self) -> tuple[Width, ...]:
        """Each output's rows of targets per sample: T for a sequence (T, K), else 1. A loss is
        the mean over every sample's every step of the loss of that step's K entries."""
        return tuple(naming.entries(shape[:-1]) for shape in self.output_shapes)

    @property
    def has_sequence_output(self) -> bool:
        return any(len(shape) == 2 for shape in self.output_shapes)

    @property
    def several_inputs(self) -> bool:
        return len(self.input_widths) > 1

    @property
    def several_outputs(self) -> bool:
        return len(self.losses) > 1

    @property
    def takes_labels(self) -> bool:
        """The kernels take integer class labels as ``Y``: one output whose loss takes them,
        (N,) for features, (N, T) for a sequence output (one class per step, -100 for a padded
        step). With several outputs the kernels take the targets packed side by side, and a label
        array in a dict is turned into one-hot rows before the call."""
        return not self.several_outputs and self.loss.takes_labels

    @property
    def step_labels(self) -> bool:
        """The kernels' labels are a sequence output's, one per step (N, T)."""
        return self.takes_labels and self.has_sequence_output

    @property
    def n_in(self) -> Width:
        """Input features; with several inputs, their sum (the kernels' packed ``X``)."""
        widths = self.input_widths
        return widths[0] if len(widths) == 1 else naming.concrete(sum(widths))

    @property
    def n_out(self) -> Width:
        """Output features; with several outputs, their sum (the kernels' packed output)."""
        widths = self.output_widths
        return widths[0] if len(widths) == 1 else naming.concrete(sum(widths))

    def column_blocks(self, widths: Sequence[Width]) -> list[tuple[int, int]]:
        """``[(lo, hi)]``: where each of ``widths`` sits in the packed array (inputs side by side
        in the order of ``inputs=``, outputs in the order of ``outputs=``)."""
        out, lo = [], 0
        for w in widths:
            out.append((lo, naming.concrete(lo + w)))
            lo = naming.concrete(lo + w)
        return out

    @property
    def has_dropout(self) -> bool:
        return any(layer.drop_probability or layer.drops_inside for layer in self.layers)

    @property
    def has_run_time_length(self) -> bool:
        """Whether the network's sequences have a length given only at each call
        (``sn.Input(None, F)``): the symbol ``T`` in its sizes."""
        return naming.has_length(self.n_in)

    @property
    def is_concrete(self) -> bool:
        if self.graph is not None:
            return True  # a graph's sizes are checked integers
        return all(
            isinstance(w, int) for layer in self.layers for w in (layer.in_features, layer.out_features)
        )

    def param_shapes(self) -> dict[str, tuple[Width, ...]]:
        """``{"W1": (out, in), "b1": (out,), ...}`` in declaration order (a layer graph:
        ``{"dense1.weight": (out, in), "dense1.bias": (out,), ...}`` in the order of its layers)."""
        if self.graph is not None:
            return self.graph.param_shapes()
        shapes: dict[str, tuple[Width, ...]] = {}
        for i, layer in enumerate(self.layers, 1):
            shapes[f"W{i}"] = (layer.out_features, layer.in_features)
            shapes[f"b{i}"] = (layer.out_features,)
        return shapes

    def param_layout(self) -> list[tuple[str, int, int, tuple[int, ...]]]:
        """``[(name, start, stop, shape)]``: where each parameter sits in the flat vector W1, b1,
        W2, ... (each row-major) that the C API's ``params``/``grad``, ``Kernel.pack`` and the
        optimiser state use. Needs integer widths."""
        if not self.is_concrete:
            raise SpecError("the flat parameter layout needs integer layer widths")
        out, off = [], 0
        for name, shape in self.param_shapes().items():
            dims = tuple(int(d) for d in shape)
            size = int(np.prod(dims))
            out.append((name, off, off + size, dims))
            off += size
        return out

    def init_params(
        self, seed: int | None = 0, scheme: str | None = None, dtype: str = "float64"
    ) -> dict[str, np.ndarray]:
        """Initial parameters: Xavier/Glorot-uniform or He-normal weights, zero biases.

        Args:
            seed: seed of a ``numpy.random.default_rng``.
            scheme: ``"xavier"``/``"glorot"``, ``"he"``/``"kaiming"``, or None to choose per
                layer from its activation (He for the ReLU family and GELU, Xavier otherwise).
            dtype: ``"float64"`` or ``"float32"``.
        """
        if not self.is_concrete:
            raise SpecError("init_params needs integer layer widths, not SymPy symbols")
        if scheme is not None and scheme not in _SCHEMES:
            raise ConfigError(f"scheme must be one of {sorted(_SCHEMES)}, got {scheme!r}")
        np_dtype = _np_dtype(dtype)
        rng = np.random.default_rng(seed)
        params: dict[str, np.ndarray] = {}
        if self.graph is not None:
            for layer, lname in zip(self.graph.layers, self.graph.names):
                for p, value in layer.init(rng, scheme).items():
                    params[f"{lname}.{p}"] = np.asarray(value).astype(np_dtype)
            return params
        for i, layer in enumerate(self.layers, 1):
            fan_in, fan_out = int(layer.in_features), int(layer.out_features)
            s = _SCHEMES[scheme or layer.activation.init]
            if s == "he":
                w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_out, fan_in))
            else:
                a = np.sqrt(6.0 / (fan_in + fan_out))
                w = rng.uniform(-a, a, size=(fan_out, fan_in))
            params[f"W{i}"] = w.astype(np_dtype)
            params[f"b{i}"] = np.zeros(fan_out, dtype=np_dtype)
        return params


_SCHEMES = {"xavier": "xavier", "glorot": "xavier", "he": "he", "kaiming": "he"}


def _per_output_losses(loss: object, n_outputs: int) -> tuple["Loss", ...]:
    """One loss per output: ``loss`` itself for one output, a list as long as ``outputs=`` for several."""
    if isinstance(loss, (list, tuple)):
        if len(loss) != n_outputs:
            raise SpecError(f"loss= gives {len(loss)} losses for {n_outputs} output(s): give one per output, "
                            "in the order of outputs=")
        return tuple(_as_loss(x) for x in loss)
    if n_outputs != 1:
        raise SpecError(f"a network with {n_outputs} outputs needs loss=[...] with one loss per output")
    return (_as_loss(loss),)


def _loss_weights(weights: object, n_outputs: int) -> tuple[float, ...]:
    """The declared ``loss_weights=``: finite reals >= 0, not all zero, one per output."""
    if weights is None:
        return (1.0,) * n_outputs
    if not isinstance(weights, (list, tuple)):
        raise SpecTypeError(f"loss_weights must be a list of numbers, one per output, got {type(weights).__name__}")
    if len(weights) != n_outputs:
        raise SpecError(f"loss_weights gives {len(weights)} weights for {n_outputs} output(s)")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0 <= w <= sys.float_info.max:
            raise ConfigError(f"loss_weights must be finite reals >= 0, got {w!r}")
    if not any(weights):
        raise ConfigError("loss_weights are all zero: the loss would be constant")
    return tuple(float(w) for w in weights)


def _as_loss(loss: object) -> "Loss":
    """A registry name or an ``sn.Loss`` as a Loss; SpecTypeError otherwise."""
    if isinstance(loss, str):
        return Loss.builtin(loss)
    if not isinstance(loss, Loss):
        raise SpecTypeError(f"loss must be a registry name or an sn.Loss, got {type(loss).__name__}")
    return loss


def _check_penalties(l1: object, l2: object) -> None:
    for key, lam in (("l1", l1), ("l2", l2)):
        # "not <=" refuses NaN and inf; an int of any size compares without overflow
        if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not 0 <= lam <= sys.float_info.max:
            raise ConfigError(f"{key} must be a finite real >= 0, got {lam!r}")


def _require_output_in_domain(act: Activation, loss: Loss, layer: int | str) -> None:
    """Refuse an output activation that can leave the loss's domain (identity before a loss in
    (0, 1)): the guard would clip such predictions and train on the clipped loss, silently.
    The check is numeric (the activation at points across the line), so it can only miss a
    violation, never invent one; an activation whose values the registry states (softmax)
    is checked on those."""
    lo, hi = loss.domain  # type: ignore[misc]
    if act.is_rowwise:
        stated = registry.activation(act.name).value_range
        if stated is None:  # nothing to check against
            return
        rlo, rhi = stated
        bad = [] if lo <= rlo and rhi <= hi else [(None, rlo if rlo < lo else rhi)]
    else:
        bad = outside_values(act.expr, act.var, loss.domain, act.domain)  # type: ignore[arg-type]
    if bad:
        at, value = bad[0]
        where = "" if at is None else f" at z = {at:g}"
        hint = " (sigmoid and softmax give values in [0, 1])" if lo <= 0 and hi >= 1 else ""
        raise SpecError(
            f"loss {loss.name!r} is defined for predictions in {domain_text(loss.domain)}, but layer "
            f"{layer}'s activation {act.name!r} gives {value:g}{where}: use an output activation "
            f"whose values lie in [{lo:g}, {hi:g}]{hint}"
        )


def _np_dtype(dtype: object) -> np.dtype:
    from .errors import DTypeError

    try:
        d = np.dtype(dtype)  # type: ignore[arg-type]
    except TypeError as exc:
        raise DTypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from exc
    if d not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise DTypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return d
