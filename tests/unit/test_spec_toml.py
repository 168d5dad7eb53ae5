"""TOML specs: exact round trips, the examples, and S17/S18 (every bad file is a SpecParseError,
no expression string is ever evaluated)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import sympy as sp

import symnn as sn
from symnn.errors import SpecParseError
from symnn.spec_toml import dumps_spec, load_spec, loads_spec, parse_expression
from tests.catalogue import CATALOGUE

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_round_trip_is_equal(name: str) -> None:
    net = CATALOGUE[name]
    back = loads_spec(dumps_spec(net)).network
    assert back == net
    assert sn.emit_source(back) == sn.emit_source(net)


def test_round_trip_with_parameters_dropout_and_training_settings() -> None:
    net = sn.Network([sn.Dense(3, 4, sn.activation("leaky_relu", alpha=0.2), dropout=0.1),
                      sn.Dense(4, 2, "softmax")], loss="cross_entropy", l1=0.01, l2=1e-4, name="rt")
    train = {"optimizer": {"name": "adam", "lr": 0.01}, "epochs": 10, "standardize": True}
    spec = loads_spec(dumps_spec(net, train))
    assert spec.network == net and spec.train == train


DOMAIN_SPEC = """[network]
name = "dom"

[[layer]]
in = 2
out = 3
activation = { name = "root", expr = "sqrt(z)", var = "z", domain = [0, inf] }

[[layer]]
in = 3
out = 1
activation = "sigmoid"

[loss]
name = "wbce"
expr = "-(3*y*log(p) + (1 - y)*log(1 - p))"
pred = "p"
target = "y"
domain = [0, 1]
"""


def test_custom_loss_and_activation_declare_domains() -> None:
    net = loads_spec(DOMAIN_SPEC).network
    assert net.loss.domain == (0.0, 1.0) and net.layers[0].activation.domain == (0.0, float("inf"))
    assert loads_spec(dumps_spec(net)).network == net
    with pytest.raises(SpecParseError, match=r"loss 'wbce': domain \(lo, hi\) needs lo < hi"):
        loads_spec(DOMAIN_SPEC.replace("domain = [0, 1]", "domain = [1, 0]"))
    with pytest.raises(SpecParseError, match=r"not real at p = -3 .*domain=\(lo, hi\)"):
        loads_spec(DOMAIN_SPEC.replace("domain = [0, 1]\n", ""))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_examples_load_and_round_trip(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = load_spec(path)
        assert loads_spec(dumps_spec(spec.network, spec.train)).network == spec.network


BAD = [
    ("[network\nname = 'x'", "line 1"),                                   # malformed TOML
    ("[network]\nname = 'a'\nname = 'b'", "invalid TOML"),                # duplicate key
    ("[network]\nloss = 'mse'\n", "missing key 'layer'"),
    ("[network]\nloss = 'mse'\n[[layer]]\nin = 'two'\nout = 1\n", "expected int"),
    ("[network]\nloss = 'mse'\n[[layer]]\nin = 2\nout = 1\nactivaton = 'tanh'\n", "unknown key"),
    ("[network]\nloss = 'mse'\nl2 = nan\n[[layer]]\nin = 2\nout = 1\n", "l2"),
    ("[network]\nloss = 'mse'\n[[layer]]\nin = 2\nout = 1e400\n", "expected int"),
    ("[network]\nloss = 'nope'\n[[layer]]\nin = 2\nout = 1\n", "nope"),
    ("[network]\nloss = 'mse'\n[[layer]]\nin = 2\nout = 3\n[[layer]]\nin = 4\nout = 1\n", "layer"),
    ("[network]\nloss = 'mse'\n[[layer]]\nin = 2\nout = 1\nactivation = { name = 's', expr = 'z + q', var = 'z' }\n",
     "unknown name 'q'"),
    ("[network]\nloss = 'mse'\n[[layer]]\nin = 2\nout = 1\n[train]\nepoch = 3\n", "unknown key"),
    ("a = [" * 200 + "]" * 200, "TOML"),                                   # deep nesting
]


@pytest.mark.parametrize("text,match", BAD)
def test_S17_bad_specs_raise_only_spec_parse_error(text: str, match: str) -> None:
    with pytest.raises(SpecParseError, match=match):
        loads_spec(text)


def test_S17_non_utf8_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[network]\nname = '\xff'\n")
    with pytest.raises(SpecParseError, match="UTF-8"):
        load_spec(bad)


@pytest.mark.parametrize("text", [
    "__import__('os').system('echo pwned')", "z.__class__", "(lambda: z)()", "[z for z in ()]",
    "exp(z, base=2)", "open('x')", "z if z else 0", "z @ z", "'string'", "eval('1')",
])
def test_S18_expression_strings_are_never_evaluated(text: str) -> None:
    with pytest.raises(SpecParseError):
        parse_expression(text, {"z": sp.Symbol("z")}, "activation.expr")


def test_expression_grammar() -> None:
    z = sp.Symbol("z")
    e = parse_expression("z/(1 + exp(-z)) + 0.5*Max(z, 0) - pi*Abs(z)**2", {"z": z}, "x")
    assert e == z / (1 + sp.exp(-z)) + sp.Float("0.5", 17) * sp.Max(z, 0) - sp.pi * sp.Abs(z) ** 2
    with pytest.raises(SpecParseError, match="too large"):
        parse_expression("+".join(["z"] * 2000), {"z": z}, "x")
