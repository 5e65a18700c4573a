"""Base machinery of the few-shot classifiers (prototype and fine-tuned cosine).

Private module, named as scikit-learn names shared estimator code: input
validation of the support and query sets, label handling (every label is a
class unless the head's ``unlabelled_label`` marks unlabelled rows), weighted
class means, scale-safe L2 normalisation, cosine logits, and a mixin that
derives ``predict`` / ``predict_proba`` / ``predict_log_proba`` /
``decision_function`` from one ``_logits`` method (and ``score``, the
open-set accuracy with an ``unknown_label``), so both classifiers follow the
same conventions.

Few-shot heads are fitted and queried once per episode, thousands of times, on
small arrays, so the checks here run once per call and take a short path for
the common input (an in-memory float32/float64 ndarray, integer labels): the
short path returns exactly what ``validate_data`` would, and anything else
(data frames, lists, sparse matrices, other dtypes, non-finite values,
feature names) goes through ``validate_data`` itself, so every message and
warning is scikit-learn's.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse
from numpy.typing import ArrayLike
from scipy.special import log_softmax, softmax
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import row_norms
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from ._open_set import open_set_accuracy

#: Feature dtypes the heads accept: float32 stays float32, the rest -> float64.
_FLOAT_DTYPES = [np.float64, np.float32]

#: ``_parameter_constraints`` entry of the heads' ``unlabelled_label``.
_UNLABELLED_LABEL_CONSTRAINT = [None, Integral, str]

#: ``_parameter_constraints`` entries of the heads' open-set options.
_UNKNOWN_LABEL_CONSTRAINT = [None, Integral, str]
_UNKNOWN_THRESHOLD_CONSTRAINT = [  # any real but NaN (which no score is below)
    StrOptions({"auto"}),
    Interval(Real, None, None, closed="both"),
]

#: Class means use a dense (classes x rows) averaging matrix up to this many
#: entries (512 KiB of float64), a sparse one beyond: at episode sizes the
#: sparse matrix costs more to build than the product.
_DENSE_AVERAGING_MAX_ENTRIES = 1 << 16

#: Parameter values that passed ``_parameter_constraints``, per class
#: (bounded: cleared when it reaches ``_VALIDATED_PARAMS_MAX`` entries).
_VALIDATED_PARAMS: set = set()
_VALIDATED_PARAMS_MAX = 1024


def _is_plain_float_matrix(X) -> bool:
    """True when ``check_array(X, dtype=_FLOAT_DTYPES)`` would return ``X`` itself.

    That is: an exact :class:`numpy.ndarray` (no subclass, no data frame, no
    sparse matrix) with two dimensions, at least one row and one column, a
    dtype in ``_FLOAT_DTYPES`` and finite entries. Finiteness is checked as
    scikit-learn checks it first, on the sum; a sum that overflows answers
    False, and ``validate_data`` then checks the entries one by one.
    """
    if not (
        type(X) is np.ndarray
        and X.ndim == 2
        and X.dtype in _FLOAT_DTYPES
        and X.shape[0] > 0
        and X.shape[1] > 0
    ):
        return False
    with np.errstate(over="ignore", invalid="ignore"):  # inf / nan: answer False
        return bool(np.isfinite(X.sum()))


def _validate_X(estimator, X, *, reset):
    """``validate_data(estimator, X, dtype=_FLOAT_DTYPES, reset=reset)``, fast.

    A plain float matrix (:func:`_is_plain_float_matrix`) of an estimator
    without ``feature_names_in_`` (and, when ``reset`` is False, with the
    fitted number of features) is returned as is, with ``n_features_in_``
    set when ``reset``: exactly what ``validate_data`` does for it. Every
    other input goes through ``validate_data``, which raises or warns.
    """
    if (
        not hasattr(estimator, "feature_names_in_")
        and _is_plain_float_matrix(X)
        and (reset or X.shape[1] == getattr(estimator, "n_features_in_", None))
    ):
        if reset:
            estimator.n_features_in_ = X.shape[1]
        return X
    return validate_data(estimator, X, dtype=_FLOAT_DTYPES, reset=reset)


def _is_integer_labels(y, n_samples) -> bool:
    """True for a 1-D integer ndarray of ``n_samples`` labels.

    For those, ``validate_data``'s target checks return the same values, and
    :func:`~sklearn.utils.multiclass.check_classification_targets` finds
    "binary" or "multiclass" targets: it can only warn (see
    :func:`_encode_labels`).
    """
    return (
        type(y) is np.ndarray
        and y.ndim == 1
        and y.dtype.kind in "iu"
        and y.shape[0] == n_samples
    )


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
    integer = _is_integer_labels(y_labelled, y_labelled.shape[0])
    if not integer:
        check_classification_targets(y_labelled)
    classes, codes_labelled = np.unique(y_labelled, return_inverse=True)
    n_labelled = y_labelled.shape[0]
    if integer and n_labelled > 20 and classes.shape[0] > round(0.5 * n_labelled):
        # Integer labels are always classes, but scikit-learn warns that so
        # many distinct labels could be a regression target: let it say so.
        check_classification_targets(y_labelled)
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

    A plain float matrix with integer labels (:func:`_is_plain_float_matrix`,
    :func:`_is_integer_labels`) takes the short path of :func:`_validate_X`,
    which returns what ``validate_data`` returns; everything else goes
    through ``validate_data``.

    Returns
    -------
    X, classes, codes, sample_weight
        The validated features, the classes, the per-row codes (``-1`` for
        unlabelled rows) and the row weights.
    """
    if type(X) is np.ndarray and X.ndim == 2 and _is_integer_labels(y, len(X)):
        X = _validate_X(estimator, X, reset=True)
    else:
        X, y = validate_data(estimator, X, y, dtype=_FLOAT_DTYPES)
    if sample_weight is None:  # what _check_sample_weight returns for None
        sample_weight = np.ones(X.shape[0], dtype=np.float64)
    else:
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
    weights. It is computed as one (classes x rows) averaging matrix times
    ``X``: a dense matrix when it has at most
    ``_DENSE_AVERAGING_MAX_ENTRIES`` entries (512 KiB), a sparse one
    otherwise, so the extra memory is a few arrays of one entry per row and
    never a large dense classes x rows matrix or a copy of ``X``.

    Returns an array of shape (n_classes, n_features) in the dtype of ``X``.
    Raises ``ValueError`` naming a class whose rows all have zero weight.
    """
    n_classes = classes.shape[0]
    weight = _rescaled_weights(sample_weight)
    rows = np.flatnonzero(codes >= 0)
    if rows.shape[0] < codes.shape[0]:
        codes, weight = codes[rows], weight[rows]
    totals = np.bincount(codes, weights=weight, minlength=n_classes)
    empty = totals <= 0
    if empty.any():
        raise ValueError(
            f"The rows of class {classes[empty].tolist()[0]!r} all have zero "
            "sample_weight, so the mean (prototype) of that class is undefined."
        )
    coefficients = (weight / totals[codes]).astype(X.dtype, copy=False)
    if n_classes * X.shape[0] <= _DENSE_AVERAGING_MAX_ENTRIES:
        averaging = np.zeros((n_classes, X.shape[0]), dtype=X.dtype)
        averaging[codes, rows] = coefficients
        return averaging @ X
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


def _accurate_squares(squares, n_features, info):
    """Which squared row norms are exact enough to normalise with.

    False where the sum overflowed (float32 rows around 1e20) or may have
    lost squares to underflow at machine epsilon (rows around 1e-30).
    ``info`` is the ``finfo`` of the rows' dtype: :class:`numpy.finfo` for
    arrays, :class:`torch.finfo` for tensors (``squares`` is either).
    """
    return (squares >= n_features * float(info.tiny / info.eps)) & (
        squares <= float(info.max)
    )


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
    accurate = _accurate_squares(squares, A.shape[1], np.finfo(dtype))
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
    """``scale * cos(x_i, m_c)``: an (n_samples, n_classes) array.

    The rows of ``M`` are normalised; the rows of ``X`` are not copied when
    their squared norms are exact (:func:`_accurate_squares`): the products
    ``X @ M.T`` are divided by the row norms instead. Rows at extreme scales
    are normalised first, as :func:`_l2_normalize` does, so the result does
    not depend on the scale of ``X`` either way.
    """
    M = _l2_normalize(M)
    dtype = np.result_type(X, np.float32)
    squares = row_norms(X, squared=True) if X.size else np.zeros(X.shape[0])
    if X.size and _accurate_squares(squares, X.shape[1], np.finfo(dtype)).all():
        cosines = X @ M.T
        norms = np.sqrt(squares, out=squares)
        cosines /= norms[:, None]
    else:  # extreme scales, or all-zero rows (whose cosines are zero)
        cosines = _l2_normalize(X) @ M.T
    return _scaled(cosines, scale)


class _ValidatedParamsMixin:
    """Validate ``_parameter_constraints`` once per distinct parameter value.

    ``fit`` (through ``_fit_context``) validates the parameters on every
    call; a head is refitted once per episode with the same parameters.
    Whether a value passes its constraints depends on the value and its type
    only, so values (with their types) that passed once are remembered, per
    class, and pass again without the check; unhashable or new values are
    checked as usual, with scikit-learn's error messages.
    """

    def _validate_params(self):
        try:
            key = (type(self),) + tuple(
                (name, type(value), value)
                for name in self._parameter_constraints
                for value in (getattr(self, name),)
            )
            known = key in _VALIDATED_PARAMS
        except TypeError:  # an unhashable parameter value
            key, known = None, False
        if known:
            return
        super()._validate_params()
        if key is not None:
            if len(_VALIDATED_PARAMS) >= _VALIDATED_PARAMS_MAX:
                _VALIDATED_PARAMS.clear()
            _VALIDATED_PARAMS.add(key)


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
        return _validate_X(self, X, reset=False)

    def _fit_open_set(self, X, codes, sample_weight, *, stacklevel):
        """Fitted state of ``unknown_label``: predict's labels and the threshold.

        ``X``, ``codes`` and ``sample_weight`` are the validated support (as
        :func:`_validate_support` returns them). Sets ``_predict_labels``
        (``classes_`` then ``unknown_label``, or None when it is None) and,
        with an ``unknown_label``, ``unknown_threshold_``: the float given, or
        the ``"auto"`` rule (:func:`_auto_threshold`) on the rows as
        :meth:`score_samples` sees them (``_novelty_space``). ``stacklevel``
        of the one-shot warning: that of the caller of the head's ``fit``
        seen from this method (3 plus the decorators around ``fit``).
        """
        self._predict_labels = _open_set_labels(self, self.classes_)
        if self._predict_labels is None:
            if hasattr(self, "unknown_threshold_"):
                del self.unknown_threshold_
            return
        if isinstance(self.unknown_threshold, str):  # "auto"
            self.unknown_threshold_ = _auto_threshold(
                self._novelty_space(X),
                codes,
                self.classes_.shape[0],
                sample_weight,
                estimator_name=type(self).__name__,
                stacklevel=stacklevel + 1,
            )
        else:
            self.unknown_threshold_ = float(self.unknown_threshold)

    def _novelty_space(self, X):
        """The rows as the novelty score compares them (centred by a head
        that centres); the identity here."""
        return X

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Novelty score of each row of ``X``: higher is more like a support class.

        The cosine similarity between the row and the nearest class direction
        (see the class docstring for which directions), in [-1, 1]; each row
        is scored on its own, so the score does not depend on the other rows
        of ``X`` (even with ``transductive=True``). With an
        ``unknown_label``, :meth:`predict` answers it for the rows whose
        score is below ``unknown_threshold_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query features.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Largest cosine to a class direction.
        """
        X = self._novelty_space(self._validate_queries(X))
        return _cosine_logits(X, self._novelty_directions(), 1.0).max(axis=1)

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

        With an ``unknown_label``, the rows whose :meth:`score_samples` is
        below ``unknown_threshold_`` are predicted ``unknown_label`` instead.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query features.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels taken from ``classes_`` (and ``unknown_label``).
        """
        codes = np.argmax(self._logits(X), axis=1)
        labels = getattr(self, "_predict_labels", None)
        if labels is None:
            return self.classes_[codes]
        codes[self.score_samples(X) < self.unknown_threshold_] = labels.shape[0] - 1
        return labels[codes]

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

    def score(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> float:
        """Accuracy of :meth:`predict` on ``X``: the open-set accuracy with an
        ``unknown_label``.

        Without an ``unknown_label``, the accuracy (scikit-learn's
        ``ClassifierMixin.score``). With one, ``y`` may hold labels that are
        not in ``classes_``, the queries of classes outside the support: such
        a row is right when predicted ``unknown_label``, any other when
        predicted as its label, as
        :func:`~skfewshot.model_selection.open_set_accuracy_score` counts.
        So scikit-learn's default scoring (this method, or that of a
        pipeline ending in the head) scores the folds of
        ``EpisodicSplit(..., n_unknown_way=...)`` as
        :func:`~skfewshot.model_selection.evaluate_episodes` scores its
        open-set episodes, and ``cross_val_score`` or ``GridSearchCV`` tune
        ``unknown_threshold`` without a ``scoring``. With no row outside
        ``classes_`` both are the accuracy.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query features.

        y : array-like of shape (n_samples,)
            Their true labels; with an ``unknown_label``, of known and
            unknown classes.

        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each row in the mean.

        Returns
        -------
        score : float
            The fraction of rows predicted right, in [0, 1].

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.metrics import accuracy_score
        >>> from skfewshot import PrototypeClassifier
        >>> head = PrototypeClassifier(unknown_label=-1, unknown_threshold=0.9)
        >>> head = head.fit([[1.0, 0.0], [0.0, 1.0]], [0, 1])
        >>> X = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 0.1]])
        >>> y = np.array([0, 1, 7, 7])  # 7: no class of the support
        >>> head.predict(X)
        array([ 0,  1, -1,  0])
        >>> head.score(X, y)  # the unknown [-1, 0] is rejected: right
        0.75
        >>> accuracy_score(y, head.predict(X))  # every unknown row wrong
        0.5
        """
        if getattr(self, "_predict_labels", None) is None:  # as predict
            return super().score(X, y, sample_weight=sample_weight)
        return open_set_accuracy(y, self.predict(X), self.classes_, sample_weight)


#: The ``auto`` threshold: this quantile of the support rows' leave-one-out
#: novelty scores (see :func:`_auto_threshold`). Checked on validation
#: classes (docs/benchmarks_open_set.rst: held-out Omniglot alphabets, 5-way
#: 5-shot + 5 unknown): the 1-30% quantiles and rules using the
#: leave-one-class-out scores were not clearly better in open-set accuracy.
_AUTO_QUANTILE = 0.05

#: With one row per class, the ``auto`` threshold is this quantile of the
#: scores of the support rows against the other classes (see
#: :func:`_auto_threshold`); the best open-set accuracy of the quantiles
#: checked on the same validation classes (1 shot).
_ONE_SHOT_QUANTILE = 1.0


def _is_text_labels(classes) -> bool:
    """True for string classes (a str/bytes array, or an object array of str)."""
    if classes.dtype.kind in "US":
        return True
    return classes.dtype.kind == "O" and all(isinstance(c, str) for c in classes)


def _open_set_labels(estimator, classes):
    """``classes`` followed by the head's ``unknown_label``: predict's labels.

    None when ``unknown_label`` is None. The array's dtype holds both (string
    classes and a str label: a str array wide enough for both, or object for
    object classes; numeric classes and an int label: the classes' dtype,
    widened only when the label does not fit it, e.g. ``-1`` with unsigned
    classes, and an object array when no dtype of their kind holds both
    exactly (:func:`_holds_exactly`: ``-1`` with ``uint64`` classes, whose
    common type float64 would merge classes above 2**53, or with bool
    classes); a str label with numeric classes, or an int label with string
    classes: an object array).

    Raises
    ------
    ValueError
        If ``unknown_label`` is one of the classes, or equals
        ``unlabelled_label``.
    """
    unknown = estimator.unknown_label
    if unknown is None:
        return None
    unlabelled = getattr(estimator, "unlabelled_label", None)
    is_text = isinstance(unknown, str)
    if (
        unlabelled is not None
        and is_text == isinstance(unlabelled, str)
        and unknown == unlabelled
    ):
        raise ValueError(
            f"unknown_label={unknown!r} equals unlabelled_label={unlabelled!r}: "
            "one marks the unlabelled rows of fit, the other is predict's answer "
            "for a query of no support class; give them different values."
        )
    if is_text == _is_text_labels(classes) and np.any(classes == unknown):
        raise ValueError(
            f"unknown_label={unknown!r} is one of the classes {classes.tolist()!r}; "
            "predict could not tell an unknown query from that class: choose a "
            "label that no support row has."
        )
    if is_text != _is_text_labels(classes):  # a str among numbers, or the reverse
        dtype = np.dtype(object)
    elif is_text:
        dtype = np.result_type(classes, np.array(unknown).dtype)
    else:
        # the common dtype, else int64 (uint64 or bool classes beside -1, for
        # which numpy's is float64 or int8), else object: exact labels first,
        # then a numeric array, which scikit-learn's metrics take (not object)
        candidates = (np.result_type(classes, np.min_scalar_type(unknown)), np.int64)
        dtype = next(
            (np.dtype(d) for d in candidates if _holds_exactly(d, classes, unknown)),
            np.dtype(object),
        )
    labels = np.empty(classes.shape[0] + 1, dtype=dtype)
    labels[:-1] = classes
    labels[-1] = unknown
    return labels


def _holds_exactly(dtype, classes, unknown):
    """Whether ``dtype`` holds the numeric ``classes`` and the int ``unknown``.

    True when ``dtype`` keeps the classes' kind (or turns unsigned integers
    or bools into signed integers) and every class and ``unknown`` come back
    unchanged from it: False, for instance, for the float64 that
    :func:`numpy.result_type` makes of ``uint64`` classes and ``-1``
    (``2**60 + 1`` and ``2**60 + 3`` both become ``2**60``).

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot._base import _holds_exactly
    >>> _holds_exactly(np.dtype(np.int16), np.array([0, 255], dtype=np.uint8), -1)
    True
    >>> big = np.array([2**60 + 1, 2**60 + 3], dtype=np.uint64)
    >>> _holds_exactly(np.result_type(big, np.int8), big, -1)
    False
    """
    kind = classes.dtype.kind
    dtype = np.dtype(dtype)
    if not (dtype.kind == kind or (kind in "ub" and dtype.kind == "i")):
        return False
    if dtype.kind in "iu":  # a cast to an integer wraps around: check the range
        info = np.iinfo(dtype)
        return all(info.min <= int(v) <= info.max for v in (*classes[[0, -1]], unknown))
    with warnings.catch_warnings():  # a lossy cast is what is checked
        warnings.simplefilter("ignore")
        stored = np.array([unknown], dtype=dtype)
        same = np.array_equal(classes.astype(dtype).astype(classes.dtype), classes)
    # compared as Python numbers: numpy would round the int to the float first
    return same and stored[0].item() == unknown


def _leave_one_out_scores(X, codes, n_classes, sample_weight):
    """Novelty scores of the support rows, each computed without itself.

    ``X`` are the (centred, if the head centres) support rows, ``codes``
    their class indices (``-1`` for unlabelled rows, which are skipped).
    For each labelled row ``i`` with a positive weight, of class ``c``:

    - ``unknown[i]``: its largest cosine to the prototypes of the *other*
      classes, the score it would have if its class were not in the support
      (leave one class out);
    - ``known[i]``: its largest cosine to the prototypes, the prototype of
      ``c`` computed without row ``i`` (leave one row out); only for rows
      whose class has another row of positive weight.

    Returns ``(known, unknown)``, 1-D float arrays.
    """
    rows = np.flatnonzero((codes >= 0) & (sample_weight > 0))
    X, codes = X[rows], codes[rows]
    weight = _rescaled_weights(sample_weight[rows])
    means = _class_means(X, codes, np.arange(n_classes), weight)
    cosines = _cosine_logits(X, means, 1.0)
    own = np.arange(rows.shape[0]), codes
    others = cosines.copy()
    others[own] = -np.inf
    unknown = others.max(axis=1)
    counts = np.bincount(codes, minlength=n_classes)
    has_other = counts[codes] >= 2
    totals = np.bincount(codes, weights=weight, minlength=n_classes)
    # sum of the class's other rows = total * mean - w_i x_i (its direction
    # is the leave-one-out prototype's)
    rest = totals[codes, None] * means[codes] - weight[:, None] * X
    rest = rest[has_other]
    loo = np.einsum("ij,ij->i", _l2_normalize(X[has_other]), _l2_normalize(rest))
    known = np.maximum(unknown[has_other], loo)
    return known, unknown


def _auto_threshold(X, codes, n_classes, sample_weight, *, estimator_name, stacklevel):
    """The ``unknown_threshold="auto"`` rule, from the support set alone.

    The ``_AUTO_QUANTILE`` quantile of the rows' leave-one-out scores
    (``known`` of :func:`_leave_one_out_scores`): about that fraction of
    queries of the support classes (scored, pessimistically, against a
    prototype of one row fewer) fall below it. When no class has two rows
    (one shot per class) there is nothing to leave out: the threshold is
    then the ``_ONE_SHOT_QUANTILE`` quantile (the largest) of the rows'
    scores against the other classes' prototypes (each row standing for a
    query of a class outside the support), and a warning says it is a guess.
    """
    known, unknown = _leave_one_out_scores(X, codes, n_classes, sample_weight)
    if known.size:
        return float(np.quantile(known, _AUTO_QUANTILE))
    warnings.warn(
        f"{estimator_name}(unknown_threshold='auto') was fitted with one row per "
        "class, so no support row can be left out of its own class: the "
        "threshold is the largest cosine between a support row and another "
        "class's prototype, a guess. Give a float unknown_threshold (e.g. "
        "chosen on open-set validation episodes) or two or more rows per class.",
        UserWarning,
        stacklevel=stacklevel,
    )
    return float(np.quantile(unknown, _ONE_SHOT_QUANTILE))
