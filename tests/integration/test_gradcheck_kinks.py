"""gradcheck on real data, where some pre-activation always lies within a difference step of
its kink (issue 17, items 3 and 4): such entries are checked with a smaller step or counted
apart, never reported as a wrong gradient, while a wrong entry is still caught."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import pytest
import sympy as sp

import symnn as sn
from symnn import datasets
from symnn.demo import digits_network


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The first 256 digits, raw pixels 0..16, as a user would pass them."""
    X, y = datasets.load_digits()
    return X[:256], y[:256]


class _OffByOne:
    """A kernel whose gradient is wrong in one entry by a relative ``rel``: the checker's
    negative control (RELIABILITY.md: caught at 1e-6 in float64, 1e-3 in float32)."""

    def __init__(self, kernel: Any, key: str, index: tuple[int, ...], rel: float) -> None:
        self.kernel, self.key, self.index, self.rel = kernel, key, index, rel

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kernel, name)

    def loss_and_grad(self, params, X, Y):
        loss, grads = self.kernel.loss_and_grad(params, X, Y)
        grads = {k: v.copy() for k, v in grads.items()}
        grads[self.key][self.index] *= 1 + self.rel
        return loss, grads


def _relu_net(activation: str = "relu", hidden: int = 16) -> sn.Network:
    return sn.Network([sn.Dense(64, hidden, activation), sn.Dense(hidden, 10, "softmax")],
                      loss="cross_entropy")


def test_digits_network_passes_on_real_data(digits) -> None:
    # was "FAIL: max rel error 2.784e-01" while the gradient matched PyTorch to 1.8e-15: the
    # 5-point stencil of W1 entries straddled ReLU kinks of the 256 rows
    X, y = digits
    net = digits_network()
    report = sn.gradcheck(sn.compile(net), net.init_params(seed=0), X, y)
    assert report.ok and str(report).startswith("gradcheck[central] PASS: "), str(report)
    assert report.n_shrunk > 0 and "smaller step to stay clear of a kink" in str(report)
    assert report.n_checked + report.n_at_kink == sum(v.size for v in net.init_params().values())


def test_twenty_relu_layers_pass_through_projections(digits) -> None:
    # 20 x 64-wide ReLU layers: 79,370 parameters, so random projections, each moving every
    # weight at once and crossing thousands of kinks at the first step
    X, y = digits
    net = sn.Network([sn.Dense(64, 64, "relu") for _ in range(19)] + [sn.Dense(64, 10, "softmax")],
                     loss="cross_entropy")
    report = sn.gradcheck(sn.compile(net), net.init_params(seed=0), X / 16, y)
    assert report.method == "projection/central"
    assert report.ok and report.n_checked == 3 and report.n_shrunk > 0, str(report)
    assert report.max_rel_error <= 1e-7


def test_leaky_relu_passes(digits) -> None:
    X, y = digits
    net = _relu_net("leaky_relu")
    report = sn.gradcheck(sn.compile(net), net.init_params(seed=1), X, y)
    assert report.ok and report.n_shrunk > 0, str(report)


def test_huber_loss_kinks_are_probed() -> None:
    # smooth layers, so only the loss's kinks at |p - y| = 1 can be crossed; targets 3 apart
    # put many outputs near them
    p, t = sp.symbols("p y")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        expr = sp.Piecewise(((p - t) ** 2 / 2, sp.Abs(p - t) <= 1),
                            (sp.Abs(p - t) - sp.Rational(1, 2), True))
        huber = sn.Loss("huber", expr, pred=p, target=t)
        net = sn.Network([sn.Dense(8, 16, "tanh"), sn.Dense(16, 4, "identity")], loss=huber)
        k = sn.compile(net)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(128, 8))
    Y = rng.normal(size=(128, 4)) * 3
    report = sn.gradcheck(k, net.init_params(seed=0), X, Y)
    assert report.method == "central" and report.ok and report.n_shrunk > 0, str(report)


def test_one_entry_off_by_1e_6_is_caught_where_a_kink_shrank_its_step(digits) -> None:
    X, y = digits
    net = _relu_net()
    k, params = sn.compile(net), net.init_params(seed=0)
    clean = sn.gradcheck(k, params, X, y)
    assert clean.ok, str(clean)
    _, grads = k.loss_and_grad(params, X, y)
    key, index = max(clean.shrunk, key=lambda e: abs(grads[e[0]][e[1]]))  # a shrunk step's entry
    report = sn.gradcheck(_OffByOne(k, key, index, 1e-6), params, X, y)
    assert not report.ok and not report.passed and report.status == "FAIL"
    assert str(report).startswith(f"gradcheck[central] FAIL: {key}{list(index)} is off by 1.0e-06")
    assert [(d.param, d.index) for d in report.unresolved] == [(key, index)]
    with pytest.raises(sn.GradientCheckError, match=rf"{key}\[{index[0]}, {index[1]}\]"):
        sn.gradcheck(_OffByOne(k, key, index, 1e-6), params, X, y, raise_on_fail=True)


def test_float32_kernel_passes_and_is_still_caught_off_by_1e_3(digits) -> None:
    X, y = digits
    net = _relu_net()
    k = sn.compile(net, dtype="float32")
    params = net.init_params(seed=0, dtype="float32")
    report = sn.gradcheck(k, params, X, y)
    assert report.ok and report.reference.ok and report.reference.n_shrunk > 0, str(report)
    _, grads = k.loss_and_grad(params, X, y)
    index = (int(np.argmax(np.abs(grads["b2"]))),)
    bad = sn.gradcheck(_OffByOne(k, "b2", index, 1e-3), params, X, y)
    assert not bad.ok
    assert str(bad).startswith("gradcheck[float64_reference] FAIL: worst parameter b2")


def test_float32_row_within_rounding_of_a_kink_is_left_out(digits) -> None:
    # row 0's pre-activation of hidden unit 3 set to ~1e-7 in float64: float32 rounds it to
    # either side of the kink, where the float32 gradient is then correctly a different one
    X, y = digits
    net = _relu_net(hidden=8)
    params = net.init_params(seed=0, dtype="float32")
    params["b1"][:] = 0.5
    params["b1"][3] = np.float32(-(X[0] @ params["W1"][3].astype(np.float64)))
    report = sn.gradcheck(sn.compile(net, dtype="float32"), params, X[:16], y[:16])
    assert report.rows_at_kink == (0,) and report.ok, str(report)
    assert "1 row left out: a kink argument within float32 rounding of its kink" in str(report)


def test_nothing_checkable_is_not_a_pass() -> None:
    # one ReLU unit exactly at its kink: every parameter's stencil crosses it at any step
    net = sn.Network([sn.Dense(1, 1, "relu")], loss="mse")
    params = {"W1": np.array([[1.0]]), "b1": np.array([-1.0])}
    report = sn.gradcheck(sn.compile(net), params, np.array([[1.0]]), np.array([[0.5]]))
    assert report.n_checked == 0 and report.n_at_kink == 2
    assert report.status == "NOT CHECKED" and not report.ok and not report.passed
    assert "nothing could be checked" in str(report)


def _report(max_rel: float, norm: float, unresolved: tuple = (), n_over: int = 1,
            **kw: Any) -> sn.GradcheckReport:
    from symnn.gradcheck import GradcheckReport

    return GradcheckReport(max_rel, "W2", (5, 21), -3.84386958870e-06, -3.84387455198e-06,
                           "central", 1e-7, norm_rel_error=norm, n_checked=2410, n_over=n_over,
                           unresolved=unresolved, n_unresolved=len(unresolved), **kw)


def test_check_line_says_which_criterion_decided(monkeypatch, capsys) -> None:
    # issue 17 item 4: "max relative error 1.29e-06 (tolerance 1e-07), norm error 1.38e-10 ok"
    # printed an error above its tolerance beside "ok" without saying why
    from symnn.cli import main
    from symnn.gradcheck import Discrepancy

    from tests.integration.test_cli import EXAMPLES

    off = Discrepancy("W1", (3, 4), 1e-6, 0.50000050, 0.5, 3e-14)
    reports = {np.dtype("float64"): _report(1.29e-6, 1.38e-10, at_kink=(("W1", (0, 0)),)),
               np.dtype("float32"): _report(1.29e-6, 1.38e-10, unresolved=(off,))}
    gc = sys.modules["symnn.gradcheck"]
    monkeypatch.setattr(gc, "gradcheck", lambda k, *a, **kw: reports[np.dtype(k.dtype)])
    assert main(["check", str(EXAMPLES / "xor.toml"), "--backend", "numpy"]) == 1
    ok_line, failed_line = capsys.readouterr().out.splitlines()
    assert ok_line.startswith(
        "numpy float64: central: ok: by the norm criterion: norm error 1.4e-10 <= 1e-07 and the "
        "entry over the per-entry tolerance 1e-07 is off by no more than its differences resolve "
        "(round-off); the per-entry tolerance 1e-07 is missed by up to 1.3e-06 at W2[5, 21]")
    assert ok_line.endswith("; 1 entry of 2411 not checkable at a kink (every step tried had its "
                            "stencil cross one), left out")
    assert failed_line.startswith(
        "numpy float32: central: FAILED: W1[3, 4] is off by 1.0e-06 relative (analytic 0.5000005, "
        "numeric 0.5): over the per-entry tolerance 1e-07 by more than its differences resolve "
        "(3.0e-14); norm error 1.4e-10")
    for line, report in zip((ok_line, failed_line), reports.values()):
        assert line.endswith(report.verdict()) and str(report).endswith(report.verdict())


def test_per_entry_pass_and_norm_failure_wording() -> None:
    good = _report(6.3e-9, 2.4e-12, n_over=0)
    assert str(good).startswith("gradcheck[central] PASS: every entry within the per-entry "
                                "tolerance 1e-07 (max relative error 6.3e-09 at W2[5, 21]")
    bad = _report(2.8e-1, 3e-3)
    assert str(bad).startswith("gradcheck[central] FAIL: max relative error 2.8e-01 > 1e-07 "
                               "at W2[5, 21]")
    assert str(bad).endswith("; norm error 3.0e-03 > 1e-07")
