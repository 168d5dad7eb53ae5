"""Data-parallel training on Dask against single-process training (issue 24, item 4). From the
repo root:

    python benchmarks/scale_out.py --out docs/benchmarks_scale_out.md --json benchmarks/scale_out_measured.json

Throughput is training samples per second of whole epochs of the emitted C train step
(float64 and float32), for four systems trained from the same initial parameters:

- ``one process``: ``sn.train``'s classic step (a global shuffle, one ``train_step`` call per
  batch);
- ``parts=2``: ``sn.train(..., parts=2)`` without a client: every step is a block of each of two
  parts, two ``train_gradient`` calls summed along the fixed tree, then ``apply_gradient`` (the
  single-process reference of a data-parallel run);
- ``Dask 1 worker`` and ``Dask 2 workers``: ``sn.train(..., parts=2, client=c)`` on a
  LocalCluster of 1 or 2 worker processes (``processes=True``, one thread each), started once
  for the whole run and passed as a ``distributed.Client``, so that cluster start-up is not in
  the figures (it is reported apart). The parts stay in the worker processes and each worker
  runs one Dask actor; a step is one actor call per worker with theta inside it (the calls,
  the gathering of the tree's nodes, the tree sum and the update on the driver): no task.

The three block systems use the same two parts, so they give the same parameters bit for bit:
after the warm-up epoch the script compares them and stops before printing any figure if they
differ. Each system is driven through ``sn.train``'s own step strategies (the private
``symnn.train._steps``), opened once, so that what is timed is epochs only: the one-time costs
(compile in this process, placing the parts on the workers and loading the kernel there, the
first epoch) are reported apart. Rounds are interleaved (every system timed in each round, so a
slow phase of this shared machine hits them all alike); a sample is whole epochs, as many as
make about 0.1 s; the figure is the median over rounds.

The step-time breakdown (on the 2-worker cluster) times the pieces of one Dask step
separately, against the measured step (epoch time / steps): the kernel on one block (B/2 rows:
what each worker computes), the classic ``train_step`` on B rows, the update on the driver, and
what a step's actor calls cost, on actors of the same kind as the step's (one per worker,
made for the measurement): an empty call's round trip (``actor.noop().result()``, o in the
model), both workers' actors called at once and waited for (the second one's extra is tau, the
cost of each further actor), a call that carries theta out and brings a gradient-sized vector
(n_params + 1 values) back (an empty call plus a step's payload), and the driver process's CPU
time per empty call (``time.process_time``: the work the driver, and with a LocalCluster the
scheduler in the same process, does per call in one event loop, so in turn for W calls). An
actor's calls pass through the scheduler, which forwards them to the worker (Dask's
``proxy``), unless the Client was made with ``direct_to_workers=True``: the benchmark's Client
is a default one, as ``sn.train(client="local:N")``'s is, and ``empty actor call, direct
client`` is the same call through a second Client made with ``direct_to_workers=True``, for
comparison, as is an empty task's round trip (``client.submit(f, pure=False).result()``, what a
step cost when it was one task per worker). ``benchmarks/scale_out_model.py`` builds its model
of W machines on these figures.

Configurations: ``digits`` is ``symnn demo``'s 64-32-10 relu/softmax network on the bundled
UCI digits (1,797 rows, standardised), batch 32 and 512; ``mnist`` is the 784-128-10
relu/softmax MLP of ``benchmarks/peers.py`` on synthetic data (``--mnist-rows``, 60,000 by
default), batch 256 and 4096. SGD with momentum (lr 0.01, momentum 0.9).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import symnn as sn  # noqa: E402
from symnn import datasets  # noqa: E402
from symnn.bench import sample  # noqa: E402
from symnn.fileio import write_atomic  # noqa: E402
from report import _cpu  # noqa: E402

#: the systems, in the tables' order; the value is (Dask workers or None, parts or None)
SYSTEMS: dict[str, tuple[int | None, int | None]] = {
    "one process": (None, None),
    "parts=2": (None, 2),
    "Dask 1 worker": (1, 2),
    "Dask 2 workers": (2, 2),
}
BASELINE = "one process"
#: seconds of epochs per timing sample
SAMPLE_SECONDS = 0.1


@dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple[int, ...]
    batches: tuple[int, ...]
    #: None: the bundled digits; else rows of synthetic data
    rows: int | None = None

    def network(self) -> sn.Network:
        acts = ["relu"] * (len(self.sizes) - 2) + ["softmax"]
        return sn.Network([sn.Dense(a, b, act) for a, b, act in zip(self.sizes, self.sizes[1:], acts)],
                          loss="cross_entropy", name=f"so_{self.name}")

    @property
    def n_params(self) -> int:
        return sum(a * b + b for a, b in zip(self.sizes, self.sizes[1:]))


CONFIGS = [
    Config("digits", (64, 32, 10), (32, 512)),
    Config("mnist", (784, 128, 10), (256, 4096), rows=60_000),
]


def data(cfg: Config, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The training rows: the standardised digits, or seeded synthetic mnist-shaped data."""
    if cfg.rows is None:
        X, y = datasets.load_digits()
        X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)
    else:
        rng = np.random.default_rng(0)
        X = rng.normal(size=(cfg.rows, cfg.sizes[0]))
        y = rng.integers(0, cfg.sizes[-1], cfg.rows)
    return X.astype(dtype), np.asarray(y, dtype=np.int64)


def optimizer() -> sn.Momentum:
    return sn.Momentum(lr=0.01, momentum=0.9)


# -- one system: sn.train's step strategy, opened once ---------------------------------------------
@dataclass
class Trainer:
    """One system's training run, epoch by epoch, through ``sn.train``'s own step strategy."""

    kernel: Any
    steps: Any
    theta: np.ndarray
    state: np.ndarray
    #: the training rows in the kernel's layout (what the classic step trains on)
    x: np.ndarray
    y: np.ndarray
    epochs: int = 0
    step: int = 0
    losses: list[float] = field(default_factory=list)

    def epoch(self) -> None:
        self.epochs += 1
        loss, self.step = self.steps.epoch(self.epochs, self.theta, self.state, self.step)
        self.losses.append(loss)

    @property
    def steps_per_epoch(self) -> int:
        schedule = getattr(self.steps, "schedule", None)
        return schedule.steps_per_epoch if schedule is not None else len(self.steps.bounds)

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


@contextlib.contextmanager
def trainer(kernel: Any, X: np.ndarray, y: np.ndarray, *, client: Any = None, parts: int | None = None,
            batch_size: int, seed: int = 0) -> Iterator[Trainer]:
    """The state ``sn.train(net, X, y, kernel=kernel, client=client, parts=parts,
    batch_size=batch_size, seed=seed)`` trains, with its parts placed (on the cluster, if any)
    for the block; each :meth:`Trainer.epoch` is one more epoch of that call (the test checks
    that ``epochs`` of them equal ``sn.train(..., epochs=epochs)`` bit for bit)."""
    training = importlib.import_module("symnn.train")  # the module (``symnn.train`` is also the function)

    plan = training._parallel_plan(X, y, client, parts, 0.0, False)
    x_tr = kernel.inputs(X)
    y_tr = kernel.targets(y, x_tr.shape[0])
    if y_tr.dtype.kind == "i" and kernel.backend == "c":
        y_tr = y_tr.astype(np.int32)
    theta = kernel.pack(kernel.network.init_params(seed=seed, dtype=str(kernel.dtype)))
    state = kernel.init_state()
    rng = np.random.default_rng(seed)
    with training._steps(plan, kernel, X, y, x_tr, y_tr, batch_size, seed, rng) as steps:
        yield Trainer(kernel, steps, theta, state, x_tr, y_tr)


# -- a configuration: throughput of every system ----------------------------------------------------
def compile_kernel(cfg: Config, dtype: str) -> tuple[Any, float]:
    t = time.perf_counter()
    kernel = sn.compile(cfg.network(), backend="c", dtype=dtype, optimizer=optimizer())
    return kernel, time.perf_counter() - t


def measure(cfg: Config, dtype: str, batch: int, clients: Mapping[int, Any], rounds: int,
            kernel: Any = None, X: np.ndarray | None = None, y: np.ndarray | None = None,
            sample_seconds: float = SAMPLE_SECONDS) -> dict:
    """Samples per second of every system of :data:`SYSTEMS` whose cluster is in ``clients``
    (workers -> Client), with the one-time costs and the step-time breakdown.

    Raises AssertionError if the block systems' parameters differ after the first epoch."""
    if kernel is None:
        kernel, _ = compile_kernel(cfg, dtype)
    if X is None or y is None:
        X, y = data(cfg, dtype)
    systems = {name: spec for name, spec in SYSTEMS.items() if spec[0] is None or spec[0] in clients}
    setup: dict[str, float] = {}
    first: dict[str, float] = {}
    samples: dict[str, list[float]] = {name: [] for name in systems}
    with contextlib.ExitStack() as stack:
        runs: dict[str, Trainer] = {}
        for name, (workers, parts) in systems.items():
            t = time.perf_counter()
            runs[name] = stack.enter_context(trainer(kernel, X, y, client=clients.get(workers), parts=parts,
                                                     batch_size=batch))
            setup[name] = time.perf_counter() - t
        for name, run in runs.items():  # the warm-up epoch, and the check
            t = time.perf_counter()
            run.epoch()
            first[name] = time.perf_counter() - t
        blocks = [name for name, (_, parts) in systems.items() if parts is not None]
        differ = [name for name in blocks if not np.array_equal(runs[name].theta, runs[blocks[0]].theta)]
        if differ:
            raise AssertionError(f"{cfg.name} {dtype} batch {batch}: {differ} trained other parameters than "
                                 f"{blocks[0]} from the same parts")
        per_sample = {name: max(1, math.ceil(sample_seconds / first[name])) for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                t = time.perf_counter()
                for _ in range(per_sample[name]):
                    run.epoch()
                samples[name].append(per_sample[name] * run.rows / (time.perf_counter() - t))
        epoch_seconds = {name: runs[name].rows / statistics.median(v) for name, v in samples.items()}
        biggest = max(clients) if clients else None  # the breakdown's cluster: the largest
        on = next((n for n, (workers, _) in systems.items() if biggest is not None and workers == biggest), "parts=2")
        pieces = breakdown(runs[on], clients.get(biggest), batch, epoch_seconds)
    throughput = {name: statistics.median(v) for name, v in samples.items()}
    return {"throughput": throughput, "setup": setup, "first_epoch": first, "breakdown": pieces,
            "steps_per_epoch": runs[BASELINE].steps_per_epoch, "rows": runs[BASELINE].rows}


def _noop() -> int:
    return 0


class Echo:
    """A Dask actor like the step's (one per worker, methods run in the worker's actor thread)
    that computes nothing: what an actor call costs, apart from the step's computation."""

    def noop(self) -> int:
        return 0

    def echo(self, theta: np.ndarray, n: int) -> np.ndarray:
        """Takes theta and gives back n values, as a step takes theta and gives back its nodes."""
        return np.zeros(n, dtype=theta.dtype)


@contextlib.contextmanager
def echo_actors(client: Any) -> Iterator[list[Any]]:
    """One :class:`Echo` actor on each of ``client``'s workers (in worker order), for the block.
    A handle calls through the client it was made under: its scheduler's proxy, or straight to
    the worker when that client has ``direct_to_workers``."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    futures = [client.submit(Echo, workers=[w], actor=True, pure=False) for w in workers]
    try:
        with client.as_current():  # an actor's handle binds the client current where it is made
            actors = [f.result() for f in futures]
        yield actors
    finally:
        client.cancel(futures)


def cpu_per_call(fn: Callable[[], object], min_time: float = 0.02) -> float:
    """This process's CPU seconds (all its threads: the client's event loop, and a LocalCluster's
    scheduler) per call of ``fn``, from a run of at least ``min_time`` wall seconds."""
    n = 1
    while True:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        if time.perf_counter() - wall >= min_time:
            return (time.process_time() - cpu) / n
        n *= 2


def actor_calls(client: Any, theta: np.ndarray, n_values: int) -> dict[str, float]:
    """Seconds per call of an actor call in its forms (see the module docstring), through
    ``client`` as the step's calls go, and an empty call through a ``direct_to_workers`` Client
    and an empty task's round trip for comparison."""
    import distributed

    out: dict[str, float] = {}
    with echo_actors(client) as actors:
        first = actors[0]
        out["empty actor call"] = sample(lambda: first.noop().result())
        if len(actors) > 1:
            out["2 actors at once"] = sample(lambda: [f.result() for f in [a.noop() for a in actors[:2]]])
        out["actor call, theta out, gradient back"] = sample(lambda: first.echo(theta, n_values).result())
        out["driver CPU per actor call"] = cpu_per_call(lambda: first.noop().result())
    with distributed.Client(client.scheduler.address, direct_to_workers=True, set_as_default=False) as direct, \
            echo_actors(direct) as actors:
        out["empty actor call, direct client"] = sample(lambda: actors[0].noop().result())
    out["empty task round trip"] = sample(lambda: client.submit(_noop, pure=False).result())
    return out


def breakdown(run: Trainer, client: Any, batch: int, epoch_seconds: Mapping[str, float]) -> dict[str, float]:
    """Seconds per step of the pieces of a data-parallel step on ``run``'s system."""
    module = run.kernel.module
    theta, state = run.theta.copy(), run.state.copy()
    n_parts = len(run.steps.schedule.sizes) if hasattr(run.steps, "schedule") else 1
    x, y = _some_rows(run, batch)
    block = max(1, batch // n_parts)
    loss, grad = module._train_gradient(theta, x[:block], y[:block], 1)
    out = {
        "kernel, one block": sample(lambda: module._train_gradient(theta, x[:block], y[:block], 1)),
        "train_step, whole batch": sample(lambda: module._train_step(theta, state, x[:batch], y[:batch], 1)),
        "update on the driver": sample(lambda: module._apply_gradient(theta, state, grad, 1, loss)),
    }
    if client is not None:
        out.update(actor_calls(client, theta, run.kernel.n_params + 1))
    steps = run.steps_per_epoch
    out.update({f"step, {name}": seconds / steps for name, seconds in epoch_seconds.items()})
    return out


def _some_rows(run: Trainer, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` training rows in the kernel's layout (the first rows of the data, repeated if short)."""
    x, y = run.x, run.y
    reps = math.ceil(batch / x.shape[0])
    return np.concatenate([x] * reps)[:batch], np.concatenate([y] * reps)[:batch]


# -- clusters, tables, main -----------------------------------------------------------------------
@contextlib.contextmanager
def local_clients(counts: Sequence[int],
                  processes: bool = True) -> Iterator[tuple[dict[int, Any], dict[int, float]]]:
    """A LocalCluster and its Client per worker count (one thread per worker, one BLAS thread),
    open for the block, with each one's start-up seconds."""
    import distributed

    from symnn.distributed.cluster import _worker_env

    clients: dict[int, Any] = {}
    started: dict[int, float] = {}
    with contextlib.ExitStack() as stack:
        # the scheduler's HTTP server (health checks) takes another port when 8787 is taken: say nothing
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="Port 8787 is already in use", category=UserWarning)
        for n in counts:
            t = time.perf_counter()
            extra = {"env": _worker_env()} if processes else {}
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=processes, dashboard_address=":0",
                silence_logs=40, **extra))
            clients[n] = stack.enter_context(distributed.Client(cluster, set_as_default=False))
            started[n] = time.perf_counter() - t
        yield clients, started


def per_sample_seconds(result: Mapping) -> float:
    """Seconds of kernel time per training sample: one block's gradient over its rows."""
    return result["breakdown"]["kernel, one block"] / max(1, result["batch"] // 2)


def throughput_table(results: Sequence[dict], dtype: str, rounds: int) -> list[str]:
    names = list(SYSTEMS)
    ratios = [n for n in names if n != BASELINE]
    head = ["config", "batch", "steps / epoch", *names, *(f"{n} / {BASELINE}" for n in ratios),
            "Dask 2 workers / Dask 1 worker"]
    lines = [f"### {dtype}: training samples per second (median of {rounds} rounds, warm-up epoch excluded)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in (r for r in results if r["dtype"] == dtype):
        t = r["throughput"]
        cells = [f"{t[n]:,.0f}" if n in t else "—" for n in names]
        cells += [f"**{t[n] / t[BASELINE]:.3f}**" if n in t else "—" for n in ratios]
        two, one = t.get("Dask 2 workers"), t.get("Dask 1 worker")
        cells.append(f"**{two / one:.2f}**" if two and one else "—")
        lines.append("| " + " | ".join([r["config"], str(r["batch"]), str(r["steps_per_epoch"]), *cells]) + " |")
    return lines + [""]


BREAKDOWN = ("kernel, one block", "train_step, whole batch", "update on the driver", "empty actor call",
             "2 actors at once", "actor call, theta out, gradient back", "driver CPU per actor call",
             "empty actor call, direct client", "empty task round trip")


def breakdown_table(results: Sequence[dict]) -> list[str]:
    steps = [f"step, {n}" for n in SYSTEMS]
    head = ["config", "dtype", "batch", *BREAKDOWN, *steps, "kernel µs / sample"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        b = r["breakdown"]
        cells = [f"{b[k] * 1e6:,.0f}" if k in b else "—" for k in (*BREAKDOWN, *steps)]
        lines.append("| " + " | ".join([r["config"], r["dtype"], str(r["batch"]), *cells,
                                         f"{per_sample_seconds(r) * 1e6:.2f}"]) + " |")
    return lines + [""]


def costs_table(results: Sequence[dict], compiled: Mapping[tuple[str, str], float]) -> list[str]:
    names = list(SYSTEMS)
    head = ["config", "dtype", "batch", "compile (s)", *(f"setup {n} (s)" for n in names),
            *(f"first epoch {n} (s)" for n in names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [f"{r[key][n]:.3f}" if n in r[key] else "—" for key in ("setup", "first_epoch") for n in names]
        lines.append("| " + " | ".join([r["config"], r["dtype"], str(r["batch"]),
                                         f"{compiled[r['config'], r['dtype']]:.2f}", *cells]) + " |")
    return lines + [""]


def run_all(configs: Sequence[Config], dtypes: Sequence[str], clients: Mapping[int, Any], rounds: int,
            sample_seconds: float = SAMPLE_SECONDS) -> tuple[list[dict], dict[tuple[str, str], float]]:
    results: list[dict] = []
    compiled: dict[tuple[str, str], float] = {}
    for cfg in configs:
        for dtype in dtypes:
            kernel, compiled[cfg.name, dtype] = compile_kernel(cfg, dtype)
            X, y = data(cfg, dtype)
            for batch in cfg.batches:
                r = measure(cfg, dtype, batch, clients, rounds, kernel, X, y, sample_seconds)
                r.update(config=cfg.name, dtype=dtype, batch=batch, n_params=cfg.n_params)
                results.append(r)
                print(cfg.name, dtype, batch, {k: f"{v:,.0f}" for k, v in r["throughput"].items()}, flush=True)
    return results, compiled


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the page here (markdown)")
    parser.add_argument("--json", type=Path, help="write the raw figures here (benchmarks/scale_out_model.py "
                                                 "--measured reads them)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--configs", nargs="+", default=[c.name for c in CONFIGS])
    parser.add_argument("--mnist-rows", type=int, default=60_000)
    args = parser.parse_args(argv)
    configs = [Config(c.name, c.sizes, c.batches, args.mnist_rows if c.rows else None)
               for c in CONFIGS if c.name in args.configs]
    t0 = time.perf_counter()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="symnn_scale_out_") as cache:
        os.environ["SYMNN_CACHE_DIR"] = cache  # a cold compile; set before the workers start: they inherit it
        with local_clients((1, 2)) as (clients, started):
            results, compiled = run_all(configs, args.dtypes, clients, args.rounds)
    command = "python benchmarks/scale_out.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# Benchmarks: data-parallel training on Dask against one process", "",
             f"Made by `{command.strip()}` in {time.perf_counter() - t0:.0f} s on {_cpu()}, "
             f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}; load average "
             f"{load[0]:.2f} when it started, {os.getloadavg()[0]:.2f} when it ended (a machine shared with "
             "other work: ratios within one run are what count).", "",
             "Method and systems: the docstring of `benchmarks/scale_out.py`. The C train step, SGD with "
             "momentum; `parts=2` and both Dask systems train on the same two parts and give the same "
             "parameters bit for bit (checked after the warm-up epoch). Start-up of the LocalClusters "
             "(processes, one thread per worker), not timed in the figures: "
             + ", ".join(f"{n} worker{'s' if n > 1 else ''} {s:.2f} s" for n, s in started.items()) + ".", ""]
    for dtype in args.dtypes:
        lines += throughput_table(results, dtype, args.rounds)
    lines += ["### Step-time breakdown (µs per step; Dask figures on the 2-worker cluster)", "",
              "`kernel, one block`: `train_gradient` on B/2 rows (what each worker computes per step); "
              "`train_step, whole batch`: the classic step on B rows; `update on the driver`: "
              "`apply_gradient`; `empty actor call`: an actor method that does nothing, called and waited "
              "for (`actor.noop().result()`), through the benchmark's default Client as the step's calls go "
              "(the scheduler forwards them to the worker); `2 actors at once`: both workers' actors called "
              "together and waited for; `actor call, theta out, gradient back`: a call that takes theta and "
              "returns n_params + 1 values; `driver CPU per actor call`: this process's CPU time per empty "
              "call (the client's event loop and the LocalCluster's scheduler); `empty actor call, direct "
              "client`: the empty call through a Client made with `direct_to_workers=True` (no scheduler on "
              "the way); `empty task round trip`: `client.submit(f, pure=False).result()` (a step was one "
              "task per worker before the actors); `step, ...`: each system's measured epoch time / steps "
              "per epoch. `kernel µs / sample`: the block's time over its rows.", "",
              *breakdown_table(results),
              "### One-time costs (s)", "",
              "`compile`: `sn.compile(net, backend=\"c\", optimizer=...)` in this process, on an empty "
              "cache; `setup`: placing the parts (scattered to the workers, made ready and kept in the "
              "worker processes, the kernel loaded there from the cache) and starting one actor per "
              "worker; `first epoch`: the warm-up epoch.", "",
              *costs_table(results, compiled)]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_atomic(args.out, text + "\n")
    if args.json:
        raw = {"cpu": _cpu(), "results": results, "compile": {f"{c} {d}": s for (c, d), s in compiled.items()},
               "cluster_start": started}
        write_atomic(args.json, json.dumps(raw, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
