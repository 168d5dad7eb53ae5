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
        super().__init__({"mul_symbol": None, "long_frac_ratio": 3, "full_prec": False})
        #: symbols printed as given LaTeX (an unnamed function's parameters, as its operands)
        self._as_tex: dict[sp.Symbol, str] = {}

    def _print_Float(self, expr) -> str:
        # the shortest decimal that reads back as the same double (0.1, not 0.10000000000000001)
        text = repr(float(expr))
        if "e" in text:
            mantissa, exponent = text.split("e")
            return r"%s \cdot 10^{%d}" % (mantissa, int(exponent))
        return text

    def _print_Symbol(self, expr, style="plain") -> str:
        if expr in self._as_tex:
            return self._as_tex[expr]
        return super()._print_Symbol(expr, style=style)

    def _print_Mul(self, expr) -> str:
        # a scalar product holding a matrix (an operand of a named operator, substituted into an
        # index form) is a scaled matrix: print it as one, its scalar factors multiplied out
        if any(getattr(a, "is_Matrix", False) for a in expr.args):
            return self._print_MatMul(expr)
        return super()._print_Mul(expr)

    def _print_MatMul(self, expr) -> str:
        coeff = sp.Mul(*[a for a in expr.args if not getattr(a, "is_Matrix", False)])
        mats = [a for a in expr.args if getattr(a, "is_Matrix", False)]
        body = " ".join(r"\left(%s\right)" % self._print(m)
                        if isinstance(m, (sp.MatAdd, sp.HadamardProduct)) and (len(mats) > 1 or coeff != 1)
                        else self._print(m) for m in mats)
        if coeff == 1:
            return body
        if coeff == -1:
            return "-" + body
        text = self._print(coeff)
        if isinstance(coeff, sp.Add):
            text = r"\left(%s\right)" % text
        return f"{text} {body}"

    def _print_MatAdd(self, expr) -> str:
        # summands in the order the derivation built them (data term before penalties'
        # gradients, logsumexp before the subtracted product), not SymPy's sort order
        return self._print_Add(expr, order="none")

    def _print_HadamardPower(self, expr) -> str:
        # always parenthesised: {\tilde{X}^{(a)}}^{2} is a double superscript to LaTeX
        return r"\left(%s\right)^{\circ %s}" % (self._print(expr.base), self._print(expr.exp))

    def _print_OneMatrix(self, expr) -> str:
        return r"\mathbf{1}^{\top}" if expr.shape[0] == 1 and expr.shape[1] != 1 else r"\mathbf{1}"

    def _print_Transpose(self, expr) -> str:
        arg = expr.arg
        inner = self._print(arg)
        if not isinstance(arg, sp.MatrixSymbol):
            inner = r"\left(%s\right)" % inner
        elif "^" in arg.name:  # W^{(2)} -> {W^{(2)}}^{\top}
            inner = "{%s}" % inner
        return r"%s^{\top}" % inner

    def _print_Apply(self, expr) -> str:
        args = ", ".join(self._print(o) for o in expr.operands)
        if expr.name:
            return r"%s\left(%s\right)" % (expr.name, args)
        # an unnamed function: its formula, each parameter written as its operand
        saved = dict(self._as_tex)
        self._as_tex.update({p: "{%s}" % self._print(o) for p, o in zip(expr.params, expr.operands)})
        try:
            return self._print(expr.body)
        finally:
            self._as_tex = saved

    def _print_Applied(self, expr) -> str:
        return r"%s\left(%s\right)" % (expr.name, ", ".join(self._print(a) for a in expr.args[1:]))

    def _print_RowOp(self, expr) -> str:
        return r"%s\left(%s\right)" % (expr.KINDS[expr.kind], self._print(expr.args[1]))

    def _print_Spatial(self, expr) -> str:
        from .autodiff.algebra import SPATIAL_TEX

        return r"%s\left(%s\right)" % (SPATIAL_TEX[expr.op], ", ".join(self._print(o) for o in expr.operands))

    def _print_BlockRow(self, expr) -> str:
        return r"\left[%s\right]" % r" \;\; ".join(self._print(b) for b in expr.args)

    def _print_Reshape(self, expr) -> str:
        return r"%s\left(%s\right)" % (expr.KINDS[expr.form], self._print(expr.args[0]))

    def _print_Entry(self, expr) -> str:
        return r"{\left(%s\right)}_{%s, %s}" % tuple(self._print(a) for a in expr.args)

    def _print_Recurrence(self, expr) -> str:
        return r"%s\left(%s\right)" % (expr.name, ", ".join(self._print(o) for o in expr.operands))

    def _print_ColSlice(self, expr) -> str:
        arg = expr.args[0]
        inner = self._print(arg)
        inner = "{%s}" % inner if isinstance(arg, sp.MatrixSymbol) else r"\left(%s\right)" % inner
        lo, hi = (self._print(b) for b in expr.bounds)
        return r"%s_{:, %s:%s}" % (inner, lo, hi)

    def _print_Total(self, expr) -> str:
        m = expr.args[0]
        inner = self._print(m)
        if isinstance(m, (sp.MatAdd, sp.MatMul, sp.HadamardProduct)):
            inner = r"\left(%s\right)" % inner
        if m.shape[1] == 1:  # a column: the sum of its entries
            return r"\mathbf{1}^{\top} %s" % inner
        return r"\mathbf{1}^{\top} %s \mathbf{1}" % inner

    def _print_Heaviside(self, expr) -> str:
        return r"\left[%s > 0\right]" % self._print(expr.args[0])

    def _print_Indexed(self, expr) -> str:
        base = self._print(expr.base)
        # "nj" where each index is one letter; "n, j + 15" where one is a sum, which written
        # together would read as another index ("nj + 15")
        sep = "" if all(isinstance(i, sp.Symbol) for i in expr.indices) else ", "
        idx = sep.join(self._print(i) for i in expr.indices)
        return r"{%s}_{%s}" % (base, idx)


def text(s: str) -> str:
    """Escape plain text for LaTeX text mode: the templates' ``tex_text`` filter, for LaTeX
    built outside a template."""
    return tex_text(s)


def tex(expr: sp.Basic) -> str:
    return SymnnLatexPrinter().doprint(expr)


#: LaTeX spellings in the derivation's symbol names -> plain text, applied in order
_PLAIN_NAMES = (
    (re.compile(r"\\mathrm\{((?:[^{}\\]|\\_)*)\}"), lambda m: m.group(1).replace("\\_", "_")),
    (re.compile(r"\\hat\{(\w)\}(?:\{\})?"), "\\1\u0302"),
    (re.compile(r"\\tilde\{(\w)\}(?:\{\})?"), "\\1\u0303"),
    (re.compile(r"\\partial_\{(\w+)\} ?"), r"∂_\1 "),
    (re.compile(r"\\frac\{\\partial (.+?)\}\{\\partial (.+)\}"), r"∂\1/∂\2"),
    (re.compile(r"\^\{\((\d+)\)\}"), r"\1"),
    (re.compile(r"\^\{\((\w+)\)\}"), r"(\1)"),
    (re.compile(r"_\{(\w+)\}"), r"_\1"),
    (re.compile(r"\\delta"), "δ"),
    (re.compile(r"\\sigma"), "σ"),
    (re.compile(r"\\ell"), "ℓ"),
    (re.compile(r"\\mathcal\{R\}"), "R"),
    (re.compile(r"\\bar\{(\w)\}(?:\{\})?"), "\\1\u0304"),
    (re.compile(r"\\overleftarrow\{(\w)\}(?:\{\})?"), "\\1\u20d6"),  # a reverse direction's (P⃖)

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

    def __init__(self) -> None:
        super().__init__()
        self._as_text: dict[sp.Symbol, str] = {}

    def _print_Symbol(self, expr) -> str:
        return self._as_text.get(expr) or plain_name(expr.name)

    _print_MatrixSymbol = _print_Symbol

    def _print_IndexedBase(self, expr) -> str:
        return plain_name(str(expr.label))

    def _print_Indexed(self, expr) -> str:
        return f"{self._print(expr.base)}[{', '.join(self._print(i) for i in expr.indices)}]"

    def _print_OneMatrix(self, expr) -> str:
        return "1ᵀ" if expr.shape[0] == 1 and expr.shape[1] != 1 else "1"

    def _print_Transpose(self, expr) -> str:
        if isinstance(expr.arg, sp.MatrixSymbol):
            return f"{self._print(expr.arg)}ᵀ"
        return f"({self._print(expr.arg)})ᵀ"

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

    def _print_MatAdd(self, expr) -> str:
        # in the order the derivation built the terms, as the LaTeX printer keeps them
        out = ""
        for i, term in enumerate(expr.args):
            text = self._print(term)
            if i and text.startswith("-"):
                out += f" - {text[1:]}"
            else:
                out += f" + {text}" if i else text
        return out

    def _print_Abs(self, expr) -> str:
        return f"|{self._print(expr.args[0])}|"

    def _print_HadamardPower(self, expr) -> str:
        return f"{self.parenthesize(expr.base, precedence(expr) + 1)}∘{self._print(expr.exp)}"

    def _print_Apply(self, expr) -> str:
        if expr.name:
            return f"{plain_name(expr.name)}({', '.join(self._print(o) for o in expr.operands)})"
        saved = dict(self._as_text)
        self._as_text.update({p: self.parenthesize(o, 100) for p, o in zip(expr.params, expr.operands)})
        try:
            return self._print(expr.body)
        finally:
            self._as_text = saved

    def _print_Applied(self, expr) -> str:
        return f"{plain_name(expr.name)}({', '.join(self._print(a) for a in expr.args[1:])})"

    def _print_RowOp(self, expr) -> str:
        return f"{expr.kind}({self._print(expr.args[1])})"

    def _print_Spatial(self, expr) -> str:
        return f"{expr.op}({', '.join(self._print(o) for o in expr.operands)})"

    def _print_BlockRow(self, expr) -> str:
        return f"[{', '.join(self._print(b) for b in expr.args)}]"

    def _print_Reshape(self, expr) -> str:
        return f"{expr.form}({self._print(expr.args[0])})"

    def _print_Entry(self, expr) -> str:
        return f"({self._print(expr.args[0])})[{self._print(expr.args[1])}, {self._print(expr.args[2])}]"

    def _print_Recurrence(self, expr) -> str:
        return f"{plain_name(expr.name)}({', '.join(self._print(o) for o in expr.operands)})"

    def _print_ColSlice(self, expr) -> str:
        lo, hi = (self._print(b) for b in expr.bounds)
        return f"{self.parenthesize(expr.args[0], 100)}[:, {lo}:{hi}]"

    def _print_Total(self, expr) -> str:
        return f"sum({self._print(expr.args[0])})"

    def _print_Float(self, expr) -> str:
        return repr(float(expr))

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


#: LaTeX source characters per printed line of a long equation (about a text width at 10pt
#: for formulas of symbols with superscripts); longer right-hand sides break at a + or -
LINE_CHARS = 150


def broken(expr: sp.Basic) -> list[str]:
    """The LaTeX of ``expr`` in lines: a sum too long for one line is split between summands,
    each later line starting with its sign (the loss with penalties, a long user loss)."""
    whole = tex(expr)
    if len(whole) <= LINE_CHARS or not isinstance(expr, (sp.Add, sp.MatAdd)):
        return [whole]
    lines, current = [], ""
    for term in expr.args:
        t = tex(term)
        piece = t if not current else (f"- {t[1:].lstrip()}" if t.startswith("-") else f"+ {t}")
        if current and len(current) + len(piece) > LINE_CHARS:
            lines.append(current)
            current = piece
        else:
            current = f"{current} {piece}".strip()
    lines.append(current)
    return lines


def equation_rows(equations) -> list[dict]:
    """Template rows for equations: matrix form (broken into lines), index form, note, id."""
    rows = []
    for e in equations:
        rows.append({"id": e.id, "lhs": tex(e.lhs), "rhs": broken(e.rhs),
                     "ilhs": tex(e.index.lhs) if e.index is not None else "",
                     "irhs": broken(e.index.rhs) if e.index is not None else [],
                     "note": e.note})
    return rows


def function_rows(d: Derivation) -> list[dict]:
    """``name(params) = body`` for each named function, with the forward value it is
    rewritten in where the passes proved one (``tanh'(x) = 1 - a^2``)."""
    reuse = {f"d{r.activation}": r for r in d.reuses}
    rows = []
    for f in d.functions:
        params = ", ".join(tex(p) for p in f.params)
        r = reuse.get(f.source)
        notes = [f.note] if f.note else []
        if r is not None:
            notes.append("computed from the activation's output a")
        rows.append({"lhs": r"%s\left(%s\right)" % (f.name, params), "rhs": tex(f.body),
                     "reused": tex(r.after) if r is not None else "", "note": "; ".join(notes)})
    return rows


#: the words around a loop's equations, one wording for the LaTeX report and the HTML views:
#: ``{note}`` the loop's note, ``{name}`` its operator and ``{t}`` the step, in each format's math
LOOP_INTRO = ("{note}. The loop's equation above applies {name} to its first carry, its sequences and the "
              "values every step reads; each step computes, for its step {t}:")
LOOP_SHARES = ("Each step's share of the gradients of the values every step reads (summed over {t} outside "
               "the loop):")


def loop_rows(d: Derivation) -> list[dict]:
    """Each loop's section: its operator, what it is, its body's equations for step t (matrix
    and index form) and, for a pullback, each invariant's share from step t."""
    return [{"name": loop.name, "label": loop.label, "note": loop.note, "equations": equation_rows(loop.equations),
             "contributions": equation_rows(loop.contributions)} for loop in d.loops]


def passes_rows(d: Derivation) -> list[dict]:
    return [{"name": p.name, "before": p.before, "after": p.after,
             "forward": getattr(p, "forward", None), "backward": getattr(p, "backward", None)}
            for p in d.passes]


def summary_math(net) -> str:
    """The layers for a document's header, as math: ``2 \\to 4, 4 \\to 1`` for a dense stack,
    each call's description as text for a layer graph."""
    if net.graph is None:
        return ", ".join(f"{l.in_features} \\to {l.out_features}" for l in net.layers)
    from .emit import describe

    return r"\text{%s}" % tex_text("; ".join(describe(net)[:-1]))


def derivation_latex(d: Derivation, document: bool = True) -> str:
    """The derivation as LaTeX (a document, or its body). Text reaches the template raw and is
    escaped there (``tex_text``); the names and LaTeX snippets that become math are checked
    again first (:func:`symnn.naming.check_declared_names`), so a network built around its
    constructors still cannot make the document read a file."""
    from .derivation import LEGEND

    net = d.network
    naming.check_declared_names(net)
    return render(
        "latex/derivation.tex.jinja",
        document=document,
        title=f"Derivation of the gradient of {net.name}",
        summary=summary_math(net),
        loss_name=", ".join(loss.name for loss in net.losses),
        legend=LEGEND,
        forward=equation_rows(d.forward),
        functions=function_rows(d),
        loss=equation_rows(d.loss),
        backward=equation_rows(d.backward),
        state=equation_rows(d.state),
        loops=loop_rows(d),
        loop_intro=LOOP_INTRO,
        loop_shares=LOOP_SHARES,
        simplifications=[
            {"title": s.title, "before": tex(s.before), "after": tex(s.after),
             "how": s.how} for s in d.simplifications
        ],
        passes=passes_rows(d),
    )


def derivation_display_latex(d: Derivation) -> str:
    """The equations as one display-math block, for Jupyter's ``_repr_latex_`` (MathJax reads
    ``aligned`` inside ``$$``; no document preamble, no text-mode notes)."""
    naming.check_declared_names(d.network)
    lines = []
    for e in d.equations:
        lines.append(r"%s &= %s" % (tex(e.lhs), r" \\ &\quad ".join(broken(e.rhs))))
    return "$$\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}$$"


def derivation_text(d: Derivation) -> str:
    """The derivation as plain text: one line per equation under its section, the functions,
    and the legend's key fact (delta = N dL/dZ)."""
    out = [f"Derivation of the gradient of {d.network.name}"]
    for title, eqs in (("forward", d.forward), ("loss", d.loss), ("backward", d.backward),
                       *((("training step, the buffers", d.state),) if d.state else ())):
        out.append(f"{title}:")
        out += [f"  {plain(e.lhs)} = {plain(e.rhs)}" for e in eqs]
    for loop in d.loops:
        out.append(f"recurrence {plain_name(loop.name)} ({loop.note}), for step t:")
        out += [f"  {plain(e.lhs)} = {plain(e.rhs)}" for e in (*loop.equations, *loop.contributions)]
    reuse = {f"d{r.activation}": r for r in d.reuses}
    lines = []
    for f in d.functions:
        lhs, rhs = f"{plain_name(f.name)}({', '.join(map(str, f.params))})", plain(f.body)
        if lhs == rhs:  # tanh(x) = tanh(x) says nothing
            continue
        r = reuse.get(f.source)
        lines.append(f"  {lhs} = {rhs}" + (f" = {plain(r.after)} (a: the activation's output)" if r else "")
                     + (f" ({f.note})" if f.note else ""))
    if lines:
        out += ["functions (applied to each entry):", *lines]
    out.append("δl = N ∂L/∂Zl is the per-sample error of layer l; @ is the matrix product, ∘ the "
               "element-wise one, 1 a vector of ones.")
    return "\n".join(out)
