"""A model of data-parallel step time on W machines, built on measured figures (issue 24, item 4).

    python benchmarks/scale_out_model.py [--measured benchmarks/scale_out_measured.json] [--bandwidth B/s --latency s]

prints the tables of docs/scale_out.md's "A model of step time on W machines" from the figures
``benchmarks/scale_out.py --json`` measured (the file in the repository is the run behind
docs/benchmarks_scale_out.md), so that every number there can be recomputed.

One global batch of B samples per step, W machines with one worker each (one core at the
measured speed), n parameters of ``bytes`` = 8 (float64) or 4 (float32) bytes each:

- **one machine**: T1(B) = c B + u, with c the kernel's seconds per sample (train_gradient on a
  block, measured) and u the optimiser update (apply_gradient, measured per parameter);
- **Dask actors, driver-centred** (what ``sn.train(client=...)`` does): T(W, B) = c B / W + o +
  (W - 1) tau + comm + u. Each worker keeps its parts and runs one Dask actor; a step is one
  actor call per worker, theta inside every call, and the driver gathers the W replies (the
  tree's nodes and the loss, n + 1 values each), sums them and applies the update. o is an
  empty actor call's round trip (measured) and tau each further actor's cost (measured: both
  workers' actors called at once, less one call: the driver, and the scheduler that forwards a
  default Client's actor calls, serve the W calls in turn in one event loop each). comm = W
  (theta + gradient) bytes / bandwidth + 2 latency: the driver sends theta once per call and
  receives W gradients, all through its own link, one after the other (the scheduler, when it
  forwards the calls, is counted on the driver's machine, as a LocalCluster's is). Not in o:
  pickling theta into the W calls and the gradients out of the replies (memory copies; on
  loopback the check table charges each call its measured payload cost, the theta-carrying
  call less an empty one);
- **ring all-reduce** (Horovod, ``torch.distributed`` with NCCL/Gloo): every worker keeps theta
  and applies the update itself; T(W, B) = c B / W + 2 (W - 1) / W n bytes / bandwidth +
  2 (W - 1) latency + u, and no scheduler in the loop.

Dask's o and tau are taken as measured here (a shared 2-core machine: driver, scheduler and
workers compete for the cores) and at Dask's documented latency of an actor call, about 1 ms
(:data:`DOCUMENTED_ACTOR_CALL`), for dedicated machines.

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
    #: o: an empty actor call's round trip, through the Client as the step's calls go
    round_trip: float
    #: tau: each further actor called at once (both workers' actors at once, less one call)
    further_actor: float
    #: for comparison (the inputs' line): the empty call through a ``direct_to_workers`` Client, the
    #: driver process's CPU per call, and an empty task's round trip (a step before the actors)
    direct_call: float = math.nan
    driver_cpu: float = math.nan
    task_round_trip: float = math.nan


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
                  round_trip=statistics.median(b["empty actor call"] for b in every),
                  further_actor=statistics.median(max(0.0, b["2 actors at once"] - b["empty actor call"])
                                                  for b in every),
                  direct_call=statistics.median(b["empty actor call, direct client"] for b in every),
                  driver_cpu=statistics.median(b["driver CPU per actor call"] for b in every),
                  task_round_trip=statistics.median(b["empty task round trip"] for b in every))


def payload(breakdown: Mapping[str, float]) -> float:
    """One actor call's cost of carrying theta out and a gradient back, measured on loopback:
    the theta-carrying call less an empty one (at least 0)."""
    return max(0.0, breakdown["actor call, theta out, gradient back"] - breakdown["empty actor call"])


class Transport(enum.Enum):
    """How a step's gradients are summed and theta shared; the value is the tables' title."""

    DASK = "Dask actors, driver-centred (sn.train(client=...))"
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
        #: theta's bytes (in every actor call) and a gradient's (n + 1 values: the tree's nodes and the loss)
        self.theta_bytes = DTYPE_BYTES[given.dtype] * net.n_params
        self.bytes = DTYPE_BYTES[given.dtype] * (net.n_params + 1)

    def one(self, batch: float) -> float:
        return self.c * batch + self.u

    def fixed(self, transport: Transport, w: int) -> float:
        """The step's seconds that do not depend on the batch size (the update included)."""
        link = self.link
        if transport is Transport.DASK:
            comm = w * (self.theta_bytes + self.bytes) / link.bandwidth + 2 * link.latency
            return self.given.round_trip + (w - 1) * self.given.further_actor + comm + self.u
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




#: Dask's own figure for an actor call, "Worker operations currently have about 1ms of latency, on top
#: of any network latency" (https://distributed.dask.org/en/stable/actors.html, "Performance"): o is one
#: such, and each further actor one more, since the driver serves the W calls in turn in one event loop
#: (its CPU time per call, measured, is of that order); a dedicated driver, scheduler and workers
DOCUMENTED_ACTOR_CALL = 1e-3


def scenarios(given: Inputs) -> list[tuple[str, Transport, Inputs]]:
    """The tables' cases: Dask as measured here, Dask at its documented actor latency, a ring all-reduce."""
    documented = dataclasses.replace(given, round_trip=DOCUMENTED_ACTOR_CALL, further_actor=DOCUMENTED_ACTOR_CALL)
    return [(f"{Transport.DASK.value}, overheads as measured here", Transport.DASK, given),
            (f"{Transport.DASK.value}, at Dask's documented 1 ms per actor call", Transport.DASK, documented),
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
    step, measured step) for the local Dask runs, with each row's own kernel and update times and,
    for the link (loopback), W times the row's measured :func:`payload`; W = 1 computes both
    parts, W = 2 one each."""
    rows = []
    for dtype in ("float64", "float32"):
        given = inputs(raw, dtype)
        for r in (r for r in raw["results"] if r["dtype"] == dtype):
            b = r["breakdown"]
            c = b["kernel, one block"] / max(1, r["batch"] // 2)
            u = b["update on the driver"]
            for w, name in ((1, "Dask 1 worker"), (2, "Dask 2 workers")):
                modelled = c * r["batch"] / w + given.round_trip + (w - 1) * given.further_actor + w * payload(b) + u
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
    first = given[dtypes[0]]
    lines += ["", "Dask's step latency o is an empty actor call's round trip (through a default Client, as the "
              "step's calls go), tau each further actor's cost (both workers' actors called at once, less one "
              "call), u / n the update per parameter: " + "; ".join(
                  f"{d}: o {g.round_trip * 1e3:.2f} ms, tau {g.further_actor * 1e3:.2f} ms, u / n "
                  f"{g.update_per_param * 1e9:.2f} ns" for d, g in given.items())
              + f". For comparison (medians over every run, as o and tau): an empty call through a "
              f"direct_to_workers Client {first.direct_call * 1e3:.2f} ms, the driver's CPU per call "
              f"{first.driver_cpu * 1e3:.2f} ms, an empty task's round trip {first.task_round_trip * 1e3:.2f} ms.", ""]
    lines += ["The model against the steps measured here (each row's own kernel and update times; for the "
              "loopback link, each call's measured payload cost):", "",
              "| config | dtype | batch | W | modelled step (ms) | measured step (ms) | measured / modelled |",
              "|---|---|---|---|---|---|---|"]
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
