"""Interop: ``from_torch`` turns an ``nn.Sequential`` of Linear, activation and Dropout layers,
and ``from_onnx`` an ONNX MLP, into a :class:`~symnn.declare.Network` and its parameters;
``to_state_dict`` goes back to PyTorch.

PyTorch and onnx are imported only inside these functions: they stay optional dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """``(network, params)`` from ``nn.Sequential(Linear, act, Dropout, Linear, act, ...)``.

    Each Linear may be followed by at most one activation (none means identity), then at most
    one ``nn.Dropout(p)``, which becomes the layer's ``dropout=p``: the identity in ``forward``,
    ``loss`` and ``loss_and_grad`` (torch's ``eval()``), inverted dropout in ``train_step``
    (torch's ``train()``). As in symnn, dropout applies to hidden layers: a Dropout before the
    first Linear or after the last layer is refused. The loss is not part of a torch module:
    pass ``loss=`` (default ``"cross_entropy"`` after a Softmax, ``"bce"`` after a Sigmoid with
    one output, else ``"mse"``). ``Softmax`` must act on the last dimension; ``Softplus`` must
    have its default beta and threshold; ``GELU`` must be exact.

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
    layers: list[_TorchLayer] = []
    for idx, child in enumerate(module):
        kind = type(child).__name__
        if isinstance(child, torch.nn.Linear):
            layers.append(_TorchLayer(child))
            continue
        if type(child) is torch.nn.Dropout:  # the exact class: AlphaDropout, Dropout1d... differ
            _add_dropout(layers, child, idx)
            continue
        if kind not in _ACTIVATIONS:
            raise SpecTypeError(f"layer {idx} ({kind}) is not supported; from_torch handles Linear, Dropout "
                                f"and {', '.join(sorted(_ACTIVATIONS))}")
        if not layers or layers[-1].activation is not None or layers[-1].dropout_at is not None:
            dropped = bool(layers) and layers[-1].dropout_at is not None
            after = " (a Dropout goes after the activation)" if dropped else ""
            raise SpecError(f"layer {idx} ({kind}) must follow a Linear layer{after}")
        act_name, carried = _ACTIVATIONS[kind]
        _check_variant(child, kind, idx)
        params = {ours: float(getattr(child, theirs)) for ours, theirs in carried.items()}
        layers[-1].activation = Activation.builtin(act_name, **params)
    if not layers:
        raise SpecError("the Sequential has no Linear layer")
    if layers[-1].dropout_at is not None:
        raise SpecError(f"layer {layers[-1].dropout_at} (Dropout) follows the output layer; symnn applies "
                        "dropout to hidden layers only (remove it: at inference it is the identity)")
    rows = []
    for layer in layers:
        linear = layer.linear
        w = linear.weight.detach().cpu().numpy()
        b = linear.bias.detach().cpu().numpy() if linear.bias is not None else np.zeros(linear.out_features)
        rows.append((w, b, layer.activation, layer.dropout))
    return _assemble(rows, loss, name, dtype)


@dataclass
class _TorchLayer:
    """One Linear of a Sequential, with the activation and Dropout read after it so far."""

    linear: Any
    activation: Activation | None = None
    dropout: float = 0.0
    dropout_at: int | None = None  # index of its Dropout in the Sequential


def _add_dropout(layers: list[_TorchLayer], child: Any, idx: int) -> None:
    """Attach ``nn.Dropout(p)`` at position ``idx`` to the layer it follows."""
    if not layers:
        raise SpecError(f"layer {idx} (Dropout) must follow a Linear layer or its activation: "
                        "symnn has no dropout on the inputs")
    if layers[-1].dropout_at is not None:
        raise SpecError(f"layer {idx} (Dropout) follows another Dropout (layer {layers[-1].dropout_at}); "
                        "use one with the combined probability")
    layers[-1].dropout, layers[-1].dropout_at = float(child.p), idx


def _assemble(layers: list, loss: object, name: str, dtype: str) -> tuple[Network, dict[str, np.ndarray]]:
    """Network and parameters from ``[(W (out, in), b, activation or None, dropout)]``; the
    default loss follows the last activation (softmax: cross-entropy, one sigmoid output: BCE,
    else MSE)."""
    dense, values = [], {}
    for i, (w, b, act, dropout) in enumerate(layers, 1):
        dense.append(Dense(int(w.shape[1]), int(w.shape[0]), act or "identity", dropout=dropout))
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
    (keys ``"0.weight"``, ``"0.bias"``, ``"2.weight"``... with one module per activation and
    one ``nn.Dropout`` per layer with dropout)."""
    import torch

    out, idx = {}, 0
    for i, layer in enumerate(net.layers, 1):
        out[f"{idx}.weight"] = torch.tensor(np.asarray(params[f"W{i}"]))
        out[f"{idx}.bias"] = torch.tensor(np.asarray(params[f"b{i}"]))
        idx += 1 + (layer.activation.name != "identity") + (layer.dropout > 0)
    return out


#: ONNX activation op -> (symnn activation, attribute -> parameter, ONNX default). ONNX float
#: attributes are float32, so are their defaults: LeakyRelu's 0.01 is 0.01f
#: (0.009999999776482582), the value ONNX's reference evaluator multiplies by.
_ONNX_ACTIVATIONS = {
    "Relu": ("relu", {}), "Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}), "Softmax": ("softmax", {}),
    "LeakyRelu": ("leaky_relu", {"alpha": ("alpha", float(np.float32(0.01)))}),
    "Elu": ("elu", {"alpha": ("alpha", float(np.float32(1.0)))}),
    "Softplus": ("softplus", {}), "Softsign": ("softsign", {}), "Identity": ("identity", {}),
}


def from_onnx(model: Any, *, loss: object = None, name: str = "onnx_mlp",
              dtype: str = "float64") -> tuple[Network, dict[str, np.ndarray]]:
    """``(network, params)`` from an ONNX MLP: a chain of ``Gemm`` (or ``MatMul`` + ``Add``)
    with weights in initializers, each optionally followed by one activation (Relu, Sigmoid,
    Tanh, Softmax on the last axis, LeakyRelu, Elu, Softplus, Softsign). ``model`` is an
    ``onnx.ModelProto`` or a path. Needs the optional ``onnx`` package (``symnn[onnx]``).
    A Gemm's bias ``C`` may have any shape that broadcasts to its output (M, N) (scalar, (N,),
    (1, N), (M, N)...) as long as every row is the same: a dense layer adds one bias per output.

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
            w = _initializer(init, node.input[1], where)
            w = w if attrs.get("transB", 0) else w.T  # symnn stores W as (out, in)
            b = np.zeros(w.shape[0])
            if len(node.input) > 2 and node.input[2]:  # "" is an omitted optional input
                b = _row_bias(_initializer(init, node.input[2], where), w.shape[0], where)
            layers.append([w, b, None, 0.0])
        elif node.op_type == "MatMul":
            w = _initializer(init, node.input[1], where)
            layers.append([w.T, np.zeros(w.shape[1]), None, 0.0])
        elif node.op_type == "Add":
            if not layers or layers[-1][2] is not None or node.input[1] not in init:
                raise SpecError(f"{where}: Add must follow MatMul, with the bias as an initializer")
            layers[-1][1] = layers[-1][1] + _row_bias(init[node.input[1]], layers[-1][0].shape[0], where)
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


def _initializer(init: Mapping[str, np.ndarray], key: str, where: str) -> np.ndarray:
    if key not in init:
        raise SpecTypeError(f"{where}: input {key!r} must be a constant (an initializer)")
    return init[key]


def _row_bias(c: np.ndarray, n_out: int, where: str) -> np.ndarray:
    """A bias that ONNX broadcasts to (M, n_out) as the layer's one value per output.

    ONNX allows any shape that broadcasts unidirectionally to (M, N): (), (1,), (N,), (1, N),
    (M, 1), (M, N)... A dense layer's bias cannot depend on the row (the batch index), so a
    C whose rows differ is refused; equal rows (a model exported at a fixed batch) are one row.
    """
    c = np.asarray(c)
    if c.ndim > 2 or c.size == 0 or (c.ndim and c.shape[-1] not in (1, n_out)):
        raise SpecError(f"{where}: a bias of shape {c.shape} does not broadcast to (M, {n_out})")
    rows = c.reshape(-1, c.shape[-1] if c.ndim else 1)
    if not np.array_equal(rows, np.broadcast_to(rows[:1], rows.shape), equal_nan=True):
        raise SpecTypeError(f"{where}: the bias of shape {c.shape} differs between rows; a dense layer "
                            "adds the same bias to every row")
    return np.broadcast_to(rows[0], (n_out,)).copy()
