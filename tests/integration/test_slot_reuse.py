"""The C lowering is correct whichever free work slot the allocator hands out.

A statement's target, its scratch (a gemm's packed panel and transposed tile, im2col columns)
and the values alive across it must never share memory, however slots are reused. The
allocator's own policy only reuses a slot that fits; this test swaps in a policy that grows
*any* free slot instead, so a lowering that relied on sizes to keep two live things apart shows
up as wrong gradients (the gemm's panel and tile scratch once could share one slot)."""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.backends.c import config as c_config

pytestmark = pytest.mark.needs_cc


def _grow_any(self, a: int, b: int) -> int:
    """Take the most recently freed slot, grown to fit (the one a statement's own scratch just
    left); a new slot only when none is free."""
    if self.free:
        slot = self.free.pop()
        sa, sb = self.slots[slot]
        self.slots[slot] = (max(a, sa), max(b, sb))
        return slot
    self.slots.append((a, b))
    return len(self.slots) - 1


def _networks() -> list[sn.Network]:
    x = sn.Input(1, 8, 8)
    h = sn.MaxPool2d(2)(sn.Conv2d(1, 4, 3, padding="same", activation="relu", name="conv")(x))
    cnn = sn.Network(inputs=x, outputs=sn.Dense(64, 10, "softmax", name="fc")(sn.Flatten()(h)),
                     loss="cross_entropy", name="reuse_cnn")
    x = sn.Input(2, 5, 5)
    h = sn.BatchNorm2d(3, name="bn")(sn.Conv2d(2, 3, 3, padding=1, bias=False, name="conv")(x))
    h = sn.LayerNorm(75, name="ln")(sn.Flatten()(sn.Activate("tanh")(h)))
    bn = sn.Network(inputs=x, outputs=sn.Dense(75, 3, "softmax", name="fc")(h), loss="cross_entropy",
                    name="reuse_bn")
    mlp = sn.Network([sn.Dense(6, 16, "relu"), sn.Dense(16, 16, "tanh"), sn.Dense(16, 3, "softmax")],
                     loss="cross_entropy", name="reuse_mlp")
    return [cnn, bn, mlp]


def test_gradients_do_not_depend_on_which_slot_is_reused(monkeypatch) -> None:
    nets = _networks()
    with monkeypatch.context() as m:
        m.setattr(c_config._SlotAllocator, "take", _grow_any)
        kernels = sn.compile_many(nets, backend="c")
    rng = np.random.default_rng(0)
    for net, k in zip(nets, kernels):
        params = net.init_params(seed=1)
        X = rng.normal(size=(40, int(net.n_in)))  # a batch past a gemm tile, so the scratch is used
        Y = np.arange(40) % int(net.n_out)
        ref = sn.compile(net, backend="numpy")
        loss, grads = k.loss_and_grad(params, X, Y)
        want_loss, want = ref.loss_and_grad(params, X, Y)
        assert abs(loss - want_loss) <= 1e-13 * abs(want_loss), net.name
        scale = max(float(np.abs(g).max()) for g in want.values())
        for name in want:
            assert np.abs(grads[name] - want[name]).max() <= 1e-13 * scale, (net.name, name)
        assert np.abs(k.forward(params, X) - ref.forward(params, X)).max() <= 1e-13, net.name
