"""``Embedding``: a lookup table of vectors read by integer indices, as ``torch.nn.Embedding``.

The indices are an input of the graph (``sn.Input(T, indices=True)``: each sample is T token
ids). They travel to the kernels as reals in the packed ``X``, like every input, which is
exact for integers up to 2**24 in float32 and 2**53 in float64 (:func:`check_index_precision`
refuses a float32 kernel whose vocabulary is past that). Every kernel checks them before any
work (:func:`first_bad_index`: Python raises :class:`~symnn.errors.IndexRangeError`, the C
API returns ``SYMNN_ERR_INDEX``), so the emitted gathers never read outside the table.

The forward pass is the IR's ``GATHER`` (the rows the indices name, side by side: a sample's
output is (T, D), one row of T*D as PyTorch's (N, T, D) is laid out) and its pullback
``GATHER_GRAD`` adds the cotangent's blocks into the rows they came from; ``padding_idx``'s
row gets no gradient, as in PyTorch.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Sequence

import numpy as np
import sympy as sp

from . import ir
from .naming import T
from .errors import ConfigError, LayerSizeMismatchError, SpecError, SpecTypeError
from .layers import Emitted, Layer, Shape, _check_name, _dim, register_layer

#: the largest vocabulary whose every index a float32 holds exactly (2**24 + 1 is the first
#: integer it rounds)
FLOAT32_EXACT = 2**24


@register_layer
@dataclass(frozen=True)
class Embedding(Layer):
    """``torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx)``: a weight (V, D)
    starting N(0, 1) (the ``padding_idx`` row at zero); on samples of T indices it returns
    samples (T, D). Called on an ``sn.Input(T, indices=True)`` only."""

    num_embeddings: int
    embedding_dim: int
    padding_idx: int | None = None
    name: str | None = None

    KIND: ClassVar[str] = "embedding"
    PARAM_TEX: ClassVar[dict[str, str]] = {"weight": "E"}
    OUTPUT_TEX: ClassVar[str] = "H"
    READS_INDICES: ClassVar[bool] = True

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 name: str | None = None) -> None:
        object.__setattr__(self, "num_embeddings", _dim(num_embeddings, "Embedding num_embeddings"))
        object.__setattr__(self, "embedding_dim", _dim(embedding_dim, "Embedding embedding_dim"))
        object.__setattr__(self, "padding_idx", self._padding(padding_idx))
        object.__setattr__(self, "name", _check_name(name))

    def _padding(self, padding_idx: object) -> int | None:
        """PyTorch's rule: an index in [-V, V), a negative one counted from the end."""
        if padding_idx is None:
            return None
        v = self.num_embeddings
        if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
            raise SpecTypeError(f"Embedding padding_idx must be an integer or None, got {padding_idx!r}")
        if not -v <= int(padding_idx) < v:
            raise ConfigError(f"Embedding padding_idx must be in [-{v}, {v}), got {padding_idx}")
        return int(padding_idx) % v

    def param_shapes(self) -> dict[str, Shape]:
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def output_shape(self, *shapes: Shape) -> Shape:
        if len(shapes) != 1:
            raise SpecError(f"Embedding takes one tensor of indices, got {len(shapes)}")
        if len(shapes[0]) != 1:
            raise LayerSizeMismatchError(f"Embedding reads samples of T indices (T,), got shape {shapes[0]}")
        return (shapes[0][0], self.embedding_dim)

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        pad = -1 if self.padding_idx is None else self.padding_idx
        return Emitted(ir.gather(inputs[0], params["weight"], pad))

    def init(self, rng: np.random.Generator, scheme: str | None) -> dict[str, np.ndarray]:
        """N(0, 1) as PyTorch's ``reset_parameters``, the padding row zeroed."""
        w = rng.normal(0.0, 1.0, size=(self.num_embeddings, self.embedding_dim))
        if self.padding_idx is not None:
            w[self.padding_idx] = 0.0
        return {"weight": w}

    def describe(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{pad})"


class IndexBlock(NamedTuple):
    """An index input as the kernels see it: its name, its columns [lo, hi) of the packed X,
    and the vocabulary its indices must be below (the smallest of the embeddings reading it)."""

    name: str
    lo: "int | sp.Expr"  # a multiple of T where sequences before it have a run-time length
    hi: "int | sp.Expr"
    vocab: int

    def columns(self, length: int) -> tuple[int, int]:
        """[lo, hi) in a call whose sequences have ``length`` steps (T; ignored for fixed sizes)."""
        return column_at(self.lo, length), column_at(self.hi, length)


def column_at(c: "int | sp.Expr", length: int) -> int:
    """A column of the packed X, a multiple of T where sequences of run-time length come before
    it, in a call whose sequences have ``length`` steps."""
    return c if isinstance(c, int) else int(c.subs(T, length))


def index_blocks(net: object) -> tuple[IndexBlock, ...]:
    """The index inputs of ``net`` (a :class:`symnn.Network`), in the order of ``inputs=``;
    none for a network without one."""
    graph = getattr(net, "graph", None)
    if graph is None or not graph.index_inputs:
        return ()
    columns = net.column_blocks(net.input_widths)  # type: ignore[attr-defined]
    blocks = []
    for v, ((name, _), (lo, hi)) in enumerate(zip(graph.inputs, columns)):
        if name not in graph.index_inputs:
            continue
        vocab = min(graph.layers[c.layer].num_embeddings for c in graph.calls if v in c.inputs)
        blocks.append(IndexBlock(name, lo, hi, vocab))
    return tuple(blocks)


def padding_rows(net: object) -> dict[str, int]:
    """``{"<embedding>.weight": padding_idx}``: the rows whose gradient is zero by declaration
    (PyTorch's padding_idx), not by calculus: the forward pass reads them, so a numeric
    derivative there is not zero (:func:`symnn.gradcheck` takes 0 as their reference)."""
    graph = getattr(net, "graph", None)
    if graph is None:
        return {}
    return {f"{name}.weight": layer.padding_idx for layer, name in zip(graph.layers, graph.names)
            if isinstance(layer, Embedding) and layer.padding_idx is not None}


def first_bad_index(block: np.ndarray, vocab: int) -> tuple[int, int] | None:
    """(sample, position) of the first entry of ``block`` (N, T) that is not an exact integer
    in [0, vocab) (a fraction, NaN, infinity, negative or too large), else None."""
    values = np.asarray(block)
    if values.dtype.kind in "iu":
        bad = (values < 0) | (values >= vocab)
    else:
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values != np.floor(values)) | (values < 0) | (values >= vocab)
    if not bad.any():
        return None
    flat = int(np.argmax(bad))
    return divmod(flat, values.shape[1]) if values.ndim == 2 else (flat, 0)


def check_index_precision(net: object, dtype: str) -> None:
    """Refuse a float32 kernel of a network with a vocabulary past 2**24: its indices travel as
    reals in X, and float32 cannot hold every one of them exactly."""
    if np.dtype(dtype) != np.float32:
        return
    for block in index_blocks(net):
        if block.vocab > FLOAT32_EXACT:
            raise ConfigError(f"the index input {block.name!r} reads a vocabulary of {block.vocab} rows, "
                              f"more than float32 holds exactly (2**24 = {FLOAT32_EXACT}); compile with "
                              f"dtype='float64'")


__all__ = ["Embedding", "FLOAT32_EXACT", "IndexBlock", "check_index_precision", "first_bad_index",
           "index_blocks", "padding_rows"]
