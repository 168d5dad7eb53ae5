"""Which rows each step trains on, and the one order in which their gradients are summed.

Data-parallel training must give the same parameters, bit for bit, on 1, 2 or 64 workers. Two
things make that so:

- **The batches do not depend on the workers.** The data are P *parts* (a dask array's row
  chunks, a dataframe's or Parquet's partitions, or ``parts=P`` contiguous pieces of in-memory
  arrays). In epoch ``e`` the rows of part ``j`` are shuffled by a generator seeded with
  ``(seed, e, j)`` and dealt into the epoch's S steps (``numpy.array_split``), S = ceil(rows /
  batch_size): step ``s`` trains on block ``(j, s)`` of every part, about ``batch_size`` rows
  in all, and every row once an epoch. A block is a batch to the emitted kernel.
- **The sum does not depend on the workers.** Block j's gradient is weighted by its share of
  the step's rows (of its kept steps, where the loss is a mean over padded sequences' kept
  steps: :func:`leaf`) and the P weighted gradients are added along one fixed binary tree over
  j = 0..P-1 (:func:`tree_sum`): a node [lo, hi) is the sum of [lo, mid) and [mid, hi), mid
  = lo + the largest power of two below hi - lo. A worker holding parts [a, b) adds the
  tree's nodes inside [a, b) (:func:`cover`) and sends only those; the driver finishes the
  tree from the nodes it receives. Floating-point addition is not associative, but it is
  deterministic: the same additions in the same order give the same bits on every machine
  that runs the same kernel.

Everything here is plain NumPy: the same code runs in the driver, in each worker, and in a
single process with ``client=None`` (the reference the tests compare against).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

Node = tuple[int, int]


def split(lo: int, hi: int) -> int:
    """The tree's split point of node [lo, hi) (hi - lo >= 2): lo + the largest power of two
    below hi - lo, so that the left child is a full power-of-two subtree."""
    return lo + (1 << ((hi - lo - 1).bit_length() - 1))


def cover(a: int, b: int, lo: int, hi: int) -> list[Node]:
    """The maximal nodes of the tree over [lo, hi) that lie inside [a, b), left to right."""
    if b <= lo or hi <= a or a >= b:
        return []
    if a <= lo and hi <= b:
        return [(lo, hi)]
    mid = split(lo, hi)
    return cover(a, b, lo, mid) + cover(a, b, mid, hi)


def node_sum(node: Node, leaf: Callable[[int], np.ndarray | None]) -> np.ndarray | None:
    """The sum of the leaves of ``node`` in the tree's order; a leaf may be None (an empty
    block), and a sum with one side None is the other side unchanged."""
    lo, hi = node
    if hi - lo == 1:
        return leaf(lo)
    mid = split(lo, hi)
    left, right = node_sum((lo, mid), leaf), node_sum((mid, hi), leaf)
    if left is None:
        return right
    if right is None:
        return left
    return left + right


def tree_sum(n_leaves: int, known: Mapping[Node, np.ndarray | None]) -> np.ndarray | None:
    """The root's sum, from nodes already summed (``known``: node -> sum, as :func:`cover`
    gives them) down to leaves; every leaf must lie under some known node."""

    def walk(node: Node) -> np.ndarray | None:
        if node in known:
            return known[node]
        lo, hi = node
        if hi - lo == 1:
            raise KeyError(f"no sum for part {lo}")
        mid = split(lo, hi)
        left, right = walk((lo, mid)), walk((mid, hi))
        if left is None:
            return right
        if right is None:
            return left
        return left + right

    return walk((0, n_leaves))


def ranges(n_parts: int, n_workers: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal ranges of parts for ``n_workers`` (fewer when there are fewer parts)."""
    k = max(1, min(n_parts, n_workers))
    bounds = [round(i * n_parts / k) for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


@dataclass(frozen=True)
class Schedule:
    """The epoch's blocks: ``rows(epoch, step, j)`` are the indices into part j that step
    ``step`` (0-based within the epoch) trains on."""

    sizes: tuple[int, ...]
    batch_size: int
    seed: int

    @property
    def n_rows(self) -> int:
        return sum(self.sizes)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.n_rows / self.batch_size))

    def order(self, epoch: int, j: int) -> list[np.ndarray]:
        """Part j's rows for each step of ``epoch``: a seeded permutation, dealt into the steps."""
        perm = np.random.default_rng([self.seed, epoch, j]).permutation(self.sizes[j])
        return np.array_split(perm, self.steps_per_epoch)

    def step_rows(self, epoch: int, step: int) -> list[int]:
        """How many rows each part gives step ``step`` of ``epoch`` (array_split's sizes)."""
        s = self.steps_per_epoch
        return [n // s + (1 if step < n % s else 0) for n in self.sizes]


def block_seed(seed: int, j: int) -> int:
    """The dropout seed of part j's blocks: distinct per part, so that two blocks of one step do
    not draw the same masks for their first rows."""
    return (seed + (j + 1) * 0x9E3779B97F4A7C15) % 2**64


def leaf(kernel, theta: np.ndarray, x: np.ndarray, y: np.ndarray, rows: np.ndarray, step: int,
         seed: int, j: int, weight: float, dropout: bool) -> np.ndarray | None:
    """Block (j, step)'s training gradient times its share of the step's rows, with the
    weighted loss appended (one vector, so one tree sums both); None for an empty block, and
    for a block of padded sequences whose every step is padding (its mean loss is 0/0,
    ``Kernel.holds_a_step``): its rows' share of the step's gradient is zero.

    Where the loss is the mean over one count of kept steps (``Kernel.counts_steps``: padded
    sequences, masked or labelled), a block's rows are not its share: its gradient and loss are
    times its kept steps c instead, and c is appended too, so that the tree's sum divided by
    its last entry (:func:`step_mean`) is the gradient of the mean over every kept step of the
    step, whichever part holds the padding."""
    if rows.size == 0:
        return None
    xb, yb = x[rows], y[rows]
    kept = kernel.kept_steps(xb, yb)
    if kept is not None:
        if not kept > 0:
            return None
        weight = kept
    elif kernel.padded_steps and not kernel.holds_a_step(xb, yb):
        return None
    extra = (block_seed(seed, j),) if dropout else ()
    loss, grad = kernel.module._train_gradient(theta, xb, yb, step, *extra)
    out = np.empty(grad.size + 1 + (kept is not None), dtype=grad.dtype)
    out[:grad.size] = grad
    out[grad.size] = loss
    if kept is not None:
        out[-1] = 1
    return out * out.dtype.type(weight)


def step_mean(kernel, vec: np.ndarray) -> np.ndarray:
    """The step's gradient with its loss appended, from the tree's sum of the blocks
    (:func:`leaf`): as it is, or divided by the kept steps summed in its last entry."""
    return vec[:-1] / vec[-1] if kernel.counts_steps else vec


def weights(counts: Sequence[int]) -> list[float]:
    """Each block's share of the step's rows."""
    total = sum(counts)
    return [c / total for c in counts]
