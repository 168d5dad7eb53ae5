"""Checks that a derivation's LaTeX is well formed, shared by the LaTeX tests (issue 19).

Every piece of math a derivation prints (each equation's matrix and index form, each
function definition, each simplification, and every ``align*`` block of ``d.latex()`` as
emitted) must convert with ``latex2mathml`` (what the HTML view uses) without an error, a
``<merror>``, or a command it does not know (it prints those as text, ``<mi>\\foo</mi>``);
have balanced braces and ``\\left``/``\\right`` pairs; and no garbled sum: a ``\\sum_{`` whose
subscript holds a ``\\log`` or more than one ``=`` (the old printer wrote
``- \\sum_{k y k \\log p k}`` for a cross-entropy).
"""

from __future__ import annotations

import re

from symnn.report import tex

_ALIGN = re.compile(r"\\begin\{align\*\}(.*?)\\end\{align\*\}", re.S)
_LEFT = re.compile(r"\\left(?![A-Za-z])")
_RIGHT = re.compile(r"\\right(?![A-Za-z])")


def pieces(d) -> list[tuple[str, str]]:
    """``(where, latex)`` for every piece of math the derivation's records print."""
    out = []
    for e in d.equations:
        out += [(f"{e.id} lhs", tex(e.lhs)), (f"{e.id} rhs", tex(e.rhs))]
        if e.index is not None:
            out += [(f"{e.id} index lhs", tex(e.index.lhs)), (f"{e.id} index rhs", tex(e.index.rhs))]
    for f in d.functions:
        args = ", ".join(tex(p) for p in f.params)
        out.append((f"function {f.name}", r"%s\left(%s\right) = %s" % (f.name, args, tex(f.body))))
    for s in d.simplifications:
        out += [(f"{s.title}: before", tex(s.before)), (f"{s.title}: after", tex(s.after))]
    return out


def document_blocks(latex: str) -> list[tuple[str, str]]:
    """The ``align*`` blocks of an emitted document as ``aligned`` math (the text lines
    ``\\intertext`` carries are text, checked by pdflatex, not here)."""
    out = []
    for i, block in enumerate(_ALIGN.findall(latex)):
        math = "\n".join(line for line in block.splitlines()
                         if not line.lstrip().startswith(r"\intertext"))
        out.append((f"align* block {i + 1}", r"\begin{aligned}%s\end{aligned}" % math))
    return out


def brace_problem(text: str) -> str | None:
    """Why the braces of ``text`` do not balance (escaped ``\\{``, ``\\}`` excluded), or None."""
    depth, i = 0, 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        depth += (c == "{") - (c == "}")
        if depth < 0:
            return f"a '}}' closes nothing at character {i}"
        i += 1
    if depth:
        return f"{depth} '{{' never closed"
    if len(_LEFT.findall(text)) != len(_RIGHT.findall(text)):
        return r"\left and \right do not pair"
    return None


def _subscript(text: str, start: int) -> str:
    """The braced group that opens at ``text[start] == '{'``."""
    depth = 0
    for j in range(start, len(text)):
        if text[j] == "\\":
            continue
        depth += (text[j] == "{") - (text[j] == "}")
        if depth == 0:
            return text[start + 1:j]
    return text[start + 1:]


def garbled_sums(text: str) -> list[str]:
    """Subscripts of ``\\sum`` that are not an index range: a ``\\log`` or several ``=``."""
    bad = []
    for m in re.finditer(r"\\sum_\{", text):
        sub = _subscript(text, m.end() - 1)
        if r"\log" in sub or sub.count("=") > 1:
            bad.append(sub)
    return bad


def _converter_errors() -> tuple[type[Exception], ...]:
    """The errors latex2mathml raises for LaTeX it cannot read (they share no base class);
    anything else it raises is a crash and fails the calling test as it is."""
    import inspect

    import latex2mathml.exceptions as exc

    return tuple(c for _, c in inspect.getmembers(exc, inspect.isclass) if issubclass(c, Exception))


def mathml_problem(text: str) -> str | None:
    """Why ``latex2mathml`` cannot render ``text``, or None."""
    from latex2mathml.converter import convert

    try:
        mathml = convert(text)
    except _converter_errors() as exc:
        return f"latex2mathml raised {type(exc).__name__}: {exc}"
    if "<merror" in mathml:
        return "latex2mathml produced <merror>"
    unknown = re.findall(r"<m[io][^>]*>(\\[A-Za-z]+)</m[io]>", mathml)
    if unknown:
        return f"commands latex2mathml does not know: {sorted(set(unknown))}"
    return None


def problems(d) -> list[str]:
    """Every problem of the derivation's math, ``where: what: latex`` ([] when well formed)."""
    found = []
    for where, text in pieces(d) + document_blocks(d.latex()):
        for problem in (brace_problem(text), mathml_problem(text),
                        *(f"garbled sum subscript {{{s}}}" for s in garbled_sums(text))):
            if problem:
                found.append(f"{where}: {problem}: {text}")
    return found

