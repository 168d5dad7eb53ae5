"""The LaTeX of a derivation says what it must, is well-formed math, and compiles with a real
engine (pdflatex): every catalogue network and example spec, one document per set."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sympy as sp

import symnn as sn
from symnn.autodiff import algebra
from symnn.report import tex
from tests import latex_checks
from tests.catalogue import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
n0, n1 = sp.symbols("n_0 n_1", integer=True, positive=True)
NETS = {
    "xor": sn.Network([sn.Dense(2, 4, "tanh"), sn.Dense(4, 1, "sigmoid")], loss="bce"),
    "symbolic": sn.Network([sn.Dense(n0, n1, "relu"), sn.Dense(n1, 10, "softmax")],
                           loss="cross_entropy", l2=1e-3),
    "user": sn.Network([sn.Dense(3, 4, sn.Activation("cube", sp.Symbol("z") ** 3 + sp.Symbol("z"),
                                                     var=sp.Symbol("z"))),
                        sn.Dense(4, 2, "sigmoid")], loss="mse", l1=0.01),
}
#: the network sets compiled by pdflatex, one document each
SETS = {
    "nets": lambda: dict(NETS),
    "catalogue": lambda: dict(CATALOGUE),
    "examples": lambda: {p.stem: sn.load_spec(p).network
                         for p in sorted((ROOT / "examples").glob("*.toml"))},
}


def _summands(expr: sp.Basic) -> tuple[sp.Basic, ...]:
    return expr.args if isinstance(expr, sp.MatAdd) else (expr,)


def _coefficient(term: sp.Basic) -> float:
    return float(sp.Mul(*[a for a in term.args if not getattr(a, "is_Matrix", False)])) \
        if isinstance(term, sp.MatMul) else 1.0


@pytest.mark.parametrize("name", sorted(NETS))
def test_latex_content(name: str) -> None:
    d = sn.derive(NETS[name])
    doc = d.latex()
    ids = [e.id for e in d.equations]
    for eq_id in ("z1", "a2", "loss", "delta2", "dL_db2", "dL_dW2", "delta1", "dL_dW1"):
        assert eq_id in ids, (eq_id, ids)
    for e in d.equations:  # every equation is printed, under its own symbol
        assert tex(e.lhs) in doc, e.id
    # index notation: the weight gradient is a batch average
    assert r"\sum_{n=1}^{N}" in tex(d.equation("dL_dW1").index.rhs) and r"\sum_{n=1}^{N}" in doc
    assert d.equation("delta2").scale == sn.naming.N and d.equation("dL_dW1").scale == 1


def test_xor_prints_the_fused_output_error() -> None:
    d = sn.derive(NETS["xor"])
    doc = d.latex()
    A2, Y = d.equation("a2").lhs, d.inputs["Y"]
    rhs = d.equation("delta2").rhs
    assert rhs.doit() == (A2 - Y).doit() and tex(rhs) == "A^{(2)} - Y"
    assert any("sigmoid + binary cross-entropy" in s.title for s in d.simplifications)
    assert "sigmoid + binary cross-entropy" in doc
    # tanh' is computed from the forward value: 1 - a^2, printed next to its definition
    reuse = [s for s in d.simplifications if "tanh'" in s.title]
    assert len(reuse) == 1 and [str(v) for v in reuse[0].after.free_symbols] == ["a"]
    (a,) = reuse[0].after.free_symbols
    assert sp.expand(reuse[0].after - (1 - a**2)) == 0
    assert "a^{2}" in doc


def test_symbolic_widths_print_and_carry_the_l2_term() -> None:
    d = sn.derive(NETS["symbolic"])
    doc = d.latex()
    assert "softmax + cross-entropy" in doc and "n_{1}" in doc
    W1 = d.inputs["W^{(1)}"]
    assert W1.shape == (n1, n0)
    l2 = [t for t in _summands(d.equation("dL_dW1").rhs) if t.free_symbols - {sn.naming.N} == {W1}]
    assert [_coefficient(t) for t in l2] == [1e-3]


def test_user_network_prints_its_l1_term_and_activation() -> None:
    d = sn.derive(NETS["user"])
    for layer in (1, 2):
        terms = _summands(d.equation(f"dL_dW{layer}").rhs)
        signs = [t for t in terms if any(isinstance(a, algebra.Apply) and a.body.has(sp.sign)
                                         for a in sp.preorder_traversal(t))]
        assert [_coefficient(t) for t in signs] == [0.01], layer
    assert r"\operatorname{sign}" in d.latex()
    z = sp.Symbol("x", real=True)
    cube = [f for f in d.functions if f.body.has(sp.Pow) and f.params and
            sp.simplify(f.body.subs(f.params[0], z) - (z**3 + z)) == 0]
    assert cube, [f.body for f in d.functions]


# -- well-formed math -------------------------------------------------------------------------------
@pytest.mark.parametrize("which", sorted(SETS))
def test_every_printed_formula_is_well_formed(which: str) -> None:
    pytest.importorskip("latex2mathml")
    for name, net in SETS[which]().items():
        d = sn.derive(net)
        assert latex_checks.problems(d) == [], name


def test_the_well_formedness_checks_catch_what_they_claim() -> None:
    pytest.importorskip("latex2mathml")
    assert latex_checks.garbled_sums(r"- \sum_{k y k \log p k}") == [r"k y k \log p k"]
    assert latex_checks.garbled_sums(r"\sum_{k=1, n=1} x") == ["k=1, n=1"]
    assert latex_checks.garbled_sums(r"\sum_{\substack{1 \leq k \leq 3\\1 \leq n \leq N}} x") == []
    assert latex_checks.brace_problem("{a") and latex_checks.brace_problem("a}")
    assert latex_checks.brace_problem(r"\left( a") and latex_checks.brace_problem(r"\{a") is None
    assert "does not know" in latex_checks.mathml_problem(r"\input{x} + 1")
    assert latex_checks.mathml_problem(r"\left( a") is not None
    assert latex_checks.mathml_problem(r"\frac{1}{N} {\delta^{(1)}}^{\top} \mathbf{1}") is None


# -- pdflatex -----------------------------------------------------------------------------------------
def _one_document(nets: dict[str, sn.Network]) -> str:
    """The derivations of ``nets`` in one document (pdflatex starts once): the template's own
    preamble, then each body on its own page."""
    bodies = [sn.derive(net) for net in nets.values()]
    first = bodies[0].latex()
    head = first[:first.index(r"\begin{document}") + len(r"\begin{document}")]
    return "\n".join([head, *(r"\clearpage" + "\n" + d.latex(document=False) for d in bodies),
                      r"\end{document}", ""])


@pytest.mark.latex
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (CI installs it)")
@pytest.mark.parametrize("which", sorted(SETS))
def test_latex_compiles(tmp_path, which: str) -> None:
    nets = SETS[which]()
    (tmp_path / "d.tex").write_text(_one_document(nets))
    cmd = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "d.tex"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    pages = re.search(r"Output written on d\.pdf \((\d+) pages?", r.stdout)
    assert pages and int(pages.group(1)) >= len(nets), r.stdout[-1000:]  # a page per derivation at least
