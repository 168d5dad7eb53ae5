"""The 8x8 digits read row by row: an LSTM classifier trained through the emitted C train step,
and the gradient norm per time step, with and without gradient clipping.

    python examples/lstm_digits.py                        # about 20 s on 2 cores, C compiler needed
    python examples/lstm_digits.py --plot docs/lstm_gradient_norms.png   # needs matplotlib

Each image of the bundled UCI digits is a sequence of T = 8 steps (its rows, top to bottom) of
8 features (a row's pixels, scaled to [0, 1]); ``LSTM(8, 32)`` keeps the last step's hidden
state, ``Dense(32, 10)`` softmax classifies it, with cross-entropy. Training is
``sn.train(..., backend="c")``: Adam emitted into the kernel's C ``train_step``.

The per-step gradient is read from the derivation, not from a second implementation:
``sn.derive(net).values(params, X, y)`` evaluates every printed equation, and the backward
recurrence's ``G_t`` (equation ``"<loop>.g"``) is the loss's gradient with respect to the state
carried out of step t, ``[h_t]`` for an RNN, ``[h_t, c_t]`` for an LSTM (for c_t, the part that
comes back from later steps; its use in h_t = o_t * tanh(c_t) is inside step t). Its first H
columns, the whole ``dL/dh_t`` through every later step, are what shrinks (vanishing) or grows
(exploding) as t moves away from the loss at the last step. The same network with a plain
``RNN`` in place of the LSTM, and each trained with and without ``clip_norm``, gives the
figure of the tutorial's "Sequences" section.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Mapping

import numpy as np

import symnn as sn
from symnn import datasets

#: the digits as sequences: T steps (rows) of F features (pixels)
T, F = 8, 8
#: the name of the recurrent layer in :func:`classifier` (its loops are labelled "rec_l0")
LAYER = "rec"


def digits_sequences(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(Xtr, Xte, ytr, yte)``: 75 % / 25 % of the bundled digits, each image (T, F), its rows
    in order, pixels scaled from 0..16 to [0, 1] (a fixed scale, so no statistics leak from the
    test split)."""
    X, y = datasets.load_digits()
    Xtr, Xte, ytr, yte = datasets.train_test_split(X / 16.0, y, 0.25, seed)
    return Xtr.reshape(-1, T, F), Xte.reshape(-1, T, F), ytr, yte


def classifier(kind: str = "lstm", hidden: int = 32) -> sn.Network:
    """``Input(T, F)`` -> ``LSTM(F, hidden)`` (or a tanh ``RNN``), last state -> ``Dense(hidden,
    10)`` softmax, cross-entropy."""
    recurrent = {"lstm": sn.LSTM, "rnn": sn.RNN}[kind]
    x = sn.Input(T, F)
    h = recurrent(F, hidden, name=LAYER)(x)
    out = sn.Dense(hidden, 10, activation="softmax", name="head")(h)
    return sn.Network(inputs=x, outputs=out, loss="cross_entropy", name=f"{kind}_digits")


def train_classifier(net: sn.Network, Xtr: np.ndarray, ytr: np.ndarray, *, epochs: int = 15,
                     lr: float = 0.01, clip_norm: float | None = None, backend: str = "c",
                     seed: int = 0) -> sn.TrainResult:
    """Adam (``clip_norm``: PyTorch's ``clip_grad_norm_`` before each update) emitted into the
    kernel's train step, mini-batches of 32, float64."""
    return sn.train(net, Xtr, ytr, optimizer=sn.Adam(lr=lr, clip_norm=clip_norm), epochs=epochs,
                    batch_size=32, backend=backend, dtype="float64", seed=seed)


def state_gradients(d: sn.Derivation, params: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray,
                    layer: str = LAYER) -> np.ndarray:
    """``dL/d(state_t)`` for every sample and step, ``(N, T, carried width)``, from the printed
    backward recurrence of ``layer``'s first loop (L is the batch's mean loss).

    The forward loop of layer k of a stack is labelled ``"<layer>_l<k>"``; its backward loop
    is the one whose ``pullback_of`` is that loop's id, and its equation ``"<id>.g"`` adds the
    step's own output cotangent to what step t+1 passes back: the whole gradient with respect
    to the state step t carries out.
    """
    forward = next(loop for loop in d.loops if loop.label == f"{layer}_l0")
    backward = next(loop for loop in d.loops if loop.pullback_of == forward.id)
    return d.values(params, X, y)[f"{backward.id}.g"]


def step_gradient_norms(d: sn.Derivation, params: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray,
                        hidden: int, layer: str = LAYER) -> np.ndarray:
    """``||dL/dh_t||`` for t = 0 .. T-1 (the Frobenius norm over the batch): the first
    ``hidden`` columns of each step's state gradient (an LSTM carries ``[h_t, c_t]``)."""
    grads = state_gradients(d, params, X, y, layer)[:, :, :hidden]
    return np.sqrt(np.sum(grads ** 2, axis=(0, 2)))


def gradient_norm_curves(split: tuple, epochs: int, hidden: int, clip_norm: float, lr: float,
                         backend: str) -> dict[tuple[str, str, str], np.ndarray]:
    """Per-step norms on the test split for an RNN and an LSTM, before and after training,
    trained without and with clipping: ``{(kind, "no clipping" | "clip_norm=c", "before" |
    "after"): norms}``. Prints each trained model's test accuracy."""
    Xtr, Xte, ytr, yte = split
    curves: dict[tuple[str, str, str], np.ndarray] = {}
    for kind in ("rnn", "lstm"):
        net = classifier(kind, hidden)
        d = sn.derive(net)
        start = net.init_params(seed=0)
        for clip in (None, clip_norm):
            regime = "no clipping" if clip is None else f"clip_norm={clip:g}"
            result = train_classifier(net, Xtr, ytr, epochs=epochs, lr=lr, clip_norm=clip, backend=backend)
            curves[(kind, regime, "before")] = step_gradient_norms(d, start, Xte, yte, hidden)
            curves[(kind, regime, "after")] = step_gradient_norms(d, result.params, Xte, yte, hidden)
            accuracy = result.accuracy(Xte, yte)
            print(f"  {kind:4s} {regime:13s} test accuracy {accuracy:.3f}; ||dL/dh_t||, t = 0..{T - 1}:")
            for when in ("before", "after"):
                print(f"    {when:6s} " + " ".join(f"{v:9.2e}" for v in curves[(kind, regime, when)]))
    return curves


def plot_gradient_norms(curves: Mapping[tuple[str, str, str], np.ndarray], path: Path) -> Path:
    """One panel per regime (no clipping, clipping), ``||dL/dh_t||`` over t on a log scale: an
    RNN and an LSTM, before and after training. Needs matplotlib (only this example does)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(dict.fromkeys(regime for _, regime, _ in curves))
    fig, axes = plt.subplots(1, len(regimes), figsize=(10, 3.8), dpi=100, sharey=True)
    colours = {"rnn": "tab:red", "lstm": "tab:blue"}
    for ax, regime in zip(np.atleast_1d(axes), regimes):
        for (kind, reg, when), norms in curves.items():
            if reg == regime:
                ax.plot(np.arange(len(norms)), norms, color=colours[kind], marker="o", markersize=3,
                        linestyle="--" if when == "before" else "-", label=f"{kind.upper()}, {when} training")
        ax.set_yscale("log")
        ax.set_xlabel("time step t (the loss reads the last)")
        ax.set_title(f"digits row by row, trained with {regime}")
    np.atleast_1d(axes)[0].set_ylabel(r"$\|\partial L/\partial h_t\|$ on the test split")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--backend", default="c", choices=["c", "numpy"])
    parser.add_argument("--plot", type=Path, default=None, help="save the gradient-norm figure (PNG) here")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    split = digits_sequences()
    Xtr, Xte, ytr, yte = split
    result = train_classifier(classifier("lstm"), Xtr, ytr, epochs=args.epochs, lr=args.lr, backend=args.backend)
    accuracy = result.accuracy(Xte, yte)
    print(f"LSTM(8, 32) -> Dense(32, 10) on the digits row by row, {args.epochs} epochs through the "
          f"{result.kernel.backend} train step: test accuracy {accuracy:.4f} ({time.perf_counter() - t0:.1f} s)")
    print("gradient norm per time step (test split):")
    curves = gradient_norm_curves(split, args.epochs, 32, args.clip_norm, args.lr, args.backend)
    if args.plot is not None:
        print(f"wrote {plot_gradient_norms(curves, args.plot)}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return accuracy


if __name__ == "__main__":
    main()
