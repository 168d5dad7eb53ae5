"""Named small networks covering every built-in activation and loss (tangent functions.py style)."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import sympy as sp

import symnn as sn

_z = sp.Symbol("z")
_p, _y = sp.symbols("p y")
_e = _p - _y
HUBER = sn.Loss("huber", sp.Piecewise((_e**2 / 2, sp.Abs(_e) <= 1), (sp.Abs(_e) - sp.Rational(1, 2), True)),
                pred=_p, target=_y)
SWISH = sn.Activation("myswish", _z / (1 + sp.exp(-_z)), var=_z)


def _net(hidden, out_act, loss, k, **kw) -> sn.Network:
    layers = [sn.Dense(3, 5, hidden), sn.Dense(5, 4, "tanh"), sn.Dense(4, k, out_act)]
    return sn.Network(layers, loss=loss, **kw)


CATALOGUE: dict[str, sn.Network] = {
    "xor": sn.Network([sn.Dense(2, 4, "tanh"), sn.Dense(4, 1, "sigmoid")], loss="bce"),
    "softmax_ce_relu": _net("relu", "softmax", "cross_entropy", 3),
    "softmax_ce_gelu_l2": _net("gelu", "softmax", "cross_entropy", 3, l2=0.05),
    "sigmoid_bce_elu": _net("elu", "sigmoid", "bce", 2),
    "mse_sigmoid": _net("sigmoid", "identity", "mse", 2),
    "mse_softplus_out": _net("softsign", "softplus", "mse", 2, l1=0.01),
    "mse_swish_leaky": _net("swish", "leaky_relu", "mse", 2),
    "mse_silu_tanh": _net("silu", "tanh", "mse", 2),
    "user_activation_huber": sn.Network([sn.Dense(3, 5, SWISH), sn.Dense(5, 2, "identity")], loss=HUBER),
    "bce_on_tanh_hidden_sigmoid_user": _net("tanh", "sigmoid", "mse", 1),
    "softmax_mse": _net("tanh", "softmax", "mse", 3),
}


@functools.lru_cache(maxsize=None)
def c_catalogue(dtype: str = "float64") -> dict[str, sn.Kernel]:
    """Every catalogue network's C kernel of ``dtype``, all in one compiler run
    (``sn.compile_many``, each network named after its key, as compile_many needs distinct
    names). The modules that run catalogue networks in C take them from here: one module, one
    cache key, so a session compiles it once per dtype (the xdist workers share the module
    cache), and the wrapper and Python's headers once, not once per network."""
    named = [sn.Network(net.layers, loss=net.loss, l1=net.l1, l2=net.l2, name=name)
             for name, net in sorted(CATALOGUE.items())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sn.NonSmoothWarning)  # the user loss and activation
        kernels = sn.compile_many(named, backend="c", dtype=dtype)
    return dict(zip(sorted(CATALOGUE), kernels))


def _min_kink_distance(net: sn.Network, X: np.ndarray, params) -> float:
    from symnn.gradcheck import min_kink_distance

    return min_kink_distance(net, X, params)


def data(net: sn.Network, n: int = 6, seed: int = 0, params=None):
    """Inputs and targets; with ``params``, X is redrawn until every pre-activation of a
    kinked activation is at least 0.05 from its kink (central differences must not straddle)."""
    rng = np.random.default_rng(seed)
    k = int(net.n_out)
    X = rng.normal(size=(n, int(net.n_in)))
    while params is not None and _min_kink_distance(net, X, params) < 0.05:
        X = rng.normal(size=(n, int(net.n_in)))
    if net.several_outputs:  # the packed targets: class rows one-hot, each output by its loss
        blocks = [_targets(loss, int(w), n, rng) for loss, w in zip(net.losses, net.output_widths)]
        return X, np.concatenate([b if b.ndim == 2 else np.eye(int(w))[b]
                                  for b, w in zip(blocks, net.output_widths)], axis=1)
    return X, _targets(net.loss, k, n, rng)


def _targets(loss: sn.Loss, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    if loss.name == "cross_entropy":
        return np.arange(n) % k
    if loss.name == "bce":
        return rng.uniform(0, 1, (n, k))
    return rng.normal(size=(n, k))
