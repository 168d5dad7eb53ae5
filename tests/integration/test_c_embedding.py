"""Shipping the emitted C into a program with no Python: the shipped example programs use
exported weights (from-torch, from-onnx, persist.export_c_params), every file builds as C++
too, main.c calls the whole API and refuses bad rows, and the example programs and
``symnn train`` read the same CSV (issue 17, items 5 and 7)."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.cli import main
from symnn.errors import ShapeError
from symnn.persist import Model, Standardizer, export_c_params
from tests.catalogue import SWISH

ROOT = Path(__file__).resolve().parents[2]
CC = shutil.which("gcc") or shutil.which("cc") or "cc"
CXX = shutil.which("g++")
X86 = platform.machine() in ("x86_64", "AMD64")
NEEDS_MAKE = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
NEEDS_CXX = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++)")
NEEDS_TORCH = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
NEEDS_ONNX = pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx not installed")
CXXFLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def _make(ship: Path, cxx: bool = False, target: str | None = None) -> None:
    """make in ship/, as C with the Makefile's flags or as C++ as its comment says (-march=native
    on x86, so a host with AVX-512 also runs the vector-extension tiles and shuffles); all the
    programs, or ``target`` alone (the trainer tests run only the trainer: each program compiles
    the model's .c again)."""
    cmd = ["make", "-C", str(ship), *([target] if target else [])]
    if cxx:
        native = ["-march=native"] if X86 else []
        cmd += [f"CC={CXX}", "CFLAGS=" + " ".join(["-x", "c++", *CXXFLAGS, "-O2", *native])]
    built = _run(cmd)
    assert built.returncode == 0, built.stdout + built.stderr


def _rows(X: np.ndarray, targets: np.ndarray | None = None, sep: str = " ") -> str:
    table = X if targets is None else np.column_stack([X, targets])
    return "".join(sep.join(repr(float(v)) for v in row) + "\n" for row in table)


def _numbers(text: str) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in text.splitlines()])


def _emit(net: sn.Network, ship: Path, dtype: str = "float64", optimizer: object = None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the user activation's non-smooth warnings
        sn.emit(net, ship, backend="c", dtype=dtype, optimizer=optimizer)


# -- item 5: the shipped program runs the exported weights ------------------------------------------
@NEEDS_TORCH
@NEEDS_MAKE
@pytest.mark.needs_cc
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_from_torch_ships_a_program_that_reproduces_the_model(tmp_path: Path, dtype: str) -> None:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3),
                                torch.nn.Softmax(dim=1)).to(getattr(torch, dtype))
    torch.save(model, tmp_path / "model.pt")  # a whole pickled module: the explicitly trusted path
    assert main(["from-torch", str(tmp_path / "model.pt"), "--trust-pickle", "--out", str(tmp_path / "c"),
                 "--dtype", dtype]) == 0
    _make(tmp_path / "c")
    X = np.random.default_rng(5).normal(size=(7, 4)).astype(dtype)
    out = _run([str(tmp_path / "c" / "torch_mlp_demo")], input=_rows(X, sep=", "))
    assert out.returncode == 0, out.stderr
    ref = model(torch.tensor(X)).detach().numpy().astype(np.float64)
    tol = 1e-12 if dtype == "float64" else 1e-5  # a few roundings of 6-term dot products and exp
    np.testing.assert_allclose(_numbers(out.stdout), ref, rtol=tol, atol=tol)


def _onnx_model():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w1, b1, w2, b2 = rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=(1, 5)), rng.normal(size=1)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Tanh", ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["z"], transB=1), helper.make_node("Sigmoid", ["z"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@NEEDS_ONNX
@NEEDS_MAKE
@pytest.mark.needs_cc
def test_from_onnx_ships_a_program_that_reproduces_the_model(tmp_path: Path) -> None:
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = _onnx_model()
    onnx.save(model, tmp_path / "m.onnx")
    assert main(["from-onnx", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "c")]) == 0
    _make(tmp_path / "c")
    X = np.random.default_rng(6).normal(size=(5, 3))
    out = _run([str(tmp_path / "c" / "onnx_mlp_demo")], input=_rows(X))
    assert out.returncode == 0, out.stderr
    (ref,) = ReferenceEvaluator(model).run(None, {"x": X})
    np.testing.assert_allclose(_numbers(out.stdout), ref, rtol=1e-12, atol=1e-15)


@NEEDS_MAKE
@pytest.mark.needs_cc
def test_exported_params_header_is_used_with_its_standardisation(tmp_path: Path) -> None:
    """sn.emit, then persist.export_c_params beside it: the demo runs those weights on raw inputs."""
    net = sn.Network([sn.Dense(3, 5, "tanh"), sn.Dense(5, 2, "identity")], loss="mse", name="reg")
    rng = np.random.default_rng(8)
    params = net.init_params(seed=8)
    std = Standardizer.fit(rng.normal(10.0, 3.0, size=(50, 3)))
    _emit(net, tmp_path / "c")
    export_c_params(tmp_path / "c", net, params, standardizer=std)
    _make(tmp_path / "c")
    X = rng.normal(10.0, 3.0, size=(4, 3))
    out = _run([str(tmp_path / "c" / "reg_demo")], input=_rows(X))
    assert out.returncode == 0, out.stderr
    ref = Model(net, params, std).predict(X)
    np.testing.assert_allclose(_numbers(out.stdout), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.needs_cc
def test_a_params_header_of_another_network_stops_the_build(tmp_path: Path) -> None:
    net = sn.Network([sn.Dense(2, 4, "tanh"), sn.Dense(4, 1, "sigmoid")], loss="bce", name="m")
    other = sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 1, "sigmoid")], loss="bce", name="m")
    _emit(net, tmp_path)
    export_c_params(tmp_path, other, other.init_params(seed=0))
    out = _run([CC, "-std=c99", "-fsyntax-only", str(tmp_path / "main.c")])
    assert out.returncode != 0 and "does not match" in out.stderr
    W1 = other.init_params(seed=0)["W1"]
    with pytest.raises(ShapeError, match="W1"):  # the right count of numbers in the wrong layout
        export_c_params(tmp_path, other, {**other.init_params(seed=0), "W1": W1.T})


# -- item 7: C++ -----------------------------------------------------------------------------------
CXX_CASES = {
    "softmax_adam": (lambda: sn.Network([sn.Dense(6, 20, "relu"), sn.Dense(20, 4, "softmax")],
                                        loss="cross_entropy", l2=1e-3, name="sm"), "float64", "adam"),
    "bce_sgd": (lambda: sn.Network([sn.Dense(3, 5, "elu"), sn.Dense(5, 1, "sigmoid")], loss="bce", name="bc"),
                "float32", "sgd"),
    "user_clipped": (lambda: sn.Network([sn.Dense(3, 5, SWISH), sn.Dense(5, 2, "identity")], loss="mse",
                                        name="us"), "float64", sn.Adam(clip_value=0.5, clip_norm=1.0)),
    "dropout": (lambda: sn.Network([sn.Dense(3, 24, "tanh", dropout=0.25), sn.Dense(24, 3, "softmax")],
                                   loss="cross_entropy", name="dr"), "float32", "rmsprop"),
}
CXX_OPTIONS = [[], ["-DSYMNN_BLAS"], ["-fopenmp"]] + ([["-mavx512f", "-O2"]] if X86 else [])


@NEEDS_CXX
@pytest.mark.needs_cc
@pytest.mark.parametrize("case", sorted(CXX_CASES))
def test_every_emitted_file_compiles_as_cpp(tmp_path: Path, case: str) -> None:
    """The kernels (the AVX-512 tile and shuffle paths, BLAS and OpenMP included), main.c and
    train_main.c, as C++17 with warnings as errors. The unoptimised builds stop after the front
    end (-fsyntax-only: its warnings are the ones -O0 gives, at a third of the time); the
    AVX-512 one is compiled at -O2, where GCC's flow warnings run."""
    build, dtype, optimizer = CXX_CASES[case]
    net = build()
    _emit(net, tmp_path, dtype, optimizer)
    sources = [str(tmp_path / f) for f in (f"{net.name}.c", "main.c", "train_main.c")]
    for option in CXX_OPTIONS:
        optimised = any(o.startswith("-O") for o in option)
        # the AVX-512 paths are in the kernels' file only: main.c and train_main.c have their
        # optimised C++ builds in test_cpp_build_of_main_matches_python and
        # test_c_trainer_trains_on_the_repository_csv_as_c_and_cpp
        files = sources[:1] if optimised else sources
        out = _run([CXX, "-x", "c++", *CXXFLAGS, *option, "-c" if optimised else "-fsyntax-only", *files],
                   cwd=tmp_path)
        assert out.returncode == 0, f"{option}:\n{out.stderr[-3000:]}"


@NEEDS_CXX
@NEEDS_MAKE
@pytest.mark.needs_cc
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cpp_build_of_main_matches_python(tmp_path: Path, dtype: str) -> None:
    """main.c and the kernels built as C++: forward, loss and loss_and_grad as NumPy gives them."""
    from symnn.demo import digits_network

    net = digits_network()
    _emit(net, tmp_path / "c", dtype)
    _make(tmp_path / "c", cxx=True)
    k = sn.compile(net, backend="numpy", dtype=dtype)
    params = net.init_params(seed=3, dtype=dtype)
    k.pack(params).tofile(tmp_path / "params.bin")
    rng = np.random.default_rng(3)
    X, y = rng.uniform(0, 16, size=(40, 64)).astype(dtype), np.arange(40) % 10
    out = _run([str(tmp_path / "c" / f"{net.name}_demo"), str(tmp_path / "params.bin")], input=_rows(X, y, ","))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    loss, grads = k.loss_and_grad(params, X, y)
    norms = {line.split()[1]: float(line.split()[2]) for line in lines if line.startswith("grad_norm ")}
    # float32: each value a few roundings from its float64 counterpart on either side, and the
    # gradient norm within RELIABILITY.md's float32 target of 1e-5
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(_numbers("\n".join(lines[:40])), k.forward(params, X), rtol=tol, atol=tol)
    assert lines[40].startswith("loss ") and float(lines[40].split()[1]) == pytest.approx(float(loss), rel=tol)
    assert norms.keys() == params.keys()
    for name, g in grads.items():
        assert norms[name] == pytest.approx(float(np.linalg.norm(g.astype(np.float64))), rel=tol), name


# -- item 7: main.c reads rows and says what is wrong -----------------------------------------------
@NEEDS_MAKE
@pytest.mark.needs_cc
def test_demo_reads_the_training_csv_and_refuses_bad_rows(tmp_path: Path) -> None:
    net = sn.Network([sn.Dense(3, 4, "relu"), sn.Dense(4, 3, "softmax")], loss="cross_entropy", name="tiny")
    _emit(net, tmp_path)
    _make(tmp_path)
    demo = str(tmp_path / "tiny_demo")
    X, y = np.random.default_rng(4).normal(size=(3, 3)), np.array([0, 2, 1])
    plain = _run([demo], input=_rows(X, y))
    assert plain.returncode == 0, plain.stderr
    assert [line.split()[0] for line in plain.stdout.splitlines()[3:]] == ["loss"] + ["grad_norm"] * 4
    # the CSV format of symnn train: column names, CRLF, commas with blanks, comments, blank lines
    csv = "x1,x2,x3,label\r\n# a comment\r\n" + _rows(X, y, ", ").replace("\n", "\r\n\r\n")
    assert _run([demo], input=csv).stdout == plain.stdout
    cases = {  # input -> what stderr must say; nothing is printed before the whole input is read
        _rows(X[:2], y[:2]) + "1.0 2.0\n": "line 3: 2 numbers",
        _rows(X, y) + _rows(X[:1]): "line 4: 3 numbers, expected 4 like the rows before",
        _rows(X[:1], y[:1]) + "1, 2, x, 0\n": "line 2: 1 of its 4 fields are not numbers",
        _rows(X[:1], np.array([1.5])): "line 1: the label 1.5 is not an integer",
        "": "no rows",
    }
    for text, message in cases.items():
        out = _run([demo], input=text)
        assert out.returncode != 0 and message in out.stderr and out.stdout == "", (text, out.stderr)
    out = _run([demo], input=_rows(X, np.array([0, 7, 1])))  # the kernel's own check, by status name
    assert out.returncode != 0 and "row 2: label 7" in out.stderr and "SYMNN_ERR_LABEL" in out.stderr


# -- item 7: the C trainer reads examples/xor.csv ---------------------------------------------------
@NEEDS_MAKE
@pytest.mark.needs_cc
def test_c_trainer_trains_on_the_repository_csv_as_c_and_cpp(tmp_path: Path) -> None:
    ship = tmp_path / "c"
    assert main(["emit", str(ROOT / "examples" / "xor.toml"), "--backend", "c", "--with-train-step",
                 "--out", str(ship)]) == 0
    shutil.copytree(ship, tmp_path / "cpp")
    _make(ship, target="xor_mlp_train")
    csv = ROOT / "examples" / "xor.csv"
    out = _run([str(ship / "xor_mlp_train"), str(csv), "600"])
    assert out.returncode == 0, out.stderr
    losses = [float(line.split()[3]) for line in out.stdout.splitlines() if line.startswith("epoch ")]
    assert losses[-1] < losses[0] / 10 and out.stdout.splitlines()[-1] == "accuracy 1.0000"
    # with column names and CRLF line ends: the same rows, so the same run
    (tmp_path / "xor_crlf.csv").write_bytes(b"x1,x2,y\r\n" + csv.read_bytes().replace(b"\n", b"\r\n"))
    assert _run([str(ship / "xor_mlp_train"), str(tmp_path / "xor_crlf.csv"), "600"]).stdout == out.stdout
    (tmp_path / "short.csv").write_text("0,0,0\n0,1\n")
    short = _run([str(ship / "xor_mlp_train"), str(tmp_path / "short.csv")])
    assert short.returncode != 0 and "line 2: 2 numbers, expected 3" in short.stderr
    if CXX is not None:  # train_step built as C++
        _make(tmp_path / "cpp", cxx=True, target="xor_mlp_train")
        cpp = _run([str(tmp_path / "cpp" / "xor_mlp_train"), str(csv), "600"])
        assert cpp.returncode == 0 and cpp.stdout.splitlines()[-1] == "accuracy 1.0000", cpp.stdout + cpp.stderr


# -- item 7: symnn train takes a CSV with column names ----------------------------------------------
def _train_output(data: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["train", str(ROOT / "examples" / "xor.toml"), "--data", str(data), "--epochs", "3",
                 "--backend", "numpy", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_symnn_train_detects_a_header_row_or_takes_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = (ROOT / "examples" / "xor.csv").read_text()
    code, plain, _ = _train_output(ROOT / "examples" / "xor.csv", capsys)
    assert code == 0 and "on 4 rows" in plain
    (tmp_path / "names.csv").write_text("# xor\nx1, x2, y\n" + body)
    assert _train_output(tmp_path / "names.csv", capsys) == (0, plain, "")
    # a first line mixing names and numbers is not guessed at: an error naming --header, or skipped with it
    (tmp_path / "mixed.csv").write_text("x1,2,y\n" + body)
    code, _, err = _train_output(tmp_path / "mixed.csv", capsys)
    assert code == 2 and "--header" in err
    assert _train_output(tmp_path / "mixed.csv", capsys, "--header") == (0, plain, "")
    (tmp_path / "bad.csv").write_text("x1,x2,y\n" + body + "1,oops,0\n")
    code, _, err = _train_output(tmp_path / "bad.csv", capsys)
    assert code == 2 and "not a numeric CSV" in err and "oops" in err


# -- issue 22: a CNN trains on the device, with no Python --------------------------------------------
@NEEDS_MAKE
@pytest.mark.needs_cc
def test_the_c_trainer_trains_the_cnn_example_on_digit_images(tmp_path: Path) -> None:
    """examples/cnn_digits.toml emitted with its train step, built with the Makefile and run on
    the digits as rows of 64 pixels (one 1x8x8 image each, row-major) with their labels: the
    emitted convolutions, pooling and their pullbacks train it (the loss falls tenfold and the
    training accuracy passes 0.95 in 4 epochs on 600 images) with no Python in the loop; the
    same program built as C++ (with -march=native: other roundings) trains it as well."""
    from symnn import datasets

    ship = tmp_path / "c"
    assert main(["emit", str(ROOT / "examples" / "cnn_digits.toml"), "--backend", "c", "--with-train-step",
                 "--out", str(ship)]) == 0
    shutil.copytree(ship, tmp_path / "cpp")
    _make(ship, target="cnn_digits_train")
    X, y = datasets.load_digits()
    csv = tmp_path / "digits.csv"
    csv.write_text(_rows(X[:600] / 16.0, y[:600], sep=","))
    out = _run([str(ship / "cnn_digits_train"), str(csv), "4"])
    assert out.returncode == 0, out.stderr
    losses = [float(line.split()[3]) for line in out.stdout.splitlines() if line.startswith("epoch ")]
    accuracy = float(out.stdout.splitlines()[-1].split()[1])
    assert losses[-1] < losses[0] / 10 and accuracy > 0.95, out.stdout
    if CXX is not None:
        _make(tmp_path / "cpp", cxx=True, target="cnn_digits_train")
        cpp = _run([str(tmp_path / "cpp" / "cnn_digits_train"), str(csv), "4"])
        assert cpp.returncode == 0 and float(cpp.stdout.splitlines()[-1].split()[1]) > 0.95, cpp.stdout


@NEEDS_MAKE
@pytest.mark.needs_cc
def test_the_c_trainer_trains_the_embedding_example_on_token_ids(tmp_path: Path) -> None:
    """examples/embedding_bag.toml (an index input read by an embedding) trained by the emitted
    train_main.c from a CSV of token ids and labels, no Python in the loop: the label is the
    first token mod 3, which the embedding's rows must learn (loss down tenfold, training
    accuracy above 0.95 in 30 epochs); an id outside the vocabulary stops the run with the
    kernel's SYMNN_ERR_INDEX named, not a wild read."""
    ship = tmp_path / "c"
    assert main(["emit", str(ROOT / "examples" / "embedding_bag.toml"), "--backend", "c", "--with-train-step",
                 "--out", str(ship)]) == 0
    _make(ship, target="embedding_bag_train")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, (400, 6))
    csv = tmp_path / "tokens.csv"
    csv.write_text(_rows(ids, ids[:, 0] % 3, sep=","))
    out = _run([str(ship / "embedding_bag_train"), str(csv), "30"])
    assert out.returncode == 0, out.stderr
    losses = [float(line.split()[3]) for line in out.stdout.splitlines() if line.startswith("epoch ")]
    assert losses[-1] < losses[0] / 10 and float(out.stdout.splitlines()[-1].split()[1]) > 0.95, out.stdout
    (tmp_path / "bad.csv").write_text("1,2,3,4,5,77,0\n")
    bad = _run([str(ship / "embedding_bag_train"), str(tmp_path / "bad.csv"), "2"])
    assert bad.returncode != 0 and "SYMNN_ERR_INDEX" in bad.stderr
