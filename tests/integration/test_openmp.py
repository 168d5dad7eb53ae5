"""``openmp=True``: the C kernel's large products split over OpenMP threads (issue 4)."""

from __future__ import annotations

import ctypes
import pickle
import re

import numpy as np
import pytest

import symnn as sn
from symnn.errors import ConfigError
from symnn.gradcheck import sample_point

pytestmark = pytest.mark.needs_cc


def _libgomp() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libgomp.so.1")  # the copy the openmp module linked (already loaded)
    except OSError:
        pytest.skip("no libgomp (GCC's OpenMP runtime)")


def _omp_net() -> sn.Network:
    """64 -> 128 -> 40 -> 10. At 203 rows (not a multiple of 4) the products of the first two
    layers and of their gradients are past SYMNN_OMP_MIN: X @ W1.T (and the gradient products
    with 128 columns) split their columns over the threads in whole tiles; A1 @ W2.T's 40
    columns end in a narrow, zero-padded tile (float64: 16 + 16 + 8), which the last thread
    takes. Both splits in one network: two compiler runs per dtype (with and without OpenMP),
    where a network for each split took four."""
    return sn.Network([sn.Dense(64, 128, "relu"), sn.Dense(128, 40, "relu"), sn.Dense(40, 10, "softmax")],
                      loss="cross_entropy", name="ompnet")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_results_do_not_depend_on_the_thread_count(dtype: str) -> None:
    net = _omp_net()
    ko = sn.compile(net, backend="c", dtype=dtype, openmp=True)
    ks = sn.compile(net, backend="c", dtype=dtype)
    kn = sn.compile(net, backend="numpy", dtype=dtype)
    p, X, Y = sample_point(net, n=203, seed=5)
    p, X, Y = {k: v.astype(dtype) for k, v in p.items()}, X.astype(dtype), Y.astype(dtype)
    gomp = _libgomp()
    ls, gs = ks.loss_and_grad(p, X, Y)
    try:
        for threads in (1, 2, 3):
            gomp.omp_set_num_threads(threads)
            assert gomp.omp_get_max_threads() == threads
            lo, go = ko.loss_and_grad(p, X, Y)
            assert lo == ls, threads
            for name in gs:
                np.testing.assert_array_equal(go[name], gs[name], err_msg=f"{name}, {threads} threads")
            np.testing.assert_array_equal(ko.forward(p, X), ks.forward(p, X))
    finally:
        gomp.omp_set_num_threads(1)
    ln, gn = kn.loss_and_grad(p, X, Y)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    assert abs(ls - ln) <= rtol * abs(ln)
    for name in gn:
        assert np.linalg.norm(gs[name] - gn[name]) <= rtol * np.linalg.norm(gn[name]), name


def test_openmp_is_a_bool_and_excludes_blas() -> None:
    net = sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 1, "sigmoid")], loss="bce")
    with pytest.raises(ConfigError, match="openmp"):
        sn.compile(net, backend="c", openmp=1)
    with pytest.raises(ConfigError, match="exclude"):
        sn.compile(net, backend="c", blas=True, openmp=True)
    with pytest.raises(ConfigError, match="exclude"):
        sn.compile_many([net], backend="c", blas=True, openmp=True)


def test_pickled_kernel_keeps_its_build() -> None:
    # the thread-count test's float64 OpenMP build: no compiler run of its own
    k = pickle.loads(pickle.dumps(sn.compile(_omp_net(), backend="c", openmp=True)))
    assert k.build == {"blas": False, "openmp": True, "flush_denormals": False}


def test_emitted_c_has_the_pragma_only_under_openmp() -> None:
    net = sn.Network([sn.Dense(64, 32, "relu"), sn.Dense(32, 10, "softmax")], loss="cross_entropy", name="so")
    from symnn.driver import emit_files

    text = emit_files(net, backend="c")["so.c"]
    guard = "#if defined(_OPENMP) && !defined(SYMNN_BLAS)"
    assert guard in text and "#pragma omp parallel" in text
    before, _, _ = text.partition(guard)
    assert not re.search(r"omp_|#pragma omp|omp\.h", before)
    for line_no, line in enumerate(text.splitlines()):
        if "#pragma omp" in line or "omp_get" in line:
            head = "\n".join(text.splitlines()[:line_no])
            assert head.rfind("#ifdef SO__OMP") > head.rfind("#endif"), line
