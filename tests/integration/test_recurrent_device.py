"""Recurrent networks trained on the device (issue 23): the emitted ``train_main.c`` trains an
LSTM and a GRU classifier with no Python, from PyTorch's start U(-1/sqrt(H), 1/sqrt(H)) for
every recurrent tensor; frozen recurrent parameters get no gradient and keep their values
through the train step of both backends. (The C harness under the sanitizers and valgrind runs
the recurrent nets of tests/integration/test_c_standalone.py.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn import datasets
from symnn.cli import main

ROOT = Path(__file__).resolve().parents[2]
NEEDS_MAKE = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _gru_digits(ship: Path) -> tuple[sn.Network, int]:
    """A GRU(8, 16) over the digits' 8 rows, the last state into a softmax: emitted with Adam."""
    x = sn.Input(8, 8, name="X")
    h = sn.GRU(8, 16, name="gru")(x)
    net = sn.Network(inputs=x, outputs=sn.Dense(16, 10, "softmax", name="head")(h), loss="cross_entropy",
                     name="gru_digits")
    sn.emit(net, ship, backend="c", optimizer=sn.Adam(lr=0.01))
    return net, 16


def _lstm_digits(ship: Path) -> tuple[sn.Network, int]:
    """examples/lstm_digits.toml (LSTM(8, 32) -> Dense(32, 10) softmax), emitted by the CLI."""
    spec = ROOT / "examples" / "lstm_digits.toml"
    assert main(["emit", str(spec), "--backend", "c", "--with-train-step", "--out", str(ship)]) == 0
    return sn.load_spec(spec).network, 32


@NEEDS_MAKE
@pytest.mark.needs_cc
@pytest.mark.parametrize("emit", [_lstm_digits, _gru_digits], ids=["lstm", "gru"])
def test_the_c_trainer_trains_a_recurrent_classifier_on_digit_rows(tmp_path: Path, emit) -> None:
    """The digits read row by row (8 steps of 8 pixels, one CSV row of 64 pixels and a label),
    the trainer built by the Makefile: with 0 epochs it writes its start, every tensor of the
    recurrent layer (input and hidden weights, biases) uniform in +-1/sqrt(H) as PyTorch's and
    the head's weight in +-1/sqrt(fan_in), its bias 0; in 5 epochs the loss falls by a third and
    the training accuracy passes 0.5 (chance: 0.1); a NaN label stops it with its line."""
    ship = tmp_path / "c"
    net, hidden = emit(ship)
    name = net.name
    built = _run(["make", "-C", str(ship), f"{name}_train"])
    assert built.returncode == 0, built.stdout + built.stderr
    X, y = datasets.load_digits()
    rows = 400
    csv = tmp_path / "digits.csv"
    csv.write_text("".join(",".join(repr(float(v)) for v in np.append(r / 16.0, t)) + "\n"
                           for r, t in zip(X[:rows], y[:rows])))
    trainer = str(ship / f"{name}_train")

    start = _run([trainer, str(csv), "0", str(tmp_path / "p0.bin")])
    assert start.returncode == 0, start.stderr
    flat = np.fromfile(tmp_path / "p0.bin", dtype=np.float64)
    bound = 1 / np.sqrt(hidden)
    for pname, lo, hi, _ in net.param_layout():
        p = flat[lo:hi]
        if pname == "head.bias":
            assert not np.any(p), pname
        else:  # the head's fan-in is H too; each tensor spans its range (hundreds of draws)
            assert np.abs(p).max() <= bound and np.abs(p).max() > 0.8 * bound, (pname, np.abs(p).max(), bound)

    out = _run([trainer, str(csv), "5"])
    assert out.returncode == 0, out.stderr
    losses = [float(line.split()[3]) for line in out.stdout.splitlines() if line.startswith("epoch ")]
    assert losses[-1] < losses[0] * 2 / 3, out.stdout
    assert float(out.stdout.splitlines()[-1].split()[1]) > 0.5, out.stdout

    (tmp_path / "nan.csv").write_text(csv.read_text().splitlines()[0] + "\n" + ",".join(["0.5"] * 64) + ",nan\n")
    bad = _run([trainer, str(tmp_path / "nan.csv"), "1"])
    assert bad.returncode == 2 and "line 2: the label nan is not an integer" in bad.stderr, bad.stderr


def _stacked(frozen: tuple[str, ...] = ()) -> sn.Network:
    """LSTM (2 layers, every step's state) -> GRU (last state) -> softmax, with l2 (weight decay
    of the weights in the loss) so that a frozen weight's penalty must be left out too."""
    x = sn.Input(3, 2, name="x")
    h = sn.LSTM(2, 3, num_layers=2, return_sequences=True, name="lstm")(x)
    h = sn.GRU(3, 2, name="gru")(h)
    return sn.Network(inputs=x, outputs=sn.Dense(2, 2, "softmax", name="head")(h), loss="cross_entropy", l2=1e-2,
                      name="frozen_rec", frozen=list(frozen))


#: a tensor of each LSTM layer (the first's input weights, the second's hidden bias) and every
#: tensor of the GRU (its loop still carries the cotangent back to the LSTM)
FROZEN = ("lstm.weight_ih_l0", "lstm.bias_hh_l1", "gru")


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_recurrent_parameters_get_no_gradient_and_keep_their_values(backend: str) -> None:
    """Against the same network with nothing frozen (NumPy, float64): the frozen tensors' gradient
    is exactly zero and every other one the same; one Momentum step with weight decay moves the
    trainable tensors as it moves them there and leaves the frozen ones; two more steps keep the
    frozen tensors' bits and their optimiser state at zero."""
    part = _stacked(FROZEN)
    assert part.frozen == ("lstm.weight_ih_l0", "lstm.bias_hh_l1", "gru.weight_ih_l0", "gru.weight_hh_l0",
                           "gru.bias_ih_l0", "gru.bias_hh_l0")
    opt = sn.Momentum(lr=0.1, momentum=0.9, weight_decay=0.05)
    full = sn.compile(_stacked(), backend="numpy", optimizer=opt)
    k = sn.compile(part, backend=backend, optimizer=opt)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(4, 3, 2)), rng.integers(0, 2, 4)
    params = part.init_params(seed=1)

    (L0, g0), (L1, g1) = full.loss_and_grad(params, X, Y), k.loss_and_grad(params, X, Y)
    tol = 1e-12  # float64: the same sums, in another order in C
    assert abs(L1 - L0) <= tol * abs(L0)
    scale = max(float(np.abs(g).max()) for g in g0.values())
    for name, g in g1.items():
        if name in part.frozen:
            assert g.shape == params[name].shape and not np.any(g), name
        else:
            assert np.abs(g - g0[name]).max() <= tol * scale, name

    theta0, state0 = full.pack(params), full.init_state()
    theta, state = k.pack(params), k.init_state()
    full.train_step(theta0, state0, X, Y, 1)
    k.train_step(theta, state, X, Y, 1)
    moved, stepped = k.unpack(theta), full.unpack(theta0)
    pscale = max(float(np.abs(v).max()) for v in params.values())
    for name in params:
        if name in part.frozen:
            assert np.array_equal(moved[name], params[name]), name
        else:
            assert not np.array_equal(moved[name], params[name]), name
            assert np.abs(moved[name] - stepped[name]).max() <= tol * pscale, name
    for step in (2, 3):
        k.train_step(theta, state, X, Y, step)
    moved = k.unpack(theta)
    assert all(np.array_equal(moved[name], params[name]) for name in part.frozen)
    for lo, hi in part.frozen_ranges():
        assert not np.any(state[..., lo:hi]), (lo, hi)
