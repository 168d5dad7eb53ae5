"""Frozen parameters (issue 22, training on the device): ``sn.Network(..., frozen=[...])`` names
parameters or layers that training leaves as they are. The chain rule derives no gradient for
them, so the backward graph is pruned (no weight gradient of a frozen convolution, no cotangent
into a frozen first block) and the work buffer shrinks; the kernels return zeros there; the
emitted train step of both backends updates only the other ranges, with any weight decay. Checked
against PyTorch with ``requires_grad=False``, which ``sn.from_torch`` also reads."""

from __future__ import annotations

import numpy as np
import pytest

import symnn as sn
from symnn import ir
from symnn.driver import derive_program
from symnn.errors import SpecError, SpecTypeError
from symnn.lower import plan_kernel
from symnn.memory import work_table
from symnn.persist import load, save
from symnn.spec_toml import dumps_spec, loads_spec

torch = pytest.importorskip("torch")
F = torch.nn.functional
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]


def cnn(frozen: tuple = ()) -> sn.Network:
    x = sn.Input(1, 6, 6)
    h = sn.MaxPool2d(2)(sn.Conv2d(1, 3, 3, padding=1, activation="relu", name="conv1")(x))
    h = sn.Conv2d(3, 4, 3, padding=1, activation="tanh", name="conv2")(h)
    y = sn.Dense(36, 3, activation="softmax", name="fc")(sn.Flatten()(h))
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", l2=1e-2, name="frz",
                      frozen=frozen if isinstance(frozen, str) else list(frozen))


def data(n: int = 5):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 1, 6, 6)), rng.integers(0, 3, n)


def test_names_resolve_to_parameters_in_their_order() -> None:
    net = cnn(("fc.bias", "conv1"))
    assert net.frozen == ("conv1.weight", "conv1.bias", "fc.bias")
    assert net.trainable == ("conv2.weight", "conv2.bias", "fc.weight")
    seq = sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 1)], loss="mse", frozen=["W1"])
    assert seq.frozen == ("W1",) and seq.trainable == ("b1", "W2", "b2")


@pytest.mark.parametrize("frozen, error", [(["conv9"], SpecError), (["conv1.weights"], SpecError),
                                           ("conv1", SpecTypeError), ([3], SpecTypeError),
                                           (["conv1", "conv2", "fc"], SpecError)])
def test_bad_names_and_freezing_everything_are_refused(frozen, error) -> None:
    with pytest.raises(error):
        cnn(frozen)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_frozen_gradients_are_zero_and_the_others_unchanged(backend: str, dtype: str) -> None:
    X, Y = data()
    params = {k: v.astype(dtype) for k, v in cnn().init_params(seed=1).items()}
    full = sn.compile(cnn(), backend=backend, dtype=dtype)
    part = sn.compile(cnn(("conv1.weight", "fc.bias")), backend=backend, dtype=dtype)
    L0, g0 = full.loss_and_grad(params, X.astype(dtype), Y)
    L1, g1 = part.loss_and_grad(params, X.astype(dtype), Y)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert abs(L0 - L1) <= tol * abs(L0)
    for name, g in g1.items():
        if name in ("conv1.weight", "fc.bias"):
            assert g.shape == params[name].shape and not np.any(g)
        else:
            np.testing.assert_allclose(g, g0[name], rtol=0, atol=tol * np.abs(g0[name]).max())


def test_the_backward_graph_is_pruned() -> None:
    """Freezing the first block leaves no transposed convolution into it and no weight gradient
    of it, and less work for the loss-and-gradient kernel."""
    def ops(net: sn.Network) -> list[ir.Op]:
        return [st.kind for st in plan_kernel(derive_program(net).program, "loss_and_grad").stmts]

    full, part = ops(cnn()), ops(cnn(("conv1",)))
    assert full.count(ir.Op.CONV_GRAD_WEIGHT) == 2 and part.count(ir.Op.CONV_GRAD_WEIGHT) == 1
    assert full.count(ir.Op.CONV_GRAD_INPUT) == 1 and part.count(ir.Op.CONV_GRAD_INPUT) == 0
    assert ir.Op.MAX_POOL_GRAD in full and ir.Op.MAX_POOL_GRAD not in part
    work = {kind: {r.kernel: r.work for r in work_table(net, n=64)} for kind, net in
            (("full", cnn()), ("part", cnn(("conv1",))))}
    assert work["part"]["loss_and_grad"] < work["full"]["loss_and_grad"]


def test_the_derivation_has_no_gradient_of_a_frozen_parameter() -> None:
    net = cnn(("conv1",))
    d = sn.derive(net)
    ids = {eq.id for eq in d.equations}
    assert "dL_dconv2_weight" in ids and "dL_dconv1_weight" not in ids and "dL_dconv1_bias" not in ids
    X, Y = data()
    params = net.init_params(seed=2)
    L, g = d.evaluate(params, X, Y)
    L2, g2 = sn.compile(net, backend="numpy").loss_and_grad(params, X, Y)
    assert abs(L - L2) < 1e-12 and all(np.allclose(g[k], g2[k], atol=1e-12) for k in g)
    report = sn.gradcheck(sn.compile(net, backend="numpy"), params, X, Y)
    assert report.passed and report.n_checked > 0


def _torch_steps(params: dict, X: np.ndarray, Y: np.ndarray, frozen: set[str], steps: int) -> dict:
    """The same network in torch, frozen parameters with requires_grad=False, SGD momentum with
    weight decay over every parameter (torch skips those without a gradient)."""
    tp = {k: torch.tensor(v, requires_grad=k not in frozen) for k, v in params.items()}
    opt = torch.optim.SGD(list(tp.values()), lr=0.1, momentum=0.9, weight_decay=0.05)
    tx, ty = torch.tensor(X), torch.tensor(Y)
    for _ in range(steps):
        opt.zero_grad()
        h = F.max_pool2d(F.relu(F.conv2d(tx, tp["conv1.weight"], tp["conv1.bias"], padding=1)), 2)
        h = torch.tanh(F.conv2d(h, tp["conv2.weight"], tp["conv2.bias"], padding=1))
        z = F.linear(h.flatten(1), tp["fc.weight"], tp["fc.bias"])
        loss = F.cross_entropy(z, ty) + 0.005 * sum((tp[k] ** 2).sum() for k in tp
                                                    if k.endswith("weight") and k not in frozen)
        loss.backward()
        opt.step()
    return {k: v.detach().numpy() for k, v in tp.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_train_step_leaves_frozen_parameters_and_matches_torch(backend: str) -> None:
    """Three steps of SGD with momentum and weight decay: the frozen parameters keep their
    bits, the others follow torch's optimiser with requires_grad=False on the frozen ones."""
    frozen = {"conv1.weight", "conv1.bias", "fc.bias"}
    net = cnn(tuple(frozen))
    X, Y = data()
    params = net.init_params(seed=3)
    k = sn.compile(net, backend=backend, optimizer=sn.Momentum(lr=0.1, momentum=0.9, weight_decay=0.05))
    theta, state = k.pack(params), k.init_state()
    for step in (1, 2, 3):
        k.train_step(theta, state, X, Y, step)
    got = k.unpack(theta)
    want = _torch_steps(params, X, Y, frozen, 3)
    for name in params:
        if name in frozen:
            assert np.array_equal(got[name], params[name]), name
        else:
            assert not np.array_equal(got[name], params[name])
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-12)


def test_specs_and_model_files_keep_frozen(tmp_path) -> None:
    net = cnn(("conv1", "fc.bias"))
    again = loads_spec(dumps_spec(net)).network
    assert again.frozen == net.frozen and again == net
    seq = sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 1)], loss="mse", frozen=["b2"], name="s")
    assert loads_spec(dumps_spec(seq)).network.frozen == ("b2",)
    path = save(tmp_path / "m.npz", net, net.init_params(seed=0))
    assert load(path).network.frozen == net.frozen


def test_from_torch_freezes_what_the_module_does_not_train() -> None:
    seq = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2, bias=False))
    seq[0].weight.requires_grad_(False)
    net, params = sn.from_torch(seq)
    assert net.frozen == ("W1", "b2")  # the missing bias stays at zero
    cnn_module = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                     torch.nn.Linear(72, 3))
    cnn_module[0].requires_grad_(False)
    net, params = sn.from_torch(cnn_module, input_shape=(1, 6, 6))
    assert net.frozen == ("_0.weight", "_0.bias")
    cnn_module.requires_grad_(False)  # nothing trainable (inference): imported as trainable
    assert sn.from_torch(cnn_module, input_shape=(1, 6, 6))[0].frozen == ()


def test_freezing_changes_the_spec_hash_only_when_used() -> None:
    from symnn.emit import spec_hash

    assert spec_hash(cnn(("conv1",)), "float64") != spec_hash(cnn(), "float64")
    assert spec_hash(cnn(("conv1",)), "float64") != spec_hash(cnn(("fc",)), "float64")
