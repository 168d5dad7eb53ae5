"""Optimisers as SymPy update formulas, with the semantics of ``torch.optim``.

An optimiser is an ordered list of assignments over one parameter element: symbols ``p``
(the parameter), ``g`` (its gradient), ``t`` (the step number, 1 for the first step), one
symbol per state buffer (``m``, ``v``...), and the hyperparameters as numbers. Each assignment
may use the values assigned before it; the last one assigns ``p``. The backends print these
formulas into a ``train_step`` kernel that updates the flat parameter vector and the state in
place, so adding an optimiser is adding one entry to :data:`RULES` and no other code.

Example:
    >>> import symnn as sn
    >>> opt = sn.Adam(lr=1e-3)
    >>> [name for name, _ in opt.assignments]
    ['m', 'v', 'p']
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import sympy as sp

from .errors import ConfigError, SpecTypeError

p, g, t = sp.symbols("p g t", real=True)
m, v, b = sp.symbols("m v b", real=True)  # first moment / second moment / momentum buffer

Assignments = list[tuple[str, sp.Expr]]


def _sgd(h: dict[str, float]) -> Assignments:
    return [("p", p - h["lr"] * (g + h["weight_decay"] * p))]


def _momentum(h: dict[str, float]) -> Assignments:
    # torch: buf = mu*buf + g (buf starts at 0, so the first step gives buf = g exactly)
    gd = g + h["weight_decay"] * p
    return [("b", h["momentum"] * b + gd), ("p", p - h["lr"] * b)]


def _nesterov(h: dict[str, float]) -> Assignments:
    gd = g + h["weight_decay"] * p
    return [("b", h["momentum"] * b + gd), ("p", p - h["lr"] * (gd + h["momentum"] * b))]


def _adagrad(h: dict[str, float]) -> Assignments:
    return [("v", v + g**2), ("p", p - h["lr"] * g / (sp.sqrt(v) + h["eps"]))]


def _rmsprop(h: dict[str, float]) -> Assignments:
    a = h["alpha"]
    return [("v", a * v + (1 - a) * g**2), ("p", p - h["lr"] * g / (sp.sqrt(v) + h["eps"]))]


def _adam_core(h: dict[str, float], pp: sp.Expr) -> Assignments:
    b1, b2 = h["beta1"], h["beta2"]
    bc1, bc2 = 1 - sp.Float(b1) ** t, 1 - sp.Float(b2) ** t
    # torch: p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)
    return [("m", b1 * m + (1 - b1) * g), ("v", b2 * v + (1 - b2) * g**2),
            ("p", pp - h["lr"] / bc1 * m / (sp.sqrt(v) / sp.sqrt(bc2) + h["eps"]))]


def _adam(h: dict[str, float]) -> Assignments:
    return _adam_core(h, p)


def _adamw(h: dict[str, float]) -> Assignments:
    # decoupled weight decay first: p *= 1 - lr*wd
    return _adam_core(h, p * (1 - h["lr"] * h["weight_decay"]))


@dataclass(frozen=True)
class _Rule:
    build: Callable[[dict[str, float]], Assignments]
    state: tuple[str, ...]
    defaults: dict[str, float]


#: name -> (update formulas, state buffers, default hyperparameters: torch.optim's)
RULES: dict[str, _Rule] = {
    "sgd": _Rule(_sgd, (), {"lr": 0.01, "weight_decay": 0.0}),
    "momentum": _Rule(_momentum, ("b",), {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0}),
    "nesterov": _Rule(_nesterov, ("b",), {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0}),
    "adagrad": _Rule(_adagrad, ("v",), {"lr": 0.01, "eps": 1e-10}),
    "rmsprop": _Rule(_rmsprop, ("v",), {"lr": 0.01, "alpha": 0.99, "eps": 1e-8}),
    "adam": _Rule(_adam, ("m", "v"), {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
    "adamw": _Rule(_adamw, ("m", "v"), {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                         "weight_decay": 0.01}),
}

# (lower, upper, closed lower?, closed upper?) per hyperparameter (RELIABILITY.md S16)
_RANGES = {
    "lr": (0.0, math.inf, False, False),
    "momentum": (0.0, 1.0, True, False),
    "weight_decay": (0.0, math.inf, True, False),
    "eps": (0.0, math.inf, False, False),
    "alpha": (0.0, 1.0, True, False),
    "beta1": (0.0, 1.0, True, False),
    "beta2": (0.0, 1.0, True, False),
}


@dataclass(frozen=True)
class Optimizer:
    """A named update rule with validated hyperparameters.

    Attributes:
        name: registry name (``"adam"``...).
        hyper: hyperparameters, defaults filled in.
        state: names of the per-parameter state buffers, in layout order.
        assignments: ``[(target, SymPy expression)]`` in evaluation order; ``"p"`` is last.
        clip_value: clamp every gradient entry to [-c, c] first (``clip_grad_value_``).
        clip_norm: then scale the whole gradient by ``min(1, c / (norm + 1e-6))``, PyTorch's
            ``clip_grad_norm_`` (no 0/0 at a zero gradient).
    """

    name: str
    hyper: dict[str, float]
    state: tuple[str, ...]
    assignments: tuple[tuple[str, sp.Expr], ...]
    clip_value: float | None = None
    clip_norm: float | None = None

    @property
    def symbols(self) -> dict[str, sp.Symbol]:
        """Symbol of each state buffer and of ``p``, ``g``, ``t``."""
        return {"p": p, "g": g, "t": t, **{s: sp.Symbol(s, real=True) for s in self.state}}

    def describe(self) -> str:
        extra = {k: v for k, v in (("clip_value", self.clip_value), ("clip_norm", self.clip_norm)) if v}
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in {**self.hyper, **extra}.items())})"


def optimizer(name: str, *, clip_value: float | None = None, clip_norm: float | None = None,
              **hyper: float) -> Optimizer:
    """Build a registered optimiser, e.g. ``optimizer("adam", lr=1e-3, clip_norm=1.0)``.

    Raises:
        ConfigError: unknown name or hyperparameter, or a value out of range (lr <= 0,
            betas outside [0, 1), eps <= 0, ...).
    """
    if not isinstance(name, str) or name not in RULES:
        raise ConfigError(f"unknown optimizer {name!r}; available: {', '.join(sorted(RULES))}")
    rule = RULES[name]
    unknown = sorted(set(hyper) - set(rule.defaults))
    if unknown:
        raise ConfigError(f"optimizer {name!r} has no hyperparameter(s) {unknown}; "
                          f"it takes {sorted(rule.defaults)}")
    values = {**rule.defaults}
    for key, val in hyper.items():
        fval = _real(name, key, val)
        lo, hi, closed_lo, closed_hi = _RANGES[key]
        ok = math.isfinite(fval) and (fval >= lo if closed_lo else fval > lo) and (
            fval <= hi if closed_hi else fval < hi)
        if not ok:
            rng = f"{'[' if closed_lo else '('}{lo}, {hi}{']' if closed_hi else ')'}"
            raise ConfigError(f"optimizer {name!r}: {key} must be finite and in {rng}, got {val!r}")
        values[key] = fval
    clips = {}
    for key, val in (("clip_value", clip_value), ("clip_norm", clip_norm)):
        if val is None:
            continue
        fval = _real(name, key, val)
        if not (math.isfinite(fval) and fval > 0):
            raise ConfigError(f"optimizer {name!r}: {key} must be finite and > 0, got {val!r}")
        clips[key] = fval
    assignments = tuple((target, sp.sympify(expr)) for target, expr in rule.build(values))
    return Optimizer(name, values, rule.state, assignments, **clips)


def _real(name: str, key: str, val: object) -> float:
    """``val`` as a float, or inf for an integer too large for one (``10**400``), which the
    range checks then refuse: ``float()`` itself would raise a bare OverflowError."""
    if isinstance(val, bool) or not isinstance(val, numbers.Real):
        raise SpecTypeError(f"optimizer {name!r}: {key} must be a real number, got {val!r}")
    try:
        return float(val)
    except OverflowError:
        return math.inf if val > 0 else -math.inf


def SGD(lr: float = 0.01, weight_decay: float = 0.0, **clip: float | None) -> Optimizer:  # noqa: N802 - torch-like name
    return optimizer("sgd", lr=lr, weight_decay=weight_decay, **clip)


def Momentum(lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0, **clip: float | None) -> Optimizer:  # noqa: N802
    return optimizer("momentum", lr=lr, momentum=momentum, weight_decay=weight_decay, **clip)


def Nesterov(lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0, **clip: float | None) -> Optimizer:  # noqa: N802
    return optimizer("nesterov", lr=lr, momentum=momentum, weight_decay=weight_decay, **clip)


def AdaGrad(lr: float = 0.01, eps: float = 1e-10, **clip: float | None) -> Optimizer:  # noqa: N802
    return optimizer("adagrad", lr=lr, eps=eps, **clip)


def RMSprop(lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, **clip: float | None) -> Optimizer:  # noqa: N802
    return optimizer("rmsprop", lr=lr, alpha=alpha, eps=eps, **clip)


def Adam(lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, **clip: float | None) -> Optimizer:  # noqa: N802
    return optimizer("adam", lr=lr, beta1=beta1, beta2=beta2, eps=eps, **clip)


def AdamW(lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,  # noqa: N802
          weight_decay: float = 0.01, **clip: float | None) -> Optimizer:
    return optimizer("adamw", lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, **clip)


def update_program(opt: Optimizer) -> tuple[list[tuple[sp.Symbol, sp.Expr]], dict[str, sp.Symbol]]:
    """The assignments as straight-line code over fresh symbols.

    Returns ``(steps, new)``: ``steps`` is ``[(symbol, expr)]`` where each expression uses ``p``,
    ``g``, ``t``, the *old* state symbols and earlier step symbols; ``new`` maps each target
    (``"p"`` and every state name) to the symbol holding its updated value.
    """
    env: dict[sp.Symbol, sp.Symbol] = {}
    steps, new = [], {}
    for target, expr in opt.assignments:
        sym = sp.Symbol(f"{target}_new", real=True)
        steps.append((sym, expr.xreplace(env)))
        env[sp.Symbol(target, real=True)] = sym
        new[target] = sym
    return steps, new


def split_invariant(steps: list[tuple[sp.Symbol, sp.Expr]]):
    """Move every largest sub-expression of ``t`` alone (the bias corrections) out of the
    per-element loop, then CSE what stays. Returns ``(hoisted, per_element, reduced)``: the
    loop-invariant assignments, the per-element temporaries, and the steps rewritten over them.
    """
    names = sp.numbered_symbols("h", real=True)
    hoisted: list[tuple[sp.Symbol, sp.Expr]] = []
    seen: dict[sp.Expr, sp.Symbol] = {}

    def lift(expr: sp.Expr) -> sp.Expr:
        if expr.free_symbols == {t}:
            if expr not in seen:
                seen[expr] = next(names)
                hoisted.append((seen[expr], expr))
            return seen[expr]
        if not expr.args or expr.is_Atom:
            return expr
        return expr.func(*[lift(a) for a in expr.args])

    lifted = [lift(e) for _, e in steps]
    repl, reduced = sp.cse(lifted, symbols=sp.numbered_symbols("u", real=True), order="canonical")
    return hoisted, list(repl), list(zip([s for s, _ in steps], reduced))
