"""Tests for skfewshot.datasets.load_digits_images."""

import numpy as np
from sklearn.datasets import load_digits

from skfewshot.datasets import load_digits_images


def test_load_digits_images():
    bunch = load_digits_images()
    reference = load_digits()
    assert bunch.data.shape == (1797, 1, 8, 8) and bunch.data.dtype == np.float32
    np.testing.assert_allclose(bunch.data[:, 0] * 16, reference.images)
    np.testing.assert_array_equal(bunch.target, reference.target)
    np.testing.assert_array_equal(bunch.target_names, np.arange(10))
    assert np.shares_memory(bunch.images, bunch.data)
    assert "digits" in bunch.DESCR.lower()
    X, y = load_digits_images(return_X_y=True)
    np.testing.assert_array_equal(X, bunch.data)
    np.testing.assert_array_equal(y, bunch.target)
