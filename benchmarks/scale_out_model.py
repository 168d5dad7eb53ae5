"""A model of data-parallel step time on W machines, built on measured figures (issue 24, item 4).

    python benchmarks/scale_out_model.py [--measured benchmarks/scale_out_measured.json] [--out FILE]

prints the tables of docs/scale_out.md's "A model of step time on W machines" from the figures
``benchmarks/scale_out.py --json`` measured (the file in the repository is the run behind
docs/benchmarks_scale_out.md), so that every number there can be recomputed.

One global batch of B samples per step, W machines with one worker each (one core at the
measured speed), n parameters of ``bytes`` = 8 (float64) or 4 (float32) bytes each:

- **one machine**: T1(B) = c B + u, with c the kernel's seconds per sample (train_gradient on a
  block, measured) and u the optimiser update (apply_gradient, measured per parameter);
- **Dask, driver-centred** (what ``sn.train(client=...)`` does): T(W, B) = c B / W + o +
  (W - 1) tau + comm + u, where tau is each further task's cost at the central scheduler
  (measured: 100 tasks at once) and o one step's latency, which depends on how the step sends
  theta (n ``bytes``-byte values, ``theta.nbytes``): up to ``ClusterSteps.INLINE_BYTES``
  (read from symnn/distributed/executor.py; 1 MiB) theta rides inside each of the step's W
  tasks, and o is an empty task's round trip (measured); above it theta is scattered once a
  step, and o adds the scatter's own cost (measured on the benchmark's theta, a fixed cost:
  the bytes are in comm). comm = W (theta + gradient) bytes / bandwidth + h latency, the bytes
  of one step through the busiest link, sent one after the other: inline, the driver sends
  theta once per task (W copies out of its link; the tasks pass through the scheduler, which
  this counts as the driver's link, as when it runs on the driver's machine) and h = 2 (the
  tasks out, the gradients back); scattered, theta goes to one worker and the W - 1 others
  fetch it from there (W copies, counted as one link's) and h = 3 (scatter, fetch, gather).
  Either way the W gradients (the tree's nodes, n + 1 values each) come back through the
  driver's link, so it carries about 2 W gradient-sized messages a step. Not in o: pickling
  theta into the W tasks on the driver and out of them on the workers (a memory copy each,
  the benchmark's theta at most 0.8 MB); the check table (:func:`check`) shows what the model
  leaves out on the measured steps;
- **ring all-reduce** (Horovod, ``torch.distributed`` with NCCL/Gloo): every worker keeps theta
  and applies the update itself; T(W, B) = c B / W + 2 (W - 1) / W n bytes / bandwidth +
  2 (W - 1) latency + u, and no scheduler in the loop.

The speed-up is S = T1(B) / T(W, B). Every term but c B / W is independent of B, so S > k holds
from a batch size on, in closed form (:func:`min_batch`): c B (1 - k / W) > k R - u, with R the
step's B-independent seconds. The tables give that batch for k = 1 (data parallelism pays at
all) and k = W / 2 (it uses at least half of the W machines), at least W (one sample per worker).

The networks: the digits MLP (64-32-10) and the mnist MLP (784-128-10) with their measured c;
a 10M-parameter MLP (784-2048-2048-2048-10) whose c is the mnist MLP's scaled by the ratio of
their multiply-adds per sample (the same GFLOP/s as the mnist MLP's kernel reached: larger
products usually run faster, so this is on the slow side).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from symnn.distributed.executor import ClusterSteps  # noqa: E402  (no Dask import: the constant only)

MEASURED = ROOT / "benchmarks" / "scale_out_measured.json"
WORKERS = (2, 4, 8, 16, 32, 64)
DTYPE_BYTES = {"float64": 8, "float32": 4}


@dataclass(frozen=True)
class Mlp:
    name: str
    sizes: tuple[int, ...]
    #: the configuration of benchmarks/scale_out.py whose measured c it takes (None: scaled from ``scaled_from``)
    measured: str | None
    scaled_from: str | None = None

    @property
    def n_params(self) -> int:
        return sum(a * b + b for a, b in zip(self.sizes, self.sizes[1:]))

    @property
    def flops_per_sample(self) -> int:
        """Multiply-adds x 2 of the three products per layer (no input gradient for the first)."""
        return sum((4 if i == 0 else 6) * a * b for i, (a, b) in enumerate(zip(self.sizes, self.sizes[1:])))


NETWORKS = (
    Mlp("digits MLP", (64, 32, 10), "digits"),
    Mlp("mnist MLP", (784, 128, 10), "mnist"),
    Mlp("10M MLP", (784, 2048, 2048, 2048, 10), None, scaled_from="mnist"),
)


@dataclass(frozen=True)
class Link:
    """A network: bytes per second each way through one machine's link, and one message's latency."""

    name: str
    bandwidth: float
    latency: float


TEN_GBE = Link("10 GbE (1.25 GB/s, 50 µs)", 1.25e9, 50e-6)


@dataclass(frozen=True)
class Inputs:
    """What the model needs from a measurement, for one dtype."""

    dtype: str
    #: kernel seconds per sample, by measured configuration
    per_sample: Mapping[str, float]
    #: update seconds per parameter
    update_per_param: float
    #: an empty task's round trip: one Dask step's latency when theta rides in the tasks
    round_trip: float
    #: the scatter of theta, which a step's latency adds when theta is scattered
    scatter: float
    #: seconds per further task at the scheduler
    dask_task: float

    def step_latency(self, theta_bytes: int) -> float:
        """o: one Dask step's latency with a theta of ``theta_bytes`` bytes."""
        return self.round_trip + (self.scatter if scatters(theta_bytes) else 0.0)


def scatters(theta_bytes: int) -> bool:
    """Whether a cluster step scatters theta rather than sending it inside its tasks: the
    executor's own rule (``ClusterSteps._try_step``), on its own constant."""
    return theta_bytes > ClusterSteps.INLINE_BYTES


def load(path: Path = MEASURED) -> dict:
    return json.loads(Path(path).read_text())


def inputs(raw: Mapping, dtype: str) -> Inputs:
    """The model's inputs from ``benchmarks/scale_out.py --json``'s figures: per configuration
    its largest batch (the kernel's steady rate), Dask's latencies as the median over every run."""
    rows = [r for r in raw["results"] if r["dtype"] == dtype]
    wanted = {net.measured for net in NETWORKS if net.measured} | {net.scaled_from for net in NETWORKS} - {None}
    missing = wanted - {r["config"] for r in rows}
    if missing:
        raise ValueError(f"the measurement has no {dtype} run of {sorted(missing)}: run benchmarks/scale_out.py "
                         "with every configuration and dtype")
    per_sample: dict[str, float] = {}
    update: list[float] = []
    for r in rows:
        if r["batch"] == max(x["batch"] for x in rows if x["config"] == r["config"]):
            per_sample[r["config"]] = r["breakdown"]["kernel, one block"] / max(1, r["batch"] // 2)
            update.append(r["breakdown"]["update on the driver"] / r["n_params"])
    every = [r["breakdown"] for r in raw["results"]]
    return Inputs(dtype, per_sample, max(update),
                  round_trip=statistics.median(b["empty task round trip"] for b in every),
                  scatter=statistics.median(b["scatter theta"] for b in every),
                  dask_task=statistics.median(b["per task, 100 at once"] for b in every))


class Transport(enum.Enum):
    """How a step's gradients are summed and theta shared; the value is the tables' title."""

    DASK = "Dask, driver-centred (sn.train(client=...))"
    RING = "ring all-reduce"


class Model:
    """Step times of one network under one set of measured inputs on one link."""

    def __init__(self, net: Mlp, given: Inputs, link: Link = TEN_GBE) -> None:
        if net.measured is not None:
            self.c = given.per_sample[net.measured]
        else:
            base = next(n for n in NETWORKS if n.measured == net.scaled_from)
            self.c = given.per_sample[base.measured] * net.flops_per_sample / base.flops_per_sample
        self.net, self.given, self.link = net, given, link
        self.u = given.update_per_param * net.n_params
        #: theta's bytes (what the executor compares with INLINE_BYTES) and a gradient's (n + 1 values)
        self.theta_bytes = DTYPE_BYTES[given.dtype] * net.n_params
        self.bytes = DTYPE_BYTES[given.dtype] * (net.n_params + 1)

    def one(self, batch: float) -> float:
        return self.c * batch + self.u

    def fixed(self, transport: Transport, w: int) -> float:
        """The step's seconds that do not depend on the batch size (the update included)."""
        link = self.link
        if transport is Transport.DASK:
            hops = 3 if scatters(self.theta_bytes) else 2
            comm = w * (self.theta_bytes + self.bytes) / link.bandwidth + hops * link.latency
            return self.given.step_latency(self.theta_bytes) + (w - 1) * self.given.dask_task + comm + self.u
        return 2 * (w - 1) / w * self.bytes / link.bandwidth + 2 * (w - 1) * link.latency + self.u

    def step(self, transport: Transport, w: int, batch: float) -> float:
        return self.c * batch / w + self.fixed(transport, w)

    def speedup(self, transport: Transport, w: int, batch: float) -> float:
        return self.one(batch) / self.step(transport, w, batch)

    def min_batch(self, transport: Transport, w: int, k: float) -> int:
        """The smallest global batch (>= w, one sample per worker) with speed-up > k (k < w)."""
        return min_batch(self.c, self.u, self.fixed(transport, w), w, k)


def min_batch(c: float, u: float, fixed: float, w: int, k: float) -> int:
    """The smallest integer B >= w with (c B + u) / (c B / w + fixed) > k, for k < w."""
    if not k < w:
        raise ValueError("a speed-up of W or more on W machines is out of reach")
    bound = (k * fixed - u) / (c * (1 - k / w))
    return max(w, math.floor(bound) + 1)




#: Dask's own figure for its per-task overhead, "about 1ms" (https://distributed.dask.org/en/latest/,
#: "Low latency"): a step then costs one such (the task; two with a scattered theta) plus 1 ms per further task
DOCUMENTED_TASK = 1e-3


def scenarios(given: Inputs) -> list[tuple[str, Transport, Inputs]]:
    """The tables' cases: Dask as measured here, Dask at its documented overhead, a ring all-reduce."""
    documented = dataclasses.replace(given, round_trip=DOCUMENTED_TASK, scatter=DOCUMENTED_TASK,
                                     dask_task=DOCUMENTED_TASK)
    return [(f"{Transport.DASK.value}, overheads as measured here", Transport.DASK, given),
            (f"{Transport.DASK.value}, at Dask's documented 1 ms per task", Transport.DASK, documented),
            (Transport.RING.value, Transport.RING, given)]


def tables(raw: Mapping, dtypes: Sequence[str] = ("float64", "float32"), link: Link = TEN_GBE) -> dict:
    """{(dtype, case): [(W, {network: (B for S > 1, B for S > W/2)})]}: the model's tables."""
    out: dict = {}
    for dtype in dtypes:
        for case, transport, given in scenarios(inputs(raw, dtype)):
            models = [Model(net, given, link) for net in NETWORKS]
            out[dtype, case] = [(w, {m.net.name: (m.min_batch(transport, w, 1.0), m.min_batch(transport, w, w / 2))
                                     for m in models}) for w in WORKERS]
    return out


def check(raw: Mapping) -> list[tuple[str, str, int, int, float, float]]:
    """The model against the measurement it was built on: (config, dtype, batch, W, modelled
    step, measured step) for the local Dask runs, with no link term (loopback) and each row's
    own kernel and update times; W = 1 computes both parts, W = 2 one each."""
    rows = []
    for dtype in ("float64", "float32"):
        given = inputs(raw, dtype)
        for r in (r for r in raw["results"] if r["dtype"] == dtype):
            b = r["breakdown"]
            c = b["kernel, one block"] / max(1, r["batch"] // 2)
            u = b["update on the driver"]
            o = given.step_latency(DTYPE_BYTES[dtype] * r["n_params"])
            for w, name in ((1, "Dask 1 worker"), (2, "Dask 2 workers")):
                modelled = c * r["batch"] / w + o + (w - 1) * given.dask_task + u
                rows.append((r["config"], dtype, r["batch"], w, modelled, b[f"step, {name}"]))
    return rows


def _count(n: int) -> str:
    return f"{n:,}"


def render(raw: Mapping, dtypes: Sequence[str] = ("float64", "float32"), link: Link = TEN_GBE) -> list[str]:
    """The model's section as markdown lines: its inputs, then one table per dtype and transport."""
    lines = [f"Inputs (from `benchmarks/scale_out_measured.json`, measured on {raw['cpu']}; network: {link.name}):", ""]
    lines += ["| network | parameters | multiply-adds x 2 per sample | " + " | ".join(
        f"c {d} (µs / sample) | gradient {d} (bytes)" for d in dtypes) + " |",
              "|---|---|---|" + "---|---|" * len(dtypes)]
    given = {d: inputs(raw, d) for d in dtypes}
    for net in NETWORKS:
        cells = []
        for d in dtypes:
            m = Model(net, given[d], link)
            cells += [f"{m.c * 1e6:.3f}", _count(m.bytes)]
        lines.append(f"| {net.name} | {_count(net.n_params)} | {_count(net.flops_per_sample)} | " + " | ".join(cells)
                     + " |")
    inline = {d: [n.name for n in NETWORKS if not scatters(DTYPE_BYTES[d] * n.n_params)] for d in dtypes}
    lines += ["", "Dask's step latency o is an empty task's round trip while theta rides in the tasks (up to "
              f"{_count(ClusterSteps.INLINE_BYTES)} bytes), plus the scatter of theta above; tau is each further "
              "task's cost and u / n the update per parameter: " + "; ".join(
                  f"{d}: round trip {g.round_trip * 1e3:.2f} ms, scatter {g.scatter * 1e3:.2f} ms, tau "
                  f"{g.dask_task * 1e3:.2f} ms, u / n {g.update_per_param * 1e9:.2f} ns, theta in the tasks: "
                  f"{', '.join(inline[d]) or 'none'}" for d, g in given.items()), ""]
    lines += ["The model against the steps measured here (loopback, no link term; each row's own kernel and "
              "update times):", "", "| config | dtype | batch | W | modelled step (ms) | measured step (ms) | "
              "measured / modelled |", "|---|---|---|---|---|---|---|"]
    for config, dtype, batch, w, modelled, measured in check(raw):
        lines.append(f"| {config} | {dtype} | {batch} | {w} | {modelled * 1e3:.1f} | {measured * 1e3:.1f} | "
                     f"{measured / modelled:.2f} |")
    lines.append("")
    for (dtype, case), rows in tables(raw, dtypes, link).items():
        names = [n.name for n in NETWORKS]
        lines += [f"**{dtype}, {case}**: the smallest global batch B with speed-up > 1 / "
                  f"> W/2", "", "| W | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for w, by_net in rows:
            lines.append(f"| {w} | " + " | ".join(f"{_count(a)} / {_count(b)}" for a, b in (by_net[n] for n in names))
                         + " |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measured", type=Path, default=MEASURED)
    parser.add_argument("--bandwidth", type=float, default=TEN_GBE.bandwidth, help="bytes per second")
    parser.add_argument("--latency", type=float, default=TEN_GBE.latency, help="seconds per message")
    args = parser.parse_args(argv)
    link = TEN_GBE if (args.bandwidth, args.latency) == (TEN_GBE.bandwidth, TEN_GBE.latency) else \
        Link(f"{args.bandwidth / 1e9:g} GB/s, {args.latency * 1e6:g} µs", args.bandwidth, args.latency)
    print("\n".join(render(load(args.measured), link=link)))


if __name__ == "__main__":
    sys.exit(main())
