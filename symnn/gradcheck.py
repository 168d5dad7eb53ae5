"""Numeric differentiation against a kernel's analytic gradient.

Three oracles, chosen per network:

* **complex step** (``Im L(theta + i h)/h``, h = 1e-30) on the *plain* forward graph run by
  :mod:`symnn.interpret`: exact to rounding, no cancellation, so even tiny entries are checked
  tightly. Used when no element-wise expression has a kink (Abs, sign, Max, Min, Heaviside,
  Piecewise): complex step through those is invalid.
* **5-point central differences** (Richardson), h = 1e-3 * max(1, |theta|), on the kernel's own
  float64 loss: for networks with kinks (ReLU...). Truncation error O(h^4).
* **random projection** for large networks: the directional derivative along 3 random
  directions u (entries in [0.5, 1.5) with random signs) compared with <grad, u>.

A float32 kernel is compared with the float64 kernel of the same network at the same
(float32-representable) parameters; the float64 gradient is itself checked numerically.

Error metric: per entry ``|a - n| / max(|n|, floor)`` with ``floor = floor_rel * max|n|``
(float32 against float64: ``||a - n|| / ||n||`` per parameter, since float32 rounding is
absolute at the scale of the largest entries); the report names the worst entry and its
parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import sympy as sp

from . import ir, registry
from .errors import DataError, GradientCheckError, SpecTypeError
from .graph import build_forward
from .interpret import evaluate

_KINKS = (sp.Abs, sp.sign, sp.Max, sp.Min, sp.Heaviside, sp.Piecewise, sp.floor, sp.ceiling)
#: (tolerance, floor_rel) per method
_TOL = {"complex_step": (1e-9, 1e-10), "central": (1e-7, 1e-6), "float64_reference": (1e-5, 1e-3)}


@dataclass
class GradcheckReport:
    """Result of :func:`gradcheck`.

    Attributes:
        max_rel_error: the largest per-entry relative error (or per-projection error).
        worst_param: parameter holding the worst entry (``"projection k"`` for projections).
        worst_index: index of the worst entry inside that parameter.
        analytic, numeric: the two values at the worst entry.
        method: ``"complex_step"``, ``"central"``, ``"projection/<oracle>"`` or
            ``"float64_reference"`` (float32 kernels).
        tolerance: the pass threshold for this method.
        per_param: max relative error per parameter.
        reference: for float32 kernels, the report of the float64 reference.
        norm_rel_error: ``||analytic - numeric|| / ||numeric||`` over every entry (the
            RELIABILITY.md norm metric; per-entry errors of a wide network's smallest entries
            sit at the differences' round-off, while the norm does not).
    """

    max_rel_error: float
    worst_param: str
    worst_index: tuple[int, ...]
    analytic: float
    numeric: float
    method: str
    tolerance: float
    per_param: dict[str, float] = field(default_factory=dict)
    reference: "GradcheckReport | None" = None
    norm_rel_error: float = float("nan")

    @property
    def passed(self) -> bool:
        ok = bool(self.max_rel_error <= self.tolerance)
        return ok and (self.reference is None or self.reference.passed)

    @property
    def passed_norm(self) -> bool:
        """RELIABILITY.md's norm criterion for central differences: ``norm_rel_error <= 1e-7``
        with no entry worse than 1e-5. On a wide network the smallest entries sit at the
        differences' round-off, which the per-entry test (``passed``) counts against them;
        ``passed`` stays the stricter default (it catches a single entry off by 1e-6).

        For a float32 kernel: the norm over every entry within 1e-5 of the float64 gradient
        (RELIABILITY.md's float32 target), no parameter worse than 1e-3 in its own norm, and
        the float64 reference passing. ``passed`` holds every parameter to 1e-5 in its own
        norm, which a small sum with cancellation misses in float32: a 2-class softmax's bias
        gradient, [s, -s] with s = 5.4e-4, came out 1.7e-5 off while the whole gradient was
        1.4e-7 off."""
        if self.reference is not None:  # float32 against the float64 gradient
            return bool(self.norm_rel_error <= self.tolerance and self.max_rel_error <= 1e-3
                        and self.reference.passed_norm)
        return bool(self.method.endswith("central") and self.norm_rel_error <= 1e-7
                    and self.max_rel_error <= 1e-5)

    def __str__(self) -> str:
        return (
            f"gradcheck[{self.method}] {'PASS' if self.passed else 'FAIL'}: max rel error "
            f"{self.max_rel_error:.3e} (tolerance {self.tolerance:.0e}) at {self.worst_param}"
            f"{list(self.worst_index)}: analytic {self.analytic!r}, numeric {self.numeric!r}"
        )


def _has_kinks(fwd) -> bool:
    """True when complex step is invalid: kinks, or erf without SciPy's complex erf."""
    import importlib.util

    blocked = _KINKS if importlib.util.find_spec("scipy") else _KINKS + (sp.erf,)
    return any(
        n.op is ir.Op.MAP and n.arg.expr.has(*blocked) for n in ir.toposort([fwd.loss])
    )


def _compare(analytic: Mapping[str, np.ndarray], numeric: Mapping[str, np.ndarray], method: str) -> GradcheckReport:
    tol, floor_rel = _TOL[method]
    scale = max(float(np.max(np.abs(v))) if v.size else 0.0 for v in numeric.values())
    floor = max(floor_rel * scale, np.finfo(np.float64).tiny)
    worst = (-1.0, "", (), 0.0, 0.0)
    per = {}
    for k, n in numeric.items():
        a = np.asarray(analytic[k], dtype=np.float64)
        if not n.size:
            per[k] = 0.0
            continue
        if method == "float64_reference":  # float32 rounding: compare per parameter in norm
            per[k] = float(np.linalg.norm(a - n)) / max(float(np.linalg.norm(n)), floor)
            err = np.abs(a - n)  # locates the worst entry only
        else:
            err = np.abs(a - n) / np.maximum(np.abs(n), floor)
            err = np.where(np.isnan(err), np.inf, err)
            per[k] = float(err.max())
        if per[k] > worst[0]:
            idx = np.unravel_index(int(np.argmax(err)), err.shape)
            worst = (per[k], k, tuple(int(i) for i in idx), float(a[idx]), float(n[idx]))
    diff2 = sum(float(np.sum((np.asarray(analytic[k], dtype=np.float64) - n) ** 2)) for k, n in numeric.items())
    ref2 = sum(float(np.sum(n**2)) for n in numeric.values())
    norm = float(np.sqrt(diff2 / ref2)) if ref2 > 0 else float(np.sqrt(diff2))
    return GradcheckReport(worst[0], worst[1], worst[2], worst[3], worst[4], method, tol, per, None, norm)


def gradcheck(
    kernel: Any,
    params: Mapping[str, Any],
    X: Any,
    Y: Any,
    *,
    method: str = "auto",
    max_entries: int = 3000,
    n_projections: int = 3,
    seed: int = 0,
    raise_on_fail: bool = False,
) -> GradcheckReport:
    """Check ``kernel.loss_and_grad`` against numeric differentiation.

    Args:
        kernel: a kernel from :func:`symnn.compile`.
        params, X, Y: the point to check at (validated like the kernel's own inputs).
        method: ``"auto"`` (complex step for smooth networks, else central differences),
            ``"complex_step"`` or ``"central"``.
        max_entries: above this many parameters, check ``n_projections`` random directions.
        seed: seed for the projection directions.
        raise_on_fail: raise :class:`~symnn.errors.GradientCheckError` instead of returning a
            failing report.

    Returns:
        A :class:`GradcheckReport`; ``report.max_rel_error`` and ``report.passed``.
    """
    from .driver import compile as _compile

    if not hasattr(kernel, "loss_and_grad") or not hasattr(kernel, "network"):
        raise SpecTypeError(f"gradcheck needs a kernel from sn.compile, got {type(kernel).__name__}")
    if method not in ("auto", "complex_step", "central"):
        raise SpecTypeError(f"method must be 'auto', 'complex_step' or 'central', got {method!r}")
    net = kernel.network
    p = kernel.params(params)
    x = kernel.inputs(X)
    y = kernel.targets(Y, x.shape[0])
    _, analytic = kernel.loss_and_grad(p, x, y)
    ref_kernel = kernel
    if kernel.dtype != np.float64:
        ref_kernel = _compile(net, backend=kernel.backend, dtype="float64")
        p64 = {k: v.astype(np.float64) for k, v in p.items()}
        x64 = x.astype(np.float64)
        y64 = y if y.dtype.kind == "i" else y.astype(np.float64)
        reference = gradcheck(ref_kernel, p64, x64, y64, method=method, max_entries=max_entries,
                              n_projections=n_projections, seed=seed)
        _, g64 = ref_kernel.loss_and_grad(p64, x64, y64)
        report = _compare(analytic, g64, "float64_reference")
        report.reference = reference
        return _finish(report, raise_on_fail)

    fwd = build_forward(net)
    if method == "auto":
        method = "central" if _has_kinks(fwd) else "complex_step"
    y_dense = y
    if y.dtype.kind == "i":
        y_dense = np.zeros((x.shape[0], kernel.param_shapes[f"W{len(net.layers)}"][0]))
        y_dense[np.arange(x.shape[0]), y] = 1.0

    def loss_at(theta: Mapping[str, np.ndarray]) -> complex | float:
        if method == "complex_step":
            return complex(evaluate({"L": fwd.loss}, {**theta, "X": x, "Y": y_dense})["L"])
        return kernel.module._loss(theta, x, y)

    def directional(u: Mapping[str, np.ndarray], shrink: float = 1.0) -> float:
        if method == "complex_step":
            h = 1e-30
            return loss_at({k: p[k] + 1j * h * u[k] for k in p}).imag / h
        scale = max(1.0, max(float(np.max(np.abs(v))) for v in p.values()))
        h = 1e-3 * scale / shrink  # Richardson: optimal near eps**(1/5); truncation and round-off ~ 1e-12
        f = {s: loss_at({k: p[k] + s * h * u[k] for k in p}) for s in (-2, -1, 1, 2)}
        return (f[-2] - 8 * f[-1] + 8 * f[1] - f[2]) / (12 * h)

    n_params = sum(v.size for v in p.values())
    if n_params > max_entries:
        rng = np.random.default_rng(seed)
        an, nu = {}, {}
        for j in range(n_projections):
            u = {k: rng.uniform(0.5, 1.5, v.shape) * rng.choice([-1.0, 1.0], v.shape) for k, v in p.items()}
            an[f"projection {j}"] = np.array([sum(float(np.sum(analytic[k] * u[k])) for k in p)])
            nu[f"projection {j}"] = np.array([directional(u)])
        report = _compare(an, nu, method)
        report.method = f"projection/{method}"
        return _finish(report, raise_on_fail)

    numeric = {}
    for k, v in p.items():
        g = np.zeros(v.shape)
        for idx in np.ndindex(v.shape):
            e = {kk: np.zeros(vv.shape) for kk, vv in p.items()}
            e[k][idx] = 1.0
            if method == "central":  # per-entry step scaled to the entry
                s = max(1.0, abs(float(v[idx])))
                e[k][idx] = s
                g[idx] = directional(e) / s
                # adaptive step: if an 8x smaller step moves the estimate by more than
                # round-off can (1e-6 relative), the first one was truncation-dominated (a
                # weight fed by large activations): keep the smaller one. The choice never
                # looks at the analytic gradient.
                fine = directional(e, 8.0) / s
                if abs(fine - g[idx]) > 1e-6 * max(abs(fine), abs(g[idx])):
                    g[idx] = fine
            else:
                g[idx] = directional(e)
        numeric[k] = g
    return _finish(_compare(analytic, numeric, method), raise_on_fail)


def _kink_arguments(expr: sp.Expr) -> list[sp.Expr]:
    """The expressions whose zeros are the kinks of ``expr``: ``u`` of Abs/sign/Heaviside(u),
    ``a - b`` of Max/Min(a, b), ``lhs - rhs`` of each Piecewise condition, floor/ceiling's
    argument minus its nearest integer is not covered (piecewise constant: zero gradient)."""
    out: list[sp.Expr] = []
    for e in sp.preorder_traversal(expr):
        if isinstance(e, (sp.Abs, sp.sign, sp.Heaviside)):
            out.append(e.args[0])
        elif isinstance(e, (sp.Max, sp.Min)):
            out += [a - b for i, a in enumerate(e.args) for b in e.args[i + 1:]]
        elif isinstance(e, sp.Piecewise):
            for _, cond in e.args:
                out += [r.lhs - r.rhs for r in sp.preorder_traversal(cond) if isinstance(r, sp.core.relational.Relational)]
    return out


class _Kinks:
    """The kinks of a network, found once: its forward graph, and per kinked layer the
    pre-activation node with its kink arguments as NumPy functions; the user loss's too."""

    def __init__(self, net) -> None:
        self.fwd = build_forward(net)
        self.layers = []
        for z, layer in zip(self.fwd.z, net.layers):
            if layer.activation.expr is not None:
                fns = [sp.lambdify(registry.X, g, modules="numpy") for g in _kink_arguments(layer.activation.expr)]
                if fns:
                    self.layers.append((z, fns))
        loss_kinks = _kink_arguments(net.loss.expr) if net.loss.user else []
        self.loss = [sp.lambdify((registry.P, registry.T), g, modules="numpy") for g in loss_kinks]

    def rows(self, X: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per row of ``X``: the smallest |g(z)| over every kinked pre-activation z and kink
        argument g (inf for a row with none)."""
        dist = np.full(X.shape[0], np.inf)
        if not self.layers:
            return dist
        vals = evaluate({str(i): z for i, (z, _) in enumerate(self.layers)}, {**params, "X": X})
        for i, (_, fns) in enumerate(self.layers):
            z = np.real(vals[str(i)])
            dist = np.minimum(dist, _distance(fns, z).min(axis=1))
        return dist


def _distance(fns: list, *args: np.ndarray) -> np.ndarray:
    """Element-wise min over ``fns`` of |f(*args)|; NaN counts as far (inf)."""
    shape = args[-1].shape
    with np.errstate(all="ignore"):
        d = np.min([np.abs(np.broadcast_to(np.asarray(f(*args), dtype=float), shape)) for f in fns], axis=0)
    return np.where(np.isnan(d), np.inf, d)


def kink_distances(net, X: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per row of ``X``: the smallest |g(z)| over every pre-activation z of a kinked activation
    and every kink argument g of it (:func:`_kink_arguments`); inf for a row with none."""
    return _Kinks(net).rows(X, params)


def min_kink_distance(net, X: np.ndarray, params: Mapping[str, np.ndarray]) -> float:
    """Smallest distance of any row of ``X`` from a kink (see :func:`kink_distances`)."""
    return float(kink_distances(net, X, params).min()) if X.shape[0] else np.inf


def sample_point(net, n: int = 4, seed: int = 0, margin: float = 0.01, tries: int = 500):
    """``(params, X, Y)`` for a gradient check: seeded parameters, standard-normal input rows,
    each redrawn until every kink argument of every kinked pre-activation is at least ``margin``
    from zero (differences must not straddle a kink: single-entry steps of 1e-3 move a
    pre-activation by a few 1e-3), and targets that suit the loss (labels, [0, 1] or normal).
    Raises ``DataError`` if ``tries`` blocks of candidate rows give fewer than ``n`` good rows."""
    rng = np.random.default_rng(seed)
    kinks = _Kinks(net)
    rows: list[np.ndarray] = []
    for attempt in range(tries):
        if attempt % 25 == 0:  # tiny first-layer weights can keep every row near a kink: new weights
            rows = []
            params = net.init_params(seed=seed + 7919 * (attempt // 25))
            if net.l1:  # |w| has a kink at 0: keep every weight `margin` away (steps reach 2e-3)
                for name, w in params.items():
                    if name.startswith("W"):
                        params[name] = np.where(np.abs(w) < margin, np.where(w < 0, -margin, margin), w)
        cand = rng.normal(size=(max(n, 8), int(net.n_in)))
        rows += list(cand[kinks.rows(cand, params) >= margin])
        if len(rows) >= n:
            break
    else:
        raise DataError(f"no inputs keep every kinked pre-activation {margin} from its kink "
                        f"after {tries} draws; try fewer rows")
    X = np.array(rows[:n]).reshape(n, int(net.n_in))
    k = int(net.n_out)
    if net.loss.name == "cross_entropy" and not net.loss.user:
        Y = np.arange(n) % k
    elif net.loss.name == "bce" and not net.loss.user:
        Y = rng.uniform(0, 1, (n, k))
    else:
        Y = rng.normal(size=(n, k))
        if kinks.loss:  # a kinked user loss (Huber): targets away from the kinks in p - y too
            out = np.real(evaluate({"a": kinks.fwd.output}, {**params, "X": X})["a"])
            for _ in range(tries):
                bad = _distance(kinks.loss, out, Y) < margin
                if not bad.any():
                    break
                Y = np.where(bad, rng.normal(size=(n, k)), Y)
            else:
                raise DataError(f"no targets keep the loss {margin} from its kinks after {tries} draws")
    return params, X, Y


def _finish(report: GradcheckReport, raise_on_fail: bool) -> GradcheckReport:
    if raise_on_fail and not report.passed:
        raise GradientCheckError(str(report))
    return report
