"""The bundled real dataset: UCI optical handwritten digits (8x8, 1,797 images)."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: X (1797, 64) float64 pixels in 0..16, y (1797,) int labels 0..9."""
    with resources.files("symnn.data").joinpath("digits.csv.gz").open("rb") as fh:
        data = np.loadtxt(gzip.open(fh), delimiter=",")
    return data[:, :64], data[:, 64].astype(np.int64)


def train_test_split(X: np.ndarray, y: np.ndarray, test_fraction: float = 0.25, seed: int = 0):
    """Seeded shuffled split, stratification-free (the digits classes are balanced)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    n_test = int(round(len(X) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return X[train], X[test], y[train], y[test]
