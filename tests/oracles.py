"""PyTorch autograd as an independent oracle for networks of built-in activations and losses."""

from __future__ import annotations

import importlib.util
from typing import Mapping

import numpy as np

import symnn as sn

HAS_TORCH = importlib.util.find_spec("torch") is not None
TORCH_ACTIVATIONS = {"tanh", "sigmoid", "relu", "identity", "elu", "silu", "swish", "gelu", "softplus",
                     "softsign", "leaky_relu", "softmax"}


def torch_supports(net: sn.Network) -> bool:
    """Only built-in activations with default parameters and built-in losses."""
    return (not net.loss.user and all(
        layer.activation.name in TORCH_ACTIVATIONS and not layer.activation.user for layer in net.layers))


def torch_loss_and_grad(net: sn.Network, p: Mapping[str, np.ndarray], X: np.ndarray,
                        Y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """Loss (with symnn's L1/L2 conventions: weights only) and gradients by torch autograd, float64."""
    import torch
    import torch.nn.functional as F

    acts = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "identity": lambda t: t,
            "elu": F.elu, "silu": F.silu, "swish": F.silu, "gelu": F.gelu, "softplus": F.softplus,
            "softsign": F.softsign, "leaky_relu": F.leaky_relu, "softmax": lambda t: torch.softmax(t, dim=1)}
    tp = {k: torch.tensor(np.asarray(v, np.float64), requires_grad=True) for k, v in p.items()}
    a = torch.tensor(np.asarray(X, np.float64))
    n_layers = len(net.layers)
    for i, layer in enumerate(net.layers, 1):
        z = a @ tp[f"W{i}"].T + tp[f"b{i}"]
        if i == n_layers and net.loss.name == "cross_entropy":
            loss = F.cross_entropy(z, torch.tensor(np.asarray(Y)))
            break
        a = acts[layer.activation.name](z)
    else:
        ty = torch.tensor(np.asarray(Y, np.float64))
        loss = F.binary_cross_entropy(a, ty) if net.loss.name == "bce" else F.mse_loss(a, ty)
    weights = [tp[f"W{i}"] for i in range(1, n_layers + 1)]
    if net.l2:
        loss = loss + net.l2 / 2 * sum((w ** 2).sum() for w in weights)
    if net.l1:
        loss = loss + net.l1 * sum(w.abs().sum() for w in weights)
    loss.backward()
    return float(loss.item()), {k: v.grad.numpy() for k, v in tp.items()}
