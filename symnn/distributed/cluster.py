"""Which Dask client a call runs on: one given, one at an address, or an embedded LocalCluster.

One function, :func:`connect`, turns what a user passes as ``client=`` (``sn.train``,
``sn.sweep``) or ``--scheduler`` (the CLI) into a ``distributed.Client`` and says whether
symnn owns it (and so closes it, with its cluster, when the call ends). A user's own client is
never closed.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Iterator

from ..errors import ConfigError, SpecTypeError

#: ``local:N``: an embedded LocalCluster of N worker processes, one thread each
_LOCAL = re.compile(r"local:([1-9][0-9]{0,2})")
#: a scheduler address: a tcp/tls/ws/ucx URL or host:port, or an in-process scheduler's
#: inproc://host/pid/n (a LocalCluster of threads)
_ADDRESS = re.compile(r"(?:(?:tcp|tls|ws|wss|ucx)://)?[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}|inproc://[0-9A-Za-z_.\-]+/[0-9]+/[0-9]+")

INSTALL_HINT = 'pip install "symnn[distributed]"'


def require_distributed() -> Any:
    """The ``distributed`` module, or a ConfigError that says how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(f"training or sweeping on Dask needs dask.distributed: {INSTALL_HINT}") from exc
    return distributed


def check_client_argument(client: object) -> None:
    """Refuse a bad ``client=`` before any work: a Client, ``"local:N"``, an address or None."""
    if client is None:
        return
    if isinstance(client, str):
        if _LOCAL.fullmatch(client) or _ADDRESS.fullmatch(client):
            return
        raise ConfigError(f"client must be a distributed.Client, 'local:N' (N workers on this machine) or a "
                          f"scheduler address such as 'tcp://10.0.0.1:8786', got {client!r}")
    distributed = require_distributed()
    if not isinstance(client, distributed.Client):
        raise SpecTypeError(f"client must be a distributed.Client, 'local:N' or a scheduler address, "
                            f"got {type(client).__name__}")


def _worker_env() -> dict[str, str]:
    """One thread per BLAS and OpenMP pool in each worker process: a worker is one core's share."""
    return {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


@contextlib.contextmanager
def connect(client: object) -> Iterator[Any]:
    """A ``distributed.Client`` for ``client`` (see :func:`check_client_argument`) for the
    duration of the block; a LocalCluster or connection symnn opened is closed on leaving it."""
    check_client_argument(client)
    distributed = require_distributed()
    if isinstance(client, distributed.Client):
        yield client
        return
    assert isinstance(client, str)
    local = _LOCAL.fullmatch(client)
    if local is None:
        with distributed.Client(client, timeout="30s", set_as_default=False) as c:
            yield c
        return
    n = int(local.group(1))
    cores = os.cpu_count() or 1
    if n > 4 * cores:
        raise ConfigError(f"local:{n} asks for {n} worker processes on a machine with {cores} cores")
    with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  env=_worker_env(), silence_logs=40) as cluster:
        # the workers are on this machine: actor calls (a step) go to them directly, not through the scheduler
        with distributed.Client(cluster, set_as_default=False, direct_to_workers=True) as c:
            yield c
