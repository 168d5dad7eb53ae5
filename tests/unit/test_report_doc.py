"""The report pairs each equation with the code that computes it by the equation's id, which
every emitted statement carries: no reading of the emitted text, so a template edit cannot empty
a column, and where the code holds a scaled value (1/N folded into delta) the pair says so."""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.report_doc import code_pairs

NET = sn.Network([sn.Dense(8, 20, "relu"), sn.Dense(20, 3, "softmax")], loss="cross_entropy", l1=0.01,
                 name="rep")


@pytest.fixture(scope="module")
def pairs():
    return {p.equation.id: p for p in code_pairs(NET)}


def test_every_equation_has_numpy_and_c_lines(pairs) -> None:
    d = sn.derive(NET)
    assert [e.id for e in d.equations] == list(pairs)
    for eq_id, pair in pairs.items():
        assert pair.numpy, f"{eq_id}: no NumPy line"
        assert pair.c, f"{eq_id}: no C line"


def test_lines_are_the_emitted_lines_at_their_numbers(pairs) -> None:
    source_py = sn.emit_source(NET, "numpy").splitlines()
    source_c = sn.emit_source(NET, "c").splitlines()
    for pair in pairs.values():
        for line in pair.numpy:
            assert source_py[line.line - 1].strip() == line.text
        for line in pair.c:
            assert source_c[line.line - 1].strip() == line.text


def test_the_lines_compute_their_equation(pairs) -> None:
    # the gradient of W1 is written by its own assignment; L1's sign term is in that line
    assert any(line.text.startswith("dL_dW1 = ") and "sign(W1)" in line.text for line in pairs["dL_dW1"].numpy)
    # the hidden delta's C lines hold ReLU's derivative (a comparison of the forward value with 0)
    assert any("> 0" in line.text for line in pairs["delta1"].c)
    # the bias gradient's column sums
    assert any(".sum(axis=0)" in line.text for line in pairs["dL_db1"].numpy)


def test_scale_notes_say_where_the_batch_mean_went(pairs) -> None:
    assert "1/N is folded in here" in pairs["delta2"].note
    assert "already holds it" in pairs["dL_dW2"].note
    assert pairs["z1"].note == ""


def test_the_paired_numpy_lines_reproduce_the_printed_value() -> None:
    """Run the NumPy kernel's lines of delta2 and compare with the derivation's evaluation of
    the printed delta2 divided by N (the note's claim, checked numerically)."""
    net = sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 3, "sigmoid")], loss="bce", name="chk")
    pairs = {p.equation.id: p for p in code_pairs(net)}
    d = sn.derive(net)
    rng = np.random.default_rng(0)
    params, X, Y = net.init_params(seed=0), rng.normal(size=(5, 3)), rng.uniform(size=(5, 3))
    # the printed delta2, evaluated from the printed formulas
    from symnn.autodiff import algebra

    env = {sn.naming.N: 5, d.inputs["X"]: X, d.inputs["Y"]: Y}
    for name, value in params.items():
        env[d.inputs[f"{name[0]}^{{({name[1:]})}}"]] = value.reshape(-1, 1) if value.ndim == 1 else value
    for eq in d.equations:
        env[eq.lhs] = algebra.evaluate(eq.rhs, env)
    delta2 = env[d.equation("delta2").lhs]
    # the kernel's own lines up to and including delta2's, run in the module's namespace
    k = sn.compile(net)
    lines = [line.text for eq_id in ("z1", "a1", "z2", "a2", "delta2") for line in pairs[eq_id].numpy]
    ns = dict(vars(k.module), X=X, Y=Y, N=5, **params)
    for text in lines:
        exec(text, ns)  # noqa: S102 - the kernel's own emitted lines
    target = pairs["delta2"].numpy[-1].text.split(" = ", 1)[0]
    np.testing.assert_allclose(ns[target] * 5, delta2, rtol=1e-13, atol=1e-15)
