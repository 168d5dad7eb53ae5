"""From network outputs to predictions, as scikit-learn's ``predict``/``predict_proba`` split them.

A network trained with a classification loss outputs probabilities (softmax rows for
cross-entropy, one sigmoid per output for binary cross-entropy); ``predict`` returns the labels a
user scores against, and ``predict_proba`` the probabilities. Any other loss is a regression: its
output is the prediction. What the output means is read from the loss's declared capabilities
(``classification`` and ``targets``, :mod:`symnn.capabilities`): a user loss that declares
nothing is a regression, whatever its name.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .capabilities import Targets
from .declare import Network


def _argmax(out: np.ndarray) -> np.ndarray:
    return out.argmax(axis=-1)  # (N, K) -> (N,); a sequence's (N, T, K) -> (N, T)


def _threshold(out: np.ndarray) -> np.ndarray:
    return (out > 0.5).astype(np.int64)


#: a classification loss's declared targets -> its probabilities to labels
_LABELS: dict[Targets, Callable[[np.ndarray], np.ndarray]] = {
    Targets.ONE_HOT_OR_LABELS: _argmax,  # one distribution per row: the likeliest class
    Targets.PROBABILITY: _threshold,  # one probability per output: each output's 0/1
}


def is_classifier(net: Network) -> bool:
    """True when ``net``'s one output is class probabilities (its loss declares
    ``classification``); a network with several outputs has no single accuracy."""
    return not net.several_outputs and net.loss.classification


def labels(net: Network, out: "np.ndarray | dict[str, np.ndarray]") -> "np.ndarray | dict[str, np.ndarray]":
    """``predict``'s answer for the output ``out``: class indices (N,) for cross-entropy
    ((N, T) for a sequence output),
    0/1 per output (N, K) for binary cross-entropy, ``out`` itself for a regression; with
    several outputs (a dict keyed by their names), each output's answer by its own loss."""
    if isinstance(out, dict):
        return {name: _LABELS[loss.targets](out[name]) if loss.classification else out[name]
                for name, loss in zip(net.output_names, net.losses)}
    if not is_classifier(net):
        return out
    return _LABELS[net.loss.targets](out)
