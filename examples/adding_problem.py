"""The adding problem (Hochreiter & Schmidhuber, 1997): a long sequence task where a plain RNN
fails to learn and an LSTM learns, both trained through the emitted C train step.

    python examples/adding_problem.py            # T = 100: about 70 s on 2 cores, C compiler needed
    python examples/adding_problem.py --quick    # a 15 s run of the whole script: too short to learn
    python examples/adding_problem.py --plot docs/adding_problem.png   # needs matplotlib

Each sequence has T steps of two features: a number drawn uniformly from [0, 1), and a marker
that is 1 at exactly two steps (one in each half of the sequence) and 0 elsewhere. The target
is the sum of the two marked numbers. Predicting the mean, 1, whatever the input gives a mean
squared error of 1/6 (the variance of a sum of two uniforms); beating that means carrying the
first marked number across about T/2 steps of distractors.

``RNN(2, H)`` (tanh) and ``LSTM(2, H)``, last state -> ``Dense(H, 1)``, MSE, the same Adam
with ``clip_norm=1`` and the same data and epochs. The script prints the test MSE after each
epoch and the gradient norm ``||dL/dh_t||`` over t before and after training (read from
``sn.derive(net).values``, as in examples/lstm_digits.py): the RNN's shrinks by orders of
magnitude from the last step back to the first, so the error at the output barely reaches the
step that holds the first marked number.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

import symnn as sn

#: the mean squared error of always predicting 1: Var(U1 + U2) = 2/12
BASELINE = 1.0 / 6.0
LAYER = "rec"


def adding_data(n: int, T: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: X (n, T, 2) with the numbers in ``X[..., 0]`` and the two markers in
    ``X[..., 1]`` (one in steps 0 .. T/2-1, one in T/2 .. T-1), y (n, 1) the marked sum.

    Raises:
        ConfigError: n < 1 or T < 2 (two markers need two steps).
    """
    if n < 1 or T < 2:
        raise sn.ConfigError(f"the adding problem needs n >= 1 sequences of T >= 2 steps, got n={n}, T={T}")
    X = np.zeros((n, T, 2))
    X[:, :, 0] = rng.uniform(size=(n, T))
    rows = np.arange(n)
    first, second = rng.integers(0, T // 2, n), rng.integers(T // 2, T, n)
    X[rows, first, 1] = X[rows, second, 1] = 1.0
    return X, (X[rows, first, 0] + X[rows, second, 0]).reshape(n, 1)


def regressor(kind: str, T: int, hidden: int) -> sn.Network:
    """``Input(T, 2)`` -> ``RNN`` (tanh) or ``LSTM`` of ``hidden`` units, last state ->
    ``Dense(hidden, 1)``, MSE."""
    recurrent = {"lstm": sn.LSTM, "rnn": sn.RNN}[kind]
    x = sn.Input(T, 2)
    out = sn.Dense(hidden, 1, activation="identity", name="head")(recurrent(2, hidden, name=LAYER)(x))
    return sn.Network(inputs=x, outputs=out, loss="mse", name=f"{kind}_adding")


def _digits_example():
    """examples/lstm_digits.py, for its per-step gradient norms (examples/ is not a package)."""
    path = Path(__file__).with_name("lstm_digits.py")
    spec = importlib.util.spec_from_file_location("lstm_digits_example", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run(kind: str, data: tuple, T: int, hidden: int, epochs: int, lr: float, seed: int = 0) -> dict:
    """Train one model through the C train step (float32), test MSE after every epoch, and the
    per-step gradient norms on 200 test rows before and after training (float64, from the
    printed derivation)."""
    Xtr, ytr, Xte, yte = data
    net = regressor(kind, T, hidden)
    t0 = time.perf_counter()
    result = sn.train(net, Xtr, ytr, optimizer=sn.Adam(lr=lr, clip_norm=1.0), epochs=epochs, batch_size=32,
                      backend="c", dtype="float32", seed=seed, validation=(Xte, yte))
    seconds = time.perf_counter() - t0
    d = sn.derive(net)
    norms = _digits_example().step_gradient_norms
    before = norms(d, net.init_params(seed=seed), Xte[:200], yte[:200], hidden, LAYER)
    after = norms(d, result.params, Xte[:200], yte[:200], hidden, LAYER)
    # with validation data, sn.train keeps the best epoch's weights: "final" is their test MSE
    return {"mse": list(result.history.val_loss), "seconds": seconds, "before": before, "after": after,
            "final": float(np.mean((result.predict(Xte) - yte) ** 2))}


def plot(results: dict[str, dict], T: int, baseline: float, path: Path) -> Path:
    """Left: test MSE over epochs (and that of always predicting 1); right: ``||dL/dh_t||`` over t, before
    (dashed) and after (solid) training, log scale. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    colours = {"rnn": "tab:red", "lstm": "tab:blue"}
    for kind, r in results.items():
        left.plot(np.arange(1, len(r["mse"]) + 1), r["mse"], color=colours[kind], marker="o", markersize=3,
                  label=kind.upper())
        right.plot(r["before"], color=colours[kind], linestyle="--", label=f"{kind.upper()}, before training")
        right.plot(r["after"], color=colours[kind], label=f"{kind.upper()}, after training")
    left.axhline(baseline, color="grey", linestyle=":", label="always predict 1")
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("test MSE")
    left.set_title(f"adding problem, T = {T}")
    left.legend(fontsize=8)
    right.set_yscale("log")
    right.set_xlabel("time step t (the loss reads the last)")
    right.set_ylabel(r"$\|\partial L/\partial h_t\|$ on 200 test rows")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2000 rows, 3 epochs: runs every part in about 15 s, too short for either to learn")
    parser.add_argument("--T", type=int, default=100, help="sequence length")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="save the figure (PNG) here")
    args = parser.parse_args(argv)
    # the LSTM's test MSE leaves the baseline after about 1,900 updates (epoch 6 of 10,000 rows)
    n_train, epochs = (2000, 3) if args.quick else (10000, 12)
    rng = np.random.default_rng(args.seed)
    data = (*adding_data(n_train, args.T, rng), *adding_data(1000, args.T, rng))
    baseline = float(np.mean((data[3] - 1.0) ** 2))  # this test set's MSE of always predicting 1
    print(f"adding problem: T = {args.T}, {n_train} training sequences, 1000 test; H = {args.hidden}, "
          f"Adam(lr={args.lr}, clip_norm=1), {epochs} epochs; predicting 1 gives test MSE {baseline:.4f} "
          f"(expected {BASELINE:.4f})")
    results = {kind: run(kind, data, args.T, args.hidden, epochs, args.lr, args.seed) for kind in ("rnn", "lstm")}
    print("test MSE per epoch:")
    print("  epoch " + " ".join(f"{kind.upper():>8s}" for kind in results))
    for epoch in range(epochs):
        print(f"  {epoch + 1:5d} " + " ".join(f"{r['mse'][epoch]:8.4f}" for r in results.values()))
    for kind, r in results.items():
        print(f"{kind.upper():4s}: best epoch's test MSE {r['final']:.4f} "
              f"({r['final'] / baseline:.3f} of predicting 1), "
              f"trained in {r['seconds']:.1f} s; ||dL/dh_0|| / ||dL/dh_T-1|| before training "
              f"{r['before'][0] / r['before'][-1]:.2e}, after {r['after'][0] / r['after'][-1]:.2e}")
    if args.plot is not None:
        print(f"wrote {plot(results, args.T, baseline, args.plot)}")
    return results


if __name__ == "__main__":
    main()
