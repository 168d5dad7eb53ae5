"""The only module that touches jinja2: one strict environment and the banner.

Templates live in the repository's top-level ``templates/``; an installed wheel carries them
as the data package ``symnn._templates``. Templates receive plain strings, ints and lists,
never SymPy objects.

Strings from users and files reach templates in two roles. As an identifier (the network
name as the C prefix ``prefix``) they are validated, here again at render time, by
:func:`symnn.naming.network_name`; escaping an identifier would make no sense. As text inside a
comment, docstring, string literal or LaTeX (the title, the layer lines, an optimiser's
description, a data path) the template escapes them with the one filter for that context:
``c_comment``, ``c_string``, ``hash_comment`` (Python and make), ``py_string`` (string literals
and docstrings), ``tex_text`` and ``tex_verbatim``. Each leaves ordinary text unchanged (so
emitted files stay byte-identical) and turns whatever could end the context early (``*/``,
three double quotes, a newline, a NUL, a unicode line separator, a TeX special) into visible,
inert text.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from . import naming

#: Bumped whenever emitted output changes format; part of every banner and cache key.
CODEGEN_VERSION = "1"


def template_dir() -> Path:
    """``templates/`` in a checkout (or editable install), else the installed data package."""
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if (checkout / "_shared" / "banner.jinja").is_file():
        return checkout
    installed = Path(__file__).resolve().parent / "_templates"
    if (installed / "_shared" / "banner.jinja").is_file():
        return installed
    raise FileNotFoundError(f"symnn templates not found in {checkout} or {installed}")


# -- one escaping filter per target context -----------------------------------------------------
def _visible(c: str) -> str:
    """One character as inert ASCII text, spelled as Python and C would (``\\x0a``, ``\\u2028``)."""
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def _plain_ascii(value: object) -> str:
    """Printable ASCII kept; everything else (control characters, NUL, non-ASCII, unicode line
    separators, and the backslash that would start an escape or continue a line) made
    :func:`_visible`."""
    return "".join(c if " " <= c <= "~" and c != "\\" else _visible(c) for c in str(value))


#: pairs that would end or nest a C comment, or form a trigraph (``??/`` is a backslash in C99)
_C_COMMENT_PAIRS = re.compile(r"\*/|/\*|\?\?")


def c_comment(value: object) -> str:
    """Text for inside a C ``/* */`` or ``//`` comment: one line of ASCII with no ``*/``,
    ``/*``, trigraph or trailing backslash."""
    return _C_COMMENT_PAIRS.sub(lambda m: m.group()[0] + _visible(m.group()[1]),
                                _plain_ascii(value))


def c_string(value: object) -> str:
    """Text for inside a C string literal ``"..."``: quotes and backslashes escaped, ``?``
    escaped (no trigraph), every other byte outside printable ASCII as a three-digit octal
    escape (a hex escape would swallow the hex digits after it)."""
    out = []
    for b in str(value).encode("utf-8", "surrogatepass"):
        c = chr(b)
        if c in '"\\?':
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


def hash_comment(value: object) -> str:
    """Text for after ``#`` in Python or a Makefile: one line of ASCII (no newline to end the
    comment, no backslash to continue it into the next line)."""
    return _plain_ascii(value)


def py_string(value: object) -> str:
    """Text for inside a Python string literal, ``"..."`` or a ``\"\"\"`` docstring (not raw):
    quotes and backslashes escaped, everything outside printable ASCII as an escape, so the
    literal ends exactly where the template ends it and holds the text unchanged."""
    return "".join("\\" + c if c in '"\\' else c if " " <= c <= "~" else _visible(c)
                   for c in str(value))


_TEX_SPECIALS = {"\\": r"\textbackslash{}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#",
                 "$": r"\$", "{": r"\{", "}": r"\}", "^": r"\^{}", "~": r"\~{}"}


#: the math characters the derivation's plain-text notes use (``δ2ᵀ @ A1``, ``∂_p ℓ``), as
#: LaTeX math: pdflatex's text fonts have no glyph for them
_TEX_MATH_CHARS = {"∘": r"\ensuremath{\circ}", "∂": r"\ensuremath{\partial}", "ᵀ": r"\ensuremath{^{\top}}",
                   "ℓ": r"\ensuremath{\ell}", "·": r"\ensuremath{\cdot}", "→": r"\ensuremath{\to}",
                   "≤": r"\ensuremath{\le}", "≥": r"\ensuremath{\ge}", "×": r"\ensuremath{\times}",
                   "−": "-", "Σ": r"\ensuremath{\Sigma}"}


#: combining accents the derivation's plain names use (X̂, X̃, a reverse direction's C⃖), as LaTeX
#: math accents on the letter before them; another combining mark after a non-letter is dropped
_TEX_ACCENTS = {"\u0302": "hat", "\u0303": "tilde", "\u0304": "bar", "\u20d6": "overleftarrow"}


def _greek(c: str) -> str | None:
    """``δ`` -> ``\\ensuremath{\\delta}`` for a Greek letter, else None."""
    name = unicodedata.name(c, "")
    for case in ("GREEK SMALL LETTER ", "GREEK CAPITAL LETTER "):
        if name.startswith(case):
            word = name[len(case):].lower()
            if case.startswith("GREEK CAPITAL"):
                word = word.capitalize()
            return r"\ensuremath{\%s}" % word if word.isalpha() else None
    return None


def tex_text(value: object) -> str:
    """Text for LaTeX text mode (also inside ``\\text{}``): the ten special characters escaped
    (so no command, group, math shift, comment or ``^^`` escape can start), and control, format
    and line/paragraph-separator characters shown as inert ``\\uXXXX`` text. Greek letters and
    the math signs of the derivation's notes become LaTeX math; other printable non-ASCII
    (``é``) stays."""
    out = []
    text = str(value)
    for i, c in enumerate(text):
        if c in _TEX_ACCENTS:  # written with the letter before it
            continue
        if i + 1 < len(text) and text[i + 1] in _TEX_ACCENTS and c.isascii() and c.isalpha():
            out.append(r"\ensuremath{\%s{%s}}" % (_TEX_ACCENTS[text[i + 1]], c))
        elif c in _TEX_SPECIALS:
            out.append(_TEX_SPECIALS[c])
        elif c in _TEX_MATH_CHARS:
            out.append(_TEX_MATH_CHARS[c])
        elif c > "~" and _greek(c) is not None:
            out.append(_greek(c))
        elif unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp"):
            out.append(r"\textbackslash{}" + _visible(c)[1:])
        else:
            out.append(c)
    return "".join(out)


def tex_verbatim(value: object) -> str:
    """One line for inside ``\\begin{verbatim}``: nothing can end the environment early
    (``\\end{verbatim}`` gets a space) and no control character reaches TeX."""
    line = "".join(c if " " <= c <= "~" else _visible(c) for c in str(value))
    return line.replace(r"\end{verbatim}", r"\end {verbatim}")


FILTERS = {"c_comment": c_comment, "c_string": c_string, "hash_comment": hash_comment,
           "py_string": py_string, "tex_text": tex_text, "tex_verbatim": tex_verbatim}

#: context keys that templates print as identifiers (C symbols, file names): validated, not
#: escaped
IDENTIFIER_KEYS = ("prefix",)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(FILTERS)
    return env


def macros(template: str, parent: str, **context: object) -> Any:
    """The macros of ``template`` as ``parent`` sees them after ``{% import template as m with
    context %}`` when rendered with ``context``: each callable with its argument, returning the
    text the parent would place. Lets a caller print one statement's block on its own and find
    it in the rendered file (:mod:`symnn.provenance`) instead of parsing the file back."""
    _check_identifiers(context)
    return environment().get_template(template).make_module(
        {"template_name": parent, "codegen_version": CODEGEN_VERSION, **context}
    )


def trim_indent(text: str, width: int) -> str:
    """Jinja's ``text | trim | indent(width)``: how a template places a macro's block (first
    line where the template puts it, the others indented, empty lines left empty)."""
    filters = environment().filters
    return filters["indent"](filters["trim"](text), width)


def render(template: str, **context: object) -> str:
    """Render ``template`` (a path under ``templates/``) with ``context``. The identifiers in it
    (:data:`IDENTIFIER_KEYS`) are validated first, so a name that skipped the constructors'
    check still never reaches a C symbol or a file name."""
    _check_identifiers(context)
    return environment().get_template(template).render(
        template_name=template, codegen_version=CODEGEN_VERSION, **context
    )


def _check_identifiers(context: dict[str, object]) -> None:
    """Validate the identifiers of a template context (:data:`IDENTIFIER_KEYS`)."""
    for key in IDENTIFIER_KEYS:
        if key in context:
            naming.network_name(context[key])
