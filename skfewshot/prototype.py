"""Prototype classifier: each class is the mean of its support features."""

from __future__ import annotations

from numbers import Real

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import row_norms

from skfewshot._base import (
    _UNKNOWN_LABEL_CONSTRAINT,
    _UNKNOWN_THRESHOLD_CONSTRAINT,
    _UNLABELLED_LABEL_CONSTRAINT,
    _class_means,
    _cosine_logits,
    _LogitClassifierMixin,
    _validate_support,
    _ValidatedParamsMixin,
    _weighted_mean,
)
from skfewshot._batched import prototype_batch_predictor

__all__ = ["PrototypeClassifier"]


class PrototypeClassifier(
    _ValidatedParamsMixin, _LogitClassifierMixin, ClassifierMixin, BaseEstimator
):
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

    transductive : bool, default=False
        If True, :meth:`predict` and the other prediction methods first
        rectify the prototypes with the rows of ``X`` they are given, as
        BD-CSPN [3]_ does, without changing the fitted state:

        1. the queries are shifted by the difference between the mean of the
           support (the weighted mean of all rows given to :meth:`fit`, as
           ``mean_``) and their own mean, which removes the bias between
           the two sets;
        2. each shifted query takes the class of the fitted prototype it is
           most similar to (a pseudo-label);
        3. the prototype of class ``c`` becomes the weighted mean of the
           support rows of class ``c`` and of the shifted queries labelled
           ``c``, each row weighted by ``exp(cos(row, prototype_c))``, times
           its ``sample_weight`` for a support row (each query weighs one,
           so a weight acts as repeating the support row);
        4. the queries are scored against these prototypes.

        Similarities are cosines, after centring when ``center=True``, so
        ``metric`` must be ``"cosine"``. The weights use temperature 1, as
        easyfsl's ``BDCSPN``: ``scale`` only sharpens the final
        probabilities (the paper's temperature 10 nearly ignores the
        queries at 1-shot, where a support row has cosine 1 with its
        prototype). Predictions depend on all the rows of ``X`` together:
        predict the whole query set of an episode in one call. :meth:`fit`
        keeps a copy of the labelled support rows for this. With False (the
        default) each row is scored against ``prototypes_`` on its own.

    unknown_label : int, str or None, default=None
        Opt-in "none of these" answer: with a label (e.g. ``-1`` or
        ``"unknown"``), :meth:`predict` returns it for the queries whose
        :meth:`score_samples` is below ``unknown_threshold_``;
        :meth:`predict_proba` and :meth:`decision_function` are unchanged
        (over ``classes_``, the known classes). It must not be a class of
        ``y`` nor equal ``unlabelled_label`` (``ValueError``). Predictions
        are an array holding both: string classes with a str label give a
        str array, numeric classes with an int label the classes' dtype
        (widened if needed; an object array when no dtype of their kind holds
        every class and the label exactly, e.g. ``uint64`` or bool classes
        with ``-1``), and a mix an object array.

    unknown_threshold : "auto" or float, default="auto"
        Threshold on :meth:`score_samples` (a cosine, in [-1, 1]) below
        which a query is ``unknown_label``; used only with an
        ``unknown_label``. A float (NaN is refused) is used as is.
        ``"auto"`` chooses it from the support set by leave-one-out: each
        support row is scored against the prototypes with its own class's
        prototype computed without it,
        and the threshold is the 5% quantile of those scores. With one row
        per class nothing can be left out: the threshold is then the largest
        cosine between a support row and another class's prototype (each
        row standing for a query of a class outside the support), and a
        ``UserWarning`` says it is a guess. :meth:`score_samples` is the
        cosine between the (centred, with ``center=True``) query and the nearest
        prototype, whatever ``metric``; it does not depend on the other queries,
        even with
        ``transductive=True``.

    device : str or torch.device, default="auto"
        Where :func:`~skfewshot.evaluate_episodes` computes this head's
        batched episodes: "auto" (CUDA, then MPS, then the CPU), "cpu",
        "cuda"... ``fit`` and ``predict`` compute with NumPy on the CPU
        whatever it says. An unknown or absent device is a ``ValueError``
        naming it when the batched episodes start.

    Attributes
    ----------
    prototypes_ : ndarray of shape (n_classes, n_features)
        Weighted mean of the support features of each class, before centring
        or normalisation.

    unknown_threshold_ : float
        Threshold of :meth:`score_samples` below which :meth:`predict`
        answers ``unknown_label``. Only set when ``unknown_label`` is not
        None.

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
    per row, never a copy of ``X`` or a classes x rows matrix of more than
    65,536 entries; with ``transductive=True`` it keeps a copy of the
    labelled support rows, and each prediction holds the support and query
    rows stacked once more.

    Fitting and predicting one episode costs little more than the arithmetic:
    a float32 or float64 :class:`numpy.ndarray` with integer labels is
    validated once per call, without copies or dtype conversions, and other
    inputs go through :func:`~sklearn.utils.validation.validate_data`.

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
    .. [3] J. Liu, L. Song and Y. Qin, "Prototype Rectification for Few-Shot
       Learning", ECCV 2020.

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

    With ``transductive=True`` the queries of one call rectify the
    prototypes (BD-CSPN); the fitted prototypes do not change:

    >>> clf = PrototypeClassifier(transductive=True).fit(X, y)
    >>> clf.predict([[5.0, 1.0], [1.0, 5.0], [4.0, 0.5]])
    array(['cat', 'dog', 'cat'], dtype='<U3')
    >>> clf.prototypes_
    array([[2., 0.],
           [0., 3.]])
    """

    # evaluate_episodes scores many episodes of this head at once (same
    # results as one clone per episode; see skfewshot._batched)
    _fewshot_batch_predictor = prototype_batch_predictor

    _parameter_constraints: dict = {
        "metric": [StrOptions({"cosine", "euclidean", "dot"})],
        "center": ["boolean"],
        "scale": [Interval(Real, 0, None, closed="neither")],
        "unlabelled_label": _UNLABELLED_LABEL_CONSTRAINT,
        "transductive": ["boolean"],
        "unknown_label": _UNKNOWN_LABEL_CONSTRAINT,
        "unknown_threshold": _UNKNOWN_THRESHOLD_CONSTRAINT,
        "device": "no_validation",  # resolve_device checks it where it is used
    }
    # estimators pickled before ``device`` existed compute on "auto", as then
    device = "auto"

    def __init__(
        self,
        *,
        metric: str = "cosine",
        center: bool = False,
        scale: float = 10.0,
        unlabelled_label: int | str | None = None,
        transductive: bool = False,
        unknown_label: int | str | None = None,
        unknown_threshold: str | float = "auto",
        device: object = "auto",
    ) -> None:
        self.metric = metric
        self.center = center
        self.scale = scale
        self.unlabelled_label = unlabelled_label
        self.transductive = transductive
        self.unknown_label = unknown_label
        self.unknown_threshold = unknown_threshold
        self.device = device

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
        if self.transductive and self.metric != "cosine":
            raise ValueError(
                "transductive=True (BD-CSPN) compares rows by cosine similarity, "
                f"so it needs metric='cosine'; got metric={self.metric!r}."
            )
        X, self.classes_, codes, sample_weight = _validate_support(
            self, X, y, sample_weight
        )
        self.prototypes_ = _class_means(X, codes, self.classes_, sample_weight)
        mean = (
            _weighted_mean(X, sample_weight)
            if self.center or self.transductive
            else None
        )
        if self.center:
            self.mean_ = mean
        elif hasattr(self, "mean_"):
            del self.mean_
        if self.transductive:  # BD-CSPN reweights the labelled support rows
            labelled = codes >= 0
            self._support = (
                X[labelled],  # a copy: the caller's X may change after fit
                codes[labelled],
                sample_weight[labelled],  # against queries of weight 1 each
                mean,
            )
        elif hasattr(self, "_support"):
            del self._support
        self._fit_open_set(X, codes, sample_weight, stacklevel=4)  # past _fit_context
        return self

    def _novelty_space(self, X):
        """``X`` centred as the prototypes are (``center=True``)."""
        return X - self.mean_ if self.center else X

    def _novelty_directions(self):
        """The prototypes, centred when ``center=True``."""
        return self._novelty_space(self.prototypes_)

    def _logits(self, X):
        """Validated ``X`` -> (n_samples, n_classes) logits for ``metric``."""
        X = self._validate_queries(X)
        if self.transductive:
            return self._scores(X, self._rectify(X))
        return self._scores(X, self.prototypes_)

    def _rectify(self, X):
        """BD-CSPN's prototypes rectified with the queries ``X``."""
        if not hasattr(self, "_support"):
            raise ValueError(
                "transductive=True needs the support rows, which fit keeps only "
                "when transductive=True; this PrototypeClassifier was fitted "
                "with transductive=False: fit it again."
            )
        S, codes, weight, support_mean = self._support
        shifted = self._shifted(X, support_mean)
        support_cos = self._scores(S, self.prototypes_, scale=1.0)
        query_cos = self._scores(shifted, self.prototypes_, scale=1.0)
        pseudo = np.argmax(query_cos, axis=1)
        labels = np.concatenate([codes, pseudo])
        with np.errstate(divide="ignore"):  # log(0) = -inf: zero sample_weight
            log_weight = np.concatenate(
                [
                    support_cos[np.arange(codes.shape[0]), codes] + np.log(weight),
                    query_cos[np.arange(pseudo.shape[0]), pseudo],
                ]
            )
        # exp(log_weight - the largest of its class): in [0, 1], 1 in each class.
        peak = np.full(self.classes_.shape[0], -np.inf)
        np.maximum.at(peak, labels, log_weight)
        weight = np.exp(log_weight - peak[labels])
        rows = np.concatenate([S, shifted])
        return _class_means(rows, labels, self.classes_, weight)

    @staticmethod
    def _shifted(X, support_mean):
        """``X + (support_mean - mean of X)``; float64 if X's dtype overflows."""
        query_mean = _weighted_mean(X, np.ones(X.shape[0]))
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            shifted = X + (support_mean - query_mean)
        if not np.isfinite(shifted).all() and X.dtype != np.float64:
            shifted = X.astype(np.float64) + (
                support_mean.astype(np.float64) - query_mean
            )
        if not np.isfinite(shifted).all():
            raise ValueError(
                "The queries shifted onto the support mean (transductive=True) "
                "overflow float64 (the largest absolute feature is "
                f"{np.abs(X).max():.3g}); rescale the features."
            )
        return shifted

    def _scores(self, X, M, *, scale=None):
        """Logits of the rows of ``X`` against the prototypes ``M``.

        ``scale`` replaces ``self.scale`` (for the cosine metric).
        """
        if self.center:
            X = X - self.mean_
            M = M - self.mean_
        if self.metric == "cosine":
            return _cosine_logits(X, M, self.scale if scale is None else scale)
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
