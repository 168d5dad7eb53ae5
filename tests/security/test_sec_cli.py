"""Issue 18, item 12: every CLI failure on a hostile spec is one ``symnn: error:`` line, exit 2.

These used to end in a raw traceback: a deeply nested TOML document (RecursionError in the TOML
parser), ``elu`` with ``alpha=1e308`` (an OverflowError in the simplifier), ``[train]
optimizer = 5`` (a TypeError) and ``seed = -1`` (NumPy's ValueError, after the kernels were
built). Each is now refused where it enters (the spec reader, the activation and optimiser
constructors, ``sn.train``), with an error naming the file and key. (Malformed ONNX and PyTorch
files: tests/security/test_sec_importers.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.cli import main
from symnn.errors import ConfigError, SpecParseError

NETWORK = """
[network]
name = "tiny"
loss = "mse"

[[layer]]
in = 2
out = 1
activation = {activation}
"""


def _run(capsys: pytest.CaptureFixture, tmp_path: Path, spec: str, *command: str) -> str:
    """Write ``spec``, run ``symnn COMMAND SPEC ...`` in this process, and return its one error
    line after checking the exit status 2."""
    path = tmp_path / "spec.toml"
    path.write_text(spec)
    data = tmp_path / "rows.csv"
    data.write_text("0,0,0\n0,1,1\n1,0,1\n1,1,0\n")
    argv = [command[0], str(path), *command[1:]]
    if command[0] == "train":
        argv += ["--data", str(data)]
    status = main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("symnn: error: "), (status, err[-2000:])
    return lines[0]


@pytest.mark.parametrize("nested", ["a = " + "[" * 3000 + "]" * 3000,
                                    "a = " + "{ b = " * 3000 + "1" + " }" * 3000],
                         ids=["arrays", "inline-tables"])
@pytest.mark.parametrize("command", ["latex", "emit", "train"])
def test_deeply_nested_toml(capsys, tmp_path: Path, nested: str, command: str) -> None:
    argv = (command, "--out", str(tmp_path / "out")) if command == "emit" else (command,)
    assert "nested too deeply" in _run(capsys, tmp_path, nested + "\n", *argv)


@pytest.mark.parametrize("activation, key", [
    ('{ name = "elu", alpha = 1e308 }', "alpha"),
    ('{ name = "leaky_relu", alpha = -1e39 }', "alpha"),   # beyond float32: inf in the float32 kernel
    ('{ name = "elu", alpha = nan }', "alpha"),
])
def test_activation_parameters_beyond_float32(capsys, tmp_path: Path, activation: str, key: str) -> None:
    line = _run(capsys, tmp_path, NETWORK.format(activation=activation), "emit", "--out", str(tmp_path / "out"))
    assert f"{key} must be a finite real" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("table, key", [
    ("optimizer = 5", "[train].optimizer"),
    ("optimizer = [1, 2]", "[train].optimizer"),
    ("optimizer = { lr = 0.1 }", "missing key 'name'"),
    ('optimizer = { name = "adam", lr = inf }', "lr must be finite"),
    ('optimizer = { name = "adam", lr = "fast" }', "lr must be a real number"),
    ('optimizer = { name = "adam", momentum = 0.9 }', "no hyperparameter"),
    ('optimizer = "sgdd"', "unknown optimizer"),
    ("seed = -1", "[train].seed: expected an integer >= 0"),
    ("seed = 1.5", "[train].seed"),
    ("epochs = 0", "[train].epochs"),
    ('epochs = "10"', "[train].epochs"),
    ("batch_size = true", "[train].batch_size"),
    ("patience = -3", "[train].patience"),
    ("validation_split = 1.0", "[train].validation_split"),
    ('standardize = "yes"', "[train].standardize"),
    ('backend = "gpu"', "unknown backend 'gpu'"),
    ('dtype = "float16"', "[train].dtype"),
], ids=lambda v: v if len(v) < 30 else None)
def test_train_table_values(capsys, tmp_path: Path, table: str, key: str) -> None:
    spec = NETWORK.format(activation='"tanh"') + "\n[train]\n" + table + "\n"
    line = _run(capsys, tmp_path, spec, "train")
    assert key in line
    # read by every command, not only train: the spec is invalid
    with pytest.raises(SpecParseError):
        sn.load_spec(tmp_path / "spec.toml")


def test_a_valid_train_table_still_reads(tmp_path: Path) -> None:
    spec = NETWORK.format(activation='"tanh"') + """
[train]
optimizer = { name = "adam", lr = 0.01, clip_norm = 1.0 }
epochs = 3
batch_size = 2
seed = 0
validation_split = 0.25
patience = 2
standardize = true
backend = "numpy"
dtype = "float32"
"""
    assert sn.loads_spec(spec).train["optimizer"] == {"name": "adam", "lr": 0.01, "clip_norm": 1.0}


def test_the_python_entry_points_refuse_the_same_values_before_any_work() -> None:
    with pytest.raises(ConfigError, match="alpha must be a finite real"):
        sn.Activation.builtin("elu", alpha=1e308)
    with pytest.raises(ConfigError, match="alpha must be a finite real"):
        sn.Activation.builtin("leaky_relu", alpha=10**400)  # an int too large for a float
    sn.Activation.builtin("elu", alpha=3e38)  # float32's range is the limit, not a guess below it
    with pytest.raises(ConfigError, match="lr must be finite"):
        sn.optimizer("adam", lr=10**400)  # float() of it used to raise a bare OverflowError
    with pytest.raises(ConfigError, match="clip_norm must be finite"):
        sn.optimizer("sgd", clip_norm=10**400)
    net = sn.Network([sn.Dense(2, 1, "tanh")], loss="mse")
    X, Y = np.zeros((4, 2)), np.zeros((4, 1))
    for seed in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
            sn.train(net, X, Y, seed=seed, epochs=1, backend="numpy")
