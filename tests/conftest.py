from pathlib import Path

import pytest

from helpers import FIXTURES


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds (training runs, real processes)")
    config.addinivalue_line("markers", "distributed: launches torchrun with several processes")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES} (set STABN_FIXTURES)")
    return FIXTURES
