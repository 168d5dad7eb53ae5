"""from_torch: a PyTorch Sequential becomes a Network whose kernels reproduce torch exactly."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import symnn as sn
from symnn.errors import SpecError, SpecTypeError

NEEDS_TORCH = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]


def _model(kind: str):
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    if kind == "classifier":
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3),
                             nn.Softmax(dim=-1)).double()
    if kind == "binary":
        return nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1), nn.Sigmoid()).double()
    return nn.Sequential(nn.Linear(3, 5), nn.GELU(), nn.Linear(5, 2)).double()


@NEEDS_TORCH
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["classifier", "binary", "regression"])
def test_from_torch_reproduces_forward_and_gradients(kind: str, backend: str) -> None:
    import torch

    model = _model(kind)
    net, params = sn.from_torch(model, name=f"t_{kind}")
    assert net.loss.name == {"classifier": "cross_entropy", "binary": "bce", "regression": "mse"}[kind]
    k = sn.compile(net, backend=backend)
    X = np.random.default_rng(0).normal(size=(7, net.n_in))
    out = model(torch.tensor(X)).detach().numpy()
    np.testing.assert_allclose(k.forward(params, X), out, rtol=1e-12, atol=1e-14)
    # gradients against torch autograd through the same module
    if kind == "classifier":
        y = np.arange(7) % 3
        logits = model[:-1](torch.tensor(X))
        tl = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    elif kind == "binary":
        y = np.random.default_rng(1).uniform(size=(7, 1))
        tl = torch.nn.functional.binary_cross_entropy(model(torch.tensor(X)), torch.tensor(y))
    else:
        y = np.random.default_rng(1).normal(size=(7, 2))
        tl = torch.nn.functional.mse_loss(model(torch.tensor(X)), torch.tensor(y))
    model.zero_grad()
    tl.backward()
    loss, grads = k.loss_and_grad(params, X, y)
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    for i, lin in enumerate(linears, 1):
        np.testing.assert_allclose(grads[f"W{i}"], lin.weight.grad.numpy(), rtol=1e-10, atol=1e-13)


@NEEDS_TORCH
def test_state_dict_round_trip() -> None:
    model = _model("classifier")
    net, params = sn.from_torch(model)
    model.load_state_dict(sn.to_state_dict(net, {k: v * 2 for k, v in params.items()}))
    net2, params2 = sn.from_torch(model)
    assert net2 == net and all(np.array_equal(params2[k], params[k] * 2) for k in params)


@NEEDS_TORCH
def test_unsupported_layers_are_named() -> None:
    import torch

    nn = torch.nn
    with pytest.raises(SpecTypeError, match="layer 1 \\(Dropout\\)"):
        sn.from_torch(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)))
    with pytest.raises(SpecError, match="must follow a Linear"):
        sn.from_torch(nn.Sequential(nn.ReLU(), nn.Linear(2, 2)))
    with pytest.raises(SpecTypeError, match="approximate"):
        sn.from_torch(nn.Sequential(nn.Linear(2, 2), nn.GELU(approximate="tanh")))
    with pytest.raises(SpecTypeError, match="nn.Sequential"):
        sn.from_torch(nn.Linear(2, 2))


@NEEDS_TORCH
@pytest.mark.needs_cc
def test_cli_ships_a_torch_model_as_c(tmp_path) -> None:
    import shutil
    import subprocess

    import torch

    from symnn.cli import main

    model = _model("classifier")
    torch.save(model, tmp_path / "model.pt")
    assert main(["from-torch", str(tmp_path / "model.pt"), "--out", str(tmp_path / "c"), "--name", "clf"]) == 0
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["Makefile", "clf.c", "clf.h", "clf.toml", "clf_params.h", "main.c"]
    # a C program using the exported weights gives torch's outputs
    X = np.random.default_rng(2).normal(size=(3, 6))
    rows = ", ".join(repr(float(v)) for v in X.ravel())
    (tmp_path / "c" / "run.c").write_text(f"""#include <stdio.h>
#include <stdlib.h>
#include "clf_params.h"
int main(void) {{
    const clf_real x[] = {{ {rows} }};
    clf_real y[3*CLF_N_OUT], *w; size_t wl = 0;
    if (clf_work_size(3, &wl) != SYMNN_OK || (w = malloc(wl*sizeof *w)) == NULL) return 1;
    if (clf_forward(clf_trained_params, x, 3, y, w, wl) != SYMNN_OK) return 2;
    for (int e = 0; e < 3*CLF_N_OUT; ++e) printf("%.17g\\n", y[e]);
    free(w); return 0;
}}
""")
    cc = shutil.which("gcc") or "cc"
    built = subprocess.run([cc, "-std=c99", "-O2", "-o", str(tmp_path / "run"), str(tmp_path / "c" / "run.c"),
                            str(tmp_path / "c" / "clf.c"), "-lm"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    got = np.array([float(v) for v in subprocess.run([str(tmp_path / "run")], capture_output=True, text=True,
                                                      check=True).stdout.split()]).reshape(3, 3)
    np.testing.assert_allclose(got, model(torch.tensor(X)).detach().numpy(), rtol=1e-13, atol=1e-15)


def _onnx_mlp(kind: str):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(5, 8)), rng.normal(size=8)      # MatMul weights are (in, out)
    w2, b2 = rng.normal(size=(3, 8)), rng.normal(size=3)      # Gemm transB=1: (out, in)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    act = helper.make_node("LeakyRelu", ["h"], ["a"], alpha=0.2) if kind == "leaky" else helper.make_node("Tanh", ["h"], ["a"])
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"]), helper.make_node("Add", ["m", "b1"], ["h"]), act,
             helper.make_node("Gemm", ["a", "w2", "b2"], ["z"], transB=1),
             helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["tanh", "leaky"])
def test_from_onnx_matches_the_onnx_reference(tmp_path, kind: str, backend: str) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    model = _onnx_mlp(kind)
    onnx.save(model, tmp_path / "m.onnx")
    net, params = sn.from_onnx(tmp_path / "m.onnx", name=f"o_{kind}")
    assert net.loss.name == "cross_entropy" and [layer.out_features for layer in net.layers] == [8, 3]
    X = np.random.default_rng(1).normal(size=(6, 5))
    ref = ReferenceEvaluator(model).run(None, {"x": X})[0]
    np.testing.assert_allclose(sn.compile(net, backend=backend).forward(params, X), ref, rtol=1e-12, atol=1e-15)


def test_from_onnx_refuses_what_it_cannot_represent() -> None:
    pytest.importorskip("onnx")
    from onnx import helper

    model = _onnx_mlp("tanh")
    model.graph.node[2].op_type = "HardSigmoid"
    with pytest.raises(SpecTypeError, match="HardSigmoid"):
        sn.from_onnx(model)
    model = _onnx_mlp("tanh")
    model.graph.node[3].attribute.append(helper.make_attribute("alpha", 2.0))
    with pytest.raises(SpecTypeError, match="alpha=1"):
        sn.from_onnx(model)


def test_cli_from_onnx_writes_c_weights_and_spec(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    from symnn.cli import main
    from symnn.spec_toml import load_spec

    onnx.save(_onnx_mlp("leaky"), tmp_path / "m.onnx")
    assert main(["from-onnx", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "c"), "--name", "om"]) == 0
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["Makefile", "main.c", "om.c", "om.h", "om.toml", "om_params.h"]
    net = load_spec(tmp_path / "c" / "om.toml").network
    assert net == sn.from_onnx(tmp_path / "m.onnx", name="om")[0]
