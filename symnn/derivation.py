"""The derivation record: forward equations, loss and every backward step as SymPy objects.

``derive(net)`` writes the chain rule out layer by layer in the notation of textbooks
(matrix form with delta^(l), and index form with delta_nj), using the same element-wise
machinery as the compiler (``sympy.diff``, forward-value reuse, the proved fusions), and
records each simplification as before -> after with the op counts of every pass.

Convention: ``delta^(l) = N * dL/dZ^(l)`` is the per-sample error of layer l, so every weight
gradient is "delta^(l)T A^(l-1) averaged over the batch".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from . import registry
from .declare import Network
from .expressions import derivative
from .simplify.cost import cheapest
from .simplify.fuse import Fusion, prove_sigmoid_bce, prove_softmax_ce
from .simplify.pipeline import PassReport
from .simplify.reuse import express_in_output

_z = sp.Symbol("z", real=True)
_a = sp.Symbol("a", real=True)
_p = sp.Symbol("p", real=True)
_y = sp.Symbol("y", real=True)


class Apply(sp.MatrixExpr):
    """An element-wise function applied to a matrix, printed ``f(Z)`` (``f`` a LaTeX name)."""

    def __new__(cls, name: sp.Symbol, arg: sp.MatrixExpr) -> "Apply":
        return sp.Basic.__new__(cls, name, arg)

    @property
    def shape(self):
        return self.args[1].shape

    def _entry(self, i, j, **kwargs):
        return sp.Function(self.args[0].name)(self.args[1][i, j])

    def _sympystr(self, printer):
        return "%s(%s)" % (self.args[0].name, printer._print(self.args[1]))

    def _latex(self, printer, exp=None):
        name, arg = self.args
        return r"%s\left(%s\right)" % (name.name, printer._print(arg))


@dataclass(frozen=True)
class Step:
    """One equation: matrix form, optional index form, and a one-line note."""

    label: str
    matrix: sp.Basic
    index: sp.Basic | None = None
    note: str = ""


@dataclass(frozen=True)
class Simplification:
    title: str
    before: sp.Basic
    after: sp.Basic
    how: str = ""


@dataclass
class Derivation:
    """What :func:`derive` returns; ``.latex()`` prints it."""

    network: Network
    forward: list[Step] = field(default_factory=list)
    activations: list[Step] = field(default_factory=list)  # scalar definitions and derivatives
    loss: list[Step] = field(default_factory=list)
    backward: list[Step] = field(default_factory=list)
    simplifications: list[Simplification] = field(default_factory=list)
    passes: list[PassReport] = field(default_factory=list)

    def latex(self, document: bool = True) -> str:
        from .report import derivation_latex

        return derivation_latex(self, document=document)


def _fname(act) -> str:
    """LaTeX name of a layer's activation (registry name, else the user's name upright)."""
    return act.latex_name or r"\operatorname{%s}" % act.name.replace("_", r"\_")


def derive(net: Network) -> Derivation:
    """The derivation of ``net``'s gradient, for reading and printing.

    Example:
        >>> import symnn as sn
        >>> d = sn.derive(sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 1, "sigmoid")], loss="bce"))
        >>> print(d.activations[1].index)
        Eq(f'(z), 1 - a**2)
    """
    from .driver import _require_network
    from .graph import build_forward
    from .simplify.pipeline import simplify

    net = _require_network(net)
    d = Derivation(net)
    N = sp.Symbol("N", integer=True, positive=True)
    L = len(net.layers)
    widths = [net.layers[0].in_features] + [l.out_features for l in net.layers]
    A = [sp.MatrixSymbol("X", N, widths[0])] + [
        sp.MatrixSymbol(f"A^{{({l})}}", N, widths[l]) for l in range(1, L + 1)
    ]
    Z = [None] + [sp.MatrixSymbol(f"Z^{{({l})}}", N, widths[l]) for l in range(1, L + 1)]
    W = [None] + [sp.MatrixSymbol(f"W^{{({l})}}", widths[l], widths[l - 1]) for l in range(1, L + 1)]
    b = [None] + [sp.MatrixSymbol(f"b^{{({l})}}", widths[l], 1) for l in range(1, L + 1)]
    delta = [None] + [sp.MatrixSymbol(rf"\delta^{{({l})}}", N, widths[l]) for l in range(1, L + 1)]
    ones = sp.OneMatrix(N, 1)
    Y = sp.MatrixSymbol("Y", N, widths[-1])
    n, i, j, k = sp.symbols("n i j k", integer=True)

    # -- forward -------------------------------------------------------------------------------
    for l, layer in enumerate(net.layers, 1):
        act = layer.activation
        zi = sp.IndexedBase(f"z^{{({l})}}")
        ai = sp.IndexedBase("x" if l == 1 else f"a^{{({l - 1})}}")
        wi, bi = sp.IndexedBase(f"w^{{({l})}}"), sp.IndexedBase(f"b^{{({l})}}")
        d.forward.append(Step(
            f"z{l}",
            sp.Eq(Z[l], A[l - 1] * W[l].T + ones * b[l].T),
            sp.Eq(zi[n, j], sp.Sum(wi[j, i] * ai[n, i], (i, 1, widths[l - 1])) + bi[j]),
            f"layer {l}: weighted sum plus bias",
        ))
        fsym = sp.Symbol(_fname(act))
        d.forward.append(Step(f"a{l}", sp.Eq(A[l], Apply(fsym, Z[l])), None,
                              f"layer {l}: {act.name}, element-wise" if not act.is_rowwise
                              else f"layer {l}: softmax over each row"))
        if act.is_rowwise:
            zz = sp.IndexedBase(f"z^{{({l})}}")
            d.activations.append(Step(
                "softmax", sp.Eq(sp.Symbol(f"a^{{({l})}}_{{nj}}"),
                                 sp.exp(zz[n, j]) / sp.Sum(sp.exp(zz[n, k]), (k, 1, widths[l]))),
                None, "softmax (computed with the row maximum subtracted)"))
        else:
            fz = act.expr.subs(registry.X, _z)
            dfz = derivative(fz, _z, act.name)
            reused = express_in_output(cheapest(dfz), fz, _z)
            d.activations.append(Step(act.name, sp.Eq(sp.Function("f")(_z), fz),
                                      sp.Eq(sp.Symbol("f'(z)"), reused[0] if reused else cheapest(dfz)),
                                      "derivative in terms of a = f(z)" if reused else "derivative"))
            if reused:
                for before, after, how in reused[1]:
                    d.simplifications.append(Simplification(
                        f"reuse the forward value in {act.name}'", before, after, how))

    # -- loss --------------------------------------------------------------------------------
    loss = net.loss
    K = widths[-1]
    ell = loss.expr.subs({registry.P: _p, registry.T: _y})
    ai, yi = sp.IndexedBase(f"a^{{({L})}}"), sp.IndexedBase("y")
    term = ell.subs({_p: ai[n, k], _y: yi[n, k]})
    count = N * K if loss.reduction == "mean" else N
    Lsym = sp.Symbol("L")
    total = sp.Sum(term, (n, 1, N), (k, 1, K)) / count
    wsum = [sp.Sum(sp.IndexedBase(f"w^{{({l})}}")[j, i] ** 2, (j, 1, widths[l]), (i, 1, widths[l - 1]))
            for l in range(1, L + 1)]
    if net.l2:
        total += sp.Float(net.l2, 6) / 2 * sp.Add(*wsum)
    if net.l1:
        total += sp.Float(net.l1, 6) * sp.Add(*[s.replace(lambda e: isinstance(e, sp.Pow), lambda e: sp.Abs(e.base)) for s in wsum])
    d.loss.append(Step("loss", sp.Eq(Lsym, total), sp.Eq(sp.Symbol(r"\ell(p, y)"), ell),
                       f"{loss.name}, {'mean over all outputs' if loss.reduction == 'mean' else 'summed over classes, mean over the batch'}"))

    # -- backward ------------------------------------------------------------------------------
    last = net.layers[-1].activation
    fused: Fusion | None = None
    if not loss.user and last.is_rowwise and loss.name == "cross_entropy":
        fused = prove_softmax_ce()
        dl = A[L] - Y
        dl_index = sp.Eq(sp.IndexedBase(rf"\delta^{{({L})}}")[n, j], ai[n, j] - yi[n, j])
    elif not loss.user and not last.user and last.name == "sigmoid" and loss.name == "bce":
        fused = prove_sigmoid_bce()
        dl = A[L] - Y
        dl_index = sp.Eq(sp.IndexedBase(rf"\delta^{{({L})}}")[n, j], ai[n, j] - yi[n, j])
    else:
        scale = sp.Integer(1) / K if loss.reduction == "mean" else sp.Integer(1)
        dlp = scale * derivative(ell, _p, loss.name)
        if last.is_rowwise:
            dl = sp.Symbol(r"\left(\frac{\partial \ell}{\partial A^{(%d)}} - \operatorname{rowsum}\left(\frac{\partial \ell}{\partial A^{(%d)}} \circ A^{(%d)}\right)\right) \circ A^{(%d)}" % (L, L, L, L))
            g = dlp
        else:
            fz = last.expr.subs(registry.X, _z)
            g = cheapest(dlp * derivative(fz, _z, last.name))
            r = express_in_output(g, fz, _z)
            g = cheapest(r[0]) if r else g
            dl = sp.Symbol(r"g\left(A^{(%d)}, Y\right)" % L if r else r"g\left(Z^{(%d)}, A^{(%d)}, Y\right)" % (L, L))
        dl_index = sp.Eq(sp.Symbol("g"), g.subs({_p: _a}))
    if fused is not None:
        d.simplifications.insert(0, Simplification(
            f"fuse {fused.name} (proved by SymPy)", fused.plain_grad, fused.fused_grad, "fused loss"))
        d.simplifications.insert(1, Simplification(
            f"stable loss for {fused.name}", fused.plain_loss, fused.fused_loss, "log-sum-exp / softplus"))
    d.backward.append(Step(f"delta{L}", sp.Eq(delta[L], dl, evaluate=False), dl_index,
                           "output layer error (per sample)"))
    for l in range(L, 0, -1):
        gW = sp.MatrixSymbol(rf"\frac{{\partial L}}{{\partial W^{{({l})}}}}", widths[l], widths[l - 1])
        gb = sp.MatrixSymbol(rf"\frac{{\partial L}}{{\partial b^{{({l})}}}}", widths[l], 1)
        rhs = delta[l].T * A[l - 1] / N
        if net.l2:
            rhs = rhs + sp.Float(net.l2, 6) * W[l]
        di = sp.IndexedBase(rf"\delta^{{({l})}}")
        xi = sp.IndexedBase("x" if l == 1 else f"a^{{({l - 1})}}")
        d.backward.append(Step(
            f"dW{l}", sp.Eq(gW, rhs),
            sp.Eq(sp.Symbol(rf"\frac{{\partial L}}{{\partial w^{{({l})}}_{{ji}}}}"),
                  sp.Sum(di[n, j] * xi[n, i], (n, 1, N)) / N),
            "weight gradient: delta times the layer input, averaged over the batch"))
        d.backward.append(Step(
            f"db{l}", sp.Eq(gb, delta[l].T * ones / N),
            sp.Eq(sp.Symbol(rf"\frac{{\partial L}}{{\partial b^{{({l})}}_{{j}}}}"), sp.Sum(di[n, j], (n, 1, N)) / N),
            "bias gradient: delta averaged over the batch"))
        if l > 1:
            prev = net.layers[l - 2].activation
            fp = Apply(sp.Symbol(_fname(prev) + "'"), Z[l - 1])
            wi = sp.IndexedBase(f"w^{{({l})}}")
            dprev = sp.IndexedBase(rf"\delta^{{({l - 1})}}")
            d.backward.append(Step(
                f"delta{l - 1}", sp.Eq(delta[l - 1], sp.HadamardProduct(delta[l] * W[l], fp)),
                sp.Eq(dprev[n, j], sp.Sum(di[n, k] * wi[k, j], (k, 1, widths[l]))
                      * sp.Function("f'")(sp.IndexedBase(f"z^{{({l - 1})}}")[n, j])),
                "chain rule back through layer %d" % l))
    # op counts per pass (the graph, hence the counts, is the same at any width, symbolic too)
    d.passes = simplify(build_forward(net)).reports
    return d
