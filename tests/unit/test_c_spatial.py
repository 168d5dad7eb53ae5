"""The C backend's spatial statements (issue 22): convolution, its two pullbacks, the
per-channel bias and sum, max and average pooling and their pullbacks, each lowered on its own
(``backends/c/config.py``), printed by its macro and ``templates/c/_spatial.jinja``, compiled
with the strict warnings of the emitted files and run, against the interpreter
(:func:`symnn.interpret.evaluate`, whose rules are ``backends/numpy/spatial.py``) on geometries
hypothesis draws: groups, strides, dilations, asymmetric padding, ceil mode, padding left out
of an average, ties, NaN and -inf in a max pool's windows, batches of one to a few samples; and an
embedding's gather and its scatter-add pullback (repeated indices, a padding row).

Each op is one kernel of one translation unit per example (float64 and float32 side by side,
two prefixes), called through ctypes with its arrays; the work buffer starts as NaN, so a part
of it read before it is written shows, and every buffer has a guard after its end that must
come back untouched.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from symnn import interpret, ir, naming
from symnn.backends.c import config as c_config
from symnn.backends.c import gemm
from symnn.backends.c.emit import spatial_context
from symnn.backends.c.kinds import GEMM_CALLS, SPATIAL_PARTS, CKind
from symnn.lower import plan_kernel
from symnn.program import Program
from symnn.render import environment
from tests.strategies import examples

pytestmark = pytest.mark.needs_cc

N = naming.N
CC = shutil.which("gcc") or shutil.which("cc") or "cc"
#: the emitted files' strict set (tests/integration/test_c_standalone.py), at the build's -O3
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wshadow", "-Wvla",
         "-Wdouble-promotion", "-Wconversion", "-O3", "-march=native", "-fno-fast-math", "-fPIC",
         "-shared"]
#: reals after each buffer's end that the kernel must leave alone
GUARD = 64
#: per dtype, the error allowed relative to the largest magnitude of the interpreter's result.
#: Both sides sum the same products in other orders (blocked gemm, BLAS); with terms of random
#: sign the rounding grows like the square root of their count (at most 576 here), unit
#: roundoff 1.1e-16 / 6e-8 times ~25: about 3e-15 / 1.5e-6, with margin
TOL = {"float64": 1e-13, "float32": 1e-5}

#: the file's head, then per dtype (its own prefix) the multiply-add macro, the gemm and spatial
#: parts of model.c.jinja and each case's kernel as an exported function of (arrays, n, out, work)
_HEAD = "#include <math.h>\n#include <stddef.h>\n#include <stdint.h>\n#define SYMNN_RESTRICT restrict\n"
_UNIT = """\
{% import "c/_macros.jinja" as m with context %}
typedef {{ ctype }} {{ real }};
{% include "c/_madd.jinja" %}
{% include "c/_gemm.jinja" %}
{% include "c/_spatial.jinja" %}
{% for h in shared %}

typedef void {{ h.name }}_fn({{ h.params | join(", ") }});
static void {{ h.name }}({{ h.params | join(", ") }})
{
    {{ m[h.ctx.kind](h.ctx) | trim | indent(4) }}
}
{% endfor %}

static ptrdiff_t {{ prefix }}__zmax(ptrdiff_t a, ptrdiff_t b)
{
    return a > b ? a : b;
}
{% for k in kernels %}

void {{ k.name }}(const {{ real }} *const *args, ptrdiff_t n, {{ real }} *out, {{ real }} *work);
void {{ k.name }}(const {{ real }} *const *args, ptrdiff_t n, {{ real }} *out, {{ real }} *work)
{
    (void){{ prefix }}__zmax;
{% for line in k.offset_lines %}
    {{ line }}
{% endfor %}
{% for leaf in k.leaves %}
    const {{ real }} *{{ leaf }} = args[{{ loop.index0 }}];
{% endfor %}
{% for p in k.pointers %}
    {{ "const " if p.const }}{{ real }} *{{ p.name }} = {{ p.init }};
{% endfor %}
{% for h in k.calls %}
    {{ h }}_fn *volatile const {{ h }}_p = {{ h }};
{% endfor %}
    (void)n;
    (void)out;
    (void)work;
{% for s in k.stmts %}
    {{ m[s.kind](s) | trim | indent(4) }}
{% endfor %}
}
{% endfor %}
"""


Case = tuple[ir.ConvGeometry, ir.PoolGeometry, ir.PoolGeometry]  # conv, max pool, average pool
VOCAB = 4  # an embedding's rows: few, so that a batch's indices repeat


def _ops(cases: list[Case]) -> dict[str, ir.Node]:
    """One graph per spatial op and case, its operands leaves (the batch axis first), named
    after the case (X0, W0, ...; the poolings' inputs P0, A0, filled with ties)."""
    ops = {}
    for i, (conv, maxp, avgp) in enumerate(cases):
        X = ir.param(f"X{i}", (N, conv.in_size))
        W = ir.param(f"W{i}", (conv.o, conv.weight_cols))
        G = ir.param(f"G{i}", (N, conv.out_size))
        b = ir.param(f"b{i}", (conv.o,))
        P, Q = ir.param(f"P{i}", (N, maxp.in_size)), ir.param(f"Q{i}", (N, maxp.out_size))
        A, B = ir.param(f"A{i}", (N, avgp.in_size)), ir.param(f"B{i}", (N, avgp.out_size))
        positions = conv.ho * conv.wo
        # an embedding of VOCAB rows of kw, read by kh + 1 indices per sample (I: integers, see
        # _values), with no padding row, row 0 or row 1
        t, d, pad = conv.kh + 1, conv.kw, i % 3 - 1
        idx = ir.param(f"I{i}", (N, t))
        ops |= {
            f"gather{i}": ir.gather(idx, ir.param(f"E{i}", (VOCAB, d)), pad),
            f"gather_grad{i}": ir.gather_grad(idx, ir.param(f"H{i}", (N, t * d)), VOCAB, d, pad),
            f"conv{i}": ir.conv(X, W, conv),
            f"conv_grad_input{i}": ir.conv_grad_input(G, W, conv),
            f"conv_grad_weight{i}": ir.conv_grad_weight(X, G, conv),
            f"channel_bias{i}": ir.channel_bias(G, b, conv.o, positions),
            f"channel_sum{i}": ir.channel_sum(G, conv.o, positions),
            f"channel_sum_vector{i}": ir.channel_sum(ir.param(f"v{i}", (conv.o * positions,)), conv.o, positions),
            f"channel_expand{i}": ir.channel_expand(b, conv.o, positions),
            f"max_pool{i}": ir.max_pool(P, maxp),
            f"max_pool_grad{i}": ir.max_pool_grad(P, Q, maxp),
            f"avg_pool{i}": ir.avg_pool(A, avgp),
            f"avg_pool_grad{i}": ir.avg_pool_grad(B, avgp),
        }
    return ops


def _leaves(out: ir.Node) -> list[ir.Node]:
    return [x for x in ir.toposort([out]) if x.op in (ir.Op.INPUT, ir.Op.PARAM)]


def _unit(ops: dict[str, ir.Node], dtype: str) -> dict:
    """The template context of one dtype's kernels, lowered as emit_c lowers a kernel: each op
    twice, in the kernel's body and (``_shared``) as the call of a shared helper, the form of
    long kernels."""
    prefix = "s64" if dtype == "float64" else "s32"
    printer = c_config.CConfig(dtype=dtype, prefix=prefix).printer()
    layouts = {}
    for name, out in ops.items():
        plan = plan_kernel(Program({"yhat": out}), "forward")
        shapes = {x.arg: x.shape for x in _leaves(out)}
        for shared in (False, True):
            layouts[name, shared] = c_config.lower_kernel(plan, printer, shapes, {}, {"yhat": "out"},
                                                          shared=shared)
    helpers = c_config.share_helpers(list(layouts.values()), prefix)
    kinds = {ctx["kind"] for lay in layouts.values() for ctx in lay.stmts}
    kinds |= {h["ctx"]["kind"] for h in helpers}
    kernels = [{"name": f"{prefix}_{name}" + ("_shared" if shared else ""), "op": name,
                "leaves": [x.arg for x in _leaves(ops[name])], "pointers": lay.pointers,
                "stmts": lay.stmts, "calls": lay.calls, "work": lay.work,
                "offset_lines": lay.offset_lines}
               for (name, shared), lay in layouts.items()]
    fsuf = "f" if dtype == "float32" else ""
    return {"prefix": prefix, "real": f"{prefix}_real", "ctype": "float" if fsuf else "double",
            "lit0": "0.0" + fsuf.upper(), "lit1": "1.0" + fsuf.upper(), "fsuf": fsuf, "kernels": kernels,
            "shared": helpers,
            "gemm": gemm.plan(dtype, [GEMM_CALLS[k] for k in kinds if k in GEMM_CALLS]),
            **spatial_context(kinds)}


def _build(ops: dict[str, ir.Node], tmp: Path) -> tuple[ctypes.CDLL, dict[str, dict]]:
    units = {dtype: _unit(ops, dtype) for dtype in ("float64", "float32")}
    template = environment().from_string(_UNIT)
    source = _HEAD + "".join(template.render(template_name="test", codegen_version="test", **unit)
                             for unit in units.values())
    (tmp / "spatial.c").write_text(source)
    lib = tmp / "spatial.so"
    out = subprocess.run([CC, *FLAGS, "-o", str(lib), str(tmp / "spatial.c"), "-lm"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return ctypes.CDLL(str(lib)), units


def _guarded(values: np.ndarray | None, size: int, dtype: str) -> np.ndarray:
    """A buffer of ``size`` reals (the values, else NaN) and GUARD reals of a marker after it."""
    buf = np.full(size + GUARD, np.nan, dtype=dtype)
    buf[size:] = 12345.0
    if values is not None:
        buf[:size] = values.ravel()
    return buf


def _run(lib: ctypes.CDLL, kernel: dict, out: ir.Node, values: dict[str, np.ndarray], n: int,
         dtype: str) -> np.ndarray:
    """Call one kernel on ``values`` (cast to ``dtype``) and return its output."""
    ptr = ctypes.POINTER(ctypes.c_float if dtype == "float32" else ctypes.c_double)
    args = [_guarded(values[leaf], values[leaf].size, dtype) for leaf in kernel["leaves"]]
    shape = tuple(n if d == N else int(d) for d in out.shape)
    size = int(np.prod(shape))
    need = kernel["work"].at(n)
    work = _guarded(None, need, dtype)
    result = _guarded(None, size, dtype)
    table = (ptr * len(args))(*(x.ctypes.data_as(ptr) for x in args))
    fn = getattr(lib, kernel["name"])
    fn.restype = None
    fn(table, ctypes.c_ssize_t(n), result.ctypes.data_as(ptr), work.ctypes.data_as(ptr))
    for buf, used in [(result, size), (work, need)] + [(x, x.size - GUARD) for x in args]:
        assert (buf[used:] == 12345.0).all(), f"{kernel['name']} wrote past a buffer's end"
    return result[:size].reshape(shape)


def _values(ops: dict[str, ir.Node], n: int, seed: int) -> dict[str, np.ndarray]:
    """Normal values for the convolutions' operands; small integers for the poolings' inputs
    (so that windows hold ties), with a NaN and a -inf in a max pool's input now and then."""
    rng = np.random.default_rng(seed)
    leaves = {x.arg: x for out in ops.values() for x in _leaves(out)}
    values = {"X": np.zeros((n, 1))}  # the interpreter's batch size
    for name, x in leaves.items():
        shape = tuple(n if d == N else int(d) for d in x.shape)
        ties = name[0] in "PA"
        values[name] = rng.integers(-3, 4, shape).astype(float) if ties else rng.normal(size=shape)
        if name[0] == "I":  # an embedding's indices: in range, as the public entry points ensure
            values[name] = rng.integers(0, VOCAB, shape).astype(float)
        for special in (np.nan, -np.inf) if name[0] == "P" else ():  # NaN wins; -inf ties with padding
            if rng.random() < 0.5:
                values[name].flat[rng.integers(values[name].size)] = special
    return values


def _check(got: np.ndarray, want: np.ndarray, dtype: str, what: str) -> None:
    """NaN and infinities where the interpreter has them, the finite values within TOL of the
    interpreter's, relative to their largest magnitude."""
    assert got.shape == want.shape, what
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite], err_msg=what)
    scale = float(np.max(np.abs(want[finite]), initial=0.0))
    err = float(np.max(np.abs(got[finite] - want[finite]), initial=0.0))
    assert err <= TOL[dtype] * scale, f"{what}: error {err:.3g} at scale {scale:.3g}"


@st.composite
def conv_geometries(draw: st.DrawFn) -> ir.ConvGeometry:
    groups = draw(st.integers(1, 3))
    kh, kw, dh, dw = (draw(st.integers(1, 3)) for _ in range(4))
    h = draw(st.integers(max(1, dh * (kh - 1) - 1), 8))
    w = draw(st.integers(max(1, dw * (kw - 1) - 1), 8))
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    # at least one output position: pad what the dilated kernel would miss
    pads[1] += max(0, dh * (kh - 1) + 1 - h - pads[0] - pads[1])
    pads[3] += max(0, dw * (kw - 1) + 1 - w - pads[2] - pads[3])
    # output channels per group: fewer than a register tile's rows (in place) or not (gemm)
    per_group = draw(st.sampled_from([1, 2, 4, 5]))
    return ir.ConvGeometry(groups * draw(st.integers(1, 3)), h, w, groups * per_group, kh, kw, sh,
                           sw, *pads, dh, dw, groups)


@st.composite
def pool_geometries(draw: st.DrawFn, dilation: bool) -> ir.PoolGeometry:
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    h = draw(st.integers(dh * (kh - 1) + 1, 9))
    w = draw(st.integers(dw * (kw - 1) + 1, 9))
    # padding at most half the window (PyTorch's rule), on each side on its own
    pads = [draw(st.integers(0, k // 2)) for k in (kh, kh, kw, kw)]
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ceil, include_pad = draw(st.booleans()), draw(st.booleans())
    return ir.PoolGeometry(draw(st.integers(1, 3)), h, w, kh, kw, sh, sw, *pads, dh, dw, ceil, include_pad)


#: geometries every run takes, beside those drawn: (conv, max pool, average pool)
SHARP = [
    # groups, stride 2, dilation 2, asymmetric padding (3 output channels per group: the
    # products in place); pooling in ceil mode, dilated, the padding not counted in the average
    (ir.ConvGeometry(4, 7, 6, 6, 3, 2, 2, 1, 2, 0, 1, 2, 2, 1, 2),
     ir.PoolGeometry(2, 7, 8, 3, 2, 2, 3, 1, 0, 0, 1, 2, 2, True),
     ir.PoolGeometry(3, 7, 5, 3, 2, 2, 2, 1, 0, 1, 1, ceil_mode=True, count_include_pad=False)),
    # a 1x1 kernel (no im2col) in 2 groups of 4 output channels (the gemm helpers)
    (ir.ConvGeometry(4, 5, 3, 8, 1, 1, groups=2),
     ir.PoolGeometry(3, 4, 4, 2, 2, 2, 2),
     ir.PoolGeometry(1, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1)),
    # depthwise: one output channel per group, dot products over 30 positions (8 at a time)
    (ir.ConvGeometry(4, 6, 5, 4, 3, 3, pt=1, pb=1, pl=1, pr=1, groups=4),
     ir.PoolGeometry(2, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, ceil_mode=True),
     ir.PoolGeometry(2, 6, 6, 2, 2, 2, 2, ceil_mode=True)),
    # 9 taps, 32 output channels (padding 1 all round, im2col in runs, as the next two): the
    # weight pullback's product has fewer columns than a tile
    # (computed as its transpose); 72 taps at 12 positions: the input pullback's likewise;
    # 576 taps: the products over them in two chunks of k
    (ir.ConvGeometry(1, 5, 4, 32, 3, 3, pt=1, pb=1, pl=1, pr=1),
     ir.PoolGeometry(1, 2, 2, 2, 2, 1, 1), ir.PoolGeometry(1, 3, 3, 3, 3, 3, 3)),
    (ir.ConvGeometry(8, 4, 3, 4, 3, 3, pt=1, pb=1, pl=1, pr=1),
     ir.PoolGeometry(1, 2, 2, 2, 2, 1, 1), ir.PoolGeometry(1, 3, 3, 3, 3, 3, 3)),
    (ir.ConvGeometry(64, 3, 3, 4, 3, 3, pt=1, pb=1, pl=1, pr=1),
     ir.PoolGeometry(1, 2, 2, 2, 2, 1, 1), ir.PoolGeometry(1, 3, 3, 3, 3, 3, 3)),
    # 3x3 of stride 1 over 8 channels and more: Winograd's F(2x2, 3x3), the convolution (8 -> 16)
    # and its pullback to the input (16 -> 8) over odd heights and widths (a last tile half
    # outside), asymmetric and no padding, 2 of padding (the pullback's correlation from row 0),
    # 3 samples in one block of tiles and a block of one (n = 1, 2, 3)
    (ir.ConvGeometry(8, 5, 7, 16, 3, 3, pt=2, pb=0, pl=0, pr=1),
     ir.PoolGeometry(1, 2, 2, 2, 2, 1, 1), ir.PoolGeometry(1, 3, 3, 3, 3, 3, 3)),
    (ir.ConvGeometry(9, 9, 4, 8, 3, 3),
     ir.PoolGeometry(1, 2, 2, 2, 2, 1, 1), ir.PoolGeometry(1, 3, 3, 3, 3, 3, 3)),
    (ir.ConvGeometry(16, 12, 12, 8, 3, 3, pt=1, pb=2, pl=2, pr=1),
     ir.PoolGeometry(1, 2, 2, 2, 2, 1, 1), ir.PoolGeometry(1, 3, 3, 3, 3, 3, 3)),
    # "same" padding of an even kernel (one more below) and of a dilated one: im2col's and
    # col2im's runs over whole images
    (ir.ConvGeometry(2, 6, 7, 4, 2, 3, pt=0, pb=1, pl=2, pr=2, dh=1, dw=2),
     ir.PoolGeometry(1, 2, 2, 2, 2, 1, 1), ir.PoolGeometry(1, 3, 3, 3, 3, 3, 3)),
]


@st.composite
def winograd_geometries(draw: st.DrawFn) -> ir.ConvGeometry:
    """3x3 of stride 1 over 8 channels and more, one group: what takes Winograd's F(2x2, 3x3)
    (its forward and its pullback to the input), any size from 1x1 and padding 0 to 2 each side."""
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    pt, pb, pl, pr = (draw(st.integers(0, 2)) for _ in range(4))
    pb += max(0, 3 - h - pt - pb)  # at least one output row and column
    pr += max(0, 3 - w - pl - pr)
    return ir.ConvGeometry(draw(st.integers(8, 12)), h, w, draw(st.integers(8, 12)), 3, 3, pt=pt, pb=pb, pl=pl, pr=pr)


#: a third of the drawn convolutions Winograd's (each of its kernels inlines the transforms: compile time)
CASES = st.tuples(st.one_of(conv_geometries(), conv_geometries(), winograd_geometries()),
                  pool_geometries(dilation=True), pool_geometries(dilation=False))


#: Each example is one compiler run (most of this test's time), so the drawn geometries come
#: nine to an example: hypothesis's first example is its simplest (every geometry 1x1, stride
#: 1), the second nine drawn ones, as many as three examples of three gave, in one run instead
#: of three. Each unit runs at every batch size 1 to 3.
@settings(max_examples=examples(2), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(CASES, min_size=9, max_size=9), seed=st.integers(0, 2**16))
@example(cases=SHARP, seed=0)
def test_each_spatial_op_in_c_computes_what_the_interpreter_does(
        tmp_path_factory: pytest.TempPathFactory, cases: list[Case], seed: int) -> None:
    ops = _ops(cases)
    lib, units = _build(ops, tmp_path_factory.mktemp("spatial"))
    for n in (1, 2, 3):
        _check_units(lib, units, ops, n, seed + n)


def _check_units(lib: ctypes.CDLL, units: dict[str, dict], ops: dict[str, ir.Node], n: int,
                 seed: int) -> None:
    """Every kernel of both dtypes' units on one batch of ``n`` samples against the interpreter."""
    values = _values(ops, n, seed)
    for dtype, unit in units.items():
        cast = {k: v.astype(dtype) for k, v in values.items()}
        wide = {k: v.astype(np.float64) for k, v in cast.items()}
        for kernel in unit["kernels"]:
            out = ops[kernel["op"]]
            want = np.asarray(interpret.evaluate({"yhat": out}, wide)["yhat"], dtype=np.float64)
            got = _run(lib, kernel, out, cast, n, dtype)
            _check(got.astype(np.float64), want, dtype, f"{kernel['name']} n={n} {out.arg}")


def test_the_sharp_cases_lower_to_every_spatial_kind() -> None:
    """SHARP reaches both forms of each convolution (the gemm helpers and direct loops) and every
    other spatial kind, in both dtypes."""
    for dtype in ("float64", "float32"):
        unit = _unit(_ops(SHARP), dtype)
        kinds = {ctx["kind"] for k in unit["kernels"] for ctx in k["stmts"]}
        kinds |= {h["ctx"]["kind"] for h in unit["shared"]}
        assert set(SPATIAL_PARTS) <= kinds, set(SPATIAL_PARTS) - kinds
        # the weight's pullback three ways: as DW = G @ cols.T (9 taps, 32 output channels),
        # with fewer output channels than taps as its transpose (a scratch DW.T, the fourth), and
        # for a group of few weights summed directly (the partial sums, last)
        grads = [ctx["scratch"] for k in unit["kernels"] for ctx in k["stmts"] if ctx["kind"] is CKind.CONV_GRAD_WEIGHT]
        assert {(sc[3] != "NULL", sc[4] != "NULL") for sc in grads} == {(False, False), (True, False), (False, True)}


def test_a_max_pool_whose_windows_tile_the_plane_takes_nan_and_ties_as_the_interpreter(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Windows that tile the plane (stride = kernel, no padding: the usual 2x2 pooling) take a
    path of their own in C: NaN at any tap of a window, not only its first, is the window's
    maximum; -inf and ties are maxima like any value; rows and columns no window reads (7 rows
    of 3-row windows) are left out; each output against the interpreter, both dtypes. The
    pullback's path of its own too: the gradient at the window's first maximum (its NaN), zero at
    every other tap and in the rows and columns no window reads (the buffers start as NaN), a -0
    gradient +0 as the sum into zeros gives it."""
    geoms = [ir.PoolGeometry(2, 4, 6, 2, 2, 2, 2), ir.PoolGeometry(1, 7, 5, 3, 2, 3, 2)]
    ops = {f"max_pool{i}": ir.max_pool(ir.param(f"P{i}", (N, g.in_size)), g) for i, g in enumerate(geoms)}
    ops |= {f"max_pool_grad{i}": ir.max_pool_grad(ir.param(f"P{i}", (N, g.in_size)), ir.param(f"Q{i}", (N, g.out_size)), g)
            for i, g in enumerate(geoms)}
    lib, units = _build(ops, tmp_path_factory.mktemp("tiles"))
    rng = np.random.default_rng(5)
    n = 2
    values = {"X": np.zeros((n, 1))}
    for i, g in enumerate(geoms):
        p = rng.integers(-3, 4, (n, g.c, g.h, g.w)).astype(float)
        p[0, 0, 0, 1] = np.nan  # the second tap of the first window
        p[0, 0, 1, 1] = np.nan  # and its last: the window is NaN whichever comes first
        p[1, 0, g.kh, g.kw + 1] = np.nan  # the last-but-one tap of another window
        p[1, -1, 0, 0] = -np.inf
        values[f"P{i}"] = p.reshape(n, -1)
        q = rng.normal(size=(n, g.out_size))
        q[0, 0] = -0.0  # the window of the NaN taps
        values[f"Q{i}"] = q
    for dtype, unit in units.items():
        for kernel in unit["kernels"]:
            out = ops[kernel["op"]]
            cast = {k: v.astype(dtype) for k, v in values.items()}
            want = np.asarray(interpret.evaluate({"yhat": out}, {k: v.astype(np.float64) for k, v in cast.items()})["yhat"])
            got = _run(lib, kernel, out, cast, n, dtype).astype(np.float64)
            if kernel["op"].startswith("max_pool_grad"):
                g = geoms[int(kernel["op"][-1])]
                planes = got.reshape(n, g.c, g.h, g.w)
                assert np.isfinite(got).all(), kernel["name"]  # every tap written
                assert (planes[:, :, g.ho * g.kh:] == 0).all() and (planes[:, :, :, g.wo * g.kw:] == 0).all()
                assert planes[0, 0, 0, 1] == 0 and not np.signbit(planes[0, 0, 0, 1]), kernel["name"]
                np.testing.assert_array_equal(got, want, err_msg=kernel["name"])  # a copy: exact
                continue
            assert np.isnan(got).sum() == 2, kernel["name"]  # two windows hold a NaN
            _check(got, want, dtype, kernel["name"])
