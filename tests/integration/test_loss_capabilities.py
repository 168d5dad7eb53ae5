"""Issue 20, item 4: losses declare capabilities; status codes are one IntEnum.

The code recognised a loss by its name (``loss.name == "cross_entropy" and not loss.user``, 17
times in 10 files), so a user loss could not take integer labels, report accuracy or be fused,
and a built-in could only be told apart from a user loss of the same name by a flag. Now a loss
declares ``targets``, ``classification``, ``min_outputs``, ``requires`` and ``link``
(:mod:`symnn.capabilities`); the fusions are a table keyed by the (activation, loss) links, each
rewrite proved on the loss's own expression. The C status codes are :class:`symnn.status.Status`,
read by the emitter (the header's ``#define``s, ``<model>_status_string``) and by the wrapper.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symnn as sn
from symnn import capabilities, decision, registry
from symnn.backends.c import wrapper
from symnn.capabilities import Link, Targets
from symnn.driver import emit_files
from symnn.emit import spec_hash
from symnn.errors import ModelFormatError
from symnn.gradcheck import _TARGET_DRAWS, sample_point
from symnn.graph import build_forward
from symnn.simplify.fuse import FUSION_RULES, Fusion, fuse_losses
from symnn.status import Status

p, y = sp.symbols("p y")
_BCE = -(y * sp.log(p) + (1 - y) * sp.log(1 - p))


def _nll(**caps: object) -> sn.Loss:
    """Cross-entropy written by a user (unfused unless it declares a link)."""
    return sn.Loss("nll", -y * sp.log(p), pred=p, target=y, reduction="batch", domain=(0, 1), **caps)


def _user_bce(name: str = "bce", **caps: object) -> sn.Loss:
    return sn.Loss(name, _BCE, pred=p, target=y, domain=(0, 1), **caps)


# -- the registry declares, every table has an entry --------------------------------------------
def test_every_registry_loss_declares_its_capabilities() -> None:
    expected = {
        "mse": (Targets.REAL, False, 1, None, None),
        "bce": (Targets.PROBABILITY, True, 1, None, Link.LOGISTIC),
        "cross_entropy": (Targets.ONE_HOT_OR_LABELS, True, 2, "softmax", Link.SOFTMAX),
    }
    for name in registry.loss_names():
        entry, loss = registry.loss(name), sn.Loss.builtin(name)
        caps = tuple(getattr(entry, k) for k in capabilities.LOSS_CAPABILITIES)
        assert isinstance(entry.targets, Targets) and isinstance(entry.classification, bool)
        assert isinstance(entry.min_outputs, int) and entry.min_outputs >= 1
        assert entry.link is None or isinstance(entry.link, Link)
        assert tuple(getattr(loss, k) for k in capabilities.LOSS_CAPABILITIES) == caps, name
        if name in expected:
            assert caps == expected[name], name
    assert set(expected) <= set(registry.loss_names())


def test_every_capability_value_has_its_table_entries() -> None:
    """A new Targets or Link member without a check, a C harness kind, a gradient-check draw,
    a predict rule or a fusion rule would fall through to a KeyError at run time."""
    for kind in Targets:
        assert kind in capabilities.TARGET_CHECKS and kind in capabilities.C_TARGET_KIND
        assert kind in _TARGET_DRAWS or kind is Targets.ONE_HOT_OR_LABELS  # labels: arange
        if kind is not Targets.REAL:  # a classification loss's targets: a rule from outputs to labels
            assert kind in decision._LABELS
    for link in Link:
        assert (link, link) in FUSION_RULES and link in capabilities.LINK_TARGETS
        # the rule has a built-in activation and a built-in loss that declare it
        assert any(registry.activation(n).link is link for n in registry.activation_names())
        assert any(registry.loss(n).link is link for n in registry.loss_names())


# -- targets: a user loss that declares integer-label targets takes labels on both backends -------
@pytest.mark.needs_cc
def test_user_loss_declaring_label_targets_takes_labels_on_both_backends() -> None:
    net = sn.Network([sn.Dense(3, 4, "softmax")], name="nll_labels",
                     loss=_nll(targets="one_hot_or_labels", classification=True, min_outputs=2, requires="softmax"))
    builtin = sn.Network([sn.Dense(3, 4, "softmax")], loss="cross_entropy", name="ce_labels")
    params = net.init_params(seed=2)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 3))
    labels = np.array([0, 3, 1, 2, 3, 0])
    onehot = np.eye(4)[labels]
    ref_loss, ref_grad = sn.compile(builtin).loss_and_grad(params, X, labels)
    for backend in ("numpy", "c"):
        k = sn.compile(net, backend=backend)
        out = k.forward(params, X)
        loss, grad = k.loss_and_grad(params, X, labels)
        loss_1h, grad_1h = k.loss_and_grad(params, X, onehot)
        assert loss == loss_1h and all(np.array_equal(grad[n], grad_1h[n]) for n in grad), backend
        np.testing.assert_allclose(loss, -np.log(out[np.arange(6), labels]).mean(), rtol=1e-13)
        # the unfused chain rule through softmax and the built-in's fused p - y: one gradient
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
        for n in grad:
            np.testing.assert_allclose(grad[n], ref_grad[n], rtol=1e-10, atol=1e-14)
        with pytest.raises(sn.LabelRangeError):
            k.loss(params, X, np.array([0, 4, 1, 2, 3, 0]))
    # a user loss that declares nothing takes (N, K) targets only, whatever its name
    plain = sn.compile(sn.Network([sn.Dense(3, 4, "softmax")], loss=_nll()))
    with pytest.raises(sn.ShapeError, match=r"expected Y of shape \(6, 4\)"):
        plain.loss(params, X, labels)


def test_declared_targets_decide_checks_and_gradcheck_draws() -> None:
    sig = [sn.Dense(2, 2, "sigmoid")]
    prob = sn.Network(sig, loss=_user_bce("wbce", targets="probability"))
    real = sn.Network(sig, loss=sn.Loss("sq", (p - y) ** 2, pred=p, target=y))
    k = sn.compile(prob)
    params, X = prob.init_params(seed=0), np.zeros((2, 2))
    with pytest.raises(sn.DataError, match=r"wbce targets must lie in \[0, 1\]"):
        k.loss(params, X, np.array([[0.5, 1.5], [0.0, 1.0]]))
    assert np.isfinite(sn.compile(real).loss(params, X, np.array([[0.5, 1.5], [0.0, 1.0]])))
    _, _, y_prob = sample_point(prob, n=64)
    _, _, y_real = sample_point(real, n=64)
    assert y_prob.min() >= 0 and y_prob.max() <= 1
    assert y_real.min() < 0 or y_real.max() > 1  # normal draws
    labelled = sn.Network([sn.Dense(2, 3, "softmax")], loss=_nll(targets="one_hot_or_labels"))
    params, X, Y = sample_point(labelled, n=6)
    assert Y.dtype.kind == "i" and Y.shape == (6,)
    assert sn.gradcheck(sn.compile(labelled), params, X, Y).ok


def test_declared_classification_decides_predict_and_accuracy() -> None:
    sig = [sn.Dense(2, 1, "sigmoid")]
    params = {"W1": np.array([[2.0, -1.0]]), "b1": np.array([0.1])}
    X = np.array([[1.0, 0.0], [-1.0, 1.0], [0.3, 0.2]])
    clf = sn.Model(sn.Network(sig, loss=_user_bce("wbce", targets="probability", classification=True)), params)
    reg = sn.Model(sn.Network(sig, loss=_user_bce("wbce", targets="probability")), params)
    prob = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.predict(X), (prob > 0.5).astype(np.int64))
    np.testing.assert_array_equal(reg.predict(X), prob)  # declared nothing: a regression
    Y = np.array([[1.0], [0.0], [1.0]])
    hist = sn.train(clf.network, np.tile(X, (4, 1)), np.tile(Y, (4, 1)), epochs=2, validation=(X, Y)).history
    assert np.isfinite(hist.val_accuracy).all()
    hist = sn.train(reg.network, np.tile(X, (4, 1)), np.tile(Y, (4, 1)), epochs=2, validation=(X, Y)).history
    assert np.isnan(hist.val_accuracy).all()


# -- fusion: read from the (activation, loss) links, never the name ------------------------------
def _fusions(net: sn.Network) -> tuple[bool, list[Fusion]]:
    fwd, log = build_forward(net), []
    return fuse_losses(fwd, log) is not fwd, log


def test_a_user_loss_named_bce_gets_no_fusion() -> None:
    """A user loss called ``bce`` (even with the built-in's expression and declared probability
    targets) is not rewritten; the built-in is, and so is the user loss that declares the link."""
    sig = [sn.Dense(1, 1, "sigmoid")]
    named = sn.Network(sig, loss=_user_bce("bce", targets="probability", classification=True))
    declared = sn.Network(sig, loss=_user_bce("mine", targets="probability", link="logistic"))
    builtin = sn.Network(sig, loss="bce")
    assert _fusions(named) == (False, [])
    fused, log = _fusions(declared)
    assert fused and log[0].name == "sigmoid + binary cross-entropy"
    assert _fusions(builtin)[0]
    # at logit 40, sigmoid is exactly 1.0 in float64: only the fused form from the logits gives
    # BCE(y = 0) = softplus(40) = 40; the unfused loss sees the guarded prediction 1 - ulp
    params, X, Y = {"W1": np.array([[40.0]]), "b1": np.array([0.0])}, np.array([[1.0]]), np.array([[0.0]])
    for net in (builtin, declared):
        loss, grad = sn.compile(net).loss_and_grad(params, X, Y)
        np.testing.assert_allclose(loss, 40.0, rtol=1e-15)
        np.testing.assert_allclose(grad["W1"], [[1.0]], rtol=1e-15)  # sigmoid(40) - 0
    assert abs(sn.compile(named).loss(params, X, Y) - 40.0) > 1.0


def test_a_user_loss_declaring_the_softmax_link_is_fused_like_the_builtin() -> None:
    layers = [sn.Dense(3, 4, "softmax")]
    mine = sn.Network(layers, loss=_nll(targets="one_hot_or_labels", link="softmax"))
    builtin = sn.Network(layers, loss="cross_entropy")
    assert _fusions(mine)[0] and _fusions(sn.Network(layers, loss=_nll(targets="one_hot_or_labels"))) == (False, [])
    params, X = mine.init_params(seed=1), np.array([[1000.0, 0.0, 0.0], [0.0, -2.0, 3.0]])
    labels = np.array([1, 2])
    a, b = sn.compile(mine).loss_and_grad(params, X, labels), sn.compile(builtin).loss_and_grad(params, X, labels)
    assert np.isfinite(a[0]) and a[0] == b[0] and all(np.array_equal(a[1][n], b[1][n]) for n in a[1])


def test_a_declared_link_whose_rewrite_does_not_hold_is_refused() -> None:
    """The rewrite is proved on the loss's own expression: MSE on a sigmoid declared with the
    logistic link would be trained on BCE's gradient."""
    net = sn.Network([sn.Dense(2, 1, "sigmoid")],
                     loss=sn.Loss("sq", (p - y) ** 2, pred=p, target=y, targets="probability", link="logistic"))
    with pytest.raises(sn.SpecError, match=r"loss 'sq' declares link='logistic', but its fused rewrite .* does not hold"):
        sn.compile(net)


# -- the declaration is checked -------------------------------------------------------------------
@pytest.mark.parametrize("make, error, says", [
    (lambda: sn.Network([sn.Dense(2, 3, "softmax")], loss=_user_bce(targets="probability", link="logistic")),
     sn.SpecError, r"bce on a softmax output is not a valid combination.*; use cross_entropy"),
    (lambda: sn.Network([sn.Dense(2, 2, "softmax")], loss=_nll(min_outputs=3)),
     sn.SpecError, r"nll needs an output width >= 3, got 2"),
    (lambda: sn.Network([sn.Dense(2, 2, "sigmoid")], loss=_nll(requires="softmax")),
     sn.SpecError, r"loss 'nll' needs a softmax output layer, but layer 1 uses 'sigmoid'"),
    (lambda: _nll(targets="labels"), sn.ConfigError, r"targets must be one of 'real', 'probability'"),
    (lambda: _nll(targets=3), sn.SpecTypeError, r"targets must be one of"),
    (lambda: _nll(classification=True), sn.ConfigError, r"classification=True needs class targets"),
    (lambda: _nll(classification=1), sn.SpecTypeError, r"classification must be True or False"),
    (lambda: _nll(min_outputs=0), sn.ConfigError, r"min_outputs must be in \[1,"),
    (lambda: _nll(min_outputs=True), sn.SpecTypeError, r"min_outputs must be an integer"),
    (lambda: _nll(requires="sofmax"), sn.UnknownActivationError, r"did you mean 'softmax'"),
    (lambda: _nll(link="softmax"), sn.ConfigError, r"link='softmax' needs targets 'one_hot_or_labels'"),
    (lambda: _nll(link="probit"), sn.ConfigError, r"link must be one of 'logistic', 'softmax'"),
])
def test_declared_capabilities_are_checked(make, error, says: str) -> None:
    with pytest.raises(error, match=says):
        make()


# -- files: the capabilities round-trip, the loaders stay strict ---------------------------------
def _declared_net() -> sn.Network:
    loss = _nll(targets="one_hot_or_labels", classification=True, min_outputs=2, requires="softmax", link="softmax")
    return sn.Network([sn.Dense(2, 3, "softmax")], loss=loss, name="declared")


def test_capabilities_round_trip_through_model_and_spec_files(tmp_path: Path) -> None:
    net = _declared_net()
    loaded = sn.load(sn.save(tmp_path / "m.npz", net, net.init_params(seed=0))).network
    assert loaded == net and loaded.loss.takes_labels and loaded.loss.link is Link.SOFTMAX
    text = sn.dumps_spec(net)
    assert 'targets = "one_hot_or_labels"' in text and "classification = true" in text
    assert sn.loads_spec(text).network == net
    # nothing declared: nothing written, and the network reads back without capabilities
    plain = sn.Network([sn.Dense(2, 3, "softmax")], loss=_nll())
    assert "targets" not in sn.dumps_spec(plain) and sn.loads_spec(sn.dumps_spec(plain)).network == plain


@pytest.mark.parametrize("key, value, says", [
    ("targets", "bogus", "targets must be one of"),
    ("targets", 3, "unexpected int"),
    ("classification", 1, "unexpected int"),
    ("min_outputs", True, "unexpected bool"),
    ("min_outputs", 0, "min_outputs must be in"),
    ("requires", ["softmax"], "unexpected list"),
    ("requires", "softmax\n*/", "unknown activation"),
    ("link", {"x": 1}, "unexpected dict"),
    ("link", "logistic", "nll on a softmax output is not a valid combination"),
])
def test_forged_capabilities_are_refused_on_load(tmp_path: Path, key: str, value: object, says: str) -> None:
    net = _declared_net()
    good = sn.save(tmp_path / "good.npz", net, net.init_params(seed=0))
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["network"]["loss"][key] = value
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "forged.npz", **arrays)
    with pytest.raises(ModelFormatError, match=r"network(\.loss)?[.:].*(" + says + ")"):
        sn.load(tmp_path / "forged.npz")


@pytest.mark.parametrize("line, says", [
    ('targets = 3', "targets must be one of"),
    ('classification = "yes"', "classification must be True or False"),
    ('link = "probit"', "link must be one of"),
    ('fuse = true', "unknown key"),
])
def test_bad_capabilities_in_a_spec_are_refused(line: str, says: str) -> None:
    text = ('[network]\nname = "s"\n\n[[layer]]\nin = 2\nout = 3\nactivation = "softmax"\n\n'
            f'[loss]\nname = "nll"\nexpr = "-y*log(p)"\npred = "p"\ntarget = "y"\ndomain = [0, 1]\n{line}\n')
    with pytest.raises(sn.SpecParseError, match=says):
        sn.loads_spec(text)


def test_the_spec_hash_tells_declared_capabilities_and_user_losses_apart() -> None:
    layers = [sn.Dense(2, 3, "softmax")]
    builtin = sn.Network(layers, loss="cross_entropy")
    same_name = sn.Network(layers, loss=sn.Loss("cross_entropy", -y * sp.log(p), pred=p, target=y,
                                                 reduction="batch", domain=(0, 1)))
    declared = sn.Network(layers, loss=sn.Loss("cross_entropy", -y * sp.log(p), pred=p, target=y,
                                               reduction="batch", domain=(0, 1), targets="one_hot_or_labels"))
    assert len({spec_hash(n, "float64") for n in (builtin, same_name, declared)}) == 3


# -- status codes: one IntEnum behind the header, the C strings and the wrapper -------------------
def test_the_emitted_header_defines_the_status_enum() -> None:
    net = sn.Network([sn.Dense(2, 3, "softmax")], loss="cross_entropy", name="codes")
    files = emit_files(net, backend="c", dtype="float64")
    defined = {m[1]: int(m[2]) for m in re.finditer(r"^#define (SYMNN_(?:OK|ERR_\w+)) (\d+)$", files["codes.h"], re.M)}
    assert defined == {s.c_name: int(s) for s in Status}
    texts = dict(re.findall(r'case (SYMNN_\w+): return "([^"]*)";', files["codes.c"]))
    assert texts == {s.c_name: s.text for s in Status}
    # the wrapper maps members of the same enum (and nothing else)
    assert all(isinstance(code, Status) for code in wrapper._STATUS_ERRORS)
    assert wrapper._STATUS_ERRORS[Status.ERR_LABEL] is sn.LabelRangeError


@pytest.mark.needs_cc
def test_the_wrapper_reads_the_c_status_through_the_enum() -> None:
    """Past the Python checks (the module's raw call), the C kernel's own refusal of a bad label
    comes back as the enum's error with its row."""
    net = sn.Network([sn.Dense(2, 3, "softmax")], loss="cross_entropy", name="codes_run")
    k = sn.compile(net, backend="c")
    lib = k.module.lib
    assert {s.c_name: getattr(lib, s.c_name) for s in Status} == {s.c_name: int(s) for s in Status}
    params, X = net.init_params(seed=0), np.zeros((3, 2))
    with pytest.raises(sn.LabelRangeError, match=r"codes_run_loss_labels: class label out of range \(row 1\)"):
        k.module._loss(params, X, np.array([0, 7, 1]))
    for s in Status:
        assert k.module.ffi.string(lib.codes_run_status_string(s)).decode() == s.text
