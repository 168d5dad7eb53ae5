"""TOML network specs: read (``load_spec``), write (``dumps_spec``), round-trip exact.

Format (see ``docs/spec_format.md`` and ``examples/``)::

    [network]
    name = "xor_mlp"
    loss = "bce"                  # a built-in, or a table for a custom loss (below)
    l2 = 0.0                      # optional; l1 too

    [[layer]]
    in = 2
    out = 4
    activation = "tanh"           # a built-in name, { name = "leaky_relu", alpha = 0.2 },
                                  # or { name = "swish", expr = "z/(1 + exp(-z))", var = "z" }
    dropout = 0.0                 # optional, hidden layers only

    [loss]                        # a custom loss instead of network.loss
    name = "huber"
    expr = "Piecewise(((p - y)**2/2, Abs(p - y) <= 1), (Abs(p - y) - 1/2, True))"
    pred = "p"
    target = "y"
    # domain = [0, 1]             # optional: the predictions it is defined on (log(p) needs one)
    # targets = "probability"     # optional capabilities (docs/spec_format.md): targets,
                                  # classification, min_outputs, requires, link

    [train]                       # optional: settings for ``symnn train``
    optimizer = { name = "adam", lr = 0.01 }
    epochs = 40

A layer graph has ``[[input]]`` and ``[[node]]`` tables (one call of a layer each) instead of
``[[layer]]``, and ``outputs = [...]`` in ``[network]`` (:mod:`symnn.graph_spec`).

Expression strings are read by a whitelist parser over Python's ``ast``: numbers, the
declared variables, ``+ - * / **``, comparisons and a fixed list of functions. Nothing is
ever passed to ``eval``/``sympify`` (RELIABILITY.md S18). Every problem raises
:class:`~symnn.errors.SpecParseError` naming the line (TOML syntax) or the key.
"""

from __future__ import annotations

import ast
import enum
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import sympy as sp

from . import naming, registry
from .capabilities import LOSS_CAPABILITIES, LOSS_DEFAULTS
from .declare import Activation, Dense, Loss, Network
from .errors import SpecParseError, SymnnError
from .expressions import MAX_NODES, Term, TermKind, budget_problem, number_term

#: functions an expression string may call, by name
FUNCTIONS: dict[str, Any] = {
    "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "tanh": sp.tanh, "sinh": sp.sinh, "cosh": sp.cosh,
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "atan": sp.atan, "erf": sp.erf, "Abs": sp.Abs,
    "abs": sp.Abs, "Max": sp.Max, "max": sp.Max, "Min": sp.Min, "min": sp.Min, "sign": sp.sign,
    "Piecewise": sp.Piecewise, "log1p": lambda x: sp.log(1 + x),
}
CONSTANTS = {"pi": sp.pi, "E": sp.E, "True": sp.true, "False": sp.false}
#: syntax nodes (``ast.walk``, operators and contexts included) an expression string may have
#: before it is priced at all; the budget proper (:data:`symnn.expressions.MAX_NODES`) counts
#: numbers, names, operations and calls
_MAX_SYNTAX_NODES = 4 * MAX_NODES
_TOP_KEYS = {"network", "layer", "input", "node", "loss", "train"}


@dataclass
class Spec:
    """A parsed spec: the network and the (optional) training settings."""

    network: Network
    train: dict[str, Any] = field(default_factory=dict)


def parse_expression(text: object, variables: Mapping[str, sp.Symbol], where: str) -> sp.Expr:
    """Parse ``text`` into SymPy using only whitelisted syntax (no ``eval``)."""
    if not isinstance(text, str):
        raise SpecParseError(f"{where}: expected an expression string, got {type(text).__name__}")
    if len(text) > 20_000:
        raise SpecParseError(f"{where}: expression longer than 20,000 characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise SpecParseError(f"{where}: cannot parse {text!r}: {exc.msg} (column {exc.offset})") from exc
    except (ValueError, MemoryError, RecursionError) as exc:  # e.g. an integer literal of 5,000 digits
        raise SpecParseError(f"{where}: cannot parse the expression: {exc}") from exc
    if sum(1 for _ in ast.walk(tree)) > _MAX_SYNTAX_NODES:  # before the recursive passes below
        raise SpecParseError(f"{where}: expression too large (over {_MAX_SYNTAX_NODES} syntax nodes)")
    try:
        problem = budget_problem(_term(tree, variables))
    except RecursionError as exc:
        raise SpecParseError(f"{where}: expression nested too deeply") from exc
    if problem:  # before SymPy builds anything: building alone can take minutes (item 6)
        raise SpecParseError(f"{where}: the expression {problem}, in {text[:200]!r}")
    binops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
              ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a**b}
    compares = {ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge}

    def build(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return sp.true if node.value else sp.false
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            if isinstance(node.value, float) and not math.isfinite(node.value):
                raise SpecParseError(f"{where}: non-finite number in {text!r}")
            return sp.Integer(node.value) if isinstance(node.value, int) else sp.Float(repr(node.value), 17)
        if isinstance(node, ast.Name):
            if node.id in variables:
                return variables[node.id]
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            raise SpecParseError(f"{where}: unknown name {node.id!r} in {text!r} "
                                 f"(variables: {', '.join(variables)}; functions: {', '.join(sorted(FUNCTIONS))})")
        if isinstance(node, ast.BinOp) and type(node.op) in binops:
            left, right = build(node.left), build(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise SpecParseError(f"{where}: division by zero in {text!r}")
            return binops[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = build(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in compares:
            return compares[type(node.ops[0])](build(node.left), build(node.comparators[0]))
        if isinstance(node, ast.Tuple):
            return tuple(build(e) for e in node.elts)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            if node.func.id not in FUNCTIONS:
                raise SpecParseError(f"{where}: unknown function {node.func.id!r} in {text!r}")
            args = [build(a) for a in node.args]
            try:
                return FUNCTIONS[node.func.id](*args)
            except (TypeError, ValueError) as exc:
                raise SpecParseError(f"{where}: bad call of {node.func.id} in {text!r}: {exc}") from exc
        raise SpecParseError(f"{where}: syntax not allowed in {text!r}: {type(node).__name__}")

    try:
        return build(tree)
    except SpecParseError:
        raise
    except RecursionError as exc:
        raise SpecParseError(f"{where}: expression nested too deeply") from exc
    except (TypeError, ValueError, AttributeError, ArithmeticError) as exc:  # e.g. "-True", "True*z"
        raise SpecParseError(f"{where}: invalid expression {text!r}: {exc}") from exc


def _term(node: ast.AST, variables: Mapping[str, sp.Symbol]) -> Term:
    """The budget's view of an expression's syntax tree (:func:`symnn.expressions.budget_problem`):
    the arithmetic as SymPy will build it (``a - b`` is ``a + (-1)*b``, ``a/b`` is ``a*b**-1``);
    names and calls that the parser refuses are priced as what they look like and refused by
    ``build`` afterwards."""
    def sub(child: ast.AST) -> Term:
        return _term(child, variables)

    if isinstance(node, ast.Constant) and type(node.value) in (int, float):  # not bool
        return number_term(node.value, repr(node.value) if isinstance(node.value, float) else None)
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS and node.id not in variables and node.id not in ("True", "False"):
            return Term(TermKind.CONSTANT, value=float(CONSTANTS[node.id]), text=node.id)
        return Term(TermKind.SYMBOL, text=node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return Term(TermKind.MUL, (number_term(-1), sub(node.operand)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
        return sub(node.operand)
    if isinstance(node, ast.BinOp):
        left, right = sub(node.left), sub(node.right)
        if isinstance(node.op, ast.Add):
            return Term(TermKind.ADD, (left, right))
        if isinstance(node.op, ast.Sub):
            return Term(TermKind.ADD, (left, Term(TermKind.MUL, (number_term(-1), right))))
        if isinstance(node.op, ast.Mult):
            return Term(TermKind.MUL, (left, right))
        if isinstance(node.op, ast.Div):
            return Term(TermKind.MUL, (left, Term(TermKind.POW, (right, number_term(-1)))))
        if isinstance(node.op, ast.Pow):
            return Term(TermKind.POW, (left, right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id != "Piecewise":
        return Term(TermKind.FUNCTION, tuple(sub(a) for a in node.args), text=node.func.id)
    children = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)]
    return Term(TermKind.OTHER, tuple(sub(c) for c in children))


# -- reading ---------------------------------------------------------------------------------------
def _require(table: Mapping[str, Any], key: str, kind: type | tuple, where: str) -> Any:
    if key not in table:
        raise SpecParseError(f"{where}: missing key {key!r}")
    value = table[key]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise SpecParseError(f"{where}.{key}: expected {name}, got {type(value).__name__} {value!r}")
    return value


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SpecParseError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _activation(value: Any, where: str) -> Activation:
    if isinstance(value, str):
        return Activation.builtin(value)
    if not isinstance(value, dict):
        raise SpecParseError(f"{where}: expected a name or a table, got {type(value).__name__}")
    name = _require(value, "name", str, where)
    if "expr" in value:
        _check_keys(value, {"name", "expr", "var", "latex", "init", "domain"}, where)
        var = sp.Symbol(naming.identifier(_require(value, "var", str, where), f"{where}.var"))
        expr = parse_expression(value["expr"], {var.name: var}, f"{where}.expr")
        kw = {k: value[k] for k in ("latex", "init", "domain") if k in value}
        return Activation(name, expr, var=var, **kw)
    params = {k: v for k, v in value.items() if k != "name"}
    return Activation.builtin(name, **params)


#: how a spec writes a batch norm's ``momentum=None`` (the cumulative average): TOML has no null
MOMENTUM_NONE = "none"


def _momentum(value: Any, where: str) -> Any:
    """A batch norm's momentum as the spec writes it: a number (checked by the layer), or
    ``"none"`` for PyTorch's ``momentum=None``, the cumulative average of the batches seen."""
    if value == MOMENTUM_NONE:
        return None
    if isinstance(value, str):
        raise SpecParseError(f"{where}: expected a number in [0, 1] or {MOMENTUM_NONE!r} (the cumulative "
                             f"average, PyTorch's momentum=None), got {naming.shown(value)}")
    return value


def _momentum_value(value: float | None) -> float | str:
    return MOMENTUM_NONE if value is None else value


def _loss(value: Any, where: str) -> Loss:
    if isinstance(value, str):
        return Loss.builtin(value)
    if not isinstance(value, dict):
        raise SpecParseError(f"{where}: expected a name or a table, got {type(value).__name__}")
    _check_keys(value, {"name", "expr", "pred", "target", "reduction", "latex", "domain", *LOSS_CAPABILITIES}, where)
    name = _require(value, "name", str, where)
    pred = sp.Symbol(naming.identifier(_require(value, "pred", str, where), f"{where}.pred"))
    target = sp.Symbol(naming.identifier(_require(value, "target", str, where), f"{where}.target"))
    expr = parse_expression(_require(value, "expr", str, where), {pred.name: pred, target.name: target},
                            f"{where}.expr")
    kw = {k: value[k] for k in ("reduction", "latex", "domain", *LOSS_CAPABILITIES) if k in value}
    return Loss(name, expr, pred=pred, target=target, **kw)


def loads_spec(text: str, source: str = "<spec>") -> Spec:
    """Parse TOML text into a :class:`Spec`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecParseError(f"{source}: invalid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib parses nested arrays and inline tables recursively
        raise SpecParseError(f"{source}: invalid TOML: arrays or tables nested too deeply") from exc
    try:
        return _build(doc, source)
    except SpecParseError:
        raise
    except SymnnError as exc:  # the declaration's own validation, located in the file
        raise SpecParseError(f"{source}: {exc}") from exc
    except RecursionError as exc:
        raise SpecParseError(f"{source}: nested too deeply") from exc


def _build(doc: Mapping[str, Any], source: str) -> Spec:
    _check_keys(doc, _TOP_KEYS, source)
    net_table = _require(doc, "network", dict, source)
    if "input" in doc or "node" in doc:
        return _build_graph(doc, net_table, source)
    _check_keys(net_table, {"name", "loss", "l1", "l2", "frozen"}, f"{source}: [network]")
    layers_raw = _require(doc, "layer", list, source)
    if not layers_raw:
        raise SpecParseError(f"{source}: at least one [[layer]] is needed")
    layers = []
    for i, item in enumerate(layers_raw, 1):
        where = f"{source}: layer {i}"
        if not isinstance(item, dict):
            raise SpecParseError(f"{where}: expected a table")
        _check_keys(item, {"in", "out", "activation", "dropout"}, where)
        dropout = item.get("dropout", 0.0)
        layers.append(Dense(_require(item, "in", int, where), _require(item, "out", int, where),
                            _activation(item.get("activation", "identity"), f"{where}.activation"),
                            dropout=dropout))
    kw = {k: net_table[k] for k in ("l1", "l2", "name", "frozen") if k in net_table}
    return Spec(Network(layers, loss=_network_loss(doc, net_table, source), **kw),
                _train_table(doc.get("train", {}), source))


def _network_loss(doc: Mapping[str, Any], net_table: Mapping[str, Any], source: str) -> Loss | list[Loss]:
    """The network's loss: ``[network] loss`` (a name or an inline table), a ``[loss]`` table,
    or, for a layer graph with several outputs, a list of them (one per output)."""
    if "loss" in doc and "loss" in net_table:
        raise SpecParseError(f"{source}: give the loss in [network] or as a [loss] table, not both")
    if isinstance(net_table.get("loss"), list):
        return [_loss(x, f"{source}: loss[{i}]") for i, x in enumerate(net_table["loss"])]
    return _loss(doc["loss"] if "loss" in doc else _require(net_table, "loss", (str, dict), f"{source}: [network]"),
                 f"{source}: loss")


def _build_graph(doc: Mapping[str, Any], net_table: Mapping[str, Any], source: str) -> Spec:
    """A layer graph: ``[[input]]`` tables, ``[[node]]`` tables (one call of a layer each) and
    ``[network] outputs``, read by :func:`symnn.graph_spec.build_network` with its whitelists."""
    from .graph_spec import build_network

    if "layer" in doc:
        raise SpecParseError(f"{source}: give [[layer]] tables (a chain of dense layers) or [[input]] and "
                             "[[node]] tables (a layer graph), not both")
    _check_keys(net_table, {"name", "loss", "loss_weights", "l1", "l2", "outputs", "frozen"}, f"{source}: [network]")
    loss = _network_loss(doc, net_table, source)
    kw = {k: net_table[k] for k in ("l1", "l2", "name", "loss_weights", "frozen") if k in net_table}
    record = {"inputs": _require(doc, "input", list, source), "nodes": _require(doc, "node", list, source),
              "outputs": _require(net_table, "outputs", list, f"{source}: [network]")}

    def make(inputs: list, outputs: list) -> Network:
        return Network(inputs=inputs[0] if len(inputs) == 1 else inputs,
                       outputs=outputs[0] if len(outputs) == 1 else outputs, loss=loss, **kw)

    net = build_network(record, make, {"activation": _activation, "momentum": _momentum}, source, SpecParseError)
    return Spec(net, _train_table(doc.get("train", {}), source))


def _train_table(train: Any, source: str) -> dict[str, Any]:
    """The [train] table, each value checked for its type and range now, so that a bad setting
    is one error naming the file and key when the spec is read, not a traceback from the
    trainer (or from NumPy's seeding) after the kernels are built."""
    if not isinstance(train, dict):
        raise SpecParseError(f"{source}: [train] must be a table")
    _check_keys(train, set(_TRAIN_CHECKS), f"{source}: [train]")
    for key, value in train.items():
        _TRAIN_CHECKS[key](value, f"{source}: [train].{key}")
    return dict(train)


def _train_optimizer(value: Any, where: str) -> None:
    """A name or a table with a ``name``: built once with :func:`symnn.optim.optimizer`, whose
    own range checks (lr > 0, betas in [0, 1)...) then speak for the file."""
    from .optim import optimizer

    if isinstance(value, dict):
        table = dict(value)
        name = _require(table, "name", str, where)
        del table["name"]
    elif isinstance(value, str):
        name, table = value, {}
    else:
        raise SpecParseError(f"{where}: expected an optimizer name or a table with a name, "
                             f"got {type(value).__name__} {naming.shown(value)}")
    try:
        optimizer(name, **table)
    except SymnnError as exc:
        raise SpecParseError(f"{where}: {exc}") from exc


def _whole_number(low: int) -> Any:
    """The check of an integer setting >= ``low``; TOML's true/false are refused, not read as 1/0."""
    def check(value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SpecParseError(f"{where}: expected an integer >= {low}, got {naming.shown(value)}")
    return check


def _fraction(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise SpecParseError(f"{where}: expected a number in [0, 1), got {naming.shown(value)}")


def _flag(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise SpecParseError(f"{where}: expected true or false, got {naming.shown(value)}")


def _train_backend(value: Any, where: str) -> None:
    from .emit import check_backend

    try:
        check_backend(value, "float64", allow_auto=True)
    except SymnnError as exc:
        raise SpecParseError(f"{where}: {exc}") from exc


def _train_dtype(value: Any, where: str) -> None:
    if value not in ("float64", "float32"):
        raise SpecParseError(f"{where}: expected \"float64\" or \"float32\", got {naming.shown(value)}")


#: [train] key -> its check (RELIABILITY.md S16/S17): every key ``symnn train`` reads
_TRAIN_CHECKS = {
    "optimizer": _train_optimizer, "epochs": _whole_number(1), "batch_size": _whole_number(1),
    "patience": _whole_number(1), "seed": _whole_number(0), "validation_split": _fraction,
    "standardize": _flag, "backend": _train_backend, "dtype": _train_dtype,
}


def load_spec(path: str | Path) -> Spec:
    """Read a TOML spec file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecParseError(f"cannot read spec {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecParseError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    return loads_spec(text, str(path))


# -- writing ---------------------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _loss_value(loss: Loss) -> Any:
    """How a spec writes a loss: a built-in's name, or the table of a user's (its expression
    in ``p`` and ``y``, and what it declares beyond the defaults)."""
    if not loss.user:
        return loss.name
    table: dict[str, Any] = {"name": loss.name,
                             "expr": _expr_text(loss.expr, {registry.P: "p", registry.T: "y"}),
                             "pred": "p", "target": "y"}
    if loss.reduction != "mean":
        table["reduction"] = loss.reduction
    if loss.latex_name:
        table["latex"] = loss.latex_name
    if loss.domain is not None:
        table["domain"] = list(loss.domain)
    for key in LOSS_CAPABILITIES:  # what the loss declares beyond the defaults
        value = getattr(loss, key)
        if value != LOSS_DEFAULTS[key]:
            table[key] = value.value if isinstance(value, enum.Enum) else value
    return table


def _expr_text(expr: sp.Expr, names: Mapping[sp.Symbol, str]) -> str:
    renamed = expr.xreplace({s: sp.Symbol(n) for s, n in names.items()})
    return sp.sstr(renamed, full_prec=True)


def _activation_value(act: Activation) -> str | dict[str, Any]:
    """How a spec writes an activation: a built-in's name (a table with its parameters where
    they are not the defaults), or a table with the expression of a user's."""
    if not act.user:
        builtin = Activation.builtin(act.name)
        extra = dict(act.params) if act.params != builtin.params else {}
        return {"name": act.name, **extra} if extra else act.name
    table: dict[str, Any] = {"name": act.name, "expr": _expr_text(act.expr, {registry.X: "z"}), "var": "z"}
    if act.latex_name:
        table["latex"] = act.latex_name
    if act.init != "xavier":
        table["init"] = act.init
    if act.domain is not None:
        table["domain"] = list(act.domain)
    return table


def _graph_lines(net: Network) -> list[str]:
    """A layer graph's ``outputs`` (the [network] line), ``[[input]]`` and ``[[node]]`` tables."""
    from .graph_spec import graph_record

    record = graph_record(net, {"activation": _activation_value, "momentum": _momentum_value})
    lines = [f"outputs = {_toml_value(record['outputs'])}"]
    for item in record["inputs"]:
        lines += ["", "[[input]]"] + [f"{k} = {_toml_value(v)}" for k, v in item.items()]
    for node in record["nodes"]:
        lines += ["", "[[node]]"] + [f"{k} = {_toml_value(v)}" for k, v in node.items()]
    return lines


def dumps_spec(net: Network, train: Mapping[str, Any] | None = None) -> str:
    """The TOML text of ``net`` (and training settings); :func:`loads_spec` reads it back equal."""
    lines = ["[network]", f"name = {_toml_value(net.name)}"]
    loss = net.loss
    if net.several_outputs:  # one loss per output: names, or inline tables for a user's
        lines.append(f"loss = {_toml_value([_loss_value(x) for x in net.losses])}")
    elif not loss.user:
        lines.append(f"loss = {_toml_value(loss.name)}")
    if net.graph is not None and net.loss_weights != (1.0,) * len(net.losses):
        lines.append(f"loss_weights = {_toml_value(list(net.loss_weights))}")
    for key in ("l1", "l2"):
        if getattr(net, key):
            lines.append(f"{key} = {_toml_value(getattr(net, key))}")
    if net.frozen:
        lines.append(f"frozen = {_toml_value(list(net.frozen))}")
    if net.graph is not None:
        lines += _graph_lines(net)
    for layer in net.layers if net.graph is None else ():
        lines += ["", "[[layer]]", f"in = {int(layer.in_features)}", f"out = {int(layer.out_features)}",
                  f"activation = {_toml_value(_activation_value(layer.activation))}"]
        if layer.dropout:
            lines.append(f"dropout = {_toml_value(layer.dropout)}")
    if loss.user and not net.several_outputs:
        lines += ["", "[loss]"] + [f"{k} = {_toml_value(v)}" for k, v in _loss_value(loss).items()]
    if train:
        lines += ["", "[train]"] + [f"{k} = {_toml_value(v)}" for k, v in train.items()]
    return "\n".join(lines) + "\n"
