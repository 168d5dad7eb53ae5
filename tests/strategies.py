"""Hypothesis strategies: random network architectures and random user-expression trees
(SymForce ``random_expressions`` style: uniform tree shapes over a fixed operator set)."""

from __future__ import annotations

import os
import re
import warnings

import sympy as sp
from hypothesis import strategies as st

import symnn as sn
from symnn import registry

X = sp.Symbol("x", real=True)
#: examples per property test = base count * SYMNN_HYPOTHESIS_SCALE (long runs: 25 gives the
#: nightly 5,000 NumPy / 500 C / 1,000 expressions of RELIABILITY.md)
SCALE = float(os.environ.get("SYMNN_HYPOTHESIS_SCALE", "1"))


def examples(base: int) -> int:
    return max(1, int(base * SCALE))


LEAVES = st.sampled_from([X, X, X, sp.Integer(-2), sp.Integer(-1), sp.Integer(1), sp.Integer(2),
                          sp.Rational(1, 2)])
_UNARY = [sp.exp, sp.log, sp.tanh, sp.sin, sp.Abs, lambda a: -a]
_BINARY = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
           lambda a, b: a ** b, lambda a, b: sp.Max(a, b)]


#: SymPy evaluation is exact; these arise while building a random tree and are not symnn's errors
#: (``Max`` of a complex value such as log(-2) = log(2) + i*pi is a ValueError: not comparable)
BUILD_ERRORS = (ZeroDivisionError, OverflowError, RecursionError, ValueError, TypeError)


def _built(make, *args) -> sp.Expr | None:
    """``make(*args)``, or None where SymPy refuses to build it (:data:`BUILD_ERRORS`)."""
    try:
        return make(*args)
    except BUILD_ERRORS:
        return None


def _extend(children: st.SearchStrategy) -> st.SearchStrategy:
    unary = st.tuples(st.sampled_from(range(len(_UNARY))), children).map(lambda t: _built(_UNARY[t[0]], t[1]))
    binary = st.tuples(st.sampled_from(range(len(_BINARY))), children, children).map(
        lambda t: _built(_BINARY[t[0]], t[1], t[2]))
    return st.one_of(unary, binary).filter(lambda e: e is not None)


#: random scalar expressions in x: +, -, *, /, pow, exp, log, tanh, sin, abs, max; leaves x, -2..2
EXPRESSIONS = st.recursive(LEAVES, _extend, max_leaves=5)


def try_activation(expr: sp.Expr, name: str = "rand") -> sn.Activation | None:
    """The user activation for ``expr``, or None when symnn rejects it with its own error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        try:
            return sn.Activation(name, expr, var=X)
        except sn.SpecError:
            return None


_HIDDEN = [n for n in registry.activation_names() if n != "softmax"]
_USER_LOSSES = {
    "huber": lambda p, y: sp.Piecewise(((p - y) ** 2 / 2, sp.Abs(p - y) <= 1), (sp.Abs(p - y) - sp.Rational(1, 2), True)),
    "logcosh": lambda p, y: sp.log(sp.cosh(p - y)),
    "quartic": lambda p, y: (p - y) ** 4 / 4,
}


@st.composite
def hidden_activations(draw, allow_user: bool = True):
    if allow_user and draw(st.integers(0, 4)) == 0:
        act = try_activation(draw(EXPRESSIONS), f"user{draw(st.integers(0, 99))}")
        if act is not None:
            return act
    return draw(st.sampled_from(_HIDDEN))


@st.composite
def networks(draw, allow_user: bool = True, name: str = "mlp") -> sn.Network:
    """Depth 1-5, widths 1-16, built-in and user activations, every loss, L1/L2 sometimes."""
    depth = draw(st.integers(1, 5))
    widths = [draw(st.integers(1, 16)) for _ in range(depth)]
    loss_kind = draw(st.sampled_from(["mse", "bce", "cross_entropy", "user"] if allow_user
                                     else ["mse", "bce", "cross_entropy"]))
    if loss_kind == "cross_entropy":
        n_out, out_act, loss = draw(st.integers(2, 16)), "softmax", "cross_entropy"
    elif loss_kind == "bce":
        n_out, out_act, loss = draw(st.integers(1, 4)), "sigmoid", "bce"
    else:
        n_out = draw(st.integers(1, 16))
        out_act = draw(st.sampled_from(["identity", "tanh", "sigmoid", "softplus"]))
        loss = "mse"
        if loss_kind == "user":
            p, y = sp.symbols("p y")
            kind = draw(st.sampled_from(sorted(_USER_LOSSES)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", sn.NonSmoothWarning)
                loss = sn.Loss(kind, _USER_LOSSES[kind](p, y), pred=p, target=y)
    sizes = [widths[0]] + widths[1:] + [n_out]
    layers = [sn.Dense(sizes[i], sizes[i + 1], draw(hidden_activations(allow_user)))
              for i in range(depth - 1)]
    layers.append(sn.Dense(sizes[-2], n_out, out_act))
    l1 = draw(st.sampled_from([0.0, 0.0, 0.0, 0.01]))
    l2 = draw(st.sampled_from([0.0, 0.0, 0.0, 0.05]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        return sn.Network(layers, loss=loss, l1=l1, l2=l2, name=name)


_FIXED_USER = [X * sp.tanh(sp.log(1 + sp.exp(X))), sp.Abs(X - 1) / 2, sp.Max(X, X / 4) + sp.sin(X) / 10,
               X / (1 + X**2) + X]


def random_network(seed: int, name: str) -> sn.Network:
    """A seeded random architecture (for the C harness, which runs outside hypothesis): depth
    1-5, widths 1-16, built-in and user activations, every loss."""
    import numpy as np

    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 6))
    sizes = [int(w) for w in rng.integers(1, 17, size=depth)]
    kind = ["mse", "bce", "cross_entropy", "user"][seed % 4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        hidden = []
        for _ in range(depth - 1):
            pick = int(rng.integers(0, len(_HIDDEN) + len(_FIXED_USER)))
            hidden.append(_HIDDEN[pick] if pick < len(_HIDDEN) else
                          sn.Activation(f"user{pick}", _FIXED_USER[pick - len(_HIDDEN)], var=X))
        if kind == "cross_entropy":
            n_out, out_act, loss = int(rng.integers(2, 17)), "softmax", "cross_entropy"
        elif kind == "bce":
            n_out, out_act, loss = int(rng.integers(1, 5)), "sigmoid", "bce"
        else:
            n_out, out_act = int(rng.integers(1, 17)), ["identity", "tanh", "softplus"][seed % 3]
            p, y = sp.symbols("p y")
            loss = sn.Loss("huber", _USER_LOSSES["huber"](p, y), pred=p, target=y) if kind == "user" else "mse"
        dims = sizes + [n_out]
        layers = [sn.Dense(dims[i], dims[i + 1], hidden[i]) for i in range(depth - 1)]
        layers.append(sn.Dense(dims[-2], n_out, out_act))
        return sn.Network(layers, loss=loss, l2=0.01 * (seed % 2), name=name)


# -- hostile strings (issue 18): every name field must refuse them --------------------------------
#: pieces that end or escape the places a name is printed in: Python and C string literals and
#: comments, docstrings, make, TeX, paths; then invisible and look-alike unicode
HOSTILE_FRAGMENTS = (
    '"', "'", '"""', "*/", "/*", "//", "\n", "\r", "\r\n", "\x00", "\u2028", "\u2029", "\x85",
    "\x0b", "\x0c", "\t", "\x1b[2J", "\\", "??/", "#", "%", "$", "&", "{", "}", "^^5c", "~", "`",
    " ", "-", ".", "/", "../", "@", "\\input{/etc/passwd}", "\\write18{touch pwned}",
    "\\catcode`\\^=12", "\\csname input\\endcsname", "\\def\\x{}", "é", "\u0131", "\u202e",
    "\ufeff", "\U0001f600", "\uff21",  # fullwidth A: an identifier to Python (NFKC), not to C
)
#: names that are identifiers to Python's str.isidentifier() yet must still be refused
RESERVED_NAMES = ("int", "const", "static", "lambda", "class", "None", "_Bool", "__init__", "_X",
                  "a__b", "a" * 65)


def hostile_strings() -> st.SearchStrategy[str]:
    """Strings no name field may accept: a plain prefix, a hostile fragment, then arbitrary
    text; arbitrary text with a character outside ``[A-Za-z0-9_]``; very long names; keywords
    and reserved identifiers."""
    plain = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)
    spliced = st.tuples(plain, st.sampled_from(HOSTILE_FRAGMENTS), st.text(max_size=6)).map("".join)
    anything = st.text(min_size=1, max_size=40).filter(lambda s: not re.fullmatch(r"[A-Za-z0-9_]*", s))
    long_names = st.integers(65, 5000).map(lambda n: ("ab_" * n)[:n])
    return st.one_of(spliced, anything, long_names, st.sampled_from(RESERVED_NAMES))
