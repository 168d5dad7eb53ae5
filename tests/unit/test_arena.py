"""The work arena (symnn.backends.c.arena): values alive together never overlap, at any batch.

The layout is planned at one design batch and lifted to every batch; these tests draw
lifetimes and sizes (per-row and fixed, as a kernel's activations and gradients are), evaluate
the printed C offsets in Python, and check every pair of values alive together at batches far
from the design one, that the need covers every value, and that the plan never needs more
than the slot reuse it replaces at the design batch."""

from __future__ import annotations

import re

import numpy as np
import pytest

from symnn.backends.c import arena
from symnn.backends.c.arena import Arena, Need, pareto

BATCHES = (0, 1, 3, 17, arena.LAYOUT_BATCH, 200, 4096)


def _offsets(placed: arena.Placement, n: int) -> list[int]:
    """The printed offsets evaluated at ``n`` (the locals first, then each ``work + ...``)."""
    env: dict[str, int] = {"n": n}
    zmax = "p__zmax"
    for line in placed.lines:
        name, expr = re.fullmatch(r"const ptrdiff_t (w\d+) = (.*);", line).groups()
        env[name] = eval(expr.replace(zmax, "max"), {"max": max}, env)  # noqa: S307 - our own output
    out = []
    for init in placed.inits:
        out.append(0 if init == "work" else eval(init.removeprefix("work + "), {}, env))  # noqa: S307
    return out


def _draw(rng: np.random.Generator, count: int) -> tuple[Arena, list[tuple[int, int, int, int]]]:
    """An arena fed ``count`` values in a random order of takes and releases; each value's
    (a, b, start, stop) on the arena's clock."""
    a = Arena()
    alive: list[int] = []
    spans: dict[int, list[int]] = {}
    sizes: dict[int, tuple[int, int]] = {}
    clock = 0
    while len(sizes) < count or alive:
        if len(sizes) < count and (not alive or rng.random() < 0.55):
            kind = rng.integers(3)
            size = ((int(rng.integers(1, 300)), 0) if kind == 0 else (0, int(rng.integers(1, 70_000))) if kind == 1
                    else (int(rng.integers(1, 50)), int(rng.integers(1, 5000))))
            v = a.take(*size)
            clock += 1
            sizes[v], spans[v] = size, [clock, 1 << 62]
            alive.append(v)
        else:
            v = alive.pop(int(rng.integers(len(alive))))
            if rng.random() < 0.9:  # the rest stay alive to the end (a train step's gradients)
                a.release(v)
                clock += 1
                spans[v][1] = clock
    return a, [(*sizes[v], *spans[v]) for v in range(count)]


@pytest.mark.parametrize("seed", range(12))
def test_values_alive_together_never_overlap_at_any_batch(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, values = _draw(rng, int(rng.integers(5, 120)))
    placed = a.place("p")
    for n in BATCHES:
        at = _offsets(placed, n)
        need = placed.need.at(n)
        for i, (ai, bi, si, ei) in enumerate(values):
            size_i = ai * n + bi
            assert at[i] >= 0 and at[i] + size_i <= need, (seed, n, i)
            for j in range(i):
                aj, bj, sj, ej = values[j]
                if ei < sj or ej < si:
                    continue  # never alive together
                size_j = aj * n + bj
                assert at[i] + size_i <= at[j] or at[j] + size_j <= at[i], (seed, n, i, j)


@pytest.mark.parametrize("seed", range(6))
def test_the_plan_needs_no_more_than_slot_reuse_at_the_design_batch(seed: int) -> None:
    """The plan replaces the slots only where it is no larger at the design batch, and a
    kernel of more values than PLAN_LIMIT keeps the slots (linear offsets, no locals)."""
    rng = np.random.default_rng(100 + seed)
    a, _ = _draw(rng, 60)
    slots = a._by_slots()[1]
    assert a.place("p").need.at(arena.LAYOUT_BATCH) <= slots.at(arena.LAYOUT_BATCH)
    big, _ = _draw(rng, arena.PLAN_LIMIT + 1)
    placed = big.place("p")
    assert placed.lines == [] and placed.need == big._by_slots()[1]


def test_a_fixed_gradient_takes_the_place_of_two_dead_activations() -> None:
    """Two activations of n x 256 die; a 256 x 256 gradient then lies where they lay, with an
    activation alive beside it: the need is the larger of the two forms, 512n (the two
    activations) and 256n + 65536 (the gradient and the third), where reusing whole slots
    needed their sum, 512n + 65536."""
    a = Arena()
    x, y = a.take(256, 0), a.take(256, 0)
    a.release(x)
    a.release(y)
    a.take(0, 65536)
    a.take(256, 0)
    placed = a.place("p")
    assert a._by_slots()[1] == Need.linear(512, 65536)
    for n in (0, 1, 64, 128, 256, 1000):
        assert placed.need.at(n) == max(512 * n, 256 * n + 65536)


def test_need_terms_and_bounds() -> None:
    need = Need(pareto([(256, 0), (0, 65536), (100, 10), (256, 0), (0, 100), (50, 5)]))
    assert need.terms == {(256, 0), (100, 10), (0, 65536)}  # (50, 5) and (0, 100) are bounded
    assert need.at(0) == 65536 and need.at(1000) == 256_000
    assert need.bound() == (256, 65536)
    assert all(need.bound()[0] * n + need.bound()[1] >= need.at(n) for n in BATCHES)
    assert need.plus(3, 4).at(10) == need.at(10) + 34
    assert Need.linear(7, 2).single == (7, 2) and need.single is None
