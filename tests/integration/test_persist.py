"""Save/load a trained model in one file; trained weights exported as a C header and run in C."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symnn as sn
from symnn.errors import ModelFormatError
from tests.catalogue import HUBER

z = sp.Symbol("z")


def _net() -> sn.Network:
    return sn.Network([sn.Dense(3, 5, sn.activation("leaky_relu", alpha=0.2)),
                       sn.Dense(5, 4, sn.Activation("sw", z / (1 + sp.exp(-z)), var=z)),
                       sn.Dense(4, 2, "softmax")], loss="cross_entropy", l2=0.01, name="saved")


@pytest.mark.parametrize("net", [_net(), sn.Network([sn.Dense(3, 2, "tanh")], loss=HUBER, l1=0.1, name="hub")])
def test_round_trip_is_exact(tmp_path: Path, net: sn.Network) -> None:
    p = net.init_params(seed=0)
    X = np.random.default_rng(0).normal(size=(6, 3)) * 4 + 2
    std = sn.Standardizer.fit(X)
    path = sn.save(tmp_path / "model", net, p, standardizer=std, info={"note": "x"})
    assert path.name == "model.npz" and [f.name for f in tmp_path.iterdir()] == ["model.npz"]
    m = sn.load(path)
    assert sn.emit_source(m.network) == sn.emit_source(net)  # same network, same derivation
    for k in p:
        assert np.array_equal(m.params[k], p[k])
    np.testing.assert_array_equal(m.standardizer.mean, std.mean)
    assert m.info == {"note": "x"}
    out = sn.compile(net).forward(p, std.transform(X))
    np.testing.assert_array_equal(m.predict_proba(X), out)
    # predict as scikit-learn's: labels for a classifier, the output for a regression
    np.testing.assert_array_equal(m.predict(X), out.argmax(axis=1) if net.loss.name == "cross_entropy" else out)


def test_train_result_saves_and_predicts_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3)) * 10 + 5
    y = (X[:, 0] > 5).astype(int)
    res = sn.train(_net(), X, y, optimizer="adam", epochs=5, standardize=True, seed=1)
    m = sn.load(res.save(tmp_path / "trained.npz"))
    np.testing.assert_array_equal(m.predict_proba(X), res.predict_proba(X))
    labels = res.predict(X)
    assert labels.shape == (len(X),) and labels.dtype.kind == "i"
    np.testing.assert_array_equal(m.predict(X), labels)
    assert res.accuracy(X, y) == np.mean(labels == y)
    assert m.info["optimizer"].startswith("adam(")


def test_predict_gives_bce_classes_as_zero_one(tmp_path: Path) -> None:
    net = sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 2, "sigmoid")], loss="bce", name="two")
    p = net.init_params(seed=3)
    X = np.random.default_rng(0).normal(size=(7, 2))
    m = sn.load(sn.save(tmp_path / "bce", net, p))
    proba = m.predict_proba(X)
    np.testing.assert_array_equal(m.predict(X), (proba > 0.5).astype(int))


def test_not_a_model_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", a=np.zeros(2))
    with pytest.raises(ModelFormatError, match="not a symnn model"):
        sn.load(tmp_path / "x.npz")


def test_constant_features_standardise_to_zero() -> None:
    X = np.array([[1.0, 3.0], [2.0, 3.0]])
    out = sn.Standardizer.fit(X).transform(X)
    assert np.array_equal(out[:, 1], [0.0, 0.0]) and np.allclose(out[:, 0], [-1.0, 1.0])


@pytest.mark.needs_cc
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exported_header_runs_in_plain_c(tmp_path: Path, dtype: str) -> None:
    net = _net()
    p = net.init_params(seed=3, dtype=dtype)
    X = np.random.default_rng(3).normal(size=(4, 3)) * 3 + 1
    std = sn.Standardizer.fit(X)
    sn.emit(net, tmp_path, backend="c", dtype=dtype)
    header = sn.export_c_params(tmp_path, net, p, dtype=dtype, standardizer=std)
    assert header.name == "saved_params.h"
    rows = ", ".join(repr(float(v)) for v in X.ravel())
    (tmp_path / "run.c").write_text(f"""#include <stdio.h>
#include <stdlib.h>
#include "saved_params.h"
int main(void) {{
    const double raw[] = {{ {rows} }};
    saved_real x[4*SAVED_N_IN], y[4*SAVED_N_OUT], *w;
    size_t wl = 0;
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < SAVED_N_IN; ++j)
            x[i*SAVED_N_IN + j] = (saved_real)((raw[i*SAVED_N_IN + j] - (double)saved_input_mean[j]) / (double)saved_input_std[j]);
    if (saved_work_size(4, &wl) != SYMNN_OK || (w = malloc(wl*sizeof *w)) == NULL) return 1;
    if (saved_forward(saved_trained_params, x, 4, y, w, wl) != SYMNN_OK) return 2;
    for (int e = 0; e < 4*SAVED_N_OUT; ++e) printf("%.17g\\n", (double)y[e]);
    free(w);
    return 0;
}}
""")
    cc = shutil.which("gcc") or "cc"
    exe = tmp_path / "run"
    built = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-o", str(exe),
                            str(tmp_path / "run.c"), str(tmp_path / "saved.c"), "-lm"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    got = np.array([float(v) for v in out.split()]).reshape(4, 2)
    ref = sn.compile(net, dtype=dtype).forward(p, std.transform(X).astype(dtype))
    np.testing.assert_allclose(got, ref, rtol=1e-12 if dtype == "float64" else 1e-5, atol=1e-7)


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "Symbol('x').__class__",
                                  "Add(Symbol('x'), (lambda: 1)())", "open('f')", "Symbol(x)"])
def test_S18_crafted_expressions_are_refused_not_run(text: str) -> None:
    from symnn.persist import parse_srepr

    with pytest.raises(ModelFormatError):
        parse_srepr(text)


def test_srepr_round_trip_without_eval() -> None:
    from symnn.functions import Sigmoid
    from symnn.persist import parse_srepr

    x = sp.Symbol("x", real=True)
    for e in [sp.Piecewise((x, x > 0), (sp.exp(x) - 1, True)), sp.Max(0, x), Sigmoid(x) * sp.Rational(1, 3),
              sp.erf(sp.sqrt(2) * x / 2) + sp.Float("0.1", 17), sp.Abs(x - sp.Rational(1, 3)) <= 1, sp.pi * x]:
        assert parse_srepr(sp.srepr(e)) == e
