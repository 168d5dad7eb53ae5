"""declare -> IR: build the forward tensor graph of a :class:`~symnn.declare.Network`.

The graph is built at *symbolic* batch size ``N``; widths are the declared ints (or SymPy
symbols when the network is only derived and printed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import sympy as sp

from . import ir, naming, registry, saturate
from .declare import Network
from .errors import SpecError
from .expressions import Domain, derivative, exact_bound
from .functions import Guard

if TYPE_CHECKING:
    from .layers import Graph


@dataclass(frozen=True)
class Label:
    """A forward value the derivation and the emitted code name: ``code`` its variable
    (``z1``, ``dense1_z``), ``letter`` and ``sup`` its LaTeX (``Z`` and ``^{(1)}``), ``eq_id``
    its equation's id."""

    node: ir.Node
    code: str
    letter: str
    sup: str
    eq_id: str
    #: the id of its cotangent's equation; ``always``: the cotangent is named even when read
    #: once (delta of a pre-activation), else only where it is shared
    ct_id: str = ""
    ct_always: bool = False

    @property
    def tex(self) -> str:
        # an accented letter gets an empty group before its superscript: amsmath's accents look
        # ahead, and {\tilde{X}^{(a)}}_{nk}^{2} is a double superscript to it
        accent = "{}" if self.letter.startswith("\\") and self.letter.endswith("}") else ""
        return self.letter + accent + self.sup

    @property
    def ct_tex(self) -> str:
        """delta^{(l)} for a pre-activation, delta_{A}^{(l)} for another value."""
        return (r"\delta" if self.ct_always else r"\delta_{%s}" % self.letter) + self.sup


@dataclass(frozen=True)
class Head:
    """One output with its loss: ``out`` the output's node, ``pre`` its pre-activation (the
    logits a loss fusion rewrites from; None where its layer has none), ``Y`` its targets (the
    packed targets' columns), ``data`` its mean loss, ``weight`` its weight in the total."""

    name: str
    out: ir.Node
    pre: ir.Node | None
    Y: ir.Node
    loss: object  # declare.Loss
    weight: float
    data: ir.Node
    #: each step's weight in the loss (N*T, 1): a sequence output of class targets' row sums,
    #: where a row of zeros is a padded step that the loss leaves out, or a masked sequence's
    #: mask (real targets, :func:`step_masks`); None elsewhere
    labelled: ir.Node | None = None


@dataclass(frozen=True)
class ForwardGraph:
    """The forward graph and its named nodes.

    ``params`` is keyed by the parameters' identifiers in code (``W1``, ``dense1_weight``);
    ``labels`` names the values the derivation shows; ``out_pre`` is the output layer's
    pre-activation (the loss fusions rewrite from it), None when the output layer has none."""

    network: Network
    X: ir.Node
    Y: ir.Node
    params: dict[str, ir.Node]
    z: tuple[ir.Node, ...]  # pre-activations z1..zL (Sequential form)
    a: tuple[ir.Node, ...]  # activations a1..aL (Sequential form)
    data_loss: ir.Node  # scalar: reduced loss terms
    loss: ir.Node  # scalar: data loss + penalties
    labels: tuple[Label, ...] = ()
    param_tex: tuple[tuple[str, str], ...] = ()  # (identifier, LaTeX symbol)
    out: ir.Node | None = None
    out_pre: ir.Node | None = None
    #: the activation of each pre-activation in ``z`` (a graph: one per dense call, in order)
    activations: tuple = ()
    #: each output with its loss (one for a Sequential network)
    heads: tuple[Head, ...] = ()
    #: ``(parameter identifier, new value)`` of each buffer: what a training step writes (the
    #: training graph only; a BatchNorm's running statistics)
    updates: tuple[tuple[str, ir.Node], ...] = ()

    @property
    def output(self) -> ir.Node:
        return self.out if self.out is not None else self.a[-1]

    @property
    def pre_output(self) -> ir.Node | None:
        if self.out is not None:
            return self.out_pre
        return self.z[-1]


def guarded(expr: sp.Expr, var: sp.Symbol, domain: Domain | None) -> sp.Expr:
    """``expr`` with ``var`` kept inside its declared open ``domain`` (:class:`Guard`), so
    the emitted code never evaluates it at or beyond an end (``log(0)``)."""
    if domain is None:
        return expr
    return expr.xreplace({var: Guard(var, *(exact_bound(v) for v in domain))})


def function_tex(name: str, latex_name: str | None) -> str:
    """The LaTeX name a derivation prints for a declared function: its registered LaTeX, else
    the (validated identifier) name set upright."""
    return latex_name or r"\operatorname{%s}" % name.replace("_", r"\_")


@functools.lru_cache(maxsize=512)
def activation_fn(name: str, expr: sp.Expr, domain: Domain | None = None,
                  tex: str | None = None) -> ir.Elementwise:
    """The element-wise map of an activation; where its formula (or its derivative's) is NaN
    at huge or infinite inputs, the input is clamped where the function has already
    saturated (:mod:`symnn.saturate`) and the derivative is passed as a proven partial; with a
    declared domain the input is also guarded into it (value and derivative alike).
    Cached: graphs are rebuilt often (gradcheck, sampling) and this derives and probes."""
    x = registry.X
    value = guarded(saturate.clamp(expr, x), x, domain)
    d = derivative(expr, x, f"activation {name}")
    grad = guarded(saturate.clamp(d, x), x, domain)
    if value == expr and grad == d:
        return ir.Elementwise(name, (x,), expr, tex=tex)
    return ir.Elementwise(name, (x,), value, grads=(grad,), tex=tex)


def apply_activation(act, z: ir.Node) -> ir.Node:
    if act.is_rowwise:
        return ir.softmax(z)
    return ir.map_(activation_fn(act.name, act.expr, act.domain, function_tex(act.name, act.latex_name)), z)


def scalar_map(name: str, expr: sp.Expr, operands: list[tuple[sp.Symbol, ir.Node]]) -> ir.Node:
    args = tuple(s for s, _ in operands)
    return ir.map_(ir.Elementwise(name, args, expr), *(n for _, n in operands), shape=())


def mask_name(layer: int) -> str:
    """The input holding layer ``layer``'s dropout mask (1 keep, 0 drop) in a training graph."""
    return f"M{layer}"


#: one dropout mask of a call: its input's name, its width per row (a multiple of the run-time
#: sequence length T over such a sequence), the drop probability
_Mask = tuple[str, "int | sp.Expr", float]


def _masks_by_call(g: Graph) -> list[tuple[tuple[_Mask, ...], _Mask | None]]:
    """Per call of a layer graph, in call order: the masks inside its layer (a stacked recurrent
    layer's, :meth:`symnn.layers.Layer.inner_masks`), then its output's (None without dropout),
    named ``M1``, ``M2``, ... in that order: the one numbering :func:`dropout_masks` lists and the
    training graph reads."""
    out: list[tuple[tuple[_Mask, ...], _Mask | None]] = []
    count = 0
    for call in g.calls:
        layer = g.layers[call.layer]
        inner = []
        for width, p in layer.inner_masks(*(g.value_shape(i) for i in call.inputs)):
            count += 1
            inner.append((mask_name(count), naming.concrete(width), p))
        own = None
        if layer.drop_probability:  # an entry per value of the output: a feature map's C*H*W
            count += 1
            own = (mask_name(count), naming.entries(call.shape), layer.drop_probability)
        out.append((tuple(inner), own))
    return out


def dropout_masks(net: Network) -> list[tuple[str, int, int, float]]:
    """``[(mask name, key, width, drop probability)]`` for the layers with dropout: a
    Sequential network's by layer number; a layer graph's by call, numbered 1, 2, ... in call
    order (a layer called twice draws a mask per call); a call's masks inside its layer (a
    stacked recurrent layer's, :meth:`symnn.layers.Layer.inner_masks`) before its output's."""
    if net.graph is not None:
        masks = [m for inner, own in _masks_by_call(net.graph) for m in (*inner, *([own] if own else []))]
        return [(name, key, width, p) for key, (name, width, p) in enumerate(masks, 1)]
    return [(mask_name(i), i, int(layer.out_features), layer.dropout)
            for i, layer in enumerate(net.layers, 1) if layer.dropout]


def dropped(a: ir.Node, mask: ir.Node, p: float) -> ir.Node:
    """Inverted dropout: ``a * M / (1 - p)`` with the 0/1 mask ``M`` an input of the training graph."""
    u, k = sp.Symbol("u", real=True), sp.Symbol("k", real=True)
    keep = sp.Float(1 / (1 - p), 17)
    return ir.map_(ir.Elementwise("dropout", (u, k), u * k * keep), a, mask)


def step_masks(g: "Graph") -> dict[int, int]:
    """The padding mask of each sequence value that has one: value index -> the value that is
    its mask (N, T). A masked recurrent layer's sequence (``masked=True``,
    ``return_sequences=True``) has its mask input; a layer that maps each step on its own (Dense,
    LayerNorm, Activate, Dropout on a sequence) passes its operand's mask on, and so does a join of
    sequences step by step (``Add``, ``concat``) whose masked operands share one mask; anything
    else (a Flatten, a last state) has none. A sequence output with a mask leaves its padded
    steps out of a loss on real targets (:func:`_head_loss`), as Keras's masks do."""
    from .declare import Activate, Dense
    from .layers import Add, Concat, Dropout, LayerNorm
    from .recurrent import _Recurrent

    stepwise = (Dense, LayerNorm, Activate, Dropout)
    masks: dict[int, int] = {}
    first = len(g.inputs)
    for k, call in enumerate(g.calls):
        layer, v = g.layers[call.layer], first + k
        if isinstance(layer, _Recurrent) and layer.masked and layer.return_sequences:
            masks[v] = call.inputs[1]
        elif (isinstance(layer, stepwise) and len(call.inputs) == 1 and call.inputs[0] in masks
              and len(call.shape) == 2 and call.shape[0] == g.value_shape(call.inputs[0])[0]):
            masks[v] = masks[call.inputs[0]]
        elif isinstance(layer, (Add, Concat)) and len(call.shape) == 2:
            # sequences joined step by step: Keras's merge layers AND their operands' masks (an
            # operand without one counts as all steps): here every masked operand has one mask
            joined = {masks[u] for u in call.inputs if u in masks}
            if len(joined) > 1:
                raise SpecError(f"layer {g.names[call.layer]!r} joins sequences padded by different masks "
                                f"({', '.join(repr(_value_name(g, m)) for m in sorted(joined))}); their "
                                f"steps' padding must be one mask input")
            if joined:
                masks[v] = joined.pop()
    return masks


def _value_name(g: "Graph", v: int) -> str:
    """An input's name, or the layer whose call gives value ``v``."""
    return g.inputs[v][0] if v < len(g.inputs) else g.names[g.calls[v - len(g.inputs)].layer]


def loss_masks(net: Network) -> tuple[int, ...]:
    """The inputs (their indices) whose values mask the loss of a sequence output on real
    targets (:func:`step_masks`): a batch whose masks hold no step is 0/0."""
    if net.graph is None:
        return ()
    g, masks = net.graph, step_masks(net.graph)
    return tuple(sorted({masks[v] for v, loss in zip(g.outputs, net.losses)
                         if v in masks and len(g.value_shape(v)) == 2 and not loss.takes_labels
                         and masks[v] < len(g.inputs)}))


class MaskBlock(NamedTuple):
    """A mask input that weighs a sequence output's loss, as the kernels see it: its name and
    its columns [lo, hi) of the packed X (multiples of T after sequences of run-time length)."""

    name: str
    lo: "int | sp.Expr"
    hi: "int | sp.Expr"

    def columns(self, length: int) -> tuple[int, int]:
        """[lo, hi) in a call whose sequences have ``length`` steps."""
        from .embedding import column_at

        return column_at(self.lo, length), column_at(self.hi, length)


def loss_mask_blocks(net: Network) -> tuple[MaskBlock, ...]:
    """The columns of X that hold the masks of :func:`loss_masks`: a batch whose masks there
    sum to 0 has no step to average over (a DataError; the C kernels' SYMNN_ERR_EMPTY)."""
    masks = loss_masks(net)
    if not masks:
        return ()
    columns = net.column_blocks(net.input_widths)
    return tuple(MaskBlock(net.graph.inputs[i][0], *columns[i]) for i in masks)


def _head_loss(loss, width: object, a: ir.Node, Y: ir.Node, steps: object = 1,
               sequence: bool = False, mask: ir.Node | None = None) -> tuple[ir.Node, ir.Node | None]:
    """The mean of one output's loss terms (over N, or N times its width for a loss reduced
    by the mean over every entry), and for a padded sequence (below) each row's target sum.

    A ``sequence`` output, ``steps`` (T) rows of targets per sample (T, K), is the loss of every
    step: its entries are taken as the (N*T, K) rows of its steps, so a row-wise loss (cross
    entropy on a softmax) reads each step's K classes, and the mean is over the N*T steps, as
    PyTorch's loss of ``(N*T, K)``. With class targets (one-hot or probability rows, each
    summing to 1) a row of zeros is a padded step, PyTorch's ``ignore_index``: each row's loss
    terms are multiplied by the row's sum r (1, or 0 for padding) and the mean is over the sum of
    every target, the number of labelled steps. With real targets, a sequence whose steps carry
    a padding ``mask`` (N, T) (:func:`step_masks`) weighs each step's loss terms by its mask m
    (1, or 0 for padding) and the mean is over the steps' mask sum (times the width for a mean
    over entries): PyTorch's ``((pred - y)**2 * m).sum() / (m.sum() * K)`` of a masked MSE."""
    if sequence:
        rows = naming.concrete(naming.N * steps)
        a, Y = (v if tuple(v.shape) == (rows, width) else ir.reshape(v, (rows, width)) for v in (a, Y))
    term_expr = guarded(loss.expr, registry.P, loss.domain)
    term = ir.map_(ir.Elementwise(loss.name, (registry.P, registry.T), term_expr, tex=r"\ell"), a, Y)
    s = sp.Symbol("s")
    if sequence and mask is not None and not loss.takes_labels:
        weights = ir.reshape(mask, (rows, 1))
        u, r, c = sp.Symbol("u", real=True), sp.Symbol("r", real=True), sp.Symbol("c")
        kept = ir.map_(ir.Elementwise("on_steps", (u, r), u * r), term, weights, shape=term.shape)
        return scalar_map("mean", s / (_terms_per_row(loss, width) * c),
                          [(s, ir.sum_(kept)), (c, ir.sum_(weights))]), weights
    if sequence and loss.takes_labels:
        labelled = ir.rowsum(Y)
        u, r, c = sp.Symbol("u", real=True), sp.Symbol("r", real=True), sp.Symbol("c")
        kept = ir.map_(ir.Elementwise("labelled", (u, r), u * r), term, labelled, shape=term.shape)
        return scalar_map("mean", s / c, [(s, ir.sum_(kept)), (c, ir.sum_(Y))]), labelled
    count = naming.N * steps * _terms_per_row(loss, width)
    return scalar_map("mean", s / count, [(s, ir.sum_(term))]), None


def _terms_per_row(loss, width: object) -> object:
    """The loss terms a row of ``width`` outputs adds to its mean's count: every entry for a
    loss reduced by the mean over entries, else one."""
    return width if loss.averages_entries else 1


def _coefficient(value: float) -> sp.Expr:
    return sp.Integer(int(value)) if value == int(value) else sp.Float(value, 17)


def weighted_total(datas: list[ir.Node], weights: tuple[float, ...]) -> ir.Node:
    """The data loss of several outputs: the weighted sum of their mean losses (one output of
    weight 1: its mean loss itself)."""
    if len(datas) == 1 and weights[0] == 1.0:
        return datas[0]
    syms = [sp.Symbol(f"l_{k}") for k in range(1, len(datas) + 1)]
    expr = sp.Add(*(_coefficient(w) * l for w, l in zip(weights, syms)))
    return scalar_map("data_loss", expr, list(zip(syms, datas)))


def _with_penalties(net: Network, data_loss: ir.Node, weights: list[ir.Node]) -> ir.Node:
    """The total loss: ``data_loss`` plus the L2/L1 penalties on ``weights`` (the weight
    matrices, in order)."""
    terms: list[tuple[sp.Symbol, ir.Node]] = [(sp.Symbol("l"), data_loss)]
    w = sp.Symbol("w", real=True)
    expr = terms[0][0]
    for lam, penalty, tag in ((net.l2, w**2 / 2, "l2"), (net.l1, sp.Abs(w), "l1")):
        if lam == 0:
            continue
        for i, Wn in enumerate(weights, 1):
            r = sp.Symbol(f"r_{tag}_{i}")
            terms.append((r, ir.sum_(ir.map_(ir.Elementwise(tag, (w,), penalty), Wn))))
            expr = expr + sp.Float(lam, 17) * r if lam != int(lam) else expr + int(lam) * r
    if len(terms) > 1:
        return scalar_map("loss", expr, terms)
    return data_loss


def _loss_terms(net: Network, a: ir.Node, Y: ir.Node, weights: list[ir.Node]) -> tuple[ir.Node, ir.Node]:
    """(data loss, total loss) of a one-output network."""
    data_loss, _ = _head_loss(net.loss, net.n_out, a, Y)
    return data_loss, _with_penalties(net, data_loss, weights)


def _graph_forward(net: Network, training: bool = False) -> ForwardGraph:
    """A layer graph lowered call by call: each layer builds its IR from its inputs' nodes and
    its parameters; the values it names become labels (``Z^{(dense1)}``)."""
    g = net.graph
    N = naming.N
    X = ir.input_("X", (N, net.n_in))
    Y = ir.input_("Y", (N, net.n_out))
    params: dict[str, ir.Node] = {}
    param_tex: list[tuple[str, str]] = []
    by_layer: list[dict[str, ir.Node]] = []
    for layer, lname in zip(g.layers, g.names):
        mine = {}
        for p, shape in layer.param_shapes().items():
            ident = naming.param_ident(f"{lname}.{p}")
            mine[p] = params[ident] = ir.param(ident, ir.matrix_shape(shape))
            param_tex.append((ident, f"{layer.PARAM_TEX.get(p, p)}^{{({_tex_name(lname)})}}"))
        by_layer.append(mine)
    labels: list[Label] = []
    values: list[ir.Node] = []
    if net.several_inputs:  # the kernels take the inputs packed side by side: each is its columns
        for (iname, _), (lo, hi) in zip(g.inputs, net.column_blocks(net.input_widths)):
            xs = ir.slice_(X, lo, hi)
            labels.append(Label(xs, f"{iname}__x", "X", f"^{{({_tex_name(iname)})}}", f"{iname}.x", f"{iname}.x.ct"))
            values.append(xs)
    else:
        values.append(X)
    zs, acts, activations = [], [], []
    pre_of: dict[int, ir.Node | None] = {}
    by_call = _masks_by_call(g) if training else [((), None)] * len(g.calls)
    # the values at inference (forward): they differ from the values losses and gradients are
    # computed on from the first layer with an eval_output on (a BatchNorm's running statistics)
    eval_values = list(values)
    updates: list[tuple[str, ir.Node]] = []
    for call, tag, (inner, own) in zip(g.calls, g.call_tags, by_call):
        layer = g.layers[call.layer]
        shapes = [g.value_shape(i) for i in call.inputs]
        if inner:  # masks inside the layer (between a recurrent stack's layers)
            rows = values[call.inputs[0]].shape[0]
            masks = tuple(ir.input_(name, (rows, width)) for name, width, _ in inner)
            built = layer.build([values[i] for i in call.inputs], by_layer[call.layer], shapes, masks=masks)
        else:
            built = layer.build([values[i] for i in call.inputs], by_layer[call.layer], shapes)
        if inner or any(eval_values[i] is not values[i] for i in call.inputs):
            built_eval = layer.build([eval_values[i] for i in call.inputs], by_layer[call.layer], shapes)
        else:
            built_eval = built
        eval_values.append(built_eval.eval_output if built_eval.eval_output is not None else built_eval.output)
        if training:
            lname = g.names[call.layer]
            updates += [(naming.param_ident(f"{lname}.{b}"), node) for b, node in built.updates]
        if layer.output_activation is not None:  # a Dense, an Activate: its pre-activation is named first
            zs.append(built.named[0][0])
            acts.append(built.output)
            activations.append(layer.output_activation)
        sup = f"^{{({_tex_name(tag)})}}"
        for i, (node, letter) in enumerate(built.named):
            pre = letter == "Z"  # a pre-activation: its cotangent is the layer's delta
            labels.append(Label(node, f"{tag}__v{i}", letter, sup, f"{tag}.v{i}" if not pre else f"{tag}.z",
                                f"{tag}.delta" if pre else f"{tag}.v{i}.ct", pre))
        labels.append(Label(built.output, f"{tag}__out", layer.OUTPUT_TEX, sup, tag, f"{tag}.ct"))
        pre_of[len(values)] = next((node for node, letter in built.named if letter == "Z"), None)
        out_node = built.output
        if own is not None:  # training: the call's own mask (dropout_masks numbers them alike)
            out_node = dropped(out_node, ir.input_(own[0], out_node.shape), own[2])
        values.append(out_node)
    weights = [params[naming.param_ident(f"{lname}.{p}")] for layer, lname in zip(g.layers, g.names)
               for p in layer.REGULARISED]
    heads = []
    several = net.several_outputs
    masks = step_masks(g)
    for v, oname, loss, w, shape, steps, (lo, hi) in zip(
            g.outputs, net.output_names, net.losses, net.loss_weights, net.output_shapes, net.output_steps,
            net.column_blocks(net.output_widths)):
        y = ir.slice_(Y, lo, hi) if several else Y
        sequence = len(shape) == 2
        if sequence:  # a sequence's targets as the rows of its steps, as its logits are
            y = ir.reshape(y, (naming.concrete(N * steps), shape[-1]))
        data, labelled = _head_loss(loss, shape[-1], values[v], y, steps, sequence,
                                    values[masks[v]] if v in masks else None)
        heads.append(Head(oname, values[v], pre_of[v], y, loss, w, data, labelled))
        if several:
            sup = f"^{{({_tex_name(oname)})}}"
            labels.append(Label(y, f"{oname}__y", "Y", sup, f"{oname}.y", f"{oname}.y.ct"))
            labels.append(Label(data, f"{oname}__loss", "L", sup, f"{oname}.loss", f"{oname}.loss.ct"))
    data_loss = weighted_total([h.data for h in heads], net.loss_weights)
    loss = _with_penalties(net, data_loss, weights)
    outs = [eval_values[v] for v in g.outputs]
    out = outs[0] if not several else ir.concat(*outs)
    return ForwardGraph(net, X, Y, params, tuple(zs), tuple(acts), data_loss, loss, tuple(_unique(labels)),
                        tuple(param_tex), out, heads[0].pre if not several else None, tuple(activations),
                        tuple(heads), tuple(updates))


def _unique(labels: list[Label]) -> list[Label]:
    """One label per node (an activation-free output is its pre-activation: keep the first)."""
    seen: set[int] = set()
    out = []
    for lab in labels:
        if id(lab.node) not in seen:
            seen.add(id(lab.node))
            out.append(lab)
    return out


def _tex_name(name: str) -> str:
    return r"\mathrm{%s}" % name.replace("_", r"\_")


def build_forward(net: Network, training: bool = False) -> ForwardGraph:
    """Lower the declaration into IR nodes (dense = matmul + bias-add + map).

    With ``training``, a hidden layer with dropout ``p`` passes on ``a * M / (1 - p)``
    (inverted dropout) with its mask ``M`` an input of the graph, so the chain rule carries the
    mask into the gradient like any element-wise factor.
    """
    if net.graph is not None:
        return _graph_forward(net, training)
    N = naming.N
    X = ir.input_("X", (N, net.n_in))
    Y = ir.input_("Y", (N, net.n_out))
    params: dict[str, ir.Node] = {}
    zs, acts = [], []
    a = X
    for i, layer in enumerate(net.layers, 1):
        W = params[naming.weight(i)] = ir.param(naming.weight(i), (layer.out_features, layer.in_features))
        b = params[naming.bias(i)] = ir.param(naming.bias(i), (layer.out_features,))
        z = ir.add_bias(ir.matmul(a, W, trans_b=True), b)
        a = apply_activation(layer.activation, z)
        zs.append(z)
        acts.append(a)
        if training and layer.dropout:
            a = dropped(a, ir.input_(mask_name(i), (N, layer.out_features)), layer.dropout)
    weights = [params[naming.weight(i)] for i in range(1, len(net.layers) + 1)]
    data_loss, loss = _loss_terms(net, a, Y, weights)
    heads = (Head("Y", a, zs[-1], Y, net.loss, 1.0, data_loss),)
    labels = []
    for i, (z, act) in enumerate(zip(zs, acts), 1):
        labels += [Label(z, naming.preact(i), "Z", f"^{{({i})}}", naming.preact(i), f"delta{i}", True),
                   Label(act, naming.act(i), "A", f"^{{({i})}}", naming.act(i), f"delta_a{i}")]
    param_tex = [(name, f"{naming.stem_of(name)}^{{({naming.layer_of(name)})}}") for name in params]
    return ForwardGraph(net, X, Y, params, tuple(zs), tuple(acts), data_loss, loss, tuple(labels),
                        tuple(param_tex), activations=tuple(layer.activation for layer in net.layers),
                        heads=heads)
