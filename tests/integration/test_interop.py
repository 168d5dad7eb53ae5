"""from_torch / from_onnx: a PyTorch Sequential or an ONNX MLP becomes a Network whose kernels
reproduce torch and ONNX's reference evaluator."""

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
    with pytest.raises(SpecTypeError, match="layer 1 \\(BatchNorm3d\\)"):  # BatchNorm1d/2d are read
        sn.from_torch(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm3d(2)))
    with pytest.raises(SpecError, match="layer 1 \\(Dropout\\) follows the output layer"):
        sn.from_torch(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)))
    with pytest.raises(SpecError, match="no dropout on the inputs"):
        sn.from_torch(nn.Sequential(nn.Dropout(0.1), nn.Linear(2, 2)))
    with pytest.raises(SpecError, match="a Dropout goes after the activation"):
        sn.from_torch(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1), nn.Tanh(), nn.Linear(2, 2)))
    with pytest.raises(SpecError, match="must follow a Linear"):
        sn.from_torch(nn.Sequential(nn.ReLU(), nn.Linear(2, 2)))
    with pytest.raises(SpecTypeError, match="approximate"):
        sn.from_torch(nn.Sequential(nn.Linear(2, 2), nn.GELU(approximate="tanh")))
    with pytest.raises(SpecTypeError, match="nn.Sequential"):
        sn.from_torch(nn.Linear(2, 2))


def _dropout_model():
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    # tanh then dropout: dropout(tanh(z)) != tanh(dropout(z)), so the mask's place is tested
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 3), nn.Softmax(dim=-1)).double()


@NEEDS_TORCH
@pytest.mark.parametrize("backend", BACKENDS)
def test_from_torch_dropout_is_identity_at_inference(backend: str) -> None:
    import torch

    model = _dropout_model()
    net, params = sn.from_torch(model, name="t_drop")
    assert [layer.dropout for layer in net.layers] == [0.2, 0.0]
    X = np.random.default_rng(0).normal(size=(7, 4))
    out = model.eval()(torch.tensor(X)).detach().numpy()
    np.testing.assert_allclose(sn.compile(net, backend=backend).forward(params, X), out, rtol=1e-12, atol=1e-14)
    model.load_state_dict(sn.to_state_dict(net, {k: v * 2 for k, v in params.items()}))  # keys skip the Dropout
    assert np.array_equal(model[3].weight.detach().numpy(), params["W2"] * 2)


@NEEDS_TORCH
def test_from_torch_dropout_trains_as_torch_dropout() -> None:
    """The training gradient with a given keep-mask equals torch's with the same mask, applied
    after the Tanh and scaled by 1/(1 - p) (what nn.Dropout does in train mode)."""
    import torch

    model = _dropout_model()
    net, params = sn.from_torch(model, name="t_drop")
    mod = sn.compile(net, backend="numpy", optimizer="sgd").module
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(6, 4)), np.arange(6) % 3
    mask = (rng.uniform(size=(6, 8)) > 0.2).astype(np.float64)
    loss, grads = mod._loss_and_grad_train(params, X, np.eye(3)[y], [mask])
    h = model[1](model[0](torch.tensor(X))) * torch.tensor(mask) / 0.8
    tl = torch.nn.functional.cross_entropy(model[3](h), torch.tensor(y))
    model.zero_grad()
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    for i, lin in ((1, model[0]), (2, model[3])):
        np.testing.assert_allclose(grads[f"W{i}"], lin.weight.grad.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(grads[f"b{i}"], lin.bias.grad.numpy(), rtol=1e-10, atol=1e-13)


@NEEDS_TORCH
@pytest.mark.needs_cc
def test_cli_ships_a_torch_model_as_c(tmp_path) -> None:
    import shutil
    import subprocess

    import torch

    from symnn.cli import main

    model = _model("classifier")
    # the default, code-free path: the weights as a state_dict, the network as a spec
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "net.toml").write_text(sn.dumps_spec(sn.from_torch(model, name="clf")[0]))
    assert main(["from-torch", str(tmp_path / "weights.pt"), "--spec", str(tmp_path / "net.toml"),
                 "--out", str(tmp_path / "c")]) == 0
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


def _onnx_gemm(c_shape: tuple[int, ...] | None, act: str = "Sigmoid", elem: str = "DOUBLE", rows: int = 4):
    """x (rows, 3) -> Gemm(transB=1) with bias C of ``c_shape`` (None: no C) -> ``act``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    dtype = np.float64 if elem == "DOUBLE" else np.float32
    w = rng.normal(size=(2, 3)).astype(dtype)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w"]
    if c_shape is not None:
        c = np.broadcast_to(rng.normal(size=c_shape[-1:] if c_shape else ()), c_shape).astype(dtype)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(c), "c"))
        inputs.append("c")
    elem_type = getattr(TensorProto, elem)
    nodes = [helper.make_node("Gemm", inputs, ["z"], transB=1), helper.make_node(act, ["z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem_type, [rows, 3])],
                              [helper.make_tensor_value_info("y", elem_type, [rows, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("c_shape", [(2,), (1, 2), (4, 2), (4, 1), (1, 1), (1,), (), None],
                         ids=lambda s: "none" if s is None else str(s))
def test_from_onnx_gemm_bias_of_every_broadcastable_shape(c_shape) -> None:
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    model = _onnx_gemm(c_shape)
    net, params = sn.from_onnx(model)
    assert params["b1"].shape == (2,)
    X = np.random.default_rng(1).normal(size=(4, 3))
    ref = ReferenceEvaluator(model).run(None, {"x": X})[0]
    np.testing.assert_allclose(sn.compile(net).forward(params, X), ref, rtol=1e-13, atol=1e-15)


def test_from_onnx_refuses_a_bias_that_varies_by_row() -> None:
    pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = _onnx_gemm((4, 2))
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.arange(8.0).reshape(4, 2), "c"))
    with pytest.raises(SpecTypeError, match=r"bias of shape \(4, 2\) differs between rows"):
        sn.from_onnx(model)
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.ones((1, 3)), "c"))
    with pytest.raises(SpecError, match=r"bias of shape \(1, 3\) does not broadcast to \(M, 2\)"):
        sn.from_onnx(model)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("elem", ["DOUBLE", "FLOAT"])
def test_from_onnx_leaky_relu_default_alpha_is_float32(elem: str, backend: str) -> None:
    """Without ``alpha``, LeakyRelu's slope is ONNX's float32 default 0.01f, bit for bit what the
    reference evaluator multiplies by (0.01 as a double is 1.27e-9 off: the float64 case)."""
    pytest.importorskip("onnx")
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    dtype = {"DOUBLE": "float64", "FLOAT": "float32"}[elem]
    model = _onnx_gemm(None, act="LeakyRelu", elem=elem, rows=6)
    eye = np.eye(3, dtype=dtype)[:2]  # z = x[:, :2] exactly: the Gemm adds only zeros
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(eye, "w"))
    net, params = sn.from_onnx(model, dtype=dtype)
    X = np.random.default_rng(2).normal(size=(6, 3)).astype(dtype)
    ref = ReferenceEvaluator(model).run(None, {"x": X})[0]
    got = sn.compile(net, backend=backend, dtype=dtype).forward(params, X)
    assert (X[:, :2] < 0).sum() >= 3
    np.testing.assert_array_equal(got, ref)
    assert net.layers[0].activation.params == (("alpha", float(np.float32(0.01))),)


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
