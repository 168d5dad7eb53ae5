"""``sn.from_onnx`` for a model with convolutions, pooling, flattening, residual additions or
concatenations: the ONNX graph is rebuilt as a symnn layer graph (docs/layer_graphs.md).

``Conv`` becomes ``sn.Conv1d``/``Conv2d`` (with the Relu, Tanh, Sigmoid... right after it folded
in when its output feeds only that), ``MaxPool``/``AveragePool`` their ``sn`` namesakes,
``GlobalAveragePool`` with the ``Flatten``/``Reshape`` after it one ``sn.GlobalAvgPool``,
``Flatten(axis=1)`` and ``Reshape`` to (N, -1) an ``sn.Flatten``, ``Gemm`` and ``MatMul`` (+ its
bias ``Add``) an ``sn.Dense``, ``Add`` of two computed tensors a residual ``a + b``, and
``Concat(axis=1)`` of feature vectors an ``sn.concat``, ``BatchNormalization`` (inference form)
an ``sn.BatchNorm1d``/``BatchNorm2d``, ``LayerNormalization`` over the features an
``sn.LayerNorm``, and ``Gather(axis=0)`` of an initializer (the table) by the graph's integer
input (token ids, declared (N, T)) an ``sn.Embedding`` on an index input, and ``RNN``/``GRU``/``LSTM``
(direction "forward" or "bidirectional", batch-first ``layout=1`` or time-major as
torch.onnx.export writes it, default activations) an ``sn.RNN``/``GRU``/``LSTM`` with its weights
in PyTorch's gate order and names (:func:`_recurrent`). A layer with weights is named as the PyTorch module that exported them
(initializer ``conv1.weight``: layer ``conv1``, so its parameters are keyed as the module's
``state_dict``), else ``conv1``, ``dense2``... by kind. An ``Identity`` of a weight (what
torch's exporter writes for two equal initializers) names the same weight; a ``Constant`` of
floating-point values is a weight like an initializer.

The file is untrusted (RELIABILITY.md U4), as for an MLP (symnn/interop.py): each node is
checked against its op's spec (domain, arity, attribute names, types and list lengths) and
every attribute's values against what symnn's layer takes, with an error naming the node,
before any weight is decoded; weights go through the MLP importer's checked reader; names
reach the network only through :mod:`symnn.naming`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .declare import Activate, Activation, Dense, Network
from .errors import ModelFormatError, SpecError, SpecTypeError, UntrustedInputError
from .batchnorm import BatchNorm1d, BatchNorm2d
from .embedding import Embedding
from .interop import (_FLOAT_ATTR, _FLOATS_ATTR, _INT_ATTR, _INTS_ATTR, _ONNX_ACTIVATIONS, _ONNX_FLOATS, _ONNX_OPS,
                      _STRING_ATTR, _STRINGS_ATTR, _TENSOR_ATTR, _OnnxOp, _check_dtype, _node_attributes, _row_bias, _weight,
                      _weights)
from .layers import Input, Layer, LayerNorm, Tensor, concat
from . import naming
from .naming import shown
from . import onnx_sequences as seq
from .recurrent import GRU, LSTM, RNN
from .spatial_layers import (AvgPool1d, AvgPool2d, Conv1d, Conv2d, Flatten, GlobalAvgPool, MaxPool1d,
                             MaxPool2d)

#: the largest size, stride, padding or dilation symnn reads from a file (a C ``int``)
_MAX_SIZE = 2**31 - 1

_POOL_ATTRS = {"auto_pad": _STRING_ATTR, "ceil_mode": _INT_ATTR, "dilations": _INTS_ATTR,
               "kernel_shape": _INTS_ATTR, "pads": _INTS_ATTR, "strides": _INTS_ATTR}

_RECURRENT_ATTRS = {"activation_alpha": _FLOATS_ATTR, "activation_beta": _FLOATS_ATTR,
                    "activations": _STRINGS_ATTR, "clip": _FLOAT_ATTR, "direction": _STRING_ATTR,
                    "hidden_size": _INT_ATTR, "layout": _INT_ATTR}

#: the ops of a layer graph: the MLP's, and these (their ONNX spec: inputs, attributes, outputs)
_GRAPH_OPS: dict[str, _OnnxOp] = {
    **_ONNX_OPS,
    "Conv": _OnnxOp((2, 3), {"auto_pad": _STRING_ATTR, "dilations": _INTS_ATTR, "group": _INT_ATTR,
                             "kernel_shape": _INTS_ATTR, "pads": _INTS_ATTR, "strides": _INTS_ATTR}),
    "MaxPool": _OnnxOp((1, 1), {**_POOL_ATTRS, "storage_order": _INT_ATTR}, outputs=2),
    "AveragePool": _OnnxOp((1, 1), {**_POOL_ATTRS, "count_include_pad": _INT_ATTR}),
    "GlobalAveragePool": _OnnxOp((1, 1), {}),
    "Flatten": _OnnxOp((1, 1), {"axis": _INT_ATTR}),
    "Reshape": _OnnxOp((2, 2), {"allowzero": _INT_ATTR}),
    "Concat": _OnnxOp((1, _MAX_SIZE), {"axis": _INT_ATTR}),
    "Constant": _OnnxOp((0, 0), {"value": _TENSOR_ATTR}),
    # inference form only: training_mode=1 (three outputs) is refused by _checked
    "BatchNormalization": _OnnxOp((5, 5), {"epsilon": _FLOAT_ATTR, "momentum": _FLOAT_ATTR,
                                           "training_mode": _INT_ATTR}, outputs=3),
    "LayerNormalization": _OnnxOp((2, 3), {"axis": _INT_ATTR, "epsilon": _FLOAT_ATTR, "stash_type": _INT_ATTR},
                                  outputs=3),
    "Gather": _OnnxOp((2, 2), {"axis": _INT_ATTR}),
    # inputs X, W, R, B, sequence_lens, initial_h (LSTM: initial_c, P); outputs Y, Y_h (LSTM: Y_c)
    "RNN": _OnnxOp((3, 6), _RECURRENT_ATTRS, outputs=2, several=True),
    "GRU": _OnnxOp((3, 6), {**_RECURRENT_ATTRS, "linear_before_reset": _INT_ATTR}, outputs=2, several=True),
    "LSTM": _OnnxOp((3, 8), {**_RECURRENT_ATTRS, "input_forget": _INT_ATTR}, outputs=3, several=True),
    "Squeeze": _OnnxOp((1, 2), {"axes": _INTS_ATTR}),  # only of a recurrent op's output (_squeezed)
    # around a time-major (layout=0) recurrent op, as torch.onnx.export writes it (onnx_sequences)
    "Transpose": _OnnxOp((1, 1), {"perm": _INTS_ATTR}),
    "Shape": _OnnxOp((1, 1), {"start": _INT_ATTR, "end": _INT_ATTR}),
    "Unsqueeze": _OnnxOp((1, 2), {"axes": _INTS_ATTR}),
    "ConstantOfShape": _OnnxOp((1, 1), {"value": _TENSOR_ATTR}),
    "Expand": _OnnxOp((2, 2), {}),
    "Slice": _OnnxOp((1, 5), {"axes": _INTS_ATTR, "ends": _INTS_ATTR, "starts": _INTS_ATTR}),
}

#: ops that only a layer graph has: a model holding one is imported by this module
_GRAPH_ONLY = frozenset(_GRAPH_OPS) - frozenset(_ONNX_OPS)

_SUPPORTED = ("Conv, MaxPool, AveragePool, GlobalAveragePool (then Flatten or Reshape), Flatten (axis=1), "
              "Reshape to (N, -1), Gemm, MatMul (+ Add), Add, Concat (axis=1), BatchNormalization (inference "
              "form), LayerNormalization (over the features), Gather (axis 0 of an initializer by the integer "
              "input: an embedding), RNN, GRU, LSTM (forward or bidirectional; layout=1 with Y flattened or squeezed, "
              "or Y_h flattened or squeezed; layout=0 as torch.onnx.export writes it: the Transposes, Squeezes, "
              "zero initial states from Shape, or initial states as graph inputs (a stack's sliced per layer), the Gather of "
              "the last step or layer around it, a bidirectional "
              "op's Reshape of its steps and Concat of its two final states), Constant (a "
              "shape or a weight) and "
              f"{', '.join(sorted(_ONNX_ACTIVATIONS))} (an Identity of a weight is that weight)")

_INT64 = 7  # onnx.TensorProto.INT64
#: element types of an input of token ids (onnx.TensorProto.INT32, INT64): an index input
_INDEX_TYPES = frozenset({6, _INT64})


def is_layer_graph(graph: Any) -> bool:
    """Whether the ONNX graph needs a layer graph (it holds a spatial op, a flatten or a concat);
    an MLP keeps the Sequential form, parameters ``W1, b1...``."""
    return any(node.op_type in _GRAPH_ONLY for node in graph.node)


@dataclass
class _Node:
    """One checked node: its op, attributes, inputs, output and where it is (for errors)."""

    op: str
    attrs: Mapping[str, Any]
    inputs: tuple[str, ...]
    output: str
    where: str
    outputs: tuple[str, ...] = ()  # every output ("" for an omitted one), where the op has several


@dataclass
class _Builder:
    """The state of one import: tensors and constants by ONNX value name, each value's
    readers, the parameters and the layer names taken so far."""

    init: dict[str, Any]  # initializers, and the Constant and Identity weights found on the way
    base: Path | None
    dtype: str
    users: dict[str, list[_Node]]
    outputs: frozenset[str]
    values: dict[str, Tensor]
    consts: dict[str, tuple[int, ...]]
    params: dict[str, np.ndarray]
    names: set[str]
    done: set[int]  # ids of nodes folded into the layer before them
    #: weights that Constant nodes define (not initializers): an all-ones scale and all-zeros
    #: bias there are how torch's exporter writes a normalisation without affine parameters
    constants: set[str] = field(default_factory=set)
    #: the values around time-major recurrent ops: views, shapes, zeros (symnn/onnx_sequences.py)
    seq: seq.SequenceState = field(default_factory=seq.SequenceState)
    #: layer name -> the nested PyTorch module its weights were exported from (``stem.0``)
    paths: dict[str, str] = field(default_factory=dict)
    #: the top-level modules whose weights the initializers hold (``a_0`` of ``a_0.weight``): their
    #: layers take those names, so a nested module's joined name (``a.0`` -> ``a_0``) avoids them
    reserved: frozenset[str] = frozenset()
    #: graph inputs read only as a recurrent op's initial_h or initial_c, by name: their
    #: declarations, and the network input each became once its op was read
    states: dict[str, Any] = field(default_factory=dict)
    state_tensors: dict[str, Tensor] = field(default_factory=dict)
    #: a Slice of a state input (a stacked module's layer's rows): (the input, first row, end row)
    state_slices: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    #: graph inputs read only as recurrent ops' sequence_lens, by name: their declarations, and
    #: the mask input of the network each became once its first op was read
    lengths: dict[str, Any] = field(default_factory=dict)
    length_masks: dict[str, Tensor] = field(default_factory=dict)


def from_onnx_graph(graph: Any, init: Mapping[str, Any], base: Path | None, loss: object, name: str,
                    dtype: str) -> tuple[Network, dict[str, np.ndarray]]:
    """``(network, params)`` for an ONNX graph read as a layer graph (see the module doc)."""
    _check_dtype(dtype)
    nodes = [_checked(index, node) for index, node in enumerate(graph.node)]
    users: dict[str, list[_Node]] = {}
    for node in nodes:
        for key in node.inputs:
            users.setdefault(key, []).append(node)
    states = {i.name: i for i in graph.input if i.name not in init and _is_initial_state(i.name, users)}
    lengths = {i.name: i for i in graph.input if i.name not in init and _is_sequence_lens(i.name, users)}
    for i in lengths.values():
        _check_lengths_input(i)
    data_inputs = [i for i in graph.input if i.name not in init and i.name not in states and i.name not in lengths]
    if not data_inputs:
        raise SpecError("the ONNX graph has no data input (every graph input is an initializer, an initial "
                        "state or a sequence_lens)")
    out_names = [o.name for o in graph.output]
    named = bool(states) or bool(lengths) or len(data_inputs) > 1  # several inputs: each keyed by its name
    data = {i.name: _input(i, named, "x" if k == 0 else f"x{k}") for k, i in enumerate(data_inputs)}
    for i in data_inputs:
        if data[i.name].indices:
            _check_index_readers(i.name, users.get(i.name, []))
    b = _Builder(dict(init), base, dtype, users, frozenset(out_names), dict(data), {}, {}, set(),
                 set(), reserved=frozenset(k.rpartition(".")[0] for k in init
                                           if k.endswith(".weight") and k.count(".") == 1), states=states,
                 lengths=lengths)
    defined = {i.name for i in graph.input} | set(init)
    for node in nodes:
        for output in node.outputs or (node.output,):
            if output and output in defined:
                raise ModelFormatError(f"{node.where}: output {shown(output)} is already defined in the graph")
            defined.add(output)
        if id(node) not in b.done:
            _build(b, node)
    for o in out_names:  # a batch-first sequence returned as it is: the layer returns every step
        if o in b.seq.views:
            b.values[o] = seq.as_data(b.seq, "the graph's outputs", o)
    missing = [o for o in out_names if o not in b.values]
    if not out_names or missing:
        raise SpecError(f"the ONNX graph's outputs {shown(missing or out_names)} are not tensors it computes")
    outputs = [b.values[o] for o in out_names]
    if loss is None:
        from .torch_fx import _default_loss

        defaults = [_default_loss(t) for t in outputs]
        loss = defaults[0] if len(defaults) == 1 else defaults
    inputs = [data[i.name] for i in data_inputs] + [b.state_tensors[i.name] for i in graph.input if i.name in states]
    inputs += [b.length_masks[i.name] for i in graph.input if i.name in lengths]
    keys = [t.name for t in inputs]
    if named and len(set(keys)) != len(keys):
        raise SpecError(f"the ONNX graph's inputs {shown([i.name for i in graph.input if i.name not in init])} "
                        f"would be keyed {shown(keys)}, twice by one key; name them apart (input_names)")
    net = Network(inputs=inputs, outputs=outputs if len(outputs) > 1 else outputs[0], loss=loss, name=name)
    paths = {layer: path for layer, path in b.paths.items() if layer in net.graph.names}
    if paths:  # weights exported from nested modules: keyed under the module's path
        net.set_module_paths(paths)
    return net, {key: b.params[key] for key in net.param_shapes()}


def _checked(index: int, node: Any) -> _Node:
    where = f"node {index}{f' {shown(node.name)}' if node.name else ''} ({shown(node.op_type)})"
    if node.op_type == "BatchNormalization" and any(
            a.name == "training_mode" and a.type == _INT_ATTR and a.i != 0 for a in node.attribute):
        raise SpecTypeError(f"{where}: training_mode=1 is not supported; symnn reads the inference form "
                            "(scale, B, input_mean, input_var; one output) and computes batch statistics "
                            "itself in training")
    attrs = _node_attributes(node, where, _GRAPH_OPS, _SUPPORTED)
    if node.op_type == "MaxPool" and attrs.get("storage_order", 0) != 0:
        raise SpecTypeError(f"{where}: storage_order={attrs['storage_order']} is not supported; symnn reads "
                            "MaxPool with storage_order=0 (row-major indices, and only its first output)")
    for key, value in attrs.items():
        if isinstance(value, tuple) and any(not isinstance(v, str) and abs(v) > _MAX_SIZE for v in value):
            raise ModelFormatError(f"{where}: attribute {shown(key)}={shown(value)} holds a value beyond "
                                   f"{_MAX_SIZE}")
    outputs = tuple(node.output) if _GRAPH_OPS[node.op_type].several else ()
    return _Node(node.op_type, attrs, tuple(node.input), node.output[0], where, outputs)


def _input(value_info: Any, named: bool = False, fallback: str = "x") -> Tensor:
    """A data input of the graph: a tensor declared (N, F), (N, C, L) or (N, C, H, W), N dynamic
    or fixed, every other dimension a fixed positive size; an INT64 or INT32 one is T token ids
    per sample, declared (N, T): an index input, which only an embedding (a Gather) reads.
    ``named``: the network has other inputs (initial states, other data), so this one is keyed
    by its name, or ``fallback`` (:func:`_input_name`)."""
    tensor_type = value_info.type.tensor_type
    declared = value_info.type.HasField("tensor_type") and tensor_type.HasField("shape")
    dims = list(tensor_type.shape.dim) if declared else []
    sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
    indices = declared and tensor_type.elem_type in _INDEX_TYPES
    most = 2 if indices else 4
    # a sequence whose length is a run-time dimension (N, T, F), or (N, T) token ids: T dynamic
    length = len(dims) == (2 if indices else 3) and sizes[0] is None
    if length:
        sizes = sizes[1:]
    if not 2 <= len(dims) <= most or any(s is None or not 1 <= s <= _MAX_SIZE for s in sizes):
        wanted = ("(N, T) (T token ids per sample: it has an integer element type)" if indices else
                  "(N, C, H, W), (N, C, L) or (N, F)")
        raise SpecError(f"the ONNX input {shown(value_info.name)} must declare its shape as {wanted} with fixed "
                        f"positive sizes after the batch N (but a sequence's length T of (N, T, F)); it declares "
                        f"{shown(_dims_text(dims)) if dims else 'none'}")
    return Input(*([None] if length else []), *sizes, indices=indices,
                 name=_input_name(value_info.name, fallback) if named else None)


def _input_name(name: str, fallback: str) -> str:
    """The key of a graph input where the network has several: its ONNX name where that is a
    plain name (:func:`symnn.naming.identifier`), else ``fallback`` (torch's exporter names an
    input ``input.1`` where no ``input_names`` were given)."""
    try:
        return naming.identifier(name, "input name")
    except (UntrustedInputError, SpecTypeError):
        return fallback


def _check_index_readers(name: str, readers: Sequence[_Node]) -> None:
    """An integer input holds token ids: every node reading it must be a Gather taking it as its
    indices (an embedding), or the ids would be computed on as reals."""
    for node in readers:
        if node.op != "Gather" or node.inputs[1] != name or node.inputs[0] == name:
            raise SpecError(f"{node.where}: reads the integer input {shown(name)} (token ids); symnn reads "
                            "token ids only as the indices of a Gather(axis=0) of an embedding table")


def _dims_text(dims: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in dims) + ")"


def _tensor(b: _Builder, node: _Node, key: str) -> Tensor:
    """The computed tensor ``key`` that ``node`` reads (not a weight, not a constant)."""
    sequence = seq.as_data(b.seq, node.where, key)
    if sequence is not None:
        return sequence
    if key not in b.values:
        raise SpecError(f"{node.where}: input {shown(key)} is not a tensor the graph computes before it "
                        f"(a {node.op} reads the data flowing through the network here)")
    return b.values[key]


def _build(b: _Builder, node: _Node) -> None:
    if node.op == "Constant":
        _constant(b, node)
    elif node.op == "Identity" and node.inputs[0] in b.init:  # torch's exporter: one weight, two names
        b.init[node.output] = b.init[node.inputs[0]]
        if node.inputs[0] in b.constants:
            b.constants.add(node.output)
    elif node.op == "Slice" and node.inputs[0] in b.states:
        _state_slice(b, node)
    elif node.op == "Concat" and _joins_sequences(b, node):
        _concat_node(b, node)
    elif seq.follows(b.seq, node.op, node.inputs):
        seq.build(b.seq, node, b.values, b.consts, lambda key: _zero_weight(b, node, key),
                  lambda: _squeeze_axes(b, node))
    elif node.op == "BatchNormalization":
        _batchnorm(b, node)
    elif node.op == "LayerNormalization":
        _layernorm(b, node)
    elif node.op == "Gather":
        _gather(b, node)
    elif node.op in _RECURRENT_LAYERS:
        _recurrent(b, node)
    elif node.op == "Squeeze":
        raise SpecTypeError(f"{node.where}: symnn reads a Squeeze only of an RNN/GRU/LSTM's Y (axis 2) or Y_h "
                            "(axis 1), where it drops the direction axis")
    elif node.op == "Conv":
        _conv(b, node)
    elif node.op in ("MaxPool", "AveragePool"):
        b.values[node.output] = _pool(b, node)(_tensor(b, node, node.inputs[0]))
    elif node.op == "GlobalAveragePool":
        _global_pool(b, node)
    elif node.op in ("Flatten", "Reshape"):
        x = _tensor(b, node, node.inputs[0])
        _check_flatten(b, node, x.shape)
        b.values[node.output] = Flatten()(x)
    elif node.op in ("Gemm", "MatMul"):
        _dense(b, node)
    elif node.op == "Add":
        if not all(key in b.values for key in node.inputs):
            raise SpecError(f"{node.where}: Add must add two computed tensors (a residual) or give a MatMul "
                            "its bias (an initializer, the MatMul's only reader)")
        b.values[node.output] = b.values[node.inputs[0]] + b.values[node.inputs[1]]
    elif node.op == "Concat":
        _concat_node(b, node)
    else:  # an activation not folded into the layer before it
        x = _tensor(b, node, node.inputs[0])
        b.values[node.output] = Activate(_activation(node, len(x.shape)))(x)


def _concat_node(b: _Builder, node: _Node) -> None:
    """``Concat`` of computed tensors along their features: an ``sn.concat``."""
    parts = [_tensor(b, node, key) for key in node.inputs] if len(node.inputs) >= 2 else []
    last = len(parts[0].shape) if parts else 1  # the features' axis: 1 of (N, F), 2 of a sequence's (N, T, F)
    if not parts or node.attrs.get("axis") not in (last, -1):
        raise SpecError(f"{node.where}: Concat must join two or more feature vectors along axis 1 (sequences "
                        f"(N, T, F) along axis 2), got axis={node.attrs.get('axis')}")
    b.values[node.output] = concat(parts)


def _joins_sequences(b: _Builder, node: _Node) -> bool:
    """A Concat along the features (axis 2) of batch-first sequences, of which some are recurrent
    ops' outputs transposed back (``torch.cat((out1, out2), dim=2)``): each such output is read as
    data (its layer returns every step), and the join is an ``sn.concat`` as of any sequences."""
    views = [b.seq.views[key] for key in node.inputs if key in b.seq.views]
    return (node.attrs.get("axis") in (2, -1) and bool(views)
            and all(view.form is seq.Form.SEQUENCE for view in views))


def _constant(b: _Builder, node: _Node) -> None:
    """A Constant node: a floating-point tensor is a weight (read as an initializer is, when a
    layer uses it), anything else a shape (a Reshape's target)."""
    value = node.attrs.get("value")
    if value is not None and hasattr(value, "data_type") and value.data_type in _ONNX_FLOATS:
        b.init[node.output] = value
        b.constants.add(node.output)
    elif (index := seq.int_scalar(value, node.where, "value")) is not None:  # a Gather's index
        b.seq.scalars[node.output] = index
    else:
        b.consts[node.output] = _int_tensor(value, node.where, "value")


def _float_attr(node: _Node, key: str, default: float, closed: bool) -> float:
    """A float attribute in [0, 1] (``closed``) or (0, 1), NaN refused: a momentum, an
    epsilon. Taken exactly as the file's float32, as ONNX's reference evaluator does (so an
    exported 1e-5 reads as 9.99999975e-06)."""
    value = float(node.attrs.get(key, default))
    if not (0 <= value <= 1 if closed else 0 < value < 1):
        raise SpecError(f"{node.where}: {key}={value!r} is outside {'[0, 1]' if closed else '(0, 1)'}")
    return value


def _norm_vectors(b: _Builder, node: _Node, keys: Sequence[str], size: int) -> list[np.ndarray]:
    """The per-channel (or per-feature) weights ``keys`` of a normalisation, each of shape (size,)."""
    out = []
    for key in keys:
        v = _weight(b.init, key, 1, node.where, b.base, exact=True)
        if v.shape != (size,):
            raise SpecError(f"{node.where}: {shown(key)} has shape {v.shape}; the {node.op} reads {size} "
                            "channel(s)")
        out.append(v)
    return out


def _affine(b: _Builder, scale_key: str, bias_key: str, scale: np.ndarray, bias: np.ndarray) -> bool:
    """Whether a normalisation has weight and bias: not when both come from Constant nodes as
    ones and zeros (torch's export of ``affine=False`` / ``elementwise_affine=False``)."""
    return not ({scale_key, bias_key} <= b.constants and np.all(scale == 1) and np.all(bias == 0))


def _batchnorm(b: _Builder, node: _Node) -> None:
    """BatchNormalization in inference form, ``(X - input_mean) / sqrt(input_var + epsilon) *
    scale + B``: an ``sn.BatchNorm1d`` on (C,) or (C, L) samples, ``BatchNorm2d`` on (C, H, W),
    tracking running statistics (the file's mean and variance; ``num_batches_tracked``, which
    ONNX has not, starts at 0). ONNX's ``momentum`` weighs the running value, PyTorch's the
    batch's: the layer's momentum is ``1 - momentum`` (default 0.9, so 0.1)."""
    x = _tensor(b, node, node.inputs[0])
    if len(x.shape) not in (1, 2, 3):
        raise SpecError(f"{node.where}: reads samples of shape {x.shape}; symnn normalises (C,), (C, L) or (C, H, W)")
    c = int(x.shape[0])
    scale, bias, mean, var = _norm_vectors(b, node, node.inputs[1:5], c)
    if np.any(var < 0):
        raise ModelFormatError(f"{node.where}: the running variance {shown(node.inputs[4])} has negative entries")
    eps = _float_attr(node, "epsilon", float(np.float32(1e-5)), closed=False)
    momentum = 1.0 - _float_attr(node, "momentum", float(np.float32(0.9)), closed=True)
    affine = _affine(b, node.inputs[1], node.inputs[2], scale, bias)
    prefix = node.inputs[3].rpartition(".")[0]
    own = (node.inputs[3] == f"{prefix}.running_mean" and node.inputs[4] == f"{prefix}.running_var"
           and (not affine or node.inputs[1:3] == (f"{prefix}.weight", f"{prefix}.bias")))
    name = _layer_name(b, f"{prefix}.weight" if own else "", None, "batchnorm")
    cls = BatchNorm2d if len(x.shape) == 3 else BatchNorm1d
    layer = cls(c, eps, momentum, affine, True, name=name)
    values = {"weight": scale, "bias": bias} if affine else {}
    values.update(running_mean=mean, running_var=var, num_batches_tracked=np.zeros(()))
    for leaf, v in values.items():
        b.params[f"{name}.{leaf}"] = _weights(v, f"{name}.{leaf}", b.dtype)
    b.values[node.output] = layer(x)


def _layernorm(b: _Builder, node: _Node) -> None:
    """LayerNormalization over the features of (N, F), or of each step of a sequence (N, T, F):
    an ``sn.LayerNorm`` (``B`` must be given when the scale is a weight: symnn's LayerNorm has
    both or neither)."""
    x = _tensor(b, node, node.inputs[0])
    axis = node.attrs.get("axis", -1)
    if len(x.shape) not in (1, 2) or axis not in (-1, len(x.shape)):
        raise SpecError(f"{node.where}: normalises axis {axis} of samples of shape {x.shape}; symnn's LayerNorm "
                        "normalises the last axis of (N, F) or of a sequence's (N, T, F)")
    if node.attrs.get("stash_type", 1) not in (1, 11):
        raise SpecTypeError(f"{node.where}: stash_type={node.attrs['stash_type']} is not supported; symnn computes "
                            "the mean and variance in the kernel's dtype (stash_type 1 or 11)")
    if len(node.inputs) < 3 or not node.inputs[2]:
        raise SpecTypeError(f"{node.where}: a LayerNormalization without B (a bias) is not supported; symnn's "
                            "LayerNorm has a weight and a bias, or neither")
    d = int(x.shape[-1])
    scale, bias = _norm_vectors(b, node, node.inputs[1:3], d)
    eps = _float_attr(node, "epsilon", float(np.float32(1e-5)), closed=False)
    affine = _affine(b, node.inputs[1], node.inputs[2], scale, bias)
    name = _layer_name(b, node.inputs[1] if affine else "", node.inputs[2], "layernorm")
    if affine:
        b.params[f"{name}.weight"] = _weights(scale, f"{name}.weight", b.dtype)
        b.params[f"{name}.bias"] = _weights(bias, f"{name}.bias", b.dtype)
    b.values[node.output] = LayerNorm(d, eps, affine, name=name)(x)


def _gather(b: _Builder, node: _Node) -> None:
    """``Gather(data, indices, axis=0)`` with ``data`` an initializer (V, D) and ``indices`` the
    graph's integer input (N, T): the rows the ids name, (N, T, D), which is an ``sn.Embedding``
    (named after the module when the table is ``emb.weight``). ONNX has no ``padding_idx``:
    every row the batch names gets its gradient. A negative id, which ONNX's Gather counts from
    the end and ``nn.Embedding`` refuses, is refused by the kernels, as any id outside [0, V)."""
    data, ids = node.inputs
    axis = node.attrs.get("axis", 0)
    if axis != 0:
        raise SpecTypeError(f"{node.where}: Gather(axis={axis}) is not supported; symnn reads Gather(axis=0), "
                            "the rows of an embedding table")
    if data not in b.init:
        raise SpecError(f"{node.where}: the data {shown(data)} is not an initializer; symnn reads a Gather "
                        "whose data is an embedding table (a weight) and whose indices are the graph's integer "
                        "input")
    x = b.values.get(ids)
    if x is None or not x.indices:
        raise SpecError(f"{node.where}: the indices {shown(ids)} are not the graph's integer input; symnn reads "
                        "a Gather of an embedding table by the token ids the graph takes (INT64 or INT32, "
                        "declared (N, T))")
    w = _weight(b.init, data, 2, node.where, b.base, exact=True)
    if min(w.shape) < 1:
        raise SpecError(f"{node.where}: the table {shown(data)} has shape {w.shape}; an embedding has rows")
    name = _layer_name(b, data, None, "embedding")
    b.params[f"{name}.weight"] = _weights(w, f"{name}.weight", b.dtype)
    b.values[node.output] = Embedding(int(w.shape[0]), int(w.shape[1]), name=name)(x)


def _activation(node: _Node, rank: int) -> Activation:
    """The symnn activation of an ONNX activation node on samples of ``rank`` dimensions."""
    act_name, params = _ONNX_ACTIVATIONS[node.op]
    if node.op == "Softmax" and (rank not in (1, 2) or node.attrs.get("axis", -1) not in (-1, rank)):
        raise SpecTypeError(f"{node.where}: Softmax must act on the features (axis 1 of (N, F), or axis 2 of "
                            "a sequence's (N, T, F))")
    values = {ours: float(node.attrs.get(attr, default)) for ours, (attr, default) in params.items()}
    return Activation.builtin(act_name, **values)


def _folded(b: _Builder, node: _Node, rank: int) -> tuple[Activation, str]:
    """The activation right after ``node`` when it is the only reader of the node's output
    (so it folds into the layer, as from_torch folds), and the value name the layer defines."""
    readers = b.users.get(node.output, [])
    if len(readers) == 1 and node.output not in b.outputs and readers[0].op in _ONNX_ACTIVATIONS:
        user = readers[0]
        if user.op != "Softmax" or rank in (1, 2):
            b.done.add(id(user))
            return _activation(user, rank), user.output
    return Activation.builtin("identity"), node.output


def _layer_name(b: _Builder, weight_key: str, bias_key: str | None, kind: str) -> str:
    """``conv1`` for weights exported from a PyTorch module ``conv1`` (``conv1.weight`` and, if
    any, ``conv1.bias``), so the parameters keep their state_dict keys; else ``kind`` and a
    number. A name that is not a plain identifier never becomes one: it falls back."""
    from .torch_fx import layer_name_of, nested_layer_name

    prefix, dot, leaf = weight_key.rpartition(".")
    if dot and leaf == "weight" and bias_key in (None, f"{prefix}.bias"):
        nested = "." in prefix and prefix not in b.paths.values()
        try:
            candidate = nested_layer_name(prefix) if nested else layer_name_of(prefix)
        except SpecError:
            candidate = ""
        if candidate and nested:  # a joined name already taken: the first free _2, _3, ... after it
            base, number = candidate, 2
            while candidate in b.names or candidate in b.reserved:
                candidate, number = f"{base}_{number}", number + 1
        if candidate and candidate not in b.names:
            b.names.add(candidate)
            if nested:  # a nested module's weights (stem.0.weight): keyed under its path again
                b.paths[candidate] = prefix
            return candidate
    number = 1
    while f"{kind}{number}" in b.names:
        number += 1
    b.names.add(f"{kind}{number}")
    return f"{kind}{number}"


def _ints(node: _Node, key: str, rank: int, default: int, minimum: int) -> tuple[int, ...]:
    """A per-axis attribute (strides, dilations, kernel_shape): ``rank`` integers >= ``minimum``."""
    value = node.attrs.get(key, (default,) * rank)
    if len(value) != rank or any(v < minimum for v in value):
        raise SpecError(f"{node.where}: {key}={shown(list(value))} must hold {rank} integer(s) >= {minimum}")
    return value


def _pads(node: _Node, rank: int, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dilations: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Each axis's (before, after) zero padding, from ``pads`` or ``auto_pad`` (SAME_UPPER puts
    the odd pixel after, SAME_LOWER before, as the ONNX spec computes them)."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise SpecError(f"{node.where}: auto_pad={shown(auto)} is not NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    if auto != "NOTSET" and "pads" in node.attrs:
        raise ModelFormatError(f"{node.where}: pads and auto_pad={auto} are given together")
    if auto == "NOTSET":
        pads = node.attrs.get("pads", (0,) * (2 * rank))
        if len(pads) != 2 * rank or any(p < 0 for p in pads):
            raise SpecError(f"{node.where}: pads={shown(list(pads))} must hold {2 * rank} integers >= 0 "
                            "(each axis's start, then each axis's end)")
        return tuple((pads[i], pads[rank + i]) for i in range(rank))
    if auto == "VALID":
        return ((0, 0),) * rank
    out = []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max(0, (-(-size // s) - 1) * s + d * (k - 1) + 1 - size)
        small, large = total // 2, total - total // 2
        out.append((small, large) if auto == "SAME_UPPER" else (large, small))
    return tuple(out)


def _spatial(b: _Builder, node: _Node, x: Tensor) -> tuple[int, tuple[int, ...]]:
    """The rank (1 or 2) and the spatial sizes of the images ``node`` reads."""
    if len(x.shape) not in (2, 3):
        raise SpecError(f"{node.where}: reads samples of shape {x.shape}; a {node.op} reads (C, L) or (C, H, W)")
    return len(x.shape) - 1, tuple(x.shape[1:])


def _conv(b: _Builder, node: _Node) -> None:
    x = _tensor(b, node, node.inputs[0])
    rank, spatial = _spatial(b, node, x)
    w = _weight(b.init, node.inputs[1], rank + 2, node.where, b.base, exact=True)
    groups = node.attrs.get("group", 1)
    out_ch, per_group, kernel = w.shape[0], w.shape[1], tuple(w.shape[2:])
    if groups < 1 or per_group * groups != x.shape[0] or out_ch % groups or min(w.shape) < 1:
        raise SpecError(f"{node.where}: weight of shape {w.shape} with group={groups} does not convolve "
                        f"{x.shape[0]} channels")
    if node.attrs.get("kernel_shape", kernel) != kernel:
        raise SpecError(f"{node.where}: kernel_shape={shown(list(node.attrs['kernel_shape']))} differs from "
                        f"the weight's {list(kernel)}")
    strides = _ints(node, "strides", rank, 1, 1)
    dilations = _ints(node, "dilations", rank, 1, 1)
    pads = _pads(node, rank, spatial, kernel, strides, dilations)
    bias_key = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    bias = None if bias_key is None else _row_bias(_weight(b.init, bias_key, 1, node.where, b.base), out_ch,
                                                   node.where)
    act, defines = _folded(b, node, rank + 1)
    name = _layer_name(b, node.inputs[1], bias_key, "conv")
    cls = Conv2d if rank == 2 else Conv1d
    layer = cls(int(x.shape[0]), int(out_ch), kernel, strides, _conv_padding(node, pads, kernel, strides, dilations),
                dilations, int(groups), bias is not None, act, name=name)
    b.params[f"{name}.weight"] = _weights(w, f"{name}.weight", b.dtype)
    if bias is not None:
        b.params[f"{name}.bias"] = _weights(bias, f"{name}.bias", b.dtype)
    b.values[defines] = layer(x)


def _conv_padding(node: _Node, pads: Sequence[tuple[int, int]], kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int]) -> object:
    """The padding argument of ``sn.Conv1d/2d``: per-axis sizes when each axis is padded evenly,
    "same" when the pads are exactly what it gives (stride 1, the odd pixel after), else refused:
    symnn's convolution pads unevenly only that way."""
    if all(before == after for before, after in pads):
        return tuple(before for before, _ in pads)
    same = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilations))
    if tuple(pads) == same and all(s == 1 for s in strides):
        return "same"
    raise SpecError(f"{node.where}: pads {shown([list(p) for p in pads])} (before, after per axis) are uneven; "
                    "symnn's Conv pads each axis evenly, or as padding='same' does (stride 1, the odd pixel after)")


def _pool(b: _Builder, node: _Node) -> Layer:
    x = _tensor(b, node, node.inputs[0])
    rank, spatial = _spatial(b, node, x)
    if "kernel_shape" not in node.attrs:
        raise ModelFormatError(f"{node.where}: a {node.op} needs kernel_shape")
    kernel = _ints(node, "kernel_shape", rank, 1, 1)
    strides = _ints(node, "strides", rank, 1, 1)  # ONNX's default stride is 1, not the window
    dilations = _ints(node, "dilations", rank, 1, 1)
    pads = _pads(node, rank, spatial, kernel, strides, dilations)
    flags = {key: node.attrs.get(key, 0) for key in ("ceil_mode", "count_include_pad")}
    bad = {key: v for key, v in flags.items() if v not in (0, 1)}
    if bad or any(before != after for before, after in pads):
        raise SpecError(f"{node.where}: {shown(bad) if bad else f'pads {shown([list(p) for p in pads])}'}: "
                        "symnn pools with flags 0 or 1 and the same padding before and after each axis")
    padding = tuple(before for before, _ in pads)
    if node.op == "MaxPool":
        cls = MaxPool2d if rank == 2 else MaxPool1d
        return cls(kernel, strides, padding, dilations, bool(flags["ceil_mode"]))
    if any(d != 1 for d in dilations):
        raise SpecTypeError(f"{node.where}: AveragePool with dilations {list(dilations)} is not supported")
    cls = AvgPool2d if rank == 2 else AvgPool1d
    return cls(kernel, strides, padding, bool(flags["ceil_mode"]), bool(flags["count_include_pad"]))


def _global_pool(b: _Builder, node: _Node) -> None:
    """GlobalAveragePool and the flatten that must be its one reader: one ``sn.GlobalAvgPool``
    ((C, H, W) -> (C,)); alone its output would be a (C, 1, 1) image no symnn layer makes."""
    x = _tensor(b, node, node.inputs[0])
    _spatial(b, node, x)
    readers = b.users.get(node.output, [])
    if (len(readers) != 1 or node.output in b.outputs or readers[0].op not in ("Flatten", "Reshape")
            or readers[0].inputs[0] != node.output):
        raise SpecError(f"{node.where}: a GlobalAveragePool must be read by one Flatten(axis=1) or Reshape to "
                        "(N, -1) and nothing else: symnn reads the pair as one sn.GlobalAvgPool")
    flatten = readers[0]
    _check_flatten(b, flatten, (x.shape[0], 1, 1))
    b.done.add(id(flatten))
    b.values[flatten.output] = GlobalAvgPool()(x)


def _check_flatten(b: _Builder, node: _Node, shape: Sequence[int]) -> None:
    """A Flatten with axis 1, or a Reshape to (N, -1) of samples of ``shape``: the shape ``0``
    or ``-1`` then ``-1`` or the features (a fixed batch size is refused)."""
    if node.op == "Flatten":
        if node.attrs.get("axis", 1) != 1:
            raise SpecError(f"{node.where}: Flatten(axis={node.attrs['axis']}) does not flatten each sample; "
                            "symnn reads axis=1")
        return
    if node.attrs.get("allowzero", 0) != 0:
        raise SpecTypeError(f"{node.where}: Reshape(allowzero={node.attrs['allowzero']}) is not supported")
    key = node.inputs[1]
    if key in b.consts:
        target = b.consts[key]
    elif key in b.init:
        target = _int_tensor(b.init[key], node.where, key)
    else:
        raise SpecTypeError(f"{node.where}: the shape {shown(key)} must be a constant (an initializer or a "
                            "Constant node)")
    features = int(np.prod(shape))
    if len(target) != 2 or target[0] not in (0, -1) or target[1] not in (-1, features) or target == (-1, -1):
        raise SpecError(f"{node.where}: Reshape to {shown(list(target))} does not flatten each sample; symnn "
                        f"reads a Reshape to (N, -1): the shape [0, -1], [-1, {features}] or [0, {features}]")


def _int_tensor(tensor: Any, where: str, what: str) -> tuple[int, ...]:
    """A small INT64 tensor's values (a Reshape's target shape): at most 8 of them, dims and
    data checked against each other."""
    if tensor is None or not hasattr(tensor, "dims"):
        raise ModelFormatError(f"{where}: {shown(what)} is not a tensor")
    dims = tuple(tensor.dims)
    if tensor.data_type != _INT64 or len(dims) != 1 or not 0 <= dims[0] <= 8:
        raise SpecTypeError(f"{where}: {shown(what)} must be a 1-D INT64 tensor of at most 8 values (a shape)")
    if tensor.data_location == 1 or tensor.HasField("segment"):
        raise ModelFormatError(f"{where}: {shown(what)} must hold its values in the file")
    if tensor.raw_data:
        if len(tensor.raw_data) != 8 * dims[0]:
            raise ModelFormatError(f"{where}: {shown(what)} declares {dims[0]} values but holds "
                                   f"{len(tensor.raw_data)} bytes")
        return tuple(int(v) for v in np.frombuffer(tensor.raw_data, dtype="<i8"))
    if len(tensor.int64_data) != dims[0]:
        raise ModelFormatError(f"{where}: {shown(what)} declares {dims[0]} values but holds {len(tensor.int64_data)}")
    return tuple(int(v) for v in tensor.int64_data)


def _dense(b: _Builder, node: _Node) -> None:
    """Gemm, or MatMul with the bias Add that is its one reader: an ``sn.Dense``."""
    x = _tensor(b, node, node.inputs[0])
    if len(x.shape) != 1 and not (node.op == "MatMul" and len(x.shape) == 2):
        raise SpecError(f"{node.where}: reads samples of shape {x.shape}; flatten them first (a {node.op} "
                        "multiplies feature vectors, a MatMul also each step of a sequence (T, F))")
    w = _weight(b.init, node.inputs[1], 2, node.where, b.base, exact=True)
    bias_key, bias = None, None
    if node.op == "Gemm":
        attrs = node.attrs
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise SpecTypeError(f"{node.where}: only Gemm with transA=0, alpha=1, beta=1 is supported")
        if attrs.get("transB", 0) not in (0, 1):
            raise ModelFormatError(f"{node.where}: transB must be 0 or 1, got {attrs['transB']}")
        w = w if attrs.get("transB", 0) else w.T
        if len(node.inputs) > 2 and node.inputs[2]:
            bias_key = node.inputs[2]
            bias = _row_bias(_weight(b.init, bias_key, 2, node.where, b.base), w.shape[0], node.where)
        defined = node
    else:
        w = w.T
        defined, bias_key, bias = _matmul_bias(b, node, w.shape[0])
    act, defines = _folded(b, defined, len(x.shape))
    name = _layer_name(b, node.inputs[1], bias_key, "dense")
    layer = Dense(int(w.shape[1]), int(w.shape[0]), act, name=name)
    b.params[f"{name}.weight"] = _weights(w, f"{name}.weight", b.dtype)
    b.params[f"{name}.bias"] = _weights(np.zeros(w.shape[0]) if bias is None else bias, f"{name}.bias", b.dtype)
    b.values[defines] = layer(x)


def _matmul_bias(b: _Builder, node: _Node, width: int) -> tuple[_Node, str | None, np.ndarray | None]:
    """The Add that gives a MatMul its bias (an initializer), when it is the MatMul's one
    reader: (the node whose output the Dense defines, the bias's key, the bias)."""
    readers = b.users.get(node.output, [])
    if len(readers) == 1 and node.output not in b.outputs and readers[0].op == "Add":
        add = readers[0]
        other = [key for key in add.inputs if key != node.output]
        if len(other) == 1 and other[0] in b.init:
            b.done.add(id(add))
            return add, other[0], _row_bias(_weight(b.init, other[0], 2, add.where, b.base), width, add.where)
    return node, None, None


#: ONNX recurrent op -> (the symnn layer, each PyTorch gate's block in ONNX's order, the
#: default activations). ONNX stacks an LSTM's gates i, o, f, c and a GRU's z, r, h; PyTorch
#: stacks i, f, g, o and r, z, n: PyTorch's gate k is ONNX's block ``order[k]``.
_RECURRENT_LAYERS: dict[str, tuple[type[Layer], tuple[int, ...], tuple[str, ...]]] = {
    "RNN": (RNN, (0,), ("Tanh",)),
    "GRU": (GRU, (1, 0, 2), ("Sigmoid", "Tanh")),
    "LSTM": (LSTM, (0, 2, 3, 1), ("Sigmoid", "Tanh", "Tanh")),
}
#: the recurrent ops' optional inputs after X, W, R, in the spec's order
_RECURRENT_INPUTS = ("B", "sequence_lens", "initial_h", "initial_c", "P")
#: optional inputs symnn refuses, and why
_RECURRENT_REFUSED_INPUTS = {
    "sequence_lens": "symnn reads sequence_lens only as a graph input (N,) of integers that recurrent ops "
                     "alone read (it becomes a mask input of the network, (T,) a sample)",
    "initial_h": "symnn reads an initial state that is zeros, a graph input read only there, or the Y_h of a "
                 "one-direction GRU or RNN op",
    "initial_c": "symnn reads an initial cell state that is zeros or a graph input read only there",
    "P": "symnn's LSTM has no peephole connections",
}


#: where a recurrent op reads its initial states: initial_h, and an LSTM's initial_c
_STATE_SLOTS = {"RNN": (5,), "GRU": (5,), "LSTM": (5, 6)}


def _is_sequence_lens(name: str, users: Mapping[str, Sequence[_Node]]) -> bool:
    """Whether the graph input ``name`` is read only as recurrent ops' sequence_lens (input 4,
    once each): the samples' lengths, which become a mask input of the network."""
    readers = users.get(name, [])
    return bool(readers) and all(
        r.op in _STATE_SLOTS and [k for k, value in enumerate(r.inputs) if value == name] == [4] for r in readers)


def _check_lengths_input(value_info: Any) -> None:
    """A sequence_lens graph input must be declared (N,) with an integer element type."""
    tensor_type = value_info.type.tensor_type
    declared = value_info.type.HasField("tensor_type") and tensor_type.HasField("shape")
    if not declared or len(tensor_type.shape.dim) != 1 or tensor_type.elem_type not in _INDEX_TYPES:
        raise SpecError(f"the ONNX input {shown(value_info.name)}, read as sequence_lens, must declare its shape "
                        "as (N,) with an integer element type (each sample's length)")


def _length_mask(b: _Builder, key: str, length: object, layer: str) -> Tensor:
    """The mask input (T,) a sample that a recurrent op's sequence_lens ``key`` becomes: 1 for
    the sample's first sequence_lens steps, 0 after (symnn's ``masked=True``: a padded step
    leaves the state as it was and its output 0, ONNX's semantics of sequence_lens). One input
    for every op reading ``key``; keyed by its ONNX name where that is a plain name, else
    ``<layer>_mask``."""
    mask = b.length_masks.get(key)
    if mask is None:
        steps = naming.concrete(length)
        mask = Input(steps if isinstance(steps, int) else None, name=_input_name(key, f"{layer}_mask"))
        b.length_masks[key] = mask
    elif mask.shape[0] != length:
        raise SpecError(f"the sequence_lens {shown(key)} is read by recurrent ops over sequences of "
                        f"{mask.shape[0]} and {length} steps; symnn's mask has one length")
    return mask


def _is_initial_state(name: str, users: Mapping[str, Sequence[_Node]]) -> bool:
    """Whether the graph input ``name`` is read only as an initial state: by one recurrent op as
    its initial_h or initial_c, or by Slices each read so (a stacked module's ``h_0``, its rows
    sliced per layer: :func:`_state_slice`). It becomes an input of the network
    (:func:`_initial_states`)."""
    readers = users.get(name, [])
    if len(readers) == 1 and _reads_as_state(readers[0], name):
        return True
    return bool(readers) and all(
        r.op == "Slice" and r.inputs[0] == name and name not in r.inputs[1:] and len(users.get(r.output, [])) == 1
        and _reads_as_state(users[r.output][0], r.output) for r in readers)


def _reads_as_state(node: _Node, key: str) -> bool:
    """Whether ``node`` is a recurrent op reading ``key`` once, as its initial_h or initial_c."""
    slots = [k for k, value in enumerate(node.inputs) if value == key]
    return node.op in _STATE_SLOTS and len(slots) == 1 and slots[0] in _STATE_SLOTS[node.op]


def _state_slice(b: _Builder, node: _Node) -> None:
    """A Slice of a state input's rows, ``h_0[k*D:(k+1)*D]`` (axis 0, step 1, constant bounds
    within its declared rows): what torch.onnx.export writes for layer k of a stack, whose op
    then reads it as its initial state."""
    declared = _state_dims(b, node.inputs[0])
    total = declared[0] if declared else None
    bounds = [_const_ints(b, node, k) for k in range(1, 5)]
    starts, ends, axes, steps = bounds
    if (starts is None or ends is None or len(starts) != 1 or len(ends) != 1 or (axes or (0,)) not in ((0,), (-3,))
            or (steps or (1,)) != (1,) or total is None):
        raise SpecTypeError(f"{node.where}: symnn reads a Slice of the initial state {shown(node.inputs[0])} only "
                            "along its first axis, with constant starts and ends and step 1, from a state "
                            "declared (L*D, N, H) with L*D fixed")
    first, end = (max(0, min(v + total if v < 0 else v, total)) for v in (starts[0], ends[0]))
    if end <= first:
        raise SpecError(f"{node.where}: the Slice [{starts[0]}:{ends[0]}] of {shown(node.inputs[0])} holds no row")
    b.state_slices[node.output] = (node.inputs[0], first, end)


def _const_ints(b: _Builder, node: _Node, k: int) -> tuple[int, ...] | None:
    """Input k of a node as constant integers (a Slice's starts, ends, axes, steps; a Squeeze's
    axes); None where absent."""
    if len(node.inputs) <= k or not node.inputs[k]:
        return None
    key = node.inputs[k]
    if key in b.consts:
        return tuple(b.consts[key])
    if key in b.init:
        return _int_tensor(b.init[key], node.where, key)
    raise SpecTypeError(f"{node.where}: input {k} {shown(key)} must be a constant")


def _state_dims(b: _Builder, key: str) -> list[int | None]:
    """The declared dims of the state input ``key`` (None for a dynamic one), [] undeclared."""
    declared = b.states[key].type.tensor_type
    dims = list(declared.shape.dim) if declared.HasField("shape") else []
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _initial_states(b: _Builder, node: _Node, layer: str, directions: int, hidden: int,
                    time_major: bool) -> tuple[list[Tensor], tuple[int, int] | None]:
    """The initial states a recurrent op reads from graph inputs, as inputs of the network, and
    the rows of them it reads (``state_rows``; None: all). Each input is each sample's (R, H),
    R = D, or L*D for a stack's ``h_0`` whose rows each op reads through a Slice, so a kernel
    takes the ONNX tensor batch-first, (N, R, H) (time-major ``h_0`` (R, N, H) transposed, as
    from_torch takes it); keyed by its ONNX name where that is a plain name, else
    ``<layer>_h0``/``<layer>_c0``. None given: []. An LSTM takes both or neither, from the same
    rows (one alone would start the other at zero, which symnn's layer does not model)."""
    given = [(k, key) for k, key in enumerate(node.inputs) if k in _STATE_SLOTS[node.op]
             and (key in b.states or key in b.state_slices)]
    if not given:
        return [], None
    if len(given) != len(_STATE_SLOTS[node.op]):
        raise SpecTypeError(f"{node.where}: reads {shown(given[0][1])} as an initial state but not the other; "
                            "symnn's LSTM takes initial_h and initial_c together (as PyTorch's (h_0, c_0)), or "
                            "neither")
    out, spans = [], set()
    for (_, key), part in zip(given, ("h0", "c0")):
        source, first, end = b.state_slices.get(key, (key, 0, None))
        dims = _state_dims(b, source)
        at = 1 if time_major else 0  # the batch's axis
        total = directions if end is None else (dims[0] if dims else None)
        if dims and (len(dims) != 3 or [dims[k] for k in range(3) if k != at] != [total, hidden]):
            want = "(D, N, H)" if time_major else "(N, D, H)"
            raise SpecError(f"{node.where}: the initial state {shown(source)} declares "
                            f"{shown(_dims_text(b.states[source].type.tensor_type.shape.dim))}; a {node.op} of "
                            f"{directions} direction(s) and hidden size {hidden} takes {want} = "
                            f"{want.replace('D', str(total)).replace('H', str(hidden))}")
        if end is not None and end - first != directions:
            raise SpecError(f"{node.where}: reads rows {first}:{end} of {shown(source)} as its initial state; a "
                            f"{node.op} of {directions} direction(s) reads {directions}")
        tensor = b.state_tensors.get(source)
        if tensor is None:
            tensor = Input(total, hidden, name=_input_name(source, f"{layer}_{part}"))
            b.state_tensors[source] = tensor
        out.append(tensor)
        spans.add((first, total))
    if len(spans) != 1:
        raise SpecError(f"{node.where}: reads its initial_h and initial_c from different rows; symnn's LSTM reads "
                        "both states' rows alike")
    (span,) = spans
    return out, (None if span == (0, directions) else span)


def _recurrent(b: _Builder, node: _Node) -> None:
    """``RNN``/``GRU``/``LSTM`` (direction "forward", or "bidirectional": a layer with
    ``bidirectional=True``) as an ``sn.RNN``/``GRU``/``LSTM``: W (D, G*H, F), R (D, G*H, H) and B
    (D, 2*G*H: Wb then Rb) become ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
    ``bias_hh_l0`` (direction 1: the same with ``_reverse``) with the gates moved to PyTorch's
    order; no B is a layer without biases. With ``layout=1`` (X (N, T, F)) the layer returns the sequence when Y is read
    (flattened, or squeezed to (N, T, H)), the last state when Y_h is. With ``layout=0`` (X
    (T, N, F), what torch.onnx.export writes) X is a transposed batch-first tensor and the
    outputs are followed as views until read (symnn/onnx_sequences.py); an initial state of
    broadcast zeros is no initial state, one that is a graph input an input of the network
    (:func:`_initial_states`)."""
    cls, order, defaults = _RECURRENT_LAYERS[node.op]
    nonlinearity = _recurrent_settings(node, defaults)
    D = 2 if node.attrs.get("direction") == "bidirectional" else 1  # PyTorch's directions
    time_major = node.attrs.get("layout", 0) == 0
    x = (seq.time_major_input(b.seq, node.where, node.inputs[0]) if time_major
         else _tensor(b, node, node.inputs[0]))
    if len(x.shape) != 2:
        raise SpecError(f"{node.where}: reads samples of shape {x.shape}; a {node.op} reads sequences (T, F): "
                        "X declared (N, T, F)")
    optional = dict(zip(_RECURRENT_INPUTS, node.inputs[3:]))
    handed = seq.handed_state(b.seq, node.where, optional.get("initial_h"), node.op, D)  # an encoder's Y_h
    for key, why in _RECURRENT_REFUSED_INPUTS.items():
        if optional.get(key) and not (key in ("initial_h", "initial_c")
                                      and (optional[key] in b.seq.zeros or optional[key] in b.states
                                           or optional[key] in b.state_slices or handed is not None)) \
                and not (key == "sequence_lens" and optional[key] in b.lengths):
            raise SpecTypeError(f"{node.where}: the input {key} ({shown(optional[key])}) is not supported: {why}")
    w = _weight(b.init, node.inputs[1], 3, node.where, b.base, exact=True)
    r = _weight(b.init, node.inputs[2], 3, node.where, b.base, exact=True)
    gates, h = len(order), int(r.shape[2])
    if (h < 1 or w.shape != (D, gates * h, x.shape[1]) or r.shape != (D, gates * h, h)
            or node.attrs.get("hidden_size", h) != h):
        raise SpecError(f"{node.where}: W of shape {w.shape}, R of shape {r.shape} and hidden_size="
                        f"{node.attrs.get('hidden_size')} do not make a {node.attrs.get('direction', 'forward')} "
                        f"{node.op} of {gates} gate(s) on {x.shape[1]} features")
    _refuse_unread_outputs(b, node)
    sequences, readers = (None, []) if time_major else _recurrent_readers(b, node, (x.shape[0], h), D)
    name = _layer_name(b, "", None, node.op.lower())
    states, rows = ([handed], None) if handed is not None else _initial_states(b, node, name, D, h, time_major)
    sizes = (int(x.shape[1]), h, 1)
    has_bias = bool(optional.get("B"))
    mask = _length_mask(b, optional["sequence_lens"], x.shape[0], name) if optional.get("sequence_lens") else None
    masks = [mask] if mask is not None else []

    def make(sequences: bool) -> Tensor:
        both, masked = D == 2, mask is not None
        layer = (RNN(*sizes, nonlinearity, has_bias, sequences, name=name, bidirectional=both, state_rows=rows,
                     masked=masked)
                 if cls is RNN else cls(*sizes, has_bias, sequences, name=name, bidirectional=both, state_rows=rows,
                                        masked=masked))
        return layer(x, *masks, *states)

    bias = None
    if has_bias:
        bias = _weight(b.init, optional["B"], 2, node.where, b.base, exact=True)
        if bias.shape != (D, 2 * gates * h):
            raise SpecError(f"{node.where}: B has shape {bias.shape}; a {node.attrs.get('direction', 'forward')} "
                            f"{node.op} of hidden size {h} takes ({D}, {2 * gates * h})")
    values = {}
    for d, sfx in enumerate(("", "_reverse")[:D]):  # ONNX's direction d: PyTorch's names for it
        values[f"weight_ih_l0{sfx}"] = _gates(w[d], order, h)
        values[f"weight_hh_l0{sfx}"] = _gates(r[d], order, h)
        if bias is not None:
            values[f"bias_ih_l0{sfx}"] = _gates(bias[d, :gates * h], order, h)
            values[f"bias_hh_l0{sfx}"] = _gates(bias[d, gates * h:], order, h)
    for leaf, v in values.items():
        b.params[f"{name}.{leaf}"] = _weights(v, f"{name}.{leaf}", b.dtype)
    if time_major:
        seq.declare_outputs(b.seq, seq.Pending(node.where, node.op, naming.concrete(x.shape[0]), make, D,
                                               masked=mask is not None), *node.outputs[:2])
        return
    out = make(bool(sequences))
    for reader in readers:  # a flattened sequence is (T*H,); a squeeze, or Y_h flattened, the layer's own
        flat = sequences and reader.op != "Squeeze"
        b.values[reader.output] = Flatten()(out) if flat else out


def _gates(a: np.ndarray, order: Sequence[int], h: int) -> np.ndarray:
    """ONNX's stacked gate blocks (rows of ``a``) in PyTorch's order."""
    return np.concatenate([a[k * h:(k + 1) * h] for k in order])


def _recurrent_settings(node: _Node, defaults: tuple[str, ...]) -> str:
    """Refuse a recurrent op's settings that symnn's layers (PyTorch's equations) lack, each by
    name; the RNN's nonlinearity ("tanh", or "relu" for ``activations=["Relu"]``, one per direction)."""
    attrs, what = node.attrs, f"{node.where}: {node.op}"
    if attrs.get("direction", "forward") not in ("forward", "bidirectional"):
        raise SpecTypeError(f"{what}(direction={shown(attrs['direction'])}) is not supported: symnn's recurrent "
                            "layers run forward in time (direction='forward'), or both ways "
                            "(direction='bidirectional')")
    if attrs.get("layout", 0) not in (0, 1):
        raise ModelFormatError(f"{what}(layout={attrs['layout']}): ONNX's layout is 0 or 1")
    if "clip" in attrs:
        raise SpecTypeError(f"{what}(clip={attrs['clip']}) is not supported: symnn's gates are not clipped")
    for key in ("activation_alpha", "activation_beta"):
        if key in attrs:
            raise SpecTypeError(f"{what}({key}={list(attrs[key])}) is not supported: symnn's {node.op} uses the "
                                f"default activations {list(defaults)}")
    per = 2 if attrs.get("direction") == "bidirectional" else 1  # ONNX lists each direction's
    defaults = defaults * per
    acts = tuple(attrs.get("activations", defaults))
    relu = node.op == "RNN" and acts == ("Relu",) * per
    if acts != defaults and not relu:
        extra = " (or ['Relu'])" if node.op == "RNN" else ""
        raise SpecTypeError(f"{what}(activations={list(acts)}) is not supported: symnn's {node.op} uses "
                            f"{list(defaults)}{extra}, as PyTorch's")
    if node.op == "GRU" and attrs.get("linear_before_reset", 0) != 1:
        raise SpecTypeError(f"{what}(linear_before_reset={attrs.get('linear_before_reset', 0)}) is not supported: "
                            "symnn's GRU is PyTorch's, whose reset gate multiplies the recurrent product after "
                            "its bias: linear_before_reset=1")
    if node.op == "LSTM" and attrs.get("input_forget", 0) != 0:
        raise SpecTypeError(f"{what}(input_forget={attrs['input_forget']}) is not supported: symnn's LSTM has "
                            "separate input and forget gates")
    return "relu" if relu else "tanh"


def _refuse_unread_outputs(b: _Builder, node: _Node) -> None:
    """A recurrent op's Y_c read, or its Y or Y_h a graph output (they keep the direction
    axis), is refused."""
    y, y_h, y_c = (node.outputs + ("", "", ""))[:3]
    if y_c and (b.users.get(y_c) or y_c in b.outputs):
        raise SpecError(f"{node.where}: its final cell state Y_c {shown(y_c)} is read; symnn's LSTM returns the "
                        "hidden state (Y or Y_h)")
    for key in (y, y_h):
        if key and key in b.outputs:
            raise SpecError(f"{node.where}: its output {shown(key)} is a graph output; symnn reads it through a "
                            "Flatten(axis=1), a Reshape to (N, -1) or a Squeeze of the direction axis")


def _recurrent_readers(b: _Builder, node: _Node, seq_shape: tuple[int, int],
                       directions: int = 1) -> tuple[bool, list[_Node]]:
    """Whether the layer returns the sequence (Y is read) or the last state (Y_h is), and the
    nodes that read it: each a Flatten(axis=1), a Reshape to (N, -1) or a Squeeze of the
    direction axis (Y: 2, Y_h: 1), which the layer's value defines (of a bidirectional op, no
    Squeeze: Y (N, T, 2, H) flattened is each step's directions side by side, Y_h (N, 2, H) the
    two final states, symnn's layout). Y_c, both Y and Y_h, another reader, or Y/Y_h as a graph
    output (they keep the direction axis) are refused."""
    y, y_h = (node.outputs + ("", ""))[:2]
    seq_readers = b.users.get(y, []) if y else []
    last_readers = b.users.get(y_h, []) if y_h else []
    if seq_readers and last_readers:
        raise SpecError(f"{node.where}: both Y (every step) and Y_h (the last) are read; symnn's {node.op} "
                        "returns one of them (return_sequences)")
    if not seq_readers and not last_readers:
        raise SpecError(f"{node.where}: neither Y nor Y_h is read")
    key, axis = (y, 2) if seq_readers else (y_h, 1)
    t, h = seq_shape
    shape = (t, directions, h) if seq_readers else (directions, h)
    readable = ("Flatten", "Reshape", "Squeeze") if directions == 1 else ("Flatten", "Reshape")
    for reader in seq_readers or last_readers:
        if reader.op not in readable or reader.inputs[0] != key:
            squeeze = f" or a Squeeze of axis {axis}" if directions == 1 else " (both directions side by side)"
            raise SpecError(f"{reader.where} reads {shown(key)}, the {'Y' if seq_readers else 'Y_h'} of "
                            f"{node.where}; symnn reads it through a Flatten(axis=1) or a Reshape to (N, -1)"
                            f"{squeeze}")
        if reader.op == "Squeeze":
            _check_squeeze(b, reader, axis, len(shape) + 1)
        else:
            _check_flatten(b, reader, shape)
        b.done.add(id(reader))
    return bool(seq_readers), list(seq_readers or last_readers)


def _squeeze_axes(b: _Builder, node: _Node) -> tuple[int, ...]:
    """A Squeeze's (or Unsqueeze's) axes: an attribute, or a constant input."""
    axes = _const_ints(b, node, 1)
    return axes if axes is not None else tuple(node.attrs.get("axes", ()))


def _zero_weight(b: _Builder, node: _Node, key: str) -> bool:
    """Whether ``key`` is a floating-point constant holding only zeros (what an Expand
    broadcasts into a zero initial state)."""
    return key in b.init and not np.any(_weight(b.init, key, 8, node.where, b.base))


def _check_squeeze(b: _Builder, node: _Node, axis: int, rank: int) -> None:
    """A Squeeze of exactly the direction axis (``axes`` an attribute, or a constant input)."""
    axes = _squeeze_axes(b, node)
    if tuple(axes) not in ((axis,), (axis - rank,)):
        raise SpecError(f"{node.where}: Squeeze of axes {shown(list(axes))}; symnn reads a Squeeze of the "
                        f"direction axis {axis} only")
