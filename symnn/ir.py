"""The tensor IR: a small, frozen, interned graph of tensor operations with symbolic shapes.

The linear-algebra structure of a network (matmuls, bias broadcasts, batch reductions) lives
here, never unrolled into scalars: a 784x4096 layer is one ``MATMUL`` node whose shape is
``(N, 4096)``. Element-wise work is one ``MAP`` node carrying a SymPy expression in scalar
symbols, so its derivative comes from ``sympy.diff`` at a cost independent of layer width.

Nodes are interned (building the same node twice returns the same object), which makes
tensor-level common-subexpression elimination free and equality cheap. Transformations
return new nodes. :func:`validate` is the separate structural checker.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any, Iterable

import sympy as sp

Dim = int | sp.Expr
Shape = tuple[Dim, ...]


class Op(Enum):
    # leaves
    INPUT = auto()  # arg: name ("X", "Y"); data fed by the caller
    PARAM = auto()  # arg: name ("W1", "b1"); differentiable parameters
    CONST = auto()  # arg: a SymPy number (scalar)
    # linear algebra
    MATMUL = auto()  # arg: (trans_a, trans_b); op(A) @ op(B)
    ADD_BIAS = auto()  # src (Z, b): Z + b broadcast over rows
    SUM_ROWS = auto()  # src (A,): sum over the batch axis, (N, d) -> (d,)
    # element-wise
    MAP = auto()  # arg: Elementwise; operands broadcast to the node's shape
    # row-wise
    SOFTMAX = auto()  # (N, d) -> (N, d), max-shifted
    LOGSUMEXP = auto()  # (N, d) -> (N, 1), max-shifted
    ROWSUM = auto()  # (N, d) -> (N, 1)
    SOFTMAX_CE = auto()  # fused (z, Y) -> (N, 1): logsumexp(z) - sum_k y_k z_k
    # reductions
    SUM = auto()  # all elements -> ()
    # column blocks
    CONCAT = auto()  # src (A_1, ..., A_k), each (N, d_i) -> (N, sum d_i): side by side
    SLICE = auto()  # arg: (lo, hi); (N, D) -> (N, hi - lo): columns lo..hi-1


#: the ops of leaves: data, parameters, constants, which plans name and never compute (every
#: other op has a rule in each backend, the interpreter, the pullbacks and the derivation's
#: printers: ``tests/unit/test_dispatch_tables.py``)
LEAF_OPS: frozenset[Op] = frozenset({Op.INPUT, Op.PARAM, Op.CONST})


@dataclass(frozen=True)
class Elementwise:
    """A scalar function applied element-wise: ``expr`` in ``args`` (one symbol per operand).

    ``grads`` optionally holds proven partial derivatives (one per arg, None = not needed);
    fused rewrites use it to replace SymPy's plain derivative by a cheaper form that
    :mod:`symnn.simplify.fuse` has checked equal. ``name`` labels the function in code.
    ``tex``, when set, makes the derivation print the map as a named function (``\\sigma``,
    ``\\tanh'``, ``\\ell``) defined once in its list of functions, instead of opening its
    expression where it is used.
    """

    name: str
    args: tuple[sp.Symbol, ...]
    expr: sp.Expr
    grads: tuple[sp.Expr | None, ...] | None = None
    tex: str | None = None

    def __post_init__(self) -> None:
        if self.grads is not None and len(self.grads) != len(self.args):
            raise ValueError("Elementwise.grads needs one entry per argument")


class _Interned(type):
    """Metaclass that returns the existing node for identical (op, src, arg, shape).

    The cache holds its nodes weakly (as tinygrad's does): a node no graph, program or
    caller references any more is freed, with its entry. The key holds the operand nodes
    themselves (compared by identity), so an operand lives as long as a node built on it and
    no key can name a freed node's recycled ``id``."""

    _cache: "weakref.WeakValueDictionary[tuple[Any, ...], Node]" = weakref.WeakValueDictionary()

    def __call__(cls, op: Op, src: tuple["Node", ...] = (), arg: Any = None, shape: Shape = ()):
        key = (op, tuple(src), arg, tuple(shape))
        node = cls._cache.get(key)
        if node is None:
            node = super().__call__(op, tuple(src), arg, tuple(shape))
            cls._cache[key] = node
        return node


@dataclass(frozen=True, eq=False)
class Node(metaclass=_Interned):
    """One tensor operation. ``src`` are operand nodes, ``arg`` op-specific data."""

    op: Op
    src: tuple["Node", ...]
    arg: Any
    shape: Shape

    def __repr__(self) -> str:
        arg = self.arg.name if isinstance(self.arg, Elementwise) else self.arg
        return f"Node({self.op.name}, arg={arg!r}, shape={self.shape}, n_src={len(self.src)})"

    @property
    def is_leaf(self) -> bool:
        return self.op in LEAF_OPS


# -- constructors with shape inference ----------------------------------------------------------
def input_(name: str, shape: Shape) -> Node:
    return Node(Op.INPUT, (), name, shape)


def param(name: str, shape: Shape) -> Node:
    return Node(Op.PARAM, (), name, shape)


def const(value: sp.Expr | float) -> Node:
    return Node(Op.CONST, (), sp.sympify(value), ())


def matmul(a: Node, b: Node, trans_a: bool = False, trans_b: bool = False) -> Node:
    (m, k1) = a.shape[::-1] if trans_a else a.shape
    (k2, n) = b.shape[::-1] if trans_b else b.shape
    if sp.simplify(sp.sympify(k1) - sp.sympify(k2)) != 0:
        raise ValueError(f"matmul inner dimensions differ: {a.shape} x {b.shape}")
    return Node(Op.MATMUL, (a, b), (trans_a, trans_b), (m, n))


def add_bias(z: Node, b: Node) -> Node:
    return Node(Op.ADD_BIAS, (z, b), None, z.shape)


def sum_rows(a: Node) -> Node:
    return Node(Op.SUM_ROWS, (a,), None, (a.shape[1],))


def map_(fn: Elementwise, *src: Node, shape: Shape | None = None) -> Node:
    if len(src) != len(fn.args):
        raise ValueError(f"{fn.name}: {len(fn.args)} arguments, {len(src)} operands")
    if shape is None:
        shape = max((s.shape for s in src), key=len)
    return Node(Op.MAP, tuple(src), fn, tuple(shape))


def softmax(z: Node) -> Node:
    return Node(Op.SOFTMAX, (z,), None, z.shape)


def logsumexp(z: Node) -> Node:
    return Node(Op.LOGSUMEXP, (z,), None, (z.shape[0], 1))


def rowsum(a: Node) -> Node:
    return Node(Op.ROWSUM, (a,), None, (a.shape[0], 1))


def softmax_ce(z: Node, y: Node) -> Node:
    return Node(Op.SOFTMAX_CE, (z, y), None, (z.shape[0], 1))


def sum_(a: Node) -> Node:
    return Node(Op.SUM, (a,), None, ())


def concat(*src: Node) -> Node:
    """The matrices ``src`` (one row count) side by side: ``[A_1 A_2 ...]``."""
    if len(src) < 2:
        raise ValueError(f"concat joins at least two operands, got {len(src)}")
    if any(len(s.shape) != 2 for s in src) or len({s.shape[0] for s in src}) != 1:
        raise ValueError(f"concat needs matrices of one row count: {[s.shape for s in src]}")
    return Node(Op.CONCAT, tuple(src), None, (src[0].shape[0], sum(int(s.shape[1]) for s in src)))


def slice_(a: Node, lo: int, hi: int) -> Node:
    """Columns ``lo`` to ``hi - 1`` of the matrix ``a`` (NumPy's ``a[:, lo:hi]``)."""
    if len(a.shape) != 2 or not 0 <= lo < hi <= int(a.shape[1]):
        raise ValueError(f"slice [:, {lo}:{hi}] of a tensor of shape {a.shape}")
    return Node(Op.SLICE, (a,), (int(lo), int(hi)), (a.shape[0], int(hi) - int(lo)))


# -- traversal and validation -------------------------------------------------------------------
def toposort(outputs: Iterable[Node]) -> list[Node]:
    """Nodes reachable from ``outputs``, operands before users, in a deterministic order."""
    seen: set[int] = set()
    order: list[Node] = []

    def visit(n: Node) -> None:
        stack = [(n, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for s in reversed(node.src):
                if id(s) not in seen:
                    stack.append((s, False))

    for o in outputs:
        visit(o)
    return order


def count_ops(outputs: Iterable[Node]) -> tuple[int, int]:
    """(tensor ops, scalar ops inside MAP expressions) of the graph reaching ``outputs``."""
    tensor, scalar = 0, 0
    for n in toposort(outputs):
        if n.is_leaf:
            continue
        tensor += 1
        if n.op is Op.MAP:
            scalar += int(sp.count_ops(n.arg.expr))
    return tensor, scalar


_ARITY = {
    Op.INPUT: 0, Op.PARAM: 0, Op.CONST: 0, Op.MATMUL: 2, Op.ADD_BIAS: 2, Op.SUM_ROWS: 1,
    Op.SOFTMAX: 1, Op.LOGSUMEXP: 1, Op.ROWSUM: 1, Op.SOFTMAX_CE: 2, Op.SUM: 1,
    Op.SLICE: 1,
}  # fmt: skip


def validate(outputs: Iterable[Node]) -> None:
    """Check arity, operand ranks and MAP broadcasting of every node; raise ValueError."""
    for n in toposort(outputs):
        if n.op is Op.MAP:
            if not isinstance(n.arg, Elementwise) or len(n.src) != len(n.arg.args):
                raise ValueError(f"{n}: MAP needs an Elementwise with one arg per operand")
            free = n.arg.expr.free_symbols - set(n.arg.args)
            if any(not _is_dim_symbol(s) for s in free):
                raise ValueError(f"{n}: expression has unbound symbols {free}")
            for s in n.src:
                if not _broadcasts(s.shape, n.shape):
                    raise ValueError(f"{n}: operand shape {s.shape} does not broadcast to {n.shape}")
        elif n.op is Op.CONCAT:
            if len(n.src) < 2 or len({s.shape[0] for s in n.src}) != 1 \
                    or sum(int(s.shape[1]) for s in n.src) != n.shape[1]:
                raise ValueError(f"{n}: CONCAT needs two or more matrices of one row count")
        elif len(n.src) != _ARITY[n.op]:
            raise ValueError(f"{n}: {n.op.name} takes {_ARITY[n.op]} operands, got {len(n.src)}")
        if n.op in (Op.MATMUL, Op.SOFTMAX, Op.LOGSUMEXP, Op.ROWSUM, Op.SUM_ROWS, Op.CONCAT, Op.SLICE):
            if any(len(s.shape) != 2 for s in n.src):
                raise ValueError(f"{n}: operands must be matrices")


def _is_dim_symbol(s: sp.Symbol) -> bool:
    return s.name in ("N",) or s.name.startswith("n_")


def _broadcasts(src: Shape, dst: Shape) -> bool:
    if src == ():
        return True
    if len(src) == 1:
        return len(dst) == 2 and src[0] == dst[1] or tuple(src) == tuple(dst)
    if len(src) == 2 and len(dst) == 2:
        return src[0] == dst[0] and (src[1] == dst[1] or src[1] == 1)
    return False
