"""The derivation a person reads: the compiler's own records, printed.

``derive(net)`` runs the same pipeline as :func:`symnn.compile` (forward graph, loss fusion,
reverse sweep, simplification passes) and prints what it recorded: the derived program cut
into equations at its named nodes (:mod:`symnn.autodiff.display`), the element-wise functions
those equations apply, each simplification before -> after with how it was proved, and the
op counts of every pass. There is no second derivation here: a dropped term or a missing
factor in the printed formulas would be one in the kernels too, and
:meth:`Derivation.evaluate` runs the printed formulas so a test (or a reader) can check them
against the kernel's gradient.

Convention: ``delta^(l) = N * dL/dZ^(l)`` is the per-sample error of layer l (the batch
mean's ``1/N`` taken out), so a weight gradient reads "delta^T A, averaged over the batch".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import sympy as sp

from . import ir, naming
from .declare import Network
from .functions import plain
from .autodiff import algebra
from .autodiff.display import Equation, FunctionDef, Named, Section, equations, state_equations
from .simplify.pipeline import PassReport, Simplified

#: what the old record called an equation; ``d.backward[0]`` and friends are Equations
Step = Equation


@dataclass(frozen=True)
class Simplification:
    """One simplification the passes made: ``before`` -> ``after``, and how it was proved."""

    title: str
    before: sp.Basic
    after: sp.Basic
    how: str = ""


LEGEND = (
    r"Products of matrices are matrix products; $\circ$ is the element-wise product and "
    r"$\mathbf{1}$ a vector or matrix of ones (its size read off the product). A function "
    r"applied to a matrix applies to each entry. $\delta^{(l)} = N\,\partial L/\partial Z^{(l)}$ "
    r"is the per-sample error of layer $l$ (the batch mean's $1/N$ taken out); the kernels "
    r"compute $\partial L/\partial Z^{(l)} = \delta^{(l)}/N$, so their weight gradients need no "
    r"further $1/N$."
)


@dataclass
class Derivation:
    """What :func:`derive` returns: every equation of the derivation, as SymPy objects.

    ``equations`` in order (forward, loss, backward); ``functions``: the named element-wise
    functions they apply (``\\tanh'(x) = 1 - \\tanh^2 x``); ``simplifications`` and ``passes``:
    what the simplifier did. ``.latex()``, ``.text()`` and the notebook views print it;
    ``.evaluate(params, X, Y)`` runs it.
    """

    network: Network
    equations: list[Equation] = field(default_factory=list)
    functions: list[FunctionDef] = field(default_factory=list)
    simplifications: list[Simplification] = field(default_factory=list)
    passes: list[PassReport] = field(default_factory=list)
    symbols: dict[str, Named] = field(default_factory=dict)
    inputs: dict[str, sp.Basic] = field(default_factory=dict)
    reuses: list = field(default_factory=list)  # the reuse pass's records (Reuse)
    #: each loop's body, printed once for step t (:class:`~symnn.autodiff.display.Loop`): the
    #: recurrence of a recurrent layer and its backpropagation through time; the loop's
    #: equation in the forward or backward pass applies its operator, which runs these per step
    loops: list = field(default_factory=list)

    @property
    def forward(self) -> list[Equation]:
        return [e for e in self.equations if e.section is Section.FORWARD]

    @property
    def loss(self) -> list[Equation]:
        return [e for e in self.equations if e.section is Section.LOSS]

    @property
    def backward(self) -> list[Equation]:
        return [e for e in self.equations if e.section is Section.BACKWARD]

    @property
    def state(self) -> list[Equation]:
        """What a training step writes into the buffers (a BatchNorm's running statistics, from
        the batch's mean and variance of the forward pass); empty without buffers."""
        return [e for e in self.equations if e.section is Section.STATE]

    def equation(self, eq_id: str) -> Equation:
        """The equation with id ``eq_id`` ("z1", "loss", "delta2", "dL_dW1")."""
        for e in self.equations:
            if e.id == eq_id:
                return e
        raise KeyError(f"no equation {eq_id!r}; ids: {', '.join(e.id for e in self.equations)}")

    # -- views --------------------------------------------------------------------------------
    def latex(self, document: bool = True) -> str:
        from .report import derivation_latex

        return derivation_latex(self, document=document)

    def text(self) -> str:
        """The derivation as plain text for a terminal (``symnn latex SPEC`` without ``--latex``)."""
        from .report import derivation_text

        return derivation_text(self)

    def __str__(self) -> str:
        return self.text()

    def _repr_latex_(self) -> str:
        from .report import derivation_display_latex

        return derivation_display_latex(self)

    def _repr_html_(self) -> str:
        from .report_html import derivation_html

        return derivation_html(self)

    # -- the printed formulas, run ---------------------------------------------------------------
    def evaluate(self, params: Mapping[str, Any], X: Any, Y: Any) -> tuple[float, dict[str, np.ndarray]]:
        """``(loss, grads)`` computed from the printed equations themselves, in float64.

        Each equation's right-hand side, the SymPy object that is printed, is evaluated in
        order with NumPy (:func:`symnn.autodiff.algebra.evaluate`; element-wise functions through
        ``sympy.lambdify`` of their printed definitions). It does not run the kernel's code, so
        comparing it with ``sn.compile(net).loss_and_grad`` checks that what is printed is what
        is computed. Arguments are checked as the kernels check them.
        """
        env, p = self._environment(params, X, Y)
        net = self.network
        loss = float(env[self.equation("loss").lhs])
        # a frozen parameter or a buffer has no equation: its gradient is 0, as the kernels return it
        grads = {name: np.asarray(env[self.equation(naming.grad(naming.param_ident(name))).lhs], dtype=np.float64)
                 .reshape(value.shape) if name in net.trainable else np.zeros(value.shape)
                 for name, value in p.items()}
        return loss, grads

    def evaluate_state(self, params: Mapping[str, Any], X: Any, Y: Any) -> dict[str, np.ndarray]:
        """The buffers' values after a training step on ``(X, Y)``, from the printed
        :attr:`state` equations (a train step writes the same: compare with its ``theta``)."""
        env, p = self._environment(params, X, Y)
        by_ident = {naming.param_ident(name): name for name in p}
        return {by_ident[e.id[:-len(".new")]]: np.asarray(env[e.lhs], dtype=np.float64)
                .reshape(p[by_ident[e.id[:-len(".new")]]].shape) for e in self.state}

    def values(self, params: Mapping[str, Any], X: Any, Y: Any) -> dict[str, np.ndarray]:
        """Every printed equation's value at ``(params, X, Y)``, by its id, in float64.

        The same evaluation as :meth:`evaluate` (the printed right-hand sides, run in order),
        kept whole: what happens inside the network, not only the loss and the gradients. An
        equation of the forward, loss or backward pass has its matrix as printed ("lstm.v1",
        "head.delta"; the loss a 0-d array). An equation of a loop's body (the "Recurrence"
        section, ids such as "loop2.g") has one value per step, stacked batch first as
        ``(N, T, width)``, step t at ``[:, t]``: the printed body run again for each step, with
        the operands its loop is applied to. That is the one public place a per-step quantity
        lives; e.g. the backward recurrence's ``G_t`` is the loss's gradient with respect to the
        state carried out of step t (an LSTM's ``[h_t, c_t]``), whose norm over t shows
        vanishing or exploding gradients. A loop's ``contributions`` (step t's share of a weight
        gradient) are left out: the backward pass sums them over t, as ``values`` has them.
        Arguments are checked as the kernels check them.
        """
        env, _ = self._environment(params, X, Y)
        out = {e.id: np.asarray(env[e.lhs], dtype=np.float64) for e in self.equations}
        for loop in self.loops:
            applied = self._application(loop)
            for eq in loop.equations:
                out[eq.id] = _per_step(applied, eq.lhs, env)
        return out

    def _application(self, loop: Any) -> algebra.Recurrence:
        """The operator ``loop`` is applied as in the printed passes (each loop is applied
        once: one IR ``SCAN`` node)."""
        for eq in self.equations:
            for found in eq.rhs.atoms(algebra.Recurrence):
                if found.loop == loop.body:
                    return found
        raise KeyError(f"loop {loop.id!r} is applied in no equation")

    def _environment(self, params: Mapping[str, Any], X: Any, Y: Any) -> tuple[dict, dict[str, np.ndarray]]:
        """Every equation's value at ``(params, X, Y)``, by its left-hand side, and the checked
        parameters."""
        from .kernel import Arguments

        net = self.network
        if not net.is_concrete:
            from .errors import SpecError

            raise SpecError("evaluating a derivation needs integer layer widths")
        args = Arguments(net, "float64")
        p = args.params(params)
        x = args.inputs(X)
        y = args.dense_targets(args.targets(Y, x.shape[0], args.length(x)))  # labels: the kernels' one-hot rows
        env: dict[sp.Basic, Any] = {naming.N: x.shape[0], self.inputs["X"]: x, self.inputs["Y"]: y}
        if args.length(x):  # sequences of run-time length: this call's T
            env[naming.T] = args.length(x)
        for name, value in p.items():
            sym = self.inputs[naming.param_ident(name)]
            # a vector (or a scalar parameter: a vector of one) as a column; a convolution's
            # weight as its IR matrix (O, C/g*kh*kw)
            env[sym] = value.reshape(-1, 1) if value.ndim <= 1 else value.reshape(ir.matrix_shape(value.shape))
        for eq in self.equations:
            env[eq.lhs] = algebra.evaluate(eq.rhs, env)
        return env, p


def _per_step(applied: algebra.Recurrence, lhs: sp.Basic, env: Mapping) -> np.ndarray:
    """Each step's value of the body equation ``lhs`` of the loop ``applied`` runs, as
    ``(N, T, width)``: the same loop with ``lhs`` as its step output, evaluated by
    :func:`symnn.autodiff.algebra.evaluate` (which stacks each step's output), so the steps run
    exactly as when the printed equations are evaluated, not in a second implementation."""
    body = applied.loop
    probe = algebra.Loop(body.carry, body.steps, body.invariants, body.equations, body.new_carry, lhs,
                         body.length, body.reverse, body.reset)
    rows = applied.shape[0]
    stacked = np.asarray(algebra.evaluate(algebra.Recurrence(applied.name, probe, (rows, body.length * lhs.shape[1]),
                                                             *applied.operands), env), dtype=np.float64)
    return stacked.reshape(stacked.shape[0], algebra._dim(body.length, env), -1)


def _simplifications(s: Simplified) -> list[Simplification]:
    out = [Simplification(f"fuse {f.name} (proved by SymPy)", f.plain_grad, f.fused_grad,
                          "the fused loss's derivative, checked equal to the plain one")
           for f in s.fusions]
    out += [Simplification(f"stable loss for {f.name}", f.plain_loss, f.fused_loss,
                           "log-sum-exp / softplus, checked equal") for f in s.fusions]
    out += [Simplification(f"reuse the forward value in {r.activation}'", r.before, r.after, r.how)
            for r in s.reuses]
    out += [Simplification(f"stable form of {r.name}", plain(r.before), r.after,
                           "finite where the plain formula overflows; checked equal at 30 digits")
            for r in s.stabilised]
    return out


def from_program(net: Network, simplified: Simplified) -> Derivation:
    """The derivation printed from a simplified program's records; with buffers, also their
    updates, printed from the training graph's own update nodes (what the train steps emit)."""
    eqs = equations(simplified.forward, simplified.derived, simplified.sweep)
    state: list[Equation] = []
    if net.has_buffers:
        from .graph import build_forward

        updates = build_forward(net, training=True).updates
        state = state_equations(simplified.forward, simplified.derived, simplified.sweep, updates)
    return Derivation(net, eqs.equations + state, eqs.functions, _simplifications(simplified),
                      list(simplified.reports), eqs.symbols, eqs.inputs, list(simplified.reuses), eqs.loops)


def derive(net: Network) -> Derivation:
    """The derivation of ``net``'s gradient, for reading, printing and checking.

    Example:
        >>> import symnn as sn
        >>> d = sn.derive(sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 1, "sigmoid")], loss="bce"))
        >>> [e.id for e in d.backward][:3]
        ['delta2', 'dL_db2', 'dL_dW2']
    """
    from .driver import _require_network, derive_program

    net = _require_network(net)
    return from_program(net, derive_program(net))
