"""Pieces shared by the few-shot heads (prototype and fine-tuned cosine).

Private module: input validation of the support and query sets, label
handling with scikit-learn's ``y == -1`` convention for unlabelled rows,
weighted class means, L2 normalisation, cosine logits, and a mixin that derives
``predict`` / ``predict_proba`` / ``predict_log_proba`` / ``decision_function``
from one ``_logits`` method, so both classifiers follow the same conventions.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

#: Label that marks an unlabelled row (scikit-learn's semi-supervised convention).
UNLABELLED = -1

#: Feature dtypes the heads accept: float32 stays float32, the rest -> float64.
_FLOAT_DTYPES = [np.float64, np.float32]


def _unlabelled_mask(y) -> np.ndarray:
    """Boolean mask of the rows whose label is ``-1`` (unlabelled).

    String arrays cannot hold the integer ``-1``, so every row of a string ``y``
    is labelled (the string ``"-1"`` is an ordinary class). Object arrays are
    compared element by element, as in
    :class:`~sklearn.semi_supervised.SelfTrainingClassifier`.
    """
    y = np.asarray(y)
    if y.dtype.kind in "USV":
        return np.zeros(y.shape[0], dtype=bool)
    return np.asarray(y == UNLABELLED, dtype=bool)


def _encode_labels(y):
    """Classes and integer codes of ``y``; unlabelled rows get code ``-1``.

    Parameters
    ----------
    y : ndarray of shape (n_samples,)
        Targets, ``-1`` marking unlabelled rows.

    Returns
    -------
    classes : ndarray of shape (n_classes,)
        Sorted distinct labels of the labelled rows (as ``np.unique`` sorts them).
    codes : ndarray of int of shape (n_samples,)
        Index into ``classes`` for labelled rows, ``-1`` for unlabelled ones.

    Raises
    ------
    ValueError
        If every row is unlabelled, or the labelled rows hold fewer than two
        classes, or the targets are continuous.
    """
    unlabelled = _unlabelled_mask(y)
    if unlabelled.all():
        raise ValueError(
            f"All {y.shape[0]} labels are -1 (unlabelled); fit needs labelled rows "
            "of at least 2 classes."
        )
    y_labelled = y[~unlabelled]
    check_classification_targets(y_labelled)
    classes, codes_labelled = np.unique(y_labelled, return_inverse=True)
    if classes.shape[0] < 2:
        note = (
            f" ({unlabelled.sum()} rows with y == -1 are unlabelled and carry no class)"
            if unlabelled.any()
            else ""
        )
        raise ValueError(
            "A few-shot classifier needs at least 2 classes in the labelled rows; "
            f"got 1 class: {classes.tolist()[0]!r}{note}."
        )
    codes = np.full(y.shape[0], UNLABELLED, dtype=np.intp)
    codes[~unlabelled] = codes_labelled
    return classes, codes


def _validate_support(estimator, X, y, sample_weight, weight_dtype=None):
    """Validate the support set that a head's ``fit`` receives.

    ``X`` and ``y`` go through ``validate_data`` (which records
    ``n_features_in_``), the weights through ``_check_sample_weight`` (non-
    negative, in ``weight_dtype``, or the dtype of ``X`` when None), the labels
    through :func:`_encode_labels`.

    Returns
    -------
    X, classes, codes, sample_weight
        The validated features, the classes, the per-row codes (``-1`` for
        unlabelled rows) and the row weights.
    """
    X, y = validate_data(estimator, X, y, dtype=_FLOAT_DTYPES)
    sample_weight = _check_sample_weight(
        sample_weight,
        X,
        dtype=X.dtype if weight_dtype is None else weight_dtype,
        ensure_non_negative=True,
    )
    classes, codes = _encode_labels(y)
    return X, classes, codes, sample_weight


def _class_means(X, codes, classes, sample_weight):
    """Weighted mean of the rows of each class (unlabelled rows ignored).

    Returns an array of shape (n_classes, n_features) in the dtype of ``X``.
    Raises ``ValueError`` naming a class whose rows all have zero weight.
    """
    n_classes = classes.shape[0]
    labelled = codes >= 0
    onehot = np.zeros((n_classes, X.shape[0]), dtype=X.dtype)
    onehot[codes[labelled], np.flatnonzero(labelled)] = sample_weight[labelled]
    totals = onehot.sum(axis=1)
    empty = totals <= 0
    if empty.any():
        raise ValueError(
            f"The rows of class {classes[empty].tolist()[0]!r} all have zero "
            "sample_weight, so the mean (prototype) of that class is undefined."
        )
    return (onehot @ X) / totals[:, None]


def _l2_normalize(A) -> np.ndarray:
    """Rows of ``A`` scaled to unit Euclidean norm; all-zero rows stay zero."""
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    return A / np.where(norms > 0, norms, 1)


def _cosine_logits(X, M, scale):
    """``scale * cos(x_i, m_c)``: an (n_samples, n_classes) array."""
    return scale * (_l2_normalize(X) @ _l2_normalize(M).T)


class _LogitClassifierMixin:
    """Classifier methods derived from ``self._logits(X)``.

    ``_logits`` validates ``X`` and returns an (n_samples, n_classes) array; the
    probabilities are its softmax. ``decision_function`` returns the logits,
    except with two classes, where it returns the 1-D logit difference
    ``logits[:, 1] - logits[:, 0]`` as scikit-learn's binary classifiers do
    (positive means ``classes_[1]``, and ``predict_proba[:, 1]`` is its
    sigmoid).
    """

    def _validate_queries(self, X):
        """Check the head is fitted; ``X`` validated against the fitted shape."""
        check_is_fitted(self)
        return validate_data(self, X, dtype=_FLOAT_DTYPES, reset=False)

    def decision_function(self, X):
        """Class scores (logits) of the rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query features.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
            Logits; with two classes, the 1-D difference
            ``logits[:, 1] - logits[:, 0]`` (positive favours ``classes_[1]``).
        """
        logits = self._logits(X)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict(self, X):
        """Predicted class of each row of ``X`` (the largest logit).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query features.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels taken from ``classes_``.
        """
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]

    def predict_proba(self, X):
        """Class probabilities: the softmax of the logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query features.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``; rows sum to one.
        """
        return softmax(self._logits(X), axis=1)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`, computed stably (log-softmax).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query features.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        return log_softmax(self._logits(X), axis=1)


def _expected_failed_checks(estimator) -> dict:
    """Estimator checks that cannot pass by design, with the reason.

    For ``parametrize_with_checks(..., expected_failed_checks=...)``: the heads
    follow scikit-learn's semi-supervised convention, so the integer label -1
    means "unlabelled" and cannot be a class.
    """
    return {
        "check_classifiers_classes": (
            "y == -1 marks unlabelled rows (scikit-learn's semi-supervised "
            "convention), so the binary labels [-1, 1] this check uses leave a "
            "single class; scikit-learn exempts its own semi-supervised "
            "estimators from these labels the same way."
        ),
    }
