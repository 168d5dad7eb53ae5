"""``blas=True``: the C kernel's large products through NumPy's bundled OpenBLAS (issue 4)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.build import numpy_blas_flags
from symnn.errors import ConfigError
from symnn.gradcheck import sample_point

pytestmark = pytest.mark.needs_cc


def _have_numpy_blas() -> bool:
    try:
        numpy_blas_flags()
    except ConfigError:
        return False
    return True


@pytest.mark.skipif(not _have_numpy_blas(), reason="NumPy without its bundled OpenBLAS")
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_blas_build_agrees_with_numpy_and_numeric_differences(dtype: str, rtol: float) -> None:
    # 16-128-10 at N=32: every product is past SYMNN_BLAS_MIN (32,768 multiply-adds): the
    # forward's and the input weight's gradient 32*16*128 = 65,536, the other three 32*128*10 =
    # 40,960; the same gemm calls as 64-128-10 at N=64, with a third of the entries (3,466) and
    # half the rows for the per-entry differences below
    net = sn.Network([sn.Dense(16, 128, "relu"), sn.Dense(128, 10, "softmax")], loss="cross_entropy",
                     name="blasnet")
    kb = sn.compile(net, backend="c", dtype=dtype, blas=True)
    kn = sn.compile(net, backend="numpy", dtype=dtype)
    p, X, Y = sample_point(net, n=32, seed=3)
    p = {k: v.astype(dtype) for k, v in p.items()}
    lb, gb = kb.loss_and_grad(p, X.astype(dtype), Y.astype(dtype))
    ln, gn = kn.loss_and_grad(p, X.astype(dtype), Y.astype(dtype))
    assert abs(lb - ln) <= rtol * abs(ln)
    for name in gn:
        assert np.linalg.norm(gb[name] - gn[name]) <= rtol * np.linalg.norm(gn[name]), name
    if dtype == "float64":
        report = sn.gradcheck(kb, p, X, Y, method="central", max_entries=20000)  # per entry: kinks stay clear
        assert report.passed or report.passed_norm, str(report)
    np.testing.assert_allclose(kb.forward(p, X.astype(dtype)), kn.forward(p, X.astype(dtype)), rtol=rtol * 10)

@pytest.mark.skipif(not _have_numpy_blas(), reason="NumPy without its bundled OpenBLAS")
def test_a_recurrent_layers_added_products_through_blas_agree_with_numpy() -> None:
    # LSTM(16 -> 32), T = 8, N = 32: the input projection (256 x 16 x 128) and each step's product
    # (32 x 32 x 128) are past SYMNN_BLAS_MIN; their gemms add the biases and the step's input
    # (C = D + A @ B.T: tests/integration/test_gemm_plus.py), through BLAS as C = D, then C += A @ B.T
    x = sn.Input(8, 16, name="x")
    net = sn.Network(inputs=x, outputs=sn.Dense(32, 2, name="fc")(sn.LSTM(16, 32, name="rnn")(x)), loss="mse",
                     name="blas_lstm")
    kb = sn.compile(net, backend="c", dtype="float64", blas=True)
    assert len(re.findall(r"__gemm_\w+\(.*\); /\* \w+ = \w+ \+ ", Path(kb.source_path).read_text())) >= 2
    kn = sn.compile(net, backend="numpy", dtype="float64")
    params = net.init_params(seed=4)
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(32, 8, 16)), rng.normal(size=(32, 2))
    lb, gb = kb.loss_and_grad(params, X, Y)
    ln, gn = kn.loss_and_grad(params, X, Y)
    assert abs(lb - ln) <= 1e-13 * abs(ln)
    for name in gn:
        assert np.linalg.norm(gb[name] - gn[name]) <= 1e-12 * np.linalg.norm(gn[name]), name


def test_blas_must_be_a_bool() -> None:
    net = sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 1, "sigmoid")], loss="bce")
    with pytest.raises(ConfigError, match="blas"):
        sn.compile(net, backend="c", blas="yes")


def test_emitted_c_is_standalone_without_the_macro() -> None:
    # the BLAS call exists only under #ifdef SYMNN_BLAS; the default build needs libm alone
    net = sn.Network([sn.Dense(64, 32, "relu"), sn.Dense(32, 10, "softmax")], loss="cross_entropy", name="sa")
    from symnn.driver import emit_files

    text = emit_files(net, backend="c")["sa.c"]
    assert "#ifdef SYMNN_BLAS" in text and "cblas" in text
    before, _, _ = text.partition("#ifdef SYMNN_BLAS")
    assert "cblas" not in before
