"""The emitted C's fused element-wise passes (issue 4) against the NumPy kernel.

Three fusions (``backends/c/config.py``): a bias add and the activation after it in one loop,
a layer's delta and its bias gradient (column sums) in one loop, and a softmax whose row
statistics keep exp(z - max). Each is meant to compute every element as the separate loops
did. The shapes here are the ones that broke: a 16-wide hidden layer, whose ReLU mask GCC 12.2
at -O3 vectorised with the first half-row's mask on the second half's load (columns 8-15 of
the delta came out stale), and float32's 32-wide row.
"""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn

pytestmark = pytest.mark.needs_cc

NETS = {
    "relu16": ([sn.Dense(6, 16, "relu"), sn.Dense(16, 8, "tanh"), sn.Dense(8, 3, "softmax")], "cross_entropy"),
    "wide32": ([sn.Dense(5, 32, "leaky_relu"), sn.Dense(32, 32, "elu"), sn.Dense(32, 1, "sigmoid")], "bce"),
    "regression": ([sn.Dense(3, 16, "gelu"), sn.Dense(16, 2, "identity")], "mse"),
}
BATCHES = [1, 7, 16, 33]


def _net(name: str) -> sn.Network:
    layers, loss = NETS[name]
    return sn.Network(layers, loss=loss, name=f"fused_{name}")


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_fused_kernels_agree_with_numpy(name: str, dtype: str, rtol: float) -> None:
    net = _net(name)
    kc = sn.compile(net, backend="c", dtype=dtype)
    kn = sn.compile(net, backend="numpy", dtype=dtype)
    p = {k: v.astype(dtype) for k, v in net.init_params(seed=3).items()}
    for n in BATCHES:
        rng = np.random.default_rng(n)
        X = rng.normal(size=(n, net.n_in)).astype(dtype)
        if name == "relu16":
            Y = np.eye(3, dtype=dtype)[rng.integers(0, 3, n)]
        elif name == "wide32":
            Y = rng.integers(0, 2, (n, 1)).astype(dtype)
        else:
            Y = rng.normal(size=(n, 2)).astype(dtype)
        lc, gc = kc.loss_and_grad(p, X, Y)
        ln, gn = kn.loss_and_grad(p, X, Y)
        assert abs(lc - ln) <= rtol * abs(ln), (n, lc, ln)
        for g in gn:
            err = np.linalg.norm(gc[g] - gn[g]) / max(np.linalg.norm(gn[g]), 1e-30)
            assert err <= rtol, (n, g, err)
        np.testing.assert_allclose(kc.forward(p, X), kn.forward(p, X), rtol=rtol * 10, atol=rtol)
        assert abs(kc.loss(p, X, Y) - ln) <= rtol * abs(ln)


def test_the_passes_are_fused_in_the_emitted_source() -> None:
    src = sn.emit_source(_net("relu16"), backend="c")
    body = src.split("static void fused_relu16__loss_and_grad(", 1)[1].split("\n}\n", 1)[0]
    # both hidden layers: bias add and activation in one loop, the pre-activation not stored
    assert body.count("with z1 = z1 + b1: one pass, z1 not stored") == 1
    assert body.count("with z2 = z2 + b2: one pass, z2 not stored") == 1
    assert "/* z1 += b1 */" not in body and "/* z2 += b2 */" not in body
    # every bias gradient summed in its delta's loop, none in a pass of its own
    for layer in (1, 2, 3):
        assert f"/* dL_db{layer} = " in body
    assert ".sum(axis=0) */\n" in body and "dL_db1 = t" in body
    assert "{ /* dL_db" not in body
    # the softmax reuses the exponentials of its row statistics
    assert "exp(z3 - max) kept in a3" in body and "pi[j] /= si" in body
