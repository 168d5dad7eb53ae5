"""``sn.concat`` (issue 20): two branches joined along the features, end to end.

``x -> Dense a (tanh), Dense b (relu) -> concat -> Dense (softmax)`` with cross-entropy is
compiled by both backends in both dtypes and checked against PyTorch autograd (``torch.cat``
written out by hand, so a swapped or shifted block shows), numeric differentiation
(``sn.gradcheck``) and the printed derivation (``Derivation.evaluate``, whose block row and
column slices run as printed). The IR's CONCAT and SLICE rules are checked alone in
``tests/unit/test_vjp_rules.py`` and ``tests/unit/test_dispatch_tables.py``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import symnn as sn
from symnn.errors import LayerSizeMismatchError, SpecError, SpecTypeError, SymnnError
from tests import latex_checks

torch = pytest.importorskip("torch")

from tests.layer_graphs import rel  # noqa: E402

F = torch.nn.functional
DTYPES = ["float64", "float32"]
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]


def catnet() -> sn.Network:
    """Widths 4 and 3, so the blocks differ in size and a swap changes the shapes' offsets."""
    x = sn.Input(5)
    a = sn.Dense(5, 4, "tanh")(x)
    b = sn.Dense(5, 3, "relu")(x)
    y = sn.Dense(7, 3, "softmax")(sn.concat([a, b]))
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", l2=1e-2, name="catnet")


def torch_catnet(tp: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    a = torch.tanh(F.linear(x, tp["dense1.weight"], tp["dense1.bias"]))
    b = torch.relu(F.linear(x, tp["dense2.weight"], tp["dense2.bias"]))
    z = F.linear(torch.cat([a, b], dim=1), tp["dense3.weight"], tp["dense3.bias"])
    l2 = sum((tp[f"dense{i}.weight"] ** 2).sum() for i in (1, 2, 3))
    return F.cross_entropy(z, y) + 1e-2 / 2 * l2


def case(n: int = 7, seed: int = 0):
    net = catnet()
    rng = np.random.default_rng(seed)
    p = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in net.init_params(seed=seed + 1).items()}
    X = rng.normal(size=(n, 5))
    Y = rng.integers(0, 3, n)
    return net, p, X, Y


@pytest.fixture(scope="module")
def kernels() -> dict[tuple[str, str], sn.Kernel]:
    out = {("numpy", d): sn.compile(catnet(), dtype=d) for d in DTYPES}
    if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"):
        out |= {("c", d): sn.compile(catnet(), backend="c", dtype=d) for d in DTYPES}
    return out


def test_concat_output_shape_and_names() -> None:
    net = catnet()
    assert net.graph.names == ("dense1", "dense2", "concat1", "dense3")
    assert net.graph.calls[2].shape == (7,)
    assert list(net.param_shapes()) == [f"dense{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_gradients_match_torch_autograd(kernels, backend: str) -> None:
    net, p, X, Y = case()
    L, g = kernels[backend, "float64"].loss_and_grad(p, X, Y)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    tL = torch_catnet(tp, torch.tensor(X), torch.tensor(Y))
    tL.backward()
    tL = float(tL.detach())
    assert abs(L - tL) <= 1e-12 * abs(tL)
    assert list(g) == list(tp)
    for key, t in tp.items():
        assert g[key].shape == tuple(t.shape) and rel(g[key], t.grad.numpy()) <= 1e-10, key
    # the forward pass is torch.cat's too
    a = np.tanh(X @ p["dense1.weight"].T + p["dense1.bias"])
    b = np.maximum(X @ p["dense2.weight"].T + p["dense2.bias"], 0)
    z = np.concatenate([a, b], axis=1) @ p["dense3.weight"].T + p["dense3.bias"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(kernels[backend, "float64"].forward(p, X), e / e.sum(axis=1, keepdims=True),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_passes(kernels, backend: str, dtype: str) -> None:
    net, p, X, Y = case(seed=5)
    p = {k: v.astype(dtype) for k, v in p.items()}
    report = sn.gradcheck(kernels[backend, dtype], p, X.astype(dtype), Y)
    assert report.passed, str(report)
    assert report.max_rel_error <= (1e-7 if dtype == "float64" else 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_printed_derivation_computes_what_the_kernel_does(kernels, backend: str) -> None:
    net, p, X, Y = case(seed=2)
    L, g = kernels[backend, "float64"].loss_and_grad(p, X, Y)
    dL, dg = sn.derive(net).evaluate(p, X, Y)
    assert abs(float(dL) - L) <= 1e-12 * abs(L)
    assert set(dg) == set(g)
    for key in g:
        assert rel(dg[key], g[key]) <= 1e-12, key


def test_the_derivation_prints_a_block_row_and_its_slices() -> None:
    pytest.importorskip("latex2mathml")
    d = sn.derive(catnet())
    assert latex_checks.problems(d) == []
    doc = d.latex()
    assert r"\;\;" in doc and "_{:, 0:4}" in doc and "_{:, 4:7}" in doc
    text = d.text()
    assert "[:, 0:4]" in text and "[:, 4:7]" in text


def test_a_spec_round_trip_keeps_the_concat() -> None:
    net = catnet()
    text = sn.dumps_spec(net)
    back = sn.loads_spec(text).network
    assert back.graph.names == net.graph.names and back.graph.calls == net.graph.calls
    assert sn.dumps_spec(back) == text
    assert sn.derive(back).text() == sn.derive(net).text()


def test_bad_concats_are_symnn_errors_before_any_work() -> None:
    x = sn.Input(3)
    a = sn.Dense(3, 2)(x)
    with pytest.raises(SpecTypeError, match="list of tensors"):
        sn.concat(a)
    with pytest.raises(SpecTypeError, match="int"):
        sn.concat([a, 3])
    with pytest.raises(SpecError, match="two or more"):
        sn.concat([a])
    # a rank-2 tensor (no layer makes one yet): a size mismatch, not a crash
    with pytest.raises(LayerSizeMismatchError, match="rank 1"):
        sn.concat([a, sn.Tensor((2, 2), None, ())])
    for exc in (SpecTypeError, SpecError, LayerSizeMismatchError):
        assert issubclass(exc, SymnnError)
