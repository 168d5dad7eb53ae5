"""Issue 18, item 4: a user's LaTeX must never make the report read a file or run a command.

``latex = "\\input{/path/secret}"`` in a spec went unescaped into the report, and ``symnn
report`` typeset the file's contents into the PDF. A LaTeX snippet (``sn.Activation(latex=...)``,
``sn.Loss(latex=...)``, the registry's, the spec's ``latex`` key) is now limited to a whitelist
of math commands and characters (:func:`symnn.naming.latex_snippet`); text from the user or a
file (the data path in the training note, names) is escaped by the templates' ``tex_text``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symnn as sn
from symnn import naming, registry
from symnn.cli import main
from symnn.errors import UntrustedInputError
from symnn.report_doc import build_report, report_tex
from tests.strategies import examples

SETTINGS = dict(deadline=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
z = sp.Symbol("z")
p_, y_ = sp.symbols("p y")

#: TeX that reads or writes files, runs commands, redefines how TeX reads, or leaves math mode
FORBIDDEN = (
    "\\input{/etc/passwd}", "\\include{secret}", "\\openin5=/etc/passwd", "\\read5 to\\x",
    "\\write18{touch pwned}", "\\immediate\\write18{id}", "\\csname input\\endcsname",
    "\\catcode`\\%=12", "\\def\\x{\\input}", "\\let\\x\\input", "\\usepackage{verbatim}",
    "\\newcommand{\\x}{}", "\\begin{verbatim}", "\\end{align*}", "\\special{x}", "\\scantokens{x}",
    "\\endinput", "\\lowercase{\\INPUT}", "\\expandafter", "\\verb|x|", "\\href{file:///etc}{x}",
    "\\includegraphics{/etc/x}", "\\IfFileExists{/etc/passwd}{}{}", "\\jobname", "\\string",
    "^^5cinput{/etc/passwd}", "%", "$", "&", "#1", "~", "\\\\", "\\]", "\\)", "\\[", "}", "{",
    "\n", "\r", "\x00", "\u2028", "\u2029", "é", "\\\u00e9", "\"", "@", "`",
)
#: math that a snippet may hold around them
MATH = ("", "z", "\\sigma", "\\frac{1}{2}", "x_{i}^{2}", "\\operatorname{f}", " + ", "\\left(a\\right)")
#: TeX primitives and macros that read or write files, run commands or change how TeX reads
DANGEROUS = {"input", "include", "openin", "openout", "write", "read", "csname", "catcode", "def", "edef",
             "gdef", "xdef", "let", "immediate", "special", "scantokens", "endinput", "lowercase",
             "uppercase", "newcommand", "renewcommand", "IfFileExists", "InputIfFileExists", "verbatiminput"}


def hostile_latex() -> st.SearchStrategy[str]:
    spliced = st.tuples(st.sampled_from(MATH), st.sampled_from(FORBIDDEN), st.sampled_from(MATH)).map("".join)
    too_long = st.integers(201, 3000).map(lambda n: ("\\alpha" * n)[:n])
    return st.one_of(spliced, too_long)


def _entry_points() -> dict[str, object]:
    """Every place a LaTeX snippet enters."""
    return {
        "Activation": lambda t: sn.Activation("sw", z / (1 + sp.exp(-z)), var=z, latex=t),
        "Loss": lambda t: sn.Loss("sq", (p_ - y_) ** 2, pred=p_, target=y_, latex=t),
        "register_activation": lambda t: registry.register_activation("sec_latex_act", registry.X, latex=t),
        "register_loss": lambda t: registry.register_loss("sec_latex_loss", (registry.P - registry.T) ** 2, latex=t),
    }


@pytest.mark.parametrize("entry", list(_entry_points()))
@pytest.mark.parametrize("snippet,named", [
    ("\\input{/etc/passwd}", "\\\\input"), ("\\openin5=/etc/passwd", "\\\\openin"),
    ("\\immediate\\write18{touch pwned}", "\\\\immediate"), ("\\csname input\\endcsname", "\\\\csname"),
    ("\\catcode`\\^=12", "\\\\catcode"), ("^^5cinput{x}", "\\^\\^"), ("\\sigma % comment", "'%'")])
def test_file_reading_latex_is_refused_naming_the_command(entry: str, snippet: str, named: str) -> None:
    with pytest.raises(UntrustedInputError, match=named):
        _entry_points()[entry](snippet)
    assert "sec_latex_act" not in registry.activation_names() and "sec_latex_loss" not in registry.loss_names()


@settings(max_examples=examples(100), **SETTINGS)
@given(snippet=hostile_latex(), entry=st.sampled_from(sorted(_entry_points())))
def test_hostile_latex_is_refused_everywhere(snippet: str, entry: str) -> None:
    with pytest.raises(UntrustedInputError):
        _entry_points()[entry](snippet)
    assert "sec_latex_act" not in registry.activation_names() and "sec_latex_loss" not in registry.loss_names()


def _math() -> st.SearchStrategy[str]:
    """Snippets made only of whitelisted commands, characters and balanced groups."""
    atom = st.one_of(st.sampled_from(sorted(naming.LATEX_COMMANDS)).map(lambda c: "\\" + c + " "),
                     st.from_regex(r"[A-Za-z0-9 +\-*/=<>()\[\]|',.:;!?_^]{1,4}", fullmatch=True).filter(
                         lambda s: "^^" not in s),
                     st.sampled_from(["\\,", "\\;", "\\{", "\\}", "\\|", "\\_"]))
    return st.recursive(atom, lambda inner: st.one_of(st.lists(inner, min_size=1, max_size=3).map("".join),
                                                      inner.map(lambda s: "{" + s + "}")), max_leaves=6).filter(
        lambda s: s.strip() and len(s) <= naming.MAX_LATEX_LENGTH and "^^" not in s)


@settings(max_examples=examples(100), **SETTINGS)
@given(snippet=_math())
def test_math_latex_is_accepted(snippet: str) -> None:
    """The whitelist is a whitelist, not a wall: math made of its commands passes unchanged
    (the constructors call this validator; test_user_latex_reaches_the_derivation goes through
    one)."""
    assert naming.latex_snippet(snippet, "latex") == snippet


def test_user_latex_reaches_the_derivation() -> None:
    act = sn.Activation("swish", z / (1 + sp.exp(-z)), var=z, latex=r"\operatorname{swish}_{\beta}")
    tex = sn.derive(sn.Network([sn.Dense(2, 3, act), sn.Dense(3, 1, "sigmoid")], loss="bce")).latex()
    assert r"\operatorname{swish}_{\beta}" in tex


# -- the spec and the command line ----------------------------------------------------------------
SPEC = """
[network]
name = "leak"

[[layer]]
in = 2
out = 1
activation = {{ name = "sw", expr = "z/(1 + exp(-z))", var = "z", latex = {act} }}

[loss]
name = "sq"
expr = "(p - y)**2"
pred = "p"
target = "y"
latex = {loss}
"""


def _spec(act: str = "\\sigma", loss: str = "\\ell") -> str:
    return SPEC.format(act=json.dumps(act, ensure_ascii=False), loss=json.dumps(loss, ensure_ascii=False))


@settings(max_examples=examples(40), **SETTINGS)
@given(snippet=hostile_latex(), field=st.sampled_from(["act", "loss"]))
def test_spec_latex_keys_are_refused(snippet: str, field: str) -> None:
    assert sn.loads_spec(_spec()).network.loss.latex_name == "\\ell"  # the spec itself is valid
    with pytest.raises(sn.SpecError, match="latex"):
        sn.loads_spec(_spec(**{field: snippet}))


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-4711\n")
    return path


@pytest.mark.parametrize("command", ["latex", "report", "emit"])
def test_cli_refuses_a_spec_that_would_read_a_file(tmp_path: Path, secret: Path, command: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Item 4's reproduction: ``latex = "\\input{/path/secret}"`` in a spec, then ``symnn
    report``. Every command that reads the spec refuses it with one error line naming the
    command, and writes nothing."""
    spec = tmp_path / "leak.toml"
    spec.write_text(_spec(act=f"\\input{{{secret}}}"))
    out = tmp_path / ("report.tex" if command == "report" else "out")
    args = {"latex": ["latex", str(spec)], "report": ["report", str(spec), "--out", str(out)],
            "emit": ["emit", str(spec), "--out", str(out)]}[command]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("symnn: error: ") and captured.err.count("\n") == 1
    assert "\\input is not allowed" in captured.err
    assert "TOP-SECRET" not in captured.out + captured.err and not out.exists()


# -- the report -------------------------------------------------------------------------------------
def _forged(latex: str) -> sn.Network:
    """A network whose activation's LaTeX skipped the constructor (as an old loader built it)."""
    net = sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 1, "sigmoid")], loss="bce", name="leak")
    object.__setattr__(net.layers[0].activation, "latex_name", latex)
    return net


def test_report_checks_latex_that_skipped_the_constructor(tmp_path: Path, secret: Path) -> None:
    net = _forged(f"\\input{{{secret}}}")
    for build in (lambda: sn.derive(net).latex(), lambda: report_tex(net),
                  lambda: build_report(net, tmp_path / "r.tex"), lambda: build_report(net, tmp_path / "r.pdf")):
        with pytest.raises(UntrustedInputError, match=r"\\input is not allowed"):
            build()
    assert not (tmp_path / "r.tex").exists() and not (tmp_path / "r.pdf").exists()


@pytest.mark.parametrize("curve", ["../../etc/passwd.png", "/etc/x.png", "c}\\input{x}.png", "curve.pdf", "a b.png"])
def test_report_curve_must_be_a_plain_file_name(curve: str) -> None:
    """``\\includegraphics`` reads whatever path it is given."""
    net = sn.Network([sn.Dense(2, 1, "sigmoid")], loss="bce", name="curvy")
    with pytest.raises(UntrustedInputError, match="plain file name"):
        report_tex(net, curve=curve)


def _commands(tex: str) -> set[str]:
    return set(re.findall(r"\\([A-Za-z@]+)", tex))


_REPORT_NET = sn.Network([sn.Dense(2, 3, sn.Activation("swish", z / (1 + sp.exp(-z)), var=z,
                                                      latex=r"\operatorname{swish}")),
                          sn.Dense(3, 1, "sigmoid")], loss="bce", name="reported")


@settings(max_examples=examples(6), **SETTINGS)
@given(note=st.one_of(st.sampled_from(FORBIDDEN).map(lambda s: f"Trained on {s}.csv"), st.text(max_size=40)))
def test_report_text_from_files_is_inert(note: str) -> None:
    """The training note names the user's CSV file: whatever the path holds, the report's TeX
    calls no command that reads or writes a file, and its text is there escaped."""
    tex = report_tex(_REPORT_NET, training_text=note, curve="curve.png")
    assert not _commands(tex) & DANGEROUS, _commands(tex) & DANGEROUS
    section = tex.split("\\section*{Training}", 1)[1].split("\\begin{center}", 1)[0]
    assert "\n" not in section.strip() and "%" not in section.replace("\\%", "")


def test_report_loads_and_writes_only_its_own_files() -> None:
    """The report's own TeX: the only file it includes is the curve, and it reads no other."""
    tex = report_tex(_REPORT_NET, training_text="Trained on data.csv.", curve="curve.png")
    assert not _commands(tex) & DANGEROUS
    assert re.findall(r"\\includegraphics\[[^]]*\]\{([^}]*)\}", tex) == ["curve.png"]


def test_load_refuses_latex_that_reads_a_file(tmp_path: Path, secret: Path) -> None:
    """U2 for LaTeX: a model file whose activation LaTeX reads a file is refused on load (and
    :func:`test_report_checks_latex_that_skipped_the_constructor` covers a loader that lets it
    through)."""
    net = sn.Network([sn.Dense(2, 3, sn.Activation("swish", z / (1 + sp.exp(-z)), var=z, latex=r"\sigma")),
                      sn.Dense(3, 1, "sigmoid")], loss="bce", name="saved")
    path = sn.save(tmp_path / "m.npz", net, net.init_params(seed=0))
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["network"]["layers"][0]["activation"]["latex_name"] = f"\\input{{{secret}}}"
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "forged.npz", **arrays)
    with pytest.raises(sn.SymnnError, match=r"\\input is not allowed"):
        sn.load(tmp_path / "forged.npz")
