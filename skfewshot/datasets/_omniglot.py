"""Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015) from its published zips."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils._param_validation import StrOptions, validate_params

from ._base import (
    _PATH,
    _bunch_or_X_y,
    _check_zip,
    _fetch_file,
    _not_found,
    _open_zip,
    _read_member,
    get_data_home,
)
from ._images import IMAGE_SIZE, pngs_to_images

__all__ = ["load_omniglot", "omniglot_shared_alphabets"]

# Where ``download=True`` fetches ``<subset>.zip`` from (the authors' repository).
_OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python"
# md5 of the published zips (their provenance: the user guide, "Data sets").
_OMNIGLOT_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
    "images_background_small1": "e704a628b5459e08445c13499850abc4",
    "images_background_small2": "b75a71a51d3b13f821f212756fe481fd",
}
_SUBSET = StrOptions(set(_OMNIGLOT_MD5))
_DRAWER = re.compile(r"_(\d+)\.png$", re.IGNORECASE)

_DESCR = """\
Omniglot
--------

1623 handwritten characters from 50 alphabets, each drawn once by 20
different people on Amazon Mechanical Turk (Lake, Salakhutdinov & Tenenbaum,
"Human-level concept learning through probabilistic program induction",
Science 350(6266), 2015). MIT licence, https://github.com/brendenlake/omniglot.

Subsets: images_background (30 alphabets, 964 characters, 19280 images),
images_evaluation (20 alphabets, 659 characters, 13180 images) and the two
"minimal background" sets images_background_small1 (5 alphabets, 136
characters, 2720 images) and images_background_small2 (5, 156, 3120).

Every character is a class (``target``), named "Alphabet/characterNN"; the
alphabet is a natural group (``groups``) for class-disjoint splits. The
105x105 one-bit drawings are inverted (strokes = 1, background = 0) and
resized to ``image_size`` by exact area averaging, so values lie in [0, 1].

images_background_small1 and images_background_small2 share two alphabets,
Greek and Latin, image for image (both are drawn from images_background):
training on one and evaluating on the other is not evaluation on new
classes unless those alphabets are dropped (``exclude_alphabets=``; see
``omniglot_shared_alphabets``).
"""


def _is_zip_path(path):
    """Whether ``path=`` names a zip file rather than the folder holding it.

    An existing file is a zip; a path that does not exist yet is a folder
    unless its name ends in ".zip" (so ``download=True`` never saves a zip
    under the name of the folder meant to hold it).
    """
    return path.is_file() or (not path.is_dir() and path.suffix.lower() == ".zip")


def _locate(subset, data_home, path):
    """Where ``<subset>.zip`` is, or should be downloaded to."""
    if path is None:
        return Path(get_data_home(data_home)) / "omniglot" / f"{subset}.zip"
    path = Path(os.fspath(path)).expanduser()
    return path if _is_zip_path(path) else path / f"{subset}.zip"


def _check_names(value, name):
    """``alphabets`` / ``exclude_alphabets`` (None or an iterable) as a set of str.

    A single str is refused: it is an iterable, of characters.
    """
    if value is None:
        return None
    names = None if isinstance(value, str) else list(value)
    if names is None or not all(isinstance(v, str) for v in names):
        raise TypeError(
            f"{name} must be a list of alphabet names (str) or None, got {value!r}."
        )
    return set(names)


def _select_alphabets(entries, zip_path, alphabets, exclude_alphabets):
    """Keep the entries of ``alphabets`` (all when None), minus the excluded."""
    present = {alphabet for alphabet, _, _ in entries}
    for asked in (alphabets, exclude_alphabets):
        unknown = sorted((asked or set()) - present)
        if unknown:
            raise ValueError(
                f"{zip_path} has no alphabet {unknown}; its alphabets are "
                f"{sorted(present)}."
            )
    kept = present if alphabets is None else alphabets
    kept = kept - (exclude_alphabets or set())
    if not kept:
        raise ValueError(
            f"no alphabet of {zip_path} is left once alphabets= and "
            "exclude_alphabets= are applied."
        )
    return [entry for entry in entries if entry[0] in kept]


@validate_params(
    {
        "subset": [_SUBSET],
        "data_home": [*_PATH, None],
        "path": [*_PATH, None],
        "image_size": IMAGE_SIZE,
        "alphabets": [Iterable, None],
        "exclude_alphabets": [Iterable, None],
        "download": ["boolean"],
        "return_X_y": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def load_omniglot(
    subset: str,
    *,
    data_home: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    image_size: int | None = 28,
    alphabets: Iterable[str] | None = None,
    exclude_alphabets: Iterable[str] | None = None,
    download: bool = False,
    return_X_y: bool = False,
) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """Load one subset of Omniglot from its published zip, as float32 images.

    The zip is read in memory (nothing is unpacked to disk). Each 105x105
    one-bit drawing is inverted so that strokes are 1 and background 0, then
    resized to ``image_size`` x ``image_size`` by exact area averaging: each
    output pixel is the mean of the input over its box (3.75 input pixels a
    side for 105 -> 28), a partly covered pixel weighted by the covered fraction
    (OpenCV's ``INTER_AREA``). The mean ink of an image is preserved.

    .. warning::
       ``images_background_small1`` and ``images_background_small2`` share
       two alphabets, Greek and Latin, image for image (both are cut from
       ``images_background``). A backbone trained on one of them has seen
       every Greek and Latin image of the other: those alphabets are not new
       classes for it. Evaluate without them, with
       ``exclude_alphabets=omniglot_shared_alphabets(subset, other)``; the
       user guide measures how much they inflate accuracy.

    Parameters
    ----------
    subset : {"images_background", "images_evaluation", \
            "images_background_small1", "images_background_small2"}
        Which published zip to read.
    data_home : str or path-like, default=None
        Data folder used when ``path`` is None; the zip is expected at (and
        downloaded to) ``<data_home>/omniglot/<subset>.zip``. See
        :func:`get_data_home`.
    path : str or path-like, default=None
        A zip file, or a folder holding ``<subset>.zip`` (with
        ``download=True`` a missing zip is downloaded into that folder,
        created if needed). A path that does not exist is a folder unless
        its name ends in ".zip". Whatever its file name, the zip must hold
        ``subset`` (its images under the top folder ``<subset>/``, as in
        the published zips).
    image_size : int or None, default=28
        Side of the returned square images; None keeps 105.
    alphabets : list of str, default=None
        Load only these alphabets (folder names, e.g. ``"Greek"``); None
        loads them all.
    exclude_alphabets : list of str, default=None
        Leave these alphabets out, e.g. the ones another subset shares
        (:func:`omniglot_shared_alphabets`).
    download : bool, default=False
        Fetch ``<subset>.zip`` from the authors' GitHub repository when it is
        not there yet. It is kept only once complete and matching its
        published md5 (written to a temporary file, then renamed into place).
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        data : ndarray of shape (n_images, 1, image_size, image_size)
            float32 images, strokes = 1, values in [0, 1].
        images : ndarray of shape (n_images, image_size, image_size)
            The same images without the channel axis (a view of ``data``).
        target : ndarray of shape (n_images,)
            Character index into ``target_names``.
        target_names : ndarray of str
            "Alphabet/characterNN", sorted.
        groups : ndarray of shape (n_images,)
            Alphabet index into ``group_names``.
        group_names : ndarray of str
            Alphabets loaded, sorted.
        drawers : ndarray of shape (n_images,)
            The drawer number in the file name ``<id>_<drawer>.png``, -1
            where the name has none.
        filenames : ndarray of str
            The image paths inside the zip.
        DESCR : str
            Description of the data set.

    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError
        When the zip is absent and ``download`` is False; its ``filename`` is
        where the loader looked, its message says how to get the file.
    OSError
        When a download fails, is truncated or does not match its checksum,
        or the zip or one of its members is unreadable (corrupt data, bad
        CRC); the message names the zip and the member.
    ValueError
        When the zip holds no Omniglot images, or holds another subset
        (its images are not under the top folder ``<subset>/``; the message
        names the zip, ``subset`` and what the zip holds), a member is not an
        image Pillow reads (corrupt, truncated, 0 pixels) or has more pixels
        than ``PIL.Image.MAX_IMAGE_PIXELS``, is larger than 64 MiB, or
        ``alphabets``/``exclude_alphabets`` name an alphabet the zip lacks or
        leave none; the message names the zip and the member.
    TypeError
        When ``alphabets`` or ``exclude_alphabets`` is not a list of str.

    See Also
    --------
    omniglot_shared_alphabets : The alphabets two subsets have in common.
    load_omniglot_runs : The 20 one-shot runs of the Omniglot paper.
    augment_rotations : Add rotated copies as new classes.

    Notes
    -----
    Memory stays bounded whatever the zip holds: each member is read with a
    64 MiB bound (declared and actual size), and each drawing is decoded by
    Pillow, which inflates only the rows its header declares, up to its
    decompression-bomb limit; drawings are decoded and resized one at a time.

    Examples
    --------
    Without the zip in the data home and without ``download=True``, the error
    says where the loader looked and how to get the file:

    >>> import tempfile
    >>> from skfewshot.datasets import load_omniglot
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     load_omniglot("images_background_small1", data_home=tmp)
    Traceback (most recent call last):
    ...
    FileNotFoundError: [Errno 2] Omniglot subset 'images_background_small1' not
    found (download=True fetches it from ...; path= takes ...):
    '.../omniglot/images_background_small1.zip'

    With the file in place, ``load_omniglot("images_background_small1")``
    returns 2720 images of shape (1, 28, 28) in 136 classes and 5 groups.
    """
    alphabets = _check_names(alphabets, "alphabets")
    exclude_alphabets = _check_names(exclude_alphabets, "exclude_alphabets")
    zip_path = _find_zip(subset, data_home, path, download)
    fields = _read_omniglot_zip(
        zip_path, subset, image_size, alphabets, exclude_alphabets
    )
    return _bunch_or_X_y(return_X_y, **fields)


def _find_zip(subset, data_home, path, download):
    """The path of ``<subset>.zip``, downloaded first when asked and missing."""
    zip_path = _locate(subset, data_home, path)
    if not zip_path.is_file():
        if not download:
            raise _not_found(
                f"Omniglot subset {subset!r} not found (download=True fetches "
                f"it from {_OMNIGLOT_URL}; path= takes {subset}.zip or the "
                "folder holding it)",
                zip_path,
            )
        _fetch_file(
            f"{_OMNIGLOT_URL}/{subset}.zip",
            zip_path,
            md5=_OMNIGLOT_MD5.get(subset),
            check=_check_zip,
        )
    return zip_path


def _entries(archive, zip_path, subset):
    """Sorted ``(alphabet, character, member)`` of the Omniglot images in a zip.

    The zip must hold ``subset``: every image under the top folder
    ``<subset>/``, as in the published zips, else ``ValueError`` names the
    zip, the subset asked for and the top folders it holds (a zip of one
    subset read as another would leak one split into the other).
    """
    entries = []
    for name in archive.namelist():
        parts = PurePosixPath(name).parts
        if (
            not name.lower().endswith(".png")
            or len(parts) < 3
            or parts[0] == "__MACOSX"
            or parts[-1].startswith(".")
        ):
            continue
        entries.append((parts[-3], parts[-2], name))
    if not entries:
        raise ValueError(
            f"{zip_path} holds no <Alphabet>/<character>/<image>.png files; "
            "is it an Omniglot zip?"
        )
    tops = sorted({PurePosixPath(name).parts[0] for _, _, name in entries})
    if tops != [subset]:
        raise ValueError(
            f"{zip_path} does not hold the Omniglot subset {subset!r} asked for: "
            f"its images are under {[f'{top}/' for top in tops]}, not "
            f"'{subset}/'; give the zip of {subset} (or the folder holding "
            f"{subset}.zip)."
        )
    return sorted(entries)


def _read_omniglot_zip(
    zip_path, subset, image_size, alphabets=None, exclude_alphabets=None
):
    """Bunch fields (a dict) from the ``<subset>/<Alphabet>/<char>/*.png`` members."""
    with _open_zip(zip_path) as archive:
        entries = _select_alphabets(
            _entries(archive, zip_path, subset), zip_path, alphabets, exclude_alphabets
        )
        names = [name for _, _, name in entries]
        data = pngs_to_images(
            names,
            lambda name: _read_member(archive, name, zip_path),
            image_size,
            zip_path,
        )

    alphabets = np.array([a for a, _, _ in entries])
    characters = np.array([f"{a}/{c}" for a, c, _ in entries])
    group_names, groups = np.unique(alphabets, return_inverse=True)
    target_names, target = np.unique(characters, return_inverse=True)
    drawers = np.array(
        [int(m.group(1)) if (m := _DRAWER.search(n)) else -1 for n in names]
    )
    return dict(
        data=data,
        images=data[:, 0],
        target=target,
        target_names=target_names,
        groups=groups,
        group_names=group_names,
        drawers=drawers,
        filenames=np.array(names),
        DESCR=_DESCR,
    )


def _image_digests(zip_path, subset):
    """``{alphabet: set of sha256 of its PNG files}`` of the zip of ``subset``."""
    digests = {}
    with _open_zip(zip_path) as archive:
        for alphabet, _, name in _entries(archive, zip_path, subset):
            blob = _read_member(archive, name, zip_path)
            digests.setdefault(alphabet, set()).add(hashlib.sha256(blob).hexdigest())
    return digests


@validate_params(
    {
        "subset": [_SUBSET],
        "other": [_SUBSET],
        "data_home": [*_PATH, None],
        "path": [*_PATH, None],
        "other_path": [*_PATH, None],
    },
    prefer_skip_nested_validation=True,
)
def omniglot_shared_alphabets(
    subset: str,
    other: str,
    *,
    data_home: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    other_path: str | os.PathLike | None = None,
) -> list[str]:
    """The alphabets of one Omniglot subset that another subset also holds.

    Computed from the zips: an alphabet of ``subset`` is shared when
    ``other`` has an alphabet of the same name (the same characters, so the
    same classes) or holds any of its images (the PNG files compared by
    SHA-256 of their bytes). For the published subsets,
    ``images_background_small1`` and ``images_background_small2`` share
    Greek and Latin image for image, each small set shares all its alphabets
    with ``images_background``, and ``images_evaluation`` shares none.

    Evaluating a backbone trained on ``other`` on ``subset`` measures new
    classes only without these alphabets: pass the result as
    ``load_omniglot(subset, exclude_alphabets=...)``.

    Parameters
    ----------
    subset : str
        The subset whose alphabets are returned (e.g. the evaluation subset).
    other : str
        The subset to compare with (e.g. the one a backbone was trained on).
    data_home : str or path-like, default=None
        As in :func:`load_omniglot`, for both zips.
    path : str or path-like, default=None
        ``subset``'s zip or the folder holding it, as in :func:`load_omniglot`.
    other_path : str or path-like, default=None
        ``other``'s zip or the folder holding it. By default ``path`` when it
        is a folder, or the folder of ``path`` when it is a zip (a path that
        does not exist is a folder unless it ends in ".zip").

    Returns
    -------
    alphabets : list of str
        Sorted alphabet names of ``subset``; empty when nothing is shared.

    Raises
    ------
    FileNotFoundError
        When a zip is absent (this function never downloads); its
        ``filename`` is where it looked.
    OSError, ValueError
        When a zip or one of its members is unreadable, or a zip holds
        another subset, as in :func:`load_omniglot`.

    See Also
    --------
    load_omniglot : Its ``exclude_alphabets`` drops the shared alphabets.

    Examples
    --------
    >>> import tempfile
    >>> from skfewshot.datasets import omniglot_shared_alphabets
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     omniglot_shared_alphabets(
    ...         "images_background_small2", "images_background_small1", path=tmp
    ...     )
    Traceback (most recent call last):
    ...
    FileNotFoundError: [Errno 2] Omniglot subset 'images_background_small2' ...

    With both zips in place, ``omniglot_shared_alphabets(
    "images_background_small2", "images_background_small1")`` returns
    ``['Greek', 'Latin']``.
    """
    if other_path is None and path is not None:
        other_path = Path(os.fspath(path)).expanduser()
        if _is_zip_path(other_path):
            other_path = other_path.parent
    mine = _image_digests(_find_zip(subset, data_home, path, False), subset)
    theirs = _image_digests(_find_zip(other, data_home, other_path, False), other)
    their_images = set().union(*theirs.values())
    return sorted(
        alphabet
        for alphabet, images in mine.items()
        if alphabet in theirs or images & their_images
    )
