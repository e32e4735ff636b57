"""Shared test set-up: headless plotting, quiet TensorFlow, few threads, paths."""

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where demo_data/, models/ and configs/ live)."""
    return REPO


@pytest.fixture(scope="session")
def demo_dir(repo_root) -> Path:
    """The bundled demo data folder."""
    return repo_root / "demo_data"
