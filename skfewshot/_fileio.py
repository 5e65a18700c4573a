"""Atomic file writes: one helper for every file the package writes.

Private module (standard library only: no numpy, no torch), so light layers such
as plotting can use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path"]


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
    format from the file name (matplotlib) pick the same one.

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
    target = Path(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
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
