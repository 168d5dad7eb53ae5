"""Numerical regimes (RELIABILITY.md "Stability regimes" and N3, N12-N16): every element-wise
activation and its derivative on normal, small, large and extreme inputs in both dtypes and
both backends, against mpmath at 500 digits (at +-inf, the value at +-1e400: the limit to far
below a float's resolution)."""

from __future__ import annotations

import functools
import warnings

import mpmath
import numpy as np
import pytest
import sympy as sp

import symnn as sn
from symnn import registry
from symnn.expressions import derivative

BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
ELEMENTWISE = [n for n in registry.activation_names() if registry.activation(n).kind == "elementwise"]
_p, _y = sp.symbols("p y")
#: loss p*y with y = 1: dL/db1 of a 1x1 layer with W = 1, b = 0 is the activation's derivative
_PROBE_LOSS = sn.Loss("probe", _p * _y, pred=_p, target=_y)

NORMAL = [0.5, -0.5, 1.3, -1.3, 3.0, -3.0]
SMALL = [1e-3, -1e-3, 1e-5, -1e-5]
LARGE = [20.0, -20.0, 44.0, -44.0, 710.0, -710.0, 1e4, -1e4]
EXTREME = [0.0, -0.0, 5e-324, -5e-324, 1e-310, -1e-310, "max", "-max", np.inf, -np.inf, np.nan]


def _inputs(dtype: str) -> np.ndarray:
    big = float(np.finfo(dtype).max)
    vals = [big if v == "max" else -big if v == "-max" else v for v in NORMAL + SMALL + LARGE + EXTREME]
    return np.array(vals, dtype=np.float64).astype(dtype)


@functools.lru_cache(maxsize=None)
def _probe_kernels(backend: str, dtype: str) -> dict:
    """One 1x1 probe network per activation; the C ones share one compiled module."""
    nets = [sn.Network([sn.Dense(1, 1, n)], loss=_PROBE_LOSS, name=f"probe_{n}") for n in ELEMENTWISE]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        kernels = sn.compile_many(nets, backend=backend, dtype=dtype, check_finite=False)
    return dict(zip(ELEMENTWISE, kernels))


@functools.lru_cache(maxsize=None)
def _formulas(name: str) -> tuple[sp.Expr, sp.Expr]:
    entry = registry.activation(name)
    expr = entry.expr.subs({s: entry.params[s.name] for s in entry.expr.free_symbols if s.name in entry.params})
    return expr, derivative(expr, registry.X, name)


def _reference(expr: sp.Expr, x: float, dtype: str) -> float:
    """The exact value rounded to ``dtype``."""
    return float(np.array(_exact(expr, x), dtype=np.float64).astype(dtype))


@functools.lru_cache(maxsize=None)
def _exact(expr: sp.Expr, x: float) -> float:
    """The value at 500 digits, rounded to float64, once per input whichever dtype asks (the
    inputs the dtypes share, 0, 20, inf..., are evaluated once). At +-inf, the value at +-1e400:
    past both dtypes' range, so a formula that grows overflows to +-inf as at the limit, and
    every other one here (exp(-x) tails, x*exp(-x**2/2), 1/(1+|x|)**2, erf) is within 1e-400
    of its limit there, far below the smallest subnormal (5e-324). (The stand-in 1e1000 gives
    the same 700 references, several times slower: exp of it at 500 digits is the slow part.)"""
    with mpmath.workdps(500):
        at = mpmath.mpf("1e400") * (1 if x > 0 else -1) if np.isinf(x) else mpmath.mpf(float(x))
        return float(_mpmath_function(expr)(at))


@functools.lru_cache(maxsize=None)
def _mpmath_function(expr: sp.Expr):
    """``expr`` as an mpmath function of x, made once per formula (lambdify is the slow part)."""
    return sp.lambdify(registry.X, expr, "mpmath")


def _ok(got: float, ref: float, dtype: str) -> bool:
    """64 ulp relative (float64), 8 ulp (float32 against float64 rounded), or an absolute error
    of 2 eps: the tails of sigmoid' = a(1-a) and tanh' = 1-a**2 (the forms that reuse the
    forward value, as PyTorch's do) are accurate in absolute, not relative, terms."""
    if np.isnan(ref) or np.isnan(got):
        return bool(np.isnan(ref) and np.isnan(got))
    if np.isinf(ref):
        return got == ref
    eps = float(np.finfo(dtype).eps)
    ulps = 64 if dtype == "float64" else 8
    err = abs(got - ref)
    return err <= ulps * eps * abs(ref) or err <= 2 * eps


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_and_derivative_in_every_regime(name: str, dtype: str, backend: str) -> None:
    expr, dexpr = _formulas(name)
    k = _probe_kernels(backend, dtype)[name]
    p = {"W1": np.ones((1, 1), dtype), "b1": np.zeros(1, dtype)}
    bad = []
    for x in _inputs(dtype):
        X = np.array([[x]], dtype)
        with np.errstate(all="ignore"):
            value = float(k.forward(p, X)[0, 0])
            slope = float(k.loss_and_grad(p, X, np.ones((1, 1), dtype))[1]["b1"][0])
        for what, got, ref in (("f", value, _reference(expr, float(x), dtype)),
                               ("f'", slope, _reference(dexpr, float(x), dtype))):
            if np.isnan(x):  # the value propagates NaN (N9); the derivative may be 0 (x > 0 is false)
                if what == "f" and not np.isnan(got):
                    bad.append(f"f(nan) = {got!r}, expected NaN")
            elif np.isnan(got):
                bad.append(f"{what}({float(x)!r}) is NaN (expected {ref!r})")
            elif not _ok(got, ref, dtype):
                bad.append(f"{what}({float(x)!r}) = {got!r}, expected {ref!r}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_N3_float32_logits_spread_1e4_apart(backend: str) -> None:
    net = sn.Network([sn.Dense(4, 4, "softmax")], loss="cross_entropy")
    k = sn.compile(net, backend=backend, dtype="float32")
    p = {"W1": np.eye(4, dtype=np.float32), "b1": np.zeros(4, np.float32)}
    logits = np.array([[1e4, -1e4, 0.0, 2e4]], np.float32)
    for label in range(4):
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            loss, g = k.loss_and_grad(p, logits, np.array([label]))
        x64 = logits[0].astype(np.float64)
        ref = np.float32(np.log(np.exp(x64 - x64.max()).sum()) + x64.max() - x64[label])
        assert np.isfinite(loss) and np.isfinite(g["W1"]).all()
        assert abs(loss - ref) <= 4 * np.spacing(np.float32(max(abs(ref), 1.0)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_N12_clipping_with_zero_and_infinite_norm(backend: str) -> None:
    net = sn.Network([sn.Dense(3, 2, "identity")], loss="mse")
    k = sn.compile(net, backend=backend, optimizer=sn.SGD(lr=1.0, clip_norm=0.5))
    theta = np.zeros(k.n_params)
    state = k.init_state()
    X, Y = np.ones((4, 3)), np.zeros((4, 2))
    k.train_step(theta, state, X, Y, 1)  # zero gradient: scale 1, no 0/0
    assert np.array_equal(theta, np.zeros(k.n_params))
    theta0 = np.random.default_rng(0).normal(size=k.n_params) * 10
    theta = theta0.copy()
    k.train_step(theta, state, X * 100, Y, 2)
    assert np.linalg.norm(theta - theta0) <= 0.5 * (1 + 1e-12)
    with pytest.raises(sn.NonFiniteError), np.errstate(over="ignore", invalid="ignore"):
        k.train_step(theta, state, np.full((4, 3), 1e300), Y, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opt", ["adam", "rmsprop", "adagrad"])
def test_N13_zero_gradient_for_1000_steps(opt: str, backend: str) -> None:
    net = sn.Network([sn.Dense(3, 4, "relu"), sn.Dense(4, 2, "identity")], loss="mse")
    k = sn.compile(net, backend=backend, optimizer=opt)
    theta = np.zeros(k.n_params)  # zero weights and targets: the gradient is exactly 0
    state = k.init_state()
    X, Y = np.random.default_rng(0).normal(size=(5, 3)), np.zeros((5, 2))
    for step in range(1, 1001):
        k.train_step(theta, state, X, Y, step)
    assert np.array_equal(theta, np.zeros(k.n_params)) and np.isfinite(state).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_N14_dropout_extremes_and_eval(backend: str) -> None:
    plain = sn.Network([sn.Dense(3, 6, "tanh"), sn.Dense(6, 2, "identity")], loss="mse", name="n14")
    zero = sn.Network([sn.Dense(3, 6, "tanh", dropout=0.0), sn.Dense(6, 2, "identity")], loss="mse", name="n14")
    X, Y = np.random.default_rng(1).normal(size=(8, 3)), np.zeros((8, 2))
    thetas = []
    for net in (plain, zero):
        k = sn.compile(net, backend=backend, optimizer="sgd")
        theta, state = k.pack(net.init_params(seed=0)), k.init_state()
        for step in range(1, 6):
            k.train_step(theta, state, X, Y, step)
        thetas.append(theta)
    assert np.array_equal(*thetas)  # p = 0 is the identity, bitwise
    high = sn.Network([sn.Dense(3, 6, "tanh", dropout=0.999), sn.Dense(6, 2, "identity")], loss="mse")
    k = sn.compile(high, backend=backend, optimizer="sgd")
    theta, state = k.pack(high.init_params(seed=0)), k.init_state()
    for step in range(1, 50):
        k.train_step(theta, state, X, Y, step)
    assert np.isfinite(theta).all()
    p = high.init_params(seed=0)
    assert np.array_equal(k.forward(p, X), k.forward(p, X))  # eval: no dropout, deterministic


@pytest.mark.parametrize("backend", BACKENDS)
def test_N16_l1_subgradient_at_zero_is_zero(backend: str) -> None:
    with_l1 = sn.Network([sn.Dense(3, 2, "identity")], loss="mse", l1=0.25, name="n16")
    without = sn.Network([sn.Dense(3, 2, "identity")], loss="mse", name="n16")
    W = np.array([[0.0, -0.0, 0.5], [-0.5, 0.0, 1e-300]])
    p = {"W1": W, "b1": np.zeros(2)}
    X, Y = np.random.default_rng(2).normal(size=(4, 3)), np.zeros((4, 2))
    g1 = sn.compile(with_l1, backend=backend).loss_and_grad(p, X, Y)[1]["W1"]
    g0 = sn.compile(without, backend=backend).loss_and_grad(p, X, Y)[1]["W1"]
    zero = W == 0
    # the two kernels are compiled apart, so their data terms may differ in the last bit
    np.testing.assert_allclose(g1[zero], g0[zero], rtol=1e-15, atol=0)
    np.testing.assert_allclose((g1 - g0)[~zero], 0.25 * np.sign(W[~zero]), rtol=0, atol=1e-15)
    # exact: with X = 0 and Y = b the data term's gradient is exactly 0, so the gradient is the
    # subgradient alone: exactly 0 at +0 and -0, no NaN, exactly 0.25 sign(W) elsewhere
    exact = sn.compile(with_l1, backend=backend).loss_and_grad(p, np.zeros((4, 3)), np.zeros((4, 2)))[1]["W1"]
    np.testing.assert_array_equal(exact, 0.25 * np.sign(W))
