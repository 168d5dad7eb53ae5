"""Fuzz the ONNX importer, ``symnn.from_onnx`` (RELIABILITY.md U4).

    python fuzz/fuzz_onnx.py [N] [SEED]     # default 20,000 inputs, seed 0: about a minute

Inputs: small ONNX MLPs (Gemm, MatMul + Add, activations, external data), then either their
bytes mutated (flips, deletions, insertions, splices) or their protobuf mutated field by field
(dims, element types, attribute types and values, op types and domains, input and output lists,
hostile names, external-data locations). Each input is written to a file in a scratch folder and
read with ``from_onnx(path)``. The only exceptions allowed out are symnn's own
(:class:`~symnn.errors.SymnnError`); anything else is printed with its input and the script
exits 1. Needs the optional ``onnx`` package. tests/security/test_sec_importers.py runs a
short, seeded version; fuzz/atheris_onnx.py is the coverage-guided harness.
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from symnn.errors import SymnnError  # noqa: E402
from symnn.interop import from_onnx  # noqa: E402

#: strings a hostile file may put where the importer expects a name
HOSTILE = ["", "x", "w1", "*/ system(\"id\"); /*", '"""\nimport os\n"""', "a\nb", "a\0b", "\u2028", "\\input{/etc/passwd}",
           "../../etc/passwd", "/etc/passwd", "n" * 5000, "Gemm", "ai.onnx", "com.microsoft", "é"]


def seed_models() -> list:
    """Three valid models: MatMul + Add + Relu + Gemm + Softmax, Gemm + Sigmoid with float32
    weights, and Gemm + LeakyRelu + Gemm with a FLOAT16 bias and a float_data weight."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 3])
    models = []
    inits = [numpy_helper.from_array(rng.normal(size=(3, 4)), "w1"), numpy_helper.from_array(rng.normal(size=4), "b1"),
             numpy_helper.from_array(rng.normal(size=(2, 4)), "w2"), numpy_helper.from_array(rng.normal(size=2), "b2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"]), helper.make_node("Add", ["m", "b1"], ["h"]),
             helper.make_node("Relu", ["h"], ["a"]), helper.make_node("Gemm", ["a", "w2", "b2"], ["z"], transB=1),
             helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    models.append((nodes, inits, x))
    inits = [numpy_helper.from_array(rng.normal(size=(3, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(1, 1)).astype(np.float32), "c")]
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["z"]), helper.make_node("Sigmoid", ["z"], ["y"])]
    models.append((nodes, inits, x))
    inits = [helper.make_tensor("w1", TensorProto.FLOAT, [2, 3], rng.normal(size=6).tolist()),
             numpy_helper.from_array(rng.normal(size=2).astype(np.float16), "b1"),
             numpy_helper.from_array(rng.normal(size=(1, 2)), "w2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("LeakyRelu", ["h"], ["a"], alpha=0.1),
             helper.make_node("Gemm", ["a", "w2"], ["y"], transB=1)]
    models.append((nodes, inits, x))
    out = []
    for nodes, inits, x in models:
        y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.DOUBLE, None)
        graph = helper.make_graph(nodes, "mlp", [x], [y], inits)
        out.append(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    return out


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    chars = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4])):  # one change often keeps the protobuf parseable
        op, pos = rng.random(), rng.randrange(len(chars) + 1)
        if op < 0.35 and chars:
            chars[min(pos, len(chars) - 1)] = rng.randrange(256)
        elif op < 0.55 and chars:
            del chars[pos:pos + rng.randint(1, 16)]
        elif op < 0.8:
            chars[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            a, b = sorted(rng.randrange(len(chars) + 1) for _ in range(2))
            chars[pos:pos] = chars[a:b]
    return bytes(chars)


def mutate_proto(model, rng: random.Random):
    """One to three field-level changes that a byte flip would rarely make."""
    from onnx import AttributeProto, TensorProto, helper

    m = type(model)()
    m.CopyFrom(model)
    graph = m.graph
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(12)
        node = rng.choice(graph.node) if graph.node else None
        tensor = rng.choice(graph.initializer) if graph.initializer else None
        if op == 0 and tensor is not None:  # dims that do not match the data, or huge
            tensor.dims[:] = rng.choice([[10**6, 10**6], [-1, 3], [3], [1, 3, 2], [], [2**62, 2], [0, 3]])
        elif op == 1 and tensor is not None:
            tensor.data_type = rng.choice([0, 2, 6, 7, 8, 9, 13, 14, 16, 99])
        elif op == 2 and tensor is not None:  # external data somewhere else
            tensor.data_location = TensorProto.EXTERNAL
            del tensor.external_data[:]
            loc = rng.choice(["../w.bin", "/etc/passwd", "w.bin", "sub/../../w.bin", "", "a\0b", "C:w.bin", "link.bin"])
            tensor.external_data.add(key="location", value=loc)
            if rng.random() < 0.5:
                tensor.external_data.add(key=rng.choice(["offset", "length", "bogus"]),
                                         value=rng.choice(["0", "-8", "x", "99999999999999"]))
        elif op == 3 and node is not None:
            node.op_type = rng.choice(["Gemm", "MatMul", "Add", "Relu", "Softmax", "Conv", "If", "Elu", ""])
        elif op == 4 and node is not None:
            node.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "ai.onnx"])
        elif op == 5 and node is not None:  # an attribute of the wrong type, unknown, or repeated
            name = rng.choice(["alpha", "beta", "transA", "transB", "axis", "bogus"])
            kind = rng.choice(["f", "i", "s", "ints"])
            value = {"f": rng.choice([1.0, float("nan"), 1e308, 0.5]), "i": rng.choice([0, 1, 2, -1, 2**62]),
                     "s": "1", "ints": [1, 2]}[kind]
            node.attribute.append(helper.make_attribute(name, value))
        elif op == 6 and node is not None:
            del node.input[rng.randrange(len(node.input) + 1):]
        elif op == 7 and node is not None:
            node.output.append("extra") if rng.random() < 0.5 else node.ClearField("output")
        elif op == 8:  # hostile names anywhere
            target = rng.choice(["node", "graph", "init", "input", "output"])
            value = rng.choice(HOSTILE)
            if target == "node" and node is not None:
                node.name = value
            elif target == "graph":
                graph.name = value
            elif target == "init" and tensor is not None:
                tensor.name = value
            elif target == "input" and node is not None and node.input:
                node.input[rng.randrange(len(node.input))] = value
            elif target == "output" and node is not None and node.output:
                node.output[0] = value
        elif op == 9 and tensor is not None:  # raw data of the wrong length, or none, or typed fields
            if rng.random() < 0.3:
                tensor.ClearField("raw_data")
                tensor.int32_data.extend(rng.choice([0, 15360, 65535, 70000, -1]) for _ in range(rng.randrange(5)))
                tensor.float_data.extend([1.0] * rng.randrange(5))
            else:
                tensor.raw_data = tensor.raw_data[: rng.randrange(len(tensor.raw_data) + 1)] + b"\0" * rng.randrange(9)
        elif op == 10 and tensor is not None:  # non-finite values (no more than 64: dims may be huge)
            count = min(max(math.prod(tensor.dims), 1), 64)
            tensor.raw_data = np.full(count, np.inf).astype(np.float64 if tensor.data_type == 11 else np.float32).tobytes()
        elif op == 11 and graph.node:  # reorder, duplicate or drop a node
            nodes = list(graph.node)
            rng.choice([lambda: rng.shuffle(nodes), lambda: nodes.append(rng.choice(nodes)),
                        lambda: nodes.pop(rng.randrange(len(nodes)))])()
            del graph.node[:]
            graph.node.extend(nodes)
    if rng.random() < 0.1 and graph.node:
        graph.node[-1].attribute.append(AttributeProto(name="axis", type=AttributeProto.GRAPH))
    return m


def prepare_folder(folder: Path) -> None:
    """External-data targets: a good file, a link to it, and a file one level up."""
    (folder / "m").mkdir(exist_ok=True)
    (folder / "m" / "w.bin").write_bytes(np.arange(64, dtype=np.float64).tobytes())
    (folder / "w.bin").write_bytes(np.arange(64, dtype=np.float64).tobytes())
    link = folder / "m" / "link.bin"
    if not link.is_symlink():
        link.symlink_to(folder / "w.bin")


def run(n: int, seed: int = 0) -> list[tuple[str, BaseException]]:
    """Feed ``n`` inputs to ``from_onnx``; the (input description, exception) pairs that were
    not a :class:`SymnnError`."""
    rng = random.Random(seed)
    seeds = seed_models()
    blobs = [m.SerializeToString() for m in seeds]
    crashes = []
    with tempfile.TemporaryDirectory(prefix="symnn-fuzz-onnx-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(tmp)
        prepare_folder(folder)
        path = folder / "m" / "model.onnx"
        for i in range(n):
            if i % 2:
                data = mutate_bytes(rng.choice(blobs), rng)
            else:
                data = mutate_proto(rng.choice(seeds), rng).SerializeToString()
            path.write_bytes(data)
            try:
                from_onnx(path, name="fuzzed")
            except SymnnError:
                pass
            except Exception as exc:  # noqa: BLE001 - anything else is the finding
                crashes.append((data[:300].hex(), exc))
    return crashes


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    start = time.perf_counter()
    found = run(count, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    for text, exc in found[:20]:
        print(f"{type(exc).__name__}: {exc}\n  input (hex): {text[:200]}")
    print(f"{count} inputs in {time.perf_counter() - start:.0f} s: {len(found)} escaped other than SymnnError")
    sys.exit(1 if found else 0)
