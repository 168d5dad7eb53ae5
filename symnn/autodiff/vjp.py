"""Pullback (vector-Jacobian product) rules: one per primitive op, in one table.

A rule receives the node and its cotangent ``ct`` (the gradient of the loss with respect to
the node's value, same shape as the node) and returns one cotangent per operand, or ``None``
when no gradient flows to that operand (integer targets, the input ``X``...). Rules build IR
nodes; they never evaluate anything. Each rule has its own numeric test
(``tests/unit/test_vjp_rules.py``).
"""

from __future__ import annotations

from typing import Callable

import sympy as sp

from .. import ir
from .elementwise import make_map, partial, partial_tex
from .scan import pullback_reshape, pullback_scan

Pullback = Callable[[ir.Node, ir.Node], tuple[ir.Node | None, ...]]

_c = sp.Symbol("c", real=True)
_p = sp.Symbol("p", real=True)
_y = sp.Symbol("y", real=True)
_r = sp.Symbol("r", real=True)
_d = sp.Symbol("d", real=True)


def broadcast(ct: ir.Node, shape: ir.Shape) -> ir.Node:
    """``ct`` (a scalar or a row/column vector) broadcast to ``shape``."""
    return make_map("broadcast", _c, [(_c, ct)], shape)


def unbroadcast(g: ir.Node, shape: ir.Shape) -> ir.Node:
    """Sum ``g`` over the axes along which an operand of ``shape`` was broadcast."""
    if tuple(g.shape) == tuple(shape):
        return g
    if shape == ():
        return ir.sum_(g)
    if len(shape) == 1:
        return ir.sum_rows(g)
    if len(shape) == 2 and shape[1] == 1:
        return ir.rowsum(g)
    raise ValueError(f"cannot unbroadcast {g.shape} to {shape}")


def _matmul(node: ir.Node, ct: ir.Node) -> tuple[ir.Node, ir.Node]:
    # C = op(A) op(B):  dA = ct op(B)^T (transposed back if A was),  dB = op(A)^T ct (likewise)
    a, b = node.src
    ta, tb = node.arg
    da = ir.matmul(b, ct, tb, True) if ta else ir.matmul(ct, b, False, not tb)
    db = ir.matmul(ct, a, True, ta) if tb else ir.matmul(a, ct, not ta, False)
    return da, db


def _add_bias(node: ir.Node, ct: ir.Node) -> tuple[ir.Node, ir.Node]:
    # Z + 1 b^T:  dZ = ct,  db = 1^T ct
    return ct, ir.sum_rows(ct)


def _sum_rows(node: ir.Node, ct: ir.Node) -> tuple[ir.Node]:
    # s_j = sum_n A_nj:  dA_nj = ct_j
    return (broadcast(ct, node.src[0].shape),)


def _map(node: ir.Node, ct: ir.Node) -> tuple[ir.Node | None, ...]:
    # y = f(x_1, ..., x_k) element-wise:  dx_i = ct * df/dx_i  (summed where x_i was broadcast)
    fn: ir.Elementwise = node.arg
    out: list[ir.Node | None] = []
    for i, src in enumerate(node.src):
        if src.op is ir.Op.INPUT:
            out.append(None)
            continue
        d = partial(fn, i)
        if d == 0:
            out.append(None)
            continue
        args = list(zip(fn.args, node.src))
        if fn.tex is not None and d.free_symbols & set(fn.args):
            # the partial derivative is a node of its own, named after the function (tanh'), so
            # the derivation prints ct * tanh'(Z); fuse_elementwise joins the two for emission
            dmap = make_map(f"d{fn.name}", d, args, node.shape, tex=partial_tex(fn, i))
            g = make_map(f"d{fn.name}", _c * _d, [(_c, ct), (_d, dmap)], node.shape)
        else:
            g = make_map(f"d{fn.name}", _c * d, [(_c, ct)] + args, node.shape)
        out.append(unbroadcast(g, src.shape))
    return tuple(out)


def _softmax(node: ir.Node, ct: ir.Node) -> tuple[ir.Node]:
    # p = softmax(z) row-wise:  dz = p * (ct - rowsum(ct * p))   (Jacobian diag(p) - p p^T)
    q = make_map("ct_p", _c * _p, [(_c, ct), (_p, node)], node.shape)
    r = ir.rowsum(q)
    return (make_map("dsoftmax", _p * (_c - _r), [(_p, node), (_c, ct), (_r, r)], node.shape),)


def _logsumexp(node: ir.Node, ct: ir.Node) -> tuple[ir.Node]:
    # l = log sum_k exp(z_k):  dz = ct * softmax(z)
    z = node.src[0]
    return (make_map("dlogsumexp", _c * _p, [(_c, ct), (_p, ir.softmax(z))], z.shape),)


def _rowsum(node: ir.Node, ct: ir.Node) -> tuple[ir.Node]:
    # r_n = sum_k A_nk:  dA_nk = ct_n
    return (broadcast(ct, node.src[0].shape),)


def _softmax_ce(node: ir.Node, ct: ir.Node) -> tuple[ir.Node, None]:
    # l_n = logsumexp(z_n) - y_n . z_n with sum_k y_nk = 1:  dz = ct * (softmax(z) - y)
    z, y = node.src
    g = make_map("dsoftmax_ce", _c * (_p - _y), [(_c, ct), (_p, ir.softmax(z)), (_y, y)], z.shape)
    return g, None


def _sum(node: ir.Node, ct: ir.Node) -> tuple[ir.Node]:
    # s = sum of all elements:  dA = ct everywhere
    return (broadcast(ct, node.src[0].shape),)


def _concat(node: ir.Node, ct: ir.Node) -> tuple[ir.Node | None, ...]:
    # C = [A_1 A_2 ...]:  dA_i = the columns of ct where A_i sits
    out: list[ir.Node | None] = []
    lo = 0
    for src in node.src:
        hi = ir.column(lo + src.shape[1])
        out.append(None if src.op is ir.Op.INPUT else ir.slice_(ct, lo, hi))
        lo = hi
    return tuple(out)


def _slice(node: ir.Node, ct: ir.Node) -> tuple[ir.Node]:
    # S = A[:, lo:hi]:  dA = [0 ct 0], ct in columns lo..hi-1 and zeros on either side
    (a,) = node.src
    lo, hi = node.arg
    rows, width = a.shape[0], a.shape[1]
    blocks = [make_map("zero", sp.Integer(0), [], (rows, lo))] if lo != 0 else []
    blocks.append(ct)
    if sp.expand(width - hi) != 0:
        blocks.append(make_map("zero", sp.Integer(0), [], (rows, ir.column(width - hi))))
    return (blocks[0] if len(blocks) == 1 else ir.concat(*blocks),)


def _conv(node: ir.Node, ct: ir.Node) -> tuple[ir.Node | None, ir.Node]:
    # Y = W * X (cross-correlation):  dX = the transposed convolution of ct with W,
    # dW = the correlation of X with ct, summed over the batch
    x, w = node.src
    dx = None if x.op is ir.Op.INPUT else ir.conv_grad_input(ct, w, node.arg)
    return dx, ir.conv_grad_weight(x, ct, node.arg)


def _channel_bias(node: ir.Node, ct: ir.Node) -> tuple[ir.Node, ir.Node]:
    # Z + b[c] on channel c's positions:  dZ = ct,  db_c = the sum of ct over the batch and c's positions
    return ct, ir.channel_sum(ct, *node.arg)


def _channel_sum(node: ir.Node, ct: ir.Node) -> tuple[ir.Node]:
    # s_c = the sum of A over the batch and channel c's positions:  dA = ct_c on each of them
    (a,) = node.src
    spread = ir.channel_expand(ct, *node.arg)
    return (spread if len(a.shape) == 1 else broadcast(spread, a.shape),)


def _channel_expand(node: ir.Node, ct: ir.Node) -> tuple[ir.Node]:
    # v[c] on each of channel c's positions:  dv_c = the sum of ct over them
    return (ir.channel_sum(ct, *node.arg),)


def _max_pool(node: ir.Node, ct: ir.Node) -> tuple[ir.Node | None]:
    # each window's maximum:  dX = ct routed to the window's first maximum (summed where windows overlap)
    (x,) = node.src
    return (None if x.op is ir.Op.INPUT else ir.max_pool_grad(x, ct, node.arg),)


def _avg_pool(node: ir.Node, ct: ir.Node) -> tuple[ir.Node | None]:
    # each window's mean:  dX = ct / (the window's divisor) on each of its taps
    (x,) = node.src
    return (None if x.op is ir.Op.INPUT else ir.avg_pool_grad(ct, node.arg),)


def _gather(node: ir.Node, ct: ir.Node) -> tuple[None, ir.Node]:
    # Y[n, t*D:(t+1)*D] = W[I[n, t]]:  no gradient to the indices (integers); dW = each
    # D-block of ct added into the row its index names (repeats accumulate)
    idx, _ = node.src
    return None, ir.gather_grad(idx, ct, *node.arg)


PULLBACKS: dict[ir.Op, Pullback] = {
    ir.Op.MATMUL: _matmul,
    ir.Op.ADD_BIAS: _add_bias,
    ir.Op.SUM_ROWS: _sum_rows,
    ir.Op.MAP: _map,
    ir.Op.SOFTMAX: _softmax,
    ir.Op.LOGSUMEXP: _logsumexp,
    ir.Op.ROWSUM: _rowsum,
    ir.Op.SOFTMAX_CE: _softmax_ce,
    ir.Op.SUM: _sum,
    ir.Op.CONCAT: _concat,
    ir.Op.SLICE: _slice,
    ir.Op.CONV: _conv,
    ir.Op.CHANNEL_BIAS: _channel_bias,
    ir.Op.CHANNEL_SUM: _channel_sum,
    ir.Op.CHANNEL_EXPAND: _channel_expand,
    ir.Op.MAX_POOL: _max_pool,
    ir.Op.AVG_POOL: _avg_pool,
    ir.Op.GATHER: _gather,
    ir.Op.RESHAPE: pullback_reshape,
    ir.Op.SCAN: pullback_scan,
}
#: every op has a pullback but the pullbacks' own (:data:`symnn.ir.PULLBACK_OPS`): symnn
#: derives first derivatives, and the chain rule names such an op if it ever meets one
