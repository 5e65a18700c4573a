"""Prototype classifier: each class is the mean of its support features."""

from __future__ import annotations

from numbers import Real

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import row_norms

from skfewshot._base import (
    _UNLABELLED_LABEL_CONSTRAINT,
    _class_means,
    _cosine_logits,
    _LogitClassifierMixin,
    _validate_support,
    _weighted_mean,
)

__all__ = ["PrototypeClassifier"]


class PrototypeClassifier(_LogitClassifierMixin, ClassifierMixin, BaseEstimator):
    """Few-shot classifier that scores queries against class prototypes.

    ``fit`` takes the support set: the prototype of a class is the (weighted)
    mean of its support features, as in prototypical networks [1]_. A query is
    scored against every prototype, and :meth:`predict_proba` is the softmax
    of those scores (the logits).

    Parameters
    ----------
    metric : {"cosine", "euclidean", "dot"}, default="cosine"
        How a query ``q`` is scored against the prototype matrix ``M``:

        - ``"cosine"``: prototypes and queries are L2-normalised and
          ``logits = scale * M q``, i.e. ``scale`` times the cosine similarity.
        - ``"euclidean"``: ``logits = -||q - m_c||^2``, so :meth:`predict`
          agrees with :class:`~sklearn.neighbors.NearestCentroid`.
        - ``"dot"``: ``logits = M q`` on the raw (or centred) features.

    center : bool, default=False
        If True, subtract the mean of the support features ``mean_`` from the
        prototypes and the queries before scoring. With ``metric="cosine"`` this
        is SimpleShot's CL2N (centring, then L2 normalisation) [2]_. Euclidean
        distances do not change under centring.

    scale : float, default=10.0
        Inverse temperature of the cosine logits (used by ``metric="cosine"``
        only). Cosine similarities lie in [-1, 1]; ``scale=10`` turns them into
        logits whose softmax is neither flat nor one-hot, the value commonly
        used by cosine classifiers in few-shot learning. It changes
        :meth:`predict_proba`, never :meth:`predict`; any finite value gives
        finite probabilities.

    unlabelled_label : int, str or None, default=None
        Label that marks the unlabelled rows of ``y`` in :meth:`fit`. With
        None every label, ``-1`` included, is a class. Set it to ``-1`` for
        scikit-learn's semi-supervised convention (or to any label that
        cannot be a class): those rows belong to no prototype and count in
        ``mean_`` only, because centring needs no labels.

    Attributes
    ----------
    prototypes_ : ndarray of shape (n_classes, n_features)
        Weighted mean of the support features of each class, before centring
        or normalisation.

    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted as :func:`numpy.unique` sorts them.

    mean_ : ndarray of shape (n_features,)
        Weighted mean of all rows given to :meth:`fit`, labelled or not.
        Only set when ``center=True``.

    n_features_in_ : int
        Number of features seen during :meth:`fit`.

    feature_names_in_ : ndarray of shape (n_features,)
        Names of features seen during :meth:`fit`. Defined only when ``X`` has
        feature names that are all strings.

    See Also
    --------
    FineTunedCosineClassifier : Cosine classifier initialised with these
        prototypes and fine-tuned on the support set.
    sklearn.neighbors.NearestCentroid : The Euclidean nearest-mean classifier.

    Notes
    -----
    Cosine scores do not depend on the scale of the features: each row is
    normalised with a power-of-two rescaling first, so float32 features
    around ``1e20`` (whose squared norm overflows float32) or ``1e-30`` score
    as the unscaled ones do. Euclidean and dot scores do depend on it; when
    they overflow the features' dtype they are computed in float64, and
    features too large even for that raise a ``ValueError``.

    :meth:`fit` needs memory for the prototypes and a few arrays of one entry
    per row, never a classes x rows matrix or a copy of ``X``.

    With two classes, :meth:`decision_function` returns the 1-D difference of
    the logits ``logits[:, 1] - logits[:, 0]``, as scikit-learn's binary
    classifiers do; otherwise it returns the (n_samples, n_classes) logits.

    References
    ----------
    .. [1] J. Snell, K. Swersky and R. Zemel, "Prototypical Networks for
       Few-shot Learning", NeurIPS 2017.
    .. [2] Y. Wang, W.-L. Chao, K. Q. Weinberger and L. van der Maaten,
       "SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot
       Learning", arXiv:1911.04623, 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot import PrototypeClassifier
    >>> X = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    >>> y = np.array(["cat", "cat", "dog", "dog"])
    >>> clf = PrototypeClassifier().fit(X, y)
    >>> clf.prototypes_
    array([[2., 0.],
           [0., 3.]])
    >>> clf.predict([[5.0, 1.0], [1.0, 5.0]])
    array(['cat', 'dog'], dtype='<U3')
    >>> clf.predict_proba([[1.0, 1.0]]).round(3)
    array([[0.5, 0.5]])

    Every label is a class, ``-1`` included; ``unlabelled_label`` marks rows
    that carry no class:

    >>> PrototypeClassifier().fit(X, [-1, -1, 1, 1]).classes_
    array([-1,  1])
    >>> clf = PrototypeClassifier(unlabelled_label=-1, center=True)
    >>> clf.fit(X, [0, 0, 1, -1]).prototypes_
    array([[2., 0.],
           [0., 2.]])
    >>> clf.mean_
    array([1. , 1.5])
    """

    _parameter_constraints: dict = {
        "metric": [StrOptions({"cosine", "euclidean", "dot"})],
        "center": ["boolean"],
        "scale": [Interval(Real, 0, None, closed="neither")],
        "unlabelled_label": _UNLABELLED_LABEL_CONSTRAINT,
    }

    def __init__(
        self,
        *,
        metric: str = "cosine",
        center: bool = False,
        scale: float = 10.0,
        unlabelled_label: int | str | None = None,
    ) -> None:
        self.metric = metric
        self.center = center
        self.scale = scale
        self.unlabelled_label = unlabelled_label

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> PrototypeClassifier:
        """Compute the class prototypes from the support set.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Support features.
        y : array-like of shape (n_samples,)
            Support labels; rows labelled ``unlabelled_label`` (when it is
            not None) are unlabelled.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights for the class means (and ``mean_``).
            ``None`` gives every row weight one.

        Returns
        -------
        self : PrototypeClassifier
            The fitted classifier.
        """
        X, self.classes_, codes, sample_weight = _validate_support(
            self, X, y, sample_weight
        )
        self.prototypes_ = _class_means(X, codes, self.classes_, sample_weight)
        if self.center:
            self.mean_ = _weighted_mean(X, sample_weight)
        elif hasattr(self, "mean_"):
            del self.mean_
        return self

    def _logits(self, X):
        """Validated ``X`` -> (n_samples, n_classes) logits for ``metric``."""
        X = self._validate_queries(X)
        M = self.prototypes_
        if self.center:
            X = X - self.mean_
            M = M - self.mean_
        if self.metric == "cosine":
            return _cosine_logits(X, M, self.scale)
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            logits = self._scale_dependent_logits(X, M)
        if np.isfinite(logits).all():
            return logits
        if X.dtype != np.float64:  # float32 products of float32 rows always fit
            logits = self._scale_dependent_logits(
                X.astype(np.float64), M.astype(np.float64)
            )
            if np.isfinite(logits).all():
                return logits
        raise ValueError(
            f"The {self.metric!r} logits of these features overflow float64 (the "
            f"largest absolute feature or prototype entry is "
            f"{max(np.abs(X).max(), np.abs(M).max()):.3g}); rescale the features, "
            "or use metric='cosine', which does not depend on their scale."
        )

    def _scale_dependent_logits(self, X, M):
        """Dot or negative squared Euclidean distance logits, in X's dtype."""
        if self.metric == "dot":
            return X @ M.T
        sq_dist = (
            row_norms(X, squared=True)[:, None]
            - 2 * (X @ M.T)
            + row_norms(M, squared=True)[None, :]
        )
        return -np.maximum(sq_dist, 0)
