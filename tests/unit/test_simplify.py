"""One test group per pass: reuse, fusion proofs, stable forms, element-wise fusion, op counts."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from sympy.codegen.cfunctions import expm1

import symnn as sn
from symnn import registry
from symnn.functions import OnePlusErf, Sigmoid, Softplus, plain
from symnn.graph import build_forward
from symnn.simplify.fuse import prove_sigmoid_bce, prove_softmax_ce
from symnn.simplify.pipeline import simplify
from symnn.simplify.reuse import express_in_output
from symnn.simplify.stable import stabilise_expr

z = sp.Symbol("z", real=True)
a = sp.Symbol("a", real=True)


@pytest.mark.parametrize("name,expected", [("sigmoid", a - a**2), ("tanh", 1 - a**2), ("relu", sp.Heaviside(a, 0))])
def test_reuse_forward_values(name: str, expected: sp.Expr) -> None:
    f = registry.activation(name).expr.subs(registry.X, z)
    d = sn.expressions.derivative(f, z) if hasattr(sn, "expressions") else None
    from symnn.expressions import derivative

    d = derivative(f, z)
    out, pieces = express_in_output(d, f, z)
    assert sp.expand(out - expected) == 0 and pieces


def test_reuse_refuses_what_is_not_a_function_of_the_output() -> None:
    f = registry.activation("gelu").expr.subs(registry.X, z)
    from symnn.expressions import derivative

    assert express_in_output(derivative(f, z), f, z) is None


def test_fusions_are_proved() -> None:
    ce = prove_softmax_ce()
    assert str(ce.fused_grad) == "p[j] - y[j]"  # the record over a symbolic width K
    bce = prove_sigmoid_bce()
    assert sp.simplify(bce.plain_grad - bce.fused_grad) == 0


@pytest.mark.parametrize("expr,expected", [
    (1 / (1 + sp.exp(-z)), Sigmoid(z)),
    (sp.log(1 + sp.exp(z)), Softplus(z)),
    (sp.exp(z) / (1 + sp.exp(z)), Sigmoid(z)),
    (sp.exp(-z) / (1 + sp.exp(-z)) ** 2, Sigmoid(z) * Sigmoid(-z)),  # no 1 - sigmoid cancellation
    (2 * (sp.exp(z) - 1), 2 * expm1(z)),
    (z * (1 + sp.erf(z / 2)), z * OnePlusErf(z / 2)),
    (sp.Rational(1, 2) + sp.erf(z) / 2, OnePlusErf(z) / 2),
])
def test_stabilise(expr: sp.Expr, expected: sp.Expr) -> None:
    out = stabilise_expr(expr)
    assert sp.expand(out - expected) == 0
    assert sp.simplify(plain(out) - expr) == 0


def test_stable_sigmoid_derivative_is_finite_where_sympy_is_nan() -> None:
    raw = sp.lambdify(z, sp.exp(-z) / (1 + sp.exp(-z)) ** 2, "numpy")
    with np.errstate(all="ignore"):
        assert np.isnan(raw(np.float64(-710.0)))


@pytest.mark.parametrize("net,fused", [
    (sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 3, "softmax")], loss="cross_entropy"), "softmax"),
    (sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 1, "sigmoid")], loss="bce"), "sigmoid"),
])
def test_pipeline_reports_and_reduces_op_counts(net, fused) -> None:
    s = simplify(build_forward(net))
    names = [r.name for r in s.reports]
    assert names == ["eliminate_dead_code", "fuse_losses", "fuse_elementwise", "reuse_forward_values",
                     "fuse_elementwise", "stabilise", "simplify_loops"]
    first, last = s.reports[0].before, s.reports[-1].after
    assert last[0] < first[0] and last[1] < first[1]
    # each row starts where the previous one ended, for the whole program and per kernel
    for prev, row in zip(s.reports, s.reports[1:]):
        assert row.before == prev.after
        assert row.forward[0] == prev.forward[1] and row.backward[0] == prev.backward[1]
    assert s.reports[-1].after == s.program.op_counts()
    assert s.fusions and fused in s.fusions[0].name
    assert any(r.activation == "tanh" for r in s.reuses)


def test_no_gradient_for_inputs() -> None:
    from symnn import ir

    net = sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 2)], loss="mse")
    prog = simplify(build_forward(net)).program
    # the transpose product dL/dX = dz1 @ W1 is never built
    for node in prog.nodes():
        if node.op is ir.Op.MATMUL:
            assert not (node.src[1].op is ir.Op.PARAM and node.src[1].arg == "W1" and node.arg == (False, False))


def test_derivation_cost_does_not_grow_with_width() -> None:
    small = simplify(build_forward(sn.Network([sn.Dense(4, 4, "tanh"), sn.Dense(4, 2, "softmax")],
                                              loss="cross_entropy"))).program.op_counts()
    big = simplify(build_forward(sn.Network([sn.Dense(784, 4096, "tanh"), sn.Dense(4096, 10, "softmax")],
                                            loss="cross_entropy"))).program.op_counts()
    assert small == big


def test_row_formulas_stay_per_row_and_factors_leave_the_sums() -> None:
    """LayerNorm's backward pass: the derivative of 1/sqrt(v + eps) is a formula of the row's
    variance, so it is computed once per row, not inlined into the (N, d) map that reads it;
    and the negation before the mean's row sum is applied to the (N, 1) sum, not to (N, d)."""
    import sympy as sp

    import symnn as sn
    from symnn import ir, naming
    from symnn.driver import derive_program
    from symnn.lower import plan_kernel

    x = sn.Input(6)
    h = sn.Dense(6, 6, activation="tanh")(x)
    y = sn.Dense(6, 3, activation="softmax")(h + sn.Dense(6, 6, activation="relu")(sn.LayerNorm(6)(h)))
    net = sn.Network(inputs=x, outputs=y, loss="cross_entropy")
    plan = plan_kernel(derive_program(net).program, "loss_and_grad")
    wide = [st for st in plan.stmts if st.kind is ir.Op.MAP and st.shape == (naming.N, 6)]
    assert wide and not any(isinstance(e, sp.Pow) and not e.exp.is_Integer
                            for st in wide for e in sp.preorder_traversal(st.payload))
    readers = {}
    for st in plan.stmts:
        for o in st.operands:
            readers.setdefault(o, []).append(st.kind)
    for st in wide:  # no full-width map exists only to scale what a sum then reduces
        coeff, rest = sp.sympify(st.payload).as_coeff_Mul()
        assert not (rest.is_Symbol and coeff != 1 and readers.get(st.target) == [ir.Op.ROWSUM]), st
    # and the gradient is still the chain rule's: the kernel against central differences
    k = sn.compile(net, backend="numpy")
    assert sn.gradcheck(k, *sn.sample_point(net, n=4)).passed
