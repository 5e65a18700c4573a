"""Rotations and mirror images as new classes (the prototypical-networks
Omniglot setup, and its mirrored extension)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils._param_validation import validate_params

__all__ = ["augment_mirrors", "augment_rotations"]


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
        Square images (``height == width``).
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
        Images, square or not.
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
    return _as_new_classes([X, np.flip(X, axis=-1)], y, groups)


def _check_images_and_labels(X, y, square=False):
    """``X`` and ``y`` as arrays: 3-D or 4-D images (``square``: of equal
    height and width), non-negative integer labels, one per image; ValueError
    or TypeError otherwise."""
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim not in (3, 4):
        raise ValueError(
            "X must have shape (n_samples, height, width) or (n_samples, "
            f"n_channels, height, width), got shape {X.shape}."
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
    if groups is None:
        return X_new, y_new
    groups = np.asarray(groups)
    if groups.shape != y.shape:
        raise ValueError(
            f"groups must have one entry per image, got shape {groups.shape} "
            f"for {len(y)} images."
        )
    return X_new, y_new, np.tile(groups, len(blocks))
