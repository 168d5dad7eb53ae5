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

import functools

import weakref
from dataclasses import dataclass, field, fields
from enum import Enum, auto
from typing import Any, Iterable, Sequence

import sympy as sp

from .naming import T  # naming imports nothing of the IR

Dim = int | sp.Expr
Shape = tuple[Dim, ...]


class Op(Enum):
    # leaves
    INPUT = auto()  # arg: name ("X", "Y"); data fed by the caller
    PARAM = auto()  # arg: name ("W1", "b1"); differentiable parameters
    CONST = auto()  # arg: a SymPy number (scalar)
    VAR = auto()  # arg: name; a loop body's placeholder: its carry, a step of a sequence, an invariant
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
    # spatial (arg: a ConvGeometry or PoolGeometry; each sample's (C, H, W) stored row-major as
    # one row of C*H*W, the layout of a contiguous NCHW tensor)
    CONV = auto()  # src (X, W): (N, C*H*W), (O, C/g*kh*kw) -> (N, O*Ho*Wo), cross-correlation
    CONV_GRAD_INPUT = auto()  # src (G, W): (N, O*Ho*Wo) -> (N, C*H*W), the transposed convolution
    CONV_GRAD_WEIGHT = auto()  # src (X, G) -> (O, C/g*kh*kw)
    CHANNEL_BIAS = auto()  # src (Z, b), arg (C, P): Z + b[c] on each channel's P positions
    CHANNEL_SUM = auto()  # src (A,), arg (C, P): (N, C*P) or (C*P,) -> (C,), summed over N and positions
    CHANNEL_EXPAND = auto()  # src (v,), arg (C, P): (C,) -> (C*P,), v[c] on each of channel c's positions
    MAX_POOL = auto()  # src (X,): (N, C*H*W) -> (N, C*Ho*Wo), each window's maximum
    MAX_POOL_GRAD = auto()  # src (X, G): G routed to each window's first maximum, summed
    AVG_POOL = auto()  # src (X,): each window's mean (zeros of the padding counted, as PyTorch)
    AVG_POOL_GRAD = auto()  # src (G,): (N, C*Ho*Wo) -> (N, C*H*W), G spread over each window
    # embeddings (arg (V, D, the padding row or -1)): indices travel as
    # reals holding integers in [0, V), checked before any kernel runs
    GATHER = auto()  # src (I, W): (N, T), (V, D) -> (N, T*D), row n is W[I[n,0]], ..., W[I[n,T-1]]
    GATHER_GRAD = auto()  # src (I, G): (N, T), (N, T*D) -> (V, D), G's D-blocks added into rows I
    # sequences: a sample's (T, F) stored row-major as one row of T*F (PyTorch's batch-first
    # (N, T, F) layout, contiguous)
    RESHAPE = auto()  # src (A,): the same entries in row-major order, (N, T*F) <-> (N*T, F); a view
    SCAN = auto()  # src (C0, S_1.., V_1..), arg Scan: (N, T*E), a loop over the T steps (recurrence)


#: the ops of leaves: data, parameters, constants, which plans name and never compute (every
#: other op has a rule in each backend, the interpreter, the pullbacks and the derivation's
#: printers: ``tests/unit/test_dispatch_tables.py``)
LEAF_OPS: frozenset[Op] = frozenset({Op.INPUT, Op.PARAM, Op.CONST, Op.VAR})


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


@dataclass(frozen=True)
class ConvGeometry:
    """The sizes of a 2-D convolution (a 1-D one has ``h = kh = 1``), fixed at compile time:
    ``c`` input channels of ``h`` x ``w``, ``o`` output channels, a ``kh`` x ``kw`` kernel,
    strides, zero padding on each side (top, bottom, left, right: "same" may pad one more
    on the far side, as PyTorch), dilations and groups. PyTorch's ``conv2d`` semantics:
    ``y[o, i, j] = sum_{c, a, b} w[o, c, a, b] x[g*C/G + c, i*sh + a*dh - pt, j*sw + b*dw - pl]``
    for output channel ``o`` of group ``g``."""

    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    pt: int = 0
    pb: int = 0
    pl: int = 0
    pr: int = 0
    dh: int = 1
    dw: int = 1
    groups: int = 1

    def __post_init__(self) -> None:
        if min(self.c, self.h, self.w, self.o, self.kh, self.kw, self.sh, self.sw, self.dh, self.dw,
               self.groups) < 1 or min(self.pt, self.pb, self.pl, self.pr) < 0:
            raise ValueError(f"invalid convolution geometry {self}")
        if self.c % self.groups or self.o % self.groups:
            raise ValueError(f"groups={self.groups} must divide the channels in ({self.c}) and out ({self.o})")
        if self.ho < 1 or self.wo < 1:
            raise ValueError(f"the kernel ({self.kh}x{self.kw}, dilation {self.dh}x{self.dw}) is larger than "
                             f"the padded input ({self.h + self.pt + self.pb}x{self.w + self.pl + self.pr})")

    @property
    def ho(self) -> int:
        return (self.h + self.pt + self.pb - self.dh * (self.kh - 1) - 1) // self.sh + 1

    @property
    def wo(self) -> int:
        return (self.w + self.pl + self.pr - self.dw * (self.kw - 1) - 1) // self.sw + 1

    @property
    def in_size(self) -> int:
        """Entries of one input sample: C*H*W."""
        return self.c * self.h * self.w

    @property
    def out_size(self) -> int:
        return self.o * self.ho * self.wo

    @property
    def weight_cols(self) -> int:
        """Columns of the weight as a matrix (O, C/g*kh*kw): one output channel's taps."""
        return self.c // self.groups * self.kh * self.kw


@dataclass(frozen=True)
class PoolGeometry:
    """The sizes of a 2-D pooling window over ``c`` channels of ``h`` x ``w`` (1-D: ``h = kh =
    1``): a ``kh`` x ``kw`` window, strides, padding on each side, dilations (max pooling),
    ``ceil_mode`` and, for average pooling, whether the padding's zeros count in the divisor
    (PyTorch's ``count_include_pad``, default True). PyTorch's output sizes and semantics."""

    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int = 0
    pb: int = 0
    pl: int = 0
    pr: int = 0
    dh: int = 1
    dw: int = 1
    ceil_mode: bool = False
    count_include_pad: bool = True

    def __post_init__(self) -> None:
        if min(self.c, self.h, self.w, self.kh, self.kw, self.sh, self.sw, self.dh, self.dw) < 1 \
                or min(self.pt, self.pb, self.pl, self.pr) < 0:
            raise ValueError(f"invalid pooling geometry {self}")
        if self.ho < 1 or self.wo < 1:
            raise ValueError(f"the pooling window ({self.kh}x{self.kw}) is larger than the padded input "
                             f"({self.h + self.pt + self.pb}x{self.w + self.pl + self.pr})")

    @staticmethod
    def _out(size: int, lo: int, hi: int, k: int, s: int, d: int, ceil: bool) -> int:
        span = size + lo + hi - d * (k - 1) - 1
        out = (span + (s - 1 if ceil else 0)) // s + 1
        if ceil and (out - 1) * s >= size + lo:  # PyTorch: the last window must start inside
            out -= 1
        return out

    @property
    def ho(self) -> int:
        return self._out(self.h, self.pt, self.pb, self.kh, self.sh, self.dh, self.ceil_mode)

    @property
    def wo(self) -> int:
        return self._out(self.w, self.pl, self.pr, self.kw, self.sw, self.dw, self.ceil_mode)

    @property
    def in_size(self) -> int:
        return self.c * self.h * self.w

    @property
    def out_size(self) -> int:
        return self.c * self.ho * self.wo

    @property
    def has_empty_window(self) -> bool:
        """Whether a window sees only padding along an axis (its maximum would be -inf: PyTorch
        itself writes out of bounds in that case's backward pass)."""
        for out, size, lo, k, s, d in ((self.ho, self.h, self.pt, self.kh, self.sh, self.dh),
                                       (self.wo, self.w, self.pl, self.kw, self.sw, self.dw)):
            for i in range(out):
                if not any(0 <= i * s - lo + a * d < size for a in range(k)):
                    return True
        return False


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


@dataclass(frozen=True)
class Scan:
    """A loop over ``length`` steps, the arg of a SCAN node: a recurrence written once, as a
    graph of one step (its *body*), so that neither a derivation nor emitted code grows with
    the number of steps.

    The body computes ``new_carry`` (N, S) and ``out`` (N, E) from placeholders (``VAR``
    leaves, which only the body holds): ``carry``, the value the previous step left (the SCAN's
    first operand before the first step); ``steps[i]``, step t of sequence operand i (a sample's
    (T, F_i) block, row-major); ``invariants[j]``, operand j, the same at every step (a
    recurrent weight). The SCAN's value stacks each step's ``out``: row n is
    ``out_0[n] | out_1[n] | ... | out_{T-1}[n]``, step t at columns t*E .. t*E + E - 1 whichever
    the direction (``reverse`` runs t = T-1 down to 0). A forward pass's scan outputs its carries
    (``out is new_carry``), which its pullback, another SCAN run the other way, reads back;
    it may also store ``residuals``, values of the step its pullback reads instead of computing
    them again (an LSTM's gates): ``out`` is then ``CONCAT(new_carry, *residuals)``. Residual
    columns are the pullback's own: nothing else reads them, and no cotangent flows from them.
    ``label`` names the layer that made it; ``record`` keeps the reverse sweep that derived a
    pullback's body, for the derivation (it takes no part in equality)."""

    length: int
    carry: "Node"
    steps: tuple["Node", ...]
    invariants: tuple["Node", ...]
    new_carry: "Node"
    out: "Node"
    reverse: bool = False
    label: str = "scan"
    residuals: tuple["Node", ...] = ()
    #: its pullback lets no cotangent through the carry entering steps 0, k, 2k, ... (truncated
    #: backpropagation through time); 0: none truncated
    truncate: int = 0
    #: the carry restarts from zeros (not the body's new carry) after each step t with
    #: t % reset == 0: how a truncated pullback cuts its recurrence; 0: never
    reset: int = 0
    record: Any = field(default=None, compare=False)

    @property
    def carried(self) -> int:
        """The columns of the carried value (the first of each step's output, for a forward scan)."""
        return int(self.carry.shape[1])

    def placeholders(self) -> tuple["Node", ...]:
        """The body's leaves in operand order: the carry, the steps, the invariants."""
        return (self.carry, *self.steps, *self.invariants)

    def nodes(self) -> list["Node"]:
        """The body's nodes, operands first."""
        return toposort([self.new_carry, self.out])


def matrix_shape(shape: Shape) -> Shape:
    """A parameter's shape as the IR holds it: a tensor of rank > 2 (a convolution's weight
    (O, C/g, kh, kw)) as the matrix of its rows, (O, C/g*kh*kw); the same memory, row-major.
    A scalar (a BatchNorm's ``num_batches_tracked``) as a vector of one entry, so that every
    backend holds each parameter behind a pointer."""
    if len(shape) == 0:
        return (1,)
    if len(shape) <= 2:
        return tuple(shape)
    cols = 1
    for d in shape[1:]:
        cols *= int(d)
    return (shape[0], cols)


# -- constructors with shape inference ----------------------------------------------------------
def input_(name: str, shape: Shape) -> Node:
    return Node(Op.INPUT, (), name, shape)


def param(name: str, shape: Shape) -> Node:
    return Node(Op.PARAM, (), name, shape)


def const(value: sp.Expr | float) -> Node:
    """A scalar constant: a number or a SymPy expression (``strict``: never a string to parse)."""
    return Node(Op.CONST, (), sp.sympify(value, strict=True), ())


def _differ(a: sp.Expr, b: sp.Expr) -> bool:
    """Whether the sizes ``a`` and ``b`` differ: ``expand`` decides the products and sums of
    symbols sizes are made of; SymPy's ``simplify`` (slow, and its first call imports
    sympy.physics) only where that leaves something. ``strict``: a size is a number or a SymPy
    expression, never a string to parse."""
    d = sp.expand(sp.sympify(a, strict=True) - sp.sympify(b, strict=True))
    return d != 0 and sp.simplify(d) != 0


def matmul(a: Node, b: Node, trans_a: bool = False, trans_b: bool = False) -> Node:
    (m, k1) = a.shape[::-1] if trans_a else a.shape
    (k2, n) = b.shape[::-1] if trans_b else b.shape
    if _differ(k1, k2):
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
    return Node(Op.CONCAT, tuple(src), None, (src[0].shape[0], column(sum(s.shape[1] for s in src))))


def slice_(a: Node, lo: int, hi: int) -> Node:
    """Columns ``lo`` to ``hi - 1`` of the matrix ``a`` (NumPy's ``a[:, lo:hi]``)."""
    lo, hi = column(lo), column(hi)
    if len(a.shape) != 2 or not _ordered(0, lo, hi, a.shape[1]) or lo == hi:
        raise ValueError(f"slice [:, {lo}:{hi}] of a tensor of shape {a.shape}")
    return Node(Op.SLICE, (a,), (lo, hi), (a.shape[0], column(hi - lo)))


def column(c) -> "int | sp.Expr":
    """A column index or width: an int, or a polynomial in the run-time sequence length T."""
    if isinstance(c, (int, sp.Integer)):
        return int(c)
    c = sp.expand(sp.sympify(c))
    return int(c) if c.is_Integer else c


def _ordered(*points) -> bool:
    """Whether ``points`` never decrease, for every value of the run-time dimensions (each
    difference a polynomial in T >= 1 with non-negative coefficients once T - 1 is put for T)."""
    if all(isinstance(p, int) for p in points):
        return all(a <= b for a, b in zip(points, points[1:]))
    s = sp.Symbol("s", nonnegative=True)
    for a, b in zip(points, points[1:]):
        d = sp.expand(sp.sympify(b - a))
        if not d.free_symbols:
            if int(d) < 0:
                return False
        elif any(c < 0 for c in sp.Poly(sp.expand(d.subs(T, s + 1)), s).coeffs()):
            return False
    return True


def conv(x: Node, w: Node, geom: ConvGeometry) -> Node:
    """The cross-correlation of the samples ``x`` (N, C*H*W) with the weight ``w`` (O, C/g*kh*kw)."""
    _require(x, geom.in_size, "conv input")
    if tuple(w.shape) != (geom.o, geom.weight_cols):
        raise ValueError(f"conv weight of shape {w.shape}, the geometry needs {(geom.o, geom.weight_cols)}")
    return Node(Op.CONV, (x, w), geom, (x.shape[0], geom.out_size))


def conv_grad_input(g: Node, w: Node, geom: ConvGeometry) -> Node:
    _require(g, geom.out_size, "conv cotangent")
    return Node(Op.CONV_GRAD_INPUT, (g, w), geom, (g.shape[0], geom.in_size))


def conv_grad_weight(x: Node, g: Node, geom: ConvGeometry) -> Node:
    _require(x, geom.in_size, "conv input")
    _require(g, geom.out_size, "conv cotangent")
    return Node(Op.CONV_GRAD_WEIGHT, (x, g), geom, (geom.o, geom.weight_cols))


def channel_bias(z: Node, b: Node, channels: int, positions: int) -> Node:
    """``z`` (N, C*P) plus ``b[c]`` on each of channel c's P positions (a convolution's bias)."""
    _require(z, channels * positions, "channel bias operand")
    if tuple(b.shape) != (channels,):
        raise ValueError(f"channel bias of shape {b.shape}, expected ({channels},)")
    return Node(Op.CHANNEL_BIAS, (z, b), (int(channels), int(positions)), z.shape)


def channel_sum(a: Node, channels: int, positions: int) -> Node:
    """Per channel, the sum of ``a`` (N, C*P), or of the vector ``a`` (C*P,), over the batch
    and the channel's P positions."""
    if len(a.shape) == 1:
        if int(a.shape[0]) != channels * positions:
            raise ValueError(f"channel sum of a vector of shape {a.shape}, expected ({channels * positions},)")
    else:
        _require(a, channels * positions, "channel sum operand")
    return Node(Op.CHANNEL_SUM, (a,), (int(channels), int(positions)), (int(channels),))


def channel_expand(v: Node, channels: int, positions: int) -> Node:
    """The vector ``v`` (C,) spread over each channel's P positions: (C*P,), ``v[c]`` at
    ``c*P .. c*P + P - 1``. An element-wise map then broadcasts it over the rows of an image
    batch (N, C*P): a per-channel statistic or affine factor, as batch normalisation needs."""
    if tuple(v.shape) != (channels,):
        raise ValueError(f"channel expand of shape {v.shape}, expected ({channels},)")
    return Node(Op.CHANNEL_EXPAND, (v,), (int(channels), int(positions)), (int(channels) * int(positions),))


def max_pool(x: Node, geom: PoolGeometry) -> Node:
    _require(x, geom.in_size, "max pool input")
    return Node(Op.MAX_POOL, (x,), geom, (x.shape[0], geom.out_size))


def max_pool_grad(x: Node, g: Node, geom: PoolGeometry) -> Node:
    _require(x, geom.in_size, "max pool input")
    _require(g, geom.out_size, "max pool cotangent")
    return Node(Op.MAX_POOL_GRAD, (x, g), geom, x.shape)


def avg_pool(x: Node, geom: PoolGeometry) -> Node:
    _require(x, geom.in_size, "average pool input")
    if (geom.dh, geom.dw) != (1, 1):  # PyTorch's average pooling has no dilation
        raise ValueError(f"an average pool has no dilation, got {(geom.dh, geom.dw)}")
    return Node(Op.AVG_POOL, (x,), geom, (x.shape[0], geom.out_size))


def avg_pool_grad(g: Node, geom: PoolGeometry) -> Node:
    _require(g, geom.out_size, "average pool cotangent")
    if (geom.dh, geom.dw) != (1, 1):
        raise ValueError(f"an average pool has no dilation, got {(geom.dh, geom.dw)}")
    return Node(Op.AVG_POOL_GRAD, (g,), geom, (g.shape[0], geom.in_size))


def gather(idx: Node, w: Node, padding_idx: int = -1) -> Node:
    """The rows of ``w`` (V, D) that the indices ``idx`` (N, T) name, side by side: (N, T*D),
    an embedding's output in PyTorch's (N, T, D) layout. ``padding_idx`` (or -1) is the row
    the pullback leaves without gradient; the forward pass reads it as any other."""
    if len(idx.shape) != 2 or len(w.shape) != 2:
        raise ValueError(f"gather of indices {idx.shape} from a table {w.shape}: both must be matrices")
    v, d = int(w.shape[0]), int(w.shape[1])
    if not -1 <= padding_idx < v:
        raise ValueError(f"padding row {padding_idx} of a table of {v} rows")
    return Node(Op.GATHER, (idx, w), (v, d, int(padding_idx)), (idx.shape[0], column(idx.shape[1] * d)))


def gather_grad(idx: Node, g: Node, vocab: int, dim: int, padding_idx: int = -1) -> Node:
    """The pullback of :func:`gather` to its table: (V, D), each D-block of ``g`` (N, T*D) added
    into the row its index names; row ``padding_idx`` (if >= 0) stays zero, as PyTorch's."""
    _require(g, column(idx.shape[1] * dim), "gather cotangent")
    if not -1 <= padding_idx < vocab:
        raise ValueError(f"padding row {padding_idx} of a table of {vocab} rows")
    return Node(Op.GATHER_GRAD, (idx, g), (int(vocab), int(dim), int(padding_idx)), (int(vocab), int(dim)))


def reshape(a: Node, shape: Shape) -> Node:
    """The entries of ``a`` in row-major order as a tensor of ``shape``: a sequence batch
    (N, T*F) as the matrix of its steps (N*T, F), whose rows a product with a weight works on
    at once, and back. No entry moves, so the backends read the operand's storage."""
    size = lambda sh: sp.expand(sp.Mul(*(sp.sympify(d, strict=True) for d in sh)))  # noqa: E731
    if len(shape) != 2 or len(a.shape) != 2 or _differ(size(a.shape), size(shape)):
        raise ValueError(f"reshape of {a.shape} to {shape}: both matrices of the same size")
    if a.op is Op.RESHAPE:  # one view of the same row-major entries: no chain of views
        a = a.src[0]
    if tuple(a.shape) == tuple(shape):
        return a
    return Node(Op.RESHAPE, (a,), None, tuple(shape))


def scan(body: Scan, init: Node, seqs: Sequence[Node], invariants: Sequence[Node]) -> Node:
    """The loop ``body`` over its steps: ``init`` the carry before the first, ``seqs`` the
    sequences (N, T*F_i) it reads a step of at a time, ``invariants`` what every step reads
    whole. Its value (N, T*E) stacks each step's ``body.out``."""
    T = body.length
    if not isinstance(T, sp.Symbol) and int(T) < 1:
        raise ValueError(f"a scan of {T} steps")
    if tuple(init.shape) != tuple(body.carry.shape):
        raise ValueError(f"scan carry of shape {body.carry.shape}, its first value {init.shape}")
    if tuple(body.new_carry.shape) != tuple(body.carry.shape):
        raise ValueError(f"scan body gives a carry of shape {body.new_carry.shape}, not {body.carry.shape}")
    if len(seqs) != len(body.steps) or len(invariants) != len(body.invariants):
        raise ValueError(f"scan of {len(body.steps)} sequences and {len(body.invariants)} invariants, "
                         f"given {len(seqs)} and {len(invariants)}")
    for seq, step in zip(seqs, body.steps):
        if len(step.shape) != 2 or seq.shape[0] != step.shape[0] or _differ(seq.shape[1], T * int(step.shape[1])):
            raise ValueError(f"scan sequence of shape {seq.shape} for steps of shape {step.shape} "
                             f"over {T} steps")
    for inv, ph in zip(invariants, body.invariants):
        if tuple(inv.shape) != tuple(ph.shape):
            raise ValueError(f"scan invariant of shape {inv.shape} for a placeholder {ph.shape}")
    own = {id(v) for v in body.placeholders()}
    if any(v.op is not Op.VAR for v in body.placeholders()) or len(own) != len(body.placeholders()):
        raise ValueError("a scan's placeholders are distinct VAR leaves")
    for n in body.nodes():
        if n.is_leaf and n.op is not Op.CONST and id(n) not in own:
            raise ValueError(f"a scan body reads {n.op.name} {n.arg!r}: only its placeholders and constants")
    if len(body.out.shape) != 2 or body.out.shape[0] != init.shape[0]:
        raise ValueError(f"scan body output of shape {body.out.shape}")
    if body.residuals and (body.out.op is not Op.CONCAT
                           or tuple(body.out.src) != (body.new_carry, *body.residuals)):
        raise ValueError("a scan with residuals outputs CONCAT(new_carry, *residuals)")
    return Node(Op.SCAN, (init, *seqs, *invariants), body, (init.shape[0], column(T * int(body.out.shape[1]))))


def var(name: str, shape: Shape) -> Node:
    """A loop body's placeholder (:class:`Scan`)."""
    return Node(Op.VAR, (), name, tuple(shape))


def _require(a: Node, width: int, what: str) -> None:
    if len(a.shape) != 2 or a.shape[1] != width:
        raise ValueError(f"{what} of shape {a.shape}, expected (N, {width})")


def geometry_values(geom: "ConvGeometry | PoolGeometry") -> tuple[int, ...]:
    """A geometry as the emitted code takes it: its fields in order, then the output's height
    and width, which this module alone computes (the C struct's initializer, the tuple the NumPy
    functions unpack, the derivation's operator)."""
    return (*(int(getattr(geom, f.name)) for f in fields(geom)), geom.ho, geom.wo)


#: the spatial ops and their geometry's type (``validate`` checks the arg)
SPATIAL_OPS: dict[Op, type] = {
    Op.CONV: ConvGeometry, Op.CONV_GRAD_INPUT: ConvGeometry, Op.CONV_GRAD_WEIGHT: ConvGeometry,
    Op.MAX_POOL: PoolGeometry, Op.MAX_POOL_GRAD: PoolGeometry, Op.AVG_POOL: PoolGeometry,
    Op.AVG_POOL_GRAD: PoolGeometry,
}


#: the ops that only pullbacks build (never a forward pass): nothing differentiates them, since
#: symnn derives first derivatives (``symnn.autodiff.vjp.PULLBACKS`` has every other op)
PULLBACK_OPS: frozenset[Op] = frozenset({Op.CONV_GRAD_INPUT, Op.CONV_GRAD_WEIGHT,
                                         Op.MAX_POOL_GRAD, Op.AVG_POOL_GRAD, Op.GATHER_GRAD})


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


@functools.lru_cache(maxsize=8192)
def _scalar_ops(expr: sp.Expr) -> int:
    """SymPy's operation count of one map's expression: remembered, since every pass's report
    counts the same maps again (a third of a derivation's time before)."""
    return int(sp.count_ops(expr))


def count_ops(outputs: Iterable[Node]) -> tuple[int, int]:
    """(tensor ops, scalar ops inside MAP expressions) of the graph reaching ``outputs``, a loop's
    body included once."""
    tensor, scalar = 0, 0
    for n in toposort(outputs):
        if n.is_leaf:
            continue
        tensor += 1
        if n.op is Op.MAP:
            scalar += _scalar_ops(n.arg.expr)
        elif n.op is Op.SCAN:  # a loop's body counts once: the code written, not the steps run
            inner = count_ops([n.arg.new_carry, n.arg.out])
            tensor, scalar = tensor + inner[0], scalar + inner[1]
    return tensor, scalar


_ARITY = {
    Op.INPUT: 0, Op.PARAM: 0, Op.CONST: 0, Op.MATMUL: 2, Op.ADD_BIAS: 2, Op.SUM_ROWS: 1,
    Op.SOFTMAX: 1, Op.LOGSUMEXP: 1, Op.ROWSUM: 1, Op.SOFTMAX_CE: 2, Op.SUM: 1,
    Op.SLICE: 1, Op.CONV: 2, Op.CONV_GRAD_INPUT: 2, Op.CONV_GRAD_WEIGHT: 2, Op.CHANNEL_BIAS: 2,
    Op.CHANNEL_SUM: 1, Op.CHANNEL_EXPAND: 1, Op.MAX_POOL: 1, Op.MAX_POOL_GRAD: 2, Op.AVG_POOL: 1, Op.AVG_POOL_GRAD: 1,
    Op.GATHER: 2, Op.GATHER_GRAD: 2, Op.VAR: 0, Op.RESHAPE: 1,
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
                    or _differ(sum(s.shape[1] for s in n.src), n.shape[1]):
                raise ValueError(f"{n}: CONCAT needs two or more matrices of one row count")
        elif n.op is Op.SCAN:
            body = n.arg
            if not isinstance(body, Scan) or len(n.src) != 1 + len(body.steps) + len(body.invariants):
                raise ValueError(f"{n}: SCAN needs a Scan with one placeholder per operand")
            validate([body.new_carry, body.out])
        elif len(n.src) != _ARITY[n.op]:
            raise ValueError(f"{n}: {n.op.name} takes {_ARITY[n.op]} operands, got {len(n.src)}")
        if n.op in SPATIAL_OPS and not isinstance(n.arg, SPATIAL_OPS[n.op]):
            raise ValueError(f"{n}: {n.op.name} needs a {SPATIAL_OPS[n.op].__name__}")
        if n.op in (Op.MATMUL, Op.SOFTMAX, Op.LOGSUMEXP, Op.ROWSUM, Op.SUM_ROWS, Op.CONCAT, Op.SLICE,
                    Op.GATHER, Op.GATHER_GRAD, *SPATIAL_OPS) or n.op is Op.CHANNEL_BIAS and len(n.src[0].shape) != 2:
            if any(len(s.shape) != 2 for s in n.src):
                raise ValueError(f"{n}: operands must be matrices")


def _is_dim_symbol(s: sp.Symbol) -> bool:
    return s.name in ("N", "T") or s.name.startswith("n_")


def _broadcasts(src: Shape, dst: Shape) -> bool:
    if src == ():
        return True
    if len(src) == 1:
        return len(dst) == 2 and src[0] == dst[1] or tuple(src) == tuple(dst)
    if len(src) == 2 and len(dst) == 2:
        return src[0] == dst[0] and (src[1] == dst[1] or src[1] == 1)
    return False
