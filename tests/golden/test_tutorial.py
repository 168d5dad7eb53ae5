"""docs/tutorial.md is what docs/make_tutorial.py writes today: the formulas and prose exactly,
the measured numbers to within what a different BLAS or CPU could move (masked here)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _mask(text: str) -> str:
    # numbers measured by training (accuracies, losses, norms) may move in the last digit
    return re.sub(r"(?<![\w^{_\\])-?\d+(\.\d+)?(e[-+]?\d+)?", "#", text)


def test_tutorial_is_generated_and_in_sync(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_tutorial", ROOT / "docs" / "make_tutorial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.main(tmp_path / "tutorial.md").read_text(encoding="utf-8")
    checked_in = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    assert _mask(fresh) == _mask(checked_in), "docs/tutorial.md drifted: run python docs/make_tutorial.py"
    for heading in ("One layer, forward", "One layer, backward", "Activation functions", "Softmax",
                    "chain rule", "Vanishing gradients", "clipping", "Learning rate", "Batch size",
                    "Feature scaling", "Regularisation and dropout"):
        assert heading in fresh, heading
    assert "False" not in fresh and "diverged" in fresh
