"""A product's gemm that stores C = D + op(A) @ op(B) (issue 23: the passes of a recurrent step).

A recurrent layer adds its two biases to the input's projection of every step (``z += b``, with
no activation after it to add them in its loop), and each step adds that projection to
``h @ W_hh.T``. The C backend has the gemm add D as it stores each entry's whole sum
(``_KernelLowering._added_products``), and the separate pass goes. Each entry is then D's plus
the product's sum, which is what the pass computed: the results must be the same bits as with
the passes, at every tile edge (6-, 4-, 8- and 1-row tiles, a narrow block of columns, the
``C.T`` path of a product with fewer columns than a tile, the packed panels of a loop, the
columns split over OpenMP threads); through BLAS (tests/integration/test_blas.py) the same values
to rounding.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.backends.c import config as c_config
from symnn.backends.c.emit import emit_c
from symnn.build import cpu_flags
from symnn.driver import derive_program

pytestmark = pytest.mark.needs_cc

#: remainders of 6, 4 and 8 rows (with AVX-512) and single rows, and a batch of several tiles
BATCHES = [1, 5, 7, 13, 33]


def _net(cell: type, features: int, hidden: int, steps: int, name: str) -> sn.Network:
    x = sn.Input(steps, features, name="x")
    h = cell(features, hidden, name="rnn")(x)
    y = sn.Dense(hidden, 2, name="fc")(h)
    return sn.Network(inputs=x, outputs=y, loss="mse", name=name)


#: (cell, features, hidden, steps): an LSTM whose gates (40) are a full block and a narrow one in
#: float32 and two and a narrow one in float64; a GRU of 37 (111 gate columns); an RNN of 12
#: units, fewer columns than a tile, whose input projection (M = N*T rows) takes the C.T path
CASES = [(sn.LSTM, 5, 10, 6), (sn.GRU, 5, 37, 4), (sn.RNN, 8, 12, 9)]


def _unfused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(c_config._KernelLowering, "_added_products", lambda self, sums, pool_masks: {})


def _plus_calls(kernel) -> list[str]:
    """The gemm calls of the kernel's source that add a D: ``... /* c = d + a @ b ...``."""
    return re.findall(r"__gemm_\w+\(.*\); /\* \w+ = \w+ \+ ", Path(kernel.source_path).read_text())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=["lstm", "gru", "rnn"])
def test_the_added_product_is_bitwise_the_separate_pass(case, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cell, features, hidden, steps = case
    net = _net(cell, features, hidden, steps, f"plus_{cell.__name__.lower()}")
    fused = sn.compile(net, backend="c", dtype=dtype)
    calls = _plus_calls(fused)
    # the input projection's bias (D one row, ldd 0) and, for the gated cells, each step's
    # projection plus h @ W_hh.T (the LSTM's) or + b_hh (the GRU's, inside its reset gate)
    assert any(re.search(r", 0\); /\*", c) for c in calls), calls
    if cell is sn.LSTM:
        assert any(re.search(r", [1-9]\d*\); /\*", c) for c in calls), calls
    with monkeypatch.context() as m:
        _unfused(m)
        apart = sn.compile(net, backend="c", dtype=dtype)
    assert _plus_calls(apart) == [] and apart.source_path != fused.source_path
    params = {k: v.astype(dtype) for k, v in net.init_params(seed=2).items()}
    rng = np.random.default_rng(7)
    for n in BATCHES:
        X = rng.normal(size=(n, steps, features)).astype(dtype)
        Y = rng.normal(size=(n, 2)).astype(dtype)
        lf, gf = fused.loss_and_grad(params, X, Y)
        la, ga = apart.loss_and_grad(params, X, Y)
        assert lf == la, n
        for name in ga:
            np.testing.assert_array_equal(gf[name], ga[name], err_msg=f"{name} at n={n}")
        np.testing.assert_array_equal(fused.forward(params, X), apart.forward(params, X))


def test_the_added_product_split_over_openmp_threads_is_the_same_bits() -> None:
    # LSTM(16 -> 32), T = 8, N = 64: the projection (512 x 16 x 128) and each step's product
    # (64 x 32 x 128) are at least SYMNN_OMP_MIN, so their columns, D's with them, go to the threads
    import ctypes

    try:
        gomp = ctypes.CDLL("libgomp.so.1")
    except OSError:
        pytest.skip("no libgomp (GCC's OpenMP runtime)")
    net = _net(sn.LSTM, 16, 32, 8, "plus_omp")
    ko = sn.compile(net, backend="c", dtype="float64", openmp=True)
    ks = sn.compile(net, backend="c", dtype="float64")
    assert len(_plus_calls(ko)) >= 2
    params = net.init_params(seed=6)
    rng = np.random.default_rng(9)
    X, Y = rng.normal(size=(64, 8, 16)), rng.normal(size=(64, 2))
    ls, gs = ks.loss_and_grad(params, X, Y)
    try:
        for threads in (1, 2, 3):
            gomp.omp_set_num_threads(threads)
            lo, go = ko.loss_and_grad(params, X, Y)
            assert lo == ls, threads
            for name in gs:
                np.testing.assert_array_equal(go[name], gs[name], err_msg=f"{name}, {threads} threads")
    finally:
        gomp.omp_set_num_threads(1)


_MAIN = r"""#include <stdio.h>
#include <stdlib.h>
#include "plus_avx2.h"
int main(void) {
    static const ptrdiff_t batches[] = {1, 5, 13, 33};
    for (int b = 0; b < 4; ++b) {
        const ptrdiff_t n = batches[b];
        size_t wl = 0;
        plus_avx2_real *p = malloc(PLUS_AVX2_N_PARAMS*sizeof *p), *g = malloc(PLUS_AVX2_N_PARAMS*sizeof *g);
        plus_avx2_real *x = malloc((size_t)n*PLUS_AVX2_N_IN*sizeof *x), *y = malloc((size_t)n*2*sizeof *y), loss = 0, *w;
        if (plus_avx2_work_size(n, &wl) != SYMNN_OK) return 3;
        w = malloc(wl*sizeof *w);
        if (!p || !g || !x || !y || !w) return 4;
        for (ptrdiff_t e = 0; e < PLUS_AVX2_N_PARAMS; ++e) p[e] = (plus_avx2_real)((e*7919 % 1000) - 500)/2500;
        for (ptrdiff_t e = 0; e < n*PLUS_AVX2_N_IN; ++e) x[e] = (plus_avx2_real)((e*104729 % 2001) - 1000)/1000;
        for (ptrdiff_t e = 0; e < n*2; ++e) y[e] = (plus_avx2_real)((e*31 % 7) - 3)/3;
        if (plus_avx2_loss_and_grad(p, x, y, n, &loss, g, w, wl) != SYMNN_OK) return 5;
        printf("%a\n", (double)loss);
        for (ptrdiff_t e = 0; e < PLUS_AVX2_N_PARAMS; ++e) printf("%a\n", (double)g[e]);
        free(p); free(g); free(x); free(y); free(w);
    }
    return 0;
}
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="AVX2 is an x86 extension")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_avx2_tiles_add_d_as_the_four_row_arrays_do(tmp_path: Path, dtype: str) -> None:
    """Where GCC targets AVX2 without AVX-512 (-march=x86-64-v3), full-width rows go in 2-row
    tiles of 32-byte vectors (__TILE32), which add D as they store; without them
    (-DSYMNN_GEMM_NO_TILE32) the 4-row arrays add it: the same bits, at each batch."""
    net = _net(sn.LSTM, 5, 10, 6, "plus_avx2")
    files = emit_c(net, derive_program(net).program, dtype).files
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert "__TILE32 1" in files["plus_avx2.c"] and re.search(r"__gemm_\w+\(.*\); /\* \w+ = \w+ \+ ", files["plus_avx2.c"])
    (tmp_path / "main.c").write_text(_MAIN)
    cc = shutil.which("gcc") or shutil.which("cc") or "cc"
    outputs = []
    for extra in ([], ["-DSYMNN_GEMM_NO_TILE32"]):
        exe = tmp_path / f"plus{len(extra)}"
        build = subprocess.run([cc, "-std=c99", "-O3", "-march=x86-64-v3", *extra, "-o", str(exe),
                                str(tmp_path / "main.c"), str(tmp_path / "plus_avx2.c"), "-lm"],
                               check=False, capture_output=True, text=True, timeout=300)
        assert build.returncode == 0, build.stderr
        if not {"avx2", "fma"} <= set(cpu_flags().split()):
            pytest.skip("built, but this CPU has no AVX2 and FMA to run them")
        ran = subprocess.run([str(exe)], check=False, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stderr
        outputs.append(ran.stdout)
    n_params = sum(int(np.prod(shape)) for shape in net.param_shapes().values())
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == 4 * (1 + n_params)
