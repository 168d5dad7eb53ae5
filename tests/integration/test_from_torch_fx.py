"""``sn.from_torch`` of modules that are not an ``nn.Sequential`` (issue 20, DESIGN.md "Layer
graphs"): the module is traced with ``torch.fx`` and rebuilt as a symnn layer graph whose layers
are named after the module's attributes.

Each imported network is checked against the module itself: PyTorch autograd through the
module's own ``forward`` gives the reference loss and gradients (float64, 1e-10), and
``sn.to_state_dict`` must give back exactly ``module.state_dict()``'s keys and values. The
refusals must be symnn errors that name what is wrong, raised before anything is compiled.
"""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.errors import ConfigError, SpecError, SpecTypeError

torch = pytest.importorskip("torch")

nn, F = torch.nn, torch.nn.functional
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
#: float64 loss and gradients against autograd: a few hundred roundings at u = 2**-53
TOL = 1e-10


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _ready(module: nn.Module, seed: int = 0) -> nn.Module:
    """The module in float64 with every parameter away from its initial value (LayerNorm's
    weight 1 and bias 0 would hide a dropped or swapped affine term)."""
    torch.manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


def _torch_loss_and_grad(module: nn.Module, loss_of,
                         *inputs: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and gradients by autograd through the module's own forward."""
    module.zero_grad()
    loss = loss_of(module(*(torch.tensor(x) for x in inputs)))
    loss.backward()
    return float(loss.detach()), {k: p.grad.numpy() for k, p in module.named_parameters()}


def _assert_matches(net, params, grads, loss, ref_loss, ref_grads, module) -> None:
    assert abs(loss - ref_loss) <= TOL * abs(ref_loss)
    back = sn.to_state_dict(net, grads)
    assert list(back) == list(ref_grads) == list(module.state_dict())
    for key, g in ref_grads.items():
        assert rel(back[key].numpy(), g) <= TOL, key
    state = sn.to_state_dict(net, params)
    for key, value in module.state_dict().items():
        assert state[key].shape == value.shape and torch.equal(state[key], value), key


# -- a residual MLP: Linear, LayerNorm, skip add, softmax head ------------------------------------
class ResMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 8)
        self.norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        r = F.tanh(self.fc2(self.norm(h)))  # traced as the method x.tanh()
        return F.softmax(self.head(h + r), dim=-1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_mlp_matches_autograd(backend: str) -> None:
    module = _ready(ResMLP())
    net, params = sn.from_torch(module, name="resmlp")
    assert net.graph.names == ("fc1", "norm", "fc2", "add1", "head")
    assert [layer.activation.name for layer in net.layers if isinstance(layer, sn.Dense)] == [
        "relu", "tanh", "softmax"]
    assert net.loss.name == "cross_entropy"  # the default after a softmax output
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(9, 5)), rng.integers(0, 3, 9)
    k = sn.compile(net, backend=backend)
    loss, grads = k.loss_and_grad(params, X, y)
    # symnn's cross-entropy reads the softmax's probabilities; the module returns them too
    ref_loss, ref_grads = _torch_loss_and_grad(module, lambda p: F.nll_loss(torch.log(p), torch.tensor(y)), X)
    _assert_matches(net, params, grads, loss, ref_loss, ref_grads, module)
    assert rel(k.forward(params, X), module(torch.tensor(X)).detach().numpy()) <= TOL


# -- functional pooling: F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d as the modules -------
class FunctionalPools(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(torch.tanh(self.conv(x)), 2, stride=2)
        h = F.avg_pool2d(h, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


def _check_image_module(module: nn.Module, layers: list[str], seed: int) -> None:
    """``module`` (1x6x6 images -> 2 outputs) imported as the ``layers`` kinds, its MSE loss and
    gradients held to autograd and its state_dict given back (NumPy backend)."""
    net, params = sn.from_torch(module, input_shape=(1, 6, 6), loss="mse")
    assert [type(layer).__name__ for layer in net.graph.layers] == layers
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(5, 36)), rng.normal(size=(5, 2))
    loss, grads = sn.compile(net, backend="numpy").loss_and_grad(params, X, Y)
    ref_loss, ref_grads = _torch_loss_and_grad(module, lambda out: ((out - torch.tensor(Y)) ** 2).mean(),
                                               X.reshape(5, 1, 6, 6))
    _assert_matches(net, params, grads, loss, ref_loss, ref_grads, module)


def test_functional_pooling_calls_are_the_pooling_layers() -> None:
    _check_image_module(_ready(FunctionalPools()), ["Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool", "Dense"], 4)


class ViewFlatten(nn.Module):
    """``h.view(-1, 32)``: the flatten written with a sample's size (32 = 2 x 4 x 4)."""

    def __init__(self, k: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.head = nn.Linear(32, 2)
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).view(-1, self.k).view(-1, 32))


def test_view_with_a_sample_size_is_a_flatten() -> None:
    # the tanh folds into the convolution; each view is a flatten of the samples it is given
    _check_image_module(_ready(ViewFlatten()), ["Conv2d", "Flatten", "Flatten", "Dense"], 6)
    with pytest.raises(SpecError, match=r"view\(-1, 16\) of samples of shape \(2, 4, 4\).*one sample per row"):
        sn.from_torch(ViewFlatten(16), input_shape=(1, 6, 6))


# -- a ResNet-style block: the activation after the addition is a layer of its own ---------------
class ResBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 4)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(x + self.fc2(torch.relu(self.fc1(x)))))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_activation_after_an_addition_is_its_own_layer(backend: str) -> None:
    module = _ready(ResBlock())
    net, params = sn.from_torch(module, name="resblock")
    acts = [layer for layer in net.layers if isinstance(layer, sn.Activate)]
    assert [a.activation.name for a in acts] == ["relu"] and net.loss.name == "mse"
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(7, 4)), rng.normal(size=(7, 2))
    k = sn.compile(net, backend=backend)
    loss, grads = k.loss_and_grad(params, X, Y)
    ref_loss, ref_grads = _torch_loss_and_grad(module, lambda out: F.mse_loss(out, torch.tensor(Y)), X)
    _assert_matches(net, params, grads, loss, ref_loss, ref_grads, module)
    assert sn.gradcheck(k, params, X, Y).ok  # the relu's kink is seen through the Activate layer


# -- several inputs, several outputs, a shared layer, dropout --------------------------------------
class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fa = nn.Linear(3, 4)
        self.fb = nn.Linear(2, 5)
        self.head = nn.Linear(9, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([torch.sigmoid(self.fa(a)), self.fb(b)], dim=1))


class RawInput(nn.Module):
    """The second input goes straight into torch.cat: its width is not in the traced graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fa = nn.Linear(3, 4)
        self.head = nn.Linear(6, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat((self.fa(a), b), -1))


def test_two_inputs_keyed_by_forward_arguments() -> None:
    module = _ready(TwoInputs())
    net, params = sn.from_torch(module, name="two_in")
    assert net.input_names == ("a", "b") and net.loss.name == "mse"
    rng = np.random.default_rng(2)
    A, B, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    loss, grads = sn.compile(net).loss_and_grad(params, {"a": A, "b": B}, Y)
    ref_loss, ref_grads = _torch_loss_and_grad(module, lambda out: F.mse_loss(out, torch.tensor(Y)), A, B)
    _assert_matches(net, params, grads, loss, ref_loss, ref_grads, module)

    raw = _ready(RawInput())
    with pytest.raises(SpecError, match="'b'.*input_shapes="):
        sn.from_torch(raw)
    net, params = sn.from_torch(raw, input_shapes=[3, 2], name="raw_in")
    out = sn.compile(net).forward(params, {"a": A, "b": B})
    assert rel(out, raw(torch.tensor(A), torch.tensor(B)).detach().numpy()) <= TOL


class TwoOutputs(nn.Module):
    """Two heads on one trunk, the trunk's Linear called twice (one set of parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 4)
        self.cls = nn.Linear(4, 3)
        self.box = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.trunk(torch.tanh(self.trunk(x))))
        return torch.softmax(self.cls(h), 1), self.box(h)


def test_two_outputs_and_a_shared_layer() -> None:
    module = _ready(TwoOutputs())
    net, params = sn.from_torch(module, loss=["cross_entropy", "mse"], name="two_out")
    assert net.output_names == ("cls", "box") and sorted(params) == sorted(module.state_dict())
    with pytest.raises(SpecError, match="one loss per output"):
        sn.from_torch(module, loss="mse")
    rng = np.random.default_rng(3)
    X, y, B = rng.normal(size=(7, 4)), rng.integers(0, 3, 7), rng.normal(size=(7, 2))
    k = sn.compile(net)
    loss, grads = k.loss_and_grad(params, X, {"cls": y, "box": B})

    def ref(outs):
        return F.nll_loss(torch.log(outs[0]), torch.tensor(y)) + F.mse_loss(outs[1], torch.tensor(B))

    ref_loss, ref_grads = _torch_loss_and_grad(module, ref, X)
    _assert_matches(net, params, grads, loss, ref_loss, ref_grads, module)
    out, ref_out = k.forward(params, X), module(torch.tensor(X))
    assert rel(out["cls"], ref_out[0].detach().numpy()) <= TOL
    assert rel(out["box"], ref_out[1].detach().numpy()) <= TOL
    # without loss=, each output gets the default for its activation
    assert [loss.name for loss in sn.from_torch(module)[0].losses] == ["cross_entropy", "mse"]


class WithDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.drop = nn.Dropout(0.25)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.silu(self.fc1(x))))


def test_dropout_in_the_module() -> None:
    """The Dropout becomes an sn.Dropout in the same place: the training gradient with symnn's
    masks equals autograd through the module in train() mode with those masks in place of
    torch's own (x * M / (1 - p)); outside training it is the identity, as eval()."""
    module = _ready(WithDropout())
    net, params = sn.from_torch(module, name="drop_fx")
    drops = [layer for layer in net.layers if isinstance(layer, sn.Dropout)]
    assert [(d.p, d.name) for d in drops] == [(0.25, "drop")]
    k = sn.compile(net, optimizer="sgd")
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(8, 4)), rng.normal(size=(8, 2))
    mask = k.module._dropout_mask(3, 5, 1, 8, 6, 0.25)
    assert 0 < mask.mean() < 1
    loss, grads = k.module._loss_and_grad_train(params, X, Y, [mask])
    module.train()
    hook = module.drop.register_forward_hook(lambda mod, args, out: args[0] * torch.tensor(mask) / 0.75)
    try:
        ref_loss, ref_grads = _torch_loss_and_grad(module, lambda out: F.mse_loss(out, torch.tensor(Y)), X)
    finally:
        hook.remove()
    _assert_matches(net, params, grads, loss, ref_loss, ref_grads, module)
    module.eval()
    assert rel(k.forward(params, X), module(torch.tensor(X)).detach().numpy()) <= TOL


# -- refusals --------------------------------------------------------------------------------------
class WithConvTranspose(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(1, 2, 3)

    def forward(self, x):
        return self.up(x)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.fc(x)
        return self.fc(-x)


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.spare = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x)


class Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.fc(x)))


class ComputedWindow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        h = self.conv(x)
        return F.max_pool2d(h, h.size(2)).flatten(1)


def test_refusals_name_the_problem() -> None:
    with pytest.raises(SpecTypeError, match=r"'up'.*ConvTranspose2d.*not supported.*nn\.Linear"):
        sn.from_torch(WithConvTranspose())
    with pytest.raises(SpecTypeError, match="torch.fx cannot trace Branchy"):
        sn.from_torch(Branchy())
    with pytest.raises(SpecError, match=r"spare\.weight.*spare\.bias"):
        sn.from_torch(Unused())
    with pytest.raises(SpecError, match="'fc' is called twice as different symnn layers"):
        sn.from_torch(Reused())
    with pytest.raises(SpecError, match="input_shapes gives 1 shape"):
        sn.from_torch(TwoInputs(), input_shapes=[3])
    with pytest.raises(SpecTypeError, match=r"'max_pool2d'.*arguments other than a tensor and constant sizes"):
        sn.from_torch(ComputedWindow(), input_shape=(1, 6, 6))
    with pytest.raises(SpecTypeError, match=r"Softmax\(dim=0\)"):
        sn.from_torch(_Lambda(lambda m, x: F.softmax(m.fc(x), dim=0)))
    with pytest.raises(SpecError, match=r"torch\.cat\(dim=0\)"):
        sn.from_torch(_Lambda(lambda m, x: torch.cat([m.fc(x), m.fc(x)])))
    with pytest.raises(ConfigError, match="input_shapes= is for a traced module"):
        sn.from_torch(nn.Sequential(nn.Linear(2, 2)), input_shapes=[2])
    with pytest.raises(SpecTypeError, match="nn.Module that torch.fx can trace, got dict"):
        sn.from_torch({"fc.weight": torch.zeros(2, 2)})


class _Lambda(nn.Module):
    """A module whose forward is ``body(self, x)`` around one Linear ``fc``."""

    def __init__(self, body) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.body = body

    def forward(self, x):
        return self.body(self, x)


# -- modules written with the functional API: F.linear / F.conv1d / F.conv2d on a submodule's -----------
# -- parameters read by get_attr ------------------------------------------------------------------------
class _FLinear(nn.Module):
    """A linear layer written with F.linear on its own parameters ``weight`` and ``bias``."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(o, i)), nn.Parameter(torch.randn(o))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _FConv(nn.Module):
    """A convolution written with F.conv1d/F.conv2d and constant settings."""

    def __init__(self, c: int, o: int, k: int, dims: int = 2, bias: bool = True, **settings) -> None:
        super().__init__()
        groups = settings.get("groups", 1)
        self.weight = nn.Parameter(torch.randn(o, c // groups, *([k] * dims)))
        self.bias = nn.Parameter(torch.randn(o)) if bias else None
        self.fn, self.settings = (F.conv1d if dims == 1 else F.conv2d), settings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.weight, self.bias, **self.settings)


class _Functional(nn.Module):
    """Functional layers at the top level and nested (``blocks.0``), with activations to fold and
    a layer called twice (its parameters shared)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _FConv(2, 4, 3, padding=1)
        self.blocks = nn.Sequential(_FConv(4, 4, 3, bias=False, stride=2, padding=1, groups=2))
        self.fc = _FLinear(36, 5)
        self.mix = _FLinear(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.blocks(torch.relu(self.conv(x))))
        h = torch.relu(self.fc(h.flatten(1)))
        return self.head(self.mix(self.mix(h)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_layers_on_get_attr_parameters_match_autograd(backend: str) -> None:
    module = _ready(_Functional())
    net, params = sn.from_torch(module, input_shape=(2, 6, 6), loss="mse")
    assert [type(layer).__name__ for layer in net.graph.layers] == ["Conv2d", "Conv2d", "Flatten", "Dense",
                                                                   "Dense", "Dense"]
    assert dict(net.module_paths) == {"blocks_0": "blocks.0"}
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 2, 6, 6))
    out = module(torch.tensor(X))
    Y = rng.normal(size=tuple(out.shape))
    ref = F.mse_loss(out, torch.tensor(Y))
    ref.backward()
    loss, grads = sn.compile(net, backend=backend).loss_and_grad(params, X, Y)
    assert abs(loss - ref.item()) <= TOL * abs(ref.item())
    back = sn.to_state_dict(net, grads)
    assert list(back) == list(module.state_dict())
    for key, p in module.named_parameters():
        assert rel(back[key], p.grad) <= TOL, key


def test_a_functional_conv1d_is_a_conv1d() -> None:
    module = _ready(nn.Sequential(_FConv(2, 3, 3, dims=1, dilation=2), nn.Flatten(), nn.Linear(3 * 4, 2)))
    net, params = sn.from_torch(module, input_shape=(2, 8), loss="mse")
    assert isinstance(net.graph.layers[0], sn.Conv1d) and net.graph.layers[0].dilation[-1] == 2
    X = np.random.default_rng(1).normal(size=(3, 2, 8))
    assert rel(sn.compile(net).forward(params, X), module(torch.tensor(X)).detach().numpy()) <= TOL


def test_functional_layers_symnn_cannot_key_are_refused() -> None:
    class RootParams(nn.Module):  # parameters of the root module: no module path to key them by
        def __init__(self) -> None:
            super().__init__()
            self.w, self.b = nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, self.w, self.b)

    class ParamAsData(nn.Module):  # a parameter added to data
        def __init__(self) -> None:
            super().__init__()
            self.fc = _FLinear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + self.fc.bias

    class ForeignBias(nn.Module):  # a bias that is not the weight's module's
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = _FLinear(4, 3), _FLinear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, self.a.weight, self.b.bias)

    for module, words in ((RootParams(), "of a submodule"), (ParamAsData(), "reads the parameter 'fc.bias' directly"),
                          (ForeignBias(), "its bias must be 'a.bias'")):
        with pytest.raises((SpecError, SpecTypeError), match=words):
            sn.from_torch(module, input_shape=(4,), loss="mse")
