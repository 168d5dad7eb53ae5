"""``symnn.kernel.all_finite``, the finiteness check every kernel call runs over parameters and
data: one dot product of the entries with themselves, ``isfinite`` where that overflows. Its
answer must be ``np.isfinite(a).all()``'s for every array, with warnings as errors or not."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from symnn.kernel import all_finite

DTYPES = [np.float64, np.float32]


def _arrays(dtype) -> list[np.ndarray]:
    """Finite and non-finite arrays of several sizes (BLAS kernels take another path for short
    vectors and for tails), a bad entry first, last and in the middle, finite entries whose
    squares overflow, views that are not contiguous, and no entries at all."""
    rng = np.random.default_rng(0)
    big = np.finfo(dtype).max
    out = [np.zeros(0, dtype), np.zeros((3, 0), dtype)]
    for n in (1, 2, 7, 16, 33, 1000, 4099):
        a = rng.normal(size=n).astype(dtype)
        out.append(a)
        for bad in (np.nan, np.inf, -np.inf):
            for at in {0, n // 2, n - 1}:
                b = a.copy()
                b[at] = bad
                out.append(b)
        huge = a.copy()
        huge[n // 2] = big  # finite, its square is not
        out.append(huge)
        out.append(np.full(n, np.sqrt(big), dtype))  # each square finite, their sum not (n > 1)
        out.append(np.full(n, -big, dtype))
    m = rng.normal(size=(8, 6)).astype(dtype)
    m[5, 1] = np.nan
    out += [m, m[:, ::2], m[:, 2:], m.T, m[:4]]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("strict", [False, True], ids=["warnings", "W-error"])
def test_all_finite_agrees_with_isfinite(dtype, strict: bool) -> None:
    for a in _arrays(dtype):
        want = bool(np.isfinite(a).all())
        with warnings.catch_warnings():
            warnings.simplefilter("error" if strict else "ignore")
            assert all_finite(a) is want, (a.shape, a.strides, a[:4])


def test_all_finite_reads_other_dtypes_with_isfinite() -> None:
    assert all_finite(np.array([1.0, 2.0], np.float16))
    assert not all_finite(np.array([1.0, np.inf], np.float16))
    assert all_finite(np.arange(5))
