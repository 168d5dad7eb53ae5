"""Issue 18, items 6 and 7: expressions that hung symnn or shipped wrong numbers.

* Item 6: ``((((1/2)**64)**64)**64)**64*z`` and ``(((z**64)**64)**64)**64`` passed the size
  guard and hung SymPy for minutes; ``Pow(Integer(9), Integer(99999999999))`` in a model file
  kept ``sn.load`` busy past 300 s; expressions under the old 2,000-node limit took minutes to
  compile. One budget (:func:`symnn.expressions.budget_problem`: nodes, nested calls, each
  exponent, nested exponents, digits) is now checked before SymPy builds anything, for every
  reader: the TOML expression parser, the model file's records, and the constructors for an
  expression built in Python. The compiler's own passes that were unbounded
  (``cheapest``'s expand/cancel, the reuse pass's fit-and-simplify) are bounded too.
* Item 7: ``1e300*1e300*z`` was accepted; the NumPy kernel then raised ``NameError: inf`` on
  every call and the C kernel returned NaN. A constant that is not finite in double precision is
  refused where the expression is declared, and the NumPy printer never prints a bare ``inf``.

The old code hung on the item-6 inputs: each such test carries a timeout, so it fails (rather
than hangs) there.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symnn as sn
from symnn.cli import main
from symnn.errors import InvalidExpressionError, ModelFormatError, SpecParseError
from symnn.expressions import MAX_CALL_DEPTH, MAX_NODES
from symnn.spec_toml import loads_spec, parse_expression

z = sp.Symbol("z")
p, y = sp.symbols("p y")
#: the item-6 and item-7 expressions as a spec writes them, with what the refusal says
HOSTILE = {
    "half-tower": ("((((1/2)**64)**64)**64)**64*z", "multiply to"),
    "z-tower": ("(((z**64)**64)**64)**64", "multiply to"),
    "huge-power": ("9**99999999999*z", "exponent"),
    "overflow": ("1e300*1e300*z", "not finite"),
    "deep": ("tanh(" * (MAX_CALL_DEPTH + 1) + "z" + ")" * (MAX_CALL_DEPTH + 1), "function calls"),
    "big": ("+".join(f"tanh({k}*z)" for k in range(1, 200)), "too large"),
}


def _spec(expr: str) -> str:
    return f"""
[network]
name = "victim"
loss = "mse"

[[layer]]
in = 2
out = 3
activation = {{ name = "act", expr = "{expr}", var = "z" }}

[[layer]]
in = 3
out = 1
"""


# -- one budget, every reader ---------------------------------------------------------------------------
@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_spec_expressions_over_the_budget_are_refused(case: str) -> None:
    """The TOML reader: the expression string and the whole spec."""
    text, says = HOSTILE[case]
    with pytest.raises(SpecParseError, match=says):
        parse_expression(text, {"z": z}, "activation.expr")
    with pytest.raises(SpecParseError, match=r"layer 1\.activation\.expr: .*" + says):
        loads_spec(_spec(text), "spec.toml")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["emit", "check", "latex"])
def test_cli_refuses_an_expression_over_the_budget(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                   command: str) -> None:
    """``symnn emit/check/latex`` on a spec whose expression hung SymPy: one error line, exit 2."""
    spec = tmp_path / "spec.toml"
    spec.write_text(_spec(HOSTILE["z-tower"][0]))
    argv = [command, str(spec)] + (["--out", str(tmp_path / "out")] if command == "emit" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("symnn: error: ") and "multiply to" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("build, says", [
    (lambda v: sp.Pow(sp.Pow(v, 64, evaluate=False), 64, evaluate=False), "exponent 4096|multiply to"),
    (lambda v: sp.Mul(sp.Pow(sp.Rational(1, 2), 64**4, evaluate=False), v, evaluate=False), "exponent"),
    (lambda v: sp.Mul(sp.Pow(9, 99999999999, evaluate=False), v, evaluate=False), "exponent"),
    (lambda v: sp.Float(1e300) * sp.Float(1e300) * v, "not finite"),
    (lambda v: sp.Integer(10) ** 400 * v, "digits"),
    (lambda v: sp.oo * v, "not finite"),
    (lambda v: v + sp.nan, "not finite"),
    (lambda v: sp.zoo * v, "not finite"),
    (lambda v: sp.Add(*[sp.tanh(k * v) for k in range(1, MAX_NODES)]), "too large"),
    (lambda v: sp.Mul(*[sp.tanh(v + k) for k in range(1, 40)]), "derivative has more than"),
])
def test_python_expressions_over_the_budget_are_refused(build, says: str) -> None:
    """The constructors, for an expression built in Python (unevaluated, as SymPy would take
    minutes to evaluate some), as an activation and inside a user loss."""
    with pytest.raises(InvalidExpressionError, match=says):
        sn.Activation("act", build(z), var=z)
    with pytest.raises(InvalidExpressionError, match=says):
        sn.Loss("lss", sp.Add((p - y) ** 2, build(p), evaluate=False), pred=p, target=y)


def _forge(tmp_path: Path, srepr: str) -> Path:
    net = sn.Network([sn.Dense(2, 3, sn.Activation("sw", z / (1 + sp.exp(-z)), var=z)), sn.Dense(3, 1)],
                     loss="mse", name="victim")
    good = sn.save(tmp_path / "good.npz", net, net.init_params(seed=0))
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["network"]["layers"][0]["activation"]["expr"]["srepr"] = srepr
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "forged.npz", **arrays)
    return tmp_path / "forged.npz"


X_ = "Symbol('x', real=True)"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("srepr, says", [
    (f"Mul(Pow(Integer(9), Integer(99999999999)), {X_})", "exponent"),  # item 6: > 300 s before
    (f"Pow(Pow(Pow(Pow({X_}, Integer(64)), Integer(64)), Integer(64)), Integer(64))", "multiply to"),
    (f"Mul(Pow(Pow(Pow(Pow(Rational(1, 2), Integer(64)), Integer(64)), Integer(64)), Integer(64)), {X_})",
     "multiply to"),
    (f"Mul(Float('1e300', precision=53), Float('1e300', precision=53), {X_})", "not finite"),  # item 7
    (f"Mul(Integer({10**150}), {X_})", "digits"),
    ("tanh(" * (MAX_CALL_DEPTH + 1) + X_ + ")" * (MAX_CALL_DEPTH + 1), "function calls"),
    ("Add(" + ", ".join(f"tanh(Mul(Integer({k}), {X_}))" for k in range(1, 200)) + ")", "too large"),
    (f"Mul(oo, {X_})", "not finite"),
])
def test_model_file_expressions_over_the_budget_are_refused(tmp_path: Path, srepr: str, says: str) -> None:
    """The model reader prices the record before SymPy builds it: Pow(9, 99999999999) is never
    computed. The error names the place in the file."""
    with pytest.raises(ModelFormatError, match=r"network\.layers\[0\]\.activation\.expr: .*" + says):
        sn.load(_forge(tmp_path, srepr))


# -- what the budget lets through costs little -------------------------------------------------------------
@pytest.mark.timeout(120)
def test_nested_functions_with_constants_compile_and_check() -> None:
    """``tanh`` nested 5 deep with constants: 10 SymPy nodes, yet compiling it ran for over 5
    minutes (the reuse pass fitted the nearly constant pieces of its derivative as a polynomial
    of the output, then ran ``simplify`` on the claim). Now the fit refuses an ill-conditioned
    design and the proof has a size bound; the kernel's gradient is checked against numeric
    differentiation."""
    act = sn.Activation("deep", parse_expression("tanh(tanh(tanh(tanh(tanh(z+1)+2)+3)+4)+5)", {"z": z}, "x"), var=z)
    net = sn.Network([sn.Dense(2, 3, act), sn.Dense(3, 1)], loss="mse", name="deep")
    k = sn.compile(net, backend="numpy")
    params = net.init_params(seed=0)
    X = np.random.default_rng(0).normal(size=(5, 2)) * 0.3 - 2
    Y = np.random.default_rng(1).normal(size=(5, 1))
    assert sn.gradcheck(k, params, X, Y).ok


@pytest.mark.timeout(120)
def test_a_product_of_sums_is_not_multiplied_out() -> None:
    """``(tanh(z)+1)*(tanh(2z)+1)*...`` (12 factors, 71 nodes): ``cheapest`` expanded it to 4,096
    terms and the declaration took 38 s. The rewrites that multiply out are skipped past
    MAX_EXPANDED_TERMS; the activation still declares, and its derivative is right."""
    from symnn.simplify.cost import MAX_EXPANDED_TERMS, cheapest, expanded_terms

    expr = sp.Mul(*[sp.tanh(k * z) + 1 for k in range(1, 13)])
    assert expanded_terms(expr) > MAX_EXPANDED_TERMS
    assert cheapest(expr) == expr
    assert expanded_terms((z + 1) ** 3 * (z - 1)) <= MAX_EXPANDED_TERMS  # small products still expand
    assert cheapest(sp.expand((z + 1) ** 2) - z**2) == 2 * z + 1
    act = sn.Activation("prodsum", expr, var=z)
    x0 = sp.Rational(3, 10)
    exact = sp.diff(expr, z).subs(z, x0)
    assert math.isclose(float(sp.diff(act.expr, act.var).subs(act.var, x0)), float(exact), rel_tol=1e-13)


def test_the_budget_keeps_what_users_write(tmp_path: Path) -> None:
    """Ordinary user expressions pass every reader and load back unchanged."""
    texts = ["z/(1 + exp(-z))", "z*tanh(log(1 + exp(z)))", "(z**8)**8/1e30 + z", "z*(1 + z**2)**(1/2)",
             "Piecewise((z, z > 0), (exp(z) - 1, True))", "0.5*z*(1 + erf(z/sqrt(2)))", "2**z - 1",
             "1e300*z/1e300"]
    for i, text in enumerate(texts):
        expr = parse_expression(text, {"z": z}, "x")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sn.NonSmoothWarning)
            act = sn.Activation("ok", expr, var=z)
        net = sn.Network([sn.Dense(2, 1, act)], loss="mse", name="ok")
        loaded = sn.load(sn.save(tmp_path / f"m{i}.npz", net, net.init_params(seed=0)))
        assert loaded.network.layers[0].activation.expr == act.expr, text


# -- item 7: non-finite constants -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)])
def test_a_constant_overflowing_double_is_refused_where_it_is_declared(backend: str) -> None:
    """``1e300*1e300*z`` is 1e600: no double holds it. It used to be accepted and the NumPy
    kernel raised NameError on every call (C returned NaN); it is refused at declaration, and a
    constant that does fit (1e300*z/1e300 = z) compiles and computes on both backends."""
    with pytest.raises(SpecParseError, match="not finite"):
        parse_expression("1e300*1e300*z", {"z": z}, "x")
    with pytest.raises(InvalidExpressionError, match="not finite"):
        sn.Activation("big", sp.Float(1e300) * sp.Float(1e300) * z, var=z)
    act = sn.Activation("fits", sp.Float(1e300) * z * sp.Float(1e-300) + z**3, var=z)
    net = sn.Network([sn.Dense(2, 1, act)], loss="mse", name="fits")
    params = net.init_params(seed=0)
    X = np.array([[0.5, -1.0], [2.0, 0.25]])
    zz = X @ params["W1"].T + params["b1"]
    np.testing.assert_allclose(sn.compile(net, backend=backend).forward(params, X), zz + zz**3, rtol=1e-13)


def test_the_numpy_printer_never_prints_a_bare_inf() -> None:
    """Defense in depth behind the declaration check: a non-finite number prints as ``np.inf``
    / ``np.nan``, which a NumPy module can evaluate (a bare ``inf`` was a NameError)."""
    from symnn.backends.numpy.printer import SymnnNumPyPrinter

    x = sp.Symbol("x")
    printer = SymnnNumPyPrinter()
    for expr, want in [(sp.Float("1e600") * x, math.inf), (x - sp.Float("1e600"), -math.inf),
                       (sp.Rational(10**400, 3) * x, math.inf)]:
        text = printer.doprint_expr(expr)
        assert "inf" not in text.replace("np.inf", "")
        assert eval(text, {"np": np, "x": 1.0}) == want  # noqa: S307 - our printer's output, in a test
