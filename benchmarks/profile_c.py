"""Where the time of an emitted C kernel goes: each statement of its ``loss_and_grad`` timed.

    python benchmarks/profile_c.py lstm-seq --dtype float32
    python benchmarks/profile_c.py cnn-digits --calls 200

The configuration (a name from ``rnn_peers.CONFIGS`` or ``cnn_peers.CONFIGS``) is built and
compiled through ``sn.compile``, as the peer benchmarks do; its emitted C (the cache entry's
``NAME.c``) is copied, and each statement of the static ``NAME__loss_and_grad`` that calls a
helper (a statement's function, a loop's weight packing, a copy loop) is wrapped in a cycle
counter. That file, with a driver that calls the public ``NAME_loss_and_grad`` on the
configuration's own data, is compiled with symnn's flags (``symnn.build.build_flags``) and run
pinned to one CPU. The table gives each statement's mean time per call (statements inside a loop
over time summed over its steps), its share of the mean call, and the line as the kernel prints
it; "the rest" is what no counter covers (the kernel's checks, scalar lines, the counters'
own cost, a few cycles each).

Why a tool: a speed target is met or missed by the sum of many statements, and which ones is
what the next change needs to know; the figures of a closing note come from here. x86 only
(the time-stamp counter); the ratios against peers stay in ``rnn_peers.py`` and ``cnn_peers.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cnn_peers
import rnn_peers
from report import _cpu

import symnn as sn
from symnn.build import build_flags

#: the statement lines of a kernel body that get a counter: a helper's call (a statement's, the
#: packing of a loop's weight, a product), a one-line copy loop, a total (``t = NAME__sum(...)``)
_TIMED = (r"^(\s+)((?:{p}__\w+\(.*\);|for \(ptrdiff_t e = 0;[^{{}}]*;"
          r"|\w+ = {p}__sum\(.*\);)(?:\s*/\*.*\*/)?)\s*$")

_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double prof_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9*t.tv_nsec;
}

static void *prof_read(const char *path, size_t bytes)
{
    FILE *f = fopen(path, "rb");
    void *p = malloc(bytes > 0 ? bytes : 1);
    if (f == NULL || p == NULL || fread(p, 1, bytes, f) != bytes) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    return p;
}

int main(int argc, char **argv)
{
    const ptrdiff_t n = atol(argv[1]);
    const int calls = atoi(argv[2]);
    {P}_real loss, *params = prof_read(argv[3], sizeof(*params)*{PU}_N_PARAMS);
    {P}_real *X = prof_read(argv[4], sizeof(*X)*(size_t)n*{PU}_N_IN);
    {P}_real *Y = prof_read(argv[5], sizeof(*Y)*(size_t)n*{PU}_N_OUT);
    {P}_real *grad = malloc(sizeof(*grad)*{PU}_N_PARAMS), *work;
    size_t work_len = 0;
    double t0, t1, wall;
    unsigned long long c0, c1;
    if ({P}_work_size(n, &work_len) != 0) return 3;
    work = malloc(sizeof(*work)*(work_len > 0 ? work_len : 1));
    for (int r = 0; r < 20; ++r)
        if ({P}_loss_and_grad(params, X, Y, n, &loss, grad, work, work_len) != 0) return 4;
    for (int k = 0; k < PROF_N; ++k) prof_acc[k] = 0;
    t0 = prof_now();
    c0 = __rdtsc();
    for (int r = 0; r < calls; ++r) {P}_loss_and_grad(params, X, Y, n, &loss, grad, work, work_len);
    c1 = __rdtsc();
    t1 = prof_now();
    wall = (t1 - t0)/calls;
    printf("call %.9f\n", wall);
    for (int k = 0; k < PROF_N; ++k)  /* seconds per call, through the counter's rate */
        printf("stmt %d %.9f\n", k, (double)prof_acc[k]/(double)(c1 - c0)*wall);
    printf("loss %.17g\n", (double)loss);
    return 0;
}
"""


def configuration(name: str):
    """The peer benchmarks' configuration of that name, and the module whose ``problem`` makes
    its data."""
    for module in (rnn_peers, cnn_peers):
        for cfg in module.CONFIGS:
            if cfg.name == name:
                return module, cfg
    names = [c.name for m in (rnn_peers, cnn_peers) for c in m.CONFIGS]
    raise SystemExit(f"no configuration {name!r}; one of {', '.join(names)}")


def instrument(source: str, prefix: str) -> tuple[str, list[str]]:
    """The source with a counter around each timed statement of ``prefix__loss_and_grad``, and
    those statements' lines. A long kernel calls a helper per statement (:data:`_TIMED`, inside
    its loops over time too); a short one holds its statements' blocks (``{ /* ... */``, a
    ``for`` over the entries), each timed whole."""
    lines = source.split("\n")
    head = f"static void {prefix}__loss_and_grad("
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    timed = re.compile(_TIMED.format(p=re.escape(prefix)))
    labels: list[str] = []
    out = lines[:start]
    i = start
    while i < end:
        line = lines[i]
        m = timed.match(line)
        block = line.startswith("    {") or (line.startswith("    for (ptrdiff_t e") and line.rstrip().endswith("{"))
        if m:
            out.append(f"{m.group(1)}{{ unsigned long long prof_t0 = __rdtsc(); {m.group(2)} "
                       f"prof_acc[{len(labels)}] += __rdtsc() - prof_t0; }}")
            labels.append(m.group(2))
            i += 1
        elif block and i > start + 1:  # a statement's block, to its closing brace
            depth, j = 0, i
            while True:
                depth += lines[j].count("{") - lines[j].count("}")
                if depth == 0:
                    break
                j += 1
            out.append("    { unsigned long long prof_t0 = __rdtsc();")
            out.extend(lines[i:j + 1])
            out.append(f"    prof_acc[{len(labels)}] += __rdtsc() - prof_t0; }}")
            labels.append(line.strip() + (" ..." if j > i else ""))
            i = j + 1
        else:
            out.append(line)
            i += 1
    out.extend(lines[end:])
    counters = ["#include <x86intrin.h>", f"#define PROF_N {max(len(labels), 1)}",
                "static unsigned long long prof_acc[PROF_N];"]
    out[start:start] = counters
    return "\n".join(out), labels


@dataclass(frozen=True)
class Profile:
    """One run of the instrumented kernel: the mean call and each timed statement's share of it
    (seconds per call, largest first), and the loss of its last call (the counters change no
    result: tests/integration/test_profile_c.py holds it to the public call's)."""

    call: float
    statements: list[tuple[float, str]]
    loss: float
    calls: int
    n: int

    @property
    def rest(self) -> float:
        """What no counter covers: the checks, scalar lines, the counters themselves."""
        return self.call - sum(t for t, _ in self.statements)


def measure(net: sn.Network, params: dict, X: np.ndarray, Y: np.ndarray, dtype: str, calls: int) -> Profile:
    """Each statement of ``net``'s emitted C ``loss_and_grad`` timed over ``calls`` calls on (X, Y)."""
    k = sn.compile(net, backend="c", dtype=dtype)
    if k.source_path is None:
        raise SystemExit("the C build left no source to profile")
    src = Path(k.source_path)
    prefix = src.stem
    text, labels = instrument(src.read_text(), prefix)
    driver = _DRIVER.replace("{PU}", prefix.upper()).replace("{P}", prefix)
    with tempfile.TemporaryDirectory(prefix="symnn-profile-") as tmp:
        work = Path(tmp)
        shutil.copy(src.with_suffix(".h"), work / f"{prefix}.h")
        (work / "prof.c").write_text(text + driver)
        flags = [f for f in build_flags() if f not in ("-fPIC", "-shared", "-fvisibility=hidden")]
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, *flags, "-I", str(work), "-o", str(work / "prof"), str(work / "prof.c"), "-lm"],
                       check=True)
        files = []
        for part, arr in (("params", k.pack(params)), ("X", X), ("Y", Y)):
            path = work / f"{part}.bin"
            np.ascontiguousarray(arr, dtype=dtype).tofile(path)
            files.append(str(path))
        pin = ["taskset", "-c", str(min(os.sched_getaffinity(0)))] if shutil.which("taskset") else []
        out = subprocess.run([*pin, str(work / "prof"), str(X.shape[0]), str(calls), *files],
                             check=True, capture_output=True, text=True).stdout
    fields = [line.split() for line in out.splitlines()]
    call = next(float(f[1]) for f in fields if f[0] == "call")
    each = {int(f[1]): float(f[2]) for f in fields if f[0] == "stmt"}
    loss = next(float(f[1]) for f in fields if f[0] == "loss")
    rows = sorted(((each.get(i, 0.0), label) for i, label in enumerate(labels)), reverse=True)
    return Profile(call, rows, loss, calls, int(X.shape[0]))


def table(name: str, dtype: str, prof: Profile) -> str:
    """The profile as a markdown table, with the CPU and the flags it ran under."""
    title = (f"`{name}` {dtype}, n = {prof.n}: {prof.call * 1e6:.1f} us per `loss_and_grad` call "
             f"(mean of {prof.calls}), on {_cpu()}; `{' '.join(build_flags())}`.")
    lines = [title, "", "| us per call | % | statement |", "|---|---|---|"]
    for t, label in prof.statements:
        lines.append(f"| {t * 1e6:.1f} | {100 * t / prof.call:.1f} | `{label.replace('|', '/')}` |")
    lines.append(f"| {prof.rest * 1e6:.1f} | {100 * prof.rest / prof.call:.1f} | the rest |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="a configuration of rnn_peers.py or cnn_peers.py (lstm-seq, cnn-digits, ...)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--calls", type=int, default=400, help="timed calls (after 20 to warm up)")
    args = ap.parse_args(argv)
    module, cfg = configuration(args.config)
    net, params, X, Y = module.problem(cfg, args.dtype)
    print(table(args.config, args.dtype, measure(net, params, X, Y, args.dtype, args.calls)))


if __name__ == "__main__":
    main()
