"""A NumPy interpreter of the IR: the executable definition of each op's semantics.

It evaluates any graph on any array dtype, complex included, so it is the reference path
for complex-step differentiation (with a complex-step-safe ``Abs``) and for the per-rule
pullback tests. It is deliberately simple and slow; emitted kernels are the fast path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import numpy as np
import sympy as sp

from . import ir, naming
from .functions import plain


def _cs_abs(x):
    # |x| for real x, analytic continuation for complex step: sign taken from the real part
    return np.where(np.real(x) >= 0, x, -x)


def _cs_sign(x):
    return np.sign(np.real(x))


def _heaviside0(x, h0=0.0):
    return np.where(np.real(x) > 0, 1.0, 0.0)


def _maximum(*args):
    out = args[0]
    for a in args[1:]:
        out = np.where(np.real(out) >= np.real(a), out, a)
    return out


def _erf(x):
    try:
        from scipy.special import erf
    except ImportError:  # real arguments only without SciPy (gradcheck then uses central differences)
        import math

        return np.vectorize(math.erf, otypes=[np.float64])(x)
    return erf(x)


#: NumPy implementations of what ``lambdify`` maps badly (kinks by the real part, so complex
#: step works; Heaviside(x, 0); erf); :mod:`symnn.saturate` evaluates with them too
FUNCTIONS = {"Abs": _cs_abs, "sign": _cs_sign, "Heaviside": _heaviside0, "Max": _maximum, "erf": _erf}
_MODULES = [FUNCTIONS, "numpy"]


@lru_cache(maxsize=4096)
def _lambdify(fn: ir.Elementwise):
    return sp.lambdify(fn.args + (naming.N,), plain(fn.expr), modules=_MODULES)


def evaluate(outputs: Mapping[str, ir.Node], leaves: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate ``outputs`` given values for INPUT/PARAM leaves (by name)."""
    values: dict[int, np.ndarray] = {}
    # parameters by their name (``dense1.weight``) or their identifier in the graph (``dense1_weight``)
    leaves = {naming.param_ident(k): v for k, v in leaves.items()}
    nrows = leaves["X"].shape[0] if "X" in leaves else 1
    for node in ir.toposort(outputs.values()):
        s = [values[id(x)] for x in node.src]
        op = node.op
        if op in (ir.Op.INPUT, ir.Op.PARAM):
            v = leaves[node.arg]
        elif op is ir.Op.CONST:
            v = np.asarray(float(node.arg))
        elif op is ir.Op.MATMUL:
            a = s[0].T if node.arg[0] else s[0]
            b = s[1].T if node.arg[1] else s[1]
            v = a @ b
        elif op is ir.Op.ADD_BIAS:
            v = s[0] + s[1]
        elif op is ir.Op.SUM_ROWS:
            v = s[0].sum(axis=0)
        elif op is ir.Op.MAP:
            shape = tuple(nrows if d == naming.N else int(d) for d in node.shape)
            v = np.broadcast_to(_lambdify(node.arg)(*s, nrows), shape)
        elif op is ir.Op.SOFTMAX:
            e = np.exp(s[0] - np.real(s[0]).max(axis=1, keepdims=True))
            v = e / e.sum(axis=1, keepdims=True)
        elif op is ir.Op.LOGSUMEXP:
            m = np.real(s[0]).max(axis=1, keepdims=True)
            v = m + np.log(np.exp(s[0] - m).sum(axis=1, keepdims=True))
        elif op is ir.Op.ROWSUM:
            v = s[0].sum(axis=1, keepdims=True)
        elif op is ir.Op.SOFTMAX_CE:
            m = np.real(s[0]).max(axis=1, keepdims=True)
            lse = m + np.log(np.exp(s[0] - m).sum(axis=1, keepdims=True))
            v = lse - (s[1] * s[0]).sum(axis=1, keepdims=True)
        elif op is ir.Op.SUM:
            v = s[0].sum()
        else:  # pragma: no cover
            raise NotImplementedError(op)
        values[id(node)] = np.asarray(v)
    return {k: values[id(n)] for k, n in outputs.items()}
