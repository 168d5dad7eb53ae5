"""benchmarks/scale_out.py and benchmarks/scale_out_model.py (issue 24, item 4), on tiny cases.

The benchmark drives each system through ``sn.train``'s own step strategies, epoch by epoch, so
that only epochs are timed; what it times must be what ``sn.train`` computes: its epochs give
``sn.train``'s parameters bit for bit, on one process and on a cluster. Its whole measurement
runs (one round) on a tiny network, so that the script cannot rot. The model's tables in
docs/scale_out.md are its function's output on the committed measurement, and its closed-form
batch thresholds are the thresholds of its own speed-up.
"""

from __future__ import annotations

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


def test_step_latency_follows_the_executors_inline_rule() -> None:
    """The model's step latency o is the empty-task round trip while theta fits in
    ``ClusterSteps.INLINE_BYTES`` (it rides in the tasks) and adds the scatter one byte above,
    and each further worker costs the link one more theta and one more gradient (theta once per
    task), whichever way theta travels."""
    from symnn.distributed.executor import ClusterSteps

    given = scale_out_model.inputs(scale_out_model.load(), "float64")
    limit = ClusterSteps.INLINE_BYTES
    assert given.step_latency(limit) == given.round_trip
    assert given.step_latency(limit + 1) == given.round_trip + given.scatter
    assert [n.name for n in scale_out_model.NETWORKS if 8 * n.n_params > limit] == ["10M MLP"]
    link = scale_out_model.Link("test", bandwidth=1e6, latency=0.0)
    for net in scale_out_model.NETWORKS:
        model = scale_out_model.Model(net, given, link)
        per_worker = given.dask_task + (model.theta_bytes + model.bytes) / link.bandwidth
        fixed = [model.fixed(scale_out_model.Transport.DASK, w) for w in (1, 2)]
        assert fixed[1] - fixed[0] == pytest.approx(per_worker, rel=1e-9)
        one = given.step_latency(model.theta_bytes) + (model.theta_bytes + model.bytes) / link.bandwidth + model.u
        assert fixed[0] == pytest.approx(one, rel=1e-9)
