"""Images in the loaders' format, float32 (n, C, h, w), decoded by Pillow.

Private module shared by every image loader (``load_omniglot``,
``load_omniglot_runs``, ``load_digits_images``, ``load_image_folder``) and by
``ImageFileReader``, so they decode files with one helper, return images in
exactly the same format and resize them the same way (exact area averaging).
"""

from __future__ import annotations

import io
import struct
import warnings
from functools import lru_cache
from numbers import Integral, Real

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.utils._param_validation import Interval

__all__ = [
    "IMAGE_SHAPE",
    "IMAGE_SIZE",
    "area_resize",
    "decode_image",
    "pngs_to_images",
    "read_images",
    "resize_images",
]


class _ImageSide(Interval):
    """An int >= 1 that is not a bool (``True`` is no image size)."""

    def __init__(self):
        super().__init__(Integral, 1, None, closed="left")

    def is_satisfied_by(self, val):
        return not isinstance(val, bool) and super().is_satisfied_by(val)


class _ImageShape(_ImageSide):
    """An image side (int >= 1), or a (height, width) pair of them.

    An :class:`Interval` so that ``validate_params`` accepts it as is.
    """

    def is_satisfied_by(self, val):
        side = super().is_satisfied_by
        if isinstance(val, (tuple, list)):
            return len(val) == 2 and all(side(v) for v in val)
        return side(val)

    def __str__(self):
        return "an int >= 1 or a (height, width) pair of them"


#: The ``validate_params`` constraint of the data-set loaders' ``image_size``:
#: the side of the square output, or None to keep the original size.
IMAGE_SIZE = [_ImageSide(), None]
#: The constraint of ``image_size`` where images come from the user's files:
#: also a (height, width) pair.
IMAGE_SHAPE = [_ImageShape(), None]

_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's "L" mode
# Input pixels (times channels) converted to float64 at a time when resizing,
# so a large photo costs its decoded bytes plus 8 MiB, not 8 bytes a sample.
_BLOCK_SAMPLES = 1 << 20
# What a file Pillow cannot decode raises besides OSError (UnidentifiedImageError,
# "image file is truncated", decoder errors): broken headers and chunk tables.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_GREY = ("1", "L", "LA", "La", "I", "F", *_SIXTEEN_BIT)
_ALPHA = ("LA", "La", "PA", "RGBA", "RGBa")


def _shape(image_size):
    """``(height, width)`` of an ``image_size`` int or pair."""
    if isinstance(image_size, (tuple, list)):
        return int(image_size[0]), int(image_size[1])
    return int(image_size), int(image_size)


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
    """Resize a stack of images (n, h, w) to (n, height, width) by area averaging.

    ``size`` is the side of a square output or a ``(height, width)`` pair.
    Each output pixel is the mean of the input over its exact (fractional)
    box, boundary pixels weighted by their covered fraction (OpenCV's
    ``INTER_AREA``; Pillow's ``BOX`` instead gives whole pixels weight 0 or 1).
    The mean ink is preserved exactly, and 105 -> 28 needs no padding or
    cropping. Enlarging by a whole factor repeats each pixel as a block.
    """
    images = np.asarray(images, dtype=np.float64)
    _, height, width = images.shape
    out_h, out_w = _shape(size)
    if (height, width) == (out_h, out_w):
        return images.astype(np.float32)
    rows, cols = _area_matrix(height, out_h), _area_matrix(width, out_w)
    return (rows @ images @ cols.T).astype(np.float32)


def resize_images(images, image_size):
    """``images`` (n, h, w) as float32 (n, 1, s, s) in the loaders' format.

    Resized to ``image_size`` by :func:`area_resize`, or kept as they are when
    ``image_size`` is None.
    """
    if image_size is None:
        return np.asarray(images, dtype=np.float32)[:, None]
    return area_resize(images, image_size)[:, None]


def _samples(image, name):
    """The samples of a loaded Pillow image: ``(array (h, w, c), scale, alpha)``.

    ``array / scale`` lies in [0, 1]; ``c`` is 1 (grey) or 3 (RGB), plus the
    alpha channel, last, when ``alpha`` is True. Modes are brought to L, LA,
    RGB or RGBA by Pillow (a palette, a transparent colour, CMYK, YCbCr, ...),
    except 16-bit grey (scaled by 65535, not truncated to 8 bits by Pillow),
    32-bit integer grey (must lie in 0..65535, read as 16-bit) and float grey
    (must lie in [0, 1]); their transparent value, if any (a PNG's tRNS),
    becomes an alpha channel here, at full precision.
    """
    mode = image.mode
    transparency = image.info.get("transparency")
    alpha = mode in _ALPHA or transparency is not None
    if mode in (*_SIXTEEN_BIT, "I", "F"):
        values = np.asarray(image)
        top = 1.0 if mode == "F" else 65535.0
        if values.size and not (
            np.isfinite(values).all() and values.min() >= 0 and values.max() <= top
        ):  # NaN fails every comparison: test it explicitly
            raise ValueError(
                f"{name}: {mode}-mode pixel values span [{values.min()}, "
                f"{values.max()}], outside the [0, {top:g}] this loader reads; "
                "save the image as 8- or 16-bit."
            )
        if transparency is None:
            return values[..., None], top, False
        if not isinstance(transparency, Real):
            raise ValueError(
                f"{name}: {mode}-mode image with a transparent value "
                f"{transparency!r} this loader cannot read (not a grey level)."
            )
        opacity = np.where(values == transparency, 0, top).astype(values.dtype)
        return np.stack([values, opacity], axis=-1), top, True
    target = ("LA" if alpha else "L") if mode in _GREY else ("RGBA" if alpha else "RGB")
    if mode != target:
        image = image.convert(target)
    values = np.asarray(image)
    return (values if values.ndim == 3 else values[..., None]), 255.0, alpha


def _fill(out, values, scale, alpha, invert):
    """Write ``values`` (h, w, c) resized into ``out`` (C, H, W), block by block.

    Rows are converted to float64 (alpha composited over white, colour to
    BT.601 luminance for one output channel, grey repeated for three) a block
    at a time, then area-averaged: ``out = rows @ image @ cols.T`` summed
    over blocks, so memory is the decoded image plus one block.
    """
    n_channels, out_h, out_w = out.shape
    height, width, _ = values.shape
    rows, cols = _area_matrix(height, out_h), _area_matrix(width, out_w)
    same = (height, width) == (out_h, out_w)
    step = max(1, _BLOCK_SAMPLES // (width * values.shape[2]))
    total = np.zeros(out.shape, dtype=np.float64)
    for start in range(0, height, step):
        block = values[start : start + step].astype(np.float64) / scale
        if alpha:
            block, opacity = block[..., :-1], block[..., -1:]
            block = block * opacity + (1.0 - opacity)
        if n_channels == 1 and block.shape[2] == 3:
            block = block @ _LUMA[:, None]
        block = np.ascontiguousarray(np.moveaxis(block, 2, 0))
        if invert:
            block = 1.0 - block
        if same:
            total[:, start : start + step] = block
        else:
            total += rows[:, start : start + step] @ block @ cols.T
    out[...] = total


def decode_image(source, *, name, color="grayscale", image_size=None, invert=False):
    """Decode one image file with Pillow into float32 (C, H, W) in [0, 1].

    Parameters
    ----------
    source : str, path-like or binary file object
        What :func:`PIL.Image.open` reads.
    name : str
        What to call the file in error messages.
    color : {"grayscale", "rgb"}, default="grayscale"
        One channel (BT.601 luminance of colour images) or three (grey
        repeated).
    image_size : int, (height, width) or None, default=None
        Output size by exact area averaging; None keeps the file's size.
    invert : bool, default=False
        Return ``1 - value`` (ink = 1, as the Omniglot loaders do).

    Returns
    -------
    image : ndarray of shape (C, H, W), dtype float32
        Transparent pixels are composited over white before anything else.

    Raises
    ------
    ValueError
        When Pillow cannot read the file (not an image, corrupt, truncated),
        when it has more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's
        decompression-bomb limit, kept on: its warning is an error here), is
        0 pixels wide or high, or its values have no known range; the message
        starts with ``name``.
    OSError
        When the file cannot be opened (missing, a folder, no permission).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as image:
                image.load()
                if image.width == 0 or image.height == 0:
                    raise ValueError(
                        f"{name}: image of {image.width}x{image.height} pixels; "
                        "width and height must be >= 1"
                    )
                values, scale, alpha = _samples(image, name)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(
                f"{name}: refused as a possible decompression bomb ({exc}); if "
                "you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS."
            ) from exc
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except _DECODE_ERRORS as exc:
            if str(exc).startswith(name):
                raise
            why = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, UnidentifiedImageError):  # its text names a buffer
                why = "unknown format, or a corrupt header"
            raise ValueError(f"{name}: not an image Pillow can read ({why})") from exc
    height, width = values.shape[:2]
    out_h, out_w = (height, width) if image_size is None else _shape(image_size)
    out = np.empty((3 if color == "rgb" else 1, out_h, out_w), dtype=np.float32)
    _fill(out, values, scale, alpha, invert)
    return out


def read_images(
    names,
    open_file,
    *,
    image_size,
    where,
    color="grayscale",
    invert=False,
    on_error="raise",
):
    """Decode image files one at a time into a preallocated float32 stack.

    Memory holds the result and one decoded file, whatever the number of
    files.

    Parameters
    ----------
    names : list of str
        The files, in the order of the result.
    open_file : callable
        ``open_file(name)`` returns what :func:`PIL.Image.open` reads (a path,
        or a binary file object over bytes read with a bound).
    image_size : int, (height, width) or None
        Output size; None keeps the files' size (then they must share it).
    where : str or None
        The folder or archive the names are in, for messages (``where: name``).
    color, invert
        As in :func:`decode_image`.
    on_error : {"raise", "warn"}, default="raise"
        ``"warn"`` skips the files that cannot be read, with one warning
        naming each and why.

    Returns
    -------
    images : ndarray of shape (n_read, C, H, W), dtype float32
    kept : list of int
        Indices into ``names`` of the images returned.
    """
    channels = 3 if color == "rgb" else 1
    result, kept, skipped = None, [], []
    if image_size is not None:
        result = np.empty((len(names), channels, *_shape(image_size)), np.float32)
    for i, name in enumerate(names):
        label = name if where is None else f"{where}: {name}"
        try:
            image = decode_image(
                open_file(name),
                name=label,
                color=color,
                image_size=image_size,
                invert=invert,
            )
        except (ValueError, OSError) as exc:
            if on_error == "raise":
                raise
            skipped.append(f"{name} ({exc})")
            continue
        if not kept:
            first = name
        if result is None:
            result = np.empty((len(names), *image.shape), dtype=np.float32)
        elif image.shape != result.shape[1:]:
            raise ValueError(
                f"{label} is {image.shape[1]}x{image.shape[2]} but {first} is "
                f"{result.shape[2]}x{result.shape[3]}; pass image_size=<int> to "
                "resize them to one size."
            )
        result[len(kept)] = image
        kept.append(i)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable image file(s)"
            + ("" if where is None else f" of {where}")
            + ": "
            + "; ".join(skipped),
            UserWarning,
            stacklevel=3,
        )
    if result is None:
        result = np.empty((0, channels, 0, 0), dtype=np.float32)
    return (result if len(kept) == len(names) else result[: len(kept)].copy()), kept


def pngs_to_images(names, read, image_size, where):
    """Decode Omniglot drawings, invert them (strokes = 1), resize to ``image_size``.

    ``read(name)`` returns the bytes of a file (a bounded reader); the result
    is float32 (n, 1, s, s) in [0, 1]. See :func:`read_images`.
    """
    images, _ = read_images(
        names,
        lambda name: io.BytesIO(read(name)),
        image_size=image_size,
        where=where,
        invert=True,
    )
    return images
