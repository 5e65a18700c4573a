"""Base machinery of the few-shot classifiers (prototype and fine-tuned cosine).

Private module, named as scikit-learn names shared estimator code: input
validation of the support and query sets, label handling (every label is a
class unless the head's ``unlabelled_label`` marks unlabelled rows), weighted
class means, scale-safe L2 normalisation, cosine logits, and a mixin that
derives ``predict`` / ``predict_proba`` / ``predict_log_proba`` /
``decision_function`` from one ``_logits`` method, so both classifiers follow
the same conventions.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import scipy.sparse
from numpy.typing import ArrayLike
from scipy.special import log_softmax, softmax
from sklearn.utils.extmath import row_norms
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

#: Feature dtypes the heads accept: float32 stays float32, the rest -> float64.
_FLOAT_DTYPES = [np.float64, np.float32]

#: ``_parameter_constraints`` entry of the heads' ``unlabelled_label``.
_UNLABELLED_LABEL_CONSTRAINT = [None, Integral, str]


def _unlabelled_mask(y, unlabelled_label):
    """Boolean mask of the rows of ``y`` equal to ``unlabelled_label``.

    ``None`` when ``unlabelled_label`` is None (every row is labelled). A
    string never matches a numeric ``y`` and a number never matches a string
    ``y``; object arrays are compared element by element, as in
    :class:`~sklearn.semi_supervised.SelfTrainingClassifier`.
    """
    if unlabelled_label is None:
        return None
    is_text = isinstance(unlabelled_label, str)
    if y.dtype.kind in "USV" and not is_text:
        return np.zeros(y.shape[0], dtype=bool)
    if y.dtype.kind in "biuf" and is_text:
        return np.zeros(y.shape[0], dtype=bool)
    return np.asarray(y == unlabelled_label, dtype=bool)


def _encode_labels(y, unlabelled_label=None):
    """Classes and integer codes of ``y``; unlabelled rows get code ``-1``.

    Parameters
    ----------
    y : ndarray of shape (n_samples,)
        Targets.
    unlabelled_label : int, str or None, default=None
        Label of the rows that carry no class; None makes every label a class.

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
    unlabelled = _unlabelled_mask(y, unlabelled_label)
    n_unlabelled = 0 if unlabelled is None else int(unlabelled.sum())
    if n_unlabelled == y.shape[0]:
        raise ValueError(
            f"All {y.shape[0]} labels are {unlabelled_label!r} (unlabelled_label="
            f"{unlabelled_label!r} marks unlabelled rows); fit needs labelled rows "
            "of at least 2 classes."
        )
    y_labelled = y if n_unlabelled == 0 else y[~unlabelled]
    check_classification_targets(y_labelled)
    classes, codes_labelled = np.unique(y_labelled, return_inverse=True)
    if classes.shape[0] < 2:
        note = (
            f" ({n_unlabelled} rows with y == {unlabelled_label!r} are unlabelled "
            "and carry no class)"
            if n_unlabelled
            else ""
        )
        raise ValueError(
            "A few-shot classifier needs at least 2 classes in the labelled rows; "
            f"got 1 class: {classes.tolist()[0]!r}{note}."
        )
    if n_unlabelled == 0:
        return classes, codes_labelled.astype(np.intp, copy=False)
    codes = np.full(y.shape[0], -1, dtype=np.intp)
    codes[~unlabelled] = codes_labelled
    return classes, codes


def _validate_support(estimator, X, y, sample_weight):
    """Validate the support set that a head's ``fit`` receives.

    ``X`` and ``y`` go through ``validate_data`` (which records
    ``n_features_in_``), the weights through ``_check_sample_weight`` (finite,
    non-negative, float64 whatever the dtype of ``X``, so that huge weights do
    not overflow float32), the labels through :func:`_encode_labels` with the
    estimator's ``unlabelled_label``.

    Returns
    -------
    X, classes, codes, sample_weight
        The validated features, the classes, the per-row codes (``-1`` for
        unlabelled rows) and the row weights.
    """
    X, y = validate_data(estimator, X, y, dtype=_FLOAT_DTYPES)
    sample_weight = _check_sample_weight(
        sample_weight, X, dtype=np.float64, ensure_non_negative=True
    )
    classes, codes = _encode_labels(y, estimator.unlabelled_label)
    return X, classes, codes, sample_weight


def _rescaled_weights(sample_weight):
    """``sample_weight`` divided by its largest entry (float64, max 1, or zeros).

    Sums of the result stay below the number of rows, so weights as large as
    float64 allows (``1e300``) neither overflow nor change any weighted mean.
    """
    peak = sample_weight.max(initial=0.0)
    return sample_weight / peak if peak > 0 else sample_weight


def _class_means(X, codes, classes, sample_weight):
    """Weighted mean of the rows of each class (unlabelled rows ignored).

    Each mean is a convex combination of rows (weights normalised per class
    first), so it cannot overflow whatever the scale of ``X`` or of the
    weights, and it is computed as one sparse (classes x rows) matrix product:
    the extra memory is a few arrays of one entry per row, never a dense
    classes x rows matrix or a copy of ``X``.

    Returns an array of shape (n_classes, n_features) in the dtype of ``X``.
    Raises ``ValueError`` naming a class whose rows all have zero weight.
    """
    n_classes = classes.shape[0]
    weight = _rescaled_weights(sample_weight)
    rows = np.flatnonzero(codes >= 0)
    codes, weight = codes[rows], weight[rows]
    totals = np.bincount(codes, weights=weight, minlength=n_classes)
    empty = totals <= 0
    if empty.any():
        raise ValueError(
            f"The rows of class {classes[empty].tolist()[0]!r} all have zero "
            "sample_weight, so the mean (prototype) of that class is undefined."
        )
    coefficients = (weight / totals[codes]).astype(X.dtype, copy=False)
    # Row c of the averaging matrix holds the coefficients of class c's rows.
    order = np.argsort(codes, kind="stable")
    indptr = np.zeros(n_classes + 1, dtype=np.intp)
    np.cumsum(np.bincount(codes, minlength=n_classes), out=indptr[1:])
    averaging = scipy.sparse.csr_array(
        (coefficients[order], rows[order], indptr), shape=(n_classes, X.shape[0])
    )
    return np.asarray(averaging @ np.ascontiguousarray(X))


def _weighted_mean(X, sample_weight):
    """Weighted mean of all rows of ``X`` (in its dtype), without copying ``X``."""
    weight = _rescaled_weights(sample_weight)
    return (weight / weight.sum()).astype(X.dtype, copy=False) @ X


def _l2_normalize(A, *, copy=True) -> np.ndarray:
    """Rows of ``A`` scaled to unit Euclidean norm; all-zero rows stay zero.

    A row whose squared norm would overflow (float32 rows around 1e20) or
    lose precision to underflow (rows around 1e-30) is first multiplied by the
    power of two that brings its largest absolute entry into [0.5, 1), which
    is exact in floating point; so the result does not depend on the scale of
    the rows, and other rows cost no more than a plain normalisation.
    ``copy=False`` normalises a float array in place.

    Not :func:`sklearn.preprocessing.normalize`: on float32 rows it turns
    ``[3e20, 4e20]`` into zeros (the squared norm overflows) and leaves
    ``[3e-10, 4e-10]`` unnormalised (norms below ``10 * eps`` count as zero);
    its squared row norms, :func:`sklearn.utils.extmath.row_norms`, are used.
    """
    dtype = np.result_type(A, np.float32)
    A = np.array(A, dtype=dtype) if copy else np.asarray(A, dtype=dtype)
    if A.size == 0:
        return A
    squares = row_norms(A, squared=True)
    info = np.finfo(dtype)
    # Below this sum, squares lost to underflow could matter at machine epsilon.
    accurate = (squares >= A.shape[1] * float(info.tiny / info.eps)) & (
        squares <= float(info.max)
    )
    if not accurate.all():
        rows = np.flatnonzero(~accurate)
        block = A[rows]
        peak = np.maximum(block.max(axis=1), -block.min(axis=1))  # no |A| copy
        np.ldexp(block, -np.frexp(peak)[1][:, None], out=block)
        A[rows] = block
        squares[rows] = row_norms(block, squared=True)
    norms = np.sqrt(squares)
    A /= np.where(norms > 0, norms, 1)[:, None]
    return A


def _scaled(cosines, scale):
    """``scale * cosines`` without overflow, in place when the dtype allows.

    A scale that could overflow the dtype of ``cosines`` (float32 beyond
    about 1.7e38) multiplies float64 cosines clipped to [-1, 1] instead, so
    every finite scale gives finite logits.
    """
    if 2 * abs(scale) > float(np.finfo(cosines.dtype).max):
        cosines = np.clip(cosines, -1.0, 1.0, dtype=np.float64)
    cosines *= scale
    return cosines


def _cosine_logits(X, M, scale):
    """``scale * cos(x_i, m_c)``: an (n_samples, n_classes) array."""
    return _scaled(_l2_normalize(X) @ _l2_normalize(M).T, scale)


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

    def decision_function(self, X: ArrayLike) -> np.ndarray:
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

    def predict(self, X: ArrayLike) -> np.ndarray:
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

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
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

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
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
