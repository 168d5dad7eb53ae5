"""Save and load a trained model in one file, and export its weights as a C header.

A model file is a NumPy ``.npz`` (written atomically) holding the parameters, the input
standardisation, and a JSON description of the network in which every SymPy expression is
stored as its ``srepr``. A model file may come from anyone, so loading trusts none of it
(RELIABILITY.md U1, U2, U6): arrays load with ``allow_pickle=False`` and are checked against
the network; expressions are read by a whitelist over Python's ``ast`` that never hands a
string to SymPy and prices them by the expression budget before SymPy builds anything; the
network is rebuilt through its public constructors (``sn.Activation``, ``sn.Loss``,
``sn.Dense``, ``sn.Network``), so every name, expression and domain passes the checks a
declaration in Python passes. Every problem is a :class:`~symnn.errors.ModelFormatError` that
names the place in the file.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import json
import re
import tokenize
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import sympy as sp

from . import naming, registry
from .capabilities import Targets
from .declare import Activation, Dense, Loss, Network
from .errors import DataError, ModelFormatError, ShapeError, SymnnError
from .expressions import MAX_DIGITS, NonSmoothWarning, Term, TermKind, budget_problem, is_call, number_term
from .fileio import staged
from .kernel import as_real_array

#: the model-file format this symnn writes and reads (``load`` refuses any other version, U6)
FORMAT_VERSION = 1
FORMAT = f"symnn-model/{FORMAT_VERSION}"
#: the longest JSON description read (characters)
MAX_META_CHARS = 10_000_000


@dataclass(frozen=True)
class Standardizer:
    """Per-feature input scaling ``(x - mean) / std``, fitted on training data only.

    Constant features get ``std = 1`` (they map to 0, not to 0/0).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: object) -> "Standardizer":
        arr = as_real_array(X, "X").astype(np.float64)
        if arr.ndim > 2 and arr.shape[0]:  # images (N, C, H, W): per entry of the row C*H*W
            arr = arr.reshape(arr.shape[0], -1)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ShapeError(f"Standardizer.fit needs a non-empty 2-D array, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise DataError("Standardizer.fit: the data hold NaN or infinity")
        std = arr.std(axis=0)
        return cls(arr.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, X: object) -> np.ndarray:
        """``X`` standardised, as rows: a batch of images (N, C, H, W) is taken as the rows of
        C*H*W entries the statistics were fitted on (the kernels' layout, row-major)."""
        arr = as_real_array(X, "X").astype(np.float64)
        if arr.ndim > 2 and arr.shape[0]:
            arr = arr.reshape(arr.shape[0], -1)
        if arr.ndim != 2 or arr.shape[1] != self.mean.shape[0]:
            raise ShapeError(f"expected X with {self.mean.shape[0]} features, got shape {arr.shape}")
        return (arr - self.mean) / self.std


@dataclass
class Model:
    """A network, its trained parameters and (optionally) its input standardisation."""

    network: Network
    params: dict[str, np.ndarray]
    standardizer: Standardizer | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def predict_proba(self, X: object, backend: str = "numpy") -> np.ndarray:
        """Network output for raw (unstandardised) inputs: class probabilities for a
        classifier (softmax rows, or one sigmoid per output)."""
        from .driver import compile as compile_kernel

        dtype = str(next(iter(self.params.values())).dtype)
        kernel = compile_kernel(self.network, backend=backend, dtype=dtype)
        if self.standardizer is None:
            return kernel.forward(self.params, X)
        # several inputs come as a dict: standardised in the packed layout the statistics were taken in
        packed = kernel.inputs(X) if isinstance(X, Mapping) else X
        return kernel.forward(self.params, self.standardizer.transform(packed))

    def predict(self, X: object, backend: str = "numpy") -> np.ndarray:
        """Predictions for raw inputs, as scikit-learn's ``predict``: class labels (N,) for
        cross-entropy, 0/1 (N, K) for binary cross-entropy, the output for a regression."""
        from .decision import labels

        return labels(self.network, self.predict_proba(X, backend))


# -- network <-> JSON -------------------------------------------------------------------------------
def _encode(value: Any) -> Any:
    if isinstance(value, sp.Basic):
        return {"srepr": sp.srepr(value)}
    if isinstance(value, enum.Enum):  # a declared capability (Targets, Link): its string value
        return value.value
    return value


# -- expression records: read, never evaluated ------------------------------------------------------
#
# An expression is stored as its ``srepr`` (``Mul(Symbol('x', real=True), Pow(...))``). It is
# read back by a whitelist over Python's ``ast``: only the node classes below, called by name,
# with arguments that are nodes or plain literals. SymPy's constructors ``sympify`` a string
# argument, and sympify evaluates it, so no string reaches a constructor except a Symbol's
# name (a plain identifier) and a Float's digits (a decimal literal, checked by a pattern). The
# whole record is priced by the expression budget before any SymPy object is built
# (:func:`symnn.expressions.budget_problem`), so ``Pow(Integer(9), Integer(99999999999))`` is
# refused, not computed. (Issue 18, items 1 and 6; RELIABILITY.md U1.)

#: the longest expression record read at all (characters)
MAX_RECORD_LENGTH = 100_000


def _expression_classes() -> dict[str, type]:
    """The SymPy node classes a record may name: arithmetic, the functions the backends print,
    Piecewise and its conditions, and symnn's own functions."""
    from sympy.codegen.cfunctions import expm1, log1p
    from sympy.functions.elementary.piecewise import ExprCondPair

    from . import functions

    classes = [
        sp.Add, sp.Mul, sp.Pow, sp.exp, sp.log, sp.sin, sp.cos, sp.tan, sp.asin, sp.acos, sp.atan,
        sp.sinh, sp.cosh, sp.tanh, sp.asinh, sp.acosh, sp.atanh, sp.erf, sp.erfc, sp.Abs, sp.sign,
        sp.Max, sp.Min, sp.Heaviside, sp.floor, sp.ceiling, expm1, log1p,
        sp.Piecewise, ExprCondPair, sp.StrictLessThan, sp.LessThan, sp.StrictGreaterThan,
        sp.GreaterThan, sp.Equality, sp.Unequality, sp.And, sp.Or, sp.Not,
        functions.Sigmoid, functions.Softplus, functions.OnePlusErf, functions.Guard, functions.Clamp,
    ]
    return {cls.__name__: cls for cls in classes}


_CLASSES = _expression_classes()
#: bare names srepr prints for SymPy singletons (the infinities and NaN are not finite constants)
_ATOMS: dict[str, Any] = {"pi": sp.pi, "E": sp.E, "I": sp.I, "true": sp.true, "false": sp.false}
#: Symbol's keyword arguments: SymPy assumptions (symnn writes ``real``), each True or False
_ASSUMPTIONS = frozenset("real extended_real complex finite commutative rational integer zero nonzero "
                         "positive negative nonnegative nonpositive".split())
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d{1,6})?")


@dataclass(frozen=True)
class _Read:
    """One node of a record: its price (for the budget) and how to build it afterwards."""

    term: Term
    build: Callable[[], Any]


def _refuse(where: str, what: str) -> ModelFormatError:
    return ModelFormatError(f"{where}: {what}; a model file holds only SymPy nodes with numbers and "
                            "variable names as arguments, and nothing in it is evaluated")


def _int_literal(node: ast.AST, where: str) -> int:
    """An integer literal, possibly negated (``Integer(-1)``); never a bool."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_int_literal(node.operand, where)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    raise _refuse(where, f"expected an integer literal, got {_describe(node)}")


def _describe(node: ast.AST) -> str:
    """What a refused piece of syntax is, for the message."""
    if isinstance(node, ast.Constant):
        is_text = isinstance(node.value, (str, bytes))
        kind = "a string literal (SymPy would evaluate it)" if is_text else "a literal"
        return f"{kind} {naming.shown(node.value, 40)}"
    names = {ast.Attribute: "attribute access", ast.Subscript: "a subscript", ast.Lambda: "a lambda",
             ast.Call: "a call of something other than a SymPy class", ast.Name: "a name"}
    label = next((text for cls, text in names.items() if isinstance(node, cls)), type(node).__name__)
    return f"{label} at column {getattr(node, 'col_offset', 0) + 1}"


def _keywords(node: ast.Call, where: str, allowed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The keyword arguments of a call: only ``allowed`` names, each a bool or int literal."""
    out: dict[str, Any] = {}
    fn = getattr(node.func, "id", "?")
    for kw in node.keywords:
        if kw.arg is None or kw.arg not in allowed:
            raise _refuse(where, f"{fn}() takes no keyword argument {kw.arg!r}")
        if not (isinstance(kw.value, ast.Constant) and type(kw.value.value) in (bool, int)):
            raise _refuse(where, f"{fn}({kw.arg}=...) must be a literal, got {_describe(kw.value)}")
        out[kw.arg] = kw.value.value
    return out


def _read_number(node: ast.Call, name: str, where: str) -> _Read:
    """``Integer(n)``, ``Rational(p, q)`` or ``Float('digits', precision=bits)``."""
    args = node.args
    if name == "Integer" and len(args) == 1:
        _keywords(node, where)
        n = _int_literal(args[0], where)
        return _Read(number_term(n), lambda: sp.Integer(n))
    if name == "Rational" and len(args) == 2:
        _keywords(node, where)
        p, q = _int_literal(args[0], where), _int_literal(args[1], where)
        if q == 0:
            raise _refuse(where, "Rational with denominator 0")
        return _Read(number_term(Fraction(p, q)), lambda: sp.Rational(p, q))
    if name == "Float" and len(args) == 1:
        kw = _keywords(node, where, frozenset({"precision"}))
        text = args[0].value if isinstance(args[0], ast.Constant) else None
        if not isinstance(text, str) or len(text) > MAX_DIGITS + 10 or not _DECIMAL.fullmatch(text):
            raise _refuse(where, f"Float() needs a decimal literal, got {_describe(args[0])}")
        precision = kw.get("precision", 53)
        if isinstance(precision, bool) or not 1 <= precision <= 4 * MAX_DIGITS:
            raise _refuse(where, f"Float precision must be 1 to {4 * MAX_DIGITS} bits, got {precision}")
        mantissa = text.lstrip("+-").split("e")[0].split("E")[0].replace(".", "").lstrip("0")
        term = Term(TermKind.NUMBER, value=float(text), digits=max(1, len(mantissa)), text=text)
        return _Read(term, lambda: sp.Float(text, precision=precision))
    raise _refuse(where, f"{name}() with {len(args)} arguments")


def _read_symbol(node: ast.Call, where: str) -> _Read:
    """``Symbol('x', real=True)``: a plain-identifier name and SymPy assumptions."""
    kw = _keywords(node, where, _ASSUMPTIONS)
    arg = node.args[0] if len(node.args) == 1 else None
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        raise _refuse(where, "Symbol() takes one name")
    try:
        name = naming.identifier(arg.value, "symbol name")
    except SymnnError as exc:
        raise ModelFormatError(f"{where}: {exc}") from exc
    if any(type(v) is not bool for v in kw.values()):
        raise _refuse(where, f"Symbol {name!r}: assumptions must be True or False")
    return _Read(Term(TermKind.SYMBOL, text=name), lambda: sp.Symbol(name, **kw))


def _read(node: ast.AST, where: str) -> _Read:
    """Check one node of a record against the whitelist; nothing is built yet."""
    if isinstance(node, ast.Name) and node.id in _ATOMS:
        atom = _ATOMS[node.id]
        kind = TermKind.OTHER if atom in (sp.true, sp.false) else TermKind.CONSTANT
        value = None if atom is sp.I or kind is TermKind.OTHER else float(atom)
        return _Read(Term(kind, value=value, text=node.id), lambda: atom)
    if isinstance(node, ast.Tuple):  # Piecewise's (expr, cond) pairs, as older SymPy printed them
        items = [_read(e, where) for e in node.elts]
        term = Term(TermKind.OTHER, tuple(i.term for i in items))
        return _Read(term, lambda: tuple(i.build() for i in items))
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        if isinstance(node, ast.Name) and node.id in ("nan", "oo", "zoo"):
            raise _refuse(where, f"the constant {node.id} is not finite")
        raise _refuse(where, f"refused {_describe(node)}")
    name = node.func.id
    if name in ("Integer", "Rational", "Float"):
        return _read_number(node, name, where)
    if name == "Symbol":
        return _read_symbol(node, where)
    cls = _CLASSES.get(name)
    if cls is None:
        raise _refuse(where, f"{naming.shown(name)} is not one of the SymPy classes a model file may name")
    _keywords(node, where)
    args = [_read(a, where) for a in node.args]
    kind = {sp.Add: TermKind.ADD, sp.Mul: TermKind.MUL, sp.Pow: TermKind.POW}.get(cls)
    if kind is TermKind.POW and len(args) != 2:
        raise _refuse(where, f"Pow() with {len(args)} arguments")
    if kind is None:
        kind = TermKind.FUNCTION if is_call(cls) else TermKind.OTHER
    return _Read(Term(kind, tuple(a.term for a in args), text=name), lambda: cls(*[a.build() for a in args]))


def parse_srepr(text: object, where: str = "expression") -> sp.Basic:
    """Rebuild a SymPy object from its ``srepr`` without evaluating anything: the record must
    pass the whitelist (:func:`_read`) and the expression budget before SymPy builds it. Any
    problem raises :class:`~symnn.errors.ModelFormatError` naming ``where`` (the place in the
    file, ``network.layers[0].activation.expr``)."""
    if not isinstance(text, str):
        raise ModelFormatError(f"{where}: expected an expression string, got {type(text).__name__}")
    if len(text) > MAX_RECORD_LENGTH:
        raise ModelFormatError(f"{where}: expression record longer than {MAX_RECORD_LENGTH:,} characters")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ModelFormatError(f"{where}: unreadable expression {naming.shown(text, 80)}: {exc.msg}") from exc
    except (ValueError, MemoryError, RecursionError) as exc:  # an integer of 5,000 digits, deep nesting
        raise ModelFormatError(f"{where}: unreadable expression: {exc}") from exc
    try:
        record = _read(tree, where)
        problem = budget_problem(record.term)
    except RecursionError as exc:
        raise ModelFormatError(f"{where}: expression nested too deeply") from exc
    if problem:
        raise ModelFormatError(f"{where}: the expression {problem}")
    try:
        return record.build()
    except (TypeError, ValueError, ArithmeticError) as exc:  # Piecewise((x, Integer(1))), Pow(0, -1)...
        raise ModelFormatError(f"{where}: SymPy refuses the expression: {exc}") from exc


# -- network records: rebuilt through the public constructors -----------------------------------------
def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def network_to_dict(net: Network) -> dict[str, Any]:
    if net.graph is not None:  # a layer graph: its layers and calls (symnn.graph_spec)
        from .graph_spec import graph_record

        record = {"name": net.name, "l1": net.l1, "l2": net.l2,
                  "loss": [_fields(x) for x in net.losses] if net.several_outputs else _fields(net.loss),
                  "graph": graph_record(net, {"activation": _fields})}
        if net.loss_weights != (1.0,) * len(net.losses):
            record["loss_weights"] = list(net.loss_weights)
        if net.frozen:
            record["frozen"] = list(net.frozen)
        return record
    record = {
        "name": net.name, "l1": net.l1, "l2": net.l2,
        "loss": _fields(net.loss),
        "layers": [{"in": int(layer.in_features), "out": int(layer.out_features), "dropout": layer.dropout,
                    "activation": _fields(layer.activation)} for layer in net.layers],
    }
    if net.frozen:
        record["frozen"] = list(net.frozen)
    return record


def _field(record: Any, key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    """``record[key]`` of JSON type ``kind``, or ModelFormatError naming ``where.key``."""
    if not isinstance(record, dict):
        raise ModelFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        if default is not ...:
            return default
        raise ModelFormatError(f"{where}: missing {key!r}")
    value = record[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:  # JSON true is no 1
        raise ModelFormatError(f"{where}.{key}: unexpected {type(value).__name__} {naming.shown(value)}")
    return value


def _built(where: str, make: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``make(*args, **kwargs)`` (a public constructor), its validation errors located in the file."""
    try:
        return make(*args, **kwargs)
    except SymnnError as exc:
        raise ModelFormatError(f"{where}: {exc}") from exc


def _expression(record: Any, key: str, where: str) -> sp.Basic:
    at = f"{where}.{key}"
    return parse_srepr(_field(_field(record, key, dict, where), "srepr", str, at), at)


def _activation(record: Any, where: str) -> Activation:
    name = _field(record, "name", str, where)
    if _field(record, "user", bool, where):
        return _built(where, Activation, name, _expression(record, "expr", where),
                      var=_expression(record, "var", where), init=_field(record, "init", str, where, "xavier"),
                      latex=_field(record, "latex_name", (str, type(None)), where, None),
                      domain=_field(record, "domain", (list, type(None)), where, None))
    pairs = _field(record, "params", list, where, [])  # a built-in: its name and parameters only
    if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
        raise ModelFormatError(f"{where}.params: expected [name, value] pairs")
    known = _built(where, registry.activation, name).params
    unknown = sorted(k for k, _ in pairs if k not in known)
    if unknown:
        raise ModelFormatError(
            f"{where}.params: activation {name!r} has no parameter {naming.shown(unknown[0])}")
    return _built(where, Activation.builtin, name, **dict(pairs))


def _loss(record: Any, where: str) -> Loss:
    name = _field(record, "name", str, where)
    if not _field(record, "user", bool, where):
        return _built(where, Loss.builtin, name)
    # the declared capabilities: JSON types checked here, values by the constructor (a record
    # written before they existed declares none)
    caps = {"targets": _field(record, "targets", str, where, Targets.REAL.value),
            "classification": _field(record, "classification", bool, where, False),
            "min_outputs": _field(record, "min_outputs", int, where, 1),
            "requires": _field(record, "requires", (str, type(None)), where, None),
            "link": _field(record, "link", (str, type(None)), where, None)}
    return _built(where, Loss, name, _expression(record, "expr", where), pred=registry.P, target=registry.T,
                  reduction=_field(record, "reduction", str, where, "mean"),
                  latex=_field(record, "latex_name", (str, type(None)), where, None),
                  domain=_field(record, "domain", (list, type(None)), where, None), **caps)


def network_from_dict(spec: Any, where: str = "network") -> Network:
    """Rebuild a network from its JSON record through the public constructors (``sn.Activation``,
    ``sn.Loss``, ``sn.Dense``, ``sn.Network``), so every check they make runs on the file's
    content: names, expressions, domains, widths. Problems raise ModelFormatError at ``where``.
    A layer graph (a ``graph`` record) is rebuilt by :func:`symnn.graph_spec.build_network`
    through the same constructors, calling its layers on tensors."""
    if isinstance(spec, dict) and "graph" in spec:
        return _graph_network(spec, where)
    layers = []
    for i, item in enumerate(_field(spec, "layers", list, where)):
        at = f"{where}.layers[{i}]"
        act = _activation(_field(item, "activation", dict, at), f"{at}.activation")
        layers.append(_built(at, Dense, _field(item, "in", int, at), _field(item, "out", int, at), act,
                             dropout=_field(item, "dropout", (int, float), at, 0.0)))
    loss = _loss(_field(spec, "loss", dict, where), f"{where}.loss")
    return _built(where, Network, layers, loss=loss, l1=_field(spec, "l1", (int, float), where, 0.0),
                  l2=_field(spec, "l2", (int, float), where, 0.0), name=_field(spec, "name", str, where),
                  frozen=_field(spec, "frozen", list, where, []))


def _graph_network(spec: dict, where: str) -> Network:
    from .graph_spec import build_network

    unknown = sorted(set(spec) - {"name", "l1", "l2", "loss", "loss_weights", "graph", "frozen"})
    if unknown:
        raise ModelFormatError(f"{where}: unknown key(s) {naming.shown(unknown)} in a layer graph's record")
    losses = _field(spec, "loss", (dict, list), where)
    loss: Any = ([_loss(x, f"{where}.loss[{i}]") for i, x in enumerate(losses)] if isinstance(losses, list)
                 else _loss(losses, f"{where}.loss"))
    weights = _field(spec, "loss_weights", (list, type(None)), where, None)
    settings = {"loss": loss, "loss_weights": weights, "l1": _field(spec, "l1", (int, float), where, 0.0),
                "l2": _field(spec, "l2", (int, float), where, 0.0), "name": _field(spec, "name", str, where),
                "frozen": _field(spec, "frozen", list, where, [])}

    def make(inputs: list, outputs: list) -> Network:
        return Network(inputs=inputs[0] if len(inputs) == 1 else inputs,
                       outputs=outputs[0] if len(outputs) == 1 else outputs, **settings)

    return build_network(spec["graph"], make, {"activation": _activation}, f"{where}.graph", ModelFormatError)


# -- files -----------------------------------------------------------------------------------------
def save(path: str | Path, net: Network, params: Mapping[str, Any], *,
         standardizer: Standardizer | None = None, info: Mapping[str, Any] | None = None) -> Path:
    """Write ``net``, ``params`` and the standardisation to one ``.npz`` file, atomically."""
    from . import __version__

    shapes = {k: tuple(int(d) for d in v) for k, v in net.param_shapes().items()}
    arrays: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if name not in params:
            raise ShapeError(f"params lack {name}")
        arr = as_real_array(params[name], f"parameter {name}")
        if arr.shape != shape:
            raise ShapeError(f"expected {name} of shape {shape}, got {arr.shape}")
        arrays[f"param__{name}"] = arr
    if standardizer is not None:
        arrays["std__mean"], arrays["std__std"] = standardizer.mean, standardizer.std
    meta = {"format": FORMAT, "symnn": __version__, "network": network_to_dict(net), "info": dict(info or {})}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    with staged(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load(path: str | Path) -> Model:
    """Read a file written by :func:`save`. Nothing in the file is evaluated or trusted: the
    arrays load without pickle, each array's header is checked (shape, float dtype) before its
    data are read, the format version is checked, expressions are read by a whitelist under the
    expression budget (:func:`parse_srepr`), and the network is rebuilt through its public
    constructors. Any problem with the content raises :class:`~symnn.errors.ModelFormatError`
    naming the place in the file (RELIABILITY.md U1, U2, U6)."""
    path = Path(path)
    with _open(path) as data, warnings.catch_warnings():
        # the declaration warned about kinks when the network was made; once per load is noise
        warnings.simplefilter("ignore", NonSmoothWarning)
        meta = _meta(data, path)
        net = network_from_dict(meta["network"], f"{path}: network")
        params = {name: _array(data, f"param__{name}", shape, path)
                  for name, shape in net.param_shapes().items()}
        std = _standardizer(data, net, path)
    if len({a.dtype for a in params.values()}) > 1:
        raise ModelFormatError(f"{path}: the parameters mix float32 and float64")
    info = meta.get("info", {})
    if not isinstance(info, dict):
        raise ModelFormatError(f"{path}: info: expected a JSON object, got {type(info).__name__}")
    return Model(net, params, std, info)


#: what reading a damaged ``.npz`` (or its members) from an open file raises: a zip that is not
#: one, a truncated or corrupted member, sizes that seek before the start (OSError), a bad
#: ``.npy`` header (NumPy tokenizes old headers: a cut one is a TokenError), a pickled (object)
#: array refused by allow_pickle
_ARCHIVE_ERRORS = (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                   tokenize.TokenError)


@contextmanager
def _open(path: Path) -> Iterator[Any]:
    with open(path, "rb") as fh:  # a missing or unreadable file is the OSError it is
        try:
            data = np.load(fh, allow_pickle=False)
        except _ARCHIVE_ERRORS as exc:  # the file opened: anything now is its content
            raise ModelFormatError(f"{path} is not a symnn model file: {exc}") from exc
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ModelFormatError(f"{path} is not a symnn model file: a single array, not an .npz archive")
        with data:
            yield data


def _header(data: Any, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of member ``key``, from its ``.npy`` header alone (no data read yet)."""
    if key not in data.files:
        raise ModelFormatError(f"{path}: {key}: missing from the file")
    try:
        with data.zip.open(f"{key}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            readers = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise ModelFormatError(f"{path}: {key}: .npy format version {version} is not read")
            shape, _, dtype = readers[version](fh)
    except (*_ARCHIVE_ERRORS, KeyError) as exc:
        raise ModelFormatError(f"{path}: {key}: unreadable array header: {exc}") from exc
    return shape, dtype


def _read_member(data: Any, key: str, path: Path) -> np.ndarray:
    try:
        return np.array(data[key])
    except _ARCHIVE_ERRORS as exc:
        raise ModelFormatError(f"{path}: {key}: unreadable array: {exc}") from exc


def _meta(data: Any, path: Path) -> dict[str, Any]:
    """The JSON description, its format version checked (U6) before anything else is read."""
    if "meta" not in data.files:
        raise ModelFormatError(f"{path} is not a symnn model file (no metadata)")
    shape, dtype = _header(data, "meta", path)
    if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * MAX_META_CHARS:
        raise ModelFormatError(f"{path}: meta: expected one string of at most {MAX_META_CHARS:,} characters")
    try:
        meta = json.loads(str(_read_member(data, "meta", path)))
    except (ValueError, RecursionError) as exc:
        raise ModelFormatError(f"{path}: meta: not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{path}: meta: expected a JSON object")
    found = meta.get("format")
    match = re.fullmatch(r"symnn-model/(\d{1,9})", found) if isinstance(found, str) else None
    if match is None:
        raise ModelFormatError(f"{path} is not a symnn model file (format {naming.shown(found)})")
    version = int(match.group(1))
    if version != FORMAT_VERSION:
        from . import __version__

        written = naming.shown(meta.get("symnn", "unknown"))
        hint = "; upgrade symnn to read it" if version > FORMAT_VERSION else ""
        raise ModelFormatError(f"{path}: model format {found} (written by symnn {written}) is not the one "
                               f"this symnn {__version__} reads, {FORMAT}{hint}")
    if "network" not in meta:
        raise ModelFormatError(f"{path}: meta: missing 'network'")
    return meta


def _array(data: Any, key: str, shape: tuple[Any, ...], path: Path) -> np.ndarray:
    """A parameter or standardisation array: the expected shape, float32 or float64 (either
    byte order, converted to native), finite. The header is checked before the data are read,
    so a member claiming another (or a huge) shape is never allocated."""
    want = tuple(int(d) for d in shape)
    found, dtype = _header(data, key, path)
    if found != want:
        raise ModelFormatError(f"{path}: {key}: expected shape {want}, the file has {found}")
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise ModelFormatError(f"{path}: {key}: expected float32 or float64, the file has {dtype}")
    arr = _read_member(data, key, path)
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    if not np.isfinite(arr).all():
        raise ModelFormatError(f"{path}: {key}: holds NaN or infinity")
    return arr


def _standardizer(data: Any, net: Network, path: Path) -> Standardizer | None:
    present = [k for k in ("std__mean", "std__std") if k in data.files]
    if not present:
        return None
    if len(present) == 1:
        raise ModelFormatError(f"{path}: has {present[0]} without its pair")
    mean = _array(data, "std__mean", (net.n_in,), path).astype(np.float64)
    std = _array(data, "std__std", (net.n_in,), path).astype(np.float64)
    if not (std > 0).all():
        raise ModelFormatError(f"{path}: std__std: the standard deviations must be positive")
    return Standardizer(mean, std)


def export_c_params(path: str | Path, net: Network, params: Mapping[str, Any], *, dtype: str = "float64",
                    standardizer: Standardizer | None = None) -> Path:
    """Write ``NAME_params.h``: the trained parameters (and standardisation) as C constants for
    the emitted ``NAME.h``/``NAME.c``, so the model runs with no Python. Literals round-trip."""
    from .backends.c.config import check_prefix
    from .backends.c.printer import c_literal
    from .emit import spec_hash, write_atomic
    from .render import render

    prefix = check_prefix(net.name)
    for name, shape in net.param_shapes().items():  # a transposed W has the right count, wrong layout
        want = tuple(int(d) for d in shape)
        if name not in params:
            raise ShapeError(f"params lack {name}")
        if np.shape(params[name]) != want:
            raise ShapeError(f"expected {name} of shape {want}, got {np.shape(params[name])}")
    flat = np.concatenate([as_real_array(params[k], f"parameter {k}").astype(np.float64).reshape(-1)
                           for k in net.param_shapes()])
    if not np.isfinite(flat).all():
        raise DataError("the parameters hold NaN or infinity")

    def lits(values: np.ndarray) -> list[str]:
        return [c_literal(float(v), dtype) for v in values]

    text = render("c/params.h.jinja", prefix=prefix, real=f"{prefix}_real", values=lits(flat),
                  n_in=int(net.n_in), n_out=int(net.n_out),
                  mean=lits(standardizer.mean) if standardizer is not None else None,
                  std=lits(standardizer.std) if standardizer is not None else None,
                  spec_hash=spec_hash(net, dtype), op_summary=[])
    target = Path(path)
    if target.suffix != ".h":
        target = target / f"{prefix}_params.h"
    write_atomic(target, text)
    return target
