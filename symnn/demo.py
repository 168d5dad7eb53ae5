"""``symnn demo``: derive, emit and train the 64-32-10 digits network on the bundled data.

Training here is plain mini-batch gradient descent with momentum written over the compiled
kernel's ``loss_and_grad``; the full training subsystem (optimisers emitted as code, early
stopping, ...) is a separate capability.
"""

from __future__ import annotations

import time

import numpy as np

from . import datasets
from .declare import Dense, Network
from .derivation import derive
from .driver import compile as compile_kernel


def digits_network() -> Network:
    return Network(
        [Dense(64, 32, activation="relu"), Dense(32, 10, activation="softmax")],
        loss="cross_entropy",
        l2=1e-4,
        name="digits_mlp",
    )


def run(epochs: int = 40, batch_size: int = 32, lr: float = 0.05, momentum: float = 0.9,
        seed: int = 0, backend: str = "numpy", verbose: bool = True) -> float:
    """Train on 75 % of the digits, return (and print) accuracy on the held-out 25 %."""
    t0 = time.perf_counter()
    X, y = datasets.load_digits()
    Xtr, Xte, ytr, yte = datasets.train_test_split(X, y, 0.25, seed)
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0) + 1e-8  # input scaling fitted on train only
    Xtr, Xte = (Xtr - mean) / std, (Xte - mean) / std
    net = digits_network()
    d = derive(net)
    if verbose:
        print("symnn demo: 64-32-10 ReLU/softmax network on the UCI digits (1,797 images)")
        for step in d.backward[:3]:
            print(f"  {step.label}: {step.matrix}")
    kernel = compile_kernel(net, backend=backend, dtype="float64")
    params = net.init_params(seed=seed)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    rng = np.random.default_rng(seed)
    module = kernel.module  # inputs are validated once below; the loop calls the raw kernel
    kernel.params(params), kernel.inputs(Xtr), kernel.targets(ytr, len(Xtr))
    for epoch in range(epochs):
        order = rng.permutation(len(Xtr))
        for start in range(0, len(Xtr), batch_size):
            idx = order[start:start + batch_size]
            loss, grads = module._loss_and_grad(params, Xtr[idx], ytr[idx])
            for k in params:
                velocity[k] = momentum * velocity[k] - lr * grads[k]
                params[k] = params[k] + velocity[k]
        if verbose and (epoch + 1) % 20 == 0:
            print(f"  epoch {epoch + 1:3d}: train loss {kernel.loss(params, Xtr, ytr):.4f}")
    accuracy = float((kernel.forward(params, Xte).argmax(axis=1) == yte).mean())
    if verbose:
        print(f"  time: {time.perf_counter() - t0:.2f} s")
        print(f"test accuracy: {accuracy:.4f}")
    return accuracy
