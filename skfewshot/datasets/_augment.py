"""Rotations, mirror images and splices as new classes (the
prototypical-networks Omniglot setup, and its extensions)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import validate_params

__all__ = ["augment_mirrors", "augment_rotations", "augment_splices"]


@validate_params(
    {"X": ["array-like"], "y": ["array-like"], "groups": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def augment_rotations(
    X: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Append the 90, 180 and 270 degree rotations of every image as new classes.

    Snell et al. (2017) and Vinyals et al. (2016) enlarge Omniglot this way:
    a character rotated by a multiple of 90 degrees counts as a new character,
    which turns 1623 classes into 6492.

    The output is four blocks of ``len(X)`` rows: the original images, then
    those rotated by 90, 180 and 270 degrees counter-clockwise (as
    :func:`numpy.rot90` with ``k = 1, 2, 3`` over the last two axes). Block
    ``k`` gets labels ``y + k * (y.max() + 1)``, so the original labels are
    unchanged and the rotated classes never collide with them.

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width) or \
            (n_samples, n_channels, height, width)
        Square images (``height == width``), channels first: a 4-D ``X``
        that looks channels-last is refused (see Raises).
    y : array-like of shape (n_samples,)
        Non-negative integer class labels.
    groups : array-like of shape (n_samples,), default=None
        Group of each sample (e.g. the alphabet); repeated for every rotation,
        so a rotated character stays in its alphabet.

    Returns
    -------
    X_rot : ndarray of shape (4 * n_samples, ...)
        The images and their rotations, same dtype and trailing shape as ``X``.
    y_rot : ndarray of shape (4 * n_samples,)
        The labels of the new classes, int64.
    groups_rot : ndarray of shape (4 * n_samples,)
        Only when ``groups`` is given: ``groups`` tiled four times.

    Raises
    ------
    ValueError
        When ``X`` is not 3-D or 4-D, not square, or looks channels-last
        ``(n_samples, height, width, n_channels)``: a 4-D ``X`` whose last
        axis is 1, 3 or 4 (grey, RGB, RGBA) and shorter than its second and
        third axes, which are equal and none of 1, 3 and 4 (e.g.
        ``(n, 28, 28, 1)`` or ``(n, 32, 32, 3)``, but not ``(n, 5, 8, 3)``);
        when ``y`` is not one non-negative label per image.
    TypeError
        When ``y`` does not hold integers.

    See Also
    --------
    augment_mirrors : The mirror images as new classes (after this: eight
        classes per character).

    References
    ----------
    .. [1] J. Snell, K. Swersky and R. Zemel, "Prototypical Networks for
       Few-shot Learning", NeurIPS 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot.datasets import augment_rotations
    >>> X = np.array([[[1, 2], [3, 4]]])
    >>> X_rot, y_rot = augment_rotations(X, [0])
    >>> X_rot[1]
    array([[2, 4],
           [1, 3]])
    >>> y_rot
    array([0, 1, 2, 3])
    """
    X, y = _check_images_and_labels(X, y, square=True)
    blocks = [np.rot90(X, k, axes=(-2, -1)) for k in range(4)]
    return _as_new_classes(blocks, y, groups)


@validate_params(
    {"X": ["array-like"], "y": ["array-like"], "groups": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def augment_mirrors(
    X: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Append the left-right mirror image of every image as a new class.

    A character drawn mirrored is another character, as a rotated one is for
    :func:`augment_rotations`; applied after it, every character gives the
    eight classes of its rotations and their mirror images. On Omniglot's
    one-shot benchmark this doubles the base classes at no cost in forwards
    when the epochs are halved (see :ref:`benchmarks_omniglot`). A symmetric
    character's mirror image equals it: its two classes then share their
    images, as its rotations do under :func:`augment_rotations`.

    The output is two blocks of ``len(X)`` rows: the images, then their
    mirror images (the last axis reversed, as :func:`numpy.flip` with
    ``axis=-1``). The second block gets the labels ``y + (y.max() + 1)``, so
    the original labels are unchanged and the new classes never collide with
    them.

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width) or \
            (n_samples, n_channels, height, width)
        Images, square or not, channels first, at least 2 pixels wide.
    y : array-like of shape (n_samples,)
        Non-negative integer class labels.
    groups : array-like of shape (n_samples,), default=None
        Group of each sample (e.g. the alphabet); repeated for the mirror
        images, so a mirrored character stays in its alphabet.

    Returns
    -------
    X_mirrored : ndarray of shape (2 * n_samples, ...)
        The images and their mirror images, same dtype and trailing shape as
        ``X``.
    y_mirrored : ndarray of shape (2 * n_samples,)
        The labels of the new classes, int64.
    groups_mirrored : ndarray of shape (2 * n_samples,)
        Only when ``groups`` is given: ``groups`` tiled twice.

    Raises
    ------
    ValueError
        When ``X`` is not 3-D or 4-D, looks channels-last (as for
        :func:`augment_rotations`: its mirror images would be the images
        again, or their colour channels swapped), or its images are 1 pixel
        wide (every mirrored class would repeat its original); when ``y`` is
        not one non-negative label per image.
    TypeError
        When ``y`` does not hold integers.

    See Also
    --------
    augment_rotations : The 90, 180 and 270 degree rotations as new classes.

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot.datasets import augment_mirrors, augment_rotations
    >>> X = np.array([[[1, 2], [3, 4]]])
    >>> X_m, y_m = augment_mirrors(X, [0])
    >>> X_m[1]
    array([[2, 1],
           [4, 3]])
    >>> y_m
    array([0, 1])
    >>> augment_mirrors(*augment_rotations(X, [0]))[1]
    array([0, 1, 2, 3, 4, 5, 6, 7])
    """
    X, y = _check_images_and_labels(X, y)
    if X.shape[-1] < 2:
        raise ValueError(
            f"Mirroring images 1 pixel wide changes nothing (X of shape {X.shape}): "
            "every mirrored class would repeat its original."
        )
    return _as_new_classes([X, np.flip(X, axis=-1)], y, groups)


@validate_params(
    {
        "X": ["array-like"],
        "y": ["array-like"],
        "groups": ["array-like", None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def augment_splices(
    X: ArrayLike,
    y: ArrayLike,
    groups: ArrayLike | None = None,
    *,
    random_state: int | np.random.RandomState | None = None,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Append one new class per class, spliced from two characters of its group.

    Each class ``a`` is paired with another class ``b`` of its group (e.g.
    its alphabet) and a direction, both drawn at random: every image of the
    new class is the top half of an image of ``a`` above the bottom half of
    an image of ``b``, or its left half beside ``b``'s right half. The
    ``j``-th image of ``a`` (in the order of ``X``) is joined with the
    ``j``-th image of ``b`` (``j`` modulo ``b``'s count), so on Omniglot,
    whose loader lists every character's 20 drawings in drawer order, both
    halves of a new image carry the same drawer number. The result looks
    like another character of the script, drawn as consistently as the real
    ones: more base classes for the backbone to tell apart, as
    :func:`augment_mirrors` gives. The halves split at the image centre, so
    splice drawings centred on their ink (:class:`InkNormalizer` first) for
    halves of the character.

    The pairs are a random cyclic order of each group's classes, each class
    joined with the next one: every class gives the top (or left) half of
    one new class and the bottom (or right) half of another. The output is
    two blocks of ``len(X)`` rows: the images, then row ``i``'s splice (its
    top or left half kept). The second block gets the labels
    ``y + (y.max() + 1)``, so the original labels are unchanged and the new
    classes never collide with them.

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width) or \
            (n_samples, n_channels, height, width)
        Images, channels first, at least 2 pixels high and wide.
    y : array-like of shape (n_samples,)
        Non-negative integer class labels.
    groups : array-like of shape (n_samples,), default=None
        Group of each sample (e.g. the alphabet, after :func:`augment_rotations`
        the alphabet in one orientation): a class is spliced with a class of
        its own group only, and the new class stays in it. None: all classes
        form one group.
    random_state : int, RandomState instance or None, default=None
        Draws the pairs and the directions; pass an int for the same new
        classes on every call.

    Returns
    -------
    X_spliced : ndarray of shape (2 * n_samples, ...)
        The images and their splices, same dtype and trailing shape as ``X``.
    y_spliced : ndarray of shape (2 * n_samples,)
        The labels of the new classes, int64.
    groups_spliced : ndarray of shape (2 * n_samples,)
        Only when ``groups`` is given: ``groups`` tiled twice.

    Raises
    ------
    ValueError
        When ``X`` is not 3-D or 4-D, looks channels-last (as for
        :func:`augment_rotations`), or its images are under 2 pixels high or
        wide (no halves); when ``y`` is not one non-negative label per image
        or ``groups`` not one entry per image; when a group holds a single
        class (no partner: the error names the group), or a class is in
        several groups.
    TypeError
        When ``y`` does not hold integers.

    See Also
    --------
    augment_rotations : The 90, 180 and 270 degree rotations as new classes.
    augment_mirrors : The mirror images as new classes.
    InkNormalizer : Centres drawings on their ink, so halves split them.

    Notes
    -----
    Measured on Omniglot's one-shot benchmark (docs/benchmarks_omniglot):
    a plain *affine* Conv4 trained on the spliced classes for half the
    epochs (as many forwards) scores -0.9 to +2.2 points against the same
    network without them on two validation alphabets, within the spread of
    two draws of the pairs (1.4 points). The members of the library's recipe
    gain more (the elastic network +1.3 and +1.1 points with test-time
    shifts on the two alphabets, their ensemble +1.2 on the first), so
    :func:`~skfewshot.recipes.prepare_one_shot_training` splices.

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot.datasets import augment_splices
    >>> X = np.array([[[1, 1], [1, 1]], [[2, 2], [2, 2]]])
    >>> X_s, y_s = augment_splices(X, [0, 1], random_state=0)
    >>> y_s
    array([0, 1, 2, 3])
    >>> X_s[2]  # class 0's left half beside class 1's right half (drawn)
    array([[1, 2],
           [1, 2]])
    """
    X, y = _check_images_and_labels(X, y)
    if min(X.shape[-2:]) < 2:
        raise ValueError(
            f"Splicing needs images at least 2 pixels high and wide (X of shape "
            f"{X.shape}): there are no halves to join."
        )
    groups = _checked_groups(groups, y)
    codes = np.zeros(len(y), np.int64) if groups is None else groups
    rng = check_random_state(random_state)
    height, width = X.shape[-2:]
    spliced = X.copy()
    group_of = {}
    for code in np.unique(codes):
        members = codes == code
        group = code.item()  # a Python str or int, for the messages
        classes = np.unique(y[members])
        for c in classes:
            if group_of.setdefault(int(c), group) != group:
                raise ValueError(
                    f"class {c} is in two groups, {group_of[int(c)]!r} and "
                    f"{group!r}: each class must belong to one group."
                )
        if len(classes) < 2:
            where = "y holds" if groups is None else f"group {group!r} holds"
            raise ValueError(
                f"{where} a single class ({classes[0]}): splicing joins two "
                "classes of one group, so it has no partner."
            )
        order = rng.permutation(classes)
        top_bottom = rng.random_sample(len(order)) < 0.5
        for k, a in enumerate(order):
            rows_a = np.flatnonzero(members & (y == a))
            rows_b = np.flatnonzero(members & (y == order[(k + 1) % len(order)]))
            partner = X[rows_b[np.arange(len(rows_a)) % len(rows_b)]]
            if top_bottom[k]:
                spliced[rows_a, ..., height // 2 :, :] = partner[..., height // 2 :, :]
            else:
                spliced[rows_a, ..., :, width // 2 :] = partner[..., :, width // 2 :]
    return _as_new_classes([X, spliced], y, groups)


#: Channel counts of images: grey, RGB, RGBA.
_CHANNEL_COUNTS = (1, 3, 4)


def _check_images_and_labels(X, y, square=False):
    """``X`` and ``y`` as arrays: 3-D or 4-D images, channels first
    (``square``: of equal height and width), non-negative integer labels, one
    per image; ValueError or TypeError otherwise.

    A 4-D ``X`` that looks channels-last (see :func:`_looks_channels_last`)
    is refused: e.g. ``(n, 28, 28, 1)``, whose mirror images are the images
    again and whose "28x1" images are not square, or ``(n, 32, 32, 3)``,
    whose mirror images are the images with their colours swapped.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim not in (3, 4):
        raise ValueError(
            "X must have shape (n_samples, height, width) or (n_samples, "
            f"n_channels, height, width), got shape {X.shape}."
        )
    if _looks_channels_last(X.shape):
        raise ValueError(
            f"X of shape {X.shape} looks channels-last (n_samples, height, "
            "width, n_channels); images must be (n_samples, n_channels, "
            "height, width): transpose them first, e.g. X.transpose(0, 3, 1, 2)."
        )
    if square and X.shape[-1] != X.shape[-2]:
        raise ValueError(
            "Rotating by 90 degrees needs square images, got "
            f"{X.shape[-2]}x{X.shape[-1]} (X of shape {X.shape})."
        )
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(
            f"y must be 1-d with one label per image: got shape {y.shape} for "
            f"{len(X)} images."
        )
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(
            f"y must hold integer class labels, got dtype {y.dtype}; encode "
            "them first, e.g. with sklearn.preprocessing.LabelEncoder."
        )
    if y.size and y.min() < 0:
        raise ValueError(f"y must be non-negative, got the label {y.min()}.")
    return X, y


def _looks_channels_last(shape):
    """Whether images of ``shape`` look channels-last ``(n, h, w, c)``.

    Only strong evidence counts, as a channels-first batch may have any
    channel count and any width: the last axis is a channel count (1, 3 or
    4) shorter than the second and third axes, which are equal (square
    images, as most image data sets hold) and no channel count. So
    ``(n, 28, 28, 1)`` and ``(n, 32, 32, 3)`` look channels-last, while
    ``(n, 3, 28, 28)``, ``(n, 64, 4, 4)``, ``(n, 2, 16, 4)`` and
    ``(n, 5, 8, 3)`` do not.
    """
    return (
        len(shape) == 4
        and shape[-1] in _CHANNEL_COUNTS
        and shape[1] == shape[2]
        and shape[1] not in _CHANNEL_COUNTS
        and shape[-1] < shape[2]
    )


def _as_new_classes(blocks, y, groups):
    """The image ``blocks`` stacked, block ``k`` labelled ``y + k * n_classes``
    (``n_classes = y.max() + 1``) as int64 (a narrow label dtype such as uint8
    would wrap around and merge classes), and ``groups`` tiled alike."""
    n_classes = int(y.max()) + 1 if y.size else 0
    if n_classes * len(blocks) > np.iinfo(np.int64).max:
        raise ValueError(
            f"y's largest label, {n_classes - 1}, leaves no room for "
            f"{len(blocks) - 1} more blocks of labels in int64."
        )
    y = y.astype(np.int64)
    X_new = np.concatenate(blocks)
    y_new = np.concatenate([y + k * n_classes for k in range(len(blocks))])
    groups = _checked_groups(groups, y)
    if groups is None:
        return X_new, y_new
    return X_new, y_new, np.tile(groups, len(blocks))


def _checked_groups(groups, y):
    """``groups`` as an array of one entry per label of ``y`` (None stays
    None); ValueError otherwise."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != y.shape:
        raise ValueError(
            f"groups must have one entry per image, got shape {groups.shape} "
            f"for {len(y)} images."
        )
    return groups


def _single_class_groups(y, groups):
    """The values of ``groups`` (sorted) whose images hold fewer than two
    classes of ``y``: the groups :func:`augment_splices` finds no partner in,
    for callers that name them in their own terms first."""
    return [g for g in np.unique(groups) if len(np.unique(y[groups == g])) < 2]


def _augmented_by_orientation(augment, X, y, groups):
    """``augment(X, y)`` (:func:`augment_rotations` or :func:`augment_mirrors`)
    with the groups of its output, or None without ``groups``.

    ``groups``: non-negative integer codes (the alphabet of each image). Each
    block of new classes (a rotation, the mirror images) becomes a group of
    its own per group, ``code * n_blocks + block``, so that a within-group
    episode holds the characters of one script in one orientation, as the
    test episodes do (measured on Omniglot: docs/benchmarks_omniglot).
    """
    if groups is None:
        return (*augment(X, y), None)
    groups = np.asarray(groups)
    if groups.dtype.kind not in "iu" or (groups < 0).any():
        raise ValueError("groups must be non-negative integer codes here.")
    # int64: a narrow dtype (uint8) would wrap around and merge groups
    X_new, y_new, tiled = augment(X, y, groups.astype(np.int64))
    n_blocks = len(X_new) // len(X)
    return X_new, y_new, tiled * n_blocks + np.repeat(np.arange(n_blocks), len(X))
