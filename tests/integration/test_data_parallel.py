"""Data-parallel training on Dask (issue 24, items 1 and 3).

The properties pinned: training on W = 1, 2 and 3 workers gives parameters bitwise equal to the
single-process run with the same parts (the batches and the order of the gradients' sum do not
depend on the workers), for in-memory arrays, dask arrays and Parquet files, on both backends
and dtypes; a worker killed mid-epoch loses nothing (the step runs again from the same
parameters); a run stopped and resumed from its checkpoint ends where an undisturbed run ends;
a worker without a C compiler trains on the NumPy kernel and the driver says so once; bad
settings are refused before any work.
"""

from __future__ import annotations

import os
import signal
import warnings

import dask.array as da
import distributed
import numpy as np
import pandas as pd
import pytest

import symnn as sn
from symnn.distributed import executor, worker
from symnn.distributed.parts import read_parquet
from symnn.distributed.schedule import Schedule, cover, node_sum, ranges, tree_sum
from symnn.errors import ConfigError, DataError, ModelFormatError, SpecTypeError

pytestmark = pytest.mark.needs_cc

SETTINGS = {"epochs": 2, "batch_size": 16, "seed": 3}


@pytest.fixture(scope="module")
def net() -> sn.Network:
    return sn.Network([sn.Dense(5, 7, "tanh", dropout=0.2), sn.Dense(7, 3, "softmax")], loss="cross_entropy",
                      l2=1e-3)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 5))
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.5)


@pytest.fixture(scope="module")
def clusters():
    """Clients of 1, 2 and 3 workers (threads of this process: cheap to start; the kill test
    below uses processes)."""
    opened = []
    for n in (1, 2, 3):
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=False,
                                           dashboard_address=":0")
        opened.append((cluster, distributed.Client(cluster, set_as_default=False)))
    yield {n: client for n, (_, client) in zip((1, 2, 3), opened)}
    for cluster, client in opened:
        client.close()
        cluster.close()


def _same(a: sn.TrainResult, b: sn.TrainResult) -> bool:
    return (a.params.keys() == b.params.keys() and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
            and a.history.train_loss == b.history.train_loss and a.steps == b.steps)


def test_the_tree_sum_is_the_same_from_any_split_of_the_parts() -> None:
    leaves = {j: np.array([1e16 if j == 0 else 1.0, (j + 1) / 7.0]) for j in range(11)}
    root = node_sum((0, 11), leaves.__getitem__)
    for w in range(1, 12):
        known = {node: node_sum(node, leaves.__getitem__) for a, b in ranges(11, w) for node in cover(a, b, 0, 11)}
        assert np.array_equal(tree_sum(11, known), root)
    # and it is not a left fold: the order is the tree's (1e16 + 1 rounds back to 1e16, ten
    # times over in a fold; the tree adds the ones together first)
    folded = leaves[0].copy()
    for j in range(1, 11):
        folded = folded + leaves[j]
    assert not np.array_equal(folded, root)


def test_every_row_trains_once_an_epoch_in_steps_of_about_batch_size() -> None:
    sched = Schedule((13, 40, 7), 10, seed=5)
    assert sched.steps_per_epoch == 6
    for epoch in (1, 2):
        seen = [np.concatenate([sched.order(epoch, j)[s] for s in range(6)]) for j in range(3)]
        assert all(np.array_equal(np.sort(rows), np.arange(n)) for rows, n in zip(seen, sched.sizes))
        # array_split deals the remainder to the first steps: 13 -> 3 2 2 2 2 2, 40 -> 7 7 7 7 6 6, 7 -> 2 1 1 1 1 1
        assert [sum(sched.step_rows(epoch, s)) for s in range(6)] == [12, 10, 10, 10, 9, 9]
        assert [sched.step_rows(epoch, s) for s in range(6)] == [[len(c) for c in chunks] for chunks in
                                                                 zip(*(sched.order(epoch, j) for j in range(3)))]
    assert not np.array_equal(sched.order(1, 1)[0], sched.order(2, 1)[0])  # reshuffled each epoch


@pytest.mark.parametrize("backend,dtype", [("c", "float64"), ("c", "float32"), ("numpy", "float64")])
def test_one_two_and_three_workers_train_bitwise_alike(net, data, clusters, backend, dtype) -> None:
    X, y = data
    ref = sn.train(net, X, y, backend=backend, dtype=dtype, parts=6, **SETTINGS)
    assert np.isfinite(ref.history.train_loss).all() and ref.history.train_loss[1] < ref.history.train_loss[0]
    for n, client in clusters.items():
        assert _same(sn.train(net, X, y, backend=backend, dtype=dtype, parts=6, client=client, **SETTINGS), ref), n
    # the blocks are real batches: the plain one-batch step is a different (nearby) computation
    plain = sn.train(net, X, y, backend=backend, dtype=dtype, **SETTINGS)
    assert not _same(plain, ref)


def test_dask_arrays_and_parquet_files_train_as_the_same_rows_in_memory(net, data, clusters, tmp_path) -> None:
    X, y = data
    ref = sn.train(net, X, y, backend="c", parts=3, **SETTINGS)  # pieces of 30 rows
    dx, dy = da.from_array(X, chunks=(30, 5)), da.from_array(y, chunks=30)
    for j in range(3):
        frame = pd.DataFrame(X[30 * j:30 * j + 30], columns=[f"x{i}" for i in range(5)])
        frame["label"] = y[30 * j:30 * j + 30]
        frame.to_parquet(tmp_path / f"shard{j}.parquet")
    px, py = read_parquet(str(tmp_path / "*.parquet"), 5)
    assert _same(sn.train(net, dx, dy, backend="c", **SETTINGS), ref)  # computed here, part by part
    assert _same(sn.train(net, dx, dy, backend="c", client=clusters[2], **SETTINGS), ref)
    assert _same(sn.train(net, px, py, backend="c", client=clusters[3], **SETTINGS), ref)


def test_a_worker_killed_mid_epoch_loses_nothing(net, data, monkeypatch) -> None:
    X, y = data
    ref = sn.train(net, X, y, backend="c", parts=4, **SETTINGS)
    original = executor.ClusterSteps._try_step
    tries = []

    def kill_one_then_step(self, *args):
        tries.append(args[3])
        if len(tries) == 4:  # mid-epoch 1: kill the process of the worker holding parts 0-1
            pids = self.client.run(os.getpid)
            os.kill(pids[self.assignment[0][1]], signal.SIGKILL)
        return original(self, *args)

    monkeypatch.setattr(executor.ClusterSteps, "_try_step", kill_one_then_step)
    result = sn.train(net, X, y, backend="c", parts=4, client="local:2", **SETTINGS)  # 2 worker processes
    assert _same(result, ref)
    assert len(tries) > result.steps and tries.count(tries[3]) >= 2  # the killed step ran again


@pytest.mark.parametrize("parts", [None, 3])
def test_a_run_resumed_from_its_checkpoint_ends_as_an_undisturbed_run(net, data, tmp_path, parts) -> None:
    X, y = data
    kw = dict(backend="c", batch_size=16, seed=3, parts=parts, validation_split=0.2, patience=5)
    ref = sn.train(net, X, y, epochs=4, **kw)
    path = tmp_path / "run.ckpt"
    sn.train(net, X, y, epochs=2, checkpoint=path, **kw)  # stopped after epoch 2
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]  # nothing half-written beside it
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    resumed = sn.train(net, X, y, epochs=4, checkpoint=path, **kw)
    assert _same(resumed, ref) and resumed.history.val_loss == ref.history.val_loss
    assert resumed.best_epoch == ref.best_epoch
    with pytest.raises(ConfigError, match="checkpoint of another run"):
        sn.train(net, X, y, epochs=4, checkpoint=path, **{**kw, "seed": 4})
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFormatError):
        sn.train(net, X, y, epochs=4, checkpoint=path, **kw)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_worker_without_a_compiler_trains_on_numpy_and_the_driver_says_so_once(net, data, clusters,
                                                                                 monkeypatch) -> None:
    X, y = data
    numpy_kernel = sn.compile(net, backend="numpy", optimizer="adam")

    def no_compiler(recipe):
        return numpy_kernel, "numpy"  # what kernel_for gives where CompilerNotFoundError was raised

    monkeypatch.setattr(worker, "kernel_for", no_compiler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sn.train(net, X, y, backend="c", parts=2, client=clusters[2], **SETTINGS)
    said = [w for w in caught if "no C compiler" in str(w.message)]
    assert len(said) == 1 and all(np.isfinite(v).all() for v in result.params.values())
    monkeypatch.undo()
    # and kernel_for itself falls back when the build finds no compiler
    from symnn.errors import CompilerNotFoundError

    def missing(*args, **kwargs):
        raise CompilerNotFoundError("no C compiler (test)")

    kernel = sn.compile(net, backend="c", optimizer="adam")
    recipe = worker.recipe_of(kernel, 0)
    fresh = worker.Recipe(*[getattr(recipe, f) for f in ("network", "backend", "dtype", "optimizer", "build",
                                                        "check_finite", "emitted", "seed")], key=("no-compiler-test",))
    monkeypatch.setattr("symnn.build.find_compiler", missing)
    built, used = worker.kernel_for(fresh)
    assert used == "numpy" and built.backend == "numpy"


def test_bad_settings_are_refused_before_any_work(net, data, monkeypatch) -> None:
    X, y = data

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled before refusing")

    monkeypatch.setattr("symnn.driver.compile", no_compile)
    dx, dy = da.from_array(X, chunks=(30, 5)), da.from_array(y, chunks=30)
    for kwargs, error in [({"parts": 0}, ConfigError), ({"parts": True}, ConfigError),
                          ({"client": "nowhere"}, ConfigError), ({"client": 3}, SpecTypeError),
                          ({"checkpoint": 5}, ConfigError), ({"checkpoint_every": 0}, ConfigError)]:
        with pytest.raises(error):
            sn.train(net, X, y, backend="c", **kwargs)
    with pytest.raises(ConfigError, match="parts= is for in-memory"):
        sn.train(net, dx, dy, parts=3)
    with pytest.raises(ConfigError, match="validation_split"):
        sn.train(net, dx, dy, validation_split=0.2)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="more than the 90 training rows"):
        sn.train(net, X, y, backend="numpy", parts=91, epochs=1)
    x = sn.Input(5)
    bn = sn.Network(inputs=x, outputs=sn.Dense(5, 3, "softmax")(sn.BatchNorm1d(5)(x)), loss="cross_entropy")
    with pytest.raises(DataError, match="running variance"):
        sn.train(bn, X, y, backend="numpy", parts=45, batch_size=45, epochs=1)  # blocks of one row


def test_the_cli_trains_parquet_shards_on_a_scheduler_and_checkpoints(tmp_path, clusters, capsys) -> None:
    from symnn.cli import main

    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    for j in range(3):
        frame = pd.DataFrame({"a": X[20 * j:20 * j + 20, 0], "b": X[20 * j:20 * j + 20, 1],
                              "label": y[20 * j:20 * j + 20]})
        frame.to_parquet(tmp_path / f"s{j}.parquet")
    spec = tmp_path / "xor.toml"
    spec.write_text('[network]\nname = "xor_mlp"\nloss = "bce"\n\n[[layer]]\nin = 2\nout = 4\nactivation = "tanh"\n\n'
                    '[[layer]]\nin = 4\nout = 1\nactivation = "sigmoid"\n\n'
                    '[train]\noptimizer = { name = "adam", lr = 0.05 }\nepochs = 3\nbatch_size = 8\n')
    address = clusters[2].scheduler.address
    ckpt = tmp_path / "run.ckpt"
    assert main(["train", str(spec), "--data", str(tmp_path / "*.parquet"), "--scheduler", address, "--backend", "c",
                 "--checkpoint", str(ckpt), "--out", str(tmp_path / "model.npz")]) == 0
    out = capsys.readouterr().out
    assert f"on {address}" in out and ckpt.exists()
    ref = sn.train(sn.load_spec(spec).network, X, y.reshape(-1, 1).astype(float), optimizer=sn.Adam(lr=0.05),
                   epochs=3, batch_size=8, backend="c", parts=3)
    saved = sn.load(tmp_path / "model.npz")
    assert all(np.array_equal(saved.params[k], ref.params[k]) for k in ref.params)
    assert f"final train loss {ref.history.train_loss[-1]:.6f}" in out


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_a_pickled_kernel_carries_its_source_not_a_module_and_builds_without_derivation(net, data, backend,
                                                                                       monkeypatch) -> None:
    import pickle

    X, y = data
    k = sn.compile(net, backend=backend, dtype="float32", optimizer="adam")
    blob = pickle.dumps(k)
    assert b"\x7fELF" not in blob and k.source.encode() in blob  # the source travels, not the .so

    def no_derivation(*args, **kwargs):
        raise AssertionError("derived again")

    monkeypatch.setattr("symnn.driver.derive_program", no_derivation)
    again = pickle.loads(blob)
    params = net.init_params(seed=2, dtype="float32")
    (l1, g1), (l2, g2) = k.loss_and_grad(params, X, y), again.loss_and_grad(params, X, y)
    assert l1 == l2 and all(np.array_equal(g1[name], g2[name]) for name in g1)
    assert again.source == k.source and again.optimizer == k.optimizer and again.backend == backend


def test_a_step_that_keeps_failing_raises_worker_lost_after_placing_the_parts_again() -> None:
    from symnn.errors import WorkerLostError

    steps = executor.ClusterSteps.__new__(executor.ClusterSteps)  # no cluster: the retry rule alone
    placed: list[int] = []
    steps._place = lambda: placed.append(1)

    def dying():
        raise OSError("Unable to contact Actor's worker")

    with pytest.raises(WorkerLostError, match=f"{executor.ClusterSteps.RETRIES + 1} tries failed"):
        steps._retrying(dying)
    assert len(placed) == executor.ClusterSteps.RETRIES  # placed again before every retry
    with pytest.raises(ValueError):  # anything but a lost worker is not retried
        steps._retrying(lambda: int("x"))
    assert len(placed) == executor.ClusterSteps.RETRIES
