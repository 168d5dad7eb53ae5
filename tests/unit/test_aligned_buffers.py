"""The buffers symnn allocates for the C kernels start on a 64-byte boundary (symnn.flat.ALIGN):
NumPy's allocations of a few hundred kB and more start 16 bytes past a page, where every 64-byte
load of the emitted loops straddles two cache lines. What is pinned here is the property (each
buffer's address), never a speed."""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.flat import ALIGN, aligned_empty


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
@pytest.mark.parametrize("count", [1, 7, 1000, 100_003])  # beyond glibc's mmap threshold too
def test_aligned_empty_is_an_aligned_contiguous_writable_vector(dtype: str, count: int) -> None:
    a = aligned_empty(count, dtype)
    assert a.shape == (count,) and a.dtype == np.dtype(dtype)
    assert a.ctypes.data % ALIGN == 0
    assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
    a[:] = 1
    assert a.sum() == count


def test_the_c_kernels_buffers_are_aligned() -> None:
    """The work buffer a call takes (a thread's, grown with the batch), the parameters and
    gradients of ``new_params`` and the gradients a call allocates."""
    x = sn.Input(1, 8, 8)
    h = sn.Conv2d(1, 4, 3, padding=1, activation="relu")(x)
    net = sn.Network(inputs=x, outputs=sn.Dense(256, 3, "softmax")(sn.Flatten()(h)), loss="cross_entropy")
    k = sn.compile(net, backend="c")
    p, g = k.new_params(), k.new_params()
    assert p.flat.ctypes.data % ALIGN == 0 and g.flat.ctypes.data % ALIGN == 0
    rng = np.random.default_rng(0)
    for n in (3, 500):  # the second grows the work past the mmap threshold
        X, labels = rng.normal(size=(n, 1, 8, 8)), rng.integers(0, 3, size=n)
        k.loss_and_grad(p, X, labels, out=g)
        work = k.module.tls.s[1]
        assert int(k.module.ffi.cast("uintptr_t", work)) % ALIGN == 0
        _, grads = k.loss_and_grad(p, X, labels)
        assert grads.flat.ctypes.data % ALIGN == 0
