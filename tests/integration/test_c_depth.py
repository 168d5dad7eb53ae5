"""Deep networks in C (issue 20, item 6): a network with a long kernel prints each distinct
statement once, as a helper its kernels call (backends/c/config.py, SHARED_HELPER_STATEMENTS),
so gcc's work grows linearly with depth (benchmarks/build_depth.py measures it; no timing is
asserted here). What these tests hold: such a network compiles clean, as C and as C++, keeps
no mutable state, and computes what the NumPy backend computes."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.backends.c.config import SHARED_HELPER_STATEMENTS
from symnn.driver import derive_program, emit_files
from symnn.lower import plan_kernel

pytestmark = pytest.mark.needs_cc

CC = shutil.which("gcc") or shutil.which("cc") or "cc"
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wshadow", "-Wvla",
          "-Wdouble-promotion", "-Wconversion"]
DEPTH = 60


def _deep(depth: int, name: str = "deep") -> sn.Network:
    return sn.Network([sn.Dense(4, 4, "tanh")] * depth + [sn.Dense(4, 1, "sigmoid")], loss="bce", name=name)


def test_a_deep_network_compiles_and_matches_numpy() -> None:
    net = _deep(DEPTH)
    assert len(plan_kernel(derive_program(net).program, "loss_and_grad").stmts) > SHARED_HELPER_STATEMENTS
    kc, kn = sn.compile(net, backend="c"), sn.compile(net, backend="numpy")
    assert "__stmt1(" in kc.source  # the long kernels call shared helpers
    rng = np.random.default_rng(0)
    params = net.init_params(seed=1)
    X, Y = rng.normal(size=(9, 4)), rng.uniform(0, 1, (9, 1))
    lc, gc = kc.loss_and_grad(params, X, Y)
    ln, gn = kn.loss_and_grad(params, X, Y)
    # the same formulas in the same order, apart from exp/tanh (a few ulp) and the pairwise sum:
    # rounding that grows with each of the layers a value goes through
    tol = 64 * (DEPTH + 1) * np.finfo(np.float64).eps
    assert abs(lc - ln) <= tol * abs(ln)
    for p in gn:
        assert np.max(np.abs(gc[p] - gn[p])) <= tol * np.max(np.abs(gn[p])), p
    assert np.max(np.abs(kc.forward(params, X) - kn.forward(params, X))) <= tol


def _emit(tmp: Path, net: sn.Network, dtype: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = emit_files(net, "c", dtype, optimizer=sn.Adam(lr=1e-2))
    for name, text in files.items():
        (tmp / name).write_text(text)
    return tmp / f"{net.name}.c"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_shared_helpers_compile_clean_as_c_and_cpp_with_no_mutable_state(tmp_path: Path, dtype: str) -> None:
    # dropout, an L2 term (scalar statements that stay in the kernel) and a train step
    net = sn.Network([sn.Dense(3, 5, "elu")] + [sn.Dense(5, 5, "softplus", dropout=0.1)] * 30
                     + [sn.Dense(5, 3, "softmax")], loss="cross_entropy", l2=1e-3, name="deepdrop")
    src = _emit(tmp_path, net, dtype)
    assert "__stmt1(" in src.read_text()
    obj = tmp_path / "m.o"
    out = subprocess.run([CC, *STRICT, "-O2", "-fPIC", "-c", str(src), "-o", str(obj)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is not None:
        out = subprocess.run([cxx, "-x", "c++", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", str(src)],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
    if shutil.which("objdump") is not None:  # the helpers' pointers are locals, not statics
        table = subprocess.run(["objdump", "-t", str(obj)], capture_output=True, text=True, timeout=60).stdout
        writable = [line for line in table.splitlines()
                    if re.search(r"\s(\.data|\.bss|\.data\.rel\.local)\s", line) and " O " in line]
        assert writable == [], writable
