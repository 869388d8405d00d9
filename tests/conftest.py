"""Shared pytest fixtures. Tests that read ../shared/realdata skip when it is absent (a user's clone)."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

REALDATA = Path(os.environ.get("REALDATA_DIR", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata():
    """Path to ../shared/realdata; skips the test when it is not there."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data not found at {REALDATA}")
    return REALDATA
