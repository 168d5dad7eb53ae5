"""The printed derivation is the emitted maths (issue 19).

``sn.derive(net).evaluate(params, X, Y)`` runs the SymPy objects that ``d.latex()`` prints;
here it must give the kernel's loss and gradients (NumPy backend, and C for a few networks)
for every catalogue network, every example spec, and ``SYMNN_DERIVATION_EXAMPLES`` (default
60) random networks. A mutation test shows the comparison fails when one printed equation
drops a term or a factor, and the two bugs of the issue are kept as named regressions.

Tolerance (float64, unit roundoff u = 2^-53): both sides evaluate the same formulas in a
possibly different order (matrix products blocked differently, sums associated differently),
so they may differ by rounding only. The issue's bound is ``||g_eval - g_kernel|| <= 1e-12 *
||g_kernel||``. That is relative to the result, which is right unless the result cancels: a
weight gradient ``dL/dW = dL/dZ^T A + l1 sign(W) + l2 W`` is a sum whose rounding error is
proportional to the sum of its terms' magnitudes, not to the sum (Higham, *Accuracy and
Stability*, eq. 3.5: ``|fl(x.y) - x.y| <= gamma_m |x|.|y|``). So each gradient also gets the
floor ``2 gamma_m S`` with ``S = || |dL/dZ|^T |A| + l1 + l2 |W| ||`` (its terms' magnitudes,
computed from the printed values) and m the longest chain of roundings one entry sees: the
batch sum (N), and per layer an inner product over its width and a few element-wise
operations (the derivative's formula, the product with the incoming error, the scaling):
``m = N + depth * (max width + 16)``. A dead layer (``relu'(Z) = 0`` everywhere) has dL/dZ = 0
exactly on both sides, so S = 0 there and the gradients must agree exactly.

Conditioning: the kernels run the forward-value forms of derivatives (``a (1 - a)``), fused
and simplified output errors and clamped predictions; ``evaluate`` runs the printed
definitions. At a saturated unit the two lose different digits (``1 - a^2`` keeps about 8 of
its 16 digits at z = 10, none at z = 19), so the random sample is drawn at well-conditioned
points (:func:`well_conditioned`: every pre-activation within 4 of 0, inputs halved until it
is), and saturated points (exp overflowing, a clamp active) are tests of their own.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import symnn as sn
from symnn import naming, registry
from symnn.autodiff import algebra
from symnn.autodiff.display import Section
from tests.catalogue import CATALOGUE, c_catalogue, data

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
#: random networks per CI run (the issue demands at least 200)
N_EXAMPLES = int(os.environ.get("SYMNN_DERIVATION_EXAMPLES", "60"))
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REL = 1e-12  # the norm-wise relative bound
U = 2.0**-53  # float64 unit roundoff
Z_MAX = 4.0  # pre-activations of a well-conditioned sample point (see well_conditioned)

z = sp.Symbol("z")
p_, y_ = sp.symbols("p y")


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)
        return fn(*args, **kw)


# -- the printed values and the tolerance ---------------------------------------------------------
def printed_values(d: sn.Derivation, params: Mapping[str, np.ndarray], X: np.ndarray,
                   Y: np.ndarray, forward_only: bool = False) -> dict[str, Any]:
    """Every equation's value (``delta2``: the printed ``N dL/dZ``), by running the printed
    right-hand sides in order as :meth:`Derivation.evaluate` does; for the tolerance's
    magnitudes, the conditioning of a sample point, and the regression on the printed delta."""
    Y = dense_targets(Y, int(d.network.n_out))
    env: dict[sp.Basic, Any] = {naming.N: X.shape[0], d.inputs["X"]: X, d.inputs["Y"]: Y}
    for name, value in params.items():
        sym = d.inputs[naming.param_ident(name)]  # W1, or a layer graph's dense1_weight
        env[sym] = value.reshape(-1, 1) if value.ndim == 1 else value
    out = {}
    for eq in d.equations:
        if forward_only and eq.section is not Section.FORWARD:
            continue
        env[eq.lhs] = out[eq.id] = algebra.evaluate(eq.rhs, env)
    return out


def well_conditioned(d: sn.Derivation, params, X: np.ndarray, Y) -> np.ndarray | None:
    """``X`` scaled down (halved) until every pre-activation is within ``Z_MAX`` of 0, or None.

    The kernels compute a derivative from the forward value where the passes proved it equal
    (``sigma' = a (1 - a)``, ``tanh' = 1 - a^2``), fuse the output layer's derivatives into one
    simplified formula, and clamp predictions inside a loss's domain; the printed equations
    are evaluated from their definitions. Those agree to rounding, but rounding *relative to
    the result* only where the result does not cancel: ``1 - a^2`` has an absolute error of a
    few u, so a relative one of ``u cosh^2 z``; ``a (1 - a)`` and the domain loss's
    ``1 / (1 - p)`` one of ``u e^|z|``. ``|z| <= 4`` keeps each below ``u cosh^2 4 ~ 800 u
    < 1e-12 / 4`` (four roundings). Saturated points have their own tests below."""
    n_layers = len(d.network.layers)
    for _ in range(40):
        values = printed_values(d, params, X, Y, forward_only=True)
        z_max = max(float(np.abs(values[naming.preact(layer)]).max()) for layer in range(1, n_layers + 1))
        if z_max <= Z_MAX:
            return X
        X = X / 2
    return None


def gamma(m: int) -> float:
    return m * U / (1 - m * U)


def gradient_floors(d: sn.Derivation, values: Mapping[str, Any], params: Mapping[str, np.ndarray],
                    X: np.ndarray) -> dict[str, float]:
    """``2 gamma_m S`` per gradient (module docstring): S from the printed dL/dZ and inputs."""
    net = d.network
    n = X.shape[0]
    widths = [int(net.n_in)] + [int(layer.out_features) for layer in net.layers]
    g = 2 * gamma(n + len(net.layers) * (max(widths) + 16))
    floors = {}
    for layer in range(1, len(net.layers) + 1):
        dz = np.abs(values[f"delta{layer}"]) / n  # delta = N dL/dZ
        a_in = np.abs(X if layer == 1 else values[naming.act(layer - 1)])
        W = params[naming.weight(layer)]
        s_w = dz.T @ a_in + net.l1 + net.l2 * np.abs(W)
        floors[naming.weight(layer)] = g * float(np.linalg.norm(s_w))
        floors[f"b{layer}"] = g * float(np.linalg.norm(dz.sum(axis=0)))
    return floors


def loss_floor(d: sn.Derivation, values: Mapping[str, Any], Y: np.ndarray) -> float:
    """``2 gamma_m`` times the loss terms' magnitudes: the loss is a mean of element-wise terms
    in the output's logits, prediction and target (``softplus(z) - y z`` for BCE), each
    rounded in proportion to them, plus the penalties (non-negative: no cancellation)."""
    L = len(d.network.layers)
    z_out, a_out = values[naming.preact(L)], values[naming.act(L)]
    Y = dense_targets(Y, z_out.shape[1])
    scale = float(np.mean(np.abs(z_out) + np.abs(a_out) + np.abs(Y) + np.abs(Y * z_out)))
    return 2 * gamma(z_out.size + 16) * scale


def dense_targets(Y: Any, k: int) -> np.ndarray:
    """Targets as the kernels use them: integer labels become one-hot rows."""
    Y = np.asarray(Y)
    return np.eye(k)[Y] if Y.ndim == 1 else Y


def disagreements(d: sn.Derivation, kernel, params, X, Y) -> list[str]:
    """Where ``d.evaluate`` and the kernel differ beyond rounding ([] when they agree)."""
    L, grads = d.evaluate(params, X, Y)
    Lk, gk = kernel.loss_and_grad(params, X, Y)
    values = printed_values(d, params, X, Y)
    floors = gradient_floors(d, values, params, X)
    bad = []
    if not abs(L - Lk) <= REL * abs(Lk) + loss_floor(d, values, Y):
        bad.append(f"loss: printed {L!r} kernel {Lk!r}")
    assert set(grads) == set(gk)
    for name in gk:
        err = float(np.linalg.norm(grads[name] - gk[name]))
        scale = float(np.linalg.norm(gk[name]))
        if not err <= REL * scale + floors[name]:
            bad.append(f"{name}: ||printed - kernel|| = {err:.3e}, ||kernel|| = {scale:.3e}, "
                       f"floor {floors[name]:.3e}")
    return bad


def _named(net: sn.Network, name: str) -> sn.Network:
    return sn.Network(net.layers, loss=net.loss, l1=net.l1, l2=net.l2, name=name)


# -- every catalogue network and example spec -------------------------------------------------------
# (dense chains: the rounding floors above follow a chain's layers; the printed derivation of a
# layer graph is checked against its kernels in tests/integration/test_layer_graph.py and
# test_multi_io.py)
NAMED = {**{f"catalogue:{k}": v for k, v in CATALOGUE.items()},
         **{f"example:{p.stem}": net for p in EXAMPLES if (net := sn.load_spec(p).network).graph is None}}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_printed_derivation_is_the_numpy_kernel(name: str) -> None:
    net = NAMED[name]
    d = sn.derive(net)
    k = _quiet(sn.compile, net, backend="numpy", dtype="float64")
    for seed in (0, 1):
        params = net.init_params(seed)
        X, Y = data(net, n=6, seed=seed)
        assert disagreements(d, k, params, X, Y) == [], name


#: networks checked against the C backend too: their kernels from the catalogue's one C module
#: (tests/catalogue.py, which test_backends.py builds too: one compiler run in a session), and
#: the custom activation's own
C_NETS = ("xor", "softmax_ce_gelu_l2", "mse_softplus_out", "user_activation_huber", "softmax_mse")


@pytest.mark.needs_cc
def test_printed_derivation_is_the_c_kernel() -> None:
    nets = [_named(CATALOGUE[n], n) for n in C_NETS]
    kernels = [c_catalogue("float64")[n] for n in C_NETS]
    custom = _named(sn.load_spec(ROOT / "examples" / "custom_activation.toml").network, "custom_act")
    nets.append(custom)
    kernels.append(_quiet(sn.compile, custom, backend="c", dtype="float64"))
    for net, k in zip(nets, kernels):
        assert k.network == net
        params = net.init_params(3)
        X, Y = data(net, n=7, seed=3)
        assert disagreements(sn.derive(net), k, params, X, Y) == [], net.name


def test_catalogue_and_examples_cover_the_registry() -> None:
    """The fixed networks above reach every built-in activation and loss."""
    acts = {layer.activation.name for net in NAMED.values() for layer in net.layers
            if not layer.activation.user}
    losses = {net.loss.name for net in NAMED.values() if not net.loss.user}
    assert acts == set(registry.activation_names()) and losses == set(registry.loss_names())


# -- random networks --------------------------------------------------------------------------------
USER_ACTIVATIONS = {
    "cubic": z**3 + z,
    "sine": sp.sin(z),
    "rational": z / (1 + sp.Abs(z)),
    "mish": z * sp.tanh(sp.log(1 + sp.exp(z))),
    "bent": (sp.sqrt(z**2 + 1) - 1) / 2 + z,
}
USER_LOSSES = {
    "huber": (sp.Piecewise(((p_ - y_) ** 2 / 2, sp.Abs(p_ - y_) <= 1),
                           (sp.Abs(p_ - y_) - sp.Rational(1, 2), True)), {}),
    "logcosh": (sp.log(sp.cosh(p_ - y_)), {}),
    "quartic_rows": ((p_ - y_) ** 4 / 4, {"reduction": "batch"}),
    "abs_err": (sp.Abs(p_ - y_), {"reduction": "batch"}),
}
#: a user loss on (0, 1): the network's output must be a sigmoid, its targets in [0, 1]
USER_BCE = ("user_bce", -y_ * sp.log(p_) - (1 - y_) * sp.log(1 - p_), {"domain": (0, 1)})
_BUILTIN_HIDDEN = [a for a in registry.activation_names() if a != "softmax"]


def _activation(name: str) -> str | sn.Activation:
    if name in USER_ACTIVATIONS:
        return _quiet(sn.Activation, name, USER_ACTIVATIONS[name], var=z)
    return name


@st.composite
def random_cases(draw) -> tuple[sn.Network, dict, np.ndarray, Any]:
    """``(net, params, X, Y)``: 1-4 dense layers of widths 1-6, every built-in and a few user
    activations (the kinks of relu, leaky_relu, elu, abs included), every built-in loss and a
    few user ones, L1/L2 on or off, targets valid for the loss (labels or one-hot rows for
    cross-entropy, [0, 1] for BCE)."""
    depth = draw(st.integers(1, 4))
    widths = [draw(st.integers(1, 6)) for _ in range(depth)]
    hidden = st.sampled_from(_BUILTIN_HIDDEN + sorted(USER_ACTIVATIONS))
    kind = draw(st.sampled_from(["cross_entropy", "bce", "mse", "user", "user_bce"]))
    if kind == "cross_entropy":
        k, out, loss = draw(st.integers(2, 6)), "softmax", "cross_entropy"
    elif kind in ("bce", "user_bce"):
        k, out = draw(st.integers(1, 6)), "sigmoid"
        loss = "bce" if kind == "bce" else _quiet(sn.Loss, USER_BCE[0], USER_BCE[1], pred=p_, target=y_,
                                                  **USER_BCE[2])
    else:
        out = draw(st.sampled_from(registry.activation_names() + sorted(USER_ACTIVATIONS)))
        k = draw(st.integers(2 if out == "softmax" else 1, 6))  # softmax over one output is refused
        loss = "mse"
        if kind == "user":
            name = draw(st.sampled_from(sorted(USER_LOSSES)))
            expr, kw = USER_LOSSES[name]
            loss = _quiet(sn.Loss, name, expr, pred=p_, target=y_, **kw)
    sizes = widths + [k]
    acts = [draw(hidden) for _ in range(depth - 1)] + [out]
    layers = [sn.Dense(sizes[i], sizes[i + 1], _activation(acts[i])) for i in range(depth)]
    net = _quiet(sn.Network, layers, loss=loss, l1=draw(st.sampled_from([0.0, 0.01])),
                 l2=draw(st.sampled_from([0.0, 0.05])))
    seed = draw(st.integers(0, 2**16))
    n = draw(st.integers(1, 8))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, widths[0]))
    if kind == "cross_entropy":
        Y = rng.integers(0, k, size=n)
        if draw(st.booleans()):
            Y = np.eye(k)[Y]
    elif kind in ("bce", "user_bce"):
        Y = rng.uniform(0, 1, size=(n, k))
    else:
        Y = rng.normal(size=(n, k))
    return net, net.init_params(seed), X, Y


@settings(max_examples=N_EXAMPLES, **SETTINGS)
@given(case=random_cases())
def test_printed_derivation_of_random_networks_is_the_kernel(case) -> None:
    net, params, X, Y = case
    d = sn.derive(net)
    X = well_conditioned(d, params, X, Y)
    assume(X is not None)
    k = _quiet(sn.compile, net, backend="numpy", dtype="float64")
    assert disagreements(d, k, params, X, Y) == [], net


@settings(max_examples=12, **SETTINGS)
@given(case=random_cases())
def test_latex_of_random_networks_is_well_formed(case) -> None:
    """Issue 19: every formula a random network's derivation prints converts to MathML, has
    balanced braces and no garbled sum (tests/latex_checks.py), as the catalogue's do."""
    pytest.importorskip("latex2mathml")
    from tests import latex_checks

    assert latex_checks.problems(sn.derive(case[0])) == []


def test_a_dead_layer_agrees_exactly() -> None:
    """Every ReLU of layer 1 dead: dL/dW1 = dL/db1 = 0 on both sides, and layer 2 reads
    Z2 = b2 = 0, exactly the kink (relu'(0) = 0 on both sides)."""
    net = sn.Network([sn.Dense(3, 2, "relu"), sn.Dense(2, 2, "relu"), sn.Dense(2, 2, "identity")],
                     loss="mse")
    params = net.init_params(0)
    params["W1"] = -np.abs(params["W1"])
    X = np.abs(np.random.default_rng(0).normal(size=(5, 3)))
    Y = np.ones((5, 2))
    d, k = sn.derive(net), sn.compile(net, dtype="float64")
    _, grads = d.evaluate(params, X, Y)
    _, gk = k.loss_and_grad(params, X, Y)
    for name in ("W1", "b1", "W2", "b2"):
        assert not grads[name].any() and not gk[name].any(), name
    assert gradient_floors(d, printed_values(d, params, X, Y), params, X)["W1"] == 0.0
    assert disagreements(d, k, params, X, Y) == []


# -- the check can fail -------------------------------------------------------------------------------
def _mutated(d: sn.Derivation, eq_id: str, rhs: sp.Basic) -> sn.Derivation:
    eqs = [dataclasses.replace(e, rhs=rhs) if e.id == eq_id else e for e in d.equations]
    return dataclasses.replace(d, equations=eqs)


def _has_sign(term: sp.Basic) -> bool:
    return any(isinstance(a, algebra.Apply) and a.body.has(sp.sign)
               for a in sp.preorder_traversal(term))


def _point(net: sn.Network, n: int = 5, seed: int = 0):
    X, Y = data(net, n=n, seed=seed)
    return net.init_params(seed), X, Y


def test_a_dropped_l1_term_is_detected() -> None:
    net = sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 2, "identity")], loss="mse", l1=0.1)
    d, k = sn.derive(net), sn.compile(net, dtype="float64")
    params, X, Y = _point(net)
    assert disagreements(d, k, params, X, Y) == []
    rhs = d.equation("dL_dW2").rhs
    assert isinstance(rhs, sp.MatAdd) and sum(map(_has_sign, rhs.args)) == 1
    dropped = sp.MatAdd(*[a for a in rhs.args if not _has_sign(a)])
    bad = disagreements(_mutated(d, "dL_dW2", dropped), k, params, X, Y)
    assert [b.split(":")[0] for b in bad] == ["W2"]  # only dL/dW2 reads the mutated equation


def test_a_missing_factor_in_delta_is_detected() -> None:
    """delta2 printed 3 times too large (the BCE K=3 bug had it 3 times too large):
    every gradient downstream of it disagrees."""
    net = sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 3, "sigmoid")], loss="bce")
    d, k = sn.derive(net), sn.compile(net, dtype="float64")
    params, X, Y = _point(net)
    tripled = sp.MatMul(3, d.equation("delta2").rhs)
    bad = disagreements(_mutated(d, "delta2", tripled), k, params, X, Y)
    assert sorted(b.split(":")[0] for b in bad) == ["W1", "W2", "b1", "b2"]


# -- the two bugs ---------------------------------------------------------------------
def test_l1_gradient_differs_from_the_unregularised_one_by_l1_sign_w() -> None:
    """Issue 19 (a): the printed dL/dW2 of an l1=0.1 network dropped the L1 term."""
    layers = [sn.Dense(3, 4, "tanh"), sn.Dense(4, 2, "sigmoid")]
    net, plain = sn.Network(layers, loss="mse", l1=0.1), sn.Network(layers, loss="mse")
    params, X, Y = _point(net)
    _, g = sn.derive(net).evaluate(params, X, Y)
    _, g0 = sn.derive(plain).evaluate(params, X, Y)
    _, gk = sn.compile(net, dtype="float64").loss_and_grad(params, X, Y)
    W2 = params["W2"]
    assert np.all(W2 != 0)
    scale = np.linalg.norm(gk["W2"])
    assert np.linalg.norm(g["W2"] - gk["W2"]) <= REL * scale
    # dL/dW2 - dL0/dW2 = 0.1 sign(W2): one rounding of the sum, relative to its larger term
    tol = 2 * U * (np.abs(g0["W2"]) + 0.1)
    assert np.all(np.abs((g["W2"] - g0["W2"]) - 0.1 * np.sign(W2)) <= tol)


def test_bce_with_three_outputs_prints_the_one_third() -> None:
    """Issue 19 (b): the printed delta of a K=3 sigmoid + BCE network lacked the 1/K of the
    mean over outputs. The rhs carries 1/3, and its values are N dL/dZ2 by torch autograd."""
    net = sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 3, "sigmoid")], loss="bce")
    d = sn.derive(net)
    params, X, Y = _point(net, n=6)
    assert disagreements(d, sn.compile(net, dtype="float64"), params, X, Y) == []
    rhs = d.equation("delta2").rhs
    A2, Ys = d.equation("a2").lhs, d.inputs["Y"]
    assert (3 * rhs).doit() == (A2 - Ys).doit() and rhs.doit() != (A2 - Ys).doit()
    assert d.equation("delta2").index.rhs.as_coeff_Mul()[0] == sp.Rational(1, 3)
    torch = pytest.importorskip("torch")
    values = printed_values(d, params, X, Y)
    z2 = torch.tensor(values["z2"], requires_grad=True)
    torch.nn.functional.binary_cross_entropy_with_logits(z2, torch.tensor(Y)).backward()
    n = X.shape[0]
    expected = n * z2.grad.numpy()
    assert np.linalg.norm(values["delta2"] - expected) <= REL * np.linalg.norm(expected)



# -- bugs found by the random sample (shrunk) -------------------------------------------------------
def test_a_regulariser_shared_by_two_same_shaped_weights() -> None:
    """Two weight matrices of one shape share the penalty's constant node; it was printed as
    its own equation ``U_1 = 0.05`` read by ``U_1 o W``, and evaluating that Hadamard product
    of a number and a matrix raised (9% of the random networks)."""
    net = sn.Network([sn.Dense(2, 2, "tanh"), sn.Dense(2, 2, "identity")], loss="mse", l2=0.05)
    d = sn.derive(net)
    params, X, Y = _point(net)
    assert disagreements(d, sn.compile(net, dtype="float64"), params, X, Y) == []


def _saturating(kind: str) -> tuple[sn.Network, dict, np.ndarray, np.ndarray]:
    """One-row points whose pre-activations are +-800 (exp overflows) or -60 (a sigmoid
    output below the clamp a domain loss applies, 2^-52)."""
    W1 = np.array([[1.0], [-1.0]])
    if kind == "bce_logits":  # the printed loss log(e^Z + 1) overflows; the kernel's is stable
        net = sn.Network([sn.Dense(1, 2, "sigmoid")], loss="bce")
        return net, {"W1": W1, "b1": np.zeros(2)}, np.array([[800.0]]), np.array([[0.3, 0.6]])
    if kind == "hidden":  # sigma'(-800) and softplus(800) as defined overflow; the kernel reuses a
        net = sn.Network([sn.Dense(1, 2, "sigmoid"), sn.Dense(2, 2, "softplus"),
                          sn.Dense(2, 1, "identity")], loss="mse")
        params = {"W1": W1, "b1": np.zeros(2), "W2": np.array([[800.0, 0.0], [0.0, 1.0]]),
                  "b2": np.zeros(2), "W3": np.array([[1.0, -1.0]]), "b3": np.zeros(1)}
        return net, params, np.array([[800.0]]), np.zeros((1, 1))
    # a user loss on (0, 1): the kernel clamps the prediction into [2^-52, 1 - 2^-52]. Both
    # units saturate low (z = -60, -120: p = 8.7e-27, 7.7e-53, both clipped to 2^-52), where
    # sigma' = a(1 - a) is as accurate as sigma(z) sigma(-z); on the high side a rounds to 1 and
    # the kernel's a(1 - a) is 0 where sigma'(60) = 8.7e-27, a rounding of the forward-value
    # reuse, not a disagreement of the printed maths
    loss = sn.Loss(USER_BCE[0], USER_BCE[1], pred=p_, target=y_, **USER_BCE[2])
    net = sn.Network([sn.Dense(1, 2, "sigmoid")], loss=loss)
    return net, {"W1": np.array([[1.0], [2.0]]), "b1": np.zeros(2)}, np.array([[-60.0]]), np.array([[0.3, 0.6]])


@pytest.mark.parametrize("kind", ["bce_logits", "hidden", "domain_clamp"])
def test_saturated_points_evaluate_as_the_kernel_computes(kind: str) -> None:
    """Where the printed definitions overflow or the kernel clamps, ``evaluate`` must still
    give the kernel's (finite) numbers: the stable forms, forward-value reuses and clamps the
    kernel runs are what the derivation must print and evaluate."""
    net, params, X, Y = _saturating(kind)
    k = sn.compile(net, dtype="float64")
    Lk, gk = k.loss_and_grad(params, X, Y)
    assert np.isfinite(Lk) and all(np.isfinite(g).all() for g in gk.values())
    L, grads = sn.derive(net).evaluate(params, X, Y)
    assert np.isfinite(L) and all(np.isfinite(g).all() for g in grads.values()), (L, grads)
    assert abs(L - Lk) <= REL * abs(Lk), (L, Lk)
    for name in gk:
        err = np.linalg.norm(grads[name] - gk[name])
        assert err <= REL * np.linalg.norm(gk[name]), (name, grads[name], gk[name])
