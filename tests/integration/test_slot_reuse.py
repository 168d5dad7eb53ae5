"""The C lowering is correct wherever the work arena puts each temporary.

A statement's target, its scratch (a gemm's packed panel and transposed tile, im2col columns)
and the values alive across it must never share memory, however the buffer is laid out. The
arena (:mod:`symnn.backends.c.arena`) plans at a design batch and lifts the plan to every batch;
this test plans at batches far from the one it runs (1 and 5000 against 40), so that values
sit elsewhere and overlap wherever their lifetimes allow, and a lowering that relied on where
they happen to lie to keep two live things apart shows up as wrong gradients (the gemm's panel
and tile scratch once could share one place)."""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.backends.c import arena

pytestmark = pytest.mark.needs_cc


def _networks(tag: str) -> list[sn.Network]:
    x = sn.Input(1, 8, 8)
    h = sn.MaxPool2d(2)(sn.Conv2d(1, 4, 3, padding="same", activation="relu", name="conv")(x))
    cnn = sn.Network(inputs=x, outputs=sn.Dense(64, 10, "softmax", name="fc")(sn.Flatten()(h)),
                     loss="cross_entropy", name=f"reuse_cnn_{tag}")
    x = sn.Input(2, 5, 5)
    h = sn.BatchNorm2d(3, name="bn")(sn.Conv2d(2, 3, 3, padding=1, bias=False, name="conv")(x))
    h = sn.LayerNorm(75, name="ln")(sn.Flatten()(sn.Activate("tanh")(h)))
    bn = sn.Network(inputs=x, outputs=sn.Dense(75, 3, "softmax", name="fc")(h), loss="cross_entropy",
                    name=f"reuse_bn_{tag}")
    mlp = sn.Network([sn.Dense(6, 16, "relu"), sn.Dense(16, 16, "tanh"), sn.Dense(16, 3, "softmax")],
                     loss="cross_entropy", name=f"reuse_mlp_{tag}")
    return [cnn, bn, mlp]


@pytest.mark.parametrize("design", [1, 5000])
def test_gradients_do_not_depend_on_where_the_arena_puts_values(monkeypatch, design: int) -> None:
    """Loss, gradient, forward and a train step (its gradients kept in work with the
    temporaries) of C kernels laid out for another batch, against NumPy's."""
    opt = sn.Momentum(lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    for net in _networks(str(design)):
        with monkeypatch.context() as m:
            m.setattr(arena, "LAYOUT_BATCH", design)
            k = sn.compile(net, backend="c", optimizer=opt)
        ref = sn.compile(net, backend="numpy", optimizer=opt)
        params = net.init_params(seed=1)
        X = rng.normal(size=(40, int(net.n_in)))  # a batch past a gemm tile, so the scratch is used
        Y = np.arange(40) % int(net.n_out)
        loss, grads = k.loss_and_grad(params, X, Y)
        want_loss, want = ref.loss_and_grad(params, X, Y)
        assert abs(loss - want_loss) <= 1e-13 * abs(want_loss), net.name
        scale = max(float(np.abs(g).max()) for g in want.values())
        for name in want:
            assert np.abs(grads[name] - want[name]).max() <= 1e-13 * scale, (net.name, name)
        assert np.abs(k.forward(params, X) - ref.forward(params, X)).max() <= 1e-13, net.name
        theta, state = k.pack(params), k.init_state()
        theta_ref, state_ref = ref.pack(params), ref.init_state()
        for step in (1, 2):
            got = k.train_step(theta, state, X, Y, step)
            assert abs(got - ref.train_step(theta_ref, state_ref, X, Y, step)) <= 1e-12 * abs(got), net.name
        assert np.abs(theta - theta_ref).max() <= 1e-12 * max(1.0, float(np.abs(theta_ref).max())), net.name
        assert np.abs(state - state_ref).max() <= 1e-12 * max(1.0, float(np.abs(state_ref).max())), net.name
