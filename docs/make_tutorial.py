"""Write docs/tutorial.md from symnn's own derivations and measurements, so it stays true.

    python docs/make_tutorial.py            # rewrites docs/tutorial.md (about 20 s)

Every formula below is printed from ``sn.derive`` and every number is computed here with
symnn's kernels (NumPy backend, float64, fixed seeds). tests/golden/test_tutorial.py reruns
this script and fails if the text (numbers aside) drifts from the checked-in page.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import sympy as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import symnn as sn  # noqa: E402
from symnn import datasets  # noqa: E402
from symnn.report import tex  # noqa: E402


def g(x: float) -> str:
    """Three significant digits, the precision the prose needs."""
    return f"{x:.3g}"


def eq(step) -> str:
    return f"$$ {tex(step.matrix)} $$"


def layer_norms(net: sn.Network, X, y, seed: int = 0) -> list[float]:
    k = sn.compile(net)
    _, grads = k.loss_and_grad(net.init_params(seed=seed), X, y)
    return [float(np.linalg.norm(grads[f"W{i}"])) for i in range(1, len(net.layers) + 1)]


def digits_split(seed: int = 0):
    X, y = datasets.load_digits()
    return datasets.train_test_split(X, y, 0.25, seed)


def section_single_layer() -> list[str]:
    net = sn.Network([sn.Dense(3, 2, "sigmoid")], loss="mse", name="one")
    d = sn.derive(net)
    p = {"W1": np.array([[0.5, -0.2, 0.1], [0.3, 0.8, -0.5]]), "b1": np.array([0.1, -0.1])}
    x = np.array([[1.0, 2.0, -1.0]])
    yt = np.array([[1.0, 0.0]])
    k = sn.compile(net)
    z = x @ p["W1"].T + p["b1"]
    a = k.forward(p, x)
    loss, grads = k.loss_and_grad(p, x, yt)
    alpha = 0.5
    p2 = {n: v - alpha * grads[n] for n, v in p.items()}
    loss2 = k.loss(p2, x, yt)
    back = {s.label: s for s in d.backward}
    return [
        "## 1. One layer, forward",
        "",
        "A dense layer multiplies its input by a weight matrix, adds a bias and applies an activation "
        "element-wise. For a batch `X` (one row per example) symnn writes:",
        "",
        eq(d.forward[0]),
        eq(d.forward[1]),
        "",
        "**Weights and biases.** Each row of `W` is one unit's weights: how much each input moves it. "
        "`b` shifts the unit's threshold, so a unit can fire even when all inputs are 0. With",
        f"`W = {p['W1'].tolist()}`, `b = {p['b1'].tolist()}` and `x = {x[0].tolist()}`, the pre-activation is "
        f"`z = {[g(v) for v in z[0]]}` and the sigmoid output `a = {[g(v) for v in a[0]]}`.",
        "",
        "## 2. One layer, backward",
        "",
        "Backpropagation computes how the loss changes with every parameter, so gradient descent knows "
        "which way to move each one. For this layer and the mean squared error symnn derives:",
        "",
        f"$$ {tex(back['delta1'].matrix)}, \\qquad {tex(back['delta1'].index)} $$",
        eq(back["dW1"]),
        eq(back["db1"]),
        "",
        "Here `δ = ∂L/∂z` is the error at the pre-activation: the loss derivative times the sigmoid's "
        "derivative, which symnn rewrites in terms of the forward value (σ' = a − a²). The weight "
        "gradient is δ times the layer input; the bias gradient is δ itself, averaged over the batch.",
        "",
        f"For the example above (target `{yt[0].tolist()}`): loss {g(loss)}, "
        f"∂L/∂W = `{np.round(grads['W1'], 3).tolist()}`, ∂L/∂b = `{np.round(grads['b1'], 3).tolist()}`. "
        f"One step `w ← w − α ∂L/∂w` with α = {alpha} lowers the loss to {g(loss2)}.",
        "",
    ]


def section_activations_softmax() -> list[str]:
    z = sp.Symbol("z", real=True)
    rows = ["| activation | f(z) | f'(z) (SymPy) |", "|---|---|---|"]
    for name in ("sigmoid", "tanh", "relu", "softplus", "gelu"):
        expr = sn.activation(name).expr.xreplace({sn.registry.X: z})
        rows.append(f"| {name} | ${sp.latex(expr)}$ | ${sp.latex(sp.simplify(sp.diff(expr, z)))}$ |")
    net = sn.Network([sn.Dense(4, 3, "softmax")], loss="cross_entropy", name="sm")
    d = sn.derive(net)
    k = sn.compile(net)
    p = {"W1": np.eye(3, 4), "b1": np.zeros(3)}
    x = np.array([[2.0, 1.0, 0.1, 0.0]])
    probs = k.forward(p, x)[0]
    return [
        "## 3. Activation functions",
        "",
        "Without a non-linear activation, stacked layers collapse into one linear map. Each built-in "
        "is one SymPy expression; its derivative comes from `sympy.diff`:",
        "",
        *rows,
        "",
        "ReLU's derivative is taken as 0 at 0, as in PyTorch and JAX.",
        "",
        "## 4. Softmax in the output layer",
        "",
        "For classification the last layer's outputs become probabilities that sum to 1:",
        "",
        eq(d.forward[1]),
        "",
        f"Logits `{x[0][:3].tolist()}` give probabilities `{[g(v) for v in probs]}`. With cross-entropy, "
        "symnn proves with SymPy that the output error simplifies to",
        "",
        eq(d.backward[0]),
        "",
        "so the emitted kernel never divides by a probability, and the loss uses the max-shifted "
        "log-sum-exp, finite even for logits of 1000.",
        "",
    ]


def section_chain_rule() -> list[str]:
    net = sn.Network([sn.Dense(4, 8, "tanh"), sn.Dense(8, 6, "tanh"), sn.Dense(6, 3, "softmax")],
                     loss="cross_entropy", name="deep")
    d = sn.derive(net)
    lines = ["## 5. The chain rule through several layers", "",
             "Each layer's error is the next layer's error sent back through its weights, times the "
             "activation's derivative. For a 4-8-6-3 network:", ""]
    lines += [eq(s) for s in d.backward if s.label.startswith("delta")]
    lines += ["", "and every layer's gradients follow from its δ exactly as in section 2.", ""]
    return lines


def section_problems() -> list[str]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 16))
    y = rng.integers(0, 4, 64)
    out = ["## 6. Common problems, measured", ""]
    # vanishing gradients
    rows = ["| layer | sigmoid ‖∂L/∂W‖ | relu ‖∂L/∂W‖ |", "|---|---|---|"]
    norms = {}
    for act in ("sigmoid", "relu"):
        layers = [sn.Dense(16, 16, act) for _ in range(7)] + [sn.Dense(16, 4, "softmax")]
        norms[act] = layer_norms(sn.Network(layers, loss="cross_entropy"), X, y)
    for i in range(8):
        rows.append(f"| {i + 1} | {g(norms['sigmoid'][i])} | {g(norms['relu'][i])} |")
    ratio_s = norms["sigmoid"][0] / norms["sigmoid"][-1]
    ratio_r = norms["relu"][0] / norms["relu"][-1]
    out += ["**Vanishing gradients.** σ' is at most 1/4, so each sigmoid layer shrinks the error it "
            "passes back. Gradient norms per layer of an 8-layer network at initialisation (symnn's "
            "own kernels, the same data):", "", *rows, "",
            f"The first sigmoid layer gets {g(ratio_s)} times the last layer's gradient; with ReLU the "
            f"ratio is {g(ratio_r)}.", ""]
    # exploding gradients and clipping
    net = sn.Network([sn.Dense(16, 16, "identity") for _ in range(6)] + [sn.Dense(16, 4, "softmax")],
                     loss="cross_entropy", name="explode")
    big = {k: v * (3.0 if k.startswith("W") else 1.0) for k, v in net.init_params(seed=0).items()}
    k = sn.compile(net)
    _, grads = k.loss_and_grad(big, X, y)
    total = float(np.sqrt(sum(float((v**2).sum()) for v in grads.values())))
    out += ["**Exploding gradients and clipping.** Weights three times too large in a 7-layer linear "
            f"stack give a gradient norm of {g(total)}. `sn.Adam(clip_norm=1.0)` scales such a gradient "
            f"by min(1, 1/(‖g‖ + 1e-6)) = {g(min(1.0, 1.0 / (total + 1e-6)))} before the update, as "
            "`torch.nn.utils.clip_grad_norm_` does; a non-finite gradient updates nothing and raises.", ""]
    # learning rate, batch size, scaling, regularisation on digits
    Xtr, Xte, ytr, yte = digits_split()
    digits = sn.Network([sn.Dense(64, 32, "relu"), sn.Dense(32, 10, "softmax")], loss="cross_entropy",
                        name="digits_mlp")
    rows = ["| learning rate | final train loss | test accuracy |", "|---|---|---|"]
    for lr in (0.001, 0.01, 0.1, 1.0, 5.0):
        try:
            r = sn.train(digits, Xtr, ytr, optimizer=sn.SGD(lr=lr), epochs=10, standardize=True, seed=0)
            rows.append(f"| {lr} | {g(r.history.train_loss[-1])} | {g(r.accuracy(Xte, yte))} |")
        except sn.NonFiniteError:
            rows.append(f"| {lr} | diverged (NonFiniteError) | — |")
    out += ["**Learning rate.** Plain SGD on the 8×8 digits for 10 epochs:", "", *rows, "",
            "Too small barely moves; too large overshoots or diverges.", ""]
    rows = ["| batch size | steps | test accuracy |", "|---|---|---|"]
    for bs in (8, 32, 128, 1347):
        r = sn.train(digits, Xtr, ytr, optimizer=sn.SGD(lr=0.1), epochs=10, batch_size=bs, standardize=True, seed=0)
        rows.append(f"| {bs} | {r.steps} | {g(r.accuracy(Xte, yte))} |")
    out += ["**Batch size.** Same data, same 10 epochs: smaller batches take more (noisier) steps.", "",
            *rows, ""]
    raw = sn.train(digits, Xtr, ytr, optimizer=sn.SGD(lr=0.1), epochs=10, seed=0)
    scaled = sn.train(digits, Xtr, ytr, optimizer=sn.SGD(lr=0.1), epochs=10, seed=0, standardize=True)
    out += ["**Feature scaling.** The digits' pixels run from 0 to 16. Standardising each feature "
            "with the training split's mean and deviation (`standardize=True`) changes the test accuracy "
            f"after 10 epochs from {g(raw.accuracy(Xte, yte))} to {g(scaled.accuracy(Xte, yte))}.", ""]
    wide = lambda **kw: sn.Network([sn.Dense(64, 128, "relu", dropout=kw.pop("dropout", 0.0)),  # noqa: E731
                                    sn.Dense(128, 10, "softmax")], loss="cross_entropy", name="wide", **kw)
    rows = ["| model | train accuracy | test accuracy |", "|---|---|---|"]
    for label, net in (("no regularisation", wide()), ("l2 = 1e-3", wide(l2=1e-3)), ("dropout 0.3", wide(dropout=0.3))):
        r = sn.train(net, Xtr, ytr, optimizer=sn.Adam(lr=0.01), epochs=30, standardize=True, seed=0)
        rows.append(f"| {label} | {g(r.accuracy(Xtr, ytr))} | {g(r.accuracy(Xte, yte))} |")
    out += ["**Regularisation and dropout.** A wider 64-128-10 network, Adam, 30 epochs. L2 adds "
            "λ/2·Σw² to the loss (so λw to each weight gradient); dropout zeroes hidden units at random "
            "in training only:", "", *rows, ""]
    return out


def main(out: Path | None = None) -> Path:
    warnings.simplefilter("ignore")
    lines = ["# symnn tutorial: from one neuron to training a network", "",
             "Generated by `python docs/make_tutorial.py` from symnn's own derivations and kernels "
             "(NumPy backend, float64, fixed seeds); do not edit by hand.", ""]
    for part in (section_single_layer, section_activations_softmax, section_chain_rule, section_problems):
        lines += part()
    out = out or ROOT / "docs" / "tutorial.md"
    out.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
