"""The NumPy module writes a map into the array of an operand that dies there (``out=``),
and never into anything the caller owns or a later statement reads."""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn


def _nets():
    yield sn.Network([sn.Dense(5, 16, "relu"), sn.Dense(16, 8, "tanh"), sn.Dense(8, 3, "softmax")],
                     loss="cross_entropy", name="inpl_cls")
    yield sn.Network([sn.Dense(4, 8, "sigmoid"), sn.Dense(8, 8, "relu"), sn.Dense(8, 2, "identity")],
                     loss="mse", name="inpl_reg")
    yield sn.Network([sn.Dense(3, 6, "relu"), sn.Dense(6, 1, "relu")], loss="mse", name="inpl_relu_out")


@pytest.mark.parametrize("net", list(_nets()), ids=lambda n: n.name)
def test_inputs_parameters_and_outputs_survive(net: sn.Network) -> None:
    k = sn.compile(net, backend="numpy")
    p = net.init_params(seed=2)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, net.n_in))
    Y = rng.normal(size=(9, net.n_out)) if net.loss.name == "mse" else np.eye(net.n_out)[rng.integers(0, net.n_out, 9)]
    before = ({n: v.copy() for n, v in p.items()}, X.copy(), Y.copy())
    loss, grads = k.loss_and_grad(p, X, Y)
    yhat = k.forward(p, X)
    assert all(np.array_equal(p[n], before[0][n]) for n in p)
    assert np.array_equal(X, before[1]) and np.array_equal(Y, before[2])
    # the same numbers from a second call (nothing left aliased between calls), and gradients
    # that agree with numeric differentiation of the loss
    loss2, grads2 = k.loss_and_grad(p, X, Y)
    assert loss2 == loss and all(np.array_equal(grads[n], grads2[n]) for n in grads)
    assert np.array_equal(k.forward(p, X), yhat)
    report = sn.gradcheck(k, p, X, Y)
    assert report.passed_norm, str(report)  # (a dead ReLU unit: analytic 0, numeric 1e-13)


def test_relu_and_masks_are_written_in_place() -> None:
    src = sn.emit_source(next(_nets()), backend="numpy")
    body = src.split("def _loss_and_grad(", 1)[1]
    assert "a1 = np.maximum(z1, 0, out=z1)" in body
    assert "= np.multiply(t" in body and "a1 > 0, out=t" in body  # ReLU's backward mask
    assert "1.0 - a2**2, out=t" in body  # tanh's derivative times the delta
    # never into an input or a parameter
    for name in ("X", "Y", "W1", "b1", "W2", "b2", "W3", "b3"):
        assert f"out={name})" not in body
