"""Shared fixtures: tiny episodes and where the real data (../shared/data) is."""

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (or ``$SKFEWSHOT_SHARED_DATA``)."""
    return Path(
        os.environ.get("SKFEWSHOT_SHARED_DATA", ROOT.parent / "shared" / "data")
    )


@pytest.fixture
def shared_data():
    """Path to ../shared/data; skips the test with a reason when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(
            f"real data folder {path} is absent (it sits beside the checkout in CI)"
        )
    return path


@pytest.fixture
def episode():
    """A 5-way 5-shot episode of 16-d features with 15 queries per class.

    Returns (X_support, y_support, X_query, y_query); classes are well separated
    Gaussian blobs so any sensible head classifies most queries right.
    """
    rng = np.random.RandomState(0)
    n_way, n_shot, n_query, dim = 5, 5, 15, 16
    centers = rng.normal(scale=3.0, size=(n_way, dim))

    def draw(k):
        X = np.concatenate([c + rng.normal(size=(k, dim)) for c in centers])
        y = np.repeat(np.arange(n_way), k)
        return X.astype(np.float32), y

    Xs, ys = draw(n_shot)
    Xq, yq = draw(n_query)
    return Xs, ys, Xq, yq
