"""``sn.from_torch`` of modules built from nested submodules (a stem ``nn.Sequential``, residual
blocks inside an ``nn.Sequential``, a head): the layers of nested modules are named after their
paths (``blocks.0.conv`` -> layer ``blocks_0_conv``) and the network keeps each path
(``Network.module_paths``), so ``sn.to_state_dict`` gives back exactly the module's
``state_dict()`` keys, a spec or model file keeps them, and ``load_state_dict`` takes the result.

Loss and gradients are held to autograd through the module's own forward (float64, 1e-10: a
few hundred roundings at u = 2**-53). Paths from a file are untrusted: anything that is not a
module's qualified name, two layers naming one module, or two parameters landing on one key
is refused before the network is made.
"""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn.errors import SpecError

torch = pytest.importorskip("torch")

from tests.layer_graphs import ready, rel  # noqa: E402

nn = torch.nn
RNG = np.random.default_rng(11)
X = RNG.normal(size=(5, 1, 6, 6))
Y = RNG.normal(size=(5, 3))


class Res(nn.Module):
    """x + tanh(conv(x)): a residual block, used nested."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.conv(x))


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh())
        self.blocks = nn.Sequential(Res(4), Res(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class NestedNorm(nn.Module):
    """A normalised stem: its BatchNorm's buffers are state_dict entries under the path too."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
        self.classifier = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _matches_autograd(module: nn.Module, net: sn.Network, params: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """The NumPy kernel's MSE loss and gradients against autograd through the module's own
    forward (1e-10), each gradient found under its parameter's state_dict key; the gradients."""
    loss, grads = sn.compile(net, backend="numpy").loss_and_grad(params, x.reshape(len(x), -1), y)
    module.zero_grad()
    torch_loss = ((module(torch.tensor(x)) - torch.tensor(y)) ** 2).mean()
    torch_loss.backward()
    assert abs(loss - torch_loss.item()) <= 1e-10 * abs(torch_loss.item())
    named = dict(module.named_parameters())
    for key, g in grads.items():
        assert rel(g, named[net.state_dict_key(key)].grad.numpy()) <= 1e-10, key
    return grads


def test_nested_modules_match_autograd_and_map_back_to_the_state_dict() -> None:
    module = ready(Nested())
    net, params = sn.from_torch(module, input_shape=(1, 6, 6), loss="mse")
    assert dict(net.module_paths) == {"stem_0": "stem.0", "blocks_0_conv": "blocks.0.conv",
                                      "blocks_1_conv": "blocks.1.conv", "head_0": "head.0", "head_1": "head.1"}
    grads = _matches_autograd(module, net, params, X, Y)
    state = sn.to_state_dict(net, params)
    assert list(state) == list(module.state_dict())
    assert all(torch.equal(state[key], value) for key, value in module.state_dict().items())
    assert list(sn.to_state_dict(net, grads)) == list(module.state_dict())


class Colliding(nn.Module):
    """A nested module ``a.0`` whose joined name is another attribute's, ``a_0``, and a nested
    ``b.c`` beside an attribute ``b_c_2``: the layer names must differ, the keys stay each own."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.a_0 = nn.Linear(4, 3)
        self.b = nn.ModuleDict({"c": nn.Linear(3, 3)})
        self.b_c_2 = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b_c_2(torch.tanh(self.b["c"](torch.tanh(self.a_0(self.a(x))))))


def test_a_nested_name_that_is_an_attributes_name_gets_a_free_one() -> None:
    module = ready(Colliding())
    net, params = sn.from_torch(module, input_shape=(4,), loss="mse")
    assert dict(net.module_paths) == {"a_0_2": "a.0", "b_c": "b.c"}
    _matches_autograd(module, net, params, RNG.normal(size=(5, 4)), RNG.normal(size=(5, 2)))
    assert list(sn.to_state_dict(net, params)) == list(module.state_dict())


def test_nested_buffers_frozen_parameters_and_load_state_dict() -> None:
    module = ready(NestedNorm())
    module.features[0].weight.requires_grad_(False)
    net, params = sn.from_torch(module, input_shape=(1, 6, 6))
    assert net.frozen == ("features_0.weight",)
    assert "features_1.running_var" in net.buffers
    twin = NestedNorm().double()
    twin.load_state_dict(sn.to_state_dict(net, params))  # strict: every key, no other
    twin.eval()
    module.eval()
    k = sn.compile(net, backend="numpy")
    got = k.forward(params, X.reshape(5, -1))  # inference form: the running statistics
    assert rel(got, twin(torch.tensor(X)).detach().numpy()) <= 1e-12
    assert rel(got, module(torch.tensor(X)).detach().numpy()) <= 1e-12


def test_module_paths_survive_the_spec_and_the_model_file(tmp_path) -> None:
    from symnn.persist import load, save
    from symnn.spec_toml import dumps_spec, loads_spec

    module = ready(Nested())
    net, params = sn.from_torch(module, input_shape=(1, 6, 6), loss="mse")
    text = dumps_spec(net)
    assert 'module = "blocks.1.conv"' in text
    again = loads_spec(text).network
    assert again.module_paths == net.module_paths and again == net
    save(tmp_path / "nested.npz", net, params)
    model = load(tmp_path / "nested.npz")
    assert model.network.module_paths == net.module_paths
    assert list(sn.to_state_dict(model.network, model.params)) == list(module.state_dict())


@pytest.mark.parametrize("changes, words", [
    ([('module = "stem.0"', 'module = "stem.0\\"; import os"')], "not a module's qualified name"),
    ([('module = "stem.0"', 'module = "head.1"')], "two layers name the same module"),
    # stem_0 keyed by its own name, stem_0.weight, and the head's Linear keyed under "stem_0" too
    ([('module = "stem.0"\n', ''), ('module = "head.1"', 'module = "stem_0"')],
     "would both be the state_dict entry 'stem_0.weight'"),
])
def test_bad_module_paths_in_a_spec_are_refused(changes: list[tuple[str, str]], words: str) -> None:
    from symnn.spec_toml import dumps_spec, loads_spec

    net, _ = sn.from_torch(ready(Nested()), input_shape=(1, 6, 6), loss="mse")
    text = dumps_spec(net)
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    with pytest.raises(SpecError) as info:
        loads_spec(text)
    assert words in str(info.value)


def _through_onnx(module: nn.Module) -> tuple[sn.Network, dict]:
    """``sn.from_onnx`` of the file ``torch.onnx.export`` writes of ``module`` (input X, batch
    dynamic), with an MSE loss."""
    import io
    import warnings

    onnx = pytest.importorskip("onnx")
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.tensor(X),), f, dynamo=False, opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {0: "N"}})
    return sn.from_onnx(onnx.load_from_string(f.getvalue()), loss="mse")


def test_an_exported_nested_module_keeps_its_state_dict_keys_through_onnx() -> None:
    """torch.onnx.export names the initializers after the nested modules (``blocks.0.conv.weight``):
    ``sn.from_onnx`` keys the layers under those paths too."""
    module = ready(Nested()).eval()
    net, params = _through_onnx(module)
    assert dict(net.module_paths)["blocks_1_conv"] == "blocks.1.conv"
    state = sn.to_state_dict(net, params)
    assert sorted(state) == sorted(module.state_dict())
    assert all(torch.equal(state[key], value) for key, value in module.state_dict().items())
    got = sn.compile(net, backend="numpy").forward(params, X.reshape(5, -1))
    assert rel(got, module(torch.tensor(X)).detach().numpy()) <= 1e-12


class CollidingConv(nn.Module):
    """Convolutions this time (the ONNX import of a layer graph): ``a.0`` beside ``a_0``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
        self.a_0 = nn.Conv2d(2, 2, 3, padding=1)
        self.head = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(torch.tanh(self.a_0(torch.tanh(self.a(x)))), 1))


def test_an_exported_nested_name_that_is_an_attributes_name_keeps_both_keys_through_onnx() -> None:
    """Its ONNX file: ``a.0``'s joined name is the attribute ``a_0``'s, so the nested one takes
    ``a_0_2``, and every state_dict key comes back (it took a generic name and lost its keys)."""
    module = ready(CollidingConv()).eval()
    net, params = _through_onnx(module)
    assert dict(net.module_paths) == {"a_0_2": "a.0"}
    state = sn.to_state_dict(net, params)
    assert sorted(state) == sorted(module.state_dict())
    assert all(torch.equal(state[key], value) for key, value in module.state_dict().items())
    got = sn.compile(net, backend="numpy").forward(params, X.reshape(5, -1))
    assert rel(got, module(torch.tensor(X)).detach().numpy()) <= 1e-12
