"""Emitted C on its own, with no Python in the loop: warnings, sanitizers, valgrind, symbol
hygiene, the example program and Makefile, large layers on a small stack (RELIABILITY.md C1-C16)."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.demo import digits_network
from symnn.driver import _train_program, derive_program
from symnn.backends.c.emit import emit_c, emit_c_example, emit_c_test_harness
from tests.catalogue import CATALOGUE, cnn_bn, recurrent
from tests.strategies import random_network

pytestmark = pytest.mark.needs_cc

CC = shutil.which("gcc") or shutil.which("cc") or "cc"
X86 = platform.machine() in ("x86_64", "AMD64")
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wshadow", "-Wvla",
          "-Wdouble-promotion", "-Wconversion"]
SANITIZE = ["-fsanitize=address,undefined,float-cast-overflow,float-divide-by-zero",
            "-fno-sanitize-recover=all"]
#: the sanitized harness builds: -O0, where the instrumentation sees every access as written and
#: the build takes a third of -O1's time (2.0 -> 0.6 s for a small network, 6.3 -> 2.6 s for
#: cnn_bn on a Zen 3 core); test_harness_under_asan_ubsan builds one network at -O1 as well
SAN_BUILD = ["-O0", "-g", *SANITIZE]
#: the network whose sanitized harness is also built optimised
SAN_OPTIMISED = ("digits", "float64")
NETS = {**CATALOGUE, "digits": None,
        "dropout": sn.Network([sn.Dense(3, 6, "relu", dropout=0.25), sn.Dense(6, 4, "tanh", dropout=0.5),
                               sn.Dense(4, 3, "softmax")], loss="cross_entropy", name="dropnet"),
        # two inputs and two outputs (packed X and Y), LayerNorm, concat and a residual add
        "two_heads": sn.load_spec(Path(__file__).resolve().parents[2] / "examples" / "two_heads.toml").network,
        # an index input read by an Embedding: the harness feeds valid token ids, so the gradient
        # check and the sanitizers run through the gather and its scatter, and bad ids are refused
        "embedding_bag": sn.load_spec(Path(__file__).resolve().parents[2] / "examples" / "embedding_bag.toml").network,
        # every spatial layer and a batch norm: a strided, dilated, grouped convolution, both
        # poolings with padding, BatchNorm2d and BatchNorm1d (the train step writes their buffers)
        "cnn_bn": None,
        # the three recurrent layers stacked (the GRU bidirectional), their loops forwards and
        # backwards through time
        "recurrent": None}


def _recurrent_states() -> sn.Network:
    """The other half of the recurrent cases: an LSTM (1 layer, every step's state) from initial
    states h0, c0 given as inputs (packed into X beside the sequence), feeding a tanh RNN
    (1 layer, last state) and a GRU without biases (2 layers, last state): two MSE outputs."""
    x, h0, c0 = sn.Input(3, 2, name="x"), sn.Input(3, name="h0"), sn.Input(3, name="c0")
    h = sn.LSTM(2, 3, return_sequences=True, name="lstm")(x, h0, c0)
    r = sn.RNN(3, 2, name="rnn")(h)
    g = sn.GRU(3, 2, num_layers=2, bias=False, name="gru")(h)
    return sn.Network(inputs=[x, h0, c0], outputs=[r, g], loss=["mse", "mse"], name="recst")


#: RELIABILITY.md: the sanitizers run on the catalogue plus random architectures (100 nightly;
#: 8 here, which keeps the README's test command near its time on 2 cores)
RANDOM = {f"random{i}": random_network(1000 + i, f"random{i}") for i in range(8)}


def _ids_and_features() -> sn.Network:
    """Real features and token ids side by side in X (the ids in columns 3..6)."""
    feats, ids = sn.Input(3, name="feats"), sn.Input(4, name="ids", indices=True)
    h = sn.concat([sn.Dense(3, 5, "tanh")(feats), sn.Flatten()(sn.Embedding(11, 2, padding_idx=1)(ids))])
    return sn.Network(inputs=[feats, ids], outputs=sn.Dense(13, 2, "sigmoid")(h), loss="bce", name="mixed_ids")


def _tagger() -> sn.Network:
    """Sequence outputs: token ids into an Embedding and an LSTM whose every step's state is
    normalised (LayerNorm per step) and tagged (a softmax over 3 classes per step, cross
    entropy), beside a per-step sigmoid output (BCE): targets one row per step of each output,
    the row statistics of the N*T rows of logits."""
    ids = sn.Input(4, name="ids", indices=True)
    h = sn.LSTM(3, 5, return_sequences=True, name="lstm")(sn.Embedding(9, 3, name="emb")(ids))
    h = sn.LayerNorm(5, name="ln")(h)
    tags = sn.Dense(5, 3, "softmax", name="tags")(h)
    flags = sn.Dense(5, 2, "sigmoid", name="flags")(h)
    return sn.Network(inputs=ids, outputs=[tags, flags], loss=["cross_entropy", "bce"], name="tagger")


def _any_length() -> sn.Network:
    """Sequences whose length is given at each call (the harness's: 5 steps), three inputs of
    that length side by side in X: token ids into an Embedding and a bidirectional 2-layer GRU
    with dropout between its layers, tagged per step (a softmax, cross entropy); a sequence of
    features and its mask into a masked LSTM whose last state is regressed (MSE), and into a
    masked GRU whose every step is (MSE over the masked steps: the mask in X, columns 3T..4T, is
    the loss's, and a batch of padding only is SYMNN_ERR_EMPTY)."""
    ids, x, m = sn.Input(None, name="ids", indices=True), sn.Input(None, 2, name="x"), sn.Input(None, name="m")
    h = sn.GRU(3, 3, num_layers=2, bidirectional=True, dropout=0.25, return_sequences=True,
               name="gru")(sn.Embedding(9, 3, name="emb")(ids))
    tags = sn.Dense(6, 3, "softmax", name="tags")(h)
    last = sn.Dense(4, 1, name="last")(sn.LSTM(2, 4, masked=True, name="lstm")(x, m))
    steps = sn.Dense(3, 2, name="steps")(sn.GRU(2, 3, masked=True, return_sequences=True, name="gru2")(x, m))
    return sn.Network(inputs=[ids, x, m], outputs=[tags, last, steps], loss=["cross_entropy", "mse", "mse"],
                      name="any_length")


def _step_tagger() -> sn.Network:
    """One sequence output of classes, its length given at each call: the *_labels kernels take a
    label per step (n*steps int32, -100 a padded step), the harness checks them against the
    one-hot kernels and refuses a bad one."""
    ids = sn.Input(None, name="ids", indices=True)
    h = sn.GRU(3, 4, return_sequences=True, name="gru")(sn.Embedding(7, 3, name="emb")(ids))
    return sn.Network(inputs=ids, outputs=sn.Dense(4, 3, "softmax", name="tags")(h), loss="cross_entropy",
                      name="step_tagger")


def _winograd() -> sn.Network:
    """3x3 convolutions of stride 1 between 8 channels (Winograd's form: both forwards and the
    second's pullback to its input, with its transforms' scratch) over a 3x4 image, whose last
    row of 2x2 output blocks lies half outside; then the 2x2 max pool that tiles the image but
    for its last row (the pullback's path of its own, that row zeroed apart). Small: the
    harness's central differences evaluate it twice a weight. (A read of scratch no one wrote
    shows in tests/unit/test_c_spatial.py, whose work buffers start as NaN.)"""
    x = sn.Input(8, 3, 4)
    h = sn.Conv2d(8, 8, 3, padding=1, activation="tanh", name="c1")(x)  # smooth: float32's central differences
    h = sn.MaxPool2d(2, name="pool")(sn.Conv2d(8, 8, 3, padding=1, activation="tanh", name="c2")(h))
    return sn.Network(inputs=x, outputs=sn.Dense(16, 3, "softmax", name="fc")(sn.Flatten()(h)),
                      loss="cross_entropy", name="wino")


#: networks only the sanitizer harness runs (one dtype)
HARNESS_ONLY = {"mixed_ids": _ids_and_features, "recurrent_states": _recurrent_states, "tagger": _tagger,
                "any_length": _any_length, "step_tagger": _step_tagger, "winograd": _winograd}


#: the catalogue networks whose float32 build is compiled and sanitized too: one of each kind of
#: code the dtype changes (convolution and batch norm, loops, index inputs, several outputs,
#: dropout masks, the exp/log/erf helpers); the float64 build of every network is. The others
#: differ from one of these only by an activation whose float32 helper these already reach.
FLOAT32_NETS = ("cnn_bn", "digits", "dropout", "embedding_bag", "recurrent", "sigmoid_bce_elu",
                "softmax_ce_gelu_l2", "two_heads")
BOTH_DTYPES = [(name, "float64") for name in sorted(NETS)] + [(name, "float32") for name in FLOAT32_NETS]


def _net(name: str) -> sn.Network:
    if name in HARNESS_ONLY:
        return HARNESS_ONLY[name]()
    if name == "cnn_bn":
        return cnn_bn()
    if name == "recurrent":
        return recurrent()
    return digits_network() if name == "digits" else NETS[name] if name in NETS else RANDOM[name]


def _emit(tmp: Path, name: str, dtype: str, harness: bool = False, example: bool = False):
    net = _net(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = sn.Adam(lr=1e-2) if harness else None  # the harness also exercises train_step
        result = emit_c(net, derive_program(net).program, dtype, opt, _train_program(net, opt))
    files = dict(result.files)
    if harness:
        files["test_main.c"] = emit_c_test_harness(net, result, dtype)
    if example:
        files.update(emit_c_example(net, result, dtype))
    tmp.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (tmp / fname).write_text(text)
    return result


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


#: the networks compiled strict-clean at -O3 (where GCC's flow warnings run) and run there: one
#: of each kind of code. The kinds whose code is theirs alone (convolution, pooling and batch
#: norm; a loop over time) in both dtypes; the dense kinds, whose products and maps are one
#: code with one type name, each in one dtype, half of them in each (every network's model file
#: is compiled strict in both dtypes at -O0 by its sanitized harness below)
_O3_BOTH = ("cnn_bn", "recurrent")
C12_O3 = [(name, dtype) for name in FLOAT32_NETS for dtype in ("float64", "float32")
          if name in _O3_BOTH or dtype == ("float64", "float32")[sorted(set(FLOAT32_NETS) - set(_O3_BOTH)).index(name) % 2]]


@pytest.mark.parametrize("name,dtype", C12_O3)
def test_C12_compiles_clean_at_O0_and_O3_and_the_O3_build_runs_the_harness(tmp_path: Path, name: str,
                                                                          dtype: str) -> None:
    """The example program strict-clean at -O0 and -O3; the model file strict-clean at -O3 and,
    so built, linked with the harness and run: the gradient against central differences and
    every bad-argument case on the optimised build users ship (the suite's in-process builds are
    -O1: tests/conftest.py), one network of each kind of code in both dtypes."""
    r = _emit(tmp_path, name, dtype, example=True)
    compilers = [CC] + ([shutil.which("clang")] if shutil.which("clang") else [])
    for cc in compilers:
        for opt, sources in (("-O0", ("main.c",)), ("-O3", ("main.c",) if cc == CC else (f"{r.prefix}.c", "main.c"))):
            for src in sources:
                out = _run([cc, *STRICT, opt, "-c", str(tmp_path / src), "-o", str(tmp_path / "x.o")])
                assert out.returncode == 0, f"{cc} {opt} {src}:\n{out.stderr}"
    values = _harness(tmp_path / "o3", name, dtype, ["-O3", "-march=native"] if X86 else ["-O3"])
    assert float(values["gradcheck_rel"]) <= (1e-6 if dtype == "float64" else 1e-2)


def test_C12_an_rnn_pullback_loop_declares_only_the_steps_it_reads(tmp_path: Path) -> None:
    """An RNN's pullback loop passes the carries it started from on whole (the recurrent weight's
    gradient reads them outside the loop): its body never reads their step, which the loop then
    neither copies nor declares (an unused variable is an error under -Werror)."""
    x = sn.Input(3, 2, name="x")
    net = sn.Network(inputs=x, outputs=sn.RNN(2, 3, name="rec")(x), loss="mse", name="rnn_view")
    r = emit_c(net, derive_program(net).program, "float64")
    for fname, text in r.files.items():
        (tmp_path / fname).write_text(text)
    out = _run([CC, *STRICT, "-O0", "-c", str(tmp_path / f"{r.prefix}.c"), "-o", str(tmp_path / "x.o")])
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("option", [
    ["-fopenmp"], ["-DSYMNN_BLAS"], ["-DSYMNN_BLAS", "-DSYMNN_BLAS_INT=long long"],
    pytest.param(["-mavx512f"], marks=pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                                          reason="the 6-row tiles are for x86 AVX-512"))])
def test_C12_optional_paths_compile_clean(tmp_path: Path, option: list[str], dtype: str) -> None:
    # the OpenMP, BLAS and AVX-512 (6-row tile) paths exist only under their macros:
    # strict-clean when switched on too
    r = _emit(tmp_path, "digits", dtype)
    out = _run([CC, *STRICT, "-O2", *option, "-c", str(tmp_path / f"{r.prefix}.c"), "-o", str(tmp_path / "x.o")])
    assert out.returncode == 0, f"{option}:\n{out.stderr}"


def test_C11_header_compiles_as_cpp(tmp_path: Path) -> None:
    if not shutil.which("g++"):
        pytest.skip("no C++ compiler")
    r = _emit(tmp_path, "digits", "float32")
    (tmp_path / "t.cpp").write_text(f'#include "{r.prefix}.h"\nint main() {{ size_t w = 0; '
                                    f"return {r.prefix}_work_size(1, &w) == SYMNN_OK ? 0 : 1; }}\n")
    out = _run(["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only",
                str(tmp_path / "t.cpp")])
    assert out.returncode == 0, out.stderr


def test_C13_fast_math_is_refused(tmp_path: Path) -> None:
    r = _emit(tmp_path, "xor", "float64")
    out = _run([CC, "-O2", "-ffast-math", "-c", str(tmp_path / f"{r.prefix}.c"), "-o", str(tmp_path / "x.o")])
    assert out.returncode != 0 and "ffast-math" in out.stderr


def _harness(tmp: Path, name: str, dtype: str, flags: list[str], runner: list[str] = ()) -> dict:
    r = _emit(tmp, name, dtype, harness=True)
    exe = tmp / "harness"
    build = _run([CC, *STRICT, *flags, "-o", str(exe), str(tmp / "test_main.c"), str(tmp / f"{r.prefix}.c"), "-lm"])
    assert build.returncode == 0, build.stderr
    out = _run([*runner, str(exe)])
    assert out.returncode == 0, f"rc={out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}"
    assert "FAIL" not in out.stdout
    values = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert values["failures"] == "0"
    return values


@pytest.mark.parametrize("name,dtype", BOTH_DTYPES)
def test_harness_under_asan_ubsan(tmp_path: Path, name: str, dtype: str) -> None:
    """Gradient by central differences in C, and C1-C4/C9/C16 with outputs untouched: 0 reports;
    the model file compiled strict (every network's, both dtypes where listed)."""
    builds = [SAN_BUILD] + ([["-O1", "-g", *SANITIZE]] if (name, dtype) == SAN_OPTIMISED else [])
    for i, flags in enumerate(builds):
        values = _harness(tmp_path / str(i), name, dtype, flags)
        tol = 1e-6 if dtype == "float64" else 1e-2  # float32 differences are only ~3 digits good
        assert float(values["gradcheck_rel"]) <= tol


def test_harness_with_ids_beside_features_under_asan_ubsan(tmp_path: Path) -> None:
    """Real features first, then token ids: the index columns start past 0 and the NaN check
    has a real column to use."""
    values = _harness(tmp_path, "mixed_ids", "float64", SAN_BUILD)
    assert float(values["gradcheck_rel"]) <= 1e-6


def test_recurrent_harness_with_initial_states_and_two_outputs_under_asan_ubsan(tmp_path: Path) -> None:
    """Recurrent layers from initial states given as inputs, under two losses: every entry point
    of the loops' kernels, their bad arguments refused, 0 sanitizer reports (both dtypes of the
    loops run in the "recurrent" case above)."""
    values = _harness(tmp_path, "recurrent_states", "float64", SAN_BUILD)
    assert float(values["gradcheck_rel"]) <= 1e-6


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sequence_outputs_harness_under_asan_ubsan(tmp_path: Path, dtype: str) -> None:
    """A tagger (a softmax and a sigmoid output per step of an LSTM over token ids): the gradient
    against central differences in C, every bad argument refused, 0 sanitizer reports."""
    values = _harness(tmp_path, "tagger", dtype, SAN_BUILD)
    assert float(values["gradcheck_rel"]) <= (1e-6 if dtype == "float64" else 1e-2)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_run_time_length_harness_under_asan_ubsan(tmp_path: Path, dtype: str) -> None:
    """Sequences of a length given at each call (``steps``): the gradient against central
    differences in C, the bad arguments (steps = 0 too) refused, 0 sanitizer reports."""
    values = _harness(tmp_path, "any_length", dtype, SAN_BUILD)
    assert float(values["gradcheck_rel"]) <= (1e-6 if dtype == "float64" else 1e-2)


def test_labels_per_step_harness_under_asan_ubsan(tmp_path: Path) -> None:
    """A tagger's *_labels kernels (a label per step of a run-time length): equal to the one-hot
    kernels, bad labels refused with their index, 0 sanitizer reports."""
    values = _harness(tmp_path, "step_tagger", "float64", SAN_BUILD)
    assert float(values["gradcheck_rel"]) <= 1e-6


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_winograd_harness_under_asan_ubsan(tmp_path: Path, dtype: str) -> None:
    """Winograd's convolutions and the tiling max pool's pullback: the gradient against central
    differences in C, every bad argument refused, 0 sanitizer reports."""
    values = _harness(tmp_path, "winograd", dtype, SAN_BUILD)
    assert "conv_grad_input_winograd(&geom" in (tmp_path / "wino.c").read_text()
    assert float(values["gradcheck_rel"]) <= (1e-6 if dtype == "float64" else 1e-2)


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_architectures_under_asan_ubsan(tmp_path: Path, name: str) -> None:
    dtype = "float64" if int(name[6:]) % 2 == 0 else "float32"
    values = _harness(tmp_path, name, dtype, SAN_BUILD)
    assert float(values["gradcheck_rel"]) <= (1e-6 if dtype == "float64" else 1e-2)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed (.ci/run installs it)")
@pytest.mark.parametrize("name", list(FLOAT32_NETS) + sorted(RANDOM)[:3])
def test_harness_under_valgrind(tmp_path: Path, name: str) -> None:
    """Memcheck on one network of each kind of code (its allocations, loops and index inputs;
    the other catalogue networks differ from these by an activation's arithmetic only) and on
    three random ones; ASan runs every network and every random one."""
    values = _harness(tmp_path, name, "float64", ["-O0", "-g"],
                      ["valgrind", "-q", "--leak-check=full", "--errors-for-leak-kinds=all", "--error-exitcode=42"])
    assert float(values["gradcheck_rel"]) <= 1e-6


def _symbols(obj: Path) -> list[tuple[str, str, str]]:
    """(section, binding, name) of every symbol objdump lists."""
    out = _run(["objdump", "-t", str(obj)]).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ (.{7}) (\S+)\s+[0-9a-f]+\s+(\S+)$", line)
        if m:
            flags, section, name = m.groups()
            rows.append((section, "g" if "g" in flags[:2] else "l", name))
    return rows


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump not installed")
@pytest.mark.parametrize("pic", [False, True])
def test_C10_C11_no_mutable_state_and_prefixed_symbols(tmp_path: Path, pic: bool) -> None:
    r = _emit(tmp_path, "digits", "float64")
    obj = tmp_path / "m.o"
    flags = ["-fPIC"] if pic else []
    assert _run([CC, "-std=c99", "-O2", *flags, "-c", str(tmp_path / f"{r.prefix}.c"), "-o", str(obj)]).returncode == 0
    syms = _symbols(obj)
    exported = [n for sec, bind, n in syms if bind == "g" and sec != "*UND*"]
    assert exported and all(n.startswith(r.prefix + "_") for n in exported), exported
    writable = [(sec, n) for sec, _, n in syms if sec in (".data", ".bss") and not n.startswith(".")]
    assert writable == [], writable


def test_C11_two_models_link_into_one_program(tmp_path: Path) -> None:
    a = _emit(tmp_path, "xor", "float64")
    net_b = sn.Network([sn.Dense(3, 2, "relu"), sn.Dense(2, 2, "softmax")], loss="cross_entropy", name="other")
    b = emit_c(net_b, derive_program(net_b).program, "float32")
    for fname, text in b.files.items():
        (tmp_path / fname).write_text(text)
    (tmp_path / "both.c").write_text(
        f'#include "{a.prefix}.h"\n#include "other.h"\n'
        "int main(void) { size_t wa = 0, wb = 0;\n"
        f"  return {a.prefix}_work_size(4, &wa) + other_work_size(4, &wb) + (wa > 0 && wb > 0 ? 0 : 1); }}\n")
    exe = tmp_path / "both"
    out = _run([CC, *STRICT, "-o", str(exe), str(tmp_path / "both.c"), str(tmp_path / f"{a.prefix}.c"),
                str(tmp_path / "other.c"), "-lm"])
    assert out.returncode == 0, out.stderr
    assert _run([str(exe)]).returncode == 0


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_example_program_matches_python(tmp_path: Path, dtype: str) -> None:
    """sn.emit(backend="c") ships main.c + Makefile; the program reproduces Kernel.forward."""
    net = digits_network()
    paths = sn.emit(net, tmp_path / "ship", backend="c", dtype=dtype)
    assert sorted(p.name for p in paths) == sorted(["Makefile", "main.c", f"{net.name}.c", f"{net.name}.h"])
    built = _run(["make", "-C", str(tmp_path / "ship")])
    assert built.returncode == 0, built.stdout + built.stderr
    k = sn.compile(net, dtype=dtype)
    p = net.init_params(seed=7, dtype=dtype)
    k.pack(p).tofile(tmp_path / "params.bin")
    X = np.random.default_rng(7).uniform(0, 16, size=(70, 64)).astype(dtype)  # 70 rows: two batches
    text = "\n".join(" ".join(repr(float(v)) for v in row) for row in X) + "\n"
    out = _run([str(tmp_path / "ship" / f"{net.name}_demo"), str(tmp_path / "params.bin")], input=text)
    assert out.returncode == 0, out.stderr
    got = np.array([[float(v) for v in line.split()] for line in out.stdout.splitlines()])
    ref = k.forward(p, X).astype(np.float64)
    tol = 1e-14 if dtype == "float64" else 1e-6
    assert got.shape == ref.shape and np.abs(got - ref).max() <= tol * np.abs(ref).max()


def test_C15_large_layers_run_on_a_1MiB_stack(tmp_path: Path) -> None:
    net = sn.Network([sn.Dense(4096, 4096, "relu"), sn.Dense(4096, 10, "softmax")],
                     loss="cross_entropy", name="wide")
    r = emit_c(net, derive_program(net).program, "float64")
    for fname, text in r.files.items():
        (tmp_path / fname).write_text(text)
    (tmp_path / "big.c").write_text("""#include <stdio.h>
#include <stdlib.h>
#include "wide.h"
int main(void) {
    const ptrdiff_t n = 3;
    size_t wl = 0;
    wide_real *p = calloc(WIDE_N_PARAMS, sizeof *p), *g = malloc(WIDE_N_PARAMS*sizeof *g);
    wide_real *x = calloc((size_t)n*WIDE_N_IN, sizeof *x), loss = 0, *w;
    int32_t y[3] = {1, 2, 3};
    if (wide_work_size(n, &wl) != SYMNN_OK) return 3;
    w = malloc(wl*sizeof *w);
    if (!p || !g || !x || !w) return 4;
    for (ptrdiff_t e = 0; e < WIDE_N_PARAMS; e += 7) p[e] = 0.001;
    for (ptrdiff_t e = 0; e < n*WIDE_N_IN; ++e) x[e] = 1.0;
    if (wide_loss_and_grad_labels(p, x, y, n, &loss, g, NULL, w, wl) != SYMNN_OK) return 5;
    printf("%.17g\\n", loss);
    free(p); free(g); free(x); free(w);
    return loss > 0 ? 0 : 6;
}
""")
    exe = tmp_path / "big"
    out = _run([CC, "-std=c99", "-O2", "-o", str(exe), str(tmp_path / "big.c"), str(tmp_path / "wide.c"), "-lm"])
    assert out.returncode == 0, out.stderr
    ran = _run(["bash", "-c", f"ulimit -s 1024 && {exe}"])
    assert ran.returncode == 0, (ran.returncode, ran.stderr)
    # the source does not grow with the width (no unrolling): only the sizes' digits differ
    narrow = sn.Network([sn.Dense(40, 40, "relu"), sn.Dense(40, 10, "softmax")], loss="cross_entropy", name="wide")
    assert len(r.source) - len(emit_c(narrow, derive_program(narrow).program, "float64").source) < 1_000


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opt", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "clipped",
                                 "dropout"])
def test_C12_train_step_compiles_clean(tmp_path: Path, opt: str, dtype: str) -> None:
    # one softmax layer under cross-entropy (train_step and train_step_labels, a weight and a
    # bias): the optimiser's update is the same code whatever the layers below it, whose
    # kernels the tests above compile strict-clean, so the smallest network compiles it fastest
    net = sn.Network([sn.Dense(3, 3, "softmax")], loss="cross_entropy", name="steps")
    if opt == "dropout":
        net = sn.Network([sn.Dense(3, 5, "relu", dropout=0.2), sn.Dense(5, 3, "softmax")], loss="cross_entropy")
    optimizer = sn.Adam(clip_value=0.5, clip_norm=1.0) if opt == "clipped" else "adam" if opt == "dropout" else opt
    files = sn.driver.emit_files(net, backend="c", dtype=dtype, optimizer=optimizer)
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    out = _run([CC, *STRICT, "-O3", "-c", str(tmp_path / f"{net.name}.c"), "-o", str(tmp_path / "x.o")])
    assert out.returncode == 0, out.stderr
