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

**Kinks.** A difference whose stencil (theta - 2h u ... theta + 2h u) crosses a kink measures
a chord, not the derivative (ReLU: an average of both sides' slopes), so a correct kernel
failed on real data, where some pre-activation always lies within a step of its kink (the
digits network on 256 rows: 0.28 off). Each stencil is therefore first probed: every kink
argument (each kinked layer's pre-activations through its activation's kink arguments, a
kinked user loss's in (output, target), each weight under L1) is evaluated at the stencil's
points, and where one changes sign (or leaves 0) the step shrinks to stay short of the
nearest crossing, down to 1e-3 of the first step (1e-5 for a projection, whose derivative is
large beside round-off). An entry whose stencil still crosses is *not checkable at a kink*:
it is counted apart (``report.at_kink``) and left out of every figure; a projection at a kink
is replaced by a fresh direction. A float32 comparison leaves out the rows whose kink argument
lies within float32 rounding of its kink (the float32 kernel may take the other branch there,
correctly). Nothing checkable at all is no evidence: the report does not pass.

**Resolution.** Every difference is taken at two steps (h and h/8; h and h/2 after a
shrink). The estimate's *resolution* is their disagreement plus the round-off bound
16 ulp(L) * 1.5 / h. The per-entry test ignores it; the norm criterion excuses an entry over
the per-entry tolerance only within its resolution, so a wide network's entries at round-off
pass while a well-resolved entry 1e-6 off still fails.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import sympy as sp

from . import ir, naming, registry
from .capabilities import Targets
from .embedding import index_blocks, padding_rows
from .errors import DataError, GradientCheckError, SpecTypeError
from .functions import plain
from .graph import build_forward
from .backends.numpy.spatial import _max_pool_index
from .interpret import FUNCTIONS, NUMPY, evaluate

_KINKS = (sp.Abs, sp.sign, sp.Max, sp.Min, sp.Heaviside, sp.Piecewise, sp.floor, sp.ceiling)
#: (tolerance, floor_rel) per method. An entry far below the largest one is held to the
#: absolute error tolerance * floor_rel * scale: for complex step 1e-15 of the scale, a few
#: float64 roundings of it, which is what a kernel's sum of terms of that size can promise (a
#: bias before a batch norm has an exactly zero gradient, computed as a cancelling sum)
_TOL = {"complex_step": (1e-9, 1e-6), "central": (1e-7, 1e-6), "float64_reference": (1e-5, 1e-3)}
#: RELIABILITY.md's norm criterion for central differences: whole-gradient norm error, and the
#: worst entry it lets through; float32: the worst parameter (in its own norm)
_NORM_TOL, _NORM_ENTRY_TOL, _FLOAT32_PARAM_TOL = 1e-7, 1e-5, 1e-3
#: how far a kink may shrink the first step: an entry's difference is small, so round-off
#: (~eps L / h) reaches its tolerance near 1e-6 * scale; a projection's is large
_SHRINK_LIMIT = {"entry": 1e-3, "projection": 1e-5}
#: ulps one evaluation of the loss may be off by (a sum over N x K terms): with the
#: stencil's weights (1 + 8 + 8 + 1) / 12 it bounds the round-off of a difference
_LOSS_ULPS = 16.0
#: the five-point stencil: offsets in steps, and weights over 12 h
_OFFSETS = (-2.0, -1.0, 1.0, 2.0)
_WEIGHTS = (1.0, -8.0, 8.0, -1.0)
#: how many unresolved entries a report keeps (worst first)
_KEEP = 3


@dataclass(frozen=True)
class Discrepancy:
    """An entry off by more than the per-entry tolerance *and* more than its difference can
    resolve: evidence of a wrong gradient that the norm criterion must not excuse."""

    param: str
    index: tuple[int, ...]
    rel_error: float
    analytic: float
    numeric: float
    resolution: float


@dataclass
class GradcheckReport:
    """Result of :func:`gradcheck`.

    Attributes:
        max_rel_error: the largest per-entry relative error (or per-projection error) over the
            checked entries.
        worst_param: parameter holding the worst entry (``"projection k"`` for projections).
        worst_index: index of the worst entry inside that parameter.
        analytic, numeric: the two values at the worst entry.
        method: ``"complex_step"``, ``"central"``, ``"projection/<oracle>"`` or
            ``"float64_reference"`` (float32 kernels).
        tolerance: the pass threshold for this method.
        per_param: max relative error per parameter.
        reference: for float32 kernels, the report of the float64 reference.
        norm_rel_error: ``||analytic - numeric|| / ||numeric||`` over every checked entry (the
            RELIABILITY.md norm metric; per-entry errors of a wide network's smallest entries
            sit at the differences' round-off, while the norm does not).
        n_checked: entries (projections; float32: entries of the kept rows' gradient) that
            were judged; None where unknown (a report built by hand).
        at_kink: ``(param, index)`` of each entry (``("projection k", (0,))``) left out
            because every step tried had its stencil cross a kink.
        shrunk: ``(param, index)`` of each checked entry (projection) whose step was shrunk
            to stay clear of a kink.
        rows_at_kink: float32 only: rows left out of the comparison with float64, having a
            kink argument within float32 rounding of its kink.
        unresolved: the worst entries (up to 3) off by more than the per-entry tolerance and
            more than their difference resolves; None where no resolution is known
            (complex step, float32, a report built by hand).
        n_unresolved: how many entries ``unresolved`` was drawn from.
        n_over: how many checked entries are over the per-entry tolerance.
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
    n_checked: int | None = None
    at_kink: tuple[tuple[str, tuple[int, ...]], ...] = ()
    shrunk: tuple[tuple[str, tuple[int, ...]], ...] = ()
    rows_at_kink: tuple[int, ...] = ()
    unresolved: tuple[Discrepancy, ...] | None = None
    n_unresolved: int | None = None
    n_over: int | None = None

    @property
    def n_at_kink(self) -> int:
        """Entries (or projections) not checkable at a kink: see ``at_kink``."""
        return len(self.at_kink)

    @property
    def n_shrunk(self) -> int:
        """Checked entries (or projections) whose step was shrunk: see ``shrunk``."""
        return len(self.shrunk)

    @property
    def checked_anything(self) -> bool:
        """False when every entry (or row) was at a kink: such a report is no evidence."""
        ref = self.reference is None or self.reference.checked_anything
        return self.n_checked != 0 and ref

    @property
    def passed(self) -> bool:
        """The per-entry test: every checked entry within ``tolerance`` (float32: every
        parameter in its own norm), the float64 reference passing too, and something
        checked. Strict: a single entry off by 1e-6 fails it."""
        ok = bool(self.max_rel_error <= self.tolerance) and self.n_checked != 0
        return ok and (self.reference is None or self.reference.passed)

    @property
    def passed_norm(self) -> bool:
        """RELIABILITY.md's norm criterion for central differences: ``norm_rel_error <= 1e-7``
        with no entry worse than 1e-5. On a wide network the smallest entries sit at the
        differences' round-off, which the per-entry test (``passed``) counts against them;
        ``passed`` stays the stricter default (it catches a single entry off by 1e-6).
        :attr:`ok` judges entries over the per-entry tolerance by their resolution instead.

        For a float32 kernel: the norm over every entry within 1e-5 of the float64 gradient
        (RELIABILITY.md's float32 target), no parameter worse than 1e-3 in its own norm, and
        the float64 reference passing. ``passed`` holds every parameter to 1e-5 in its own
        norm, which a small sum with cancellation misses in float32: a 2-class softmax's bias
        gradient, [s, -s] with s = 5.4e-4, came out 1.7e-5 off while the whole gradient was
        1.4e-7 off."""
        if self.n_checked == 0:
            return False
        if self.reference is not None:  # float32 against the float64 gradient
            return self._float32_norm() and self.reference.passed_norm
        return bool(self.method.endswith("central") and self.norm_rel_error <= _NORM_TOL
                    and self.max_rel_error <= _NORM_ENTRY_TOL)

    @property
    def ok(self) -> bool:
        """The verdict ``str(report)`` and ``symnn check`` print (``verdict()`` says why):
        something was checked, the float64 reference (float32 kernels) is ok, and either

        * the per-entry test holds: every checked entry within ``tolerance``; or
        * the norm criterion holds: ``norm_rel_error <= 1e-7`` and every entry over the
          per-entry tolerance is off by no more than its differences resolve (round-off;
          without known resolutions: no entry worse than 1e-5, as ``passed_norm``), so a
          wide network's smallest entries pass while a well-resolved entry 1e-6 off fails;
          float32: the whole gradient within 1e-5 of float64, no parameter worse than 1e-3.
        """
        return self._criterion() is not None and (self.reference is None or self.reference.ok)

    @property
    def status(self) -> str:
        """``"PASS"`` (``ok``), ``"FAIL"``, or ``"NOT CHECKED"`` when nothing was checkable."""
        if not self.checked_anything:
            return "NOT CHECKED"
        return "PASS" if self.ok else "FAIL"

    def _criterion(self) -> str | None:
        """Which criterion this report's own numbers meet: ``"entry"``, ``"norm"`` or None."""
        if self.n_checked == 0:
            return None
        if self.max_rel_error <= self.tolerance:
            return "entry"
        if self.method == "float64_reference":
            return "norm" if self._float32_norm() else None
        if not (self.method.endswith("central") and self.norm_rel_error <= _NORM_TOL):
            return None
        if self.n_unresolved is None:
            return "norm" if self.max_rel_error <= _NORM_ENTRY_TOL else None
        return "norm" if self.n_unresolved == 0 else None

    def _float32_norm(self) -> bool:
        return bool(self.norm_rel_error <= self.tolerance
                    and self.max_rel_error <= _FLOAT32_PARAM_TOL)

    def verdict(self) -> str:
        """Why the report passes or fails, in words a user can follow: which criterion
        decided, with its numbers and thresholds, and what was left out at kinks. Both
        ``str(report)`` and ``symnn check`` print it."""
        if self.n_checked == 0:
            text = self._nothing_checked()
        elif self.method == "float64_reference":
            text = self._float32_verdict()
        else:
            text = self._entry_verdict()
        text += self._kink_note()
        if self.reference is not None:
            text += f"; float64 reference: {self.reference.status}: {self.reference.verdict()}"
        return text

    def __str__(self) -> str:
        return f"gradcheck[{self.method}] {self.status}: {self.verdict()}"

    # -- the verdict's wording ------------------------------------------------------------

    def _count(self, n: int) -> str:
        projections = self.method.startswith("projection")
        noun = ("projection", "projections") if projections else ("entry", "entries")
        return f"{n} {noun[n != 1]}"

    def _worst(self) -> str:
        return (f"{self.worst_param}{list(self.worst_index)}: analytic {self.analytic!r}, "
                f"numeric {self.numeric!r}")

    def _kink_note(self) -> str:
        notes = []
        if self.at_kink and self.n_checked:
            notes.append(f"{self._count(self.n_at_kink)} of {self.n_checked + self.n_at_kink} not "
                         "checkable at a kink (every step tried had its stencil cross one), "
                         "left out")
        if self.n_shrunk:
            notes.append(f"{self._count(self.n_shrunk)} checked with a smaller step to stay "
                         "clear of a kink")
        if self.rows_at_kink and self.n_checked:
            n = len(self.rows_at_kink)
            notes.append(f"{n} row{'s' * (n != 1)} left out: a kink argument within float32 "
                         "rounding of its kink")
        return "".join(f"; {note}" for note in notes)

    def _nothing_checked(self) -> str:
        if self.rows_at_kink:
            return (f"nothing could be compared: each of the {len(self.rows_at_kink)} rows has "
                    "a kink argument within float32 rounding of its kink")
        return (f"nothing could be checked: each of the {self._count(self.n_at_kink)} had its "
                "stencil cross a kink at every step tried")

    def _entry_verdict(self) -> str:
        each = "every projection" if self.method.startswith("projection") else "every entry"
        criterion = self._criterion()
        central = self.method.endswith("central")
        norm = f"norm error {self.norm_rel_error:.1e}"
        if criterion == "entry":
            return (f"{each} within the per-entry tolerance {self.tolerance:.0e} (max relative "
                    f"error {self.max_rel_error:.1e} at {self._worst()}); {norm}")
        if criterion == "norm":
            if self.n_unresolved is None:
                why = f"and no entry worse than {_NORM_ENTRY_TOL:.0e}"
            else:
                each = "the entry" if self.n_over == 1 else f"each of the {self.n_over} entries"
                why = (f"and {each} over the per-entry tolerance {self.tolerance:.0e} is off by no "
                       "more than its differences resolve (round-off)")
            return (f"by the norm criterion: {norm} <= {_NORM_TOL:.0e} {why}; the per-entry "
                    f"tolerance {self.tolerance:.0e} is missed by up to "
                    f"{self.max_rel_error:.1e} at {self._worst()}")
        if self.unresolved:
            d = self.unresolved[0]
            others = self.n_unresolved - 1
            text = (f"{d.param}{list(d.index)} is off by {d.rel_error:.1e} relative (analytic "
                    f"{d.analytic!r}, numeric {d.numeric!r}): over the per-entry tolerance "
                    f"{self.tolerance:.0e} by more than its differences resolve "
                    f"({d.resolution:.1e})")
            text += f"; {self._count(others)} more like it" if others else ""
        else:
            text = (f"max relative error {self.max_rel_error:.1e} > {self.tolerance:.0e} at "
                    f"{self._worst()}")
        if central and self.norm_rel_error > _NORM_TOL:
            return f"{text}; {norm} > {_NORM_TOL:.0e}"
        if central and self.n_unresolved is None:
            return f"{text}; {norm}, but an entry is worse than {_NORM_ENTRY_TOL:.0e}"
        return f"{text}; {norm}"

    def _float32_verdict(self) -> str:
        whole = f"the whole gradient is {self.norm_rel_error:.1e} off float64"
        worst = f"worst parameter {self.worst_param}: {self.max_rel_error:.1e}"
        tol = f"{self.tolerance:.0e}"
        criterion = self._criterion()
        if criterion == "entry":
            return (f"every parameter within {tol} of the float64 gradient in its own norm "
                    f"({worst}); {whole}")
        if criterion == "norm":
            return (f"by the norm criterion: {whole} <= {tol} and no parameter is worse than "
                    f"{_FLOAT32_PARAM_TOL:.0e} in its own norm; the per-parameter tolerance {tol} "
                    f"is missed by {worst} (a float32 sum with cancellation)")
        limits = f" > {tol}" if self.norm_rel_error > self.tolerance else ""
        return (f"{worst} in its own norm > {tol} (its worst entry {self._worst()}); {whole}"
                f"{limits}")


@dataclass(frozen=True)
class _Estimate:
    """One numeric derivative: its value, what it can resolve (absolute), and whether its
    step was shrunk to stay clear of a kink."""

    value: float
    resolution: float
    shrunk: bool = False


def _has_kinks(fwd) -> bool:
    """True when complex step is invalid: kinks, or erf without SciPy's complex erf."""
    import importlib.util

    blocked = _KINKS if importlib.util.find_spec("scipy") else _KINKS + (sp.erf,)
    return any(
        n.op is ir.Op.MAP and n.arg.expr.has(*blocked) for n in ir.toposort([fwd.loss])
    )


def _compare(analytic: Mapping[str, np.ndarray], numeric: Mapping[str, np.ndarray], method: str,
             resolution: Mapping[str, np.ndarray] | None = None) -> GradcheckReport:
    """Compare over the entries where ``numeric`` is not NaN (NaN: not checkable at a kink).
    With ``resolution`` (absolute, per entry), also find the entries over the tolerance by
    more than their differences resolve."""
    tol, floor_rel = _TOL[method]
    checked = {k: ~np.isnan(n) for k, n in numeric.items()}
    scale = max((float(np.max(np.abs(n[checked[k]]), initial=0.0)) for k, n in numeric.items()),
                default=0.0)
    floor = max(floor_rel * scale, np.finfo(np.float64).tiny)
    worst = (float("nan"), "", (), float("nan"), float("nan"))
    per: dict[str, float] = {}
    errors: dict[str, np.ndarray] = {}
    diff2 = ref2 = 0.0
    for k, n in numeric.items():
        a, c = np.asarray(analytic[k], dtype=np.float64), checked[k]
        diff2 += float(np.sum((a[c] - n[c]) ** 2))
        ref2 += float(np.sum(n[c] ** 2))
        if not c.any():
            per[k] = 0.0
            continue
        with np.errstate(invalid="ignore"):
            err = np.abs(a - n) / np.maximum(np.abs(n), floor)
        errors[k] = err = np.where(c, np.where(np.isnan(err), np.inf, err), -1.0)  # -1: not checked
        per[k] = float(err.max())
        if method == "float64_reference":  # float32 rounding: compare per parameter in norm
            e = float(np.linalg.norm(a[c] - n[c])) / max(float(np.linalg.norm(n[c])), floor)
            per[k] = np.inf if np.isnan(e) else e
        if not per[k] <= worst[0]:  # also takes the first one (against NaN)
            idx = np.unravel_index(int(np.argmax(err)), err.shape)
            worst = (per[k], k, tuple(int(i) for i in idx), float(a[idx]), float(n[idx]))
    norm = float(np.sqrt(diff2 / ref2)) if ref2 > 0 else float(np.sqrt(diff2))
    report = GradcheckReport(*worst[:3], worst[3], worst[4], method, tol, per, None, norm,
                             n_checked=int(sum(int(c.sum()) for c in checked.values())),
                             n_over=int(sum(int(np.sum(e > tol)) for e in errors.values())))
    if resolution is not None:
        found = _unresolved(analytic, numeric, errors, resolution, tol)
        report.unresolved, report.n_unresolved = tuple(found[:_KEEP]), len(found)
    return report


def _unresolved(analytic: Mapping[str, np.ndarray], numeric: Mapping[str, np.ndarray],
                errors: Mapping[str, np.ndarray], resolution: Mapping[str, np.ndarray],
                tol: float) -> list[Discrepancy]:
    """The entries over ``tol`` by more than their resolution, worst first."""
    found = []
    for k, err in errors.items():
        a, n, res = np.asarray(analytic[k], dtype=np.float64), numeric[k], resolution[k]
        with np.errstate(invalid="ignore"):
            over = (err > tol) & ~(np.abs(a - n) <= res)
        for idx in zip(*np.nonzero(over)):
            where = tuple(int(i) for i in idx)
            found.append(Discrepancy(k, where, float(err[idx]), float(a[idx]), float(n[idx]),
                                     float(res[idx])))
    return sorted(found, key=lambda d: -d.rel_error)


def _entry_point(p: Mapping[str, np.ndarray], key: str,
                 idx: tuple[int, ...]) -> Callable[[Any], dict]:
    """``t -> theta`` with ``t`` added to one entry (a complex ``t`` for complex step)."""

    def point(t: Any) -> dict[str, np.ndarray]:
        v = p[key].astype(np.result_type(p[key], t))
        v[idx] += t
        return {**p, key: v}

    return point


def _line_point(p: Mapping[str, np.ndarray], u: Mapping[str, np.ndarray]) -> Callable[[Any], dict]:
    """``t -> theta + t u``: a random projection's line."""
    return lambda t: {k: v + t * u[k] if k in u else v for k, v in p.items()}


class _ComplexStep:
    """``Im L(theta + i h u) / h`` on the plain forward graph: exact to rounding."""

    def __init__(self, fwd, x: np.ndarray, y_dense: np.ndarray) -> None:
        self.fwd, self.leaves = fwd, {"X": x, "Y": y_dense}

    def estimate(self, point: Callable[[Any], dict], h: float, limit: float) -> _Estimate:
        del h, limit  # the step is fixed: no cancellation, no truncation to trade off
        step = 1e-30
        value = complex(evaluate({"L": self.fwd.loss}, {**point(1j * step), **self.leaves})["L"])
        return _Estimate(value.imag / step, 0.0)


class _Differences:
    """Five-point differences of the float64 kernel's loss along a line through theta, on a
    stencil kept clear of kinks (see the module docstring)."""

    def __init__(self, loss: Callable[[dict], float], probe: Callable[[dict], np.ndarray] | None,
                 p: Mapping[str, np.ndarray]) -> None:
        self.loss, self.probe = loss, probe
        self.g0 = probe(p) if probe is not None else None

    def estimate(self, point: Callable[[Any], dict], h: float, limit: float) -> _Estimate | None:
        """The derivative along ``point``'s line with first step ``h``; None when every step
        down to ``limit * h`` has its stencil cross a kink.

        Two steps, h and h/r (r = 8; 2 after a shrink, where truncation is negligible and
        round-off grows as 1/h), so that the estimate knows its own resolution. The second is
        kept only if they differ by more than its round-off can explain: then h was
        truncation-dominated (a weight fed by large activations). The choice never looks at
        the analytic gradient."""
        free = self._kink_free_step(point, h, limit * h)
        if free is None:
            return None
        r = 8.0 if free == h else 2.0
        (d1, f1), (d2, f2) = self._richardson(point, free), self._richardson(point, free / r)
        spread = abs(d2 - d1)
        # round-off of one difference: the stencil's weights (1 + 8 + 8 + 1) / 12 times the
        # loss's own error, measured at up to 9 ulps (digits, 20-layer ReLU; NumPy and C)
        roundoff = _LOSS_ULPS * np.finfo(np.float64).eps * max(f1, f2) * 1.5 / free
        if spread > roundoff * r:  # truncation at h: h/r's is r^4 times smaller
            return _Estimate(d2, spread / (r**4 - 1) + roundoff * r, shrunk=free < h)
        return _Estimate(d1, spread + roundoff, shrunk=free < h)

    def _richardson(self, point: Callable[[Any], dict], h: float) -> tuple[float, float]:
        """(derivative, largest |loss| on the stencil)."""
        f = [float(self.loss(point(s * h))) for s in _OFFSETS]
        return sum(w * v for w, v in zip(_WEIGHTS, f)) / (12 * h), max(abs(v) for v in f)

    def _kink_free_step(self, point: Callable[[Any], dict], h: float, h_min: float) -> float | None:
        """The first step from ``h`` down whose stencil crosses no kink, or None below
        ``h_min``. Each try places the stencil's outer points at 0.8 of the way to the nearest
        crossing seen (kink arguments are close to linear over a step) and checks again."""
        if self.probe is None:
            return h
        outer = self.probe(point(2 * h))
        if _clear(self.g0, outer):
            return h
        while True:
            g = np.stack([self.probe(point(s * h)) for s in _OFFSETS[:-1]] + [outer])
            t = _nearest_crossing(self.g0, g)
            if t == np.inf:
                return h
            h *= min(0.5, 0.4 * t)
            if h < h_min:
                return None
            outer = self.probe(point(2 * h))


#: what ``_entries`` and ``_projections`` difference with
_Oracle = _ComplexStep | _Differences


def _clear(g0: np.ndarray, g2: np.ndarray) -> bool:
    """A one-probe screen: with the kink arguments ``g2`` at the stencil's outer point +2,
    the line through them and ``g0`` has no zero within 2.5 steps either side (a quarter
    beyond the stencil, for curvature). Exact where the pre-activations are piecewise linear
    in the step (the ReLU family): the first layer whose argument crosses is linear there."""
    d = np.abs(g2 - g0)
    with np.errstate(invalid="ignore"):
        return bool(np.all((d == 0) | (np.abs(g0) > 1.25 * d) | np.isnan(d)))


def _nearest_crossing(g0: np.ndarray, g: np.ndarray) -> float:
    """Where, in steps from the centre, the nearest kink crossing lies (inf if none): ``g0``
    the kink arguments at theta, ``g`` at the stencil's points -2, -1, 1, 2 (rows). A change of
    sign (or leaving 0) between neighbouring points is a crossing, located by linear
    interpolation; NaN arguments carry no information and are skipped."""
    s0, s = np.sign(g0), np.sign(g)
    with np.errstate(invalid="ignore"):
        moved = np.any(s != s0, axis=0) & ~np.isnan(s0) & ~np.isnan(s).any(axis=0)
    if not moved.any():
        return np.inf
    a0, near, far = g0[moved], g[:, moved][[1, 2]], g[:, moved][[0, 3]]  # (-1, +1) and (-2, +2)
    sa, sn, sf = np.sign(a0), np.sign(near), np.sign(far)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_near = np.where(sn != sa, a0 / (a0 - near), np.inf)  # 0 when theta sits on the kink
        t_far = np.where((sn == sa) & (sf != sn), 1.0 + near / (near - far), np.inf)
    return float(min(np.min(t_near), np.min(t_far)))


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

    Entries (or projections) whose difference stencil crosses a kink at every step tried are
    counted apart (``report.at_kink``) and not judged; see the module docstring.

    Args:
        kernel: a kernel from :func:`symnn.compile`.
        params, X, Y: the point to check at (validated like the kernel's own inputs).
        method: ``"auto"`` (complex step for smooth networks, else central differences),
            ``"complex_step"`` or ``"central"``.
        max_entries: above this many parameters, check ``n_projections`` random directions.
        n_projections: projections to judge; one at a kink is replaced by a fresh direction,
            up to three times as many tries in all.
        seed: seed for the projection directions.
        raise_on_fail: raise :class:`~symnn.errors.GradientCheckError` instead of returning a
            report that is not ``ok`` (failing, or with nothing checkable).

    Returns:
        A :class:`GradcheckReport`: ``report.ok`` is the verdict ``str(report)`` prints,
        ``report.verdict()`` says why.
    """
    from .driver import compile as _compile

    if not hasattr(kernel, "loss_and_grad") or not hasattr(kernel, "network"):
        raise SpecTypeError(f"gradcheck needs a kernel from sn.compile, got {type(kernel).__name__}")
    if method not in ("auto", "complex_step", "central"):
        raise SpecTypeError(f"method must be 'auto', 'complex_step' or 'central', got {method!r}")
    net = kernel.network
    p = kernel.params(params)
    x = kernel.inputs(X)
    y = kernel.targets(Y, x.shape[0], kernel.length(x))
    options = {"method": method, "max_entries": max_entries, "n_projections": n_projections,
               "seed": seed}
    if kernel.dtype != np.float64:
        # the reference is the float64 NumPy kernel whatever the backend: it is checked
        # numerically itself, needs no compiler run (seconds per C network), and is an
        # independent implementation of the same derivation
        ref_kernel = _compile(net, backend="numpy", dtype="float64")
        return _finish(_against_float64(kernel, ref_kernel, p, x, y, options), raise_on_fail)

    _, analytic = kernel.loss_and_grad(p, x, y)
    fwd = build_forward(net)
    if method == "auto":
        method = "central" if _has_kinks(fwd) else "complex_step"
    y_dense = _dense_targets(net, y, x.shape[0])
    if method == "complex_step":
        oracle: _ComplexStep | _Differences = _ComplexStep(fwd, x, y_dense)
    else:
        kinks = _Kinks(net)
        probe = (lambda theta: kinks.arguments(theta, x, y_dense)) if kinks.any else None
        oracle = _Differences(lambda theta: kernel.module._loss(theta, x, y), probe, p)
    # Richardson: optimal near eps**(1/5); truncation and round-off ~ 1e-12
    h = 1e-3 * max(1.0, max((float(np.max(np.abs(v))) for v in p.values() if v.size), default=1.0))
    # a frozen parameter is a constant of the kernels (its gradient is 0 by declaration): only
    # the trainable ones are differentiated
    keys = net.trainable
    zero_rows = padding_rows(net)
    if sum(p[k].size for k in keys) > max_entries:
        report = _projections(oracle, analytic, p, h, n_projections, seed, method, keys, zero_rows)
    else:
        # the complex step reads only the network's forward graph and the point, never the
        # kernel: its per-entry values are reused for the same network and point (symnn check
        # asks for them for each backend and dtype)
        memo = _memo_key(net, p, x, y_dense, keys, zero_rows) if method == "complex_step" else None
        report = _entries(oracle, analytic, p, h, method, keys, zero_rows, memo)
    return _finish(report, raise_on_fail)


#: complex-step values per entry by network and point (:func:`_memo_key`), the latest few
_NUMERIC: "OrderedDict[str, tuple]" = OrderedDict()
_NUMERIC_KEEP = 4


def _memo_key(net, p: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, keys: tuple[str, ...],
              zero_rows: Mapping[str, int]) -> str:
    """A digest of everything the complex-step entries depend on: the network (its spec hash),
    the parameters checked and their values, the inputs, the dense targets and the rows whose
    gradient is zero by declaration. Equal digests mean equal numbers, so a reused entry can
    never be stale."""
    from .emit import spec_hash

    digest = hashlib.sha256(spec_hash(net, "float64").encode())
    digest.update(repr((keys, sorted(zero_rows.items()))).encode())
    for arr in (*(p[k] for k in sorted(p)), x, y):
        a = np.ascontiguousarray(arr)
        digest.update(repr((a.dtype.str, a.shape)).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _dense_targets(net, y: np.ndarray, n: int) -> np.ndarray:
    """Targets as the forward graph's Y: integer labels become one-hot rows."""
    if y.dtype.kind != "i":
        return y
    dense = np.zeros((n, int(net.n_out)))
    dense[np.arange(n), y] = 1.0
    return dense


def _entries(oracle: _Oracle, analytic: Mapping[str, np.ndarray], p: Mapping[str, np.ndarray],
             h: float, method: str, keys: tuple[str, ...],
             zero_rows: Mapping[str, int] | None = None, memo: str | None = None) -> GradcheckReport:
    """Entry by entry of the parameters ``keys``, each step scaled to its entry: NaN where not
    checkable at a kink. ``zero_rows``: a row of a parameter whose gradient is zero by
    declaration (an Embedding's padding_idx), where the reference is 0, not a difference.
    ``memo``: the key under which the numeric values are kept and found (:func:`_memo_key`)."""
    kept = _NUMERIC.get(memo) if memo is not None else None
    numeric, resolution, at_kink, shrunk = kept or _numeric_entries(oracle, p, h, keys, zero_rows or {})
    if memo is not None:  # the newest last; the oldest beyond _NUMERIC_KEEP dropped
        _NUMERIC.pop(memo, None)
        _NUMERIC[memo] = (numeric, resolution, at_kink, shrunk)
        while len(_NUMERIC) > _NUMERIC_KEEP:
            _NUMERIC.pop(next(iter(_NUMERIC)), None)
    report = _compare({k: analytic[k] for k in keys}, numeric, method,
                      resolution if method == "central" else None)
    report.at_kink, report.shrunk = tuple(at_kink), tuple(shrunk)
    return report


def _numeric_entries(oracle: _Oracle, p: Mapping[str, np.ndarray], h: float, keys: tuple[str, ...],
                     zero_rows: Mapping[str, int]) -> tuple[dict, dict, list, list]:
    """The numeric derivative of every entry of ``keys`` (see :func:`_entries`): values,
    resolutions, the entries at a kink and those whose step shrank."""
    numeric, resolution = {}, {}
    at_kink: list[tuple[str, tuple[int, ...]]] = []
    shrunk: list[tuple[str, tuple[int, ...]]] = []
    for k in keys:
        v = p[k]
        n, r = np.full(v.shape, np.nan), np.full(v.shape, np.nan)
        for idx in np.ndindex(v.shape):
            if zero_rows.get(k) == idx[0]:
                n[idx], r[idx] = 0.0, 0.0
                continue
            step = h * max(1.0, abs(float(v[idx])))
            est = oracle.estimate(_entry_point(p, k, idx), step, _SHRINK_LIMIT["entry"])
            where = (k, tuple(int(i) for i in idx))
            if est is None:
                at_kink.append(where)
                continue
            n[idx], r[idx] = est.value, est.resolution
            shrunk += [where] * est.shrunk
        numeric[k], resolution[k] = n, r
    # complex step resolves to rounding: no resolution excuses an entry there
    return numeric, resolution, at_kink, shrunk


def _projections(oracle: _Oracle, analytic: Mapping[str, np.ndarray], p: Mapping[str, np.ndarray],
                 h: float, n_projections: int, seed: int, method: str, keys: tuple[str, ...],
                 zero_rows: Mapping[str, int] | None = None) -> GradcheckReport:
    """``n_projections`` random directions u: <grad, u> against the derivative along u. A
    direction at a kink is replaced by a fresh one, up to 3 * n_projections tries; u is zero
    on ``zero_rows`` (see :func:`_entries`)."""
    rng = np.random.default_rng(seed)
    an, nu, res = {}, {}, {}
    at_kink: list[tuple[str, tuple[int, ...]]] = []
    shrunk: list[tuple[str, tuple[int, ...]]] = []
    for j in range(3 * n_projections):
        if len(nu) == n_projections:
            break
        u = {k: rng.uniform(0.5, 1.5, p[k].shape) * rng.choice([-1.0, 1.0], p[k].shape) for k in keys}
        for k, row in (zero_rows or {}).items():
            if k in u:
                u[k][row] = 0.0
        est = oracle.estimate(_line_point(p, u), h, _SHRINK_LIMIT["projection"])
        if est is None:
            at_kink.append((f"projection {j}", (0,)))
            continue
        an[f"projection {j}"] = np.array([sum(float(np.sum(analytic[k] * u[k])) for k in u)])
        nu[f"projection {j}"] = np.array([est.value])
        res[f"projection {j}"] = np.array([est.resolution])
        shrunk += [(f"projection {j}", (0,))] * est.shrunk
    report = _compare(an, nu, method, res if method == "central" else None)
    report.method = f"projection/{method}"
    report.at_kink, report.shrunk = tuple(at_kink), tuple(shrunk)
    return report


def _against_float64(kernel, ref_kernel, p: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                     options: dict) -> GradcheckReport:
    """A float32 kernel against the float64 kernel at the same (float32-representable) point,
    the float64 gradient itself checked numerically. Rows with a kink argument within float32
    rounding of its kink are left out of the comparison: there the float32 kernel may take the
    other branch of the kink, and its gradient is then correctly a different one."""
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    x64 = x.astype(np.float64)
    y64 = y if y.dtype.kind == "i" else y.astype(np.float64)
    reference = gradcheck(ref_kernel, p64, x64, y64, **options)
    net = kernel.network
    keep = ~_Kinks(net).float32_rows(p64, x64, _dense_targets(net, y64, x.shape[0]))
    rows = np.flatnonzero(keep) if not keep.all() else slice(None)
    if keep.any():
        _, analytic = kernel.loss_and_grad(p, x[rows], y[rows])
        _, g64 = ref_kernel.loss_and_grad(p64, x64[rows], y64[rows])
    else:  # nothing to compare: every entry unchecked
        analytic = {k: np.zeros(v.shape) for k, v in p.items()}
        g64 = {k: np.full(v.shape, np.nan) for k, v in p.items()}
    report = _compare(analytic, g64, "float64_reference", None)
    report.reference = reference
    report.rows_at_kink = tuple(int(i) for i in np.flatnonzero(~keep))
    return report


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
    """The kinks of a network, found once: its forward graph, per kinked layer the kink
    arguments of its activation as NumPy functions of the pre-activation, the user loss's as
    functions of (output, target), and with L1 the weights (|w| has its kink at 0)."""

    def __init__(self, net) -> None:
        self.fwd = build_forward(net)
        self.layers: list[tuple[int, list]] = []  # (index into fwd.z, kink argument functions)
        for i, act in enumerate(self.fwd.activations):
            if act.expr is not None:
                args = _kink_arguments(act.expr)
                fns = [sp.lambdify(registry.X, g, modules="numpy") for g in args]
                if fns:
                    self.layers.append((i, fns))
        #: (lo, hi, kink argument): the user losses' kinks, each on its output's columns
        self.loss: list[tuple[int, int, Callable]] = [
            (lo, hi, sp.lambdify((registry.P, registry.T), g, modules="numpy"))
            for loss, (lo, hi) in zip(net.losses, net.column_blocks(net.output_widths)) if loss.user
            for g in _kink_arguments(loss.expr)]
        #: the max poolings: a window's gradient goes to its maximum, so the loss has a kink
        #: wherever another tap overtakes it (:meth:`_pool_arguments`)
        self.pools = [n for n in ir.toposort([self.fwd.loss]) if n.op is ir.Op.MAX_POOL]
        self._pool_anchor: list[np.ndarray] | None = None
        weights = ([naming.weight(i) for i in range(1, len(net.layers) + 1)] if net.graph is None else
                   [n for n in net.param_shapes() if n.endswith(".weight") and len(net.param_shapes()[n]) >= 2])
        self.weights = weights if net.l1 else []
        # a dense chain runs as a plain loop; a layer graph through the interpreter
        self.chain = ([(naming.weight(i), naming.bias(i), _activation(a)) for i, a in enumerate(self.fwd.a, 1)]
                      if net.graph is None else None)

    @property
    def any(self) -> bool:
        """Whether the network has a kink anywhere (else no stencil needs probing)."""
        return bool(self.layers or self.loss or self.weights or self.pools)

    def _pool_arguments(self, vals: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Per max pooling, (rows, windows * taps): each window's maximum tap minus every tap,
        the maximum's place fixed at the first point probed (the check's centre, which the
        oracle probes first). A sign change is another tap overtaking it, the kink."""
        out, anchor = [], []
        for i, node in enumerate(self.pools):
            _, taps = _max_pool_index(np.real(vals[f"pool{i}"]), ir.geometry_values(node.arg))
            n = taps.shape[0]
            taps = taps.reshape(n, -1, taps.shape[-1])
            idx = (self._pool_anchor[i] if self._pool_anchor is not None
                   else np.argmax(taps, axis=-1))
            anchor.append(idx)
            with np.errstate(invalid="ignore"):  # a tap in the padding is -inf: no kink there
                gap = np.take_along_axis(taps, idx[..., None], axis=-1) - taps
            out.append(np.where(np.isfinite(gap), gap, np.nan).reshape(n, -1))
        if self._pool_anchor is None:
            self._pool_anchor = anchor
        return out

    def rows(self, X: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per row of ``X``: the smallest |g(z)| over every kinked pre-activation z and kink
        argument g (inf for a row with none)."""
        dist = np.full(X.shape[0], np.inf)
        if not self.layers:
            return dist
        vals = evaluate({str(i): self.fwd.z[i] for i, _ in self.layers}, {**params, "X": X})
        for i, fns in self.layers:
            z = np.real(vals[str(i)])
            dist = np.minimum(dist, _distance(fns, z).min(axis=1))
        return dist

    def per_row(self, theta: Mapping[str, np.ndarray], X: np.ndarray,
                Y: np.ndarray) -> list[np.ndarray]:
        """Every row-wise kink argument at ``theta``, one (rows, width) array per kinked layer
        and kink argument, then per kink argument of the loss (in output and target ``Y``).

        The forward graph's dense chain runs as a plain loop (``interpret.evaluate`` walks the
        graph on every call, 5x slower on a 20-layer network; a check probes thousands of
        times), each activation being its graph node's map with the interpreter's functions."""
        if not (self.layers or self.loss or self.pools):
            return []
        if self.chain is None:  # a layer graph
            wanted = {str(i): self.fwd.z[i] for i, _ in self.layers}
            wanted |= {f"pool{i}": node.src[0] for i, node in enumerate(self.pools)}
            vals = evaluate({**wanted, "out": self.fwd.output}, {**theta, "X": X})
            groups = [_full(f(vals[str(i)]), vals[str(i)].shape) for i, fns in self.layers for f in fns]
            groups += self._pool_arguments(vals)
            out = vals["out"]
        else:
            last = len(self.chain) if self.loss else max(i for i, _ in self.layers) + 1
            a, z = X, {}
            for i, (w, b, act) in enumerate(self.chain[:last]):
                z[i] = a @ theta[w].T + theta[b]
                a = act(z[i])
            groups = [_full(f(z[i]), z[i].shape) for i, fns in self.layers for f in fns]
            out = a
        return groups + [_full(f(out[:, lo:hi], Y[:, lo:hi]), out[:, lo:hi].shape) for lo, hi, f in self.loss]

    def loss_distance(self, out: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Element-wise: how far each (output, target) entry is from a kink of its loss (inf
        where its output's loss has none)."""
        dist = np.full(Y.shape, np.inf)
        for lo, hi, f in self.loss:
            dist[:, lo:hi] = np.minimum(dist[:, lo:hi], _distance([f], out[:, lo:hi], Y[:, lo:hi]))
        return dist

    def arguments(self, theta: Mapping[str, np.ndarray], X: np.ndarray,
                  Y: np.ndarray) -> np.ndarray:
        """Every kink argument at ``theta``, flat: the row-wise ones and the L1 weights."""
        parts = [g.ravel() for g in self.per_row(theta, X, Y)]
        parts += [np.ravel(theta[w]) for w in self.weights]
        return np.concatenate(parts).astype(np.float64, copy=False) if parts else np.zeros(0)

    def float32_rows(self, params: Mapping[str, np.ndarray], X: np.ndarray,
                     Y: np.ndarray) -> np.ndarray:
        """Rows where a float32 forward pass may fall on the other side of a kink than the
        float64 one: some kink argument's float64 value is within 4x the largest float32
        deviation seen for that argument (over all rows) of its kink. The deviation is
        measured by running the forward graph in both dtypes (the kernel rounds differently,
        hence the margin and the worst case over rows). An argument that is exactly 0 in both
        dtypes is no such place: both sides take the same branch (a max-pool window's maximum
        less itself, a tie of taps that a ReLU set to 0)."""
        near = np.zeros(X.shape[0], dtype=bool)
        p32 = {k: v.astype(np.float32) for k, v in params.items()}
        y32 = Y.astype(np.float32)
        with np.errstate(all="ignore"):
            pairs = zip(self.per_row(params, X, Y), self.per_row(p32, X.astype(np.float32), y32))
            for g64, g32 in pairs:
                dev = np.abs(g64 - g32.astype(np.float64))
                dev = float(np.max(dev[np.isfinite(dev)], initial=0.0))
                same_tie = (g64 == 0) & (g32 == 0)
                near |= ((np.abs(g64) < 4 * dev) & ~same_tie).any(axis=1)
        return near


def _activation(node: ir.Node) -> Callable[[np.ndarray], np.ndarray]:
    """A forward graph's activation node as a NumPy function of its pre-activation (real
    arguments), with the interpreter's functions."""
    if node.op is ir.Op.SOFTMAX:
        def softmax(z: np.ndarray) -> np.ndarray:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

        return softmax
    fn = sp.lambdify(node.arg.args, plain(node.arg.expr), modules=[FUNCTIONS, NUMPY])
    return lambda z: _full(fn(z), z.shape)


def _full(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as an array of ``shape`` (a constant function returns a scalar)."""
    return value if np.shape(value) == shape else np.broadcast_to(np.asarray(value), shape)


#: targets drawn for a gradient check, per declared kind (labels are drawn as ``arange(n) % K``)
_TARGET_DRAWS: dict[Targets, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]] = {
    Targets.REAL: lambda rng, shape: rng.normal(size=shape),
    Targets.PROBABILITY: lambda rng, shape: rng.uniform(0, 1, shape),
}


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
    """``(params, X, Y)`` for a gradient check: seeded parameters, standard-normal input rows
    (an index input's columns: integers in [0, its vocabulary), :func:`_draw_inputs`), each
    redrawn until every kink argument of every kinked pre-activation is at least ``margin``
    from zero (differences must not straddle a kink: single-entry steps of 1e-3 move a
    pre-activation by a few 1e-3), and targets that suit the loss (labels, [0, 1] or normal).
    Raises ``DataError`` if ``tries`` blocks of candidate rows give fewer than ``n`` good rows."""
    rng = np.random.default_rng(seed)
    kinks = _Kinks(net)
    if _couples_rows(net):
        params, X = _coupled_point(net, kinks, rng, n, seed, margin, tries)
        return params, X, _targets(net, kinks, rng, params, X, n, margin, tries)
    rows: list[np.ndarray] = []
    for attempt in range(tries):
        if attempt % 25 == 0:  # tiny first-layer weights can keep every row near a kink: new weights
            rows = []
            params = net.init_params(seed=seed + 7919 * (attempt // 25))
            if net.l1:  # |w| has a kink at 0: keep every weight `margin` away (steps reach 2e-3)
                for name, w in params.items():
                    if name.startswith("W") or name.endswith(".weight"):
                        params[name] = np.where(np.abs(w) < margin, np.where(w < 0, -margin, margin), w)
        cand = _draw_inputs(net, rng, max(n, 8))
        rows += list(cand[kinks.rows(cand, params) >= margin])
        if len(rows) >= n:
            break
    else:
        raise DataError(f"no inputs keep every kinked pre-activation {margin} from its kink "
                        f"after {tries} draws; try fewer rows")
    X = np.array(rows[:n]).reshape(n, _drawn_width(net))
    return params, X, _targets(net, kinks, rng, params, X, n, margin, tries)


def _draw_inputs(net, rng: np.random.Generator, rows: int) -> np.ndarray:
    """``rows`` packed input rows: standard normal, except an index input's columns, which get
    integers drawn uniformly from [0, vocabulary) (a normal value is no token id: every kernel
    refuses it). The integers are held as reals, as the packed X carries them."""
    X = rng.normal(size=(rows, _drawn_width(net)))
    for block in index_blocks(net):
        lo, hi = block.columns(DRAWN_LENGTH)
        X[:, lo:hi] = rng.integers(0, block.vocab, size=(rows, hi - lo))
    return X


#: the number of steps of the sequences drawn for a network whose sequences have a run-time
#: length (``sn.Input(None, F)``): enough for a loop's first, middle and last steps to differ
DRAWN_LENGTH = 5


def _drawn_width(net) -> int:
    """The entries of a drawn input row (sequences of run-time length: of DRAWN_LENGTH steps)."""
    return int(sp.sympify(net.n_in).subs(naming.T, DRAWN_LENGTH))


def _couples_rows(net) -> bool:
    """A layer whose output row depends on the other rows of the batch (a BatchNorm's batch
    statistics): rows cannot be drawn one by one."""
    return net.graph is not None and any(layer.COUPLES_ROWS for layer in net.graph.layers)


def _coupled_point(net, kinks: "_Kinks", rng: np.random.Generator, n: int, seed: int, margin: float,
                   tries: int) -> tuple[dict, np.ndarray]:
    """Parameters and a batch of ``n`` rows for a network that couples its rows: whole batches
    are drawn, and the one whose kinked pre-activations lie farthest from their kinks is kept.
    A batch norm centres each channel at zero, ReLU's kink, so with many entries no batch keeps
    them all ``margin`` away; the checks then step clear of the kinks on their own (each
    stencil is probed, and an entry whose stencil still crosses is not checkable)."""
    best: tuple[float, dict, np.ndarray] | None = None
    for attempt in range(min(tries, 50)):
        params = net.init_params(seed=seed + 7919 * attempt)
        X = _draw_inputs(net, rng, n)
        score = float(kinks.rows(X, params).min())
        if best is None or score > best[0]:
            best = (score, params, X)
        if score >= margin:
            break
    assert best is not None
    return best[1], best[2]


def _targets(net, kinks: "_Kinks", rng: np.random.Generator, params: dict, X: np.ndarray, n: int,
             margin: float, tries: int) -> np.ndarray:
    """Targets that suit each output's loss (labels, [0, 1] or normal), kept ``margin`` from
    a kinked user loss's kinks."""
    if net.takes_labels and not net.step_labels:
        return np.arange(n) % int(net.n_out)
    Y = _draw_targets(net, rng, n)
    if kinks.loss:  # a kinked user loss (Huber): targets away from the kinks in p - y too
        out = np.real(evaluate({"a": kinks.fwd.output}, {**params, "X": X})["a"])
        for _ in range(tries):
            bad = kinks.loss_distance(out, Y) < margin
            if not bad.any():
                break
            Y = np.where(bad, _draw_targets(net, rng, n), Y)
        else:
            raise DataError(f"no targets keep the loss {margin} from its kinks after {tries} draws")
    return Y


def _draw_targets(net, rng: np.random.Generator, n: int) -> np.ndarray:
    """Targets for every output, side by side: class rows one-hot (cycling through the
    classes), others drawn from what the output's loss declares."""
    blocks = []
    for loss, width, shape in zip(net.losses, net.output_widths, net.output_shapes):
        k, rows = int(shape[-1]), n * int(width) // int(shape[-1])  # a sequence (T, K): n*T rows of K
        if loss.takes_labels:
            blocks.append(np.eye(k)[np.arange(rows) % k].reshape(n, -1))
        else:
            blocks.append(_TARGET_DRAWS[loss.targets](rng, (rows, k)).reshape(n, -1))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)


def _finish(report: GradcheckReport, raise_on_fail: bool) -> GradcheckReport:
    if raise_on_fail and not report.ok:
        raise GradientCheckError(str(report))
    return report
