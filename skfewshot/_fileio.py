"""Atomic file writes: one helper for every file the package writes.

Private module (standard library only: no numpy, no torch), so light layers such
as plotting can use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path"]

#: Characters of the target's name (and at most of its suffix) that the
#: temporary file's name keeps: with mkstemp's 8 random characters it stays
#: within the 255 bytes of a file name wherever the target's own name does not
#: need them all.
_NAME_PREFIX = 64


@contextlib.contextmanager
def atomic_path(target):
    """Yield a temporary path beside ``target``; move it onto ``target`` on success.

    The caller writes the whole file to the yielded path (``torch.save``,
    ``savefig``, ``open(..., "w")``...). Only when the ``with`` block ends
    without an exception is the file flushed to disk and renamed onto
    ``target`` with :func:`os.replace`, which is atomic on one file system: a
    reader sees the old file or the new one, never a half-written one, and an
    exception or a ``KeyboardInterrupt`` inside the block leaves ``target``
    exactly as it was and removes the temporary file.

    The temporary file keeps ``target``'s suffix, so writers that pick a
    format from the file name (matplotlib) pick the same one, and a short
    prefix of its name (a name near the file system's 255-byte limit stays
    writable).

    A ``target`` that is a symbolic link is written through, as
    ``open(target, "w")``, ``torch.save`` and ``skops.io.dump`` do: the file
    it points to gets the new content (created if the link dangles) and the
    link stays a link.

    Before anything is written, a ``target`` that is a directory, whose folder
    does not exist, or that is a file ``open(target, "w")`` would refuse
    (read-only for this user) raises ``IsADirectoryError``,
    ``FileNotFoundError`` or ``PermissionError`` naming ``target``: replacing
    the file needs only its folder to be writable, so a file a user made
    read-only to protect it was silently replaced, and the other two errors
    named the temporary file.

    Parameters
    ----------
    target : str or path-like
        The file to write. Its folder must exist.

    Yields
    ------
    tmp : pathlib.Path
        The temporary file to write, in the folder of ``target``.

    Examples
    --------
    >>> import os, tempfile
    >>> from skfewshot._fileio import atomic_path
    >>> target = os.path.join(tempfile.mkdtemp(), "out.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("complete")
    >>> open(target).read()
    'complete'
    """
    given = os.fspath(target)
    # through a symbolic link: os.replace would put a file in the link's place
    target = Path(os.path.realpath(target))
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", given)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, f"its folder {str(target.parent)!r} does not exist", given
        )
    if target.exists() and not os.access(target, os.W_OK):
        raise PermissionError(
            errno.EACCES, "the file is read-only: it is not replaced", given
        )
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name[:_NAME_PREFIX]}.",
        suffix=f".tmp{target.suffix[-_NAME_PREFIX:]}",
        dir=target.parent,
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if target.exists():
            # keep the permissions of the file being replaced
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
