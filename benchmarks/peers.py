"""Loss-and-gradient speed of symnn against its peers (issue 4). From the repo root:

    pip install -e ".[bench]"
    python benchmarks/peers.py [--rounds 7] [--out docs/benchmarks.md] [--quick]

One call = forward, loss and the gradient of every parameter (no optimiser update) of a
dense MLP. Every system gets the same parameters and data, and its loss and gradients are
checked against symnn's NumPy kernel before anything is timed (float64: 1e-9 relative,
float32: 1e-3). One thread everywhere (threadpoolctl for BLAS, ``torch.set_num_threads(1)``,
and the process pinned to one CPU, since JAX ignores XLA's thread flags), systems interleaved
in rounds in one process, median of samples of >= 20 ms each; one-time costs (compile, trace,
jit) are reported apart. The machine's peak is the fastest 2048x2048 matmul on one thread
among NumPy's BLAS, PyTorch and JAX, measured in the same run, so "% of peak" is GFLOP/s of
useful work (6 N in out per layer, 4 for the first) over that; "% of FMA bound" divides by
what the core's multiply-add units allow (:func:`fma_bound`). The two-thread table comes
from a fresh process (see :func:`scaling_in_fresh_process`).

Systems (a missing optional one is left out of the table, with a line saying so):
symnn C (the emitted C), symnn C+BLAS (the same C built with ``blas=True``: products of >= 32,768
multiply-adds go to the OpenBLAS NumPy bundles) and symnn NumPy (the emitted module), each timed
through the public call a user makes, ``k.loss_and_grad(params, X, Y, out=grads)`` with ``params``
and ``grads`` from ``k.new_params`` (docs/training.md), with every check it makes; symnn C (raw call): the same C kernel through ``k.module.raw_loss_and_grad``, one cffi
call on buffers prepared once (what an application embedding the C pays), so symnn C / symnn C (raw
call) is the public call's overhead (issue 21). Then hand-written NumPy backprop, PyTorch
eager, JAX ``jit(value_and_grad)``, PyTensor (its default mode), CasADi-generated C for its
SX (up to 1e5 flops: xor) and MX functions (built -O3 -march=native and called through cffi like
symnn C (raw call): buffers prepared once), and the same SX / MX functions in CasADi's own virtual
machine. Each peer is timed through its own compiled entry point, as its users call it.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import symnn as sn  # noqa: E402
from symnn.bench import interleaved  # noqa: E402

Grad = Callable[[], object]


@dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple[int, ...]
    hidden: str
    output: str
    loss: str
    batch: int

    @property
    def layers(self) -> list[tuple[int, int, str]]:
        acts = [self.hidden] * (len(self.sizes) - 2) + [self.output]
        return list(zip(self.sizes, self.sizes[1:], acts))

    def flops(self) -> float:
        """Multiply-adds x 2 of the three products per layer (no dX for the first)."""
        return sum((4 if i == 0 else 6) * self.batch * a * b for i, (a, b, _) in enumerate(self.layers))


CONFIGS = [
    Config("xor", (2, 4, 1), "tanh", "sigmoid", "bce", 4),
    Config("small", (64, 32, 10), "tanh", "softmax", "cross_entropy", 32),
    Config("digits", (64, 128, 10), "relu", "softmax", "cross_entropy", 64),
    Config("mnist64", (784, 128, 10), "relu", "softmax", "cross_entropy", 64),
    Config("mnist256", (784, 128, 10), "relu", "softmax", "cross_entropy", 256),
    Config("deep", (256, 256, 256, 256, 256, 10), "relu", "softmax", "cross_entropy", 128),
    Config("regression", (8, 64, 64, 1), "sigmoid", "identity", "mse", 128),
]


def problem(cfg: Config, dtype: str):
    """The network, its parameters and the data (the same arrays go to every system)."""
    net = sn.Network([sn.Dense(a, b, act) for a, b, act in cfg.layers], loss=cfg.loss, name=f"b_{cfg.name}")
    rng = np.random.default_rng(0)
    params = {k: v.astype(dtype) for k, v in net.init_params(seed=0).items()}
    X = rng.normal(size=(cfg.batch, cfg.sizes[0])).astype(dtype)
    out = cfg.sizes[-1]
    if cfg.loss == "cross_entropy":
        Y = np.eye(out, dtype=dtype)[rng.integers(0, out, cfg.batch)]
    elif cfg.loss == "bce":
        Y = rng.integers(0, 2, (cfg.batch, out)).astype(dtype)
    else:
        Y = rng.normal(size=(cfg.batch, out)).astype(dtype)
    return net, params, X, Y


# --- hand-written NumPy backprop ----------------------------------------------------------

def _act(name: str, z: np.ndarray) -> np.ndarray:
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    return z


def _act_grad(name: str, z: np.ndarray, a: np.ndarray) -> np.ndarray | float:
    if name == "tanh":
        return 1 - a * a
    if name == "relu":
        return z > 0
    if name == "sigmoid":
        return a * (1 - a)
    return 1.0


def hand_written(cfg: Config):
    """Textbook backprop, written the way a NumPy user would: fused softmax + CE and
    sigmoid + BCE output errors, in-place bias adds."""
    L = len(cfg.layers)

    def f(p, X, Y):
        N = X.shape[0]
        zs, hs = [], [X]
        for i, (_, _, act) in enumerate(cfg.layers, 1):
            z = hs[-1] @ p[f"W{i}"].T
            z += p[f"b{i}"]
            zs.append(z)
            if i < L:
                hs.append(_act(act, z))
        z = zs[-1]
        if cfg.loss == "cross_entropy":
            m = z.max(axis=1, keepdims=True)
            e = np.exp(z - m)
            s = e.sum(axis=1, keepdims=True)
            loss = ((m + np.log(s)).sum() - (Y * z).sum()) / N
            d = (e / s - Y) / N
        elif cfg.loss == "bce":
            loss = (np.maximum(z, 0) - z * Y + np.log1p(np.exp(-np.abs(z)))).mean()
            d = (_act("sigmoid", z) - Y) / z.size
        else:
            r = z - Y
            loss = (r * r).mean()
            d = r * (2 / r.size)
        grads = {}
        for i in range(L, 0, -1):
            grads[f"W{i}"] = d.T @ hs[i - 1]
            grads[f"b{i}"] = d.sum(axis=0)
            if i > 1:
                a = hs[i - 1]
                d = (d @ p[f"W{i}"]) * _act_grad(cfg.layers[i - 2][2], zs[i - 2], a)
        return loss, grads

    return f


# --- peers ----------------------------------------------------------------------------------

def torch_system(cfg: Config, params, X, Y):
    import torch

    torch.set_num_threads(1)
    names = [f"{k}{i}" for i in range(1, len(cfg.layers) + 1) for k in ("W", "b")]
    tp = {k: torch.tensor(params[k], requires_grad=True) for k in names}
    tx, ty = torch.from_numpy(X), torch.from_numpy(Y)
    F = torch.nn.functional
    acts = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}

    def run():
        h = tx
        for i, (_, _, act) in enumerate(cfg.layers, 1):
            h = F.linear(h, tp[f"W{i}"], tp[f"b{i}"])
            if i < len(cfg.layers):
                h = acts[act](h)
        if cfg.loss == "cross_entropy":
            loss = F.cross_entropy(h, ty)
        elif cfg.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(h, ty)
        else:
            loss = F.mse_loss(h, ty)
        g = torch.autograd.grad(loss, [tp[k] for k in names])
        return float(loss.detach()), {k: v.numpy() for k, v in zip(names, g)}

    return run


def _jax_loss(cfg: Config, jnp, jax):
    def loss_fn(p, X, Y):
        h = X
        for i, (_, _, act) in enumerate(cfg.layers, 1):
            h = h @ p[f"W{i}"].T + p[f"b{i}"]
            if i < len(cfg.layers):
                h = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}[act](h)
        if cfg.loss == "cross_entropy":
            return -(Y * jax.nn.log_softmax(h)).sum() / X.shape[0]
        if cfg.loss == "bce":
            return (jnp.maximum(h, 0) - h * Y + jnp.log1p(jnp.exp(-jnp.abs(h)))).mean()
        return ((h - Y) ** 2).mean()

    return loss_fn


def jax_system(cfg: Config, params, X, Y):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    f = jax.jit(jax.value_and_grad(_jax_loss(cfg, jnp, jax)))
    jp = {k: jax.device_put(v) for k, v in params.items()}
    jx, jy = jax.device_put(X), jax.device_put(Y)

    def run():
        loss, g = f(jp, jx, jy)
        loss.block_until_ready()
        return float(loss), {k: np.asarray(v) for k, v in g.items()}

    return run


def pytensor_system(cfg: Config, params, X, Y):
    import pytensor
    import pytensor.tensor as pt

    dtype = X.dtype.name
    shared = {k: pytensor.shared(v, name=k) for k, v in params.items()}
    x, y = pt.matrix("X", dtype=dtype), pt.matrix("Y", dtype=dtype)
    h = x
    for i, (_, _, act) in enumerate(cfg.layers, 1):
        h = h @ shared[f"W{i}"].T + shared[f"b{i}"]
        if i < len(cfg.layers):
            h = {"tanh": pt.tanh, "relu": lambda v: pt.maximum(v, 0), "sigmoid": pt.sigmoid}[act](h)
    if cfg.loss == "cross_entropy":
        m = h.max(axis=1, keepdims=True)
        loss = ((m + pt.log(pt.exp(h - m).sum(axis=1, keepdims=True))).sum() - (y * h).sum()) / x.shape[0]
    elif cfg.loss == "bce":
        loss = (pt.maximum(h, 0) - h * y + pt.log1p(pt.exp(-abs(h)))).mean()
    else:
        loss = ((h - y) ** 2).mean()
    names = list(params)
    fn = pytensor.function([x, y], [loss, *pt.grad(loss, [shared[k] for k in names])])
    fn.trust_input = True

    def run():
        out = fn(X, Y)
        return float(out[0]), dict(zip(names, out[1:]))

    return run


def _casadi_function(cfg: Config, params, X, Y, kind: str):
    """The loss and the gradient as one CasADi Function of (X, Y, params...), in SX or MX."""
    import casadi as ca

    if X.dtype != np.float64:
        raise TypeError("CasADi computes in double only")
    sym = ca.SX if kind == "SX" else ca.MX
    names = list(params)
    ps = {k: sym.sym(k, *v.shape) if v.ndim == 2 else sym.sym(k, v.size) for k, v in params.items()}
    xs, ys = sym.sym("X", *X.shape), sym.sym("Y", *Y.shape)
    N = X.shape[0]
    h = xs
    for i, (_, _, act) in enumerate(cfg.layers, 1):
        h = ca.mtimes(h, ps[f"W{i}"].T) + ca.repmat(ps[f"b{i}"].T, N, 1)
        if i < len(cfg.layers):
            h = {"tanh": ca.tanh, "relu": lambda v: ca.fmax(v, 0), "sigmoid": lambda v: 1 / (1 + ca.exp(-v))}[act](h)
    if cfg.loss == "cross_entropy":
        m = ca.mmax(h)  # one shift for the whole batch keeps the graph small; the data are tame
        lse = ca.log(ca.sum2(ca.exp(h - m))) + m
        loss = (ca.sum1(lse) - ca.sum1(ca.sum2(ys * h))) / N
    elif cfg.loss == "bce":
        loss = ca.sum1(ca.sum2(ca.fmax(h, 0) - h * ys + ca.log1p(ca.exp(-ca.fabs(h))))) / h.numel()
    else:
        loss = ca.sumsqr(h - ys) / h.numel()
    grads = ca.gradient(loss, ca.vertcat(*[ca.vec(ps[k]) for k in names]))
    fn = ca.Function("f", [xs, ys, *[ps[k] for k in names]], [loss, grads])
    return fn, names, [X, Y, *[params[k] for k in names]]


def _casadi_unpack(params, names, flat: np.ndarray) -> dict[str, np.ndarray]:
    """CasADi vectorises column-major: W (out x in) comes back transposed."""
    sizes = np.cumsum([0] + [params[k].size for k in names])
    return {k: flat[a:b].reshape(params[k].shape[::-1]).T if params[k].ndim == 2 else flat[a:b]
            for k, a, b in zip(names, sizes, sizes[1:])}


def casadi_system(cfg: Config, params, X, Y, kind: str):
    """CasADi's own virtual machine, called in process."""
    fn, names, args = _casadi_function(cfg, params, X, Y, kind)

    def run():
        loss, g = fn(*args)
        return float(loss), _casadi_unpack(params, names, np.asarray(g).ravel())

    return run


def _cffi_module(name: str, cdef: str, source: str, extra_flags: list[str] = ()):
    """(ffi, lib) of ``source`` built -O3 -march=native through cffi's API mode in a temporary
    folder, as symnn builds its own C; the folder goes once the module is loaded."""
    import importlib
    import shutil
    import tempfile

    import cffi

    tmp = Path(tempfile.mkdtemp(prefix=f"{name}_"))
    mod = f"{name}_{os.getpid()}"
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    ffi.set_source(mod, source, extra_compile_args=["-O3", "-march=native", *extra_flags])
    ffi.compile(tmpdir=str(tmp))
    sys.path.insert(0, str(tmp))
    try:
        lib = importlib.import_module(mod).lib
    finally:
        sys.path.remove(str(tmp))
        shutil.rmtree(tmp)  # the loaded module stays mapped
    return ffi, lib


def casadi_c_system(cfg: Config, params, X, Y, kind: str):
    """CasADi's generated C (``Function.generate``), built like symnn's (cffi API mode, -O3
    -march=native) and called the way symnn C is: argument and work buffers made once, one
    C call per gradient. Inputs are handed over column-major, as CasADi expects."""
    import casadi as ca

    fn, names, args = _casadi_function(cfg, params, X, Y, kind)
    gen = ca.CodeGenerator("f.c", {"with_header": False, "casadi_int": "long long int"})
    gen.add(fn)
    ffi, lib = _cffi_module(f"casadi_{kind.lower()}_{cfg.name}",
                            "int f(const double** arg, double** res, long long* iw, double* w, int mem);"
                            "int f_work(long long* sz_arg, long long* sz_res, long long* sz_iw, long long* sz_w);",
                            gen.dump(), ["-w"])
    sz = [ffi.new("long long*") for _ in range(4)]
    lib.f_work(*sz)
    cols = [np.ascontiguousarray(a.T).ravel() if a.ndim == 2 else np.ascontiguousarray(a) for a in args]
    c_args = ffi.new("const double*[]", [ffi.from_buffer("double[]", a) for a in cols] + [ffi.NULL] * max(0, sz[0][0] - len(cols)))
    loss, grad = np.zeros(1), np.zeros(sum(params[k].size for k in names))
    c_res = ffi.new("double*[]", [ffi.from_buffer("double[]", loss), ffi.from_buffer("double[]", grad)] + [ffi.NULL] * max(0, sz[1][0] - 2))
    iw, w = ffi.new("long long[]", max(1, sz[2][0])), ffi.new("double[]", max(1, sz[3][0]))
    keep = (cols, loss, grad, c_args, c_res, iw, w)  # the C call reads and writes these
    f = lib.f

    def run():
        f(c_args, c_res, iw, w, 0)
        return keep

    def checked():
        run()
        return float(loss[0]), _casadi_unpack(params, names, grad.copy())

    return run, checked


#: symnn's columns timed through the public call, by backend and build options
#: (backend, build options, gradients into out=): C writes into the caller's buffer for free,
#: NumPy computes new arrays, which out= would only copy
SYMNN_PUBLIC = {"symnn NumPy": ("numpy", {}, False), "symnn C": ("c", {}, True),
                "symnn C+BLAS": ("c", {"blas": True}, True)}
#: the plain C build's kernel called raw: buffers prepared once, no checks (issue 21's baseline)
SYMNN_RAW = "symnn C (raw call)"
#: the column every other system's loss and gradients are checked against
REFERENCE = "symnn NumPy"


def symnn_systems(net, params, X, Y, dtype: str) -> tuple[dict[str, Grad], dict[str, float], dict[str, Grad]]:
    """(timed calls, compile seconds, calls that return ``(loss, grads)`` for the check).

    The SYMNN_PUBLIC columns time what a user runs, ``k.loss_and_grad(params, X, Y, out=grads)``
    with ``params`` and ``grads`` from ``k.new_params`` (NumPy: without ``out=``, which would
    only copy its new arrays) (a partial, so no frame of ours is timed); the raw column is there to show what that call
    costs over the kernel, not as symnn's headline figure. The raw call returns only the C
    status, so its check runs the same C function through the module's unpacking call."""
    systems, setup, kernels = {}, {}, {}
    for name, (backend, options, into_out) in SYMNN_PUBLIC.items():
        t = time.perf_counter()
        kernels[name] = sn.compile(net, backend=backend, dtype=dtype, **options)
        setup[name] = time.perf_counter() - t
        k = kernels[name]
        # the documented fast form: parameters as views of one buffer, gradients into a
        # caller-owned buffer (docs/training.md, "The call, without copies")
        out = {"out": k.new_params()} if into_out else {}
        systems[name] = functools.partial(k.loss_and_grad, k.new_params(params), X, Y, **out)
    kc = kernels["symnn C"]
    p, x, y = kc.params(params), kc.inputs(X), kc.targets(Y, X.shape[0])
    systems[SYMNN_RAW] = kc.module.raw_loss_and_grad(p, x, y)
    checked = {name: systems[name] for name in SYMNN_PUBLIC if name != REFERENCE}
    checked[SYMNN_RAW] = lambda: kc.module._loss_and_grad(p, x, y)
    return systems, setup, checked


#: the network whose per-call cost issue 21 bounds: the smallest, where the call is all there is
OVERHEAD_CONFIG = "xor"
#: issue 21's bound on the public call's cost over the C entry it runs, in seconds
OVERHEAD_TARGET = 1.5e-6


def call_overhead(dtype: str, rounds: int) -> dict[str, tuple[float, float]]:
    """Per kernel (forward, loss_and_grad, train_step with Adam): median seconds of the public
    call a user makes (``k.forward(params, X)``, ``k.loss_and_grad(params, X, Y, out=grads)``,
    ``k.train_step(theta, state, X, Y, step)``, with ``params``/``grads`` from ``k.new_params``)
    and of the same C entry called raw through cffi on buffers prepared once, timed in turn.
    Their difference is what the Python API costs per call, every check included."""
    cfg = next(c for c in CONFIGS if c.name == OVERHEAD_CONFIG)
    net, params, X, Y = problem(cfg, dtype)
    # a tiny rate: a million steps at step 1 leave the parameters where they were, near enough
    k = sn.compile(net, backend="c", dtype=dtype, optimizer=sn.Adam(1e-9))
    p, out = k.new_params(params), k.new_params()
    theta, state = k.pack(params), k.init_state()
    theta_raw, state_raw = theta.copy(), state.copy()
    x, y = k.inputs(X), k.targets(Y, X.shape[0])
    systems = {
        "forward": functools.partial(k.forward, p, X),
        "forward raw": k.module.raw_forward(p, x),
        "loss_and_grad": functools.partial(k.loss_and_grad, p, X, Y, out=out),
        "loss_and_grad raw": k.module.raw_loss_and_grad(p, x, y),
        "train_step": functools.partial(k.train_step, theta, state, X, Y, 1),
        "train_step raw": k.module.raw_train_step(theta_raw, state_raw, x, y, 1),
    }
    times = interleaved(systems, rounds)
    return {name: (times[name], times[f"{name} raw"]) for name in ("forward", "loss_and_grad", "train_step")}


def _agree(ref, got) -> float:
    """Largest relative error (loss and each gradient, by norm) of ``got`` against ``ref``."""
    (l0, g0), (l1, g1) = ref, got
    errs = [abs(l1 - l0) / max(abs(l0), 1e-30)]
    for k, v in g0.items():
        errs.append(float(np.linalg.norm(np.asarray(g1[k], dtype=float) - v) / max(np.linalg.norm(v), 1e-30)))
    return max(errs)


def measure_peak(dtype: str, skip: set[str] = frozenset()) -> dict[str, float]:
    """GFLOP/s of a 2048x2048 matmul on one thread through each library present: NumPy's
    BLAS, PyTorch and JAX. The page's peak is the fastest of them. One library alone is not
    the machine's peak: OpenBLAS 0.3.31 runs its Haswell (AVX2) kernels on a Zen 5 core with
    full-width AVX-512 and reached 61 GFLOP/s in float64 there, where JAX reached 95."""
    from symnn.bench import sample

    a = np.random.default_rng(1).normal(size=(2048, 2048)).astype(dtype)
    products: dict[str, Grad] = {"NumPy BLAS": lambda: a @ a}
    if "PyTorch" not in skip:
        try:
            import torch

            torch.set_num_threads(1)
            ta = torch.from_numpy(a)
            products["PyTorch"] = lambda: ta @ ta
        except ImportError:
            pass
    if "JAX" not in skip:
        try:
            import jax

            jax.config.update("jax_enable_x64", True)
            mm = jax.jit(lambda x: x @ x)
            ja = jax.device_put(a)
            mm(ja).block_until_ready()  # compiled outside the timing
            products["JAX"] = lambda: mm(ja).block_until_ready()
        except ImportError:
            pass
    return {name: 2 * 2048**3 / sample(fn, 0.5) / 1e9 for name, fn in products.items()}


_FMA_SOURCE = """
/* a vector register's width: 12 chains of two 32-byte halves would spill AVX2's 16 registers */
#ifdef __AVX512F__
#define VBYTES 64
#else
#define VBYTES 32
#endif
typedef {real} vec __attribute__((vector_size(VBYTES)));
int vec_bytes(void) {{ return VBYTES; }}
double fma_chains(long n)
{{
    const vec zero = {{0}}, x = zero + ({real})0.999999, y = zero + ({real})1e-7;
    vec {decl};
    for (long k = 0; k < n; ++k) {{
        {body}
    }}
    vec s = {total};
    double out = 0;
    for (int l = 0; l < (int)(VBYTES/sizeof({real})); ++l) out += s[l];
    return out;
}}
"""


def torch_step_peak(step: Callable[[], None]) -> int | None:
    """Bytes: PyTorch's peak of memory allocated during ``step`` (one training step), beyond the
    tensors that exist before it: one step first (the optimiser's state exists from there on, as
    symnn's does), then the profiler's memory timeline (``profile_memory=True``), which follows
    every tensor allocation of the CPU allocator, over a second. The CNN and RNN pages' measure."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
    totals = np.asarray(sizes, dtype=np.int64).sum(axis=1)
    return int(totals.max() - totals[0]) if totals.size else None


def fma_bound(dtype: str) -> float:
    """GFLOP/s of 12 independent chains of multiply-adds on vectors of the register width
    (64 bytes with AVX-512, else 32; GCC vector extensions, -O3 -march=native, one thread):
    what one core's FMA units allow, with no memory traffic.
    Above what the libraries' matmuls reach on a CPU they do not tune for (Zen 5's full-width
    AVX-512 under OpenBLAS's Haswell kernels), so the page gives both."""
    from symnn.bench import sample

    real = "double" if dtype == "float64" else "float"
    chains = range(12)
    source = _FMA_SOURCE.format(real=real, decl=", ".join(f"a{i} = zero + {i}" for i in chains),
                                body=" ".join(f"a{i} = a{i}*x + y;" for i in chains),
                                total=" + ".join(f"a{i}" for i in chains))
    _, lib = _cffi_module(f"fma_bound_{dtype}", "double fma_chains(long n); int vec_bytes(void);", source)
    n = 200_000
    best = min(sample(lambda: lib.fma_chains(n), 0.05) for _ in range(5))
    return 12 * n * (lib.vec_bytes() // np.dtype(dtype).itemsize) * 2 / best / 1e9


PEERS = {"hand-written NumPy": None, "PyTorch": torch_system, "JAX": jax_system,
         "PyTensor": pytensor_system, "CasADi SX C": lambda *a: casadi_c_system(*a, kind="SX"),
         "CasADi MX C": lambda *a: casadi_c_system(*a, kind="MX"),
         "CasADi SX": lambda *a: casadi_system(*a, kind="SX"), "CasADi MX": lambda *a: casadi_system(*a, kind="MX")}
#: SX expands every scalar operation: past these multiply-adds x 2 its graph (and C) is too big
SX_MAX_FLOPS = {"CasADi SX": 5e6, "CasADi SX C": 1e5}  # SX C of small: 587 s of gcc


def run_config(cfg: Config, dtype: str, rounds: int, skip: set[str]) -> dict:
    net, params, X, Y = problem(cfg, dtype)
    systems, setup, checked = symnn_systems(net, params, X, Y, dtype)
    ref = systems[REFERENCE]()
    tol = 1e-9 if dtype == "float64" else 1e-3
    checks = {name: _agree(ref, fn()) for name, fn in checked.items()}
    notes = []
    for name, make in PEERS.items():
        if name in skip or cfg.flops() > SX_MAX_FLOPS.get(name, np.inf):
            continue
        t = time.perf_counter()
        try:
            if make is None:
                fn = (lambda f=hand_written(cfg): f(params, X, Y))
            else:
                fn = make(cfg, params, X, Y)
            fn, check = fn if isinstance(fn, tuple) else (fn, fn)  # (timed call, call that returns arrays)
            got = check()  # the first call traces / jit-compiles
        except (ImportError, TypeError) as exc:
            notes.append(f"{name}: {exc}")
            continue
        setup[name] = time.perf_counter() - t
        checks[name] = _agree(ref, got)
        systems[name] = fn
    bad = {k: v for k, v in checks.items() if not v <= tol}
    if bad:
        raise AssertionError(f"{cfg.name} {dtype}: disagree with symnn NumPy: {bad}")
    times = interleaved(systems, rounds)
    return {"times": times, "setup": setup, "checks": checks, "notes": notes}


def pin_to_one_cpu() -> set[int] | None:
    """Pin this thread, and every thread started from it afterwards, to one CPU; returns the
    CPUs it had (None where the OS has no affinity call).

    The thread knobs are not enough: JAX 0.10 ignores XLA's thread flags and ran its products
    on both CPUs here (CPU time / wall time 1.6 on mnist256), which a one-thread table must not
    count. Pinned, every system gets one core whatever its own threads do.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    return cpus


def _settled(fn: Grad, rounds: int, pause: float = 0.3) -> float:
    """Median seconds per call of ``fn`` alone, after ``pause`` seconds idle and one call."""
    time.sleep(pause)
    fn()
    return interleaved({"fn": fn}, rounds)["fn"]


def thread_scaling(rounds: int, names: tuple[str, ...] = ("mnist256", "deep")) -> dict[str, dict[int, dict[str, float]]]:
    """Median seconds per call on 1 and 2 threads: symnn C+OpenMP (``openmp=True``: OpenMP
    threads), symnn C+BLAS and NumPy (OpenBLAS threads), all set by threadpoolctl; PyTorch
    (``torch.set_num_threads``). The default symnn C build is single-threaded (the baseline).
    symnn's builds are timed through the public call, as in the one-thread tables."""
    from threadpoolctl import threadpool_limits

    out: dict[str, dict[int, dict[str, float]]] = {}
    for cfg in (c for c in CONFIGS if c.name in names):
        net, params, X, Y = problem(cfg, "float64")
        systems, _, _ = symnn_systems(net, params, X, Y, "float64")
        ko = sn.compile(net, backend="c", openmp=True)
        systems["symnn C+OpenMP"] = functools.partial(ko.loss_and_grad, ko.new_params(params), X, Y,
                                                      out=ko.new_params())  # public, as symnn C
        systems["hand-written NumPy"] = (lambda f=hand_written(cfg): f(params, X, Y))
        try:
            import torch

            tsys = torch_system(cfg, params, X, Y)
        except ImportError:
            tsys = None
        if tsys is not None:
            systems["PyTorch"] = tsys
        out[cfg.name] = {1: {}, 2: {}}
        for name, fn in systems.items():
            # one system at a time, not interleaved: after its call each runtime's idle workers
            # spin (OpenBLAS by default for 2^28 cycles), and on two CPUs they took the second CPU
            # from the next system's threads (C+OpenMP measured 0.88x interleaved, 1.69x alone);
            # so each system also starts after a pause that lets the previous one's workers go to
            # sleep, and a call that wakes its own. Its 1- and 2-thread runs alternate, three
            # times: with all systems on 1 thread first, then all on 2, a slower phase of this
            # shared machine between the two showed as a speed-up (the single-threaded C: 1.37x)
            samples: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(3):
                for threads in (1, 2):
                    if name == "PyTorch":
                        torch.set_num_threads(threads)
                    with threadpool_limits(limits=threads):
                        samples[threads].append(_settled(fn, max(1, rounds // 3)))
            for threads in (1, 2):
                out[cfg.name][threads][name] = statistics.median(samples[threads])
        if tsys is not None:
            torch.set_num_threads(1)
    return out


def scaling_in_fresh_process(rounds: int) -> dict[str, dict[int, dict[str, float]]]:
    """:func:`thread_scaling` in a new Python process that was never pinned to one CPU.

    An OpenMP runtime reads the CPUs it may use once, when it is loaded. PyTorch ships its
    own ``libgomp.so.1``, which this process loads while pinned, and symnn's ``openmp=True``
    build then binds to that same runtime, which believes it has one CPU: its two threads
    sleep between parallel regions instead of spinning. Measured in this pinned process,
    C+OpenMP went from 1.7 to 1.5 ms on deep (1.1x); in a fresh one, 1.74 to 0.95 ms (1.8x)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--scaling-json", "--rounds", str(rounds)]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT)  # its stderr shows
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    return {cfg: {int(threads): times for threads, times in by_threads.items()} for cfg, by_threads in raw.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--chart", default=str(ROOT / "docs" / "benchmarks.png"))
    ap.add_argument("--quick", action="store_true", help="float64 only, 3 rounds")
    ap.add_argument("--configs", default=",".join(c.name for c in CONFIGS))
    ap.add_argument("--skip", default="", help="comma-separated peers to leave out")
    ap.add_argument("--scaling-json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.scaling_json:  # the child of scaling_in_fresh_process
        print(json.dumps(thread_scaling(args.rounds)))
        return
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    dtypes = ["float64"] if args.quick else ["float64", "float32"]
    rounds = 3 if args.quick else args.rounds
    wanted = set(args.configs.split(","))
    skip = set(filter(None, args.skip.split(",")))
    results: dict[tuple[str, str], dict] = {}
    cpus = pin_to_one_cpu()
    with threadpool_limits(limits=1):
        peaks = {dt: measure_peak(dt, skip) for dt in dtypes}
        bounds = {dt: fma_bound(dt) for dt in dtypes}
        for dtype in dtypes:
            for cfg in CONFIGS:
                if cfg.name in wanted:
                    results[cfg.name, dtype] = run_config(cfg, dtype, rounds, skip)
                    r = results[cfg.name, dtype]["times"]
                    print(cfg.name, dtype, {k: f"{v * 1e6:.1f}" for k, v in r.items()}, flush=True)
        overhead = {dt: call_overhead(dt, rounds) for dt in dtypes}
    if cpus is not None:
        os.sched_setaffinity(0, cpus)  # the child below inherits this thread's CPUs
    scaling = {} if args.quick else scaling_in_fresh_process(rounds)
    from benchmarks.report import write_report

    write_report(results, peaks, bounds, CONFIGS, Path(args.out), Path(args.chart), scaling, overhead,
                 command="python benchmarks/peers.py " + " ".join(argv or sys.argv[1:]),
                 wall=time.perf_counter() - start)


if __name__ == "__main__":
    main()
