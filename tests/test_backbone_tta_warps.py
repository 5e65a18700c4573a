"""BackboneTransformer(test_time_warps=...): features averaged over rotated and
scaled copies of the images, each then shifted by ``test_time_shifts``."""

import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.base import clone
from test_backbone_tta import (
    HAS_SKOPS,
    CountingFlatten,
    _conv4,
    _empty_cache,  # noqa: F401 (autouse: every test starts with an empty cache)
    _fitted_pipeline,
    _images,
    _shift_by_hand,
)

from skfewshot import BackboneTransformer

RTOL, ATOL = 1e-5, 1e-6
WARPS = [(0, 1.0), (90, 1.0)]


def _flat(warps, shifts=None, **params):
    return BackboneTransformer(
        torch.nn.Flatten(),
        device="cpu",
        test_time_warps=warps,
        test_time_shifts=shifts,
        **params,
    )


def test_a_quarter_turn_is_counter_clockwise_as_displayed():
    X = _images(n=3, shape=(1, 6, 6))
    turned = _flat([(90, 1)]).fit_transform(X).reshape(X.shape)
    # np.rot90 turns the first row into the first column, read bottom to top
    np.testing.assert_allclose(turned, np.rot90(X, 1, axes=(2, 3)), atol=1e-5)
    back = _flat([(-90, 1)]).fit_transform(X).reshape(X.shape)
    np.testing.assert_allclose(back, np.rot90(X, -1, axes=(2, 3)), atol=1e-5)


def test_half_scale_by_hand_is_block_means_with_zeros_around():
    # scale 0.5 about the centre: output pixel centres at +-0.5 and +-1.5
    # pixels from the centre read the input at +-1 (halfway between two pixel
    # centres: their mean) and +-3 (outside: zero)
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out = _flat([(0, 0.5)]).fit_transform(image).reshape(4, 4)
    expected = np.zeros((4, 4), np.float32)
    for i, rows in enumerate((slice(0, 2), slice(2, 4))):
        for j, cols in enumerate((slice(0, 2), slice(2, 4))):
            expected[1 + i, 1 + j] = image[0, rows, cols].mean()
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_the_unwarped_view_alone_equals_no_tta_exactly():
    X = _images()
    plain = BackboneTransformer(_conv4(), device="cpu", cache=False).fit_transform(X)
    tta = BackboneTransformer(
        _conv4(), device="cpu", cache=False, test_time_warps=[(0, 1)]
    )
    assert_array_equal(tta.fit_transform(X), plain)


def test_every_warp_then_every_shift_one_forward_each():
    X = _images(n=4, shape=(5, 5))
    shifts = [(0, 0), (1, -1)]
    tta = BackboneTransformer(
        CountingFlatten(), device="cpu", test_time_warps=WARPS, test_time_shifts=shifts
    )
    features = tta.fit_transform(X)
    assert CountingFlatten.rows == 4 * len(WARPS) * len(shifts)
    copies = [
        _shift_by_hand(np.rot90(X, turns, axes=(1, 2)), *shift)
        for turns in (0, 1)
        for shift in shifts
    ]
    expected = np.mean(copies, axis=0).reshape(4, -1)
    np.testing.assert_allclose(features, expected, rtol=RTOL, atol=1e-5)


def test_mean_over_the_warps_of_a_real_backbone_and_batch_size():
    X = _images(n=3)
    warps = [(-10, 0.9), (0, 1), (10, 1.1)]
    expected = np.mean(
        [
            _conv4()(torch.from_numpy(_flat([w]).fit_transform(X).reshape(X.shape)))
            .detach()
            .numpy()
            for w in warps
        ],
        axis=0,
    )
    for batch_size in (1, 2, 1000):
        tta = BackboneTransformer(
            _conv4(),
            device="cpu",
            cache=False,
            test_time_warps=warps,
            batch_size=batch_size,
        )
        np.testing.assert_allclose(tta.fit_transform(X), expected, rtol=RTOL, atol=1e-5)


def test_the_cache_knows_the_warps():
    X = _images(n=5, shape=(4, 4))
    net = CountingFlatten()
    turned = BackboneTransformer(net, device="cpu", test_time_warps=WARPS).fit(X)
    features = turned.transform(X)
    assert CountingFlatten.rows == 5 * 2
    clone(turned).fit(X).transform(X)
    assert CountingFlatten.rows == 5 * 2  # from the cache
    # other warps, a shift instead, or nothing: never served those rows
    scaled = BackboneTransformer(net, device="cpu", test_time_warps=[(0, 1), (0, 0.5)])
    assert not np.allclose(scaled.fit_transform(X), features)
    assert CountingFlatten.rows == 5 * 4
    shifted = BackboneTransformer(net, device="cpu", test_time_shifts=[(0, 0), (0, 1)])
    assert not np.allclose(shifted.fit_transform(X), features)
    plain = BackboneTransformer(net, device="cpu").fit_transform(X)
    assert_array_equal(plain, X.reshape(5, -1))
    assert CountingFlatten.rows == 5 * 7


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_other_dtypes_are_warped(dtype):
    X = _images(n=2, shape=(6, 6))
    expected = np.rot90(X, 1, axes=(1, 2)).reshape(2, -1)
    host = np.float64 if dtype == "float64" else np.float32
    tta = _flat([(90, 1)], dtype=dtype)
    # half precision keeps 3 (bfloat16: 2) significant digits of a pixel
    atol = 1e-6 if dtype == "float64" else 1e-2
    np.testing.assert_allclose(tta.fit_transform(X.astype(host)), expected, atol=atol)


def test_the_warp_is_computed_outside_autocast():
    # amp=True runs the forward under autocast; the sampling grid must not be
    # computed in half precision there (it misplaced samples by 0.04 of a
    # pixel's value at 28x28)
    X = _images(n=3, shape=(28, 28))
    warps = [(10, 1.0), (-7, 0.9)]
    exact = _flat(warps, cache=False).fit_transform(X)
    amp = _flat(warps, cache=False, amp=True).fit_transform(X)
    np.testing.assert_allclose(amp, exact, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "warps, match",
    [
        ([], r"test_time_warps must be None or a non-empty sequence of \(degrees, "),
        ([(1,)], r"pairs of numbers, got \[\(1,\)\]"),
        ([(True, 1)], r"pairs of numbers, got \[\(True, 1\)\]"),
        ([("10", 1)], r"pairs of numbers, got \[\('10', 1\)\]"),
        ([(0, 0)], r"holds \(0.0, 0.0\): degrees must be finite, and scales in "),
        # finite but past float32's 1 / scale: the error blamed the backbone
        ([(0, 1e-40)], r"holds \(0.0, 1e-40\).*scales in \[0.001, 1000.0\]"),
        ([(0, 1001)], r"holds \(0.0, 1001.0\)"),
        ([(0, -1)], r"holds \(0.0, -1.0\)"),
        ([(np.nan, 1)], r"holds \(nan, 1.0\)"),
        ([(0, np.inf)], r"holds \(0.0, inf\)"),
        ("ab", "test_time_warps"),
    ],
)
def test_invalid_warps_name_the_parameter(warps, match):
    with pytest.raises(ValueError, match=match):
        _flat(warps).fit(_images(n=2, shape=(4, 4)))


def test_inputs_that_are_not_images_are_refused():
    rows = np.random.RandomState(0).rand(4, 6).astype(np.float32)
    tta = BackboneTransformer(torch.nn.Identity(), device="cpu", test_time_warps=WARPS)
    match = (
        r"test_time_warps warps images, so X must hold float images of shape "
        r"\(n, height, width\) or \(n, channels, height, width\); got float32 "
        r"rows of per-sample shape \(6,\)"
    )
    with pytest.raises(ValueError, match=match):
        tta.fit(rows)


def test_pickle_clone_and_skops_keep_the_warps(tmp_path):
    pipe, X = _fitted_pipeline(1)
    pipe[0].set_params(test_time_warps=[(-5, 0.9), (5, 1.1)])
    features = pipe[0].transform(X)
    assert not np.allclose(
        features, pipe[0].set_params(test_time_warps=None).transform(X)
    )
    pipe[0].set_params(test_time_warps=[(-5, 0.9), (5, 1.1)])
    again = pickle.loads(pickle.dumps(pipe))
    assert clone(again[0]).get_params()["test_time_warps"] == [(-5, 0.9), (5, 1.1)]
    BackboneTransformer.clear_cache()
    assert_array_equal(again[0].transform(X), features)
    if HAS_SKOPS:
        from skfewshot.persistence import dump, load

        dump(pipe, tmp_path / "pipe.skops")
        loaded = load(tmp_path / "pipe.skops")
        assert loaded[0].get_params()["test_time_warps"] == [(-5, 0.9), (5, 1.1)]
        BackboneTransformer.clear_cache()
        assert_array_equal(loaded[0].transform(X), features)
