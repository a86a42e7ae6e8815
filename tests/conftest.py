"""Shared fixtures: the golden reference files of the original FakET implementation."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("FAKET_GOLDEN_DIR", REPO.parent / "shared" / "golden"))


@pytest.fixture(scope="session")
def golden():
    """Return a loader ``golden("radon")`` -> dict of arrays from ``shared/golden/radon.npz``."""

    def load(name: str) -> dict[str, np.ndarray]:
        path = GOLDEN_DIR / f"{name}.npz"
        if not path.exists():
            pytest.fail(f"golden file missing: {path} (set FAKET_GOLDEN_DIR)")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    return load
