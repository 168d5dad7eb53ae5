"""The derivation of recurrent layers (issue 23): each loop printed once per step t, its
backpropagation through time printed from the inner sweep's records, and the printed form run.

``d.evaluate`` runs the printed equations, the loops' bodies step by step (never the kernel's
code), so its agreement with the NumPy kernel checks that what is printed is what is computed.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import symnn as sn
from symnn.report import tex
from tests import latex_checks

T, F, H, N = 4, 3, 4, 3


def _net(kind: str, layers: int, sequences: bool) -> sn.Network:
    x = sn.Input(T, F)
    y = getattr(sn, kind)(F, H, num_layers=layers, return_sequences=sequences)(x)
    if sequences:
        y = sn.Flatten()(y)
    return sn.Network(inputs=x, outputs=y, loss="mse")


def _data(sequences: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(N, T * F)), rng.normal(size=(N, T * H if sequences else H))


@pytest.mark.parametrize("kind,layers,sequences", [
    ("RNN", 1, False), ("GRU", 1, False), ("LSTM", 1, False),
    ("RNN", 2, True), ("GRU", 2, True), ("LSTM", 2, False),
])
def test_the_printed_loops_evaluate_to_the_kernels_loss_and_gradient(kind: str, layers: int,
                                                                      sequences: bool) -> None:
    net = _net(kind, layers, sequences)
    params = net.init_params(seed=0)
    X, Y = _data(sequences)
    want_loss, want = sn.compile(net, backend="numpy").loss_and_grad(params, X, Y)
    d = sn.derive(net)
    loss, grads = d.evaluate(params, X, Y)
    # the same float64 formulas, grouped as printed: a few roundings of values of order 1, summed
    # over T steps and a few layers
    assert loss == pytest.approx(want_loss, rel=1e-12, abs=1e-14)
    assert set(grads) == set(want)
    for name in want:
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-10, atol=1e-13, err_msg=name)
    # a forward loop per layer and its pullback, each a section printed once for step t
    assert len(d.loops) == 2 * layers
    assert sum(loop.pullback_of is not None for loop in d.loops) == layers


def _loop_tex(loop) -> dict[str, str]:
    return {tex(e.lhs): tex(e.rhs) for e in loop.equations}


def test_the_backward_recurrence_prints_delta_t_from_delta_t_plus_1() -> None:
    d = sn.derive(_net("RNN", 1, False))
    forward, backward = d.loops
    assert forward.pullback_of is None and backward.pullback_of == forward.id
    assert not forward.reverse and backward.reverse
    # forward: C_t = tanh(P_t + C_{t-1} W_hh^T), the body's own IR printed by the usual rules
    (carry, rhs), = _loop_tex(forward).items()
    assert carry.endswith("_{t}") and r"\tanh" in rhs and "_{t-1}" in rhs and r"^{\top}" in rhs
    # backward: the step's cotangent from its own and what step t+1 sent back, then delta_t
    eqs = _loop_tex(backward)
    seed = next(rhs for lhs, rhs in eqs.items() if lhs.startswith("G"))
    assert r"\delta^{[1]}_{t+1}" in seed and r"\bar{C}" in seed
    assert r"\delta^{[1]}_{t}" in eqs
    assert r"\tanh'" in " ".join(eqs.values())
    # the step's share of the recurrent weight's gradient, from the records, summed outside
    (share,) = backward.contributions
    assert tex(share.lhs).endswith("_{t}}") and "sums the steps' shares" in share.note
    assert r"\mathcal{R}_{1}" in tex(d.equation("rnn1.v1").rhs)
    text = d.latex()
    assert "Recurrence" in text and r"\delta^{[1]}_{t} &=" in text


def _rnn_states(params: dict, X: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """h_t = scale * tanh(x_t W_ih^T + b_ih + b_hh + h_{t-1} W_hh^T), every h_t side by side."""
    w_ih, w_hh = params["rnn1.weight_ih_l0"], params["rnn1.weight_hh_l0"]
    b = params["rnn1.bias_ih_l0"] + params["rnn1.bias_hh_l0"]
    h, out = np.zeros((X.shape[0], H)), []
    for t in range(T):
        h = scale * np.tanh(X[:, t * F:(t + 1) * F] @ w_ih.T + b + h @ w_hh.T)
        out.append(h)
    return np.concatenate(out, axis=1)


def test_the_loop_runs_its_printed_body_step_by_step() -> None:
    """The loop's operator evaluates the body's printed equations per step: the recurrence
    itself, and a body printed otherwise (the new state doubled) runs otherwise."""
    import sympy as sp

    from symnn.autodiff import algebra as al

    net = _net("RNN", 1, False)
    params = net.init_params(seed=0)
    X, Y = _data(False)
    d = sn.derive(net)
    env, _ = d._environment(params, X, Y)
    eq = d.equation("rnn1.v1")  # C = R_1(0, P, W_hh)
    np.testing.assert_allclose(env[eq.lhs], _rnn_states(params, X), rtol=1e-13, atol=1e-15)
    body = d.loops[0].body
    ((lhs, rhs),) = body.equations
    doubled = al.Loop(body.carry, body.steps, body.invariants, ((lhs, sp.MatMul(2, rhs)),), body.new_carry,
                      body.out, body.length, body.reverse)
    value = al.evaluate(eq.rhs.xreplace({body: doubled}), env)
    np.testing.assert_allclose(value, _rnn_states(params, X, 2.0), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_the_recurrent_derivation_is_well_formed_latex(kind: str, tmp_path) -> None:
    d = sn.derive(_net(kind, 2, True))
    assert latex_checks.problems(d) == []
    for loop in d.loops:
        for e in (*loop.equations, *loop.contributions):
            for piece in (tex(e.lhs), tex(e.rhs), tex(e.index.rhs)):
                assert latex_checks.brace_problem(piece) is None, (e.id, piece)
                assert latex_checks.mathml_problem(piece) is None, (e.id, piece)
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (CI installs it)")
    (tmp_path / "d.tex").write_text(d.latex(), encoding="utf-8")
    cmd = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "d.tex"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
