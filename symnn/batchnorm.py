"""Batch normalisation (``torch.nn.BatchNorm1d`` / ``BatchNorm2d``), built from existing IR ops.

Training (``loss``, ``loss_and_grad``, ``train_step``) normalises each channel with the
statistics of the batch, over the samples and the channel's positions: the chain rule then
runs through the mean and the variance as PyTorch's autograd does in ``train()`` mode. The
running statistics are *buffers*: entries of the flat vector (where ``state_dict`` has them)
with no gradient, which ``forward`` reads (PyTorch's ``eval()``) and a training step replaces
with their momentum average, ``(1 - m) r + m s`` with the unbiased batch variance, as
PyTorch does. A channel's statistic (C,) meets an image batch (N, C*P) through
``CHANNEL_SUM`` (sum over the batch and the channel's positions) and ``CHANNEL_EXPAND`` (the
vector spread over the positions, which element-wise maps broadcast over the rows); on
features (P = 1) those are ``SUM_ROWS`` and nothing. So batch normalisation needs no op and
no pullback of its own: its derivation is printed from the same records as every other layer's.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import sympy as sp

from . import ir, naming
from .errors import LayerSizeMismatchError, SpecError, SpecTypeError
from .layers import Emitted, Layer, Shape, _check_name, _dim, register_layer

_u, _v, _m, _r, _g, _b, _t = sp.symbols("u v m r g b t", real=True)


def _map(name: str, args: tuple[sp.Symbol, ...], expr: sp.Expr, *src: ir.Node,
         shape: Shape | None = None) -> ir.Node:
    return ir.map_(ir.Elementwise(name, args, expr), *src, shape=shape)


@dataclass(frozen=True, init=False)
class _BatchNorm(Layer):
    """What BatchNorm1d and BatchNorm2d share; they differ in the sample ranks they take."""

    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    name: str | None = None

    KIND: ClassVar[str] = "batchnorm"
    PARAM_TEX: ClassVar[dict[str, str]] = {"weight": r"\gamma", "bias": r"\beta", "running_mean": r"\bar{\mu}",
                                           "running_var": r"\bar{V}", "num_batches_tracked": "t"}
    #: the sample ranks the layer takes: (C,) or (C, L) for 1-D, (C, H, W) for 2-D
    RANKS: ClassVar[tuple[int, ...]] = ()
    #: each output row depends on every row of the batch (the batch statistics): a gradient
    #: check's sample point draws whole batches (:func:`symnn.gradcheck.sample_point`)
    COUPLES_ROWS: ClassVar[bool] = True
    #: the buffers that count (whole numbers): PyTorch keeps them as int64, so ``sn.to_state_dict``
    #: gives them back as int64 0-d tensors and ``sn.from_torch`` checks they are exact in the dtype
    COUNTERS: ClassVar[tuple[str, ...]] = ("num_batches_tracked",)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, name: str | None = None) -> None:
        kind = type(self).__name__
        object.__setattr__(self, "num_features", _dim(num_features, f"{kind} num_features"))
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < 1:
            raise SpecTypeError(f"{kind} eps must be a real in (0, 1), got {eps!r}")
        object.__setattr__(self, "eps", float(eps))
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)
                                     or not 0 <= momentum <= 1):
            raise SpecTypeError(f"{kind} momentum must be a real in [0, 1] or None (a cumulative average), "
                                f"got {momentum!r}")
        object.__setattr__(self, "momentum", None if momentum is None else float(momentum))
        for field_name, value in (("affine", affine), ("track_running_stats", track_running_stats)):
            if not isinstance(value, bool):
                raise SpecTypeError(f"{kind} {field_name} must be True or False, got {value!r}")
            object.__setattr__(self, field_name, value)
        object.__setattr__(self, "name", _check_name(name))

    def param_shapes(self) -> dict[str, Shape]:
        c = self.num_features
        shapes: dict[str, Shape] = {"weight": (c,), "bias": (c,)} if self.affine else {}
        if self.track_running_stats:
            shapes.update({"running_mean": (c,), "running_var": (c,), "num_batches_tracked": ()})
        return shapes

    def buffers(self) -> tuple[str, ...]:
        return ("running_mean", "running_var", "num_batches_tracked") if self.track_running_stats else ()

    def output_shape(self, *shapes: Shape) -> Shape:
        kind = type(self).__name__
        if len(shapes) != 1:
            raise SpecError(f"{kind} takes one tensor, got {len(shapes)}")
        (shape,) = shapes
        if len(shape) not in self.RANKS:
            wanted = " or ".join(f"rank {r}" for r in self.RANKS)
            raise LayerSizeMismatchError(f"{kind} takes samples of {wanted}, got shape {shape}")
        if shape[0] != self.num_features:
            raise LayerSizeMismatchError(f"{kind}({self.num_features}) applied to samples of {shape[0]} channels "
                                         f"(shape {shape})")
        return shape

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        (x,) = inputs
        c = self.num_features
        positions = int(np.prod(shapes[0][1:])) if shapes and len(shapes[0]) > 1 else 1

        def per_channel(a: ir.Node) -> ir.Node:  # (N, C*P) -> (C,): summed over the batch and positions
            return ir.sum_rows(a) if positions == 1 else ir.channel_sum(a, c, positions)

        def spread(v: ir.Node) -> ir.Node:  # (C,) -> a vector the rows of x broadcast with
            return v if positions == 1 else ir.channel_expand(v, c, positions)

        count = naming.N * positions
        mean = _map("bn_mean", (_u,), _u / count, per_channel(x))
        centred = _map("centre", (_u, _m), _u - _m, x, spread(mean), shape=x.shape)
        var = _map("bn_var", (_u,), _u / count, per_channel(_map("square", (_u,), _u**2, centred)))
        eps = sp.Float(self.eps, 17)
        rstd = _map("rstd", (_v,), 1 / sp.sqrt(_v + eps), var)
        normed = _map("normalise", (_u, _r), _u * _r, centred, spread(rstd), shape=x.shape)
        named = ((mean, r"\mu"), (centred, r"\tilde{X}"), (var, "V"), (rstd, "R"), (normed, r"\hat{X}"))
        out = normed
        if self.affine:
            out = _map("affine", (_u, _g, _b), _u * _g + _b, normed, spread(params["weight"]),
                       spread(params["bias"]), shape=x.shape)
        if not self.track_running_stats:  # batch statistics at inference too, as PyTorch
            return Emitted(out, named)
        # inference: one scale and shift per channel from the running statistics
        scale = _map("bn_scale", (_v,), 1 / sp.sqrt(_v + eps), params["running_var"])
        if self.affine:
            scale = _map("bn_scale_affine", (_r, _g), _r * _g, scale, params["weight"])
            shift = spread(params["bias"])
            eval_out = _map("bn_eval", (_u, _m, _r, _b), (_u - _m) * _r + _b, x, spread(params["running_mean"]),
                            spread(scale), shift, shape=x.shape)
        else:
            eval_out = _map("bn_eval", (_u, _m, _r), (_u - _m) * _r, x, spread(params["running_mean"]),
                            spread(scale), shape=x.shape)
        return Emitted(out, named, eval_out, self._updates(params, mean, var, count))

    def _updates(self, params: dict[str, ir.Node], mean: ir.Node, var: ir.Node,
                 count: sp.Expr) -> tuple[tuple[str, ir.Node], ...]:
        """The running statistics after one training batch: PyTorch's momentum average with
        the unbiased variance (``count / (count - 1)`` times the biased one), or with
        ``momentum=None`` the cumulative average over the batches seen."""
        tracked = params["num_batches_tracked"]  # the IR holds the scalar as a vector of one entry
        unbiased = count / (count - 1)
        if self.momentum is None:  # factor 1/t with t the batches tracked after this one
            t = ir.channel_expand(tracked, 1, self.num_features)  # the count beside each channel
            new_mean = _map("bn_running_mean", (_r, _u, _t), _r + (_u - _r) / (_t + 1), params["running_mean"],
                            mean, t, shape=mean.shape)
            new_var = _map("bn_running_var", (_r, _u, _t), _r + (_u * unbiased - _r) / (_t + 1),
                           params["running_var"], var, t, shape=var.shape)
        else:
            m = sp.Float(self.momentum, 17)
            new_mean = _map("bn_running_mean", (_r, _u), (1 - m) * _r + m * _u, params["running_mean"], mean)
            new_var = _map("bn_running_var", (_r, _u), (1 - m) * _r + m * unbiased * _u, params["running_var"], var)
        return (("running_mean", new_mean), ("running_var", new_var),
                ("num_batches_tracked", _map("bn_count", (_t,), _t + 1, tracked)))

    def init(self, rng: np.random.Generator, scheme: str | None) -> dict[str, np.ndarray]:
        c = self.num_features
        values = {"weight": np.ones(c), "bias": np.zeros(c)} if self.affine else {}
        if self.track_running_stats:
            values.update({"running_mean": np.zeros(c), "running_var": np.ones(c),
                           "num_batches_tracked": np.zeros(())})
        return values

    def describe(self) -> str:
        extra = "" if self.momentum == 0.1 else f", momentum={self.momentum}"
        extra += "" if self.affine else ", affine=False"
        extra += "" if self.track_running_stats else ", track_running_stats=False"
        return f"{type(self).__name__}({self.num_features}, eps={self.eps:g}{extra})"


@register_layer
@dataclass(frozen=True, init=False)
class BatchNorm1d(_BatchNorm):
    """``torch.nn.BatchNorm1d``: features (C,) or sequences (C, L), statistics per channel."""

    KIND: ClassVar[str] = "batchnorm1d"
    RANKS: ClassVar[tuple[int, ...]] = (1, 2)


@register_layer
@dataclass(frozen=True, init=False)
class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d``: images (C, H, W), statistics per channel over the batch and
    the channel's H*W positions."""

    KIND: ClassVar[str] = "batchnorm2d"
    RANKS: ClassVar[tuple[int, ...]] = (3,)


def single_value_channel(net, rows: int) -> str | None:
    """The name of a batch norm that keeps running statistics and would see a single value per
    channel in a training batch of ``rows`` rows (features, P = 1, and one row), else None:
    its unbiased batch variance divides by zero, so a train step cannot update it."""
    if rows > 1 or net.graph is None:
        return None
    g = net.graph
    for call in g.calls:
        layer = g.layers[call.layer]
        if isinstance(layer, _BatchNorm) and layer.track_running_stats:
            shape = g.value_shape(call.inputs[0])
            if rows * int(np.prod(shape[1:])) <= 1:
                return f"{type(layer).__name__} {g.names[call.layer]}"
    return None


__all__ = ["BatchNorm1d", "BatchNorm2d", "single_value_channel"]
