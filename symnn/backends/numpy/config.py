"""NumPy backend: turn a :class:`~symnn.lower.KernelPlan` into lines of Python.

Only strings leave this module; ``templates/numpy/module.py.jinja`` lays them out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from ... import ir, naming
from ...errors import CodegenError
from ...lower import KernelPlan, Loop, LoopHead, Stmt, dims, last_uses
from ..base import BackendConfig
from ..kinks import minmax_args, split_step
from .printer import SymnnNumPyPrinter


@dataclass(frozen=True)
class NumPyConfig(BackendConfig):
    """NumPy backend settings (see :class:`~symnn.backends.base.BackendConfig`)."""

    name: str = "numpy"
    template_dir: str = "numpy"

    def printer(self) -> SymnnNumPyPrinter:
        return SymnnNumPyPrinter(self.dtype)


def _shape_code(shape) -> str:
    d = dims(shape)
    return "(" + ", ".join(d) + ("," if len(d) == 1 else "") + ")"


def _broadcast(shapes) -> tuple:
    out: list = []
    for s in shapes:
        s = tuple(s)
        if len(s) > len(out):
            out = [*([1] * (len(s) - len(out))), *out]
        pad = [1] * (len(out) - len(s)) + list(s)
        out = [b if a == 1 else a for a, b in zip(out, pad)]
    return tuple(out)


class _KernelPrinter:
    """Prints the statements of one kernel, sharing softmax row statistics between ops.

    Each printed line remembers the origins (:attr:`Stmt.origin`) of the statements whose
    values it computes, so that the emitted module can say which derivation step produced
    which of its lines (:mod:`symnn.provenance`)."""

    def __init__(self, printer: SymnnNumPyPrinter, plan: KernelPlan) -> None:
        self.p = printer
        self.stats: dict[str, tuple[str, str, str]] = {}
        self.lines: list[str] = []
        self.line_origins: list[tuple[str | None, ...]] = []  # one per line of ``lines``
        self.origin: str | None = None  # of the statement being printed
        # for in-place maps: where each name is last read, and the arrays a statement made
        # (a product or a bias add: fresh, owned by this kernel, never an input, parameter,
        # output or view of another array)
        self.last: dict[str, int] = last_uses(plan)
        self.owned: set[str] = set()
        self.outputs = set(plan.outputs.values())
        self.index = -1
        self.depth = 0  # loops open around the statement being printed
        # softmax-CE rows whose only use may be a total: printed lazily, so that
        # sum(lse - rowsum(y*z)) becomes sum(lse) - sum(y*z) without (N, 1) temporaries
        self.deferred: dict[str, tuple[str, str]] = {}
        # apart from ``deferred``, whose code ``_reusable`` searches for names
        self.deferred_origin: dict[str, str | None] = {}

    def _put(self, line: str, *also: str | None) -> None:
        """Print ``line`` for the current statement and for ``also`` (deferred statements whose
        value it completes)."""
        self.lines.append("    " * self.depth + line)
        self.line_origins.append((self.origin, *also))

    def _row_stats(self, z: str) -> tuple[str, str, str]:
        if z not in self.stats:
            m, e, s = f"{z}_max", f"{z}_exp", f"{z}_sum"
            # subtract the row max before exp: softmax/logsumexp never overflow
            for line in (
                f"{m} = {z}.max(axis=1, keepdims=True)",
                f"{e} = {z} - {m}",
                f"np.exp({e}, out={e})",
                f"{s} = {e}.sum(axis=1, keepdims=True)",
            ):
                self._put(line)
            self.stats[z] = (m, e, s)
        return self.stats[z]

    def stmt(self, st: Stmt) -> None:
        rule = STATEMENTS.get(st.kind)
        if rule is None:
            raise CodegenError(f"internal error: the NumPy backend has no rule for statement kind "
                               f"{st.kind!r} (target {st.target!r})")
        self.index += 1
        self.origin = st.origin
        o = st.operands
        if st.kind is ir.Op.SUM and o[0] in self.deferred:
            m_log_s, yz = self.deferred.pop(o[0])
            self._put(f"{st.target} = ({m_log_s}).sum() - ({yz}).sum()", self.deferred_origin.pop(o[0]))
            return
        for name in o:
            if name in self.deferred:
                m_log_s, yz = self.deferred.pop(name)
                self._put(f"{name} = {m_log_s} - ({yz}).sum(axis=1, keepdims=True)",
                          self.deferred_origin.pop(name))
        rule(self, st)

    # -- one rule per statement kind (:data:`STATEMENTS`) -------------------------------------
    def _matmul(self, st: Stmt) -> None:
        ta, tb = st.payload
        a = f"{st.operands[0]}.T" if ta else st.operands[0]
        b = f"{st.operands[1]}.T" if tb else st.operands[1]
        self.owned.add(st.target)
        self._put(f"{st.target} = {a} @ {b}")

    def _add_bias(self, st: Stmt) -> None:
        t, o = st.target, st.operands
        if not st.inplace:
            self.owned.add(t)
        self._put(f"{t} += {o[1]}" if st.inplace else f"{t} = {o[0]} + {o[1]}")

    def _sum_rows(self, st: Stmt) -> None:
        self._put(f"{st.target} = {st.operands[0]}.sum(axis=0)")

    def _rowsum(self, st: Stmt) -> None:
        self._put(f"{st.target} = {st.operands[0]}.sum(axis=1, keepdims=True)")

    def _sum(self, st: Stmt) -> None:
        self._put(f"{st.target} = {st.operands[0]}.sum()")

    def _softmax(self, st: Stmt) -> None:
        _, e, s = self._row_stats(st.operands[0])
        self._put(f"{st.target} = {e} / {s}")

    def _logsumexp(self, st: Stmt) -> None:
        m, _, s = self._row_stats(st.operands[0])
        self._put(f"{st.target} = {m} + np.log({s})")

    def _softmax_ce(self, st: Stmt) -> None:
        # log-softmax form: -sum_k y_k (z_k - lse) = lse - y.z for rows with sum(y) = 1
        z, y = st.operands
        m, _, s = self._row_stats(z)
        self.deferred[st.target] = (f"{m} + np.log({s})", f"{y} * {z}")
        self.deferred_origin[st.target] = st.origin

    def _concat(self, st: Stmt) -> None:
        self.owned.add(st.target)
        self._put(f"{st.target} = np.concatenate(({', '.join(st.operands)},), axis=1)")

    def _slice(self, st: Stmt) -> None:
        # a copy, not a view: the operand's array may be overwritten in place (a map's out=)
        # while the slice is still read
        lo, hi = st.payload
        self.owned.add(st.target)
        self._put(f"{st.target} = {st.operands[0]}[:, {lo}:{hi}].copy()")

    def _reshape(self, st: Stmt) -> None:
        # a view: ``last_uses`` keeps what it views from being overwritten while it is read
        self._put(f"{st.target} = {st.operands[0]}.reshape({_shape_code(st.shape)[1:-1]})")

    # -- a loop (lower.Loop) ----------------------------------------------------------------
    def _carry(self, st: Stmt) -> None:
        # rebound each step to the body's new array, never written in place (the loop's END
        # reads it): the first value needs no copy
        self._put(f"{st.target} = {st.operands[0]}")

    def _begin(self, st: Stmt) -> None:
        head: LoopHead = st.payload
        self.owned.add(st.target)
        self._put(f"{st.target} = np.empty({_shape_code(st.shape)}, dtype=_f)")
        steps = f"range({head.length - 1}, -1, -1)" if head.reverse else f"range({head.length})"
        self._put(f"for {head.index} in {steps}:")
        self.depth += 1

    def _step(self, st: Stmt) -> None:
        head: LoopHead = st.payload
        w, t = int(st.shape[1]), head.index
        self._put(f"{st.target} = {st.operands[0]}[:, {t}*{w}:{t}*{w} + {w}]")

    def _end(self, st: Stmt) -> None:
        head: LoopHead = st.payload
        out, new, carry = st.operands[:3]
        w, t = head.width, head.index
        self._put(f"{st.target}[:, {t}*{w}:{t}*{w} + {w}] = {out}")
        if head.reset:  # a truncated recurrence: after steps 0, k, 2k, ... nothing is carried on
            self._put(f"{carry} = {new} if {t} % {head.reset} else np.zeros_like({new})")
        else:
            self._put(f"{carry} = {new}")
        self.depth -= 1

    def finish(self) -> None:
        """Print the softmax-CE rows nobody summed (an output), each for its own statement."""
        for name, (m_log_s, yz) in self.deferred.items():
            self.origin = self.deferred_origin[name]
            self._put(f"{name} = {m_log_s} - ({yz}).sum(axis=1, keepdims=True)")

    def _map(self, st: Stmt) -> None:
        expr: sp.Expr = st.payload
        temps = sp.numbered_symbols(f"{st.target}_", real=True)
        repl, (reduced,) = sp.cse([expr], symbols=temps, order="canonical")
        for sym, sub in repl:
            self._put(f"{sym} = {self.p.doprint_expr(sub)}")
        code = self._in_place(st, reduced) if not repl else None
        if code is not None:
            self.owned.add(st.target)
        else:
            code = self.p.doprint_expr(reduced)
        if _broadcast(st.src_shapes) != tuple(st.shape):
            code = f"np.broadcast_to({code}, {_shape_code(st.shape)}).astype(_f)"
        self._put(f"{st.target} = {code}")

    def _reusable(self, u: sp.Expr, st: Stmt) -> str | None:
        """``u``'s name if its array can take this map's result: made here, of the target's shape,
        read for the last time by this statement, and not an output."""
        name = str(u)
        if not isinstance(u, sp.Symbol) or name not in self.owned or name in self.outputs \
                or self.last.get(name) != self.index:
            return None
        if any(re.search(rf"\b{name}\b", code) for pair in self.deferred.values() for code in pair):
            return None  # a softmax-CE row printed later still reads it
        shapes = dict(zip(st.operands, st.src_shapes))
        return name if tuple(shapes.get(name, ())) == tuple(st.shape) else None

    def _in_place(self, st: Stmt, expr: sp.Expr) -> str | None:
        """The map written into a dying operand's array (``out=``) where its top operation is one
        ufunc: ReLU ``max(z, 0)``, a backward mask ``d*(z > 0)``, a two-factor product
        ``d*g(a)``, a unary ``np.f(z)``. The same values, without allocating and touching a new
        batch-sized array per layer (what hand-written NumPy does)."""
        if isinstance(expr, sp.Max) and len(expr.args) == 2:
            u, c = minmax_args(expr)
            name = self._reusable(u, st)
            if name is not None and c == 0:
                return f"np.maximum({name}, 0, out={name})"
        if isinstance(expr, sp.Mul):
            step = split_step(expr)
            name = self._reusable(step[1], st) if step is not None else None
            if name is not None:
                return f"np.multiply({name}, {self.p.doprint_expr(step[0])} > 0, out={name})"
            if step is None and len(expr.args) == 2:  # d * g(a): two factors, so the same product
                for u, rest in (expr.args, expr.args[::-1]):
                    name = self._reusable(u, st)
                    if name is not None and not rest.is_number and not (rest.is_Pow and rest.exp.is_negative):
                        return f"np.multiply({name}, {self.p.doprint_expr(rest)}, out={name})"
        if isinstance(expr, sp.Function) and len(expr.args) == 1:  # tanh(z), exp(z), ...
            name = self._reusable(expr.args[0], st)
            if name is not None:
                code = self.p.doprint_expr(expr)
                if re.fullmatch(rf"np\.\w+\({name}\)", code):
                    return f"{code[:-1]}, out={name})"
        return None


def _geometry_code(st: Stmt) -> str:
    """A spatial statement's geometry as the tuple literal the functions of
    :mod:`symnn.backends.numpy.spatial` take (the dataclass's fields in order)."""
    return repr(ir.geometry_values(st.payload))


def _spatial_rule(function: str) -> Callable[[_KernelPrinter, Stmt], None]:
    """The rule printing ``target = function(operands..., geometry)``: a call of the function of
    :mod:`symnn.backends.numpy.spatial` that the module carries (:data:`SPATIAL_FUNCTIONS`)."""

    def rule(self: _KernelPrinter, st: Stmt) -> None:
        args = ", ".join(st.operands)
        extra = _geometry_code(st) if not isinstance(st.payload, tuple) else ", ".join(map(str, st.payload))
        self.owned.add(st.target)
        self._put(f"{st.target} = {function}({args}, {extra})")

    return rule


#: the spatial ops' functions (:mod:`symnn.backends.numpy.spatial`), which the module copies
SPATIAL_FUNCTIONS: dict[ir.Op, str] = {
    ir.Op.CONV: "_conv", ir.Op.CONV_GRAD_INPUT: "_conv_grad_input", ir.Op.CONV_GRAD_WEIGHT: "_conv_grad_weight",
    ir.Op.CHANNEL_BIAS: "_channel_bias", ir.Op.CHANNEL_SUM: "_channel_sum",
    ir.Op.CHANNEL_EXPAND: "_channel_expand", ir.Op.MAX_POOL: "_max_pool",
    ir.Op.MAX_POOL_GRAD: "_max_pool_grad", ir.Op.AVG_POOL: "_avg_pool", ir.Op.AVG_POOL_GRAD: "_avg_pool_grad",
    ir.Op.GATHER: "_gather", ir.Op.GATHER_GRAD: "_gather_grad",
}


#: how the NumPy backend prints each statement kind: one rule per op that reaches a plan
#: (``tests/unit/test_dispatch_tables.py`` checks that none is missing)
STATEMENTS: dict[ir.Op | Loop, Callable[[_KernelPrinter, Stmt], None]] = {
    ir.Op.MATMUL: _KernelPrinter._matmul,
    ir.Op.ADD_BIAS: _KernelPrinter._add_bias,
    ir.Op.SUM_ROWS: _KernelPrinter._sum_rows,
    ir.Op.MAP: _KernelPrinter._map,
    ir.Op.SOFTMAX: _KernelPrinter._softmax,
    ir.Op.LOGSUMEXP: _KernelPrinter._logsumexp,
    ir.Op.ROWSUM: _KernelPrinter._rowsum,
    ir.Op.SOFTMAX_CE: _KernelPrinter._softmax_ce,
    ir.Op.SUM: _KernelPrinter._sum,
    ir.Op.CONCAT: _KernelPrinter._concat,
    ir.Op.SLICE: _KernelPrinter._slice,
    **{op: _spatial_rule(fn) for op, fn in SPATIAL_FUNCTIONS.items()},
    ir.Op.RESHAPE: _KernelPrinter._reshape,
    Loop.CARRY: _KernelPrinter._carry,
    Loop.BEGIN: _KernelPrinter._begin,
    Loop.STEP: _KernelPrinter._step,
    Loop.END: _KernelPrinter._end,
}


def kernel_body(plan: KernelPlan,
                printer: SymnnNumPyPrinter) -> tuple[list[str], list[tuple[str | None, ...]]]:
    """The kernel's lines of Python, and for each line the origins of the statements it
    computes (a line completing a deferred softmax-CE row computes two)."""
    kp = _KernelPrinter(printer, plan)
    for st in plan.stmts:
        kp.stmt(st)
    kp.finish()
    return kp.lines, kp.line_origins


def uses_batch_size(lines: list[str]) -> bool:
    return any(re.search(rf"\b{naming.N}\b", line) for line in lines)


def uses_length(lines: list[str]) -> bool:
    """Whether a kernel's body reads the run-time sequence length ``T``."""
    return any(re.search(rf"(?<![.\w]){naming.T}\b", line) for line in lines)  # not a transpose's .T
