"""Banking77 intents (Casanueva et al., 2020) from its ``text,category`` CSV."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils._param_validation import StrOptions, validate_params

from ._base import _PATH, _bunch_or_X_y, _not_found, _read_file

__all__ = ["load_banking77"]

_HEADER = ["text", "category"]

_DESCR = """\
Banking77
---------

13,083 customer-service queries of an online bank labelled with 77 intents
(Casanueva, Temcinas, Gerz, Henderson & Vulic, "Efficient Intent Detection
with Dual Sentence Encoders", NLP4ConvAI 2020). CC BY 4.0,
https://github.com/PolyAI-LDN/task-specific-datasets. The train split has
10,003 queries, the test split 3,080. A standard few-shot text benchmark:
K examples per intent (K = 5, 10, 30) as the support set.

``data`` holds the texts, ``target`` the intent index into ``target_names``
(the order of ``categories.json`` when it sits beside the CSV, else sorted).
"""


def _find_csv(path, subset):
    path = Path(os.fspath(path)).expanduser()
    if path.is_dir():
        csv_path = path / f"{subset}.csv"
    else:
        csv_path = path
    if not csv_path.is_file():
        raise _not_found(
            "Banking77 CSV not found (give the CSV file, text,category rows, "
            f"or the folder holding {subset}.csv)",
            csv_path,
        )
    return csv_path


def _read_rows(csv_path):
    """Texts and categories of the CSV; ``ValueError`` naming the file if bad.

    UTF-8 with or without a byte-order mark (as spreadsheets save it).
    Parsed strictly: a quote that opens a field must close it, right before
    a comma or the end of the line, so a stray quote is an error instead of
    merging the rows after it into one text. A quoted text may run over
    several lines (Banking77 has such texts); ``spans`` maps the index of
    each such row to its first and last line, for :func:`_check_merged_rows`.

    Returns
    -------
    texts, categories : list of str
    spans : dict of int to (int, int)
    """
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            return _parse_rows(csv.reader(fh, strict=True), csv_path)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{csv_path} is not UTF-8 text ({exc}); save it as UTF-8."
        ) from exc


def _excerpt(row, limit=100):
    """``repr(row)``, cut to ``limit`` characters for an error message."""
    text = repr(row)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _next_row(reader, csv_path):
    """``(line, row)``: the next row and the line it starts on; None at the end."""
    line = reader.line_num + 1
    try:
        return line, next(reader)
    except StopIteration:
        return line, None
    except csv.Error as exc:
        raise ValueError(
            f"{csv_path}, line {line}: not a readable CSV row ({exc}); a text "
            'with a quote must be quoted whole, its quotes doubled ("a ""b"" c").'
        ) from exc


def _parse_rows(reader, csv_path):
    _, header = _next_row(reader, csv_path)
    if header is None or [h.strip() for h in header] != _HEADER:
        raise ValueError(
            f"{csv_path}: expected the header 'text,category', got {header!r}."
        )
    texts, categories, spans = [], [], {}
    while True:
        line, row = _next_row(reader, csv_path)
        if row is None:
            break
        if not row:
            continue
        if len(row) != 2:
            raise ValueError(
                f"{csv_path}, line {line}: expected 2 fields (text,category), "
                f"got {len(row)}: {_excerpt(row)}."
            )
        text, category = row[0], row[1].strip()
        empty = [name for name, v in zip(_HEADER, row) if not v.strip()]
        if empty:
            raise ValueError(
                f"{csv_path}, line {line}: empty {' and '.join(empty)} in "
                f"{_excerpt(row)}; every row needs a text and a category."
            )
        if reader.line_num != line:
            spans[len(texts)] = (line, reader.line_num)
        texts.append(text)
        categories.append(category)
    if not texts:
        raise ValueError(f"{csv_path} has a header but no rows.")
    return texts, categories, spans


def _check_merged_rows(csv_path, texts, spans, categories):
    """``ValueError`` for a text over several lines holding whole rows.

    A stray quote that a later quote closes right before a comma makes one
    text of the rows between, with no CSV error. Texts over several lines
    are legitimate (Banking77 has a few), but one with a line ending in a
    comma and one of ``categories`` swallowed rows.
    """
    known = set(categories)
    for index, (first, last) in spans.items():
        for offset, piece in enumerate(texts[index].splitlines()):
            _, comma, tail = piece.rpartition(",")
            if comma and tail.strip() in known:
                raise ValueError(
                    f"{csv_path}, line {first}: a quoted text runs to line {last} "
                    f"and holds the row {_excerpt(piece)} (line {first + offset}): "
                    "a stray quote has merged the rows between into one text; "
                    "quote a text with a quote whole, its quotes doubled "
                    '("a ""b"" c").'
                )


def _read_categories(names_path):
    """The intents listed in ``categories.json``; ``ValueError`` naming it if bad."""
    try:
        names = json.loads(_read_file(names_path).decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{names_path} is not a UTF-8 JSON file ({exc}).") from exc
    if (
        not isinstance(names, list)
        or not all(isinstance(name, str) for name in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(f"{names_path} must be a JSON list of distinct intents.")
    return names


@validate_params(
    {
        "path": _PATH,
        "subset": [StrOptions({"train", "test"})],
        "return_X_y": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def load_banking77(
    path: str | os.PathLike, *, subset: str = "train", return_X_y: bool = False
) -> Bunch | tuple[list[str], np.ndarray]:
    """Load the Banking77 intent data set from its CSV file.

    Parameters
    ----------
    path : str or path-like
        The CSV file (``text,category`` with a header line, quoted as the
        :mod:`csv` module does, UTF-8 with or without a byte-order mark), or
        the folder holding ``<subset>.csv``.
        A ``categories.json`` (a JSON list of intents) beside the CSV sets
        the order of ``target_names``; without it they are sorted.
    subset : {"train", "test"}, default="train"
        Which CSV to read when ``path`` is a folder.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        data : list of str
            The customer queries.
        target : ndarray of shape (n_samples,)
            Intent index into ``target_names``.
        target_names : ndarray of str
            The intents.
        filename : str
            The CSV read.
        DESCR : str
            Description of the data set.

    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError
        When the CSV is absent; its ``filename`` is where the loader looked.
    ValueError
        When the CSV is not UTF-8, has another header, a row without exactly
        two fields, an empty text or category, a quote that does not close
        its field (e.g. a stray opening quote), a field over the :mod:`csv`
        module's limit (128 KiB), a quoted text over several lines with a
        line ending in ``,category`` (rows merged by a stray quote that a later
        quote closed) or no rows, or ``categories.json`` is not
        UTF-8 JSON listing distinct intents (every category of the CSV among
        them); the message names the file (and the line where the row
        starts).
    OSError
        When a file cannot be read.

    Examples
    --------
    >>> import os, tempfile
    >>> from skfewshot.datasets import load_banking77
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with open(os.path.join(tmp, "train.csv"), "w") as fh:
    ...         _ = fh.write('text,category\\n"Hi, where is my card?",card_arrival\\n'
    ...                      'Is there a fee?,top_up_fee\\n')
    ...     bunch = load_banking77(tmp)
    >>> bunch.data
    ['Hi, where is my card?', 'Is there a fee?']
    >>> bunch.target, bunch.target_names
    (array([0, 1]), array(['card_arrival', 'top_up_fee'], dtype='<U12'))
    """
    csv_path = _find_csv(path, subset)
    texts, categories, spans = _read_rows(csv_path)

    names_path = csv_path.parent / "categories.json"
    names = _read_categories(names_path) if names_path.is_file() else None
    _check_merged_rows(csv_path, texts, spans, (names or []) + categories)
    if names is not None:
        unknown = sorted(set(categories) - set(names))
        if unknown:
            raise ValueError(
                f"{csv_path} has categories missing from {names_path}: {unknown}."
            )
        target_names = np.array(names)
    else:
        target_names = np.unique(categories)
    index = {name: i for i, name in enumerate(target_names.tolist())}
    target = np.array([index[c] for c in categories])
    return _bunch_or_X_y(
        return_X_y,
        data=texts,
        target=target,
        target_names=target_names,
        filename=str(csv_path),
        DESCR=_DESCR,
    )
