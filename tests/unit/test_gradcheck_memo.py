"""``sn.gradcheck``'s complex-step values are computed once per network and point: the step reads
only the network's forward graph and the point, never the kernel checked, so ``symnn check`` (four
kernels of one network at one point) differentiates once. The key is a digest of everything the
values depend on; any change to the point recomputes them, and a wrong kernel is still caught at
a reused point."""

from __future__ import annotations

import importlib

import symnn as sn

gc = importlib.import_module("symnn.gradcheck")  # the module (sn.gradcheck is its function)


def _net() -> sn.Network:
    return sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 2, "softmax")], loss="cross_entropy", name="memo")


def test_the_same_point_is_differentiated_once_and_a_changed_one_again(monkeypatch) -> None:
    calls = []
    original = gc._ComplexStep.estimate

    def counted(self, point, h, limit):
        calls.append(1)
        return original(self, point, h, limit)

    monkeypatch.setattr(gc._ComplexStep, "estimate", counted)
    monkeypatch.setattr(gc, "_NUMERIC", type(gc._NUMERIC)())
    k = sn.compile(_net(), backend="numpy")
    params, X, Y = gc.sample_point(_net(), seed=2)
    first = sn.gradcheck(k, params, X, Y, method="complex_step")
    entries = sum(v.size for v in params.values())
    assert first.ok and len(calls) == entries
    again = sn.gradcheck(k, params, X, Y, method="complex_step")
    assert len(calls) == entries and again.verdict() == first.verdict()
    moved = {**params, "W2": params["W2"] + 1e-3}
    assert sn.gradcheck(k, moved, X, Y, method="complex_step").ok and len(calls) == 2 * entries


def test_a_wrong_kernel_fails_at_a_reused_point(monkeypatch) -> None:
    monkeypatch.setattr(gc, "_NUMERIC", type(gc._NUMERIC)())
    k = sn.compile(_net(), backend="numpy")
    params, X, Y = gc.sample_point(_net(), seed=3)
    assert sn.gradcheck(k, params, X, Y, method="complex_step").ok
    right = k.loss_and_grad

    def wrong(p, x, y, **kw):
        loss, grads = right(p, x, y, **kw)
        return loss, {**grads, "b1": grads["b1"] * (1 + 1e-6)}

    monkeypatch.setattr(k, "loss_and_grad", wrong)
    assert not sn.gradcheck(k, params, X, Y, method="complex_step").ok
    assert len(gc._NUMERIC) == 1
