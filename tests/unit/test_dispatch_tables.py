"""Statement kinds are the IR's ops, dispatched through tables (issue 20, item 4).

Every op that can reach a plan (any op but a leaf) has a rule in each backend's table, in the
interpreter's, in the pullbacks and in the derivation's two printers; a kind without a rule is
a clear internal error, never a silent fallthrough. The C lowering's own forms are
:class:`~symnn.backends.c.kinds.CKind` members, each with its macro. As
``test_vjp_rules.py::test_every_op_has_a_case`` does for pullbacks, the per-op cases below
also run each rule: every op printed by the NumPy backend computes what the interpreter does.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symnn import interpret, ir, naming
from symnn.autodiff.display import INDEX_FORM, MATRIX_FORM
from symnn.autodiff.vjp import PULLBACKS
from symnn.backends import registry
from symnn.backends.c import config as c_config
from symnn.backends.c.gemm import GEMM_KINDS
from symnn.backends.c.kinds import GEMM_CALLS, MATMUL_KINDS, CKind
from symnn.backends.numpy import config as numpy_config
from symnn.backends.numpy import spatial
from symnn.errors import CodegenError
from symnn.lower import KernelPlan, Loop, Stmt, plan_kernel
from symnn.program import Program
from symnn.render import macros

N = naming.N
PLAN_OPS = frozenset(ir.Op) - ir.LEAF_OPS
#: the statement kinds of plans: every op but a loop, which is planned as a loop's statements
PLAN_KINDS = (PLAN_OPS - {ir.Op.SCAN}) | frozenset(Loop)
K, O = 12, 8  # a width and an output width: K*O is past the C lowering's in-place small product

#: each backend's statement table, by its name in the registry
BACKEND_TABLES = {"numpy": numpy_config.STATEMENTS, "c": c_config.STATEMENTS}

u, v = sp.symbols("u v", real=True)


def _cases() -> dict[str, ir.Node]:
    """One small graph per plan op (each matmul orientation, a broadcasting map), with the
    batch axis first as the backends store it."""
    A = ir.param("A", (N, K))
    B = ir.param("B", (K, O))
    Bt = ir.param("Bt", (O, K))
    D = ir.param("D", (N, O))
    P = ir.param("P", (K, 3))
    b = ir.param("b", (K,))
    Y = ir.input_("Y", (N, K))
    return {
        "MATMUL": ir.matmul(A, B),
        "MATMUL_SMALL": ir.matmul(A, ir.param("E", (K, 2))),
        "MATMUL_TB": ir.matmul(A, Bt, trans_b=True),
        "MATMUL_TA": ir.matmul(A, D, trans_a=True),
        "MATMUL_TATB": ir.matmul(P, Bt, trans_a=True, trans_b=True),
        "ADD_BIAS": ir.add_bias(ir.matmul(A, ir.param("S", (K, K))), b),
        "SUM_ROWS": ir.sum_rows(A),
        "MAP": ir.map_(ir.Elementwise("g", (u, v), sp.tanh(u) * v + sp.exp(v)), A, b),
        "SOFTMAX": ir.softmax(A),
        "LOGSUMEXP": ir.logsumexp(A),
        "ROWSUM": ir.rowsum(A),
        "SOFTMAX_CE": ir.sum_(ir.softmax_ce(A, Y)),
        "SUM": ir.sum_(A),
        "CONCAT": ir.concat(A, D, A),
        "SLICE": ir.slice_(A, 3, 7),
        "RESHAPE": ir.reshape(A, (3 * N, 4)),
        "SCAN": _scan_case(A, Y),
        **_spatial_cases(),
    }


def _scan_case(A: ir.Node, Y: ir.Node) -> ir.Node:
    """A recurrence over 3 steps of 4 columns of A, read backwards, carrying a (N, 4) state
    through a product with an invariant, starting from a block of the data Y."""
    c, x = ir.var("case.c", (N, 4)), ir.var("case.x", (N, 4))
    w = ir.var("case.w", (4, 4))
    new = ir.map_(ir.Elementwise("cell", (u, v), sp.tanh(u + v)), x, ir.matmul(c, w, False, True))
    body = ir.Scan(3, c, (x,), (w,), new, new, reverse=True, label="case")
    return ir.scan(body, ir.slice_(Y, 0, 4), [A], [ir.param("Wr", (4, 4))])


#: a convolution of 2 groups, stride 2 down, dilation 2 down, asymmetric padding (2 above, 0
#: below, 1 left, 2 right): 4x7x6 -> 6x3x8; a max pool in ceil mode, dilated across, padded
#: unevenly; an average pool in ceil mode without the padding in its divisor
CONV = ir.ConvGeometry(4, 7, 6, 6, 3, 2, sh=2, sw=1, pt=2, pb=0, pl=1, pr=2, dh=2, dw=1, groups=2)
MAX_POOL = ir.PoolGeometry(2, 7, 8, 3, 2, 2, 3, pt=1, pb=0, pl=0, pr=1, dh=1, dw=2, ceil_mode=True)
AVG_POOL = ir.PoolGeometry(3, 7, 5, 3, 2, 2, 2, pt=1, pb=0, pl=1, pr=1, ceil_mode=True,
                           count_include_pad=False)


def _spatial_cases() -> dict[str, ir.Node]:
    """One small graph per spatial op, of the odd geometries above."""
    X = ir.param("Xc", (N, CONV.in_size))
    W = ir.param("Wc", (CONV.o, CONV.weight_cols))
    G = ir.param("Gc", (N, CONV.out_size))
    positions = CONV.ho * CONV.wo
    P, Q = ir.param("Xp", (N, MAX_POOL.in_size)), ir.param("Gp", (N, MAX_POOL.out_size))
    return {
        "CONV": ir.conv(X, W, CONV),
        "CONV_GRAD_INPUT": ir.conv_grad_input(G, W, CONV),
        "CONV_GRAD_WEIGHT": ir.conv_grad_weight(X, G, CONV),
        "CHANNEL_BIAS": ir.channel_bias(G, ir.param("bc", (CONV.o,)), CONV.o, positions),
        "CHANNEL_SUM": ir.channel_sum(G, CONV.o, positions),
        "CHANNEL_EXPAND": ir.channel_expand(ir.param("bc", (CONV.o,)), CONV.o, positions),
        "MAX_POOL": ir.max_pool(P, MAX_POOL),
        "MAX_POOL_GRAD": ir.max_pool_grad(P, Q, MAX_POOL),
        "AVG_POOL": ir.avg_pool(ir.param("Xa", (N, AVG_POOL.in_size)), AVG_POOL),
        "AVG_POOL_GRAD": ir.avg_pool_grad(ir.param("Ga", (N, AVG_POOL.out_size)), AVG_POOL),
        # the indices a parameter here (so every backend reads them as the buffer of a leaf),
        # given integer values by _values
        "GATHER": ir.gather(ir.param("Ig", (N, 3)), ir.param("Wg", (5, 4)), 2),
        "GATHER_GRAD": ir.gather_grad(ir.param("Ig", (N, 3)), ir.param("Gg", (N, 3 * 4)), 5, 4, 2),
    }


def _plan(out: ir.Node) -> KernelPlan:
    return plan_kernel(Program({"yhat": out}), "forward")


def _values(n: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.zeros((n, K))
    y[np.arange(n), [0, 2, 3]] = 1.0
    leaves = [x for out in _cases().values() for x in ir.toposort([out]) if x.op is ir.Op.PARAM]
    values = {x.arg: rng.normal(size=tuple(n if d == N else int(d) for d in x.shape)) for x in leaves}
    indices = np.array([[0, 2, 4], [4, 4, 1], [2, 0, 3]], dtype=float)[:n]  # repeats, the padding row 2
    return values | {"Y": y, "X": np.zeros((n, 1)), "Ig": indices}  # the interpreter reads the batch size from X


def test_every_plan_op_has_a_rule_in_every_table() -> None:
    assert set(BACKEND_TABLES) == set(registry.BUILTIN), "a built-in backend without its table here"
    for name, table in BACKEND_TABLES.items():
        assert set(table) == PLAN_KINDS, name
    assert set(interpret.RULES) == set(ir.Op)  # the interpreter evaluates leaves too
    assert set(PULLBACKS) == PLAN_OPS - ir.PULLBACK_OPS
    assert set(MATRIX_FORM) == PLAN_OPS
    assert set(INDEX_FORM) == PLAN_OPS


def test_the_cases_plan_every_op_as_its_kind() -> None:
    kinds = {st.kind for out in _cases().values() for st in _plan(out).stmts}
    assert kinds == PLAN_KINDS
    assert all(isinstance(k, (ir.Op, Loop)) for k in kinds)


@pytest.mark.parametrize("name", sorted(_cases()))
def test_numpy_rule_computes_what_the_interpreter_does(name: str) -> None:
    out = _cases()[name]
    plan = _plan(out)
    lines, _ = numpy_config.kernel_body(plan, numpy_config.NumPyConfig().printer())
    values = _values()
    scope: dict[str, object] = {"np": np, "_f": np.float64, "N": 3, **values}
    # the spatial functions, as the emitted module carries them
    exec(spatial.sources(set(numpy_config.SPATIAL_FUNCTIONS.values())), scope)  # noqa: S102
    exec("\n".join(lines), scope)  # noqa: S102 - the backend's own lines on test arrays
    want = interpret.evaluate({"yhat": out}, values)["yhat"]
    # the same float64 operations, at most regrouped (a deferred softmax-CE total): a few
    # roundings of values of order 10
    got = np.asarray(scope[plan.outputs["yhat"]])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", sorted(_cases()))
def test_c_contexts_are_ckinds_with_their_macro(name: str) -> None:
    printer = c_config.CConfig(prefix="m").printer()
    out = _cases()[name]
    plan = _plan(out)
    params = {n.arg: n.shape for n in ir.toposort([out]) if n.op is ir.Op.PARAM}
    lay = c_config.lower_kernel(plan, printer, params, {"Y": (N, K)}, {"yhat": "out_yhat"})
    m = macros("c/_macros.jinja", "c/model.c.jinja", prefix="m", real="m_real", lit0="0.0",
               lit1="1.0", fsuf="")
    for ctx in lay.stmts:
        assert isinstance(ctx["kind"], CKind), ctx
        # the macro named by the kind prints it
        assert str(getattr(m, ctx["kind"])(ctx)).strip(), ctx


def test_the_cases_lower_to_every_product_form() -> None:
    printer = c_config.CConfig(prefix="m").printer()
    kinds = set()
    for out in _cases().values():
        params = {n.arg: n.shape for n in ir.toposort([out]) if n.op is ir.Op.PARAM}
        lay = c_config.lower_kernel(_plan(out), printer, params, {"Y": (N, K)}, {"yhat": "out_yhat"})
        kinds |= {ctx["kind"] for ctx in lay.stmts}
    assert set(MATMUL_KINDS.values()) | {CKind.MATMUL_SMALL} <= kinds


def test_every_ckind_names_a_macro() -> None:
    m = macros("c/_macros.jinja", "c/model.c.jinja", prefix="m", real="m_real", lit0="0.0",
               lit1="1.0", fsuf="")
    assert all(callable(getattr(m, kind.value, None)) for kind in CKind)
    assert set(MATMUL_KINDS.values()) == {CKind.MATMUL_NN, CKind.MATMUL_NT, CKind.MATMUL_TN,
                                          CKind.MATMUL_TT}
    assert set(GEMM_CALLS.values()) == set(GEMM_KINDS)  # the convolutions call them too


def _bad_plan() -> KernelPlan:
    """A plan with a statement of a kind no backend lowers (a leaf)."""
    st = Stmt(ir.Op.PARAM, "yhat", ("X",), (N, 2), src_shapes=((N, 2),))
    return KernelPlan("forward", ("X",), [st], {"yhat": "yhat"})


def test_an_unknown_kind_is_an_internal_error_in_each_backend() -> None:
    with pytest.raises(CodegenError, match=r"NumPy backend has no rule for statement kind .*PARAM"):
        numpy_config.kernel_body(_bad_plan(), numpy_config.NumPyConfig().printer())
    with pytest.raises(CodegenError, match=r"C backend has no rule for statement kind .*PARAM"):
        c_config.lower_kernel(_bad_plan(), c_config.CConfig(prefix="m").printer(), {},
                              {"X": (N, 2)}, {"yhat": "out_yhat"})


def test_an_op_without_a_rule_is_an_internal_error_in_the_interpreter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(interpret.RULES, ir.Op.SUM)
    with pytest.raises(NotImplementedError, match=r"interpreter has no rule for op .*SUM"):
        interpret.evaluate({"s": _cases()["SUM"]}, _values())
