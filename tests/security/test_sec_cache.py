"""Issue 18, item 3 and the build parts of item 12: the compiled-module cache, its temporary
build directories and the compiler's processes on a machine shared with other users.

Every test here runs as whoever runs the suite. "Another user" is a directory ``chown``-ed to
uid 1002 (possible as root) or, for an unprivileged run, skipped. A planted extension is a real
shared object whose ELF constructor creates a marker file: the marker exists iff the object
was ever loaded, which is what the attacker needs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

import symnn as sn
from symnn import build as build_mod
from symnn.cli import main
from symnn.errors import CacheError, CompileError, CompilerNotFoundError

pytestmark = pytest.mark.needs_cc
OTHER_UID = 1002
as_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                             reason="chown to another uid needs root")


def _net() -> sn.Network:
    return sn.Network([sn.Dense(2, 3, "tanh"), sn.Dense(3, 1, "sigmoid")], loss="bce", name="secnet")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache root (created 0700, as symnn creates its own) and no module loaded yet."""
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    monkeypatch.setenv("SYMNN_CACHE_DIR", str(root))
    monkeypatch.setattr(build_mod, "_loaded", {})
    return root


def _entry(root: Path) -> Path:
    (entry,) = [p for p in root.iterdir() if p.name.startswith("_symnn_") and not p.name.endswith(".lock")]
    return entry


@pytest.fixture(scope="module")
def real_entry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine cache entry for :func:`_net`, built in a scratch cache: same key, same name,
    as the entry the test's own cache will look for. Built once for the module (one compiler
    run, not one per test): the tests only read it (copy it, take its name), and nothing of it
    stays loaded (its own ``_loaded``)."""
    scratch = tmp_path_factory.mktemp("scratch")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYMNN_CACHE_DIR", str(scratch))
        mp.setattr(build_mod, "_loaded", {})
        sn.compile(_net(), backend="c")
    return _entry(scratch)


def _plant(entry: Path, dest: Path, marker: Path) -> None:
    """Copy ``entry`` to ``dest`` with its extension swapped for one that creates ``marker``
    when it is loaded, and a manifest whose hash matches, as an attacker would."""
    shutil.copytree(entry, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    so = dest / manifest["extension"]
    src = dest / "evil.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void pwn(void) {\n'
                   f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("pwned", f); fclose(f); }}\n}}\n')
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    manifest["sha256"] = build_mod._sha256_file(so)
    (dest / "manifest.json").write_text(json.dumps(manifest))


def _chown_tree(path: Path, uid: int) -> None:
    os.chown(path, uid, uid, follow_symlinks=False)
    for p in path.rglob("*"):
        os.chown(p, uid, uid, follow_symlinks=False)


def _unwritable_configured_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The configured cache refuses writes (as root, chmod does not), so symnn falls back to
    ``$TMPDIR/symnn-cache-<uid>``; ``$TMPDIR`` is this test's own folder."""
    configured = tmp_path / "configured"
    monkeypatch.setenv("SYMNN_CACHE_DIR", str(configured))
    real = build_mod.tempfile.NamedTemporaryFile

    def refuse(*args, **kw):
        if Path(kw.get("dir", "")) == configured:
            raise PermissionError(13, "Permission denied")
        return real(*args, **kw)

    monkeypatch.setattr(build_mod.tempfile, "NamedTemporaryFile", refuse)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setattr(build_mod.tempfile, "tempdir", str(tmpdir))
    return tmpdir / f"symnn-cache-{os.getuid()}"


# -- the fallback directory ------------------------------------------------------------------------
@as_root
def test_U_foreign_fallback_dir_with_planted_extension_is_refused_never_loaded(
        tmp_path: Path, real_entry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 item 3: uid 1002 pre-creates /tmp/symnn-cache-<your uid> (mode 0700, so only
    the owner check can catch it) holding an entry whose .so runs code when loaded."""
    monkeypatch.setattr(build_mod, "_loaded", {})
    entry = real_entry
    fallback = _unwritable_configured_root(monkeypatch, tmp_path)
    marker = tmp_path / "MARKER"
    fallback.mkdir(mode=0o700)
    _plant(entry, fallback / entry.name, marker)
    _chown_tree(fallback, OTHER_UID)
    with pytest.warns(RuntimeWarning, match="not writable"):
        with pytest.raises(CacheError) as info:
            sn.compile(_net(), backend="c")
    msg = str(info.value)
    assert str(fallback) in msg and f"uid {OTHER_UID}" in msg and "SYMNN_CACHE_DIR" in msg
    assert not marker.exists()


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o777, 0o1777])
def test_U_fallback_dir_must_be_0700(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int) -> None:
    """Our own fallback dir that others can read (cached sources) or write (planted code)."""
    monkeypatch.setattr(build_mod, "_loaded", {})
    fallback = _unwritable_configured_root(monkeypatch, tmp_path)
    fallback.mkdir()
    fallback.chmod(mode)
    with pytest.warns(RuntimeWarning, match="not writable"):
        with pytest.raises(CacheError, match=f"mode {mode & 0o777:04o}|mode {mode:04o}"):
            sn.compile(_net(), backend="c")
    assert not list(fallback.iterdir())


def test_U_fallback_dir_that_is_a_symlink_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/tmp is sticky, so a planted symlink can be re-pointed at any time: never follow it,
    even to a directory of ours."""
    monkeypatch.setattr(build_mod, "_loaded", {})
    fallback = _unwritable_configured_root(monkeypatch, tmp_path)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    fallback.symlink_to(target)
    with pytest.warns(RuntimeWarning, match="not writable"):
        with pytest.raises(CacheError, match="symbolic link"):
            sn.compile(_net(), backend="c")
    assert not list(target.iterdir())


def test_U_fresh_fallback_dir_is_0700_and_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod, "_loaded", {})
    fallback = _unwritable_configured_root(monkeypatch, tmp_path)
    old = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        with pytest.warns(RuntimeWarning, match="not writable"):
            k = sn.compile(_net(), backend="c")
    finally:
        os.umask(old)
    assert k.backend == "c"
    assert stat.S_IMODE(fallback.lstat().st_mode) == 0o700
    assert stat.S_IMODE(_entry(fallback).lstat().st_mode) & 0o022 == 0


# -- the configured directory ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_U_configured_root_writable_by_others_is_refused(cache: Path, mode: int) -> None:
    cache.chmod(mode)
    with pytest.raises(CacheError) as info:
        sn.compile(_net(), backend="c")
    assert str(cache) in str(info.value) and f"{mode:04o}" in str(info.value)
    assert not list(cache.iterdir())


def test_U_configured_root_sticky_or_readable_is_accepted(cache: Path) -> None:
    """A user's existing 0755 ~/.cache/symnn keeps working; so does a sticky shared dir of
    theirs (others may add names there, but every entry's owner is checked before loading)."""
    cache.chmod(0o755)
    assert sn.compile(_net(), backend="c").backend == "c"
    cache.chmod(0o1777)
    build_mod._loaded.clear()
    assert sn.compile(_net(), backend="c").backend == "c"


@as_root
def test_U_configured_root_owned_by_another_user_is_refused(cache: Path, tmp_path: Path) -> None:
    os.chown(cache, OTHER_UID, OTHER_UID)
    with pytest.raises(CacheError, match=f"uid {OTHER_UID}"):
        sn.compile(_net(), backend="c")
    code = main(["cache", "--clear"])
    assert code == 2


def test_U_new_configured_root_is_created_0700(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod, "_loaded", {})
    root = tmp_path / "new" / "cache"
    monkeypatch.setenv("SYMNN_CACHE_DIR", str(root))
    sn.compile(_net(), backend="c")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


# -- entries, logs and locks inside the cache ------------------------------------------------------
@as_root
def test_U_entry_owned_by_another_user_is_refused_never_loaded(
        cache: Path, tmp_path: Path, real_entry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sticky shared root: another user may create the entry's name before you build it."""
    entry = real_entry
    monkeypatch.setenv("SYMNN_CACHE_DIR", str(cache))
    marker = tmp_path / "MARKER"
    _plant(entry, cache / entry.name, marker)
    _chown_tree(cache / entry.name, OTHER_UID)
    cache.chmod(0o1777)
    with pytest.raises(CacheError, match=f"uid {OTHER_UID}"):
        sn.compile(_net(), backend="c")
    assert not marker.exists()


@pytest.mark.parametrize("what", ["entry", "extension"])
def test_U_symlinked_entry_or_extension_is_refused_never_loaded(
        cache: Path, tmp_path: Path, real_entry: Path, monkeypatch: pytest.MonkeyPatch,
        what: str) -> None:
    entry = real_entry
    monkeypatch.setenv("SYMNN_CACHE_DIR", str(cache))
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil_entry"
    _plant(entry, evil, marker)
    if what == "entry":
        (cache / entry.name).symlink_to(evil)
    else:
        shutil.copytree(evil, cache / entry.name)
        so = json.loads((evil / "manifest.json").read_text())["extension"]
        (cache / entry.name / so).unlink()
        (cache / entry.name / so).symlink_to(evil / so)
    with pytest.raises(CacheError, match="symbolic link"):
        sn.compile(_net(), backend="c")
    assert not marker.exists()


def test_U_symlinked_build_log_is_not_followed(cache: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (cache / "build.log").symlink_to(victim)
    dangling = tmp_path / "created_through_link"
    with pytest.raises(CacheError, match="build.log"):
        sn.compile(_net(), backend="c")
    assert victim.read_text() == "precious\n"
    (cache / "build.log").unlink()
    (cache / "build.log").symlink_to(dangling)
    with pytest.raises(CacheError, match="symbolic link"):
        sn.compile(_net(), backend="c")
    assert not dangling.exists()


def test_U_symlinked_lock_file_is_not_followed(cache: Path, tmp_path: Path, real_entry: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    entry = real_entry
    monkeypatch.setenv("SYMNN_CACHE_DIR", str(cache))
    dangling = tmp_path / "created_through_link"
    (cache / f"{entry.name}.lock").symlink_to(dangling)
    with pytest.raises(CacheError, match=r"\.lock.*symbolic link|symbolic link.*\.lock"):
        sn.compile(_net(), backend="c")
    assert not dangling.exists()
    assert not (cache / entry.name).exists()


def test_U_fifo_as_build_log_is_refused_without_hanging(cache: Path) -> None:
    """Opening a FIFO for writing blocks until a reader comes: symnn must not wait."""
    os.mkfifo(cache / "build.log")
    result: list[Exception | None] = []

    def run() -> None:
        try:
            sn.compile(_net(), backend="c")
            result.append(None)
        except Exception as exc:  # handed to the main thread, which asserts on its type
            result.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert result, "sn.compile hung on a FIFO planted as build.log"
    assert isinstance(result[0], CacheError) and "build.log" in str(result[0])


# -- stale temporary build directories -------------------------------------------------------------
def _stale_dirs(root: Path, modname: str) -> list[Path]:
    made = []
    for name in (f".{modname}.k1ll3d00", f".trash-{modname}.k1ll3d01"):
        d = root / name
        d.mkdir(mode=0o700)
        (d / "half.so").write_bytes(b"\x7fELF" + b"\0" * 100)
        made.append(d)
    return made


def test_U_stale_temp_dirs_are_swept_under_the_lock(cache: Path, tmp_path: Path, real_entry: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A builder SIGKILLed mid-compile leaves its private temp dir; the next build of that
    key (which holds the key's lock, so no live builder owns the dir) removes it."""
    entry = real_entry
    monkeypatch.setenv("SYMNN_CACHE_DIR", str(cache))
    stale = _stale_dirs(cache, entry.name)
    victim = tmp_path / "victim_dir"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    (cache / f".{entry.name}.l1nk0000").symlink_to(victim)  # never followed
    assert sn.compile(_net(), backend="c").backend == "c"
    assert not any(d.exists() for d in stale)
    assert (victim / "keep.txt").read_text() == "keep"
    assert (cache / entry.name).is_dir()


def test_U_cache_clear_removes_stale_temp_dirs(cache: Path, tmp_path: Path, capsys) -> None:
    sn.compile(_net(), backend="c")
    stale = _stale_dirs(cache, "_symnn_gone_0123456789abcdef0123")
    assert main(["cache", "--clear"]) == 0
    out = capsys.readouterr().out
    assert not any(d.exists() for d in stale)
    assert not [p for p in cache.iterdir() if p.is_dir()]
    assert "2 stale" in out


# -- the compiler's processes ----------------------------------------------------------------------
def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie (PID 1 here may never reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _hanging_cc(tmp_path: Path, pidfile: Path, on_version: bool = False) -> Path:
    """A compiler that starts a grandchild (as a compiler driver starts cc1) and then hangs."""
    cc = tmp_path / "hangcc"
    hang = f'sleep 120 &\necho $! > "{pidfile}"\nsleep 120\n'
    version = hang if on_version else 'echo "hangcc 1.0"; exit 0\n'
    cc.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then\n{version}fi\n{hang}')
    cc.chmod(0o755)
    return cc


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_U_compiler_timeout_kills_the_whole_process_group(cache: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "child.pid"
    monkeypatch.setenv("CC", str(_hanging_cc(tmp_path, pidfile)))
    monkeypatch.setenv("SYMNN_CC_TIMEOUT", "1")
    with pytest.raises(CompileError, match=r"did not finish within 1(\.0)? s.*SYMNN_CC_TIMEOUT"):
        sn.compile(_net(), backend="c")
    assert _wait_gone(int(pidfile.read_text())), "the compiler's child outlived the timeout"
    assert not [p for p in cache.iterdir() if p.name.startswith("._symnn_")]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_U_compiler_hanging_on_version_is_killed(cache: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "child.pid"
    monkeypatch.setenv("CC", str(_hanging_cc(tmp_path, pidfile, on_version=True)))
    monkeypatch.setenv("SYMNN_CC_TIMEOUT", "1")
    with pytest.raises(CompilerNotFoundError, match="did not finish within"):
        sn.compile(_net(), backend="c")
    assert _wait_gone(int(pidfile.read_text()))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_U_ctrl_c_during_compile_kills_the_compiler(cache: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiler runs in its own session, so the terminal's SIGINT no longer reaches it:
    symnn must kill it itself when it is interrupted. Python's own Ctrl-C handler is installed
    for the test: a process started in the background by a shell without job control inherits
    SIGINT ignored, and Python then installs none (a fresh-clone run of .ci/run started with
    ``&`` failed so). The signal goes to the thread waiting on the compiler (this one, the main
    thread), not to the process, which the kernel may hand to the sending thread."""
    pidfile = tmp_path / "child.pid"
    monkeypatch.setenv("CC", str(_hanging_cc(tmp_path, pidfile)))
    monkeypatch.setenv("SYMNN_CC_TIMEOUT", "60")
    waiting = threading.get_ident()

    def interrupt() -> None:
        deadline = time.monotonic() + 120
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(waiting, signal.SIGINT)

    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            sn.compile(_net(), backend="c")
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert _wait_gone(int(pidfile.read_text())), "the compiler's child outlived Ctrl-C"


@pytest.mark.parametrize("value", ["0", "-5", "soon", "nan", "inf"])
def test_U_bad_compiler_timeout_setting(cache: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SYMNN_CC_TIMEOUT", value)
    with pytest.raises(sn.ConfigError, match="SYMNN_CC_TIMEOUT"):
        sn.compile(_net(), backend="c")


# -- names that become cache paths and compiler arguments -------------------------------------
@pytest.mark.parametrize("prefix, files", [
    ("../../escaped", {"m.c": "", "m.h": ""}),
    ("-fplugin=evil", {"m.c": "", "m.h": ""}),
    ("ok", {"../../escaped.c": "int x;", "ok.h": ""}),
    ("ok", {"ok.c": "", "/abs/ok.h": ""}),
    ("ok", {"ok.so": "", "ok.h": ""}),
])
def test_U_build_refuses_names_that_are_not_plain_before_any_work(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str, files: dict) -> None:
    """The network name is checked where it enters (symnn.naming); the build checks it again
    at the sink, so a name that reached it some other way cannot leave the cache directory,
    read as a compiler option, or even start the compiler."""
    monkeypatch.setenv("CC", "/nonexistent/cc")  # reached only if the names were accepted
    with pytest.raises(sn.UntrustedInputError, match="plain name|NAME.c"):
        build_mod.build(prefix, files, "")
    assert not list(cache.iterdir())
    assert not list(tmp_path.glob("**/escaped*"))
