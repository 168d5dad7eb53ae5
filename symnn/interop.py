"""Interop: ``from_torch`` turns an ``nn.Sequential`` of Linear and activation layers, and
``from_onnx`` an ONNX MLP, into a :class:`~symnn.declare.Network` and its parameters;
``to_state_dict`` goes back to PyTorch.

PyTorch and onnx are imported only inside these functions: they stay optional dependencies.
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
    triples = []
    for linear, act in layers:
        w = linear.weight.detach().cpu().numpy()
        b = linear.bias.detach().cpu().numpy() if linear.bias is not None else np.zeros(linear.out_features)
        triples.append((w, b, act))
    return _assemble(triples, loss, name, dtype)


def _assemble(layers: list, loss: object, name: str, dtype: str) -> tuple[Network, dict[str, np.ndarray]]:
    """Network and parameters from ``[(W (out, in), b, activation or None)]``; the default loss
    follows the last activation (softmax: cross-entropy, one sigmoid output: BCE, else MSE)."""
    dense, values = [], {}
    for i, (w, b, act) in enumerate(layers, 1):
        dense.append(Dense(int(w.shape[1]), int(w.shape[0]), act or "identity"))
        values[f"W{i}"] = np.array(w, dtype=dtype, order="C", copy=True)  # never share the source's memory
        values[f"b{i}"] = np.array(b, dtype=dtype, order="C", copy=True)
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


#: ONNX activation op -> (symnn activation, attribute -> parameter, ONNX default)
_ONNX_ACTIVATIONS = {
    "Relu": ("relu", {}), "Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}), "Softmax": ("softmax", {}),
    "LeakyRelu": ("leaky_relu", {"alpha": ("alpha", 0.01)}), "Elu": ("elu", {"alpha": ("alpha", 1.0)}),
    "Softplus": ("softplus", {}), "Softsign": ("softsign", {}), "Identity": ("identity", {}),
}


def from_onnx(model: Any, *, loss: object = None, name: str = "onnx_mlp",
              dtype: str = "float64") -> tuple[Network, dict[str, np.ndarray]]:
    """``(network, params)`` from an ONNX MLP: a chain of ``Gemm`` (or ``MatMul`` + ``Add``)
    with weights in initializers, each optionally followed by one activation (Relu, Sigmoid,
    Tanh, Softmax on the last axis, LeakyRelu, Elu, Softplus, Softsign). ``model`` is an
    ``onnx.ModelProto`` or a path. Needs the optional ``onnx`` package (``symnn[onnx]``).

    Raises:
        SpecTypeError: an op or attribute outside that subset, naming the node.
        SpecError: a graph that is not one straight chain.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - only without the extra
        raise SpecTypeError('from_onnx needs onnx: pip install "symnn[onnx]"') from exc
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    if len(graph.input) - sum(i.name in init for i in graph.input) != 1:
        raise SpecError("the ONNX graph must have exactly one data input")
    current = next(i.name for i in graph.input if i.name not in init)
    layers: list[list[Any]] = []  # [W (out, in), b, activation]
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        where = f"node {node.name or node.op_type} ({node.op_type})"
        if node.input and node.input[0] != current:
            raise SpecError(f"{where}: the graph is not a single chain (its input is {node.input[0]!r})")
        if node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise SpecTypeError(f"{where}: only Gemm with transA=0, alpha=1, beta=1 is supported")
            w = init[node.input[1]]
            w = w if attrs.get("transB", 0) else w.T  # symnn stores W as (out, in)
            b = init[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0])
            layers.append([w, np.broadcast_to(b, (w.shape[0],)), None])
        elif node.op_type == "MatMul":
            layers.append([init[node.input[1]].T, np.zeros(init[node.input[1]].shape[1]), None])
        elif node.op_type == "Add":
            if not layers or layers[-1][2] is not None or node.input[1] not in init:
                raise SpecError(f"{where}: Add must follow MatMul, with the bias as an initializer")
            layers[-1][1] = layers[-1][1] + init[node.input[1]].reshape(-1)
        elif node.op_type in _ONNX_ACTIVATIONS:
            if not layers or layers[-1][2] is not None:
                raise SpecError(f"{where}: an activation must follow Gemm or MatMul(+Add)")
            act_name, params = _ONNX_ACTIVATIONS[node.op_type]
            if node.op_type == "Softmax" and attrs.get("axis", -1) not in (-1, 1):
                raise SpecTypeError(f"{where}: Softmax must act on the last axis")
            values = {ours: float(attrs.get(attr, default)) for ours, (attr, default) in params.items()}
            layers[-1][2] = Activation.builtin(act_name, **values)
        else:
            raise SpecTypeError(f"{where} is not supported; from_onnx reads Gemm, MatMul, Add and "
                                f"{', '.join(sorted(_ONNX_ACTIVATIONS))}")
        current = node.output[0]
    if not layers:
        raise SpecError("the ONNX graph has no Gemm or MatMul")
    return _assemble(layers, loss, name, dtype)
