from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def shared() -> Path:
    """The optional real-data tier: ../shared/data beside the repo (CI always has it)."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not here")
    return SHARED


def as_json(records) -> list[dict]:
    """Records as comparable plain data (NaN -> None)."""
    return [r.model_dump(mode="json") for r in records]
