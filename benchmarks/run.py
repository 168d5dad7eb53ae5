"""Benchmarks for the core compiler (issue 2). Prints a markdown table; run from the repo root:

    python benchmarks/run.py            # about a minute

1. NumPy kernel (the emitted module's ``_loss_and_grad``, which ``sn.compile`` kernels call after
   their own validation; ``loss_and_grad`` adds shape checks) vs hand-written NumPy backprop, same
   data, same process, one BLAS thread, systems interleaved in rounds, median of samples of
   >= 20 ms each. Ratio = symnn / hand-written (<= 1.0 means symnn is no slower).
2. Derive + simplify + emit time of 784-4096-4096-10 vs 4-4-2 (cold: SymPy caches cleared).
3. C backend (issue 3): the compiled kernel called three ways -- ``raw`` (the C function through
   cffi with preallocated buffers: what an application embedding the C pays), ``wrapper`` (the
   Python wrapper's ``_loss_and_grad``: packs the parameter dict, allocates outputs and work) --
   against the NumPy kernel's ``_loss_and_grad``, same data, interleaved. Ratio = C / NumPy.
5. Training throughput on the bundled digits (1,347 training rows, 64-32-10 ReLU/softmax, l2=1e-4,
   batch 32, SGD with momentum 0.9, lr 0.05): epochs per second of symnn's C train_step,
   symnn's NumPy train_step, and a PyTorch eager loop doing the same work (same initial
   parameters, same batches; agreement of the final weights checked), one thread.
4. C build: cold compile time (empty cache) and emitted source size of the digits network,
   784-128-10 and 784-4096-4096-10 (the source grows with the depth, not the widths or the
   batch size, which is a run-time argument).
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import symnn as sn  # noqa: E402
from symnn.bench import interleaved  # noqa: E402


def hand_written(act: str):
    """Textbook NumPy backprop for Dense-act-Dense-softmax + CE with one-hot targets."""

    def f(p, X, Y):
        N = X.shape[0]
        z1 = X @ p["W1"].T
        z1 += p["b1"]
        a1 = np.maximum(z1, 0) if act == "relu" else np.tanh(z1)
        z2 = a1 @ p["W2"].T
        z2 += p["b2"]
        m = z2.max(axis=1, keepdims=True)
        e = np.exp(z2 - m)
        s = e.sum(axis=1, keepdims=True)
        loss = float((m + np.log(s)).sum() - (Y * z2).sum()) / N
        d2 = (e / s - Y) / N
        da1 = d2 @ p["W2"]
        dz1 = da1 * (z1 > 0) if act == "relu" else da1 * (1 - a1 * a1)
        return loss, {"W1": dz1.T @ X, "b1": dz1.sum(axis=0), "W2": d2.T @ a1, "b2": d2.sum(axis=0)}

    return f


def bench_kernels(rounds: int = 15) -> list[str]:
    rows = ["| network | N | act | symnn kernel (µs) | hand-written (µs) | ratio | symnn with shape checks (µs) | ratio |",
            "|---|---|---|---|---|---|---|---|"]
    for (n_in, hid, out, N, act) in [(64, 32, 10, 32, "tanh"), (64, 32, 10, 32, "relu"),
                                      (64, 128, 10, 64, "relu"), (784, 128, 10, 256, "relu")]:
        net = sn.Network([sn.Dense(n_in, hid, act), sn.Dense(hid, out, "softmax")], loss="cross_entropy")
        k = sn.compile(net)
        rng = np.random.default_rng(0)
        X = rng.normal(size=(N, n_in))
        Y = np.eye(out)[rng.integers(0, out, N)]
        p = net.init_params(seed=0)
        ours, hand, checked = k.module._loss_and_grad, hand_written(act), k.module.loss_and_grad
        l1, g1 = ours(p, X, Y)
        l2, g2 = hand(p, X, Y)
        assert abs(l1 - l2) < 1e-12 and all(np.allclose(g1[n], g2[n], rtol=1e-12, atol=1e-14) for n in g1)
        t = interleaved({"ours": lambda: ours(p, X, Y), "hand": lambda: hand(p, X, Y),
                         "checked": lambda: checked(p, X, Y)}, rounds)
        ma, mb, mc = (t[k] * 1e6 for k in ("ours", "hand", "checked"))
        rows.append(f"| {n_in}-{hid}-{out} | {N} | {act} | {ma:.1f} | {mb:.1f} | {ma / mb:.2f} "
                    f"| {mc:.1f} | {mc / mb:.2f} |")
    return rows


def bench_derive() -> list[str]:
    import sympy as sp

    from symnn.driver import emit_source

    rows = ["| network | derive + simplify + emit (s) |", "|---|---|"]
    times = {}
    for label, sizes in [("4-4-2", (4, 4, 2)), ("784-4096-4096-10", (784, 4096, 4096, 10))]:
        acts = ["tanh"] * (len(sizes) - 2) + ["softmax"]
        net = sn.Network([sn.Dense(a, b, act) for a, b, act in zip(sizes, sizes[1:], acts)],
                         loss="cross_entropy")
        sp.core.cache.clear_cache()
        from symnn.simplify import fuse

        fuse.prove_softmax_ce.cache_clear()
        t = time.perf_counter()
        emit_source(net)
        times[label] = time.perf_counter() - t
        rows.append(f"| {label} | {times[label]:.3f} |")
    rows.append(f"| ratio large / small | {times['784-4096-4096-10'] / times['4-4-2']:.2f} |")
    return rows


def bench_c(rounds: int = 9) -> list[str]:
    rows = ["| network | N | act | NumPy kernel (µs) | C raw (µs) | ratio | C via wrapper (µs) | ratio |",
            "|---|---|---|---|---|---|---|---|"]
    for (n_in, hid, out, N, act) in [(64, 32, 10, 32, "relu"), (64, 32, 10, 256, "relu"),
                                      (64, 128, 10, 64, "relu"), (784, 128, 10, 256, "relu"),
                                      (784, 512, 10, 256, "tanh")]:
        net = sn.Network([sn.Dense(n_in, hid, act), sn.Dense(hid, out, "softmax")], loss="cross_entropy",
                         name="bench")
        kn, kc = sn.compile(net), sn.compile(net, backend="c")
        rng = np.random.default_rng(0)
        X = rng.normal(size=(N, n_in))
        Y = np.eye(out)[rng.integers(0, out, N)]
        p = net.init_params(seed=0)
        raw = kc.module.raw_loss_and_grad(p, X, Y)
        raw()
        ln, gn = kn.module._loss_and_grad(p, X, Y)
        assert abs(kc.module._loss(p, X, Y) - ln) <= 1e-14 * abs(ln)
        t = interleaved({"numpy": lambda: kn.module._loss_and_grad(p, X, Y), "raw": raw,
                         "wrapper": lambda: kc.module._loss_and_grad(p, X, Y)}, rounds)
        ma, mb, mc = (t[k] * 1e6 for k in ("numpy", "raw", "wrapper"))
        rows.append(f"| {n_in}-{hid}-{out} | {N} | {act} | {ma:.1f} | {mb:.1f} | {mb / ma:.2f} "
                    f"| {mc:.1f} | {mc / ma:.2f} |")
    return rows


def bench_c_build() -> list[str]:
    import tempfile

    from symnn import build
    from symnn.demo import digits_network
    from symnn.driver import emit_files

    rows = ["| network | emitted .c (bytes) | cold compile (s) |", "|---|---|---|"]
    nets = [("64-32-10 (digits)", digits_network()),
            ("784-128-10", sn.Network([sn.Dense(784, 128, "relu"), sn.Dense(128, 10, "softmax")],
                                      loss="cross_entropy", name="mnist_mlp")),
            ("784-4096-4096-10", sn.Network([sn.Dense(784, 4096, "relu"), sn.Dense(4096, 4096, "relu"),
                                             sn.Dense(4096, 10, "softmax")], loss="cross_entropy", name="wide"))]
    for label, net in nets:
        files = emit_files(net, backend="c")
        src = files[f"{net.name}.c"]
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["SYMNN_CACHE_DIR"] = tmp
            build._loaded.clear()
            t = time.perf_counter()
            sn.compile(net, backend="c")
            dt = time.perf_counter() - t
        os.environ.pop("SYMNN_CACHE_DIR")
        rows.append(f"| {label} | {len(src.encode())} | {dt:.2f} |")
    return rows


def bench_training(epochs: int = 5) -> list[str]:
    from symnn import datasets
    from symnn.demo import digits_network

    X, y = datasets.load_digits()
    Xtr, _, ytr, _ = datasets.train_test_split(X, y, 0.25, 0)
    Xtr = sn.Standardizer.fit(Xtr).transform(Xtr)
    net = digits_network()
    p0 = net.init_params(seed=0)
    order = [np.random.default_rng(e).permutation(len(Xtr)) for e in range(epochs)]
    batches = [idx[s:s + 32] for idx in order for s in range(0, len(Xtr), 32)]
    opt = sn.Momentum(lr=0.05, momentum=0.9)
    finals, rows = {}, ["| system | epochs / s | speed relative to symnn C |", "|---|---|---|"]

    def symnn_run(backend: str):
        k = sn.compile(net, backend=backend, optimizer=opt)
        yb = ytr.astype(np.int32) if backend == "c" else ytr
        theta, state = k.pack(p0), k.init_state()
        t = time.perf_counter()
        for step, idx in enumerate(batches, 1):
            k.module._train_step(theta, state, Xtr[idx], yb[idx], step)
        return time.perf_counter() - t, theta

    times = {}
    for backend in ("c", "numpy"):
        times[f"symnn {backend}"], finals[backend] = min((symnn_run(backend) for _ in range(3)), key=lambda r: r[0])
    try:
        import torch

        torch.set_num_threads(1)

        def torch_run():
            tp = [torch.tensor(p0[k], requires_grad=True) for k in ("W1", "b1", "W2", "b2")]
            topt = torch.optim.SGD(tp, lr=0.05, momentum=0.9)
            tx, ty = torch.tensor(Xtr), torch.tensor(ytr)
            t = time.perf_counter()
            for idx in batches:
                ti = torch.from_numpy(idx)
                topt.zero_grad()
                z = torch.relu(tx[ti] @ tp[0].T + tp[1]) @ tp[2].T + tp[3]
                loss = torch.nn.functional.cross_entropy(z, ty[ti]) + 0.5e-4 * ((tp[0] ** 2).sum() + (tp[2] ** 2).sum())
                loss.backward()
                topt.step()
            return time.perf_counter() - t, np.concatenate([v.detach().numpy().ravel() for v in tp])

        times["PyTorch eager"], finals["torch"] = min((torch_run() for _ in range(3)), key=lambda r: r[0])
    except ImportError:
        pass
    for key, theta in finals.items():
        assert np.linalg.norm(theta - finals["c"]) <= 1e-9 * np.linalg.norm(finals["c"]), key
    for name, dt in times.items():
        rows.append(f"| {name} | {epochs / dt:.1f} | {times['symnn c'] / dt:.2f} |")
    return rows


if __name__ == "__main__":
    print("## NumPy kernel vs hand-written NumPy backprop (one thread, float64, one-hot targets)\n")
    print("\n".join(bench_kernels()))
    print("\n## Derivation + emission time\n")
    print("\n".join(bench_derive()))
    print("\n## C kernel vs NumPy kernel (one thread, float64, loss and gradient)\n")
    print("\n".join(bench_c()))
    print("\n## Training throughput on digits (epochs per second, one thread)\n")
    print("\n".join(bench_training()))
    print("\n## C build\n")
    print("\n".join(bench_c_build()))
