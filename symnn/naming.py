"""Every name that appears in emitted code and in LaTeX, in one place.

Emitted code and the printed derivation share one scheme: pre-activation ``z1``, activation
``a1``, gradients ``dL_dW1``; CSE temporaries ``t0, t1, ...``; batch size ``N``.
"""

from __future__ import annotations

import sympy as sp

#: Batch size: the only run-time dimension.
N = sp.Symbol("N", integer=True, positive=True)


def weight(layer: int) -> str:
    return f"W{layer}"


def bias(layer: int) -> str:
    return f"b{layer}"


def preact(layer: int) -> str:
    return f"z{layer}"


def act(layer: int) -> str:
    return f"a{layer}"


def grad(name: str) -> str:
    return f"dL_d{name}"


def width_symbol(layer: int) -> sp.Symbol:
    """Symbolic width n_l of layer l's output (n_0 is the input width)."""
    return sp.Symbol(f"n_{layer}", integer=True, positive=True)


def temporaries(prefix: str = "t"):
    """The one numbered-symbol generator used for CSE, so output is byte-stable."""
    return sp.numbered_symbols(prefix)
