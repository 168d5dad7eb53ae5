"""LaTeX of a :class:`~symnn.derivation.Derivation`, through a ``LatexPrinter`` subclass.

The math is printed here; ``templates/latex/derivation.tex.jinja`` lays out the document.
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import precedence
from sympy.printing.str import StrPrinter

from . import naming
from .derivation import Derivation
from .render import render, tex_text


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


def text(s: str) -> str:
    """Escape plain text for LaTeX text mode: the templates' ``tex_text`` filter, for LaTeX
    built outside a template."""
    return tex_text(s)


def tex(expr: sp.Basic) -> str:
    return SymnnLatexPrinter().doprint(expr)


#: LaTeX spellings in the derivation's symbol names -> plain text, applied in order
_PLAIN_NAMES = (
    (re.compile(r"\\frac\{\\partial (.+?)\}\{\\partial (.+)\}"), r"∂\1/∂\2"),
    (re.compile(r"\^\{\((\d+)\)\}"), r"\1"),
    (re.compile(r"_\{(\w+)\}"), r"_\1"),
    (re.compile(r"\\delta"), "δ"),
    (re.compile(r"\\operatorname\{(\w+)\}"), r"\1"),
    (re.compile(r"\\(\w+)"), r"\1"),
)


def plain_name(name: str) -> str:
    """A derivation symbol's LaTeX name as plain text: ``\\delta^{(2)}`` -> ``δ2``."""
    for pattern, repl in _PLAIN_NAMES:
        name = pattern.sub(repl, name)
    return name


class PlainPrinter(StrPrinter):
    """SymPy's str printer for a terminal: derivation names without LaTeX markup, ``@`` for
    matrix products, ``∘`` for element-wise ones, ``=`` for an equation."""

    def _print_Symbol(self, expr) -> str:
        return plain_name(expr.name)

    _print_MatrixSymbol = _print_Symbol

    def _print_OneMatrix(self, expr) -> str:
        return "1"

    def _print_MatMul(self, expr) -> str:
        coeff = sp.Mul(*[f for f in expr.args if not f.is_Matrix])
        factors = [f for f in expr.args if f.is_Matrix]
        body = " @ ".join(self.parenthesize(f, precedence(expr)) for f in factors)
        if coeff == 1:
            return body
        if coeff == -1:
            return f"-{body}"
        return f"{self.parenthesize(coeff, precedence(expr))} * {body}"

    def _print_HadamardProduct(self, expr) -> str:
        return " ∘ ".join(self.parenthesize(f, precedence(expr)) for f in expr.args)

    def _print_Function(self, expr) -> str:
        return f"{plain_name(expr.func.__name__)}({', '.join(self._print(a) for a in expr.args)})"

    def _print_Equality(self, expr) -> str:
        return f"{self._print(expr.lhs)} = {self._print(expr.rhs)}"


def plain(expr: sp.Basic) -> str:
    """A derivation formula as one line of plain text (the demo and ``str`` views)."""
    text_ = PlainPrinter().doprint(expr)
    for pattern, repl in _PLAIN_NAMES[-2:]:  # names inside classes printed by their own __str__
        text_ = pattern.sub(repl, text_)
    return text_


def _eq(expr: sp.Basic) -> tuple[str, str]:
    if isinstance(expr, sp.Eq):
        return tex(expr.lhs), tex(expr.rhs)
    return tex(expr), ""


def derivation_latex(d: Derivation, document: bool = True) -> str:
    """The derivation as LaTeX (a document, or its body). Text reaches the template raw and is
    escaped there (``tex_text``); the names and LaTeX snippets that become math are checked
    again first (:func:`symnn.naming.check_declared_names`), so a network built around its
    constructors still cannot make the document read a file."""
    def rows(steps):
        out = []
        for s in steps:
            lhs, rhs = _eq(s.matrix)
            ilhs, irhs = _eq(s.index) if s.index is not None else ("", "")
            out.append({"lhs": lhs, "rhs": rhs, "ilhs": ilhs, "irhs": irhs, "note": s.note})
        return out

    net = d.network
    naming.check_declared_names(net)
    layers = [f"{l.in_features} \\to {l.out_features}" for l in net.layers]
    return render(
        "latex/derivation.tex.jinja",
        document=document,
        title=f"Derivation of the gradient of {net.name}",
        summary=r", ".join(layers),
        loss_name=net.loss.name,
        forward=rows(d.forward),
        activations=rows(d.activations),
        loss=rows(d.loss),
        backward=rows(d.backward),
        simplifications=[
            {"title": s.title, "before": tex(s.before), "after": tex(s.after),
             "how": s.how} for s in d.simplifications
        ],
        passes=[
            {"name": p.name, "before": p.before, "after": p.after}
            for p in d.passes
        ],
    )
