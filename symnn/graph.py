"""declare -> IR: build the forward tensor graph of a :class:`~symnn.declare.Network`.

The graph is built at *symbolic* batch size ``N``; widths are the declared ints (or SymPy
symbols when the network is only derived and printed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

from . import ir, naming, registry, saturate
from .declare import Network
from .expressions import Domain, derivative, exact_bound
from .functions import Guard


@dataclass(frozen=True)
class ForwardGraph:
    """The forward graph and its named nodes."""

    network: Network
    X: ir.Node
    Y: ir.Node
    params: dict[str, ir.Node]
    z: tuple[ir.Node, ...]  # pre-activations z1..zL
    a: tuple[ir.Node, ...]  # activations a1..aL
    data_loss: ir.Node  # scalar: reduced loss terms
    loss: ir.Node  # scalar: data loss + penalties

    @property
    def output(self) -> ir.Node:
        return self.a[-1]


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


def dropout_masks(net: Network) -> list[tuple[str, int, int, float]]:
    """``[(mask name, layer, width, drop probability)]`` for the layers with dropout."""
    return [(mask_name(i), i, int(layer.out_features), layer.dropout)
            for i, layer in enumerate(net.layers, 1) if layer.dropout]


def build_forward(net: Network, training: bool = False) -> ForwardGraph:
    """Lower the declaration into IR nodes (dense = matmul + bias-add + map).

    With ``training``, a hidden layer with dropout ``p`` passes on ``a * M / (1 - p)``
    (inverted dropout) with its mask ``M`` an input of the graph, so the chain rule carries the
    mask into the gradient like any element-wise factor.
    """
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
            mask = ir.input_(mask_name(i), (N, layer.out_features))
            u, k = sp.Symbol("u", real=True), sp.Symbol("k", real=True)
            keep = sp.Float(1 / (1 - layer.dropout), 17)
            a = ir.map_(ir.Elementwise("dropout", (u, k), u * k * keep), a, mask)
    term_expr = guarded(net.loss.expr, registry.P, net.loss.domain)
    term = ir.map_(ir.Elementwise(net.loss.name, (registry.P, registry.T), term_expr, tex=r"\ell"), a, Y)
    s = sp.Symbol("s")
    count = N * net.n_out if net.loss.reduction == "mean" else N
    data_loss = scalar_map("mean", s / count, [(s, ir.sum_(term))])
    loss = data_loss
    terms: list[tuple[sp.Symbol, ir.Node]] = [(sp.Symbol("l"), data_loss)]
    w = sp.Symbol("w", real=True)
    expr = terms[0][0]
    for lam, penalty, tag in ((net.l2, w**2 / 2, "l2"), (net.l1, sp.Abs(w), "l1")):
        if lam == 0:
            continue
        for i in range(1, len(net.layers) + 1):
            Wn = params[naming.weight(i)]
            r = sp.Symbol(f"r_{tag}_{i}")
            terms.append((r, ir.sum_(ir.map_(ir.Elementwise(tag, (w,), penalty), Wn))))
            expr = expr + sp.Float(lam, 17) * r if lam != int(lam) else expr + int(lam) * r
    if len(terms) > 1:
        loss = scalar_map("loss", expr, terms)
    return ForwardGraph(net, X, Y, params, tuple(zs), tuple(acts), data_loss, loss)
