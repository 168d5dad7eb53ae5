"""The spatial functions (symnn/backends/numpy/spatial.py: the interpreter's semantics and the
emitted NumPy module's code) against torch.nn.functional, op by op: convolution and both its
pullbacks over random groups, strides, dilations and paddings; max pooling with ties (values
rounded to one decimal, so windows share their maximum: the gradient must go to the first one,
as PyTorch's) and NaN; average pooling's divisors with ceil_mode and count_include_pad."""

from __future__ import annotations

from dataclasses import astuple

import numpy as np
import pytest

from symnn import ir
from symnn.backends.numpy import spatial as S

torch = pytest.importorskip("torch")
F = torch.nn.functional
#: sums of at most a few dozen products of N(0, 1) values: float64 rounding stays near 1e-14
TOL = 1e-12


def _conv_cases(rng: np.random.Generator, count: int):
    while count:
        g = int(rng.choice([1, 2, 3]))
        c, o = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
        h, w = int(rng.integers(1, 8)), int(rng.integers(3, 8))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        sh, sw, dh, dw = (int(v) for v in rng.integers(1, 3, 4))
        pt, pb, pl, pr = (int(v) for v in rng.integers(0, 3, 4))
        try:
            geo = ir.ConvGeometry(c, h, w, o, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, g)
        except ValueError:
            continue
        count -= 1
        yield geo


def test_convolution_and_its_pullbacks_are_torchs() -> None:
    rng = np.random.default_rng(0)
    for geo in _conv_cases(rng, 60):
        n = 2
        x = rng.normal(size=(n, geo.in_size))
        weight = rng.normal(size=(geo.o, geo.c // geo.groups, geo.kh, geo.kw))
        gy = rng.normal(size=(n, geo.out_size))
        tx = torch.tensor(x.reshape(n, geo.c, geo.h, geo.w), requires_grad=True)
        tw = torch.tensor(weight, requires_grad=True)
        padded = F.pad(tx, (geo.pl, geo.pr, geo.pt, geo.pb))  # torch pads evenly: pad first
        ty = F.conv2d(padded, tw, stride=(geo.sh, geo.sw), dilation=(geo.dh, geo.dw), groups=geo.groups)
        ty.backward(torch.tensor(gy.reshape(ty.shape)))
        t = ir.geometry_values(geo)
        wm = weight.reshape(geo.o, -1)
        assert ty.shape[2:] == (geo.ho, geo.wo), geo
        np.testing.assert_allclose(S._conv(x, wm, t), ty.detach().numpy().reshape(n, -1), atol=TOL, err_msg=str(geo))
        np.testing.assert_allclose(S._conv_grad_input(gy, wm, t), tx.grad.numpy().reshape(n, -1), atol=TOL)
        np.testing.assert_allclose(S._conv_grad_weight(x, gy, t), tw.grad.numpy().reshape(geo.o, -1), atol=TOL)


def _pool_cases(rng: np.random.Generator, count: int):
    while count:
        c, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 8)), int(rng.integers(2, 9))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2))
        ceil, include = bool(rng.integers(0, 2)), bool(rng.integers(0, 2))
        try:
            geo = ir.PoolGeometry(c, h, w, kh, kw, sh, sw, ph, ph, pw, pw, dh, dw, ceil, include)
        except ValueError:
            continue
        if geo.has_empty_window:  # refused by the layers (PyTorch writes out of bounds there)
            continue
        count -= 1
        yield geo


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_and_its_pullback_are_torchs(kind: str) -> None:
    rng = np.random.default_rng(1)
    for geo in _pool_cases(rng, 80):
        if kind == "avg":
            geo = ir.PoolGeometry(*astuple(geo)[:11], 1, 1, *astuple(geo)[13:])
            if geo.has_empty_window:
                continue
        n = 2
        x = rng.normal(size=(n, geo.in_size)).round(1)  # ties within windows
        gy = rng.normal(size=(n, geo.out_size))
        tx = torch.tensor(x.reshape(n, geo.c, geo.h, geo.w), requires_grad=True)
        args = ((geo.kh, geo.kw), (geo.sh, geo.sw), (geo.pt, geo.pl))
        if kind == "max":
            ty = F.max_pool2d(tx, *args, (geo.dh, geo.dw), ceil_mode=geo.ceil_mode)
        else:
            ty = F.avg_pool2d(tx, *args, ceil_mode=geo.ceil_mode, count_include_pad=geo.count_include_pad)
        assert ty.shape[2:] == (geo.ho, geo.wo), geo
        ty.backward(torch.tensor(gy.reshape(ty.shape)))
        t = ir.geometry_values(geo)
        y, dx = (S._max_pool(x, t), S._max_pool_grad(x, gy, t)) if kind == "max" else \
            (S._avg_pool(x, t), S._avg_pool_grad(gy, t))
        np.testing.assert_allclose(y, ty.detach().numpy().reshape(n, -1), atol=TOL, err_msg=str(geo))
        np.testing.assert_allclose(dx, tx.grad.numpy().reshape(n, -1), atol=TOL, err_msg=str(geo))


def test_max_pool_nan_wins_its_window_as_in_torch() -> None:
    geo = ir.PoolGeometry(1, 2, 4, 2, 2, 2, 2)
    x = np.array([[1.0, 5.0, 2.0, 3.0, np.nan, 0.0, 9.0, 9.0]])
    tx = torch.tensor(x.reshape(1, 1, 2, 4), requires_grad=True)
    ty = F.max_pool2d(tx, 2)
    ty.sum().backward()
    t = ir.geometry_values(geo)
    np.testing.assert_array_equal(S._max_pool(x, t), ty.detach().numpy().reshape(1, -1))
    np.testing.assert_array_equal(S._max_pool_grad(x, np.ones((1, 2)), t), tx.grad.numpy().reshape(1, -1))


def test_the_complex_step_selects_by_the_real_part() -> None:
    """The interpreter differentiates by complex step through these functions: a window's
    maximum is the tap with the largest real part, carrying its imaginary part."""
    geo = ir.PoolGeometry(1, 1, 4, 1, 2, 1, 2)
    x = np.array([[1.0 + 0.0j, 2.0 + 1e-20j, 3.0 + 2e-20j, 0.5 - 1.0j]])
    y = S._max_pool(x, ir.geometry_values(geo))
    assert np.array_equal(y, np.array([[2.0 + 1e-20j, 3.0 + 2e-20j]]))
