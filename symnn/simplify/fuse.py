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
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from .. import ir, registry
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


@lru_cache(maxsize=None)
def prove_softmax_ce(width: int = 3) -> Fusion:
    """SymPy proof that d/dz_j [-sum_k y_k log softmax(z)_k] = p_j - y_j when sum_k y_k = 1."""
    z = sp.symbols(f"z0:{width}", real=True)
    y = sp.symbols(f"y0:{width}", real=True)
    denom = sum(sp.exp(t) for t in z)
    p = [sp.exp(t) / denom for t in z]
    plain = sum(registry.loss("cross_entropy").expr.subs({registry.P: pk, registry.T: yk}) for pk, yk in zip(p, y))
    on_simplex = {y[-1]: 1 - sum(y[:-1])}
    for j in range(width):
        diff = sp.diff(plain, z[j]) - (p[j] - y[j])
        if sp.simplify(sp.expand_log(diff.subs(on_simplex), force=True)) != 0:
            raise SpecError(f"softmax+cross-entropy fusion failed its SymPy proof at column {j}")
    fused = sp.log(denom) - sum(yk * zk for yk, zk in zip(y, z))
    if sp.simplify(sp.expand_log(plain.subs(on_simplex) - fused.subs(on_simplex), force=True)) != 0:
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
def prove_sigmoid_bce() -> Fusion:
    """SymPy proof that d/dz BCE(sigmoid(z), y) = sigmoid(z) - y and softplus form is equal."""
    sig = registry.activation("sigmoid").expr.subs(registry.X, _z)
    plain = registry.loss("bce").expr.subs({registry.P: sig, registry.T: _y})
    plain_grad = sp.diff(plain, _z)
    fused_grad = sig - _y
    if sp.simplify(plain_grad - fused_grad) != 0:
        raise SpecError("sigmoid+BCE fusion failed its SymPy proof")
    fused = sp.log(1 + sp.exp(_z)) - _y * _z
    for branch in (sp.Symbol("q", positive=True), -sp.Symbol("q", positive=True)):
        d = (plain - fused).subs(_z, branch)
        if sp.simplify(sp.expand_log(d, force=True)) != 0:
            raise SpecError("sigmoid+BCE fused loss differs from the plain loss")
    return Fusion("sigmoid + binary cross-entropy", plain_grad, fused_grad, plain, fused)


def fuse_losses(fwd: ForwardGraph, log: list[Fusion] | None = None) -> ForwardGraph:
    """Rewrite the loss of ``fwd`` into a fused, stable form where a rule applies."""
    net = fwd.network
    last, loss = net.layers[-1].activation, net.loss
    if loss.user:
        return fwd
    z = fwd.z[-1]
    if last.is_rowwise and loss.name == "cross_entropy":
        proof = prove_softmax_ce()
        term = ir.softmax_ce(z, fwd.Y)
    elif not last.user and last.name == "sigmoid" and loss.name == "bce":
        proof = prove_sigmoid_bce()
        fn = ir.Elementwise(
            "bce_logits",
            (_z, _y),
            sp.log(1 + sp.exp(_z)) - _y * _z,
            grads=(proof.fused_grad, None),
        )
        term = ir.map_(fn, z, fwd.Y)
    else:
        return fwd
    if log is not None:
        log.append(proof)
    old_mean: ir.Elementwise = fwd.data_loss.arg
    data_loss = ir.map_(old_mean, ir.sum_(term), shape=())
    if fwd.loss is fwd.data_loss:
        total = data_loss
    else:
        fn = fwd.loss.arg
        src = tuple(data_loss if s is fwd.data_loss else s for s in fwd.loss.src)
        total = ir.map_(fn, *src, shape=())
    return ForwardGraph(net, fwd.X, fwd.Y, fwd.params, fwd.z, fwd.a, data_loss, total)


__all__ = ["Fusion", "fuse_losses", "prove_softmax_ce", "prove_sigmoid_bce"]
