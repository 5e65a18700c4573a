"""Image stacks in the loaders' format, float32 (n, 1, s, s), at a chosen size.

Private module shared by every image loader (``load_omniglot``,
``load_omniglot_runs``, ``load_digits_images``), so they return images in
exactly the same format and resize them the same way.
"""

from __future__ import annotations

from functools import lru_cache
from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval

from ._png import decode_png

__all__ = ["IMAGE_SIZE", "area_resize", "pngs_to_images", "resize_images"]


class _ImageSide(Interval):
    """An int >= 1 that is not a bool (``True`` is no image size)."""

    def __init__(self):
        super().__init__(Integral, 1, None, closed="left")

    def is_satisfied_by(self, val):
        return not isinstance(val, bool) and super().is_satisfied_by(val)


#: The ``validate_params`` constraint of every loader's ``image_size``: the
#: side of the square output, or None to keep the original size.
IMAGE_SIZE = [_ImageSide(), None]


@lru_cache(maxsize=32)
def _area_matrix(n_in, n_out):
    """(n_out, n_in) weights of exact area averaging along one axis.

    Output pixel i covers the input interval [i * r, (i + 1) * r) with
    r = n_in / n_out; its weight on input pixel j is the length of the overlap
    of that interval with [j, j + 1), divided by r. Every row sums to 1.
    """
    ratio = n_in / n_out
    start = np.arange(n_out)[:, None] * ratio
    stop = start + ratio
    left = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(stop, left + 1) - np.maximum(start, left), 0, None)
    weights = overlap / ratio
    weights.setflags(write=False)
    return weights


def area_resize(images, size):
    """Resize a stack of images (n, h, w) to (n, size, size) by area averaging.

    Each output pixel is the mean of the input over its exact (fractional)
    box, boundary pixels weighted by their covered fraction (OpenCV's
    ``INTER_AREA``; Pillow's ``BOX`` instead gives whole pixels weight 0 or 1).
    The mean ink is preserved exactly, and 105 -> 28 needs no padding or
    cropping.
    """
    images = np.asarray(images, dtype=np.float64)
    _, height, width = images.shape
    if (height, width) == (size, size):
        return images.astype(np.float32)
    rows, cols = _area_matrix(height, size), _area_matrix(width, size)
    return (rows @ images @ cols.T).astype(np.float32)


def resize_images(images, image_size):
    """``images`` (n, h, w) as float32 (n, 1, s, s) in the loaders' format.

    Resized to ``image_size`` by :func:`area_resize`, or kept as they are when
    ``image_size`` is None.
    """
    if image_size is None:
        return np.asarray(images, dtype=np.float32)[:, None]
    return area_resize(images, image_size)[:, None]


def pngs_to_images(names, read, image_size, where):
    """Decode PNG drawings, invert them (strokes = 1) and resize to ``image_size``.

    The files are read, decoded and resized one at a time, so memory holds the
    result and a single file (each bounded by the readers and the decoder),
    whatever the number of files.

    Parameters
    ----------
    names : list of str
        The files, in the order of the result.
    read : callable
        ``read(name)`` returns the bytes of a file (a bounded reader).
    image_size : int or None
        Side of the square output; None keeps the original size (then all
        images must share it).
    where : str
        The folder or archive the names are in, for error messages.

    Returns
    -------
    images : ndarray of shape (n, 1, s, s), dtype float32, values in [0, 1]
    """
    side = 0 if image_size is None else image_size
    result = np.empty((len(names), 1, side, side), dtype=np.float32)
    for i, name in enumerate(names):
        image = 1.0 - decode_png(read(name), name=f"{where}: {name}")
        if image_size is not None:
            result[i, 0] = area_resize(image[None], image_size)[0]
            continue
        if i == 0:
            result = np.empty((len(names), 1, *image.shape), dtype=np.float32)
        elif image.shape != result.shape[2:]:
            raise ValueError(
                f"{where}: {name} is {image.shape[0]}x{image.shape[1]} but "
                f"{names[0]} is {result.shape[2]}x{result.shape[3]}; "
                "pass image_size=<int> to resize them to one size."
            )
        result[i, 0] = image
    return result
