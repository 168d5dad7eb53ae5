"""``sn.from_torch`` for a module that is not an ``nn.Sequential``: its ``forward`` is traced
with ``torch.fx.symbolic_trace`` and the traced graph is rebuilt as a symnn layer graph.

Each supported node becomes the symnn layer with PyTorch's semantics: ``nn.Linear`` (with the
activation right after it folded in) an ``sn.Dense``, ``nn.Conv1d``/``Conv2d`` (the same) an
``sn.Conv1d``/``Conv2d``, the pooling modules (and ``F.max_pool2d``... with constant sizes) their ``sn`` namesakes, ``nn.AdaptiveAvgPool(1)``
with the flatten after it an ``sn.GlobalAvgPool``, ``nn.Flatten``/``torch.flatten(x, 1)`` an
``sn.Flatten``, ``nn.LayerNorm`` an ``sn.LayerNorm``, ``nn.BatchNorm1d``/``BatchNorm2d`` an
``sn.BatchNorm1d``/``BatchNorm2d`` (its running statistics are buffers of the flat vector, keyed
as in ``state_dict()``), ``nn.Embedding`` on a forward argument an ``sn.Embedding`` on an index
input (``sn.Input(T, indices=True)``), ``nn.Dropout`` an ``sn.Dropout``,
``a + b`` an add and ``torch.cat(dim=1)`` an ``sn.concat``. ``nn.RNN``/``GRU``/``LSTM``
(``bidirectional`` carried over) become ``sn.RNN``/``GRU``/``LSTM``, their ``return_sequences``
read off how forward uses the result (:func:`recurrent_modes`): the last step (``out[:, -1]``,
the last layer's ``h_n[-1]``; of a bidirectional module ``torch.cat((h_n[-2], h_n[-1]), dim=1)``)
or the whole output sequence (flattened, or fed to the next module; a bidirectional module's
``out[:, -1]``: the sequence, then an ``sn.LastStep``). A time-major module
(``batch_first=False``) reads and writes (T, N, F) sequences: its last step is ``out[-1]``, and
``transpose(0, 1)``/``permute(1, 0, 2)`` swap a sequence between the two layouts
(:func:`check_time_major`); symnn's sequences are batch-first throughout, so a forward argument
that a time-major module reads is the network's batch-first input (N, T, F). A layer is named after the
attribute that holds its module (:func:`layer_name_of`: an ``nn.Sequential``'s module ``3`` is
layer ``_3``), so the network's parameter names are the module's ``state_dict()`` keys up to
that one rule (:func:`state_dict_key`), checked one for one: anything the module holds that
symnn would not map is refused rather than dropped. A nested module (``blocks.0.conv``) is layer
``blocks_0_conv`` and the network keeps its path (``Network.module_paths``), which keys its
parameters in ``state_dict()`` (``Network.state_dict_key``).

A module written with the functional API, ``F.linear(x, self.weight, self.bias)`` or
``F.conv2d(x, self.weight, self.bias, ...)`` on its own parameters (read by ``get_attr``), is the
Dense or Conv layer of that module (:func:`functional_layer_role`), named and keyed as a call of
it would be.

Everything is classified before any layer is built: an unsupported node is reported, with what
is supported, before any work.
"""

from __future__ import annotations

import numbers
import operator
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import ir, naming
from .declare import Activate, Activation, Dense, Network
from .errors import ModelFormatError, SpecError, SpecTypeError
from .layers import Dropout, Input, LastStep, Layer, LayerNorm, Tensor, concat
from .naming import shown
from .batchnorm import BatchNorm1d, BatchNorm2d
from .embedding import Embedding
from .spatial_layers import (AvgPool1d, AvgPool2d, Conv1d, Conv2d, Flatten, GlobalAvgPool, MaxPool1d,
                             MaxPool2d)
from .torch_fx_functional import (check_param_attrs, functional_layer_role, functional_layers, mark_functional_layers,
                                  module_path)
from .torch_fx_recurrent import (RECURRENT_PARTS, SWAP_METHODS, check_states, check_time_major, final_states_cat,
                                 getitem_role, recurrent_layer, recurrent_modes, recurrent_role, recurrent_table,
                                 squeeze_role, time_swap_role)
from .torch_fx_roles import Kind, Role, one_line, unsupported, where


#: an nn.Sequential's module index ("3"), a layer named "_3" (a name cannot start with a digit)
_INDEX = re.compile(r"[0-9]{1,18}")
_INDEX_LAYER = re.compile(r"_[0-9]{1,18}")


def from_traced(torch: Any, module: Any, loss: object, name: str, dtype: str,
                input_shapes: Sequence[object] | None,
                shape_hint: str = ("input_shape=(C, H, W) for a forward of one argument, or input_shapes=[...], "
                                   "one shape per forward argument, in order")
                ) -> tuple[Network, dict[str, np.ndarray]]:
    """``(network, params)`` for a module ``torch.fx`` can trace (see :func:`symnn.from_torch`);
    ``shape_hint`` is how the error for an unknown input shape tells the caller to give it."""
    from .interop import _check_dtype

    if not isinstance(module, torch.nn.Module):
        raise SpecTypeError(f"from_torch expects an nn.Sequential or an nn.Module that torch.fx can trace, "
                            f"got {type(module).__name__}")
    _check_dtype(dtype)
    graph = _trace(torch, module)
    mark_functional_layers(torch, graph)
    _name_nested_modules(graph)
    roles: dict[Any, Role] = {}
    for node in graph.nodes:  # in order: a getitem is classified by what it indexes
        roles[node] = _role(torch, module, node, roles)
    _check_global_pools(roles)
    check_time_major(roles)
    check_states(torch, roles)
    check_param_attrs(roles)
    modes = recurrent_modes(roles)
    placeholders = [node for node in graph.nodes if roles[node].kind is Kind.INPUT]
    shapes = _input_shapes(placeholders, roles, input_shapes, shape_hint)
    inputs, outputs = _build(torch, graph, roles, placeholders, shapes, modes)
    if loss is None:
        defaults = [_default_loss(t) for t in outputs]
        loss = defaults[0] if len(defaults) == 1 else defaults
    net = Network(inputs=inputs, outputs=outputs if len(outputs) > 1 else outputs[0], loss=loss, name=name)
    nested = {_layer_name(node): module_path(node) for node in graph.nodes
              if module_path(node) is not None and "." in module_path(node)}
    paths = {layer: path for layer, path in nested.items() if layer in net.graph.names}
    if paths:  # layers of nested modules: their parameters keyed under the module's path
        net.set_module_paths(paths)
    params = _params(torch, module, net, dtype)
    # what the module does not train (requires_grad=False) stays frozen
    fixed = {key for key, value in module.named_parameters() if not value.requires_grad}
    frozen = [name for name in net.param_shapes() if net.state_dict_key(name) in fixed]
    if frozen:
        from .graph_spec import rebuilt
        from .interop import trainable_or_none

        net = rebuilt(net, frozen=trainable_or_none(frozen, params, net.buffers))
    return net, params


def _trace(torch: Any, module: Any) -> Any:
    """The fx graph of ``module.forward``; a failed trace is a :class:`SpecTypeError` naming the
    module (data-dependent control flow, an unsupported Python construct...)."""
    try:
        return torch.fx.symbolic_trace(module).graph
    # what user code run on proxies raises: TraceError (a ValueError) for control flow, and
    # whatever the module's own code throws at a proxy
    except (ValueError, TypeError, RuntimeError, AttributeError, NotImplementedError, IndexError,
            KeyError, AssertionError) as exc:
        raise SpecTypeError(f"torch.fx cannot trace {type(module).__name__}: {one_line(exc)}. from_torch "
                            "reads an nn.Sequential, or a module whose forward torch.fx.symbolic_trace can "
                            "follow (no control flow on tensor values)") from exc


def _role(torch: Any, root: Any, node: Any, roles: Mapping[Any, Role]) -> Role:
    """Classify one node (those before it in ``roles``), refusing what symnn has no layer for."""
    if node.op == "placeholder":
        return Role(Kind.INPUT)
    if node.op == "output":
        outs = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
        if not outs or not all(isinstance(o, torch.fx.Node) for o in outs):
            raise SpecTypeError(f"{where(node)}: forward must return a tensor or a tuple of tensors")
        return Role(Kind.OUTPUT, tuple(outs))
    if node.op == "call_module":
        return _module_role(torch, root, node)
    if node.op == "get_attr":
        return Role(Kind.PARAM_ATTR)
    if node.op == "call_function" and node.target in functional_layers(torch):
        return functional_layer_role(torch, root, node)
    if node.op == "call_function":
        return _function_role(torch, node, roles)
    if node.op == "call_method":
        return _method_role(torch, node, roles)
    raise unsupported(node)


def _single_operand(torch: Any, node: Any) -> tuple[Any]:
    if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], torch.fx.Node):
        raise unsupported(node, " with arguments other than one tensor")
    return (node.args[0],)


def _module_role(torch: Any, root: Any, node: Any) -> Role:
    from .interop import _ACTIVATIONS, _check_variant

    sub = root.get_submodule(node.target)
    nn = torch.nn
    cls = type(sub)
    if isinstance(sub, nn.Linear):
        if sub.bias is None:
            raise SpecTypeError(f"{where(node)}: Linear(bias=False) is not supported (a symnn Dense has a bias)")
        return Role(Kind.LINEAR, _single_operand(torch, node), sub)
    spatial = _spatial_role(torch, sub, node)
    if spatial is not None:
        return spatial
    if cls is nn.LayerNorm:
        if len(sub.normalized_shape) != 1:
            raise SpecTypeError(f"{where(node)}: LayerNorm over {len(sub.normalized_shape)} dimensions; "
                                "symnn normalises the features of rank-1 samples only")
        if sub.elementwise_affine and sub.bias is None:
            raise SpecTypeError(f"{where(node)}: LayerNorm(bias=False) is not supported")
        return Role(Kind.LAYERNORM, _single_operand(torch, node), sub)
    if cls is nn.Dropout:  # the exact class: AlphaDropout, Dropout1d... differ
        return Role(Kind.DROPOUT, _single_operand(torch, node), sub)
    if cls is nn.Embedding:  # the exact class: an EmbeddingBag pools, a subclass may do anything
        return _embedding_role(torch, sub, node)
    if cls is nn.Identity:
        return Role(Kind.IDENTITY, _single_operand(torch, node), sub)
    if cls in recurrent_table(torch):  # the exact classes: a subclass may change forward
        return recurrent_role(torch, sub, node)
    kind = cls.__name__
    if kind in _ACTIVATIONS and cls is getattr(nn, kind):
        _check_variant(sub, kind, where(node))
        return Role(Kind.ACTIVATION, _single_operand(torch, node), sub, _activation(sub, kind))
    raise unsupported(node, f": {kind}")


#: nn.Embedding's settings symnn's Embedding does not model: (attribute, its default, why)
_EMBEDDING_REFUSED = (
    ("max_norm", None, "symnn does not renormalise the rows a batch reads (the forward pass would "
                       "write to the table)"),
    ("scale_grad_by_freq", False, "symnn's gradient is the plain sum over the batch, not scaled by how "
                                  "often each index occurs"),
    ("sparse", False, "symnn's gradient of the table is a dense (V, D) array"),
)


def _embedding_role(torch: Any, sub: Any, node: Any) -> Role:
    """An ``nn.Embedding``: refused with a setting symnn's layer lacks (each named), and unless
    it reads a forward argument directly (that argument becomes an index input, whose token
    ids the kernels check; a computed tensor holds reals)."""
    for attr, default, why in _EMBEDDING_REFUSED:
        if getattr(sub, attr) != default:
            raise SpecTypeError(f"{where(node)}: Embedding({attr}={getattr(sub, attr)!r}) is not supported: "
                                f"{why}; use {attr}={default!r}")
    (operand,) = _single_operand(torch, node)
    if operand.op != "placeholder":
        raise SpecError(f"{where(node)}: an nn.Embedding must read a forward argument directly (its token "
                        f"ids, an index input of the network); it reads {where(operand)}")
    return Role(Kind.EMBEDDING, (operand,), sub)


def _reshape_role(torch: Any, node: Any, roles: Mapping[Any, Role]) -> Role:
    """``t.reshape(n, -1)`` / ``t.view(n, -1)`` with ``n`` the batch size (``x.shape[0]``,
    ``x.size(0)``): each sample flattened, as ``torch.flatten(t, 1)``; so is ``t.view(-1, k)``
    where k is a sample's size (checked when the network is built: another k would mix samples)."""
    args = node.args
    sizes = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
    if (not node.kwargs and isinstance(args[0], torch.fx.Node) and len(sizes) == 2 and sizes[0] == -1
            and isinstance(sizes[1], numbers.Integral) and not isinstance(sizes[1], bool) and sizes[1] > 0):
        return Role(Kind.FLATTEN, (args[0],), features=int(sizes[1]))
    if (node.kwargs or not isinstance(args[0], torch.fx.Node) or len(sizes) != 2 or sizes[1] != -1
            or not isinstance(sizes[0], torch.fx.Node) or roles[sizes[0]].kind is not Kind.BATCH_SIZE):
        raise unsupported(node, " other than t.reshape(n, -1) with n the batch size (x.shape[0] or x.size(0)), or "
                           "t.view(-1, k) with k a sample's size")
    return Role(Kind.FLATTEN, (args[0],))


def _spatial_table(torch: Any) -> dict[type, tuple[Kind, type[Layer]]]:
    """torch module class -> (its kind, the symnn layer it becomes); the exact classes (a
    ``LazyConv2d`` or a ``ConvTranspose2d`` is another layer)."""
    nn = torch.nn
    return {nn.Conv1d: (Kind.CONV, Conv1d), nn.Conv2d: (Kind.CONV, Conv2d),
            nn.MaxPool1d: (Kind.POOL, MaxPool1d), nn.MaxPool2d: (Kind.POOL, MaxPool2d),
            nn.AvgPool1d: (Kind.POOL, AvgPool1d), nn.AvgPool2d: (Kind.POOL, AvgPool2d),
            nn.AdaptiveAvgPool1d: (Kind.GLOBAL_POOL, GlobalAvgPool),
            nn.AdaptiveAvgPool2d: (Kind.GLOBAL_POOL, GlobalAvgPool), nn.Flatten: (Kind.FLATTEN, Flatten),
            nn.BatchNorm1d: (Kind.BATCHNORM, BatchNorm1d), nn.BatchNorm2d: (Kind.BATCHNORM, BatchNorm2d)}


def needs_graph(torch: Any, sequential: Any) -> bool:
    """Whether an ``nn.Sequential`` is imported as a traced layer graph rather than as a
    Sequential of Dense layers: it holds a convolution, pooling, flatten or batch-norm module
    (images, and a layer with buffers, need a graph), an ``nn.Embedding`` (its input is an index
    input), or an ``nn.Identity`` (the Sequential form keeps no trace of it, so
    ``to_state_dict`` could not count it among the module indices)."""
    table = {**_spatial_table(torch), **recurrent_table(torch)}
    graph_only = (torch.nn.Identity, torch.nn.Embedding)
    return any(type(child) in table or type(child) in graph_only for child in sequential)


def _spatial_role(torch: Any, sub: Any, node: Any) -> Role | None:
    """The role of a convolution, pooling, flatten or batch-norm module, after refusing the
    settings symnn's layer does not have (each named); None for another module."""
    entry = _spatial_table(torch).get(type(sub))
    if entry is None:
        return None
    kind, _ = entry
    _check_spatial(kind, sub, f"{where(node)}: {type(sub).__name__}")
    return Role(kind, _single_operand(torch, node), sub)


def _check_spatial(kind: Kind, sub: Any, what: str) -> None:
    """Refuse the settings of a spatial module (or of the module a functional call stands
    for) that symnn's layer does not have, each named."""
    if kind is Kind.CONV and sub.padding_mode != "zeros":
        raise SpecTypeError(f"{what}(padding_mode={sub.padding_mode!r}) is not supported; symnn pads with zeros "
                            "(padding_mode='zeros')")
    if kind is Kind.POOL and getattr(sub, "return_indices", False):
        raise SpecTypeError(f"{what}(return_indices=True) is not supported: the layer returns one tensor")
    if kind is Kind.POOL and getattr(sub, "divisor_override", None) is not None:
        raise SpecTypeError(f"{what}(divisor_override={sub.divisor_override}) is not supported; symnn divides "
                            "by the window (count_include_pad as PyTorch)")
    if kind is Kind.GLOBAL_POOL and _sizes(sub.output_size) != {1}:
        raise SpecTypeError(f"{what}(output_size={sub.output_size!r}) is not supported; symnn pools globally: "
                            "output_size=1, followed by a flatten (an sn.GlobalAvgPool)")
    if kind is Kind.FLATTEN and (sub.start_dim, sub.end_dim) != (1, -1):
        raise SpecTypeError(f"{what}(start_dim={sub.start_dim}, end_dim={sub.end_dim}) is not supported; a "
                            "sample's features are flattened with start_dim=1, end_dim=-1")
    if kind is Kind.BATCHNORM:
        _check_batchnorm(sub, what)


def _functional_pools(torch: Any) -> dict[Any, Any]:
    """``F.max_pool2d``, ``F.avg_pool2d``, ``F.adaptive_avg_pool2d`` (and the 1-D ones) -> the
    module class each call stands for: its arguments after the input are that module's."""
    F, nn = torch.nn.functional, torch.nn
    return {F.max_pool1d: nn.MaxPool1d, F.max_pool2d: nn.MaxPool2d, F.avg_pool1d: nn.AvgPool1d,
            F.avg_pool2d: nn.AvgPool2d, F.adaptive_avg_pool1d: nn.AdaptiveAvgPool1d,
            F.adaptive_avg_pool2d: nn.AdaptiveAvgPool2d}


def _functional_pool_role(torch: Any, node: Any, cls: Any) -> Role:
    """A functional pooling call as the module it stands for (``F.max_pool2d(x, 2)`` is
    ``nn.MaxPool2d(2)`` on x), its settings checked as the module's; sizes must be constants."""
    settings = (*node.args[1:], *node.kwargs.values())
    if not node.args or not isinstance(node.args[0], torch.fx.Node) or any(
            isinstance(v, torch.fx.Node) or not isinstance(v, (numbers.Number, tuple, list, type(None)))
            for v in settings):
        raise unsupported(node, " with arguments other than a tensor and constant sizes")
    try:
        sub = cls(*node.args[1:], **node.kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecTypeError(f"{where(node)}: {shown(str(exc), 160)}") from exc
    kind = _spatial_table(torch)[cls][0]
    _check_spatial(kind, sub, f"{where(node)}: {node.target.__name__}")
    return Role(kind, (node.args[0],), sub)


def _check_batchnorm(sub: Any, what: str) -> None:
    """Refuse a batch norm whose state symnn would not reproduce: running statistics tracked
    but absent (set to None after construction, which torch then treats as untracked), or
    statistics present while ``track_running_stats`` is off (torch then ignores them in
    ``train()`` but uses them in ``eval()``: a mode symnn's layer has no field for)."""
    held = sub.running_mean is not None
    if held != bool(sub.track_running_stats):
        raise SpecTypeError(f"{what}(track_running_stats={sub.track_running_stats}) "
                            f"{'holds' if held else 'lacks'} running statistics; symnn reads a BatchNorm "
                            "that tracks them and holds them, or neither")
    if (sub.weight is None) != (not sub.affine):
        raise SpecTypeError(f"{what}(affine={sub.affine}) {'lacks' if sub.weight is None else 'holds'} "
                            "weight and bias; symnn reads a BatchNorm with both (affine=True) or neither")


def _sizes(value: object) -> set[object]:
    """The distinct entries of an int-or-tuple size (``1``, ``(1, 1)``, ``(1, None)``)."""
    return set(value) if isinstance(value, (tuple, list)) else {value}


def _activation(settings: Any, kind: str) -> Activation:
    """The symnn activation for torch activation ``kind`` with the settings on ``settings``."""
    from .interop import _ACTIVATIONS

    act_name, carried = _ACTIVATIONS[kind]
    values = {ours: float(getattr(settings, theirs)) for ours, theirs in carried.items()}
    return Activation.builtin(act_name, **values)


def _function_table(torch: Any) -> dict[Callable, tuple[str, tuple[str, ...]]]:
    """Activation functions -> (torch module class name, their arguments after the input in order)."""
    F = torch.nn.functional
    return {
        torch.relu: ("ReLU", ()), F.relu: ("ReLU", ("inplace",)), torch.tanh: ("Tanh", ()),
        F.tanh: ("Tanh", ()), torch.sigmoid: ("Sigmoid", ()), F.sigmoid: ("Sigmoid", ()),
        F.leaky_relu: ("LeakyReLU", ("negative_slope", "inplace")), F.elu: ("ELU", ("alpha", "inplace")),
        F.softplus: ("Softplus", ("beta", "threshold")), F.silu: ("SiLU", ("inplace",)),
        F.gelu: ("GELU", ("approximate",)), F.softsign: ("Softsign", ()),
        F.softmax: ("Softmax", ("dim", "_stacklevel", "dtype")), torch.softmax: ("Softmax", ("dim", "dtype")),
    }


#: tensor methods that are activations -> (torch module class name, arguments after self)
_METHODS = {"relu": ("ReLU", ()), "tanh": ("Tanh", ()), "sigmoid": ("Sigmoid", ()),
            "softmax": ("Softmax", ("dim", "dtype"))}
#: arguments that do not change the value (``inplace``) or the call's bookkeeping
_IGNORED_ARGS = ("inplace", "_stacklevel")


def _function_role(torch: Any, node: Any, roles: Mapping[Any, Role]) -> Role:
    target = node.target
    if target is operator.getitem:
        return getitem_role(torch, node, roles)
    if target is getattr and len(node.args) == 2 and node.args[1] == "shape" and not node.kwargs:
        return Role(Kind.SHAPE)
    if target in (operator.add, torch.add):
        return _add_role(torch, node)
    if target in (torch.cat, torch.concat):
        return _cat_role(torch, node, roles)
    if target is torch.flatten:
        return _flatten_role(torch, node)
    if target in (torch.transpose, torch.permute, torch.swapaxes, torch.swapdims):
        return time_swap_role(node, target.__name__)
    pools = _functional_pools(torch)
    if target in pools:
        return _functional_pool_role(torch, node, pools[target])
    table = _function_table(torch)
    if target in table:
        kind, names = table[target]
        return _activation_call(torch, node, kind, names)
    raise unsupported(node)


def _method_role(torch: Any, node: Any, roles: Mapping[Any, Role]) -> Role:
    if node.target == "size" and not node.kwargs and len(node.args) <= 2:
        return Role(Kind.BATCH_SIZE if node.args[1:] == (0,) else Kind.SHAPE)
    if node.target in ("reshape", "view"):
        return _reshape_role(torch, node, roles)
    if node.target == "squeeze" and node.args[1:] == (0,) and not node.kwargs:
        return squeeze_role(torch, node, roles)
    if node.target == "add":
        return _add_role(torch, node)
    if node.target in SWAP_METHODS:
        return time_swap_role(node, node.target)
    if node.target == "flatten":
        return _flatten_role(torch, node)
    if node.target in _METHODS:
        kind, names = _METHODS[node.target]
        return _activation_call(torch, node, kind, names)
    raise unsupported(node)


def _activation_call(torch: Any, node: Any, kind: str, names: tuple[str, ...]) -> Role:
    """An activation function or method: its arguments set on a default torch module of that
    kind, so the module path's variant checks and carried parameters apply unchanged."""
    from .interop import _check_variant

    if not node.args or not isinstance(node.args[0], torch.fx.Node) or len(node.args) - 1 > len(names):
        raise unsupported(node, " with these arguments")
    given = dict(zip(names, node.args[1:]))
    for key, value in node.kwargs.items():
        if key not in names or key in given:
            raise unsupported(node, f" with argument {shown(key)}")
        given[key] = value
    settings = getattr(torch.nn, kind)()
    for key, value in given.items():
        if isinstance(value, torch.fx.Node):  # a setting computed from tensors: not a constant
            raise unsupported(node, f" with {key} computed in forward")
        if key == "dtype" and value is not None:
            raise unsupported(node, f" with dtype={value}")
        if key not in _IGNORED_ARGS and key != "dtype":
            setattr(settings, key, value)
    _check_variant(settings, kind, where(node))
    return Role(Kind.ACTIVATION, (node.args[0],), activation=_activation(settings, kind))


def _add_role(torch: Any, node: Any) -> Role:
    args = node.args
    alpha = node.kwargs.get("alpha", 1)
    if (len(args) != 2 or set(node.kwargs) - {"alpha"} or alpha != 1
            or not all(isinstance(a, torch.fx.Node) for a in args)):
        raise unsupported(node, " other than the sum of two tensors (a constant offset is a Linear's bias)")
    return Role(Kind.ADD, tuple(args))


def _flatten_role(torch: Any, node: Any) -> Role:
    """``torch.flatten(x, 1)`` or ``x.flatten(1)`` (end_dim -1): each sample's features, as
    ``nn.Flatten()``; other dimensions would fold the batch in or keep an image axis."""
    given = dict(zip(("input", "start_dim", "end_dim"), node.args))
    for key, value in node.kwargs.items():
        if key not in ("start_dim", "end_dim") or key in given:
            raise unsupported(node, f" with argument {shown(key)}")
        given[key] = value
    if not isinstance(given.get("input"), torch.fx.Node) or len(node.args) > 3:
        raise unsupported(node, " on something other than one tensor")
    dims = (given.get("start_dim", 0), given.get("end_dim", -1))
    if dims != (1, -1):
        raise SpecError(f"{where(node)}: flatten(start_dim={dims[0]}, end_dim={dims[1]}) does not flatten each "
                        "sample: use torch.flatten(x, 1) (start_dim=1, end_dim=-1)")
    return Role(Kind.FLATTEN, (given["input"],))


def _cat_role(torch: Any, node: Any, roles: Mapping[Any, Role]) -> Role:
    given = dict(zip(("tensors", "dim"), node.args))
    for key, value in node.kwargs.items():
        if key not in ("tensors", "dim") or key in given:
            raise unsupported(node, f" with argument {shown(key)}")
        given[key] = value
    tensors, dim = given.get("tensors"), given.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, torch.fx.Node) for t in tensors):
        raise unsupported(node, " on something other than a list of tensors")
    if dim not in (1, 2, -1):
        raise SpecError(f"{where(node)}: torch.cat(dim={dim}) does not join features; symnn joins along "
                        "dim=1 (or -1) of batch-first (N, features) tensors, dim=2 (or -1) of sequences (N, T, F)")
    joined = final_states_cat(node, tensors, roles)  # a bidirectional layer's last state
    # the dim, checked against the tensors' rank once shapes are known: it must be their last
    return joined if joined is not None else Role(Kind.CAT, tuple(tensors), index=dim)


def _input_shapes(placeholders: Sequence[Any], roles: Mapping[Any, Role],
                  input_shapes: Sequence[object] | None, hint: str) -> list[tuple[int, ...]]:
    """One sample shape per forward argument: ``input_shapes`` if given (a width, or a shape
    (C, L) / (C, H, W)), else read off a Linear's ``in_features`` or a LayerNorm's size among
    the argument's consumers (the fx graph has no shapes; a convolution's input has a height
    and width that no module holds)."""
    if input_shapes is not None:
        if isinstance(input_shapes, (str, bytes)) or not isinstance(input_shapes, Sequence):
            raise SpecTypeError(f"input_shapes must be a list of shapes, one per forward argument, got "
                                f"{type(input_shapes).__name__}")
        if len(input_shapes) != len(placeholders):
            raise SpecError(f"input_shapes gives {len(input_shapes)} shape(s); forward takes "
                            f"{len(placeholders)} argument(s): {', '.join(str(p.target) for p in placeholders)}")
        return [_shape(s) for s in input_shapes]
    shapes = []
    for p in placeholders:
        width = None
        for user in p.users:
            role = roles[user]
            if role.kind is Kind.LINEAR and role.operands[0] is p:
                width = int(role.module.in_features)
            elif role.kind is Kind.LAYERNORM:
                width = int(role.module.normalized_shape[0])
            if width is not None:
                break
        if width is None:
            raise SpecError(f"the shape of forward argument {shown(p.target)} is not in the traced graph (no "
                            "Linear or LayerNorm reads it directly; a Conv or pooling layer's input has a height "
                            "and width, an Embedding's input a number of tokens T, an RNN/GRU/LSTM's input T "
                            "steps of F features, that no module holds): pass "
                            f"{hint}")
        shapes.append((width,))
    return shapes


def _shape(value: object) -> tuple[int | None, ...]:
    """A sample shape as given: a width, or a sequence of positive sizes ((C, L), (C, H, W)); a
    sequence of run-time length (T, F) as (None, F) (or (None,) for token indices)."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    sized = items[1:] if items and items[0] is None else items
    if not 1 <= len(items) <= 3 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1
                                       for v in sized):
        raise SpecTypeError(f"an input shape is a width or a tuple (C, L) or (C, H, W) of positive integers "
                            f"(a sequence of run-time length: (None, F)), got {shown(value)}")
    return tuple(None if v is None else int(v) for v in items)


#: the key of a call_module node's ``meta`` under which :func:`_name_nested_modules` leaves the
#: layer name of a nested module
_NESTED_NAME = "symnn_layer_name"


def _name_nested_modules(graph: Any) -> None:
    """Give every nested module a call_module node calls (``blocks.0.conv``) its layer name,
    in ``node.meta``: its path's parts joined by ``_`` (:func:`nested_layer_name`), and where
    that is already a top-level module's name or another nested module's (``a.0`` and an
    attribute ``a_0`` both give ``a_0``), the first of ``_2``, ``_3``, ... after it that is
    free. A top-level module keeps its attribute name, which keys its parameters; a nested
    one's are keyed under its path (:attr:`Network.module_paths`), whatever its name."""
    calls = [node for node in graph.nodes if module_path(node) is not None]
    taken = {module_path(node) for node in calls if "." not in module_path(node)}
    named: dict[str, str] = {}
    for node in calls:
        path = module_path(node)
        if "." not in path:
            continue
        if path not in named:
            try:
                base = nested_layer_name(path)
            except SpecError as exc:
                raise SpecError(f"{where(node)}: the module {shown(path)} cannot name a symnn layer "
                                f"({exc})") from exc
            name, number = base, 2
            while name in taken:
                name, number = f"{base}_{number}", number + 1
            taken.add(name)
            named[path] = naming.layer_name(name)
        node.meta[_NESTED_NAME] = named[path]


def _layer_name(node: Any) -> str:
    """The symnn name of the layer a call_module node calls (or a functional layer makes, of the
    module holding its parameters): the module's attribute name (:func:`layer_name_of`), so
    that its parameters are keyed as in ``state_dict()``; for a nested module
    (``blocks.0.conv``) the name :func:`_name_nested_modules` gave it (``blocks_0_conv``), the
    network then keying its parameters under the path (:attr:`Network.module_paths`)."""
    path = module_path(node)
    assert path is not None
    if "." in path:
        return node.meta[_NESTED_NAME]
    if _INDEX_LAYER.fullmatch(path):
        raise SpecError(f"{where(node)}: the attribute {shown(path)} is the name symnn gives an nn.Sequential's "
                        f"module {path[1:]}, so its parameters could not be told apart from that one's in "
                        "to_state_dict; rename the attribute")
    try:
        return layer_name_of(path)
    except SpecError as exc:  # not a plain name: it could not key the parameters as the state_dict does
        raise SpecError(f"{where(node)}: the attribute {shown(path)} cannot name a symnn layer "
                        f"({exc})") from exc


def nested_layer_name(path: str) -> str:
    """The layer name of a nested module ``path`` (``blocks.0.conv``): its parts joined by ``_``
    (``blocks_0_conv``), runs of ``_`` made one (a layer name holds no ``__``), ``m_`` before a
    name that would not start with a letter; checked as every layer name."""
    name = re.sub(r"_{2,}", "_", naming.module_path(path, "module path").replace(".", "_")).strip("_")
    return naming.layer_name(name if name[:1].isalpha() else f"m_{name}")


def layer_name_of(attribute: str) -> str:
    """The symnn layer name of a module held under ``attribute``: the attribute itself, or
    ``_3`` for an ``nn.Sequential``'s module ``3`` (a layer name cannot start with a digit).
    :func:`state_dict_key` undoes it."""
    return naming.layer_name(f"_{attribute}" if _INDEX.fullmatch(attribute) else attribute)


def state_dict_key(param: str) -> str:
    """The ``state_dict()`` key of a layer graph's parameter ``param``: ``fc1.weight`` is its
    own key, an nn.Sequential's ``_3.weight`` is ``3.weight`` (the inverse of
    :func:`layer_name_of`, which refuses an attribute named ``_3``, so the two are one to one)."""
    layer, dot, leaf = param.rpartition(".")
    return f"{layer[1:]}{dot}{leaf}" if _INDEX_LAYER.fullmatch(layer) else param


def _layer(cache: dict[str, Layer], node: Any, made: Layer) -> Layer:
    """The layer for a module called at ``node`` (or whose parameters a functional layer reads):
    one layer per module, so a module called twice shares its parameters, as in torch."""
    key = module_path(node) or str(node.target)
    held = cache.setdefault(key, made)
    if held != made:
        raise SpecError(f"{where(node)}: the module {shown(key)} is called twice as different symnn layers "
                        f"({held.describe()} and {made.describe()}: e.g. with different activations)")
    return held


def _check_global_pools(roles: Mapping[Any, Role]) -> None:
    """An ``nn.AdaptiveAvgPool(1)`` must feed one flatten and nothing else: the pair is one
    ``sn.GlobalAvgPool``, (C, H, W) -> (C,); alone its output would be a (C, 1, 1) image."""
    for node, role in roles.items():
        if role.kind is not Kind.GLOBAL_POOL:
            continue
        users = list(node.users)
        if len(users) != 1 or roles[users[0]].kind is not Kind.FLATTEN:
            raise SpecError(f"{where(node)}: an AdaptiveAvgPool(1) must be followed by nn.Flatten() or "
                            "torch.flatten(x, 1), and feed nothing else: symnn reads the pair as one "
                            "sn.GlobalAvgPool, (C, H, W) -> (C,)")


def _build(torch: Any, graph: Any, roles: Mapping[Any, Role], placeholders: Sequence[Any],
           shapes: Sequence[tuple[int, ...]], modes: Mapping[Any, bool]) -> tuple[list[Tensor], list[Tensor]]:
    """Call symnn layers on tensors in the traced order: ``(inputs, outputs)``, the inputs in
    the order of forward's arguments; ``modes`` is each recurrent call's ``return_sequences``."""
    names = [str(p.target) for p in placeholders]
    values: dict[Any, Tensor] = {
        p: Input(*s, name=None if len(placeholders) == 1 else n, indices=_reads_indices(p, roles))
        for p, s, n in zip(placeholders, shapes, names)}
    layers: dict[str, Layer] = {}
    for node in graph.nodes:
        role = roles[node]
        if role.kind in (Kind.INPUT, Kind.PARAM_ATTR):
            continue
        if role.kind is Kind.ACTIVATION:
            if node not in values:  # not folded into the Linear before it: a layer of its own
                values[node] = Activate(role.activation)(values[role.operands[0]])
            continue
        if role.kind is Kind.OUTPUT:
            return [values[p] for p in placeholders], [values[o] for o in role.operands]
        if role.kind is Kind.FLATTEN and node in values:  # a global pool's flatten, made with it
            continue
        if role.kind in RECURRENT_PARTS:
            _recurrent_part(torch, node, role, values, layers, modes)
            continue
        args = [values[a] for a in role.operands]
        if role.kind is Kind.LINEAR:
            user = _folded_activation(node, roles)
            act = roles[user].activation if user is not None else Activation.builtin("identity")
            lin = role.module
            made = Dense(int(lin.in_features), int(lin.out_features), act, name=_layer_name(node))
            dense = _layer(layers, node, made)
            values[user if user is not None else node] = dense(*args)
        elif role.kind is Kind.CONV:
            user = _folded_activation(node, roles)
            if user is not None and roles[user].activation.is_rowwise:  # softmax: over features only
                user = None
            act = roles[user].activation if user is not None else Activation.builtin("identity")
            conv = _layer(layers, node, _conv(torch, role.module, act, _layer_name(node)))
            values[user if user is not None else node] = conv(*args)
        elif role.kind is Kind.POOL and node.op == "call_function":  # F.max_pool2d...: a layer per call
            values[node] = _pool(torch, role.module, None)(*args)
        elif role.kind is Kind.POOL:
            values[node] = _layer(layers, node, _pool(torch, role.module, _layer_name(node)))(*args)
        elif role.kind is Kind.GLOBAL_POOL:  # with its flatten (_check_global_pools)
            (flatten,) = node.users
            pool = (GlobalAvgPool() if node.op == "call_function"
                    else _layer(layers, node, GlobalAvgPool(name=_layer_name(node))))
            values[flatten] = pool(*args)
        elif role.kind is Kind.FLATTEN:
            if node.op == "call_module":  # nn.Flatten: named after its attribute, as every module
                values[node] = _layer(layers, node, Flatten(name=_layer_name(node)))(*args)
            else:  # torch.flatten(x, 1), x.flatten(1), t.view(-1, k)
                values[node] = Flatten()(*args)
                if role.features is not None and values[node].shape != (role.features,):
                    raise SpecError(f"{where(node)}: view(-1, {role.features}) of samples of shape "
                                    f"{tuple(args[0].shape)} ({values[node].shape[0]} values each) would not keep "
                                    "one sample per row; symnn reads view(-1, k) with k a sample's size")
        elif role.kind is Kind.LAYERNORM:
            mod = role.module
            ln = LayerNorm(int(mod.normalized_shape[0]), float(mod.eps), bool(mod.elementwise_affine),
                           name=_layer_name(node))
            values[node] = _layer(layers, node, ln)(*args)
        elif role.kind is Kind.BATCHNORM:
            values[node] = _layer(layers, node, _batchnorm(torch, role.module, _layer_name(node)))(*args)
        elif role.kind is Kind.DROPOUT:
            values[node] = _layer(layers, node, Dropout(float(role.module.p), name=_layer_name(node)))(*args)
        elif role.kind is Kind.EMBEDDING:
            mod = role.module
            emb = Embedding(int(mod.num_embeddings), int(mod.embedding_dim), mod.padding_idx,
                            name=_layer_name(node))
            values[node] = _layer(layers, node, emb)(*args)
        elif role.kind in (Kind.IDENTITY, Kind.TIME_SWAP):  # a swap: symnn's sequences are batch-first
            values[node] = args[0]
        elif role.kind is Kind.ADD:
            values[node] = args[0] + args[1]
        elif role.kind is Kind.CAT:
            rank = len(args[0].shape) + 1  # with the batch
            if role.index not in (-1, rank - 1):
                raise SpecError(f"{where(node)}: torch.cat(dim={role.index}) of tensors of shape (N, "
                                f"{', '.join(map(str, args[0].shape))}) joins along another axis than their last; "
                                "symnn joins features (dim=1 of (N, F), dim=2 of a sequence's (N, T, F))")
            values[node] = concat(args)
    raise SpecError("the traced graph has no output")  # pragma: no cover - fx always ends with one


def _recurrent_part(torch: Any, node: Any, role: Role, values: dict[Any, Tensor], layers: dict[str, Layer],
                    modes: Mapping[Any, bool]) -> None:
    """The value of a recurrent call (the symnn layer applied) or of a part of its result: the
    output sequence when the layer returns it, the last state for ``out[:, -1]``/``h_n[-1]`` (a
    bidirectional module's ``out[:, -1]``: the sequence's last step, an ``sn.LastStep``);
    the state tuple, ``c_n`` (unused) and batch sizes have none (:func:`recurrent_modes`
    checked who reads them)."""
    if role.kind is Kind.RECURRENT:
        made = recurrent_layer(torch, role.module, modes[node], _layer_name(node))
        values[node] = _layer(layers, node, made)(*(values[o] for o in role.operands))
    elif role.kind is Kind.LAST_STEP or (role.kind is Kind.RNN_OUTPUT and modes[role.operands[0]]):
        values[node] = values[role.operands[0]]
    elif role.kind is Kind.SEQUENCE_LAST:  # a bidirectional module's out[:, -1]: its sequence's last step
        values[node] = LastStep()(values[role.operands[0]])
    elif role.kind is Kind.RNN_STATE and not modes[role.operands[0]]:  # h_n as another's initial state
        values[node] = values[role.operands[0]]


def _reads_indices(placeholder: Any, roles: Mapping[Any, Role]) -> bool:
    """Whether a forward argument holds token ids: an nn.Embedding reads it (then nothing else
    may: the layer graph refuses a Linear on indices, naming it)."""
    return any(roles[user].kind is Kind.EMBEDDING for user in placeholder.users)


def _conv(torch: Any, mod: Any, activation: Activation, name: str) -> Layer:
    """The ``sn.Conv1d``/``Conv2d`` of a torch convolution (its attributes are PyTorch's
    arguments; ``padding`` may be "same" or "valid")."""
    cls = _spatial_table(torch)[type(mod)][1]
    padding = mod.padding if isinstance(mod.padding, str) else tuple(mod.padding)
    return cls(int(mod.in_channels), int(mod.out_channels), tuple(mod.kernel_size), tuple(mod.stride), padding,
               tuple(mod.dilation), int(mod.groups), mod.bias is not None, activation, name=name)


def _pool(torch: Any, mod: Any, name: str | None) -> Layer:
    """The symnn pooling layer of a torch ``MaxPool``/``AvgPool`` module, settings carried over
    (checked by the layer's constructor as any user's)."""
    cls = _spatial_table(torch)[type(mod)][1]
    if cls.OP is ir.Op.MAX_POOL:  # type: ignore[attr-defined]
        return cls(mod.kernel_size, mod.stride, mod.padding, mod.dilation, bool(mod.ceil_mode), name=name)
    return cls(mod.kernel_size, mod.stride, mod.padding, bool(mod.ceil_mode), bool(mod.count_include_pad),
               name=name)


def _batchnorm(torch: Any, mod: Any, name: str) -> Layer:
    """The ``sn.BatchNorm1d``/``BatchNorm2d`` of a torch batch norm, its settings carried over
    (``momentum=None``, the cumulative average, included); the constructor checks them."""
    cls = _spatial_table(torch)[type(mod)][1]
    momentum = None if mod.momentum is None else float(mod.momentum)
    return cls(int(mod.num_features), float(mod.eps), momentum, bool(mod.affine), bool(mod.track_running_stats),
               name=name)


def _folded_activation(node: Any, roles: Mapping[Any, Role]) -> Any:
    """The activation node a Linear's or Conv's output feeds when it feeds only that (it folds
    into the layer), else None."""
    users = list(node.users)
    if len(users) == 1 and roles[users[0]].kind is Kind.ACTIVATION and roles[users[0]].operands[0] is node:
        return users[0]
    return None


def _default_loss(output: Tensor) -> str:
    """The loss an output gets without ``loss=``: by the activation that makes it, as for a
    Sequential (identity for a layer without one)."""
    from .interop import default_loss

    act = output.layer.output_activation or Activation.builtin("identity")
    return default_loss(act, output.shape[0])


def _params(torch: Any, module: Any, net: Network, dtype: str) -> dict[str, np.ndarray]:
    """The module's ``state_dict()`` as the network's parameters, after checking that the two
    name the same tensors with the same shapes: a parameter or buffer symnn would not map is
    refused (``to_state_dict`` would silently lack it)."""
    from .interop import _weights

    state = module.state_dict()
    shapes = {net.state_dict_key(name): (name, shape) for name, shape in net.param_shapes().items()}
    unmapped = [k for k in state if k not in shapes]
    if unmapped:
        raise SpecError(f"the module holds {shown(unmapped, 160)}, which no traced layer uses or which symnn "
                        "does not map (a parameter used through get_attr, a buffer, an unused submodule); "
                        "from_torch keeps the state_dict exact, so it refuses rather than drop them")
    missing = [k for k in shapes if k not in state]
    if missing:  # pragma: no cover - every layer's parameters come from its module
        raise SpecError(f"the module's state_dict lacks {shown(missing, 160)}")
    from .interop import counter_params

    counters = counter_params(net)
    params = {}
    for key, (name, shape) in shapes.items():
        tensor = state[key].detach().cpu()
        if tuple(tensor.shape) != tuple(shape):
            raise ModelFormatError(f"{key}: shape {tuple(tensor.shape)}, the layer needs {tuple(shape)}")
        if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.double()  # float16/bfloat16 (NumPy has no bfloat16) are exact in float64
        params[name] = _weights(tensor.numpy(), key, dtype)
        if name in counters and params[name].item() != tensor.item():  # a count past 2**24 in float32
            raise ModelFormatError(f"{key} = {tensor.item()} is not exact in {dtype}: the cumulative average "
                                   "(momentum=None) would divide by another count")
    return params


