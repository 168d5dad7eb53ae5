"""Parameters held as named views into one flat vector: what makes a kernel call cost no copy.

The C API takes every parameter as one flat vector (``W1, b1, W2, ...``, each row-major); the
Python API takes a dict keyed by name. :class:`FlatParams` is both at once: a ``dict`` whose
values are views into one flat buffer of a kernel's layout and dtype. A kernel given one (or
given one as ``out=``) passes the buffer straight to the emitted code, with no per-parameter
validation and no packing; ``train_step`` updating ``theta`` in place updates the views of
``kernel.unpack(theta)`` with it.

It cannot go stale: the views are made once from a private view of the buffer, item assignment
copies *into* a view (``params["W1"] = w`` writes w's values, shape-checked) instead of
replacing it, and entries cannot be removed. What a kernel trusts about a ``FlatParams`` is only
its layout (names, shapes, dtype: fixed when it is made); the values are read, and checked for
finiteness, at every call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import ShapeError


#: where a kernel's buffers start: a cache line, and one AVX-512 register. NumPy's own
#: allocations of a few hundred kB and more start 16 bytes past a page (glibc's mmap'd chunks),
#: so every 64-byte load and store of the emitted loops over them straddled two cache lines:
#: cnn-digits' loss_and_grad ran 10 % slower in float64 and 5 % in float32 on such a work
#: buffer (a 64-byte aligned one beside it, the same process; Xeon family 6 model 167)
ALIGN = 64


def aligned_empty(count: int, dtype: object) -> np.ndarray:
    """An uninitialised C-contiguous vector of ``count`` entries of ``dtype`` whose first entry
    lies on an :data:`ALIGN`-byte boundary: a view into a buffer at most ``ALIGN`` bytes larger."""
    dtype = np.dtype(dtype)
    raw = np.empty(count * dtype.itemsize + ALIGN, dtype=np.uint8)
    skip = -raw.ctypes.data % ALIGN
    return raw[skip:skip + count * dtype.itemsize].view(dtype)


@dataclass(frozen=True, eq=False)
class Layout:
    """Where each parameter sits in the flat vector, for one network and dtype. Kernels of one
    network and dtype share one object (:func:`layout_of`), so a kernel recognises a
    ``FlatParams`` of its layout by identity."""

    entries: tuple[tuple[str, int, int, tuple[int, ...]], ...]
    dtype: np.dtype
    size: int


@functools.lru_cache(maxsize=256)
def layout_of(entries: tuple[tuple[str, int, int, tuple[int, ...]], ...], dtype: str) -> Layout:
    """The one :class:`Layout` object of ``entries`` in ``dtype`` (cached: kernels compiled for
    one network and dtype get the same object)."""
    return Layout(entries, np.dtype(dtype), entries[-1][2] if entries else 0)


class FlatParams(dict):
    """A dict of parameter views into one flat buffer (see the module docstring).

    ``flat`` is the buffer (1-D, the kernel's dtype, C order): pass it to ``train_step`` as
    ``theta`` or to the C API as ``params``."""

    __slots__ = ("layout", "_flat", "_handles")

    def __init__(self, flat: np.ndarray, layout: Layout) -> None:
        if not (isinstance(flat, np.ndarray) and flat.dtype == layout.dtype and flat.dtype.isnative
                and flat.shape == (layout.size,) and flat.flags.c_contiguous and flat.flags.aligned):
            raise ShapeError(f"a flat parameter buffer must be a C-contiguous {layout.dtype} vector of "
                             f"{layout.size} entries")
        mine = flat.view()  # private: its shape and dtype are ours, whatever is done to `flat`
        super().__init__((name, mine[lo:hi].reshape(shape)) for name, lo, hi, shape in layout.entries)
        self.layout = layout
        self._flat = mine
        #: what a backend made of the buffer once (a cffi pointer), keyed by the backend module
        self._handles: dict[int, Any] = {}

    @property
    def flat(self) -> np.ndarray:
        """The flat buffer (a view of the one the views share)."""
        return self._flat.view()

    def handle(self, key: int, make) -> Any:
        """``make(buffer)`` once per ``key`` (a backend's pointer to the buffer), then cached:
        the buffer never moves, so a pointer to it stays valid as long as this object lives."""
        found = self._handles.get(key)
        if found is None:
            found = self._handles[key] = make(self._flat)
        return found

    # -- a dict whose values stay views of the buffer -----------------------------------------
    def __setitem__(self, name: str, value: object) -> None:
        view = self.get(name)
        if view is None:
            raise KeyError(f"{name!r} is not a parameter of this layout: {list(self)}")
        arr = np.asarray(value)
        if arr.shape != view.shape:
            raise ShapeError(f"expected {name} of shape {view.shape}, got {arr.shape}")
        view[...] = arr

    def update(self, other: Iterable | Mapping = (), **kw: object) -> None:  # type: ignore[override]
        items = other.items() if isinstance(other, Mapping) else other
        for name, value in [*items, *kw.items()]:
            self[name] = value

    def _refuse(self, *args: object, **kw: object) -> None:
        raise TypeError("a FlatParams keeps every parameter: assign values (params[name] = w) instead")

    __delitem__ = pop = popitem = clear = setdefault = _refuse  # type: ignore[assignment]

    def __reduce__(self):
        """Pickled as a plain dict of arrays (a copy): a buffer is not shared across processes."""
        return (dict, ({k: v.copy() for k, v in self.items()},))

    def __repr__(self) -> str:
        return f"FlatParams({dict.__repr__(self)})"


__all__ = ["FlatParams", "Layout", "layout_of"]
