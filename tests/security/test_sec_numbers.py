"""Issue 18, items 10 and 11: numbers from a file or a caller that used to ship wrong results.

* CSV class labels must be exact integers in range: ``symnn train`` truncated 2.9 to 2 where the
  Python API refused the same column; the emitted C trainer must refuse them too, by line.
* ``train_step`` must refuse an update that a finite gradient overflows to a non-finite parameter
  or optimiser state, on both backends, and leave ``theta`` and ``state`` as they were.
* Both backends refuse the same aliased buffers in ``train_step`` with the same error.
* Complex weights or inputs are refused (``DTypeError``) wherever they enter, never cast to real
  with only a ``ComplexWarning``.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.cli import main
from symnn.errors import DataError, DTypeError, LabelRangeError, NonFiniteError, SpecTypeError
from symnn.persist import Model, Standardizer, export_c_params

BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
NEEDS_MAKE = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")

# -- item 10: CSV labels -----------------------------------------------------------------------------
SPEC = """
[network]
name = "tri"
loss = "cross_entropy"

[[layer]]
in = 2
out = 3
activation = "softmax"

[train]
optimizer = "sgd"
epochs = 1
batch_size = 4
"""

#: the bad row sits on line 6, its 3rd data row: column names, a comment and a blank line come first
HEAD = "x1,x2,label\n# three classes\n\n0.5,1.0,0\n-1.0,2.0,2\n"


@pytest.mark.parametrize("label", ["2.9", "-0.9", "0.5", "1e300", "nan", "3", "-1"])
def test_sec_csv_label_must_be_an_exact_integer_class(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      label: str) -> None:
    (tmp_path / "tri.toml").write_text(SPEC)
    (tmp_path / "d.csv").write_text(HEAD + f"1.0,1.0,{label}\n2.0,0.0,1\n")
    out = tmp_path / "m.npz"
    code = main(["train", str(tmp_path / "tri.toml"), "--data", str(tmp_path / "d.csv"), "--backend", "numpy",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("symnn: error: ") and err.count("\n") == 1, err
    assert f"line 6: label {np.float64(label)} " in err and "[0, 3)" in err, err
    assert not out.exists()
    # the Python API refuses the same column through the same rule (its row counts from 0)
    X = np.array([[0.5, 1.0], [-1.0, 2.0], [1.0, 1.0], [2.0, 0.0]])
    y = np.array([0.0, 2.0, float(label), 1.0])
    with pytest.raises(LabelRangeError, match=r"at row 2 out of range \[0, 3\)"):
        sn.train(sn.Network([sn.Dense(2, 3, "softmax")], loss="cross_entropy"), X, y, epochs=1, backend="numpy")


def test_sec_csv_integer_labels_still_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exact integers written as floats (2.0, 1e0) are labels, as the Python API takes them."""
    (tmp_path / "tri.toml").write_text(SPEC)
    (tmp_path / "d.csv").write_text(HEAD + "1.0,1.0,2.0\n2.0,0.0,1e0\n")
    assert main(["train", str(tmp_path / "tri.toml"), "--data", str(tmp_path / "d.csv"),
                 "--backend", "numpy"]) == 0, capsys.readouterr().err
    assert "on 4 rows" in capsys.readouterr().out


@NEEDS_MAKE
@pytest.mark.needs_cc
def test_sec_c_trainer_refuses_a_bad_label_by_line(tmp_path: Path) -> None:
    net = sn.Network([sn.Dense(2, 3, "softmax")], loss="cross_entropy", name="tri")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sn.emit(net, tmp_path, backend="c", optimizer=sn.SGD(lr=0.1))
    built = subprocess.run(["make", "-C", str(tmp_path), "CFLAGS=-std=c99 -O0", "tri_train"],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    good = tmp_path / "good.csv"
    good.write_text(HEAD + "1.0,1.0,1\n2.0,0.0,1.0\n")
    ran = subprocess.run([str(tmp_path / "tri_train"), str(good), "2"], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    for label, shown in [("2.9", "2.9"), ("-0.9", "-0.9"), ("0.5", "0.5"), ("nan", "nan"), ("3", "3"), ("-1", "-1")]:
        bad = tmp_path / "bad.csv"
        bad.write_text(HEAD + f"1.0,1.0,{label}\n2.0,0.0,1\n")
        ran = subprocess.run([str(tmp_path / "tri_train"), str(bad), "2"], capture_output=True, text=True,
                             timeout=60)
        assert ran.returncode != 0 and ran.stdout == "", (label, ran.stdout)
        assert f"line 6: the label {shown} is not an integer" in ran.stderr, (label, ran.stderr)


# -- item 11a: an update that overflows ------------------------------------------------------------------
LIN = sn.Network([sn.Dense(1, 1, "identity")], loss="mse", name="lin")

#: (optimiser, dtype, data magnitude): the loss and gradient are finite, the update is not
OVERFLOWS = {
    "sgd-params": (lambda: sn.SGD(lr=100.0), "float64", 1e153),       # p - 100*2e306 = -inf
    "adam-state": (lambda: sn.Adam(lr=0.1), "float64", 1e153),        # v = 1e-3*g*g = inf, p finite
    "momentum-f32": (lambda: sn.Momentum(lr=1e3), "float32", 1e18),   # p - 1e3*2e36 past float32
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(OVERFLOWS))
def test_sec_train_step_refuses_an_overflowing_update_and_changes_nothing(backend: str, case: str) -> None:
    make_opt, dtype, big = OVERFLOWS[case]
    k = sn.compile(LIN, backend=backend, dtype=dtype, optimizer=make_opt())
    X = np.array([[big]], dtype=dtype)
    theta, state = np.zeros(k.n_params, dtype=dtype), k.init_state()
    with np.errstate(all="raise"):  # the loss and gradient themselves are finite
        loss, grads = k.loss_and_grad(k.unpack(theta), X, X)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    state[...] = 0.5  # a state that is not zero, to see that it stays
    theta0, state0 = theta.copy(), state.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused, not warned about
        with pytest.raises(NonFiniteError, match="nothing was updated"):
            k.train_step(theta, state, X, X, 1)
    assert theta.tobytes() == theta0.tobytes() and state.tobytes() == state0.tobytes()
    # the same step on ordinary data goes through and moves theta
    one = np.ones_like(X)
    assert np.isfinite(k.train_step(theta, state, one, 2 * one, 1))
    assert np.isfinite(theta).all() and np.isfinite(state).all() and (theta != theta0).any()


def test_sec_train_names_the_overflowing_update() -> None:
    X = np.array([[1e153]])
    with pytest.raises(NonFiniteError, match=r"epoch 1, step 1: the update"):
        sn.train(LIN, X, X, optimizer=sn.SGD(lr=100.0), epochs=1, backend="numpy", params={"W1": [[0.0]], "b1": [0.0]})


# -- item 11b: aliasing --------------------------------------------------------------------------------
def _alias_cases(k):
    """(description, theta, state, X, Y): each pair of buffers overlaps where C says it must not."""
    n = k.n_params
    buf = np.zeros((2, n))
    yield "theta is a row of state", buf[1], buf, np.ones((1, 1)), np.ones((1, 1))
    theta, state = np.zeros(n), k.init_state()
    yield "X is a view of theta", theta, state, theta[:1].reshape(1, 1), np.ones((1, 1))
    theta, state = np.zeros(n), k.init_state()
    yield "Y is a view of state", theta, state, np.ones((1, 1)), state[1, :1].reshape(1, 1)
    theta, state = np.zeros(n), k.init_state()
    yield "X is a strided view of state", theta, state, state[:, :1], np.ones((2, 1))


@pytest.mark.needs_cc
def test_sec_train_step_aliasing_is_refused_alike_on_both_backends() -> None:
    kernels = [sn.compile(LIN, backend=b, optimizer=sn.Adam(lr=0.1)) for b in ("numpy", "c")]
    errors = []
    for k in kernels:
        seen = []
        for what, theta, state, X, Y in _alias_cases(k):
            before = (theta.copy(), state.copy())
            with pytest.raises(DataError) as info:
                k.train_step(theta, state, X, Y, 1)
            assert type(info.value) is DataError and "SYMNN_ERR_ALIAS" in str(info.value), what
            assert theta.tobytes() == before[0].tobytes() and state.tobytes() == before[1].tobytes(), what
            seen.append(str(info.value))
        errors.append(seen)
    assert errors[0] == errors[1]
    # copies of the same memory are fine on both
    for k in kernels:
        theta, state = np.zeros(k.n_params), k.init_state()
        assert np.isfinite(k.train_step(theta, state, theta[:1].reshape(1, 1).copy(), np.ones((1, 1)), 1))


# -- item 11c: complex numbers -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_sec_kernels_refuse_complex_parameters_inputs_and_targets(backend: str) -> None:
    net = sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 3, "softmax")], loss="cross_entropy")
    k = sn.compile(net, backend=backend, optimizer=sn.SGD(lr=0.1))
    p, X, y = net.init_params(seed=0), np.ones((2, 2)), np.array([0, 2])
    calls = {  # what the message must say -> the call
        "parameter W1 has dtype complex128": lambda: k.forward({**p, "W1": p["W1"] + 1e-3j}, X),
        "X has dtype complex128": lambda: k.loss(p, X + 0j, y),
        "Y has dtype complex128": lambda: k.loss(p, X, y + 0j),
        "theta must have dtype float64": lambda: k.train_step(k.pack(p) + 0j, k.init_state(), X, y, 1),
        "flat parameters has dtype complex128": lambda: k.unpack(k.pack(p) + 1j),
    }
    for message, call in calls.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            with pytest.raises(DTypeError, match=message):
                call()


def test_sec_complex_weights_are_refused_where_they_enter(tmp_path: Path) -> None:
    net = sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 1, "sigmoid")], loss="bce", name="cplx")
    p = net.init_params(seed=0)
    bad = {**p, "W2": p["W2"] + 1e-3j}
    std = Standardizer(np.zeros(2), np.ones(2))
    calls = [  # (what the message must say, the call)
        ("parameter W2 has dtype complex128", lambda: sn.save(tmp_path / "m.npz", net, bad)),
        ("parameter W2 has dtype complex128", lambda: export_c_params(tmp_path, net, bad)),
        ("X has dtype complex128", lambda: Standardizer.fit(np.ones((3, 2)) + 1j)),
        ("X has dtype complex128", lambda: Model(net, p, std).predict(np.ones((2, 2)) + 1j)),
    ]
    for message, call in calls:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            with pytest.raises(DTypeError, match=message):
                call()
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
def test_sec_from_torch_refuses_complex_weights() -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "complex modules are a new feature"
        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh()).to(torch.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        with pytest.raises(DTypeError, match=r"complex"):
            sn.from_torch(model)


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx not installed")
def test_sec_from_onnx_refuses_complex_initializers() -> None:
    from onnx import TensorProto, helper, numpy_helper

    init = [numpy_helper.from_array(np.ones((3, 2), np.complex64), "W"),
            numpy_helper.from_array(np.zeros(3, np.complex64), "b")]
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.COMPLEX64, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.COMPLEX64, [1, 3])], init)
    with warnings.catch_warnings():  # the importer's element-type check, or the real-array gate behind it
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        with pytest.raises((DTypeError, SpecTypeError), match=r"complex|element type 14"):
            sn.from_onnx(helper.make_model(graph))
