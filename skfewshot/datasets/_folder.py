"""A user's own images: a class-per-folder tree, or a list of file paths."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import Bunch
from sklearn.utils._param_validation import StrOptions, validate_params

from ._base import _PATH, _bunch_or_X_y, _not_found, _raise_or_warn, _walk_files
from ._images import IMAGE_SHAPE, read_images

__all__ = ["IMAGE_EXTENSIONS", "ImageFileReader", "load_image_folder"]

#: The file name extensions (lower case) ``load_image_folder`` reads: those of
#: torchvision's ``ImageFolder``, plus GIF (its first frame).
IMAGE_EXTENSIONS = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pgm",
    ".png",
    ".ppm",
    ".tif",
    ".tiff",
    ".webp",
)
_COLOR = StrOptions({"grayscale", "rgb"})
_SKIPPED_FOLDERS = {"__MACOSX"}  # the resource forks of zips made on macOS

_DESCR = """\
Image folder
------------

{n_images} images in {n_classes} classes read from {path}, one sub-folder per
class (the layout of torchvision's ImageFolder); class names are the sorted
sub-folder names, files are found recursively in each and sorted.

Images are decoded by Pillow, converted to {color} (transparent pixels
composited over white; colour to grey by ITU-R BT.601 luminance) and resized
to {size} by exact area averaging, as the Omniglot loaders resize. Values
lie in [0, 1] with 0 = black and 1 = white (not inverted: Omniglot's strokes
are 1, a photo's dark pixels are 0).
"""


def _class_files(root, folder):
    """``(images, others, problems)``: the image files under ``folder``, the rest.

    Paths relative to ``root`` as POSIX strings, sorted; hidden files and
    files in hidden folders are left out of both. Symbolic links to folders
    are followed; ``problems`` are the paths that cannot be walked (see
    :func:`~skfewshot.datasets._base._walk_files`).
    """
    images, others = [], []
    files, problems = _walk_files(folder)
    for path in files:
        relative = path.relative_to(root).as_posix()
        is_image = path.suffix.lower() in IMAGE_EXTENSIONS
        (images if is_image else others).append(relative)
    return sorted(images), sorted(others), problems


def _scan(root, on_error):
    """Sorted class names and ``(file, class index)`` of the images under ``root``."""
    if not root.exists():
        raise _not_found("image folder not found", root)
    if not root.is_dir():
        raise NotADirectoryError(
            f"{root} is not a directory; load_image_folder takes a folder with "
            "one sub-folder of images per class."
        )
    classes = sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in _SKIPPED_FOLDERS
    )
    if not classes:
        raise ValueError(
            f"{root} has no class sub-folders; put the images of each class in "
            "a sub-folder named after it (root/cat/1.jpg, root/dog/2.png, ...)."
        )
    walked = [_class_files(root, root / name) for name in classes]
    _raise_or_warn([p for _, _, found in walked for p in found], on_error, root)
    files = []
    for index, (name, (images, others, _)) in enumerate(zip(classes, walked)):
        if not images:
            found = (
                f"; it holds {len(others)} other file(s), e.g. {others[0]!r}"
                if others
                else ""
            )
            raise ValueError(
                f"class folder {root / name} has no image file ("
                + ", ".join(IMAGE_EXTENSIONS)
                + found
                + ")."
            )
        files += [(image, index) for image in images]
    return classes, files


@validate_params(
    {
        "path": _PATH,
        "image_size": IMAGE_SHAPE,
        "color": [_COLOR],
        "on_error": [StrOptions({"raise", "warn"})],
        "return_X_y": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def load_image_folder(
    path: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] | None = 28,
    color: str = "grayscale",
    on_error: str = "raise",
    return_X_y: bool = False,
) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """Load a folder of images, one sub-folder per class, as float32 images.

    The layout of torchvision's ``ImageFolder``: ``path/<class>/<image>``,
    images found recursively inside each class folder, symbolic links to
    folders followed (a link back to a folder it is in is a loop, an error).
    Class names are the sorted sub-folder names; the files of a class are
    sorted by path, so the order is the same on every machine. Hidden files
    and folders (a name starting with ".") and ``__MACOSX`` are skipped, and
    so are files whose extension is not one of ``IMAGE_EXTENSIONS`` (``.bmp
    .gif .jpeg .jpg .pgm .png .ppm .tif .tiff .webp``, any case); files
    directly in ``path`` belong to no class and are ignored.

    Each file is decoded by Pillow (GIF: its first frame), converted to
    ``color``, and resized to ``image_size`` by exact area averaging (as
    :func:`load_omniglot` resizes; OpenCV's ``INTER_AREA``), one image at a
    time into the preallocated result.

    Parameters
    ----------
    path : str or path-like
        The folder holding one sub-folder per class.
    image_size : int, (height, width) or None, default=28
        Size of the returned images: the side of a square, or a pair. None
        keeps the files' size (then all must share it). The aspect ratio is
        not kept: a 640x480 photo at 28 becomes 28x28.
    color : {"grayscale", "rgb"}, default="grayscale"
        One channel (colour converted to ITU-R BT.601 luminance, as Pillow's
        "L" mode, but in floating point) or three (grey images repeated).
        Transparent pixels (RGBA, LA, a palette's transparent colour) are
        composited over white first; 16-bit grey keeps its 16 bits.
    on_error : {"raise", "warn"}, default="raise"
        What to do with a file Pillow cannot read (corrupt, truncated, not
        an image, over the decompression-bomb limit), and with a folder that
        cannot be listed (no permission), a dangling symbolic link or a
        symbolic link loop inside a class folder: raise, or skip them, with
        one ``UserWarning`` for the paths and one for the files, naming each
        skipped path and why.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        data : ndarray of shape (n_images, C, height, width)
            float32 images, C = 1 (grayscale) or 3 (rgb), values in [0, 1],
            0 = black. The layout every skfewshot image backbone takes.
        images : ndarray of shape (n_images, height, width[, 3])
            The same images for plotting (channel axis dropped for grayscale,
            last for rgb; a view of ``data``).
        target : ndarray of shape (n_images,)
            Class index into ``target_names``.
        target_names : ndarray of str
            The class sub-folder names, sorted.
        filenames : ndarray of str
            Each image's path relative to ``path`` (POSIX separators).
        DESCR : str
            Description of the data.

    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    NotADirectoryError
        When ``path`` is a file.
    OSError
        With ``on_error="raise"``, when a folder inside a class folder
        cannot be listed (``PermissionError``), a symbolic link there is
        dangling (``FileNotFoundError``) or loops; its ``filename`` is the
        path.
    ValueError
        When ``path`` has no class sub-folder, a class folder has no image
        file, a file cannot be decoded (with ``on_error="raise"``; with
        ``"warn"``, when a class is left with no readable image), or with
        ``image_size=None`` two images differ in size; the message names the
        folder or file. A file over ``PIL.Image.MAX_IMAGE_PIXELS`` pixels
        (Pillow's decompression-bomb limit, 89 million by default) is an
        unreadable file, never a huge allocation.

    See Also
    --------
    ImageFileReader : The same decoding as a pipeline step on file paths.

    Notes
    -----
    Memory is the result plus one decoded file at a time (Pillow's own
    buffer, at most ``MAX_IMAGE_PIXELS`` pixels, and 8 MiB of float64 rows
    while resizing). Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay
    False (its default) for truncated files to be reported.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skfewshot.datasets import load_image_folder
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for name, shade in [("dark", 0), ("light", 255)]:
    ...         (Path(tmp) / name).mkdir()
    ...         for i in range(2):
    ...             image = Image.new("RGB", (40, 30), (shade, shade, shade))
    ...             image.save(Path(tmp) / name / f"{i}.png")
    ...     bunch = load_image_folder(tmp, image_size=16)
    >>> bunch.data.shape, bunch.data.dtype
    ((4, 1, 16, 16), dtype('float32'))
    >>> bunch.target, bunch.target_names
    (array([0, 0, 1, 1]), array(['dark', 'light'], dtype='<U5'))
    >>> bunch.filenames[2], float(bunch.data[2].min())
    (np.str_('light/0.png'), 1.0)
    """
    root = Path(os.fspath(path)).expanduser()
    classes, files = _scan(root, on_error)
    names = [name for name, _ in files]
    data, kept = read_images(
        names,
        lambda name: root / name,
        image_size=image_size,
        where=str(root),
        color=color,
        on_error=on_error,
    )
    target = np.array([files[i][1] for i in kept], dtype=np.intp)
    empty = sorted(set(range(len(classes))) - set(target.tolist()))
    if empty:
        raise ValueError(
            f"class folder {root / classes[empty[0]]} has no readable image "
            f"(classes left empty: {[classes[i] for i in empty]})."
        )
    images = data[:, 0] if color == "grayscale" else data.transpose(0, 2, 3, 1)
    size = "x".join(map(str, data.shape[2:]))
    return _bunch_or_X_y(
        return_X_y,
        data=data,
        images=images,
        target=target,
        target_names=np.array(classes),
        filenames=np.array([names[i] for i in kept]),
        DESCR=_DESCR.format(
            n_images=len(kept),
            n_classes=len(classes),
            path=root,
            color=color,
            size=size,
        ),
    )


def _paths(X: Any) -> list[str]:
    """Validate a 1-D collection of file paths and return them as str."""
    if isinstance(X, (str, os.PathLike)):
        raise ValueError(
            "ImageFileReader expects a list or 1-D array of file paths, got a "
            f"single path {os.fspath(X)!r}; wrap it in a list."
        )
    arr = np.asarray(X, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:  # a one-column frame or array
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            "ImageFileReader expects a 1-D collection of file paths, got an "
            f"array of shape {arr.shape}."
        )
    if arr.size == 0:
        raise ValueError("ImageFileReader got an empty input (0 paths).")
    bad = [p for p in arr if not isinstance(p, (str, os.PathLike))]
    if bad:
        raise TypeError(
            "ImageFileReader expects file paths (str or path-like); got "
            f"{len(bad)} other item(s), e.g. {bad[0]!r} of type "
            f"{type(bad[0]).__name__}."
        )
    return [os.fspath(p) for p in arr]


class ImageFileReader(TransformerMixin, BaseEstimator):
    """Read image files into float32 images: file paths in, (n, C, H, W) out.

    A stateless preprocessing step, so a :class:`~sklearn.pipeline.Pipeline`
    can start from a list of file paths: each file is decoded, converted and
    resized exactly as :func:`load_image_folder` does, and the result feeds
    an image backbone (:class:`~skfewshot.BackboneTransformer`).

    Parameters
    ----------
    image_size : int, (height, width) or None, default=28
        Size of the returned images: the side of a square, or a pair, by
        exact area averaging. None keeps the files' size (then all the files
        of one call must share it).
    color : {"grayscale", "rgb"}, default="grayscale"
        One channel (BT.601 luminance) or three; transparent pixels are
        composited over white.

    See Also
    --------
    load_image_folder : Load a class-per-folder tree of images.
    skfewshot.BackboneTransformer : The image backbone step that follows.

    Notes
    -----
    **Stateless.** ``fit`` validates the parameters and the paths and learns
    nothing; ``transform`` works unfitted (the tag ``requires_fit`` is
    False), as :class:`~sklearn.preprocessing.FunctionTransformer` does.

    **Frozen.** The class attribute ``frozen_features = True`` declares that
    ``fit`` learns nothing and ``transform`` maps each file on its own, so
    :func:`~skfewshot.model_selection.evaluate_episodes` reads a pool of
    files once instead of once per episode (with a frozen backbone after it,
    it embeds them once too).

    Errors name the file: a path that does not exist (``FileNotFoundError``),
    a file Pillow cannot read or one over ``PIL.Image.MAX_IMAGE_PIXELS``
    pixels (``ValueError``). Unlike :func:`load_image_folder` there is no
    ``on_error="warn"``: a transformer returns one row per input.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> import torch
    >>> from sklearn.pipeline import make_pipeline
    >>> from skfewshot import BackboneTransformer, PrototypeClassifier
    >>> from skfewshot.datasets import ImageFileReader
    >>> tmp = tempfile.TemporaryDirectory()
    >>> paths = []
    >>> for name, shade in [("a", 0), ("b", 40), ("c", 215), ("d", 255)]:
    ...     path = Path(tmp.name) / f"{name}.png"
    ...     Image.new("L", (12, 12), shade).save(path)
    ...     paths.append(str(path))
    >>> X = ImageFileReader(image_size=4).fit_transform(paths)
    >>> X.shape, X.dtype
    ((4, 1, 4, 4), dtype('float32'))
    >>> backbone = BackboneTransformer(torch.nn.Flatten(), device="cpu")
    >>> pipe = make_pipeline(ImageFileReader(image_size=4), backbone,
    ...                      PrototypeClassifier(metric="euclidean"))
    >>> pipe.fit(paths, ["dark", "dark", "light", "light"]).predict(paths[1:3])
    array(['dark', 'light'], dtype='<U5')
    >>> tmp.cleanup()
    """

    frozen_features = True

    _parameter_constraints: dict = {"image_size": IMAGE_SHAPE, "color": [_COLOR]}

    def __init__(
        self, image_size: int | tuple[int, int] | None = 28, color: str = "grayscale"
    ) -> None:
        self.image_size = image_size
        self.color = color

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Sequence[str | os.PathLike], y: None = None) -> ImageFileReader:
        """Validate the parameters and the paths; nothing is learnt or read.

        Parameters
        ----------
        X : list or 1-D array of str or path-like
            Image file paths.

        y : None
            Ignored.

        Returns
        -------
        self : ImageFileReader
            The step itself.
        """
        _paths(X)
        return self

    def transform(self, X: Sequence[str | os.PathLike]) -> np.ndarray:
        """Decode, convert and resize the image files.

        Parameters
        ----------
        X : list or 1-D array of str or path-like
            Image file paths.

        Returns
        -------
        images : ndarray of shape (n_files, C, height, width), dtype float32
            C = 1 (grayscale) or 3 (rgb); values in [0, 1], 0 = black.
        """
        self._validate_params()
        paths = _paths(X)
        images, _ = read_images(
            paths,
            lambda path: path,
            image_size=self.image_size,
            where=None,
            color=self.color,
        )
        return images

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = []
        return tags
