"""The emitted C's matmul helpers at the edges of their tiling (issue 4).

The helpers tile C in 6-row (AVX-512) or 4-row blocks of 16 (float64) / 32 (float32) columns,
then single rows; k runs in equal chunks of at most 512; each chunk of B is packed, one tile of
columns at a time, into a panel zero-padded to the full tile width. One network reaches every
edge: 600 inputs (two chunks of k in X @ W1.T), 37 hidden units (two full column blocks of 16
and a narrow one of 5 in A.T @ B, 6*6 + 1 rows), 10 classes (a narrow block), and batches that
leave each possible remainder of 6 and 4 rows, up to 600 (two chunks of k in A.T @ B: there,
with AVX-512, whole blocks of columns four at a time in shorter chunks, ``_blocks``, 37 rows of
it, 6*6 + 1, over 37 blocks of 16 inputs, nine groups of four and one, before the narrow block).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.build import cpu_flags
from symnn.driver import derive_program
from symnn.backends.c.emit import emit_c

# the blocked products' edge tiles on the build users get (-O3; the suite builds others at -O1:
# tests/conftest.py)
pytestmark = [pytest.mark.needs_cc, pytest.mark.native_build]

CC = shutil.which("gcc") or shutil.which("cc") or "cc"
#: 8, 14 and 32 leave 2 rows after 6-row tiles, which then stop early for two 4-row ones
BATCHES = [1, 2, 3, 5, 6, 7, 8, 10, 11, 13, 14, 32, 64, 600]


def _net() -> sn.Network:
    return sn.Network([sn.Dense(600, 37, "tanh"), sn.Dense(37, 10, "softmax")], loss="cross_entropy",
                      name="edges")


def _data(n: int, dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed + n)
    X = rng.normal(size=(n, 600)).astype(dtype)
    Y = np.eye(10, dtype=dtype)[rng.integers(0, 10, n)]
    return X, Y


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-13), ("float32", 2e-6)])
def test_every_tile_edge_agrees_with_numpy(dtype: str, rtol: float) -> None:
    net = _net()
    kc = sn.compile(net, backend="c", dtype=dtype)
    kn = sn.compile(net, backend="numpy", dtype=dtype)
    p = {k: v.astype(dtype) for k, v in net.init_params(seed=1).items()}
    for n in BATCHES:
        X, Y = _data(n, dtype)
        lc, gc = kc.loss_and_grad(p, X, Y)
        ln, gn = kn.loss_and_grad(p, X, Y)
        assert abs(lc - ln) <= rtol * abs(ln), n
        for name in gn:
            err = np.linalg.norm(gc[name] - gn[name]) / np.linalg.norm(gn[name])
            assert err <= rtol, (n, name, err)
        np.testing.assert_allclose(kc.forward(p, X), kn.forward(p, X), rtol=rtol * 10, atol=rtol)


_MAIN = r"""#include <stdio.h>
#include <stdlib.h>
#include "edges.h"
int main(void) {
    static const ptrdiff_t batches[] = {1, 5, 7, 13, 600};
    for (int b = 0; b < 5; ++b) {
        const ptrdiff_t n = batches[b];
        size_t wl = 0;
        edges_real *p = malloc(EDGES_N_PARAMS*sizeof *p), *g = malloc(EDGES_N_PARAMS*sizeof *g);
        edges_real *x = malloc((size_t)n*EDGES_N_IN*sizeof *x), *y = calloc((size_t)n*10, sizeof *y), loss = 0, *w;
        if (edges_work_size(n, &wl) != SYMNN_OK) return 3;
        w = malloc(wl*sizeof *w);
        if (!p || !g || !x || !y || !w) return 4;
        for (ptrdiff_t e = 0; e < EDGES_N_PARAMS; ++e) p[e] = (edges_real)((e*7919 % 1000) - 500)/5000;
        for (ptrdiff_t e = 0; e < n*EDGES_N_IN; ++e) x[e] = (edges_real)((e*104729 % 2001) - 1000)/1000;
        for (ptrdiff_t i = 0; i < n; ++i) y[i*10 + i % 10] = 1;
        if (edges_loss_and_grad(p, x, y, n, &loss, g, w, wl) != SYMNN_OK) return 5;
        printf("%a\n", (double)loss);
        for (ptrdiff_t e = 0; e < EDGES_N_PARAMS; ++e) printf("%a\n", (double)g[e]);
        free(p); free(g); free(x); free(y); free(w);
    }
    return 0;
}
"""


def _same_bits(tmp_path: Path, dtype: str, flags: list[str], variant: str, cpu_needs: set[str], why: str) -> None:
    """The edge cases' losses and gradients (main.c above, printed exactly) from two builds of the
    emitted C with ``flags``, one also with ``variant``, run where this CPU has ``cpu_needs``
    (else skipped with ``why`` once both are built): every value the same bits."""
    r = emit_c(_net(), derive_program(_net()).program, dtype)
    for fname, text in r.files.items():
        (tmp_path / fname).write_text(text)
    (tmp_path / "main.c").write_text(_MAIN)
    outputs = []
    for extra in ([], [variant]):
        exe = tmp_path / f"edges{len(extra)}"
        build = subprocess.run([CC, "-std=c99", "-O3", *flags, *extra, "-o", str(exe),
                                str(tmp_path / "main.c"), str(tmp_path / "edges.c"), "-lm"],
                               capture_output=True, text=True, timeout=300)
        assert build.returncode == 0, build.stderr
        if not cpu_needs <= set(cpu_flags().split()):
            pytest.skip(why)
        ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stderr
        outputs.append(ran.stdout)
    one, other = (out.splitlines() for out in outputs)
    assert len(one) == len(other) == 5 * (1 + 600 * 37 + 37 + 37 * 10 + 10)
    differ = [i for i, (a, b) in enumerate(zip(one, other)) if a != b]  # (no diff of 113,090 lines)
    assert not differ, f"{len(differ)} values differ, first at line {differ[0]}: {one[differ[0]]} vs {other[differ[0]]}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_six_and_four_row_tiles_give_identical_bits(tmp_path: Path, dtype: str) -> None:
    """Each element sums over k in order whatever tile computes it: the tile never shows."""
    _same_bits(tmp_path, dtype, ["-mavx512f", "-mfma"], "-DSYMNN_GEMM_ROWS4", {"avx512f"},
               "built, but this CPU has no AVX-512 to run the 6-row tiles")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="AVX2 is an x86 extension")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_avx2_two_row_tiles_give_the_bits_of_the_four_row_arrays(tmp_path: Path, dtype: str) -> None:
    """Where GCC targets AVX2 without AVX-512 (-march=x86-64-v3, which every x86 machine of the
    fleet runs), full-width rows go in 2-row tiles of 32-byte vectors (__TILE32); without them
    (-DSYMNN_GEMM_NO_TILE32), in the 4-row arrays. Each element sums over k in order either way:
    the same bits, at every batch of the edge cases."""
    _same_bits(tmp_path, dtype, ["-march=x86-64-v3"], "-DSYMNN_GEMM_NO_TILE32", {"avx2", "fma"},
               "built, but this CPU has no AVX2 and FMA to run them")
    assert "__TILE32 1" in (tmp_path / "edges.c").read_text()


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-13), ("float32", 2e-6)])
def test_narrow_products_through_their_transpose(dtype: str, rtol: float) -> None:
    """C with fewer columns than a tile (5 classes; float32's 20 hidden units; dW1's 7 inputs)
    is computed as C.T once the batch fills a tile of rows: the same sums in the same order,
    so a row of the forward pass has the same bits at any batch, on either side of the switch."""
    net = sn.Network([sn.Dense(7, 20, "tanh"), sn.Dense(20, 5, "softmax")], loss="cross_entropy", name="narrow")
    kc = sn.compile(net, backend="c", dtype=dtype)
    kn = sn.compile(net, backend="numpy", dtype=dtype)
    p = {k: v.astype(dtype) for k, v in net.init_params(seed=2).items()}
    rng = np.random.default_rng(3)
    X = rng.normal(size=(70, 7)).astype(dtype)
    Y = np.eye(5, dtype=dtype)[rng.integers(0, 5, 70)]
    full = kc.forward(p, X)  # 70 rows: C.T, in full tiles and a narrow one
    for n in (1, 5, 15, 31, 33):  # below and above a tile of 16 (float64) or 32 (float32) rows
        assert np.array_equal(kc.forward(p, X[:n]), full[:n]), n
    for n in (15, 16, 17, 33, 70):
        lc, gc = kc.loss_and_grad(p, X[:n], Y[:n])
        ln, gn = kn.loss_and_grad(p, X[:n], Y[:n])
        assert abs(lc - ln) <= rtol * abs(ln), n
        for name in gn:
            err = np.linalg.norm(gc[name] - gn[name]) / np.linalg.norm(gn[name])
            assert err <= rtol, (n, name, err)
