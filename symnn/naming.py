"""Every name that appears in emitted code and in LaTeX, in one place.

Emitted code and the printed derivation share one scheme: pre-activation ``z1``, activation
``a1``, gradients ``dL_dW1``; CSE temporaries ``t0, t1, ...``; batch size ``N``.
"""

from __future__ import annotations

import keyword
import re

import sympy as sp

from .errors import SpecTypeError, UntrustedInputError

#: Batch size: a run-time dimension of every kernel.
N = sp.Symbol("N", integer=True, positive=True)

#: Sequence length where a network's sequences have no length fixed at compile time
#: (``sn.Input(None, F)``): the other run-time dimension, one for all sequences of a network.
T = sp.Symbol("T", integer=True, positive=True)


def entries(shape) -> "int | sp.Expr":
    """The entries of one sample of ``shape``: an int, or a multiple of :data:`T` for a sequence
    of run-time length."""
    return concrete(sp.Mul(*(sp.sympify(d) for d in shape)))


def concrete(size) -> "int | sp.Expr":
    """``size`` as an int where it has no run-time dimension, else the SymPy expression."""
    size = sp.expand(sp.sympify(size, strict=True))
    return int(size) if size.is_Integer else size


def has_length(size) -> bool:
    """Whether ``size`` depends on the run-time sequence length :data:`T`."""
    return sp.sympify(size, strict=True).has(T)


def length_form(size) -> tuple[int, int]:
    """``(a, b)`` with ``size = a*T + b``: a row of sequences of run-time length (``a == 0``
    for a fixed size)."""
    size = sp.expand(sp.sympify(size, strict=True))
    a, b = size.coeff(T, 1), size.coeff(T, 0)
    if sp.expand(a * T + b - size) != 0 or not a.is_Integer or not b.is_Integer:
        raise ValueError(f"{size} is not linear in the sequence length T")
    return int(a), int(b)


def weight(layer: int) -> str:
    return f"W{layer}"


def bias(layer: int) -> str:
    return f"b{layer}"


def preact(layer: int) -> str:
    return f"z{layer}"


def act(layer: int) -> str:
    return f"a{layer}"


def grad(name: str) -> str:
    return f"dL_d{name}"


def param_ident(name: str) -> str:
    """The identifier a parameter has in emitted code: ``W1`` stays ``W1``; a layer graph's
    ``dense1.weight`` becomes ``dense1_weight`` (layer names are identifiers, so the result is)."""
    return name.replace(".", "_")


def layer_of(name: str) -> int | None:
    """The layer number in a parameter or mask name (``W2`` -> 2), None when it has none."""
    digits = name[len(name.rstrip("0123456789")):]
    return int(digits) if digits else None


def stem_of(name: str) -> str:
    """The name without its layer number (``W2`` -> ``W``)."""
    return name.rstrip("0123456789")


def width_symbol(layer: int) -> sp.Symbol:
    """Symbolic width n_l of layer l's output (n_0 is the input width)."""
    return sp.Symbol(f"n_{layer}", integer=True, positive=True)


def temporaries(prefix: str = "t"):
    """The one numbered-symbol generator used for CSE, so output is byte-stable."""
    return sp.numbered_symbols(prefix)


# -- names that come from users and files ------------------------------------------------------
#
# Every string a user or a file gives symnn as a *name* (a network, an activation, a loss, an
# expression's variable) passes :func:`identifier` where it enters: the constructors, the
# registry, the spec reader and, through the constructors, the model loader and the importers.
# A name is then safe wherever it is printed: as part of a C or Python identifier, in a file
# name, in a comment or docstring, inside LaTeX's ``\operatorname{}``. The template layer
# escapes these strings again for each target language (:mod:`symnn.render`), so a name that
# reached a template some other way still cannot break out of a comment or a string.

#: Longest accepted name: long enough for any real name, short enough for every file system
#: (``NAME_params.h``) and for C's 63 significant characters of an internal identifier.
MAX_NAME_LENGTH = 64

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: C11 keywords (C99's plus ``_Alignas``...): the emitted files are C99 and also build as C11.
C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if "
    "inline int long register restrict return short signed sizeof static struct switch typedef "
    "union unsigned void volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic "
    "_Imaginary _Noreturn _Static_assert _Thread_local".split()
)
#: No name may be one of these: C and Python keywords. (C++'s are not refused: a network name
#: only ever appears inside longer identifiers, ``NAME_forward``, and ``xor`` is a fine name.)
RESERVED_WORDS = C_KEYWORDS | frozenset(keyword.kwlist)

#: File stems a network name must not take (compared ignoring case, for case-insensitive file
#: systems), each with the reason: ``NAME.c``/``NAME.h`` are written beside ``main.c``,
#: ``train_main.c`` and ``test_main.c`` (a network ``main`` overwrote its own example program,
#: issue 18 item 8); the build compiles with the emitted folder on the include path, so
#: ``NAME.h`` must not shadow a header that the emitted code, cffi's wrapper or ``Python.h``
#: includes (a network ``math`` built a module with no ``isfinite``); ``NAME.py`` must not shadow
#: a module the emitted Python imports; ``symnn`` is the project's own namespace (``SYMNN_*``
#: macros, ``_symnn_*`` cache modules, the package).
RESERVED_FILE_STEMS: dict[str, str] = {
    **dict.fromkeys(["main", "train_main", "test_main"],
                    "NAME.c would overwrite the emitted example or test program"),
    **dict.fromkeys(
        # C standard headers (C89 to C17), then those cffi's wrapper and Python.h pull in (gcc -H)
        # and the BLAS/OpenMP builds include
        "assert complex ctype errno fenv float inttypes iso646 limits locale math setjmp signal "
        "stdalign stdarg stdatomic stdbool stddef stdint stdio stdlib stdnoreturn string tgmath "
        "threads time uchar wchar wctype "
        "alloca endian features malloc pthread sched strings syslimits unistd omp cblas python "
        "pyconfig".split(),
        "NAME.h would shadow the C header of that name in the build",
    ),
    "numpy": "NAME.py would shadow the Python module the emitted code imports",
    "symnn": "symnn's own namespace (SYMNN_* macros, the package)",
}


def shown(value: object, limit: int = 60) -> str:
    """``value`` for an error message: ASCII only (no control character, line separator or
    terminal escape reaches the user's terminal), at most ``limit`` characters of it."""
    text = ascii(value)
    return text if len(text) <= limit + 2 else f"{text[:limit]}... ({len(str(value))} characters)"


def identifier(value: object, what: str) -> str:
    """``value`` if it is a plain name, else :class:`~symnn.errors.UntrustedInputError`.

    A plain name is an ASCII identifier ``[A-Za-z_][A-Za-z0-9_]*`` of at most
    :data:`MAX_NAME_LENGTH` characters that is no C or Python keyword and none of the
    identifiers C and C++ reserve (a leading underscore and a capital, or a double underscore).
    ``what`` says whose name it is (``"activation name"``).
    """
    if not isinstance(value, str):
        raise SpecTypeError(f"{what} must be a string, got {type(value).__name__} {shown(value)}")
    if len(value) > MAX_NAME_LENGTH:
        raise UntrustedInputError(
            f"{what} {shown(value)} is longer than {MAX_NAME_LENGTH} characters")
    if not _IDENTIFIER.fullmatch(value):
        raise UntrustedInputError(
            f"{what} {shown(value)} is not a plain name: use ASCII letters, digits and '_', "
            "not starting with a digit"
        )
    if value in RESERVED_WORDS:
        raise UntrustedInputError(f"{what} {shown(value)} is a C or Python keyword")
    if "__" in value or re.match(r"_[A-Z]", value):
        raise UntrustedInputError(
            f"{what} {shown(value)} is reserved in C and C++ (a double underscore, or '_' then a "
            "capital letter)"
        )
    return value


#: a PyTorch module's qualified name: attribute names and nn.Sequential indices, dot-separated
_MODULE_PATH = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]{1,18})(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]{1,18}))*")
MAX_MODULE_PATH_LENGTH = 256


def module_path(value: object, what: str) -> str:
    """``value`` if it is a PyTorch module's qualified name (``blocks.0.conv``: attribute names
    and nn.Sequential indices joined by dots, at most :data:`MAX_MODULE_PATH_LENGTH` characters),
    else :class:`~symnn.errors.UntrustedInputError`. It keys a ``state_dict()`` entry only; it
    never reaches emitted code."""
    if not isinstance(value, str):
        raise SpecTypeError(f"{what} must be a string, got {type(value).__name__} {shown(value)}")
    if len(value) > MAX_MODULE_PATH_LENGTH or not _MODULE_PATH.fullmatch(value):
        raise UntrustedInputError(f"{what} {shown(value)} is not a module's qualified name (attribute names "
                                  f"and indices joined by dots, at most {MAX_MODULE_PATH_LENGTH} characters)")
    return value


def layer_name(value: object) -> str:
    """A layer's name in a graph: a plain name (:func:`identifier`, so no ``__``: the emitted
    code names a layer's second call and its values ``<name>__2``, ``<name>__out``) that does
    not start with ``dL_d``, the prefix of gradients in emitted code."""
    identifier(value, "layer name")
    if value.startswith("dL_d"):  # type: ignore[union-attr]
        raise UntrustedInputError(f"layer name {shown(value)} starts with 'dL_d', which names gradients "
                                  "in the emitted code; choose another name")
    return value  # type: ignore[return-value]


def network_name(value: object) -> str:
    """A network name: an :func:`identifier` that also prefixes every emitted C symbol and
    names the emitted files, so it starts with a letter, does not end with ``_`` (``NAME_`` +
    ``_forward`` would be a double underscore, and ``a_``'s public ``a__forward`` would be
    network ``a``'s private one) and takes none of :data:`RESERVED_FILE_STEMS`."""
    name = identifier(value, "network name")
    if not name[0].isalpha():
        raise UntrustedInputError(
            f"network name {shown(name)} must start with a letter: it prefixes C symbols")
    if name.endswith("_"):
        raise UntrustedInputError(
            f"network name {shown(name)} must not end with '_': it prefixes C symbols as "
            "NAME_forward"
        )
    stem = "symnn" if name.lower().startswith("symnn_") else name.lower()
    if stem in RESERVED_FILE_STEMS:
        why = RESERVED_FILE_STEMS[stem].replace("NAME", name)
        raise UntrustedInputError(
            f"network name {shown(name)} is reserved: {why}; choose another name")
    return name


def check_declared_names(net: object) -> None:
    """Check every name and LaTeX snippet of a network again, where it is about to be printed
    (emission, the derivation, the report). The constructors checked them already; this keeps
    a network assembled around them (``object.__new__``, an old loader) from printing a bad
    one. ``net`` is duck-typed (``name``, ``layers[].activation``, ``loss``): declare imports this
    module."""
    network_name(net.name)  # type: ignore[attr-defined]
    graph = getattr(net, "graph", None)
    if graph is not None:
        for name in graph.names:
            layer_name(name)
        for name, _ in graph.inputs:
            identifier(name, "input name")
    for i, layer in enumerate(net.layers, 1):  # type: ignore[attr-defined]
        act = getattr(layer, "activation", None)
        if act is None:  # a layer without an activation (LayerNorm, add)
            continue
        identifier(act.name, f"layer {i}: activation name")
        latex_snippet(act.latex_name, f"layer {i}: activation {act.name!r}: latex")
    for loss in getattr(net, "losses", ()) or (net.loss,):  # type: ignore[attr-defined]
        identifier(loss.name, "loss name")
        latex_snippet(loss.latex_name, f"loss {loss.name!r}: latex")


# -- user LaTeX ----------------------------------------------------------------------------------
#
# A LaTeX snippet (``sn.Activation(..., latex=...)``, the spec's ``latex`` key) is typeset in the
# derivation and the PDF report. TeX is a programming language that can read and write files
# (``\input``, ``\openin``, ``\write18``), change how characters are read (``\catcode``, ``^^``
# escapes) and define macros, so a snippet is limited to math: a whitelist of characters and of
# commands, balanced braces, and a bounded length.

#: Longest accepted LaTeX snippet.
MAX_LATEX_LENGTH = 200

_GREEK = (
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi "
    "pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega "
    "Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega"
)
#: Math commands a snippet may use: letters, fonts, fractions, delimiters, operators, accents.
LATEX_COMMANDS = frozenset(
    _GREEK.split()
    + "frac dfrac tfrac sqrt operatorname mathrm mathbf mathit mathsf mathtt mathcal mathbb "
      "boldsymbol text left right big Big bigg Bigg cdot times circ ast star pm mp div "
      "log ln exp tanh sinh cosh sin cos tan arctan sec csc cot max min sup inf lim sum prod "
      "prime ell partial nabla infty leq geq le ge neq approx sim propto cdots ldots dots "
      "hat bar tilde vec dot ddot overline underline widehat widetilde "
      "lvert rvert lVert rVert langle rangle lfloor rfloor lceil rceil vert Vert mid "
      "quad qquad".split()
)
#: ``\`` followed by one of these is a math symbol or a space, not a command.
_LATEX_SYMBOLS = frozenset(",;:! {}|_")
#: Characters a snippet may hold besides letters, digits and the backslash. Not ``%`` (a
#: comment hides the rest of the line), ``$`` ``&`` ``#`` ``~`` ``"`` `` ` `` ``@``, control
#: characters or anything outside ASCII.
_LATEX_CHARS = frozenset(" {}_^()[]+-*/=<>|',.:;!?")


def latex_snippet(value: object, what: str) -> str | None:
    """``value`` (None passes) if it is LaTeX math made only of :data:`LATEX_COMMANDS` and safe
    characters, else :class:`~symnn.errors.UntrustedInputError` naming the first offending
    command or character; the report must never typeset a local file or run a shell command."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecTypeError(f"{what} must be a string, got {type(value).__name__} {shown(value)}")
    if not value.strip():
        raise UntrustedInputError(f"{what} is empty")
    if len(value) > MAX_LATEX_LENGTH:
        raise UntrustedInputError(
            f"{what} {shown(value)} is longer than {MAX_LATEX_LENGTH} characters")
    if "^^" in value:
        raise UntrustedInputError(f"{what} {shown(value)}: '^^' character escapes are not allowed")
    depth = 0
    for token in _LATEX_TOKEN.findall(value):
        problem = _latex_token_problem(token)
        if problem:
            raise UntrustedInputError(f"{what} {shown(value)}: {problem}")
        depth += (token == "{") - (token == "}")
        if depth < 0:
            raise UntrustedInputError(f"{what} {shown(value)}: unbalanced '}}'")
    if depth:
        raise UntrustedInputError(f"{what} {shown(value)}: unbalanced '{{'")
    return value


#: a command (``\frac``), a control symbol (``\,``, ``\{``), or one character
_LATEX_TOKEN = re.compile(r"\\[A-Za-z]+|\\.?|.", re.DOTALL)


def _latex_token_problem(token: str) -> str | None:
    """Why ``token`` may not appear in a snippet, or None."""
    if token[0] == "\\" and token[1:].isalpha() and token[1:].isascii():
        if token[1:] in LATEX_COMMANDS:
            return None
        return (f"command {token} is not allowed (only math commands such as \\frac, "
                "\\operatorname, \\mathrm and Greek letters)")
    if token[0] == "\\":
        return None if token[1:] and token[1] in _LATEX_SYMBOLS else f"{shown(token)} is not allowed"
    if (token.isascii() and token.isalnum()) or token in _LATEX_CHARS:
        return None
    return f"character {shown(token)} is not allowed"
