"""Convolution and pooling layers: ``Conv1d``, ``Conv2d``, ``MaxPool1d/2d``, ``AvgPool1d/2d``,
``GlobalAvgPool`` and ``Flatten``, with the semantics, defaults and parameter layouts of their
``torch.nn`` modules.

A sample of shape (C, H, W) (or (C, L)) is stored as one row of C*H*W reals, row-major: the
memory of a contiguous NCHW tensor. So ``Flatten`` moves no data (its IR is its input), and
element-wise layers (an activation, a residual ``+``, dropout) apply to images unchanged. Each
layer here builds one spatial IR op (:data:`symnn.ir.SPATIAL_OPS`) whose geometry it computes
once; a 1-D layer is the 2-D op with a height of 1.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import numpy as np

from . import ir, naming
from .declare import _SCHEMES, Activation
from .errors import ConfigError, LayerSizeMismatchError, SpecError, SpecTypeError
from .layers import Emitted, Layer, Shape, _check_name, _dim, register_layer

Pair = tuple[int, int]


def _pair(value: object, what: str, rank: int, minimum: int = 1) -> Pair:
    """A size given as an int or a tuple of ``rank`` ints (PyTorch's forms), as (height, width);
    a 1-D layer's height is 1 (or 0 for a padding)."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank
    if len(items) != rank or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < minimum
                                 for v in items):
        raise SpecTypeError(f"{what} must be an integer >= {minimum} or a tuple of {rank}, got {value!r}")
    ints = tuple(int(v) for v in items)
    return (ints[0], ints[1]) if rank == 2 else (1 if minimum else 0, ints[0])


def _activation(value: object, what: str) -> Activation:
    if isinstance(value, str):
        value = Activation.builtin(value)
    if not isinstance(value, Activation):
        raise SpecTypeError(f"{what} activation must be a registry name or an sn.Activation, got "
                            f"{type(value).__name__}")
    if value.is_rowwise:
        raise SpecError(f"{what}: softmax is row-wise, over features; flatten first and apply it to a Dense")
    return value


def _one(shapes: Sequence[Shape], what: str) -> Shape:
    if len(shapes) != 1:
        raise SpecError(f"{what} takes one tensor, got {len(shapes)}")
    return shapes[0]


@dataclass(frozen=True)
class _Conv(Layer):
    """The convolution of ``torch.nn.Conv1d``/``Conv2d`` (a cross-correlation): weight (out,
    in/groups, *kernel), bias (out,), zero padding, optional activation applied after the bias."""

    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = True
    activation: Activation = field(default=None)  # type: ignore[assignment]
    name: str | None = None

    RANK: ClassVar[int] = 2
    PARAM_TEX: ClassVar[dict[str, str]] = {"weight": "K", "bias": "b"}
    REGULARISED: ClassVar[tuple[str, ...]] = ("weight",)
    OUTPUT_TEX: ClassVar[str] = "A"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: object, stride: object = 1,
                 padding: object = 0, dilation: object = 1, groups: int = 1, bias: bool = True,
                 activation: object = "identity", *, name: str | None = None) -> None:
        what = type(self).__name__
        set_ = object.__setattr__
        set_(self, "in_channels", _dim(in_channels, f"{what} in_channels"))
        set_(self, "out_channels", _dim(out_channels, f"{what} out_channels"))
        set_(self, "kernel_size", _pair(kernel_size, f"{what} kernel_size", self.RANK))
        set_(self, "stride", _pair(stride, f"{what} stride", self.RANK))
        set_(self, "dilation", _pair(dilation, f"{what} dilation", self.RANK))
        set_(self, "groups", _dim(groups, f"{what} groups"))
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ConfigError(f"{what}: groups={self.groups} must divide in_channels ({self.in_channels}) "
                              f"and out_channels ({self.out_channels})")
        if not isinstance(bias, bool):
            raise SpecTypeError(f"{what} bias must be True or False, got {bias!r}")
        set_(self, "bias", bias)
        set_(self, "padding", self._padding(padding, what))
        set_(self, "activation", _activation(activation, what))
        set_(self, "name", _check_name(name))

    def _padding(self, padding: object, what: str) -> tuple[int, int, int, int]:
        """(top, bottom, left, right). "same" pads as PyTorch: the total ``dilation*(k-1)``,
        half before and the odd one after; it needs stride 1 (PyTorch refuses it otherwise)."""
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if self.stride != (1, 1):
                raise ConfigError(f"{what}: padding='same' needs stride 1 (as in PyTorch), got {self.stride}")
            pads = []
            for k, d in zip(self.kernel_size, self.dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return (pads[0], pads[1], pads[2], pads[3])
        if isinstance(padding, str):
            raise SpecTypeError(f"{what} padding must be an integer, a tuple, 'same' or 'valid', got {padding!r}")
        ph, pw = _pair(padding, f"{what} padding", self.RANK, minimum=0)
        return (ph, ph, pw, pw)

    def given(self, field: str) -> object:
        """Sizes as the constructor takes them: ``(k,)`` for a 1-D layer's kernel, stride and
        dilation; the padding as ``(ph, pw)`` (``(p,)``), or "same" where only it pads unevenly."""
        if field == "padding":
            pt, pb, pl, pr = self.padding
            if (pt, pl) == (pb, pr):
                return (pt, pl) if self.RANK == 2 else (pl,)
            return "same"  # the only padding that differs between the sides (_padding)
        return _given_sizes(self, field)

    def geometry(self, shape: Shape) -> ir.ConvGeometry:
        """The geometry of this layer on samples of ``shape`` ((C, H, W) or (C, L))."""
        c, h, w = _image(shape, self.RANK, type(self).__name__)
        if c != self.in_channels:
            raise LayerSizeMismatchError(f"{type(self).__name__}({self.in_channels}, {self.out_channels}) applied "
                                         f"to a tensor of shape {shape}: it expects {self.in_channels} channels")
        try:
            return ir.ConvGeometry(c, h, w, self.out_channels, *self.kernel_size, *self.stride, *self.padding,
                                   *self.dilation, self.groups)
        except ValueError as exc:
            raise LayerSizeMismatchError(f"{type(self).__name__} on a tensor of shape {shape}: {exc}") from None

    def param_shapes(self) -> dict[str, Shape]:
        kernel = self.kernel_size if self.RANK == 2 else self.kernel_size[1:]
        shapes = {"weight": (self.out_channels, self.in_channels // self.groups, *kernel)}
        return shapes | {"bias": (self.out_channels,)} if self.bias else shapes

    def output_shape(self, *shapes: Shape) -> Shape:
        g = self.geometry(_one(shapes, type(self).__name__))
        return (g.o, g.ho, g.wo) if self.RANK == 2 else (g.o, g.wo)

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        from .graph import apply_activation

        (x,) = inputs
        g = self.geometry(_one(shapes, type(self).__name__))
        z = ir.conv(x, params["weight"], g)
        if self.bias:
            z = ir.channel_bias(z, params["bias"], g.o, g.ho * g.wo)
        return Emitted(apply_activation(self.activation, z), ((z, "Z"),))

    def init(self, rng: np.random.Generator, scheme: str | None) -> dict[str, np.ndarray]:
        """He (relu-like activations) or Xavier, as :class:`symnn.Dense`, with fan-in C/g*kh*kw and
        fan-out O/g*kh*kw; the bias starts at zero."""
        shape = self.param_shapes()["weight"]
        taps = int(np.prod(shape[2:]))
        fan_in, fan_out = shape[1] * taps, self.out_channels // self.groups * taps
        if _SCHEMES[scheme or self.activation.init] == "he":
            w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
        else:
            a = np.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-a, a, size=shape)
        return {"weight": w, "bias": np.zeros(self.out_channels)} if self.bias else {"weight": w}

    @property
    def output_activation(self) -> Activation:
        return self.activation

    def describe(self) -> str:
        k = "x".join(map(str, self.kernel_size if self.RANK == 2 else self.kernel_size[1:]))
        extras = [f"stride {self.stride}" if self.stride != (1, 1) else "",
                  f"padding {self.padding}" if any(self.padding) else "",
                  f"dilation {self.dilation}" if self.dilation != (1, 1) else "",
                  f"groups {self.groups}" if self.groups > 1 else "", "" if self.bias else "no bias"]
        more = ", ".join(e for e in extras if e)
        return (f"{type(self).__name__}({self.in_channels} -> {self.out_channels}, {k}{', ' + more if more else ''})"
                f", {self.activation.name}")


#: the fields a 1-D layer stores as (height, width) with a height of 1 (0 for a padding)
_PAIRS = ("kernel_size", "stride", "padding", "dilation")


def _given_sizes(layer: "_Conv | _Pool", field: str) -> object:
    """A field of ``layer`` as its constructor takes it: a 1-D layer's sizes without their height."""
    value = getattr(layer, field)
    return value[1:] if field in _PAIRS and layer.RANK == 1 else value


def _image(shape: Shape, rank: int, what: str) -> tuple[int, int, int]:
    """(C, H, W) of a sample of ``shape``: (C, H, W) for a 2-D layer, (C, L) as (C, 1, L) for a
    1-D one."""
    if len(shape) != rank + 1:
        form = "(C, H, W)" if rank == 2 else "(C, L)"
        raise LayerSizeMismatchError(f"{what} applies to samples of shape {form}, got {shape}")
    return (shape[0], shape[1], shape[2]) if rank == 2 else (shape[0], 1, shape[1])


@register_layer
@dataclass(frozen=True, init=False)
class Conv2d(_Conv):
    """``torch.nn.Conv2d``: samples (C, H, W), weight (out, in/groups, kh, kw)."""

    KIND: ClassVar[str] = "conv2d"


@register_layer
@dataclass(frozen=True, init=False)
class Conv1d(_Conv):
    """``torch.nn.Conv1d``: samples (C, L), weight (out, in/groups, k)."""

    KIND: ClassVar[str] = "conv1d"
    RANK: ClassVar[int] = 1


@dataclass(frozen=True)
class _Pool(Layer):
    """A pooling window over each channel, as ``torch.nn.MaxPool2d``/``AvgPool2d`` (stride
    defaults to the window; padding on both sides; no parameters)."""

    kernel_size: Pair
    stride: Pair
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = True
    name: str | None = None

    RANK: ClassVar[int] = 2
    OUTPUT_TEX: ClassVar[str] = "P"

    def __init__(self, kernel_size: object, stride: object = None, padding: object = 0, dilation: object = 1,
                 ceil_mode: bool = False, count_include_pad: bool = True, *, name: str | None = None) -> None:
        what = type(self).__name__
        set_ = object.__setattr__
        set_(self, "kernel_size", _pair(kernel_size, f"{what} kernel_size", self.RANK))
        set_(self, "stride", self.kernel_size if stride is None else _pair(stride, f"{what} stride", self.RANK))
        set_(self, "padding", _pair(padding, f"{what} padding", self.RANK, minimum=0))
        set_(self, "dilation", _pair(dilation, f"{what} dilation", self.RANK))
        for flag, value in (("ceil_mode", ceil_mode), ("count_include_pad", count_include_pad)):
            if not isinstance(value, bool):
                raise SpecTypeError(f"{what} {flag} must be True or False, got {value!r}")
            set_(self, flag, value)
        for k, p in zip(self.kernel_size, self.padding):
            if 2 * p > k:  # PyTorch's rule: a window never lies more than half in the padding
                raise ConfigError(f"{what}: padding {self.padding} must be at most half the window {self.kernel_size}")
        set_(self, "name", _check_name(name))

    def given(self, field: str) -> object:
        return _given_sizes(self, field)

    def geometry(self, shape: Shape) -> ir.PoolGeometry:
        c, h, w = _image(shape, self.RANK, type(self).__name__)
        (ph, pw), (dh, dw) = self.padding, self.dilation
        try:
            g = ir.PoolGeometry(c, h, w, *self.kernel_size, *self.stride, ph, ph, pw, pw, dh, dw, self.ceil_mode,
                                self.count_include_pad)
        except ValueError as exc:
            raise LayerSizeMismatchError(f"{type(self).__name__} on a tensor of shape {shape}: {exc}") from None
        if self.OP is ir.Op.MAX_POOL and g.has_empty_window:
            raise ConfigError(f"{type(self).__name__} on a tensor of shape {shape}: a window lies wholly in the "
                              "padding (its maximum would be -inf); use less padding or dilation")
        return g

    def output_shape(self, *shapes: Shape) -> Shape:
        g = self.geometry(_one(shapes, type(self).__name__))
        return (g.c, g.ho, g.wo) if self.RANK == 2 else (g.c, g.wo)

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        g = self.geometry(_one(shapes, type(self).__name__))
        make = ir.max_pool if self.OP is ir.Op.MAX_POOL else ir.avg_pool
        return Emitted(make(inputs[0], g))

    def describe(self) -> str:
        k = "x".join(map(str, self.kernel_size if self.RANK == 2 else self.kernel_size[1:]))
        return f"{type(self).__name__}({k}, stride {self.stride if self.RANK == 2 else self.stride[1]})"


@register_layer
@dataclass(frozen=True, init=False)
class MaxPool2d(_Pool):
    """``torch.nn.MaxPool2d``: the gradient goes to each window's first maximum (ties as PyTorch)."""

    KIND: ClassVar[str] = "maxpool2d"
    OP: ClassVar[ir.Op] = ir.Op.MAX_POOL


@register_layer
@dataclass(frozen=True, init=False)
class MaxPool1d(_Pool):
    """``torch.nn.MaxPool1d``."""

    KIND: ClassVar[str] = "maxpool1d"
    OP: ClassVar[ir.Op] = ir.Op.MAX_POOL
    RANK: ClassVar[int] = 1


@register_layer
@dataclass(frozen=True, init=False)
class AvgPool2d(_Pool):
    """``torch.nn.AvgPool2d`` (no dilation; ``count_include_pad`` as PyTorch, default True)."""

    KIND: ClassVar[str] = "avgpool2d"
    OP: ClassVar[ir.Op] = ir.Op.AVG_POOL

    def __init__(self, kernel_size: object, stride: object = None, padding: object = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, *, name: str | None = None) -> None:
        super().__init__(kernel_size, stride, padding, 1, ceil_mode, count_include_pad, name=name)


@register_layer
@dataclass(frozen=True, init=False)
class AvgPool1d(AvgPool2d):
    """``torch.nn.AvgPool1d``."""

    KIND: ClassVar[str] = "avgpool1d"
    RANK: ClassVar[int] = 1


@register_layer
@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """The mean of each channel over all its positions, (C, H, W) or (C, L) -> (C,): PyTorch's
    ``nn.AdaptiveAvgPool2d(1)`` followed by ``flatten(1)`` (an average pool whose window is the
    whole image)."""

    name: str | None = None

    KIND: ClassVar[str] = "globalavgpool"
    OUTPUT_TEX: ClassVar[str] = "P"

    def __init__(self, *, name: str | None = None) -> None:
        object.__setattr__(self, "name", _check_name(name))

    @staticmethod
    def _geometry(shape: Shape) -> ir.PoolGeometry:
        if len(shape) not in (2, 3):
            raise LayerSizeMismatchError(f"GlobalAvgPool applies to samples (C, H, W) or (C, L), got {shape}")
        c, h, w = shape if len(shape) == 3 else (shape[0], 1, shape[1])
        return ir.PoolGeometry(c, h, w, h, w, h, w)

    def output_shape(self, *shapes: Shape) -> Shape:
        return (_one(shapes, "GlobalAvgPool")[0],)

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        return Emitted(ir.avg_pool(inputs[0], self._geometry(_one(shapes, "GlobalAvgPool"))))

    def describe(self) -> str:
        return "GlobalAvgPool"


@register_layer
@dataclass(frozen=True)
class Flatten(Layer):
    """``torch.nn.Flatten()``: a sample of any shape as its features, in row-major order. The
    stored row is that order already, so it computes nothing."""

    name: str | None = None

    KIND: ClassVar[str] = "flatten"

    def __init__(self, *, name: str | None = None) -> None:
        object.__setattr__(self, "name", _check_name(name))

    def output_shape(self, *shapes: Shape) -> Shape:
        shape = _one(shapes, "Flatten")
        if naming.has_length(naming.entries(shape)):
            raise LayerSizeMismatchError(f"Flatten of a sequence of run-time length (shape {shape}): the features "
                                         "it gives would have no fixed number; read its last state, or fix T "
                                         "(sn.Input(T, F))")
        return (int(np.prod(shape)),)

    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = ()) -> Emitted:
        return Emitted(inputs[0])

    def describe(self) -> str:
        return "Flatten"


__all__ = ["AvgPool1d", "AvgPool2d", "Conv1d", "Conv2d", "Flatten", "GlobalAvgPool", "MaxPool1d", "MaxPool2d"]
