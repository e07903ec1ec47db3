"""Shared test configuration."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get(
        "SKNETS_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
)


@pytest.fixture(scope="session")
def shared_data():
    """The real data folder (``../shared/data``); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
