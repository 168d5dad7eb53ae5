"""Layer graphs in and out (issue 20): PyTorch state_dicts, model files, TOML specs, the CLI.

A graph network's parameters are ``<layer>.<param>``, the ``state_dict`` keys of a torch module
whose attributes are named like the layers, so weights move between the two one to one. Model
files and specs store a graph as ``[[input]]`` and ``[[node]]`` records (symnn.graph_spec), read
back through the public constructors with a whitelist of keys per layer kind: a tampered record
is a ModelFormatError (SpecParseError in a spec) that names the node, never a crash or a
silently different network.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.errors import ModelFormatError, ShapeError, SpecError, SpecParseError

torch = pytest.importorskip("torch")

from tests.layer_graphs import NAMES, NETS, TORCH_MODULES, case, resln  # noqa: E402


def _module(name: str, seed: int = 0) -> torch.nn.Module:
    """The torch twin of a network, float64, with LayerNorm's weight and bias moved off 1 and 0."""
    torch.manual_seed(seed)
    module = TORCH_MODULES[name]().double()
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if key.startswith("layernorm"):
                value.add_(0.3 * torch.randn_like(value))
    return module


# -- state_dicts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_weights_go_from_torch_to_symnn_and_back_one_to_one(name: str) -> None:
    net, _, X, _ = case(name)
    module = _module(name)
    sd = module.state_dict()
    p = sn.from_torch_state_dict(sd, net)
    assert list(p) == list(net.param_shapes()) == list(sd)
    # the same numbers compute the same outputs: the keys meant the same parameters
    with torch.no_grad():
        expected = module(torch.tensor(X)).numpy()
    np.testing.assert_allclose(sn.compile(net).forward(p, X), expected, rtol=1e-12, atol=1e-14)
    back = sn.to_state_dict(net, p)
    assert list(back) == list(sd)
    for key in sd:
        assert torch.equal(back[key], sd[key]), key
    module.load_state_dict(back, strict=True)


def test_gradients_come_back_keyed_like_the_module() -> None:
    net, _, X, Y = case("resln")
    module = _module("resln")
    p = sn.from_torch_state_dict(module.state_dict(), net)
    _, g = sn.compile(net).loss_and_grad(p, X, Y)
    probabilities = module(torch.tensor(X))
    loss = torch.nn.functional.nll_loss(torch.log(probabilities), torch.tensor(Y)) + net.l2 / 2 * sum(
        (w ** 2).sum() for k, w in module.named_parameters() if k.startswith("dense") and k.endswith("weight"))
    loss.backward()
    grads = sn.to_state_dict(net, g)
    for key, param in module.named_parameters():
        np.testing.assert_allclose(grads[key].numpy(), param.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_float32_weights() -> None:
    net = resln()
    p = sn.from_torch_state_dict(_module("resln").state_dict(), net, dtype="float32")
    assert all(v.dtype == np.float32 for v in p.values())


def _changed(sd: dict, key: str, value) -> dict:
    out = dict(sd)
    if value is None:
        del out[key]
    else:
        out[key] = value
    return out


BAD_STATE_DICTS = {
    "missing key": (lambda sd: _changed(sd, "layernorm1.bias", None), "layernorm1.bias"),
    "extra key": (lambda sd: _changed(sd, "dense4.weight", torch.zeros(3, 8)), "dense4.weight"),
    "Sequential keys": (lambda sd: {f"0.{k.split('.')[1]}": v for k, v in sd.items()}, "0.weight"),
    "wrong shape": (lambda sd: _changed(sd, "dense2.weight", torch.zeros(8, 7, dtype=torch.float64)),
                    "dense2.weight"),
    "transposed": (lambda sd: _changed(sd, "dense3.weight", sd["dense3.weight"].T.contiguous()), "dense3.weight"),
    "not finite": (lambda sd: _changed(sd, "layernorm1.weight", torch.full((8,), float("nan"))),
                   "layernorm1.weight"),
    "integer tensor": (lambda sd: _changed(sd, "dense1.bias", torch.zeros(8, dtype=torch.int64)), "dense1.bias"),
    "not a tensor": (lambda sd: _changed(sd, "dense1.bias", np.zeros(8)), "dense1.bias"),
}


@pytest.mark.parametrize("what", sorted(BAD_STATE_DICTS))
def test_a_state_dict_that_does_not_fit_is_refused_naming_the_key(what: str) -> None:
    change, key = BAD_STATE_DICTS[what]
    sd = change(dict(_module("resln").state_dict()))
    with pytest.raises(ModelFormatError, match=key.replace(".", r"\.")):
        sn.from_torch_state_dict(sd, resln())


def test_to_state_dict_needs_every_parameter() -> None:
    net = resln()
    p = net.init_params(seed=0)
    del p["layernorm1.weight"]
    with pytest.raises(ShapeError, match="layernorm1.weight"):
        sn.to_state_dict(net, p)


def test_load_torch_reads_a_graph_state_dict_and_renames(tmp_path: Path) -> None:
    module = _module("shared")
    torch.save(module.state_dict(), tmp_path / "w.pt")
    net, p = sn.load_torch(tmp_path / "w.pt", NETS["shared"][0](), name="renamed")
    assert net.name == "renamed" and net.graph.names == ("dense1",) and len(net.graph.calls) == 2
    X = case("shared")[2]
    with torch.no_grad():
        np.testing.assert_allclose(sn.compile(net).forward(p, X), module(torch.tensor(X)).numpy(), rtol=1e-12)


# -- model files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_a_graph_model_file_round_trips(tmp_path: Path, name: str) -> None:
    net, p, X, _ = case(name)
    std = sn.Standardizer.fit(X * 3 + 1)
    path = sn.save(tmp_path / "m", net, p, standardizer=std)
    m = sn.load(path)
    assert m.network.graph.names == net.graph.names and m.network.graph.calls == net.graph.calls
    assert m.network.graph.outputs == net.graph.outputs and m.network.graph.inputs == net.graph.inputs
    assert sn.dumps_spec(m.network) == sn.dumps_spec(net)
    assert sn.emit_source(m.network) == sn.emit_source(net)  # same network, same derivation
    assert list(m.params) == list(p)
    for key in p:
        assert np.array_equal(m.params[key], p[key])
    np.testing.assert_array_equal(m.predict_proba(X), sn.compile(net).forward(p, std.transform(X)))


def _tamper(src: Path, dst: Path, edit) -> Path:
    """A copy of the model file ``src`` whose JSON description ``edit`` changed."""
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    edit(meta["network"]["graph"])
    arrays["meta"] = np.array(json.dumps(meta))
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)
    return dst


def _set(index: int, key: str, value):
    def edit(graph: dict) -> None:
        graph["nodes"][index][key] = value
    return edit


def _drop(index: int, key: str):
    def edit(graph: dict) -> None:
        del graph["nodes"][index][key]
    return edit


def _append(node: dict):
    def edit(graph: dict) -> None:
        graph["nodes"].append(node)
    return edit


TAMPERED = {
    "an unknown layer kind": (_set(1, "layer", "os_system"), "node 2", "unknown layer kind"),
    "an unknown key": (_set(0, "code", "__import__('os')"), "node 1", "unknown key"),
    "a non-scalar field": (_set(1, "eps", {"srepr": "Symbol('x')"}), "node 2", "eps"),
    "a forward reference": (_set(0, "inputs", ["dense2"]), "node 1", "not an input or an earlier node"),
    "an id that is no name": (_set(0, "id", "a; rm"), "node 1", "not a plain name"),
    "a repeated id": (_set(2, "id", "dense1"), "node 3", "already defined"),
    "a width that does not fit": (_set(2, "in_features", 5), "node 3", "applied to a tensor of shape"),
    "a node reaching no output": (_append({"id": "dangling", "layer": "layernorm", "normalized_shape": 8,
                                           "inputs": ["dense1"]}), "graph", "do not reach an output"),
    "a reuse of nothing": (_append({"id": "again", "reuse": "nowhere", "inputs": ["dense1"]}), "node 6",
                           "not an earlier node"),
    "both layer and reuse": (_set(1, "reuse", "dense1"), "node 2", "either layer"),
    "neither layer nor reuse": (_drop(1, "layer"), "node 2", "either layer"),
    "a missing constructor argument": (_drop(0, "out_features"), "node 1", "out_features"),
    "a bad activation": (_set(0, "activation", {"name": "rm_rf", "user": False}), "node 1", "rm_rf"),
    "dropout on an output": (_set(-1, "dropout", 0.5), "graph", "dropout applies to hidden values only"),
}


@pytest.mark.parametrize("what", sorted(TAMPERED))
def test_a_tampered_graph_record_is_refused_where_it_is(tmp_path: Path, what: str) -> None:
    edit, where, message = TAMPERED[what]
    net, p, _, _ = case("resln")
    path = _tamper(sn.save(tmp_path / "m", net, p), tmp_path / "bad.npz", edit)
    with pytest.raises(ModelFormatError) as info:
        sn.load(path)
    assert where in str(info.value) and message in str(info.value), str(info.value)


# -- TOML specs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_a_graph_spec_round_trips(name: str) -> None:
    net = NETS[name][0]()
    text = sn.dumps_spec(net, train={"epochs": 3})
    spec = sn.loads_spec(text)
    again = spec.network
    assert again.graph.names == net.graph.names and again.graph.calls == net.graph.calls
    assert again.param_shapes() == net.param_shapes() and (again.l1, again.l2) == (net.l1, net.l2)
    assert sn.dumps_spec(again, train=spec.train) == text
    assert sn.emit_source(again) == sn.emit_source(net)


HAND_WRITTEN = '''
[network]
name = "skip"
loss = "cross_entropy"
outputs = ["head"]

[[input]]
name = "X"
shape = [4]

[[node]]
id = "h"
layer = "dense"
name = "encoder"
in_features = 4
out_features = 6
activation = { name = "leaky_relu", alpha = 0.1 }
inputs = ["X"]

[[node]]
id = "n"
layer = "layernorm"
normalized_shape = 6
inputs = ["h"]

[[node]]
id = "sum"
layer = "add"
inputs = ["h", "n"]

[[node]]
id = "head"
layer = "dense"
in_features = 6
out_features = 3
activation = "softmax"
inputs = ["sum"]
'''


def test_a_hand_written_graph_spec() -> None:
    net = sn.loads_spec(HAND_WRITTEN).network
    assert net.graph.names == ("encoder", "layernorm1", "add1", "dense1")
    assert list(net.param_shapes()) == ["encoder.weight", "encoder.bias", "layernorm1.weight",
                                        "layernorm1.bias", "dense1.weight", "dense1.bias"]
    assert dict(net.graph.layers[0].activation.params) == {"alpha": 0.1}
    x = sn.Input(4)
    h = sn.Dense(4, 6, sn.activation("leaky_relu", alpha=0.1), name="encoder")(x)
    same = sn.Network(inputs=x, outputs=sn.Dense(6, 3, "softmax")(h + sn.LayerNorm(6)(h)),
                      loss="cross_entropy", name="skip")
    assert sn.emit_source(net) == sn.emit_source(same)


def test_the_documented_graph_spec_reads_as_documented() -> None:
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "spec_format.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", doc[doc.index("**Layer graphs**"):], re.S).group(1)
    net = sn.loads_spec(example).network
    assert net.graph.names == ("dense1", "layernorm1", "dense2", "add1", "classifier")
    assert list(net.param_shapes())[-2:] == ["classifier.weight", "classifier.bias"]


BAD_SPECS = {
    "layers and nodes": (HAND_WRITTEN + '\n[[layer]]\nin = 4\nout = 3\n', "not both"),
    "no outputs": (HAND_WRITTEN.replace('outputs = ["head"]\n', ""), "missing key 'outputs'"),
    "an unknown key": (HAND_WRITTEN.replace('id = "n"\n', 'id = "n"\nshell = "ls"\n'), "node 2: unknown key"),
    "an unknown kind": (HAND_WRITTEN.replace('layer = "add"', 'layer = "conv9d"'), "node 3"),
    "a bad width": (HAND_WRITTEN.replace("normalized_shape = 6", "normalized_shape = 5"), "node 2"),
    "an undefined operand": (HAND_WRITTEN.replace('inputs = ["h", "n"]', 'inputs = ["h", "m"]'), "node 3"),
    "two outputs, one loss": (HAND_WRITTEN.replace('outputs = ["head"]', 'outputs = ["head", "h"]'), "one loss per output"),
    "two losses, one output": (HAND_WRITTEN.replace('loss = "cross_entropy"', 'loss = ["cross_entropy", "mse"]'), "2 losses for 1 output"),
    "dropout on an output": (HAND_WRITTEN.replace('id = "head"\n', 'id = "head"\ndropout = 0.5\n'),
                             "dropout applies to hidden values only"),
    "a Sequential key in a graph": (HAND_WRITTEN.replace('normalized_shape = 6', 'in = 6'), "node 2"),
}


@pytest.mark.parametrize("what", sorted(BAD_SPECS))
def test_a_bad_graph_spec_is_a_spec_parse_error(what: str) -> None:
    text, message = BAD_SPECS[what]
    with pytest.raises(SpecParseError, match=message):
        sn.loads_spec(text, "net.toml")


def test_a_graph_whose_layer_cannot_be_written_says_so() -> None:
    """A layer field that is neither a number, a string nor a boolean has no spec form."""
    from dataclasses import dataclass

    from symnn.layers import LAYERS, LayerNorm

    @dataclass(frozen=True)
    class Odd(LayerNorm):
        extra: object = None

        def __init__(self, d: int) -> None:
            super().__init__(d)
            object.__setattr__(self, "extra", object())

    x = sn.Input(3)
    net = sn.Network(inputs=x, outputs=sn.Dense(3, 2)(Odd(3)(x)), loss="mse")
    LAYERS["odd_test"] = Odd
    try:
        with pytest.raises(SpecError, match="extra"):
            sn.dumps_spec(net)
    finally:
        del LAYERS["odd_test"]


# -- the CLI: ship PyTorch weights of a graph as standalone C ---------------------------------------
@pytest.mark.needs_cc
def test_from_torch_ships_a_graph_as_c_that_computes_the_module(tmp_path: Path) -> None:
    from symnn.cli import main

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    module = _module("resln", seed=3)
    torch.save(module.state_dict(), tmp_path / "w.pt")
    (tmp_path / "net.toml").write_text(sn.dumps_spec(resln()))
    out = tmp_path / "out"
    assert main(["from-torch", str(tmp_path / "w.pt"), "--spec", str(tmp_path / "net.toml"),
                 "--out", str(out), "--name", "shipped"]) == 0
    assert sn.load_spec(out / "shipped.toml").network.graph.names == resln().graph.names
    r = subprocess.run(["make"], cwd=out, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    X = case("resln", n=3)[2]
    rows = "\n".join(",".join(repr(float(v)) for v in x) for x in X) + "\n"
    r = subprocess.run(["./shipped_demo"], cwd=out, input=rows, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = np.array([[float(v) for v in line.split()] for line in r.stdout.splitlines()[:len(X)]])
    with torch.no_grad():  # the weights in shipped_params.h, in the C's layout, are the module's
        np.testing.assert_allclose(got, module(torch.tensor(X)).numpy(), rtol=1e-12, atol=1e-15)
