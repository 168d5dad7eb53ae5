"""benchmarks/rnn_peers.py's correctness check (issue 23's speed page), run on tiny configurations
without timing: every system it would time agrees with symnn NumPy, and a system that does not
stops the run before any figure is printed."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import rnn_peers  # noqa: E402

TINY = {"lstm": rnn_peers.Config("tiny-lstm", rnn_peers.LSTM, 3, 4, 5, 2, target=1.0),
        "gru": rnn_peers.Config("tiny-gru", rnn_peers.GRU, 2, 3, 4, 3, target=1.0)}
#: the peers a test environment has (JAX and PyTensor are benchmark-only dependencies)
PEERS = {"PyTorch": rnn_peers.torch_system}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_check_passes_for_every_system(kind: str) -> None:
    """PyTorch's module loaded from symnn's parameter dict (names, layouts, gate order) gives
    symnn NumPy's loss and gradients within float64's 1e-9, and the timed calls are returned."""
    ready = rnn_peers.prepare(TINY[kind], "float64", peers=PEERS, backends=("numpy",))
    assert set(ready["checks"]) == {"symnn NumPy", "PyTorch"}
    assert ready["checks"]["PyTorch"] <= 1e-9
    loss, grads = ready["systems"]["PyTorch"]()
    assert np.isfinite(loss) and set(grads) == set(TINY[kind].build().param_shapes())


@pytest.mark.needs_cc
def test_check_covers_symnn_c() -> None:
    ready = rnn_peers.prepare(TINY["gru"], "float64", peers=PEERS, backends=("numpy", "c"))
    assert ready["checks"]["symnn C"] <= 1e-9


def _off_by(scale: float):
    """A peer that is PyTorch with the gradient of ``weight_hh`` scaled: a wrong result."""

    def make(cfg, params, X, Y):
        run = rnn_peers.torch_system(cfg, params, X, Y)

        def wrong():
            loss, grads = run()
            return loss, {**grads, "rnn.weight_hh_l0": grads["rnn.weight_hh_l0"] * scale}

        return wrong

    return make


def test_check_stops_a_wrong_peer() -> None:
    """A relative error of 1e-6 in one gradient is past float64's tolerance: the run raises,
    naming the system, rather than timing it."""
    with pytest.raises(AssertionError, match="wrong"):
        rnn_peers.prepare(TINY["lstm"], "float64", peers={"wrong": _off_by(1 + 1e-6)}, backends=("numpy",))


def test_missing_peer_is_a_note() -> None:
    def absent(*_):
        raise ImportError("No module named 'jax'")

    ready = rnn_peers.prepare(TINY["gru"], "float64", peers={"JAX": absent}, backends=("numpy",))
    assert "JAX" not in ready["systems"] and ready["notes"] == ["JAX: not installed (No module named 'jax')"]



@pytest.mark.needs_cc
def test_sizes_table_times_symnn_c_against_the_checked_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--sizes``: each size's systems are checked against symnn NumPy as the issue's
    configurations are, NumPy (the reference) is not timed, and the table gives symnn C's ratio to
    the fastest peer, with no target column (these sizes have none)."""
    monkeypatch.setattr(rnn_peers, "SIZES", [rnn_peers.Config("tiny-gru-sized", rnn_peers.GRU, 2, 3, 4, 3)])
    cfg = rnn_peers.SIZES[0]
    ready = rnn_peers.run_config(cfg, "float64", 1, ("numpy", "c"), timed_numpy=False, peers=PEERS)
    assert set(ready["times"]) == {"symnn C", "PyTorch"}
    assert ready["checks"]["symnn C"] <= 1e-9 and ready["checks"]["PyTorch"] <= 1e-9
    lines = rnn_peers.sizes_table({cfg.name: ready}, "float64", None)
    row = next(line for line in lines if line.startswith(f"| {cfg.name} |"))
    ratio = ready["times"]["symnn C"] / ready["times"]["PyTorch"]
    assert f"| PyTorch | **{ratio:.2f}** |" in row and "target" not in lines[2]
    assert any(line.startswith("Largest symnn C / fastest peer here") for line in lines)
