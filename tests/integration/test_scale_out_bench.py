"""benchmarks/scale_out.py and benchmarks/scale_out_model.py (issue 24, item 4), on tiny cases.

The benchmark drives each system through ``sn.train``'s own step strategies, epoch by epoch, so
that only epochs are timed; what it times must be what ``sn.train`` computes: its epochs give
``sn.train``'s parameters bit for bit, on one process and on a cluster. Its whole measurement
runs (one round) on a tiny network, so that the script cannot rot. The model's tables in
docs/scale_out.md are its function's output on the committed measurement, and its closed-form
batch thresholds are the thresholds of its own speed-up.
"""

from __future__ import annotations

import time
from pathlib import Path

import distributed
import numpy as np
import pytest

import symnn as sn
from benchmarks import scale_out, scale_out_model

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scale_out.md"
TINY = scale_out.Config("tiny", (4, 5, 3), (8,), rows=40)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                                  silence_logs=40) as cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="module")
def tiny():
    kernel, _ = scale_out.compile_kernel(TINY, "float64")
    X, y = scale_out.data(TINY, "float64")
    return kernel, X, y


@pytest.mark.needs_cc
@pytest.mark.parametrize("system", ["one process", "parts=2", "Dask 2 workers"])
def test_timed_epochs_are_sn_train(system: str, client, tiny) -> None:
    """Two epochs of the benchmark's trainer equal ``sn.train(..., epochs=2)`` with the same
    settings, bit for bit (the classic step, parts=2 in this process, and on the cluster)."""
    kernel, X, y = tiny
    workers, parts = scale_out.SYSTEMS[system]
    on = client if workers else None
    with scale_out.trainer(kernel, X, y, client=on, parts=parts, batch_size=8) as run:
        run.epoch()
        run.epoch()
    expected = sn.train(kernel.network, X, y, kernel=kernel, epochs=2, batch_size=8, client=on, parts=parts)
    assert np.array_equal(run.theta, kernel.pack(expected.params))
    assert run.losses == expected.history.train_loss


@pytest.mark.needs_cc
def test_measure_runs_and_tabulates(client, tiny) -> None:
    """The whole measurement of one configuration (one round), with its tables: every system
    present on the given clusters is timed, the step-time pieces are measured, and the block
    systems' equality check passed (it raises otherwise)."""
    kernel, X, y = tiny
    r = scale_out.measure(TINY, "float64", 8, {2: client}, rounds=1, kernel=kernel, X=X, y=y, sample_seconds=0.0)
    assert set(r["throughput"]) == {"one process", "parts=2", "Dask 2 workers"}
    assert all(v > 0 for v in r["throughput"].values())
    assert r["steps_per_epoch"] == 5 and r["rows"] == 40
    assert set(scale_out.BREAKDOWN) <= set(r["breakdown"])
    assert all(r["breakdown"][k] > 0 for k in scale_out.BREAKDOWN if k != "driver CPU per actor call")
    r.update(config="tiny", dtype="float64", batch=8, n_params=TINY.n_params)
    page = "\n".join([*scale_out.throughput_table([r], "float64", 1), *scale_out.breakdown_table([r]),
                      *scale_out.costs_table([r], {("tiny", "float64"): 0.5})])
    assert page.count("| tiny |") == 3


def test_model_tables_are_in_the_docs() -> None:
    """docs/scale_out.md shows the model script's output on the committed measurement, line for line."""
    doc = DOCS.read_text().splitlines()
    lines = [line for line in scale_out_model.render(scale_out_model.load()) if line]
    missing = [line for line in lines if line not in doc]
    assert not missing, missing[:3]


@pytest.mark.parametrize("transport", list(scale_out_model.Transport))
def test_min_batch_is_the_speedup_threshold(transport) -> None:
    """Each table entry B is the smallest batch (>= W) whose modelled speed-up beats the target:
    S(B) > k, and S(B - 1) <= k unless B is W."""
    raw = scale_out_model.load()
    for dtype in ("float64", "float32"):
        given = scale_out_model.inputs(raw, dtype)
        for net in scale_out_model.NETWORKS:
            model = scale_out_model.Model(net, given)
            for w in scale_out_model.WORKERS:
                for k in (1.0, w / 2):
                    b = model.min_batch(transport, w, k)
                    assert model.speedup(transport, w, b) > k
                    assert b == w or model.speedup(transport, w, b - 1) <= k


@pytest.mark.needs_cc
def test_cluster_steps_are_actor_calls_not_tasks(client, tiny) -> None:
    """The model's premise for a Dask step: its latency is an actor call's round trip, not a
    task's. Epochs of ``sn.train``'s cluster steps make the scheduler run no task at all (its
    transition counter stands still), while they do train."""
    kernel, X, y = tiny

    def transitions() -> int:
        return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)

    def settled() -> int:
        """The counter once the placement's released futures have reached the scheduler."""
        seen = [transitions()]
        while len(seen) < 50 and (len(seen) < 2 or seen[-1] != seen[-2]):
            time.sleep(0.05)
            seen.append(transitions())
        return seen[-1]

    with scale_out.trainer(kernel, X, y, client=client, parts=2, batch_size=8) as run:
        run.epoch()
        before, theta = settled(), run.theta.copy()
        run.epoch()
        run.epoch()
        assert transitions() == before
    assert run.step == 3 * run.steps_per_epoch and not np.array_equal(run.theta, theta)


def test_dask_step_model_is_actor_calls_with_theta_in_each() -> None:
    """The model's Dask step: o is the measured empty actor call and tau the measured second
    actor's extra (medians over the runs); with one worker a step costs o, one theta out and one
    gradient back, two latencies and the update, and each further worker adds tau, one more
    theta and one more gradient through the driver's link, whatever theta's size (no scatter)."""
    raw = scale_out_model.load()
    every = [r["breakdown"] for r in raw["results"]]
    given = scale_out_model.inputs(raw, "float64")
    assert given.round_trip == pytest.approx(np.median([b["empty actor call"] for b in every]), rel=1e-12)
    assert given.further_actor == pytest.approx(
        np.median([max(0.0, b["2 actors at once"] - b["empty actor call"]) for b in every]), rel=1e-12)
    link = scale_out_model.Link("test", bandwidth=1e6, latency=1e-4)
    for net in scale_out_model.NETWORKS:
        model = scale_out_model.Model(net, given, link)
        assert model.theta_bytes == 8 * net.n_params and model.bytes == 8 * (net.n_params + 1)
        fixed = [model.fixed(scale_out_model.Transport.DASK, w) for w in (1, 2, 3)]
        per_worker = given.further_actor + (model.theta_bytes + model.bytes) / link.bandwidth
        assert fixed[1] - fixed[0] == pytest.approx(per_worker, rel=1e-9)
        assert fixed[2] - fixed[1] == pytest.approx(per_worker, rel=1e-9)
        one = given.round_trip + (model.theta_bytes + model.bytes) / link.bandwidth + 2 * link.latency + model.u
        assert fixed[0] == pytest.approx(one, rel=1e-9)
