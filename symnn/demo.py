"""``symnn demo``: derive, emit and train the 64-32-10 digits network on the bundled data.

Training is mini-batch SGD with momentum (PyTorch's formulation), emitted into the kernel's
``train_step`` and driven by :func:`symnn.train`; ``backend="auto"`` compiles the C backend
and falls back to NumPy without a C compiler.
"""

from __future__ import annotations

import time

from . import datasets
from .declare import Dense, Network
from .derivation import derive
from .driver import compile as compile_kernel
from .optim import Momentum
from .report import plain
from .train import train


def digits_network() -> Network:
    return Network(
        [Dense(64, 32, activation="relu"), Dense(32, 10, activation="softmax")],
        loss="cross_entropy",
        l2=1e-4,
        name="digits_mlp",
    )


def run(epochs: int = 40, batch_size: int = 32, lr: float = 0.05, momentum: float = 0.9,
        seed: int = 0, backend: str = "auto", verbose: bool = True) -> float:
    """Train on 75 % of the digits, return (and print) accuracy on the held-out 25 %."""
    t0 = time.perf_counter()
    X, y = datasets.load_digits()
    Xtr, Xte, ytr, yte = datasets.train_test_split(X, y, 0.25, seed)
    net = digits_network()
    d = derive(net)
    if verbose:
        print("symnn demo: 64-32-10 ReLU/softmax network on the UCI digits (1,797 images)")
        for step in d.backward[:3]:
            print(f"  {plain(step.matrix)}")
    opt = Momentum(lr=lr, momentum=momentum)
    kernel = compile_kernel(net, backend=backend, dtype="float64", optimizer=opt)
    if verbose:
        where = kernel.source_path or "in memory"
        print(f"  backend: {kernel.backend}, optimiser {opt.describe()} emitted into train_step; source: {where}")
    # inputs standardised with statistics of the training split only
    result = train(net, Xtr, ytr, kernel=kernel, epochs=epochs, batch_size=batch_size, seed=seed,
                   standardize=True)
    if verbose:
        for epoch in (20, 40):
            if epoch <= len(result.history.train_loss):
                print(f"  epoch {epoch:3d}: train loss {result.history.train_loss[epoch - 1]:.4f}")
    accuracy = result.accuracy(Xte, yte)
    if verbose:
        print(f"  time: {time.perf_counter() - t0:.2f} s")
        print(f"test accuracy: {accuracy:.4f}")
    return accuracy
