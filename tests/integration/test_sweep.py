"""Sweeps (issue 24, item 2): one ``sn.train`` per grid point, in turn or as Dask tasks.

The properties pinned: the grid is checked whole before any training; rows come in the
cartesian order of the grid; every point's parameters are bitwise those of the ``sn.train`` call
that a user would write for it by hand, in this process or on a LocalCluster's worker
processes, and again when the point is rerun alone; a diverging point is a row, not an
exception; the CLI and the plot write their files whole.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import signal
from pathlib import Path

import distributed
import numpy as np
import pytest

import symnn as sn
from symnn.cli import main
from symnn.distributed import sweep as sweep_module
from symnn.distributed.sweep_plot import log_axis
from symnn.errors import ConfigError, NonFiniteError, SpecTypeError

XOR = Path(__file__).resolve().parents[2] / "examples" / "xor.toml"
GRID = {"lr": [0.05, 1e100], "l2": [0.0, 1e-3]}  # lr=1e100 overflows in the first epoch
SETTINGS = {"optimizer": "sgd", "epochs": 2, "batch_size": 8, "seed": 3}


@pytest.fixture(scope="module")
def net() -> sn.Network:
    return sn.Network([sn.Dense(3, 6, "tanh"), sn.Dense(6, 1)], loss="mse")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).normal(size=(40, 3))
    return X, np.sin(X.sum(axis=1, keepdims=True))


@pytest.fixture(scope="module")
def in_process(net, data) -> sn.SweepResult:
    with np.errstate(over="ignore", invalid="ignore"):  # the diverging point's overflow
        return sn.sweep(net, GRID, *data, **SETTINGS)


@pytest.fixture(scope="module")
def client():
    # worker processes: the network, data and results cross a pickle, as on other machines
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as cluster, distributed.Client(cluster) as c:
        yield c


def _by_hand(net: sn.Network, X, Y, lr: float, l2: float) -> dict[str, np.ndarray]:
    """The point (lr, l2) written as a user would, without the sweep."""
    penalised = sn.Network([sn.Dense(3, 6, "tanh"), sn.Dense(6, 1)], loss="mse", l2=l2)
    return sn.train(penalised, X, Y, optimizer=sn.SGD(lr=lr), epochs=2, batch_size=8, seed=3).params


def _same(a: object, b: object) -> bool:
    """Equal, NaN (a failed point's metric) counting as equal to NaN."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("grid, kwargs, error, words", [
    ({"momentun": [0.9]}, {}, ConfigError, "allowed keys: optimizer, "),
    ({"lr": []}, {}, ConfigError, "empty"),
    ({"lr": 0.1}, {}, SpecTypeError, "list of values"),
    ({"lr": [0.1, 0.01, -1.0]}, {}, ConfigError, r"point 2 \(lr=-1.0\).*lr must be"),
    ({"l2": [0.0, -1e-3]}, {}, ConfigError, "l2 must be"),
    ({"epochs": [2, 1.5]}, {}, ConfigError, r"grid\['epochs'\]\[1\]"),
    ({"seed": [True]}, {}, SpecTypeError, "seed takes a number"),
    ({"optimizer": ["sgd", "adamm"]}, {}, ConfigError, "'adamm' is not an optimizer"),
    ({"optimizer": ["sgd"], "beta1": [0.9]}, {}, ConfigError, "no hyperparameter"),
    ({"lr": [0.1]}, {"kernel": None}, ConfigError, "not settings of a point"),
    ({"lr": [0.1]}, {"epochz": 2}, ConfigError, "not settings of a point"),
    ({"epochs": [1]}, {"epochs": 2}, ConfigError, "both in the grid and as a keyword"),
    ({"lr": [0.1]}, {"batch_size": 0}, ConfigError, "batch_size takes an integer >= 1"),
    ({"lr": [0.1]}, {"client": "local:many"}, ConfigError, "client must be"),
])
def test_bad_grid_is_refused_before_any_training(net, data, monkeypatch, grid, kwargs, error, words):
    ran = []
    monkeypatch.setattr(sweep_module, "run_point", lambda *a: ran.append(a))
    client = kwargs.pop("client", None)
    with pytest.raises(error, match=words):
        sn.sweep(net, grid, *data, client=client, **kwargs)
    assert ran == []


def test_rows_come_in_cartesian_order_and_record_seed_and_settings(in_process):
    assert [(r["point"], r["lr"], r["l2"]) for r in in_process.rows] == [
        (i, lr, l2) for i, (lr, l2) in enumerate(itertools.product(GRID["lr"], GRID["l2"]))]
    assert all(r["seed"] == 3 for r in in_process.rows)
    assert in_process.rows[1]["settings"].startswith("sgd(lr=0.05, weight_decay=0.0); l1=0.0, l2=0.001;")
    table = in_process.table()  # pandas is installed here
    assert list(table.index) == [0, 1, 2, 3] and list(table["lr"]) == [0.05, 0.05, 1e100, 1e100]


def test_each_point_is_the_train_call_written_by_hand_and_reruns_alone(net, data, in_process):
    for i in (0, 1):
        row = in_process.rows[i]
        expected = _by_hand(net, *data, row["lr"], row["l2"])
        assert _equal(in_process.params(i), expected)
        assert _equal(in_process.rerun(i).params, expected)
        assert row["train_loss"] == in_process.history(i).train_loss[-1]
        assert (row["steps"], row["best_epoch"]) == (10, 2)  # 40 rows / 8 per step, 2 epochs


def test_a_diverging_point_is_a_row_not_an_exception(in_process):
    for row in in_process.rows[2:]:
        assert "non-finite value at epoch 1" in row["error"]
        assert math.isnan(row["train_loss"]) and row["steps"] is None
    assert in_process.rows[0]["error"] is None
    with pytest.raises(NonFiniteError, match="point 2 has no parameters"):
        in_process.params(2)
    assert in_process.best()["point"] == min((0, 1), key=lambda i: in_process.rows[i]["train_loss"])
    with pytest.raises(ConfigError, match="'val_loss' is not in these rows"):
        in_process.best("val_loss")


def test_a_sweep_on_a_local_cluster_equals_the_sweep_in_this_process(net, data, in_process, client, monkeypatch):
    scattered, submitted = [], []
    scatter, submit, gather = client.scatter, client.submit, client.gather
    monkeypatch.setattr(client, "scatter", lambda *a, **k: scattered.append(a) or scatter(*a, **k))
    monkeypatch.setattr(client, "submit", lambda *a, **k: submitted.append(a) or submit(*a, **k))

    def kill_a_worker_then_gather(*args, **kwargs):  # points in flight on it run again elsewhere
        pids = client.run(os.getpid)
        os.kill(pids[sorted(pids)[0]], signal.SIGKILL)
        return gather(*args, **kwargs)

    monkeypatch.setattr(client, "gather", kill_a_worker_then_gather)
    with np.errstate(over="ignore", invalid="ignore"):
        on_dask = sn.sweep(net, GRID, *data, client=client, **SETTINGS)
    assert (len(scattered), len(submitted)) == (1, 4)  # the data once, one task per point
    for i, (here, there) in enumerate(zip(in_process.rows, on_dask.rows)):
        assert here.keys() == there.keys()
        assert all(_same(here[k], there[k]) for k in here if k != "seconds"), (here, there)
        if here["error"] is None:
            assert _equal(on_dask.params(i), in_process.params(i))
    assert on_dask.rows[3]["error"] is not None  # failed on a worker, recorded here
    assert client.status == "running"  # a user's client is left open


def test_validation_rows_carry_the_best_epochs_metrics(net, data):
    X, Y = data
    result = sn.sweep(net, {"lr": [0.02, 0.2]}, X[:30], Y[:30], validation=(X[30:], Y[30:]), **SETTINGS)
    for i, row in enumerate(result.rows):
        h = result.history(i)
        assert row["val_loss"] == min(h.val_loss) == h.val_loss[row["best_epoch"] - 1]
    assert result.best()["val_loss"] == min(r["val_loss"] for r in result.rows)


def test_the_cli_sweeps_a_spec_on_a_csv_and_writes_the_table_and_plot(tmp_path, data, capsys):
    spec = tmp_path / "net.toml"
    spec.write_text('[network]\nloss = "mse"\n\n[[layer]]\nin = 3\nout = 6\nactivation = "tanh"\n\n'
                    '[[layer]]\nin = 6\nout = 1\n\n'
                    '[train]\noptimizer = "sgd"\nepochs = 2\nbatch_size = 8\nseed = 3\nbackend = "numpy"\n')
    X, Y = data
    rows = np.hstack([X, Y])
    (tmp_path / "d.csv").write_text("a,b,c,y\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in rows) + "\n")
    out, png = tmp_path / "res" / "sweep.csv", tmp_path / "sweep.png"
    argv = ["sweep", str(spec), "--data", str(tmp_path / "d.csv"), "--grid", "lr=0.05,0.2", "--grid", "epochs=1,2",
            "--out", str(out), "--plot", str(png)]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[:4] == ["point", "lr", "epochs", "seed"] and len(printed) == 1 + 4 + 2
    with open(out, newline="") as fh:
        written = list(csv.DictReader(fh))
    reference = sn.sweep(sn.load_spec(spec), {"lr": [0.05, 0.2], "epochs": [1, 2]}, X, Y)
    assert [(float(r["lr"]), int(r["epochs"]), float(r["train_loss"])) for r in written] == [
        (r["lr"], r["epochs"], r["train_loss"]) for r in reference.rows]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "net.toml", "res", "sweep.png"]


@pytest.mark.parametrize("grid_arg, words", [
    ("epochs=1,2.5", "--grid epochs: '2.5' is not an integer"),
    ("lr", "expected KEY=V1,V2"),
    ("lr=", "no values"),
    ("gamma=0.1", "allowed keys"),
])
def test_the_cli_refuses_bad_grid_values_naming_the_key(tmp_path, capsys, grid_arg, words):
    assert main(["sweep", str(XOR), "--data", str(tmp_path / "none.csv"), "--grid", grid_arg]) == 2
    assert words in capsys.readouterr().err


def test_plot_writes_a_heat_map_png_whole(in_process, tmp_path):
    png = tmp_path / "heat.png"
    assert in_process.plot(png) == png  # two keys: a heat map, the failed points as gaps
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert [p.name for p in tmp_path.iterdir()] == ["heat.png"]


def test_log_axis_for_positive_values_spread_over_ten_times():
    assert log_axis([1e-3, 0.1]) and not log_axis([0.1, 0.5])
    assert not log_axis([0.0, 1.0]) and not log_axis(["sgd", "adam"])
