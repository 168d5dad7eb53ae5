"""Recurrent networks: symnn's loss-and-gradient call against PyTorch eager, JAX jit (``lax.scan``)
and PyTensor (``scan``), one thread, both dtypes, the same run (issue 23's configurations).

    SYMNN_CACHE_DIR=/tmp/benchcache python benchmarks/rnn_peers.py --sizes --out docs/benchmarks_rnn.md

Each system computes the mean squared error of one batch and its gradient with respect to every
parameter, from the same arrays, and the results are checked against symnn NumPy's before any
timing (1e-9 relative, by norm, in float64; float32: :func:`f32_tolerance`). symnn is timed
through the call a user makes, ``k.loss_and_grad(params, X, Y, out=grads)`` with ``params`` and
``grads`` from ``k.new_params`` (NumPy: without ``out=``); PyTorch through
``torch.autograd.grad`` of the loss of ``nn.LSTM`` / ``nn.GRU(batch_first=True)`` (eager, its own
fused cell) and ``F.linear``; JAX through ``jax.jit(jax.value_and_grad(loss))``, the recurrence a
``jax.lax.scan`` over the steps; PyTensor through the compiled ``pytensor.function`` of the loss
and ``pytensor.grad``, the recurrence a ``pytensor.scan`` (its default mode: C thunks). JAX and
PyTensor get the inputs' share of every gate for all steps as one product before the loop, as
symnn and PyTorch do. The process is pinned to one CPU and every library to one thread. Medians
of interleaved rounds (:func:`symnn.bench.interleaved`).

Configurations (batch-first (N, T, F) inputs, PyTorch's equations, gate order and layouts, zero
initial state, the last step's hidden state into a Dense(H, 1), MSE):

- ``lstm-seq``: LSTM(8 -> 64), T = 32, N = 32; issue 23's target: symnn C / fastest peer <= 0.5;
- ``gru-long``: GRU(16 -> 128), T = 256, N = 16; target <= 1.0.

"% of the FMA bound" divides the multiply-adds of the products (:meth:`Config.macs`: forward,
the state's gradient back through ``weight_hh`` and the weight gradients; the inputs' gradient,
which nobody needs, not counted) x 2 by the time and by the one-thread FMA bound that
``benchmarks/peers.py`` measures. The cold compile time is ``sn.compile(net, backend="c")`` of
``lstm-seq`` in a fresh process with an empty ``SYMNN_CACHE_DIR`` (derivation, emission and the C
compiler); issue 23's target is < 3 s.

float32 ``gru-long``: the gradient carried back through 256 steps of gates decays into float32's
subnormal range, and arithmetic on subnormals is many times slower on x86. JAX (XLA) flushes
subnormals to zero; symnn C, PyTorch and PyTensor compute them by default (PyTorch with
``torch.set_flush_denormal(True)`` ran this configuration ~6x faster here), so that row measures
subnormal handling more than the loop. ``symnn C flush`` is the same kernel compiled with
``sn.compile(..., flush_denormals=True)``: subnormals read and written as zero, as JAX runs; its
ratio is the like-for-like comparison with JAX there.

``symnn C any T``: the same network declared with ``sn.Input(None, F)``, its C kernel taking the
sequences' length at each call (sizes ``a*n*steps + b*n + c``): what one kernel for every T costs
against the kernel fixed at T.

``--sizes`` adds a table of the sizes around them (:data:`SIZES`: hidden sizes 20 to 256, one
that fills no vector evenly (100), T from 16 to 100, N from 1 to 128), symnn C against the same
peers, each checked against symnn NumPy first: how far the two tuned configurations speak for
the rest.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import symnn as sn  # noqa: E402
from symnn.bench import interleaved  # noqa: E402
from symnn.memory import format_table, work_table  # noqa: E402
from peers import _agree, fma_bound, pin_to_one_cpu, torch_step_peak  # noqa: E402  (the dense page's check and measures)
from report import _cpu  # noqa: E402

#: a system: one call that returns (loss, {parameter name: gradient})
System = Callable[[], tuple[float, dict[str, np.ndarray]]]


# -- one step of each cell, in PyTorch's equations, for any array library ------------------------
def _lstm_step(gi, gh, carry: Sequence, H: int, sigmoid, tanh) -> tuple:
    """PyTorch's LSTM step: gates i, f, g, o stacked in that order; carries (h, c)."""
    g = gi + gh
    i, f = sigmoid(g[:, :H]), sigmoid(g[:, H:2 * H])
    c = f * carry[1] + i * tanh(g[:, 2 * H:3 * H])
    return sigmoid(g[:, 3 * H:]) * tanh(c), c


def _gru_step(gi, gh, carry: Sequence, H: int, sigmoid, tanh) -> tuple:
    """PyTorch's GRU step: gates r, z, n; ``bias_hh``'s n part sits inside r * (...)."""
    r = sigmoid(gi[:, :H] + gh[:, :H])
    z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return ((1 - z) * n + z * carry[0],)


@dataclass(frozen=True)
class Cell:
    """What differs between the recurrent kinds: symnn's layer (whose ``GATES`` and ``CARRIED``
    say the stacked gates and the carried states), PyTorch's module and one step for the peers
    that are handed the recurrence (JAX, PyTensor)."""

    layer: type
    torch_module: str
    step: Callable[..., tuple]


LSTM = Cell(sn.LSTM, "LSTM", _lstm_step)
GRU = Cell(sn.GRU, "GRU", _gru_step)


@dataclass(frozen=True)
class Config:
    name: str
    cell: Cell
    features: int
    hidden: int
    steps: int
    batch: int
    #: issue 23's target for symnn C / fastest peer (None: a size measured without one)
    target: float | None = None

    @property
    def gates(self) -> int:
        return self.cell.layer.GATES * self.hidden

    def build(self, any_length: bool = False) -> sn.Network:
        """The network; ``any_length``: its length given at each call (``sn.Input(None, F)``), one
        kernel for every T, the same parameters."""
        x = sn.Input(None if any_length else self.steps, self.features, name="x")
        h = self.cell.layer(self.features, self.hidden, name="rnn")(x)
        y = sn.Dense(self.hidden, 1, name="fc")(h)
        suffix = "_any" if any_length else ""
        return sn.Network(inputs=x, outputs=y, loss="mse", name=f"b_{self.name.replace('-', '_')}{suffix}")

    def macs(self) -> int:
        """Multiply-adds of the products per sample: forward (the inputs' share of the gates,
        the state's, the head), the weight gradients (as many again) and the state's gradient
        back through ``weight_hh`` (T - 1 steps: the zero initial state needs none) and the
        head. Element-wise gate formulas are not counted."""
        T, F, H, G = self.steps, self.features, self.hidden, self.gates
        forward = T * G * (F + H) + H
        return 2 * forward + (T - 1) * G * H + H


CONFIGS = [
    Config("lstm-seq", LSTM, 8, 64, 32, 32, target=0.5),
    Config("gru-long", GRU, 16, 128, 256, 16, target=1.0),
]
#: the sizes around them a user trains (``--sizes``): no target, the same systems and checks, to
#: show where the ratio moves with the hidden size, the length and the batch (a tuned pair of
#: configurations says nothing of the rest); names say cell-F-H (F -> H), T, N
SIZES = [
    Config("lstm-8-32-T100-N8", LSTM, 8, 32, 100, 8),
    Config("lstm-8-64-T32-N1", LSTM, 8, 64, 32, 1),
    Config("lstm-16-100-T50-N16", LSTM, 16, 100, 50, 16),
    Config("lstm-32-128-T64-N64", LSTM, 32, 128, 64, 64),
    Config("lstm-64-256-T32-N32", LSTM, 64, 256, 32, 32),
    Config("gru-10-20-T16-N128", GRU, 10, 20, 16, 128),
    Config("gru-16-128-T32-N32", GRU, 16, 128, 32, 32),
]
#: the configuration whose cold C compile issue 23 bounds (< 3 s)
COMPILED = "lstm-seq"
PEERS = ("PyTorch", "JAX", "PyTensor")


def f32_tolerance(cfg: Config) -> float:
    """Relative error (by norm) a float32 system may show against symnn NumPy's float32.

    Both sides round every product and sum at unit roundoff u = 2**-24 ~ 6e-8, in different
    orders. A gradient entry comes out of T steps in sequence (forward, then back through
    time), each a dot product of F + H terms through gates whose derivatives are <= 1
    (sigmoid, tanh), so its rounding error is within the classical bound of a dot product of
    n = T * (F + H) terms, n * u: 1.4e-4 for lstm-seq, 2.2e-3 for gru-long. A wrong equation
    (gate order, a bias in the wrong place) is off by O(1); the systems measured here agree to
    ~1e-6."""
    u = float(np.finfo(np.float32).eps) / 2
    return cfg.steps * (cfg.features + cfg.hidden) * u


def tolerance(cfg: Config, dtype: str) -> float:
    return 1e-9 if dtype == "float64" else f32_tolerance(cfg)


def problem(cfg: Config, dtype: str):
    """The network, its parameters and the data (the same arrays go to every system)."""
    net = cfg.build()
    rng = np.random.default_rng(0)
    params = {k: v.astype(dtype) for k, v in net.init_params(seed=0).items()}
    X = rng.normal(size=(cfg.batch, cfg.steps, cfg.features)).astype(dtype)
    Y = rng.normal(size=(cfg.batch, 1)).astype(dtype)
    return net, params, X, Y


# -- peers ----------------------------------------------------------------------------------------
def _torch_module(cfg: Config, params: dict[str, np.ndarray], torch):
    """``nn.LSTM`` / ``nn.GRU(batch_first=True)`` holding ``params``' recurrent weights."""
    module = getattr(torch.nn, cfg.cell.torch_module)(cfg.features, cfg.hidden, batch_first=True,
                                                      dtype=torch.float64 if params["fc.bias"].dtype == np.float64
                                                      else torch.float32)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.from_numpy(params[f"rnn.{name}"]))
    return module


def torch_system(cfg: Config, params, X, Y) -> System:
    import torch

    torch.set_num_threads(1)
    F = torch.nn.functional
    module = _torch_module(cfg, params, torch)
    tp = {f"rnn.{k}": v for k, v in module.named_parameters()}
    tp.update({k: torch.tensor(params[k], requires_grad=True) for k in ("fc.weight", "fc.bias")})
    names = list(tp)
    tx, ty = torch.from_numpy(X), torch.from_numpy(Y)

    def run():
        _, state = module(tx)
        h = (state[0] if isinstance(state, tuple) else state)[-1]  # h_n of the last layer
        loss = F.mse_loss(F.linear(h, tp["fc.weight"], tp["fc.bias"]), ty)
        g = torch.autograd.grad(loss, [tp[k] for k in names])
        return float(loss.detach()), {k: v.numpy() for k, v in zip(names, g)}

    return run


def jax_system(cfg: Config, params, X, Y) -> System:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    H = cfg.hidden

    def loss(p, x, y):
        gi = x @ p["rnn.weight_ih_l0"].T + p["rnn.bias_ih_l0"]  # every step's input share at once

        def body(carry, g):
            gh = carry[0] @ p["rnn.weight_hh_l0"].T + p["rnn.bias_hh_l0"]
            return cfg.cell.step(g, gh, carry, H, jax.nn.sigmoid, jnp.tanh), None

        carry0 = tuple(jnp.zeros((x.shape[0], H), x.dtype) for _ in range(cfg.cell.layer.CARRIED))
        last, _ = jax.lax.scan(body, carry0, jnp.swapaxes(gi, 0, 1))
        out = last[0] @ p["fc.weight"].T + p["fc.bias"]
        return ((out - y) ** 2).mean()

    f = jax.jit(jax.value_and_grad(loss))
    jp = {k: jax.device_put(v) for k, v in params.items()}
    jx, jy = jax.device_put(X), jax.device_put(Y)

    def run():
        value, g = f(jp, jx, jy)
        value.block_until_ready()
        return float(value), {k: np.asarray(v) for k, v in g.items()}

    return run


def pytensor_system(cfg: Config, params, X, Y) -> System:
    import pytensor
    import pytensor.tensor as pt

    dtype, H, carried = X.dtype.name, cfg.hidden, cfg.cell.layer.CARRIED
    shared = {k: pytensor.shared(v, name=k) for k, v in params.items()}
    x, y = pt.tensor3("X", dtype=dtype), pt.matrix("Y", dtype=dtype)
    gi = x @ shared["rnn.weight_ih_l0"].T + shared["rnn.bias_ih_l0"]

    def body(g, *rest):
        carry, (w_hh, b_hh) = rest[:carried], rest[carried:]
        return list(cfg.cell.step(g, carry[0] @ w_hh.T + b_hh, carry, H, pt.sigmoid, pt.tanh))

    outs = pytensor.scan(body, sequences=[gi.dimshuffle(1, 0, 2)],
                         outputs_info=[pt.zeros((x.shape[0], H), dtype=dtype) for _ in range(carried)],
                         non_sequences=[shared["rnn.weight_hh_l0"], shared["rnn.bias_hh_l0"]],
                         return_list=True, return_updates=False)
    out = outs[0][-1] @ shared["fc.weight"].T + shared["fc.bias"]
    loss = ((out - y) ** 2).mean()
    names = list(params)
    fn = pytensor.function([x, y], [loss, *pytensor.grad(loss, [shared[k] for k in names])])
    fn.trust_input = True

    def run():
        got = fn(X, Y)
        return float(got[0]), dict(zip(names, got[1:]))

    return run


PEER_SYSTEMS: dict[str, Callable[..., System]] = {"PyTorch": torch_system, "JAX": jax_system,
                                                  "PyTensor": pytensor_system}


# -- the check, then the timing -------------------------------------------------------------------
def prepare(cfg: Config, dtype: str, peers: dict[str, Callable[..., System]] = PEER_SYSTEMS,
            backends: Sequence[str] = ("numpy", "c", "c-flush", "c-any")) -> dict:
    """Every system of ``cfg`` ready to time, each checked against symnn NumPy first.

    Returns ``{"systems": timed calls, "checks": relative errors, "setup": seconds to compile
    or trace each, "notes": peers left out (not installed)}``; raises AssertionError naming
    every system past :func:`tolerance`, so no figure is ever printed for a wrong result."""
    net, params, X, Y = problem(cfg, dtype)
    systems: dict[str, Callable[[], object]] = {}
    checks: dict[str, float] = {}
    setup: dict[str, float] = {}
    notes: list[str] = []
    ref = None
    for backend in backends:
        name = SYMNN_SYSTEMS[backend]
        compiled_for, flush, any_length = SYMNN_BUILDS[backend]
        t = time.perf_counter()
        built = cfg.build(any_length=True) if any_length else net  # T an argument of each call
        k = sn.compile(built, backend=compiled_for, dtype=dtype, flush_denormals=flush)
        setup[name] = time.perf_counter() - t
        out = {"out": k.new_params()} if backend != "numpy" else {}
        systems[name] = functools.partial(k.loss_and_grad, k.new_params(params), X, Y, **out)
        loss, grads = k.loss_and_grad(params, X, Y)
        got = (float(loss), {a: np.array(b) for a, b in grads.items()})
        ref = ref or got
        checks[name] = _agree(ref, got)
    for name, make in peers.items():
        t = time.perf_counter()
        try:
            fn = make(cfg, params, X, Y)
            got = fn()  # the first call traces / jit-compiles
        except ImportError as exc:
            notes.append(f"{name}: not installed ({exc})")
            continue
        setup[name] = time.perf_counter() - t
        checks[name] = _agree(ref, got)
        systems[name] = fn
    tol = tolerance(cfg, dtype)
    bad = {k: v for k, v in checks.items() if not v <= tol}
    if bad:
        raise AssertionError(f"{cfg.name} {dtype}: disagree with symnn NumPy beyond {tol:.1e}: {bad}")
    return {"systems": systems, "checks": checks, "setup": setup, "notes": notes}


#: symnn's timed systems, by the backend they compile for
SYMNN_SYSTEMS = {"numpy": "symnn NumPy", "c": "symnn C", "c-flush": "symnn C flush", "c-any": "symnn C any T"}
#: how each is built: (sn.compile's backend, flush_denormals: subnormals as zero as JAX runs,
#: the network declared with sn.Input(None, F): its length given at each call)
SYMNN_BUILDS = {"numpy": ("numpy", False, False), "c": ("c", False, False), "c-flush": ("c", True, False),
                "c-any": ("c", False, True)}


def run_config(cfg: Config, dtype: str, rounds: int, backends: Sequence[str] = tuple(SYMNN_SYSTEMS),
               timed_numpy: bool = True, peers: dict[str, Callable[..., System]] | None = None) -> dict:
    """``cfg``'s systems checked (:func:`prepare`), then timed; ``timed_numpy``: False leaves symnn
    NumPy, the checks' reference, untimed (slow at the larger sizes, and no one's peer)."""
    ready = prepare(cfg, dtype, PEER_SYSTEMS if peers is None else peers, backends)
    systems = ready.pop("systems")
    if not timed_numpy:
        systems.pop(SYMNN_SYSTEMS["numpy"], None)
    ready["times"] = interleaved(systems, rounds)
    return ready


def table(results: dict[str, dict], dtype: str, fma: float | None) -> list[str]:
    systems = [*SYMNN_SYSTEMS.values(), *PEERS]
    head = ["config", *systems, "fastest peer", "symnn C / fastest peer", "symnn C flush / fastest peer", "target",
            "% of FMA bound (symnn C)"]
    lines = [f"### {dtype}: median µs per loss-and-gradient call (one thread)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cfg in CONFIGS:
        t = results[cfg.name]["times"]
        peers = {k: v for k, v in t.items() if k in PEERS}
        best = min(peers, key=peers.get) if peers else None
        ratio = t["symnn C"] / peers[best] if best else None
        flushed = t["symnn C flush"] / peers[best] if best and "symnn C flush" in t else None
        flops = 2 * cfg.macs() * cfg.batch
        fma_pct = f"{100 * flops / t['symnn C'] / 1e9 / fma:.0f} %" if fma else "—"
        cells = [f"{t[s] * 1e6:.1f}" if s in t else "—" for s in systems]
        met = "—" if ratio is None or cfg.target is None else ("met" if ratio <= cfg.target else "**missed**")
        lines.append("| " + " | ".join([cfg.name, *cells, best or "—", f"**{ratio:.2f}**" if best else "—",
                                         f"**{flushed:.2f}**" if flushed is not None else "—",
                                         f"<= {cfg.target} ({met})", fma_pct]) + " |")
    lines += ["", "Largest relative error against symnn NumPy (loss and each gradient, by norm), checked "
              "before timing; one-time setup (compile, trace, jit) in seconds:", ""]
    for cfg in CONFIGS:
        r = results[cfg.name]
        errs = ", ".join(f"{k} {v:.1e}" for k, v in r["checks"].items())
        setup = ", ".join(f"{k} {v:.2f}" for k, v in r["setup"].items())
        lines.append(f"- {cfg.name} (tolerance {tolerance(cfg, dtype):.0e}): {errs}; setup: {setup}"
                     + "".join(f"; {n}" for n in r["notes"]))
    return lines + [""]


def sizes_table(results: dict[str, dict], dtype: str, fma: float | None) -> list[str]:
    """The ``--sizes`` configurations: symnn C (checked against symnn NumPy, which is not timed)
    against each peer, the ratio to the fastest."""
    head = ["config", "symnn C", *PEERS, "fastest peer", "symnn C / fastest peer", "% of FMA bound (symnn C)"]
    lines = [f"### {dtype}: other sizes, median µs per loss-and-gradient call (one thread)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    worst = 0.0
    for cfg in SIZES:
        t = results[cfg.name]["times"]
        peers = {k: v for k, v in t.items() if k in PEERS}
        best = min(peers, key=peers.get) if peers else None
        ratio = t["symnn C"] / peers[best] if best else None
        worst = max(worst, ratio or 0.0)
        fma_pct = f"{100 * 2 * cfg.macs() * cfg.batch / t['symnn C'] / 1e9 / fma:.0f} %" if fma else "—"
        cells = [f"{t[s] * 1e6:.1f}" if s in t else "—" for s in ("symnn C", *PEERS)]
        lines.append("| " + " | ".join([cfg.name, *cells, best or "—", f"**{ratio:.2f}**" if best else "—",
                                         fma_pct]) + " |")
    errs = "; ".join(f"{cfg.name} " + ", ".join(f"{k} {v:.1e}" for k, v in results[cfg.name]["checks"].items())
                     for cfg in SIZES)
    note = (f"Largest symnn C / fastest peer here: {worst:.2f}. Relative errors against symnn NumPy "
            f"(by norm), checked before timing: {errs}.")
    return [*lines, "", note, ""]


# -- memory and compile time ----------------------------------------------------------------------
def torch_peak(cfg: Config) -> int | None:
    """Bytes: PyTorch's peak of memory allocated during one training step of ``cfg`` (float64:
    loss, ``backward`` and ``torch.optim.SGD`` with momentum 0.9) beyond the tensors that exist
    before it, from the profiler's memory timeline (as ``benchmarks/cnn_peers.py``); None
    without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    F = torch.nn.functional
    _, params, X, Y = problem(cfg, "float64")
    module = _torch_module(cfg, params, torch)
    head = [torch.tensor(params[k], requires_grad=True) for k in ("fc.weight", "fc.bias")]
    opt = torch.optim.SGD([*module.parameters(), *head], lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(X), torch.from_numpy(Y)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        _, state = module(tx)
        h = (state[0] if isinstance(state, tuple) else state)[-1]
        F.mse_loss(F.linear(h, *head), ty).backward()
        opt.step()

    return torch_step_peak(step)


def compile_seconds(name: str, dtype: str) -> float:
    """Seconds of ``sn.compile(net, backend="c", dtype=dtype)`` of configuration ``name`` in this
    process (the caller gives it a fresh process and an empty cache: :func:`cold_compile`)."""
    net = next(c for c in CONFIGS if c.name == name).build()
    t = time.perf_counter()
    sn.compile(net, backend="c", dtype=dtype)
    return time.perf_counter() - t


def cold_compile(name: str, dtype: str) -> tuple[float, float]:
    """(cold, warm) seconds of the C compile of ``name``: a fresh Python process with an empty
    ``SYMNN_CACHE_DIR`` (nothing derived, emitted or built before; imports not counted), then a
    second fresh process on the cache the first left."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import rnn_peers; "
            f"print(rnn_peers.compile_seconds({name!r}, {dtype!r}))")
    with tempfile.TemporaryDirectory(prefix="symnn_cold_") as cache:
        env = {**os.environ, "SYMNN_CACHE_DIR": cache}
        times = [float(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                      text=True).stdout.split()[-1]) for _ in range(2)]
    return times[0], times[1]


def memory_section() -> list[str]:
    body = ["## Work memory (float64, the C train step with SGD momentum)", "",
            "The C kernels' work buffer against the liveness lower bound of their schedule (the largest "
            "total size of intermediate values alive at once: `symnn.memory`); the stored activations of "
            "the forward loop (what backpropagation through time reads) are part of both and grow with T. "
            "PyTorch's peak is what one training step (loss, `backward`, `torch.optim.SGD` with momentum) "
            "allocates beyond the parameters, inputs and optimiser state that exist before it, from its "
            "profiler's memory timeline.", ""]
    for cfg in CONFIGS:
        rows = work_table(cfg.build(), optimizer=sn.Momentum(lr=0.01, momentum=0.9), n=cfg.batch)
        peak = torch_peak(cfg)
        body += [f"**{cfg.name}**", "", *format_table(rows, 8, cfg.batch)]
        if peak is not None:
            train = rows[-1].work * 8
            body += ["", f"PyTorch's peak for the same training step: {peak:,} bytes; symnn C's train-step work "
                         f"is {train / peak:.2f} of it."]
        body.append("")
    return body


def compile_section(dtypes: Sequence[str]) -> list[str]:
    lines = [f"## Cold compile of `{COMPILED}` (C)", "",
             "`sn.compile(net, backend=\"c\")` in a fresh process with an empty `SYMNN_CACHE_DIR`: derivation, "
             "emission and the C compiler (imports not counted); then again in a fresh process on the cache "
             "the first left. Issue 23's target: < 3 s cold.", "",
             "| dtype | cold (s) | cached (s) |", "|---|---|---|"]
    for dtype in dtypes:
        cold, warm = cold_compile(COMPILED, dtype)
        lines.append(f"| {dtype} | {cold:.2f}{'' if cold < 3 else ' (**missed**)'} | {warm:.2f} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the page here (markdown)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--sizes", action="store_true",
                        help="also time symnn C against the peers at the sizes of SIZES")
    args = parser.parse_args(argv)
    pin_to_one_cpu()
    t0 = time.perf_counter()
    body = compile_section(args.dtypes)  # first: nothing of this process warms it (fresh processes anyway)
    for dtype in args.dtypes:
        results = {cfg.name: run_config(cfg, dtype, args.rounds) for cfg in CONFIGS}
        body += table(results, dtype, fma_bound(dtype))
        if args.sizes:
            sized = {cfg.name: run_config(cfg, dtype, args.rounds, ("numpy", "c"), timed_numpy=False)
                     for cfg in SIZES}
            body += sizes_table(sized, dtype, fma_bound(dtype))
    body += memory_section()
    lines = ["# Benchmarks: recurrent networks against PyTorch, JAX and PyTensor", "",
             f"Made by `SYMNN_CACHE_DIR=/tmp/benchcache python benchmarks/rnn_peers.py "
             f"{' '.join(argv or sys.argv[1:])}` "
             f"in {time.perf_counter() - t0:.0f} s on {_cpu()}, Python {platform.python_version()}.", "",
             "Method, configurations and what each column times: the docstring of `benchmarks/rnn_peers.py`. "
             "symnn NumPy and symnn C time the public call, `k.loss_and_grad(params, X, Y, out=grads)` with "
             "`params` and `grads` from `k.new_params` (NumPy without `out=`), every check included; PyTorch "
             "is eager `nn.LSTM`/`nn.GRU(batch_first=True)` with `torch.autograd.grad`; JAX is "
             "`jit(value_and_grad)` of a `lax.scan`; PyTensor is the compiled function of the loss and its "
             "`grad` through `pytensor.scan`. One thread, the process pinned to one CPU. Ratios within one "
             "run are what count. float32 gru-long: its gradient through 256 steps decays into float32's "
             "subnormal range, which JAX flushes to zero and the others compute at x86's subnormal "
             "penalty (the docstring); `symnn C flush` is symnn C compiled with `flush_denormals=True`, "
             "subnormals as zero as JAX runs. `symnn C any T` is the same network declared with "
             "`sn.Input(None, F)`: one C kernel for every sequence length, T an argument of each call.",
             "", *body]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
