"""LaTeX of a :class:`~symnn.derivation.Derivation`, through a ``LatexPrinter`` subclass.

The math is printed here; ``templates/latex/derivation.tex.jinja`` lays out the document.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.latex import LatexPrinter

from .derivation import Derivation
from .render import render


class SymnnLatexPrinter(LatexPrinter):
    """SymPy's LaTeX printer with ``1`` for the ones vector and ``\\circ`` products.

    Customisations: ``OneMatrix`` prints as a bold 1 (the ones vector); ``Sigmoid`` and
    ``Softplus`` print by name; powers of indexed objects keep their sub/superscripts grouped.
    """

    def __init__(self) -> None:
        super().__init__({"mul_symbol": None, "long_frac_ratio": 3})

    def _print_OneMatrix(self, expr) -> str:
        return r"\mathbf{1}"

    def _print_Heaviside(self, expr) -> str:
        return r"\left[%s > 0\right]" % self._print(expr.args[0])

    def _print_Indexed(self, expr) -> str:
        base = self._print(expr.base)
        idx = "".join(self._print(i) for i in expr.indices)
        return r"{%s}_{%s}" % (base, idx)


_TEXT_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#",
                 "$": r"\$", "{": r"\{", "}": r"\}", "^": r"\^{}", "~": r"\~{}"}


def text(s: str) -> str:
    """Escape plain text for LaTeX text mode."""
    return "".join(_TEXT_ESCAPES.get(c, c) for c in s)


def tex(expr: sp.Basic) -> str:
    return SymnnLatexPrinter().doprint(expr)


def _eq(expr: sp.Basic) -> tuple[str, str]:
    if isinstance(expr, sp.Eq):
        return tex(expr.lhs), tex(expr.rhs)
    return tex(expr), ""


def derivation_latex(d: Derivation, document: bool = True) -> str:
    def rows(steps):
        out = []
        for s in steps:
            lhs, rhs = _eq(s.matrix)
            ilhs, irhs = _eq(s.index) if s.index is not None else ("", "")
            out.append({"lhs": lhs, "rhs": rhs, "ilhs": ilhs, "irhs": irhs, "note": text(s.note)})
        return out

    net = d.network
    layers = [f"{l.in_features} \\to {l.out_features}" for l in net.layers]
    return render(
        "latex/derivation.tex.jinja",
        document=document,
        title=text(f"Derivation of the gradient of {net.name}"),
        summary=r", ".join(layers),
        loss_name=text(net.loss.name),
        forward=rows(d.forward),
        activations=rows(d.activations),
        loss=rows(d.loss),
        backward=rows(d.backward),
        simplifications=[
            {"title": text(s.title), "before": tex(s.before), "after": tex(s.after),
             "how": text(s.how)} for s in d.simplifications
        ],
        passes=[
            {"name": text(p.name), "before": p.before, "after": p.after}
            for p in d.passes
        ],
    )
