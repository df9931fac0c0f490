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


def tiny_bench_sets(root: Path, real_size: int = 64, n_train: int = 24, n_test: int = 12, seed: int = 1,
                    n_synthetic: int = 40) -> dict:
    """Simulated synthetic, real_train and real_test sets for a tiny benchmark: {name: manifest}."""
    from gapkit.sim import SimConfig, generate

    sets = {"synthetic": SimConfig(domain="synthetic", n=n_synthetic, size=64, seed=seed),
            "real_train": SimConfig(domain="real", n=n_train, size=real_size, seed=seed, split="train"),
            "real_test": SimConfig(domain="real", n=n_test, size=real_size, seed=seed, split="test", start=10_000)}
    return {name: generate(root / name, sc, workers=1) for name, sc in sets.items()}

