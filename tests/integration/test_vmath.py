"""The emitted C's own exp, expm1 and tanh (templates/c/_vmath.jinja) against mpmath, and
exp_neg (the sigmoid's and softplus's exp(-|x|)) against exp bit for bit.

They replace libm in the kernels so that element-wise loops vectorise; this is where their
accuracy is held: within 1 / 2 / 3 ulp of the exact value in either dtype,
special values exact, and the loops that call them vectorised at -O3 -march=native.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest

from symnn.render import render

CC = shutil.which("gcc") or shutil.which("cc") or "cc"
FUNCS = ("exp", "expm1", "tanh")
ULPS = {"exp": 1, "expm1": 2, "tanh": 3}  # the same in float64 and float32 (float32: at most 2 measured)


def _source(dtype: str) -> str:
    real = "float" if dtype == "float32" else "double"
    body = render("c/_vmath.jinja", prefix="t", vmath=[*FUNCS, "exp_neg"], real=real,
                  fsuf="f" if dtype == "float32" else "")
    f = "f" if real == "float" else ""
    calls = {fn: f"t__{fn}(x[i])" for fn in FUNCS} | {"sigmoid_exp": f"t__exp_neg(-fabs{f}(x[i]))",
                                                       "tanh_expm1": "tanh_expm1(x[i])",
                                                       "exp_neg": "t__exp_neg(x[i])"}
    loops = "".join(
        f"void loop_{f}(const {real} *restrict x, {real} *restrict y, long n)\n"
        f"{{\n    for (long i = 0; i < n; ++i) y[i] = {call};\n}}\n" for f, call in calls.items())
    # tanh's form through the general expm1, which tanh's own expm1 of a non-positive argument
    # must equal bit for bit
    via = (f"static {real} tanh_expm1({real} x)\n{{\n    const {real} t = t__expm1(-2*fabs{f}(x));\n"
           f"    return copysign{f}(-t/(t + 2), x);\n}}\n")
    return f"#include <math.h>\n#include <stdint.h>\n{body}\n{via}{loops}"


@pytest.fixture(scope="module", params=["float64", "float32"])
def lib(request, tmp_path_factory) -> tuple[str, ctypes.CDLL, str]:
    dtype = request.param
    tmp = tmp_path_factory.mktemp(f"vmath_{dtype}")
    (tmp / "v.c").write_text(_source(dtype))
    out = subprocess.run([CC, "-std=c99", "-O3", "-march=native", "-Wall", "-Wextra", "-pedantic", "-Werror",
                          "-Wdouble-promotion", "-fPIC", "-shared", "-fopt-info-vec-optimized",
                          str(tmp / "v.c"), "-o", str(tmp / "v.so"), "-lm"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return dtype, ctypes.CDLL(str(tmp / "v.so")), out.stderr


def _call(lib: ctypes.CDLL, name: str, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    getattr(lib, f"loop_{name}")(x.ctypes.data_as(ctypes.c_void_p), y.ctypes.data_as(ctypes.c_void_p),
                                 ctypes.c_long(x.size))
    return y


def _points(dtype: str) -> np.ndarray:
    """Where each range of the algorithms changes: near 0, the reduction boundaries, the
    expm1 branch switch, overflow and underflow thresholds, subnormals, plus random spread."""
    rng = np.random.default_rng(7)
    info = np.finfo(dtype)
    edges = [0.5 * np.log(2), np.log(2), 19.06, 22.0, 38.8, 56 * np.log(2), 57 * np.log(2), 60.0,
             88.72, 103.9, 708.39, 709.78, 744.4, 745.13, float(info.tiny), 1e-8, 1e-300]
    x = [rng.uniform(-1, 1, 400), rng.uniform(-45, 45, 400), rng.uniform(-750, 712, 300),
         np.exp(rng.uniform(-700, 0, 200)), rng.uniform(-1e-4, 1e-4, 100)]
    for e in edges:
        x.append(e * (1 + np.linspace(-1e-6, 1e-6, 5)))
    pts = np.concatenate(x)
    pts = np.concatenate([pts, -pts]).astype(dtype)
    return pts[np.isfinite(pts)]


def _exact(name: str, x: float) -> mp.mpf:
    return {"exp": mp.exp, "expm1": mp.expm1, "tanh": mp.tanh}[name](mp.mpf(float(x)))


def _ulp_error(got: float, exact: mp.mpf, dtype: str) -> float:
    info = np.finfo(dtype)
    with np.errstate(over="ignore"):
        ref = np.array(float(exact), dtype=dtype)  # rounded (within range of dtype) or inf / 0
    if np.isinf(ref):
        return 0.0 if np.isinf(got) and np.sign(got) == np.sign(ref) else np.inf
    spacing = max(float(np.spacing(np.abs(ref))), float(info.smallest_subnormal))
    return float(abs(mp.mpf(float(got)) - exact) / spacing)


@pytest.mark.parametrize("name", FUNCS)
def test_accuracy_against_mpmath(lib, name: str) -> None:
    dtype, so, _ = lib
    x = _points(dtype)
    got = _call(so, name, x)
    mp.mp.prec = 120
    errors = np.array([_ulp_error(g, _exact(name, v), dtype) for v, g in zip(x, got)])
    worst = int(np.argmax(errors))
    assert errors[worst] <= ULPS[name], (name, dtype, x[worst], got[worst], errors[worst])


def test_tanh_is_the_expm1_form_bit_for_bit(lib) -> None:
    """tanh takes expm1 of -2|x| through a form for non-positive arguments only (fewer
    instructions): the same bits as the general expm1's, NaN, zeros and infinities included."""
    dtype, so, _ = lib
    x = np.concatenate([_points(dtype), np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=dtype)])
    bits = np.uint32 if dtype == "float32" else np.uint64
    assert np.array_equal(_call(so, "tanh", x).view(bits), _call(so, "tanh_expm1", x).view(bits))


def test_exp_neg_is_exp_bit_for_bit(lib) -> None:
    """exp_neg, exp of a non-positive argument with fewer instructions (2**k in one step, no
    clamp above), gives exp's bits: over the ranges, subnormal results, the underflow to 0,
    zeros, -inf and NaN."""
    dtype, so, _ = lib
    info = np.finfo(dtype)
    edge = np.log(float(info.smallest_subnormal))
    x = np.concatenate([-np.abs(_points(dtype)), np.linspace(edge - 2, np.log(float(info.tiny)) + 2, 4001).astype(dtype),
                        np.array([0.0, -0.0, -np.inf, np.nan, -float(info.smallest_subnormal)], dtype=dtype)])
    bits = np.uint32 if dtype == "float32" else np.uint64
    got = _call(so, "exp_neg", x)
    assert (got[np.isfinite(x)] > 0).sum() > 3000  # the subnormal range reached, not all zeros
    assert np.array_equal(got.view(bits), _call(so, "exp", x).view(bits))


@pytest.mark.parametrize("name,special", [
    ("exp", [(0.0, 1.0), (-0.0, 1.0), (np.inf, np.inf), (-np.inf, 0.0), (1000.0, np.inf), (-1000.0, 0.0)]),
    ("expm1", [(0.0, 0.0), (-0.0, -0.0), (np.inf, np.inf), (-np.inf, -1.0), (1000.0, np.inf), (-1000.0, -1.0)]),
    ("tanh", [(0.0, 0.0), (-0.0, -0.0), (np.inf, 1.0), (-np.inf, -1.0), (25.0, 1.0), (-25.0, -1.0)]),
])
def test_special_values(lib, name: str, special: list[tuple[float, float]]) -> None:
    dtype, so, _ = lib
    x = np.array([v for v, _ in special] + [np.nan], dtype=dtype)
    got = _call(so, name, x)
    assert np.isnan(got[-1])
    for (v, want), g in zip(special, got):
        assert g == want and np.signbit(g) == np.signbit(want), (name, v, g)
    tiny = np.array([np.finfo(dtype).smallest_subnormal, -np.finfo(dtype).tiny], dtype=dtype)
    if name != "exp":  # odd functions and expm1 are the identity at the tiniest arguments
        assert np.array_equal(_call(so, name, tiny), tiny)


def _vectorised(remarks: str, name: str) -> set[int]:
    return {int(line.split(":")[1]) for line in remarks.splitlines()
            if "loop vectorized" in line and line.startswith(name)}


def test_loops_vectorise(lib) -> None:
    """The point of the functions: a loop over any of them vectorises at -O3 -march=native."""
    dtype, _, remarks = lib
    src = _source(dtype).splitlines()
    loop_lines = {i + 1 for i, line in enumerate(src) if "y[i] = t__" in line}
    assert len(loop_lines) == 5 and loop_lines <= _vectorised(remarks, str(Path(remarks.split(":")[0]))), \
        (loop_lines, remarks)


#: x86-64 targets without masked vector instructions (AVX2, SSE2's baseline is not vectorised
#: for float64 at all by GCC's cost model), where a branch in a loop keeps it scalar; the CPUs
#: of the AVX-512 machines hide that, so the test compiles for these whatever this CPU is
NO_MASKS = ("x86-64-v3",)


def _compile_remarks(src: Path, march: str) -> str:
    out = subprocess.run([CC, "-std=c99", "-O3", f"-march={march}", "-c", str(src), "-o", os.devnull,
                          "-fopt-info-vec-all"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stderr


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="an x86-64 target flag")
@pytest.mark.parametrize("march", NO_MASKS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_loops_vectorise_without_masked_vectors(tmp_path: Path, dtype: str, march: str) -> None:
    """The same loops, and the element-wise loops of an emitted kernel whose every activation
    chooses (relu, leaky_relu, elu, the sigmoid, softplus, a Huber loss), vectorise for AVX2:
    each choice is a bit-mask pick, not a branch GCC may not if-convert (-ftrapping-math)."""
    import symnn as sn
    from tests.catalogue import HUBER

    (tmp_path / "v.c").write_text(_source(dtype))
    remarks = _compile_remarks(tmp_path / "v.c", march)
    loop_lines = {i + 1 for i, line in enumerate(_source(dtype).splitlines()) if "y[i] = t__" in line}
    assert loop_lines <= _vectorised(remarks, str(tmp_path / "v.c")), remarks

    net = sn.Network([sn.Dense(3, 24, "relu"), sn.Dense(24, 24, "leaky_relu"), sn.Dense(24, 24, "elu"),
                      sn.Dense(24, 24, "sigmoid"), sn.Dense(24, 16, "softplus"), sn.Dense(16, 16, "identity")],
                     loss=HUBER, name="vm")
    sn.emit(net, tmp_path / "k", backend="c", dtype=dtype)
    src = tmp_path / "k" / "vm.c"
    remarks = _compile_remarks(src, march)
    lines = src.read_text().splitlines()
    # each loop nest whose body picks: the line of its inner `for`
    picking = {i + 1 for i, line in enumerate(lines) if line.lstrip().startswith("for (")
               and "vm__pick(" in "\n".join(lines[i:i + 6]) and "{" in line}
    assert len(picking) >= 6, picking
    missed = {int(m) for m in re.findall(rf"{re.escape(str(src))}:(\d+):\d+: missed: not vectorized: control flow",
                                         remarks)}
    assert not picking & missed, [lines[i - 1] for i in sorted(picking & missed)]


def test_emitted_kernels_use_them(tmp_path: Path) -> None:
    import symnn as sn

    net = sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 3, "elu"), sn.Dense(3, 2, "softmax")],
                     loss="cross_entropy", name="vm")
    sn.emit(net, tmp_path, backend="c")
    text = (tmp_path / "vm.c").read_text()
    assert "vm__tanh(" in text and "vm__expm1(" in text and "vm__exp(" in text
    code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    assert not re.findall(r"(?<![_\w])(?:exp|expm1|tanh)f?\(", code)
