"""Convolutional and residual networks: symnn's loss-and-gradient call against PyTorch eager and
JAX jit, one thread, both dtypes, the same run (issue 22's configurations).

    python benchmarks/cnn_peers.py --out docs/benchmarks_cnn.md

Each system computes the mean cross-entropy of one batch and its gradient with respect to every
parameter, from the same arrays, and the results are checked against symnn NumPy's before any
timing (1e-9 relative in float64, 1e-3 in float32). symnn is timed through the call a user makes,
``k.loss_and_grad(params, X, Y, out=grads)`` with ``params`` and ``grads`` from ``k.new_params``
(NumPy: without ``out=``); PyTorch through ``torch.autograd.grad`` on a module-free functional
forward (eager); JAX through ``jax.jit(jax.value_and_grad(loss))``. The process is pinned to one
CPU and every library to one thread. Medians of interleaved rounds (:func:`symnn.bench.interleaved`).

Configurations (batch-first, PyTorch layouts):

- ``cnn-digits``: 1x8x8 -> Conv2d(1,16,3,pad 1) relu -> Conv2d(16,32,3,pad 1) relu -> MaxPool 2
  -> Flatten -> Dense(512,10) softmax, N=64;
- ``cnn-small``: 3x32x32 -> Conv2d(3,16,3,pad 1) relu -> MaxPool 2 -> Conv2d(16,32,3,pad 1) relu
  -> MaxPool 2 -> Flatten -> Dense(2048,10), N=32;
- ``dscnn-kws``: the keyword-spotting DS-CNN of the TinyML benchmarks: 1x49x10 ->
  Conv2d(1,64,(10,4),stride 2,pad (5,1)) BN relu -> 4 x [depthwise Conv2d(64,64,3,pad 1) BN relu ->
  pointwise Conv2d(64,64,1) BN relu] -> global average pool -> Dense(64,12), N=32; convolutions
  without bias (each feeds a BatchNorm), batch statistics (PyTorch's ``train()``: its
  ``F.batch_norm(training=True)`` also updates the running statistics in that call, which symnn's
  ``loss_and_grad`` leaves to ``train_step``);
- ``resmlp-ln``: 5 residual blocks h + relu(Dense(256,256)(LayerNorm(256)(h))), then Dense(256,10),
  N=128.

"% of the FMA bound" divides the multiply-adds of the forward and backward products (two for
each weight gradient and input gradient, one forward) by the time and by the one-thread FMA bound
that ``benchmarks/peers.py`` measures. These are the direct convolution's multiply-adds: where
symnn C takes Winograd's F(2x2, 3x3) (a 3x3 convolution of stride 1 between 8 channels or more,
and its input pullback) it does 2.25x fewer there, so its figure is an effective rate.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import symnn as sn  # noqa: E402
from symnn.bench import interleaved  # noqa: E402
from symnn.memory import format_table, work_table  # noqa: E402
from peers import _agree, fma_bound, pin_to_one_cpu, torch_step_peak  # noqa: E402  (the dense page's check and measures)
from report import _cpu  # noqa: E402


@dataclass(frozen=True)
class Config:
    name: str
    batch: int
    build: Callable[..., sn.Network]  # frozen=(parameter names) -> the network
    torch_forward: Callable  # (F, params, x) -> logits
    jax_forward: Callable  # (jax, jnp, params, x) -> logits
    input_shape: tuple[int, ...]
    macs: int  # forward multiply-adds per sample
    classes: int = 10
    #: how far float32 results may be from symnn NumPy's (relative, by norm): a BatchNorm's
    #: weight gradient sums products whose total cancels to ~1e-3 of its terms, so every float32
    #: system (PyTorch and JAX too) lands 1-2 % from the float64 gradient there
    f32_tol: float = 1e-3


def _cnn_digits(frozen: tuple[str, ...] = ()) -> sn.Network:
    x = sn.Input(1, 8, 8)
    h = sn.Conv2d(1, 16, 3, padding=1, activation="relu", name="c1")(x)
    h = sn.MaxPool2d(2)(sn.Conv2d(16, 32, 3, padding=1, activation="relu", name="c2")(h))
    y = sn.Dense(512, 10, activation="softmax", name="fc")(sn.Flatten()(h))
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", name="b_cnn_digits", frozen=list(frozen))


def _cnn_small(frozen: tuple[str, ...] = ()) -> sn.Network:
    x = sn.Input(3, 32, 32)
    h = sn.MaxPool2d(2)(sn.Conv2d(3, 16, 3, padding=1, activation="relu", name="c1")(x))
    h = sn.MaxPool2d(2)(sn.Conv2d(16, 32, 3, padding=1, activation="relu", name="c2")(h))
    y = sn.Dense(2048, 10, activation="softmax", name="fc")(sn.Flatten()(h))
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", name="b_cnn_small", frozen=list(frozen))


def _resmlp(frozen: tuple[str, ...] = ()) -> sn.Network:
    x = sn.Input(256)
    h = x
    for i in range(5):
        h = h + sn.Dense(256, 256, activation="relu", name=f"d{i}")(sn.LayerNorm(256, name=f"n{i}")(h))
    y = sn.Dense(256, 10, activation="softmax", name="fc")(h)
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", name="b_resmlp_ln", frozen=list(frozen))


def _dscnn(frozen: tuple[str, ...] = ()) -> sn.Network:
    x = sn.Input(1, 49, 10)
    h = sn.Conv2d(1, 64, (10, 4), stride=2, padding=(5, 1), bias=False, name="c0")(x)
    h = sn.Activate("relu")(sn.BatchNorm2d(64, name="b0")(h))
    for i in range(1, 5):
        h = sn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False, name=f"dw{i}")(h)
        h = sn.Activate("relu")(sn.BatchNorm2d(64, name=f"bdw{i}")(h))
        h = sn.Conv2d(64, 64, 1, bias=False, name=f"pw{i}")(h)
        h = sn.Activate("relu")(sn.BatchNorm2d(64, name=f"bpw{i}")(h))
    y = sn.Dense(64, 12, activation="softmax", name="fc")(sn.GlobalAvgPool()(h))
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", name="b_dscnn_kws", frozen=list(frozen))


def _dscnn_blocks():
    """(convolution, batch norm, stride, padding, groups) of the DS-CNN in order."""
    yield "c0", "b0", 2, (5, 1), 1
    for i in range(1, 5):
        yield f"dw{i}", f"bdw{i}", 1, (1, 1), 64
        yield f"pw{i}", f"bpw{i}", 1, (0, 0), 1


def _torch_dscnn(F, p, x):
    h = x
    for conv, bn, stride, pad, groups in _dscnn_blocks():
        h = F.conv2d(h, p[f"{conv}.weight"], stride=stride, padding=pad, groups=groups)
        h = F.relu(F.batch_norm(h, p[f"{bn}.running_mean"], p[f"{bn}.running_var"], p[f"{bn}.weight"],
                                p[f"{bn}.bias"], training=True, momentum=0.1, eps=1e-5))
    return F.linear(h.mean(dim=(2, 3)), p["fc.weight"], p["fc.bias"])


def _jax_dscnn(jax, jnp, p, x):
    h = x
    for conv, bn, stride, pad, groups in _dscnn_blocks():
        h = jax.lax.conv_general_dilated(h, p[f"{conv}.weight"], (stride, stride), tuple((q, q) for q in pad),
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups)
        m = h.mean(axis=(0, 2, 3), keepdims=True)
        v = ((h - m) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        h = (h - m) / jnp.sqrt(v + 1e-5) * p[f"{bn}.weight"][None, :, None, None] + p[f"{bn}.bias"][None, :, None, None]
        h = jax.nn.relu(h)
    return h.mean(axis=(2, 3)) @ p["fc.weight"].T + p["fc.bias"]


def _torch_cnn(pools_after: tuple[bool, bool]):
    def forward(F, p, x):
        h = x
        for i, pool in zip((1, 2), pools_after):
            h = F.relu(F.conv2d(h, p[f"c{i}.weight"], p[f"c{i}.bias"], padding=1))
            if pool:
                h = F.max_pool2d(h, 2)
        return F.linear(h.flatten(1), p["fc.weight"], p["fc.bias"])

    return forward


def _jax_cnn(pools_after: tuple[bool, bool]):
    def forward(jax, jnp, p, x):
        h = x
        for i, pool in zip((1, 2), pools_after):
            h = jax.lax.conv_general_dilated(h, p[f"c{i}.weight"], (1, 1), ((1, 1), (1, 1)),
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
            h = jax.nn.relu(h + p[f"c{i}.bias"][None, :, None, None])
            if pool:
                h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        return h.reshape(h.shape[0], -1) @ p["fc.weight"].T + p["fc.bias"]

    return forward


def _torch_resmlp(F, p, x):
    h = x
    for i in range(5):
        n = F.layer_norm(h, (256,), p[f"n{i}.weight"], p[f"n{i}.bias"])
        h = h + F.relu(F.linear(n, p[f"d{i}.weight"], p[f"d{i}.bias"]))
    return F.linear(h, p["fc.weight"], p["fc.bias"])


def _jax_resmlp(jax, jnp, p, x):
    h = x
    for i in range(5):
        m = h.mean(axis=1, keepdims=True)
        v = ((h - m) ** 2).mean(axis=1, keepdims=True)
        n = (h - m) / jnp.sqrt(v + 1e-5) * p[f"n{i}.weight"] + p[f"n{i}.bias"]
        h = h + jax.nn.relu(n @ p[f"d{i}.weight"].T + p[f"d{i}.bias"])
    return h @ p["fc.weight"].T + p["fc.bias"]


CONFIGS = [
    Config("cnn-digits", 64, _cnn_digits, _torch_cnn((False, True)), _jax_cnn((False, True)), (1, 8, 8),
           64 * (16 * 9) + 64 * (32 * 16 * 9) + 512 * 10),
    Config("cnn-small", 32, _cnn_small, _torch_cnn((True, True)), _jax_cnn((True, True)), (3, 32, 32),
           1024 * (16 * 3 * 9) + 256 * (32 * 16 * 9) + 2048 * 10),
    Config("dscnn-kws", 32, _dscnn, _torch_dscnn, _jax_dscnn, (1, 49, 10),
           125 * 64 * 40 + 4 * (125 * 64 * 9 + 125 * 64 * 64) + 64 * 12, classes=12, f32_tol=5e-2),
    Config("resmlp-ln", 128, _resmlp, _torch_resmlp, _jax_resmlp, (256,), 5 * 256 * 256 + 2560),
]


def problem(cfg: Config, dtype: str):
    net = cfg.build()
    rng = np.random.default_rng(0)
    params = {k: v.astype(dtype) for k, v in net.init_params(seed=0).items()}
    X = rng.normal(size=(cfg.batch, *cfg.input_shape)).astype(dtype)
    Y = np.eye(cfg.classes, dtype=dtype)[rng.integers(0, cfg.classes, cfg.batch)]
    return net, params, X, Y


def torch_system(cfg: Config, params, X, Y):
    import torch

    torch.set_num_threads(1)
    F = torch.nn.functional
    buffers = set(cfg.build().buffers)  # running statistics: state, not differentiated
    tp = {k: torch.tensor(v, requires_grad=k not in buffers) for k, v in params.items()}
    trained = [k for k in tp if k not in buffers]
    tx, ty = torch.from_numpy(X), torch.from_numpy(Y)

    def run():
        loss = F.cross_entropy(cfg.torch_forward(F, tp, tx), ty)
        g = dict(zip(trained, torch.autograd.grad(loss, [tp[k] for k in trained])))
        return float(loss.detach()), {k: g[k].numpy() if k in g else np.zeros(params[k].shape) for k in tp}

    return run


def jax_system(cfg: Config, params, X, Y):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def loss(p, x, y):
        return -(y * jax.nn.log_softmax(cfg.jax_forward(jax, jnp, p, x))).sum() / x.shape[0]

    f = jax.jit(jax.value_and_grad(loss))
    jp = {k: jax.device_put(v) for k, v in params.items()}
    jx, jy = jax.device_put(X), jax.device_put(Y)

    def run():
        value, g = f(jp, jx, jy)
        value.block_until_ready()
        return float(value), {k: np.asarray(v) for k, v in g.items()}

    return run


def torch_peak(cfg: Config) -> int | None:
    """Bytes: PyTorch's peak of memory allocated during one training step of ``cfg`` (float64:
    loss, ``backward`` and ``torch.optim.SGD`` with momentum 0.9), beyond the tensors that exist
    before it (parameters, inputs, the optimiser's state after a first step). Read from the
    profiler's memory timeline (``profile_memory=True``), which follows every tensor allocation
    of the CPU allocator and sorts it into categories; None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    F = torch.nn.functional
    net, params, X, Y = problem(cfg, "float64")
    buffers = set(net.buffers)
    tp = {k: torch.tensor(v, requires_grad=k not in buffers) for k, v in params.items()}
    opt = torch.optim.SGD([v for k, v in tp.items() if k not in buffers], lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(X), torch.from_numpy(Y)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(cfg.torch_forward(F, tp, tx), ty).backward()
        opt.step()

    return torch_step_peak(step)


def _frozen_line(cfg: Config, optimizer, full: int) -> str:
    """The C train step's work (bytes, float64) with only the output layer trained (fine-tuning
    a classifier) and with only the biases trained (the Tiny Training Engine's bias-only
    updates), against ``full``, the step training everything."""
    net = cfg.build()
    trained = [p for p in net.param_shapes() if p not in net.buffers]
    cases = {"only the output layer trained": [p for p in trained if not p.startswith("fc.")],
             "only the biases trained": [p for p in trained if p.endswith(".weight")]}
    parts = []
    for what, frozen in cases.items():
        rows = work_table(cfg.build(frozen=tuple(frozen)), optimizer=optimizer, n=cfg.batch)
        work = rows[-1].work * 8
        parts.append(f"{what}, {work:,} bytes ({work / full:.2f} of the full step)")
    return "; ".join(parts) + "."


def run_config(cfg: Config, dtype: str, rounds: int) -> dict:
    net, params, X, Y = problem(cfg, dtype)
    systems, checks, setup = {}, {}, {}
    ref = None
    for name, backend in (("symnn NumPy", "numpy"), ("symnn C", "c")):
        t = time.perf_counter()
        k = sn.compile(net, backend=backend, dtype=dtype)
        setup[name] = time.perf_counter() - t
        out = {"out": k.new_params()} if backend == "c" else {}
        systems[name] = functools.partial(k.loss_and_grad, k.new_params(params), X, Y, **out)
        got = k.loss_and_grad(params, X, Y)
        got = (got[0], {a: np.array(b) for a, b in got[1].items()})
        ref = ref or got
        checks[name] = _agree(ref, got)
    for name, make in (("PyTorch", torch_system), ("JAX", jax_system)):
        t = time.perf_counter()
        try:
            fn = make(cfg, params, X, Y)
            got = fn()
        except ImportError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            continue
        setup[name] = time.perf_counter() - t
        checks[name] = _agree(ref, got)
        systems[name] = fn
    tol = 1e-9 if dtype == "float64" else cfg.f32_tol
    bad = {k: v for k, v in checks.items() if not v <= tol}
    if bad:
        raise AssertionError(f"{cfg.name} {dtype}: disagree with symnn NumPy: {bad}")
    return {"times": interleaved(systems, rounds), "checks": checks, "setup": setup}


def table(results: dict[str, dict], dtype: str, fma: float | None) -> list[str]:
    systems = ["symnn NumPy", "symnn C", "PyTorch", "JAX"]
    head = ["config", *systems, "fastest peer", "symnn C / fastest peer", "% of FMA bound (symnn C)"]
    lines = [f"### {dtype}: median µs per loss-and-gradient call (one thread)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cfg in CONFIGS:
        t = results[cfg.name]["times"]
        peers = {k: v for k, v in t.items() if k in ("PyTorch", "JAX")}
        best = min(peers, key=peers.get) if peers else None
        ratio = f"**{t['symnn C'] / peers[best]:.2f}**" if best else "—"
        flops = 2 * 3 * cfg.macs * cfg.batch
        fma_pct = f"{100 * flops / t['symnn C'] / 1e9 / fma:.0f} %" if fma else "—"
        cells = [f"{t[s] * 1e6:.1f}" if s in t else "—" for s in systems]
        lines.append("| " + " | ".join([cfg.name, *cells, best or "—", ratio, fma_pct]) + " |")
    return lines + [""]



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the page here (markdown)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    args = parser.parse_args(argv)
    pin_to_one_cpu()
    t0 = time.perf_counter()
    lines = ["# Benchmarks: convolutional and residual networks against PyTorch and JAX", ""]
    body = []
    for dtype in args.dtypes:
        results = {cfg.name: run_config(cfg, dtype, args.rounds) for cfg in CONFIGS}
        body += table(results, dtype, fma_bound(dtype))
    body += ["## Work memory (float64, the C train step with SGD momentum)", "",
             "The C kernels' work buffer against the liveness lower bound of their schedule (the largest "
             "total size of intermediate values alive at once: `symnn.memory`); the train step keeps the "
             "gradient in its work, and its bound counts it from where each gradient is computed. "
             "PyTorch's peak is what one training step (loss, `backward`, `torch.optim.SGD` with momentum) "
             "allocates beyond the parameters, inputs and optimiser state that exist before it, from its "
             "profiler's memory timeline.", ""]
    for cfg in CONFIGS:
        momentum = sn.Momentum(lr=0.01, momentum=0.9)
        rows = work_table(cfg.build(), optimizer=momentum, n=cfg.batch)
        peak = torch_peak(cfg)
        body += [f"**{cfg.name}**", "", *format_table(rows, 8, cfg.batch)]
        train = rows[-1].work * 8
        if peak is not None:
            body += ["", f"PyTorch's peak for the same training step: {peak:,} bytes; symnn C's train-step work "
                         f"is {train / peak:.2f} of it."]
        body += ["", f"Freezing (the pruned backward graph): {_frozen_line(cfg, momentum, train)}", ""]
    lines += [f"Made by `python benchmarks/cnn_peers.py {' '.join(argv if argv is not None else sys.argv[1:])}` in "
              f"{time.perf_counter() - t0:.0f} s on {_cpu()}, Python {platform.python_version()}.", "",
              "Method, configurations and what each system computes: the docstring of "
              "`benchmarks/cnn_peers.py`. Ratios within one run are what count.", "", *body]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
