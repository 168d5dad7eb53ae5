"""The public call's fast path on the C backend: ``Kernel.forward/loss/loss_and_grad/train_step``
on buffers already in the kernel's layout, at a few hundred nanoseconds over the C kernel itself
(issue 21: at most 1.5 µs on xor, every check kept).

A call here costs only Python's own work, so the entries are closures over everything a call
reads (the module's cffi functions, dtype, sizes, the layout), built once per kernel: a
closure's free variables are read as fast as locals, where ``self.x`` is a dictionary lookup,
and one frame fewer per call is some 60 ns. What they test in Python is only what costs an
attribute test (an array's type, dtype, shape; C order, by the buffer protocol, which refuses an
array that is not C-contiguous); everything that reads data (finiteness, target values, label
ranges, alignment) runs in C in the same call as the kernel (``templates/c/_pycheck.c.jinja``).
An entry answers None where a call does not clearly pass, and :class:`~symnn.kernel.Kernel`
then takes the checked path, which raises the precise error or computes (a kernel that refused
wrote nothing, so running the call again there is safe).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from ...flat import FlatParams, Layout

if TYPE_CHECKING:
    from .wrapper import CKernelModule

_OK = 0  # SYMNN_OK

#: the largest array whose pointer a kernel keeps between calls (and so keeps alive)
HOLD_BYTES = 1 << 20


def _holdable(arr: np.ndarray) -> bool:
    """Whether a kernel may keep its pointer to ``arr`` for the next call.

    A loop that calls a kernel again and again on the same arrays (full-batch training, the
    parameters and optimiser state of every train step) pays the buffer protocol's some 200 ns
    an array only once: the pointers from the last call are used again while the arrays are
    the same objects, still C-contiguous (and writeable, where the kernel writes). That cannot
    go stale: the kernel holds the array, so its memory lives, and a weak reference to it, so
    its memory cannot move: NumPy refuses to resize an array that has one, even with
    ``refcheck=False``, and resizing is the one way an array's memory moves (dtype and shape are
    tested at every call). The one exception is ``ndarray.__setstate__``, pickle's internal,
    which NumPy lets replace an array's memory under any buffer exported from it (a memoryview
    of it dangles alike): called by hand on an array a kernel was given, it is unsafe. What is held is bounded: only arrays that own their memory (a view
    would keep its base alive, a whole data set behind one batch) of at most
    :data:`HOLD_BYTES`, the last of each kind, and only there does the saving matter."""
    return arr.base is None and arr.nbytes <= HOLD_BYTES


@dataclass(frozen=True)
class FastCalls:
    """One kernel's fast entries; each answers None where the checked path must decide.

    ``forward(params, X, check) -> out``; ``loss(params, X, Y, grads, check) -> loss`` (the
    gradient written into ``grads``, a FlatParams of the layout, when it is not None);
    ``train_step(theta, state, X, Y, step, seed, check) -> loss`` (always None where the kernel
    has no train step)."""

    forward: Callable[..., "np.ndarray | None"]
    loss: Callable[..., "float | None"]
    train_step: Callable[..., "float | None"]


def fast_calls(m: "CKernelModule", layout: Layout) -> FastCalls:
    """The fast entries of the built module ``m`` for parameters in ``layout``."""
    ndarray = np.ndarray
    dtype, n_in, n_out, sample = m.dtype, m.n_in, m.n_out, m.sample_shape
    # sequences of a length given at each call: X's row a*steps + b, the output's c*steps + d
    length = m.length
    # a sequence output's labels (n, T), one per step: T = a*steps + b (else (n,) labels)
    (step_a, step_b), step_labels = m.label_rows, m.label_rows != (0, 1)
    (in_step, in_fixed), (out_step, out_fixed) = length if length is not None else ((0, 0), (0, 0))
    # cffi types, not their names: a name is parsed (looked up) at every call
    from_buffer, null = m.ffi.from_buffer, m.ffi.NULL
    array_type, bytes_type = m.ffi.typeof(f"{m.ctype}[]"), m.ffi.typeof("char[]")
    codes = m.label_codes
    run, train = m.py_run, m.py_train
    key, wkey = m.handle_key, m.writable_key
    params_ptr, out_ptr, scratch = m.params_ptr, m.out_ptr, m.scratch
    tls = m.tls
    theta_shape, state_shape, has_state = (m.n_params,), (m.n_state or 0, m.n_params), bool(m.n_state)
    # the last arrays called with, and the pointers to them (see _holdable): (X, Y, X pointer,
    # Y pointer, weak references) and (theta, state, their pointers, weak references)
    seen: list = [None]
    updated: list = [None]

    def inputs(X: object, Y: object) -> tuple | None:
        """``(n, X pointer, Y pointer, labels code, steps)`` for an (n, n_in) X of the kernel's
        dtype (or (n, C, H, W) for one image input, whose C-ordered memory is the same rows; or
        rows of sequences of any length ``steps`` where the network's length is given at each
        call, else steps 0) and targets of that dtype (n, n_out) or int32/int64 labels (n,) of a
        labels kernel (Y None: no targets)."""
        if type(X) is not ndarray or X.dtype is not dtype:
            return None
        shape = X.shape
        if length is None:
            if (len(shape) != 2 or shape[1] != n_in) and shape[1:] != sample:
                return None
            steps, width = 0, n_out
        else:
            if len(shape) == 3 and sample is not None and shape[2:] == sample[1:] and shape[1] > 0:
                steps = shape[1]  # one sequence input (n, T, F): its C-ordered memory is the rows
            elif len(shape) != 2 or shape[1] < in_step + in_fixed or (shape[1] - in_fixed) % in_step:
                return None
            else:
                steps = (shape[1] - in_fixed) // in_step
            width = out_step * steps + out_fixed
        n = shape[0]
        if Y is None:
            code = 0
        elif type(Y) is not ndarray:
            return None
        elif Y.dtype is dtype:
            if Y.shape != (n, width):
                return None
            code = 0
        else:
            code = codes.get(Y.dtype)
            if not code or Y.shape != ((n,) if not step_labels else (n, step_a * steps + step_b)):
                return None
        held = seen[0]
        if held is not None and held[0] is X and held[1] is Y:
            if X.flags.c_contiguous and (Y is None or Y.flags.c_contiguous):
                return n, held[2], held[3], code, steps
            return None
        try:  # the buffer protocol refuses an array that is not C-contiguous (ValueError)
            px = from_buffer(array_type, X)
            py = null if Y is None else from_buffer(bytes_type, Y)
        except (BufferError, ValueError):
            return None
        if _holdable(X) and (Y is None or _holdable(Y)):
            seen[0] = (X, Y, px, py, weakref.ref(X), None if Y is None else weakref.ref(Y))
        return n, px, py, code, steps

    def forward(params: object, X: object, check: bool) -> np.ndarray | None:
        ready = inputs(X, None)
        if ready is None:
            return None
        # a FlatParams' pointer is made once per object (its buffer never moves)
        pp = params._handles.get(key) if type(params) is FlatParams and params.layout is layout else None
        if pp is None and (pp := params_ptr(params, layout)) is None:
            return None
        n, steps = ready[0], ready[4]
        out = np.empty((n, out_step * steps + out_fixed if steps else n_out), dtype=dtype)
        s = getattr(tls, "s", None)
        if s is None or s[3] < n or s[5] < steps:
            s = scratch(n, steps)
        status = run(0, check, pp, ready[1], null, 0, null, n, steps, s[0], from_buffer(array_type, out), s[1], s[2])
        return out if status == _OK else None

    def loss(params: object, X: object, Y: object, grads: FlatParams | None, check: bool) -> float | None:
        ready = inputs(X, Y)
        if ready is None:
            return None
        pp = params._handles.get(key) if type(params) is FlatParams and params.layout is layout else None
        if pp is None and (pp := params_ptr(params, layout)) is None:
            return None
        if grads is None:
            kernel, pg = 1, null
        else:
            kernel, pg = 2, grads._handles.get(wkey)
            if pg is None and (pg := out_ptr(grads)) is None:
                return None  # a read-only out=: the checked path refuses it
        n, steps = ready[0], ready[4]
        s = getattr(tls, "s", None)
        if s is None or s[3] < n or s[5] < steps:
            s = scratch(n, steps)
        status = run(kernel, check, pp, ready[1], ready[2], ready[3], s[4], n, steps, s[0], pg, s[1], s[2])
        return s[0][0] if status == _OK else None

    def train_step(theta: object, state: object, X: object, Y: object, step: int, seed: int,
                   check: bool) -> float | None:
        """In place on ``theta`` and ``state``; the C kernel refuses overlapping buffers itself
        (SYMNN_ERR_ALIAS: the checked path then raises the DataError it always raised).
        Its arrays' pointers are kept from the last call as X's and Y's are (:func:`_holdable`),
        and used again while they are still writeable."""
        if (type(theta) is not ndarray or type(state) is not ndarray or theta.dtype is not dtype
                or state.dtype is not dtype or theta.shape != theta_shape or state.shape != state_shape):
            return None
        ready = inputs(X, Y)
        if ready is None:
            return None
        held = updated[0]
        if held is not None and held[0] is theta and held[1] is state:
            ft, fs = theta.flags, state.flags
            if not (ft.writeable and fs.writeable and ft.c_contiguous and fs.c_contiguous):
                return None
            pt, ps = held[2], held[3]
        else:
            try:  # read-only: BufferError (the checked path names which array)
                pt = from_buffer(array_type, theta, True)
                ps = from_buffer(array_type, state, True) if has_state else null
            except (BufferError, ValueError):
                return None
            if _holdable(theta) and _holdable(state):
                updated[0] = (theta, state, pt, ps, weakref.ref(theta), weakref.ref(state))
        n, steps = ready[0], ready[4]
        s = getattr(tls, "s", None)
        if s is None or s[3] < n or s[5] < steps:
            s = scratch(n, steps)
        status = train(check, pt, ps, ready[1], ready[2], ready[3], s[4], n, steps, step, seed, s[0], s[1], s[2])
        return s[0][0] if status == _OK else None

    def no_train_step(*args: object) -> None:
        return None  # a kernel built without an optimiser: the checked path says so

    return FastCalls(forward, loss, train_step if train is not None else no_train_step)


__all__ = ["FastCalls", "fast_calls"]
