"""RELIABILITY.md cases S1-S14 (spec) and D1-D13 (data): exception type and message."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp

import symnn as sn
from symnn import errors as E

z = sp.Symbol("z")
p, y = sp.symbols("p y")


def _net(**kw):
    return sn.Network([sn.Dense(4, 3, "tanh"), sn.Dense(3, 2, "sigmoid")], loss="bce", **kw)


SPEC_CASES = [
    ("S1", lambda: sn.Network([sn.Dense(4, 3), sn.Dense(5, 2)]), E.LayerSizeMismatchError,
     r"layer 1 outputs 3 features but layer 2 expects 5"),
    ("S2-zero", lambda: sn.Dense(4, 0), E.SpecError, r"width must be >= 1, got 0"),
    ("S2-negative", lambda: sn.Dense(-2, 3), E.SpecError, r"width must be >= 1, got -2"),
    ("S3-float", lambda: sn.Dense(2.5, 3), TypeError, r"width must be an integer, got float"),
    ("S3-str", lambda: sn.Dense("3", 3), E.SpecTypeError, r"got str '3'"),
    ("S3-bool", lambda: sn.Dense(True, 3), E.SpecTypeError, r"got bool"),
    ("S3-huge", lambda: sn.Dense(10**10000, 3), E.SpecError, r"width must be <= 2147483647"),
    ("S4", lambda: sn.Dense(2, 3, "sigmod"), E.UnknownActivationError, r"did you mean 'sigmoid'\?"),
    ("S4-loss", lambda: sn.Network([sn.Dense(2, 3)], loss="mse2"), E.UnknownActivationError,
     r"unknown loss 'mse2'.*did you mean 'mse'"),
    ("S5", lambda: sn.Activation("bad", sp.Symbol("a") * z, var=z), E.InvalidExpressionError,
     r"free symbols \{a\}; only \{z\} may appear"),
    ("S6", lambda: sn.Activation("constant", sp.Integer(3) + 0 * z, var=z), E.SpecError,
     r"does not depend on z"),
    ("S6-const", lambda: sn.Activation("constant", sp.exp(sp.Integer(2)), var=z), E.SpecError,
     r"does not depend on z: its derivative is identically 0"),
    ("S7-matrix", lambda: sn.Activation("m", sp.Matrix([z, z]), var=z), E.InvalidExpressionError,
     r"must be a scalar SymPy expression"),
    ("S7-tuple", lambda: sn.Activation("t", (z, z), var=z), E.InvalidExpressionError,
     r"must be a scalar SymPy expression"),
    ("S7-eq", lambda: sn.Activation("e", sp.Eq(z, 1), var=z), E.InvalidExpressionError,
     r"must be a scalar SymPy expression"),
    ("S8", lambda: sn.Activation("u", sp.Function("f")(z), var=z), E.NonDifferentiableError,
     r"cannot differentiate .*Derivative|the derivative contains"),
    ("S9-sqrt", lambda: sn.Activation("r", sp.sqrt(z), var=z), E.InvalidExpressionError,
     r"is not real at z = -3"),
    ("S9-log", lambda: sn.Activation("l", sp.log(z), var=z), E.InvalidExpressionError,
     r"is not real"),
    ("S9-I", lambda: sn.Activation("i", sp.I * z, var=z), E.InvalidExpressionError, r"is not real"),
    ("S11-sinc", lambda: sn.Activation("sinc", sp.sin(z) / z, var=z), E.NonDifferentiableError,
     r"undefined at z = 0"),
    ("S12-symbols", lambda: sn.Loss("l", (p - sp.Symbol("q")) ** 2, pred=p, target=y),
     E.InvalidExpressionError, r"free symbols \{q\}"),
    ("S12-no-target", lambda: sn.Loss("l", p**2, pred=p, target=y), E.InvalidExpressionError,
     r"does not use the target symbol y"),
    ("S12-not-scalar", lambda: sn.Loss("l", sp.Matrix([p, y]), pred=p, target=y),
     E.InvalidExpressionError, r"scalar SymPy expression"),
    ("S12-missing-symbols", lambda: sn.Loss("l", (p - y) ** 2), E.InvalidExpressionError,
     r"pass pred=<prediction Symbol> and target=<target Symbol>"),
    ("S13-empty", lambda: sn.Network([]), E.SpecError, r"network has no layers"),
    ("S13-width0", lambda: sn.Network([sn.Dense(3, 0)]), E.SpecError, r"width must be >= 1"),
    ("S14-ce-width1", lambda: sn.Network([sn.Dense(3, 1, "softmax")], loss="cross_entropy"),
     E.SpecError, r"cross_entropy needs an output width >= 2"),
    ("S14-bce-softmax", lambda: sn.Network([sn.Dense(3, 2, "softmax")], loss="bce"), E.SpecError,
     r"bce on a softmax output"),
    ("S14-ce-no-softmax", lambda: sn.Network([sn.Dense(3, 2, "sigmoid")], loss="cross_entropy"),
     E.SpecError, r"needs a softmax output layer"),
    ("S14-hidden-softmax", lambda: sn.Network([sn.Dense(3, 2, "softmax"), sn.Dense(2, 2)]),
     E.SpecError, r"layer 1: softmax is only supported on the output layer"),
    ("config-l2", lambda: _net(l2=-1.0), E.ConfigError, r"l2 must be a finite real >= 0, got -1.0"),
    ("config-param", lambda: sn.activation("leaky_relu", slope=0.1), E.ConfigError,
     r"has parameters \['alpha'\], got \['slope'\]"),
    ("backend", lambda: sn.compile(_net(), backend="fortran"), E.ConfigError, r"unknown backend 'fortran'"),
    ("dtype", lambda: sn.compile(_net(), dtype="float16"), E.DTypeError, r"dtype must be 'float32' or 'float64'"),
    ("symbolic-compile", lambda: sn.compile(sn.Network([sn.Dense(sp.Symbol("n", positive=True, integer=True), 2)])),
     E.SpecError, r"compiling needs integer layer widths"),
]


@pytest.mark.parametrize("case,build,exc,message", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_spec_errors(case, build, exc, message) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        with pytest.raises(exc, match=message):
            build()


def test_spec_errors_are_value_or_type_errors() -> None:
    assert issubclass(E.SpecError, ValueError) and issubclass(E.DTypeError, TypeError)
    assert issubclass(E.LayerSizeMismatchError, E.SymnnError)


def test_numpy_ints_accepted_as_widths() -> None:
    assert sn.Dense(np.int64(3), np.int32(2)).out_features == 2


def test_S10_non_smooth_user_activation_warns() -> None:
    with pytest.warns(sn.NonSmoothWarning, match="not smooth"):
        sn.Activation("absact", sp.Abs(z), var=z)
    with pytest.warns(sn.NonSmoothWarning, match="zero gradient almost everywhere"):
        sn.Activation("fl", sp.floor(z) + z, var=z)


@pytest.mark.parametrize("name,meant", [("Relu", "relu"), ("SIGMOID", "sigmoid"), ("LeakyReLU", "leaky_relu"),
                                        ("Gelu", "gelu"), ("tanhh", "tanh")])
def test_unknown_activation_suggestion_ignores_case(name: str, meant: str) -> None:
    # plain difflib on 'Relu' prefers 'elu' (3 of 4 letters match case-sensitively)
    with pytest.raises(E.UnknownActivationError, match=rf"unknown activation '{name}' \(did you mean '{meant}'\?\)"):
        sn.Dense(2, 3, name)


def test_unknown_loss_suggestion_ignores_case() -> None:
    with pytest.raises(E.UnknownActivationError, match=r"unknown loss 'BCE' \(did you mean 'bce'\?\)"):
        sn.Network([sn.Dense(2, 1, "sigmoid")], loss="BCE")


def test_S10_non_smooth_loss_warning_shows_the_users_expression() -> None:
    q, t = sp.symbols("q t")
    with pytest.warns(sn.NonSmoothWarning) as caught:
        sn.Loss("l1", sp.Abs(q - t), pred=q, target=t)
    (warning,) = caught
    assert str(warning.message) == "loss 'l1' Abs(q - t) is not smooth; its derivative at a kink is taken as 0"
    assert warning.filename == __file__  # reported at the user's line, not inside symnn


@pytest.fixture(scope="module")
def kernels():
    ce = sn.Network([sn.Dense(4, 3, "tanh"), sn.Dense(3, 3, "softmax")], loss="cross_entropy")
    return sn.compile(_net()), sn.compile(ce), ce


def _params(k):
    return k.network.init_params(seed=0)


X4 = np.ones((5, 4))


DATA_CASES = [
    ("D1-1d", lambda k, c: k[0].forward(_params(k[0]), np.ones(4)), E.ShapeError,
     r"expected X of shape \(n, 4\), got \(4,\)"),
    ("D1-3d", lambda k, c: k[0].forward(_params(k[0]), np.ones((2, 4, 1))), E.ShapeError,
     r"expected X of shape \(n, 4\), got \(2, 4, 1\)"),
    ("D2", lambda k, c: k[0].forward(_params(k[0]), np.ones((5, 3))), E.ShapeError,
     r"X has 3 features, the network expects 4"),
    ("D3", lambda k, c: k[0].loss(_params(k[0]), X4, np.ones((4, 2)) / 2), E.ShapeError,
     r"expected Y of shape \(5, 2\), got \(4, 2\)"),
    ("D3-labels", lambda k, c: k[1].loss(_params(k[1]), X4, np.zeros(4, int)), E.ShapeError,
     r"Y has 4 labels for 5 rows"),
    ("D4-X", lambda k, c: k[0].forward(_params(k[0]), np.where(np.eye(5, 4) > 0, np.nan, 1.0)),
     E.NonFiniteInputError, r"X has 4 non-finite value\(s\); first at index \(0, 0\)"),
    ("D4-Y", lambda k, c: k[0].loss(_params(k[0]), X4, np.full((5, 2), np.inf)), E.NonFiniteInputError,
     r"Y has 10 non-finite"),
    ("D4-param", lambda k, c: k[0].forward({**_params(k[0]), "b1": np.array([0, np.nan, 0])}, X4),
     E.NonFiniteInputError, r"parameter b1 has 1 non-finite"),
    ("D5-high", lambda k, c: k[1].loss(_params(k[1]), X4, np.array([0, 1, 2, 3, 0])), E.LabelRangeError,
     r"label 3 at row 3 out of range \[0, 3\)"),
    ("D5-negative", lambda k, c: k[1].loss(_params(k[1]), X4, np.array([0, -1, 2, 1, 0])), E.LabelRangeError,
     r"label -1 at row 1"),
    ("D5-fraction", lambda k, c: k[1].loss(_params(k[1]), X4, np.array([0, 1.5, 2, 1, 0])), E.LabelRangeError,
     r"label 1.5 at row 1"),
    ("D5-nan", lambda k, c: k[1].loss(_params(k[1]), X4, np.array([0, np.nan, 2, 1, 0])), E.LabelRangeError,
     r"label nan at row 1"),
    ("D6", lambda k, c: k[0].loss(_params(k[0]), X4, np.full((5, 2), 1.5)), E.DataError,
     r"bce targets must lie in \[0, 1\]"),
    ("D6-onehot", lambda k, c: k[1].loss(_params(k[1]), X4, np.full((5, 3), 0.5)), E.DataError,
     r"one-hot or probability rows summing to 1"),
    ("D7-object", lambda k, c: k[0].forward(_params(k[0]), np.array([[object()] * 4])), E.DTypeError,
     r"X has dtype object"),
    ("D7-str", lambda k, c: k[0].forward(_params(k[0]), np.array([["a"] * 4])), E.DTypeError, r"X has dtype <U1"),
    ("D7-complex", lambda k, c: k[0].forward(_params(k[0]), X4 + 1j), E.DTypeError, r"X has dtype complex128"),
    ("D7-bool", lambda k, c: k[0].forward(_params(k[0]), X4 > 0), E.DTypeError, r"X has dtype bool"),
    ("D8", lambda k, c: k[0].loss(_params(k[0]), np.ones((0, 4)), np.ones((0, 2))), E.EmptyBatchError,
     r"the batch is empty"),
    ("D13-ragged", lambda k, c: k[0].forward(_params(k[0]), [[1, 2, 3, 4], [1, 2]]), E.ShapeError,
     r"X is ragged"),
    ("params-keys", lambda k, c: k[0].forward({"W1": 1}, X4), E.ShapeError, r"missing \['b1', 'W2', 'b2'\]"),
    ("params-shape", lambda k, c: k[0].forward({**_params(k[0]), "W1": np.ones((4, 3))}, X4), E.ShapeError,
     r"expected W1 of shape \(3, 4\), got \(4, 3\)"),
]


@pytest.mark.parametrize("case,call,exc,message", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_errors(kernels, case, call, exc, message) -> None:
    with pytest.raises(exc, match=message):
        call(kernels, None)


def test_D7_int_inputs_are_converted(kernels) -> None:
    k = kernels[0]
    np.testing.assert_array_equal(k.forward(_params(k), np.ones((5, 4), dtype=int)), k.forward(_params(k), X4))


def test_D8_empty_forward(kernels) -> None:
    k = kernels[0]
    assert k.forward(_params(k), np.ones((0, 4))).shape == (0, 2)


def test_D10_layouts_bitwise_equal(kernels) -> None:
    k = kernels[0]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 4))
    Y = rng.uniform(size=(6, 2))
    ref = k.loss_and_grad(_params(k), X, Y)
    F = np.asfortranarray(X)
    strided = np.repeat(X, 2, axis=0)[::2]
    ro = X.copy()
    ro.setflags(write=False)
    big = X.astype(">f8")
    for variant in (F, strided, ro, big, X.T.copy().T):
        loss, grads = k.loss_and_grad(_params(k), variant, Y)
        assert loss == ref[0]
        for name in grads:
            np.testing.assert_array_equal(grads[name], ref[1][name])


def test_D11_float32_input_into_float64_kernel(kernels) -> None:
    k = kernels[0]
    X = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(k.forward(_params(k), X), k.forward(_params(k), X.astype(np.float64)))


def test_D13_lists_accepted(kernels) -> None:
    k = kernels[0]
    assert k.forward(_params(k), [[0.0, 1.0, 2.0, 3.0]]).shape == (1, 2)


def test_gradcheck_rejects_non_kernel() -> None:
    with pytest.raises(E.SpecTypeError, match="needs a kernel from sn.compile"):
        sn.gradcheck(object(), {}, X4, X4)
