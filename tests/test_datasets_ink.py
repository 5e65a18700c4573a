"""InkNormalizer and ink_radius: moment normalisation of drawings."""

import numpy as np
import pytest
import torch
from _datasets_testing import DATA_FREE_API_CHECKS, data_free_checks
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError

from skfewshot import BackboneTransformer, PrototypeClassifier, evaluate_episodes
from skfewshot.datasets import InkNormalizer, _ink, ink_radius, load_omniglot


def blob(size, centre, sigma):
    """A Gaussian blob of ink (peak 1) on a blank (1, 1, size, size) image."""
    rows, cols = np.mgrid[:size, :size]
    d2 = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2
    return np.exp(-d2 / (2 * sigma**2))[None, None].astype(np.float32)


def centre_of_mass(images):
    mass = images.mean(1)
    rows, cols = np.mgrid[: mass.shape[1], : mass.shape[2]]
    total = mass.sum((1, 2))
    return (mass * rows).sum((1, 2)) / total, (mass * cols).sum((1, 2)) / total


def test_ink_radius_by_hand():
    image = np.zeros((2, 1, 10, 10))
    image[0, 0, 4:6, 4:6] = 1  # four pixels, each sqrt(0.5) from their centre
    image[1, 0, 0, 0] = image[1, 0, 0, 4] = 2  # two pixels 4 apart: radius 2
    np.testing.assert_allclose(ink_radius(image), [np.sqrt(0.5) / 10, 2 / 10])
    assert ink_radius(np.zeros((1, 1, 4, 4))).tolist() == [0.0]  # blank
    assert ink_radius(np.zeros((0, 1, 4, 4))).shape == (0,)


def test_median_ink_radius_is_the_lower_middle_drawing():
    # squares of 2, 4, 6 and 8 pixels: per axis the mean squared offset from
    # the centre is (0.25 + ... + (k - 0.5) ** 2) / k, twice that in 2-D
    images = np.zeros((4, 1, 10, 10))
    for i, side in enumerate((8, 2, 6, 4)):  # not sorted
        start = 5 - side // 2
        images[i, 0, start : start + side, start : start + side] = 1
    expected = np.sqrt(2 * (0.25 + 2.25) / 2) / 10  # the 4-pixel square
    # an even count: the lower of the middle two, an actual drawing's radius,
    # not their mean (0.200)
    assert _ink._median_ink_radius(images) == pytest.approx(expected)
    assert expected == pytest.approx(0.1581, abs=1e-4)
    assert _ink._median_ink_radius(images[:3]) == pytest.approx(
        np.sqrt(2 * (0.25 + 2.25 + 6.25) / 3) / 10  # the 6-pixel square
    )


def test_centring_by_a_whole_pixel_shift_is_exact():
    # centre of mass (1.5, 2.5) by symmetry: the image centre (3.5, 3.5) is
    # 2 rows and 1 column away, so bilinear sampling copies pixels exactly
    image = np.zeros((1, 1, 8, 8), np.float32)
    image[0, 0, 1:3, 2:4] = [[1, 0.5], [0.5, 1]]
    out = InkNormalizer(radius=None).fit_transform(image)
    expected = np.zeros_like(image)
    expected[0, 0, 3:5, 3:5] = [[1, 0.5], [0.5, 1]]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "centre, sigma", [((10, 12), 2.0), ((30, 25), 5.0), ((20, 20), 8.0)]
)
def test_every_drawing_comes_out_centred_at_the_radius(centre, sigma):
    image = blob(48, centre, sigma)
    out = InkNormalizer(radius=0.1).fit_transform(image)
    rows, cols = centre_of_mass(out)
    np.testing.assert_allclose([rows[0], cols[0]], [23.5, 23.5], atol=0.02)
    # bilinear magnification blurs a little: the radius grows by up to 3 %
    np.testing.assert_allclose(ink_radius(out), 0.1, rtol=0.04)
    # radius=None centres and keeps the size
    kept = InkNormalizer(radius=None).fit_transform(image)
    np.testing.assert_allclose(ink_radius(kept), ink_radius(image), rtol=0.04)


def test_two_hands_of_one_drawing_come_out_alike():
    # the same stroke drawn small in one corner and twice as large in another
    small = np.zeros((1, 1, 64, 64), np.float32)
    small[0, 0, 5:15, 8:10] = 1
    small[0, 0, 8:10, 5:15] = 1
    large = np.zeros_like(small)
    large[0, 0, 30:50, 36:40] = 1
    large[0, 0, 36:40, 30:50] = 1
    normaliser = InkNormalizer(radius=0.12, image_size=16)
    a, b = normaliser.transform(small), normaliser.transform(large)
    before = np.abs(InkNormalizer(radius=None, image_size=16).transform(small))
    assert np.abs(a - b).max() < 0.15  # alike
    assert np.abs(before - b).max() > 0.5  # and they were not


def test_image_size_resizes_after_the_warp_by_area_averaging():
    image = blob(56, (20, 30), 6.0)
    full = InkNormalizer(radius=0.15).transform(image)
    out = InkNormalizer(radius=0.15, image_size=28).transform(image)
    assert out.shape == (1, 1, 28, 28) and out.dtype == np.float32
    np.testing.assert_allclose(
        out, full.reshape(1, 1, 28, 2, 28, 2).mean((3, 5)), atol=1e-6
    )
    assert InkNormalizer(image_size=(7, 14)).transform(image).shape == (1, 1, 7, 14)


def test_channels_share_one_warp():
    gray = blob(32, (8, 10), 3.0)
    rgb = np.concatenate([gray, 0.5 * gray, 0 * gray], axis=1)
    out = InkNormalizer(radius=0.1).transform(rgb)
    # the moments come from the channel mean, whose shape is the gray one's
    np.testing.assert_allclose(
        out[:, :1], InkNormalizer(radius=0.1).transform(gray), atol=1e-6
    )
    np.testing.assert_allclose(out[:, 1], 0.5 * out[:, 0], atol=1e-6)
    assert not out[:, 2].any()


def test_a_dot_and_a_blank_image_are_only_centred():
    images = np.zeros((2, 1, 9, 9), np.float32)
    images[0, 0, 1, 1] = 1  # a dot: radius 0, scaling it would fill the image
    out = InkNormalizer(radius=0.3).transform(images)
    expected = np.zeros((9, 9), np.float32)
    expected[4, 4] = 1
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-6)
    np.testing.assert_array_equal(out[1], images[1])
    assert np.isfinite(out).all()


def test_blocks_give_what_one_pass_gives(monkeypatch):
    rng = np.random.RandomState(0)
    images = rng.uniform(size=(5, 1, 12, 12)).astype(np.float32) ** 4
    whole = InkNormalizer(radius=0.2, image_size=6).transform(images)
    monkeypatch.setattr(_ink, "_BLOCK", 2)
    np.testing.assert_array_equal(
        InkNormalizer(radius=0.2, image_size=6).transform(images), whole
    )
    empty = InkNormalizer(image_size=6).transform(images[:0])
    assert empty.shape == (0, 1, 6, 6)


def test_stateless_in_a_few_shot_pipeline():
    rng = np.random.RandomState(0)
    X = np.concatenate(
        [blob(16, rng.uniform(4, 12, 2), s) for s in [1.5, 1.5, 1.5, 3, 3, 3] * 4]
    )
    # two classes: thin and thick blobs, anywhere; every size is normalised
    # away with radius, so the classes are told apart by their profile only
    y = np.tile([0, 0, 0, 1, 1, 1], 4)
    normaliser = InkNormalizer(radius=None)
    assert normaliser.fit(X[:2]) is normaliser
    np.testing.assert_array_equal(
        normaliser.transform(X), clone(normaliser).transform(X)
    )
    assert InkNormalizer.frozen_features is True
    pipe = make_pipeline(
        InkNormalizer(radius=None),
        BackboneTransformer(torch.nn.Flatten(), device="cpu", cache=False),
        PrototypeClassifier(),
    )
    scores = evaluate_episodes(
        pipe, X, y, n_way=2, n_shot=1, n_query=5, n_episodes=20, random_state=0
    )
    assert scores.mean == 1.0  # centred, thin and thick blobs match their class


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((2, 8, 8)), r"shape \(n, C, height, width\).*shape \(2, 8, 8\)"),
        (np.array([[[["a"]]]]), "numeric array of images"),
        (np.full((1, 1, 4, 4), np.nan), "NaN or infinite"),
        (-np.ones((1, 1, 4, 4)), r"negative pixels \(min -1\)"),
    ],
)
def test_bad_images_are_refused(X, match):
    with pytest.raises(ValueError, match=match):
        InkNormalizer().fit(X)
    with pytest.raises(ValueError, match=match):
        InkNormalizer().transform(X)


@pytest.mark.parametrize("radius", [0, -0.1, 1.5, "median"])
def test_bad_radius_is_refused(radius):
    with pytest.raises(InvalidParameterError, match="radius"):
        InkNormalizer(radius=radius).fit(np.zeros((1, 1, 4, 4)))


def test_dark_ink_on_light_background_warns():
    image = 1 - blob(16, (5, 5), 2.0)
    with pytest.warns(UserWarning, match=r"mean pixel of 0\.9.*pass 1 - X"):
        InkNormalizer().transform(image)


@pytest.mark.shared_data
def test_omniglot_drawings_come_out_centred_at_the_radius(shared_data):
    bunch = load_omniglot(
        "images_background_small2", path=shared_data / "omniglot", image_size=None
    )
    X = bunch.data[:300]
    before = ink_radius(X)
    assert before.std() / before.mean() > 0.1  # the hands differ in size
    out = InkNormalizer(radius=0.2, image_size=28).transform(X)
    rows, cols = centre_of_mass(out)
    # a few drawings, scaled up, lose ink past the border, which moves them
    for where in (rows, cols):
        assert np.median(np.abs(where - 13.5)) < 0.01
        assert np.abs(where - 13.5).max() < 0.2
    radius = ink_radius(out)
    assert np.median(np.abs(radius / 0.2 - 1)) < 0.01
    assert np.abs(radius / 0.2 - 1).max() < 0.1


@data_free_checks(InkNormalizer(radius=0.1))
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("check", DATA_FREE_API_CHECKS)
def test_sklearn_api_checks(check):
    check("InkNormalizer", InkNormalizer(radius=0.1))
