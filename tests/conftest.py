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
