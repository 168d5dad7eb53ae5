"""Every pullback rule in the VJP table, checked alone against central differences.

Each case wraps one op between parameter leaves and a random projection
``L = sum(R * op(...))``; the chain rule's gradient (evaluated by the IR interpreter) must
match central differences of L.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symnn import ir
from symnn.autodiff.chain import gradients
from symnn.autodiff.vjp import PULLBACKS
from symnn.interpret import evaluate

N = 3
u, v = sp.symbols("u v", real=True)


def _project(out: ir.Node) -> ir.Node:
    R = ir.input_("R", out.shape if out.shape else ())
    r, o = sp.symbols("r o", real=True)
    return ir.sum_(ir.map_(ir.Elementwise("proj", (r, o), r * o), R, out, shape=out.shape))


def _scan_cases() -> dict[str, ir.Node]:
    """Loops: a recurrence through a product with an invariant weight and bias, from a carry
    that is a parameter (its cotangent is the backward loop's last), run forwards and backwards,
    over 3 steps and over 1; a carry of two blocks (an LSTM's h and c) with two sequences."""
    x = ir.param("Xs", (N, 3 * 2))
    c, xt = ir.var("t.c", (N, 2)), ir.var("t.x", (N, 2))
    w, bb = ir.var("t.w", (2, 2)), ir.var("t.b", (2,))
    z = ir.add_bias(ir.matmul(c, w, False, True), bb)
    new = ir.map_(ir.Elementwise("cell", (u, v), sp.tanh(u) * v + u), xt, z)
    W, bias, c0 = ir.param("Wr", (2, 2)), ir.param("br", (2,)), ir.param("C0", (N, 2))
    cases = {}
    for name, T, reverse in (("SCAN", 3, False), ("SCAN_reverse", 3, True), ("SCAN_one_step", 1, False)):
        body = ir.Scan(T, c, (xt,), (w, bb), new, new, reverse=reverse, label="t")
        seq = x if T == 3 else ir.slice_(x, 0, 2)
        cases[name] = ir.scan(body, c0, [seq], [W, bias])
    # two blocks carried, two sequences, a weight read by a transposed product
    hc, p, q = ir.var("l.hc", (N, 4)), ir.var("l.p", (N, 2)), ir.var("l.q", (N, 2))
    wl = ir.var("l.w", (2, 2))
    h, cc = ir.slice_(hc, 0, 2), ir.slice_(hc, 2, 4)
    gate = ir.map_(ir.Elementwise("gate", (u, v), 1 / (1 + sp.exp(-u - v))), p, ir.matmul(h, wl))
    cell = ir.map_(ir.Elementwise("cellc", (u, v), u * v), gate, cc)
    hidden = ir.map_(ir.Elementwise("hid", (u, v), sp.tanh(u) + v), cell, q)
    both = ir.concat(hidden, cell)
    body = ir.Scan(3, hc, (p, q), (wl,), both, both, label="l")
    cases["SCAN_two_blocks"] = ir.scan(body, ir.param("HC0", (N, 4)), [x, ir.param("Qs", (N, 6))],
                                       [ir.param("Wl", (2, 2))])
    return cases


def _cases():
    A = ir.param("A", (N, 4))
    B = ir.param("B", (4, 2))
    Bt = ir.param("Bt", (2, 4))
    At = ir.param("At", (4, N))
    b = ir.param("b", (4,))
    Yl = ir.input_("Y", (N, 4))
    return {
        "MATMUL": ir.matmul(A, B),
        "MATMUL_TB": ir.matmul(A, Bt, trans_b=True),
        "MATMUL_TA": ir.matmul(At, B, trans_a=True),
        "MATMUL_TATB": ir.matmul(At, Bt, trans_a=True, trans_b=True),
        "ADD_BIAS": ir.add_bias(A, b),
        "SUM_ROWS": ir.sum_rows(A),
        "MAP_unary": ir.map_(ir.Elementwise("tanh", (u,), sp.tanh(u)), A),
        "MAP_binary": ir.map_(ir.Elementwise("f", (u, v), u * sp.exp(v) + v**2), A, A),
        "MAP_broadcast": ir.map_(ir.Elementwise("g", (u, v), sp.sin(u) * v), A, b),
        "SOFTMAX": ir.softmax(A),
        "LOGSUMEXP": ir.logsumexp(A),
        "ROWSUM": ir.rowsum(A),
        "SOFTMAX_CE": ir.softmax_ce(A, Yl),
        "SUM": ir.sum_(A),
        "CONCAT": ir.concat(A, ir.param("C", (N, 2)), A),
        "SLICE": ir.slice_(A, 1, 3),  # zeros on both sides of the cotangent
        "SLICE_left": ir.slice_(A, 0, 2),
        "SLICE_right": ir.slice_(A, 2, 4),
        "RESHAPE": ir.reshape(A, (2 * N, 2)),
        **_scan_cases(),
        # spatial: odd sizes, groups, stride, dilation and padding on one side only
        "CONV": ir.conv(ir.param("I", (N, 4 * 5 * 4)), ir.param("K", (6, 2 * 2 * 3)), _CONV),
        "CHANNEL_BIAS": ir.channel_bias(ir.param("Z", (N, 3 * 5)), ir.param("c", (3,)), 3, 5),
        "CHANNEL_SUM": ir.channel_sum(ir.param("Z", (N, 3 * 5)), 3, 5),
        "CHANNEL_SUM_VECTOR": ir.channel_sum(ir.param("z", (3 * 5,)), 3, 5),
        "CHANNEL_EXPAND": ir.channel_expand(ir.param("c", (3,)), 3, 5),
        "MAX_POOL": ir.max_pool(ir.param("M", (N, 2 * 5 * 6)), _POOL),
        "AVG_POOL": ir.avg_pool(ir.param("M", (N, 2 * 5 * 6)), _AVG),
        # an embedding: repeated indices (their blocks accumulate) and a padding row (none reaches it)
        "GATHER": ir.gather(ir.input_("Ix", (N, 4)), ir.param("E", (5, 3)), 2),
        "GATHER_no_padding": ir.gather(ir.input_("Ix", (N, 4)), ir.param("E", (5, 3))),
    }


#: the indices of the GATHER cases: 4 repeats, 2 (the padding row) twice, 3 never named
_INDICES = np.array([[4, 0, 4, 2], [1, 4, 2, 0], [0, 0, 4, 1]], dtype=float)
#: rows whose gradient is zero by declaration, not by calculus (PyTorch's padding_idx: the
#: forward pass reads the row, training never moves it): (case, parameter) -> row
_DECLARED_ZERO = {("GATHER", "E"): 2}


#: a grouped, strided, dilated convolution padded unevenly (4 channels of 5x4 -> 6)
_CONV = ir.ConvGeometry(4, 5, 4, 6, 2, 3, sh=2, sw=1, pt=1, pb=0, pl=2, pr=1, dh=1, dw=2, groups=2)
#: overlapping windows (stride 1 < window 3), padding, and a ceil_mode partial window
_POOL = ir.PoolGeometry(2, 5, 6, 3, 2, 1, 2, pt=1, pb=1, pl=0, pr=0, ceil_mode=True)
_AVG = ir.PoolGeometry(2, 5, 6, 3, 2, 2, 2, pt=1, pb=1, pl=1, pr=1, ceil_mode=True, count_include_pad=False)


def test_every_op_has_a_case() -> None:
    ops = {n.op for n in _cases().values()}
    assert ops == set(PULLBACKS)


@pytest.mark.parametrize("name", sorted(_cases()))
def test_pullback_matches_central_differences(name: str) -> None:
    rng = np.random.default_rng(0)
    out = _cases()[name]
    L = _project(out)
    leaves = [n for n in ir.toposort([L]) if n.op is ir.Op.PARAM]
    values = {n.arg: rng.normal(size=tuple(int(d) for d in n.shape)) for n in leaves}
    values["R"] = rng.normal(size=tuple(int(d) for d in out.shape))
    y = np.zeros((N, 4))
    y[np.arange(N), [0, 2, 3]] = 1.0
    values["Y"] = y
    values["Ix"] = _INDICES
    grads = gradients(L, {n.arg: n for n in leaves})
    got = evaluate(grads, values)
    for name_p, g in got.items():
        num = np.zeros_like(values[name_p])
        for idx in np.ndindex(num.shape):
            h = 1e-6
            plus, minus = dict(values), dict(values)
            plus[name_p] = values[name_p].copy()
            minus[name_p] = values[name_p].copy()
            plus[name_p][idx] += h
            minus[name_p][idx] -= h
            num[idx] = (evaluate({"L": L}, plus)["L"] - evaluate({"L": L}, minus)["L"]) / (2 * h)
        if (name, name_p) in _DECLARED_ZERO:
            num[_DECLARED_ZERO[name, name_p]] = 0.0
        np.testing.assert_allclose(np.broadcast_to(g, num.shape), num, rtol=1e-6, atol=1e-8)


def test_softmax_rule_equals_sympy_jacobian_width_3() -> None:
    """The general rule p * (ct - rowsum(ct * p)) is SymPy's Jacobian-vector product."""
    z = sp.symbols("z0:3", real=True)
    c = sp.symbols("c0:3", real=True)
    den = sum(sp.exp(t) for t in z)
    p = [sp.exp(t) / den for t in z]
    J = sp.Matrix(3, 3, lambda i, j: sp.diff(p[i], z[j]))
    vjp = J.T * sp.Matrix(c)
    s = sum(ci * pi for ci, pi in zip(c, p))
    for j in range(3):
        assert sp.simplify(vjp[j] - p[j] * (c[j] - s)) == 0
