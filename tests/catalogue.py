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


def recurrent() -> sn.Network:
    """RNN (relu, 2 layers with dropout between them while training, every step's state) ->
    bidirectional GRU (1 layer, every step's states of both directions: a loop backwards in
    time, whose pullback runs forwards) -> projected LSTM (2 layers, hidden states of 3 projected
    from 4, the last state) -> softmax over labels."""
    x = sn.Input(4, 3, name="x")
    h = sn.RNN(3, 4, num_layers=2, nonlinearity="relu", return_sequences=True, dropout=0.25, name="rnn")(x)
    h = sn.GRU(4, 3, return_sequences=True, bidirectional=True, name="gru")(h)
    h = sn.LSTM(6, 4, num_layers=2, proj_size=3, name="lstm")(h)
    return sn.Network(inputs=x, outputs=sn.Dense(3, 3, "softmax", name="fc")(h), loss="cross_entropy",
                      name="recs")


def cnn_bn() -> sn.Network:
    """Every spatial layer and a batch norm: a strided, dilated, grouped convolution, both
    poolings with padding, BatchNorm2d and BatchNorm1d (a train step writes their buffers)."""
    x = sn.Input(2, 7, 6)
    h = sn.Conv2d(2, 4, 3, stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2, bias=False, name="conv")(x)
    h = sn.MaxPool2d(2, padding=1)(sn.Activate("tanh")(sn.BatchNorm2d(4, name="bn")(h)))
    # a depthwise convolution of stride 1 (its taps run over padded planes), dilated, padded unevenly
    h = sn.Conv2d(4, 4, 3, padding=(1, 2), dilation=(1, 2), groups=4, activation="tanh", name="pw")(h)
    h = sn.AvgPool2d(2, stride=1, ceil_mode=True)(h)
    h = sn.BatchNorm1d(sn.Flatten()(h).shape[0], momentum=None, name="bnf")(sn.Flatten()(h))
    return sn.Network(inputs=x, outputs=sn.Dense(h.shape[0], 3, "softmax", name="fc")(h), loss="cross_entropy",
                      name="cnn_bn")


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
