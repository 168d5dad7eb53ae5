"""``symnn bench SPEC``: time one loss-and-gradient call of a spec's network on each backend.

Same data and parameters for every system, one BLAS thread, systems interleaved in rounds,
median of samples of at least 20 ms each. Each backend is timed through the public call,
``k.loss_and_grad(params, X, Y, out=grads)`` with ``params`` and ``grads`` from ``k.new_params``
(every check included), and the C also as a raw cffi call on buffers prepared once (what an
application embedding the C pays), so the two C lines show what the Python API costs. The full
comparison with PyTorch, JAX and the others lives in ``benchmarks/``.
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Callable

from .declare import Network


def sample(fn: Callable[[], object], min_time: float = 0.02) -> float:
    """Seconds per call of ``fn``, from a run of at least ``min_time`` (calls doubled until then)."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / n
        n *= 2


def interleaved(systems: dict[str, Callable[[], object]], rounds: int = 5) -> dict[str, float]:
    """Median seconds per call of each system, the systems timed in turn in every round (so
    a slow phase of a shared machine hits them all alike)."""
    samples: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(rounds):
        for name, fn in systems.items():
            samples[name].append(sample(fn))
    return {name: statistics.median(v) for name, v in samples.items()}


def bench(net: Network, batch: int = 64, dtype: str = "float64", rounds: int = 5,
          backends: tuple[str, ...] = ("numpy", "c"), blas: bool = False,
          openmp: bool = False) -> dict[str, float]:
    """Median seconds per loss-and-gradient call, by system (``blas`` / ``openmp``: also the
    C built with ``blas=True`` / ``openmp=True``)."""
    from .driver import compile as compile_kernel
    from .gradcheck import sample_point

    params, X, Y = sample_point(net, n=batch, margin=0.0)
    params = {k: v.astype(dtype) for k, v in params.items()}
    X = X.astype(dtype)
    systems: dict[str, Callable[[], object]] = {}
    for backend in backends:
        k = compile_kernel(net, backend=backend, dtype=dtype)
        p, x = k.params(params), k.inputs(X)
        y = k.targets(Y, batch, k.length(x))
        systems[f"symnn {backend}"] = functools.partial(k.loss_and_grad, k.new_params(params), X, Y,
                                                        out=k.new_params())
        if backend == "c":
            systems["symnn c (raw call)"] = k.module.raw_loss_and_grad(p, x, y)
            for option, wanted in (("blas", blas), ("openmp", openmp)):
                if wanted:
                    kv = compile_kernel(net, backend="c", dtype=dtype, **{option: True})
                    systems[f"symnn c+{option} (raw)"] = kv.module.raw_loss_and_grad(p, x, y)
    return interleaved(systems, rounds)
