"""3x3 convolutions of stride 1 between 8 channels or more take Winograd's F(2x2, 3x3) in C
(``conv_winograd`` and ``conv_grad_input_winograd`` of templates/c/_spatial.jinja: 16 products
for each 2x2 block of outputs, as 16 matrix products over the channels): the forward, the
pullback to the input, through the public API, both dtypes, against PyTorch autograd and the
NumPy backend (which sums directly), on images whose height and width are odd (a last block
half outside), with "same", no and asymmetric-looking padding, batches that fill a block of
samples partly, and a sample's result not depending on the samples beside it in its block.

Tolerances: the transforms' entries are 0, +-1 and 1/2 (exact), so the results are the direct
sums up to a few more roundings of terms of the same size: float64 C within 1e-14 of NumPy
relative to the largest entry (a few hundred terms, unit roundoff 1.1e-16), float32 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from tests.layer_graphs import largest, rel_max

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.needs_cc

#: the relative error allowed against NumPy's direct sums, per dtype
TOL = {"float64": 1e-14, "float32": 1e-5}


def _net(size: tuple[int, int], padding2: object, name: str) -> sn.Network:
    """8 channels -> Conv2d(8, 16, 3, padding 1) relu -> Conv2d(16, 8, 3, ``padding2``) tanh ->
    Flatten -> Dense -> softmax cross-entropy: both convolutions' forwards and the second's
    pullback to its input through Winograd's form."""
    x = sn.Input(8, *size)
    h = sn.Conv2d(8, 16, 3, padding=1, activation="relu", name="c1")(x)
    h = sn.Conv2d(16, 8, 3, padding=padding2, activation="tanh", name="c2")(h)
    features = int(np.prod(h.shape))
    return sn.Network(inputs=x, outputs=sn.Dense(features, 4, "softmax", name="fc")(sn.Flatten()(h)),
                      loss="cross_entropy", name=name)


def _torch(params: dict[str, np.ndarray], X: np.ndarray, labels: np.ndarray,
           padding2: object) -> tuple[float, dict[str, np.ndarray]]:
    """The same network as a functional PyTorch forward, float64, and its autograd gradients."""
    tp = {k: torch.tensor(np.asarray(v, np.float64), requires_grad=True) for k, v in params.items()}
    h = torch.relu(F.conv2d(torch.tensor(np.asarray(X, np.float64)), tp["c1.weight"], tp["c1.bias"], padding=1))
    h = torch.tanh(F.conv2d(h, tp["c2.weight"], tp["c2.bias"], padding=padding2))
    z = F.linear(h.flatten(1), tp["fc.weight"], tp["fc.bias"])
    loss = F.cross_entropy(z, torch.tensor(labels))
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in tp.items()}


#: (image size, the second convolution's padding): odd heights and widths; "same" (1), none (a
#: 5x3 output of 2x2 blocks, the last row and column of blocks half outside)
CASES = [((7, 5), 1), ((7, 5), 0), ((9, 10), "same")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_winograd_convolutions_match_numpy_and_torch_autograd(dtype: str) -> None:
    nets = [_net(size, pad, f"wino{i}") for i, (size, pad) in enumerate(CASES)]
    kernels = sn.compile_many(nets, backend="c", dtype=dtype)
    rng = np.random.default_rng(3)
    for (size, pad), net, kc in zip(CASES, nets, kernels):
        source = Path(kc.source_path).read_text()
        for form in ("conv_winograd", "conv_grad_input_winograd"):
            assert f"{form}(&geom" in source, (net.name, form)
        params = {k: (v + 0.3 * rng.normal(size=v.shape)).astype(dtype) for k, v in net.init_params(seed=1).items()}
        n = 5  # blocks of 1 to 3 samples: the last one partly filled
        X = rng.normal(size=(n, 8, *size)).astype(dtype)
        labels = rng.integers(0, 4, n)
        lc, gc = kc.loss_and_grad(params, X, labels)
        ln, gn = sn.compile(net, backend="numpy", dtype=dtype).loss_and_grad(params, X, labels)
        assert abs(lc - ln) <= TOL[dtype] * abs(ln), (net.name, lc, ln)
        scale = largest(gn)
        for key in gn:
            assert rel_max(gc[key], gn[key], scale) <= TOL[dtype], (net.name, key)
        lt, gt = _torch(params, X, labels, pad)
        tol = 1e-10 if dtype == "float64" else 1e-5
        assert abs(lc - lt) <= tol * abs(lt), (net.name, lc, lt)
        scale = largest(gt)
        for key in gt:
            assert rel_max(gc[key], gt[key], scale) <= tol, (net.name, key)
        # a sample's output is its own: alone, or in a block with others, the same bits
        whole = kc.forward(params, X)
        for i in range(n):
            np.testing.assert_array_equal(kc.forward(params, X[i:i + 1])[0], whole[i])
