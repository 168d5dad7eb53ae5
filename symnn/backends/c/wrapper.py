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
import types
from typing import Mapping

import numpy as np

from ...errors import DataError, EmptyBatchError, KernelStatusError, LabelRangeError, NonFiniteError, ShapeError
from ...status import Status

#: status -> error; SYMNN_ERR_ALIAS is the DataError that Kernel.train_step raises for both backends
_STATUS_ERRORS = {Status.ERR_SIZE: ShapeError, Status.ERR_EMPTY: EmptyBatchError, Status.ERR_LABEL: LabelRangeError,
                  Status.ERR_ALIAS: DataError, Status.ERR_NONFINITE: NonFiniteError}


class CKernelModule:
    """Calls one compiled model's C API with NumPy arrays."""

    def __init__(self, module: types.ModuleType, prefix: str, dtype: str,
                 layout: list[tuple[str, int, int, tuple[int, ...]]], labels: bool,
                 n_state: int | None = None, dropout: bool = False) -> None:
        self.ffi, self.lib = module.ffi, module.lib
        origin = getattr(module, "__file__", None)
        self.source_path = str(__import__("pathlib").Path(origin).with_name(f"{prefix}.c")) if origin else None
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self.ctype = f"{prefix}_real"
        self.labels = labels
        self.n_params = int(getattr(self.lib, f"{prefix.upper()}_N_PARAMS"))
        self.n_out = int(getattr(self.lib, f"{prefix.upper()}_N_OUT"))
        self._per_row = int(getattr(self.lib, f"{prefix.upper()}_WORK_PER_ROW"))
        self._fixed = int(getattr(self.lib, f"{prefix.upper()}_WORK_FIXED"))
        self._fn = {name: getattr(self.lib, f"{prefix}_{name}")
                    for name in ("forward", "loss", "loss_and_grad")}
        if labels:
            self._fn["loss_labels"] = getattr(self.lib, f"{prefix}_loss_labels")
            self._fn["loss_and_grad_labels"] = getattr(self.lib, f"{prefix}_loss_and_grad_labels")
        self.n_state = n_state
        self.dropout = dropout
        if n_state is not None:
            self._fn["train_step"] = getattr(self.lib, f"{prefix}_train_step")
            if labels:
                self._fn["train_step_labels"] = getattr(self.lib, f"{prefix}_train_step_labels")
        self._layout = layout

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
        flat = np.empty(self.n_params, dtype=self.dtype)
        for name, lo, hi, _ in self._layout:
            flat[lo:hi] = np.asarray(params[name], dtype=self.dtype).reshape(-1)
        return flat

    def unpack(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views of a flat vector as named parameter arrays (no copy)."""
        return {name: flat[lo:hi].reshape(shape) for name, lo, hi, shape in self._layout}

    def _work(self, n: int) -> np.ndarray:
        return np.empty(max(self._per_row * n + self._fixed, 1), dtype=self.dtype)

    def _check(self, status: int, kernel: str, bad_row=None) -> None:
        if status == Status.OK:
            return
        text = self.ffi.string(getattr(self.lib, f"{self.prefix}_status_string")(status)).decode()
        if status == Status.ERR_LABEL and bad_row is not None:
            text += f" (row {bad_row[0]})"
        if status == Status.ERR_NONFINITE and kernel.startswith("train_step"):
            text += ("; nothing was updated (a non-finite loss or gradient, or an update that would "
                     "overflow a parameter or the optimiser state)")
        raise _STATUS_ERRORS.get(status, KernelStatusError)(f"{self.prefix}_{kernel}: {text}")

    # -- kernels (inputs already validated by Kernel) --------------------------------------------
    def _forward(self, params: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
        p = self.pack(params)
        x = self._ready(X, self.dtype)
        n = x.shape[0]
        out = np.empty((n, self.n_out), dtype=self.dtype)
        work = self._work(n)
        c = self.ctype
        status = self._fn["forward"](self._ptr(p, c), self._ptr(x, c), n, self._ptr(out, c),
                                     self._ptr(work, c), work.size)
        self._check(status, "forward")
        return out

    def _targets(self, Y: np.ndarray):
        if self.labels and Y.ndim == 1:
            return self._ready(Y, np.dtype(np.int32)), "int32_t", "_labels"
        return self._ready(Y, self.dtype), self.ctype, ""

    def _loss(self, params: Mapping[str, np.ndarray], X: np.ndarray, Y: np.ndarray) -> float:
        return self._call_loss(params, X, Y, with_grad=False)[0]

    def _loss_and_grad(self, params: Mapping[str, np.ndarray], X: np.ndarray,
                       Y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss, grad = self._call_loss(params, X, Y, with_grad=True)
        return loss, self.unpack(grad)

    def raw_loss_and_grad(self, params: Mapping[str, np.ndarray], X: np.ndarray, Y: np.ndarray):
        """A zero-argument callable running the C loss-and-gradient on buffers prepared once
        (what an application embedding the C pays per call; for benchmarks). The cffi buffer
        objects keep the arrays alive; inputs must already be validated (``Kernel.params``/
        ``inputs``/``targets``)."""
        x = self._ready(X, self.dtype)
        y, y_ctype, suffix = self._targets(Y)
        flat, grad = self.pack(params), np.empty(self.n_params, dtype=self.dtype)
        loss, work = np.empty(1, dtype=self.dtype), self._work(x.shape[0])
        c = self.ctype
        args = [self._ptr(flat, c), self._ptr(x, c), self._ptr(y, y_ctype), x.shape[0], self._ptr(loss, c),
                self._ptr(grad, c)] + ([self.ffi.NULL] if suffix else []) + [self._ptr(work, c), work.size]
        # a partial, not a lambda: the call goes straight to cffi, one Python frame fewer
        # (xor float64: 366 -> 349 ns a call, against CasADi SX C's 363)
        return functools.partial(self._fn["loss_and_grad" + suffix], *args)

    def _run(self, kernel: str, head: list, x: np.ndarray, Y: np.ndarray, middle: list,
             grad: np.ndarray | None = None) -> float:
        """Call ``kernel`` (or its ``_labels`` twin) as ``head, X, Y, n, middle, loss, [grad],
        [bad_row], work, work_len``; return the loss."""
        y, y_ctype, suffix = self._targets(Y)
        n, c = x.shape[0], self.ctype
        loss = np.empty(1, dtype=self.dtype)
        work = self._work(n)
        args = [*head, self._ptr(x, c), self._ptr(y, y_ctype), n, *middle, self._ptr(loss, c)]
        if grad is not None:
            args.append(self._ptr(grad, c))
        bad_row = self.ffi.new("ptrdiff_t *") if suffix else None
        if bad_row is not None:
            args.append(bad_row)
        args += [self._ptr(work, c), work.size]
        self._check(self._fn[kernel + suffix](*args), kernel + suffix, bad_row)
        return float(loss[0])

    def _call_loss(self, params, X, Y, with_grad: bool):
        grad = np.empty(self.n_params, dtype=self.dtype) if with_grad else None
        head = [self._ptr(self.pack(params), self.ctype)]
        loss = self._run("loss_and_grad" if with_grad else "loss", head, self._ready(X, self.dtype), Y, [], grad)
        return loss, grad

    def _train_step(self, theta: np.ndarray, state: np.ndarray, X: np.ndarray, Y: np.ndarray,
                    step: int, seed: int = 0) -> float:
        """In place on ``theta``/``state`` (exact dtype, C order: checked by Kernel.train_step)."""
        c = self.ctype
        head = [self._ptr(theta, c)] + ([self._ptr(state, c)] if self.n_state else [])
        middle = [step] + ([seed] if self.dropout else [])
        return self._run("train_step", head, self._ready(X, self.dtype), Y, middle)
