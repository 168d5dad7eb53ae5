"""Write docs/benchmarks.md and the ratio chart from a run of benchmarks/peers.py."""

from __future__ import annotations

import io
import os
import platform
from pathlib import Path

from symnn.emit import write_atomic

#: the plain C build's kernel called raw (benchmarks/peers.py's SYMNN_RAW)
RAW = "symnn C (raw call)"
#: symnn's columns (never a "peer"): the public call of each build, and the C kernel called raw
SYMNN = ("symnn C", "symnn C+BLAS", "symnn NumPy", RAW)


def _cpu() -> str:
    """The CPU's model name with its family and model numbers (``AMD EPYC ... (family 25, model
    17)``): a figure is only comparable with one from the same core, and the names alone do not
    tell Zen 4 (family 25) from Zen 5 (family 26)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break  # the first processor's block is enough
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def best_symnn_c(times: dict[str, float]) -> float:
    """The faster of symnn's two C builds (plain, and blas=True where it ran)."""
    return min(times["symnn C"], times.get("symnn C+BLAS", times["symnn C"]))


def fastest_peer(times: dict[str, float]) -> tuple[str, float]:
    peers = {k: v for k, v in times.items() if k not in SYMNN}
    name = min(peers, key=peers.get)
    return name, peers[name]


def peak_line(dtype: str, by_library: dict[str, float]) -> str:
    """The peak the "% of peak" column divides by: the fastest library's large matmul."""
    best = max(by_library, key=by_library.get)
    each = ", ".join(f"{name} {gf:.1f}" for name, gf in by_library.items())
    return (f"Peak ({dtype}): {by_library[best]:.1f} GFLOP/s, {best}'s 2048² matmul on one thread, the fastest of "
            f"the libraries present ({each}). Above 100 % means symnn's kernels outran every library's own large "
            "matmul on this CPU.")


def tables(results, peaks, bounds, configs) -> list[str]:
    lines = []
    for dtype in sorted({d for _, d in results}, key=lambda d: d != "float64"):
        cfgs = [c for c in configs if (c.name, dtype) in results]
        systems = []
        for c in cfgs:
            systems += [s for s in results[c.name, dtype]["times"] if s not in systems]
        lines += [f"### {dtype}: median µs per loss-and-gradient call (one thread)", "",
                  "| config | " + " | ".join(systems) + " | fastest peer | symnn C / fastest peer "
                  "| symnn C+BLAS / fastest peer | symnn NumPy / hand-written | symnn C / raw call "
                  "| best symnn C GFLOP/s | % of peak | % of FMA bound |",
                  "|" + "---|" * (len(systems) + 9)]
        peak = max(peaks[dtype].values())
        for c in cfgs:
            t = results[c.name, dtype]["times"]
            peer, pt = fastest_peer(t)
            best = best_symnn_c(t)
            gf = c.flops() / best / 1e9
            blas = f"**{t['symnn C+BLAS'] / pt:.2f}**" if "symnn C+BLAS" in t else "—"
            cells = [f"{t[s] * 1e6:.1f}" if s in t else "—" for s in systems]
            hand = t.get("hand-written NumPy")
            overhead = f"{t['symnn C'] / t[RAW]:.2f}" if RAW in t else "—"
            lines.append(f"| {c.name} | " + " | ".join(cells) + f" | {peer} | **{t['symnn C'] / pt:.2f}** | {blas} | "
                         + (f"{t['symnn NumPy'] / hand:.2f}" if hand else "—")
                         + f" | {overhead} | {gf:.2f} | {100 * gf / peak:.0f} % | {100 * gf / bounds[dtype]:.0f} % |")
        lines += ["", peak_line(dtype, peaks[dtype]), "",
                  f"FMA bound ({dtype}): {bounds[dtype]:.1f} GFLOP/s, 12 independent chains of 64-byte multiply-adds "
                  "in registers on one thread (`fma_bound` in benchmarks/peers.py): what the core's FMA units "
                  "allow, with no memory traffic.", ""]
        lines += [f"One-time costs ({dtype}, seconds: compile / trace / jit, first call included):", "",
                  "| config | " + " | ".join(systems) + " |", "|" + "---|" * (len(systems) + 1)]
        for c in cfgs:
            s = results[c.name, dtype]["setup"]
            lines.append(f"| {c.name} | " + " | ".join(f"{s[k]:.2f}" if k in s else "—" for k in systems) + " |")
        lines.append("")
    notes = sorted({n for r in results.values() for n in r["notes"]})
    if notes:
        lines += ["Left out:", ""] + [f"- {n}" for n in notes] + [""]
    return lines


def chart(results, configs, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    dtypes = sorted({d for _, d in results}, key=lambda d: d != "float64")
    fig, ax = plt.subplots(figsize=(9, 4.2))
    names = [c.name for c in configs if any((c.name, d) in results for d in dtypes)]
    width = 0.8 / (2 * len(dtypes))
    for i, d in enumerate(dtypes):
        for v, (system, hatch) in enumerate((("symnn C", ""), ("symnn C+BLAS", "//"))):
            vals = [results[n, d]["times"].get(system, 0) / fastest_peer(results[n, d]["times"])[1]
                    if (n, d) in results else 0 for n in names]
            ax.bar([j + (2 * i + v) * width for j in range(len(names))], vals, width, hatch=hatch,
                   label=f"{system}, {d}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + width * (2 * len(dtypes) - 1) / 2 for j in range(len(names))], names)
    ax.set_ylabel("symnn C time / fastest peer (lower is better)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Loss and gradient, one thread")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110, metadata={"Software": None})
    write_atomic(path, png.getvalue())
    return True


#: PyTorch on an NVIDIA H200 with CUDA-graph replay, float64, µs per gradient call: the
#: figures issue 4 quotes (no GPU was lent to the session that wrote this page)
H200_US = {"xor": 33.0, "small": 41.0, "digits": 44.0}


def gpu_paragraph(results) -> list[str]:
    rows = [(n, results[n, "float64"]["times"]) for n in H200_US if (n, "float64") in results]
    if not rows:
        return []
    lines = ["## One CPU core against a data-centre GPU", "",
             "PyTorch on an NVIDIA H200 with CUDA-graph replay takes "
             + ", ".join(f"{us:.0f} µs ({n})" for n, us in H200_US.items())
             + " per float64 gradient call (figures from issue 4; no GPU was measured in this run). "
             "One core of this CPU running symnn's C:", "",
             "| config | symnn C (µs) | symnn C+BLAS (µs) | H200 PyTorch (µs) | H200 / best symnn C |",
             "|---|---|---|---|---|"]
    for n, t in rows:
        best = best_symnn_c(t)
        lines.append(f"| {n} | {t['symnn C'] * 1e6:.1f} | "
                     + (f"{t['symnn C+BLAS'] * 1e6:.1f}" if "symnn C+BLAS" in t else "—")
                     + f" | {H200_US[n]:.0f} | {H200_US[n] / (best * 1e6):.1f}x |")
    return lines + [""]


def scaling_table(scaling) -> list[str]:
    if not scaling:
        return []
    lines = ["## Two threads (float64)", "",
             "symnn's C is single-threaded by default. Built with `openmp=True` (`-fopenmp`), its "
             "products of at least 262,144 multiply-adds split their columns over the OpenMP threads "
             "in whole register tiles, each thread packing its own panels of B, with results "
             "bitwise independent of the thread count; the "
             "shipped files keep the pragma under `#ifdef _OPENMP`. With `blas=True` the large "
             "products use OpenBLAS's threads, like NumPy's. These figures come from a fresh Python "
             "process that was never pinned to one CPU: an OpenMP runtime reads its CPUs once, when "
             "it is loaded, and PyTorch's bundled `libgomp.so.1`, loaded by the pinned one-thread "
             "runs, would tell symnn's OpenMP build it had one CPU (its threads then sleep between "
             "products: 1.1x on deep instead of 1.8x). Each system is timed on its own "
             "rather than interleaved, after a 0.3 s pause and one call: a runtime's idle workers "
             "keep spinning after its call, and on two CPUs they slow the next system's threads. "
             "Each system's 1- and 2-thread runs alternate three times (medians), so that a "
             "slower phase of the machine hits both alike. "
             "On a machine which other jobs share, these figures are the least stable of the page.", "",
             "| config | system | 1 thread (µs) | 2 threads (µs) | speed-up |", "|---|---|---|---|---|"]
    for name, by in scaling.items():
        for system in by[1]:
            one, two = by[1][system], by[2][system]
            lines.append(f"| {name} | {system} | {one * 1e6:.0f} | {two * 1e6:.0f} | {one / two:.2f} |")
    return lines + [""]


def overhead_table(overhead) -> list[str]:
    """Issue 21's per-call cost: each kernel's public call against its C entry called raw."""
    if not overhead:
        return []
    from benchmarks.peers import OVERHEAD_CONFIG, OVERHEAD_TARGET

    lines = [f"### The public call's cost over the C kernel ({OVERHEAD_CONFIG}, one thread)", "",
             "Median µs per call of the public call (`k.forward(params, X)`, `k.loss_and_grad(params, X, Y, "
             "out=grads)`, `k.train_step(theta, state, X, Y, step)` with Adam; `params` and `grads` from "
             "`k.new_params`, every check included) and of the same C entry called raw through cffi on "
             "buffers prepared once (`call_overhead` in benchmarks/peers.py). Issue 21's bound on the "
             f"difference: {OVERHEAD_TARGET * 1e6:.1f} µs.", "",
             "| dtype | kernel | public call (µs) | raw C entry (µs) | cost of the call (µs) | bound |",
             "|---|---|---|---|---|---|"]
    for dtype, rows in overhead.items():
        for kernel, (public, raw) in rows.items():
            cost = public - raw
            met = "met" if cost <= OVERHEAD_TARGET else "**missed**"
            lines.append(f"| {dtype} | {kernel} | {public * 1e6:.2f} | {raw * 1e6:.2f} | **{cost * 1e6:.2f}** | "
                         f"<= {OVERHEAD_TARGET * 1e6:.1f} ({met}) |")
    return lines + [""]


def write_report(results, peaks, bounds, configs, out: Path, png: Path, scaling, overhead, command: str,
                 wall: float) -> None:
    lines = ["# Benchmarks: loss and gradient against PyTorch, JAX, PyTensor, CasADi and NumPy", "",
             "Made by `" + command.strip() + f"` in {wall:.0f} s on {_cpu()}, "
             f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}.", "",
             "Method, systems and what each one computes: the docstring of `benchmarks/peers.py`. "
             "The symnn C, symnn C+BLAS and symnn NumPy columns (and every ratio and GFLOP/s figure "
             "built from them) time the public call a user makes, `k.loss_and_grad(params, X, Y, "
             "out=grads)` with `params` and `grads` from `k.new_params` (docs/training.md; NumPy "
             "without `out=`), every check included; symnn C (raw call) times the same C kernel through "
             "`k.module.raw_loss_and_grad`, one cffi call on buffers prepared once (what an "
             "application embedding the C pays), and \"symnn C / raw call\" is the public call's "
             "cost over it. Peers are timed through their own compiled entry points. "
             "Ratios within one run are what count; absolute figures move by ±20 % between runs "
             "on shared machines.", ""]
    lines += tables(results, peaks, bounds, configs)
    lines += overhead_table(overhead)
    lines += scaling_table(scaling)
    lines += gpu_paragraph(results)
    if chart(results, configs, png):
        lines += [f"![symnn C / fastest peer]({png.name})", ""]
    lines += ["The core compiler's own figures (derivation time, build, training throughput, the C "
              "against the NumPy kernel): [benchmarks_core.md](benchmarks_core.md), from "
              "`python benchmarks/run.py`.", "",
              "Convolutional and residual networks against PyTorch and JAX: "
              "[benchmarks_cnn.md](benchmarks_cnn.md), from `python benchmarks/cnn_peers.py`; recurrent "
              "networks (LSTM, GRU: loops over time) against PyTorch, JAX and PyTensor, at issue 23's two "
              "configurations and the sizes around them, and the cold compile time of an LSTM: "
              "[benchmarks_rnn.md](benchmarks_rnn.md), from `python benchmarks/rnn_peers.py --sizes`.", "",
              "Data-parallel training on Dask against one process (samples per second, the step-time "
              "breakdown): [benchmarks_scale_out.md](benchmarks_scale_out.md), from "
              "`python benchmarks/scale_out.py`; a model of W machines: "
              "[scale_out.md](scale_out.md#a-model-of-step-time-on-w-machines).", ""]
    write_atomic(out, "\n".join(lines))
