"""Shared test configuration."""

import os
from pathlib import Path

import pytest
import torch

# One intra-op thread per pytest-xdist worker: workers already use every core,
# and more threads than cores makes small torch ops much slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

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
