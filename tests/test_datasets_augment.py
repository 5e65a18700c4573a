"""Tests for skfewshot.datasets: rotations, mirror images and splices as classes."""

import numpy as np
import pytest

from skfewshot.datasets import augment_mirrors, augment_rotations, augment_splices


def test_augment_rotations_exact():
    X = np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[0, 0, 1], [0, 0, 0], [0, 0, 0]]])
    X_rot, y_rot, g_rot = augment_rotations(
        X[:, None], np.array([2, 0]), groups=["a", "b"]
    )
    assert X_rot.shape == (8, 1, 3, 3)
    np.testing.assert_array_equal(X_rot[:2, 0], X)
    # 90 degrees counter-clockwise
    np.testing.assert_array_equal(X_rot[2, 0], [[3, 6, 9], [2, 5, 8], [1, 4, 7]])
    np.testing.assert_array_equal(X_rot[4, 0], [[9, 8, 7], [6, 5, 4], [3, 2, 1]])
    np.testing.assert_array_equal(X_rot[6, 0], [[7, 4, 1], [8, 5, 2], [9, 6, 3]])
    np.testing.assert_array_equal(X_rot[3, 0], [[1, 0, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(y_rot, [2, 0, 5, 3, 8, 6, 11, 9])
    np.testing.assert_array_equal(g_rot, ["a", "b"] * 4)


def test_augment_rotations_errors():
    X = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match="square images, got 3x4"):
        augment_rotations(np.zeros((2, 3, 4)), [0, 1])
    with pytest.raises(ValueError, match=r"got shape \(2, 9\)"):
        augment_rotations(np.zeros((2, 9)), [0, 1])
    with pytest.raises(ValueError, match="one label per image"):
        augment_rotations(X, [0, 1, 2])
    with pytest.raises(TypeError, match="integer class labels, got dtype <U1"):
        augment_rotations(X, ["a", "b"])
    with pytest.raises(ValueError, match="non-negative, got the label -1"):
        augment_rotations(X, [0, -1])
    with pytest.raises(ValueError, match="groups must have one entry per image"):
        augment_rotations(X, [0, 1], groups=[0])


def test_augment_mirrors_exact():
    X = np.array([[[1, 2, 3], [4, 5, 6]], [[0, 0, 1], [0, 0, 0]]])  # not square
    X_m, y_m, g_m = augment_mirrors(X[:, None], np.array([2, 0]), groups=["a", "b"])
    assert X_m.shape == (4, 1, 2, 3) and X_m.dtype == X.dtype
    np.testing.assert_array_equal(X_m[:2, 0], X)
    np.testing.assert_array_equal(X_m[2, 0], [[3, 2, 1], [6, 5, 4]])
    np.testing.assert_array_equal(X_m[3, 0], [[1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(y_m, [2, 0, 5, 3])
    np.testing.assert_array_equal(g_m, ["a", "b"] * 2)
    X_m, y_m = augment_mirrors(X, [0, 1])  # 3-d images, no groups
    np.testing.assert_array_equal(X_m[2], [[3, 2, 1], [6, 5, 4]])
    np.testing.assert_array_equal(y_m, [0, 1, 2, 3])


def test_rotations_then_mirrors_give_the_eight_symmetries_as_classes():
    X = np.arange(9).reshape(1, 3, 3)
    X_8, y_8 = augment_mirrors(*augment_rotations(X, [0]))
    np.testing.assert_array_equal(y_8, np.arange(8))
    # the dihedral group of the square: eight distinct images of an asymmetric one
    assert len({x.tobytes() for x in X_8}) == 8
    np.testing.assert_array_equal(X_8[4], X[0, :, ::-1])
    np.testing.assert_array_equal(X_8[5], np.rot90(X[0])[:, ::-1])


def test_augment_mirrors_errors():
    X = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match=r"got shape \(2, 9\)"):
        augment_mirrors(np.zeros((2, 9)), [0, 1])
    with pytest.raises(ValueError, match="one label per image"):
        augment_mirrors(X, [0])
    with pytest.raises(TypeError, match="integer class labels, got dtype float64"):
        augment_mirrors(X, [0.0, 1.0])
    with pytest.raises(ValueError, match="non-negative, got the label -2"):
        augment_mirrors(X, [0, -2])
    with pytest.raises(ValueError, match="groups must have one entry per image"):
        augment_mirrors(X, [0, 1], groups=[0, 1, 2])


@pytest.mark.parametrize(
    "augment", [augment_rotations, augment_mirrors, augment_splices]
)
def test_narrow_label_dtypes_never_wrap_around(augment):
    # uint8 labels + k * n_classes used to wrap past 255 and merge classes
    X, y = np.zeros((150, 2, 2)), np.arange(150, dtype=np.uint8)
    _, y_new = augment(X, y)
    assert y_new.dtype == np.int64 and len(np.unique(y_new)) == len(y_new)
    with pytest.raises(ValueError, match="leaves no room for 1 more blocks"):
        augment_mirrors(X[:1], np.array([2**63 - 1], dtype=np.uint64))


def test_augment_rotations_checks_the_shape_before_the_labels():
    with pytest.raises(ValueError, match="square images, got 3x4"):
        augment_rotations(np.zeros((2, 3, 4)), [0.5, 1.5, 2.5])


CHANNELS_LAST = r"X of shape \({}\) looks channels-last \(n_samples, height, width, "


@pytest.mark.parametrize(
    "augment", [augment_rotations, augment_mirrors, augment_splices]
)
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_channels_last_images_are_refused(augment, channels):
    # mirrored, (n, 28, 28, 1) gave its images again as new classes, and
    # (n, 28, 28, 3) the images with red and blue swapped
    X = np.random.RandomState(0).rand(4, 28, 28, channels).astype(np.float32)
    match = CHANNELS_LAST.format(f"4, 28, 28, {channels}") + (
        r"n_channels\); images must be \(n_samples, n_channels, height, width\): "
        r"transpose them first, e.g. X.transpose\(0, 3, 1, 2\)."
    )
    with pytest.raises(ValueError, match=match):
        augment(X, [0, 1, 2, 3])
    # the same images channels first are taken
    X_new, _ = augment(X.transpose(0, 3, 1, 2), [0, 1, 2, 3])
    assert X_new.shape[1:] == (channels, 28, 28)


@pytest.mark.parametrize(
    "shape",
    [
        (2, 3, 28, 28),  # RGB, channels first
        (2, 1, 4, 4),  # tiny grey images: the last axis is no shorter
        (2, 64, 4, 4),  # feature maps with 64 channels, 4x4
        (2, 4, 8, 3),  # RGBA 8x3: the second axis is a channel count
    ],
)
def test_channels_first_images_with_small_axes_are_taken(shape):
    X = np.arange(np.prod(shape)).reshape(shape)
    X_m, _ = augment_mirrors(X, [0, 1])
    np.testing.assert_array_equal(X_m[2:], X[..., ::-1])


@pytest.mark.parametrize(
    "shape, refused",
    [
        ((2, 28, 28, 1), True),  # grey, channels last
        ((2, 32, 32, 3), True),  # RGB, channels last
        ((2, 28, 28, 3), True),
        ((2, 64, 64, 4), True),  # RGBA, channels last
        ((2, 3, 28, 28), False),  # RGB, channels first
        ((2, 1, 4, 4), False),
        ((2, 64, 4, 4), False),
        ((2, 4, 8, 3), False),
        # channels first, with 2 or 5 channels and a width of 4 or 3: these
        # were refused and the user told to transpose a correct array
        ((2, 2, 16, 4), False),
        ((2, 5, 8, 3), False),
    ],
)
def test_channels_last_guess_needs_square_spatial_axes(shape, refused):
    X = np.arange(np.prod(shape)).reshape(shape)
    if refused:
        with pytest.raises(ValueError, match=CHANNELS_LAST.format(str(shape)[1:-1])):
            augment_mirrors(X, [0, 1])
    else:
        X_m, _ = augment_mirrors(X, [0, 1])
        np.testing.assert_array_equal(X_m[2:], X[..., ::-1])


@pytest.mark.parametrize("shape", [(2, 1, 5, 1), (2, 5, 1)])
def test_mirroring_images_one_pixel_wide_is_refused(shape):
    with pytest.raises(ValueError, match=r"Mirroring images 1 pixel wide changes "):
        augment_mirrors(np.zeros(shape), [0, 1])


def test_augmented_by_orientation_makes_a_group_per_block():
    from skfewshot.datasets._augment import _augmented_by_orientation

    X = np.arange(3 * 4, dtype=np.float32).reshape(3, 2, 2)
    y, groups = np.array([0, 1, 2]), np.array([0, 0, 1])
    X_rot, y_rot, g_rot = _augmented_by_orientation(augment_rotations, X, y, groups)
    # alphabet a in orientation k: group 4 * a + k
    assert g_rot.tolist() == [0, 0, 4, 1, 1, 5, 2, 2, 6, 3, 3, 7]
    X_plain, y_plain = augment_rotations(X, y)
    np.testing.assert_array_equal(X_rot, X_plain)
    np.testing.assert_array_equal(y_rot, y_plain)
    _, _, g_mir = _augmented_by_orientation(augment_mirrors, X_rot, y_rot, g_rot)
    assert g_mir.tolist() == (2 * g_rot).tolist() + (2 * g_rot + 1).tolist()
    assert _augmented_by_orientation(augment_mirrors, X, y, None)[2] is None
    # codes of a narrow dtype do not wrap around (64 * 4 is 0 in uint8)
    narrow = _augmented_by_orientation(
        augment_rotations, X[:2], y[:2], np.array([0, 64], dtype=np.uint8)
    )[2]
    assert narrow.tolist() == [0, 256, 1, 257, 2, 258, 3, 259]
    with pytest.raises(ValueError, match="non-negative integer codes"):
        _augmented_by_orientation(augment_rotations, X, y, np.array(["a", "a", "b"]))


def _halves(image, top_bottom):
    """The kept and the joined half of a 4 x 4 image."""
    return (image[:2], image[2:]) if top_bottom else (image[:, :2], image[:, 2:])


def test_augment_splices_joins_halves_of_two_classes_of_one_group():
    # every pixel of every image distinct, so each half names its source
    X = np.arange(9 * 16).reshape(9, 1, 4, 4)
    # group "a": classes 0 (3 images), 1 (2 images), 2 (1 image); "b": 5 and 7
    y = np.array([0, 1, 0, 2, 0, 1, 5, 7, 5])
    groups = np.array(["a", "a", "a", "a", "a", "a", "b", "b", "b"])
    X_s, y_s, g_s = augment_splices(X, y, groups, random_state=0)
    assert X_s.shape == (18, 1, 4, 4) and X_s.dtype == X.dtype
    np.testing.assert_array_equal(X_s[:9], X)
    np.testing.assert_array_equal(y_s, np.concatenate([y, y + 8]))
    np.testing.assert_array_equal(g_s, np.tile(groups, 2))
    partners = {}
    for i in range(9):
        new = X_s[9 + i, 0]
        directions = [
            d
            for d in (True, False)
            if np.array_equal(_halves(new, d)[0], _halves(X[i, 0], d)[0])
        ]
        assert len(directions) == 1  # row i's own top or left half, kept
        top_bottom = directions[0]
        # the other half: the image of another class of its group with the
        # same rank in its class (modulo the class's count)
        rank = int(np.sum(y[:i] == y[i]))
        sources = [
            j
            for j in range(9)
            if np.array_equal(
                _halves(new, top_bottom)[1], _halves(X[j, 0], top_bottom)[1]
            )
        ]
        assert len(sources) == 1
        (j,) = sources
        b = y[j]
        assert b != y[i] and groups[j] == groups[i]
        rows_b = np.flatnonzero(y == b)
        assert j == rows_b[rank % len(rows_b)]
        # one partner and one direction per class
        assert partners.setdefault(y[i], (b, top_bottom)) == (b, top_bottom)
    # a cyclic order of each group: every class is a partner exactly once
    assert sorted(b for b, _ in partners.values()) == [0, 1, 2, 5, 7]
    # the same draws again with the same seed
    np.testing.assert_array_equal(augment_splices(X, y, groups, random_state=0)[0], X_s)


def test_augment_splices_without_groups_pairs_any_two_classes():
    X = np.stack([np.full((2, 2), c) for c in range(2)])
    X_s, y_s = augment_splices(X, [0, 1], random_state=0)
    np.testing.assert_array_equal(y_s, [0, 1, 2, 3])
    # two classes: each is the other's partner, one half of each value
    assert sorted(X_s[2].ravel().tolist()) == [0, 0, 1, 1]
    assert sorted(X_s[3].ravel().tolist()) == [0, 0, 1, 1]
    # the halves of 3-D images split at the centre: rows or columns 0 | 1 here
    seeds = {
        tuple(augment_splices(X, [0, 1], random_state=s)[0][2].ravel())
        for s in range(20)
    }
    assert seeds == {(0, 0, 1, 1), (0, 1, 0, 1)}


def test_augment_splices_errors():
    X = np.zeros((4, 3, 3))
    with pytest.raises(
        ValueError,
        match=r"group 'b' holds a single class \(3\): splicing joins two classes "
        "of one group, so it has no partner.",
    ):
        augment_splices(X, [0, 1, 3, 3], groups=["a", "a", "b", "b"])
    with pytest.raises(ValueError, match=r"y holds a single class \(4\)"):
        augment_splices(X, [4, 4, 4, 4])
    with pytest.raises(ValueError, match="class 1 is in two groups, 0 and 1"):
        augment_splices(X, [0, 1, 1, 2], groups=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="groups must have one entry per image"):
        augment_splices(X, [0, 1, 2, 3], groups=[0, 1])
    with pytest.raises(ValueError, match="at least 2 pixels high and wide"):
        augment_splices(np.zeros((2, 1, 1, 5)), [0, 1])
    with pytest.raises(ValueError, match="one label per image"):
        augment_splices(X, [0, 1])
