"""A training run's state on disk, so that a run stopped anywhere (a killed driver, a lost
cluster) resumes where the last checkpoint left it and ends with the parameters an undisturbed
run gives, bit for bit.

What is kept: the flat parameters and optimiser state, the epoch and step reached, the history,
the early-stopping state (best validation loss, its parameters and epoch, epochs without
improvement) and the shuffling generator's state. The batches of later epochs depend only on
those (and on the seed), so nothing else is needed. A fingerprint of the run's settings (the
emitted kernel's source, seed, batch size, data sizes) is stored too: a checkpoint of another
run is refused rather than silently continued.

The file is an ``.npz`` (NumPy arrays, ``allow_pickle=False`` on reading: a checkpoint cannot
run code), written whole or not at all (:func:`symnn.fileio.staged`).
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ModelFormatError
from .fileio import staged

FORMAT = "symnn-checkpoint-1"


@dataclass
class Checkpoint:
    """The state of a run after ``epoch`` epochs (``step`` optimiser steps)."""

    epoch: int
    step: int
    theta: np.ndarray
    state: np.ndarray
    train_loss: list[float]
    val_loss: list[float]
    val_accuracy: list[float]
    best_loss: float
    best_theta: np.ndarray
    best_epoch: int
    stale: int
    rng_state: dict[str, Any] | None


def fingerprint(**settings: Any) -> str:
    """A digest of the settings that decide a run's arithmetic (JSON of them, sorted)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def save(path: str | Path, digest: str, cp: Checkpoint) -> None:
    """Write ``cp`` atomically to ``path``."""
    meta = {"format": FORMAT, "fingerprint": digest, "epoch": cp.epoch, "step": cp.step,
            "best_loss": None if math.isinf(cp.best_loss) else cp.best_loss, "best_epoch": cp.best_epoch,
            "stale": cp.stale, "rng_state": cp.rng_state}
    target = Path(path)
    with staged(target, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)), theta=cp.theta, state=cp.state,
                     best_theta=cp.best_theta, train_loss=np.asarray(cp.train_loss, dtype=np.float64),
                     val_loss=np.asarray(cp.val_loss, dtype=np.float64),
                     val_accuracy=np.asarray(cp.val_accuracy, dtype=np.float64))


def load(path: str | Path, digest: str, theta_like: np.ndarray, state_like: np.ndarray) -> Checkpoint | None:
    """The checkpoint at ``path`` (None if there is no file), checked against this run's
    fingerprint and array shapes."""
    target = Path(path)
    if not target.exists():
        return None
    try:
        with np.load(target, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k: np.array(data[k]) for k in ("theta", "state", "best_theta", "train_loss", "val_loss",
                                                      "val_accuracy")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{target} is not a symnn checkpoint: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFormatError(f"{target} is not a {FORMAT} file")
    if meta.get("fingerprint") != digest:
        raise ConfigError(f"{target} is the checkpoint of another run (different network, optimiser, seed, "
                          "batch size or data); remove it or pass another checkpoint path")
    for name, like in (("theta", theta_like), ("state", state_like), ("best_theta", theta_like)):
        if arrays[name].shape != like.shape or arrays[name].dtype != like.dtype:
            raise ModelFormatError(f"{target}: {name} has shape {arrays[name].shape} {arrays[name].dtype}, "
                                   f"expected {like.shape} {like.dtype}")
    try:
        epoch, step, best_epoch, stale = (int(meta[k]) for k in ("epoch", "step", "best_epoch", "stale"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{target}: bad counters in its header: {exc}") from exc
    best = meta.get("best_loss")
    return Checkpoint(epoch, step, arrays["theta"], arrays["state"], arrays["train_loss"].tolist(),
                      arrays["val_loss"].tolist(), arrays["val_accuracy"].tolist(),
                      math.inf if best is None else float(best), arrays["best_theta"], best_epoch, stale,
                      meta.get("rng_state"))


def positive_every(value: object) -> int:
    """``checkpoint_every``: a positive number of epochs."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"checkpoint_every must be a positive number of epochs, got {value!r}")
    return value
