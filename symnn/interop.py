"""PyTorch interop: ``from_torch`` turns an ``nn.Sequential`` of Linear and activation layers into
a :class:`~symnn.declare.Network` and its parameters; ``to_state_dict`` goes back.

PyTorch is imported only inside these functions: it stays an optional dependency.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .declare import Activation, Dense, Network
from .errors import SpecError, SpecTypeError

#: torch module class name -> symnn activation (name, parameter attributes to carry over)
_ACTIVATIONS = {
    "Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}), "ReLU": ("relu", {}), "Identity": ("identity", {}),
    "LeakyReLU": ("leaky_relu", {"alpha": "negative_slope"}), "ELU": ("elu", {"alpha": "alpha"}),
    "Softplus": ("softplus", {}), "SiLU": ("silu", {}), "GELU": ("gelu", {}), "Softsign": ("softsign", {}),
    "Softmax": ("softmax", {}),
}


def from_torch(module: Any, *, loss: object = None, name: str = "torch_mlp",
               dtype: str = "float64") -> tuple[Network, dict[str, np.ndarray]]:
    """``(network, params)`` from ``nn.Sequential(Linear, act, Linear, act, ...)``.

    Each Linear may be followed by at most one activation (none means identity). The loss is
    not part of a torch module: pass ``loss=`` (default ``"cross_entropy"`` after a Softmax,
    ``"bce"`` after a Sigmoid with one output, else ``"mse"``). ``Softmax`` must act on the last
    dimension; ``Softplus`` must have its default beta and threshold; ``GELU`` must be exact.

    Raises:
        SpecTypeError: not an ``nn.Sequential`` / an unsupported layer (named, with its index).
        SpecError: a structural problem (activation first, two activations in a row...).
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - only without the oracle extra
        raise SpecTypeError('from_torch needs PyTorch: pip install "symnn[oracle]"') from exc
    if not isinstance(module, torch.nn.Sequential):
        raise SpecTypeError(f"from_torch expects an nn.Sequential, got {type(module).__name__}")
    layers: list[tuple[Any, Activation | None]] = []
    for idx, child in enumerate(module):
        kind = type(child).__name__
        if isinstance(child, torch.nn.Linear):
            layers.append((child, None))
            continue
        if kind not in _ACTIVATIONS:
            raise SpecTypeError(f"layer {idx} ({kind}) is not supported; from_torch handles Linear and "
                                f"{', '.join(sorted(_ACTIVATIONS))}")
        if not layers or layers[-1][1] is not None:
            raise SpecError(f"layer {idx} ({kind}) must follow a Linear layer")
        act_name, carried = _ACTIVATIONS[kind]
        _check_variant(child, kind, idx)
        params = {ours: float(getattr(child, theirs)) for ours, theirs in carried.items()}
        layers[-1] = (layers[-1][0], Activation.builtin(act_name, **params))
    if not layers:
        raise SpecError("the Sequential has no Linear layer")
    dense, values = [], {}
    for i, (linear, act) in enumerate(layers, 1):
        dense.append(Dense(linear.in_features, linear.out_features, act or "identity"))
        values[f"W{i}"] = linear.weight.detach().cpu().numpy().astype(dtype)
        bias = linear.bias.detach().cpu().numpy() if linear.bias is not None else np.zeros(linear.out_features)
        values[f"b{i}"] = bias.astype(dtype)
    if loss is None:
        last = dense[-1].activation
        loss = ("cross_entropy" if last.is_rowwise else
                "bce" if last.name == "sigmoid" and dense[-1].out_features == 1 else "mse")
    return Network(dense, loss=loss, name=name), values


def _check_variant(child: Any, kind: str, idx: int) -> None:
    if kind == "Softmax" and child.dim not in (-1, 1, None):
        raise SpecTypeError(f"layer {idx}: Softmax(dim={child.dim}) is not row-wise; use dim=-1")
    if kind == "Softplus" and (child.beta != 1 or child.threshold != 20):
        raise SpecTypeError(f"layer {idx}: only Softplus(beta=1, threshold=20) is supported")
    if kind == "GELU" and child.approximate != "none":
        raise SpecTypeError(f"layer {idx}: only the exact GELU is supported (approximate='none')")


def to_state_dict(net: Network, params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as the ``state_dict`` of the ``nn.Sequential`` that ``from_torch`` reads
    (keys ``"0.weight"``, ``"0.bias"``, ``"2.weight"``... with one module per activation)."""
    import torch

    out, idx = {}, 0
    for i, layer in enumerate(net.layers, 1):
        out[f"{idx}.weight"] = torch.tensor(np.asarray(params[f"W{i}"]))
        out[f"{idx}.bias"] = torch.tensor(np.asarray(params[f"b{i}"]))
        idx += 1 if layer.activation.name == "identity" else 2
    return out
