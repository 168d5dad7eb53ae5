"""The ``symnn`` command: demo on both backends, regen, cache listing and clearing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from symnn.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("backend", ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)])
def test_demo_trains(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--epochs", "4", "--backend", backend]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ") and float(last.split(": ")[1]) > 0.9


def test_regen_writes_the_checked_in_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(ROOT / "generated" / "MANIFEST.toml", tmp_path / "MANIFEST.toml")
    (tmp_path / "xor_mlp" / "numpy").mkdir(parents=True)
    (tmp_path / "xor_mlp" / "numpy" / "stale.py").write_text("x = 1\n")
    assert main(["regen", "--root", str(tmp_path)]) == 0
    written = {Path(p).relative_to(tmp_path) for p in capsys.readouterr().out.split()}
    assert Path("digits_mlp/c/float32/digits_mlp.c") in written
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (ROOT / "generated" / rel).read_bytes(), rel
    assert not (tmp_path / "xor_mlp" / "numpy" / "stale.py").exists()


@pytest.mark.needs_cc
def test_cache_list_and_clear(tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    import symnn as sn
    from symnn import build

    monkeypatch.setenv("SYMNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(build, "_loaded", {})
    net = sn.Network([sn.Dense(2, 2, "tanh")], loss="mse", name="tiny")
    k = sn.compile(net, backend="c")
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "1 module(s)" in out and "_symnn_tiny_" in out
    assert main(["cache", "--clear"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert not [d for d in tmp_path.glob("_symnn_*") if d.is_dir()]
    p = net.init_params(seed=0)
    assert k.forward(p, [[1.0, 2.0]]).shape == (1, 2)  # the loaded module keeps working
    sn.compile(net, backend="c")  # and the next compile rebuilds
    assert len([d for d in tmp_path.glob("_symnn_tiny_*") if d.is_dir()]) == 1
