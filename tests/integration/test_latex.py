"""The LaTeX of a derivation compiles with a real engine (pdflatex) and says what it must."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import sympy as sp

import symnn as sn

NETS = {
    "xor": sn.Network([sn.Dense(2, 4, "tanh"), sn.Dense(4, 1, "sigmoid")], loss="bce"),
    "symbolic": sn.Network([sn.Dense(sp.Symbol("n_0", integer=True, positive=True),
                                     sp.Symbol("n_1", integer=True, positive=True), "relu"),
                            sn.Dense(sp.Symbol("n_1", integer=True, positive=True), 10, "softmax")],
                           loss="cross_entropy", l2=1e-3),
    "user": sn.Network([sn.Dense(3, 4, sn.Activation("cube", sp.Symbol("z") ** 3 + sp.Symbol("z"),
                                                     var=sp.Symbol("z"))),
                        sn.Dense(4, 2, "sigmoid")], loss="mse", l1=0.01),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_latex_content(name: str) -> None:
    d = sn.derive(NETS[name])
    tex = d.latex()
    assert r"\delta^{(2)}" in tex and r"\frac{\partial L}{\partial W^{(1)}}" in tex
    assert r"\sum_{n=1}^{N}" in tex  # index notation, averaged over the batch
    if name == "xor":
        assert "sigmoid + binary cross-entropy" in tex and "a^{2}" in tex
        assert str(d.backward[0].matrix.rhs) == "A^{(2)} - Y"
    if name == "symbolic":
        assert "softmax + cross-entropy" in tex and "n_{1}" in tex


@pytest.mark.latex
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (CI installs it)")
@pytest.mark.parametrize("name", sorted(NETS))
def test_latex_compiles(tmp_path, name: str) -> None:
    (tmp_path / "d.tex").write_text(sn.derive(NETS[name]).latex())
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "d.tex"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    assert (tmp_path / "d.pdf").stat().st_size > 1000
