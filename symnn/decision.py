"""From network outputs to predictions, as scikit-learn's ``predict``/``predict_proba`` split them.

A network trained with a classification loss outputs probabilities (softmax rows for
cross-entropy, one sigmoid per output for binary cross-entropy); ``predict`` returns the labels a
user scores against, and ``predict_proba`` the probabilities. Any other loss is a regression: its
output is the prediction. The table is keyed by the built-in loss that fixes the meaning of the
output; a user loss says nothing about it, so its output is returned as is.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .declare import Network


def _argmax(out: np.ndarray) -> np.ndarray:
    return out.argmax(axis=1)


def _threshold(out: np.ndarray) -> np.ndarray:
    return (out > 0.5).astype(np.int64)


#: built-in classification loss -> probabilities to labels
_LABELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"cross_entropy": _argmax, "bce": _threshold}


def is_classifier(net: Network) -> bool:
    """True when ``net``'s output is class probabilities (a built-in classification loss)."""
    return not net.loss.user and net.loss.name in _LABELS


def labels(net: Network, out: np.ndarray) -> np.ndarray:
    """``predict``'s answer for the output ``out``: class indices (N,) for cross-entropy,
    0/1 per output (N, K) for binary cross-entropy, ``out`` itself for a regression."""
    if not is_classifier(net):
        return out
    return _LABELS[net.loss.name](out)
