"""Interop: ``from_torch`` turns an ``nn.Sequential`` of Linear, activation and Dropout layers
(or of convolutions, pooling and flatten too, or a module ``torch.fx`` traces: both
symnn/torch_fx.py), and ``from_onnx`` an ONNX MLP or CNN (symnn/onnx_graph.py), into a
:class:`~symnn.declare.Network` and its parameters;
``load_torch``/``from_torch_state_dict`` read a saved ``state_dict`` for a network described
by a symnn spec; ``to_state_dict`` goes back to PyTorch.

Files are untrusted input (RELIABILITY.md U3/U4): a PyTorch file is read without unpickling
code unless the caller trusts it explicitly, an ONNX file is parsed and checked against each
op's spec before any weight is allocated, and a name from either reaches emitted code only
through :class:`~symnn.declare.Network`'s own validation.

PyTorch and onnx are imported only inside these functions: they stay optional dependencies.
"""

from __future__ import annotations

import math
import os
import pickle
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .capabilities import Link
from .declare import Activation, Dense, Network
from .errors import ConfigError, ModelFormatError, ShapeError, SpecError, SpecTypeError, UntrustedInputError
from .naming import shown

#: torch module class name -> symnn activation (name, parameter attributes to carry over)
_ACTIVATIONS = {
    "Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}), "ReLU": ("relu", {}), "Identity": ("identity", {}),
    "LeakyReLU": ("leaky_relu", {"alpha": "negative_slope"}), "ELU": ("elu", {"alpha": "alpha"}),
    "Softplus": ("softplus", {}), "SiLU": ("silu", {}), "GELU": ("gelu", {}), "Softsign": ("softsign", {}),
    "Softmax": ("softmax", {}),
}


def from_torch(module: Any, *, loss: object = None, name: str = "torch_mlp", dtype: str = "float64",
               input_shape: Sequence[int] | None = None,
               input_shapes: Sequence[object] | None = None) -> tuple[Network, dict[str, np.ndarray]]:
    """``(network, params)`` from ``nn.Sequential(Linear, act, Dropout, Linear, act, ...)``, or
    from any module whose ``forward`` ``torch.fx`` can trace, built from the supported layers.

    **nn.Sequential** (a Sequential network, parameters ``W1, b1, ...``):

    Each Linear may be followed by at most one activation (none means identity), then at most
    one ``nn.Dropout(p)``, which becomes the layer's ``dropout=p``: the identity in ``forward``,
    ``loss`` and ``loss_and_grad`` (torch's ``eval()``), inverted dropout in ``train_step``
    (torch's ``train()``). As in symnn, dropout applies to hidden layers: a Dropout before the
    first Linear or after the last layer is refused. The loss is not part of a torch module:
    pass ``loss=`` (default ``"cross_entropy"`` after a Softmax, ``"bce"`` after a Sigmoid with
    one output, else ``"mse"``). ``Softmax`` must act on the last dimension; ``Softplus`` must
    have its default beta and threshold; ``GELU`` must be exact.

    **nn.Sequential with convolution, pooling, flatten, batch-norm or embedding modules** (``nn.Conv1d/2d``,
    ``nn.MaxPool1d/2d``, ``nn.AvgPool1d/2d``, ``nn.AdaptiveAvgPool1d/2d(1)`` then ``nn.Flatten()``,
    ``nn.Flatten()``, ``nn.BatchNorm1d/2d``) becomes a layer graph as a traced module does (below), its module ``i``
    the layer ``_i`` (a name cannot start with a digit): the parameters are keyed ``_0.weight``,
    ``_0.bias``... and :func:`to_state_dict` gives back ``0.weight``.... A module has no
    image size, so ``input_shape=(C, H, W)`` (``(C, L)`` for 1-D) is required there; for a
    Sequential of Linear layers it is optional and must be ``(in_features,)``. A Sequential
    holding an ``nn.Identity`` is read as a layer graph too, so that its indices stay exact. An
    ``nn.Embedding`` (first, reading the Sequential's input) makes that input an index input of
    T token ids: ``input_shape=(T,)``.

    **Another module** is traced with ``torch.fx.symbolic_trace`` and rebuilt as a layer graph
    (docs/layer_graphs.md): ``nn.Linear`` becomes ``sn.Dense`` and ``nn.Conv1d/2d`` (zero
    padding, "same" included) ``sn.Conv1d/2d``, each with the activation module or function
    right after it folded in when its output feeds only that activation; the pooling modules
    their ``sn`` namesakes (``return_indices`` and ``divisor_override`` left at their
    defaults); ``nn.AdaptiveAvgPool1d/2d(1)`` followed by ``nn.Flatten()`` or
    ``torch.flatten(x, 1)`` one ``sn.GlobalAvgPool``; a flatten of each sample ``sn.Flatten``;
    ``nn.LayerNorm`` (one normalized dimension) ``sn.LayerNorm``; ``nn.BatchNorm1d/2d``
    ``sn.BatchNorm1d/2d`` with its settings (``momentum=None`` included) and its buffers
    ``running_mean``, ``running_var``, ``num_batches_tracked`` as entries of the parameters
    (no gradient; ``loss``/``loss_and_grad`` use batch statistics as ``train()`` does,
    ``forward`` the running ones as ``eval()``); ``nn.Embedding`` reading a forward argument
    ``sn.Embedding`` (``padding_idx`` carried over; ``max_norm``, ``scale_grad_by_freq`` and
    ``sparse=True`` refused), that argument an index input ``sn.Input(T, indices=True)`` whose
    T comes from ``input_shapes``/``input_shape``; ``nn.Dropout`` ``sn.Dropout``;
    ``a + b`` an add; ``torch.cat(..., dim=1)`` ``sn.concat``; ``nn.RNN``/``GRU``/``LSTM``
    (called on the sequence alone) ``sn.RNN``/``GRU``/``LSTM``, returning
    the last state where forward reads ``out[:, -1]`` or ``h_n[-1]`` (of a bidirectional module
    ``torch.cat((h_n[-2], h_n[-1]), dim=1)``; its ``out[:, -1]`` is the sequence's last step, an
    ``sn.LastStep``) and the sequence where it uses the output whole
    (``input_shape=(T, F)``; a ``batch_first=False`` module's last step is ``out[-1]``, and
    ``transpose(0, 1)`` swaps a sequence between its time-major layout and batch-first: a forward
    argument it reads is the network's batch-first input (N, T, F); ``dropout`` between stacked
    layers and an LSTM's ``proj_size`` are carried over; an initial state is a forward argument
    (an input of the network, batch-first: PyTorch's ``h_0`` transposed) or a one-layer GRU/RNN
    encoder's ``h_n``; ``c_n`` used is refused by name). Each layer is named after the
    attribute holding its module (``self.fc1`` -> ``fc1``), so the parameters are keyed
    ``fc1.weight``... and ``to_state_dict(net, params)`` has exactly ``module.state_dict()``'s
    keys and shapes; a module called twice shares its parameters. forward's arguments are the
    inputs (named by the arguments when there are several), its returned tensor or tuple the
    outputs (several need one loss each: ``loss=[...]``, or the defaults per output). An input's
    width is read from the Linear or LayerNorm that reads it; when none does (an image read by
    a Conv), pass ``input_shapes=[shape, ...]``, one width or (C, L) / (C, H, W) per forward
    argument, or ``input_shape=`` for a forward of one argument.

    Raises:
        SpecTypeError: not a module / an unsupported layer (named, with its index or its fx
            node) / a module torch.fx cannot trace (control flow on tensor values).
        SpecError: a structural problem (activation first, two activations in a row, an
            activation that follows no Linear, a parameter or
            buffer no layer maps, an input shape that is not known, an AdaptiveAvgPool not
            followed by a flatten...).
        ConfigError: ``input_shapes=`` for an nn.Sequential, or both keywords.
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - only without the oracle extra
        raise SpecTypeError('from_torch needs PyTorch: pip install "symnn[oracle]"') from exc
    from .torch_fx import from_traced, needs_graph

    if not isinstance(module, torch.nn.Sequential):
        if input_shape is not None and input_shapes is not None:
            raise ConfigError("give input_shape= (a forward of one argument) or input_shapes= (one per "
                              "argument), not both")
        shapes = [input_shape] if input_shape is not None else input_shapes
        return from_traced(torch, module, loss, name, dtype, shapes)
    if input_shapes is not None:
        raise ConfigError("input_shapes= is for a traced module; an nn.Sequential takes input_shape=(C, H, W) "
                          "(its first Linear gives a width)")
    if needs_graph(torch, module):
        return from_traced(torch, module, loss, name, dtype, None if input_shape is None else [input_shape],
                           shape_hint="input_shape=(C, H, W) (or (C, L) for a Conv1d, (T,) for an Embedding "
                           "reading T tokens): the module holds no image size or sequence length")
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
            raise SpecTypeError(f"layer {idx} ({kind}) is not supported; from_torch handles Linear, Conv1d/2d, "
                                "MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d(1) + Flatten, Flatten, "
                                "BatchNorm1d/2d, Embedding, Dropout "
                                f"and {', '.join(sorted(_ACTIVATIONS))}")
        if not layers or layers[-1].activation is not None or layers[-1].dropout_at is not None:
            dropped = bool(layers) and layers[-1].dropout_at is not None
            after = " (a Dropout goes after the activation)" if dropped else ""
            raise SpecError(f"layer {idx} ({kind}) must follow a Linear layer{after}")
        act_name, carried = _ACTIVATIONS[kind]
        _check_variant(child, kind, f"layer {idx}")
        params = {ours: float(getattr(child, theirs)) for ours, theirs in carried.items()}
        layers[-1].activation = Activation.builtin(act_name, **params)
    if not layers:
        raise SpecError("the Sequential has no Linear layer")
    _check_input_shape(input_shape, int(layers[0].linear.in_features))
    if layers[-1].dropout_at is not None:
        raise SpecError(f"layer {layers[-1].dropout_at} (Dropout) follows the output layer; symnn applies "
                        "dropout to hidden layers only (remove it: at inference it is the identity)")
    rows = []
    for layer in layers:
        linear = layer.linear
        w = linear.weight.detach().cpu().numpy()
        b = linear.bias.detach().cpu().numpy() if linear.bias is not None else np.zeros(linear.out_features)
        # what the module does not train stays frozen: requires_grad=False, and a missing bias
        # (symnn's zero bias, kept at zero)
        fixed = (not linear.weight.requires_grad, linear.bias is None or not linear.bias.requires_grad)
        rows.append((w, b, layer.activation, layer.dropout, fixed))
    return _assemble(rows, loss, name, dtype)


def counter_params(net: Network) -> set[str]:
    """The network's buffers that count batches (a BatchNorm's ``num_batches_tracked``): whole
    numbers in symnn's flat vector, int64 tensors in PyTorch's ``state_dict``."""
    if net.graph is None:
        return set()
    return {f"{lname}.{c}" for layer, lname in zip(net.graph.layers, net.graph.names)
            for c in layer.COUNTERS if c in layer.buffers()}


def _counter_tensor(torch: Any, value: Any, name: str) -> Any:
    """A count of symnn's flat vector as the int64 0-d tensor PyTorch keeps (``num_batches_tracked``)."""
    count = np.asarray(value, dtype=np.float64)
    if count.shape != () or not np.isfinite(count) or count != np.rint(count) or count < 0 or count >= 2**63:
        raise ShapeError(f"{name} counts batches: a whole number >= 0 as a 0-d array, got {shown(value)}")
    return torch.tensor(int(count), dtype=torch.int64)


def _check_input_shape(input_shape: object, width: int) -> None:
    """``input_shape`` of a Sequential of Linear layers: None, or the first Linear's (width,)."""
    if input_shape is None:
        return
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
    if shape != (width,):
        raise SpecError(f"input_shape={shown(input_shape)}, but the Sequential's first Linear reads samples of "
                        f"{width} features: input_shape=({width},)")


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
    dense, values, frozen = [], {}, []
    for i, (w, b, act, dropout, *fixed) in enumerate(layers, 1):
        dense.append(Dense(int(w.shape[1]), int(w.shape[0]), act or "identity", dropout=dropout))
        values[f"W{i}"] = _weights(w, f"W{i}", dtype)
        values[f"b{i}"] = _weights(b, f"b{i}", dtype)
        if fixed:
            frozen += [name for name, f in zip((f"W{i}", f"b{i}"), fixed[0]) if f]
    if loss is None:
        loss = default_loss(dense[-1].activation, dense[-1].out_features)
    return Network(dense, loss=loss, name=name, frozen=trainable_or_none(frozen, values)), values


def trainable_or_none(frozen: list[str], params: Mapping[str, Any], buffers: Sequence[str] = ()) -> list[str]:
    """``frozen``, unless it is every parameter (a module with requires_grad off everywhere, as
    for inference): a symnn network always has something to train, so it then imports as
    trainable. ``buffers`` (running statistics) are in ``params`` but are never parameters."""
    return [] if set(frozen) == set(params) - set(buffers) else frozen


def default_loss(last: Activation, width: object) -> str:
    """The loss an imported output gets without ``loss=`` (a torch module has none): cross-entropy
    after a softmax, BCE after a sigmoid with one output, else MSE."""
    return ("cross_entropy" if last.is_rowwise else
            "bce" if last.link is Link.LOGISTIC and width == 1 else "mse")


def _weights(values: Any, what: str, dtype: str) -> np.ndarray:
    """``values`` as a fresh C-ordered ``dtype`` array (never sharing the source's memory),
    refused if an entry is not finite there: NaN or infinite weights (or float64 weights beyond
    float32's range) would make every output NaN, or print as a literal no C compiler takes."""
    _check_dtype(dtype)
    from .kernel import as_real_array  # complex weights are refused, not cast to their real part

    with np.errstate(over="ignore"):
        out = np.array(as_real_array(values, what), dtype=dtype, order="C", copy=True)
    bad = int(out.size - np.count_nonzero(np.isfinite(out)))
    if bad:
        raise ModelFormatError(f"{what}: {bad} value(s) are not finite in {dtype} (NaN, infinity, or "
                               "beyond its range)")
    return out


def _check_dtype(dtype: object) -> None:
    if dtype not in ("float64", "float32"):
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


def _check_variant(child: Any, kind: str, where: str) -> None:
    """Refuse a torch activation whose settings symnn's activation of that name does not match
    (``where`` says which layer or fx node it is)."""
    if kind == "Softmax" and child.dim not in (-1, 1, None):
        raise SpecTypeError(f"{where}: Softmax(dim={child.dim}) is not row-wise; use dim=-1")
    if kind == "Softplus" and (child.beta != 1 or child.threshold != 20):
        raise SpecTypeError(f"{where}: only Softplus(beta=1, threshold=20) is supported")
    if kind == "GELU" and child.approximate != "none":
        raise SpecTypeError(f"{where}: only the exact GELU is supported (approximate='none')")


def to_state_dict(net: Network, params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as the ``state_dict`` of the ``nn.Sequential`` that ``from_torch`` reads
    (keys ``"0.weight"``, ``"0.bias"``, ``"2.weight"``... with one module per activation and
    one ``nn.Dropout`` per layer with dropout). For a layer graph the keys are its parameter
    names, ``"dense1.weight"``..., those of a module whose attributes are named like the layers,
    except that a layer named ``_3`` (an nn.Sequential's module 3, as ``from_torch`` names it)
    gives ``"3.weight"``: so a module ``from_torch`` imported gets exactly its ``state_dict()``
    keys back, in the network's order of parameters (the module's, for an imported one).
    ``params`` may also be gradients (``loss_and_grad``'s), keyed the same. A BatchNorm's
    buffers are entries too, as in ``state_dict()``: ``running_mean`` and ``running_var`` in
    the dtype of ``params``, ``num_batches_tracked`` an int64 0-d tensor as torch keeps it
    (a count, so it must be a whole number >= 0; a gradient's zero is one)."""
    import torch


    if net.graph is not None:
        missing = [name for name in net.param_shapes() if name not in params]
        if missing:
            raise ShapeError(f"params lack {shown(missing, 120)}")
        counters = counter_params(net)
        return {net.state_dict_key(name): _counter_tensor(torch, params[name], name) if name in counters
                else torch.tensor(np.asarray(params[name])) for name in net.param_shapes()}
    out, idx = {}, 0
    for i, layer in enumerate(net.layers, 1):
        out[f"{idx}.weight"] = torch.tensor(np.asarray(params[f"W{i}"]))
        out[f"{idx}.bias"] = torch.tensor(np.asarray(params[f"b{i}"]))
        idx += 1 + (layer.activation.name != "identity") + (layer.dropout > 0)
    return out


# -- PyTorch files ------------------------------------------------------------------------------
#
# ``torch.load(weights_only=False)`` unpickles, and unpickling runs whatever code the file
# names (RELIABILITY.md U3). A file is therefore read with ``weights_only=True``, which admits
# tensors in plain containers only: a ``state_dict``, whose network comes from a symnn spec.
# A pickled module is unpickled only when the caller says it trusts the file.

_PICKLE_REFUSED = (
    "{path} is not a plain state_dict that torch.load(weights_only=True) accepts. "
    "If it is a whole pickled nn.Module, symnn does not unpickle it by default: unpickling runs "
    "any code the file holds. Convert it where you trust it, with "
    "torch.save(model.state_dict(), 'weights.pt'), and describe the network in a symnn spec "
    "(symnn from-torch weights.pt --spec net.toml; sn.load_torch(path, net)), or, only if you "
    "trust the file and its author, pass --trust-pickle (trust_pickle=True)"
)


def load_torch(path: str | os.PathLike, net: Network | None = None, *, trust_pickle: bool = False,
               loss: object = None, name: str | None = None,
               dtype: str = "float64") -> tuple[Network, dict[str, np.ndarray]]:
    """``(network, params)`` from a PyTorch file, without running code from it by default.

    The file is read with ``torch.load(weights_only=True)``: it must hold a ``state_dict`` (what
    ``torch.save(model.state_dict(), path)`` writes), whose weights go to ``net``'s layers as
    :func:`from_torch_state_dict` maps them. ``trust_pickle=True`` reads it with
    ``weights_only=False`` instead, which **runs any code the file holds, as you**: only for a
    file you made or whose author you trust; a whole ``nn.Sequential`` saved with
    ``torch.save(model, path)`` then goes through :func:`from_torch`. A ``torch.export``
    program (``.pt2``) is refused: torch's loader for it unpickles too.

    ``name`` renames the network (default: ``net``'s name, or ``"torch_mlp"`` for a module);
    ``loss`` is for a module only (a spec's network has its own).

    Raises:
        UntrustedInputError: a pickled object without ``trust_pickle`` (the message says how
            to convert it), or a ``.pt2`` program.
        ModelFormatError: not a PyTorch file, or weights that do not fit ``net``.
        ConfigError: a state_dict without ``net``, or ``loss`` with ``net``.
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - only without the oracle extra
        raise SpecTypeError('load_torch needs PyTorch: pip install "symnn[oracle]"') from exc
    if net is not None and not isinstance(net, Network):
        raise SpecTypeError(f"net must be a symnn Network, got {type(net).__name__}")
    if not isinstance(trust_pickle, bool):
        raise SpecTypeError(f"trust_pickle must be True or False, got {trust_pickle!r}")
    path = Path(path)
    if _is_export_archive(path):
        raise UntrustedInputError(
            f"{path} is a torch.export program (.pt2); symnn does not read those: torch's loader "
            "unpickles parts of the archive, which can run code. Save the weights instead, "
            "torch.save(model.state_dict(), 'weights.pt'), and describe the network in a spec")
    obj = _torch_load(torch, path, trust_pickle)
    if isinstance(obj, torch.nn.Module):
        if net is not None:
            raise ConfigError(f"{path} holds a whole module, which defines the network: drop the spec")
        return from_torch(obj, loss=loss, name=name or "torch_mlp", dtype=dtype)
    if not isinstance(obj, Mapping):
        raise ModelFormatError(f"{path} holds a {type(obj).__name__}, not a state_dict (a mapping of "
                               "names to tensors)")
    if net is None:
        raise ConfigError(f"{path} holds a state_dict: weights without the network they belong to; "
                          "describe the network in a symnn spec and pass it (--spec net.toml, or net=)")
    if loss is not None:
        raise ConfigError("the spec's network has its loss already; loss= is for a whole module")
    if name is not None and name != net.name:
        if net.graph is not None:
            from .graph_spec import rebuilt

            net = rebuilt(net, name=name)
        else:
            net = Network(list(net.layers), loss=net.loss, l1=net.l1, l2=net.l2, name=name)
    return net, from_torch_state_dict(obj, net, dtype=dtype)


def _is_export_archive(path: Path) -> bool:
    """Whether ``path`` is a ``torch.export.save`` archive: a zip with an ``archive_format``
    record (only the zip's directory is read)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(n.rsplit("/", 1)[-1] == "archive_format" for n in archive.namelist())
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError):  # a damaged directory:
        # not readable as an export archive; torch.load then reports what it is
        return False


def _torch_load(torch: Any, path: Path, trust_pickle: bool) -> Any:
    """``torch.load`` on the CPU, its failures as symnn errors with one-line messages."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if trust_pickle:
            raise ModelFormatError(f"{path}: not a file torch.load can read ({_one_line(exc)})") from exc
        raise UntrustedInputError(_PICKLE_REFUSED.format(path=path)) from exc
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            AssertionError, OverflowError, NotImplementedError, zipfile.BadZipFile, struct.error) as exc:
        # what torch's zip and pickle readers raise on damaged or foreign bytes (the legacy
        # format's reader checks storage keys with assert)
        raise ModelFormatError(f"{path}: not a file torch.load can read ({type(exc).__name__}: "
                               f"{_one_line(exc)})") from exc


def from_torch_state_dict(state_dict: Mapping[str, Any], net: Network, *,
                          dtype: str = "float64") -> dict[str, np.ndarray]:
    """``net``'s parameters from a PyTorch ``state_dict``; the inverse of :func:`to_state_dict`.

    The state_dict must hold a ``weight`` (and optionally a ``bias``) per Linear layer and
    nothing else: keys ``"<module>.weight"``/``"<module>.bias"``, the modules taken in the
    state_dict's order (the order PyTorch registered them; for an ``nn.Sequential`` its indices
    ``0, 2, ...``, which must then increase) and matched to ``net``'s layers one by one. Each
    weight must be a floating-point tensor of shape (out, in) of its layer, each bias (out,),
    all finite in ``dtype``; a missing bias is zero (``nn.Linear(bias=False)``).

    For a layer graph the keys must be exactly the network's parameter names as
    :func:`to_state_dict` writes them (``"dense1.weight"``, ``"layernorm1.bias"``...: the
    ``state_dict`` of a module whose attributes are named like the layers; ``"3.weight"`` for
    a layer ``_3``, an nn.Sequential's module 3), each a floating-point tensor of its shape,
    finite in ``dtype``.

    Raises:
        ModelFormatError: a key that is no Linear weight or bias, a layer count, shape or
            element type that does not fit ``net``, non-finite values; names the key.
    """
    import torch

    if not isinstance(net, Network):
        raise SpecTypeError(f"net must be a symnn Network, got {type(net).__name__}")
    if net.graph is not None:
        return _graph_state_dict(state_dict, net, dtype)
    if not all(isinstance(d, int) for layer in net.layers for d in (layer.in_features, layer.out_features)):
        raise SpecError("the network has symbolic widths; weights need a network of fixed sizes")
    if not isinstance(state_dict, Mapping):
        raise ModelFormatError("expected a state_dict (a mapping of names to tensors), got "
                               f"{type(state_dict).__name__}")
    modules: dict[str, dict[str, Any]] = {}
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".") if isinstance(key, str) else ("", "", "")
        if leaf not in ("weight", "bias") or not isinstance(value, torch.Tensor):
            raise ModelFormatError(
                f"state_dict entry {shown(key)} ({type(value).__name__}) is not the weight or bias tensor of "
                "a Linear layer; symnn's networks are Linear layers and activations only")
        modules.setdefault(prefix, {})[leaf] = value
    _check_module_order(list(modules))
    if len(modules) != len(net.layers):
        raise ModelFormatError(f"the state_dict holds {len(modules)} Linear layer(s) "
                               f"({shown(list(modules), 120)}); the network has {len(net.layers)}")
    params: dict[str, np.ndarray] = {}
    for i, (prefix, layer) in enumerate(zip(modules, net.layers), 1):
        tensors = modules[prefix]
        out, n_in = int(layer.out_features), int(layer.in_features)
        if "weight" not in tensors:
            raise ModelFormatError(f"state_dict has {shown(prefix + '.bias')} but no "
                                   f"{shown(prefix + '.weight')}")
        params[f"W{i}"] = _weights(_tensor_values(tensors["weight"], f"{prefix}.weight", (out, n_in), i),
                                   shown(f"{prefix}.weight"), dtype)
        bias = tensors.get("bias")
        params[f"b{i}"] = (np.zeros(out, dtype=dtype) if bias is None else
                           _weights(_tensor_values(bias, f"{prefix}.bias", (out,), i),
                                    shown(f"{prefix}.bias"), dtype))
    return params


def _graph_state_dict(state_dict: Mapping[str, Any], net: Network, dtype: str) -> dict[str, np.ndarray]:
    """A layer graph's parameters from a state_dict keyed by its parameter names (the keys
    :func:`to_state_dict` writes: ``3.weight`` for layer ``_3``), no more, no fewer; each key
    named in the error that refuses it."""
    import torch


    if not isinstance(state_dict, Mapping):
        raise ModelFormatError("expected a state_dict (a mapping of names to tensors), got "
                               f"{type(state_dict).__name__}")
    shapes = {net.state_dict_key(name): (name, shape) for name, shape in net.param_shapes().items()}
    extra = [key for key in state_dict if key not in shapes]
    if extra:
        raise ModelFormatError(f"state_dict entry {shown(extra[0])} is not a parameter of the network; "
                               f"its parameters are {shown(list(shapes), 200)}")
    params: dict[str, np.ndarray] = {}
    for key, (name, shape) in shapes.items():
        if key not in state_dict:
            raise ModelFormatError(f"state_dict has no {shown(key)}; the network's parameters are "
                                   f"{shown(list(shapes), 200)}")
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            raise ModelFormatError(f"state_dict entry {shown(key)} is a {type(value).__name__}, not a tensor")
        want = tuple(int(d) for d in shape)
        params[name] = _weights(_tensor_values(value, key, want, key.rpartition(".")[0]), shown(key), dtype)
    return params


def _check_module_order(prefixes: list[str]) -> None:
    """Sequential indices (``0``, ``2``, ``net.4``) must increase in the state_dict's order: a
    hand-built dict in another order would give the weights to the wrong layers."""
    tails = [p.rpartition(".")[2] for p in prefixes]
    if all(t.isascii() and t.isdigit() and len(t) < 19 for t in tails):
        numbers_seen = [int(t) for t in tails]
        if numbers_seen != sorted(numbers_seen):
            raise ModelFormatError(f"the state_dict's layers come in the order {shown(prefixes, 120)}; "
                                   "expected increasing module indices")


def _tensor_values(value: Any, key: str, shape: tuple[int, ...], layer: int | str) -> np.ndarray:
    """A CPU float64 copy of one tensor, after its layout, element type and shape are checked."""
    import torch

    if value.layout != torch.strided or value.is_meta or value.is_complex() or not value.is_floating_point():
        raise ModelFormatError(f"state_dict entry {shown(key)} is a {value.dtype} tensor ({value.layout}); "
                               "symnn reads dense floating-point weights")
    if tuple(value.shape) != shape:
        raise ModelFormatError(f"state_dict entry {shown(key)} has shape {tuple(value.shape)}; layer {layer} "
                               f"of the network needs {shape}")
    return value.detach().to(device="cpu", dtype=torch.float64).numpy()


# -- ONNX ---------------------------------------------------------------------------------------
#
# An .onnx file is read as data: the protobuf is parsed here (never with onnx.load, which would
# follow external-data paths by itself), each node is checked against the spec of its op
# (domain, inputs, outputs, attributes and their types) and each weight's declared size against
# the bytes that hold it, all before any array is made and before anything is written.

#: ONNX activation op -> (symnn activation, attribute -> parameter, ONNX default). ONNX float
#: attributes are float32, so are their defaults: LeakyRelu's 0.01 is 0.01f
#: (0.009999999776482582), the value ONNX's reference evaluator multiplies by.
_ONNX_ACTIVATIONS = {
    "Relu": ("relu", {}), "Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}), "Softmax": ("softmax", {}),
    "LeakyRelu": ("leaky_relu", {"alpha": ("alpha", float(np.float32(0.01)))}),
    "Elu": ("elu", {"alpha": ("alpha", float(np.float32(1.0)))}),
    "Softplus": ("softplus", {}), "Softsign": ("softsign", {}), "Identity": ("identity", {}),
}

_FLOAT_ATTR, _INT_ATTR, _STRING_ATTR, _TENSOR_ATTR, _FLOATS_ATTR, _INTS_ATTR, _STRINGS_ATTR = 1, 2, 3, 4, 6, 7, 8
# (onnx.AttributeProto's types)
#: the longest list or string attribute symnn reads (a 2-D conv's pads have 4 entries): a file
#: cannot make symnn copy a huge attribute before refusing it
_MAX_ATTR_ITEMS = 16
_ATTR_TYPE_NAMES = {_FLOAT_ATTR: "float", _INT_ATTR: "integer", _STRING_ATTR: "string",
                    _TENSOR_ATTR: "tensor", _INTS_ATTR: "list of integers", _FLOATS_ATTR: "list of floats",
                    _STRINGS_ATTR: "list of strings"}


@dataclass(frozen=True)
class _OnnxOp:
    """What an op may look like in a file symnn reads: its input count range and each
    attribute it may carry, with that attribute's type (the ONNX operator spec)."""

    inputs: tuple[int, int]
    attributes: Mapping[str, int]
    outputs: int = 1  # how many outputs the spec allows (symnn reads the first one only)
    #: whether symnn reads outputs after the first (a recurrent op's final states), else refused
    several: bool = False


_ONNX_OPS: dict[str, _OnnxOp] = {
    "Gemm": _OnnxOp((2, 3), {"alpha": _FLOAT_ATTR, "beta": _FLOAT_ATTR,
                             "transA": _INT_ATTR, "transB": _INT_ATTR}),
    "MatMul": _OnnxOp((2, 2), {}),
    "Add": _OnnxOp((2, 2), {}),
    **{op: _OnnxOp((1, 1), {}) for op in _ONNX_ACTIVATIONS},
    "Softmax": _OnnxOp((1, 1), {"axis": _INT_ATTR}),
    "LeakyRelu": _OnnxOp((1, 1), {"alpha": _FLOAT_ATTR}),
    "Elu": _OnnxOp((1, 1), {"alpha": _FLOAT_ATTR}),
}

#: ONNX element type -> the little-endian NumPy dtype of its raw bytes, and the TensorProto
#: field that holds it when it is not raw (FLOAT16 keeps each value's bits in an int32)
_ONNX_FLOATS = {1: ("<f4", "float_data"), 11: ("<f8", "double_data"), 10: ("<f2", "int32_data")}
_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL
_EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}


def from_onnx(model: Any, *, loss: object = None, name: str = "onnx_mlp",
              dtype: str = "float64") -> tuple[Network, dict[str, np.ndarray]]:
    """``(network, params)`` from an ONNX model. A graph holding ``Conv``, ``MaxPool``,
    ``AveragePool``, ``GlobalAveragePool``, ``Flatten``, ``Reshape``, ``Concat``,
    ``BatchNormalization`` (inference form) or ``LayerNormalization`` becomes a layer graph
    (symnn/onnx_graph.py: its parameters keyed as the exporting module's state_dict where the
    initializers are named so; a batch norm's running statistics are buffers, its
    ``num_batches_tracked`` 0); otherwise, an MLP: a chain of ``Gemm`` (or ``MatMul`` + ``Add``)
    with weights in initializers, each optionally followed by one activation (Relu, Sigmoid,
    Tanh, Softmax on the last axis, LeakyRelu, Elu, Softplus, Softsign). ``model`` is an
    ``onnx.ModelProto`` or a path. Needs the optional ``onnx`` package (``symnn[onnx]``).
    A recurrent op's ``initial_h``/``initial_c`` given as graph inputs (a module exported as
    ``lstm(x, (h0, c0))``) become inputs of the network, keyed by their names, each taken
    batch-first (N, L*D, H).
    A Gemm's bias ``C`` may have any shape that broadcasts to its output (M, N) (scalar, (N,),
    (1, N), (M, N)...) as long as every row is the same: a dense layer adds one bias per output.

    The file is untrusted data (RELIABILITY.md U4): every node must be an op of the default
    domain with the inputs, outputs and attributes (names and types) its spec allows; a weight
    must be a FLOAT, DOUBLE or FLOAT16 initializer whose declared dims match the bytes that hold
    it, checked before any array is made; weights stored as external data are read only from a
    regular file inside the model's folder (no absolute path, ``..`` or symbolic link), and
    only for a model given as a path. Node and value names appear only in error messages,
    quoted; the network's name is ``name``.

    Raises:
        ModelFormatError: bytes that are not an ONNX model; a node, attribute or weight that
            breaks the ONNX spec (wrong arity or attribute type, dims that do not match the
            data, a 3-D Gemm weight...); non-finite weights.
        UntrustedInputError: external data outside the model's folder, or through a link.
        SpecTypeError: an op, attribute value or element type outside the supported subset.
        SpecError: a graph that is not one straight chain, or layers whose sizes disagree.
    """
    try:
        import onnx  # noqa: F401 - the protobuf classes
    except ImportError as exc:  # pragma: no cover - only without the extra
        raise SpecTypeError('from_onnx needs onnx: pip install "symnn[onnx]"') from exc
    proto, base = _onnx_proto(model)
    graph = proto.graph
    init = _initializers(graph)
    from .onnx_graph import from_onnx_graph, is_layer_graph

    if is_layer_graph(graph):
        return from_onnx_graph(graph, init, base, loss, name, dtype)
    data_inputs = [i for i in graph.input if i.name not in init]
    if len(data_inputs) != 1:
        raise SpecError(f"the ONNX graph must have exactly one data input, it has {len(data_inputs)}")
    current = data_inputs[0].name
    seen = {i.name for i in graph.input} | set(init)
    layers: list[list[Any]] = []  # [W (out, in), b, activation, dropout]
    for index, node in enumerate(graph.node):
        where = f"node {index}{f' {shown(node.name)}' if node.name else ''} ({shown(node.op_type)})"
        attrs = _node_attributes(node, where)
        if node.input[0] != current:
            raise SpecError(f"{where}: the graph is not a single chain (its input is {shown(node.input[0])})")
        _onnx_layer(node, attrs, init, layers, where, base)
        if node.output[0] in seen:
            raise ModelFormatError(f"{where}: output {shown(node.output[0])} is already defined in the graph")
        seen.add(node.output[0])
        current = node.output[0]
    if not layers:
        raise SpecError("the ONNX graph has no Gemm or MatMul")
    if [o.name for o in graph.output] != [current]:
        raise SpecError(f"the ONNX graph's output must be the last node's, {shown(current)}; it declares "
                        f"{shown([o.name for o in graph.output])}")
    _check_input_width(data_inputs[0], layers[0][0].shape[1])
    return _assemble(layers, loss, name, dtype)


def _onnx_proto(model: Any) -> tuple[Any, Path | None]:
    """The ``ModelProto`` and the folder its external data may come from (None in memory).

    The bytes are parsed directly rather than with ``onnx.load``, which would read external
    data from wherever the file says before symnn could check the location."""
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(model, onnx.ModelProto):
        return model, None
    if not isinstance(model, (str, os.PathLike)):
        raise SpecTypeError(f"from_onnx expects an onnx.ModelProto or a path, got {type(model).__name__}")
    path = Path(model)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except (DecodeError, RecursionError, ValueError) as exc:
        raise ModelFormatError(f"{path}: not an ONNX model ({_one_line(exc)})") from exc
    if not proto.HasField("graph"):
        raise ModelFormatError(f"{path}: not an ONNX model (no graph)")
    return proto, path.parent


def _initializers(graph: Any) -> dict[str, Any]:
    """Initializer protos by name, not yet decoded: only the ones a layer uses become arrays."""
    init: dict[str, Any] = {}
    for tensor in graph.initializer:
        if tensor.name in init:
            raise ModelFormatError(f"initializer {shown(tensor.name)} is defined twice")
        init[tensor.name] = tensor
    return init


def _node_attributes(node: Any, where: str, ops: Mapping[str, _OnnxOp] | None = None,
                     supported: str | None = None) -> dict[str, Any]:
    """The node's attributes after checking its op, domain, arity and attribute types against
    ``ops`` (default :data:`_ONNX_OPS`, an MLP's): a file cannot hand symnn an attribute of a
    type it does not expect, nor a list or string longer than :data:`_MAX_ATTR_ITEMS`.
    ``supported`` lists the ops for the error on another one."""
    op = (_ONNX_OPS if ops is None else ops).get(node.op_type)
    if op is None:
        listed = supported or f"Gemm, MatMul, Add and {', '.join(sorted(_ONNX_ACTIVATIONS))}"
        raise SpecTypeError(f"{where} is not supported; from_onnx reads {listed}")
    if node.domain not in ("", "ai.onnx"):
        raise SpecTypeError(f"{where}: op of domain {shown(node.domain)}; from_onnx reads the default "
                            "ONNX domain")
    low, high = op.inputs
    if not low <= len(node.input) <= high or not all(node.input[:low]):
        raise ModelFormatError(f"{where}: {len(node.input)} inputs; {node.op_type} takes "
                               f"{low if low == high else f'{low} to {high}'}")
    if not 1 <= len(node.output) <= op.outputs or not (any(node.output) if op.several else node.output[0]):
        raise ModelFormatError(f"{where}: {len(node.output)} outputs; {node.op_type} has "
                               f"{'one' if op.outputs == 1 else f'one to {op.outputs}'}")
    if len(node.output) > 1 and not op.several:
        raise SpecTypeError(f"{where}: {len(node.output)} outputs; symnn reads ops with one output (a "
                            f"{node.op_type}'s first)")
    attrs: dict[str, Any] = {}
    for attr in node.attribute:
        kind = op.attributes.get(attr.name)
        if kind is None:
            raise SpecTypeError(f"{where}: attribute {shown(attr.name)} is not one {node.op_type} takes "
                                f"({', '.join(sorted(op.attributes)) or 'none'})")
        if attr.type != kind or attr.ref_attr_name or attr.name in attrs:
            raise ModelFormatError(f"{where}: attribute {shown(attr.name)} must be given once, as one "
                                   f"{_ATTR_TYPE_NAMES[kind]}")
        attrs[attr.name] = _attribute_value(attr, kind, where)
    return attrs


def _attribute_value(attr: Any, kind: int, where: str) -> Any:
    """One attribute's value of its checked ``kind``: a float, an int, a tuple of ints, an
    ASCII string, or (a Constant's value) the TensorProto itself, decoded by its reader."""
    if kind == _FLOAT_ATTR:
        return attr.f
    if kind == _INT_ATTR:
        return attr.i
    if kind == _TENSOR_ATTR:
        return attr.t
    held = {_INTS_ATTR: attr.ints, _FLOATS_ATTR: attr.floats, _STRINGS_ATTR: attr.strings}.get(kind, attr.s)
    if len(held) > _MAX_ATTR_ITEMS:
        raise ModelFormatError(f"{where}: attribute {shown(attr.name)} holds {len(held)} items; symnn reads "
                               f"at most {_MAX_ATTR_ITEMS}")
    if kind == _INTS_ATTR:
        return tuple(int(v) for v in held)
    if kind == _FLOATS_ATTR:
        return tuple(float(v) for v in held)
    if kind == _STRINGS_ATTR:
        return tuple(_ascii(bytes(item), attr.name, where) for item in held)
    return _ascii(bytes(held), attr.name, where)


def _ascii(text: bytes, name: str, where: str) -> str:
    """A string attribute's bytes as text: plain printable ASCII only."""
    if not all(0x20 <= b < 0x7F for b in text):
        raise ModelFormatError(f"{where}: attribute {shown(name)} is not a plain ASCII string")
    return text.decode("ascii")


def _onnx_layer(node: Any, attrs: Mapping[str, float | int], init: Mapping[str, Any],
                layers: list[list[Any]], where: str, base: Path | None) -> None:
    """Add the node to ``layers``: a Gemm or MatMul starts a layer, Add gives it a bias, an
    activation ends it."""
    if node.op_type == "Gemm":
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise SpecTypeError(f"{where}: only Gemm with transA=0, alpha=1, beta=1 is supported")
        if attrs.get("transB", 0) not in (0, 1):
            raise ModelFormatError(f"{where}: transB must be 0 or 1, got {attrs['transB']}")
        w = _weight(init, node.input[1], 2, where, base, exact=True)
        w = w if attrs.get("transB", 0) else w.T  # symnn stores W as (out, in)
        b = np.zeros(w.shape[0])
        if len(node.input) > 2 and node.input[2]:  # "" is an omitted optional input
            b = _row_bias(_weight(init, node.input[2], 2, where, base), w.shape[0], where)
        layers.append([w, b, None, 0.0])
    elif node.op_type == "MatMul":
        w = _weight(init, node.input[1], 2, where, base, exact=True)
        layers.append([w.T, np.zeros(w.shape[1]), None, 0.0])
    elif node.op_type == "Add":
        if not layers or layers[-1][2] is not None or node.input[1] not in init:
            raise SpecError(f"{where}: Add must follow MatMul, with the bias as an initializer")
        bias = _weight(init, node.input[1], 2, where, base)
        layers[-1][1] = layers[-1][1] + _row_bias(bias, layers[-1][0].shape[0], where)
    else:
        if not layers or layers[-1][2] is not None:
            raise SpecError(f"{where}: an activation must follow Gemm or MatMul(+Add)")
        act_name, params = _ONNX_ACTIVATIONS[node.op_type]
        if node.op_type == "Softmax" and attrs.get("axis", -1) not in (-1, 1):
            raise SpecTypeError(f"{where}: Softmax must act on the last axis")
        values = {ours: float(attrs.get(attr, default)) for ours, (attr, default) in params.items()}
        layers[-1][2] = Activation.builtin(act_name, **values)


def _weight(init: Mapping[str, Any], key: str, max_ndim: int, where: str, base: Path | None,
            exact: bool = False) -> np.ndarray:
    """The initializer ``key`` as an array, after its dims (at most ``max_ndim``, or exactly
    that many with ``exact``), element type and byte count are checked against its data."""
    if key not in init:
        raise SpecTypeError(f"{where}: input {shown(key)} must be a constant (an initializer)")
    tensor = init[key]
    dims = tuple(tensor.dims)
    what = f"{where}: initializer {shown(key)}"
    if len(dims) > max_ndim or exact and len(dims) != max_ndim or any(d < 0 for d in dims):
        need = f"exactly {max_ndim}" if exact else f"at most {max_ndim}"
        raise ModelFormatError(f"{what} has dims {list(dims)}; this weight needs {need} non-negative dims")
    if tensor.data_type not in _ONNX_FLOATS:
        raise SpecTypeError(f"{what} has element type {tensor.data_type}; from_onnx reads FLOAT (1), "
                            "DOUBLE (11) and FLOAT16 (10) weights")
    np_dtype, field_name = _ONNX_FLOATS[tensor.data_type]
    count = math.prod(dims)
    nbytes = count * np.dtype(np_dtype).itemsize
    if tensor.HasField("segment"):
        raise ModelFormatError(f"{what} is a segment of a tensor; symnn reads whole initializers")
    if tensor.data_location == _EXTERNAL:
        values = np.frombuffer(_external_bytes(tensor, nbytes, what, base), dtype=np_dtype)
    elif tensor.raw_data:
        if len(tensor.raw_data) != nbytes:
            raise ModelFormatError(f"{what} declares dims {list(dims)} ({nbytes} bytes) but holds "
                                   f"{len(tensor.raw_data)} bytes")
        values = np.frombuffer(tensor.raw_data, dtype=np_dtype)
    else:
        held = getattr(tensor, field_name)
        if len(held) != count:
            raise ModelFormatError(f"{what} declares dims {list(dims)} ({count} values) but holds {len(held)}")
        values = np.array(held, dtype=np.int64 if field_name == "int32_data" else np_dtype)
        if field_name == "int32_data":  # FLOAT16: each int32 holds one value's 16 bits
            if values.size and not (values.min() >= 0 and values.max() <= 0xFFFF):
                raise ModelFormatError(f"{what}: a FLOAT16 value's bits do not fit in 16 bits")
            values = values.astype(np.uint16).view(np_dtype)
    return values.reshape(dims).astype(np.float64)


def _external_bytes(tensor: Any, nbytes: int, what: str, base: Path | None) -> bytes:
    """The ``nbytes`` bytes of an initializer stored in an external file, read only from a
    regular file inside the model's folder reached through no symbolic link."""
    if base is None:
        raise UntrustedInputError(f"{what} keeps its values in an external file; pass the .onnx file's "
                                  "path (not a ModelProto) so that they are read from the model's folder")
    info: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key not in _EXTERNAL_KEYS or entry.key in info:
            raise ModelFormatError(f"{what}: external-data key {shown(entry.key)} is unknown or repeated")
        info[entry.key] = entry.value
    path = _inside(base, info.get("location", ""), what)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(nbytes)))
    except ValueError as exc:
        raise ModelFormatError(f"{what}: external-data offset/length are not integers") from exc
    if offset < 0 or length != nbytes:
        raise ModelFormatError(f"{what}: external data of {length} bytes at offset {offset}; its dims "
                               f"need {nbytes}")
    # O_NOFOLLOW: the file itself is no link; O_NONBLOCK: a FIFO planted there cannot hang the open
    flags = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UntrustedInputError(f"{what}: cannot open its external data {shown(str(path))}: "
                                  f"{exc.strerror}") from exc
    try:
        info_fd = os.fstat(fd)
        if not stat.S_ISREG(info_fd.st_mode) or offset + nbytes > info_fd.st_size:
            raise ModelFormatError(f"{what}: its external data {shown(str(path))} is not a regular file "
                                   f"holding {nbytes} bytes at offset {offset}")
        data = os.pread(fd, nbytes, offset)
    finally:
        os.close(fd)
    if len(data) != nbytes:
        raise ModelFormatError(f"{what}: its external data {shown(str(path))} ended early")
    return data


def _inside(base: Path, location: str, what: str) -> Path:
    """``base / location`` if ``location`` is a relative path below ``base`` none of whose
    parts is ``..`` or a symbolic link, else :class:`UntrustedInputError`."""
    parts = location.replace("\\", "/").split("/")
    if (not location or "\0" in location or location.startswith(("/", "\\")) or ":" in location
            or any(part in ("", ".", "..") for part in parts)):
        raise UntrustedInputError(f"{what}: external-data location {shown(location)} is not a plain "
                                  "relative path inside the model's folder")
    path = base
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise UntrustedInputError(f"{what}: external-data location {shown(location)} goes through "
                                      f"a symbolic link ({shown(str(path))})")
    if not path.resolve().is_relative_to(base.resolve()):  # pragma: no cover - the checks above
        raise UntrustedInputError(f"{what}: external-data location {shown(location)} leaves the model's folder")
    return path


def _check_input_width(value_info: Any, n_in: int) -> None:
    """A data input declared with a fixed last dimension must feed the first layer's width."""
    tensor_type = value_info.type.tensor_type
    declared = value_info.type.HasField("tensor_type") and tensor_type.HasField("shape")
    dims = list(tensor_type.shape.dim) if declared else []
    if dims and dims[-1].HasField("dim_value") and dims[-1].dim_value != n_in:
        raise SpecError(f"the ONNX input {shown(value_info.name)} has {dims[-1].dim_value} features; "
                        f"the first layer takes {n_in}")


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


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception from a third-party reader as one short line of plain ASCII for an error
    message: its text may quote bytes of the file, or carry terminal escapes."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."
