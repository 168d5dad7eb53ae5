"""Build time against depth (issue 20, item 6). Prints a markdown table; run from the repo root:

    python benchmarks/build_depth.py              # depths 25 50 100 200, about a minute
    python benchmarks/build_depth.py 100 400      # other depths

For ``sn.Network([sn.Dense(4, 4, "tanh")] * L + [sn.Dense(4, 1, "sigmoid")], loss="bce")`` it
times, in one process, each depth once and cold (a fresh ``SYMNN_CACHE_DIR``, nothing of that
network derived before):

* derive: forward graph, chain rule and simplification (``symnn.driver.derive_program``);
* emit: the C files (``symnn.backends.c.emit.emit_c``), alone;
* compile call: ``sn.compile(net, backend="c")`` after that (the derivation cached, so this is
  emission, the cffi wrapper, ``gcc -O3`` and loading);
* total: derive + compile call, what a user's first ``sn.compile`` costs.

The emitted ``.c`` and its size in bytes come with it: the source, and with it the compiler's
work, should grow linearly with depth.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import symnn as sn  # noqa: E402
from symnn.driver import derive_program  # noqa: E402
from symnn.backends.c.emit import emit_c  # noqa: E402

DEPTHS = (25, 50, 100, 200)


def network(depth: int) -> sn.Network:
    """``depth`` hidden Dense(4, 4, tanh) layers and a sigmoid output: the shape of a deep
    residual network's trunk with nothing but depth to grow."""
    return sn.Network([sn.Dense(4, 4, "tanh")] * depth + [sn.Dense(4, 1, "sigmoid")], loss="bce",
                      name=f"deep{depth}")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux) and the core count."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def compiler() -> str:
    cc = os.environ.get("CC", "cc").split()[0]
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False, timeout=60)
        return out.stdout.splitlines()[0] if out.stdout else cc
    except (OSError, subprocess.TimeoutExpired):
        return cc


def row(depth: int) -> tuple[int, int, float, float, float, float]:
    net = network(depth)
    t0 = time.perf_counter()
    program = derive_program(net).program
    t1 = time.perf_counter()
    source = emit_c(net, program, "float64").source
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="symnn-depth-") as cache:
        os.environ["SYMNN_CACHE_DIR"] = cache
        sn.compile(net, backend="c")
        t3 = time.perf_counter()
    return depth, len(source.encode()), t1 - t0, t2 - t1, t3 - t2, (t1 - t0) + (t3 - t2)


def main(argv: list[str]) -> None:
    depths = [int(a) for a in argv] or list(DEPTHS)
    print(f"CPU: {cpu_model()}; compiler: {compiler()}; float64\n")
    print("| hidden layers | emitted .c (bytes) | derive (s) | emit (s) | compile call (s) | total (s) |")
    print("|---|---|---|---|---|---|")
    for depth in depths:
        d, size, derive, emit, call, total = row(depth)
        print(f"| {d} | {size} | {derive:.2f} | {emit:.2f} | {call:.2f} | {total:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
