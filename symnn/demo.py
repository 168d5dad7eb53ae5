"""``symnn demo``: derive, emit and train the 64-32-10 digits network on the bundled data
(``symnn demo --cnn``: a convolutional network on the same digits as 1x8x8 images).

Training is mini-batch SGD with momentum (PyTorch's formulation), emitted into the kernel's
``train_step`` and driven by :func:`symnn.train`; ``backend="auto"`` compiles the C backend
and falls back to NumPy without a C compiler.
"""

from __future__ import annotations

import time

from . import datasets
from .declare import Dense, Network
from .layers import Input
from .spatial_layers import Conv2d, Flatten, MaxPool2d
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
    # inputs standardised with statistics of the training split only
    return _train_and_test(net, (Xtr, ytr, Xte, yte), Momentum(lr=lr, momentum=momentum), epochs, batch_size,
                           seed, backend, verbose, t0, (20, 40), standardize=True)


def _train_and_test(net: Network, split: tuple, opt: Momentum, epochs: int, batch_size: int, seed: int,
                    backend: str, verbose: bool, t0: float, shown: tuple[int, ...], standardize: bool = False) -> float:
    """Compile ``net`` with ``opt`` emitted into its train step, train on the split's first half,
    print the losses of the epochs ``shown`` and the held-out accuracy (the line the README's
    main job ends with), and return it."""
    Xtr, ytr, Xte, yte = split
    kernel = compile_kernel(net, backend=backend, dtype="float64", optimizer=opt)
    if verbose:
        where = kernel.source_path or "in memory"
        print(f"  backend: {kernel.backend}, optimiser {opt.describe()} emitted into train_step; source: {where}")
    result = train(net, Xtr, ytr, kernel=kernel, epochs=epochs, batch_size=batch_size, seed=seed,
                   standardize=standardize)
    if verbose:
        for epoch in shown:
            if epoch <= len(result.history.train_loss):
                print(f"  epoch {epoch:3d}: train loss {result.history.train_loss[epoch - 1]:.4f}")
    accuracy = result.accuracy(Xte, yte)
    if verbose:
        print(f"  time: {time.perf_counter() - t0:.2f} s")
        print(f"test accuracy: {accuracy:.4f}")
    return accuracy


def cnn_network() -> Network:
    """The ``cnn-digits`` network of the benchmarks: 1x8x8 -> Conv2d(1, 16, 3, pad 1) relu ->
    Conv2d(16, 32, 3, pad 1) relu -> MaxPool 2 -> Flatten -> Dense(512, 10) softmax."""
    x = Input(1, 8, 8)
    h = Conv2d(1, 16, 3, padding=1, activation="relu")(x)
    h = MaxPool2d(2)(Conv2d(16, 32, 3, padding=1, activation="relu")(h))
    y = Dense(512, 10, activation="softmax")(Flatten()(h))
    return Network(inputs=x, outputs=y, loss="cross_entropy", l2=1e-4, name="digits_cnn")


def run_cnn(epochs: int = 20, batch_size: int = 32, lr: float = 0.03, momentum: float = 0.9, seed: int = 0,
            backend: str = "auto", verbose: bool = True) -> float:
    """Train :func:`cnn_network` on 75 % of the digits (pixels scaled to [0, 1], as images), with
    the optimiser emitted into the kernel's train step; return (and print) held-out accuracy."""
    t0 = time.perf_counter()
    X, y = datasets.load_digits()
    Xtr, Xte, ytr, yte = datasets.train_test_split(X / 16.0, y, 0.25, seed)
    Xtr, Xte = Xtr.reshape(-1, 1, 8, 8), Xte.reshape(-1, 1, 8, 8)
    net = cnn_network()
    if verbose:
        print("symnn demo --cnn: conv 3x3x16 relu, conv 3x3x32 relu, maxpool 2, dense 512-10 softmax "
              "on the UCI digits as 1x8x8 images")
        for step in derive(net).backward[:2]:
            print(f"  {plain(step.matrix)}")
    return _train_and_test(net, (Xtr, ytr, Xte, yte), Momentum(lr=lr, momentum=momentum), epochs, batch_size,
                           seed, backend, verbose, t0, (10, 20))
