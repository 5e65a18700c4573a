"""The 20 one-shot classification runs of the Omniglot paper."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils._param_validation import validate_params

from ._base import (
    _PATH,
    _is_hidden,
    _not_found,
    _open_zip,
    _raise_or_warn,
    _read_file,
    _read_member,
    _walk_files,
)
from ._images import IMAGE_SIZE, pngs_to_images

__all__ = ["load_omniglot_runs"]

_RUN = re.compile(r"^run\d+$")
_NUMBER = re.compile(r"(\d+)\.png$", re.IGNORECASE)

_DESCR = """\
Omniglot one-shot classification runs
-------------------------------------

The benchmark of Lake, Salakhutdinov & Tenenbaum (Science, 2015): 20 runs,
each a 20-way 1-shot task within one alphabet of the evaluation set. A run
folder ``runNN`` holds ``training/classNN.png`` (one support image per
class), ``test/itemNN.png`` (20 queries) and ``class_labels.txt`` (one line
per query: ``runNN/test/itemXX.png runNN/training/classYY.png``).

Each run is a Bunch with ``X_support``, ``y_support`` (the NN of
``classNN.png``), ``X_query``, ``y_query`` (from ``class_labels.txt``, in
its line order), ``support_files``, ``query_files`` and ``name``. Images have
the format of ``load_omniglot``: float32 (n, 1, s, s), strokes = 1.
"""


class _Folder:
    """Files under a folder, by POSIX path relative to it.

    Hidden files are left out and symbolic links to folders followed, as
    :func:`load_image_folder` does; a folder that cannot be listed, a
    dangling link or a link loop raises ``OSError`` naming it.
    """

    def __init__(self, root):
        self.root = root
        files, problems = _walk_files(root)
        _raise_or_warn(problems, "raise", root)
        self.names = sorted(p.relative_to(root).as_posix() for p in files)

    def read(self, name):
        return _read_file(self.root / name)

    def close(self):
        pass


class _Zip:
    """Members of a zip archive, read in memory; hidden files left out."""

    def __init__(self, path):
        self.path = path
        self.archive = _open_zip(path)
        self.names = sorted(
            n
            for n in self.archive.namelist()
            if not n.endswith("/") and not _is_hidden(PurePosixPath(n))
        )

    def read(self, name):
        return _read_member(self.archive, name, self.path)

    def close(self):
        self.archive.close()


def _number(name, where):
    match = _NUMBER.search(name)
    if match is None:
        raise ValueError(f"{where}: cannot read a number from file name {name!r}.")
    return int(match.group(1))


def _run_file(field, run, sub, files, where):
    """The file of ``<run>/<sub>/`` that a class_labels.txt field names.

    The field is compared as the run-relative path ``runNN/<sub>/<file>``,
    not by base name: a line naming another run's file is an error.
    """
    prefix = f"{run}/{sub}/"
    name = field.replace("\\", "/")
    file = name[len(prefix) :] if name.startswith(prefix) else None
    if file not in files:
        kind = "query" if sub == "test" else "class"
        raise ValueError(
            f"{where}: {kind} image {field!r} is not in the run's {sub}/ folder "
            f"(expected {prefix}<file>)."
        )
    return file


def _parse_labels(text, where, run, queries, classes):
    """Map each line of class_labels.txt to (query file, support class file)."""
    pairs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(
                f"{where}, line {lineno}: expected 'runNN/test/itemXX.png "
                f"runNN/training/classYY.png', got {line!r}."
            )
        at = f"{where}, line {lineno}"
        pairs.append(
            (
                _run_file(fields[0], run, "test", queries, at),
                _run_file(fields[1], run, "training", classes, at),
            )
        )
    labelled = [q for q, _ in pairs]
    missing = sorted(set(queries) - set(labelled))
    repeated = sorted({q for q in labelled if labelled.count(q) > 1})
    if missing or repeated:
        raise ValueError(
            f"{where} must label every test image exactly once; unlabelled: "
            f"{missing}, repeated: {repeated}."
        )
    return pairs


@validate_params(
    {"path": _PATH, "image_size": IMAGE_SIZE}, prefer_skip_nested_validation=True
)
def load_omniglot_runs(
    path: str | os.PathLike, *, image_size: int | None = 28
) -> Bunch:
    """Load the 20-run one-shot classification benchmark of the Omniglot paper.

    Each run is a 20-way 1-shot task: 20 support images (one per class) and
    20 queries. The runs are the ``runNN`` folders anywhere in ``path``, so
    ``path`` may be the folder holding the ``runNN`` folders, a folder with one
    top folder above them, or a zip of either; each must hold a
    ``class_labels.txt``, and each run name may appear once. Symbolic links
    to folders are followed; hidden files and folders (a name starting with
    ".", such as macOS's ``._classNN.png``) are skipped, as
    :func:`load_image_folder` skips them.

    Parameters
    ----------
    path : str or path-like
        Folder or zip file with ``runNN/training/classNN.png``,
        ``runNN/test/itemNN.png`` and ``runNN/class_labels.txt`` (one line
        per query: ``runNN/test/itemXX.png runNN/training/classYY.png``,
        paths relative to the folder above the run, naming its own files).
    image_size : int or None, default=28
        Side of the returned square images, resized as in
        :func:`load_omniglot`; None keeps 105.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        runs : list of Bunch
            One per run, sorted by name, each with ``X_support`` (20, 1, s, s),
            ``y_support`` (the NN of ``classNN.png``), ``X_query`` (20, 1, s, s),
            ``y_query`` (the NN of the class named for each query in
            ``class_labels.txt``, in the file's line order), ``support_files``,
            ``query_files`` and ``name`` (e.g. "run01").
        DESCR : str
            Description of the benchmark.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist or holds no run; its ``filename`` is
        ``path``.
    ValueError
        When a run is malformed (e.g. a bad line in ``class_labels.txt``, or
        one naming a file of another run, a PNG that does not decode, a file
        over 64 MiB), a ``runNN`` folder has
        no ``class_labels.txt``, or a run name is found twice (e.g.
        ``a/run01`` and ``b/run01``): the runs read are always all the runs
        there, each once. The message names the file or the runs.
    OSError
        When the zip or one of its members is unreadable (corrupt data, bad
        CRC), naming the zip and the member; or when a folder under ``path``
        cannot be listed, or a symbolic link there is dangling or loops,
        naming it (its ``filename``).

    See Also
    --------
    load_omniglot : The Omniglot subsets, same image format.

    Examples
    --------
    >>> import tempfile
    >>> from skfewshot.datasets import load_omniglot_runs
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     load_omniglot_runs(tmp)
    Traceback (most recent call last):
    ...
    FileNotFoundError: [Errno 2] no runNN/class_labels.txt found ...

    With the runs in place, ``[run.X_support.shape for run in
    load_omniglot_runs("all_runs").runs]`` gives twenty ``(20, 1, 28, 28)``.
    """
    root = Path(os.fspath(path)).expanduser()
    if root.is_dir():
        source = _Folder(root)
    elif root.is_file():
        source = _Zip(root)
    else:
        raise _not_found("neither a folder nor a zip file", root)
    try:
        label_files = _find_runs(source.names, root)
        runs = [_read_run(source, n, root, image_size) for n in label_files]
    finally:
        source.close()
    runs.sort(key=lambda run: run.name)
    return Bunch(runs=runs, DESCR=_DESCR)


def _find_runs(names, root):
    """The ``runNN/class_labels.txt`` files, one per run folder.

    Every ``runNN`` folder must hold a ``class_labels.txt``, and no run name
    may appear twice (e.g. ``a/run01`` and ``b/run01``): a run left out or
    counted twice would change the benchmark's figures without a word.
    """
    run_folders, label_files = set(), {}
    for name in names:
        path = PurePosixPath(name)
        if path.parts[0] == "__MACOSX":
            continue
        run_folders.update(p for p in path.parents if _RUN.match(p.name))
        if path.name == "class_labels.txt" and _RUN.match(path.parent.name):
            label_files[path.parent] = name
    if not run_folders:
        raise _not_found(
            "no runNN/class_labels.txt found (expected the layout "
            "runNN/training/classNN.png, runNN/test/itemNN.png, "
            "runNN/class_labels.txt) in",
            root,
        )
    unlabelled = sorted(str(f) for f in run_folders if f not in label_files)
    if unlabelled:
        raise ValueError(
            f"{root}: run folder(s) {unlabelled} have no class_labels.txt; "
            "every run needs one (its queries' classes), or remove the folder."
        )
    by_run = {}
    for folder in sorted(label_files):
        by_run.setdefault(folder.name, []).append(str(folder))
    repeated = {run: found for run, found in by_run.items() if len(found) > 1}
    if repeated:
        raise ValueError(
            f"{root}: run(s) found more than once: {repeated}; point path at "
            "the folder (or zip) holding one copy of the runs."
        )
    return [label_files[folder] for folder in sorted(label_files)]


def _read_run(source, label_file, root, image_size):
    folder = PurePosixPath(label_file).parent
    where = f"{root}: {label_file}"

    def pngs(sub):
        prefix = f"{folder / sub}/"
        return {
            n[len(prefix) :]: n
            for n in source.names
            if n.startswith(prefix)
            and n.lower().endswith(".png")
            and "/" not in n[len(prefix) :]
        }

    classes, queries = pngs("training"), pngs("test")
    if not classes or not queries:
        raise ValueError(
            f"{root}: run {folder.name} needs PNG files in both training/ and "
            f"test/, found {len(classes)} and {len(queries)}."
        )
    try:
        text = source.read(label_file).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where} is not UTF-8 text ({exc}).") from exc
    pairs = _parse_labels(text, where, folder.name, queries, classes)

    support_files = sorted(classes, key=lambda n: _number(n, where))
    y_support = np.array([_number(n, where) for n in support_files])
    repeated = [
        f for f, y in zip(support_files, y_support) if (y_support == y).sum() > 1
    ]
    if repeated:
        raise ValueError(
            f"{root}: run {folder.name} repeats a class number in training/: "
            f"{repeated}."
        )
    query_files = [q for q, _ in pairs]
    y_query = np.array([_number(s, where) for _, s in pairs])

    def images(files, lookup):
        return pngs_to_images([lookup[f] for f in files], source.read, image_size, root)

    return Bunch(
        X_support=images(support_files, classes),
        y_support=y_support,
        X_query=images(query_files, queries),
        y_query=y_query,
        support_files=[classes[f] for f in support_files],
        query_files=[queries[f] for f in query_files],
        name=folder.name,
    )
