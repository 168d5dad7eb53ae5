"""Fuzz the model loader, ``symnn.load`` (RELIABILITY.md U1, U2, U6; issue 18).

    python fuzz/fuzz_model.py [N] [SEED]     # default 20,000 inputs, seed 0: a few minutes

Inputs start from four saved models (built-in activations; a user activation with a Piecewise;
a user loss with a domain; float32 parameters and a standardisation). Each input is one of:

* the ``.npz`` bytes mutated (flips, deletions, insertions, splices): mostly a damaged zip;
* one value of the JSON description mutated (a string such as an srepr or a name edited as text
  with splices of srepr fragments, hostile names, huge numbers and code-execution payloads;
  another value put in its place; a key removed), or the whole JSON text mutated, packed into a
  valid ``.npz``;
* an array replaced (another shape or dtype, NaN, a string array) or removed.

Each is written to a file in a scratch folder and read with ``symnn.load``. The only exception
allowed out is :class:`~symnn.errors.ModelFormatError`; anything else, and any input that ran a
payload (its marker file exists), is printed with its input and the script exits 1.
tests/security/test_sec_load.py runs a short, seeded version; fuzz/atheris_model.py is the
coverage-guided harness.
"""

from __future__ import annotations

import copy
import io
import json
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402

import symnn as sn  # noqa: E402
from symnn.errors import ModelFormatError  # noqa: E402

#: pieces spliced into a model's JSON text: srepr nodes, payloads, names, numbers
FRAGMENTS = [
    "Symbol('x', real=True)", "Integer(99999999999)", "Pow(Integer(9), Integer(99999999999))",
    "Float('1e300', precision=53)", "Float('nan', precision=53)", "Rational(1, 0)", "oo", "zoo", "nan",
    "tanh(\\\"Symbol.__new__.__globals__['__builtins__']['__import__']('os').system('touch MARKER')\\\")",
    "__import__('os').system('touch MARKER')", "Symbol.__new__", "Symbol('x')[0]", "lambda: 1", "Symbol(x)",
    "log(Symbol('x', real=True))", "Piecewise((Integer(1), Integer(1)))", "Heaviside()", "Pow(Symbol('x'))",
    "Mul(", ")", "(", ",", "'", "\\\"", "\\n", "\\u2028", "\\u0000", "*/", '\\"\\"\\"', "symnn-model/2",
    "\"user\": true", "\"user\": false", "\"srepr\"", "null", "true", "[]", "{}", "1e999", "-1", "0", "2147483648",
    "NaN", "Infinity", "\"main\"", "\"tanh\"", "\"softmax\"", "\"leaky_relu\"", "[\"alpha\", 1e308]",
    "tanh(" * 12, ")" * 12, "Add(" * 40, "[" * 5000,
]


def seed_models() -> list[bytes]:
    """Four valid model files, as bytes."""
    z, p, y = sp.symbols("z p y")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        swish = sn.Activation("swish_pw", sp.Piecewise((z, z > 0), (z / (1 + sp.exp(-z)), True)), var=z)
    wbce = sn.Loss("wbce", -(3 * y * sp.log(p) + (1 - y) * sp.log(1 - p)), pred=p, target=y, domain=(0, 1))
    nets = [
        (sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 2, "softmax")], loss="cross_entropy", name="a"), "float64"),
        (sn.Network([sn.Dense(2, 2, swish), sn.Dense(2, 1)], loss="mse", l2=0.1, name="b"), "float64"),
        (sn.Network([sn.Dense(2, 2, sn.activation("leaky_relu", alpha=0.2)), sn.Dense(2, 1, "sigmoid")],
                    loss=wbce, name="c"), "float64"),
        (sn.Network([sn.Dense(3, 2, "relu", dropout=0.5), sn.Dense(2, 1, "sigmoid")], loss="bce", name="d"), "float32"),
    ]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (net, dtype) in enumerate(nets):
            buf = io.BytesIO()
            params = net.init_params(seed=i, dtype=dtype)
            std = sn.Standardizer(np.arange(float(net.n_in)), np.ones(net.n_in) * 2) if i == 3 else None
            with tempfile.TemporaryDirectory() as tmp:
                path = sn.save(Path(tmp) / "m.npz", net, params, standardizer=std, info={"seed": i})
                buf.write(path.read_bytes())
            out.append(buf.getvalue())
    return out


def unpack(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def with_meta(arrays: dict[str, np.ndarray], text: str) -> bytes:
    """The model's arrays with ``text`` as its JSON description."""
    return pack({**arrays, "meta": np.array(text)})


def mutate_text(text: str, rng: random.Random, marker: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        op, pos = rng.random(), rng.randrange(len(chars) + 1)
        if op < 0.25 and chars:
            del chars[pos:pos + rng.randint(1, 12)]
        elif op < 0.7:
            chars[pos:pos] = list(rng.choice(FRAGMENTS).replace("MARKER", marker))
        elif op < 0.85 and chars:
            chars[min(pos, len(chars) - 1)] = chr(rng.randrange(32, 0x250))
        else:
            a, b = sorted(rng.randrange(len(chars) + 1) for _ in range(2))
            chars[pos:pos] = chars[a:b]
    return "".join(chars)


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    chars = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4])):
        op, pos = rng.random(), rng.randrange(len(chars) + 1)
        if op < 0.4 and chars:
            chars[min(pos, len(chars) - 1)] = rng.randrange(256)
        elif op < 0.6 and chars:
            del chars[pos:pos + rng.randint(1, 64)]
        elif op < 0.8:
            chars[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            chars = chars[:pos]  # truncated
    return bytes(chars)


_BAD_ARRAYS: list[Callable[[np.ndarray], np.ndarray]] = [
    lambda a: a.reshape(-1), lambda a: a.T.copy(), lambda a: a.astype(np.float16), lambda a: a.astype(np.int64),
    lambda a: a.astype(np.complex128), lambda a: np.full_like(a, np.nan), lambda a: np.full_like(a, -np.inf),
    lambda a: a.astype(">f8"), lambda a: np.zeros((2,) + a.shape), lambda a: np.array("W1"),
    lambda a: np.zeros(0), lambda a: np.array(True),
]


def mutate_arrays(arrays: dict[str, np.ndarray], rng: random.Random) -> bytes:
    out = dict(arrays)
    key = rng.choice(sorted(out))
    if rng.random() < 0.2:
        del out[key]
    elif key == "meta":
        out[key] = rng.choice([np.array(1.5), np.array(["{}", "{}"]), np.array(b"{}"), np.array("[]")])
    else:
        out[key] = rng.choice(_BAD_ARRAYS)(out[key])
    return pack(out)


#: values put in place of one in the JSON description
VALUES: list[object] = [None, True, False, 0, -1, 1.5, 2**31, 10**400, float("nan"), float("inf"), "", "x", [], {},
                        [1, 2, 3], {"srepr": "Symbol('x', real=True)"}, "symnn-model/2", "softmax", "main"]


def _leaves(node: object, path: tuple = ()) -> list[tuple]:
    """Paths to every value in a JSON document (dict keys and list indices)."""
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _leaves(v, path + (i,))
    return out


def mutate_json(meta: dict, rng: random.Random, marker: str) -> str:
    """One value of the description changed: a string (an srepr, a name) mutated as text,
    another value put in its place, or a key removed; the result is valid JSON."""
    meta = json.loads(json.dumps(meta))
    for _ in range(rng.randint(1, 2)):
        path = rng.choice(_leaves(meta)[1:])
        parent = meta
        for key in path[:-1]:
            parent = parent[key]
        value, op = parent[path[-1]], rng.random()
        if isinstance(value, str) and op < 0.6:
            parent[path[-1]] = mutate_text(value, rng, marker)
        elif op < 0.9:
            parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
        elif isinstance(parent, dict):
            del parent[path[-1]]
    return json.dumps(meta)


def make_input(seeds: list[bytes], rng: random.Random, marker: str) -> bytes:
    data = rng.choice(seeds)
    kind = rng.random()
    if kind < 0.1:
        return mutate_bytes(data, rng)
    arrays = unpack(data)
    if kind < 0.2:
        return mutate_arrays(arrays, rng)
    if kind < 0.3:
        return with_meta(arrays, mutate_text(str(arrays["meta"]), rng, marker))
    return with_meta(arrays, mutate_json(json.loads(str(arrays["meta"])), rng, marker))


def load_bytes(data: bytes, folder: Path) -> None:
    """``symnn.load`` of ``data`` written to a file, as a user's model file would be read."""
    path = folder / "model.npz"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sn.load(path)


def run(n: int, seed: int = 0) -> list[tuple[bytes, BaseException | str]]:
    """Load ``n`` mutated model files; return the inputs that let anything but
    ModelFormatError escape, or that ran a payload."""
    rng = random.Random(seed)
    seeds = seed_models()
    found: list[tuple[bytes, BaseException | str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        marker = folder / "pwned"
        for _ in range(n):
            data = make_input(seeds, rng, str(marker))
            try:
                load_bytes(data, folder)
            except ModelFormatError:
                pass
            except Exception as exc:  # noqa: BLE001 - anything else is the finding
                found.append((data, exc))
            if marker.exists():
                found.append((data, "a payload ran: the marker file exists"))
                marker.unlink()
    return found


def _shown(data: bytes) -> str:
    try:
        meta = unpack(data).get("meta")
        return repr(str(meta))[:300]
    except Exception:  # noqa: BLE001 - only for printing a damaged input
        return repr(data[:120])


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    start = time.perf_counter()
    crashes = run(count, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    for data, exc in crashes[:20]:
        print(f"{exc if isinstance(exc, str) else type(exc).__name__ + ': ' + str(exc)[:300]}\n  input: {_shown(data)}")
    print(f"{count} inputs in {time.perf_counter() - start:.0f} s: {len(crashes)} escaped other than ModelFormatError")
    sys.exit(1 if crashes else 0)
