"""Layer graphs (issue 20): networks built by calling layers on tensors, end to end.

Four small graphs cover what the Sequential form cannot say: a residual MLP with LayerNorm
(softmax + cross-entropy), the same shape with a sigmoid output, BCE and L1 + L2, a LayerNorm
without its affine parameters (and a non-default eps), and one Dense layer called twice (shared
weights). Each is compiled by both backends in both dtypes and checked against PyTorch autograd
(written out by hand per network, so a wrong wiring in the tracer shows), numeric
differentiation (``sn.gradcheck``) and the printed derivation (``Derivation.evaluate``); the
residual one is trained with an emitted optimiser, emitted as standalone C (built with its own
Makefile and run) and NumPy (imported with symnn blocked), and its LaTeX goes through pdflatex.

The C kernels of one dtype are built in one compiler run (``sn.compile_many``); the residual
network's C kernel carries the optimiser (``train_step``) and serves both the gradient checks
and the training test, so these checks build four C modules (the name-collision tests at the
end build two more).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn.errors import LayerSizeMismatchError, SpecError, SpecTypeError, SymnnError, UntrustedInputError
from tests import latex_checks

torch = pytest.importorskip("torch")

from tests.layer_graphs import (NAMES, NETS, TORCH_MODULES, case, rel, resln, run_emitted_numpy,  # noqa: E402
                                 shared, torch_loss_and_grad)

ROOT = Path(__file__).resolve().parents[2]
DTYPES = ["float64", "float32"]
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
#: float32's unit roundoff
U32 = 2.0 ** -24


# -- kernels: built once per module ---------------------------------------------------------------
OPT = sn.Adam(lr=1e-2)


@pytest.fixture(scope="module")
def kernels() -> dict[tuple[str, str], dict[str, sn.Kernel]]:
    """``{(backend, dtype): {name: kernel}}``. In C, the residual network is compiled with the
    optimiser (its kernel also has ``train_step``) and the other three share one module."""
    out: dict[tuple[str, str], dict[str, sn.Kernel]] = {}
    for dtype in DTYPES:
        out["numpy", dtype] = {n: sn.compile(NETS[n][0](), dtype=dtype, optimizer=OPT if n == "resln" else None)
                               for n in NAMES}
    if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"):
        for dtype in DTYPES:
            others = [n for n in NAMES if n != "resln"]
            built = sn.compile_many([NETS[n][0]() for n in others], backend="c", dtype=dtype)
            out["c", dtype] = {"resln": sn.compile(resln(), backend="c", dtype=dtype, optimizer=OPT),
                               **dict(zip(others, built))}
    return out


# -- gradients -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_float64_gradients_match_torch_autograd(kernels, name: str, backend: str) -> None:
    net, p, X, Y = case(name)
    k = kernels[backend, "float64"][name]
    L, g = k.loss_and_grad(p, X, Y)
    tL, tg = torch_loss_and_grad(name, net, p, X, Y)
    assert list(g) == list(tg) == list(net.param_shapes())
    assert abs(L - tL) <= 1e-12 * abs(tL)
    for key in tg:
        assert g[key].shape == tg[key].shape and rel(g[key], tg[key]) <= 1e-10, key
    assert k.loss(p, X, Y) == L


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_float32_within_its_error_analysis(kernels, name: str, backend: str) -> None:
    """The float32 kernel against the float64 one at the same (float32-rounded) point, so only
    the arithmetic differs. Each value is a chain of at most ~12 rounded operations and sums
    of at most 8 terms per row, then a batch sum of 7 rows; forward error bounds of such a
    chain are a few tens of u (Higham, gamma_n = n u / (1 - n u)), amplified by the
    conditioning of the normalisation (1/sqrt(var + eps), var of order 1 here) and of the
    softmax/sigmoid, both O(1) at these points. 64 u = 3.8e-6 norm-wise leaves room for that;
    a float32 kernel computing anything else (a lost eps, a term in float64 and one not, a
    wrong sign in one entry) misses by orders of magnitude."""
    net, p, X, Y = case(name)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    X32 = X.astype(np.float32)
    Y32 = Y if Y.dtype.kind == "i" else Y.astype(np.float32)
    L32, g32 = kernels[backend, "float32"][name].loss_and_grad(p32, X32, Y32)
    L64, g64 = kernels[backend, "float64"][name].loss_and_grad(
        {k: v.astype(np.float64) for k, v in p32.items()}, X32.astype(np.float64), np.asarray(Y32).astype(Y.dtype))
    assert abs(L32 - L64) <= 64 * U32 * abs(L64)
    for key in g64:
        assert g32[key].dtype == np.float32 and rel(g32[key], g64[key]) <= 64 * U32, key


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_passes(kernels, name: str, backend: str, dtype: str) -> None:
    net, p, X, Y = case(name, seed=5)
    p = {k: v.astype(dtype) for k, v in p.items()}
    report = sn.gradcheck(kernels[backend, dtype][name], p, X.astype(dtype), Y)
    assert report.passed, str(report)
    assert report.max_rel_error <= (1e-7 if dtype == "float64" else 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_the_printed_derivation_computes_what_the_kernel_does(kernels, name: str, backend: str) -> None:
    net, p, X, Y = case(name, seed=2)
    L, g = kernels[backend, "float64"][name].loss_and_grad(p, X, Y)
    dL, dg = sn.derive(net).evaluate(p, X, Y)
    assert abs(float(dL) - L) <= 1e-12 * abs(L)
    assert set(dg) == set(g)
    for key in g:
        assert rel(dg[key], g[key]) <= 1e-12, key


# -- training ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_training_with_the_emitted_optimiser_learns_a_separable_task(kernels, backend: str, dtype: str) -> None:
    """Three classes split by which of the first three features is largest: the residual
    network trained with the emitted Adam (``train_step``) must fit it."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(96, 6))
    Y = X[:, :3].argmax(axis=1)
    k = kernels[backend, dtype]["resln"]
    assert k.optimizer is not None
    res = sn.train(k.network, X, Y, kernel=k, epochs=25, batch_size=16, seed=0)
    losses = res.history.train_loss
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses
    assert res.accuracy(X, Y) >= 0.9


# -- emitted files -------------------------------------------------------------------------------
@pytest.mark.needs_cc
def test_emitted_c_builds_with_its_makefile_and_computes_the_kernel(tmp_path: Path, kernels) -> None:
    """The standalone C (no Python): built by ``make``, its demo program run on parameters
    written by ``Kernel.pack``; its outputs, loss and per-parameter gradient norms (named
    ``<layer>.<param>``) are the kernel's."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    net, p, X, Y = case("resln", n=4, seed=4)
    sn.emit(net, tmp_path, backend="c")
    r = subprocess.run(["make"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in r.stderr, r.stderr
    k = kernels["numpy", "float64"]["resln"]
    k.pack(p).tofile(tmp_path / "params.bin")
    rows = "\n".join(",".join(repr(float(v)) for v in x) + f",{y}" for x, y in zip(X, Y)) + "\n"
    r = subprocess.run(["./resln_demo", "params.bin"], cwd=tmp_path, input=rows, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    out = np.array([[float(v) for v in line.split()] for line in lines[:len(X)]])
    L, g = k.loss_and_grad(p, X, Y)
    np.testing.assert_allclose(out, k.forward(p, X), rtol=1e-13, atol=1e-15)
    (loss_line,) = [line for line in lines if line.startswith("loss ")]
    assert abs(float(loss_line.split()[1]) - L) <= 1e-13 * abs(L)
    norms = {parts[1]: float(parts[2]) for parts in (line.split() for line in lines) if parts[0] == "grad_norm"}
    assert list(norms) == list(net.param_shapes())
    for key, value in norms.items():
        assert abs(value - np.linalg.norm(g[key])) <= 1e-12 * np.linalg.norm(g[key]), key


def test_emitted_numpy_imports_without_symnn_and_computes_the_kernel(tmp_path: Path, kernels) -> None:
    net, p, X, Y = case("resln", seed=6)
    out = run_emitted_numpy(tmp_path, net, p, X, Y)
    k = kernels["numpy", "float64"]["resln"]
    L, g = k.loss_and_grad(p, X, Y)
    assert float(out["L"]) == L
    np.testing.assert_array_equal(out["y"], k.forward(p, X))
    for key in g:
        np.testing.assert_array_equal(out[key], g[key])


# -- LaTeX ---------------------------------------------------------------------------------------
def test_every_graph_derivation_is_well_formed_latex() -> None:
    pytest.importorskip("latex2mathml")
    for name in NAMES:
        d = sn.derive(NETS[name][0]())
        assert latex_checks.problems(d) == [], name
        doc = d.latex()
        for layer in NETS[name][0]().graph.names:  # every layer appears under its own name
            assert r"\mathrm{%s}" % layer.replace("_", r"\_") in doc, (name, layer)


@pytest.mark.latex
def test_graph_derivations_compile_with_pdflatex(tmp_path: Path) -> None:
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("pdflatex is missing in CI")
        pytest.skip("pdflatex not installed (CI installs it)")
    ds = [sn.derive(NETS[n][0]()) for n in NAMES]
    first = ds[0].latex()
    head = first[:first.index(r"\begin{document}") + len(r"\begin{document}")]
    doc = "\n".join([head, *(r"\clearpage" + "\n" + d.latex(document=False) for d in ds), r"\end{document}", ""])
    (tmp_path / "d.tex").write_text(doc)
    cmd = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "d.tex"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    pages = re.search(r"Output written on d\.pdf \((\d+) pages?", r.stdout)
    assert pages and int(pages.group(1)) >= len(ds), r.stdout[-1000:]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_names_and_shapes_are_the_torch_state_dict(name: str) -> None:
    net = NETS[name][0]()
    sd = TORCH_MODULES[name]().state_dict()
    assert [(k, tuple(int(d) for d in s)) for k, s in net.param_shapes().items()] == \
        [(k, tuple(v.shape)) for k, v in sd.items()]
    assert list(net.init_params(seed=0)) == list(sd)


def test_default_layer_names_count_per_kind_in_call_order() -> None:
    assert resln().graph.names == ("dense1", "layernorm1", "dense2", "add1", "dense3")
    assert shared().graph.names == ("dense1",) and len(shared().graph.calls) == 2
    x = sn.Input(4)
    h = sn.Dense(4, 4, "tanh", name="enc")(x)
    h = h + sn.Dense(4, 4, "tanh")(h)
    y = sn.Dense(4, 2, name="dense1")(h + sn.LayerNorm(4, name="norm")(h))
    net = sn.Network(inputs=x, outputs=y, loss="mse")
    # a default name skips one the user took
    assert net.graph.names == ("enc", "dense2", "add1", "norm", "add2", "dense1")
    assert list(net.param_shapes()) == ["enc.weight", "enc.bias", "dense2.weight", "dense2.bias",
                                        "norm.weight", "norm.bias", "dense1.weight", "dense1.bias"]


def test_layernorm_starts_as_torch_does() -> None:
    p = resln().init_params(seed=0)
    ln = torch.nn.LayerNorm(8).state_dict()
    for leaf in ("weight", "bias"):
        np.testing.assert_array_equal(p[f"layernorm1.{leaf}"], ln[leaf].numpy())


# -- the Sequential form is unchanged -------------------------------------------------------------
def _without_comments(c_source: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", c_source, flags=re.S)


def test_sequential_form_keeps_its_names_and_emits_the_checked_in_code() -> None:
    from symnn.golden import BUILDERS

    net = BUILDERS["digits"]()
    assert net.graph is None and not net.is_graph
    assert list(net.param_shapes()) == ["W1", "b1", "W2", "b2"]
    base = ROOT / "generated" / net.name
    for dtype in DTYPES:
        assert sn.emit_source(net, backend="numpy", dtype=dtype) == \
            (base / "numpy" / f"{net.name}_{dtype}.py").read_text(encoding="utf-8")
    # C: the same code; issue 20 moves comments out of the template (tests/golden compares bytes)
    assert _without_comments(sn.emit_source(net, backend="c")) == \
        _without_comments((base / "c" / "float64" / f"{net.name}.c").read_text(encoding="utf-8"))


# -- bad graphs: a clear symnn error before any work ------------------------------------------------
def _two_unnamed_inputs():
    a, b = sn.Input(3), sn.Input(3)
    return sn.Network(inputs=[a, b], outputs=sn.Dense(3, 2)(a + b), loss="mse")


def _two_outputs_one_loss():
    x = sn.Input(3)
    h = sn.Dense(3, 3, "tanh")(x)
    return sn.Network(inputs=x, outputs=[sn.Dense(3, 2)(h), sn.Dense(3, 1)(h)], loss="mse")


def _unused_input():
    a, b = sn.Input(3, name="a"), sn.Input(2, name="b")
    return sn.Network(inputs=[a, b], outputs=sn.Dense(3, 2)(a), loss="mse")


def _unlisted_input():
    x, other = sn.Input(3), sn.Input(3)
    return sn.Network(inputs=x, outputs=sn.Dense(3, 2)(sn.Dense(3, 3)(x) + other), loss="mse")


def _duplicate_names():
    x = sn.Input(3)
    return sn.Network(inputs=x, outputs=sn.Dense(3, 2, name="d")(sn.Dense(3, 3, name="d")(x)), loss="mse")


def _dropout():
    x = sn.Input(3)
    return sn.Network(inputs=x, outputs=sn.Dense(3, 2, dropout=0.5)(sn.Dense(3, 3, "relu")(x)), loss="mse")


BAD = {
    "add of different shapes": (lambda: sn.Dense(3, 4)(sn.Input(3)) + sn.Input(3),
                                LayerSizeMismatchError, "cannot add tensors of shapes (4,) and (3,)"),
    "dense on the wrong width": (lambda: sn.Dense(5, 2)(sn.Input(3)), LayerSizeMismatchError, "expects (5,)"),
    "layernorm on the wrong width": (lambda: sn.LayerNorm(5)(sn.Input(3)), LayerSizeMismatchError, "LayerNorm(5)"),
    "an input not listed": (_unlisted_input, SpecError, "not in inputs="),
    "duplicate layer names": (_duplicate_names, SpecError, "repeated: d"),
    "a dotted layer name": (lambda: sn.Dense(3, 2, name="a.b"), UntrustedInputError, "not a plain name"),
    "a keyword as layer name": (lambda: sn.LayerNorm(3, name="for"), UntrustedInputError, "keyword"),
    "a reserved layer name": (lambda: sn.Dense(3, 2, name="__x"), UntrustedInputError, "reserved"),
    "several unnamed inputs": (_two_unnamed_inputs, SpecError, "named"),
    "several outputs, one loss": (_two_outputs_one_loss, SpecError, "one loss per output"),
    "an input no output reads": (_unused_input, SpecError, "no output reads"),
    "dropout on an output": (_dropout, SpecError, "dropout applies to hidden values only"),
    "a layer called on an array": (lambda: sn.Dense(3, 2)(np.zeros((4, 3))), SpecTypeError, "ndarray"),
    "a layer called on a number": (lambda: sn.LayerNorm(3)(1.0), SpecTypeError, "float"),
    "both forms at once": (lambda: sn.Network([sn.Dense(3, 2)], inputs=sn.Input(3),
                                              outputs=sn.Dense(3, 2)(sn.Input(3))), SpecError, "not both"),
    "an output that is an input": (lambda: (lambda x: sn.Network(inputs=x, outputs=x, loss="mse"))(sn.Input(3)),
                                   SpecError, "an output is an input"),
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_graphs_are_refused_with_a_clear_error(what: str) -> None:
    make, error, fragment = BAD[what]
    with pytest.raises(error) as info:
        make()
    assert fragment in str(info.value)


# -- found while writing these tests --------------------------------------------------------------
def _gradient_prefix(first: str, second: str, net_name: str) -> sn.Network:
    """A layer named ``dL_d<other layer>``: ``dL_da.weight`` and the gradient of ``a.weight``
    are both ``dL_da_weight`` in the emitted code."""
    x = sn.Input(3)
    y = sn.Dense(3, 2, "tanh", name=second)(sn.LayerNorm(3, name=first)(x))
    return sn.Network(inputs=x, outputs=y, loss="mse", name=net_name)


def _second_call(first: str, second: str, net_name: str) -> sn.Network:
    """A layer named ``<shared layer>_2``: the second call of ``a`` and the layer ``a_2`` name
    the same values."""
    x = sn.Input(3)
    d = sn.Dense(3, 3, "tanh", name=first)
    y = sn.Dense(3, 2, "tanh", name=second)(d(d(x)))
    return sn.Network(inputs=x, outputs=y, loss="mse", name=net_name)


COLLISIONS = {"gradient prefix": (_gradient_prefix, ("a", "dL_da")),
              "second call suffix": (_second_call, ("a", "a_2"))}


@pytest.mark.parametrize("what,backend", [
    ("gradient prefix", "numpy"),
    pytest.param("gradient prefix", "c", marks=pytest.mark.needs_cc),  # were wrong gradients
    ("second call suffix", "numpy"),  # was a broadcast ValueError
    pytest.param("second call suffix", "c", marks=pytest.mark.needs_cc),  # were wrong gradients
])
def test_layer_names_cannot_collide_with_generated_names(what: str, backend: str) -> None:
    """Layer names are user input that becomes part of generated identifiers. Either a name
    that collides is refused when the network is declared (a symnn error), or the kernel
    computes what the same network with other names computes."""
    build, names = COLLISIONS[what]
    try:
        clash = build(*names, "clash")
    except SymnnError:
        return
    ref = build("p", "q", "noclash")
    kc, kr = sn.compile_many([clash, ref], backend=backend)
    rng = np.random.default_rng(0)
    pr = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in ref.init_params(seed=1).items()}
    X, Y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    Lr, gr = kr.loss_and_grad(pr, X, Y)
    L, g = kc.loss_and_grad(dict(zip(clash.param_shapes(), pr.values())), X, Y)
    assert L == Lr
    for a, b in zip(g, gr):
        np.testing.assert_array_equal(g[a], gr[b])


def test_a_tensor_is_added_only_to_a_tensor() -> None:
    """``x + 1.0`` is a symnn error, not Python's bare TypeError (a constant offset is a bias)."""
    x = sn.Input(3)
    for other in (1.0, 2, None):
        with pytest.raises(sn.SpecTypeError, match="added only to another tensor"):
            x + other
        with pytest.raises(sn.SpecTypeError, match="added only to another tensor"):
            other + x


def _activate_net() -> sn.Network:
    """relu after a residual addition, and a softmax applied on its own to a Dense's output."""
    x = sn.Input(4)
    h = sn.Dense(4, 4)(x)
    r = sn.Activate("relu")(h + x)
    y = sn.Activate("softmax")(sn.Dense(4, 3)(r))
    return sn.Network(inputs=x, outputs=y, loss="cross_entropy", name="act")


@pytest.mark.parametrize("backend", ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)])
def test_an_activation_on_its_own_is_a_layer(backend: str, tmp_path: Path) -> None:
    """sn.Activate: the same kernel as the activation folded into the Dense before it (softmax +
    cross-entropy still fused, so the gradient is A - Y), gradcheck through the relu's kink
    detection, and spec and model-file round trips."""
    net = _activate_net()
    x = sn.Input(4)
    h = sn.Dense(4, 4)(x)
    folded = sn.Network(inputs=x, outputs=sn.Dense(4, 3, "softmax")(sn.Activate("relu")(h + x)),
                        loss="cross_entropy", name="act")
    k, kf = sn.compile(net, backend=backend), sn.compile(folded, backend=backend)
    p, X, Y = sn.sample_point(net)
    L, g = k.loss_and_grad(p, X, Y)
    Lf, gf = kf.loss_and_grad(p, X, Y)
    assert abs(L - Lf) <= 1e-14 * abs(Lf) and all(rel(g[n], gf[n]) <= 1e-13 for n in g)
    assert sn.gradcheck(k, p, X, Y).ok
    assert sn.emit_source(sn.loads_spec(sn.dumps_spec(net)).network) == sn.emit_source(net)
    assert sn.emit_source(sn.load(sn.save(tmp_path / "m", net, p)).network) == sn.emit_source(net)
    with pytest.raises(SpecError, match="softmax is only supported on an output"):
        sn.Network(inputs=x, outputs=sn.Dense(4, 2)(sn.Activate("softmax")(h)), loss="mse")
    with pytest.raises(SpecTypeError, match="Activate takes a registry name"):
        sn.Activate(3)
