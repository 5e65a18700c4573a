"""The numpy-only helpers: seeds and the finite-features check."""

import subprocess
import sys

import numpy as np
import pytest

from skfewshot._utils import check_finite_features, seed_from

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml


def test_seed_from_follows_sklearn_random_state():
    assert seed_from(3) == seed_from(3)
    rng = np.random.RandomState(0)
    assert seed_from(rng) != seed_from(rng)  # a RandomState advances


def test_check_finite_features_names_the_source_and_row():
    check_finite_features(np.ones((2, 3)), "the backbone Net")
    features = np.ones((4, 2))
    features[[1, 3], 0] = [np.inf, np.nan]
    with pytest.raises(
        ValueError,
        match="the backbone Net returned .* for 2 of the 4 "
        "rows of a batch, first for row 11 of X",
    ):
        check_finite_features(features, "the backbone Net", np.array([9, 11, 12, 13]))
    with pytest.raises(ValueError, match="first for row 6 of X"):
        check_finite_features(features, "the backbone Net", slice(5, 9))


def test_utils_do_not_import_torch():
    code = "import sys, skfewshot._utils; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
