"""Build emitted C into an importable cffi extension, cached on disk by content hash.

Layout of the cache (``SYMNN_CACHE_DIR``, else the user cache directory)::

    <root>/<module>/            one finished entry per key: NAME.h, NAME.c, the cffi wrapper
                                source, the extension (.so) and manifest.json
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
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import types
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cffi
from cffi import recompiler

from .errors import BuildError, CacheError, CompileError, CompilerNotFoundError, ConfigError
from .render import CODEGEN_VERSION

#: Flags for the in-process build. Emitted files for shipping use portable flags (the
#: generated Makefile). Never -ffast-math: it breaks NaN checks and, loaded into Python,
#: would flush subnormals process-wide.
NATIVE_FLAGS = ("-O3", "-march=native")
BASE_FLAGS = ("-fPIC", "-shared", "-fvisibility=hidden", "-fno-fast-math")

_loaded: dict[str, types.ModuleType] = {}
_loaded_lock = threading.Lock()


@dataclass(frozen=True)
class Compiler:
    argv: tuple[str, ...]
    ident: str


def cache_root() -> Path:
    """``$SYMNN_CACHE_DIR``, else the platform's per-user cache directory + ``/symnn``."""
    env = os.environ.get("SYMNN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "symnn"


def _usable_root() -> Path:
    """The cache root, created if missing; a read-only one falls back to a temp dir (B3/B4)."""
    root = cache_root()
    if root.exists() and not root.is_dir():
        raise CacheError(f"symnn cache path {root} exists and is not a directory; "
                         "point SYMNN_CACHE_DIR at a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", delete=True)
        probe.close()
        return root
    except OSError as exc:
        uid = os.getuid() if hasattr(os, "getuid") else os.getlogin()
        fallback = Path(tempfile.gettempdir()) / f"symnn-cache-{uid}"
        warnings.warn(f"symnn cache {root} is not writable ({exc.strerror}); using {fallback} "
                      "instead (set SYMNN_CACHE_DIR to choose)", RuntimeWarning, stacklevel=4)
        try:
            fallback.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc2:
            raise CacheError(f"no writable symnn cache: {root} ({exc.strerror}) and {fallback} "
                             f"({exc2.strerror}); set SYMNN_CACHE_DIR") from exc2
        return fallback


@lru_cache(maxsize=8)
def _compiler_ident(argv: tuple[str, ...]) -> str:
    try:
        out = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise CompilerNotFoundError(f"C compiler {argv[0]!r} cannot run: {exc}") from exc
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
            return Compiler(tuple(argv), _compiler_ident(tuple(argv)))
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


def _entry_ok(entry: Path, key: str) -> bool:
    """Is ``entry`` a complete build of ``key`` for this Python (B5)?"""
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        so = entry / manifest["extension"]
        return (manifest.get("key") == key and manifest.get("abi") == _abi_tag()
                and so.is_file() and _sha256_file(so) == manifest.get("sha256"))
    except (OSError, ValueError, KeyError, TypeError):
        return False


class _FileLock:
    """An exclusive ``flock`` on ``path``; the kernel drops it if the holder dies (B8)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> "_FileLock":
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _log(root: Path, message: str) -> None:
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid={os.getpid()} {message}\n"
    fd = os.open(root / "build.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _compile(root: Path, modname: str, key: str, files: dict[str, str], cdef: str,
             compiler: Compiler, flags: tuple[str, ...], link: tuple[str, ...] = ()) -> Path:
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
        includes = "".join(f'#include "{n}"\n' for n in files if n.endswith(".c"))  # one or a group
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        wrapper = tmp / f"{modname}.c"
        recompiler.make_c_source(ffi, modname, includes, str(wrapper), verbose=False)
        ext = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        so = tmp / f"{modname}{ext}"
        cmd = [*compiler.argv, *flags, f"-I{include}", f"-I{tmp}", str(wrapper), "-o", str(so), *link, "-lm"]
        _log(root, f"compile {modname}")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except OSError as exc:
            raise CompilerNotFoundError(f"cannot run the C compiler {compiler.argv[0]!r}: {exc}") from exc
        if proc.returncode != 0:
            kept = _keep_failed(root, modname, tmp)
            tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-40:])
            raise CompileError(
                f"compiling {modname} failed (exit {proc.returncode}).\ncommand: {shlex.join(cmd)}\n"
                f"sources kept in {kept}\ncompiler output (last 40 lines):\n{tail}"
            )
        manifest = {"key": key, "module": modname, "extension": so.name, "sha256": _sha256_file(so),
                    "abi": _abi_tag(), "compiler": compiler.ident, "flags": list(flags)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
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


def _keep_failed(root: Path, modname: str, tmp: Path) -> Path:
    dest = root / "failed" / modname
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(tmp, dest)
    return dest


def _import(entry: Path, modname: str) -> types.ModuleType:
    manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
    path = entry / manifest["extension"]
    loader = importlib.machinery.ExtensionFileLoader(modname, str(path))
    spec = importlib.util.spec_from_file_location(modname, str(path), loader=loader)
    if spec is None:  # pragma: no cover - only for a path importlib cannot handle
        raise BuildError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def build(prefix: str, files: dict[str, str], cdef: str, *, blas: bool = False,
          openmp: bool = False) -> types.ModuleType:
    """The cffi extension module for ``files`` (``NAME.h``/``NAME.c``), built at most once;
    ``blas`` links NumPy's OpenBLAS for the large products (:func:`numpy_blas_flags`),
    ``openmp`` builds with ``-fopenmp`` (the large products split over OpenMP threads)."""
    compiler = find_compiler()
    flags = build_flags()
    link: tuple[str, ...] = ()
    if blas:
        extra, link = numpy_blas_flags()
        flags += extra
    if openmp:
        flags += ("-fopenmp",)
        link += ("-fopenmp",)
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
                    if entry.exists():
                        warnings.warn(f"symnn cache entry {entry} is corrupt or incomplete; rebuilding",
                                      RuntimeWarning, stacklevel=3)
                    _compile(root, modname, key, files, cdef, compiler, flags, link)
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


def list_cache() -> list[tuple[str, int]]:
    """(module name, bytes on disk) of every finished entry in the cache."""
    root = cache_root()
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.glob("_symnn_*")):
        if entry.is_dir():
            out.append((entry.name, sum(p.stat().st_size for p in entry.iterdir() if p.is_file())))
    return out


def clear_cache() -> int:
    """Delete every finished entry, each under its build lock, so a build in progress (which
    holds the lock) is waited for, never torn down (K3). Processes that already loaded a
    module keep using it: the file stays mapped. Returns the number of entries removed."""
    root = cache_root()
    removed = 0
    for name, _ in list_cache():
        with _FileLock(root / f"{name}.lock"):
            entry = root / name
            if entry.is_dir():
                trash = Path(tempfile.mkdtemp(prefix=f".trash-{name}.", dir=root))
                os.replace(entry, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
                removed += 1
    with _loaded_lock:
        _loaded.clear()
    return removed
