"""A compiled kernel: the emitted module loaded in-process behind input validation.

Validation (RELIABILITY.md D1-D13) happens here, before any work, so the emitted code can
stay lean. Inputs are converted to the kernel's dtype by value (``astype``), never
reinterpreted; non-contiguous, read-only or big-endian arrays get one normalising copy.
"""

from __future__ import annotations

import math
import types
from typing import Any, Mapping, Sequence

import numpy as np

from . import naming
from .capabilities import Targets, check_target_values, simplex_rows, unit_interval
from .flat import FlatParams, aligned_empty, layout_of
from .declare import Network
from .batchnorm import single_value_channel
from .embedding import first_bad_index, index_blocks
from .graph import loss_mask_blocks
from .optim import Optimizer
from .errors import (
    ConfigError,
    DataError,
    DTypeError,
    EmptyBatchError,
    IndexRangeError,
    LabelRangeError,
    NonFiniteError,
    NonFiniteInputError,
    PaddingOnlyError,
    ShapeError,
)


#: dtype kinds that are not real numbers: object, bytes, str, void, complex, bool, datetimes
_NOT_REAL = "OSUVcbMm"


def as_real_array(value: object, what: str) -> np.ndarray:
    """``value`` as a NumPy array of real numbers, in its own dtype: the one gate every array from
    a caller or a file passes (kernels, ``save``, ``export_c_params``, the standardiser, the
    PyTorch and ONNX importers). Casting a complex array to float keeps only its real part with
    nothing but a ``ComplexWarning``, so complex (like bool, str or object) is refused instead."""
    try:
        arr = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise ShapeError(f"{what} is ragged (rows of different lengths): {exc}") from exc
    if arr.dtype.kind in _NOT_REAL:
        raise DTypeError(f"{what} has dtype {arr.dtype}; expected a real numeric array")
    return arr


def _as_float_array(value: object, what: str, dtype: np.dtype) -> np.ndarray:
    # np.asarray with order="C", not np.ascontiguousarray: that one makes a 0-d array (a
    # BatchNorm's num_batches_tracked, as state_dict gives it) a vector of one entry
    return np.asarray(as_real_array(value, what), dtype=dtype, order="C")


def first_bad_label(labels: np.ndarray, n_classes: int) -> int | None:
    """Index of the first entry of ``labels`` that is not an exact integer in ``[0, n_classes)``
    (a fraction, NaN, infinity or out of range), else None. The one rule for class labels:
    :meth:`Kernel.targets` and ``symnn train``'s CSV reader both apply it, so the command line
    cannot truncate 2.9 to 2 where the Python API refuses it."""
    values = np.asarray(labels)
    if values.dtype.kind in "iu" and values.size:  # integers: only the range can be wrong
        if values.min() >= 0 and values.max() < n_classes:
            return None
    values = values.astype(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.floor(values)) | (values < 0) | (values >= n_classes)
    return int(np.argmax(bad)) if bad.any() else None


#: the dtypes whose finiteness :func:`all_finite` reads off one BLAS dot product
_DOT_DTYPES = frozenset({np.dtype(np.float64), np.dtype(np.float32)})


def all_finite(arr: np.ndarray) -> bool:
    """Whether every entry of a float array is finite. It runs on every kernel call, over the
    parameters and the data, so the common case is the sum of the squares, one BLAS dot
    product of the contiguous entries with themselves and no temporary: it is finite exactly
    when every entry is (a NaN or an infinity cannot cancel in a sum of squares), unless finite
    entries overflow it (beyond 1e154 in float64, 1e19 in float32), and then ``isfinite``
    decides. Measured against ``isfinite(arr).all()`` (a bool temporary and a second pass):
    2,410 doubles 0.5 against 1.8 µs, 200,704 doubles 39 against 57 µs. No error state is set
    around it (``np.errstate`` costs 1.3 µs, more than the check): an overflow warns as NumPy
    does, and under ``-W error`` its RuntimeWarning sends the array to ``isfinite`` too."""
    if arr.dtype in _DOT_DTYPES and arr.flags.c_contiguous:
        flat = arr.ravel()
        try:
            if math.isfinite(flat.dot(flat)):
                return True
        except RuntimeWarning:  # an overflow (or an infinity's square) under -W error
            pass
    return bool(np.isfinite(arr).all())


def _require_finite(arr: np.ndarray, what: str) -> None:
    if all_finite(arr):  # the common case: one pass, no temporary, no index arithmetic
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NonFiniteInputError(
            f"{what} has {int(bad.sum())} non-finite value(s); first at index {first} "
            f"({arr[first]}); pass check_finite=False to allow them"
        )


_SEEDS = 2**64  # dropout seeds are uint64


def _finite_targets(Y: np.ndarray, check_finite: bool) -> bool:
    return not check_finite or all_finite(Y)


def _unit_targets(Y: np.ndarray, check_finite: bool) -> bool:
    return unit_interval(Y)  # NaN and infinity fail it too


def _class_rows(Y: np.ndarray, check_finite: bool) -> bool:
    return simplex_rows(Y)  # NaN and infinity fail it too


#: per declared kind of targets, a quick test that dense targets pass every check (finite and
#: in range); False sends them to the full checks, which decide and name what is wrong
_QUICK_TARGET_CHECKS = {Targets.REAL: _finite_targets, Targets.PROBABILITY: _unit_targets,
                        Targets.ONE_HOT_OR_LABELS: _class_rows}


def _refuse_overlap(theta: np.ndarray, state: np.ndarray, X: object, Y: object) -> None:
    """The C API's aliasing rule (SYMNN_ERR_ALIAS), applied to the caller's arrays for every
    backend: the buffers ``train_step`` writes, ``theta`` and ``state``, must not overlap each
    other, ``X`` or ``Y``. NumPy would otherwise compute on inputs that the update is rewriting
    (or update theta through state), and C would refuse the same call; refused here, neither
    backend sees it. Byte-range overlap (``np.may_share_memory``), as C checks it."""
    data: list[tuple[str, object]] = []
    for what, arg in (("X", X), ("Y", Y)):  # an array, or each entry of a dict keyed by names
        if isinstance(arg, Mapping):
            data += [(f"{what}[{naming.shown(k)}]", v) for k, v in arg.items()]
        else:
            data.append((what, arg))
    pairs = [("theta", theta, "state", state)] + [(a, arr_a, b, arr_b) for a, arr_a in (("theta", theta),
                                                                                       ("state", state))
                                                  for b, arr_b in data]
    for a, arr_a, b, arr_b in pairs:
        if isinstance(arr_b, np.ndarray) and np.may_share_memory(arr_a, arr_b):
            raise DataError(f"train_step: {a} and {b} overlap in memory; theta and state are updated "
                            "in place and must not share memory with each other, X or Y "
                            "(the C API's SYMNN_ERR_ALIAS)")


class Arguments:
    """The checks of a network's call arguments (parameters, inputs, targets), shared by the
    kernels and by :meth:`symnn.derivation.Derivation.evaluate`, so both refuse the same input
    with the same error."""

    def __init__(self, net: Network, dtype: str, check_finite: bool = True) -> None:
        self.network = net
        self.dtype = np.dtype(dtype)
        self.check_finite = check_finite
        self.param_shapes = {k: tuple(int(d) for d in v) for k, v in net.param_shapes().items()}
        self._labels = net.takes_labels
        #: X's row a*T + b entries for sequences of run-time length T (``sn.Input(None, F)``): (a, b)
        self._length = naming.length_form(net.n_in) if naming.has_length(net.n_in) else None
        self._n_in = None if self._length else int(net.n_in)
        #: the output's row a*T + b entries for a sequence output of run-time length (a, b)
        self._out_length = naming.length_form(net.n_out) if naming.has_length(net.n_out) else None
        self._n_out = None if self._out_length else int(net.n_out)
        #: each output's sample shape, each size a*T + b as (a, b) (a = 0: a fixed size)
        self._out_forms = [tuple(naming.length_form(d) for d in shape) for shape in net.output_shapes]
        #: the entries of one row of targets: an output's K, also for a sequence (T, K) of them
        self._step_width = int(net.output_shapes[0][-1]) if not net.several_outputs else self._n_out
        #: a one-pass check that dense targets are fine (None: the full checks always run)
        self._quick_target_check = (_QUICK_TARGET_CHECKS[net.loss.targets]
                                    if not net.several_outputs and net.is_concrete else None)
        #: the index inputs' columns of X and vocabularies (an Embedding's), checked on every call
        self._index_blocks = index_blocks(net)
        #: the mask inputs' columns of X that weigh a sequence output's loss (graph.step_masks)
        self._mask_blocks = loss_mask_blocks(net)
        #: a sequence output's class labels whose padded steps (-100, rows of zeros) its loss leaves out
        self._step_labels = (not net.several_outputs and len(net.output_shapes[0]) == 2
                             and net.loss.takes_labels)
        #: whether a batch can hold no step its loss keeps (:meth:`holds_a_step`)
        self.padded_steps = bool(self._mask_blocks) or self._step_labels
        #: whether the whole loss is a mean over one count of kept steps (:meth:`kept_steps`)
        self.counts_steps = self.padded_steps and not net.several_outputs
        #: the layout of the flat parameter buffers whose views need no check of their shapes (a
        #: kernel's; none for the derivation's checks, which check every parameter)
        self.flat_layout: object = None

    # -- validation ------------------------------------------------------------------------
    def params(self, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if type(params) is FlatParams and params.layout is self.flat_layout:
            # its views have the layout's shapes and dtype by construction: one scan of its buffer
            if self.check_finite and not all_finite(params._flat):
                for k, v in params.items():
                    _require_finite(v, f"parameter {k}")
            return params
        if not isinstance(params, Mapping):
            raise DTypeError(f"params must be a dict of arrays, got {type(params).__name__}")
        if len(params) != len(self.param_shapes) or not all(k in params for k in self.param_shapes):
            missing = [k for k in self.param_shapes if k not in params]
            extra = [k for k in params if k not in self.param_shapes]
            raise ShapeError(f"params keys: missing {missing}, unexpected {extra}; "
                             f"expected {list(self.param_shapes)}")
        out = {}
        dtype = self.dtype
        for k, shape in self.param_shapes.items():
            arr = params[k]
            if not (type(arr) is np.ndarray and arr.dtype is dtype and arr.shape == shape and arr.flags.c_contiguous):
                arr = _as_float_array(arr, f"parameter {k}", dtype)
                if arr.shape != shape:
                    raise ShapeError(f"expected {k} of shape {shape}, got {arr.shape}")
            if self.check_finite:
                _require_finite(arr, f"parameter {k}")
            out[k] = arr
        return out

    def inputs(self, X: object) -> np.ndarray:
        """``X`` checked and in the kernel's dtype: an array (N, n_in), or a dict keyed by the
        inputs' names (``sn.Input(..., name=)``), packed side by side in the order of
        ``inputs=`` (the layout the emitted code takes). Index inputs (an Embedding's) must
        hold integers in [0, vocabulary): IndexRangeError names the first that does not."""
        x = self._packed_inputs(X)
        for block in self._index_blocks:
            lo, hi = block.columns(self.length(x))
            bad = first_bad_index(x[:, lo:hi], block.vocab)
            if bad is not None:
                n, t = bad
                raise IndexRangeError(f"X[{block.name!r}]: index {float(x[n, lo + t]):.17g} of sample {n} (position "
                                      f"{t}) is not an integer in [0, {block.vocab}), the embedding's rows")
        return x

    def _packed_inputs(self, X: object) -> np.ndarray:
        if (type(X) is np.ndarray and X.dtype is self.dtype and X.ndim == 2
                and (X.shape[1] == self._n_in if self._length is None else self._fits_length(X.shape[1]))
                and X.flags.c_contiguous and (not self.check_finite or all_finite(X))):
            return X  # ready as it is: nothing to convert, every entry finite
        net = self.network
        if isinstance(X, Mapping):
            blocks = [self._input_block(a, f"X[{name!r}]", w, shape)
                      for (name, shape), w, a in zip(net.input_shapes, net.input_widths,
                                                     _entries(X, net.input_names, "X", "inputs"))]
            _same_rows(blocks, "X")
            _same_length(blocks, net.input_widths, net.input_names)
            return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
        if net.several_inputs and not isinstance(X, np.ndarray):
            raise DTypeError(f"this network has several inputs: give X as a dict keyed by "
                             f"{list(net.input_names)}, got {type(X).__name__}")
        return self._input_block(X, "X", net.n_in, net.input_shapes[0][1])

    def _fits_length(self, cols: int) -> bool:
        a, b = self._length
        return cols >= a + b and (cols - b) % a == 0

    def length(self, X: np.ndarray) -> int:
        """The sequences' run-time length T of a checked, packed ``X``; 0 for fixed sizes."""
        return 0 if self._length is None else (X.shape[1] - self._length[1]) // self._length[0]

    def _input_block(self, value: object, what: str, width: object, shape: tuple = ()) -> np.ndarray:
        """One input checked: (n, width), or (n, *shape) for samples of rank > 1 (images), which
        become their rows, row-major (a view where the batch is C-contiguous)."""
        arr = _as_float_array(value, what, self.dtype)
        if naming.has_length(width):
            return self._sequence_block(arr, what, width, shape)
        n_in = int(width)  # type: ignore[call-overload]
        if len(shape) > 1 and arr.ndim == len(shape) + 1:
            if tuple(arr.shape[1:]) != tuple(int(d) for d in shape):
                raise ShapeError(f"expected {what} of shape (n, {', '.join(str(d) for d in shape)}), got {arr.shape}")
            arr = np.ascontiguousarray(arr).reshape(arr.shape[0], n_in)
        if arr.ndim != 2:
            form = f"(n, {', '.join(str(d) for d in shape)}) or " if len(shape) > 1 else ""
            raise ShapeError(f"expected {what} of shape {form}(n, {n_in}), got {arr.shape}")
        if arr.shape[1] != n_in:
            raise ShapeError(f"{what} has {arr.shape[1]} features, the network expects {n_in}")
        if self.check_finite:
            _require_finite(arr, what)
        return arr

    def _sequence_block(self, arr: np.ndarray, what: str, width: object, shape: tuple) -> np.ndarray:
        """A batch of sequences of run-time length (``sn.Input(None, F)``): (n, T, F), or its
        rows (n, T*F) for any T >= 1 (a mask or index sequence (T,): (n, T))."""
        per_step, fixed = naming.length_form(width)
        steps = ", ".join(["T", *(str(d) for d in shape[1:])])
        if len(shape) > 1 and arr.ndim == len(shape) + 1:
            if tuple(arr.shape[2:]) != tuple(int(d) for d in shape[1:]) or arr.shape[1] < 1:
                raise ShapeError(f"expected {what} of shape (n, {steps}) with T >= 1, got {arr.shape}")
            arr = np.ascontiguousarray(arr).reshape(arr.shape[0], -1)
        row = f"{per_step}*T" + (f" + {fixed}" if fixed else "")
        if arr.ndim != 2:
            form = f"(n, {steps}) or " if len(shape) > 1 else ""
            raise ShapeError(f"expected {what} of shape {form}(n, {row}), got {arr.shape}")
        if arr.shape[1] < per_step + fixed or (arr.shape[1] - fixed) % per_step:
            raise ShapeError(f"{what} has {arr.shape[1]} entries a sample, not {row} for any T >= 1")
        if self.check_finite:
            _require_finite(arr, what)
        return arr
        if self.check_finite:
            _require_finite(arr, what)
        return arr

    def _some_step_masked(self, x: np.ndarray) -> None:
        """A sequence output's loss over its masked steps is a mean over the masks' sum: 0/0
        where the batch's masks hold no step (DataError, before any work)."""
        block = self._padding_only(x)
        if block is not None:
            lo, hi = block.columns(self.length(x))
            raise PaddingOnlyError(f"X[{block.name!r}]: every step is padding (the masks sum to "
                                   f"{float(x[:, lo:hi].sum()):.17g}): the mean loss over the masked steps is "
                                   "undefined")

    def _padding_only(self, x: np.ndarray):
        """The first mask block of a sequence output's loss whose masks hold no step in ``x``
        (sum to 0, or NaN), or None."""
        for block in self._mask_blocks:
            lo, hi = block.columns(self.length(x))
            if not x[:, lo:hi].sum() > 0:  # NaN fails too
                return block
        return None

    def holds_a_step(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Whether a checked batch (``x`` as :meth:`inputs` gives it, ``y`` as :meth:`targets` or
        :meth:`training_targets` do) holds a step its loss keeps: False for padded sequences
        whose every step is padding (masks of 0, labels -100 or rows of zeros), whose mean loss
        is 0/0; always True for a network without padded steps. ``sn.train`` skips such a
        mini-batch (a check per batch, as the data was checked once before the epochs)."""
        if not self.padded_steps:
            return True
        if self._padding_only(x) is not None:
            return False
        if self._step_labels:
            return bool((y != IGNORE_LABEL).any() if y.dtype.kind == "i" else y.any())
        return True

    def kept_steps(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """The count a checked batch's mean loss is over (``x`` as :meth:`inputs` gives it, ``y``
        as :meth:`targets` or :meth:`training_targets` do), where one count normalises the whole
        loss (:attr:`counts_steps`): a single sequence output whose steps are masked (the masks'
        sum) or class-labelled (the labelled steps: targets' sum, labels other than -100). None
        where the mean is over rows, or several outputs' means are added. Data-parallel training
        weighs each block's gradient by it (:func:`symnn.distributed.schedule.leaf`), so that a
        step's gradient is that of the mean over all of the step's kept steps, as one process
        takes it, however the padding falls between the parts."""
        if not self.counts_steps:
            return None
        if self._mask_blocks:
            lo, hi = self._mask_blocks[0].columns(self.length(x))
            return float(x[:, lo:hi].sum())
        if y.dtype.kind == "i":
            return float(np.count_nonzero(y != IGNORE_LABEL))
        return float(y.sum())

    def targets(self, Y: object, n: int, length: int = 0, x: np.ndarray | None = None) -> np.ndarray:
        """``Y`` checked against each output's loss: an array, or a dict keyed by the outputs'
        names; several outputs' targets are packed side by side (class labels (N,) of an
        output whose loss takes them become one-hot rows there). A sequence output (T, K)
        takes (N, T, K) or its rows (N, T*K), or class labels (N, T). ``length``: the call's
        run-time sequence length T (:meth:`length` of its X), for outputs whose T it is. ``x``:
        the checked X of the call, whose masks of a sequence output's loss must hold a step."""
        net = self.network
        if n == 0:
            raise EmptyBatchError("the batch is empty (N = 0): the mean loss is undefined")
        if x is not None and self._mask_blocks:
            self._some_step_masked(x)
        n_out = self._n_out if self._out_length is None else self._out_length[0] * length + self._out_length[1]
        if (type(Y) is np.ndarray and Y.dtype is self.dtype and Y.shape == (n, n_out)
                and Y.flags.c_contiguous and self._quick_target_check is not None
                and self._quick_target_check(Y.reshape(-1, self._step_width), self.check_finite)):
            return Y  # ready as it is, and its values clearly what the loss declares
        if isinstance(Y, Mapping):
            entries = _entries(Y, net.output_names, "Y", "outputs")
        shapes = [tuple(a * length + b for a, b in form) for form in self._out_forms]
        if isinstance(Y, Mapping):
            entries = _entries(Y, net.output_names, "Y", "outputs")
            if not net.several_outputs:
                return self._target_block(entries[0], f"Y[{net.output_names[0]!r}]", n, net.loss, shapes[0],
                                          self._labels)
            blocks = [self._target_block(a, f"Y[{name!r}]", n, loss, shape, labels_ok=True, one_hot=True)
                      for a, name, loss, shape in zip(entries, net.output_names, net.losses, shapes)]
            return np.concatenate(blocks, axis=1)
        if not net.several_outputs:
            return self._target_block(Y, "Y", n, net.loss, shapes[0], self._labels)
        if not isinstance(Y, np.ndarray):
            raise DTypeError(f"this network has several outputs: give Y as a dict keyed by "
                             f"{list(net.output_names)}, got {type(Y).__name__}")
        arr = self._target_block(Y, "Y", n, None, (n_out,), False)
        lo = 0
        for loss, name, shape in zip(net.losses, net.output_names, shapes):
            hi = lo + int(np.prod(shape))
            check_target_values(loss, arr[:, lo:hi].reshape(-1, shape[-1]), f"Y[:, {lo}:{hi}] (output {name!r})")
            lo = hi
        return arr

    def dense_targets(self, y: np.ndarray) -> np.ndarray:
        """Checked targets (:meth:`targets`) as the one-hot rows the kernels build from labels:
        (N,) labels, or a sequence output's (N, T) with -100 at a padded step (a row of zeros);
        dense targets as they are."""
        if y.dtype.kind not in "iu":
            return y
        k = int(self.network.output_shapes[0][-1])
        flat = y.reshape(-1)
        rows = np.zeros((flat.shape[0], k), dtype=self.dtype)
        kept = np.flatnonzero(flat >= 0)
        rows[kept, flat[kept]] = 1
        return rows.reshape(y.shape[0], -1)

    def _target_block(self, value: object, what: str, n: int, loss, shape: tuple, labels_ok: bool,
                      one_hot: bool = False) -> np.ndarray:
        """One output's targets for ``n`` samples of ``shape``: (K,), or a sequence (T, K)
        whose targets are (n, T, K) or (n, T*K), or labels (n, T) that become one-hot rows (the
        kernels take labels (n,) of a features output only)."""
        k = int(shape[-1])
        seq = len(shape) == 2
        steps = int(shape[0]) if seq else 1
        width = steps * k
        raw = as_real_array(value, what)
        takes_labels = loss is not None and loss.takes_labels and (labels_ok or seq)
        if takes_labels and raw.ndim == 1 + seq and raw.shape[1:] == ((steps,) if seq else ()):
            if raw.shape[0] != n:
                raise ShapeError(f"{what} has {raw.shape[0]} {'rows of ' if seq else ''}labels for {n} rows of X")
            flat = raw.reshape(-1)
            kept = flat != IGNORE_LABEL if seq else slice(None)  # a sequence's padded steps: no class
            row = first_bad_label(flat[kept], k)
            if row is not None:
                row = int(np.flatnonzero(kept)[row]) if seq else row
                where = f"sample {row // steps}, step {row % steps}" if seq else f"row {row}"
                padding = f" (or {IGNORE_LABEL} for a padded step)" if seq else ""
                raise LabelRangeError(f"{what}: label {flat[row]} at {where} out of range [0, {k}){padding}")
            labels = np.asarray(flat, dtype=np.intp)
            if seq and not kept.any():
                _some_step_labelled(np.zeros((0, k)), what)
            if not one_hot:  # the kernels take them: (n,), or a sequence's (n, T) with -100 at padding
                return np.ascontiguousarray(labels.reshape(raw.shape))
            rows = np.zeros((n * steps, k), dtype=self.dtype)
            at = np.flatnonzero(kept) if seq else np.arange(n * steps)
            rows[at, labels[at]] = 1
            return rows.reshape(n, width)
        arr = _as_float_array(raw, what, self.dtype)
        if seq and arr.shape == (n, steps, k):
            arr = np.ascontiguousarray(arr).reshape(n, width)
        if arr.shape != (n, width):
            form = f"({n}, {steps}, {k}) or " if seq else ""
            labels = f" or integer labels ({n},{f' {steps}' if seq else ''})" if takes_labels else ""
            raise ShapeError(f"expected {what} of shape {form}({n}, {width}){labels}, got {arr.shape}")
        if self.check_finite:
            _require_finite(arr, what)
        if loss is not None:
            rows = arr.reshape(-1, k)
            if seq and loss.takes_labels:  # rows of zeros are padded steps: the others are checked
                rows = rows[(rows != 0).any(axis=1)]  # NaN is not 0: kept, and refused below
                _some_step_labelled(rows, what)
            check_target_values(loss, rows, None if what == "Y" else what)
        return arr


#: a sequence output's class label for a padded step, which the loss leaves out: PyTorch's
#: default ``ignore_index`` of ``cross_entropy``. The kernels take it as a row of zero targets.
IGNORE_LABEL = -100


def _some_step_labelled(rows: np.ndarray, what: str) -> None:
    """A batch of a sequence output's class targets names a class at some step: the loss is the
    mean over the labelled steps, undefined (0/0) for a batch of padding only."""
    if not rows.any():
        raise PaddingOnlyError(f"{what}: every step is padding (labels {IGNORE_LABEL}, or rows of zero targets): "
                               "the mean loss over the labelled steps is undefined")


def _same_length(blocks: list[np.ndarray], widths: Sequence[Any], names: Sequence[str]) -> None:
    """Every sequence of run-time length in one call has the same number of steps T."""
    lengths = {name: b.shape[1] // naming.length_form(w)[0]
               for b, w, name in zip(blocks, widths, names) if naming.has_length(w)}
    if len(set(lengths.values())) > 1:
        raise ShapeError(f"the sequences of one call have one length T; got {lengths}")


def _entries(values: Mapping[Any, Any], names: tuple[str, ...], what: str, kind: str) -> list[Any]:
    """The values of a dict keyed by ``names``, in their order; ShapeError on a missing or an
    unexpected key."""
    missing = [k for k in names if k not in values]
    extra = [k for k in values if k not in names]
    if missing or extra:
        raise ShapeError(f"{what} keys: missing {missing}, unexpected {[naming.shown(k) for k in extra]}; "
                         f"expected the network's {kind} {list(names)}")
    return [values[k] for k in names]


def _same_rows(blocks: list[np.ndarray], what: str) -> None:
    rows = {b.shape[0] for b in blocks}
    if len(rows) > 1:
        raise ShapeError(f"the arrays of {what} have different numbers of rows: {sorted(rows)}")


class Kernel(Arguments):
    """Forward, loss and loss-and-gradient kernels of one network, one backend, one dtype."""

    def __init__(self, net: Network, module: types.ModuleType, backend: str, dtype: str,
                 source: str, check_finite: bool = True, optimizer: "Optimizer | None" = None,
                 build: Mapping[str, bool] | None = None) -> None:
        super().__init__(net, dtype, check_finite)
        #: how the C was built (``blas``, ``openmp``), kept so that a pickled kernel rebuilds alike
        self.build = dict(build or {})
        self.module = module
        self.backend = backend
        self.source = source
        self.optimizer = optimizer
        #: the emitted source on disk (C: kept beside the built module in the cache), else None
        self.source_path: str | None = getattr(module, "source_path", None)
        self.layout = net.param_layout()
        self.n_params = self.layout[-1][2]
        #: the layout's one object: a FlatParams of it goes to the emitted code as it is
        self.flat_layout = layout_of(tuple(self.layout), str(self.dtype))
        #: the backend module's calls on ready buffers (C: backends/c/fast.py), or None (every
        #: call is checked in Python)
        calls = getattr(module, "fast_calls", None)
        self._fast = calls(self.flat_layout) if calls is not None else None
        #: what the backend emitted (its ``rebuild`` loads the kernel again from it alone), set by
        #: the backend; None where it has nothing to ship
        self.emitted: object = None

    def __reduce__(self):
        """Pickled as its recipe and its emitted source, never a compiled module: unpickling
        builds that source again (through the module cache: a hit where this machine built it
        before), with no derivation, so kernels can be sent to ``multiprocessing`` workers
        started with spawn and to Dask workers."""
        return (_rebuild, (self.network, self.backend, str(self.dtype), self.check_finite, self.optimizer,
                           self.build, self.emitted))

    def __repr__(self) -> str:
        return f"<symnn.Kernel {self.network.name} backend={self.backend} dtype={self.dtype}>"

    # -- flat parameter layout (the C API's) -----------------------------------------------------
    def pack(self, params: Mapping[str, Any]) -> np.ndarray:
        """All parameters as one flat vector: W1, b1, W2, ... each row-major, the layout of the
        C API's ``params``/``grad`` (``<model>_param_offset``). ``pack(p).tofile(path)`` writes
        the file the emitted ``main.c`` reads."""
        p = self.params(params)
        return np.concatenate([p[k].reshape(-1) for k in self.param_shapes]).astype(self.dtype, copy=False)

    def unpack(self, flat: object) -> FlatParams:
        """The inverse of :meth:`pack`: a :class:`~symnn.flat.FlatParams`, a dict of views into
        ``flat`` (no copy where ``flat`` is a C-contiguous vector of the kernel's dtype). Given
        to a kernel call, it reaches the emitted code with no copy; ``train_step`` updating
        ``flat`` in place updates the views."""
        arr = _as_float_array(flat, "flat parameters", self.dtype)
        if arr.shape != (self.n_params,):
            raise ShapeError(f"expected a flat vector of {self.n_params} parameters, got shape {arr.shape}")
        if not (arr.flags.aligned and arr.dtype.isnative):
            arr = np.require(arr.astype(self.dtype), requirements="CA")  # a copy: no view can be aligned
        return FlatParams(arr, self.flat_layout)

    def new_params(self, values: Mapping[str, Any] | None = None, seed: int | None = 0) -> FlatParams:
        """Parameters in one new flat buffer (:meth:`unpack` of it): ``values`` copied in
        (checked as every call checks them), or the network's initial parameters for ``seed``.
        Also the buffer to pass as ``out=`` for gradients. 64-byte aligned, as the C kernels'
        loops like it (:data:`symnn.flat.ALIGN`)."""
        src = self.params(values) if values is not None else self.network.init_params(seed=seed, dtype=str(self.dtype))
        flat = aligned_empty(self.n_params, self.dtype)
        for name, lo, hi, _ in self.layout:
            flat[lo:hi] = src[name].reshape(-1)
        return FlatParams(flat, self.flat_layout)


    # -- training ------------------------------------------------------------------------------
    def init_state(self) -> np.ndarray:
        """Zeroed optimiser state: one row of ``n_params`` per state buffer (Adam: m, v)."""
        opt = self._require_optimizer()
        return np.zeros((len(opt.state), self.n_params), dtype=self.dtype)

    def _require_optimizer(self) -> "Optimizer":
        if self.optimizer is None:
            raise ConfigError("this kernel has no train_step: compile with optimizer=sn.Adam(...) "
                              "or another optimiser")
        return self.optimizer

    def _in_place(self, arr: object, what: str, shape: tuple[int, ...]) -> np.ndarray:
        if not isinstance(arr, np.ndarray):
            raise DTypeError(f"{what} must be a NumPy array (it is updated in place), got {type(arr).__name__}")
        if arr.dtype != self.dtype or not arr.dtype.isnative:
            raise DTypeError(f"{what} must have dtype {self.dtype} (it is updated in place), got {arr.dtype}")
        if arr.shape != shape:
            raise ShapeError(f"expected {what} of shape {shape}, got {arr.shape}")
        if not (arr.flags.c_contiguous and arr.flags.aligned and arr.flags.writeable):
            raise DTypeError(f"{what} must be C-contiguous, aligned and writeable (it is updated in place)")
        return arr

    def train_step(self, theta: np.ndarray, state: np.ndarray, X: object, Y: object, step: int,
                   seed: int = 0) -> float:
        """One optimiser step, in place on the flat parameters ``theta`` (see :meth:`pack`) and
        ``state`` (see :meth:`init_state`); ``step`` counts from 1. With dropout, ``seed`` and
        ``step`` key the masks (the same bits on both backends). Returns the loss before it.

        All or nothing: a non-finite loss or gradient, or an update that would make a parameter
        or state entry non-finite, raises :class:`NonFiniteError` with ``theta`` and ``state``
        unchanged. ``theta`` and ``state`` must not share memory with each other, ``X`` or ``Y``
        (:class:`DataError` on both backends, C's ``SYMNN_ERR_ALIAS`` rule)."""
        fast = self._fast
        if fast is not None and type(step) is int and type(seed) is int and step >= 1 and 0 <= seed < _SEEDS:
            loss = fast.train_step(theta, state, X, Y, step, seed, self.check_finite)
            if loss is not None:
                return loss
        opt = self._require_optimizer()
        theta = self._in_place(theta, "theta", (self.n_params,))
        state = self._in_place(state, "state", (len(opt.state), self.n_params))
        step, seed = self._step_and_seed(step, seed)
        _refuse_overlap(theta, state, X, Y)
        if self.check_finite:
            _require_finite(theta, "theta")
        x = self.inputs(X)
        y = self.targets(Y, x.shape[0], self.length(x), x)
        short = single_value_channel(self.network, x.shape[0])
        if short is not None:  # (the fast path refused it too: its running variance is infinite)
            raise DataError(f"{short} has a single value per channel in a batch of {x.shape[0]} row(s): its "
                            "running variance (the batch's unbiased variance) is undefined, as in PyTorch; "
                            "train on batches of at least 2 rows")
        extra = (seed,) if self.network.has_dropout else ()
        try:
            return float(self.module._train_step(theta, state, x, y, step, *extra))
        except FloatingPointError as exc:  # the NumPy module's refusal; C returns a status
            raise NonFiniteError(str(exc)) from exc

    def training_targets(self, Y: np.ndarray) -> np.ndarray:
        """Checked targets made ready for many training calls: integer labels converted once to
        the integers the backend's kernels take as they are (the C kernels' int32), not per call."""
        native = getattr(self.module, "label_dtype", None)
        return Y.astype(native) if native is not None and Y.dtype.kind == "i" else Y

    def train_gradient(self, theta: np.ndarray, X: object, Y: object, step: int = 1,
                       seed: int = 0) -> tuple[float, np.ndarray]:
        """The loss and flat gradient (laid out as ``theta``) that :meth:`train_step` would take
        for this batch, with nothing updated: the training program's (dropout masks keyed by
        ``seed`` and ``step``; a batch norm's new running statistics in its buffers' places).

        With :meth:`apply_gradient` it splits a train step in two, so that gradients of several
        batches can be summed first (weighted by their share of the rows, or of the kept steps
        where the loss is a mean over them: :meth:`kept_steps`): data-parallel
        training (:mod:`symnn.distributed`), gradient accumulation. A non-finite loss or
        gradient raises :class:`NonFiniteError`."""
        self._require_optimizer()
        theta = self._in_place(theta, "theta", (self.n_params,))
        step, seed = self._step_and_seed(step, seed)
        if self.check_finite:
            _require_finite(theta, "theta")
        x = self.inputs(X)
        y = self.targets(Y, x.shape[0], self.length(x), x)
        extra = (seed,) if self.network.has_dropout else ()
        try:
            loss, grad = self.module._train_gradient(theta, x, y, step, *extra)
        except FloatingPointError as exc:
            raise NonFiniteError(str(exc)) from exc
        return float(loss), grad

    def apply_gradient(self, theta: np.ndarray, state: np.ndarray, grad: object, step: int) -> None:
        """One optimiser step, in place on ``theta`` and ``state``, on a gradient already
        computed (:meth:`train_gradient`'s, or a row-weighted sum of several). The emitted
        update of :meth:`train_step`, with its clipping and all-or-nothing rule: an update that
        would make a parameter or state entry non-finite raises :class:`NonFiniteError` and
        changes nothing. ``grad`` is not modified."""
        opt = self._require_optimizer()
        theta = self._in_place(theta, "theta", (self.n_params,))
        state = self._in_place(state, "state", (len(opt.state), self.n_params))
        step, _ = self._step_and_seed(step, 0)
        g = as_real_array(grad, "grad")
        if g.shape != (self.n_params,):
            raise ShapeError(f"grad must have shape ({self.n_params},), got {g.shape}")
        for a, b, arr_a, arr_b in (("theta", "state", theta, state), ("theta", "grad", theta, g),
                                   ("state", "grad", state, g)):
            if np.may_share_memory(arr_a, arr_b):
                raise DataError(f"apply_gradient: {a} and {b} overlap in memory; theta and state are updated in "
                                "place (the C API's SYMNN_ERR_ALIAS)")
        if not all_finite(g):  # train_step refuses such a gradient the same way
            raise NonFiniteError("apply_gradient: grad holds NaN or infinity; nothing was updated")
        try:
            self.module._apply_gradient(theta, state, g.astype(self.dtype, copy=False), step)
        except FloatingPointError as exc:
            raise NonFiniteError(str(exc)) from exc

    @staticmethod
    def _step_and_seed(step: object, seed: object) -> tuple[int, int]:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
            raise ConfigError(f"step must be an integer >= 1 (it counts from 1), got {step!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
            raise ConfigError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        return int(step), int(seed)

    # -- kernels -----------------------------------------------------------------------------
    def forward(self, params: Mapping[str, Any], X: object) -> "np.ndarray | dict[str, np.ndarray]":
        """Network output for a batch ``X`` of shape (N, n_in); with several outputs, a dict
        keyed by the outputs' names (each output's columns of the packed output)."""
        out = None
        if self._fast is not None:
            out = self._fast.forward(params, X, self.check_finite)
        if out is None:
            out = self.module._forward(self.params(params), self.inputs(X))
        net = self.network
        if not net.several_outputs:
            return self._as_output(out, net.output_shapes[0])
        return {name: self._as_output(out[:, lo:hi], shape) for name, (lo, hi), shape
                in zip(net.output_names, net.column_blocks(net.output_widths), net.output_shapes)}

    @staticmethod
    def _as_output(out: np.ndarray, shape: tuple) -> np.ndarray:
        """One output's columns as its samples' shape: (N, K), or (N, T, K) for a sequence (as
        PyTorch's modules return it; a view where the columns are contiguous)."""
        return out if len(shape) == 1 else out.reshape(out.shape[0], -1, int(shape[-1]))

    def loss(self, params: Mapping[str, Any], X: object, Y: object) -> float:
        """Mean loss plus penalties."""
        if self._fast is not None:
            loss = self._fast.loss(params, X, Y, None, self.check_finite)
            if loss is not None:
                return loss
        p, x = self.params(params), self.inputs(X)
        return self.module._loss(p, x, self.targets(Y, x.shape[0], self.length(x), x))

    def loss_and_grad(self, params: Mapping[str, Any], X: object, Y: object, *,
                      out: Mapping[str, np.ndarray] | None = None) -> tuple[float, Mapping[str, np.ndarray]]:
        """``(loss, grads)`` with ``grads`` keyed and shaped like ``params``.

        ``out``: where to write the gradients (a dict of arrays of the parameters' shapes, best
        :meth:`new_params`), returned as ``grads``. With ``params`` and ``out`` from
        :meth:`unpack` or :meth:`new_params`, a call copies nothing and, on the C backend,
        allocates nothing in steady state; every check still runs (in C where it reads data)."""
        if self._fast is not None and (out is None or (type(out) is FlatParams and out.layout is self.flat_layout)):
            grads = out if out is not None else FlatParams(aligned_empty(self.n_params, self.dtype),
                                                           self.flat_layout)
            loss = self._fast.loss(params, X, Y, grads, self.check_finite)
            if loss is not None:
                return loss, grads
        p, x = self.params(params), self.inputs(X)
        loss, grads = self.module._loss_and_grad(p, x, self.targets(Y, x.shape[0], self.length(x), x))
        if out is None:
            return loss, grads
        return loss, self._written(out, grads)

    def _written(self, out: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """``grads`` copied into the caller's ``out`` (checked: every parameter, its shape, a
        writeable array of the kernel's dtype)."""
        if not isinstance(out, Mapping) or set(out) != set(grads):
            raise ShapeError(f"out must be a dict with the parameters' names {list(grads)}")
        for name, g in grads.items():  # every entry checked before any is written
            dest = out[name]
            if not isinstance(dest, np.ndarray) or dest.shape != g.shape or dest.dtype != self.dtype \
                    or not dest.flags.writeable:
                raise DTypeError(f"out[{name!r}] must be a writeable {self.dtype} array of shape {g.shape}")
        for name, g in grads.items():
            out[name][...] = g
        return out


def _rebuild(net: Network, backend: str, dtype: str, check_finite: bool, optimizer=None,
             build: Mapping[str, bool] | None = None, emitted: object = None) -> "Kernel":
    """A pickled kernel again: from its emitted source where its backend can load that alone,
    else compiled again from the network."""
    from .backends import registry

    again = registry.get(backend).rebuild
    if emitted is None or again is None:
        return _recompile(net, backend, dtype, check_finite, optimizer, build)
    options = dict(build or {})
    return again(net, emitted, dtype, check_finite, optimizer, options.get("blas", False), options.get("openmp", False),
                 options.get("flush_denormals", False))


def _recompile(net: Network, backend: str, dtype: str, check_finite: bool, optimizer=None,
               build: Mapping[str, bool] | None = None) -> "Kernel":
    from .driver import compile as compile_kernel

    return compile_kernel(net, backend=backend, dtype=dtype, check_finite=check_finite, optimizer=optimizer,
                          **(build or {}))
