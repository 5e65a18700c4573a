"""Data home, the one checksummed download helper every downloader uses, the
bounded file reads and folder walk the loaders share, and the return convention
(Bunch or ``(data, target)``) every loader follows."""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path, PurePath

from sklearn.utils import Bunch
from sklearn.utils._param_validation import validate_params

from .._fileio import atomic_path

__all__ = ["get_data_home", "clear_data_home"]

# What the loaders' ``validate_params`` accept as a file or folder.
_PATH = [str, os.PathLike]

_ENV_VAR = "SKFEWSHOT_DATA"
_DEFAULT_HOME = os.path.join("~", "skfewshot_data")
_CHUNK_BYTES = 1 << 16
# The most bytes a loader reads from one file or zip member (a PNG drawing, a
# class_labels.txt, a categories.json): far above any real one, low enough
# that a crafted archive cannot make a loader hold gigabytes.
_MAX_FILE_BYTES = 64 << 20
_BLOCK_BYTES = 1 << 20
# What a corrupt zip member raises while it is read (bad deflate data, CRC
# mismatch, truncated member, unsupported compression or encryption).
_ZIP_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    OSError,
)


@validate_params({"data_home": [*_PATH, None]}, prefer_skip_nested_validation=True)
def get_data_home(data_home: str | os.PathLike | None = None) -> str:
    """Return the folder where skfewshot keeps downloaded data sets.

    The folder is, in order of precedence, ``data_home`` when given, the
    ``SKFEWSHOT_DATA`` environment variable when set, else ``~/skfewshot_data``.
    ``~`` is expanded, and the folder is created if it does not exist, as
    :func:`sklearn.datasets.get_data_home` does.

    Parameters
    ----------
    data_home : str or path-like, default=None
        An explicit folder; overrides the environment variable. An empty
        path is refused (it would mean the current working directory).

    Returns
    -------
    data_home : str
        The absolute path of the data folder.

    Raises
    ------
    ValueError
        When ``data_home`` is an empty path.

    See Also
    --------
    clear_data_home : Delete the content of the data home.

    Examples
    --------
    >>> import os, tempfile
    >>> from skfewshot.datasets import get_data_home
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     home = get_data_home(os.path.join(tmp, "data"))
    ...     print(os.path.isdir(home), os.path.basename(home))
    True data
    """
    home = _resolve_data_home(data_home)
    os.makedirs(home, exist_ok=True)
    return home


def _resolve_data_home(data_home):
    """The absolute data home for ``data_home``, refusing an empty path."""
    if data_home is None:
        data_home = os.environ.get(_ENV_VAR) or _DEFAULT_HOME
    data_home = os.fspath(data_home)
    if not str(data_home).strip():
        raise ValueError(
            f"data_home must be a folder, got the empty path {data_home!r} "
            "(it would mean the current working directory); pass None for "
            f"the default (${_ENV_VAR} or {_DEFAULT_HOME})."
        )
    return os.path.abspath(os.path.expanduser(data_home))


def _refuse_to_delete(home):
    """Raise ``ValueError`` if deleting ``home`` would delete more than data.

    Refused: a filesystem root, the user's home folder and any folder above
    it, the current working directory and any folder above it (symbolic
    links resolved), and a symbolic link (``shutil.rmtree`` does not follow
    one).
    """
    real = Path(os.path.realpath(home))
    cwd = Path(os.path.realpath(os.getcwd()))
    user_home = Path(os.path.realpath(os.path.expanduser("~")))
    if real.parent == real:
        reason = "a filesystem root"
    elif real == user_home:
        reason = "your home folder"
    elif cwd == real or real in cwd.parents:
        reason = "the current working directory or a folder above it"
    elif real in user_home.parents:
        reason = f"a folder above your home folder ({user_home})"
    elif os.path.islink(home):
        raise ValueError(
            f"refusing to delete {home}: it is a symbolic link (to "
            f"{os.readlink(home)}), not a folder; pass the folder it points to "
            f"({real}) to delete the data there, or remove the link yourself."
        )
    else:
        return
    raise ValueError(
        f"refusing to delete {home}: it is {reason}, not a data home; pass "
        "the folder that holds the downloaded data sets."
    )


@validate_params({"data_home": [*_PATH, None]}, prefer_skip_nested_validation=True)
def clear_data_home(data_home: str | os.PathLike | None = None) -> None:
    """Delete the data home and everything in it.

    As a safety net it refuses to delete a filesystem root, your home folder
    or a folder above it, the current working directory or a folder above it,
    whatever ``data_home`` or ``$SKFEWSHOT_DATA`` says. A data home that is a
    symbolic link is refused too (the link is not followed): pass the folder
    it points to.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The folder to delete; resolved as in :func:`get_data_home`.

    Raises
    ------
    ValueError
        When ``data_home`` is an empty path, a symbolic link, or names a
        folder that must not be deleted (see above); the message names it,
        and nothing is deleted then.

    Examples
    --------
    >>> import os, tempfile
    >>> from skfewshot.datasets import clear_data_home, get_data_home
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     home = get_data_home(os.path.join(tmp, "data"))
    ...     clear_data_home(home)
    ...     print(os.path.exists(home))
    False
    """
    home = _resolve_data_home(data_home)
    _refuse_to_delete(home)
    shutil.rmtree(get_data_home(home))


def _not_found(message, path):
    """``FileNotFoundError`` for ``path``, with ``errno`` and ``filename`` set.

    ``str()`` reads ``[Errno 2] <message>: '<path>'``, like the error of
    :func:`open`; a caller can reword it from ``filename``.
    """
    return FileNotFoundError(errno.ENOENT, message, str(path))


def _bunch_or_X_y(return_X_y, **fields):
    """What a loader returns: ``Bunch(**fields)``, or ``(data, target)`` of it.

    The convention of scikit-learn's loaders, shared by every skfewshot loader.
    """
    if return_X_y:
        return fields["data"], fields["target"]
    return Bunch(**fields)


def _open_zip(path):
    """Open a zip archive, or raise ``OSError`` naming the unreadable file."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise OSError(
            f"{path} is not a readable zip archive ({exc}); if it was "
            "downloaded, delete it and fetch it again."
        ) from exc


def _check_zip(path):
    """Raise ``OSError`` unless ``path`` is a zip archive whose index reads."""
    _open_zip(path).close()


def _too_large(what, size=None):
    declared = "" if size is None else f" ({size} bytes)"
    return ValueError(
        f"{what} is larger{declared} than the {_MAX_FILE_BYTES} bytes a skfewshot "
        "loader reads from one file (a decompression bomb, or not a data file?)."
    )


def _read_bounded(fh, what):
    """The bytes of the open ``fh``, at most ``_MAX_FILE_BYTES`` of them.

    Read in blocks with a bound, whatever a header declares; more bytes raise
    ``ValueError`` naming ``what``. ``fh.read(limit + 1)`` would allocate
    ``limit`` bytes up front (and a zip member would inflate that much at
    once) even for a small file.
    """
    limit = _MAX_FILE_BYTES
    blocks, size = [], 0
    while size <= limit:
        block = fh.read(min(_BLOCK_BYTES, limit + 1 - size))
        if not block:
            break
        blocks.append(block)
        size += len(block)
    if size > limit:
        raise _too_large(what)
    return b"".join(blocks)


def _read_member(archive, name, zip_path):
    """The bytes of zip member ``name``, at most ``_MAX_FILE_BYTES`` of them.

    Neither the declared size nor the actual one may pass the limit: the
    member is read with a bound, whatever its header says. A larger member
    raises ``ValueError``; a corrupt one ``OSError``; both name the zip and
    the member.
    """
    what = f"{zip_path}: member {name}"
    info = archive.getinfo(name)
    if info.file_size > _MAX_FILE_BYTES:
        raise _too_large(what, info.file_size)
    try:
        with archive.open(info) as member:
            return _read_bounded(member, what)
    except _ZIP_READ_ERRORS as exc:
        raise OSError(
            f"{what} is corrupt or unreadable ({type(exc).__name__}: {exc}); "
            "if the zip was downloaded, delete it and fetch it again."
        ) from exc


def _read_file(path):
    """The bytes of file ``path``, at most ``_MAX_FILE_BYTES`` (else ``ValueError``)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > _MAX_FILE_BYTES:
            raise _too_large(path, size)
        return _read_bounded(fh, path)


def _is_hidden(relative):
    """Whether a relative path has a hidden part (a name starting with ".").

    Hidden files include macOS's ``.DS_Store`` and AppleDouble ``._<name>``
    files (the resource forks it writes beside each file on FAT, exFAT and
    network volumes), which are no data of the loaders.
    """
    return any(part.startswith(".") for part in PurePath(relative).parts)


def _walk_files(root):
    """``(files, problems)``: the files under folder ``root``, and what is not.

    ``files`` are Paths under ``root``, sorted, hidden files and folders left
    out. Symbolic links to folders are followed (as torchvision's
    ``ImageFolder`` does), except a link back to a folder it is in (a loop).
    ``problems`` is a list of ``OSError``, each naming a path whose files
    would otherwise be left out without a word: a folder that cannot be
    listed (``PermissionError``), a dangling link (``FileNotFoundError``), a
    link loop (``errno.ELOOP``); :func:`_raise_or_warn` reports them.
    """
    files, problems = [], []

    def visit(folder, above):
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            problems.append(
                OSError(exc.errno, f"cannot list folder ({exc.strerror})", str(folder))
            )
            return
        for entry in entries:
            path = folder / entry.name
            if entry.name.startswith("."):
                continue
            try:  # both follow a symbolic link
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError as exc:  # e.g. a link into a folder one may not read
                problems.append(
                    OSError(exc.errno, f"cannot read ({exc.strerror})", str(path))
                )
                continue
            if is_dir:
                real = os.path.realpath(path)
                if real in above:
                    problems.append(
                        OSError(
                            errno.ELOOP, f"symbolic link loop (to {real})", str(path)
                        )
                    )
                else:
                    visit(path, above | {real})
            elif is_file:
                files.append(path)
            elif entry.is_symlink():
                target = os.readlink(path)
                problems.append(
                    OSError(
                        errno.ENOENT, f"dangling symbolic link (to {target})", str(path)
                    )
                )

    visit(Path(root), frozenset({os.path.realpath(root)}))
    return sorted(files), problems


def _raise_or_warn(problems, on_error, where):
    """Raise the first of ``problems`` (``on_error="raise"``), or warn of all.

    With ``"warn"``, one ``UserWarning`` names each skipped path and why.
    """
    if not problems:
        return
    if on_error == "raise":
        raise problems[0]
    warnings.warn(
        f"skipped {len(problems)} path(s) of {where} that cannot be read: "
        + "; ".join(str(problem) for problem in problems),
        UserWarning,
        stacklevel=3,
    )


def _fetch_file(url, target, *, md5=None, check=None, timeout=60):
    """Download ``url`` to ``target`` safely; return ``target`` as a Path.

    The bytes go to a temporary file beside ``target`` (through
    :func:`skfewshot._fileio.atomic_path`), which is renamed onto ``target``
    only once the download is complete (the advertised length) and
    verified: against ``md5`` when known, then with ``check(path)``, a callable
    raising on a bad file (e.g. "is this a readable zip"). On any failure the
    temporary file is removed and an ``OSError`` says what went wrong, so a
    corrupt or truncated download is never kept.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        digest, size = hashlib.md5(), 0
        try:
            with (
                open(tmp, "wb") as out,
                urllib.request.urlopen(url, timeout=timeout) as response,
            ):
                expected_size = response.headers.get("Content-Length")
                for block in iter(lambda: response.read(_CHUNK_BYTES), b""):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
        except urllib.error.HTTPError as exc:
            raise OSError(
                f"could not download {url}: HTTP {exc.code} {exc.reason}"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise OSError(f"could not download {url}: {exc}") from exc
        if expected_size is not None and size != int(expected_size):
            raise OSError(
                f"download of {url} is truncated: got {size} bytes, the server "
                f"announced {int(expected_size)}; {target} was not written."
            )
        actual = digest.hexdigest()
        if md5 is not None and actual != md5:
            raise OSError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {actual} "
                f"({size} bytes); the file may be corrupt or truncated, "
                f"{target} was not written."
            )
        if check is not None:
            check(tmp)
    return target
