"""The quick value checks that run on every kernel call (``all_finite``, ``unit_interval``,
``simplex_rows``) decide exactly what the elementwise definitions decide: their shortcuts (a
sum, the bits of 1.0, a product with ones) may only send a case to the slow test, never pass a
bad array or refuse a good one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from symnn.capabilities import ROW_SUM_TOLERANCE, simplex_rows, unit_interval
from symnn.kernel import all_finite

DTYPES = [np.float64, np.float32]
SPECIAL = [0.0, -0.0, 1.0, 0.5, np.nextafter(1.0, 2.0), -np.nextafter(0.0, 1.0), np.nan, np.inf, -np.inf]


def _unit_reference(a: np.ndarray) -> bool:
    return bool(((a >= 0) & (a <= 1)).all())


def _simplex_reference(a: np.ndarray) -> bool:
    return _unit_reference(a) and bool((np.abs(a.astype(np.float64).sum(axis=1) - 1.0) <= ROW_SUM_TOLERANCE).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", SPECIAL)
def test_one_special_value_decides_like_the_definition(dtype, value) -> None:
    a = np.full((3, 4), 0.25, dtype=dtype)
    a[1, 2] = dtype(value)
    assert unit_interval(a) == _unit_reference(a)
    assert all_finite(a) == bool(np.isfinite(a).all())
    assert simplex_rows(a) == _simplex_reference(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.filterwarnings("error")
def test_finite_values_whose_sum_overflows_are_finite(dtype) -> None:
    """Decided without a warning: under ``-W error`` a RuntimeWarning would replace the answer."""
    big = np.full(8, np.finfo(dtype).max, dtype=dtype)
    assert all_finite(big) and unit_interval(big) is False and simplex_rows(big) is False
    mixed = np.array([[np.inf, -np.inf]], dtype=dtype)
    assert not all_finite(mixed) and not unit_interval(mixed) and not simplex_rows(mixed)


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_zero_rows_are_class_rows(dtype) -> None:
    """-0.0 has its sign bit set, so the bits shortcut cannot place it: the comparisons do."""
    a = np.array([[1.0, -0.0], [-0.0, 1.0]], dtype=dtype)
    assert unit_interval(a) and simplex_rows(a)


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_and_other_dtypes(dtype) -> None:
    a = np.eye(5, dtype=dtype)[:, ::2]  # non-contiguous: rows of 3 from one-hot rows of 5
    assert unit_interval(a) and simplex_rows(a) == _simplex_reference(a)
    b = np.eye(4, dtype=np.float16)
    assert unit_interval(b) and simplex_rows(b)
    assert not simplex_rows(np.array([[0.5, 0.25]], dtype=dtype))
    assert unit_interval(np.empty((0, 3), dtype=dtype)) and simplex_rows(np.empty((0, 3), dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_arrays_decide_like_the_definition(dtype, data) -> None:
    elements = st.one_of(st.sampled_from([0.0, 1.0, -0.0, 0.5]),
                         st.floats(allow_nan=True, allow_infinity=True, width=32 if dtype is np.float32 else 64))
    a = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6), elements=elements))
    with np.errstate(all="ignore"):
        assert unit_interval(a) == _unit_reference(a)
        assert all_finite(a) == bool(np.isfinite(a).all())
        assert simplex_rows(a) == _simplex_reference(a)
