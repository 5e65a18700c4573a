"""BackboneTransformer(test_time_shifts=...): features averaged over shifted images."""

import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from skfewshot import BackboneTransformer, PrototypeClassifier
from skfewshot.models import Conv4

try:
    import skops.io  # noqa: F401

    HAS_SKOPS = True
except ImportError:
    HAS_SKOPS = False

RTOL, ATOL = 1e-5, 1e-6


class CountingFlatten(torch.nn.Module):
    """Flatten, counting the rows it sees (class attribute: clones share it)."""

    rows = 0

    def forward(self, x):
        CountingFlatten.rows += x.shape[0]
        return x.flatten(1)


@pytest.fixture(autouse=True)
def _empty_cache():
    BackboneTransformer.clear_cache()
    CountingFlatten.rows = 0
    yield
    BackboneTransformer.clear_cache()


def _shift_by_hand(image, dy, dx):
    """Pixel by pixel: out[..., y, x] = image[..., y - dy, x - dx], 0 outside."""
    out = np.zeros_like(image)
    height, width = image.shape[-2:]
    for y in range(height):
        for x in range(width):
            if 0 <= y - dy < height and 0 <= x - dx < width:
                out[..., y, x] = image[..., y - dy, x - dx]
    return out


def _images(n=5, shape=(1, 16, 16), seed=0):
    return np.random.RandomState(seed).rand(n, *shape).astype(np.float32)


def _conv4():
    torch.manual_seed(0)
    return Conv4(hidden=8).eval()


def test_int_shift_is_the_mean_over_the_square_by_hand():
    image = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3)
    tta = BackboneTransformer(CountingFlatten(), device="cpu", test_time_shifts=1)
    features = tta.fit_transform(image).reshape(3, 3)
    # centre: every shift brings one of the 9 pixels there once: 45 / 9
    # corner (0, 0): only pixels 1, 2, 4 and 5 can reach it: 12 / 9
    assert features[1, 1] == pytest.approx(5.0, rel=1e-6)
    assert features[0, 0] == pytest.approx(12 / 9, rel=1e-6)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    expected = np.mean([_shift_by_hand(image[0], *s) for s in shifts], axis=0)
    np.testing.assert_allclose(features, expected, rtol=RTOL, atol=ATOL)
    assert tta.n_features_out_ == 9


def test_explicit_pairs_on_channels_by_hand():
    # (1, 0): one row down; (0, -1): one column left; both channels alike
    image = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    X = np.stack([image, 10 * image])[None]  # (1, 2, 2, 2)
    tta = BackboneTransformer(
        torch.nn.Flatten(), device="cpu", test_time_shifts=[(1, 0), (0, -1)]
    )
    expected = np.array(
        [[1.0, 0.0], [2.5, 1.0]]
    )  # ([[0, 0], [1, 2]] + [[2, 0], [4, 0]]) / 2
    np.testing.assert_allclose(
        tta.fit_transform(X), np.concatenate([expected, 10 * expected]).reshape(1, -1)
    )


def test_zero_shift_alone_equals_no_tta_exactly():
    X = _images()
    plain = BackboneTransformer(_conv4(), device="cpu", cache=False).fit_transform(X)
    for shifts in ([(0, 0)], 0):
        tta = BackboneTransformer(
            _conv4(), device="cpu", cache=False, test_time_shifts=shifts
        )
        assert_array_equal(tta.fit_transform(X), plain)


@pytest.mark.parametrize("batch_size", [1, 4, 7])
def test_batch_size_does_not_change_the_result(batch_size):
    X = _images(n=3)
    reference = BackboneTransformer(
        _conv4(), device="cpu", cache=False, test_time_shifts=1, batch_size=1000
    ).fit_transform(X)
    tta = BackboneTransformer(
        _conv4(), device="cpu", cache=False, test_time_shifts=1, batch_size=batch_size
    )
    np.testing.assert_allclose(tta.fit_transform(X), reference, rtol=RTOL, atol=ATOL)


def test_mean_of_the_shifted_embeddings_of_a_real_backbone():
    X = _images(n=2)
    net = _conv4()
    shifts = [(0, 0), (2, -1), (-3, 3)]
    with torch.no_grad():
        expected = np.mean(
            [net(torch.from_numpy(_shift_by_hand(X, *s))).numpy() for s in shifts],
            axis=0,
        )
    tta = BackboneTransformer(net, device="cpu", batch_size=4, test_time_shifts=shifts)
    np.testing.assert_allclose(tta.fit_transform(X), expected, rtol=RTOL, atol=ATOL)


def test_one_forward_per_shifted_copy_and_the_cache_knows_the_shifts():
    X = _images(n=5, shape=(4, 4))
    net = CountingFlatten()
    square = BackboneTransformer(net, device="cpu", test_time_shifts=1).fit(X)
    assert CountingFlatten.rows == 5 * 9  # fit: one forward per shifted copy
    features = square.transform(X)
    clone(square).fit(X).transform(X)
    assert CountingFlatten.rows == 5 * 9  # the averaged rows came from the cache
    # other shifts, or none, are never served the cached averages
    pairs = BackboneTransformer(net, device="cpu", test_time_shifts=[(0, 0), (1, 1)])
    two = pairs.fit_transform(X)
    assert CountingFlatten.rows == 5 * 9 + 5 * 2
    expected = (X + np.stack([_shift_by_hand(x, 1, 1) for x in X])) / 2
    np.testing.assert_allclose(two, expected.reshape(5, -1), rtol=RTOL, atol=ATOL)
    plain = BackboneTransformer(net, device="cpu").fit_transform(X)
    assert CountingFlatten.rows == 5 * 9 + 5 * 2 + 5
    assert_array_equal(plain, X.reshape(5, -1))
    assert not np.allclose(features, plain)
    # and the square's rows are still there
    again = BackboneTransformer(net, device="cpu", test_time_shifts=1).fit_transform(X)
    assert CountingFlatten.rows == 5 * 9 + 5 * 2 + 5
    assert_array_equal(again, features)


@pytest.mark.parametrize(
    "shifts, match",
    [
        (-1, "test_time_shifts"),
        ([], r"test_time_shifts must be None, an int >= 0 or a non-empty sequence"),
        ([(1,)], r"sequence of \(dy, dx\) int pairs, got \[\(1,\)\]"),
        ([(0.5, 0)], r"int pairs, got \[\(0.5, 0\)\]"),
        ([(True, 0)], r"int pairs, got \[\(True, 0\)\]"),
        (True, "int pairs, got True"),
        ([(0, 4)], r"the shift \(0, 4\), which moves a 4x4 image entirely out of view"),
        (4, r"the shift \(-4, -4\), which moves a 4x4 image"),
    ],
)
def test_invalid_shifts_name_the_parameter(shifts, match):
    tta = BackboneTransformer(torch.nn.Flatten(), device="cpu", test_time_shifts=shifts)
    with pytest.raises(ValueError, match=match):
        tta.fit(_images(n=2, shape=(4, 4)))


def test_inputs_that_are_not_images_are_refused():
    message = (
        r"test_time_shifts shifts images, so X must hold float images of shape "
        r"\(n, height, width\) or \(n, channels, height, width\); got {} rows of "
        r"per-sample shape {}"
    )
    rows = np.random.RandomState(0).rand(4, 6).astype(np.float32)
    tta = BackboneTransformer(torch.nn.Identity(), device="cpu", test_time_shifts=1)
    with pytest.raises(ValueError, match=message.format("float32", r"\(6,\)")):
        tta.fit(rows)
    # token ids from a preprocess (the route of a text encoder)
    tokens = BackboneTransformer(
        torch.nn.Identity(),
        device="cpu",
        preprocess=lambda text: np.array([len(text), text.count("a")]),
        test_time_shifts=[(0, 1)],
    )
    with pytest.raises(ValueError, match=message.format("int64", r"\(2,\)")):
        tokens.fit(["abc", "banana"])
    # a transformer fitted on images refuses 5-D input at transform (rank check)
    fitted = BackboneTransformer(torch.nn.Flatten(), device="cpu", test_time_shifts=1)
    fitted.fit(_images(n=2, shape=(4, 4)))
    with pytest.raises(ValueError, match="per-sample shape"):
        fitted.transform(_images(n=2, shape=(1, 1, 4, 4)))


def test_preprocessed_images_are_shifted():
    images = [np.full((3, 3), v, dtype=np.float32) for v in (1.0, 2.0)]
    tta = BackboneTransformer(
        torch.nn.Flatten(),
        device="cpu",
        preprocess=np.asarray,
        test_time_shifts=[(0, 1)],
    )
    expected = [_shift_by_hand(image, 0, 1).ravel() for image in images]
    assert_array_equal(tta.fit_transform(images), np.array(expected))


def test_float64_module_and_feature_names():
    X = _images(n=3, shape=(4, 4)).astype(np.float64)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).double()
    tta = BackboneTransformer(net, device="cpu", dtype="float64", test_time_shifts=1)
    features = tta.fit_transform(X)
    assert features.dtype == np.float32 and features.shape == (3, 3)
    assert list(tta.get_feature_names_out()) == [
        "backbonetransformer0",
        "backbonetransformer1",
        "backbonetransformer2",
    ]


def _fitted_pipeline(shifts):
    X = _images(n=6)
    y = np.repeat([0, 1, 2], 2)
    pipe = make_pipeline(
        BackboneTransformer(_conv4(), device="cpu", test_time_shifts=shifts),
        PrototypeClassifier(),
    )
    return pipe.fit(X, y), X


def test_pickle_and_clone_keep_the_shifts():
    pipe, X = _fitted_pipeline([(0, 1), (-1, 0)])
    features = pipe[0].transform(X)
    again = pickle.loads(pickle.dumps(pipe))
    assert again[0].test_time_shifts == [(0, 1), (-1, 0)]
    BackboneTransformer.clear_cache()
    assert_array_equal(again[0].transform(X), features)
    assert clone(pipe[0]).get_params()["test_time_shifts"] == [(0, 1), (-1, 0)]


@pytest.mark.skipif(not HAS_SKOPS, reason="skops is not installed")
@pytest.mark.parametrize("shifts", [1, [(0, 1), (-1, 0)]])
def test_skops_round_trip_keeps_the_shifts(shifts, tmp_path):
    from skfewshot.persistence import dump, load

    pipe, X = _fitted_pipeline(shifts)
    features = pipe[0].transform(X)
    dump(pipe, tmp_path / "pipe.skops")
    loaded = load(tmp_path / "pipe.skops")
    assert loaded[0].get_params()["test_time_shifts"] == shifts
    BackboneTransformer.clear_cache()
    assert_array_equal(loaded[0].transform(X), features)
    assert_array_equal(loaded.predict(X), pipe.predict(X))
