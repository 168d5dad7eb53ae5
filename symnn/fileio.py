"""Writing files the way a user expects: whole or not at all, with the mode their umask gives.

Every file symnn writes (emitted sources, saved models, reports, plots, exported weights) goes
through :func:`staged`: the content is written to a temporary file in the target's directory and
renamed over the target, so a crash or Ctrl-C never leaves a half-written file. ``mkstemp``
creates that temporary file with mode 0600 whatever the umask (it must, to be safe against other
users while it is being written); before the rename it gets ``0666 & ~umask``, the mode
``open(path, "w")`` would have given, so a shared project directory stays readable by the group
and an emitted source can be checked in with ordinary permissions.
"""

from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask. Linux reports it in /proc/self/status (no side effect); elsewhere it
    can only be read by setting it, which is done under a lock and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a new regular file gets from ``open(path, "w")`` under the current umask."""
    return 0o666 & ~current_umask()


@contextmanager
def staged(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception the file
    written there gets the umask's mode and replaces ``path`` atomically, otherwise it is
    removed. ``suffix`` lets writers that pick a format from the name (matplotlib) see it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` (UTF-8, LF) or raw bytes to ``path`` through :func:`staged`: never a
    half-written file, and the mode the umask gives."""
    with staged(path) as tmp:
        tmp.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
