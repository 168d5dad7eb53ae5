"""A short, seeded run of fuzz/fuzz_spec.py in CI: only SpecParseError may escape (S17/S18)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_spec_fuzz_short_run() -> None:
    spec = importlib.util.spec_from_file_location("fuzz_spec", ROOT / "fuzz" / "fuzz_spec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    crashes = module.run(5000, seed=7)
    assert not crashes, [(t[:120], repr(e)) for t, e in crashes[:5]]


def test_regressions_found_by_the_fuzzer() -> None:
    import sympy as sp
    import pytest

    from symnn.errors import SpecParseError
    from symnn.spec_toml import parse_expression

    z = sp.Symbol("z")
    for text in ["- True", "True * z", "True > pi", "9**9**9", "((9**64)**64)**64", "1/0", "z + 1" + "0" * 5000]:
        with pytest.raises(SpecParseError):
            parse_expression(text, {"z": z}, "x")
