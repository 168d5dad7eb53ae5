"""Random expression trees as user activations (RELIABILITY.md: each either passes the gradient
targets or is rejected with a named S8-S11 error; zero crashes, zero silent NaN)."""

from __future__ import annotations

import warnings

import mpmath
import numpy as np
import sympy as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import symnn as sn
from symnn.errors import DataError
from symnn.expressions import derivative
from symnn.gradcheck import sample_point
from tests.strategies import EXPRESSIONS, X, examples

_MP = {"Heaviside": lambda v, h0=0: mpmath.mpf(1) if v > 0 else mpmath.mpf(h0 if v == 0 else 0),
       "sign": mpmath.sign, "Max": max, "Min": min}


def _exact(expr: sp.Expr, z: np.ndarray) -> np.ndarray:
    """``expr`` at every entry of ``z`` with mpmath at 50 digits (NaN where undefined)."""
    f = sp.lambdify(X, expr, modules=[_MP, "mpmath"])
    out = np.empty(z.shape)
    with mpmath.workdps(50):
        for idx, v in np.ndenumerate(z):
            try:
                r = f(mpmath.mpf(float(v)))
                out[idx] = float(r) if isinstance(r, (mpmath.mpf, int, float)) and mpmath.isfinite(r) else np.nan
            except (ZeroDivisionError, ValueError, OverflowError, TypeError):
                out[idx] = np.nan
    return out


@settings(max_examples=examples(400), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(expr=EXPRESSIONS, seed=st.integers(0, 2**16))
def test_random_user_activation_passes_or_is_rejected(expr: sp.Expr, seed: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        try:
            act = sn.Activation("rand", expr, var=X)
        except sn.SpecError as exc:  # S5-S11: a named error, never anything else
            assert str(exc)
            event(f"rejected: {type(exc).__name__}")
            return
        net = sn.Network([sn.Dense(2, 3, act), sn.Dense(3, 2, "identity")], loss="mse")
        k = sn.compile(net)
    try:
        params, Xd, Y = sample_point(net, n=4, seed=seed)
    except DataError:  # kinks everywhere the inputs can reach (e.g. Max(x, x + 0)): nothing to check
        event("accepted: no kink-free point")
        return
    z = Xd @ params["W1"].T + params["b1"]
    value, slope = _exact(act.expr, z), _exact(derivative(act.expr, X), z)
    defined = np.isfinite(value).all() and np.isfinite(slope).all() and np.abs(value).max() < 1e150 \
        and np.abs(slope).max() < 1e150
    with np.errstate(all="ignore"):
        out = k.forward(params, Xd)
        loss, grads = k.loss_and_grad(params, Xd, Y)
    if not defined:  # the function itself is infinite or undefined at these inputs
        event("accepted: undefined or huge at the point")
        return
    event("accepted: checked")
    assert np.isfinite(out).all() and np.isfinite(loss), (expr, "silent NaN/inf in the forward pass")
    assert all(np.isfinite(g).all() for g in grads.values()), (expr, "silent NaN/inf in the gradient")
    np.testing.assert_allclose(out,
                               _exact(act.expr, z) @ params["W2"].T + params["b2"], rtol=1e-9, atol=1e-12)
    report = sn.gradcheck(k, params, Xd, Y, seed=seed)
    assert report.passed or report.passed_norm, (expr, str(report))
