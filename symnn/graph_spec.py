"""A layer graph as a plain record, and back: what the TOML spec and the model file store.

A record is built from JSON/TOML values only (tables, lists, strings, numbers, booleans)::

    {"inputs": [{"name": "X", "shape": [8]}],
     "nodes": [{"id": "dense1", "layer": "dense", "in_features": 8, "out_features": 16,
                "activation": ..., "inputs": ["X"]},
               {"id": "layernorm1", "layer": "layernorm", "normalized_shape": 16, "inputs": ["dense1"]},
               {"id": "dense1_2", "reuse": "dense1", "inputs": ["layernorm1"]},   # a shared layer
               {"id": "add1", "layer": "add", "inputs": ["dense1", "dense1_2"]}],
     "outputs": ["add1"]}

Each node is one call of a layer, after the nodes it reads (``inputs`` name inputs or earlier
nodes): either a new layer (``layer`` is its kind in :data:`symnn.layers.LAYERS`, then its
constructor's keywords: the layer's dataclass fields, those at their default left out, ``name``
only where the layer was given one, each as the constructor takes it (:meth:`Layer.given`): a
size tuple such as a convolution's ``kernel_size`` as a list of integers, ``[3, 3]``, its
padding ``[1, 1]`` or ``"same"``), or another call of an earlier node's layer (``reuse``).

Reading trusts nothing: every key is checked against the kind's fields (a whitelist), every id
is a plain name, an operand must be defined before it is read, values are JSON scalars (or
lists of at most two integers), and the layers and the network are made by their public
constructors and by calling the layers on tensors, so every check a declaration in Python makes
runs on the record. Every node must reach
an output. Problems raise the caller's error class, located at ``where``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from . import naming
from .errors import SpecError, SymnnError
from .layers import LAYERS, Layer, Tensor

#: a layer field whose value is not a JSON scalar -> how the caller writes it, and reads it back
Codec = Mapping[str, Callable[[Any], Any]]
#: ``make(inputs, outputs)``: the network around the traced tensors (loss, penalties, name)
Make = Callable[[list[Tensor], list[Tensor]], Any]

#: ``module``: the PyTorch module a layer came from (``blocks.0.conv``), where it is nested
#: (:attr:`symnn.declare.Network.module_paths`)
_NODE_KEYS = frozenset({"id", "inputs", "layer", "reuse", "module"})
_SCALARS = (bool, int, float, str, type(None))
#: the longest list of sizes a field holds: one per spatial axis of a 2-D layer
_MAX_SIZES = 2


def _kind(layer: Layer) -> str:
    for kind, cls in LAYERS.items():
        if type(layer) is cls:
            return kind
    raise SpecError(f"a layer of type {type(layer).__name__} is not registered in symnn.layers.LAYERS; "
                    "it cannot be written to a spec or model file")


def _layer_fields(layer: Layer, encode: Codec) -> dict[str, Any]:
    """The constructor keywords that rebuild ``layer``: its dataclass fields, without those at
    their default (and ``name`` only when it was given)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(layer):
        value = getattr(layer, f.name)
        if f.default is not dataclasses.MISSING and value == f.default and f.name not in encode:
            continue
        value = layer.given(f.name)
        if f.name in encode:
            out[f.name] = encode[f.name](value)
        elif isinstance(value, _SCALARS):
            out[f.name] = value
        elif _is_sizes(value):
            out[f.name] = [int(v) for v in value]
        else:
            raise SpecError(f"layer field {type(layer).__name__}.{f.name} = {naming.shown(value)} is not a "
                            "number, string, boolean or list of integers, so it cannot be written to a spec or "
                            "model file")
    return out


def _is_sizes(value: Any) -> bool:
    """Whether ``value`` is a short tuple or list of integers (sizes: ``kernel_size = [3, 3]``);
    a file's list is handed to the constructor as a tuple, whose checks then apply."""
    return (isinstance(value, (tuple, list)) and 1 <= len(value) <= _MAX_SIZES
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))


#: how a record writes the run-time length of a sequence input (``sn.Input(None, F)``): TOML has
#: no null, and "T" reads as the derivation writes it (``shape = ["T", 8]``)
LENGTH = "T"


def _size_record(d: Any) -> int | str:
    return LENGTH if d == naming.T else int(d)


def graph_record(net: Any, encode: Codec) -> dict[str, Any]:
    """The record of ``net``'s layer graph (``net.graph``); ``encode`` writes the fields that
    are not JSON scalars (a Dense layer's activation)."""
    graph = net.graph
    # an index input (an Embedding's) says so; a real one writes nothing more
    inputs = [{"name": name, "shape": [_size_record(d) for d in shape]} | ({"indices": True} if name in graph.index_inputs
                                                                   else {})
              for name, shape in graph.inputs]
    taken = {name for name, _ in graph.inputs} | set(graph.names)
    value_ids = [name for name, _ in graph.inputs]
    first_node: dict[int, str] = {}
    calls_so_far: dict[int, int] = {}
    paths = dict(getattr(net, "module_paths", ()))
    nodes = []
    for call in graph.calls:
        layer, lname = graph.layers[call.layer], graph.names[call.layer]
        calls_so_far[call.layer] = calls_so_far.get(call.layer, 0) + 1
        if call.layer not in first_node:
            node_id = lname if lname not in value_ids else _fresh(lname, taken)
            first_node[call.layer] = node_id
            node = {"id": node_id, "layer": _kind(layer), **_layer_fields(layer, encode)}
            if lname in paths:
                node["module"] = paths[lname]
        else:
            node_id = _fresh(f"{lname}_{calls_so_far[call.layer]}", taken)
            node = {"id": node_id, "reuse": first_node[call.layer]}
        taken.add(node_id)
        node["inputs"] = [value_ids[v] for v in call.inputs]
        value_ids.append(node_id)
        nodes.append(node)
    return {"inputs": inputs, "nodes": nodes, "outputs": [value_ids[v] for v in graph.outputs]}


def _fresh(stem: str, taken: set[str]) -> str:
    candidate, k = stem, 1
    while candidate in taken:
        k += 1
        candidate = f"{stem}_{k}"
    return candidate


def _get(record: Any, key: str, kind: type | tuple[type, ...], where: str, error: type[SymnnError]) -> Any:
    if not isinstance(record, dict):
        raise error(f"{where}: expected a table, got {type(record).__name__}")
    if key not in record:
        raise error(f"{where}: missing {key!r}")
    value = record[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise error(f"{where}.{key}: unexpected {type(value).__name__} {naming.shown(value)}")
    return value


def _check_keys(record: dict, allowed: frozenset[str] | set[str], where: str, error: type[SymnnError]) -> None:
    unknown = sorted(set(record) - set(allowed), key=str)
    if unknown:
        raise error(f"{where}: unknown key(s) {naming.shown(unknown)}; allowed: {sorted(allowed)}")


def _ident(value: Any, what: str, where: str, error: type[SymnnError]) -> str:
    try:
        return naming.identifier(value, what)
    except SymnnError as exc:
        raise error(f"{where}: {exc}") from exc


def _new_layer(node: dict, where: str, decode: Codec, error: type[SymnnError]) -> Layer:
    """A layer of the kind ``node["layer"]`` from the node's other keys: its constructor's
    keywords, each a JSON scalar or a field ``decode`` reads."""
    kind = _get(node, "layer", str, where, error)
    cls = LAYERS.get(kind)
    if cls is None:
        raise error(f"{where}.layer: unknown layer kind {naming.shown(kind)}; known: {sorted(LAYERS)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    _check_keys(node, _NODE_KEYS | fields, where, error)
    kwargs: dict[str, Any] = {}
    for key in sorted(fields & set(node)):
        value = node[key]
        if key in decode:
            kwargs[key] = decode[key](value, f"{where}.{key}")
        elif isinstance(value, _SCALARS):
            kwargs[key] = value
        elif isinstance(value, list) and _is_sizes(value):
            kwargs[key] = tuple(value)
        else:
            raise error(f"{where}.{key}: expected a number, string, boolean or a list of at most {_MAX_SIZES} "
                        f"integers, got {type(value).__name__} {naming.shown(value)}")
    try:
        return cls(**kwargs)
    except SymnnError as exc:
        raise error(f"{where}: {exc}") from exc
    except TypeError as exc:  # a required keyword missing: the constructor's own signature says which
        raise error(f"{where}: {kind}: {exc}") from exc


def build_network(record: Any, make: Make, decode: Codec, where: str, error: type[SymnnError]) -> Any:
    """The network a record describes: its inputs made by ``sn.Input``, its layers by their
    constructors and called on tensors in the record's order, then ``make(inputs, outputs)``.
    Every node must be defined once, read only defined values and reach an output."""
    from .layers import Input

    _check_keys(_get_table(record, where, error), {"inputs", "nodes", "outputs"}, where, error)
    values: dict[str, Tensor] = {}
    inputs = []
    for i, item in enumerate(_get(record, "inputs", list, where, error)):
        at = f"{where}: input {i + 1}"
        _check_keys(_get_table(item, at, error), {"name", "shape", "indices"}, at, error)
        name = _ident(_get(item, "name", str, at, error), "input name", at, error)
        shape = _get(item, "shape", list, at, error)
        indices = item.get("indices", False)
        if not isinstance(indices, bool):
            raise error(f"{at}: indices must be true or false, got {naming.shown(indices)}")
        if name in values:
            raise error(f"{at}: input {name!r} is defined twice")
        if shape and shape[0] == LENGTH:  # a sequence of run-time length: sn.Input(None, ...)
            shape = [None, *shape[1:]]
        try:
            values[name] = Input(*shape, name=name, indices=indices)
        except SymnnError as exc:
                raise error(f"{at}: {exc}") from exc
        inputs.append(values[name])
    layer_of: dict[str, Layer] = {}
    module_of: dict[int, str] = {}  # id(layer) -> its module path
    nodes = _get(record, "nodes", list, where, error)
    for i, node in enumerate(nodes):
        at = f"{where}: node {i + 1}"
        node_id = _ident(_get(node, "id", str, at, error), "node id", at, error)
        if node_id in values:
            raise error(f"{at}: id {node_id!r} is already defined")
        if ("layer" in node) == ("reuse" in node):
            raise error(f"{at}: give either layer = <kind> (a new layer) or reuse = <node id> (call "
                        "an earlier node's layer again)")
        if "reuse" in node:
            _check_keys(node, {"id", "inputs", "reuse"}, at, error)
            shared = _get(node, "reuse", str, at, error)
            if shared not in layer_of:
                raise error(f"{at}.reuse: {naming.shown(shared)} is not an earlier node")
            layer = layer_of[shared]
        else:
            layer = _new_layer(node, at, decode, error)
            if "module" in node:
                try:
                    module_of[id(layer)] = naming.module_path(node["module"], f"{at}.module")
                except SymnnError as exc:
                    raise error(str(exc)) from exc
        operands = []
        for ref in _get(node, "inputs", list, at, error):
            if not isinstance(ref, str) or ref not in values:
                raise error(f"{at}.inputs: {naming.shown(ref)} is not an input or an earlier node")
            operands.append(values[ref])
        try:
            values[node_id] = layer(*operands)
        except SymnnError as exc:
            raise error(f"{at}: {exc}") from exc
        layer_of[node_id] = layer
    outputs = []
    for ref in _get(record, "outputs", list, where, error):
        if not isinstance(ref, str) or ref not in layer_of:
            raise error(f"{where}: outputs: {naming.shown(ref)} is not a node")
        outputs.append(values[ref])
    try:
        net = make(inputs, outputs)
        if module_of:
            net.set_module_paths({name: module_of[id(layer)] for layer, name in zip(net.graph.layers, net.graph.names)
                                  if id(layer) in module_of})
    except SymnnError as exc:
        raise error(f"{where}: {exc}") from exc
    if len(net.graph.calls) != len(nodes):
        used = {id(t) for t in _reached(outputs)}
        unused = [node_id for node_id, t in values.items() if node_id in layer_of and id(t) not in used]
        raise error(f"{where}: node(s) {naming.shown(unused)} do not reach an output")
    return net


def _get_table(record: Any, where: str, error: type[SymnnError]) -> dict:
    if not isinstance(record, dict):
        raise error(f"{where}: expected a table, got {type(record).__name__}")
    return record


def _reached(outputs: list[Tensor]) -> list[Tensor]:
    seen: dict[int, Tensor] = {}
    stack = list(outputs)
    while stack:
        t = stack.pop()
        if id(t) not in seen:
            seen[id(t)] = t
            stack.extend(t.inputs)
    return list(seen.values())


def rebuilt(net: Any, **changes: Any) -> Any:
    """``net`` (a layer graph) declared again with ``changes`` to its loss, penalties or name:
    the Sequential form's ``Network(list(net.layers), ...)`` for a graph."""
    from .declare import Network

    settings = {"loss": list(net.losses) if net.several_outputs else net.loss,
                "loss_weights": list(net.loss_weights), "l1": net.l1, "l2": net.l2, "name": net.name,
                "frozen": list(net.frozen), **changes}

    def make(inputs: list[Tensor], outputs: list[Tensor]) -> Any:
        return Network(inputs=inputs[0] if len(inputs) == 1 else inputs,
                       outputs=outputs[0] if len(outputs) == 1 else outputs, **settings)

    keep: dict[str, Callable[..., Any]] = {"activation": lambda value, *where: value}
    return build_network(graph_record(net, keep), make, keep, "network", SpecError)


__all__ = ["build_network", "graph_record", "rebuilt"]
