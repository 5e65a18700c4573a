"""Prototype classifier: each class is the mean of its support features."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from skfewshot._heads import (
    _class_means,
    _cosine_logits,
    _LogitClassifierMixin,
    _validate_support,
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
        :meth:`predict_proba`, never :meth:`predict`.

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
    Rows with ``y == -1`` are unlabelled (scikit-learn's semi-supervised
    convention): they belong to no prototype, and they count in ``mean_``
    only, because centring needs no labels. Numeric ``y`` therefore cannot use
    ``-1`` as a class label; string labels are never treated as unlabelled.

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
    """

    _parameter_constraints: dict = {
        "metric": [StrOptions({"cosine", "euclidean", "dot"})],
        "center": ["boolean"],
        "scale": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, *, metric="cosine", center=False, scale=10.0):
        self.metric = metric
        self.center = center
        self.scale = scale

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Compute the class prototypes from the support set.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Support features.
        y : array-like of shape (n_samples,)
            Support labels; ``-1`` marks an unlabelled row.
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
            self.mean_ = np.average(X, axis=0, weights=sample_weight).astype(X.dtype)
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
        if self.metric == "dot":
            return X @ M.T
        sq_dist = (
            np.einsum("ij,ij->i", X, X)[:, None]
            - 2 * (X @ M.T)
            + np.einsum("ij,ij->i", M, M)[None, :]
        )
        return -np.maximum(sq_dist, 0)
