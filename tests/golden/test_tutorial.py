"""docs/tutorial.md is what docs/make_tutorial.py writes today: the formulas and prose exactly,
the measured numbers to within what a different BLAS or CPU could move (masked here); and the
numbers the page prints support the checks it describes."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def _mask(text: str) -> str:
    # numbers measured by training (accuracies, losses, norms) may move in the last digit
    return re.sub(r"(?<![\w^{_\\])-?\d+(\.\d+)?(e[-+]?\d+)?", "#", text)


def _section(text: str, number: int) -> str:
    return re.search(rf"^## {number}\.(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE).group(1)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The page as the script writes it now (one run, about 6 s, shared by the tests below)."""
    path = ROOT / "docs" / "make_tutorial.py"
    spec = importlib.util.spec_from_file_location("make_tutorial", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(tmp_path_factory.mktemp("tutorial") / "tutorial.md")
    return out.read_text(encoding="utf-8")


def test_tutorial_is_generated_and_in_sync(fresh: str) -> None:
    checked_in = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    assert _mask(fresh) == _mask(checked_in), (
        "docs/tutorial.md drifted: run python docs/make_tutorial.py")
    for heading in ("One layer, forward", "One layer, backward", "Activation functions", "Softmax",
                    "The softmax Jacobian", "Composing with cross-entropy",
                    "chain rule, step by step", "Check one entry", "Vanishing gradients",
                    "clipping", "Learning rate", "Batch size", "Feature scaling",
                    "Initialisation: small weights, Xavier and He", "Optimisers compared",
                    "Regularisation and dropout", "L1 versus L2", "Early stopping",
                    "Sequences: recurrences and backpropagation through time",
                    "Vanishing gradients through time", "The adding problem"):
        assert heading in fresh, heading
    assert "False" not in fresh and "diverged" in fresh


def test_tutorial_measures_every_optimiser_and_init(fresh: str) -> None:
    optimisers = _section(fresh, 8)
    for name in ("SGD", "Momentum", "AdaGrad", "RMSprop", "Adam"):
        row = rf"^\| {name} \| {_NUMBER} \| {_NUMBER} \| {_NUMBER} \| \d+ \| \d+ \|$"
        assert re.search(row, optimisers, re.MULTILINE), name
    init = _section(fresh, 7)
    for act in ("tanh", "relu"):
        for scheme in ("small N", "Xavier", "He"):
            assert re.search(rf"^\| {act} \| {scheme}", init, re.MULTILINE), (act, scheme)


def test_tutorial_numbers_support_its_checks(fresh: str) -> None:
    """The chain-rule check, the softmax gradient and where training stopped, from the page."""
    off, bound = map(float, re.search(rf"off by ({_NUMBER}), inside .*? = ({_NUMBER}):",
                                      fresh).groups())
    assert off <= bound < 1e-6
    assert float(re.search(rf"five steps agree to ({_NUMBER})", fresh).group(1)) < 1e-12
    kernel_db, p_minus_y = re.search(r"one-row batch is `(\[.*?\])`, which is p − y = `(\[.*?\])`",
                                     fresh).groups()
    assert kernel_db == p_minus_y
    stop, best, patience = map(int, re.search(r"stopped after epoch (\d+) = (\d+) \+ (\d+)",
                                              fresh).groups())
    assert stop == best + patience
    assert int(re.search(r"`result\.best_epoch` is (\d+)", fresh).group(1)) == best
    table = re.search(r"From `result\.history`:\n\n(.*?)\n\n", fresh, re.DOTALL).group(1)
    epochs = table.splitlines()[2:]
    assert len(epochs) == stop and epochs[best - 1].endswith("| best |")
    val = [float(row.split("|")[3]) for row in epochs]
    assert val[best - 1] == min(val)
