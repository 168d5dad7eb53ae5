"""The register-tiled matrix products of the emitted C, planned here and printed by
``templates/c/_gemm.jinja``.

Every index expression, loop bound, tile shape and butterfly shuffle mask of the gemm helpers is
computed in this module, once per emitted file, into frozen dataclasses; the template prints
them and takes no decision beyond which of two layouts a comment describes. Keeping the
arithmetic in Python keeps the template readable and lets a test check a plan (a mask is a
permutation, a tile loads each row once) without rendering C.

Sizes (the reasons behind them, with figures, are in docs/benchmarks_core.md):

* a register tile is :func:`tile_cols` columns (128 bytes of an output row, two 64-byte vectors)
  by 6 rows with AVX-512's 32 vector registers, by 2 rows of four 32-byte vectors where GCC
  targets AVX2 without AVX-512, else 4; the rows left over go one at a time;
* k is taken in chunks of equal length of at most :data:`GEMM_KC`, so a packed panel of B is
  at most ``GEMM_KC`` x 128 bytes (64 KiB);
* ``A @ B.T`` packs B's rows transposed, square blocks of one vector's width at a time, in
  registers: log2(lanes) stages of ``__builtin_shuffle`` that swap off-diagonal blocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: k per chunk of the gemm helpers (chunks of equal length, so no chunk is longer than this or
#: than K): a packed panel of B is at most GEMM_KC x 128 bytes (64 KiB)
GEMM_KC = 512

#: where A.T @ B has K beyond one chunk, the ``_blocks`` helper packs this many blocks of columns
#: side by side in chunks of k of at most GEMM_GROUP_K / blocks (GEMM_GROUP_K x 128 bytes of
#: panel: 32 KiB, the L1 cache), so each chunk of A is read once rather than once per block
GEMM_GROUP_PANELS = 4
GEMM_GROUP_K = 256

#: the products the helpers compute, as (op(A), op(B)) transposition letters; ``tt`` is done in
#: place by the statement macro (no derivation produces it)
GEMM_KINDS = ("nn", "nt", "tn")

#: rows of the register tiles: 6 with AVX-512 (``__ROWS6``), 4 otherwise, 1 for the last rows
TILE_ROWS = (6, 4, 1)

#: with AVX-512, where the rows are a multiple of 8 (a batch of 32 or 64), 8-row tiles take them
#: all: 16 accumulators, the panel row's 2 vectors and op(A)'s 8 values in the 32 registers,
#: and no 4-row tiles for the rest (32 = 4*6 + 2*4). h @ W_hh.T of lstm-seq (32 x 64 x 256,
#: float64, packed panels): 12.4 -> 11.3 µs on an Intel core (family 6, model 167)
TILE8_ROWS = 8

#: rows of the tiles of 32-byte vectors GCC gets where it targets AVX2 without AVX-512
#: (``__TILE32``): a row of a tile is four such vectors, so 2 rows take 8 of the 16 registers
#: for accumulators, 4 for a panel row and 2 for op(A)'s values
TILE32_ROWS = 2

#: CBLAS's CblasNoTrans and CblasTrans
_CBLAS_TRANS = {False: 111, True: 112}


def tile_cols(dtype: str) -> int:
    """Columns per register tile of the gemm helpers: 128 bytes of an output row."""
    return 32 if dtype == "float32" else 16


@dataclass(frozen=True)
class Load:
    """One line ``const real NAME = EXPR;`` of a tile's k step: op(A)'s value of one tile row at
    k (``u0``, ``u1``, ...), or (``pointer``) ``const real *ak``, where op(A) is A.T, the
    tile's values next to each other."""

    name: str
    expr: str
    pointer: bool = False


def a_loads(rows: int, trans_a: bool, a: str, i0: str) -> tuple[Load, ...]:
    """The loads of op(A)'s ``rows`` values at k for a tile whose first row is ``i0`` of ``a``
    (``i0`` empty: ``a`` already points at the tile's first row). A is row-major with leading
    dimension ``lda``; op(A) = A.T reads a tile's values next to each other."""
    if trans_a:
        first = Load("ak", f"{a} + k*lda" + (f" + {i0}" if i0 else ""), pointer=True)
        return (first, *(Load(f"u{r}", f"ak[{r}]") for r in range(rows)))
    if i0:
        rows_at = [i0 if r == 0 else f"({i0} + {r})" for r in range(rows)]
        return tuple(Load(f"u{r}", f"{a}[{at}*lda + k]") for r, at in enumerate(rows_at))
    return tuple(Load(f"u{r}", f"{a}[{f'{r}*lda + ' if r else ''}k]") for r in range(rows))


@dataclass(frozen=True)
class TileFn:
    """``PREFIX__tileRF``: one R-row, full-width tile over a panel, accumulators in vector
    registers (GCC vector extensions). ``a_rows_adjacent``: op(A) is A.T, so a tile's rows are
    next to each other in ``a`` and k steps are ``lda`` apart."""

    rows: int
    form: str  # "n" (op(A) = A) or "t" (op(A) = A.T)
    a_rows_adjacent: bool
    loads: tuple[Load, ...]
    ignores_lda: bool  # one row of A (not transposed): its k lie next to each other

    @property
    def name(self) -> str:
        return f"{self.rows}{self.form}"

    @property
    def guarded(self) -> bool:
        """Multi-row tiles exist only where the full-width vector path does (``__VEC``)."""
        return self.rows > 1


@dataclass(frozen=True)
class RowTile:
    """R rows of C over a panel, inside a gemm helper: through ``PREFIX__tile<fn>`` where the
    vector path exists, else accumulated in an R x cols array with the loads below."""

    rows: int
    fn: str  # the TileFn's name, e.g. "6n"
    a_first: str  # the tile's first value of op(A) in the helper's A
    loads: tuple[Load, ...]


@dataclass(frozen=True)
class ShuffleStage:
    """One butterfly stage of the in-register transpose: rows i and i + width (for each i with
    bit ``width`` clear) swap their off-diagonal width x width blocks, ``lo`` and ``hi`` the
    two ``__builtin_shuffle`` masks (lane indices into the pair of vectors)."""

    width: int
    lo: tuple[int, ...]
    hi: tuple[int, ...]
    pairs: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class TransposeBlock:
    """A square block of B, ``lanes`` rows from ``j0 + first`` by ``lanes`` columns from ``kb``,
    loaded (``rows``: each row's index into B), transposed, stored into the panel (``stores``:
    each row's index into ``bp``)."""

    first: int
    rows: tuple[str, ...]
    stores: tuple[str, ...]


@dataclass(frozen=True)
class GemmFn:
    """``PREFIX__gemm_KIND`` and its ``_cols`` worker: C = op(A) @ op(B)."""

    kind: str
    trans_a: bool
    trans_b: bool
    cblas_a: int
    cblas_b: int
    tiles: tuple[RowTile, ...]  # the 6- and 4-row tiles, in that order
    last_row: RowTile  # the rows left over, one at a time
    tile32: RowTile  # the 2-row tiles of 32-byte vectors (AVX2 without AVX-512)
    tile8: RowTile  # the 8-row tiles (AVX-512) of a multiple of 8 rows
    #: the file also calls it on panels packed before a loop (``_pack``, ``_packed``): a loop's
    #: product with an invariant B
    packed: bool = False
    #: the file calls ``PREFIX__gemm_KIND`` itself (not only its packed form)
    plain: bool = True
    #: the file calls ``PREFIX__gemm_tn_grouped``: A.T @ B with B's rows in groups (the states a
    #: loop's steps started from, read where the loop stored them)
    grouped: bool = False

    @property
    def via_transpose(self) -> bool:
        """With fewer columns than a tile, op(A) @ op(B) can be computed as its transpose (a
        scratch ``ct``); not for ``nn``, whose transpose would be ``tt``."""
        return self.kind != "nn"


@dataclass(frozen=True)
class GemmPlan:
    """Everything ``_gemm.jinja`` prints for one emitted file."""

    cols: int  # columns of a register tile (jb)
    lanes: int  # reals in one 64-byte vector: a tile row is two of them
    kc: int
    real_bytes: int
    mask_int: str  # the integer type of a shuffle mask's lanes
    blas_macro: str  # SYMNN_CBLAS_DGEMM / SYMNN_CBLAS_SGEMM
    blas_name: str  # cblas_dgemm / cblas_sgemm
    tile_fns: tuple[TileFn, ...]
    tile32_fns: tuple[TileFn, ...]  # the 2-row tiles of 32-byte vectors, one per form
    lanes32: int  # reals in one 32-byte vector: a tile row is cols // lanes32 of them
    gemms: tuple[GemmFn, ...]
    stages: tuple[ShuffleStage, ...]
    blocks: tuple[TransposeBlock, ...]
    renames: str  # "r0 = s0; r1 = s1; ...": a stage's results back into the row registers
    group_panels: int = GEMM_GROUP_PANELS  # blocks of columns the ``_blocks`` helper takes at once
    group_k: int = GEMM_GROUP_K  # k of its packed panels, all blocks together

    @property
    def kc_ceil(self) -> int:
        """``kc - 1``: what rounds K up to whole chunks."""
        return self.kc - 1

    @property
    def cols_ceil(self) -> int:
        """``cols - 1``: what rounds a column count up to whole tiles."""
        return self.cols - 1

    @property
    def vecs32(self) -> tuple[int, ...]:
        """The 32-byte vectors of a tile row, by index."""
        return tuple(range(self.cols // self.lanes32))

    @property
    def own_panel(self) -> int:
        """Reals of a thread's own panel (a row spare to align it)."""
        return (self.kc + 1) * self.cols


def shuffle_stages(lanes: int) -> tuple[ShuffleStage, ...]:
    """The butterfly of a ``lanes`` x ``lanes`` transpose (``lanes`` a power of two): at width
    w, lane j of row i's new value comes from row i (``lo``) or row i + w (``hi``); index
    ``lanes + x`` in a mask is lane x of the second vector."""
    stages = []
    width = 1
    while width < lanes:
        lo, hi = [], []
        for j in range(lanes):
            if (j // width) % 2 == 0:
                lo.append(j)
                hi.append(j + width)
            else:
                lo.append(lanes + j - width)
                hi.append(lanes + j)
        pairs = tuple((i, i + width) for i in range(lanes) if (i // width) % 2 == 0)
        stages.append(ShuffleStage(width, tuple(lo), tuple(hi), pairs))
        width *= 2
    return tuple(stages)


def _transpose_block(first: int, lanes: int, cols: int) -> TransposeBlock:
    rows = tuple("j0" if first + i == 0 else f"(j0 + {first + i})" for i in range(lanes))
    stores = tuple(f"(kb - k0 + {i})*{cols}" + (f" + {first}" if first else "") for i in range(lanes))
    return TransposeBlock(first, rows, stores)


def _row_tile(rows: int, trans_a: bool) -> RowTile:
    form = "t" if trans_a else "n"
    return RowTile(rows, f"{rows}{form}", "A + k0*lda + i0" if trans_a else "A + i0*lda + k0",
                   a_loads(rows, trans_a, "A", "i0"))


def plan(dtype: str, kinds: Iterable[str], packed: Iterable[str] = (), grouped: Iterable[str] = ()) -> GemmPlan | None:
    """The plan of the gemm helpers for ``kinds`` (a subset of :data:`GEMM_KINDS`, in that
    order), or None where the file has no gemm call; ``packed``: the kinds (``nn``, ``nt``) also
    called on panels packed before a loop; ``grouped``: ``tn`` where it is also called on rows of
    B in groups (``_grouped``)."""
    packed, kinds, grouped = set(packed), set(kinds), set(grouped)
    wanted = [k for k in GEMM_KINDS if k in kinds | packed | grouped]
    if not wanted:
        return None
    cols = tile_cols(dtype)
    lanes = cols // 2
    single = dtype == "float32"
    forms = [f for f in ("n", "t") if f in {k[0] for k in wanted}]
    tile_fns = tuple(TileFn(rows, form, form == "t", a_loads(rows, form == "t", "a", ""),
                            rows == 1 and form == "n")
                     for form in forms for rows in (TILE8_ROWS, *TILE_ROWS))
    tile32_fns = tuple(TileFn(TILE32_ROWS, form, form == "t", a_loads(TILE32_ROWS, form == "t", "a", ""), False)
                       for form in forms)
    gemms = tuple(GemmFn(kind, kind[0] == "t", kind[1] == "t", _CBLAS_TRANS[kind[0] == "t"],
                         _CBLAS_TRANS[kind[1] == "t"],
                         tuple(_row_tile(r, kind[0] == "t") for r in TILE_ROWS if r > 1),
                         _row_tile(1, kind[0] == "t"), _row_tile(TILE32_ROWS, kind[0] == "t"),
                         _row_tile(TILE8_ROWS, kind[0] == "t"), kind in packed, kind in kinds, kind in grouped)
                  for kind in wanted)
    return GemmPlan(
        cols=cols, lanes=lanes, kc=GEMM_KC, real_bytes=4 if single else 8,
        mask_int="int32_t" if single else "int64_t",
        blas_macro="SYMNN_CBLAS_SGEMM" if single else "SYMNN_CBLAS_DGEMM",
        blas_name="cblas_sgemm" if single else "cblas_dgemm",
        tile_fns=tile_fns, tile32_fns=tile32_fns, lanes32=32 // (4 if single else 8), gemms=gemms, stages=shuffle_stages(lanes),
        blocks=(_transpose_block(0, lanes, cols), _transpose_block(lanes, lanes, cols)),
        renames=" ".join(f"r{i} = s{i};" for i in range(lanes)),
    )


__all__ = ["GEMM_GROUP_K", "GEMM_GROUP_PANELS", "GEMM_KC", "TILE8_ROWS", "GEMM_KINDS", "GemmPlan", "a_loads", "plan", "shuffle_stages", "tile_cols"]
