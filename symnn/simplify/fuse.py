"""Pass ``fuse_losses``: fused, stable loss rewrites, each *proved* by SymPy when applied.

* softmax + cross-entropy: the loss term ``-y log softmax(z)`` becomes
  ``logsumexp(z) - y.z`` (finite for logits (1000, 0, 0)) and its gradient ``p - y``.
  Proof, on a concrete width of 3 with one-hot/probability targets (``sum y = 1``): SymPy's
  derivative of the plain composition minus ``p - y`` simplifies to 0.
* sigmoid + binary cross-entropy: the term ``BCE(sigmoid(z), y)`` becomes
  ``softplus(z) - y z`` (BCE from logits) with gradient ``sigmoid(z) - y``. Proof: SymPy's
  derivative of the plain composition minus ``sigmoid(z) - y`` is 0, and the two values
  agree symbolically.

The pass runs on the forward graph, before the chain rule, so the derivation uses the fused
pullback; :class:`Fusion` records before/after for the report.

Which rewrite applies is read from the table :data:`FUSION_RULES`, keyed by the declared
capabilities of the pair (the output activation's ``link`` and the loss's ``link``,
:class:`symnn.capabilities.Link`), never by names: a user loss is fused only if it declares a
link, and then only once the proof holds for its own expression.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import sympy as sp

from .. import ir, registry
from ..capabilities import Link
from ..errors import SpecError
from ..graph import ForwardGraph

_z = sp.Symbol("z", real=True)
_y = sp.Symbol("y", real=True)


@dataclass(frozen=True)
class Fusion:
    """An applied fusion: the plain and fused element-wise gradient w.r.t. the logits."""

    name: str
    plain_grad: sp.Expr
    fused_grad: sp.Expr
    plain_loss: sp.Expr
    fused_loss: sp.Expr


def _vanishes(expr: sp.Expr, logits: Sequence[sp.Symbol]) -> bool:
    """``expr`` is identically 0, for every real value of ``logits``.

    First as a rational function: each logit z written ``log(u)`` with ``u > 0`` (a bijection
    onto the positive reals), the exponentials become powers of u, the logs of quotients of
    them expand into sums of ``log(u)`` and ``log`` of polynomials, and ``cancel`` decides a
    rational function's zero exactly, in 0.1 s at width 3. SymPy's ``simplify``, a heuristic
    ten times slower (its first call also imports sympy.physics, half a second), runs only on
    what this leaves (a user loss whose terms are not rational in the exponentials)."""
    u = {z: sp.Symbol(f"{z.name}_u", positive=True) for z in logits}
    e = sp.powsimp(sp.expand_power_exp(expr.subs({z: sp.log(v) for z, v in u.items()})))
    e = e.replace(lambda a: isinstance(a, sp.log), lambda a: sp.log(sp.factor(a.args[0])))
    if sp.cancel(sp.together(sp.expand_log(e, force=True))) == 0:
        return True
    return sp.simplify(sp.expand_log(expr, force=True)) == 0


@lru_cache(maxsize=None)
def prove_softmax_ce(width: int = 3, loss_expr: sp.Expr | None = None) -> Fusion:
    """SymPy proof that d/dz_j [sum_k l(softmax(z)_k, y_k)] = p_j - y_j when sum_k y_k = 1, for
    the loss term ``l = loss_expr`` in (P, T) (default: the registry cross-entropy's
    ``-y log p``), and that its value is ``logsumexp(z) - y.z``."""
    term = registry.loss("cross_entropy").expr if loss_expr is None else loss_expr
    z = sp.symbols(f"z0:{width}", real=True)
    y = sp.symbols(f"y0:{width}", real=True)
    denom = sum(sp.exp(t) for t in z)
    p = [sp.exp(t) / denom for t in z]
    plain = sum(term.subs({registry.P: pk, registry.T: yk}) for pk, yk in zip(p, y))
    on_simplex = {y[-1]: 1 - sum(y[:-1])}
    for j in range(width):
        diff = sp.diff(plain, z[j]) - (p[j] - y[j])
        if not _vanishes(diff.subs(on_simplex), z):
            raise SpecError(f"softmax+cross-entropy fusion failed its SymPy proof at column {j}")
    fused = sp.log(denom) - sum(yk * zk for yk, zk in zip(y, z))
    if not _vanishes(plain.subs(on_simplex) - fused.subs(on_simplex), z):
        raise SpecError("softmax+cross-entropy fused loss differs from the plain loss")
    # the record, as SymPy objects over a symbolic width K (printed by the derivation)
    k, j, K = sp.Symbol("k", integer=True), sp.Symbol("j", integer=True), sp.Symbol("K", integer=True, positive=True)
    zb, yb, pb = sp.IndexedBase("z"), sp.IndexedBase("y"), sp.IndexedBase("p")
    plain_loss = -sp.Sum(yb[k] * sp.log(pb[k]), (k, 1, K))
    return Fusion(
        "softmax + cross-entropy",
        plain_grad=sp.Derivative(plain_loss, zb[j], evaluate=False),
        fused_grad=pb[j] - yb[j],
        plain_loss=plain_loss,
        fused_loss=sp.log(sp.Sum(sp.exp(zb[k]), (k, 1, K))) - sp.Sum(yb[k] * zb[k], (k, 1, K)),
    )


@lru_cache(maxsize=None)
def prove_sigmoid_bce(act_expr: sp.Expr | None = None, loss_expr: sp.Expr | None = None) -> Fusion:
    """SymPy proof that d/dz l(s(z), y) = s(z) - y and that the softplus form equals it, for the
    activation ``s = act_expr`` in X and the loss term ``l = loss_expr`` in (P, T) (defaults:
    the registry sigmoid and BCE)."""
    act = registry.activation("sigmoid").expr if act_expr is None else act_expr
    term = registry.loss("bce").expr if loss_expr is None else loss_expr
    sig = act.subs(registry.X, _z)
    plain = term.subs({registry.P: sig, registry.T: _y})
    plain_grad = sp.diff(plain, _z)
    fused_grad = sig - _y
    if not _vanishes(plain_grad - fused_grad, (_z,)):
        raise SpecError("sigmoid+BCE fusion failed its SymPy proof")
    fused = sp.log(1 + sp.exp(_z)) - _y * _z
    if not _vanishes(plain - fused, (_z,)):
        raise SpecError("sigmoid+BCE fused loss differs from the plain loss")
    return Fusion("sigmoid + binary cross-entropy", plain_grad, fused_grad, plain, fused)


@dataclass(frozen=True)
class FusionRule:
    """A fused rewrite of an (output activation, loss) pair: ``prove`` runs the SymPy proof on
    the pair's own expressions (SpecError if it does not hold), ``term`` builds the fused
    loss term from the logits ``z``, the targets ``Y`` and that proof."""

    prove: Callable[[Any, Any], Fusion]
    term: Callable[[ir.Node, ir.Node, Fusion], ir.Node]


def _softmax_ce_term(z: ir.Node, y: ir.Node, proof: Fusion) -> ir.Node:
    return ir.softmax_ce(z, y)


def _bce_logits_term(z: ir.Node, y: ir.Node, proof: Fusion) -> ir.Node:
    fn = ir.Elementwise("bce_logits", (_z, _y), proof.fused_loss, grads=(proof.fused_grad, None))
    return ir.map_(fn, z, y)


#: (output activation's link, loss's link) -> the rewrite; a pair not listed is not fused
FUSION_RULES: Mapping[tuple[Link, Link], FusionRule] = MappingProxyType({
    (Link.SOFTMAX, Link.SOFTMAX): FusionRule(lambda act, loss: prove_softmax_ce(3, loss.expr), _softmax_ce_term),
    (Link.LOGISTIC, Link.LOGISTIC): FusionRule(lambda act, loss: prove_sigmoid_bce(act.expr, loss.expr),
                                               _bce_logits_term),
})


def fuse_losses(fwd: ForwardGraph, log: list[Fusion] | None = None) -> ForwardGraph:
    """Rewrite the loss of each output of ``fwd`` into a fused, stable form where a rule of
    :data:`FUSION_RULES` applies to the declared links of its activation and loss."""
    net = fwd.network
    fused: dict[int, ir.Node] = {}
    heads = []
    for head, last in zip(fwd.heads, net.output_activations):
        loss = head.loss
        rule = FUSION_RULES.get((last.link, loss.link))
        if rule is None or head.pre is None:  # no rule, or an output layer without logits
            heads.append(head)
            continue
        try:
            proof = rule.prove(last, loss)
        except SpecError as exc:
            raise SpecError(f"loss {loss.name!r} declares link={loss.link.value!r}, but its fused rewrite on the "
                            f"{last.name!r} output does not hold: {exc}; declare no link to train it unfused") from exc
        term = rule.term(head.pre, head.Y, proof)
        if head.labelled is not None:
            # a padded step (a row of zero targets) adds nothing: the fused term times the row's
            # target sum r, 1 or 0. The proof assumed sum y = 1; at r = 0 both forms are 0 (y = 0)
            u, r = sp.Symbol("u", real=True), sp.Symbol("r", real=True)
            term = ir.map_(ir.Elementwise("labelled", (u, r), u * r), term, head.labelled, shape=term.shape)
        if log is not None:
            log.append(proof)
        old_mean: ir.Elementwise = head.data.arg
        # the mean's other operands (the count of labelled steps of a padded sequence) kept
        data = fused[id(head.data)] = ir.map_(old_mean, ir.sum_(term), *head.data.src[1:], shape=())
        heads.append(replace(head, data=data))
    if not fused:
        return fwd
    data_loss = _rebuilt(fwd.data_loss, fused)
    total = _rebuilt(fwd.loss, fused)
    labels = tuple(replace(lab, node=fused[id(lab.node)]) if id(lab.node) in fused else lab for lab in fwd.labels)
    return replace(fwd, data_loss=data_loss, loss=total, heads=tuple(heads), labels=labels)


def _rebuilt(node: ir.Node, new: dict[int, ir.Node]) -> ir.Node:
    """``node`` with the nodes keyed in ``new`` replaced: the scalar sums over the outputs' mean
    losses and the penalties, rebuilt above what changed (``new`` is memoised into)."""
    if id(node) in new:
        return new[id(node)]
    if node.shape != () or node.op is not ir.Op.MAP:
        return node
    src = tuple(_rebuilt(s, new) for s in node.src)
    out = node if all(a is b for a, b in zip(src, node.src)) else ir.map_(node.arg, *src, shape=())
    new[id(node)] = out
    return out


__all__ = ["FUSION_RULES", "Fusion", "FusionRule", "fuse_losses", "prove_softmax_ce", "prove_sigmoid_bce"]
