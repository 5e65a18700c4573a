"""The one rule of open-set scores: which queries are answered right.

A query whose true label is one of the known classes (the fitted
estimator's ``classes_``, i.e. its support set's) is right when predicted
as that label; a query of any other class can never be predicted as its
label, and is right when predicted as none of the known classes (the
head's ``unknown_label``). :func:`open_set_right` is that rule and
:func:`open_set_accuracy` the fraction it counts right;
:func:`~skfewshot.model_selection.open_set_accuracy_score`,
:func:`~skfewshot.model_selection.open_set_scorer`,
:func:`~skfewshot.model_selection.evaluate_episodes` and the ``score`` of
the heads with an ``unknown_label`` all use them.

Private module (numpy and scikit-learn only, no torch): both
:mod:`skfewshot.model_selection` and the heads' base import it.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import (
    _check_sample_weight,
    check_array,
    check_consistent_length,
    column_or_1d,
)

__all__ = ["open_set_accuracy", "open_set_right"]


def open_set_right(y_true, y_pred, classes):
    """``(right, known)``: boolean arrays of the open-set verdict per query.

    ``known`` marks the queries whose true label is one of ``classes``;
    such a query is right when predicted as its label, any other when
    predicted as none of ``classes``. ``y_true`` and ``y_pred`` are 1-D
    arrays of one length (unchecked).

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot._open_set import open_set_right
    >>> right, known = open_set_right(
    ...     np.array([0, 1, 7, 8]), np.array([0, 0, -1, 1]), np.array([0, 1]))
    >>> right.tolist(), known.tolist()
    ([True, False, True, False], [True, True, False, False])
    """
    known = np.isin(y_true, classes)
    right = np.where(known, y_pred == y_true, ~np.isin(y_pred, classes))
    return right, known


def open_set_accuracy(y_true, y_pred, classes, sample_weight=None):
    """The (weighted) fraction of queries :func:`open_set_right` counts right.

    ``y_true`` and ``y_pred`` are validated as 1-D labels
    (:func:`~sklearn.utils.check_array`, any dtype; a column vector is
    raveled with a ``DataConversionWarning``, as scikit-learn's metrics do)
    of one length, that of ``sample_weight`` too when given: a ValueError
    otherwise, or when they are empty, or when ``sample_weight`` holds a
    NaN or sums to zero. With no unknown query (every ``y_true`` in ``classes``) this
    is :func:`~sklearn.metrics.accuracy_score`.

    Examples
    --------
    >>> from skfewshot._open_set import open_set_accuracy
    >>> open_set_accuracy([0, 1, 7, 8], [0, 0, -1, 1], classes=[0, 1])
    0.5
    >>> open_set_accuracy([0, 1, 7, 8], [0, 0, -1, 1], classes=[0, 1],
    ...                   sample_weight=[3, 1, 3, 1])
    0.75
    """
    y_true, y_pred = (
        column_or_1d(
            check_array(y, input_name=name, ensure_2d=False, dtype=None), warn=True
        )
        for y, name in ((y_true, "y_true"), (y_pred, "y_pred"))
    )
    check_consistent_length(y_true, y_pred, sample_weight)
    right, _ = open_set_right(y_true, y_pred, np.asarray(classes))
    # scikit-learn's weighted mean, with its checks of sample_weight (NaN,
    # all zero), as accuracy_score applies them
    return float(_average(right, sample_weight))


def _average(right, sample_weight):
    """Mean of ``right``, weighted by ``sample_weight`` checked as scikit-learn does."""
    if sample_weight is None:
        return np.mean(right)
    weights = _check_sample_weight(sample_weight, right, dtype=np.float64)
    if not weights.sum():
        raise ValueError("sample_weight sums to zero: the weighted mean is undefined.")
    return np.average(right, weights=weights)
