#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of the model loader, ``symnn.load``
(RELIABILITY.md U1, U2, U6): only :class:`~symnn.errors.ModelFormatError` may escape, and no
input may run a payload.

    pip install atheris
    python fuzz/atheris_model.py NEW_DIR -runs=1000000   # or -max_total_time=600

With an empty NEW_DIR the run starts from fuzz/fuzz_model.py's seed models, written there
first, plus their JSON descriptions. An input that starts with ``PK`` (a zip) is written as
the model file itself; any other input is taken as the JSON description and packed with the
first seed's arrays, so libFuzzer explores the description and the expression reader rather
than zip checksums. A crash is written by libFuzzer as ``crash-*`` in the working directory;
commit it under fuzz/crashers/ with its fix. fuzz/fuzz_model.py is the dependency-free
mutation fuzzer whose short run CI executes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["symnn"]):
    from symnn.errors import ModelFormatError

import fuzz_model  # noqa: E402 - the seed models, packing and loading

_SCRATCH = Path(tempfile.mkdtemp(prefix="symnn-atheris-model-"))
_MARKER = _SCRATCH / "pwned"
_SEEDS = fuzz_model.seed_models()
_ARRAYS = fuzz_model.unpack(_SEEDS[1])


def one_input(data: bytes) -> None:
    if not data.startswith(b"PK"):
        data = fuzz_model.with_meta(_ARRAYS, data.decode("utf-8", errors="replace").replace("MARKER", str(_MARKER)))
    try:
        fuzz_model.load_bytes(data, _SCRATCH)
    except ModelFormatError:
        pass
    if _MARKER.exists():
        raise RuntimeError("a payload in the model file ran")


def _seed_corpus(folder: Path) -> None:
    """Write the seed models and their descriptions into an empty corpus folder."""
    if folder.is_dir() and not any(folder.iterdir()):
        for i, model in enumerate(_SEEDS):
            (folder / f"seed-{i}.npz").write_bytes(model)
            (folder / f"seed-{i}.json").write_text(str(fuzz_model.unpack(model)["meta"]))


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        if not arg.startswith("-"):
            _seed_corpus(Path(arg))
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
