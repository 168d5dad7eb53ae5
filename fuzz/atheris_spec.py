#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of the TOML spec reader and the expression
parser (RELIABILITY.md S17/S18): only ``SpecParseError`` may escape.

    pip install atheris
    python fuzz/atheris_spec.py fuzz/corpus examples -runs=1000000   # or -max_total_time=600

The first directory collects the new corpus units; examples/ seeds the TOML side. Minimise
before committing: ``python fuzz/atheris_spec.py -merge=1 NEW_DIR fuzz/corpus``.

An input that starts with ``[``, ``#`` or a newline, or has an even length and holds ``=``,
goes to ``loads_spec``; every other one to ``parse_expression``. A crash (any other exception) is written by
libFuzzer as ``crash-*`` in the working directory; commit it under fuzz/crashers/ with its fix.
fuzz/fuzz_spec.py is the dependency-free mutation fuzzer that CI runs.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["symnn"]):
    import sympy as sp

    from symnn.errors import SpecParseError
    from symnn.spec_toml import loads_spec, parse_expression

VARIABLES = {"z": sp.Symbol("z"), "p": sp.Symbol("p"), "y": sp.Symbol("y")}


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if text.startswith(("[", "#", "\n")) or len(data) % 2 == 0 and "=" in text:
                loads_spec(text, "fuzz")
            else:
                parse_expression(text, VARIABLES, "fuzz")
        except SpecParseError:
            pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
