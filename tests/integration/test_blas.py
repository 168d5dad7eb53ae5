"""``blas=True``: the C kernel's large products through NumPy's bundled OpenBLAS (issue 4)."""

from __future__ import annotations

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
