"""Python face of a built C module: the ``_forward/_loss/_loss_and_grad`` that
:class:`~symnn.kernel.Kernel` calls after its own validation.

cffi's ``from_buffer`` reinterprets whatever bytes it is given (float32, int64 and
big-endian arrays all pass as ``double[]``), so every array is checked here for the exact
native dtype, C order and alignment before its address reaches C; a failing array is copied,
never reinterpreted (RELIABILITY.md C6/C7). Every call allocates its own outputs and work
buffer and cffi releases the GIL during the call, so threads can share one kernel (K4).
"""

from __future__ import annotations

import functools
import threading
import types
from typing import Mapping

import numpy as np

from ...errors import (DataError, EmptyBatchError, IndexRangeError, KernelStatusError, LabelRangeError,
                       NonFiniteError, ShapeError)
from ...flat import FlatParams, aligned_empty
from ...status import Status
from .fast import FastCalls, fast_calls

#: status -> error; SYMNN_ERR_ALIAS is the DataError that Kernel.train_step raises for both backends
_STATUS_ERRORS = {Status.ERR_SIZE: ShapeError, Status.ERR_EMPTY: EmptyBatchError, Status.ERR_LABEL: LabelRangeError,
                  Status.ERR_ALIAS: DataError, Status.ERR_NONFINITE: NonFiniteError,
                  Status.ERR_INDEX: IndexRangeError}


#: integer labels the checking entries take: int32 as they are, int64 range-checked into int32
_LABEL_CODES = {np.dtype(np.int32): 1, np.dtype(np.int64): 2}


class CKernelModule:
    """Calls one compiled model's C API with NumPy arrays."""

    #: the integer labels the C kernels take as they are (others are range-checked and converted per call)
    label_dtype = np.dtype(np.int32)

    def __init__(self, module: types.ModuleType, prefix: str, dtype: str,
                 layout: list[tuple[str, int, int, tuple[int, ...]]], labels: bool,
                 n_state: int | None = None, dropout: bool = False,
                 sample_shape: tuple[int, ...] | None = None, label_rows: tuple[int, int] = (0, 1)) -> None:
        self.ffi, self.lib = module.ffi, module.lib
        origin = getattr(module, "__file__", None)
        self.source_path = str(__import__("pathlib").Path(origin).with_name(f"{prefix}.c")) if origin else None
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self.ctype = f"{prefix}_real"
        self.labels = labels
        #: the labels of a row, a*steps + b: 1, or a sequence output's one per step (N, T)
        self.label_rows = label_rows
        self.n_params = int(getattr(self.lib, f"{prefix.upper()}_N_PARAMS"))
        macro = functools.partial(getattr, self.lib)
        P = prefix.upper()
        #: a network of run-time sequence length (``sn.Input(None, F)``): its kernels take the
        #: length ``steps`` after n, X's row is N_IN_PER_STEP*steps + N_IN_FIXED (else None)
        self.length = ((int(macro(f"{P}_N_IN_PER_STEP")), int(macro(f"{P}_N_IN_FIXED"))),
                       (int(macro(f"{P}_N_OUT_PER_STEP")), int(macro(f"{P}_N_OUT_FIXED")))) \
            if hasattr(self.lib, f"{P}_N_IN_PER_STEP") else None
        self.n_out = int(macro(f"{P}_N_OUT")) if self.length is None else None
        self._per_step = int(macro(f"{P}_WORK_PER_ROW_STEP")) if self.length is not None else 0
        self._per_row = int(getattr(self.lib, f"{prefix.upper()}_WORK_PER_ROW"))
        self._fixed = int(getattr(self.lib, f"{prefix.upper()}_WORK_FIXED"))
        self._work_size = getattr(self.lib, f"{prefix}_work_size")
        self._fn = {name: getattr(self.lib, f"{prefix}_{name}")
                    for name in ("forward", "loss", "loss_and_grad")}
        if labels:
            self._fn["loss_labels"] = getattr(self.lib, f"{prefix}_loss_labels")
            self._fn["loss_and_grad_labels"] = getattr(self.lib, f"{prefix}_loss_and_grad_labels")
        self.n_state = n_state
        self.dropout = dropout
        if n_state is not None:
            self._fn["train_step"] = getattr(self.lib, f"{prefix}_train_step")
            self._fn["train_gradient"] = getattr(self.lib, f"{prefix}_train_gradient")
            self._fn["apply_gradient"] = getattr(self.lib, f"{prefix}_apply_gradient")
            if labels:
                self._fn["train_step_labels"] = getattr(self.lib, f"{prefix}_train_step_labels")
                self._fn["train_gradient_labels"] = getattr(self.lib, f"{prefix}_train_gradient_labels")
        self._layout = layout
        self.n_in = int(macro(f"{P}_N_IN")) if self.length is None else None
        #: one image input's sample shape (C, H, W): the fast path also takes X as (n, C, H, W),
        #: whose C-ordered memory is the (n, C*H*W) rows the kernels read
        self.sample_shape = tuple(sample_shape) if sample_shape is not None and len(sample_shape) > 1 else None
        # the checking entries (absent from a build of the emitted files alone: then every call
        # takes the checked path)
        self.py_run = getattr(self.lib, f"{prefix}__py_run", None)
        self.py_train = getattr(self.lib, f"{prefix}__py_train_step", None)
        self._array_type = f"{self.ctype}[]"
        #: per thread: the scratch of :meth:`scratch`
        self.tls = threading.local()
        #: the key of this module's pointer to a FlatParams' buffer (FlatParams.handle), and of a
        #: writable one (an out= gradient)
        self.handle_key = id(self)
        self.writable_key = -id(self)
        self._from_buffer = self.ffi.from_buffer
        #: the integer label dtypes the fast entries take, with the code py_run reads (none
        #: where the kernel takes no labels)
        self.label_codes = _LABEL_CODES if labels else {}

    # -- buffers -------------------------------------------------------------------------------
    def _ready(self, arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """``arr`` as native ``dtype``, C-contiguous and aligned; copied only if it is not."""
        if arr.dtype != dtype or not arr.dtype.isnative or not arr.flags.c_contiguous \
                or not arr.flags.aligned:
            arr = np.require(arr.astype(dtype.newbyteorder("="), copy=False), requirements="CA")
        return arr

    def _ptr(self, arr: np.ndarray, ctype: str):
        return self.ffi.from_buffer(f"{ctype}[]", arr)

    def pack(self, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """Parameters as one flat vector in the C layout (``<model>_param_offset``)."""
        flat = aligned_empty(self.n_params, self.dtype)
        for name, lo, hi, _ in self._layout:
            flat[lo:hi] = np.asarray(params[name], dtype=self.dtype).reshape(-1)
        return flat

    def unpack(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views of a flat vector as named parameter arrays (no copy)."""
        return {name: flat[lo:hi].reshape(shape) for name, lo, hi, shape in self._layout}

    def _steps(self, x: np.ndarray) -> list[int]:
        """The kernels' arguments after n for the rows ``x``: the sequences' length ``steps`` for
        a network of run-time length (X's row is a*steps + b), else none."""
        if self.length is None:
            return []
        a, b = self.length[0]
        return [(x.shape[1] - b) // a]

    def _n_out(self, steps: list[int]) -> int:
        if self.length is None:
            return self.n_out
        a, b = self.length[1]
        return a * steps[0] + b

    def _work(self, n: int, steps: list[int] = ()) -> np.ndarray:
        """The work buffer for ``n`` rows (of ``steps`` steps): the header's exact need
        (``work_size``), or its bound ``PER_ROW * n + FIXED`` for a batch the kernels refuse
        anyway (they say why); 64-byte aligned (:data:`symnn.flat.ALIGN`)."""
        length = self.ffi.new("size_t *")  # one per call: threads share the kernel
        if self._work_size(n, *steps, length) == Status.OK:
            return aligned_empty(max(int(length[0]), 1), self.dtype)
        t = steps[0] if steps else 0
        return aligned_empty(max(self._per_step * n * t + self._per_row * n + self._fixed, 1), self.dtype)

    def _check(self, status: int, kernel: str, bad_row=None) -> None:
        if status == Status.OK:
            return
        text = self.ffi.string(getattr(self.lib, f"{self.prefix}_status_string")(status)).decode()
        if status == Status.ERR_LABEL and bad_row is not None:
            text += f" (row {bad_row[0]})"
        if status == Status.ERR_NONFINITE and kernel.startswith(("train_step", "train_gradient", "apply_gradient")):
            text += ("; nothing was updated (a non-finite loss or gradient, or an update that would "
                     "overflow a parameter or the optimiser state)")
        raise _STATUS_ERRORS.get(status, KernelStatusError)(f"{self.prefix}_{kernel}: {text}")

    # -- kernels (inputs already validated by Kernel) --------------------------------------------
    def _forward(self, params: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
        p = self.pack(params)
        x = self._ready(X, self.dtype)
        n, steps = x.shape[0], self._steps(x)
        out = np.empty((n, self._n_out(steps)), dtype=self.dtype)
        work = self._work(n, steps)
        c = self.ctype
        status = self._fn["forward"](self._ptr(p, c), self._ptr(x, c), n, *steps, self._ptr(out, c),
                                     self._ptr(work, c), work.size)
        self._check(status, "forward")
        return out

    def _targets(self, Y: np.ndarray):
        if self.labels and Y.dtype.kind in "iu":  # labels (n,), or a sequence output's (n, T)
            return self._ready(Y, np.dtype(np.int32)), "int32_t", "_labels"
        return self._ready(Y, self.dtype), self.ctype, ""

    def _loss(self, params: Mapping[str, np.ndarray], X: np.ndarray, Y: np.ndarray) -> float:
        return self._call_loss(params, X, Y, with_grad=False)[0]

    def _loss_and_grad(self, params: Mapping[str, np.ndarray], X: np.ndarray,
                       Y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss, grad = self._call_loss(params, X, Y, with_grad=True)
        return loss, self.unpack(grad)

    # -- the fast path: buffers already in the kernel's layout (issue 21) -------------------------
    # Every check the Python API makes still runs: the ones that read data (finiteness, target
    # values, label ranges, alignment) in C, in the same call as the kernel
    # (templates/c/_pycheck.c.jinja); the ones on an array's type, dtype and shape as attribute
    # tests here; C order by the buffer protocol (cffi refuses a non-contiguous array). A call
    # that does not clearly pass (the entries answer -1, "unsure", or a kernel's error status)
    # answers None, and Kernel takes the checked path, which raises the precise error (or
    # computes, where the C check was only unsure).
    def scratch(self, n: int, steps: int = 0) -> tuple:
        """This thread's (loss pointer, work pointer, work length, rows, int32 labels, steps):
        grown, never shrunk, so a loop at one batch size (and sequence length ``steps``, where
        the network's length is given at each call; the work grows with both) allocates nothing;
        one per thread keeps kernels shareable."""
        s = getattr(self.tls, "s", None)
        if s is None or s[3] < n or s[5] < steps:
            rows = max(n, 2 * s[3]) if s is not None else n
            longest = max(steps, s[5]) if s is not None else steps
            work = self._work(rows, [longest] if self.length is not None else [])
            a, b = self.label_rows  # int32 room for a row's labels: 1, or one per step
            s = self.tls.s = (self.ffi.new(f"{self.ctype} *"), self.ffi.from_buffer(self._array_type, work),
                               work.size, rows, self.ffi.new("int32_t[]", max(rows * (a * longest + b), 1)), longest)
        return s

    def out_ptr(self, grad: FlatParams):
        """A writable pointer to ``grad``'s buffer (made once per object), or None where it is
        read-only: its private view's flag is fixed when the FlatParams is made."""
        try:
            return grad.handle(self.writable_key, self._from_writable)
        except (BufferError, ValueError):  # cffi: ValueError for a read-only buffer
            return None

    def params_ptr(self, params: object, layout):
        """A pointer to the parameters in the flat layout: a FlatParams of it as it is, a dict
        whose arrays all have the kernel's dtype and their shapes packed into a new buffer
        (values are not read here: the C check reads them); None for anything else."""
        if type(params) is FlatParams and params.layout is layout:
            return params.handle(self.handle_key, self._from_flat)
        if not isinstance(params, dict) or len(params) != len(self._layout):
            return None
        flat = np.empty(self.n_params, dtype=self.dtype)
        for name, lo, hi, shape in self._layout:
            arr = params.get(name)
            if type(arr) is not np.ndarray or arr.dtype is not self.dtype or arr.shape != shape:
                return None
            flat[lo:hi] = arr.reshape(-1)
        return self._from_flat(flat)

    def _from_flat(self, flat: np.ndarray):
        return self._from_buffer(self._array_type, flat)

    def _from_writable(self, flat: np.ndarray):
        return self._from_buffer(self._array_type, flat, True)

    def fast_calls(self, layout) -> FastCalls | None:
        """The public call's fast entries for parameters in ``layout`` (:mod:`.fast`), or None
        for a build of the emitted files alone (no checking entries: every call is checked in
        Python)."""
        return fast_calls(self, layout) if self.py_run is not None else None

    def raw_loss_and_grad(self, params: Mapping[str, np.ndarray], X: np.ndarray, Y: np.ndarray):
        """A zero-argument callable running the C loss-and-gradient on buffers prepared once
        (what an application embedding the C pays per call; for benchmarks). The cffi buffer
        objects keep the arrays alive; inputs must already be validated (``Kernel.params``/
        ``inputs``/``targets``)."""
        grad = aligned_empty(self.n_params, self.dtype)
        name, args, _, _ = self._call_args("loss_and_grad", [self._ptr(self.pack(params), self.ctype)],
                                           self._ready(X, self.dtype), Y, [], grad)
        # a partial, not a lambda: the call goes straight to cffi, one Python frame fewer
        # (xor float64: 366 -> 349 ns a call, against CasADi SX C's 363)
        return functools.partial(self._fn[name], *args)

    def raw_forward(self, params: Mapping[str, np.ndarray], X: np.ndarray):
        """A zero-argument callable running the C forward on buffers prepared once (the raw
        baseline of ``Kernel.forward``'s overhead, for benchmarks; inputs already validated)."""
        x = self._ready(X, self.dtype)
        steps = self._steps(x)
        flat, out = self.pack(params), np.empty((x.shape[0], self._n_out(steps)), dtype=self.dtype)
        work = self._work(x.shape[0], steps)
        c = self.ctype
        return functools.partial(self._fn["forward"], self._ptr(flat, c), self._ptr(x, c), x.shape[0], *steps,
                                 self._ptr(out, c), self._ptr(work, c), work.size)

    def raw_train_step(self, theta: np.ndarray, state: np.ndarray, X: np.ndarray, Y: np.ndarray, step: int = 1):
        """A zero-argument callable running the C train step in place on ``theta``/``state``
        (exact dtype, C order) on buffers prepared once, at a fixed ``step`` (seed 0): the raw
        baseline of ``Kernel.train_step``'s overhead, for benchmarks."""
        name, args, _, _ = self._call_args("train_step", self._train_head(theta, state), self._ready(X, self.dtype),
                                           Y, self._train_middle(step, 0))
        return functools.partial(self._fn[name], *args)

    def _call_args(self, kernel: str, head: list, x: np.ndarray, Y: np.ndarray, middle: list,
                   grad: np.ndarray | None = None) -> tuple:
        """``(function name, arguments, loss buffer, bad-row pointer or None)`` of ``kernel`` (or
        its ``_labels`` twin for integer labels), called as ``head, X, Y, n, middle, loss, [grad],
        [bad_row], work, work_len``; the cffi buffers keep the arrays alive."""
        y, y_ctype, suffix = self._targets(Y)
        n, c, steps = x.shape[0], self.ctype, self._steps(x)
        loss = np.empty(1, dtype=self.dtype)
        work = self._work(n, steps)
        args = [*head, self._ptr(x, c), self._ptr(y, y_ctype), n, *steps, *middle, self._ptr(loss, c)]
        if grad is not None:
            args.append(self._ptr(grad, c))
        bad_row = self.ffi.new("ptrdiff_t *") if suffix else None
        if bad_row is not None:
            args.append(bad_row)
        args += [self._ptr(work, c), work.size]
        return kernel + suffix, args, loss, bad_row

    def _run(self, kernel: str, head: list, x: np.ndarray, Y: np.ndarray, middle: list,
             grad: np.ndarray | None = None) -> float:
        """Call ``kernel`` (see :meth:`_call_args`); return the loss."""
        name, args, loss, bad_row = self._call_args(kernel, head, x, Y, middle, grad)
        self._check(self._fn[name](*args), name, bad_row)
        return float(loss[0])

    def _train_head(self, theta: np.ndarray, state: np.ndarray) -> list:
        return [self._ptr(theta, self.ctype)] + ([self._ptr(state, self.ctype)] if self.n_state else [])

    def _train_middle(self, step: int, seed: int) -> list:
        return [step] + ([seed] if self.dropout else [])

    def _call_loss(self, params, X, Y, with_grad: bool):
        grad = aligned_empty(self.n_params, self.dtype) if with_grad else None
        head = [self._ptr(self.pack(params), self.ctype)]
        loss = self._run("loss_and_grad" if with_grad else "loss", head, self._ready(X, self.dtype), Y, [], grad)
        return loss, grad

    def _train_step(self, theta: np.ndarray, state: np.ndarray, X: np.ndarray, Y: np.ndarray,
                    step: int, seed: int = 0) -> float:
        """In place on ``theta``/``state`` (exact dtype, C order: checked by Kernel.train_step)."""
        return self._run("train_step", self._train_head(theta, state), self._ready(X, self.dtype), Y,
                         self._train_middle(step, seed))

    def _train_gradient(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, step: int,
                        seed: int = 0) -> tuple[float, np.ndarray]:
        """The loss and flat gradient a train step takes (the training program); nothing updated."""
        grad = aligned_empty(self.n_params, self.dtype)
        loss = self._run("train_gradient", [self._ptr(self._ready(theta, self.dtype), self.ctype)],
                         self._ready(X, self.dtype), Y, self._train_middle(step, seed), grad)
        return loss, grad

    def _apply_gradient(self, theta: np.ndarray, state: np.ndarray, grad: np.ndarray, step: int,
                        loss: float | None = None) -> None:
        """The optimiser's update in place on ``theta``/``state`` from a flat gradient (not modified:
        the C entry clips a copy)."""
        g = np.array(grad, dtype=self.dtype, order="C")  # the C entry scales its argument in place
        self._check(self._fn["apply_gradient"](*self._train_head(theta, state), self._ptr(g, self.ctype), step),
                    "apply_gradient")
