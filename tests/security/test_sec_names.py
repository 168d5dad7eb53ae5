"""Issue 18, items 2 (the emission side) and 8, RELIABILITY U2: names from users and files.

A name (network, activation, loss, an expression's variable) is printed into C symbols, file
names, comments, docstrings and LaTeX. It must be a plain identifier wherever it enters, through
one validator (:func:`symnn.naming.identifier`), and the templates escape every free text they
print for its language anyway (``symnn.render``'s filters). Code-execution payloads carry a
marker path: the marker exists iff the payload ever ran.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symnn as sn
from symnn import registry
from symnn.cli import main
from symnn.driver import emit_files
from symnn.errors import UntrustedInputError
from symnn.render import c_comment, c_string, hash_comment, py_string, tex_text, tex_verbatim
from tests.strategies import examples, hostile_strings

SETTINGS = dict(deadline=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CC = shutil.which("gcc") or shutil.which("cc")
#: what symnn.naming's validator says, whichever rule a name breaks
VALIDATOR_SAYS = r"not a plain name|longer than \d+ characters|keyword|reserved"
needs_cc = pytest.mark.needs_cc
z = sp.Symbol("z")
p_, y_ = sp.symbols("p y")


def _payloads(marker: Path) -> dict[str, str]:
    """Names that break out of where a name is printed (run code from a docstring, a C
    comment, a Makefile), or of the output folder."""
    return {
        "python docstring": f'tanh\n"""\nopen({str(marker)!r}, "w").close()\n"""',
        "C comment": (f'tanh */ __attribute__((constructor)) static void pwn(void) '
                      f'{{ fclose(fopen("{marker}", "w")); }} /*'),
        "makefile recipe": f"tanh\nall:\n\ttouch {marker}\n#",
        "path": "../../../tmp/pwned",
    }


def _net(name: str = "victim", act: object = "tanh", loss: object = "bce") -> sn.Network:
    return sn.Network([sn.Dense(2, 3, act), sn.Dense(3, 1, "sigmoid")], loss=loss, name=name)


def _entry_points() -> dict[str, object]:
    """Every constructor and registry function through which a name enters."""
    return {
        "network": lambda s: _net(name=s),
        "activation": lambda s: sn.Activation(s, sp.tanh(z), var=z),
        "loss": lambda s: sn.Loss(s, (p_ - y_) ** 2, pred=p_, target=y_),
        "register_activation": lambda s: registry.register_activation(s, sp.tanh(registry.X)),
        "register_loss": lambda s: registry.register_loss(s, (registry.P - registry.T) ** 2),
    }


# -- every constructor refuses the payloads ----------------------------------------------------------
@pytest.mark.parametrize("entry", list(_entry_points()))
@pytest.mark.parametrize("payload", ["python docstring", "C comment", "makefile recipe", "path"])
def test_payload_names_are_refused_where_they_enter(tmp_path: Path, entry: str, payload: str) -> None:
    marker = tmp_path / "pwned"
    name = _payloads(marker)[payload]
    with pytest.raises(UntrustedInputError, match=VALIDATOR_SAYS):
        _entry_points()[entry](name)
    assert name not in registry.activation_names() + registry.loss_names()
    assert not marker.exists()


@settings(max_examples=examples(60), **SETTINGS)
@given(name=hostile_strings(), entry=st.sampled_from(sorted(_entry_points())))
def test_hostile_names_are_refused_by_every_constructor(name: str, entry: str) -> None:
    """Quotes, comment closers, newlines, NUL, unicode line separators, TeX control sequences,
    very long names, keywords: each is refused with symnn's error, and never registered."""
    with pytest.raises(UntrustedInputError):
        _entry_points()[entry](name)
    assert name not in registry.activation_names() + registry.loss_names()


# -- item 8: names that collide with the emitted files ----------------------------------------------
@pytest.mark.parametrize("name", ["main", "train_main", "test_main", "Main", "math", "stdint", "stdio",
                                  "numpy", "symnn", "symnn_net"])
def test_network_names_colliding_with_emitted_files_are_refused(name: str) -> None:
    """A network ``main`` made ``main.c`` overwrite the model's own ``.c`` (emit reported success
    and make failed); ``math`` shadowed ``<math.h>`` in the build; ``numpy.py`` would import
    itself."""
    with pytest.raises(UntrustedInputError, match="reserved"):
        _net(name=name)


@pytest.mark.parametrize("name", ["x_", "_net", "1net"])
def test_network_names_that_break_c_symbols_are_refused(name: str) -> None:
    """``x_`` gives ``x__forward`` (reserved in C++, and network ``x``'s private function),
    ``_net`` a file-scope identifier C reserves; a digit cannot start a C symbol."""
    with pytest.raises(UntrustedInputError):
        _net(name=name)


def test_accepted_name_emits_distinct_files() -> None:
    files = emit_files(_net(name="mainframe"), backend="c", example=True, optimizer="sgd")
    assert sorted(files) == ["Makefile", "main.c", "mainframe.c", "mainframe.h", "train_main.c"]


_SPEC = """
[network]
name = {name}
loss = "bce"

[[layer]]
in = 2
out = 1
activation = "sigmoid"
"""


def _toml_string(s: str) -> str:
    """``s`` as a TOML basic string (JSON's escapes are TOML's, except DEL must be escaped)."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


@pytest.mark.parametrize("command", [["emit", "--backend", "c"], ["emit", "--backend", "numpy"], ["latex"]])
def test_cli_refuses_a_reserved_network_name(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             command: list[str]) -> None:
    spec = tmp_path / "net.toml"
    spec.write_text(_SPEC.format(name='"main"'))
    out = tmp_path / "out"
    args = [command[0], str(spec)] + (["--out", str(out)] + command[1:] if command[0] == "emit" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("symnn: error: ") and err.count("\n") == 1 and "reserved" in err
    assert not out.exists()


# -- the spec reader ----------------------------------------------------------------------------------
_SPEC_FIELDS = {
    "network.name": lambda s: _SPEC.format(name=_toml_string(s)),
    "activation name": lambda s: _SPEC.format(name='"n"').replace(
        'activation = "sigmoid"', f'activation = {{ name = {_toml_string(s)}, expr = "tanh(z)", var = "z" }}'),
    "activation var": lambda s: _SPEC.format(name='"n"').replace(
        'activation = "sigmoid"', f'activation = {{ name = "a", expr = "tanh(z)", var = {_toml_string(s)} }}'),
    "loss name": lambda s: _SPEC.format(name='"n"').replace('loss = "bce"\n', "") + (
        f'\n[loss]\nname = {_toml_string(s)}\nexpr = "(p - y)**2"\npred = "p"\ntarget = "y"\n'),
    "loss pred": lambda s: _SPEC.format(name='"n"').replace('loss = "bce"\n', "") + (
        f'\n[loss]\nname = "l"\nexpr = "(p - y)**2"\npred = {_toml_string(s)}\ntarget = "y"\n'),
}


def test_spec_fields_accept_plain_names() -> None:
    """The spec texts of the hostile test, with plain names, are valid: what the hostile test
    sees refused is the name."""
    for field, text in _SPEC_FIELDS.items():
        plain = {"activation var": "z", "loss pred": "p"}.get(field, "ok_name")
        assert sn.loads_spec(text(plain)).network is not None, field


@settings(max_examples=examples(60), **SETTINGS)
@given(name=hostile_strings(), field=st.sampled_from(sorted(_SPEC_FIELDS)))
def test_spec_reader_refuses_hostile_names(name: str, field: str) -> None:
    with pytest.raises(sn.SpecError, match=VALIDATOR_SAYS):
        sn.loads_spec(_SPEC_FIELDS[field](name))


# -- saved models -------------------------------------------------------------------------------------
_MODEL_FIELDS = {
    "network name": lambda meta, s: meta["network"].__setitem__("name", s),
    "activation name": lambda meta, s: meta["network"]["layers"][0]["activation"].__setitem__("name", s),
    "loss name": lambda meta, s: meta["network"]["loss"].__setitem__("name", s),
}


def _forge_model(tmp_path: Path, field: str, value: str) -> Path:
    """A model file as ``sn.save`` writes it, with one name replaced in its metadata."""
    net = _net()
    path = sn.save(tmp_path / "good.npz", net, net.init_params(seed=0))
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    _MODEL_FIELDS[field](meta, value)
    arrays["meta"] = np.array(json.dumps(meta))
    forged = tmp_path / "forged.npz"
    np.savez(forged, **arrays)
    return forged


@settings(max_examples=examples(30), **SETTINGS)
@given(name=hostile_strings(), field=st.sampled_from(sorted(_MODEL_FIELDS)))
def test_load_refuses_hostile_names(tmp_path_factory: pytest.TempPathFactory, name: str, field: str) -> None:
    """U2: a name in a model file passes the validator the constructors use, on load."""
    path = _forge_model(tmp_path_factory.mktemp("model"), field, name)
    with pytest.raises(sn.SymnnError):
        sn.load(path)


def _forged_network(act_name: str = "tanh", loss_name: str = "bce", net_name: str = "victim",
                    latex: str | None = None) -> sn.Network:
    """A network whose names skipped the constructors (``object.__new__``, as the old loader
    built them): what the template layer must still refuse or escape."""
    net = _net()
    act = object.__new__(sn.Activation)
    for field in ("expr", "var", "kind", "init", "user", "params", "domain"):
        object.__setattr__(act, field, getattr(net.layers[0].activation, field))
    object.__setattr__(act, "name", act_name)
    object.__setattr__(act, "latex_name", latex)
    layer = object.__new__(sn.Dense)
    for field in ("in_features", "out_features", "dropout"):
        object.__setattr__(layer, field, getattr(net.layers[0], field))
    object.__setattr__(layer, "activation", act)
    loss = object.__new__(sn.Loss)
    for field in ("expr", "reduction", "requires", "user", "latex_name", "domain"):
        object.__setattr__(loss, field, getattr(net.loss, field))
    object.__setattr__(loss, "name", loss_name)
    forged = object.__new__(sn.Network)
    for field, value in (("layers", (layer, net.layers[1])), ("loss", loss), ("l1", 0.0), ("l2", 0.0),
                         ("name", net_name)):
        object.__setattr__(forged, field, value)
    return forged


_USES = {
    "emit_source numpy": lambda net, out: sn.emit_source(net, "numpy"),
    "emit numpy": lambda net, out: sn.emit(net, out, backend="numpy"),
    "emit c": lambda net, out: sn.emit(net, out, backend="c"),
    "compile numpy": lambda net, out: sn.compile(net, backend="numpy"),
    "compile c": lambda net, out: sn.compile(net, backend="c"),
    "predict numpy": lambda net, out: sn.Model(net, net.init_params(seed=0)).predict(np.zeros((2, 2))),
    "predict c": lambda net, out: sn.Model(net, net.init_params(seed=0)).predict(np.zeros((2, 2)), backend="c"),
    "latex": lambda net, out: sn.derive(net).latex(),
}
_USE_PARAMS = [pytest.param(u, marks=needs_cc) if u.endswith(" c") else u for u in _USES]


@pytest.mark.parametrize("use", _USE_PARAMS)
@pytest.mark.parametrize("field", ["activation", "loss", "network"])
def test_names_that_skipped_the_constructors_never_reach_emitted_code(tmp_path: Path, use: str, field: str) -> None:
    """Item 2: a name from a loaded model landed in the emitted module's docstring and ran on
    predict, or closed a C comment and ran when the module loaded. Every entry point that prints
    names checks them again, so even a network built around the constructors is refused, and
    nothing is written."""
    marker = tmp_path / "pwned"
    payloads = _payloads(marker)
    name = payloads["python docstring"] if field != "network" else payloads["path"]
    keyword = {"activation": "act_name", "loss": "loss_name", "network": "net_name"}[field]
    net = _forged_network(**{keyword: name})
    out = tmp_path / "out"
    with pytest.raises(UntrustedInputError):
        _USES[use](net, out)
    net = _forged_network(act_name=payloads["C comment"])
    with pytest.raises(UntrustedInputError):
        _USES[use](net, out)
    assert not marker.exists() and not out.exists()


# -- the template layer's filters ---------------------------------------------------------------------
@settings(max_examples=examples(200), **SETTINGS)
@given(text=st.one_of(hostile_strings(), st.text()))
def test_filters_keep_text_inside_its_context(text: str) -> None:
    """Each filter's output cannot end its context: a Python literal reads back the text
    exactly; a comment is one line of ASCII without a closer, trigraph or continuation; TeX text
    holds no special character that is not escaped."""
    for literal in ('"%s"', '"""%s"""'):
        assert ast.literal_eval(literal % py_string(text)) == text
    for comment in (c_comment(text), hash_comment(text)):
        assert comment.isascii() and comment.isprintable()
        assert "\\" not in re.sub(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})", "", comment)
    assert "*/" not in c_comment(text) and "/*" not in c_comment(text) and "??" not in c_comment(text)
    c_lit = c_string(text)
    assert c_lit.isascii() and c_lit.isprintable() and not c_lit.replace("\\\\", "").replace('\\"', "").count('"')
    escaped = tex_text(text)
    for seq in (r"\textbackslash{}", r"\_", r"\&", r"\%", r"\#", r"\$", r"\{", r"\}", r"\^{}", r"\~{}",
                r"\ensuremath{^{\top}}"):
        escaped = escaped.replace(seq, "")
    # Greek letters and math signs become a fixed \ensuremath{\name}, never text from the input
    escaped = re.sub(r"\\ensuremath\{\\(?:[A-Za-z]+|(?:hat|tilde|bar|overleftarrow)\{[A-Za-z]\})\}", "", escaped)
    assert not set(escaped) & set("\\_&%#${}^~") and "\n" not in escaped and "\u2028" not in escaped
    assert "\\end{verbatim}" not in tex_verbatim(text + "\\end{verbatim}") and tex_verbatim(text).isprintable()


def test_filters_leave_ordinary_text_unchanged() -> None:
    text = "symnn float64 kernels for 'xor_mlp'. adam(lr=0.05, beta1=0.9); layer 1: Dense(2 -> 4), tanh"
    assert c_comment(text) == hash_comment(text) == py_string(text) == c_string(text) == text
    assert tex_text("loss: bce (mean-reduced)") == "loss: bce (mean-reduced)"


@needs_cc
@settings(max_examples=examples(3), **SETTINGS)
@given(drawn=st.lists(st.one_of(hostile_strings(), st.text(min_size=1)), min_size=40, max_size=40))
def test_c_string_reads_back_the_text_in_c(tmp_path_factory: pytest.TempPathFactory, drawn: list[str]) -> None:
    """``c_string`` escapes are C's: a program compares each literal with the text's UTF-8
    bytes (octal escapes, no trigraphs, quotes and backslashes)."""
    tmp_path = tmp_path_factory.mktemp("cstr")
    texts = drawn + ["??/", "a?\\?b", '"', "\\", "\x00x", "\u2028", "\U0001f600", "\\x41B"]
    cases = []
    for t in texts:
        raw = t.encode("utf-8")
        data = ", ".join(map(str, raw)) or "0"
        cases.append(f'    {{ "{c_string(t)}", {len(raw)}, (const unsigned char[]){{ {data} }} }},')
    src = tmp_path / "s.c"
    src.write_text("#include <stdio.h>\n#include <string.h>\n"
                   "struct c { const char *s; size_t n; const unsigned char *b; };\n"
                   "static const struct c cases[] = {\n" + "\n".join(cases) + "\n};\nint main(void) {\n"
                   "    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)\n"
                   "        if (memcmp(cases[i].s, cases[i].b, cases[i].n) != 0 || cases[i].s[cases[i].n] != 0) {\n"
                   '            printf("%zu\\n", i); return 1; }\n    return 0;\n}\n')
    exe = tmp_path / "s"
    subprocess.run([CC, "-std=c99", "-Wall", "-Werror", str(src), "-o", str(exe)], check=True,
                   capture_output=True)
    proc = subprocess.run([str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, texts[int(proc.stdout)]


# -- escaped free text through the real templates -----------------------------------------------------
def _hostile_render(real_render, title: str, lines: list[str], optimizer: str):
    """``render`` with every free text an emitter passes replaced by hostile text: the title, the
    layer lines, the optimiser's description."""
    def render(template: str, **context: object) -> str:
        if "title" in context:
            context["title"] = title
        if "network_lines" in context:
            context["network_lines"] = lines
        if context.get("optimizer"):
            context["optimizer"] = optimizer
        if context.get("train"):
            context["train"] = {**context["train"], "describe": optimizer}
        return real_render(template, **context)
    return render


class _BlankStrings(ast.NodeTransformer):
    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        return ast.Constant("") if isinstance(node.value, str) else node


def _python_shape(source: str) -> str:
    return ast.dump(_BlankStrings().visit(ast.parse(source)))


def _c_without_comments(path: Path) -> str:
    """The file's tokens with comments removed and macros unexpanded (gcc's own C lexer)."""
    return subprocess.run([CC, "-fpreprocessed", "-dD", "-E", "-P", "-std=c99", str(path)], check=True,
                          capture_output=True, text=True).stdout


_SHIP = sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 2, "softmax")], loss="cross_entropy", name="ship")


@needs_cc
@settings(max_examples=examples(5), **SETTINGS)
@given(texts=st.lists(hostile_strings(), min_size=3, max_size=6))
def test_hostile_free_text_leaves_the_emitted_code_unchanged(tmp_path_factory: pytest.TempPathFactory,
                                                             texts: list[str]) -> None:
    """With every free text the emitters print replaced by hostile text, the emitted Python has
    the same syntax tree apart from string constants, and the emitted C the same tokens apart
    from comments, and compiles with -Werror: nothing escaped its comment, docstring or
    string."""
    tmp = tmp_path_factory.mktemp("emit")
    texts = list(_payloads(tmp / "pwned").values()) + ["a\x00b\u2028c\rd\x85e", "\\", "??/", "x */"] + texts
    ordinary = emit_files(_SHIP, backend="c", example=True, optimizer="adam")
    ordinary_py = sn.emit_source(_SHIP, "numpy", optimizer="adam")
    with pytest.MonkeyPatch.context() as mp:
        for module in (importlib.import_module("symnn.backends.numpy.emit"), importlib.import_module("symnn.backends.c.emit")):
            mp.setattr(module, "render", _hostile_render(module.render, "".join(texts), texts, "".join(texts[::-1])))
        hostile = emit_files(_SHIP, backend="c", example=True, optimizer="adam")
        hostile_py = sn.emit_source(_SHIP, "numpy", optimizer="adam")
    assert hostile_py != ordinary_py and _python_shape(hostile_py) == _python_shape(ordinary_py)
    for kind, files in (("ordinary", ordinary), ("hostile", hostile)):
        (tmp / kind).mkdir()
        for name, text in files.items():
            (tmp / kind / name).write_text(text, encoding="utf-8")
    assert hostile != ordinary
    for name in ("ship.c", "ship.h", "main.c", "train_main.c"):
        assert _c_without_comments(tmp / "hostile" / name) == _c_without_comments(tmp / "ordinary" / name), name
    for name in ("ship.c", "main.c", "train_main.c"):
        proc = subprocess.run([CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", name],
                              cwd=tmp / "hostile", capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp / "pwned").exists()


@pytest.mark.parametrize("template", ["c/model.h.jinja", "c/main.c.jinja", "c/params.h.jinja"])
def test_render_refuses_a_prefix_that_is_not_a_network_name(template: str) -> None:
    """The template layer validates the identifiers it prints, whoever called it, before it
    looks at the rest of the context."""
    from symnn.render import render

    with pytest.raises(UntrustedInputError, match="network name"):
        render(template, prefix="t */ int x; /*")
