"""The layer-graph networks the tests share (issue 20), each with the same network written in
PyTorch by hand (its loss, and a module whose attributes are named like the layers), so that a
wrong wiring in symnn's tracer shows as a difference."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

import symnn as sn

F = torch.nn.functional


# -- the networks --------------------------------------------------------------------------------
def resln() -> sn.Network:
    """x -> Dense -> relu -> LayerNorm -> Dense -> tanh, + skip -> Dense -> softmax (issue 20's
    "done when" network), cross-entropy on labels, L2."""
    x = sn.Input(6)
    h = sn.Dense(6, 8, "relu")(x)
    r = sn.Dense(8, 8, "tanh")(sn.LayerNorm(8)(h))
    y = sn.Dense(8, 3, "softmax")(h + r)
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", l2=1e-2, name="resln")


def resbce() -> sn.Network:
    """The residual block with two sigmoid outputs, binary cross-entropy, L1 and L2."""
    x = sn.Input(5)
    h = sn.Dense(5, 7, "relu")(x)
    r = sn.Dense(7, 7, "tanh")(sn.LayerNorm(7)(h))
    y = sn.Dense(7, 2, "sigmoid")(h + r)
    return sn.Network(inputs=x, outputs=y, loss="bce", l1=1e-2, l2=3e-2, name="resbce")


def lnplain() -> sn.Network:
    """LayerNorm without weight and bias, eps 1e-3 (not the default), then a linear output."""
    x = sn.Input(4)
    h = sn.LayerNorm(6, eps=1e-3, elementwise_affine=False)(sn.Dense(4, 6, "tanh")(x))
    return sn.Network(inputs=x, outputs=sn.Dense(6, 2)(h), loss="mse", name="lnplain")


def shared() -> sn.Network:
    """One layer called twice: ``y = d(d(x))``, one weight and one bias."""
    x = sn.Input(5)
    d = sn.Dense(5, 5, "tanh")
    return sn.Network(inputs=x, outputs=d(d(x)), loss="mse", name="shared")


def _penalties(net: sn.Network, tp: dict[str, torch.Tensor]) -> torch.Tensor:
    """symnn's L1/L2 convention: the dense layers' weights only (not biases, not LayerNorm's)."""
    weights = [tp[k] for k in ("dense1.weight", "dense2.weight", "dense3.weight") if k in tp]
    return (net.l2 / 2 * sum((w ** 2).sum() for w in weights)
            + net.l1 * sum(w.abs().sum() for w in weights))


def _torch_res(tp: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The residual network's logits, as PyTorch would write it."""
    h = torch.relu(F.linear(x, tp["dense1.weight"], tp["dense1.bias"]))
    n = F.layer_norm(h, (h.shape[1],), tp["layernorm1.weight"], tp["layernorm1.bias"], eps=1e-5)
    r = torch.tanh(F.linear(n, tp["dense2.weight"], tp["dense2.bias"]))
    return F.linear(h + r, tp["dense3.weight"], tp["dense3.bias"])


def torch_resln(net, tp, x, y):
    return F.cross_entropy(_torch_res(tp, x), y) + _penalties(net, tp)


def torch_resbce(net, tp, x, y):
    return F.binary_cross_entropy(torch.sigmoid(_torch_res(tp, x)), y) + _penalties(net, tp)


def torch_lnplain(net, tp, x, y):
    h = F.layer_norm(torch.tanh(F.linear(x, tp["dense1.weight"], tp["dense1.bias"])), (6,), eps=1e-3)
    return F.mse_loss(F.linear(h, tp["dense2.weight"], tp["dense2.bias"]), y)


def torch_shared(net, tp, x, y):
    def d(t):
        return torch.tanh(F.linear(t, tp["dense1.weight"], tp["dense1.bias"]))
    return F.mse_loss(d(d(x)), y)


#: name -> (builder, the same network's loss in PyTorch, target kind)
NETS: dict[str, tuple[Callable[[], sn.Network], Callable, str]] = {
    "resln": (resln, torch_resln, "labels"),
    "resbce": (resbce, torch_resbce, "binary"),
    "lnplain": (lnplain, torch_lnplain, "real"),
    "shared": (shared, torch_shared, "real"),
}
NAMES = sorted(NETS)


def case(name: str, n: int = 7, seed: int = 0):
    """``(net, params, X, Y)``: parameters away from their initial values (LayerNorm's weight
    1 and bias 0 would hide a swapped or dropped affine term), data of ``n`` rows."""
    net = NETS[name][0]()
    rng = np.random.default_rng(seed)
    p = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in net.init_params(seed=seed + 1).items()}
    X = rng.normal(size=(n, int(net.n_in)))
    kind, k = NETS[name][2], int(net.n_out)
    Y = (rng.integers(0, k, n) if kind == "labels" else
         rng.integers(0, 2, (n, k)).astype(np.float64) if kind == "binary" else rng.normal(size=(n, k)))
    return net, p, X, Y


def torch_loss_and_grad(name: str, net, p, X, Y) -> tuple[float, dict[str, np.ndarray]]:
    tp = {k: torch.tensor(np.asarray(v, np.float64), requires_grad=True) for k, v in p.items()}
    ty = torch.tensor(Y) if Y.dtype.kind == "i" else torch.tensor(np.asarray(Y, np.float64))
    loss = NETS[name][1](net, tp, torch.tensor(np.asarray(X, np.float64)), ty)
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in tp.items()}


def rel(a, b) -> float:
    """Norm-wise relative difference of ``a`` from the reference ``b``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# -- the same networks as torch modules (attributes named like the layers) -------------------------
class _Res(torch.nn.Module):
    def __init__(self, n_in: int, width: int, n_out: int, out: Callable) -> None:
        super().__init__()
        self.dense1 = torch.nn.Linear(n_in, width)
        self.layernorm1 = torch.nn.LayerNorm(width)
        self.dense2 = torch.nn.Linear(width, width)
        self.dense3 = torch.nn.Linear(width, n_out)
        self.out = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.dense1(x))
        return self.out(self.dense3(h + torch.tanh(self.dense2(self.layernorm1(h)))))


class _Plain(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense1 = torch.nn.Linear(4, 6)
        self.layernorm1 = torch.nn.LayerNorm(6, eps=1e-3, elementwise_affine=False)
        self.dense2 = torch.nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense2(self.layernorm1(torch.tanh(self.dense1(x))))


class _Shared(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense1 = torch.nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense1(torch.tanh(self.dense1(x))))


#: name -> a module computing the same outputs, its state_dict keyed like the network's parameters
TORCH_MODULES: dict[str, Callable[[], torch.nn.Module]] = {
    "resln": lambda: _Res(6, 8, 3, lambda z: torch.softmax(z, dim=1)),
    "resbce": lambda: _Res(5, 7, 2, torch.sigmoid),
    "lnplain": _Plain, "shared": _Shared}


def run_emitted_numpy(tmp_path, net: sn.Network, p, X: np.ndarray, Y: np.ndarray):
    """The network's emitted NumPy module imported in a fresh interpreter in which any import of
    symnn fails, run on ``(p, X, Y)`` (the packed layout): its ``.npz`` of ``L``, ``y`` (the
    forward output) and the gradients by parameter name."""
    import os
    import subprocess
    import sys

    (path,) = sn.emit(net, tmp_path, backend="numpy")
    np.savez(tmp_path / "case.npz", X=X, Y=Y, **{f"p_{k}": v for k, v in p.items()})
    script = (
        "import sys, numpy as np\n"
        "sys.modules['symnn'] = None  # any import of symnn now fails\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        f"import {path.stem} as m\n"
        f"c = np.load({str(tmp_path / 'case.npz')!r})\n"
        "p = {k[2:]: c[k] for k in c.files if k.startswith('p_')}\n"
        "L, g = m.loss_and_grad(p, c['X'], c['Y'])\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, L=L, y=m.forward(p, c['X']), **g)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    return np.load(tmp_path / "out.npz")


# -- modules imported from PyTorch or ONNX, against autograd (test_conv_import, test_conv_onnx) --
def ready(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The module in float64, every parameter moved off its initial value (a zero bias would
    hide a dropped one), in eval mode."""
    torch.manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module.eval()


def assert_matches_autograd(module: torch.nn.Module, net: sn.Network, params: dict, X: np.ndarray,
                            Y: np.ndarray, torch_loss: Callable, tol: float) -> None:
    """An imported network's loss, gradients (back under the module's state_dict keys through
    ``sn.to_state_dict``) and forward pass against autograd through the module; ``torch_loss``
    maps the module's output to its loss on the targets ``Y``."""
    k = sn.compile(net, backend="numpy")
    loss, grads = k.loss_and_grad(params, X, Y)
    module.zero_grad()
    out = module(torch.tensor(X))
    ref = torch_loss(out)
    ref.backward()
    assert abs(loss - ref.item()) <= tol * abs(ref.item())
    back = sn.to_state_dict(net, grads)
    assert list(back) == list(module.state_dict())
    for key, p in module.named_parameters():
        assert back[key].shape == p.shape and rel(back[key].numpy(), p.grad.numpy()) <= tol, key
    assert rel(k.forward(params, X), out.detach().numpy()) <= tol


def rel_max(a: object, b: object, scale: float | None = None) -> float:
    """Largest entry of ``|a - b|`` relative to ``scale``, by default the largest entry of the
    reference ``b``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.abs(b).max()) if scale is None else scale
    return float(np.abs(a - b).max() / max(scale, np.finfo(np.float64).tiny))


def largest(grads: dict[str, np.ndarray]) -> float:
    """The largest entry of a gradient, over every parameter."""
    return max(float(np.abs(g).max()) for g in grads.values())
