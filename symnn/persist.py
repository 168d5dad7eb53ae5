"""Save and load a trained model in one file, and export its weights as a C header.

A model file is a NumPy ``.npz`` (written atomically) holding the parameters, the input
standardisation, and a JSON description of the network in which every SymPy expression is
stored as its ``srepr``. Loading rebuilds the network through the normal constructors, so the
same validation runs. Expressions are read back by a whitelist parser over Python's ``ast``
(only calls of SymPy classes with literal arguments), never by ``eval``/``sympify``, so a
crafted file cannot run code (RELIABILITY.md S18), and arrays load with ``allow_pickle=False``.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import sympy as sp

from .declare import Activation, Dense, Loss, Network
from .errors import ConfigError, DataError, ShapeError
from .fileio import staged

FORMAT = "symnn-model/1"


@dataclass(frozen=True)
class Standardizer:
    """Per-feature input scaling ``(x - mean) / std``, fitted on training data only.

    Constant features get ``std = 1`` (they map to 0, not to 0/0).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: object) -> "Standardizer":
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ShapeError(f"Standardizer.fit needs a non-empty 2-D array, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise DataError("Standardizer.fit: the data hold NaN or infinity")
        std = arr.std(axis=0)
        return cls(arr.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, X: object) -> np.ndarray:
        arr = np.asarray(X, dtype=np.float64)
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

        x = self.standardizer.transform(X) if self.standardizer is not None else X
        dtype = str(next(iter(self.params.values())).dtype)
        return compile_kernel(self.network, backend=backend, dtype=dtype).forward(self.params, x)

    def predict(self, X: object, backend: str = "numpy") -> np.ndarray:
        """Predictions for raw inputs, as scikit-learn's ``predict``: class labels (N,) for
        cross-entropy, 0/1 (N, K) for binary cross-entropy, the output for a regression."""
        from .decision import labels

        return labels(self.network, self.predict_proba(X, backend))


# -- network <-> JSON -------------------------------------------------------------------------------
def _encode(value: Any) -> Any:
    if isinstance(value, sp.Basic):
        return {"srepr": sp.srepr(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"srepr"}:
        return parse_srepr(value["srepr"])
    return value


def _constructor(name: str) -> Any:
    from . import functions

    from sympy.functions.elementary import piecewise
    from sympy.logic import boolalg

    obj = next((getattr(m, name) for m in (functions, sp, piecewise, boolalg) if hasattr(m, name)), None)
    ok = isinstance(obj, type) and issubclass(obj, sp.Basic)
    if not ok and name in ("true", "false"):
        return getattr(sp, name)
    if not ok:
        raise ConfigError(f"model file: {name!r} is not a SymPy class")
    return obj


def parse_srepr(text: str) -> sp.Basic:
    """Rebuild a SymPy object from its ``srepr`` without ``eval``: only calls of SymPy classes
    (and symnn's Sigmoid/Softplus) with literal or nested-call arguments are accepted."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ConfigError(f"model file: unreadable expression {text[:80]!r}") from exc

    def build(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool)):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return -build(node.operand)
        if isinstance(node, ast.Tuple):
            return tuple(build(e) for e in node.elts)
        if isinstance(node, ast.Name) and node.id in ("true", "false", "nan", "oo", "zoo", "pi", "E"):
            return getattr(sp, node.id if node.id not in ("nan", "oo", "zoo") else node.id)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            cls = _constructor(node.func.id)
            kwargs = {}
            for kw in node.keywords:
                if kw.arg is None or not isinstance(kw.value, ast.Constant):
                    raise ConfigError("model file: only literal keyword arguments are allowed")
                kwargs[kw.arg] = kw.value.value
            return cls(*[build(a) for a in node.args], **kwargs)
        raise ConfigError(f"model file: disallowed syntax {ast.dump(node)[:80]}")

    return build(tree)


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _restore(cls: type, fields: Mapping[str, Any]) -> Any:
    """Rebuild a frozen declaration object field by field (its constructor validated it once)."""
    obj = object.__new__(cls)
    for name, value in fields.items():
        if name == "params":  # JSON turned the tuple of pairs into lists
            value = tuple((str(k), float(v)) for k, v in value)
        if name == "domain" and value is not None:  # (lo, hi), JSON's list; inf as Infinity
            value = (float(value[0]), float(value[1]))
        object.__setattr__(obj, name, _decode(value))
    return obj


def network_to_dict(net: Network) -> dict[str, Any]:
    return {
        "name": net.name, "l1": net.l1, "l2": net.l2,
        "loss": _fields(net.loss),
        "layers": [{"in": int(layer.in_features), "out": int(layer.out_features), "dropout": layer.dropout,
                    "activation": _fields(layer.activation)} for layer in net.layers],
    }


def network_from_dict(spec: Mapping[str, Any]) -> Network:
    layers = [Dense(item["in"], item["out"], activation=_restore(Activation, item["activation"]),
                    dropout=item.get("dropout", 0.0)) for item in spec["layers"]]
    return Network(layers, loss=_restore(Loss, spec["loss"]), l1=spec["l1"], l2=spec["l2"], name=spec["name"])


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
        arr = np.asarray(params[name])
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
    """Read a file written by :func:`save` (no code in the file is ever executed)."""
    with np.load(Path(path), allow_pickle=False) as data:
        try:
            meta = json.loads(str(data["meta"]))
        except KeyError as exc:
            raise ConfigError(f"{path} is not a symnn model file (no metadata)") from exc
        if meta.get("format") != FORMAT:
            raise ConfigError(f"{path}: unsupported model format {meta.get('format')!r}")
        net = network_from_dict(meta["network"])
        params = {name: np.array(data[f"param__{name}"]) for name in net.param_shapes()}
        std = None
        if "std__mean" in data:
            std = Standardizer(np.array(data["std__mean"]), np.array(data["std__std"]))
    return Model(net, params, std, meta.get("info", {}))


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
    flat = np.concatenate([np.asarray(params[k], dtype=np.float64).reshape(-1) for k in net.param_shapes()])
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
