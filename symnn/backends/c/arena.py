"""Where each temporary of a C kernel lies in the caller's work buffer.

A kernel's temporaries have sizes ``a*n + b`` reals (``n`` the run-time batch) and lifetimes
(from the statement that takes them to the one after their last read). Two kinds share the
buffer: per-row values (activations, ``a > 0``) and fixed ones (a weight's gradient, a gemm
panel, ``a == 0``). Reusing whole *slots* (the first allocator here) cannot put a 256 x 256
gradient where two dead 128 x 256 activations lay, nor can any layout whose offsets are linear
in ``n``: which of the two is larger depends on ``n``.

So the layout is planned the way TensorFlow Lite's arena planner does ("greedy by size",
Pisarchyk and Lee, 2020), at a design batch :data:`LAYOUT_BATCH`: values in decreasing size, each
at the lowest offset where it overlaps no placed value that is alive at the same time. The
plan is then *lifted* to every ``n``: a value's offset becomes the largest end (offset + size,
as functions of ``n``) of the values alive with it that lay below it in the plan. Each offset is
so a maximum of linear functions of ``n``, evaluated when the kernel starts; two values alive
together never overlap at any ``n`` (the one above starts at or after the other's end, for every
``n``), and at the design batch every value lies at or below its planned offset. The need, the
largest end, is a maximum of linear functions too (:class:`Need`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

#: the batch at which the layout is planned; every batch gets a valid layout, batches near this
#: one the tightest
LAYOUT_BATCH = 64
#: the sequence length at which a network of run-time length (``sn.Input(None, F)``) is planned
LAYOUT_LENGTH = 16

#: a size's coefficients: (a, b) for a*n + b reals, or for a network whose sequences' length t
#: is given at each call (a, b, c) for a*n*t + b*n + c reals
Term = tuple[int, ...]

#: what each coefficient but the last multiplies in C, by the length of the terms
_VARIABLES = {2: ("n",), 3: ("n*steps", "n")}


def design_point(width: int) -> tuple[int, ...]:
    """The values of the terms' variables (and 1) where a layout of terms of ``width`` is planned."""
    return (LAYOUT_BATCH, 1) if width == 2 else (LAYOUT_BATCH * LAYOUT_LENGTH, LAYOUT_BATCH, 1)


def value_at(term: Term, point: tuple[int, ...]) -> int:
    return sum(c * x for c, x in zip(term, point))


def pareto(terms) -> frozenset[Term]:
    """The terms no other term bounds from above at every n (and t) >= 0, every coefficient >=.
    For (a, b): the largest ``b`` of each ``a``, then by decreasing ``a`` each kept term has a
    larger ``b`` than every one kept before it."""
    terms = set(terms)
    if any(len(t) != 2 for t in terms):
        return frozenset(t for t in terms
                         if not any(o != t and all(x >= y for x, y in zip(o, t)) for o in terms))
    best: dict[int, int] = {}
    for a, b in terms:
        if b > best.get(a, -1):
            best[a] = b
    out, top = [], -1
    for a in sorted(best, reverse=True):
        if best[a] > top:
            out.append((a, best[a]))
            top = best[a]
    return frozenset(out)


def term_code(*term: int) -> str:
    """``3*n + 5`` (or ``2*n*t + 3*n + 5``) in C (``n``, ``t`` ptrdiff_t)."""
    parts = [var if c == 1 else f"{c}*{var}" for c, var in zip(term, _VARIABLES[len(term)]) if c]
    if term[-1] or not parts:
        parts.append(str(term[-1]))
    return " + ".join(parts)


@dataclass(frozen=True)
class Need:
    """A work size in reals: the largest of linear functions ``a*n + b`` of the batch ``n`` (of
    ``a*n*t + b*n + c`` for sequences of run-time length ``t``)."""

    terms: frozenset[Term]

    @staticmethod
    def linear(*term: int) -> Need:
        return Need(frozenset({tuple(term)}))

    def at(self, n: int, t: int = 1) -> int:
        return max(value_at(term, (n, 1) if len(term) == 2 else (n * t, n, 1)) for term in self.terms)

    def bound(self) -> Term:
        """The term with every coefficient the largest of the terms': at least ``self.at`` at
        every ``n`` (and ``t``) >= 0, the header's macros."""
        return tuple(max(column) for column in zip(*self.terms))

    def plus(self, *term: int) -> Need:
        return Need(frozenset(tuple(x + y for x, y in zip(old, term)) for old in self.terms))

    @property
    def single(self) -> Term | None:
        """The one term of a linear need, else None."""
        return next(iter(self.terms)) if len(self.terms) == 1 else None

    def sorted_terms(self) -> list[Term]:
        return sorted(self.terms)


@dataclass
class _Value:
    term: Term
    start: int
    stop: int  # the clock of its release; alive through [start, stop]

    def size(self, point: tuple[int, ...]) -> int:
        return value_at(self.term, point)


@dataclass(frozen=True)
class Placement:
    """The lifted plan: ``inits[i]`` the C offset of value ``i`` (an expression of ``n`` and of
    ``lines``' locals), ``lines`` the locals to declare before them, ``need`` the total."""

    inits: list[str]
    lines: list[str]
    need: Need
    uses_n: bool


#: kernels of more temporaries than this (networks of a hundred layers and more, whose
#: statements are shared helpers) reuse whole slots instead: the plan's cost grows with the
#: square of the count, the slots' linearly
PLAN_LIMIT = 400


class Arena:
    """Values taken and released while a kernel is lowered (on one clock), placed when it ends.

    Each value is also given a *slot* as it is taken: a dead slot that holds it at every
    batch (both coefficients at least its own), else a new one. Slots are the layout of a
    kernel of more than :data:`PLAN_LIMIT` values, and the yardstick of the plan: where the
    plan would need more at the design batch, the slots are used."""

    def __init__(self, width: int = 2) -> None:
        #: the terms' length: 2 (a*n + b), or 3 for a run-time sequence length (a*n*t + b*n + c)
        self.width = width
        self._values: list[_Value] = []
        self._clock = 0
        self._slots: list[Term] = []
        self._slot_of: list[int] = []
        self._free: list[int] = []

    def take(self, *term: int) -> int:
        self._clock += 1
        self._values.append(_Value(tuple(term), self._clock, 1 << 62))
        fits = [s for s in self._free if all(x >= y for x, y in zip(self._slots[s], term))]
        if fits:
            slot = min(fits, key=lambda s: (self._slots[s], s))
            self._free.remove(slot)
        else:
            self._slots.append(tuple(term))
            slot = len(self._slots) - 1
        self._slot_of.append(slot)
        return len(self._values) - 1

    def release(self, value: int) -> None:
        self._clock += 1
        self._values[value].stop = self._clock
        self._free.append(self._slot_of[value])

    def _conflicts(self) -> list[list[int]]:
        """Per value, the values alive with it at some clock (a sweep over the start times)."""
        vals = self._values
        out: list[list[int]] = [[] for _ in vals]
        active: list[int] = []
        for i in sorted(range(len(vals)), key=lambda k: (vals[k].start, k)):
            v = vals[i]
            active = [j for j in active if vals[j].stop >= v.start]
            for j in active:
                out[i].append(j)
                out[j].append(i)
            active.append(i)
        return out

    def _width(self) -> int:
        return self.width

    def _by_slots(self) -> tuple[list[frozenset[Term]], Need]:
        """Each value at its slot's offset, the sum of the slots before it."""
        starts, at = [], (0,) * self._width()
        for slot in self._slots:
            starts.append(at)
            at = tuple(x + y for x, y in zip(at, slot))
        return [frozenset({starts[s]}) for s in self._slot_of], Need.linear(*at)

    def _planned(self) -> tuple[list[frozenset[Term]], Need]:
        """Greedy by size at the design batch (and length), first fit, then lifted to every
        batch (and length)."""
        vals = self._values
        point = design_point(self._width())
        conflicts = self._conflicts()
        size = [v.size(point) for v in vals]
        order = sorted((i for i in range(len(vals)) if size[i] > 0), key=lambda i: (-size[i], i))
        offset: dict[int, int] = {}
        placed: list[tuple[int, int]] = []  # (offset, value), by offset
        for i in order:
            v, at = vals[i], 0
            for o, j in placed:
                w = vals[j]
                if w.stop < v.start or v.stop < w.start:
                    continue  # not alive with it
                if o >= at + size[i]:
                    break
                at = max(at, o + size[j])
            offset[i] = at
            bisect.insort(placed, (at, i))
        # lift, from the bottom up: a value's offset is the largest end, at every n, of the values
        # alive with it that lie below it in the plan. Of those, only the ones below no other of
        # them count: j below k (alive together) means j's end <= k's offset at every n. Sets of
        # values as bits of an int.
        below = [0] * len(vals)
        terms: list[frozenset[Term]] = [frozenset({(0,) * self._width()})] * len(vals)
        for o, i in placed:
            mask = 0
            for j in conflicts[i]:
                if j in offset and offset[j] + size[j] <= o:
                    mask |= 1 << j
            below[i] = mask
            covered, rest = 0, mask
            while rest:
                k = rest.bit_length() - 1
                rest ^= 1 << k
                covered |= below[k]
            top, ends = mask & ~covered, []
            while top:
                j = top.bit_length() - 1
                top ^= 1 << j
                ends += [tuple(x + y for x, y in zip(t, vals[j].term)) for t in terms[j]]
            if ends:
                terms[i] = pareto(ends)
        need = pareto(tuple(x + y for x, y in zip(t, vals[i].term)) for i in offset for t in terms[i])
        return terms, Need(need) if need else Need.linear(*(0,) * self._width())

    def place(self, prefix: str) -> Placement:
        """The layout (the module's docstring); ``prefix`` names the C helper that takes the
        larger of two offsets."""
        vals = self._values
        terms, need = self._by_slots()
        if len(vals) <= PLAN_LIMIT:
            planned, planned_need = self._planned()
            point = design_point(self._width())
            if max(value_at(t, point) for t in planned_need.terms) <= max(value_at(t, point) for t in need.terms):
                terms, need = planned, planned_need
        lines: list[str] = []
        local: dict[frozenset[Term], str] = {}
        inits: list[str] = []
        uses_n = False
        for i in range(len(vals)):
            t = terms[i]
            if len(t) == 1:
                (term,) = t
                inits.append("work" if not any(term) else f"work + {term_code(*term)}")
                uses_n |= any(term[:-1])
                continue
            if t not in local:
                parts = [term_code(*term) for term in sorted(t)]
                expr = parts[0]
                for p in parts[1:]:
                    expr = f"{prefix}__zmax({expr}, {p})"
                local[t] = f"w{len(local)}"
                lines.append(f"const ptrdiff_t {local[t]} = {expr};")
            inits.append(f"work + {local[t]}")
            uses_n = True
        return Placement(inits, lines, need, uses_n)
