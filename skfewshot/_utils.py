"""Numpy-only helpers shared across the package (no torch import).

Light layers (``model_selection``, ``plotting``) use these without importing
torch, as skorch's ``utils`` depends on nothing else of skorch.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["check_finite_features", "rebuildable_future", "seed_from"]


def seed_from(random_state: int | np.random.RandomState | None) -> int:
    """Draw one 31-bit integer seed from a scikit-learn ``random_state``.

    ``None`` draws from numpy's global state, an int gives the same seed each
    time, a ``RandomState`` advances (scikit-learn's conventions).
    """
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def check_finite_features(
    features: np.ndarray, source: str, rows: slice | np.ndarray | None = None
) -> None:
    """Raise ``ValueError`` naming ``source`` if ``features`` has a NaN or inf.

    Parameters
    ----------
    features : ndarray of shape (n_rows, n_features)
        One batch of outputs, computed from a finite input.
    source : str
        What produced them, e.g. ``"the backbone ResNet12"``.
    rows : slice, ndarray of int or None
        Row of the caller's ``X`` each feature row belongs to (None: 0, 1, ...).
    """
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if not bad.size:
        return
    if rows is None:
        rows = np.arange(len(features))
    elif isinstance(rows, slice):
        rows = np.arange(rows.start, rows.stop)
    raise ValueError(
        f"{source} returned non-finite features (NaN or inf) for {bad.size} of "
        f"the {len(features)} rows of a batch, first for row {rows[bad[0]]} of X; "
        "check its weights (e.g. after a diverged training) and the scale of "
        "its input (e.g. float16 overflow with amp)."
    )


def _return(obj: Any) -> Any:
    return obj


def rebuildable_future(client: Any, obj: Any) -> Any:
    """A ``dask.distributed`` future of ``obj`` that outlives its workers.

    ``client.scatter`` puts data on the workers with no task behind it: when
    the last worker holding a copy dies, the data is lost for good and every
    task that needs it is cancelled ("already forgotten"). Even a
    ``broadcast=True`` scatter is down to one copy within seconds, because
    the Active Memory Manager (on by default) drops every 2 s the replicas
    that no waiting task needs. The future of a task that returns ``obj``
    instead keeps ``obj`` in the task's spec on the scheduler, which runs the
    task again on a live worker when every copy of its result is lost. Each
    call has a key of its own, so a job right after another on the same data
    never takes keys that the scheduler is still forgetting. ``obj`` enters
    the graph once, by design, so Dask's warning about a large graph is
    silenced.

    Parameters
    ----------
    client : distributed.Client
        Where the future lives.
    obj : object
        What the future holds (an array, a fitted transformer).

    Returns
    -------
    future : distributed.Future
        ``obj`` on one worker at first; other workers fetch it when their
        tasks first need it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Sending large graph", category=UserWarning
        )
        return client.submit(
            _return,
            obj,
            key=f"skfewshot-{type(obj).__name__}-{uuid.uuid4().hex}",
            pure=False,
        )
