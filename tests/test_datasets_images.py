"""Tests for skfewshot.datasets._images: exact area resizing of image stacks."""

import numpy as np

from skfewshot.datasets._images import area_resize


def test_area_resize_hand_computed():
    # 3 -> 2: output pixel 0 covers [0, 1.5): weights 2/3, 1/3, 0
    image = np.array([[3.0, 6.0, 9.0]] * 3)
    out = area_resize(image[None], 2)[0]
    np.testing.assert_allclose(out, [[4.0, 8.0], [4.0, 8.0]], rtol=1e-6, atol=1e-6)
    # integer ratio: the block mean
    image = np.arange(16.0).reshape(4, 4)
    out = area_resize(image[None], 2)[0]
    np.testing.assert_allclose(out, [[2.5, 4.5], [10.5, 12.5]], rtol=1e-6, atol=1e-6)


def test_area_resize_105_to_28_keeps_mean_ink():
    rng = np.random.RandomState(0)
    images = (rng.rand(3, 105, 105) > 0.9).astype(float)
    out = area_resize(images, 28)
    assert out.shape == (3, 28, 28) and out.dtype == np.float32
    # preserved up to float32 rounding (out is float32, images float64)
    np.testing.assert_allclose(
        out.mean(axis=(1, 2)), images.mean(axis=(1, 2)), rtol=1e-5, atol=1e-7
    )
    assert out.min() >= 0 and out.max() <= 1
