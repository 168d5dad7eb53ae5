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

Term = tuple[int, int]  # (a, b): a*n + b reals


def pareto(terms) -> frozenset[Term]:
    """The terms no other term bounds from above at every n >= 0 (both coefficients >=): the
    largest ``b`` of each ``a``, then by decreasing ``a`` each kept term has a larger ``b`` than
    every one kept before it."""
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


def term_code(a: int, b: int) -> str:
    """``3*n + 5`` in C (``n`` a ptrdiff_t)."""
    if a == 0:
        return str(b)
    term = "n" if a == 1 else f"{a}*n"
    return term if b == 0 else f"{term} + {b}"


@dataclass(frozen=True)
class Need:
    """A work size in reals: the largest of linear functions ``a*n + b`` of the batch ``n``."""

    terms: frozenset[Term]

    @staticmethod
    def linear(a: int, b: int) -> Need:
        return Need(frozenset({(a, b)}))

    def at(self, n: int) -> int:
        return max(a * n + b for a, b in self.terms)

    def bound(self) -> Term:
        """(a, b) with ``a*n + b >= self.at(n)`` for every ``n >= 0``: the header's macros."""
        return (max(a for a, _ in self.terms), max(b for _, b in self.terms))

    def plus(self, a: int, b: int) -> Need:
        return Need(frozenset((x + a, y + b) for x, y in self.terms))

    @property
    def single(self) -> Term | None:
        """The one term of a linear need, else None."""
        return next(iter(self.terms)) if len(self.terms) == 1 else None

    def sorted_terms(self) -> list[Term]:
        return sorted(self.terms)


@dataclass
class _Value:
    a: int
    b: int
    start: int
    stop: int  # the clock of its release; alive through [start, stop]

    def size(self, n: int) -> int:
        return self.a * n + self.b


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

    def __init__(self) -> None:
        self._values: list[_Value] = []
        self._clock = 0
        self._slots: list[Term] = []
        self._slot_of: list[int] = []
        self._free: list[int] = []

    def take(self, a: int, b: int) -> int:
        self._clock += 1
        self._values.append(_Value(a, b, self._clock, 1 << 62))
        fits = [s for s in self._free if self._slots[s][0] >= a and self._slots[s][1] >= b]
        if fits:
            slot = min(fits, key=lambda s: (self._slots[s], s))
            self._free.remove(slot)
        else:
            self._slots.append((a, b))
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

    def _by_slots(self) -> tuple[list[frozenset[Term]], Need]:
        """Each value at its slot's offset, the sum of the slots before it."""
        starts, a, b = [], 0, 0
        for sa, sb in self._slots:
            starts.append((a, b))
            a, b = a + sa, b + sb
        return [frozenset({starts[s]}) for s in self._slot_of], Need.linear(a, b)

    def _planned(self) -> tuple[list[frozenset[Term]], Need]:
        """Greedy by size at the design batch, first fit, then lifted to every batch."""
        vals = self._values
        n = LAYOUT_BATCH
        conflicts = self._conflicts()
        size = [v.size(n) for v in vals]
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
        terms: list[frozenset[Term]] = [frozenset({(0, 0)})] * len(vals)
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
                ends += [(a + vals[j].a, b + vals[j].b) for a, b in terms[j]]
            if ends:
                terms[i] = pareto(ends)
        need = pareto((a + vals[i].a, b + vals[i].b) for i in offset for a, b in terms[i])
        return terms, Need(need) if need else Need.linear(0, 0)

    def place(self, prefix: str) -> Placement:
        """The layout (the module's docstring); ``prefix`` names the C helper that takes the
        larger of two offsets."""
        vals = self._values
        terms, need = self._by_slots()
        if len(vals) <= PLAN_LIMIT:
            planned, planned_need = self._planned()
            if planned_need.at(LAYOUT_BATCH) <= need.at(LAYOUT_BATCH):
                terms, need = planned, planned_need
        lines: list[str] = []
        local: dict[frozenset[Term], str] = {}
        inits: list[str] = []
        uses_n = False
        for i in range(len(vals)):
            t = terms[i]
            if len(t) == 1:
                (a, b), = t
                inits.append("work" if (a, b) == (0, 0) else f"work + {term_code(a, b)}")
                uses_n |= a > 0
                continue
            if t not in local:
                parts = [term_code(a, b) for a, b in sorted(t)]
                expr = parts[0]
                for p in parts[1:]:
                    expr = f"{prefix}__zmax({expr}, {p})"
                local[t] = f"w{len(local)}"
                lines.append(f"const ptrdiff_t {local[t]} = {expr};")
            inits.append(f"work + {local[t]}")
            uses_n = True
        return Placement(inits, lines, need, uses_n)
