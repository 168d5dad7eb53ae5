#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of the ONNX importer, ``symnn.from_onnx``
(RELIABILITY.md U4): only symnn's own errors (:class:`~symnn.errors.SymnnError`) may escape.

    pip install atheris onnx
    python fuzz/atheris_onnx.py NEW_DIR -runs=1000000   # or -max_total_time=600

With an empty NEW_DIR the run starts from fuzz/fuzz_onnx.py's seed models, written there
first. Each input is the bytes of an .onnx file, written to a scratch folder that also holds an
external-data file, a link to one outside it and a file one level up, and read back with
``from_onnx(path)``. A crash (any other exception) is written by libFuzzer as ``crash-*`` in the
working directory; commit it under fuzz/crashers/ with its fix. fuzz/fuzz_onnx.py is the
dependency-free mutation fuzzer whose short run CI executes.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["symnn"]):
    from symnn.errors import SymnnError
    from symnn.interop import from_onnx

import fuzz_onnx  # noqa: E402 - the seed models and the scratch folder's layout

_SCRATCH = Path(tempfile.mkdtemp(prefix="symnn-atheris-onnx-"))
fuzz_onnx.prepare_folder(_SCRATCH)
_MODEL = _SCRATCH / "m" / "model.onnx"


def one_input(data: bytes) -> None:
    _MODEL.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from_onnx(_MODEL, name="fuzzed")
        except SymnnError:
            pass


def _seed_corpus(folder: Path) -> None:
    """Write the seed models into an empty corpus folder, so libFuzzer starts from valid files."""
    if folder.is_dir() and not any(folder.iterdir()):
        for i, model in enumerate(fuzz_onnx.seed_models()):
            (folder / f"seed-{i}.onnx").write_bytes(model.SerializeToString())


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        if not arg.startswith("-"):
            _seed_corpus(Path(arg))
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
