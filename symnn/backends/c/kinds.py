"""The C backend's statement-context kinds: the lowered forms of plan statements.

A plan statement's kind is the IR's :class:`~symnn.ir.Op`; the C lowering turns it into one or
more contexts whose kind is a :class:`CKind`: a product in one of its loop orders, a fused loop,
a copy of an output, the shared row statistics of softmax ops, a call of a shared helper.

Each member's value is the name of the ``templates/c/_macros.jinja`` macro that lays the
context out (``{{ m[s.kind](s) }}``): this enum is the one table from kind to macro. It is a
:class:`~enum.StrEnum` so that the templates look the macro up by that name and emitted code
does not change; Python code compares members, never the names.
"""

from __future__ import annotations

from enum import StrEnum


class CKind(StrEnum):
    """A statement context's kind; the value is its macro in ``templates/c/_macros.jinja``."""

    MATMUL_NN = "matmul_nn"  # A @ B: row updates, a gemm call
    MATMUL_NT = "matmul_nt"  # A @ B.T: dot products, a gemm call
    MATMUL_TN = "matmul_tn"  # A.T @ B: rank-1 updates, a gemm call
    MATMUL_TT = "matmul_tt"  # A.T @ B.T: plain loops (no gemm)
    MATMUL_SMALL = "matmul_small"  # a product with a tiny fixed part: constant-size loops in place
    ADD_BIAS = "add_bias"
    SUM_ROWS = "sum_rows"
    ROWSUM = "rowsum"
    SUM = "sum"
    ASSIGN = "assign"  # the sum of a scalar: a copy of it
    ROWSTATS = "rowstats"  # row max and sum of exponentials shared by the row ops on one z
    SOFTMAX = "softmax"
    LOGSUMEXP = "logsumexp"
    SOFTMAX_CE = "softmax_ce"
    MAP = "map"  # an element-wise loop, with a fused bias add and column sum where planned
    COPY = "copy"  # an output no statement computed into its buffer
    CALL = "call"  # a call of a shared statement helper
    GEMM_PACK = "gemm_pack"  # a loop's invariant B packed into panels before the loop, for its products
    CONCAT = "concat"  # blocks of columns copied side by side
    IN_PLACE = "in_place"  # a concatenation whose every part its map wrote where it lies: a comment
    SLICE = "slice"  # a block of columns copied out
    # spatial: each a call of a static function of templates/c/_spatial.jinja
    CONV = "conv"  # per sample and group: im2col into work, then one gemm (nn)
    CONV_GRAD_INPUT = "conv_grad_input"  # per sample and group: a gemm (tn), then col2im
    CONV_GRAD_WEIGHT = "conv_grad_weight"  # per sample and group: im2col, a gemm (nt), summed
    # the same with few output channels per group (depthwise): direct loops, no work space
    CONV_DIRECT = "conv_direct"
    CONV_GRAD_INPUT_DIRECT = "conv_grad_input_direct"
    CONV_GRAD_WEIGHT_DIRECT = "conv_grad_weight_direct"
    # a 3x3 kernel of stride 1 (one group, no dilation, channels enough): Winograd's F(2x2, 3x3)
    CONV_WINOGRAD = "conv_winograd"
    CONV_GRAD_INPUT_WINOGRAD = "conv_grad_input_winograd"
    CHANNEL_BIAS = "channel_bias"
    CHANNEL_SUM = "channel_sum"
    CHANNEL_EXPAND = "channel_expand"
    MAX_POOL = "max_pool"
    MAX_POOL_GRAD = "max_pool_grad"
    AVG_POOL = "avg_pool"
    AVG_POOL_GRAD = "avg_pool_grad"
    GATHER = "gather"  # an embedding's rows copied out, per index
    GATHER_GRAD = "gather_grad"  # the cotangent's blocks added into the rows the indices name
    # sequences
    VIEW = "view"  # a reshape: a pointer the kernel declares to what it views; no loop
    COLUMN_VIEW = "column_view"  # a block of columns (or a loop's step) read where it lies: a pointer
    STEP_SLOTS = "step_slots"  # the states a loop's steps started from, in its slots: a comment
    LOOP_BEGIN = "loop_begin"  # a loop over a sequence's steps opens
    LOOP_STEP = "loop_step"  # step t's columns of a sequence copied out
    LOOP_END = "loop_end"  # the step's output written into its columns, the carry replaced
    LOOP_CLOSE = "loop_close"  # the loop's closing brace


#: the product of each (trans_a, trans_b): which loop order computes op(A) @ op(B)
MATMUL_KINDS: dict[tuple[bool, bool], CKind] = {
    (False, False): CKind.MATMUL_NN,
    (False, True): CKind.MATMUL_NT,
    (True, False): CKind.MATMUL_TN,
    (True, True): CKind.MATMUL_TT,
}

#: the kinds whose macro calls a gemm routine of the file, by that routine's kind
#: (:data:`symnn.backends.c.gemm.GEMM_KINDS`): the file defines the routines its contexts call
GEMM_CALLS: dict[CKind, str] = {CKind.MATMUL_NN: "nn", CKind.MATMUL_NT: "nt", CKind.MATMUL_TN: "tn",
                                CKind.CONV: "nn", CKind.CONV_GRAD_INPUT: "tn",
                                CKind.CONV_GRAD_WEIGHT: "nt", CKind.CONV_WINOGRAD: "nn",
                                CKind.CONV_GRAD_INPUT_WINOGRAD: "nn"}

#: the spatial kinds, by the parts of ``templates/c/_spatial.jinja`` their macros call: a file
#: prints the parts its contexts need, and nothing of it where it has none (a dense network)
SPATIAL_PARTS: dict[CKind, tuple[str, ...]] = {
    CKind.CONV: ("conv_geom", "im2col", "conv"),
    CKind.CONV_GRAD_INPUT: ("conv_geom", "col2im", "conv_grad_input"),
    CKind.CONV_GRAD_WEIGHT: ("conv_geom", "im2col", "conv_grad_weight"),
    CKind.CONV_DIRECT: ("conv_geom", "conv_direct"),
    CKind.CONV_GRAD_INPUT_DIRECT: ("conv_geom", "conv_grad_input_direct"),
    CKind.CONV_GRAD_WEIGHT_DIRECT: ("conv_geom", "conv_grad_weight_direct"),
    CKind.CONV_WINOGRAD: ("conv_geom", "winograd", "conv_winograd"),
    CKind.CONV_GRAD_INPUT_WINOGRAD: ("conv_geom", "winograd", "conv_grad_input_winograd"),
    CKind.CHANNEL_BIAS: ("channel_bias",),
    CKind.CHANNEL_SUM: ("channel_sum",),
    CKind.CHANNEL_EXPAND: ("channel_expand",),
    CKind.MAX_POOL: ("pool_geom", "max_pool"),
    CKind.MAX_POOL_GRAD: ("pool_geom", "max_pool_grad"),
    CKind.AVG_POOL: ("pool_geom", "avg_pool"),
    CKind.AVG_POOL_GRAD: ("pool_geom", "avg_pool_grad"),
    CKind.GATHER: ("gather",),
    CKind.GATHER_GRAD: ("gather_grad",),
}

#: the kinds whose macros use the row-statistics helpers (max-shifted exponentials)
ROW_STAT_KINDS: frozenset[CKind] = frozenset({CKind.ROWSTATS, CKind.SOFTMAX, CKind.LOGSUMEXP,
                                              CKind.SOFTMAX_CE})
