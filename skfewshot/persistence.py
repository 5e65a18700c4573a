"""Save and load fitted pipelines securely with ``skops.io``.

:func:`dump` writes a fitted estimator (a whole pipeline: backbone and head)
as one ``skops.io`` file, atomically; :func:`load` reads it back trusting the
types skops trusts by default (scikit-learn, numpy, Python builtins) plus the
skfewshot estimators, and nothing else unless you name it. No code from the
file runs at load: a :class:`~skfewshot.BackboneTransformer` stores its
:mod:`skfewshot.models` backbone as its architecture, configuration and
weights (numpy arrays), checked before the module is rebuilt on the CPU.

These are thin wrappers: ``skops.io.dump`` and ``skops.io.load(...,
trusted=...)`` read and write the same files. They need the ``skops``
package (``pip install skops``, or ``pip install 'skfewshot[persist]'``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._fileio import atomic_path
from ._persistence import TRUSTED_TYPES

__all__ = ["dump", "load"]


def _skops_io():
    try:
        import skops.io
    except ImportError as exc:
        raise ImportError(
            "skfewshot.persistence needs skops; pip install skops (or "
            "'skfewshot[persist]'), or save with pickle or joblib."
        ) from exc
    return skops.io


def dump(estimator: Any, file: str | os.PathLike) -> None:
    """Save a fitted estimator or pipeline as one ``skops.io`` file.

    The write is atomic: the file is written beside ``file`` under a
    temporary name, then renamed onto it, so a failed or interrupted save
    leaves an existing ``file`` as it was.

    Parameters
    ----------
    estimator : estimator
        What to save, e.g. ``make_pipeline(BackboneTransformer(net),
        PrototypeClassifier())`` after ``fit``.
    file : str or path-like
        Where to write (conventionally ``*.skops``). Its folder must exist.

    Raises
    ------
    TypeError
        When the estimator holds something skops cannot store securely, e.g.
        a :class:`~skfewshot.BackboneTransformer` whose module is not a
        :mod:`skfewshot.models` architecture (a torchvision model, your own
        class): the message names its class. Save such a pipeline with
        pickle or joblib.
    ImportError
        When skops is not installed.

    See Also
    --------
    load : Read the file back.
    skfewshot.models.save_backbone : Save a trained backbone alone.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from skfewshot import BackboneTransformer, PrototypeClassifier
    >>> from skfewshot.models import Conv4
    >>> from skfewshot.persistence import dump, load
    >>> X = np.random.RandomState(0).rand(4, 1, 28, 28).astype(np.float32)
    >>> pipe = make_pipeline(BackboneTransformer(Conv4(hidden=8), device="cpu"),
    ...                      PrototypeClassifier()).fit(X, [0, 0, 1, 1])
    >>> path = os.path.join(tempfile.mkdtemp(), "pipe.skops")
    >>> dump(pipe, path)
    >>> loaded = load(path)
    >>> bool((loaded.predict_proba(X) == pipe.predict_proba(X)).all())
    True
    """
    skops_io = _skops_io()
    with atomic_path(file) as tmp:
        skops_io.dump(estimator, tmp)


def _trusted_list(trusted):
    """``trusted`` as a list; a ``TypeError`` for a bool or a lone name or type.

    ``list("pkg.f")`` would trust the letters, not ``pkg.f``, and skops.io
    removed ``trusted=True`` (trust everything) for security.
    """
    if trusted is None:
        return []
    if isinstance(trusted, (bool, str, type)) or not isinstance(
        trusted, (list, tuple, set, frozenset)
    ):
        raise TypeError(
            "trusted must be a list of the types (or their names, e.g. "
            f"['mypackage.preprocess']) to trust, got {trusted!r}; trusting "
            "everything (trusted=True) is not possible (skops.io removed it for "
            "security): review skops.io.get_untrusted_types(file=...) and name "
            "each type."
        )
    return list(trusted)


def load(
    file: str | os.PathLike, *, trusted: Sequence[str | type] | None = None
) -> Any:
    """Load an estimator saved by :func:`dump` (or ``skops.io.dump``).

    Only types known to be safe are loaded: those ``skops.io`` trusts by
    default, the skfewshot estimators (:class:`~skfewshot.BackboneTransformer`,
    :class:`~skfewshot.PrototypeClassifier`,
    :class:`~skfewshot.FineTunedCosineClassifier`,
    :class:`~skfewshot.datasets.ImageFileReader`,
    :class:`~skfewshot.datasets.InkNormalizer`,
    :class:`~skfewshot.text.SentenceEncoder`,
    :class:`~skfewshot.text.LSAEncoder`,
    :class:`~skfewshot.preprocessing.WithinClassWhitening`), ``torch.device``,
    and the types in ``trusted``. A backbone is rebuilt on the CPU from the
    checked description in the file, so a pipeline fitted on a GPU predicts on a
    CPU-only machine (with ``device="auto"``; an explicit ``"cuda"`` raises at
    ``transform``: set it with ``set_params``).

    Parameters
    ----------
    file : str or path-like
        The file to read.
    trusted : list of str or type, default=None
        More types to trust, after you have reviewed them, e.g. the function
        you passed as ``BackboneTransformer(preprocess=...)``:
        ``skops.io.get_untrusted_types(file=file)`` lists the types a file
        holds that skops does not trust by default.

    Returns
    -------
    estimator : object
        The saved estimator, ready to predict.

    Raises
    ------
    FileNotFoundError
        When ``file`` does not exist.
    IsADirectoryError
        When ``file`` is a directory.
    skops.io.exceptions.UntrustedTypesFoundException
        When the file holds types neither skfewshot nor ``trusted`` trusts;
        the message names the file and the types.
    TypeError
        When ``trusted`` is not a list, tuple or set (a bool, or one name
        or type alone).
    ValueError
        When the file is not a readable skops file (truncated, corrupted,
        another format) or holds an invalid backbone description; the
        message names the file and the problem.
    ImportError
        When skops is not installed.

    See Also
    --------
    dump : Write the file.

    Examples
    --------
    >>> import os, tempfile
    >>> from skfewshot import PrototypeClassifier
    >>> from skfewshot.persistence import dump, load
    >>> path = os.path.join(tempfile.mkdtemp(), "head.skops")
    >>> dump(PrototypeClassifier().fit([[1.0, 0.0], [0.0, 1.0]], [0, 1]), path)
    >>> load(path).predict([[0.9, 0.2]])
    array([0])
    """
    skops_io = _skops_io()
    from skops.io.exceptions import UntrustedTypesFoundException

    path = Path(file)
    if path.is_dir():
        raise IsADirectoryError(
            f"{str(path)!r} is a directory, not a file written by "
            "skfewshot.persistence.dump."
        )
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist.")
    trust = list(TRUSTED_TYPES) + _trusted_list(trusted)
    try:
        return skops_io.load(path, trusted=trust)
    except UntrustedTypesFoundException as exc:
        exc.args = (
            f"{str(path)!r}: {exc} skfewshot trusts only its own estimators; "
            "review these types (skops.io.get_untrusted_types(file=...)) and "
            "pass those you trust as load(..., trusted=[...]).",
        )
        raise
    except OSError:
        raise
    except Exception as exc:  # zip, JSON and schema errors, invalid descriptions
        first = str(exc).strip().splitlines()
        raise ValueError(
            f"{str(path)!r} is not a readable skops file of a skfewshot estimator "
            f"({type(exc).__name__}: {first[0].rstrip('.') if first else ''})."
        ) from exc
