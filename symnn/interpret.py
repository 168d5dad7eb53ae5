"""A NumPy interpreter of the IR: the executable definition of each op's semantics.

It evaluates any graph on any array dtype, complex included, so it is the reference path
for complex-step differentiation (with a complex-step-safe ``Abs``) and for the per-rule
pullback tests. It is deliberately simple and slow; emitted kernels are the fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from . import ir, naming
from .backends.numpy import spatial
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
#: NumPy for ``lambdify`` as the module object, not the name "numpy": the name makes SymPy run
#: ``from numpy import *``, which loads every lazily imported NumPy submodule (0.3 s of the
#: first compile in a process); the object gives the same printer and NumPy's namespace as is
NUMPY = np
_MODULES = [FUNCTIONS, NUMPY]


@lru_cache(maxsize=4096)
def _lambdify(fn: ir.Elementwise):
    return sp.lambdify(fn.args + (naming.N,), plain(fn.expr), modules=_MODULES)


@dataclass(frozen=True)
class _Env:
    """What a rule needs beyond its node and operand values: the leaves' values by name and the
    batch size (a map's ``N``, and its broadcast shape)."""

    leaves: Mapping[str, np.ndarray]
    nrows: int
    #: the sequences' run-time length T where the graph's sizes hold it, else 0
    length: int = 0

    def size(self, d) -> int:
        """A size of the graph (an int, or an expression in N and T) in this evaluation."""
        if isinstance(d, int):
            return d
        d = sp.sympify(d)
        return int(d.xreplace({naming.N: self.nrows, naming.T: self.length})) if d.free_symbols else int(d)


Rule = Callable[[ir.Node, list[np.ndarray], _Env], np.ndarray]


# -- one rule per op (:data:`RULES`): the value of ``node`` from its operands' values ``s`` -----
def _leaf(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    # a parameter as the IR holds it (ir.matrix_shape): a convolution's 4-D weight as its
    # matrix, a scalar as a vector of one entry
    value = np.asarray(env.leaves[node.arg])
    if node.op is ir.Op.PARAM and len(value.shape) != len(node.shape):
        return value.reshape(tuple(env.size(d) for d in node.shape))
    return value


def _const(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return np.asarray(float(node.arg))


def _matmul(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    a = s[0].T if node.arg[0] else s[0]
    b = s[1].T if node.arg[1] else s[1]
    return a @ b


def _add_bias(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return s[0] + s[1]


def _sum_rows(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return s[0].sum(axis=0)


def _map(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    shape = tuple(env.size(d) for d in node.shape)
    return np.broadcast_to(_lambdify(node.arg)(*s, env.nrows), shape)


def _logsumexp_of(z: np.ndarray) -> np.ndarray:
    m = np.real(z).max(axis=1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _softmax(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    e = np.exp(s[0] - np.real(s[0]).max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _logsumexp(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return _logsumexp_of(s[0])


def _rowsum(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return s[0].sum(axis=1, keepdims=True)


def _softmax_ce(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return _logsumexp_of(s[0]) - (s[1] * s[0]).sum(axis=1, keepdims=True)


def _sum(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return s[0].sum()


def _concat(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return np.concatenate(s, axis=1)


def _slice(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    lo, hi = node.arg
    return s[0][:, env.size(lo):env.size(hi)]


def _geometry(node: ir.Node) -> tuple:
    return ir.geometry_values(node.arg)


def _conv(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._conv(s[0], s[1], _geometry(node))


def _conv_grad_input(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._conv_grad_input(s[0], s[1], _geometry(node))


def _conv_grad_weight(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._conv_grad_weight(s[0], s[1], _geometry(node))


def _channel_bias(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._channel_bias(s[0], s[1], *node.arg)


def _channel_sum(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._channel_sum(s[0], *node.arg)


def _channel_expand(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._channel_expand(s[0], *node.arg)


def _max_pool(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._max_pool(s[0], _geometry(node))


def _max_pool_grad(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._max_pool_grad(s[0], s[1], _geometry(node))


def _avg_pool(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._avg_pool(s[0], _geometry(node))


def _avg_pool_grad(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._avg_pool_grad(s[0], _geometry(node))


def _gather(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._gather(s[0], s[1], *node.arg)


def _gather_grad(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return spatial._gather_grad(s[0], s[1], *node.arg)


def _reshape(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    return s[0].reshape(-1, env.size(node.shape[1]))  # the rows follow (a multiple of the batch)


def _scan(node: ir.Node, s: list[np.ndarray], env: _Env) -> np.ndarray:
    """The loop: the body evaluated once per step on the carry, the step's columns of each
    sequence and the invariants; each step's output written at its columns."""
    body: ir.Scan = node.arg
    T, k = env.size(body.length), len(body.steps)
    carry, seqs, invs = s[0], s[1:1 + k], s[1 + k:]
    widths = [int(p.shape[1]) for p in body.steps]
    width = int(body.out.shape[1])
    rows = carry.shape[0]
    out = np.zeros((rows, T * width), dtype=np.result_type(carry, *seqs, *invs))
    order = body.nodes()
    for t in (range(T - 1, -1, -1) if body.reverse else range(T)):
        bound = {body.carry.arg: carry, **{p.arg: v for p, v in zip(body.invariants, invs)},
                 **{p.arg: x[:, t * w:(t + 1) * w] for p, x, w in zip(body.steps, seqs, widths)}}
        inner = _Env({**env.leaves, **bound}, rows, env.length)
        values: dict[int, np.ndarray] = {}
        for n in order:
            values[id(n)] = np.asarray(RULES[n.op](n, [values[id(x)] for x in n.src], inner))
        out[:, t * width:(t + 1) * width] = np.broadcast_to(values[id(body.out)], (rows, width))
        carry = np.broadcast_to(values[id(body.new_carry)], carry.shape)
        if body.reset and t % body.reset == 0:  # a truncated recurrence: nothing carried on
            carry = np.zeros_like(carry)
    return out


#: the semantics of every op, leaves included (``tests/unit/test_dispatch_tables.py`` checks
#: that none is missing)
RULES: dict[ir.Op, Rule] = {
    ir.Op.INPUT: _leaf,
    ir.Op.PARAM: _leaf,
    ir.Op.CONST: _const,
    ir.Op.VAR: _leaf,
    ir.Op.MATMUL: _matmul,
    ir.Op.ADD_BIAS: _add_bias,
    ir.Op.SUM_ROWS: _sum_rows,
    ir.Op.MAP: _map,
    ir.Op.SOFTMAX: _softmax,
    ir.Op.LOGSUMEXP: _logsumexp,
    ir.Op.ROWSUM: _rowsum,
    ir.Op.SOFTMAX_CE: _softmax_ce,
    ir.Op.SUM: _sum,
    ir.Op.CONCAT: _concat,
    ir.Op.SLICE: _slice,
    ir.Op.CONV: _conv,
    ir.Op.CONV_GRAD_INPUT: _conv_grad_input,
    ir.Op.CONV_GRAD_WEIGHT: _conv_grad_weight,
    ir.Op.CHANNEL_BIAS: _channel_bias,
    ir.Op.CHANNEL_SUM: _channel_sum,
    ir.Op.CHANNEL_EXPAND: _channel_expand,
    ir.Op.MAX_POOL: _max_pool,
    ir.Op.MAX_POOL_GRAD: _max_pool_grad,
    ir.Op.AVG_POOL: _avg_pool,
    ir.Op.AVG_POOL_GRAD: _avg_pool_grad,
    ir.Op.GATHER: _gather,
    ir.Op.GATHER_GRAD: _gather_grad,
    ir.Op.RESHAPE: _reshape,
    ir.Op.SCAN: _scan,
}


def evaluate(outputs: Mapping[str, ir.Node], leaves: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate ``outputs`` given values for INPUT/PARAM leaves (by name)."""
    values: dict[int, np.ndarray] = {}
    # parameters by their name (``dense1.weight``) or their identifier in the graph (``dense1_weight``)
    leaves = {naming.param_ident(k): v for k, v in leaves.items()}
    order = ir.toposort(outputs.values())
    env = _Env(leaves, leaves["X"].shape[0] if "X" in leaves else 1, _length(order, leaves))
    for node in order:
        rule = RULES.get(node.op)
        if rule is None:
            raise NotImplementedError(f"internal error: the IR interpreter has no rule for op "
                                      f"{node.op!r}")
        values[id(node)] = np.asarray(rule(node, [values[id(x)] for x in node.src], env))
    return {k: values[id(n)] for k, n in outputs.items()}


def _length(nodes: Sequence[ir.Node], leaves: Mapping[str, np.ndarray]) -> int:
    """The run-time sequence length T that the input X's columns give (``sn.Input(None, F)``:
    X is (N, a*T + b)); 0 where the graph's sizes are fixed."""
    for node in nodes:
        if node.op is ir.Op.INPUT and node.arg == "X" and naming.has_length(node.shape[1]) and "X" in leaves:
            a, b = naming.length_form(node.shape[1])
            return (np.shape(leaves["X"])[1] - b) // a
    return 0
