"""The gemm plan (symnn/backends/c/gemm.py): what templates/c/_gemm.jinja prints, checked as
data. The emitted products themselves are checked against NumPy in test_gemm_shapes.py."""

from __future__ import annotations

import pytest

from symnn.backends.c import gemm


class _Offsets:
    """Indexing returns base + index: evaluating ``A[i0*lda + k]`` gives the element's offset."""

    def __init__(self, base: int = 0) -> None:
        self.base = base

    def __getitem__(self, index: int) -> int:
        return self.base + index


def _offsets(loads: tuple[gemm.Load, ...], i0: int, lda: int, k: int) -> list[int]:
    """The offset into A of each tile row's value, from the printed load expressions."""
    env: dict[str, object] = {"A": _Offsets(), "i0": i0, "lda": lda, "k": k}
    out = []
    for load in loads:
        if load.pointer:  # to the tile's values (A.T): its offset from A
            env[load.name] = _Offsets(eval(load.expr, {}, {**env, "A": 0}))  # noqa: S307 - the plan's own text
        else:
            out.append(eval(load.expr, {}, env))  # noqa: S307
    return out


@pytest.mark.parametrize("lanes", [8, 16])
def test_shuffle_stages_transpose_a_square_block(lanes: int) -> None:
    rows = [[i * lanes + j for j in range(lanes)] for i in range(lanes)]
    for stage in gemm.shuffle_stages(lanes):
        assert sorted(x for p in stage.pairs for x in p) == list(range(lanes))  # every row once
        new = [list(r) for r in rows]
        for i, j in stage.pairs:
            both = rows[i] + rows[j]  # __builtin_shuffle(a, b, mask): lane x of (a, b)
            new[i] = [both[x] for x in stage.lo]
            new[j] = [both[x] for x in stage.hi]
        rows = new
    assert rows == [[j * lanes + i for j in range(lanes)] for i in range(lanes)]
    assert len(gemm.shuffle_stages(lanes)) == lanes.bit_length() - 1


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("rows", [1, 4, 6])
def test_tile_loads_read_each_row_of_op_a_at_k(rows: int, trans_a: bool) -> None:
    i0, lda, k = 12, 37, 5
    got = _offsets(gemm.a_loads(rows, trans_a, "A", "i0"), i0, lda, k)
    # op(A)[i, k] is A[k, i] (at k*lda + i) for A.T, else A[i, k] (at i*lda + k)
    want = [k * lda + i0 + r if trans_a else (i0 + r) * lda + k for r in range(rows)]
    assert got == want


@pytest.mark.parametrize("dtype, cols, mask", [("float64", 16, "int64_t"), ("float32", 32, "int32_t")])
def test_plan_covers_the_products_asked_for(dtype: str, cols: int, mask: str) -> None:
    assert gemm.plan(dtype, []) is None
    p = gemm.plan(dtype, ["tn", "nt"])
    assert p is not None
    assert [g.kind for g in p.gemms] == ["nt", "tn"]  # in GEMM_KINDS order, whatever was asked
    assert (p.cols, p.lanes, p.mask_int) == (cols, cols // 2, mask)
    assert {(t.form, t.rows) for t in p.tile_fns} == {(f, r) for f in "nt" for r in (gemm.TILE8_ROWS, *gemm.TILE_ROWS)}
    only_n = gemm.plan(dtype, ["nn"])
    assert only_n is not None and {t.form for t in only_n.tile_fns} == {"n"}
    for g in p.gemms:
        assert [t.rows for t in g.tiles] == [6, 4] and g.last_row.rows == 1 and g.tile8.rows == 8
        assert (g.cblas_a, g.cblas_b) == (112 if g.trans_a else 111, 112 if g.trans_b else 111)
    assert p.own_panel == (gemm.GEMM_KC + 1) * cols
    assert [b.first for b in p.blocks] == [0, p.lanes]
