"""Fuzz the TOML spec reader and the expression parser (RELIABILITY.md S17/S18).

    python fuzz/fuzz_spec.py [N] [SEED]     # default 100,000 inputs, seed 0: about 25 s

Inputs: mutations of the examples/ specs (byte flips, deletions, insertions, splices of TOML
and expression fragments) and random expression strings. The only exception allowed out of
``loads_spec``/``parse_expression`` is ``SpecParseError``; anything else is printed with its
input and the script exits 1. tests/unit/test_spec_fuzz.py runs a short, seeded version.
"""

from __future__ import annotations

import random
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sympy as sp  # noqa: E402

from symnn.errors import SpecParseError  # noqa: E402
from symnn.spec_toml import loads_spec, parse_expression  # noqa: E402

FRAGMENTS = ["[[layer]]", "[network]", "[loss]", "[train]", "in = ", "out = ", "activation = ", "expr = ",
             '"z/(1+exp(-z))"', "{ name = \"x\" }", "nan", "inf", "1e400", "-1", "0", "true", "\"\"", "[",
             "]", "{", "}", "=", "\n", "\"\\u0000\"", "dropout = 0.5", "l2 = -1", "loss = \"mse\"",
             "9**9**9", "__import__", "lambda", "Piecewise((z, z > 0), (0, True))", "(" * 50]
TOKENS = ["z", "p", "y", "1", "2", "0.5", "-", "+", "*", "/", "**", "(", ")", ",", "exp", "log", "tanh",
          "Abs", "Max", "Piecewise", "True", "<=", ">", "pi", "__class__", ".", "[", "]", "'s'", "lambda", ":"]


def mutate(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randrange(len(chars) + 1)
        if op < 0.3 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif op < 0.6:
            chars[pos:pos] = list(rng.choice(FRAGMENTS))
        elif op < 0.8 and chars:
            chars[min(pos, len(chars) - 1)] = chr(rng.randrange(1, 0x250))
        else:
            a, b = sorted(rng.randrange(len(chars) + 1) for _ in range(2))
            chars[pos:pos] = chars[a:b]
    return "".join(chars)


def random_expression(rng: random.Random) -> str:
    return " ".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 25)))


def run(n: int, seed: int = 0) -> list[tuple[str, BaseException]]:
    rng = random.Random(seed)
    seeds = [p.read_text() for p in sorted((ROOT / "examples").glob("*.toml"))]
    variables = {"z": sp.Symbol("z"), "p": sp.Symbol("p"), "y": sp.Symbol("y")}
    crashes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            if i % 2:
                text = random_expression(rng)
                call = lambda t=text: parse_expression(t, variables, "fuzz")  # noqa: E731
            else:
                text = mutate(rng.choice(seeds), rng)
                call = lambda t=text: loads_spec(t, "fuzz")  # noqa: E731
            try:
                call()
            except SpecParseError:
                pass
            except Exception as exc:  # noqa: BLE001 - anything else is the finding
                crashes.append((text, exc))
    return crashes


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    start = time.perf_counter()
    found = run(count, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    for text, exc in found[:20]:
        print(f"{type(exc).__name__}: {exc}\n  input: {text[:200]!r}")
    print(f"{count} inputs in {time.perf_counter() - start:.0f} s: {len(found)} escaped other than SpecParseError")
    sys.exit(1 if found else 0)
