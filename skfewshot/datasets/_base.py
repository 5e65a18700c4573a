"""Data home, the one checksummed download helper every downloader uses, and the
return convention (Bunch or ``(data, target)``) every loader follows."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from sklearn.utils import Bunch

__all__ = ["get_data_home", "clear_data_home"]

_ENV_VAR = "SKFEWSHOT_DATA"
_DEFAULT_HOME = os.path.join("~", "skfewshot_data")
_CHUNK_BYTES = 1 << 16


def get_data_home(data_home=None):
    """Return the folder where skfewshot keeps downloaded data sets.

    The folder is, in order of precedence, ``data_home`` when given, the
    ``SKFEWSHOT_DATA`` environment variable when set, else ``~/skfewshot_data``.
    ``~`` is expanded, and the folder is created if it does not exist, as
    :func:`sklearn.datasets.get_data_home` does.

    Parameters
    ----------
    data_home : str or path-like, default=None
        An explicit folder; overrides the environment variable.

    Returns
    -------
    data_home : str
        The absolute path of the data folder.

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
    if data_home is None:
        data_home = os.environ.get(_ENV_VAR) or _DEFAULT_HOME
    home = os.path.abspath(os.path.expanduser(os.fspath(data_home)))
    os.makedirs(home, exist_ok=True)
    return home


def clear_data_home(data_home=None):
    """Delete the data home and everything in it.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The folder to delete; resolved as in :func:`get_data_home`.

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
    shutil.rmtree(get_data_home(data_home))


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


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_file(url, target, *, md5=None, check=None, timeout=60):
    """Download ``url`` to ``target`` safely; return ``target`` as a Path.

    The bytes go to a temporary file beside ``target``, which is renamed onto
    ``target`` only once the download is complete (the advertised length) and
    verified: against ``md5`` when known, then with ``check(path)``, a callable
    raising on a bad file (e.g. "is this a readable zip"). On any failure the
    temporary file is removed and an ``OSError`` says what went wrong, so a
    corrupt or truncated download is never kept.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent
    )
    try:
        digest, size = hashlib.md5(), 0
        try:
            with (
                os.fdopen(fd, "wb") as out,
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
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return target
