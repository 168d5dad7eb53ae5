from __future__ import annotations

import os

# One BLAS thread for the whole session, and for the processes tests start: the suite runs on
# 2-core machines, where central differences calling a multi-threaded OpenBLAS oversubscribed
# the cores (one BLAS test took 286 s in a full run, 12 s alone with one thread). Set before
# NumPy loads OpenBLAS; threadpoolctl below covers a BLAS that is already loaded.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

_BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-generated", action="store_true",
                     help="rewrite generated/ instead of failing on drift")


@pytest.fixture
def update_generated(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-generated"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session", autouse=True)
def _private_module_cache(tmp_path_factory: pytest.TempPathFactory):
    """Compiled C modules go to a per-session cache, never the user's (tests of the cache
    itself point SYMNN_CACHE_DIR at their own directories). Under pytest-xdist the workers
    share one (the folder above each worker's temp folder is the session's): a network that
    modules on both workers compile is compiled once, the cache's lock making the other wait
    for it (K1 in tests/unit/test_build_cache.py)."""
    import os

    old = os.environ.get("SYMNN_CACHE_DIR")
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # no xdist, or -n 0
        root = tmp_path_factory.mktemp("symnn-cache")
    else:
        root = tmp_path_factory.getbasetemp().parent / "symnn-cache"
        root.mkdir(mode=0o700, exist_ok=True)
    os.environ["SYMNN_CACHE_DIR"] = str(root)
    yield
    if old is None:
        os.environ.pop("SYMNN_CACHE_DIR", None)
    else:
        os.environ["SYMNN_CACHE_DIR"] = old


#: The optimisation of the suite's in-process C builds (``sn.compile``, the CLI's), appended
#: through SYMNN_CFLAGS after the default -O3. The compiler is most of the suite's time (on a
#: 2-core Zen 3 machine, 770 of 1,330 CPU seconds, most of it -O3 on the kernels of some 190
#: networks): -O1 builds a network in about 40 % of -O3's time. What the tests assert holds at
#: any level, since no flag may change a result (no -ffast-math; the loops are the same C). The
#: build users get is compiled and checked too: the modules marked ``native_build`` keep the
#: default flags (the README's first contact, the public call, the backends' catalogue, the
#: blocked products' shapes), and test_c_standalone.py builds one network of each kind of code
#: in both dtypes at -O3 -march=native and runs its C harness (gradient against central
#: differences, every bad-argument case). The vectorisation tests, the strict-warning and the
#: sanitizer harnesses choose their own flags.
SUITE_OPT = "-O1"


@pytest.fixture(scope="module", autouse=True)
def _suite_build_optimisation(request: pytest.FixtureRequest):
    """SYMNN_CFLAGS gains SUITE_OPT for the module's tests unless it is marked ``native_build``.
    Module-scoped, so that the module's own compiled fixtures are built the same way; a test that
    sets SYMNN_CFLAGS itself (monkeypatch) replaces it."""
    old = os.environ.get("SYMNN_CFLAGS")
    if request.node.get_closest_marker("native_build") is None:
        os.environ["SYMNN_CFLAGS"] = f"{old or ''} {SUITE_OPT}".strip()
    yield
    if old is None:
        os.environ.pop("SYMNN_CFLAGS", None)
    else:
        os.environ["SYMNN_CFLAGS"] = old


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``needs_cc`` when this machine has no C compiler."""
    import shutil

    if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"):
        return
    skip = pytest.mark.skip(reason="no C compiler on this machine")
    for item in items:
        if "needs_cc" in item.keywords:
            item.add_marker(skip)
