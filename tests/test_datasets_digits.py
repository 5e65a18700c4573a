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


def test_load_digits_images_image_size():
    small = load_digits_images().data
    big = load_digits_images(image_size=32)
    assert big.data.shape == (1797, 1, 32, 32) and big.data.dtype == np.float32
    assert big.images.shape == (1797, 32, 32)
    assert np.shares_memory(big.images, big.data)
    # 8 -> 32 is a whole factor: each pixel becomes a 4x4 block of its value,
    # what nearest-neighbour upsampling (numpy repeat) gives
    blocks = small.repeat(4, axis=-1).repeat(4, axis=-2)
    np.testing.assert_allclose(big.data, blocks, rtol=0, atol=1e-6)
    # 8 -> 12: output column 1 covers input columns [2/3, 4/3), a third of
    # columns 0 and 1 each, so it is their mean; output row 0 is input row 0
    mid = load_digits_images(image_size=12).data
    expected = (small[:, 0, 0, 0] + small[:, 0, 0, 1]) / 2
    np.testing.assert_allclose(mid[:, 0, 0, 1], expected, rtol=0, atol=1e-6)
    # 8 -> 4: the mean of each 2x2 block; the ink of every image is kept
    tiny = load_digits_images(image_size=4).data
    np.testing.assert_allclose(
        tiny[:, 0, 0, 0], small[:, 0, :2, :2].mean(axis=(1, 2)), rtol=0, atol=1e-6
    )
    for resized in (big.data, mid):
        np.testing.assert_allclose(
            resized.mean(axis=(1, 2, 3)),
            small.mean(axis=(1, 2, 3)),
            rtol=1e-5,
            atol=1e-6,
        )
    X, y = load_digits_images(image_size=32, return_X_y=True)
    np.testing.assert_array_equal(X, big.data)
    np.testing.assert_array_equal(y, big.target)
    # the original size is the data untouched
    np.testing.assert_array_equal(load_digits_images(image_size=8).data, small)
