"""The derivation report: one PDF a person would rather look at than raw LaTeX.

It holds the derivation (forward equations, each backward step in matrix and index form,
the proved simplifications, op counts per pass), then each equation beside the emitted NumPy
lines and C statements that compute it, then the training curve when a run is given. It is
built with ``pdflatex`` from ``templates/report/report.tex.jinja``, so it renders with no
network access. ``symnn report SPEC --out report.pdf`` is the command.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import naming
from .declare import Network
from .derivation import derive
from .errors import BuildError, CodegenError, ConfigError, UntrustedInputError
from .fileio import staged
from .render import render
from .report import _eq

#: what ``curve`` may be: a file name in the build folder, never a path TeX would go looking in
_PLAIN_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\.png")


def _numpy_lines(source: str) -> dict[str, list[str]]:
    """target -> the lines of the NumPy ``_loss_and_grad`` that assign it."""
    body = source.split("def _loss_and_grad(", 1)[1]
    out: dict[str, list[str]] = {}
    for line in body.splitlines()[1:]:
        m = re.match(r"    (\w+) (\+?=) ", line)
        if m:
            out.setdefault(m.group(1), []).append(line.strip())
        elif line and not line.startswith(" "):
            break
    return out


#: an assignment to a name or an element of it: ``t8[i*10 + j] = ``, ``dL_db2[j] += ``, ``pi[j] /= ``
_WRITE = re.compile(r"\b(\w+)(\[[^\]]*\])? (\+?=|/=) ")


def _c_lines(source: str, prefix: str, limit: int = 8) -> dict[str, list[str]]:
    """target -> the C lines of the loss-and-gradient kernel that compute it.

    A one-line statement is shown as it is. A block (a fused loop) is shown by its comment and
    the statements inside it: those writing another target the comment names (a bias
    gradient's column sums) go to that target, the rest (locals, the value stored) to the
    first, at most ``limit`` lines each; a comment alone told the reader nothing of the loop.
    """
    kernel = source.split(f"static void {prefix}__loss_and_grad(", 1)[1]
    body = kernel.split("\n{\n", 1)[1].split("\n}\n", 1)[0]  # inside the function's braces
    out: dict[str, list[str]] = {}

    def add(target: str, line: str) -> None:
        lines = out.setdefault(target, [])
        if len(lines) < limit:
            lines.append(line if len(line) < 110 else line[:107] + "...")

    depth, named = 0, []  # the targets the current top-level block's comments name
    for line in body.splitlines():
        stripped = line.strip()
        if depth == 0:
            named = []
        comment = re.search(r"/\* (\w+) (\+?=) .*\*/", stripped)
        written = _WRITE.match(stripped)
        if comment:
            add(comment.group(1), stripped.removeprefix("{ "))
            if stripped.startswith("{") or depth > 0:
                named.append(comment.group(1))
        elif named and re.sub(r"\s*/\*.*\*/$", "", stripped).endswith(";"):  # not a bare loop header
            owners = [m.group(1) for m in _WRITE.finditer(stripped)]
            add(next((o for o in owners if o in named), named[0]), stripped)
        elif written:
            add(written.group(1), stripped)
        depth += stripped.count("{") - stripped.count("}")
    return out


def _delta_name(numpy: dict[str, list[str]], layer: int) -> str | None:
    """The temporary holding delta^(layer): what dL_db<layer> sums over rows."""
    for line in numpy.get(f"dL_db{layer}", []):
        m = re.search(r"= (\w+)\.sum\(axis=0\)", line)
        if m:
            return m.group(1)
    return None


def report_tex(net: Network, dtype: str = "float64", curve: str | None = None, training_text: str = "") -> str:
    """The report's LaTeX source (``curve``: the file name of a PNG beside the ``.tex``).

    Text (titles, notes, ``training_text``, which names the user's data file) is escaped by the
    template; names and LaTeX snippets are checked before any work, and ``curve`` must be a
    plain file name, since ``\\includegraphics`` reads whatever path it is given."""
    from .driver import derive_program
    from .emit import emit_numpy, spec_hash
    from .emit_c import emit_c

    naming.check_declared_names(net)
    if curve is not None and not _PLAIN_FILE.fullmatch(str(curve)):
        raise UntrustedInputError(f"report curve {naming.shown(curve)} must be a plain file name "
                                  "(letters, digits, '_', '-', '.') ending in .png")
    d = derive(net)
    program = derive_program(net).program  # derived once for both backends
    numpy = _numpy_lines(emit_numpy(net, program, dtype).source)
    try:
        c = _c_lines(emit_c(net, program, dtype).source, net.name)
    except (CodegenError, ConfigError):  # a name or function the C backend refuses: NumPy only
        c = {}
    pairs = []
    for step in d.forward + d.backward:
        if step.label.startswith("delta"):
            target = _delta_name(numpy, int(step.label[5:]))
        elif step.label.startswith(("dW", "db")):
            target = f"dL_d{step.label[1:]}"
        else:
            target = step.label
        if target is None or target not in numpy:
            continue
        lhs, rhs = _eq(step.matrix)
        pairs.append({"label": f"{step.label}: {step.note}", "lhs": lhs, "rhs": rhs,
                      "numpy": numpy[target], "c": c.get(target, [])})
    layers = [f"{layer.in_features} \\to {layer.out_features}" for layer in net.layers]
    return render("report/report.tex.jinja", title=f"symnn report: {net.name}", summary=", ".join(layers),
                  loss_name=net.loss.name, dtype=dtype, spec_hash=spec_hash(net, dtype),
                  derivation=d.latex(document=False), pairs=pairs, curve=curve, training_text=training_text)


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
            raise BuildError(f"report output must end in .pdf or .tex, got {out.name!r}")
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
