"""Build emitted C into an importable cffi extension, cached on disk by content hash.

Layout of the cache (``SYMNN_CACHE_DIR``, else the user cache directory)::

    <root>/<module>/            one finished entry per key: NAME.h, NAME.c, the unit that
                                includes them, the cffi wrapper source, the objects, the
                                extension (.so) and manifest.json
    <root>/<module>.lock        flock'd while that key is checked or built
    <root>/.<module>.<random>/  a build in progress (renamed into place when complete)
    <root>/failed/<module>/     the sources of the last failed build, for the CompileError
    <root>/build.log            one line per compiler run

Why it is safe (RELIABILITY.md B1-B10, K1-K3):

* the key hashes everything that changes the binary: the emitted files, the cffi
  declarations, compiler identity, flags, the CPU (for ``-march=native``), Python's ABI tag,
  and the symnn, cffi and codegen versions; the module name carries the key, so a process
  never gets a stale extension of the same name (B6, B9);
* builders serialise on a per-key ``fcntl.flock``, which the kernel releases when a builder
  dies, so a SIGKILLed build never leaves a lock that blocks the next one (B8, pytorch #189245);
  the entry is re-checked under the lock, so N racing processes compile once (K1);
* a build happens in a private temporary directory renamed into place, so no reader sees a
  half-written .so (cython #5331); each entry's manifest records the .so's SHA-256 and ABI tag,
  and a mismatch is rebuilt with a warning (B5);
* the compiler runs as a subprocess with its output captured, so a failure raises
  :class:`~symnn.errors.CompileError` with the command and the compiler's last 40 lines (B2).

Why it is safe on a machine shared with other users (issue 18, RELIABILITY.md U-cases): every
``.so`` in the cache is code this process will load, so nothing in it may be another user's.

* the root must be owned by you and not writable by others (unless sticky); the fallback in
  the shared temp dir must be exactly yours and ``0700`` and not a symlink. This is checked on
  every use, not only when symnn creates it, because another user can create it first;
* nothing inside the cache is followed through a symlink: ``build.log`` and the lock files
  are opened with ``O_NOFOLLOW``, and an entry's directory, manifest and extension must be a
  real directory / regular file owned by you before the extension is hashed or loaded;
* a build killed mid-compile leaves its private temp dir; the next build of that key sweeps it
  under the key's lock (no live builder can own it then), and :func:`clear_cache` sweeps all;
* the compiler runs in its own session; on a time-out or an interruption its whole process
  group is killed and reaped, so no ``cc1`` outlives symnn.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cffi
from cffi import recompiler

from .errors import (BuildError, CacheError, CompileError, CompilerNotFoundError, ConfigError,
                     UntrustedInputError)
from .render import CODEGEN_VERSION

#: Flags for the in-process build. Emitted files for shipping use portable flags (the
#: generated Makefile). Never -ffast-math: it breaks NaN checks and, loaded into Python,
#: would flush subnormals process-wide. -fno-math-errno (after -fno-fast-math, which turns
#: errno back on) changes no result: sqrt is correctly rounded either way, and no kernel reads
#: errno; without it GCC keeps every loop with a sqrt scalar (the optimisers' updates: Adam's
#: ran 4x slower) to set errno for a negative argument.
NATIVE_FLAGS = ("-O3", "-march=native")
#: The optimisation of the cffi glue's translation unit, compiled apart from the kernels and at
#: the same time: it converts arguments and calls one kernel entry each, no loop in it gains from
#: -O3, and Python.h with the glue at -O3 took as long as a small network's kernels (0.73 s
#: against 0.31 s at -O1, measured on a Zen 3 core)
GLUE_OPT = "-O1"
BASE_FLAGS = ("-fPIC", "-shared", "-fvisibility=hidden", "-fno-fast-math", "-fno-math-errno")

_loaded: dict[str, types.ModuleType] = {}
_loaded_lock = threading.Lock()


@dataclass(frozen=True)
class Compiler:
    argv: tuple[str, ...]
    ident: str


def cache_root() -> Path:
    """``$SYMNN_CACHE_DIR``, else the platform's per-user cache directory + ``/symnn``."""
    env = os.environ.get("SYMNN_CACHE_DIR")
    if env:  # absolute, so no path under it reaches the compiler's argv looking like an option
        return Path(env).expanduser().absolute()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (base / "symnn").absolute()


def _usable_root() -> Path:
    """The cache root, created ``0700`` if missing and checked on every use (:func:`_check_root`);
    a read-only one falls back to a per-user temp dir (B3/B4), checked the same way, stricter."""
    root = cache_root()
    if root.exists() and not root.is_dir():
        raise CacheError(f"symnn cache path {root} exists and is not a directory; "
                         "point SYMNN_CACHE_DIR at a directory")
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", delete=True)
        probe.close()
    except OSError as exc:
        return _fallback_root(root, exc)
    _check_root(root, fallback=False)
    return root


def _fallback_root(root: Path, exc: OSError) -> Path:
    """``$TMPDIR/symnn-cache-<uid>``. Its name is predictable and ``/tmp`` is shared, so another
    user may have created it first: it is used only if it passes the strict check."""
    uid = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    fallback = Path(tempfile.gettempdir()) / f"symnn-cache-{uid}"
    warnings.warn(f"symnn cache {root} is not writable ({exc.strerror}); using {fallback} "
                  "instead (set SYMNN_CACHE_DIR to choose)", RuntimeWarning, stacklevel=5)
    try:
        os.mkdir(fallback, 0o700)
    except FileExistsError:
        pass  # whoever made it, the check below decides
    except OSError as exc2:
        raise CacheError(f"no writable symnn cache: {root} ({exc.strerror}) and {fallback} "
                         f"({exc2.strerror}); set SYMNN_CACHE_DIR") from exc2
    _check_root(fallback, fallback=True)
    return fallback


def _euid() -> int | None:
    """The uid that owns what this process creates (None where the OS has no uids)."""
    return os.geteuid() if hasattr(os, "geteuid") else None


def _found(st: os.stat_result) -> str:
    return f"owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}"


def _root_problem(st: os.stat_result, *, fallback: bool) -> str | None:
    """Why a cache root with this ``stat`` must not be used, or None. Another user who can
    write into it can plant an extension that this process would load."""
    uid = _euid()
    mode = stat.S_IMODE(st.st_mode)
    if uid is not None and st.st_uid != uid:
        return f"it belongs to another user (you are uid {uid})"
    if fallback and mode & 0o077:
        return "the fallback cache must be private (0700): others could read your sources or plant code"
    if mode & 0o022 and not mode & stat.S_ISVTX:
        return "other users can write into it (group/world-writable without the sticky bit)"
    return None


def _check_root(root: Path, *, fallback: bool) -> None:
    """Refuse a cache root another user controls; see :func:`_root_problem`. The configured
    root may be a symlink of yours (a cache on another disk); the fallback may not, since
    another user may re-point a link in a shared temp dir at any time."""
    try:
        st = os.lstat(root)
        if stat.S_ISLNK(st.st_mode):
            uid = _euid()
            if fallback or (uid is not None and st.st_uid not in (uid, 0)):
                raise CacheError(f"symnn will not use the cache {root}: it is a symbolic link "
                                 f"owned by uid {st.st_uid}, which anyone who owns it can re-point. "
                                 f"{_ROOT_REMEDY[fallback]}")
            st = os.stat(root)
    except FileNotFoundError as exc:
        raise CacheError(f"symnn cache {root} vanished while in use; set SYMNN_CACHE_DIR") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"symnn cache path {root} is not a directory; point SYMNN_CACHE_DIR at a directory")
    problem = _root_problem(st, fallback=fallback)
    if problem is not None:
        raise CacheError(f"symnn will not use the cache {root} ({_found(st)}): {problem}; "
                         f"a compiled module placed there would be loaded into your process. "
                         f"{_ROOT_REMEDY[fallback]}")


_ROOT_REMEDY = {
    True: "If it is not yours, remove it (or ask an administrator to); if it is, `chmod 700` it. "
          "Or set SYMNN_CACHE_DIR to a directory you own.",
    False: "Use a directory you own that others cannot write (`chmod go-w`, or 0700), "
           "or point SYMNN_CACHE_DIR at one.",
}


# -- entries, logs and locks: never through a symlink, never another user's ---------------------
_OPEN_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def _check_private(path: Path, *, is_dir: bool) -> bool:
    """True if ``path`` exists as a real directory / regular file of this user that nobody
    else can write; False if it is missing or merely too open (ours: rebuilt). A symlink,
    another file type or another user's entry raises :class:`CacheError`: it was planted, and
    symnn neither follows nor removes it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    kind = "directory" if is_dir else "regular file"
    if stat.S_ISLNK(st.st_mode):
        raise CacheError(f"{path} is a symbolic link; symnn never follows links inside its cache "
                         "(another user may have planted it). Remove it.")
    if not (stat.S_ISDIR(st.st_mode) if is_dir else stat.S_ISREG(st.st_mode)):
        raise CacheError(f"{path} in the symnn cache is not a {kind}; remove it.")
    uid = _euid()
    if uid is not None and st.st_uid != uid:
        raise CacheError(f"{path} in the symnn cache is {_found(st)}, not yours (uid {uid}): "
                         "symnn will not load another user's module. Remove it.")
    return not stat.S_IMODE(st.st_mode) & 0o022


def _open_private(path: Path, flags: int) -> int:
    """``os.open`` of a file symnn keeps in the cache (log, lock), never through a symlink
    (``O_NOFOLLOW``), never blocking on a planted FIFO (``O_NONBLOCK``), and only if the file
    is a regular file of this user."""
    try:
        fd = os.open(path, flags | _OPEN_FLAGS, 0o600)
    except OSError as exc:
        if path.is_symlink():
            raise CacheError(f"{path} is a symbolic link; symnn never follows links inside its "
                             "cache (another user may have planted it). Remove it.") from exc
        raise CacheError(f"cannot open {path} in the symnn cache: {exc.strerror}") from exc
    st = os.fstat(fd)
    uid = _euid()
    problem = ("is not a regular file" if not stat.S_ISREG(st.st_mode) else
               f"is {_found(st)}, not yours (uid {uid})" if uid is not None and st.st_uid != uid else None)
    if problem is not None:
        os.close(fd)
        raise CacheError(f"{path} in the symnn cache {problem}; remove it.")
    return fd


def _remove_private_dir(path: Path) -> bool:
    """Remove ``path`` if it is a real directory of this user (a dead builder's temp dir);
    leave anything else alone, never following a link. True if removed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    uid = _euid()
    if not stat.S_ISDIR(st.st_mode) or (uid is not None and st.st_uid != uid):
        return False
    shutil.rmtree(path, ignore_errors=True)  # fd-based on Linux: no symlink inside is followed
    return not os.path.lexists(path)


def _temp_dir_key(name: str) -> str | None:
    """The module a temp dir (``.<module>.<random>`` or ``.trash-<module>.<random>``) belongs
    to, or None for any other name."""
    if not name.startswith(".") or name.count(".") < 2:
        return None
    inner = name[1:].rsplit(".", 1)[0]
    inner = inner[len("trash-"):] if inner.startswith("trash-") else inner
    return inner if inner.startswith("_symnn_") and "." not in inner else None


def _sweep_stale(root: Path, modname: str) -> int:
    """Remove ``modname``'s temp dirs. The caller holds ``modname``'s lock, and only a lock
    holder makes them, so every one found is left by a builder that died (B8)."""
    removed = 0
    with os.scandir(root) as it:
        names = [e.name for e in it]
    for name in names:
        if _temp_dir_key(name) == modname:
            removed += _remove_private_dir(root / name)
    return removed


# -- the compiler's processes -----------------------------------------------------------------
#: Seconds a build's compiler runs (the kernels and the glue at once, then the link) may each
#: take before their process groups are killed; the
#: environment variable ``SYMNN_CC_TIMEOUT`` overrides it (a big network can take minutes).
CC_TIMEOUT_S = 900.0
#: ``cc --version`` answers at once; a compiler that does not is unusable.
VERSION_TIMEOUT_S = 60.0


def cc_timeout() -> float:
    """``$SYMNN_CC_TIMEOUT`` in seconds (positive, finite), else :data:`CC_TIMEOUT_S`."""
    raw = os.environ.get("SYMNN_CC_TIMEOUT", "").strip()
    if not raw:
        return CC_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"SYMNN_CC_TIMEOUT={raw!r} is not a positive number of seconds")
    return value


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group (the compiler driver and the cc1/as/ld it started), reap
    the leader and close the pipes, which an escaped grandchild could otherwise hold open."""
    if hasattr(os, "killpg"):  # POSIX; elsewhere only the compiler itself is killed
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group has exited already
    proc.kill()  # the leader, in case the group could not be signalled; a no-op once it is reaped
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C back while the compilers start, and deliver it after: one that lands
    inside ``Popen`` after its fork leaves a running compiler that no list holds, which then
    outlives the interruption (every group started is in the list before it goes on). Only
    the main thread receives SIGINT's handler, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            signal.raise_signal(signal.SIGINT)


def _run_group(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in a session of its own with its output captured (:func:`_run_groups`)."""
    return _run_groups([cmd], timeout)[0]


def _run_groups(cmds: list[list[str]], timeout: float) -> list[subprocess.CompletedProcess]:
    """Run ``cmds`` at the same time, each in a session of its own with its output captured,
    all within ``timeout`` seconds. On a time-out (``subprocess.TimeoutExpired``) or an
    interruption (Ctrl-C no longer reaches a process in another session) every group is killed
    and reaped before the exception goes on."""
    procs: list[subprocess.Popen] = []
    results: list[subprocess.CompletedProcess] = []
    deadline = time.monotonic() + timeout
    try:  # Popen inside: a Ctrl-C the moment one returns must still find every group killed
        with _interrupts_deferred():
            for cmd in cmds:
                procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True, errors="replace",
                                              start_new_session=True))
        for cmd, proc in zip(cmds, procs):
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.0))
            results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    finally:  # TimeoutExpired, KeyboardInterrupt, SystemExit: kill the groups, let the error go on
        for proc in procs[len(results):]:
            _kill_group(proc)
    return results


@lru_cache(maxsize=8)
def _compiler_ident(argv: tuple[str, ...], timeout: float) -> str:
    try:
        out = _run_group([*argv, "--version"], timeout)
    except OSError as exc:
        raise CompilerNotFoundError(f"C compiler {argv[0]!r} cannot run: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CompilerNotFoundError(
            f"C compiler {argv[0]!r} did not finish within {timeout:g} s answering --version "
            "(SYMNN_CC_TIMEOUT); it and the processes it started were killed. Point CC at a "
            "working compiler or use backend='numpy'") from exc
    lines = (out.stdout or out.stderr).splitlines()
    return lines[0].strip() if lines else argv[0]


def find_compiler() -> Compiler:
    """``$CC``, else Python's configured compiler, else ``cc``/``gcc``/``clang`` on PATH."""
    candidates = []
    if os.environ.get("CC"):
        candidates.append(shlex.split(os.environ["CC"]))
    else:
        cfg = sysconfig.get_config_var("CC")
        if cfg:
            candidates.append(shlex.split(cfg)[:1])
        candidates += [["cc"], ["gcc"], ["clang"]]
    for argv in candidates:
        if argv and shutil.which(argv[0]):
            return Compiler(tuple(argv), _compiler_ident(tuple(argv), min(cc_timeout(), VERSION_TIMEOUT_S)))
    tried = ", ".join(repr(c[0]) for c in candidates if c)
    raise CompilerNotFoundError(
        f"no C compiler found (tried {tried}). Install one (Debian/Ubuntu: apt install gcc; "
        "macOS: xcode-select --install), point CC at it, or use backend='numpy' "
        "(backend='auto' falls back to NumPy by itself)"
    )


def cpu_flags() -> str:
    """The CPU's feature flags as /proc/cpuinfo lists them ("" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cpu_ident() -> str:
    """What -march=native depends on: the machine and, on Linux, the CPU's feature flags."""
    return f"{platform.machine()} {hashlib.sha256(cpu_flags().encode()).hexdigest()[:16]}"


def build_flags() -> tuple[str, ...]:
    extra = tuple(shlex.split(os.environ.get("SYMNN_CFLAGS", "")))
    return NATIVE_FLAGS + BASE_FLAGS + extra


def numpy_blas_flags() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(compile flags, link flags) that route the emitted C's large products to the OpenBLAS
    NumPy's wheels bundle (``scipy_cblas_dgemm64_``, 64-bit integers): the library NumPy
    itself multiplies with, already loaded in this process, so its thread setting
    (threadpoolctl, OPENBLAS_NUM_THREADS) governs both."""
    import numpy

    libs = Path(numpy.__file__).resolve().parent.parent / "numpy.libs"
    found = sorted(libs.glob("libscipy_openblas64_*.so*")) if libs.is_dir() else []
    if not found:
        raise ConfigError(
            "blas=True links the OpenBLAS bundled with NumPy's wheels (numpy.libs/libscipy_openblas64_*.so), "
            f"which is not in {libs}; use blas=False"
        )
    lib = found[0]
    cflags = ("-DSYMNN_BLAS", "-DSYMNN_BLAS_INT=long long", "-DSYMNN_CBLAS_DGEMM=scipy_cblas_dgemm64_",
              "-DSYMNN_CBLAS_SGEMM=scipy_cblas_sgemm64_")
    return cflags, (f"-L{lib.parent}", f"-l:{lib.name}", f"-Wl,-rpath,{lib.parent}")


def _abi_tag() -> str:
    return f"{sys.implementation.cache_tag} {sysconfig.get_config_var('EXT_SUFFIX')}"


def cache_key(files: dict[str, str], cdef: str, compiler: Compiler, flags: tuple[str, ...]) -> str:
    from . import __version__

    h = hashlib.sha256()
    for part in (CODEGEN_VERSION, __version__, cffi.__version__, compiler.ident, " ".join(compiler.argv),
                 " ".join(flags), _cpu_ident(), _abi_tag(), cdef, *[f"{k}\0{v}" for k, v in sorted(files.items())]):
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _extension_path(entry: Path) -> Path | None:
    """The extension ``entry``'s manifest names, if the entry, its manifest and the extension
    are this user's own, private, regular and plainly named (else None: rebuilt). A planted
    symlink or another user's file raises :class:`CacheError` (:func:`_check_private`)."""
    if not (_check_private(entry, is_dir=True) and _check_private(entry / "manifest.json", is_dir=False)):
        return None
    try:
        name = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))["extension"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        return None
    return entry / name if _check_private(entry / name, is_dir=False) else None


def _entry_ok(entry: Path, key: str) -> bool:
    """Is ``entry`` a complete build of ``key`` for this Python (B5), and safe to load?"""
    so = _extension_path(entry)
    if so is None:
        return False
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        return (manifest.get("key") == key and manifest.get("abi") == _abi_tag()
                and _sha256_file(so) == manifest.get("sha256"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


class _FileLock:
    """An exclusive ``flock`` on ``path``; the kernel drops it if the holder dies (B8)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> "_FileLock":
        import fcntl

        self.fd = _open_private(self.path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _log(root: Path, message: str) -> None:
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid={os.getpid()} {message}\n"
    fd = _open_private(root / "build.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _compile(root: Path, modname: str, key: str, files: dict[str, str], cdef: str,
             compiler: Compiler, flags: tuple[str, ...], link: tuple[str, ...] = (),
             timeout: float = CC_TIMEOUT_S) -> Path:
    """Compile into a private temp dir, then rename it to ``root/modname``."""
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        raise CompilerNotFoundError(
            f"Python's C headers (Python.h) are not in {include}: install them (Debian/Ubuntu: "
            "apt install python3-dev) or use backend='numpy'"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{modname}.", dir=root))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        # two translation units compiled at the same time: the kernels (every .c, one network or
        # a group) with the build's flags, and cffi's glue, which sees only the headers, at GLUE_OPT
        kernels = tmp / f"{modname}__kernels.c"
        kernels.write_text("".join(f'#include "{n}"\n' for n in files if n.endswith(".c")), encoding="utf-8")
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        wrapper = tmp / f"{modname}.c"
        headers = "".join(f'#include "{n}"\n' for n in files if n.endswith(".h"))
        recompiler.make_c_source(ffi, modname, headers, str(wrapper), verbose=False)
        ext = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        so = tmp / f"{modname}{ext}"
        glue_flags = tuple(GLUE_OPT if f.startswith("-O") else f for f in flags)
        compiles = [[*compiler.argv, *flags, f"-I{tmp}", "-c", str(kernels), "-o", str(kernels.with_suffix(".o"))],
                    [*compiler.argv, *glue_flags, f"-I{include}", f"-I{tmp}", "-c", str(wrapper), "-o",
                     str(wrapper.with_suffix(".o"))]]
        _log(root, f"compile {modname}")
        _compile_step(root, modname, tmp, compiles, timeout, compiler)
        _compile_step(root, modname, tmp, [[*compiler.argv, *flags, str(kernels.with_suffix(".o")),
                                            str(wrapper.with_suffix(".o")), "-o", str(so), *link, "-lm"]],
                      timeout, compiler)
        manifest = {"key": key, "module": modname, "extension": so.name, "sha256": _sha256_file(so),
                    "abi": _abi_tag(), "compiler": compiler.ident, "flags": list(flags)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        _drop_write_for_others(tmp)
        final = root / modname
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".trash-{modname}.", dir=root))
            os.replace(final, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
        return final
    except OSError as exc:
        raise BuildError(f"building {modname} in {root} failed: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _compile_step(root: Path, modname: str, tmp: Path, cmds: list[list[str]], timeout: float,
                  compiler: Compiler) -> None:
    """Run the compiler commands ``cmds`` at the same time; a failure or time-out keeps the
    sources (:func:`_keep_failed`) and raises :class:`CompileError` with the command and its
    output."""
    try:
        procs = _run_groups(cmds, timeout)
    except OSError as exc:
        raise CompilerNotFoundError(f"cannot run the C compiler {compiler.argv[0]!r}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        kept = _keep_failed(root, modname, tmp)
        raise CompileError(
            f"compiling {modname} did not finish within {timeout:g} s (SYMNN_CC_TIMEOUT sets the "
            f"limit); the compiler and every process it started were killed.\ncommand: "
            f"{shlex.join(exc.cmd)}\nsources kept in {kept}") from exc
    for proc in procs:
        if proc.returncode != 0:
            kept = _keep_failed(root, modname, tmp)
            tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-40:])
            raise CompileError(
                f"compiling {modname} failed (exit {proc.returncode}).\ncommand: {shlex.join(proc.args)}\n"
                f"sources kept in {kept}\ncompiler output (last 40 lines):\n{tail}"
            )


def _drop_write_for_others(tmp: Path) -> None:
    """Under a umask of 002 (or 0) the compiler's output is group/world-writable, which
    :func:`_check_private` refuses to load: an entry is made private to its owner here."""
    for path in tmp.iterdir():
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o022:
            os.chmod(path, mode & ~0o022)


def _keep_failed(root: Path, modname: str, tmp: Path) -> Path:
    failed = root / "failed"
    try:
        os.mkdir(failed, 0o700)
    except FileExistsError:
        pass
    _check_private(failed, is_dir=True)
    dest = failed / modname
    _check_private(dest, is_dir=True)  # refuses a planted link or another user's dir
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(tmp, dest)
    return dest


def _import(entry: Path, modname: str) -> types.ModuleType:
    path = _extension_path(entry)  # checked again right before loading: never through a link
    if path is None:
        raise ImportError(f"{entry} has no usable manifest or extension")
    loader = importlib.machinery.ExtensionFileLoader(modname, str(path))
    spec = importlib.util.spec_from_file_location(modname, str(path), loader=loader)
    if spec is None:  # pragma: no cover - only for a path importlib cannot handle
        raise BuildError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_build_names(prefix: str, files: dict[str, str]) -> None:
    """The names that become cache paths, compiler arguments and the module's ``PyInit_``
    symbol. They come from a network's name, which :func:`symnn.naming.identifier` checked where
    it entered; this refuses, at the sink, one that reached the build some other way (a
    ``..``, a ``/`` or a leading ``-`` would leave the cache or read as a compiler option)."""
    if not _PLAIN.fullmatch(prefix):
        raise UntrustedInputError(f"module prefix {prefix!a} is not a plain name; nothing was built")
    for name in files:
        stem, dot, ext = name.rpartition(".")
        if not (dot and ext in ("c", "h") and _PLAIN.fullmatch(stem)):
            raise UntrustedInputError(f"emitted file name {name!a} is not NAME.c or NAME.h; nothing was built")


def build(prefix: str, files: dict[str, str], cdef: str, *, blas: bool = False,
          openmp: bool = False, flush_denormals: bool = False) -> types.ModuleType:
    """The cffi extension module for ``files`` (``NAME.h``/``NAME.c``), built at most once;
    ``blas`` links NumPy's OpenBLAS for the large products (:func:`numpy_blas_flags`),
    ``openmp`` builds with ``-fopenmp`` (the large products split over OpenMP threads),
    ``flush_denormals`` with ``-DSYMNN_FLUSH_DENORMALS`` (the kernels run with subnormals as 0)."""
    _check_build_names(prefix, files)
    timeout = cc_timeout()
    compiler = find_compiler()
    flags = build_flags()
    link: tuple[str, ...] = ()
    if blas:
        extra, link = numpy_blas_flags()
        flags += extra
    if openmp:
        flags += ("-fopenmp",)
        link += ("-fopenmp",)
    if flush_denormals:
        flags += ("-DSYMNN_FLUSH_DENORMALS",)
    key = cache_key(files, cdef, compiler, flags + link)
    modname = f"_symnn_{prefix}_{key[:20]}"
    with _loaded_lock:
        if modname in _loaded:
            return _loaded[modname]
    root = _usable_root()
    entry = root / modname
    for attempt in range(2):
        if not _entry_ok(entry, key):
            with _FileLock(root / f"{modname}.lock"):
                if not _entry_ok(entry, key):
                    _sweep_stale(root, modname)
                    if entry.exists():
                        warnings.warn(f"symnn cache entry {entry} is corrupt or incomplete; rebuilding",
                                      RuntimeWarning, stacklevel=3)
                    _compile(root, modname, key, files, cdef, compiler, flags, link, timeout)
        try:
            module = _import(entry, modname)
            break
        except (ImportError, OSError, ValueError, KeyError) as exc:  # corrupt, or cleared meanwhile
            if attempt:
                raise BuildError(f"cannot load the freshly built {entry}: {exc}") from exc
            warnings.warn(f"symnn cache entry {entry} does not load ({exc}); rebuilding",
                          RuntimeWarning, stacklevel=3)
            with _FileLock(root / f"{modname}.lock"):
                (entry / "manifest.json").unlink(missing_ok=True)
    with _loaded_lock:
        return _loaded.setdefault(modname, module)


def _checked_cache_root() -> Path | None:
    """The configured cache root if it exists, after the same check a build makes."""
    root = cache_root()
    if not os.path.lexists(root):
        return None
    _check_root(root, fallback=False)
    return root


def list_cache() -> list[tuple[str, int]]:
    """(module name, bytes on disk) of every finished entry in the cache (symlinks skipped)."""
    root = _checked_cache_root()
    if root is None:
        return []
    out = []
    for entry in sorted(root.glob("_symnn_*")):
        if not entry.is_symlink() and entry.is_dir():
            out.append((entry.name, sum(p.lstat().st_size for p in entry.iterdir() if not p.is_symlink())))
    return out


def clear_cache() -> tuple[int, int]:
    """Delete every finished entry and every temporary build dir a killed build left, each
    under its module's build lock, so a build in progress (which holds the lock) is waited
    for, never torn down (K3). Processes that already loaded a module keep using it: the file
    stays mapped. Returns (entries removed, stale temporary dirs removed)."""
    root = _checked_cache_root()
    if root is None:
        return 0, 0
    removed = 0
    for name, _ in list_cache():
        with _FileLock(root / f"{name}.lock"):
            entry = root / name
            if not entry.is_symlink() and entry.is_dir():
                trash = Path(tempfile.mkdtemp(prefix=f".trash-{name}.", dir=root))
                os.replace(entry, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
                removed += 1
    swept = 0
    for module in sorted({m for m in map(_temp_dir_key, os.listdir(root)) if m is not None}):
        with _FileLock(root / f"{module}.lock"):
            swept += _sweep_stale(root, module)
    with _loaded_lock:
        _loaded.clear()
    return removed, swept
