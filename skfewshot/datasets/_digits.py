"""scikit-learn's bundled 8x8 digits as images, for demos and quick tests."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import Bunch
from sklearn.utils._param_validation import validate_params

from ._base import _bunch_or_X_y
from ._images import IMAGE_SIZE, resize_images

__all__ = ["load_digits_images"]


@validate_params(
    {"image_size": IMAGE_SIZE, "return_X_y": ["boolean"]},
    prefer_skip_nested_validation=True,
)
def load_digits_images(
    *, image_size: int | None = None, return_X_y: bool = False
) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """Load scikit-learn's handwritten digits as float32 images (n, 1, s, s).

    The 1797 8x8 images of :func:`sklearn.datasets.load_digits` (no download:
    they ship with scikit-learn), scaled from 0..16 to [0, 1] and given a
    channel axis, the image format every skfewshot image backbone takes. Ten
    classes is few for few-shot tasks, but enough for a demo or a smoke test.

    Parameters
    ----------
    image_size : int, default=None
        Side of the returned square images, resized from 8x8 by exact area
        averaging as in :func:`load_omniglot` (enlarging by a whole factor,
        e.g. 8 -> 32 for :class:`~skfewshot.models.Conv4`, repeats each pixel
        as a block); None keeps 8.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        data : ndarray of shape (1797, 1, image_size, image_size)
            float32 images, ink = 1, values in [0, 1].
        images : ndarray of shape (1797, image_size, image_size)
            The same images without the channel axis (a view of ``data``).
        target : ndarray of shape (1797,)
            The digit shown, 0 to 9.
        target_names : ndarray of shape (10,)
            The digits 0 to 9.
        DESCR : str
            scikit-learn's description of the data set.

    (data, target) : tuple if ``return_X_y`` is True

    See Also
    --------
    sklearn.datasets.load_digits : The same data as flat rows of 0..16.

    Examples
    --------
    >>> from skfewshot.datasets import load_digits_images
    >>> digits = load_digits_images()
    >>> digits.data.shape, digits.data.dtype
    ((1797, 1, 8, 8), dtype('float32'))
    >>> float(digits.data.min()), float(digits.data.max())
    (0.0, 1.0)
    >>> digits.target[:5]
    array([0, 1, 2, 3, 4])
    >>> load_digits_images(image_size=32).data.shape
    (1797, 1, 32, 32)
    """
    digits = load_digits()
    data = resize_images(digits.images / 16.0, image_size)
    return _bunch_or_X_y(
        return_X_y,
        data=data,
        images=data[:, 0],
        target=digits.target,
        target_names=digits.target_names,
        DESCR=digits.DESCR,
    )
