"""benchmarks/profile_c.py, the per-statement profile of an emitted C kernel: the instrumented
kernel computes what the public call computes (its counters change no result), every statement
of a long kernel's loops and of a short kernel's body is timed, and the times add up to at most
the call. Tiny networks, a few calls: no figure is asserted."""

from __future__ import annotations

import platform

import numpy as np
import pytest

import symnn as sn
from benchmarks import profile_c, rnn_peers

pytestmark = [pytest.mark.needs_cc,
              pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"),
                                 reason="the profiler reads x86's time-stamp counter")]


def _check(net: sn.Network, X: np.ndarray, Y: np.ndarray) -> profile_c.Profile:
    k = sn.compile(net, backend="c")
    params = k.new_params(seed=0)
    prof = profile_c.measure(net, params, X, Y, "float64", calls=3)
    want = float(k.loss(params, X, Y))
    assert abs(prof.loss - want) <= 1e-12 * abs(want), (prof.loss, want)
    assert prof.statements and all(t >= 0 for t, _ in prof.statements)
    assert sum(t for t, _ in prof.statements) <= prof.call * 1.001
    return prof


def test_a_recurrent_kernels_helpers_are_timed_inside_its_loops() -> None:
    cfg = rnn_peers.Config("tiny-lstm", rnn_peers.LSTM, 3, 8, 5, 4, target=1.0)
    net, _, X, Y = rnn_peers.problem(cfg, "float64")
    prof = _check(net, X, Y)
    labels = [label for _, label in prof.statements]
    # the loops' statements (the step's product, its gates) are helpers called through pointers
    assert sum("__stmt" in label for label in labels) >= 10, labels


def test_a_short_kernels_statement_blocks_are_timed_whole() -> None:
    x = sn.Input(2, 6, 6)
    h = sn.MaxPool2d(2)(sn.Conv2d(2, 4, 3, padding=1, activation="relu", name="c1")(x))
    net = sn.Network(inputs=x, outputs=sn.Dense(36, 3, "softmax", name="fc")(sn.Flatten()(h)),
                     loss="cross_entropy", name="tiny_cnn")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 2, 6, 6))
    Y = np.eye(3)[rng.integers(0, 3, 5)]
    prof = _check(net, X, Y)
    labels = " ".join(label for _, label in prof.statements)
    assert "conv(" in labels and "max_pool" in labels, labels
