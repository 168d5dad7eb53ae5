"""The SymPy objects a derivation is printed in, and their numeric meaning.

Matrix form uses SymPy's matrix expressions (``MatMul``, ``MatAdd``, ``HadamardProduct``,
``Transpose``, ``OneMatrix``) plus classes of our own: :class:`Apply` (a scalar function
applied element-wise, ``\\tanh'(Z)``), :class:`RowOp` (softmax and log-sum-exp of each row),
:class:`BlockRow` and :class:`ColSlice` (matrices side by side, and a block of columns),
:class:`Reshape` (a batch of sequences as its steps' rows, and back), :class:`Recurrence` (a
loop over the steps, with its printed body, :class:`Loop`),
:class:`Total` (the sum of a matrix's entries, a scalar) and, for index form,
:class:`Applied` (a named scalar function of scalars). :func:`evaluate` gives every one of them
its NumPy meaning, so the printed formulas can be run as they are printed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Mapping

import numpy as np
import sympy as sp

from ..errors import SpecError

Shape = tuple  # () for a scalar, (rows, cols) for a matrix (a vector is a column)


def _sym(name: str | sp.Symbol) -> sp.Symbol:
    return name if isinstance(name, sp.Symbol) else sp.Symbol(name or "_")


class Apply(sp.MatrixExpr):
    """``body`` (a scalar expression in ``params``) applied entry by entry to ``operands``
    (matrices of this expression's shape). ``name`` is the LaTeX name it prints by
    (``\\sigma``, ``\\tanh'``); an empty name prints ``body`` itself with each parameter
    replaced by its operand. Build with :meth:`of`."""

    def __new__(cls, name: sp.Symbol, params: sp.Tuple, body: sp.Expr, shape: sp.Tuple,
                operands: sp.Tuple) -> "Apply":
        return sp.Basic.__new__(cls, name, params, body, shape, operands)

    @classmethod
    def of(cls, name: str, params: tuple[sp.Symbol, ...], body: sp.Expr, shape: Shape,
           operands: tuple[sp.Basic, ...]) -> "Apply":
        return cls(_sym(name), sp.Tuple(*params), body, sp.Tuple(*shape), sp.Tuple(*operands))

    def doit(self, **hints) -> "Apply":
        return self

    @property
    def name(self) -> str:
        return "" if self.args[0].name == "_" else self.args[0].name

    @property
    def params(self) -> tuple[sp.Symbol, ...]:
        return tuple(self.args[1])

    @property
    def body(self) -> sp.Expr:
        return self.args[2]

    @property
    def shape(self):
        return tuple(self.args[3])

    @property
    def operands(self) -> tuple[sp.Basic, ...]:
        return tuple(self.args[4])


class RowOp(sp.MatrixExpr):
    """A row-wise function of a matrix: ``softmax`` (same shape) or ``logsumexp`` (one column)."""

    KINDS = {"softmax": r"\operatorname{softmax}", "logsumexp": r"\operatorname{logsumexp}"}

    def __new__(cls, kind: str | sp.Symbol, arg: sp.MatrixExpr) -> "RowOp":
        kind = _sym(kind)
        if kind.name not in cls.KINDS:
            raise ValueError(f"unknown row-wise function {kind}")
        return sp.Basic.__new__(cls, kind, arg)

    def doit(self, **hints) -> "RowOp":
        return self

    @property
    def kind(self) -> str:
        return self.args[0].name

    @property
    def shape(self):
        rows, cols = self.args[1].shape
        return (rows, cols) if self.kind == "softmax" else (rows, sp.Integer(1))


class _Operator(sp.MatrixExpr):
    """A matrix operator the derivation keeps whole (a spatial op, a reshape, a loop): it stays
    as written (``doit``), and its entries are entries of it, which the index form names."""

    def doit(self, **hints) -> "_Operator":
        return self

    def _entry(self, i, j, **kwargs) -> sp.Expr:
        from sympy.matrices.expressions.matexpr import MatrixElement

        return MatrixElement(self, i, j)


class _Applied(_Operator):
    """An operator applied to operands, its args ``(what, how, shape, *operands)``: the op's
    name or symbol, what it needs beyond its operands (a geometry, a loop's body), its shape."""

    @property
    def shape(self):
        return tuple(self.args[2])

    @property
    def operands(self) -> tuple[sp.Basic, ...]:
        return tuple(self.args[3:])


def _size(x: object) -> sp.Basic:
    """A size or an index as SymPy holds it: an int as an Integer, a SymPy expression as it is
    (``N*T``); never parsed from text."""
    return x if isinstance(x, sp.Basic) else sp.Integer(int(x))


class Spatial(_Applied):
    """A spatial op of the IR on matrices whose rows are images (C*H*W, row-major): a
    convolution, its two pullbacks, a pooling and its pullback, a per-channel bias or sum.
    Printed as the named operator of :data:`SPATIAL_TEX` applied to its operands; evaluated by
    the very functions the NumPy backend emits (:mod:`symnn.backends.numpy.spatial`), with the
    geometry as the node holds it."""

    def __new__(cls, kind: str | sp.Symbol, geometry: tuple[int, ...], shape: Shape,
                *operands: sp.Basic) -> "Spatial":
        kind = _sym(kind)
        if kind.name not in SPATIAL_TEX:
            raise ValueError(f"unknown spatial op {kind}")
        return sp.Basic.__new__(cls, kind, sp.Tuple(*(sp.Integer(int(g)) for g in geometry)),
                                sp.Tuple(*shape), *operands)

    @property
    def op(self) -> str:
        """The op's name (not ``kind``: SymPy's ``kind`` says what sort of object this is)."""
        return self.args[0].name

    @property
    def geometry(self) -> tuple[int, ...]:
        return tuple(int(g) for g in self.args[1])


#: each spatial op's LaTeX operator (its IR op's function name in the NumPy backend, without
#: the underscore, keys it)
SPATIAL_TEX = {
    "conv": r"\operatorname{conv}", "conv_grad_input": r"\operatorname{conv}^{\top}",
    "conv_grad_weight": r"\operatorname{corr}", "channel_bias": r"\operatorname{addch}",
    "channel_sum": r"\operatorname{sumch}", "channel_expand": r"\operatorname{expch}", "max_pool": r"\operatorname{maxpool}",
    "max_pool_grad": r"\operatorname{maxpool}^{\top}", "avg_pool": r"\operatorname{avgpool}",
    "avg_pool_grad": r"\operatorname{avgpool}^{\top}", "gather": r"\operatorname{gather}",
    "gather_grad": r"\operatorname{gather}^{\top}",
}


class BlockRow(sp.MatrixExpr):
    """Matrices of one row count side by side, ``[A \\; B]`` (a concatenation of features)."""

    def __new__(cls, *blocks: sp.MatrixExpr) -> "BlockRow":
        return sp.Basic.__new__(cls, *blocks)

    def doit(self, **hints) -> "BlockRow":
        return self

    @property
    def shape(self):
        return (self.args[0].shape[0], sp.Add(*(b.shape[1] for b in self.args)))


class ColSlice(sp.MatrixExpr):
    """Columns ``lo`` to ``hi - 1`` (counted from 0, as NumPy's ``A[:, lo:hi]``) of a matrix."""

    def __new__(cls, arg: sp.MatrixExpr, lo: int, hi: int) -> "ColSlice":
        return sp.Basic.__new__(cls, arg, sp.sympify(lo, strict=True), sp.sympify(hi, strict=True))

    def doit(self, **hints) -> "ColSlice":
        return self

    @property
    def bounds(self) -> tuple[sp.Expr, sp.Expr]:
        """The first column and one past the last: integers, or polynomials in the run-time
        sequence length T."""
        return self.args[1], self.args[2]

    @property
    def shape(self):
        lo, hi = self.bounds
        return (self.args[0].shape[0], sp.expand(hi - lo))


class Reshape(_Operator):
    """The entries of a matrix, row-major, as a matrix of another shape (an IR ``RESHAPE``): a
    batch of sequences (N, T*F) as its steps stacked as rows (N*T, F), ``steps`` (sample n's
    step t is row n*T + t), or those rows back as the samples' sequences, ``seq``."""

    KINDS = {"steps": r"\operatorname{steps}", "seq": r"\operatorname{seq}"}

    def __new__(cls, arg: sp.MatrixExpr, rows: sp.Expr, cols: sp.Expr) -> "Reshape":
        return sp.Basic.__new__(cls, arg, _size(rows), _size(cols))

    @property
    def form(self) -> str:
        """``steps`` when it makes more rows (one per step), ``seq`` when fewer (not ``kind``:
        SymPy's ``kind`` says what sort of object this is)."""
        more = sp.cancel(self.args[1] / self.args[0].shape[0])  # a quotient of products of sizes
        return "seq" if more.is_number and more < 1 else "steps"

    @property
    def shape(self):
        return (self.args[1], self.args[2])


class Loop(sp.Basic):
    """A loop's body as printed, for :class:`Recurrence` to run: the placeholders' symbols (the
    carry, each sequence's step t, the invariants), the body's equations ``(lhs, rhs)`` in
    order, the symbols of the new carry and of the step's output, the number of steps and its
    direction. The same equations are the derivation's "Recurrence" section."""

    def __new__(cls, carry: sp.Basic, steps: tuple, invariants: tuple, equations: tuple,
                new_carry: sp.Basic, out: sp.Basic, length: int, reverse: bool, reset: int = 0) -> "Loop":
        eqs = sp.Tuple(*(sp.Tuple(lhs, rhs) for lhs, rhs in equations))
        return sp.Basic.__new__(cls, carry, sp.Tuple(*steps), sp.Tuple(*invariants), eqs, new_carry, out,
                                sp.sympify(length, strict=True), sp.Integer(int(reverse)), sp.Integer(reset))

    @property
    def carry(self) -> sp.Basic:
        return self.args[0]

    @property
    def steps(self) -> tuple[sp.Basic, ...]:
        return tuple(self.args[1])

    @property
    def invariants(self) -> tuple[sp.Basic, ...]:
        return tuple(self.args[2])

    @property
    def equations(self) -> tuple[tuple[sp.Basic, sp.Basic], ...]:
        return tuple((e[0], e[1]) for e in self.args[3])

    @property
    def new_carry(self) -> sp.Basic:
        return self.args[4]

    @property
    def out(self) -> sp.Basic:
        return self.args[5]

    @property
    def length(self) -> "int | sp.Expr":
        """The number of steps: an int, or the run-time sequence length T."""
        n = self.args[6]
        return int(n) if n.is_Integer else n

    @property
    def reverse(self) -> bool:
        return bool(self.args[7])

    @property
    def reset(self) -> int:
        """The carry restarts from zeros after each step t with t % reset == 0 (0: never): a
        truncated backpropagation through time."""
        return int(self.args[8])


class Recurrence(_Applied):
    """A loop (an IR ``SCAN``) applied to its operands (first carry, sequences, invariants),
    printed as its named operator (``\\mathcal{R}_{1}``) whose body the derivation's
    "Recurrence" section prints; its value stacks each step's output, step t at columns
    t*E .. t*E + E - 1, as the SCAN's. :func:`evaluate` runs the printed body per step."""

    def __new__(cls, name: str | sp.Symbol, loop: Loop, shape: Shape, *operands: sp.Basic) -> "Recurrence":
        return sp.Basic.__new__(cls, _sym(name), loop, sp.Tuple(*shape), *operands)

    @property
    def name(self) -> str:
        return self.args[0].name

    @property
    def loop(self) -> Loop:
        return self.args[1]


class Entry(sp.Expr):
    """Entry (i, j) of a matrix operator (the index form of a reshape or a loop), kept whole:
    an atom, so rewriting the index form's scalars (``factor_terms``) never rebuilds the
    operator's scaled operands as scalar products."""

    is_commutative = True
    is_Atom = True

    def __new__(cls, mat: sp.Basic, i: sp.Expr, j: sp.Expr) -> "Entry":
        return sp.Basic.__new__(cls, mat, _size(i), _size(j))

    def doit(self, **hints) -> "Entry":
        return self


class Total(sp.Expr):
    """The sum of every entry of a matrix (a scalar), printed ``1^T M 1``."""

    is_commutative = True

    def __new__(cls, arg: sp.MatrixExpr) -> "Total":
        return sp.Basic.__new__(cls, arg)

    def doit(self, **hints) -> "Total":
        return self


class Applied(sp.Expr):
    """A named scalar function applied to scalars (index form): ``\\tanh'(z_{nj})``."""

    is_commutative = True

    def __new__(cls, name: str | sp.Symbol, *args: sp.Expr) -> "Applied":
        return sp.Basic.__new__(cls, _sym(name), *args)

    def doit(self, **hints) -> "Applied":
        return self

    @property
    def name(self) -> str:
        return self.args[0].name


# -- coefficient-tracking construction ----------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """``coeff * mat`` with the scalar factor kept apart, so factors such as ``N * 1/N`` cancel
    as they are built (SymPy leaves a scalar inside a Hadamard product alone); ``mat`` None: the
    term is the scalar ``coeff``."""

    coeff: sp.Expr
    mat: sp.Basic | None
    shape: Shape

    @property
    def is_scalar(self) -> bool:
        return self.mat is None

    def expr(self) -> sp.Basic:
        if self.mat is None:
            return self.coeff
        if self.coeff == 1:
            return self.mat
        return sp.MatMul(self.coeff, self.mat)


def scalar(value: sp.Expr | int) -> Term:
    """A scalar term: a SymPy expression of the derived program, or a Python int (a size)."""
    if isinstance(value, int):
        value = sp.Integer(value)
    if not isinstance(value, sp.Basic):
        raise TypeError(f"a derivation scalar is a SymPy expression, got {type(value).__name__}")
    return Term(value, None, ())


def matrix(mat: sp.Basic, shape: Shape) -> Term:
    if isinstance(mat, sp.MatMul):
        coeff = sp.Mul(*[a for a in mat.args if not getattr(a, "is_Matrix", False)])
        mats = [a for a in mat.args if getattr(a, "is_Matrix", False)]
        if coeff != 1 and mats:
            return Term(coeff, mats[0] if len(mats) == 1 else sp.MatMul(*mats), shape)
    return Term(sp.Integer(1), mat, shape)


def ones(shape: Shape) -> sp.Basic:
    return sp.OneMatrix(*shape)


def as_matrix(t: Term, shape: Shape) -> Term:
    """A scalar term spread over ``shape`` (``c * 1``); a matrix term as it is."""
    return Term(t.coeff, ones(shape), shape) if t.is_scalar else t


def scale(t: Term, factor: sp.Expr) -> Term:
    return Term(t.coeff * factor, t.mat, t.shape)


def add(a: Term, b: Term) -> Term:
    if a.is_scalar and b.is_scalar:
        return scalar(a.coeff + b.coeff)
    shape = a.shape if not a.is_scalar else b.shape
    a, b = as_matrix(a, shape), as_matrix(b, shape)
    if a.coeff == b.coeff:
        return Term(a.coeff, sp.MatAdd(a.mat, b.mat, evaluate=False), shape)
    if a.coeff == -b.coeff:
        pos, neg = (b, a) if a.coeff.could_extract_minus_sign() else (a, b)
        return Term(pos.coeff, sp.MatAdd(pos.mat, sp.MatMul(-1, neg.mat), evaluate=False), shape)
    parts = _summands(a) + _summands(b)
    common = _common_factor([c for c, _ in parts])
    return Term(common, sp.MatAdd(*[m if c / common == 1 else sp.MatMul(c / common, m) for c, m in parts],
                                  evaluate=False), shape)


def _summands(t: Term) -> list[tuple[sp.Expr, sp.Basic]]:
    """A term's summands as (coefficient, matrix), so sums of sums print flat."""
    if isinstance(t.mat, sp.MatAdd):
        return [(t.coeff * matrix(a, t.shape).coeff, matrix(a, t.shape).mat) for a in t.mat.args]
    return [(t.coeff, t.mat)]


def _common_factor(coeffs: list[sp.Expr]) -> sp.Expr:
    """The scalar factor every coefficient shares (``1/N`` of ``1/N``, ``-1/(16 N)``), taken
    out of a sum so a later ``N *`` cancels it."""
    dummies = [sp.Dummy() for _ in coeffs]
    factored = sp.factor_terms(sp.Add(*[c * d for c, d in zip(coeffs, dummies)]))
    common = sp.Mul(*[f for f in sp.Mul.make_args(factored) if not f.free_symbols & set(dummies)])
    return common if common != 0 else sp.Integer(1)


def hadamard(a: Term, b: Term) -> Term:
    if a.is_scalar or b.is_scalar:
        m = b if a.is_scalar else a
        return Term(a.coeff * b.coeff, m.mat, m.shape)
    if isinstance(a.mat, sp.OneMatrix):
        return Term(a.coeff * b.coeff, b.mat, b.shape)
    if isinstance(b.mat, sp.OneMatrix):
        return Term(a.coeff * b.coeff, a.mat, a.shape)
    return Term(a.coeff * b.coeff, sp.HadamardProduct(a.mat, b.mat), a.shape)


def power(a: Term, n: int) -> Term:
    if a.is_scalar:
        return scalar(a.coeff**n)
    return Term(a.coeff**n, sp.HadamardPower(a.mat, n), a.shape)


def matmul(a: Term, b: Term) -> Term:
    return Term(a.coeff * b.coeff, sp.MatMul(a.mat, b.mat), (a.shape[0], b.shape[1]))


def transpose(a: Term) -> Term:
    return Term(a.coeff, sp.Transpose(a.mat), (a.shape[1], a.shape[0]))


def total(a: Term) -> Term:
    return scalar(a.coeff * Total(a.mat)) if not a.is_scalar else a


# -- numeric meaning ----------------------------------------------------------------------------
def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _clamp(x, lo, hi):
    return np.where(np.isnan(x), x, np.clip(x, lo, hi))


def _guard(x, lo: float, hi: float):
    """``Guard(x, lo, hi)`` as the kernels compute it: the bounds arrive as numbers (the
    guard's own constants, printed by lambdify), and ``guard_bounds`` reads them as floats."""
    from ..functions import guard_bounds

    a, b = guard_bounds(lo, hi, "float64")
    return _clamp(x, a, b)


def _functions() -> dict[str, Callable]:
    from ..interpret import FUNCTIONS

    return {**FUNCTIONS, "Sigmoid": _sigmoid, "Softplus": lambda x: np.logaddexp(0.0, x),
            "Clamp": _clamp, "Guard": _guard, "OnePlusErf": lambda x: 1.0 + FUNCTIONS["erf"](x),
            "expm1": np.expm1}


@lru_cache(maxsize=1024)
def _scalar_fn(params: tuple[sp.Symbol, ...], body: sp.Expr) -> Callable:
    """The printed scalar function as NumPy. Its formula is first put in the stable form the
    simplifier would use (:func:`symnn.simplify.stable.stabilise_expr`: the same function,
    checked equal at 30 digits), so ``sigma'(-800)`` or ``log(1 + e^800)`` evaluate to what they
    are, not to NaN or inf; a declared domain's guard is kept, as the kernels keep it."""
    from ..simplify.stable import stabilise_expr

    from ..interpret import NUMPY

    return sp.lambdify(params, stabilise_expr(body), modules=[_functions(), NUMPY])


def _dim(d: sp.Expr | int, env: Mapping) -> int:
    """A size of the printed formula (an int, or an expression in ``N``) at the batch given."""
    if isinstance(d, int):
        return d
    value = d.xreplace({s: sp.Integer(env[s]) for s in d.free_symbols if s in env})
    if not value.is_Integer:
        raise SpecError(f"evaluating a derivation needs concrete sizes; {d} is symbolic")
    return int(value)


def _matmul(e: sp.MatMul, env: Mapping) -> np.ndarray:
    out: np.ndarray | float = 1.0
    mats = [a for a in e.args if getattr(a, "is_Matrix", False)]
    coeff = np.prod([evaluate(a, env) for a in e.args if not getattr(a, "is_Matrix", False)] or [1.0])
    value = evaluate(mats[0], env)
    for m in mats[1:]:
        value = value @ evaluate(m, env)
    out = coeff * value
    return out


def _apply(e: Apply, env: Mapping) -> np.ndarray:
    fn = _scalar_fn(e.params, e.body)
    shape = tuple(_dim(d, env) for d in e.shape)
    value = fn(*(evaluate(o, env) for o in e.operands))
    return np.broadcast_to(np.asarray(value, dtype=float), shape)


def _rowop(e: RowOp, env: Mapping) -> np.ndarray:
    z = evaluate(e.args[1], env)
    m = z.max(axis=1, keepdims=True)
    ex = np.exp(z - m)
    s = ex.sum(axis=1, keepdims=True)
    return ex / s if e.kind == "softmax" else m + np.log(s)


def _spatial(e: Spatial, env: Mapping) -> np.ndarray:
    from ..backends.numpy import spatial

    args = [np.asarray(evaluate(o, env), dtype=float) for o in e.operands]
    fn = getattr(spatial, f"_{e.op}")
    if e.op in ("channel_bias", "channel_sum", "channel_expand", "gather", "gather_grad"):  # a tuple of sizes
        # a vector is a column here: the result takes the expression's shape ((C, 1), (C*P, 1))
        out = fn(*args, *e.geometry)
        return out.reshape(out.shape[0], -1) if out.ndim == 2 else out.reshape(-1, 1)
    return fn(*args, e.geometry)


def _reshape(e: Reshape, env: Mapping) -> np.ndarray:
    return np.asarray(evaluate(e.args[0], env), dtype=float).reshape(_dim(e.shape[0], env), _dim(e.shape[1], env))


def _recurrence(e: Recurrence, env: Mapping) -> np.ndarray:
    """The loop run as printed: per step, its placeholders bound (the carry the previous step
    left, column block t of each sequence, the invariants), its body's equations evaluated in
    order, the new carry kept and the step's output stacked at its columns."""
    loop = e.loop
    values = [np.asarray(evaluate(o, env), dtype=float) for o in e.operands]
    k = len(loop.steps)
    carry, seqs, invs = values[0], values[1:1 + k], values[1 + k:]
    local = dict(env)
    local.update(zip(loop.invariants, invs))
    length = _dim(loop.length, env)
    outs: list[np.ndarray] = [np.empty(0)] * length
    order = range(length - 1, -1, -1) if loop.reverse else range(length)
    for t in order:
        local[loop.carry] = carry
        for step, seq in zip(loop.steps, seqs):
            width = _dim(step.shape[1], env)
            local[step] = seq[:, t * width:(t + 1) * width]
        for lhs, rhs in loop.equations:
            local[lhs] = evaluate(rhs, local)
        carry = np.asarray(evaluate(loop.new_carry, local), dtype=float)
        if loop.reset and t % loop.reset == 0:
            carry = np.zeros_like(carry)
        outs[t] = np.asarray(evaluate(loop.out, local), dtype=float)
    rows = _dim(e.shape[0], env)
    return np.concatenate([np.broadcast_to(o, (rows, o.shape[-1])) for o in outs], axis=1)


_EVAL: dict[type, Callable[[sp.Basic, Mapping], object]] = {
    sp.MatMul: _matmul,
    sp.MatAdd: lambda e, env: sum(evaluate(a, env) for a in e.args),
    sp.HadamardProduct: lambda e, env: functools.reduce(np.multiply, [evaluate(a, env) for a in e.args]),
    sp.HadamardPower: lambda e, env: evaluate(e.base, env) ** evaluate(e.exp, env),
    sp.Transpose: lambda e, env: evaluate(e.arg, env).T,
    sp.OneMatrix: lambda e, env: np.ones((_dim(e.shape[0], env), _dim(e.shape[1], env))),
    sp.ZeroMatrix: lambda e, env: np.zeros((_dim(e.shape[0], env), _dim(e.shape[1], env))),
    Apply: _apply,
    RowOp: _rowop,
    Spatial: _spatial,
    Reshape: _reshape,
    Recurrence: _recurrence,
    Total: lambda e, env: float(np.sum(evaluate(e.args[0], env))),
    BlockRow: lambda e, env: np.concatenate([np.asarray(evaluate(b, env), dtype=float) for b in e.args], axis=1),
    ColSlice: lambda e, env: evaluate(e.args[0], env)[:, _dim(e.bounds[0], env):_dim(e.bounds[1], env)],
    sp.Add: lambda e, env: sum(evaluate(a, env) for a in e.args),
    sp.Mul: lambda e, env: functools.reduce(np.multiply, [evaluate(a, env) for a in e.args]),
    sp.Pow: lambda e, env: evaluate(e.base, env) ** evaluate(e.exp, env),
}


def evaluate(expr: sp.Basic, env: Mapping) -> np.ndarray | float:
    """The value of a printed formula, given values for its symbols (``env``: MatrixSymbol or
    Symbol -> array or number; sizes such as ``N`` as ints)."""
    if expr in env:
        return env[expr]
    if isinstance(expr, sp.Number):
        return float(expr)
    for cls in type(expr).__mro__:
        rule = _EVAL.get(cls)
        if rule is not None:
            return rule(expr, env)
    if isinstance(expr, (sp.Symbol, sp.MatrixSymbol)):
        raise KeyError(f"no value for {expr} in the derivation's evaluation")
    # a plain scalar function of evaluated arguments (exp, log of a scalar)
    return float(sp.lambdify([], expr.xreplace({s: sp.Float(env[s]) for s in expr.free_symbols}))())
