"""The cffi build cache (RELIABILITY.md B1-B10, K1-K4, K6) and the C wrapper's input handling (C6-C8)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn import build as build_mod
from symnn.errors import CacheError, CompileError, CompilerNotFoundError, DTypeError

pytestmark = pytest.mark.needs_cc
ROOT = Path(__file__).resolve().parents[2]


def _net(width: int = 4, name: str = "cachenet") -> sn.Network:
    return sn.Network([sn.Dense(2, width, "tanh"), sn.Dense(width, 1, "sigmoid")], loss="bce", name=name)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache dir é"  # B10: spaces and non-ASCII in the path
    monkeypatch.setenv("SYMNN_CACHE_DIR", str(root))
    monkeypatch.setattr(build_mod, "_loaded", {})
    return root


def _compiles(root: Path) -> int:
    log = root / "build.log"
    return sum(" compile " in line for line in log.read_text().splitlines()) if log.exists() else 0


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 2)), rng.uniform(size=(6, 1))


def test_hit_miss_and_source_kept_beside_extension(cache: Path) -> None:
    k = sn.compile(_net(), backend="c")
    assert _compiles(cache) == 1
    (entry,) = [p for p in cache.iterdir() if p.is_dir() and p.name.startswith("_symnn_")]
    names = {p.name for p in entry.iterdir()}
    assert {"cachenet.c", "cachenet.h", "manifest.json", f"{entry.name}.c"} <= names
    build_mod._loaded.clear()  # a fresh process would start like this: disk hit, no compile
    k2 = sn.compile(_net(), backend="c")
    assert _compiles(cache) == 1
    p = _net().init_params(seed=0)
    X, Y = _data()
    assert k.loss(p, X, Y) == k2.loss(p, X, Y)


def test_B6_key_covers_every_input() -> None:
    files = {"m.c": "int x;", "m.h": ""}
    cc = build_mod.Compiler(("gcc",), "gcc 12")
    base = build_mod.cache_key(files, "cdef", cc, ("-O3",))
    variants = [
        build_mod.cache_key({**files, "m.c": "int y;"}, "cdef", cc, ("-O3",)),
        build_mod.cache_key(files, "cdef2", cc, ("-O3",)),
        build_mod.cache_key(files, "cdef", build_mod.Compiler(("gcc",), "gcc 13"), ("-O3",)),
        build_mod.cache_key(files, "cdef", build_mod.Compiler(("clang",), "gcc 12"), ("-O3",)),
        build_mod.cache_key(files, "cdef", cc, ("-O2",)),
    ]
    assert len({base, *variants}) == 6


def test_B6_key_is_independent_of_hash_seed() -> None:
    code = ("import symnn as sn; from symnn.driver import derive_program; from symnn.backends.c.emit import emit_c; "
            "from symnn import build as b; net = sn.Network([sn.Dense(2, 3, 'relu'), sn.Dense(3, 2, 'softmax')], "
            "loss='cross_entropy'); r = emit_c(net, derive_program(net).program, 'float64'); "
            "print(b.cache_key(r.files, r.cdef, b.Compiler(('gcc',), 'id'), ('-O3',)))")
    keys = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                           capture_output=True, text=True, check=True, cwd=ROOT).stdout for seed in ("0", "12345")}
    assert len(keys) == 1


@pytest.fixture(scope="module")
def built_entry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The entry a first compile of :func:`_net` leaves, built once for the B5 cases (each
    damages a copy of its own): one compiler run for the six, not six more."""
    root = tmp_path_factory.mktemp("built")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYMNN_CACHE_DIR", str(root))
        mp.setattr(build_mod, "_loaded", {})
        sn.compile(_net(), backend="c")
    (entry,) = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("_symnn_")]
    return entry


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "manifest_hash", "manifest_abi",
                                    "no_manifest"])
def test_B5_corrupt_entry_is_detected_and_rebuilt(cache: Path, built_entry: Path, damage: str) -> None:
    cache.mkdir(mode=0o700)
    shutil.copytree(built_entry, cache / built_entry.name)
    sn.compile(_net(), backend="c")  # a hit: loaded (mapped) as after its own build
    assert _compiles(cache) == 0
    (entry,) = [p for p in cache.iterdir() if p.is_dir() and p.name.startswith("_symnn_")]
    manifest = json.loads((entry / "manifest.json").read_text())
    so = entry / manifest["extension"]
    # damage through a new inode: this process has the old .so mapped, and truncating a
    # mapped file in place would kill it with SIGBUS
    def replace(data: bytes) -> None:
        (entry / "new").write_bytes(data)
        os.replace(entry / "new", so)

    if damage == "empty":
        replace(b"")
    elif damage == "truncated":
        replace(so.read_bytes()[:1000])
    elif damage == "garbage":
        replace(b"\x7fELF not really" * 100)
    elif damage == "manifest_hash":
        manifest["sha256"] = "0" * 64
        (entry / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "manifest_abi":
        manifest["abi"] = "cpython-27 .so"
        (entry / "manifest.json").write_text(json.dumps(manifest))
    else:
        (entry / "manifest.json").unlink()
    build_mod._loaded.clear()
    with pytest.warns(RuntimeWarning, match="corrupt"):
        k = sn.compile(_net(), backend="c")
    assert _compiles(cache) == 1  # rebuilt
    X, Y = _data()
    assert np.isfinite(k.loss(_net().init_params(seed=0), X, Y))


def test_B2_compile_failure_names_command_output_and_sources(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("SYMNN_CFLAGS", "-fthis-flag-does-not-exist")
    with pytest.raises(CompileError) as info:
        sn.compile(_net(), backend="c")
    msg = str(info.value)
    assert "-fthis-flag-does-not-exist" in msg and "command:" in msg
    kept = Path(re.search(r"sources kept in (.+)", msg).group(1))
    assert (kept / "cachenet.c").is_file()
    assert not [p for p in cache.iterdir() if p.name.startswith("._symnn_")]  # no temp dir left


def test_B1_no_compiler(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/bin/cc")
    with pytest.raises(CompilerNotFoundError, match="apt install gcc|backend='numpy'"):
        sn.compile(_net(), backend="c")
    with pytest.warns(RuntimeWarning, match="NumPy"):
        k = sn.compile(_net(), backend="auto")
    assert k.backend == "numpy"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_B3_read_only_cache_falls_back(cache: Path, monkeypatch, tmp_path: Path) -> None:
    cache.mkdir(parents=True)
    cache.chmod(0o555)
    monkeypatch.setattr(build_mod.tempfile, "tempdir", str(tmp_path / "tmpdir"))
    (tmp_path / "tmpdir").mkdir()
    try:
        with pytest.warns(RuntimeWarning, match="not writable"):
            k = sn.compile(_net(), backend="c")
        assert k.backend == "c"
    finally:
        cache.chmod(0o755)


def test_B3_unwritable_cache_falls_back_even_as_root(cache: Path, monkeypatch, tmp_path: Path) -> None:
    real = build_mod.tempfile.NamedTemporaryFile

    def refuse(*args, **kw):
        if Path(kw.get("dir", "")) == cache:
            raise PermissionError(13, "Permission denied")
        return real(*args, **kw)

    monkeypatch.setattr(build_mod.tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setattr(build_mod.tempfile, "tempdir", str(tmp_path / "tmpdir"))
    (tmp_path / "tmpdir").mkdir()
    with pytest.warns(RuntimeWarning, match="not writable"):
        k = sn.compile(_net(), backend="c")
    assert k.backend == "c" and _compiles(cache) == 0
    assert list((tmp_path / "tmpdir").glob("symnn-cache-*/build.log"))


def test_B4_cache_path_is_a_file_or_missing(cache: Path, tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "afile"
    bad.write_text("x")
    monkeypatch.setenv("SYMNN_CACHE_DIR", str(bad))
    with pytest.raises(CacheError, match="SYMNN_CACHE_DIR"):
        sn.compile(_net(), backend="c")
    deep = tmp_path / "a" / "b" / "c"
    monkeypatch.setenv("SYMNN_CACHE_DIR", str(deep))
    sn.compile(_net(), backend="c")
    assert (deep / "build.log").is_file()


def test_B9_changed_spec_same_name_gets_a_new_module(cache: Path) -> None:
    k4, k5 = sn.compile(_net(4), backend="c"), sn.compile(_net(5), backend="c")
    assert k4.module.lib is not k5.module.lib
    X, Y = _data()
    for w, k in ((4, k4), (5, k5)):
        p = _net(w).init_params(seed=1)
        assert k.loss(p, X, Y) == pytest.approx(sn.compile(_net(w)).loss(p, X, Y), rel=1e-14)


_BUILD_SCRIPT = textwrap.dedent("""
    import hashlib, sys, numpy as np, symnn as sn
    w = int(sys.argv[1])
    net = sn.Network([sn.Dense(2, w, "tanh"), sn.Dense(w, 1, "sigmoid")], loss="bce", name="cachenet")
    k = sn.compile(net, backend="c")
    rng = np.random.default_rng(0)
    loss, g = k.loss_and_grad(net.init_params(seed=0), rng.normal(size=(6, 2)), rng.uniform(size=(6, 1)))
    print(w, hashlib.sha256(np.concatenate([np.array([loss])] + [v.ravel() for v in g.values()]).tobytes()).hexdigest())
""")


def _spawn(cache: Path, widths: list[int], extra_env: dict | None = None) -> list[subprocess.Popen]:
    env = {**os.environ, "SYMNN_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT), **(extra_env or {})}
    return [subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, str(w)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for w in widths]


@pytest.mark.slow
def test_K1_K2_stampede_on_a_cold_cache(cache: Path) -> None:
    """``SYMNN_STAMPEDE_PROCESSES`` processes on one key (default 3, more than the cores here; plus 3 on a
    second key in the first round) into an empty cache, ``SYMNN_STAMPEDE_ROUNDS`` rounds (default
    2, the fewest that compare results across rounds), which keeps the README's test command
    within its time on 2 cores (RELIABILITY.md nightly: 16 processes, 20 rounds): 0 failures, one
    compile per key per round, bitwise-identical results across every round."""
    rounds = int(os.environ.get("SYMNN_STAMPEDE_ROUNDS", "2"))
    processes = int(os.environ.get("SYMNN_STAMPEDE_PROCESSES", "3"))
    digests: set[str] = set()
    for r in range(rounds):
        root = cache / f"round{r}"
        procs = _spawn(root, [4] * processes + ([6] * 3 if r == 0 else []))
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, f"round {r}: {err[-2000:]}"
            outs.append(out.strip())
        digests |= {o for o in outs if o.startswith("4 ")}
        assert len({o for o in outs if o.startswith("6 ")}) <= 1
        assert _compiles(root) == (2 if r == 0 else 1), f"round {r}"
    assert len(digests) == 1


@pytest.mark.slow
def test_B8_killed_builder_leaves_no_stale_lock(cache: Path, tmp_path: Path) -> None:
    slow_cc = tmp_path / "slowcc"
    slow_cc.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then exec gcc \"$@\"; fi\nsleep 30\nexec gcc \"$@\"\n")
    slow_cc.chmod(0o755)
    (victim,) = _spawn(cache, [4], {"CC": str(slow_cc)})
    deadline = time.time() + 120
    while _compiles(cache) == 0 and time.time() < deadline:
        time.sleep(0.2)
    assert _compiles(cache) == 1, "the victim never started compiling"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    # same CC path and --version, so the same key and lock as the victim; now fast
    slow_cc.write_text("#!/bin/sh\nexec gcc \"$@\"\n")
    start = time.time()
    (again,) = _spawn(cache, [4], {"CC": str(slow_cc)})
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-2000:]
    assert time.time() - start < 60


def test_K4_threads_share_one_kernel_bitwise(cache: Path) -> None:
    net = sn.Network([sn.Dense(8, 16, "relu"), sn.Dense(16, 3, "softmax")], loss="cross_entropy", name="thr")
    k = sn.compile(net, backend="c")
    rng = np.random.default_rng(0)
    cases = [(net.init_params(seed=s), rng.normal(size=(5 + s, 8)), np.arange(5 + s) % 3) for s in range(8)]
    serial = [k.loss_and_grad(*c) for c in cases]
    errors: list[str] = []

    def worker(t: int) -> None:
        for i in range(300):
            c = (t + i) % len(cases)
            loss, g = k.loss_and_grad(*cases[c])
            if loss != serial[c][0] or any(not np.array_equal(g[n], serial[c][1][n]) for n in g):
                errors.append(f"thread {t} call {i}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _child_loss(conn, k, p, X, Y) -> None:
    conn.send(k.loss(p, X, Y))
    conn.close()


def test_K6_fork_after_load_and_spawn_rehits_cache(cache: Path) -> None:
    import multiprocessing as mp
    import pickle

    k = sn.compile(_net(), backend="c")
    p = _net().init_params(seed=0)
    X, Y = _data()
    expected = k.loss(p, X, Y)
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child_loss, args=(child, k, p, X, Y))
    proc.start()
    assert parent.recv() == expected
    proc.join(timeout=60)
    assert proc.exitcode == 0
    # spawn-style: a fresh interpreter unpickles the kernel (recompiles from the cache)
    blob = pickle.dumps(k)
    code = ("import pickle, sys, numpy as np; k = pickle.loads(sys.stdin.buffer.read()); "
            "rng = np.random.default_rng(0); X = rng.normal(size=(6, 2)); Y = rng.uniform(size=(6, 1)); "
            "print(repr(k.loss(k.network.init_params(seed=0), X, Y)))")
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=300,
                         env={**os.environ, "SYMNN_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert float(out.stdout.decode()) == expected
    assert _compiles(cache) == 1


def test_C6_C7_wrapper_converts_by_value_never_reinterprets(cache: Path) -> None:
    net = sn.Network([sn.Dense(3, 4, "tanh"), sn.Dense(4, 2, "identity")], loss="mse", name="conv")
    k = sn.compile(net, backend="c")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 3))
    p = net.init_params(seed=0)
    ref = k.forward(p, X)
    misaligned = np.frombuffer(b"\0" + X.tobytes(), dtype=np.float64, offset=1).reshape(X.shape)
    assert not misaligned.flags.aligned
    variants = [X.astype(">f8"), np.asfortranarray(X), misaligned, X[::-1][::-1], X.astype(np.float32).astype(np.float64)]
    for v in variants[:-1]:
        np.testing.assert_array_equal(k.forward(p, v), ref)
    np.testing.assert_allclose(k.forward(p, X.astype(np.float32)), ref, rtol=1e-6)
    np.testing.assert_array_equal(k.forward(p, np.round(X * 4).astype(np.int64)),
                                  k.forward(p, np.round(X * 4)))
    with pytest.raises(DTypeError):
        k.forward(p, X.astype(object))
    ro = X.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(k.forward(p, ro), ref)
    p_be = {n: v.astype(">f8") for n, v in p.items()}
    np.testing.assert_array_equal(k.forward(p_be, X), ref)


def test_labels_are_validated_before_c(cache: Path) -> None:
    net = sn.Network([sn.Dense(3, 3, "softmax")], loss="cross_entropy", name="lab")
    k = sn.compile(net, backend="c")
    p = net.init_params(seed=0)
    X = np.zeros((3, 3))
    with pytest.raises(sn.LabelRangeError, match="row 1"):
        k.loss(p, X, np.array([0, 3, 1]))
    assert k.loss(p, X, np.array([0, 2, 1], dtype=np.int64)) == pytest.approx(np.log(3), rel=1e-15)


import re  # noqa: E402  (used by the B2 test above)
