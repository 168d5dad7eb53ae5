from __future__ import annotations

import numpy as np
import pytest


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
    itself point SYMNN_CACHE_DIR at their own directories)."""
    import os

    old = os.environ.get("SYMNN_CACHE_DIR")
    os.environ["SYMNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("symnn-cache"))
    yield
    if old is None:
        os.environ.pop("SYMNN_CACHE_DIR", None)
    else:
        os.environ["SYMNN_CACHE_DIR"] = old


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``needs_cc`` when this machine has no C compiler."""
    import shutil

    if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"):
        return
    skip = pytest.mark.skip(reason="no C compiler on this machine")
    for item in items:
        if "needs_cc" in item.keywords:
            item.add_marker(skip)
