"""generated/ is what the compiler emits today, byte for byte, and it is known-good."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from tests.catalogue import data
from symnn.golden import BUILDERS, expected_files, files_on_disk, manifest, regenerate

ROOT = Path(__file__).resolve().parents[2] / "generated"


def test_generated_in_sync(update_generated: bool) -> None:
    if update_generated:
        regenerate(ROOT)
    expected = expected_files(ROOT)
    problems = []
    for rel, text in sorted(expected.items()):
        path = ROOT / rel
        if not path.exists():
            problems.append(f"missing {rel}")
            continue
        current = path.read_text(encoding="utf-8")
        if current != text:
            problems.append("".join(difflib.unified_diff(
                current.splitlines(True), text.splitlines(True), f"generated/{rel}", f"emitted/{rel}")))
    on_disk = files_on_disk(ROOT)
    problems += [f"stale {p}" for p in sorted(on_disk - set(expected))]
    assert not problems, ("generated/ drifted; run `symnn regen` or "
                          "`pytest tests/golden --update-generated`\n" + "\n".join(problems))


def test_generated_modules_are_correct() -> None:
    for entry in manifest(ROOT):
        net = BUILDERS[entry["builder"]]()
        if "numpy" not in entry["backends"]:
            continue
        for dtype in entry["dtypes"]:
            path = ROOT / net.name / "numpy" / f"{net.name}_{dtype}.py"
            spec = importlib.util.spec_from_file_location(f"gen_{net.name}_{dtype}", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            k = sn.compile(net, dtype=dtype)
            p = net.init_params(seed=0, dtype=dtype)
            X, Y = data(net, n=7, params=net.init_params(seed=0))
            X = X.astype(dtype)
            Y = Y if Y.ndim == 1 else np.clip(Y, 0, 1).astype(dtype)
            loss, grads = mod.loss_and_grad(p, X, Y)
            ref = k.loss_and_grad(p, X, Y)
            assert loss == ref[0]
            assert all(np.array_equal(grads[n], ref[1][n]) for n in grads)
            k.module = mod  # gradcheck the checked-in file itself
            assert sn.gradcheck(k, p, X, Y).passed


@pytest.mark.needs_cc
def test_generated_c_is_correct() -> None:
    """Build the checked-in .h/.c themselves and gradcheck them through the Python wrapper."""
    from symnn.backends.c.wrapper import CKernelModule
    from symnn.build import build
    from symnn.driver import derive_program
    from symnn.backends.c.emit import emit_c

    for entry in manifest(ROOT):
        net = BUILDERS[entry["builder"]]()
        if "c" not in entry["backends"]:
            continue
        for dtype in entry["dtypes"]:
            folder = ROOT / net.name / "c" / dtype
            files = {f"{net.name}.{ext}": (folder / f"{net.name}.{ext}").read_text(encoding="utf-8")
                     for ext in ("h", "c")}
            opt = sn.optimizer(**entry["optimizer"]) if entry.get("optimizer") else None
            cdef = emit_c(net, derive_program(net).program, dtype, opt).cdef
            k = sn.compile(net, dtype=dtype)
            k.module = CKernelModule(build(net.name, files, cdef), net.name, dtype, net.param_layout(),
                                     net.loss.name == "cross_entropy")
            p = net.init_params(seed=0, dtype=dtype)
            X, Y = data(net, n=7, params=net.init_params(seed=0))
            X = X.astype(dtype)
            Y = Y if Y.ndim == 1 else np.clip(Y, 0, 1).astype(dtype)
            report = sn.gradcheck(k, p, X, Y)
            assert report.passed, str(report)


@pytest.mark.needs_cc
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_generated_xor_trains_in_plain_c(tmp_path: Path, dtype: str) -> None:
    """The checked-in XOR example trains to 100 % accuracy with no Python (make + run)."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make not installed")
    work = tmp_path / "xor"
    shutil.copytree(ROOT / "xor_mlp" / "c" / dtype, work)
    built = subprocess.run(["make", "-C", str(work)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    run = subprocess.run([str(work / "xor_mlp_train"), str(work / "xor.txt"), "500", str(work / "p.bin")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "accuracy 1.0000", run.stdout
    first, last = float(lines[0].split()[-1]), float(lines[-2].split()[-1])
    assert last < 0.01 < first
    # the trained weights drive the Python kernel to the same predictions
    net = BUILDERS["xor"]()
    k = sn.compile(net, dtype=dtype)
    theta = np.fromfile(work / "p.bin", dtype=dtype)
    out = k.forward(k.unpack(theta), np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype))[:, 0]
    assert list(out > 0.5) == [False, True, True, False]
