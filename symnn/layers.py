"""The layer graph front end: symbolic tensors, layers called on them, and the layer protocol.

A network that is not a chain of dense layers is built by calling layers on tensors::

    x = sn.Input(64)
    h = sn.Dense(64, 64, activation="relu")(x)
    h = h + sn.Dense(64, 64, activation="relu")(sn.LayerNorm(64)(h))    # a residual block
    y = sn.Dense(64, 10, activation="softmax")(h)
    net = sn.Network(inputs=x, outputs=y, loss="cross_entropy")

Every layer follows one protocol (:class:`Layer`): the parameters it owns with their shapes and
PyTorch layouts, its forward pass as IR ops, how the derivation names what it computes, and how
its parameters start. A new layer is one class with those four answers and its registration in
:data:`LAYERS`; the chain rule, the simplifier, the printers and both backends work on the IR
it builds and need nothing else.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import sympy as sp

from . import ir, naming
from .errors import ConfigError, LayerSizeMismatchError, SpecError, SpecTypeError

Shape = tuple[int, ...]


class Tensor:
    """A symbolic tensor of a layer graph: one sample's shape (the batch axis N is implicit and
    first), the layer call that produces it (None for an input) and that call's inputs.

    Tensors are values of a graph being declared; they hold no data. ``a + b`` adds two tensors
    of one shape (a residual connection). ``indices``: an input whose samples are integer
    indices (what an :class:`symnn.Embedding` reads), not reals."""

    __slots__ = ("shape", "layer", "inputs", "name", "indices")

    def __init__(self, shape: Shape, layer: "Layer | None", inputs: tuple["Tensor", ...],
                 name: str | None = None, indices: bool = False) -> None:
        self.shape = tuple(shape)
        self.layer = layer
        self.inputs = tuple(inputs)
        self.name = name
        self.indices = indices

    def __repr__(self) -> str:
        what = f"input {self.name!r}" if self.layer is None else type(self.layer).__name__
        return f"<symnn.Tensor {what} shape={self.shape}>"

    def __add__(self, other: object) -> "Tensor":
        return Add()(self, _tensor(other))

    def __radd__(self, other: object) -> "Tensor":
        return Add()(_tensor(other), self)


def _tensor(value: object) -> "Tensor":
    """``value`` if it is a tensor: a graph adds tensors only (a constant offset is a layer's bias)."""
    if not isinstance(value, Tensor):
        raise SpecTypeError(f"a tensor is added only to another tensor of its shape, not to "
                            f"{type(value).__name__} {naming.shown(value)}")
    return value


def Input(*shape: int, name: str | None = None, indices: bool = False) -> Tensor:  # noqa: N802 - a constructor, as in Keras
    """An input of a layer graph: ``shape`` is one sample's shape (``sn.Input(64)`` for 64
    features, ``sn.Input(1, 8, 8)`` for one-channel 8x8 images, ``sn.Input(3, 100)`` for three
    channels of 100 steps); ``name`` keys the input where a kernel takes several (default
    ``X``). Kernels take a batch (N, *shape), or (N, prod(shape)) with each sample row-major.
    ``indices=True``: each sample is ``shape[0]`` integer indices (a token sequence), which only
    an :class:`symnn.Embedding` reads; kernels take them as any integer dtype or as reals
    holding integers, and refuse one outside the embedding's vocabulary before any work.

    A sequence whose length is not fixed at compile time: ``sn.Input(None, F)`` (its mask
    ``sn.Input(None)``). The length is then the symbol ``T`` in every shape and in the
    derivation, and the kernels run any length: (N, T, F) batches of whatever T, all of a
    network's sequences of one length per call. Only recurrent layers read such a sequence."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if not shape:
        raise SpecError("sn.Input needs the shape of one sample, e.g. sn.Input(64)")
    if any(d is None for d in shape[1:]):
        raise SpecError(f"sn.Input{tuple(shape)}: only a sequence's length, the first size, may be None")
    dims = ((naming.T,) if shape[0] is None else (_dim(shape[0], "sn.Input"),)) + tuple(
        _dim(d, "sn.Input") for d in shape[1:])
    if shape[0] is None and len(dims) > 2:
        raise SpecError(f"sn.Input{tuple(shape)}: a sequence of run-time length is (None, F) steps of F "
                        "features, or (None,) for its mask or its indices")
    if len(dims) > 3:
        raise SpecError(f"sn.Input{dims}: a sample is features (F,), a sequence of channels (C, L) or an "
                        f"image (C, H, W); rank {len(dims)} has no layer")
    if name is not None:
        naming.identifier(name, "input name")
    if not isinstance(indices, bool):
        raise SpecTypeError(f"sn.Input indices must be True or False, got {indices!r}")
    if indices and len(dims) != 1:
        raise SpecError(f"sn.Input{dims}, indices=True: a sample of indices is a sequence (T,), "
                        f"rank 1; got rank {len(dims)}")
    return Tensor(dims, None, (), name, indices)


def _dim(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise SpecTypeError(f"{what}: a size must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Emitted:
    """What a layer's forward pass built: its output node, and the intermediate values the
    derivation should name (``(node, letter)``: ``Z`` for a dense pre-activation)."""

    output: ir.Node
    named: tuple[tuple[ir.Node, str], ...] = ()
    #: the output at inference (``forward``), where it differs from the output that losses
    #: and gradients are computed on (a BatchNorm: running against batch statistics)
    eval_output: ir.Node | None = None
    #: ``(buffer, new value)``: what a training step writes into the layer's buffers
    updates: tuple[tuple[str, ir.Node], ...] = ()


class Layer:
    """The layer protocol. Subclasses are frozen dataclasses (so networks stay values) and
    answer: :meth:`param_shapes` (PyTorch names and layouts), :meth:`output_shape`,
    :meth:`build` (the forward pass as IR ops), :meth:`init` (initial values) and
    :attr:`PARAM_TEX` / :attr:`KIND` (how the derivation and default names call them)."""

    #: the default name's stem: ``dense`` -> ``dense1``, ``dense2`` ...
    KIND: ClassVar[str] = "layer"
    #: LaTeX letter of each parameter in the derivation
    PARAM_TEX: ClassVar[dict[str, str]] = {}
    #: LaTeX letter of the layer's output
    OUTPUT_TEX: ClassVar[str] = "H"
    #: whether the layer reads an index input (``sn.Input(..., indices=True)``) and nothing
    #: else: an index input may feed only such a layer, and such a layer only an index input
    READS_INDICES: ClassVar[bool] = False
    #: each output row depends on the batch's other rows (a BatchNorm's batch statistics)
    COUPLES_ROWS: ClassVar[bool] = False
    #: the buffers that count batches: whole numbers, which PyTorch keeps as int64
    COUNTERS: ClassVar[tuple[str, ...]] = ()
    #: the parameters that the network's l1/l2 penalties apply to (weights, never biases)
    REGULARISED: ClassVar[tuple[str, ...]] = ()

    def param_shapes(self) -> dict[str, Shape]:
        return {}

    def output_shape(self, *shapes: Shape) -> Shape:
        raise NotImplementedError

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        raise NotImplementedError

    def init(self, rng: np.random.Generator, scheme: str | None) -> dict[str, np.ndarray]:
        return {}

    def buffers(self) -> tuple[str, ...]:
        """The entries of :meth:`param_shapes` that are state, not parameters: no gradient,
        updated by training from :attr:`Emitted.updates` (a BatchNorm's running statistics)."""
        return ()

    def describe(self) -> str:
        return type(self).__name__

    def given(self, field: str) -> object:
        """Dataclass field ``field`` in the form the constructor takes it: what a spec or model
        file writes so that the constructor rebuilds this layer (:mod:`symnn.graph_spec`). The
        field itself, unless the constructor normalises its argument (a convolution stores its
        padding per side and a 1-D layer's sizes with a height of 1)."""
        return getattr(self, field)

    @property
    def output_activation(self) -> "object | None":
        """The element-wise (or softmax) activation this layer ends with (a Dense's, an
        Activate's), else None: an output made by it fuses with a loss declared for its link,
        its pre-activation is where gradient checks look for kinks, and softmax is refused
        anywhere but on an output."""
        return None

    @property
    def drop_probability(self) -> float:
        """The probability with which training zeroes each entry of this layer's output (inverted
        dropout: the kept entries are scaled by 1/(1 - p)); 0 for a layer without dropout. The
        training graph multiplies the output by a mask input (:func:`symnn.graph.dropout_masks`);
        forward, loss and loss_and_grad leave it out, as PyTorch's ``eval()``."""
        return 0.0

    def inner_masks(self, *shapes: Shape) -> tuple[tuple[int, float], ...]:
        """``(width, p)`` of each dropout mask that training applies inside this layer, given
        its inputs' shapes (a stacked recurrent layer's, between its layers, as PyTorch's
        ``dropout=``): the training graph gives ``build`` them as ``masks=``, numbered before the
        mask of the layer's own output (:func:`symnn.graph.dropout_masks`); none by default."""
        return ()

    @property
    def drops_inside(self) -> bool:
        """Whether training applies dropout inside this layer (:meth:`inner_masks`)."""
        return False

    @property
    def layer_name(self) -> str | None:
        return getattr(self, "name", None)

    def __call__(self, *tensors: Tensor) -> Tensor:
        for t in tensors:
            if not isinstance(t, Tensor):
                raise SpecTypeError(f"{type(self).__name__} is called on sn.Input(...) or a layer's "
                                    f"output, got {type(t).__name__}")
        shape = self.output_shape(*(t.shape for t in tensors))
        return Tensor(shape, self, tensors)


def is_sequence_of(shape: Shape, width: object) -> bool:
    """``shape`` is one sample's sequence of steps of ``width`` features, (T, width): what a
    recurrent layer returns with ``return_sequences=True``, and what a layer applied to the last
    axis (a Dense, LayerNorm, softmax) maps step by step, as PyTorch's modules on (N, T, F)."""
    return len(shape) == 2 and shape[1] == width


def steps_as_rows(x: ir.Node, width: object) -> ir.Node:
    """A batch of sequences (N, T*width) as its steps stacked as rows (N*T, width): one product
    or row-wise op works on every step at once. A view: no entry moves."""
    return ir.reshape(x, (naming.concrete(x.shape[0] * x.shape[1] / width), width))


def rows_as_steps(x: ir.Node, rows: object) -> ir.Node:
    """The inverse of :func:`steps_as_rows`: (N*T, width) back to the batch's ``rows`` (N)."""
    return ir.reshape(x, (rows, naming.concrete(x.shape[0] * x.shape[1] / rows)))


def _check_name(name: object) -> str | None:
    if name is None:
        return None
    return naming.layer_name(name)


@dataclass(frozen=True)
class Add(Layer):
    """Element-wise sum of two tensors of one shape (``a + b``): a residual connection. It has
    no parameters, so every ``Add`` equals every other (a graph keeps each call's own entry:
    :func:`trace` tells layers apart by identity)."""

    KIND: ClassVar[str] = "add"

    def output_shape(self, *shapes: Shape) -> Shape:
        if len(shapes) != 2:
            raise SpecError(f"add takes two tensors, got {len(shapes)}")
        if shapes[0] != shapes[1]:
            raise LayerSizeMismatchError(f"cannot add tensors of shapes {shapes[0]} and {shapes[1]}")
        return shapes[0]

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        u, v = sp.symbols("u v", real=True)
        return Emitted(ir.map_(ir.Elementwise("add", (u, v), u + v), *inputs))



@dataclass(frozen=True)
class LayerNorm(Layer):
    """Layer normalisation over the features, as ``torch.nn.LayerNorm(d, eps)``:
    ``(x - mean) / sqrt(var + eps) * weight + bias`` with the biased variance, ``weight`` (d,)
    starting at 1 and ``bias`` (d,) at 0. Built from ROWSUM and element-wise maps, so it needs no
    op or pullback of its own."""

    normalized_shape: int
    eps: float = 1e-5
    elementwise_affine: bool = True
    name: str | None = None

    KIND: ClassVar[str] = "layernorm"
    PARAM_TEX: ClassVar[dict[str, str]] = {"weight": r"\gamma", "bias": r"\beta"}

    def __init__(self, normalized_shape: int, eps: float = 1e-5, elementwise_affine: bool = True,
                 *, name: str | None = None) -> None:
        object.__setattr__(self, "normalized_shape", _dim(normalized_shape, "LayerNorm size"))
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < 1:
            raise SpecTypeError(f"LayerNorm eps must be a real in (0, 1), got {eps!r}")
        object.__setattr__(self, "eps", float(eps))
        if not isinstance(elementwise_affine, bool):
            raise SpecTypeError(f"LayerNorm elementwise_affine must be True or False, got {elementwise_affine!r}")
        object.__setattr__(self, "elementwise_affine", elementwise_affine)
        object.__setattr__(self, "name", _check_name(name))

    def param_shapes(self) -> dict[str, Shape]:
        d = self.normalized_shape
        return {"weight": (d,), "bias": (d,)} if self.elementwise_affine else {}

    def output_shape(self, *shapes: Shape) -> Shape:
        if len(shapes) != 1:
            raise SpecError(f"LayerNorm takes one tensor, got {len(shapes)}")
        if shapes[0] != (self.normalized_shape,) and not is_sequence_of(shapes[0], self.normalized_shape):
            raise LayerSizeMismatchError(f"LayerNorm({self.normalized_shape}) applied to a tensor of shape {shapes[0]}: "
                                         f"it normalises ({self.normalized_shape},), or each step of a sequence "
                                         f"(T, {self.normalized_shape})")
        return shapes[0]

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        (x,) = inputs
        d = self.normalized_shape
        if shapes and len(shapes[0]) == 2:  # a sequence: each step normalised, steps as rows
            built = self.build([steps_as_rows(x, d)], params)
            return Emitted(rows_as_steps(built.output, x.shape[0]), built.named)
        u, m, v = sp.symbols("u m v", real=True)
        mean = ir.map_(ir.Elementwise("mean_row", (u,), u / d), ir.rowsum(x), shape=(x.shape[0], 1))
        centred = ir.map_(ir.Elementwise("centre", (u, m), u - m), x, mean, shape=x.shape)
        var = ir.map_(ir.Elementwise("var_row", (u,), u / d), ir.rowsum(
            ir.map_(ir.Elementwise("square", (u,), u**2), centred)), shape=(x.shape[0], 1))
        eps = sp.Float(self.eps, 17)
        # the reciprocal standard deviation once per row (N, 1), then one product per entry: a
        # square root and a division per row, not per entry (and its derivative per row too)
        rstd = ir.map_(ir.Elementwise("rstd", (v,), 1 / sp.sqrt(v + eps)), var, shape=var.shape)
        normed = ir.map_(ir.Elementwise("normalise", (u, v), u * v), centred, rstd, shape=x.shape)
        named = ((mean, r"\mu"), (centred, r"\tilde{X}"), (var, "V"), (rstd, "R"), (normed, r"\hat{X}"))
        if not self.elementwise_affine:
            return Emitted(normed, named[:-1])
        g, b = sp.symbols("g b", real=True)
        out = ir.map_(ir.Elementwise("affine", (u, g, b), u * g + b), normed, params["weight"], params["bias"],
                      shape=x.shape)
        return Emitted(out, named)

    def init(self, rng: np.random.Generator, scheme: str | None) -> dict[str, np.ndarray]:
        d = self.normalized_shape
        return {"weight": np.ones(d), "bias": np.zeros(d)} if self.elementwise_affine else {}

    def describe(self) -> str:
        return f"LayerNorm({self.normalized_shape}, eps={self.eps:g})"


@dataclass(frozen=True)
class Concat(Layer):
    """Tensors of shapes (d1,), (d2,), ... joined along the features into one of shape
    (d1 + d2 + ...,), as ``torch.cat(dim=1)`` on batch-first inputs; sequences of one length
    (T, d1), (T, d2), ... step by step into (T, d1 + d2 + ...), as ``torch.cat(dim=-1)`` on
    (N, T, F). No parameters; its forward pass is the IR's ``CONCAT`` (of the steps as rows, for
    sequences) and its pullback hands each operand its columns."""

    name: str | None = None

    KIND: ClassVar[str] = "concat"

    def __init__(self, *, name: str | None = None) -> None:
        object.__setattr__(self, "name", _check_name(name))

    def output_shape(self, *shapes: Shape) -> Shape:
        if len(shapes) < 2:
            raise SpecError(f"concat joins two or more tensors, got {len(shapes)}")
        if all(len(s) == 2 for s in shapes) and len({naming.concrete(s[0]) for s in shapes}) == 1:
            return (shapes[0][0], sum(s[1] for s in shapes))  # sequences of one length, step by step
        if any(len(s) != 1 for s in shapes):
            raise LayerSizeMismatchError(f"concat joins tensors of rank 1 (features) along their one axis, or "
                                         f"sequences (T, d) of one length along their features; got shapes "
                                         f"{', '.join(map(str, shapes))}")
        return (sum(s[0] for s in shapes),)

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        if shapes and len(shapes[0]) == 2:  # sequences: each step's features side by side
            rows = ir.concat(*(steps_as_rows(x, shape[1]) for x, shape in zip(inputs, shapes)))
            return Emitted(rows_as_steps(rows, inputs[0].shape[0]))
        return Emitted(ir.concat(*inputs))

    def describe(self) -> str:
        return "Concat"


@dataclass(frozen=True)
class LastStep(Layer):
    """A sequence's last step, ``out[:, -1]`` of PyTorch's (N, T, F): shape (T, F) -> (F,); the
    last step of the call's length for a sequence of run-time length (``sn.Input(None, F)``).
    A recurrent layer gives its own last state without it (``return_sequences=False``); this
    takes the last step of any sequence: a bidirectional layer's, whose step T - 1 holds the
    forward direction's final state beside the reverse direction's state after its first step
    (what ``out[:, -1]`` reads in PyTorch, which ``sn.from_torch`` turns into this), or a
    per-step layer's. Padded steps are not skipped: after a masked layer a shorter sample's last
    step is padding (zeros, as PyTorch's ``pad_packed_sequence``). No parameters; its forward
    pass is the IR's ``SLICE`` of the step's columns, its pullback puts the cotangent there."""

    name: str | None = None

    KIND: ClassVar[str] = "last_step"

    def __init__(self, *, name: str | None = None) -> None:
        object.__setattr__(self, "name", _check_name(name))

    def output_shape(self, *shapes: Shape) -> Shape:
        if len(shapes) != 1:
            raise SpecError(f"LastStep takes one sequence, got {len(shapes)} tensors")
        if len(shapes[0]) != 2:
            raise LayerSizeMismatchError(f"LastStep takes a sequence of shape (T, F), got shape {shapes[0]}")
        return (shapes[0][1],)

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        steps, width = shapes[0]
        first = naming.concrete((steps - 1) * width)
        return Emitted(ir.slice_(inputs[0], first, naming.concrete(first + width)))

    def describe(self) -> str:
        return "LastStep"


@dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout with probability ``p``, as ``torch.nn.Dropout(p)``: in ``train_step``
    each entry is zeroed with probability p and the rest scaled by 1/(1 - p), with masks drawn
    by the emitted counter-based generator (keyed by seed, step and the dropout's place); in
    ``forward``, ``loss`` and ``loss_and_grad`` it is the identity (``eval()``)."""

    p: float = 0.5
    name: str | None = None

    KIND: ClassVar[str] = "dropout"

    def __init__(self, p: float = 0.5, *, name: str | None = None) -> None:
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise SpecTypeError(f"Dropout p must be a real number in [0, 1), got {p!r}")
        if not 0.0 <= p < 1.0:  # refuses NaN too
            raise ConfigError(f"Dropout p must be in [0, 1), got {p!r}")
        object.__setattr__(self, "p", float(p))
        object.__setattr__(self, "name", _check_name(name))

    @property
    def drop_probability(self) -> float:
        return self.p

    def output_shape(self, *shapes: Shape) -> Shape:
        if len(shapes) != 1:
            raise SpecError(f"Dropout takes one tensor, got {len(shapes)}")
        return shapes[0]  # element-wise: features or images alike

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        return Emitted(inputs[0])  # the identity; training adds the mask (symnn.graph)

    def describe(self) -> str:
        return f"Dropout({self.p:g}) in training"


def concat(tensors: Sequence[Tensor], *, name: str | None = None) -> Tensor:
    """``tensors`` joined along the features (``torch.cat(tensors, dim=1)``): shapes (d1,),
    (d2,), ... give (d1 + d2 + ...,); sequences (T, d1), (T, d2), ... give (T, d1 + d2 + ...)."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise SpecTypeError(f"sn.concat takes a list of tensors, e.g. sn.concat([a, b]); got "
                            f"{type(tensors).__name__}")
    return Concat(name=name)(*tensors)


#: every layer class a graph may hold (the spec reader and the importers look layers up here)
LAYERS: dict[str, type[Layer]] = {"add": Add, "layernorm": LayerNorm, "concat": Concat, "dropout": Dropout,
                                  "last_step": LastStep}


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Add a layer class to :data:`LAYERS` (its ``KIND`` names it)."""
    LAYERS[cls.KIND] = cls
    return cls


@dataclass(frozen=True)
class Call:
    """One application of a layer in a graph: ``layers[layer](values[inputs...])``."""

    layer: int
    inputs: tuple[int, ...]
    shape: Shape


@dataclass(frozen=True)
class Graph:
    """A layer graph as a value: its distinct layers (a layer called twice shares its
    parameters), their names, the calls in an order where operands come first (values 0.. are
    the inputs, call k makes value len(inputs) + k), and which values are the outputs."""

    inputs: tuple[tuple[str, Shape], ...]
    layers: tuple[Layer, ...]
    names: tuple[str, ...]
    calls: tuple[Call, ...]
    outputs: tuple[int, ...]
    #: the names of the inputs whose samples are integer indices (``sn.Input(..., indices=True)``)
    index_inputs: tuple[str, ...] = ()

    def value_shape(self, v: int) -> Shape:
        if v < len(self.inputs):
            return self.inputs[v][1]
        return self.calls[v - len(self.inputs)].shape

    @property
    def call_tags(self) -> tuple[str, ...]:
        """What each call's output is called: its layer's name, and ``<name>__<k>`` for the
        k-th call of a layer called again (layer names hold no ``__``, so no tag is a name)."""
        count: dict[int, int] = {}
        tags = []
        for call in self.calls:
            k = count[call.layer] = count.get(call.layer, 0) + 1
            name = self.names[call.layer]
            tags.append(name if k == 1 else f"{name}__{k}")
        return tuple(tags)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The names of the outputs (the tags of the calls that make them): they key a kernel's
        outputs and targets."""
        tags = self.call_tags
        return tuple(tags[v - len(self.inputs)] for v in self.outputs)

    def param_shapes(self) -> dict[str, Shape]:
        """``{"dense1.weight": (out, in), ...}``: each layer's parameters under its name."""
        out: dict[str, Shape] = {}
        for layer, name in zip(self.layers, self.names):
            for p, shape in layer.param_shapes().items():
                out[f"{name}.{p}"] = tuple(shape)
        return out


def trace(inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> Graph:
    """The graph between ``inputs`` and ``outputs``: every tensor an output depends on must come
    from the inputs; layers get their default names (``<kind><k>``, counted per kind in the
    order of the calls) unless named, and names must be unique."""
    seen_inputs = {id(t): i for i, t in enumerate(inputs)}
    for t in inputs:
        if not isinstance(t, Tensor) or t.layer is not None:
            raise SpecTypeError("inputs must be tensors made by sn.Input(...)")
    if len(seen_inputs) != len(inputs):
        raise SpecError("an input is listed twice")
    order: list[Tensor] = []
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def visit(t: Tensor) -> None:
        stack = [(t, False)]
        while stack:
            node, done = stack.pop()
            if done:
                state[id(node)] = 2
                order.append(node)
                continue
            if state.get(id(node)) == 2:
                continue
            if node.layer is None:
                if id(node) not in seen_inputs:
                    raise SpecError(f"the outputs depend on an input that is not in inputs= "
                                    f"({node!r}); list every sn.Input the network reads")
                state[id(node)] = 2
                continue
            state[id(node)] = 1
            stack.append((node, True))
            for s in reversed(node.inputs):
                if state.get(id(s)) != 2:
                    stack.append((s, False))

    if len({id(t) for t in outputs}) != len(outputs):
        raise SpecError("an output is listed twice")
    for t in outputs:
        if not isinstance(t, Tensor):
            raise SpecTypeError(f"outputs must be tensors (a layer's output), got {type(t).__name__}")
        if t.layer is None:
            raise SpecError("an output is an input itself; an output must be computed by a layer")
        visit(t)
    unread = [t for t in inputs if state.get(id(t)) != 2]
    if unread:
        raise SpecError(f"no output reads the input {unread[0].name or 'X'!r}: list only the inputs the "
                        "outputs depend on (a kernel would demand data it never uses)")
    value_of = dict(seen_inputs)
    layer_index: dict[int, int] = {}
    layers: list[Layer] = []
    calls: list[Call] = []
    for t in order:
        if id(t) in value_of:
            continue
        if id(t.layer) not in layer_index:
            layer_index[id(t.layer)] = len(layers)
            layers.append(t.layer)
        calls.append(Call(layer_index[id(t.layer)], tuple(value_of[id(s)] for s in t.inputs), t.shape))
        value_of[id(t)] = len(inputs) + len(calls) - 1
    names = _names(layers)
    input_names = [t.name for t in inputs]
    if len(inputs) == 1 and input_names[0] is None:
        input_names = ["X"]
    elif any(n is None for n in input_names):
        raise SpecError("a network with several inputs needs each sn.Input(..., name=...) named")
    if len(set(input_names)) != len(input_names):
        raise SpecError(f"input names repeat: {input_names}")
    _check_index_reads(inputs, layers, names, calls)
    return Graph(tuple((n, t.shape) for n, t in zip(input_names, inputs)), tuple(layers), tuple(names),
                 tuple(calls), tuple(value_of[id(t)] for t in outputs),
                 tuple(n for n, t in zip(input_names, inputs) if t.indices))


def _check_index_reads(inputs: Sequence[Tensor], layers: Sequence[Layer], names: Sequence[str],
                       calls: Sequence[Call]) -> None:
    """An index input feeds only layers that read indices (an Embedding), and those read an
    index input directly: indices are not reals (a Dense on them would compute on token ids),
    and an embedding of reals would truncate them."""
    n_in = len(inputs)
    for call in calls:
        layer, lname = layers[call.layer], names[call.layer]
        for v in call.inputs:
            index = v < n_in and inputs[v].indices
            if layer.READS_INDICES and not index:
                raise SpecError(f"layer {lname} ({type(layer).__name__}) reads integer indices: call it on "
                                f"an sn.Input(T, indices=True) directly, not on "
                                f"{'a real input' if v < n_in else 'a layer output'}")
            if index and not layer.READS_INDICES:
                raise SpecError(f"layer {lname} ({type(layer).__name__}) is called on the index input "
                                f"{inputs[v].name or 'X'!r}: integer indices are read only by an sn.Embedding")


def _names(layers: Sequence[Layer]) -> list[str]:
    taken = {layer.layer_name for layer in layers if layer.layer_name is not None}
    counters: dict[str, int] = {}
    names = []
    for layer in layers:
        if layer.layer_name is not None:
            names.append(layer.layer_name)
            continue
        while True:
            counters[layer.KIND] = counters.get(layer.KIND, 0) + 1
            candidate = f"{layer.KIND}{counters[layer.KIND]}"
            if candidate not in taken:
                break
        taken.add(candidate)
        names.append(candidate)
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise SpecError(f"layer names must be unique; repeated: {', '.join(dupes)}")
    return names


__all__ = ["Add", "Call", "Concat", "Dropout", "Emitted", "Graph", "Input", "LAYERS", "Layer", "LayerNorm", "Tensor",
           "concat", "register_layer", "trace"]
