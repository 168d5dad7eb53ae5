"""U5: emitting into a folder writes only inside it, whatever the network's name or what was
planted there (a symlink named like an emitted file is replaced, never followed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import symnn as sn


def _net(name: str = "paths") -> sn.Network:
    return sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 1, "sigmoid")], loss="bce", name=name)


@pytest.mark.parametrize("name", ["../escape", "/etc/evil", "a/b", "..", "x\\y", "main"])
def test_a_name_that_is_a_path_is_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    with pytest.raises(sn.SymnnError):
        sn.emit(_net(name), tmp_path / "out", backend="c")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_a_planted_symlink_is_replaced_not_followed(tmp_path: Path, backend: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    out = tmp_path / "out"
    out.mkdir()
    planted = out / ("paths.py" if backend == "numpy" else "paths.c")
    planted.symlink_to(victim)
    written = sn.emit(_net(), out, backend=backend)
    assert victim.read_text() == "untouched\n"
    assert planted in written and planted.is_file() and not planted.is_symlink()
    assert all(p.resolve().parent == out.resolve() for p in written)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a staging file was left behind"


def test_a_symlinked_output_folder_is_the_users_choice_but_nothing_lands_beside_it(tmp_path: Path) -> None:
    # the folder itself may be a link the user made; files still land only inside its target
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    sn.emit(_net(), link, backend="c")
    assert {p.name for p in real.iterdir()} >= {"paths.c", "paths.h", "main.c", "Makefile"}
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]
