"""Issue 18, items 1 and 2 (the loader), RELIABILITY.md U1, U2 and U6: a model file runs no code.

``sn.load`` read each expression record with a whitelist that admitted string literals, and
SymPy's constructors ``sympify`` strings, which evaluates them: the payload of item 1 ran on
load and the model then predicted normally. It rebuilt the network with ``object.__new__``,
skipping every constructor check, so a name from the file reached emitted code and an activation
the constructor refuses (``log(x)``) loaded and predicted NaN. Now the reader admits only SymPy
node classes with numbers and plain names as arguments, the network is rebuilt through its
public constructors, the arrays and the format version are checked, and every problem is a
``ModelFormatError`` naming the place in the file. Payload tests carry a marker file that
exists if and only if the payload ran.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import sympy as sp

import symnn as sn
from symnn.errors import ModelFormatError

ROOT = Path(__file__).resolve().parents[2]
z = sp.Symbol("z")
X_ = "Symbol('x', real=True)"


def _net() -> sn.Network:
    swish = sn.Activation("sw", z / (1 + sp.exp(-z)), var=z)
    return sn.Network([sn.Dense(2, 3, swish), sn.Dense(3, 1, "sigmoid")], loss="bce", name="victim")


def _forge(tmp_path: Path, edit: Callable[[dict[str, Any]], None] | None = None,
           arrays_edit: Callable[[dict[str, np.ndarray]], None] | None = None) -> Path:
    """A model file as ``sn.save`` writes it, then changed as an attacker would."""
    net = _net()
    good = sn.save(tmp_path / "good.npz", net, net.init_params(seed=0),
                   standardizer=sn.Standardizer(np.zeros(2), np.ones(2)))
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    if edit is not None:
        edit(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    if arrays_edit is not None:
        arrays_edit(arrays)
    forged = tmp_path / "forged.npz"
    np.savez(forged, **arrays)
    return forged


def _set_expr(srepr: str) -> Callable[[dict[str, Any]], None]:
    return lambda meta: meta["network"]["layers"][0]["activation"]["expr"].__setitem__("srepr", srepr)


def _payloads(marker: Path) -> dict[str, str]:
    """Item 1's payload and variants: strings handed to a SymPy constructor (which sympifies
    them), attribute access, subscripts, calls of things that are not SymPy classes."""
    cmd = f"open({str(marker)!r}, 'w').close()"
    run = "Symbol.__new__.__globals__['__builtins__']['__import__']('os').system('touch " + str(marker) + "')"
    return {
        "item 1": f"tanh({run!r})",
        "string to Add": f"Add({X_}, {cmd!r})",
        "string to Symbol assumption": f"Symbol('x', real={cmd!r})",
        "string to Integer": f"Integer({cmd!r})",
        "string to Rational": f"Rational({cmd!r}, 1)",
        "code as a Float's digits": f"Float({cmd!r}, precision=53)",
        "string in Piecewise": f"Piecewise(ExprCondPair({X_}, {cmd!r}))",
        "string as Symbol name": f"Symbol({cmd!r})",
        "attribute access": "Symbol.__new__.__globals__",
        "subscript": f"Add({X_}, Symbol('x')['__class__'])",
        "call of a builtin": cmd,
        "sympify": f"sympify({cmd!r})",
        "eval keyword": f"Add({X_}, Integer(1), evaluate={cmd!r})",
        "lambda": f"Add({X_}, (lambda: {cmd})())",
        "starred": f"Add(*[{X_}])",
        "not a node": f"Function('f')({X_})",
    }


@pytest.mark.parametrize("payload", sorted(_payloads(Path("m"))))
def test_payloads_in_an_expression_record_never_run(tmp_path: Path, payload: str) -> None:
    """U1: refused with ModelFormatError naming the record; the payload never ran."""
    marker = tmp_path / "pwned"
    path = _forge(tmp_path, _set_expr(_payloads(marker)[payload]))
    with pytest.raises(ModelFormatError, match=r"forged\.npz: network\.layers\[0\]\.activation\.expr: "):
        sn.load(path)
    assert not marker.exists()


def test_item_1_payload_through_every_loading_entry_point(tmp_path: Path) -> None:
    """The exact payload of item 1 ran on ``sn.load`` alone, and the model then predicted
    normally. Nothing that starts from the file gets past the load now."""
    marker = tmp_path / "pwned"
    path = _forge(tmp_path, _set_expr(_payloads(marker)["item 1"]))
    uses: list[Callable[[], object]] = [
        lambda: sn.load(path),
        lambda: sn.load(path).predict(np.zeros((2, 2))),
        lambda: sn.compile(sn.load(path).network, backend="numpy"),
        lambda: sn.emit(sn.load(path).network, tmp_path / "out", backend="c"),
    ]
    for use in uses:
        with pytest.raises(ModelFormatError):
            use()
    assert not marker.exists() and not (tmp_path / "out").exists()


# -- the network is rebuilt through its constructors --------------------------------------------------
_NAMES = {
    "activation": lambda meta, s: meta["network"]["layers"][0]["activation"].__setitem__("name", s),
    "built-in activation": lambda meta, s: meta["network"]["layers"][1]["activation"].__setitem__("name", s),
    "loss": lambda meta, s: meta["network"]["loss"].__setitem__("name", s),
    "network": lambda meta, s: meta["network"].__setitem__("name", s),
}


@pytest.mark.parametrize("field", sorted(_NAMES))
def test_names_from_the_file_pass_the_constructors(tmp_path: Path, field: str) -> None:
    """Item 2 (the loader side): the docstring and C-comment breakouts of the issue, and a name
    that collides with the emitted files, are refused on load by the constructors' validator;
    nothing is emitted or run."""
    marker = tmp_path / "pwned"
    names = [f'tanh\n"""\nopen({str(marker)!r}, "w").close()\n"""',
             f'tanh */ __attribute__((constructor)) static void pwn(void) {{ fclose(fopen("{marker}", "w")); }} /*']
    if field == "network":
        names.append("main")
    for i, name in enumerate(names):
        folder = tmp_path / str(i)
        folder.mkdir()
        path = _forge(folder, lambda meta: _NAMES[field](meta, name))
        with pytest.raises(ModelFormatError, match=r"forged\.npz: network"):
            sn.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("case", ["log", "sqrt", "constant", "free symbol", "bad domain", "init", "bce as a user loss"])
def test_expressions_the_constructors_refuse_are_refused_on_load(tmp_path: Path, case: str) -> None:
    """Item 2: ``log(x)`` loaded through ``object.__new__`` and predicted NaN silently. Each of
    these is refused by ``sn.Activation``/``sn.Loss``, so now by ``sn.load``, naming the record."""
    act = ["network", "layers", 0, "activation"]
    edits: dict[str, tuple[list, str, Any, str]] = {
        "log": (act + ["expr"], "srepr", f"log({X_})", "not real"),
        "sqrt": (act + ["expr"], "srepr", f"Pow({X_}, Rational(1, 2))", "not real"),
        "constant": (act + ["expr"], "srepr", "Integer(3)", "does not depend"),
        "free symbol": (act + ["expr"], "srepr", f"Mul({X_}, Symbol('a'))", "free symbols"),
        "bad domain": (act, "domain", [1, 0], "lo < hi"),
        "init": (act, "init", "zeros", "init must be"),
        # the built-in BCE's expression, read as a user loss: log(p) without its domain
        "bce as a user loss": (["network", "loss"], "user", True, "not real at p = -3"),
    }
    path_keys, key, value, says = edits[case]

    def edit(meta: dict[str, Any]) -> None:
        node: Any = meta
        for k in path_keys:
            node = node[k]
        node[key] = value

    where = r"network\.loss" if case == "bce as a user loss" else r"network\.layers\[0\]\.activation"
    with pytest.raises(ModelFormatError, match=where + ".*(" + says + ")"):
        sn.load(_forge(tmp_path, edit))


def test_round_trip_through_the_constructors(tmp_path: Path) -> None:
    """Every kind of record still loads, equal: built-ins with parameters, a user activation
    with a domain and a kink, a user loss with a domain, float32 parameters, the standardisation."""
    x, p, y = sp.symbols("x p y")
    act = sn.Activation("logp1", sp.log(1 + x), var=x, domain=(-1, sp.oo), latex=r"\log(1+x)")
    wbce = sn.Loss("wbce", -(3 * y * sp.log(p) + (1 - y) * sp.log(1 - p)), pred=p, target=y, domain=(0, 1))
    net = sn.Network([sn.Dense(2, 3, sn.activation("leaky_relu", alpha=0.2)), sn.Dense(3, 3, act),
                      sn.Dense(3, 1, "sigmoid")], loss=wbce, l1=0.01, name="many")
    params = net.init_params(seed=1, dtype="float32")
    std = sn.Standardizer(np.array([1.0, -2.0]), np.array([0.5, 3.0]))
    m = sn.load(sn.save(tmp_path / "m.npz", net, params, standardizer=std))
    assert m.network == net
    assert all(m.params[k].dtype == np.float32 and np.array_equal(m.params[k], params[k]) for k in params)
    X = np.array([[0.1, 0.2], [3.0, -1.0]])
    np.testing.assert_array_equal(m.predict_proba(X), sn.Model(net, params, std).predict_proba(X))


# -- arrays and the format ----------------------------------------------------------------------------
@pytest.mark.parametrize("case, says", [
    ("nan weight", "NaN or infinity"),
    ("wrong shape", "expected shape"),
    ("int weight", "float32 or float64"),
    ("complex weight", "float32 or float64"),
    ("mixed dtypes", "mix float32 and float64"),
    ("missing weight", "missing"),
    ("zero std", "positive"),
    ("lone mean", "without its pair"),
    ("meta not a string", "meta: expected one string"),
])
def test_arrays_are_checked_against_the_network(tmp_path: Path, case: str, says: str) -> None:
    """A model with NaN weights predicted NaN; a wrong shape or dtype loaded as it was. The
    header of each array is checked before its data are read."""
    def edit(arrays: dict[str, np.ndarray]) -> None:
        w = arrays["param__W1"]
        change: dict[str, Callable[[], None]] = {
            "nan weight": lambda: arrays.__setitem__("param__W1", np.where(w > 0, np.nan, w)),
            "wrong shape": lambda: arrays.__setitem__("param__W1", w.T.copy()),
            "int weight": lambda: arrays.__setitem__("param__W1", w.astype(np.int64)),
            "complex weight": lambda: arrays.__setitem__("param__W1", w.astype(np.complex128)),
            "mixed dtypes": lambda: arrays.__setitem__("param__W1", w.astype(np.float32)),
            "missing weight": lambda: arrays.pop("param__b2"),
            "zero std": lambda: arrays.__setitem__("std__std", np.zeros(2)),
            "lone mean": lambda: arrays.pop("std__std"),
            "meta not a string": lambda: arrays.__setitem__("meta", np.zeros(3)),
        }
        change[case]()

    with pytest.raises(ModelFormatError, match=says):
        sn.load(_forge(tmp_path, arrays_edit=edit))


@pytest.mark.parametrize("found", ["symnn-model/2", "symnn-model/0", "symnn-model/1.5", "other/1", None])
def test_the_format_version_is_checked(tmp_path: Path, found: object) -> None:
    """U6: a file of another format version is refused, naming both versions."""
    path = _forge(tmp_path, lambda meta: meta.__setitem__("format", found))
    says = (f"{found}.*symnn-model/1" if found in ("symnn-model/2", "symnn-model/0")
            else "not a symnn model file")
    with pytest.raises(ModelFormatError, match=says):
        sn.load(path)
    if found == "symnn-model/2":
        with pytest.raises(ModelFormatError, match="upgrade symnn"):
            sn.load(path)


def test_files_that_are_not_models(tmp_path: Path) -> None:
    """A pickle, a single array, random bytes, a truncated archive: ModelFormatError, and the
    pickle's payload never runs. A missing file stays a FileNotFoundError."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    files = {"pickle.npz": pickle.dumps(Payload()), "random.npz": bytes(range(256)) * 4}
    np.save(tmp_path / "array.npy", np.zeros(3))
    files["array.npz"] = (tmp_path / "array.npy").read_bytes()
    net = _net()
    files["truncated.npz"] = sn.save(tmp_path / "good.npz", net, net.init_params(seed=0)).read_bytes()[:-300]
    np.savez(tmp_path / "objects.npz", meta=np.array([Payload()], dtype=object), allow_pickle=True)
    files["objects.npz"] = (tmp_path / "objects.npz").read_bytes()
    assert not marker.exists()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelFormatError):
            sn.load(tmp_path / name)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError):
        sn.load(tmp_path / "absent.npz")


def test_model_loader_fuzz_short_run() -> None:
    """A short, seeded run of fuzz/fuzz_model.py: mutated model files (bytes, JSON values,
    arrays) give ModelFormatError and nothing else, and no payload runs."""
    spec = importlib.util.spec_from_file_location("fuzz_model", ROOT / "fuzz" / "fuzz_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    crashes = module.run(300, seed=7)
    assert not crashes, [(module._shown(d), repr(e)) for d, e in crashes[:5]]
