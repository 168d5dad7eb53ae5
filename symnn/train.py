"""Mini-batch training over an emitted ``train_step`` kernel.

The loop is deliberately thin: the optimiser is emitted code (see :mod:`symnn.optim`), the data
are validated once up front, and each step calls the kernel's unchecked ``_train_step`` on the
flat parameter vector. What stays in Python: seeded shuffling, the validation split, early
stopping (restoring the best weights), the history, and the non-finite guard.
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .decision import is_classifier
from .declare import Network
from .errors import ConfigError, DataError, NonFiniteError, PaddingOnlyError, ShapeError
from .kernel import IGNORE_LABEL, Kernel
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
    """The fraction of rows (of a sequence output (N, T, K): of steps) whose arg-max output is
    the label (one-hot rows: their arg-max), or that are on its side of 0.5 for one output."""
    k = out.shape[-1]
    labelled = None
    if k > 1 and y.size == out.size:  # one-hot targets (a sequence's rows of zeros: padded steps)
        rows = y.reshape(out.shape)
        labelled = rows.any(axis=-1) if out.ndim == 3 else None
        y = rows.argmax(axis=-1)
    if y.size != out.size // k:
        raise ShapeError(f"accuracy: {y.shape} labels for outputs of shape {out.shape}")
    y = y.reshape(out.shape[:-1])
    if out.ndim == 3 and labelled is None:  # a sequence's labels: IGNORE_LABEL at a padded step
        labelled = y != IGNORE_LABEL
    if k == 1:
        return float(((out[..., 0] > 0.5) == (y > 0.5)).mean())
    right = out.argmax(axis=-1) == y
    return float(right.mean() if labelled is None else right[labelled].mean())


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
    client: object = None,
    parts: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
) -> TrainResult:
    """Train ``net`` on (X, Y) with an emitted optimiser step.

    Args:
        net: the network.
        X, Y: training data (Y: targets, or integer labels for the built-in cross-entropy):
            arrays, or dask arrays / DataFrames partitioned alike along rows (data-parallel
            training: each partition is a part, see ``parts``; :func:`symnn.distributed.read_parquet`
            reads a Parquet dataset so).
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
        client: train data-parallel on Dask (``pip install "symnn[distributed]"``): a
            ``distributed.Client``, ``"local:N"`` (a LocalCluster of N processes for this call)
            or a scheduler address. Each worker builds the kernel from its recipe and computes
            the gradient of its parts' blocks; the blocks' gradients are summed along one fixed
            tree, so the parameters are bitwise equal to ``client=None`` with the same ``parts``,
            on any number of workers (docs/scale_out.md).
        parts: split in-memory training rows into this many contiguous parts; each step trains
            on a block of every part (``numpy.array_split`` of a seeded shuffle of the part), one
            gradient per block, summed along the fixed tree. Without ``client`` this is the
            single-process reference of a data-parallel run. Default: one part per worker with a
            client; the classic single-batch step (a global shuffle) without one.
        checkpoint: a file that keeps the run's state every ``checkpoint_every`` epochs (written
            atomically); if it exists when training starts, the run resumes from it and ends with
            the parameters an undisturbed run gives. A checkpoint of other settings is refused.

    Raises:
        ConfigError: bad settings, before any work.
        NonFiniteError: a non-finite loss or parameter, naming the epoch, step and tensor.
        WorkerLostError: data-parallel training lost its workers on every retry of a step.
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
    if standardize and net.has_run_time_length:
        raise ConfigError("standardize=True fits each input column's mean and deviation; the sequences of "
                          f"network {net.name!r} have a run-time length, so their columns differ from call "
                          "to call: standardize the features before fit")
    plan = _parallel_plan(X, Y, client, parts, validation_split, standardize)
    every = _checkpoint_plan(checkpoint, checkpoint_every)
    if kernel is None:
        kernel = compile_kernel(net, backend=backend, dtype=dtype, optimizer=optimizer)
    elif kernel.optimizer is None:
        raise ConfigError("kernel= must be compiled with an optimizer")
    rng = np.random.default_rng(seed)
    if plan.dask:
        x_tr = y_tr = None
    else:
        x_all = kernel.inputs(X)
        y_all = kernel.targets(Y, x_all.shape[0], kernel.length(x_all))
    x_val = y_val = None
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
        if not plan.dask:
            x_tr, y_tr = x_all, y_all
        if validation is not None:
            x_val = kernel.inputs(validation[0])
            y_val = kernel.targets(validation[1], x_val.shape[0], kernel.length(x_val))
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
    if y_tr is not None:
        y_tr = kernel.training_targets(y_tr)
    theta = kernel.pack(params if params is not None else net.init_params(seed=seed, dtype=dtype))
    state = kernel.init_state()
    with _steps(plan, kernel, X, Y, x_tr, y_tr, batch_size, seed, rng) as steps:
        return _epochs(kernel, steps, theta, state, epochs, x_val, y_val, classification, patience,
                       progress, verbose, standardizer, checkpoint, every)


@dataclass(frozen=True)
class _Plan:
    """How the steps of a run are computed: the classic one-batch step, or blocks of parts (in
    this process, or on a Dask cluster)."""

    client: object
    parts: int | None
    dask: bool

    @property
    def blocks(self) -> bool:
        return self.client is not None or self.parts is not None or self.dask


def _parallel_plan(X: object, Y: object, client: object, parts: object, validation_split: object,
                   standardize: bool) -> _Plan:
    """Check the data-parallel settings before any work."""
    from .distributed.cluster import check_client_argument
    from .distributed.parts import is_distributed_source, positive_parts

    check_client_argument(client)
    dask = is_distributed_source(X, Y)
    if parts is not None:
        positive_parts(parts)
    if dask and parts is not None:
        raise ConfigError("parts= is for in-memory arrays; dask data are parted by their row chunks or partitions "
                          "(rechunk or repartition to choose them)")
    if dask and (validation_split or standardize):
        raise ConfigError("validation_split and standardize need the training rows in memory; with dask data pass "
                          "validation=(X, Y) and standardise the data beforehand")
    return _Plan(client, None if parts is None else int(parts), dask)


def _checkpoint_plan(checkpoint: object, every: object) -> int:
    from .checkpoint import positive_every

    if checkpoint is not None and not isinstance(checkpoint, (str, Path)):
        raise ConfigError(f"checkpoint must be a file path, got {type(checkpoint).__name__}")
    return positive_every(every)


class _OneBatchSteps:
    """The classic step: a global shuffle each epoch, each batch one call of the emitted
    ``train_step``."""

    def __init__(self, kernel: Kernel, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                 rng: np.random.Generator) -> None:
        self.kernel, self.x, self.y, self.rng = kernel, x, y, rng
        self.n = x.shape[0]
        self.bounds = _batch_bounds(kernel.network, self.n, batch_size)
        self.dropout_seed = (seed % 2**64,) if kernel.network.has_dropout else ()  # masks keyed by (seed, step)
        self.settings = {"rows": self.n, "batch_size": batch_size, "seed": seed}

    def epoch(self, epoch: int, theta: np.ndarray, state: np.ndarray, step: int) -> tuple[float, int]:
        """One pass: each batch one step, but a batch of padded sequences that holds no step
        the loss keeps (PaddingOnlyError: its mean loss is 0/0), which teaches nothing and is
        skipped, no step counted (Adam's bias correction, the dropout masks' keys); the epoch's
        loss is the mean over the rows of the batches taken. (The C kernel would refuse it with
        SYMNN_ERR_EMPTY, the NumPy module compute NaN: the data were checked once, not per batch.)"""
        order = self.rng.permutation(self.n)
        total, rows = 0.0, 0
        kernel, module = self.kernel, self.kernel.module
        for start, stop in self.bounds:
            idx = order[start:stop]
            x, y = self.x[idx], self.y[idx]
            if kernel.padded_steps and not kernel.holds_a_step(x, y):
                continue
            step += 1
            try:
                loss = module._train_step(theta, state, x, y, step, *self.dropout_seed)
            except (FloatingPointError, NonFiniteError):  # refused: nothing was updated
                raise NonFiniteError(_non_finite(kernel, theta, x, y, epoch, step)) from None
            total += loss * len(idx)
            rows += len(idx)
        if rows == 0:
            raise PaddingOnlyError(f"epoch {epoch}: every batch is padding only (no step the loss keeps)")
        return total / rows, step

    def rng_state(self) -> dict | None:
        return self.rng.bit_generator.state

    def restore(self, state: dict | None) -> None:
        if state is not None:
            self.rng.bit_generator.state = state


class _BlockSteps:
    """Data-parallel steps: every part gives a block, the blocks' gradients are summed along
    the schedule's tree (:mod:`symnn.distributed.schedule`), then the emitted update runs
    (``apply_gradient``) here, on the driver."""

    def __init__(self, kernel: Kernel, runner, batch_size: int, seed: int) -> None:
        from .distributed.schedule import Schedule

        self.kernel, self.runner = kernel, runner
        self.schedule = Schedule(tuple(runner.sizes), batch_size, seed)
        from .batchnorm import single_value_channel

        smallest = min(n // self.schedule.steps_per_epoch for n in self.schedule.sizes)
        short = single_value_channel(kernel.network, max(smallest, 1)) if smallest < 2 else None
        if short is not None:
            raise DataError(f"{short} would see a block of {smallest} row(s) of a part (parts of {min(runner.sizes)} "
                            f"rows dealt into {self.schedule.steps_per_epoch} steps): its running variance is "
                            "undefined there; use fewer parts or a larger batch_size")
        self.settings = {"sizes": list(self.schedule.sizes), "batch_size": batch_size, "seed": seed, "blocks": True}

    def epoch(self, epoch: int, theta: np.ndarray, state: np.ndarray, step: int) -> tuple[float, int]:
        from .distributed.schedule import step_mean

        schedule = self.schedule
        total, taken = 0.0, 0
        for s in range(schedule.steps_per_epoch):
            rows = sum(schedule.step_rows(epoch, s))
            if rows == 0:  # no part has a row left for this step (tiny parts, batch_size 1)
                continue
            vec = self.runner.step(schedule, theta, epoch, s, step + 1)
            if vec is None:  # every block of the step is padding only: no step (as _OneBatchSteps)
                continue
            vec = step_mean(self.kernel, vec)
            step += 1
            loss = float(vec[-1])
            try:
                self.kernel.module._apply_gradient(theta, state, vec[:-1], step, loss)
            except (FloatingPointError, NonFiniteError) as exc:
                raise NonFiniteError(f"epoch {epoch}, step {step}: {exc}") from None
            total += loss * rows
            taken += 1
        if taken == 0:
            raise PaddingOnlyError(f"epoch {epoch}: every block is padding only (no step the loss keeps)")
        return total / schedule.n_rows, step

    def rng_state(self) -> dict | None:
        return None  # the blocks depend on (seed, epoch, part) only

    def restore(self, state: dict | None) -> None:
        pass


@contextmanager
def _steps(plan: _Plan, kernel: Kernel, X: object, Y: object, x_tr, y_tr, batch_size: int, seed: int,
           rng: np.random.Generator) -> Iterator[object]:
    """The run's step strategy, with the cluster (and the parts on it) open for the run."""
    if not plan.blocks:
        yield _OneBatchSteps(kernel, x_tr, y_tr, batch_size, seed, rng)
        return
    from .distributed import parts as parts_mod
    from .distributed.executor import ClusterSteps, LocalSteps
    from .distributed.worker import recipe_of

    recipe = recipe_of(kernel, seed)
    if plan.client is None:
        source = (parts_mod.from_dask(X, Y) if plan.dask else parts_mod.in_memory(x_tr, y_tr, plan.parts))
        runner = LocalSteps(recipe, source)
        try:
            yield _BlockSteps(kernel, runner, batch_size, seed)
        finally:
            runner.close()
        return
    from .distributed.cluster import connect

    with connect(plan.client) as client:
        if plan.dask:
            source = parts_mod.from_dask(X, Y)
        else:
            n_parts = plan.parts if plan.parts is not None else len(client.scheduler_info(n_workers=-1)["workers"])
            source = parts_mod.in_memory(x_tr, y_tr, n_parts)
        runner = ClusterSteps(client, recipe, source)
        try:
            yield _BlockSteps(kernel, runner, batch_size, seed)
        finally:
            runner.close()


def _epochs(kernel: Kernel, steps, theta: np.ndarray, state: np.ndarray, epochs: int, x_val, y_val,
            classification: bool, patience: int | None, progress: bool, verbose: bool,
            standardizer: Standardizer | None, checkpoint: str | Path | None, every: int) -> TrainResult:
    """The epochs: steps, validation, early stopping, history, checkpoints."""
    from . import checkpoint as ckpt

    history = History()
    best = (math.inf, theta.copy(), 0)
    step, stale, first = 0, 0, 1
    digest = ""
    if checkpoint is not None:
        digest = ckpt.fingerprint(source=kernel.source, backend=kernel.backend, **steps.settings,
                                  validation=None if x_val is None else int(x_val.shape[0]))
        saved = ckpt.load(checkpoint, digest, theta, state)
        if saved is not None:
            theta[...], state[...] = saved.theta, saved.state
            history = History(saved.train_loss, saved.val_loss, saved.val_accuracy)
            best = (saved.best_loss, saved.best_theta, saved.best_epoch)
            step, stale, first = saved.step, saved.stale, saved.epoch + 1
            steps.restore(saved.rng_state)
            if verbose:
                print(f"  resumed from {checkpoint} after epoch {saved.epoch}")
    bar = _progress_bar(epochs) if progress else None
    if bar is not None and first > 1:
        bar.update(first - 1)  # the epochs the checkpoint already holds
    stopped = patience is not None and stale >= patience and first > 1
    for epoch in range(first, epochs + 1):
        if stopped:
            break
        mean_loss, step = steps.epoch(epoch, theta, state, step)
        history.train_loss.append(mean_loss)
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
            bar.set_postfix(loss=f"{mean_loss:.4f}", **({"val": f"{val_loss:.4f}"} if x_val is not None else {}))
        if verbose:
            extra = f", val loss {val_loss:.4f}" if x_val is not None else ""
            extra += f", val accuracy {val_acc:.4f}" if classification and x_val is not None else ""
            print(f"  epoch {epoch:3d}: train loss {mean_loss:.4f}{extra}")
        if x_val is not None:
            if val_loss < best[0]:  # False for NaN: never an improvement
                best, stale = (val_loss, theta.copy(), epoch), 0
            else:
                stale += 1
                stopped = patience is not None and stale >= patience
        if checkpoint is not None and (epoch % every == 0 or epoch == epochs or stopped):
            ckpt.save(checkpoint, digest, ckpt.Checkpoint(epoch, step, theta, state, history.train_loss,
                                                          history.val_loss, history.val_accuracy, best[0],
                                                          best[1], best[2], stale, steps.rng_state()))
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
    layer = ""
    if "parameter" in name or "gradient" in name:  # a layer graph's "fc.weight", a list of Dense's "W1"
        key = name.split()[-1]
        layer = f" (layer {key.rsplit('.', 1)[0] if '.' in key else key[1:]})"
    return (f"non-finite value at epoch {epoch}, step {step}: {name}{layer}; lower the learning rate, "
            "standardise the inputs, or clip gradients (clip_norm=...)")
