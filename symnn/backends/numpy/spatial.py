"""The spatial ops in NumPy: convolution, its two pullbacks, pooling and the per-channel bias.

One text serves twice: the IR interpreter (:mod:`symnn.interpret`, the reference the tests hold
every backend to) calls these functions, and the NumPy backend copies the source of those a
network uses into the module it emits (:func:`sources`), which then needs nothing but NumPy.
So each function is self-contained: it reads only ``np`` and its arguments, and works on any
dtype, complex included (the interpreter's complex step: maxima and ties compare real parts).

A sample's (C, H, W) is one row of C*H*W, row-major (a contiguous NCHW tensor); a geometry is
:func:`symnn.ir.geometry_values`: the fields of :class:`symnn.ir.ConvGeometry` /
:class:`symnn.ir.PoolGeometry` in order, then the output's height and width (computed there
alone, as the C code gets them).
Convolutions are im2col and one batched product per group (``np.matmul``); the scatters of the
pullbacks loop over the kernel's taps (kh*kw vectorised passes), so the code's cost in Python
does not grow with the image or the batch.
"""

from __future__ import annotations

import inspect

import numpy as np


def _windows(xp, kh, kw, sh, sw, dh, dw, ho, wo):
    """The (N, C, kh, kw, ho, wo) view of the padded images ``xp`` (N, C, Hp, Wp): entry
    [n, c, a, b, i, j] is xp[n, c, i*sh + a*dh, j*sw + b*dw]. Read-only, no copy."""
    n, c = xp.shape[:2]
    s_n, s_c, s_h, s_w = xp.strides
    return np.lib.stride_tricks.as_strided(xp, (n, c, kh, kw, ho, wo),
                                           (s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw), writeable=False)


def _padded(x, c, h, w, pt, pb, pl, pr, fill):
    """The samples (N, C*H*W) as (N, C, H + pt + pb, W + pl + pr) images, padded with ``fill``."""
    img = x.reshape(x.shape[0], c, h, w)
    if pt or pb or pl or pr:
        img = np.pad(img, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    return img


def _conv_cols(x, geom):
    """im2col: (N, groups, C/g*kh*kw, Ho*Wo), the taps of each output position as a column."""
    c, h, w, o, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, g, ho, wo = geom
    win = _windows(_padded(x, c, h, w, pt, pb, pl, pr, 0), kh, kw, sh, sw, dh, dw, ho, wo)
    return win.reshape(x.shape[0], g, c // g * kh * kw, ho * wo)


def _conv(x, weight, geom):
    """PyTorch's conv2d (no bias) of the samples ``x`` (N, C*H*W) with ``weight`` (O, C/g*kh*kw)."""
    g, o = geom[14], geom[3]
    cols = _conv_cols(x, geom)
    y = np.matmul(weight.reshape(g, o // g, cols.shape[2]), cols)  # (N, g, O/g, Ho*Wo)
    return y.reshape(x.shape[0], -1)


def _conv_grad_input(gy, weight, geom):
    """The pullback of ``_conv`` to its input: the transposed convolution of ``gy``."""
    c, h, w, o, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, g, ho, wo = geom
    n = gy.shape[0]
    wm = weight.reshape(g, o // g, c // g * kh * kw)
    cols = np.matmul(wm.transpose(0, 2, 1), gy.reshape(n, g, o // g, ho * wo))
    cols = cols.reshape(n, c, kh, kw, ho, wo)
    dxp = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=cols.dtype)
    for a in range(kh):
        for b in range(kw):
            dxp[:, :, a * dh:a * dh + sh * (ho - 1) + 1:sh, b * dw:b * dw + sw * (wo - 1) + 1:sw] += cols[:, :, a, b]
    return dxp[:, :, pt:pt + h, pl:pl + w].reshape(n, c * h * w)


def _conv_grad_weight(x, gy, geom):
    """The pullback of ``_conv`` to its weight: (O, C/g*kh*kw), summed over the batch."""
    o, g = geom[3], geom[14]
    cols = _conv_cols(x, geom)  # (N, g, K, P)
    n, _, k, p = cols.shape
    gm = gy.reshape(n, g, o // g, p).transpose(1, 2, 0, 3).reshape(g, o // g, n * p)
    return np.matmul(gm, cols.transpose(1, 0, 3, 2).reshape(g, n * p, k)).reshape(o, k)


def _channel_bias(z, b, channels, positions):
    """``z`` (N, C*P) plus b[c] on each of channel c's P positions."""
    return (z.reshape(z.shape[0], channels, positions) + b.reshape(channels, 1)).reshape(z.shape[0], -1)


def _channel_sum(a, channels, positions):
    """Per channel, the sum of ``a`` (N, C*P), or of a vector (C*P,), over the batch and the
    channel's positions."""
    return a.reshape(-1, channels, positions).sum(axis=(0, 2))


def _channel_expand(v, channels, positions):
    """The vector ``v`` (C,) spread over each channel's positions: (C*P,)."""
    return np.repeat(v, positions)


def _pool_extent(geom):
    """(Hp, Wp): the padded image a pooling's windows cover, its padding and, with ceil_mode,
    as far on the far sides as the last window reaches."""
    c, h, w, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, ceil, _, ho, wo = geom
    return (max(h + pt + pb, (ho - 1) * sh + dh * (kh - 1) + 1),
            max(w + pl + pr, (wo - 1) * sw + dw * (kw - 1) + 1))


def _pool_windows(x, geom, fill):
    """The windows (N, C, kh, kw, Ho, Wo) of a pooling, over ``x`` padded with ``fill`` to
    :func:`_pool_extent`."""
    c, h, w, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, ceil, _, ho, wo = geom
    hp, wp = _pool_extent(geom)
    return _windows(_padded(x, c, h, w, pt, hp - h - pt, pl, wp - w - pl, fill), kh, kw, sh, sw, dh, dw, ho, wo)


def _max_pool_index(x, geom):
    """Per window, the flat tap index (a*kw + b) of its first maximum (NaN counts as the
    maximum, as in PyTorch), with the windows themselves."""
    win = _pool_windows(x, geom, -np.inf)
    n, c, kh, kw, ho, wo = win.shape
    taps = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c, ho, wo, kh * kw)
    key = np.real(taps)
    return np.where(np.isnan(key).any(axis=-1), np.isnan(key).argmax(axis=-1), key.argmax(axis=-1)), taps


def _max_pool(x, geom):
    """Each window's maximum: (N, C*H*W) -> (N, C*Ho*Wo) (NaN propagates, as in PyTorch; a
    complex step's maximum is the tap whose real part is largest)."""
    if not np.iscomplexobj(x):
        return _pool_windows(x, geom, -np.inf).max(axis=(2, 3)).reshape(x.shape[0], -1)
    idx, taps = _max_pool_index(x, geom)
    return np.take_along_axis(taps, idx[..., None], axis=-1).reshape(x.shape[0], -1)


def _max_pool_grad(x, gy, geom):
    """The pullback of ``_max_pool``: each window's cotangent goes to its first maximum."""
    c, h, w, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, ceil, _, ho, wo = geom
    idx, _ = _max_pool_index(x, geom)
    n, _, ho, wo = idx.shape
    g = gy.reshape(n, c, ho, wo)
    dxp = np.zeros((n, c, *_pool_extent(geom)), dtype=np.result_type(gy, x))
    for a in range(kh):
        for b in range(kw):
            dxp[:, :, a * dh:a * dh + sh * (ho - 1) + 1:sh, b * dw:b * dw + sw * (wo - 1) + 1:sw] += \
                np.where(idx == a * kw + b, g, 0)
    return dxp[:, :, pt:pt + h, pl:pl + w].reshape(n, c * h * w)


def _avg_divisor(geom):
    """(Ho, Wo): each window's divisor, as PyTorch's avg_pool2d counts it (the padding's zeros
    with count_include_pad, never the part of a ceil_mode window past the padding)."""
    c, h, w, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, ceil, include_pad, ho, wo = geom
    counts = []
    for out, size, lo, hi, k, s in ((ho, h, pt, pb, kh, sh), (wo, w, pl, pr, kw, sw)):
        start = np.arange(out) * s - lo
        end = np.minimum(start + k, size + hi)
        padded = end - start
        inside = np.minimum(end, size) - np.maximum(start, 0)
        counts.append(padded if include_pad else inside)
    return np.outer(counts[0], counts[1])


def _avg_pool(x, geom):
    """Each window's mean: (N, C*H*W) -> (N, C*Ho*Wo)."""
    win = _pool_windows(x, geom, 0)
    total = win.sum(axis=(2, 3))
    return (total / _avg_divisor(geom).astype(total.real.dtype)).reshape(x.shape[0], -1)


def _avg_pool_grad(gy, geom):
    """The pullback of ``_avg_pool``: each window's cotangent over its divisor, on its taps."""
    c, h, w, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, ceil, _, ho, wo = geom
    n = gy.shape[0]
    g = gy.reshape(n, c, ho, wo) / _avg_divisor(geom).astype(gy.real.dtype)
    dxp = np.zeros((n, c, *_pool_extent(geom)), dtype=g.dtype)
    for a in range(kh):
        for b in range(kw):
            dxp[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] += g
    return dxp[:, :, pt:pt + h, pl:pl + w].reshape(n, c * h * w)


def _gather(idx, w, vocab, dim, padding_idx):
    """The rows of ``w`` (V, D) named by the indices ``idx`` (N, T), side by side: (N, T*D).
    The indices are reals holding integers in [0, V) (checked before any kernel runs)."""
    return np.take(w, np.real(idx).astype(np.intp), axis=0).reshape(idx.shape[0], -1)


def _gather_grad(idx, gy, vocab, dim, padding_idx):
    """The pullback of ``_gather`` to its table: each D-block of ``gy`` (N, T*D) added into the
    row its index names (repeated indices accumulate), row ``padding_idx`` (if >= 0) zero."""
    # one bincount over the flat entries (row*D + column): 3.6x faster than np.add.at (V=1000,
    # D=32, 4096 indices: 0.25 against 0.91 ms), summing in the same order; it takes real
    # weights only, so a complex step's parts go through it apart
    rows = np.real(idx).astype(np.intp).reshape(-1, 1)
    flat = (rows * dim + np.arange(dim)).reshape(-1)

    def scatter(part):
        return np.bincount(flat, weights=part.reshape(-1), minlength=vocab * dim)

    total = scatter(gy.real) + 1j * scatter(gy.imag) if np.iscomplexobj(gy) else scatter(gy)
    out = total.reshape(vocab, dim).astype(gy.dtype)
    if padding_idx >= 0:
        out[padding_idx] = 0
    return out


#: per function, the functions of this module it calls (the emitted module copies them too)
_NEEDS = {
    "_conv": ("_conv_cols",), "_conv_cols": ("_windows", "_padded"), "_conv_grad_weight": ("_conv_cols",),
    "_pool_windows": ("_pool_extent", "_windows", "_padded"), "_max_pool_index": ("_pool_windows",),
    "_max_pool": ("_max_pool_index",), "_max_pool_grad": ("_max_pool_index",),
    "_avg_pool": ("_pool_windows", "_avg_divisor"), "_avg_pool_grad": ("_pool_extent", "_avg_divisor"),
}


def sources(names: set[str]) -> str:
    """The source text of the functions ``names`` and of those they call, in this module's
    order (deterministic), for an emitted module."""
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(_NEEDS.get(name, ()))
    order = [name for name in globals() if name in wanted]
    return "\n\n".join(inspect.getsource(globals()[name]).rstrip() for name in order) + "\n"
