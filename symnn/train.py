"""Mini-batch training over an emitted ``train_step`` kernel.

The loop is deliberately thin: the optimiser is emitted code (see :mod:`symnn.optim`), the data
are validated once up front, and each step calls the kernel's unchecked ``_train_step`` on the
flat parameter vector. What stays in Python: seeded shuffling, the validation split, early
stopping (restoring the best weights), the history, and the non-finite guard.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .decision import is_classifier
from .declare import Network
from .errors import ConfigError, DataError, NonFiniteError, ShapeError
from .kernel import Kernel
from .optim import Optimizer
from .persist import Standardizer


@dataclass
class History:
    """Per-epoch metrics (``val_*`` are NaN without validation data)."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    def plot(self, path: str | Path) -> Path:
        """Save the loss curves (and validation accuracy) as a PNG, atomically.

        Needs matplotlib (``pip install "symnn[plot]"``).
        """
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ConfigError('History.plot needs matplotlib: pip install "symnn[plot]"') from exc
        from .fileio import staged

        epochs = np.arange(1, len(self.train_loss) + 1)
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ax.plot(epochs, self.train_loss, label="train loss")
        if not all(math.isnan(v) for v in self.val_loss):
            ax.plot(epochs, self.val_loss, label="validation loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        lines = list(ax.get_lines())
        if not all(math.isnan(v) for v in self.val_accuracy):
            acc = ax.twinx()
            lines += acc.plot(epochs, self.val_accuracy, color="tab:green", label="validation accuracy")
            acc.set_ylabel("accuracy")
        # one legend for both axes: a twin axis's lines are not in ax.legend()'s default handles
        ax.legend(handles=lines, labels=[line.get_label() for line in lines], loc="upper right")
        fig.tight_layout()  # makes room for the right axis's label, which the default layout clips
        target = Path(path)
        try:
            with staged(target, suffix=".png") as tmp:
                fig.savefig(tmp, format="png", bbox_inches="tight")
        finally:
            plt.close(fig)
        return target


@dataclass
class TrainResult:
    """Trained parameters (the best epoch's, with early stopping), history and kernel."""

    params: dict[str, np.ndarray]
    history: History
    kernel: Kernel
    best_epoch: int
    steps: int
    standardizer: Standardizer | None = None

    def predict_proba(self, X: object) -> np.ndarray:
        """Network output for raw inputs (standardised as in training): class probabilities
        for a classifier (softmax rows, or one sigmoid per output)."""
        if self.standardizer is None:
            return self.kernel.forward(self.params, X)
        # several inputs come as a dict: standardised in the packed layout the statistics were taken in
        packed = self.kernel.inputs(X) if isinstance(X, Mapping) else X
        return self.kernel.forward(self.params, self.standardizer.transform(packed))

    def predict(self, X: object) -> np.ndarray:
        """Predictions for raw inputs, as scikit-learn's ``predict``: class labels (N,) for
        cross-entropy, 0/1 (N, K) for binary cross-entropy, the output for a regression."""
        from .decision import labels

        return labels(self.kernel.network, self.predict_proba(X))

    def accuracy(self, X: object, y: object) -> float:
        """Fraction of rows whose arg-max output is the label (or > 0.5 for one output)."""
        if self.kernel.network.several_outputs:
            raise ConfigError("accuracy compares one output with labels; this network has several "
                              "(predict gives each output's labels)")
        return _accuracy(self.predict_proba(X), np.asarray(y))

    def save(self, path) -> "Path":
        """Network, trained parameters and standardisation in one file (see :func:`symnn.save`)."""
        from .persist import save

        opt = self.kernel.optimizer
        return save(path, self.kernel.network, self.params, standardizer=self.standardizer,
                    info={"optimizer": opt.describe() if opt else None, "best_epoch": self.best_epoch,
                          "steps": self.steps})


def _accuracy(out: np.ndarray, y: np.ndarray) -> float:
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    if out.shape[1] == 1:
        return float(((out[:, 0] > 0.5) == (y.reshape(-1) > 0.5)).mean())
    return float((out.argmax(axis=1) == y.reshape(-1)).mean())


def _positive_int(value: object, what: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def train(
    net: Network,
    X: object,
    Y: object,
    *,
    optimizer: Optimizer | str = "adam",
    epochs: int = 20,
    batch_size: int = 32,
    backend: str = "numpy",
    dtype: str = "float64",
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    validation: tuple[object, object] | None = None,
    validation_split: float = 0.0,
    patience: int | None = None,
    classification: bool | None = None,
    kernel: Kernel | None = None,
    standardize: bool = False,
    progress: bool = False,
    verbose: bool = False,
) -> TrainResult:
    """Train ``net`` on (X, Y) with an emitted optimiser step.

    Args:
        net: the network.
        X, Y: training data (Y: targets, or integer labels for the built-in cross-entropy).
        optimizer: an :class:`~symnn.optim.Optimizer` (``sn.Adam(lr=1e-3)``) or a name.
        epochs, batch_size: passes over the data and rows per step (the last batch is smaller).
        backend, dtype: as in :func:`symnn.compile`.
        seed: seeds the initial parameters (unless ``params`` is given) and the shuffling; the
            same seed gives bitwise-identical weights on the same backend and machine.
        validation: held-out (X, Y), or ``validation_split`` in [0, 1): that fraction of the
            rows, chosen by the seed, held out.
        patience: stop after this many epochs without a better validation loss and restore the
            best weights (a NaN validation loss never counts as better).
        classification: report validation accuracy (default: when the loss declares
            ``classification``, as cross-entropy and BCE do).
        kernel: a kernel compiled with an optimiser to reuse (skips compiling).
        standardize: fit a :class:`~symnn.persist.Standardizer` on the training rows (after
            the validation split) and train on standardised inputs; the result applies it in
            ``predict`` and saves it.
        progress: show a tqdm progress bar over the epochs (``pip install "symnn[progress]"``;
            without tqdm a warning says so and training goes on without a bar).
        verbose: print one line per epoch.

    Raises:
        ConfigError: bad settings, before any work.
        NonFiniteError: a non-finite loss or parameter, naming the epoch, step and tensor.
    """
    from .driver import compile as compile_kernel

    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    patience = _positive_int(patience, "patience", allow_none=True)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        # NumPy's seeding would refuse it only after the kernels are built, with its own ValueError
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(validation_split, numbers.Real) or not 0.0 <= float(validation_split) < 1.0:
        raise ConfigError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if validation is not None and validation_split:
        raise ConfigError("pass validation=(X, Y) or validation_split, not both")
    if patience is not None and validation is None and not validation_split:
        raise ConfigError("early stopping (patience) needs validation data or a validation_split")
    if kernel is None:
        kernel = compile_kernel(net, backend=backend, dtype=dtype, optimizer=optimizer)
    elif kernel.optimizer is None:
        raise ConfigError("kernel= must be compiled with an optimizer")
    x_all = kernel.inputs(X)
    y_all = kernel.targets(Y, x_all.shape[0])
    rng = np.random.default_rng(seed)
    if validation_split:
        order = rng.permutation(x_all.shape[0])
        n_val = int(round(float(validation_split) * x_all.shape[0]))
        if n_val < 1 or n_val >= x_all.shape[0]:
            raise ShapeError(f"validation_split={validation_split} leaves {n_val} validation rows "
                             f"of {x_all.shape[0]}")
        val_idx, tr_idx = order[:n_val], order[n_val:]
        x_val, y_val = x_all[val_idx], y_all[val_idx]
        x_tr, y_tr = x_all[tr_idx], y_all[tr_idx]
    else:
        x_tr, y_tr = x_all, y_all
        x_val = y_val = None
        if validation is not None:
            x_val = kernel.inputs(validation[0])
            y_val = kernel.targets(validation[1], x_val.shape[0])
    standardizer = None
    if standardize:
        standardizer = Standardizer.fit(x_tr)
        x_tr = kernel.inputs(standardizer.transform(x_tr))
        if x_val is not None:
            x_val = kernel.inputs(standardizer.transform(x_val))
    if classification is None:
        classification = is_classifier(net)
    elif classification and net.several_outputs:
        raise ConfigError("classification=True reports one accuracy; this network has several outputs "
                          "(use predict for each output's labels)")
    if y_tr.dtype.kind == "i" and kernel.backend == "c":
        y_tr = y_tr.astype(np.int32)  # the C labels kernels take int32: convert once
    theta = kernel.pack(params if params is not None else net.init_params(seed=seed, dtype=dtype))
    state = kernel.init_state()
    history = History()
    best = (math.inf, theta.copy(), 0)
    step, n = 0, x_tr.shape[0]
    stale = 0
    bar = _progress_bar(epochs) if progress else None
    dropout_seed = (seed % 2**64,) if net.has_dropout else ()  # masks keyed by (seed, step)
    bounds = _batch_bounds(net, n, batch_size)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        total = 0.0
        for start, stop in bounds:
            idx = order[start:stop]
            step += 1
            try:
                loss = kernel.module._train_step(theta, state, x_tr[idx], y_tr[idx], step, *dropout_seed)
            except (FloatingPointError, NonFiniteError):  # refused: nothing was updated
                raise NonFiniteError(_non_finite(kernel, theta, x_tr[idx], y_tr[idx], epoch, step)) from None
            total += loss * len(idx)
        history.train_loss.append(total / n)
        val_loss = val_acc = math.nan
        if x_val is not None:
            current = kernel.unpack(theta)
            val_loss = kernel.module._loss(current, x_val, y_val)
            if classification:
                val_acc = _accuracy(kernel.module._forward(current, x_val), y_val)
        history.val_loss.append(val_loss)
        history.val_accuracy.append(val_acc)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total / n:.4f}", **({"val": f"{val_loss:.4f}"} if x_val is not None else {}))
        if verbose:
            extra = f", val loss {val_loss:.4f}" if x_val is not None else ""
            extra += f", val accuracy {val_acc:.4f}" if classification and x_val is not None else ""
            print(f"  epoch {epoch:3d}: train loss {total / n:.4f}{extra}")
        if x_val is not None:
            if val_loss < best[0]:  # False for NaN: never an improvement
                best, stale = (val_loss, theta.copy(), epoch), 0
            else:
                stale += 1
                if patience is not None and stale >= patience:
                    break
    if bar is not None:
        bar.close()
    if x_val is not None and best[2] > 0:
        theta, best_epoch = best[1], best[2]
    else:
        best_epoch = len(history.train_loss)
    final = {k: v.copy() for k, v in kernel.unpack(theta).items()}
    return TrainResult(final, history, kernel, best_epoch, step, standardizer)


def _progress_bar(epochs: int):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        import warnings

        warnings.warn('progress=True needs tqdm (pip install "symnn[progress]"); training without a bar',
                      RuntimeWarning, stacklevel=3)
        return None
    return tqdm(total=epochs, unit="epoch", desc="symnn train")


def _batch_bounds(net, n: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of each step's rows: batches of ``batch_size``, the last smaller. A
    last batch of one row joins the one before where a batch norm would see a single value per
    channel in it (its running variance is undefined there, as in PyTorch)."""
    from .batchnorm import single_value_channel

    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1 and single_value_channel(net, 1) is not None:
        starts.pop()
    short = single_value_channel(net, n) if len(starts) == 1 else None
    if short is not None:
        raise DataError(f"{short} has a single value per channel in a training set of {n} row(s); "
                        "train on at least 2 rows")
    return [(s, min(s + batch_size, n) if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def _non_finite(kernel: Kernel, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, epoch: int, step: int) -> str:
    """Name the first parameter (or gradient) tensor holding a non-finite value."""
    params = kernel.unpack(theta)
    bad = [f"parameter {k}" for k, v in params.items() if not np.isfinite(v).all()]
    if not bad:
        with np.errstate(all="ignore"):
            loss, grads = kernel.module._loss_and_grad(params, X, Y)
        bad = [f"gradient of {k}" for k, v in grads.items() if not np.isfinite(v).all()]
        if not bad:  # a finite loss and gradient: the step refused an update that overflowed
            bad = [f"the loss ({loss!r})" if not np.isfinite(loss) else
                   f"the update, which would overflow the weights or the optimiser state (loss {loss!r}; "
                   "nothing was changed)"]
    name = bad[0]
    layer = f" (layer {name.rstrip(')').split()[-1][1:]})" if "parameter" in name or "gradient" in name else ""
    return (f"non-finite value at epoch {epoch}, step {step}: {name}{layer}; lower the learning rate, "
            "standardise the inputs, or clip gradients (clip_norm=...)")
