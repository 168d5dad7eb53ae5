"""The derivation as HTML: MathML for a notebook, and the report as one self-contained page.

:func:`derivation_html` is the fragment Jupyter shows for a :class:`~symnn.derivation.Derivation`
(``_repr_html_``): every equation in matrix and index form as MathML, which browsers render
with no script or font download. :func:`build_html_report` writes the HTML report
(``symnn report SPEC --out report.html``): the same derivation, each equation beside the
emitted NumPy and C lines that compute it, the element-wise functions, the simplifications, the
op counts of every pass, and a training curve drawn as inline SVG. The page loads nothing
(no script, stylesheet, font or image from anywhere), so it opens offline and can be mailed.

Escaping: text (names, notes, titles) goes through :func:`html.escape`; LaTeX goes through
:func:`mathml`, which serialises latex2mathml's element tree itself. ``latex2mathml``'s own
``convert`` returns its XML *unescaped* (``\\text{<b>}`` comes back as a live ``<b>`` tag),
so it is never used for output here.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from xml.etree import ElementTree

from . import naming
from .errors import ConfigError

if TYPE_CHECKING:
    from .declare import Network
    from .derivation import Derivation
    from .provenance import CodeLine
    from .report_doc import CodePair
    from .train import History

#: a character reference as latex2mathml writes symbols into its element text (``&#x02202;``)
_CHAR_REF = re.compile(r"&#x([0-9A-Fa-f]{1,6});")

#: CSS of the page (and of nothing else: the notebook fragment is styled by the notebook)
_STYLE = """
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; color: #111; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
math { font-size: 1.1em; }
math[display="block"] { margin: 0.3em 0; }
.symnn-legend, .symnn-summary { background: #f5f5f5; padding: 0.6em 1em; }
.symnn-eq { margin: 0.4em 0; overflow-x: auto; }
.symnn-index { color: #333; }
.symnn-note { color: #555; font-size: 0.9em; }
.symnn-id { font-family: "DejaVu Sans Mono", monospace; font-weight: bold; color: #224; }
.symnn-pair { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr);
              gap: 1em; border-top: 1px solid #ddd; padding: 0.6em 0; }
.symnn-code h4 { margin: 0.2em 0; font-size: 0.85em; color: #444; }
.symnn-code pre { background: #f7f7f2; margin: 0 0 0.5em 0; padding: 0.4em; font-size: 0.8em;
                  overflow-x: auto; white-space: pre; }
.symnn-code .ln { color: #999; user-select: none; }
table.symnn-passes { border-collapse: collapse; }
table.symnn-passes th, table.symnn-passes td { border: 1px solid #ccc; padding: 0.2em 0.6em;
                                                text-align: right; }
table.symnn-passes td:first-child { text-align: left; font-family: monospace; }
svg.symnn-curve text { font-size: 12px; font-family: "DejaVu Sans", sans-serif; }
"""


# -- MathML ---------------------------------------------------------------------------------------
def _converter() -> ModuleType:
    """latex2mathml's converter module, or a ConfigError saying how to install it (an optional
    dependency: the PDF report and ``.latex()`` need none)."""
    try:
        from latex2mathml import converter
    except ImportError as exc:
        raise ConfigError('the HTML view of a derivation needs latex2mathml: '
                          'pip install "symnn[html]"') from exc
    return converter


def _char(match: re.Match[str]) -> str:
    """The character a reference names, if it is one a page may hold (no surrogate, no control
    character); otherwise the reference as text, which serialisation then escapes."""
    code = int(match.group(1), 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF or (code < 0x20 and code not in (9, 10)):
        return match.group(0)
    return chr(code)


def _decoded(value: str | None) -> str | None:
    return None if value is None else _CHAR_REF.sub(_char, value)


def mathml(latex: str, display: str = "block") -> str:
    """``latex`` as one ``<math>`` element, safe to place in HTML.

    latex2mathml builds an element tree whose text holds character references; its
    ``convert`` then unescapes the whole serialised string, so any ``<`` or ``&`` in the LaTeX
    would come out as markup. Here the references are decoded in the tree and the tree is
    serialised by ElementTree, which escapes every text and attribute.
    """
    root = _converter().convert_to_element(latex, display=display)
    for el in root.iter():
        el.text, el.tail = _decoded(el.text), _decoded(el.tail)
        for key, value in el.attrib.items():
            el.attrib[key] = _decoded(value) or ""
    return ElementTree.tostring(root, encoding="unicode")


def text_with_math(text: str) -> str:
    """Text-mode LaTeX with ``$...$`` pieces (the legend) as escaped text and inline MathML."""
    parts = text.split("$")
    if len(parts) % 2 == 0:  # an unmatched $: show it all as text rather than guess
        return html.escape(text)
    return "".join(mathml(p, "inline") if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _equation_tex(lhs: str, lines: Sequence[str]) -> str:
    """``lhs = rhs`` on one line, or aligned on ``=`` when the right-hand side was broken
    into lines (latex2mathml reads ``align*``, not ``aligned``)."""
    if len(lines) <= 1:
        return f"{lhs} = {lines[0] if lines else ''}"
    rows = [f"{lhs} &= {lines[0]}"] + [rf"&\quad {line}" for line in lines[1:]]
    return r"\begin{align*}" + r" \\ ".join(rows) + r"\end{align*}"


# -- the derivation -------------------------------------------------------------------------------
def _math_div(latex: str, css: str, **data: str) -> str:
    attrs = "".join(f' data-{k}="{html.escape(v)}"' for k, v in data.items())
    return f'<div class="{css}"{attrs}>{mathml(latex)}</div>'


def _equation_html(row: dict) -> str:
    """One equation: its id and note, the matrix form, and the index form where there is one."""
    out = [f'<div class="symnn-note"><span class="symnn-id">{html.escape(row["id"])}</span>'
           f'{" — " + html.escape(row["note"]) if row["note"] else ""}</div>',
           _math_div(_equation_tex(row["lhs"], row["rhs"]), "symnn-eq", eq=row["id"], form="matrix")]
    if row["ilhs"]:
        out.append(_math_div(_equation_tex(row["ilhs"], row["irhs"]), "symnn-eq symnn-index",
                             eq=row["id"], form="index"))
    return "\n".join(out)


def _functions_html(d: Derivation, level: int = 3) -> str:
    """``name(x) = body`` of each element-wise function, under a heading of ``level``."""
    from .report import function_rows

    rows = function_rows(d)
    if not rows:
        return ""
    out = [f"<h{level}>Element-wise functions and their derivatives</h{level}>"]
    for r in rows:
        latex = f"{r['lhs']} = {r['rhs']}" + (f" = {r['reused']}" if r["reused"] else "")
        out.append(_math_div(latex, "symnn-eq", form="function"))
        if r["note"]:
            out.append(f'<div class="symnn-note">{html.escape(r["note"])}</div>')
    return "\n".join(out)


def _legend_html() -> str:
    from .derivation import LEGEND

    return f'<p class="symnn-legend">{text_with_math(LEGEND)}</p>'


def derivation_html(d: Derivation) -> str:
    """The derivation as an HTML fragment of MathML (Jupyter's ``_repr_html_``): the legend,
    each section's equations (matrix and index form, with their notes) and the functions."""
    from .report import equation_rows

    naming.check_declared_names(d.network)
    out = ['<div class="symnn-derivation">',
           f"<h3>Derivation of the gradient of {html.escape(d.network.name)}</h3>", _legend_html()]
    for title, eqs in (("Forward pass", d.forward), ("Loss", d.loss), ("Backward pass", d.backward)):
        out.append(f"<h4>{title}</h4>")
        out += [_equation_html(row) for row in equation_rows(eqs)]
    out += _recurrences_html(d)
    if d.state:
        out.append("<h4>Training step: the buffers</h4>")
        out += [_equation_html(row) for row in equation_rows(d.state)]
    out += [_functions_html(d), "</div>"]
    return "\n".join(part for part in out if part)


def _recurrences_html(d: Derivation) -> list[str]:
    """Each loop's section, as the LaTeX report prints it: the body for step t of a recurrence
    (forward) or of its backpropagation through time, and each invariant's share from step t."""
    from .report import LOOP_INTRO, LOOP_SHARES, loop_rows

    out = []
    for loop in loop_rows(d):
        name = mathml(loop["name"], "inline")
        out.append(f"<h4>Recurrence {name} ({html.escape(loop['label'])})</h4>")
        out.append(f'<p class="symnn-note">{LOOP_INTRO.format(note=html.escape(loop["note"]), name=name, t="t")}</p>')
        out += [_equation_html(row) for row in loop["equations"]]
        if loop["contributions"]:
            out.append(f'<p class="symnn-note">{html.escape(LOOP_SHARES.format(t="t"))}</p>')
            out += [_equation_html(row) for row in loop["contributions"]]
    return out


# -- the page's other parts -----------------------------------------------------------------------
def _summary_html(net: Network, dtype: str) -> str:
    from .emit import spec_hash
    from .report_doc import WORK_BATCH, WORK_LENGTH, work_rows

    if net.graph is not None:
        from .emit import describe

        layers = "; ".join(describe(net)[:-1])
    else:
        layers = "; ".join(f"{layer.in_features} → {layer.out_features}, {layer.activation.name}"
                           + (f", dropout {layer.dropout:g}" if layer.dropout else "")
                           for layer in net.layers)
    items = [("network", net.name), ("layers", layers), ("loss", ", ".join(loss.name for loss in net.losses)),
             ("L1, L2", f"{net.l1:g}, {net.l2:g}"), ("dtype", dtype),
             ("spec hash", spec_hash(net, dtype))]
    work = work_rows(net, dtype, WORK_BATCH)
    if work:
        at = f"N = {WORK_BATCH}" + (f", T = {WORK_LENGTH}" if net.has_run_time_length else "")
        items.append((f"C work at {at}, bytes (liveness bound)",
                      "; ".join(f"{r['kernel']} {r['work']} ({r['bound']})" for r in work)))
    rows = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in items)
    return f'<ul class="symnn-summary">{rows}</ul>'


def _code_html(title: str, lines: Sequence[CodeLine]) -> str:
    """One language's lines for an equation: line number and text, each escaped."""
    if not lines:
        return f"<h4>{html.escape(title)}</h4><pre>(none)</pre>"
    body = "\n".join(f'<span class="ln">{line.line:>4}  </span>{html.escape(line.text)}' for line in lines)
    return f"<h4>{html.escape(title)}</h4><pre>{body}</pre>"


def _pairs_html(d: Derivation, pairs: Sequence[CodePair], net: Network) -> str:
    """Each equation (matrix and index form) beside the NumPy and C lines that compute it;
    equations are matched to ``code_pairs`` by id, so the page's order is the derivation's."""
    from .report import equation_rows

    by_id = {p.equation.id: p for p in pairs}
    out = []
    for title, eqs in (("Forward pass", d.forward), ("Loss", d.loss), ("Backward pass", d.backward)):
        out.append(f"<h3>{title}</h3>")
        for row in equation_rows(eqs):
            pair = by_id.get(row["id"])
            note = (f'<div class="symnn-note"><i>{html.escape(pair.note)}</i></div>'
                    if pair is not None and pair.note else "")
            code = (_code_html(f"NumPy ({net.name}.py)", pair.numpy) + _code_html(f"C ({net.name}.c)", pair.c)
                    if pair is not None else "<pre>(no emitted line computes this equation)</pre>")
            out.append(f'<div class="symnn-pair" data-eq="{html.escape(row["id"])}">'
                       f"<div>{_equation_html(row)}{note}</div>"
                       f'<div class="symnn-code">{code}</div></div>')
    return "\n".join(out)


def _simplifications_html(d: Derivation) -> str:
    from .report import tex

    if not d.simplifications:
        return ""
    out = ["<h2>Simplifications</h2>"]
    for s in d.simplifications:
        out.append(f"<h4>{html.escape(s.title)}</h4>"
                   + (f'<div class="symnn-note">{html.escape(s.how)}</div>' if s.how else ""))
        latex = (r"\begin{align*}\text{before: } & " + tex(s.before) + r" \\ \text{after: } & "
                 + tex(s.after) + r"\end{align*}")
        out.append(_math_div(latex, "symnn-eq", form="simplification"))
    return "\n".join(out)


def _counts(c: Sequence[int]) -> str:
    return f"{c[0]}, {c[1]}"


def _passes_html(d: Derivation) -> str:
    """The op counts (tensor ops, scalar ops) of each pass, the forward kernel and the
    loss-and-gradient kernel in their own labelled columns."""
    from .report import passes_rows

    rows = passes_rows(d)
    if not rows:
        return ""
    split = all(r["forward"] is not None and r["backward"] is not None for r in rows)
    if split:
        head = ('<tr><th rowspan="2">pass</th><th colspan="2">forward kernel (ŷ)</th>'
                '<th colspan="2">loss-and-gradient kernel</th></tr>'
                "<tr><th>before</th><th>after</th><th>before</th><th>after</th></tr>")
        body = "".join(f"<tr><td>{html.escape(r['name'])}</td><td>{_counts(r['forward'][0])}</td>"
                       f"<td>{_counts(r['forward'][1])}</td><td>{_counts(r['backward'][0])}</td>"
                       f"<td>{_counts(r['backward'][1])}</td></tr>" for r in rows)
    else:
        head = "<tr><th>pass</th><th>before</th><th>after</th></tr>"
        body = "".join(f"<tr><td>{html.escape(r['name'])}</td><td>{_counts(r['before'])}</td>"
                       f"<td>{_counts(r['after'])}</td></tr>" for r in rows)
    return ("<h2>Passes</h2><p>Op counts as (tensor ops, scalar ops in element-wise maps); each "
            "pass starts from the program the previous one left.</p>"
            f'<table class="symnn-passes">{head}{body}</table>')


# -- the training curve ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Axis:
    """A linear or log10 axis from data values to pixels."""

    lo: float
    hi: float
    p0: float  # pixel of lo
    p1: float  # pixel of hi
    log: bool = False

    def _t(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def __call__(self, v: float) -> float:
        a, b = self._t(self.lo), self._t(self.hi)
        return self.p0 + (self._t(v) - a) / (b - a) * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        if not self.log:
            return _nice_ticks(self.lo, self.hi)
        decades = range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1)
        ticks = [10.0 ** k for k in decades if self.lo <= 10.0 ** k <= self.hi]
        if len(ticks) < 3:  # a decade or two: 2 and 5 times each power of ten as well
            ticks = sorted(m * 10.0 ** k for k in decades for m in (1, 2, 5)
                           if self.lo <= m * 10.0 ** k <= self.hi)
        return ticks


def _nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """About ``target`` round numbers (1, 2 or 5 times a power of ten apart) in [lo, hi]."""
    raw = (hi - lo) / target
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def _span(values: Sequence[float], log: bool) -> tuple[float, float]:
    """The axis range of ``values``, widened when they are all one value."""
    lo, hi = min(values), max(values)
    if hi > lo:
        return lo, hi
    return (lo / 2, hi * 2) if log else (lo - max(abs(lo), 1.0) * 0.1, hi + max(abs(hi), 1.0) * 0.1)


def _series(history: History | Sequence[float]) -> dict[str, list[float]]:
    """The loss curves to draw: ``{"train loss": [...], "validation loss": [...]}``, leaving
    out a curve with no finite value (no validation split)."""
    from .train import History

    if isinstance(history, History):
        curves = {"train loss": list(history.train_loss), "validation loss": list(history.val_loss)}
    else:
        curves = {"train loss": list(history)}
    return {k: [float(v) for v in vs] for k, vs in curves.items()
            if any(math.isfinite(float(v)) for v in vs)}


#: (colour, dash) of each curve, in order
_STROKES = (("#1f77b4", ""), ("#d62728", "6 3"))


def curve_svg(history: History | Sequence[float], width: int = 640, height: int = 320) -> str:
    """The training curve as an inline SVG: one polyline per loss curve (a point per epoch),
    axes with tick labels, a legend; the loss axis is logarithmic when every value is positive
    and they span a factor of ten, as ``History.plot`` draws it."""
    series = _series(history)
    if not series:
        return ""
    epochs = max(len(v) for v in series.values())
    finite = [v for vs in series.values() for v in vs if math.isfinite(v)]
    log = min(finite) > 0 and max(finite) / min(finite) >= 10
    left, right, top, bottom = 70, width - 20, 20, height - 45
    x = _Axis(1.0, float(max(epochs, 2)), left, right)
    y = _Axis(*_span(finite, log), bottom, top, log=log)
    out = [f'<svg class="symnn-curve" xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="training curve">',
           f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" '
           'stroke="#444"/>']
    for t in sorted({1.0, *_nice_ticks(1.0, float(max(epochs, 2)))}):
        if t >= 1 and t == int(t) and t <= epochs:
            px = x(t)
            out.append(f'<line x1="{px:.1f}" y1="{bottom}" x2="{px:.1f}" y2="{bottom + 5}" stroke="#444"/>'
                       f'<text x="{px:.1f}" y="{bottom + 18}" text-anchor="middle">{int(t)}</text>')
    for t in y.ticks():
        py = y(t)
        out.append(f'<line x1="{left - 5}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 8}" y="{py + 4:.1f}" text-anchor="end">{t:.3g}</text>')
    out.append(f'<text x="{(left + right) / 2}" y="{height - 8}" text-anchor="middle">epoch</text>'
               f'<text x="16" y="{(top + bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(top + bottom) / 2})">loss{" (log scale)" if log else ""}</text>')
    for k, ((name, values), (colour, dash)) in enumerate(zip(series.items(), _STROKES)):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values, 1) if math.isfinite(v))
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline data-series="{html.escape(name)}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"{dashes} points="{points}"/>'
                   f'<line x1="{right - 150}" y1="{top + 15 + 18 * k}" x2="{right - 120}" '
                   f'y2="{top + 15 + 18 * k}" stroke="{colour}" stroke-width="2"{dashes}/>'
                   f'<text x="{right - 115}" y="{top + 19 + 18 * k}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _training_html(history: History | Sequence[float] | None, training_text: str) -> str:
    if history is None:
        return ""
    return ("<h2>Training</h2>" + (f"<p>{html.escape(training_text)}</p>" if training_text else "")
            + curve_svg(history))


# -- the page -------------------------------------------------------------------------------------
def report_html(net: Network, dtype: str = "float64", history: History | Sequence[float] | None = None,
                training_text: str = "") -> str:
    """The HTML report as one string (see :func:`build_html_report`)."""
    from .derivation import derive
    from .report_doc import code_pairs

    naming.check_declared_names(net)
    d = derive(net)
    pairs = code_pairs(net, dtype=dtype)
    title = html.escape(f"symnn report: {net.name}")
    body = [f"<h1>{title}</h1>", _summary_html(net, dtype), _legend_html(),
            "<h2>Equations and the code that computes them</h2>",
            f"<p>Line numbers are those of the files <code>symnn emit</code> writes for {dtype} "
            f"(<code>{html.escape(net.name)}.py</code>, <code>{html.escape(net.name)}.c</code>).</p>",
            _pairs_html(d, pairs, net),
            "\n".join(["<h2>Recurrences</h2>", *_recurrences_html(d)]) if d.loops else "",
            _functions_html(d, level=2),
            _simplifications_html(d), _passes_html(d), _training_html(history, training_text)]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body>\n</html>\n")


def build_html_report(net: Network, out: str | Path, dtype: str = "float64",
                      history: History | Sequence[float] | None = None, training_text: str = "") -> Path:
    """Write the HTML report to ``out``: one page with no external resource (inline CSS, MathML,
    an SVG curve), written atomically with the mode the umask gives.

    ``history``: a :class:`~symnn.train.History` or a list of per-epoch train losses, drawn as
    the training curve; ``training_text``: a sentence about the run, shown above it.
    """
    from .fileio import write_atomic

    out = Path(out)
    write_atomic(out, report_html(net, dtype, history, training_text))
    return out
