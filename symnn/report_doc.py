"""The derivation report: one PDF a person would rather look at than raw LaTeX.

It holds the derivation (forward equations, each backward step in matrix and index form,
the proved simplifications, op counts per pass), then each equation beside the emitted NumPy
lines and C statements that compute it, paired by the equation's id, which every lowered
statement carries (no reading of the emitted text), then the training curve when a run is
given. It is
built with ``pdflatex`` from ``templates/report/report.tex.jinja``, so it renders with no
network access. ``symnn report SPEC --out report.pdf`` is the command.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from dataclasses import dataclass

from . import naming
from .declare import Network
from .derivation import Derivation, derive
from .autodiff.display import Equation, Section
from .errors import BuildError, CodegenError, ConfigError, UntrustedInputError
from .fileio import staged
from .provenance import CodeLine
from .render import render
from .report import broken, plain, summary_math, tex

#: what ``curve`` may be: a file name in the build folder, never a path TeX would go looking in
_PLAIN_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\.png")


@dataclass(frozen=True)
class CodePair:
    """One equation of the derivation and the emitted lines that compute it, paired by the
    equation's id (each lowered statement carries it: :attr:`symnn.lower.Stmt.origin`), with a
    note where the code computes a scaled value (the batch mean's 1/N folded into delta)."""

    equation: Equation
    numpy: list[CodeLine]
    c: list[CodeLine]
    note: str


#: the kernels whose lines a pair shows, in the order tried: the loss-and-gradient kernel holds
#: every forward, loss and backward equation; an output only the forward kernel computes
#: (softmax probabilities beside a fused loss) comes from there
_KERNELS = ("loss_and_grad", "forward")


def _lines(provenance: dict[str, list[CodeLine]], eq_id: str) -> list[CodeLine]:
    for kernel in _KERNELS:
        found = [line for line in provenance.get(kernel, []) if line.origin == eq_id]
        if found:
            return found
    return []


def scale_note(d: Derivation, eq: Equation) -> str:
    """Where the printed equation and the code differ by a factor, and why (mechanical: from
    the equation's scale and the scales of the symbols it reads)."""
    if eq.scale != 1:
        return (f"the code computes {plain(eq.lhs)}/{plain(eq.scale)}, the gradient itself: the "
                f"batch mean's 1/{plain(eq.scale)} is folded in here")
    scaled = [d.symbols[r] for r in eq.refs if r in d.symbols and d.symbols[r].scale != 1]
    if scaled and eq.section is Section.BACKWARD:
        names = ", ".join(sorted({plain(s.symbol) for s in scaled}))
        return f"no 1/N in the code here: the code's {names} already holds it (see above)"
    return ""


def code_pairs(net: Network, dtype: str = "float64") -> list[CodePair]:
    """Every equation of ``net``'s derivation beside the NumPy and C lines that compute it.

    The C column is empty for a network the C backend refuses (a function it cannot print)."""
    from .driver import derive_program
    from .backends.numpy.emit import emit_numpy
    from .backends.c.emit import emit_c

    naming.check_declared_names(net)
    d = derive(net)
    program = derive_program(net).program  # derived once for both backends
    numpy = emit_numpy(net, program, dtype).provenance
    try:
        c = emit_c(net, program, dtype).provenance
    except (CodegenError, ConfigError):  # a name or function the C backend refuses: NumPy only
        c = {}
    return [CodePair(eq, _lines(numpy, eq.id), _lines(c, eq.id), scale_note(d, eq)) for eq in d.equations]


def report_tex(net: Network, dtype: str = "float64", curve: str | None = None, training_text: str = "") -> str:
    """The report's LaTeX source (``curve``: the file name of a PNG beside the ``.tex``).

    Text (titles, notes, ``training_text``, which names the user's data file) is escaped by the
    template; names and LaTeX snippets are checked before any work, and ``curve`` must be a
    plain file name, since ``\\includegraphics`` reads whatever path it is given."""
    from .emit import spec_hash

    naming.check_declared_names(net)
    if curve is not None and not _PLAIN_FILE.fullmatch(str(curve)):
        raise UntrustedInputError(f"report curve {naming.shown(curve)} must be a plain file name "
                                  "(letters, digits, '_', '-', '.') ending in .png")
    d = derive(net)
    pairs = []
    for pair in code_pairs(net, dtype):
        eq = pair.equation
        if not pair.numpy and not pair.c:
            continue
        pairs.append({"label": f"{eq.id}: {eq.note}" if eq.note else eq.id, "lhs": tex(eq.lhs),
                      "rhs": r" \\ &\quad ".join(broken(eq.rhs)), "note": pair.note,
                      "numpy": [f"{line.line:4d}  {line.text}" for line in pair.numpy],
                      "c": [f"{line.line:4d}  {line.text}" for line in pair.c]})
    return render("report/report.tex.jinja", title=f"symnn report: {net.name}", summary=summary_math(net),
                  loss_name=", ".join(loss.name for loss in net.losses), dtype=dtype, spec_hash=spec_hash(net, dtype),
                  derivation=d.latex(document=False), pairs=pairs, curve=curve, training_text=training_text,
                  work=work_rows(net, dtype, WORK_BATCH), work_batch=WORK_BATCH,
                  work_length=WORK_LENGTH if net.has_run_time_length else 0)


#: the batch size at which the report states the C kernels' work memory
WORK_BATCH = 64
#: the sequence length at which it states it, for a network whose length is given at each call
WORK_LENGTH = 16


def work_rows(net: Network, dtype: str, n: int) -> list[dict]:
    """The C kernels' work against the liveness bound at batch ``n`` (:mod:`symnn.memory`), as
    the report prints them: bytes with thousands separators; empty for a network the C backend
    refuses (a function it cannot print) or with symbolic widths."""
    from .memory import work_table
    from .optim import SGD

    if not net.is_concrete:
        return []
    try:
        rows = work_table(net, dtype, optimizer=SGD(lr=0.1), n=n, t=WORK_LENGTH)
    except (CodegenError, ConfigError):
        return []
    size = 4 if dtype == "float32" else 8
    return [{"kernel": r.kernel, "work": f"{r.work * size:,}", "bound": f"{r.bound * size:,}",
             "ratio": f"{r.ratio:.2f}"} for r in rows]


def build_report(net: Network, out: str | Path, dtype: str = "float64", curve: str | Path | None = None,
                 training_text: str = "") -> Path:
    """Write the report: ``.tex`` as is, ``.pdf`` through ``pdflatex`` (atomic)."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="symnn-report-") as tmp:
        tmpdir = Path(tmp)
        curve_name = None
        if curve is not None:
            shutil.copy(curve, tmpdir / "curve.png")
            curve_name = "curve.png"
        tex = report_tex(net, dtype, curve_name, training_text)
        if out.suffix == ".tex":
            from .emit import write_atomic

            write_atomic(out, tex)
            return out
        if out.suffix != ".pdf":
            raise BuildError(f"report output must end in .pdf or .tex (an .html page: "
                             f"symnn.report_html.build_html_report), got {out.name!r}")
        engine = shutil.which("pdflatex")
        if engine is None:
            raise BuildError("pdflatex not found: install it (Debian: apt install texlive-latex-base) "
                             "or write the .tex with --out report.tex")
        (tmpdir / "report.tex").write_text(tex, encoding="utf-8")
        # twice, for stable layout; -no-shell-escape: never \write18 (a shell command), whatever
        # texmf.cnf allows
        argv = [engine, "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error",
                "report.tex"]
        for _ in range(2):
            proc = subprocess.run(argv, cwd=tmpdir, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                tail = "\n".join(proc.stdout.splitlines()[-30:])
                raise BuildError(f"pdflatex failed on the report:\n{tail}")
        with staged(out) as tmp:
            shutil.copyfile(tmpdir / "report.pdf", tmp)
    return out
