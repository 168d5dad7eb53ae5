"""The checked-in examples under ``generated/`` and how to (re)generate them.

``generated/MANIFEST.toml`` lists each example (a network builder defined here, backends and
dtypes); NumPy output goes to ``generated/<example>/numpy/<example>_<dtype>.py``, C output
(``NAME.h``, ``NAME.c``, an example ``main.c`` and its ``Makefile``; with an ``optimizer`` the
train step and ``train_main.c``, and with ``data`` a training file) to
``generated/<example>/c/<dtype>/``.
``tests/golden/test_generated_in_sync.py`` regenerates into a temporary directory and fails
with a diff when the checked-in files drift; ``symnn regen`` (or
``pytest --update-generated``) rewrites them and deletes stale files.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Callable

from .declare import Dense, Network
from .demo import digits_network
from .driver import emit_files
from .emit import write_atomic
from .optim import optimizer


def xor_network() -> Network:
    return Network([Dense(2, 4, activation="tanh"), Dense(4, 1, activation="sigmoid")],
                   loss="bce", name="xor_mlp")


BUILDERS: dict[str, Callable[[], Network]] = {"xor": xor_network, "digits": digits_network}

#: training data shipped beside an example's C train program (one example per line)
DATA: dict[str, str] = {"xor": "0 0 0\n0 1 1\n1 0 1\n1 1 0\n"}


def manifest(root: str | Path) -> list[dict]:
    with open(Path(root) / "MANIFEST.toml", "rb") as fh:
        return tomllib.load(fh)["example"]


def expected_files(root: str | Path) -> dict[Path, str]:
    """Relative path -> text of every file the manifest asks for."""
    out: dict[Path, str] = {}
    for entry in manifest(root):
        net = BUILDERS[entry["builder"]]()
        opt = entry.get("optimizer")
        opt = optimizer(**opt) if opt else None
        for backend in entry["backends"]:
            for dtype in entry["dtypes"]:
                files = emit_files(net, backend=backend, dtype=dtype, example=backend == "c",
                                   optimizer=opt if backend == "c" else None)
                if backend == "c" and entry.get("data"):
                    files[f"{entry['data']}.txt"] = DATA[entry["data"]]
                if backend == "numpy":
                    (text,) = files.values()
                    out[Path(net.name) / backend / f"{net.name}_{dtype}.py"] = text
                else:
                    for name, text in files.items():
                        out[Path(net.name) / backend / dtype / name] = text
    return out


def files_on_disk(root: str | Path) -> set[Path]:
    """Every file under the manifest's example directories (relative to ``root``)."""
    root = Path(root)
    found: set[Path] = set()
    for entry in manifest(root):
        base = root / BUILDERS[entry["builder"]]().name
        found |= {p.relative_to(root) for p in base.rglob("*") if p.is_file()}
    return found


def regenerate(root: str | Path) -> list[Path]:
    """Rewrite every expected file under ``root`` and delete stale generated files."""
    root = Path(root)
    files = expected_files(root)
    for rel, text in sorted(files.items()):
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_atomic(path, text)
    for stale in files_on_disk(root) - set(files):
        (root / stale).unlink()
    return [root / rel for rel in sorted(files)]
