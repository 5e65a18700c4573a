"""The few-shot evaluation protocol in scikit-learn's idioms.

:class:`EpisodicSplit` is a cross-validation splitter whose folds are N-way
K-shot episodes (the support set is the training fold, the queries are the test
fold), so ``cross_val_score``, ``cross_validate`` and ``GridSearchCV`` run the
protocol unchanged. :func:`evaluate_episodes` runs it directly, reuses the
features of frozen backbones across episodes and returns :class:`EpisodeScores`;
:class:`EpisodicGridSearchCV` scores a parameter grid with it, every candidate
on the same episodes. :func:`open_set_accuracy_score` and
:func:`open_set_scorer` score open-set episodes (``n_unknown_way``) as
:func:`evaluate_episodes` does, for scikit-learn's tools.

This module uses only the scikit-learn estimator API: it does not import torch.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
import weakref
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np
from joblib.parallel import get_active_backend
from numpy.typing import ArrayLike
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import BaseShuffleSplit, ParameterGrid
from sklearn.utils import _safe_indexing, check_random_state, get_tags
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    validate_parameter_constraints,
    validate_params,
)
from sklearn.utils.metaestimators import available_if
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    indexable,
)
from tqdm.auto import tqdm

from ._episodes import (
    EPISODE_CONSTRAINTS,
    EPISODE_DEFAULTS,
    EpisodeSampler,
    _split_frozen_prefix,
    batch_predictor,
    episode_batches,
    estimator_name,
    left_out_already_said,
    reuse_frozen_features,
    user_stacklevel,
)
from ._open_set import open_set_accuracy, open_set_right
from ._utils import rebuildable_future

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "EpisodeScores",
    "EpisodicGridSearchCV",
    "EpisodicSplit",
    "evaluate_episodes",
    "open_set_accuracy_score",
    "open_set_scorer",
]


class EpisodicSplit(BaseShuffleSplit):
    """N-way K-shot episodes as a cross-validation splitter.

    Each split is one few-shot episode: ``n_way`` classes drawn uniformly among
    the classes with at least ``n_shot + n_query`` samples, then ``n_shot``
    support and ``n_query`` query samples of each, disjoint. The support indices
    are the training fold, the query indices the test fold, so an estimator
    scored by ``cross_val_score`` or ``GridSearchCV`` is fitted on the support
    set and scored on the queries: the few-shot protocol.

    A sibling of :class:`~sklearn.model_selection.StratifiedShuffleSplit`;
    episodes are drawn by the same sampler as :func:`evaluate_episodes` and the
    episodic meta-trainer.

    Parameters
    ----------
    n_way : int, default=5
        Classes per episode, at least 2.

    n_shot : int, default=1
        Support (training) samples per class.

    n_query : int, default=15
        Query (test) samples per class.

    n_episodes : int, default=600
        Number of episodes, i.e. of splits.

    within_groups : bool, default=False
        Draw all classes of an episode from one group (the ``groups`` argument
        of :meth:`split`), e.g. one Omniglot alphabet, chosen uniformly among
        the groups with at least ``n_way + n_unknown_way`` eligible classes.
        When False, ``groups`` is ignored, as scikit-learn's splitters that do
        not use groups ignore them.

    n_unknown_way : int, default=0
        Open-set episodes: classes per episode *outside* the support, whose
        ``n_query`` samples each are appended to the test fold (queries of no
        support class, which a head with an ``unknown_label`` should answer
        with it). They are drawn among the eligible classes other than the
        episode's ``n_way``, their samples from a second random stream
        derived from the seed: the support and the known queries of every
        episode are those drawn with ``n_unknown_way=0`` (the same seed keeps
        its episodes; with ``within_groups``, as long as the groups that
        hold ``n_way`` eligible classes hold ``n_way + n_unknown_way``).
        How these folds are scored: see the Notes.

    random_state : int, RandomState instance or None, default=None
        Controls which episodes are drawn. Pass an int for the same episodes on
        every call of :meth:`split`; with None or a RandomState instance each
        call draws new episodes (see ``random_state`` in scikit-learn's
        glossary).

    See Also
    --------
    evaluate_episodes : Run the protocol directly and get a confidence interval.
    open_set_scorer : The ``scoring`` of open-set episodes (``n_unknown_way``).
    sklearn.model_selection.StratifiedShuffleSplit : Stratified random splits.

    Notes
    -----
    In ``GridSearchCV`` keep in mind that ``refit=True`` refits the best
    estimator on *all* of ``X``, i.e. on every class at once; in a few-shot
    setting the meaningful output is usually ``best_params_`` (use
    ``refit=False`` to skip the refit).

    :meth:`split` draws each episode only when the next one is asked for, so
    ``cross_val_score`` and ``cross_validate`` hold a few episodes at a time
    whatever ``n_episodes``; ``GridSearchCV`` lists every split first (about a
    kilobyte per 5-way 1-shot 15-query episode).

    Classes with fewer than ``n_shot + n_query`` samples are never drawn
    (nor, with ``within_groups``, the classes of groups too small for an
    episode); :meth:`split` warns how many are left out.

    With ``n_unknown_way > 0``, scikit-learn's default scoring (the
    estimator's ``score``) scores the folds of the library's heads as
    :func:`evaluate_episodes` does: the ``score`` of
    :class:`~skfewshot.PrototypeClassifier` and
    :class:`~skfewshot.FineTunedCosineClassifier` with an ``unknown_label``
    (and of a pipeline ending in one) is the open-set accuracy
    (:func:`open_set_accuracy_score`), so ``cross_val_score`` and
    ``GridSearchCV`` tune ``unknown_threshold`` as they are. A classifier
    that only predicts its ``classes_`` cannot reject, and its accuracy
    (every query of an unknown class wrong) is its open-set accuracy. Pass
    ``scoring=open_set_scorer`` for an estimator whose ``predict`` answers
    a label of its own for "unknown" but whose ``score`` is the plain
    accuracy.

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot.model_selection import EpisodicSplit
    >>> y = np.repeat([0, 1, 2, 3], 4)
    >>> X = np.zeros((len(y), 2))
    >>> cv = EpisodicSplit(n_way=2, n_shot=1, n_query=2, n_episodes=3,
    ...                    random_state=0)
    >>> cv
    EpisodicSplit(n_episodes=3, n_query=2, n_shot=1, n_unknown_way=0, n_way=2,
                  random_state=0, within_groups=False)
    >>> cv.get_n_splits()
    3
    >>> for support, query in cv.split(X, y):
    ...     print(y[support], y[query])
    [2 3] [2 2 3 3]
    [1 0] [1 1 0 0]
    [1 0] [1 1 0 0]

    Open-set episodes append the queries of classes outside the support, and
    keep the rest of each episode:

    >>> open_set = EpisodicSplit(n_way=2, n_shot=1, n_query=2, n_episodes=3,
    ...                          n_unknown_way=1, random_state=0)
    >>> for support, query in open_set.split(X, y):
    ...     print(y[support], y[query])
    [2 3] [2 2 3 3 1 1]
    [1 0] [1 1 0 0 2 2]
    [1 0] [1 1 0 0 2 2]
    """

    _parameter_constraints: dict = {
        **EPISODE_CONSTRAINTS,
        "within_groups": ["boolean"],
        "n_unknown_way": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
    }
    # split consumes groups: with metadata routing on, they are routed here by
    # default (what sklearn's GroupsConsumerMixin declares)
    __metadata_request__split = {"groups": True}

    def __init__(
        self,
        n_way: int = EPISODE_DEFAULTS["n_way"],
        *,
        n_shot: int = EPISODE_DEFAULTS["n_shot"],
        n_query: int = EPISODE_DEFAULTS["n_query"],
        n_episodes: int = EPISODE_DEFAULTS["n_episodes"],
        within_groups: bool = False,
        n_unknown_way: int = 0,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_way = n_way
        self.n_shot = n_shot
        self.n_query = n_query
        self.n_episodes = n_episodes
        self.within_groups = within_groups
        self.n_unknown_way = n_unknown_way
        self.random_state = random_state

    def split(
        self, X: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Generate the support and query indices of each episode.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            The data; only its length is used, so ``np.zeros(n_samples)`` can
            stand in for it.

        y : array-like of shape (n_samples,)
            Class labels; episodes are drawn class by class.

        groups : array-like of shape (n_samples,), default=None
            Group of each sample, used with ``within_groups=True`` (every class
            must lie within a single group); ignored otherwise.

        Yields
        ------
        support : ndarray of shape (n_way * n_shot,)
            Indices of the support (training) samples, class-major.

        query : ndarray of shape ((n_way + n_unknown_way) * n_query,)
            Indices of the query (test) samples, class-major, disjoint from
            ``support``; those of the ``n_unknown_way`` classes outside the
            support come last.

        Raises
        ------
        ValueError
            When fewer than ``n_way`` classes (within one group, with
            ``within_groups=True``) have ``n_shot + n_query`` samples; the
            message says how many do.

        Warns
        -----
        UserWarning
            When the episodes are drawn, when some classes are too small to be
            drawn (the message says how many).
        """
        return super().split(X, y, groups)

    def _iter_indices(self, X, y, groups=None):
        """Draw the episodes lazily, one per iteration."""
        sampler = self._sampler(y, groups)
        yield from sampler.episodes(
            check_random_state(self.random_state), self.n_episodes
        )

    def _sampler(self, y, groups):
        """Validate the parameters, ``y`` and ``groups``; the episode sampler."""
        validate_parameter_constraints(
            self._parameter_constraints,
            {name: getattr(self, name) for name in self._parameter_constraints},
            caller_name=type(self).__name__,
        )
        y = check_array(y, input_name="y", ensure_2d=False, dtype=None)
        return EpisodeSampler(
            y,
            self.n_way,
            self.n_shot,
            self.n_query,
            groups=groups if self.within_groups else None,
            within_groups=self.within_groups,
            n_unknown_way=self.n_unknown_way,
        )

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        """Return the number of episodes, ``n_episodes``.

        Parameters
        ----------
        X, y, groups : object
            Always ignored, exist for API compatibility.

        Returns
        -------
        n_splits : int
            The number of splitting iterations (episodes).
        """
        return self.n_episodes


@dataclass(frozen=True, eq=False, repr=False)
class EpisodeScores:
    """Per-episode accuracies of a few-shot evaluation and their summary.

    Returned by :func:`evaluate_episodes`.

    Parameters
    ----------
    accuracies : ndarray of shape (n_episodes,)
        Query accuracy of each episode, in [0, 1].

    n_way, n_shot, n_query : int
        Episode settings: classes, support and query samples per class.

    random_state : int, RandomState instance or None, default=None
        The ``random_state`` the episodes were drawn with.

    estimator_name : str, default=""
        Readable name of the evaluated estimator (class names of a pipeline's
        steps joined by ``+``).

    known_accuracies : ndarray of shape (n_episodes,) or None, default=None
        Open-set episodes: accuracy of each episode on the queries of its
        support classes only (a query answered "unknown" counts as wrong).
        In open-set episodes ``accuracies`` covers all queries, a query of
        a class outside the support being right when its prediction is no
        support class (the head's ``unknown_label``): the open-set accuracy.

    aurocs : ndarray of shape (n_episodes,) or None, default=None
        Open-set episodes: area under the ROC curve of the estimator's
        ``score_samples`` separating the support classes' queries
        (positives) from the others, per episode.

    n_unknown_way : int, default=0
        Classes outside the support per episode (0: closed-set episodes).

    Attributes
    ----------
    n_episodes : int
        Number of episodes, ``len(accuracies)``.

    mean : float
        Mean accuracy over episodes.

    std : float
        Population standard deviation of the accuracies (``np.std`` with
        ``ddof=0``), the usual convention of few-shot papers.

    ci95 : float
        Half-width of the 95% confidence interval of the mean,
        ``1.96 * std / sqrt(n_episodes)``; NaN from a single episode, which
        gives no interval (``str`` then reads "no CI from 1 episode").

    known_mean, known_ci95, auroc_mean, auroc_ci95 : float or None
        Mean and 95% half-width of ``known_accuracies`` and of ``aurocs``, as
        ``mean`` and ``ci95``; None when the array is None.

    See Also
    --------
    evaluate_episodes : Produces an ``EpisodeScores``.

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot.model_selection import EpisodeScores
    >>> scores = EpisodeScores(np.array([1.0, 0.9, 0.8, 0.9]), n_way=5, n_shot=1,
    ...                        n_query=2)
    >>> round(scores.mean, 4), round(scores.std, 4), round(scores.ci95, 4)
    (0.9, 0.0707, 0.0693)
    >>> print(scores)
    90.0 ± 6.9 % (95% CI, 4 episodes, 5-way 1-shot)

    Open-set episodes add the accuracy on the known classes and the AUROC:

    >>> open_set = EpisodeScores(np.array([0.8, 0.6]), n_way=5, n_shot=1,
    ...                          n_query=2, known_accuracies=np.array([0.9, 0.7]),
    ...                          aurocs=np.array([0.75, 0.85]), n_unknown_way=5)
    >>> round(open_set.known_mean, 4), round(open_set.auroc_mean, 4)
    (0.8, 0.8)
    >>> str(open_set).split("; ")[1]
    'known 80.0 ± 13.9 %, AUROC 0.800 ± 0.069)'

    One episode gives no confidence interval:

    >>> one = EpisodeScores(np.array([0.5]), n_way=5, n_shot=1, n_query=2)
    >>> one.ci95
    nan
    >>> print(one)
    50.0 % (no CI from 1 episode, 5-way 1-shot)
    """

    accuracies: np.ndarray
    n_way: int
    n_shot: int
    n_query: int
    random_state: object = None
    estimator_name: str = ""
    known_accuracies: np.ndarray | None = None
    aurocs: np.ndarray | None = None
    n_unknown_way: int = 0

    def __post_init__(self) -> None:
        for name in ("accuracies", "known_accuracies", "aurocs"):
            value = getattr(self, name)
            if value is None and name != "accuracies":
                continue
            array = np.array(value, dtype=np.float64)  # own copy
            if array.ndim != 1 or array.size == 0:
                raise ValueError(
                    f"{name} must be a non-empty 1-D array, got shape {array.shape}."
                )
            if name != "accuracies" and array.shape != self.accuracies.shape:
                raise ValueError(
                    f"{name} has shape {array.shape} but accuracies has shape "
                    f"{self.accuracies.shape}: one value per episode."
                )
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def n_episodes(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies, ddof=0))

    @property
    def ci95(self) -> float:
        return _ci95(self.accuracies)

    @property
    def known_mean(self) -> float | None:
        return _mean_or_none(self.known_accuracies)

    @property
    def known_ci95(self) -> float | None:
        return None if self.known_accuracies is None else _ci95(self.known_accuracies)

    @property
    def auroc_mean(self) -> float | None:
        return _mean_or_none(self.aurocs)

    @property
    def auroc_ci95(self) -> float | None:
        return None if self.aurocs is None else _ci95(self.aurocs)

    def __str__(self) -> str:
        if self.n_episodes == 1:
            interval = "no CI from 1 episode"
        else:
            interval = f"95% CI, {self.n_episodes} episodes"
        open_set = ""
        if self.n_unknown_way:
            open_set = f", {self.n_unknown_way} unknown classes"
        extra = []
        if self.known_accuracies is not None:
            extra.append(
                f"known {_plus_minus(self.known_mean, self.known_ci95, '.1f', 100)} %"
            )
        if self.aurocs is not None:
            extra.append(
                f"AUROC {_plus_minus(self.auroc_mean, self.auroc_ci95, '.3f')}"
            )
        extra = f"; {', '.join(extra)}" if extra else ""
        return (
            f"{_plus_minus(self.mean, self.ci95, '.1f', 100)} % ({interval}, "
            f"{self.n_way}-way {self.n_shot}-shot{open_set}{extra})"
        )

    def __repr__(self) -> str:
        name = (
            f", estimator_name={self.estimator_name!r}" if self.estimator_name else ""
        )
        open_set = ""
        if self.n_unknown_way:
            open_set = f", n_unknown_way={self.n_unknown_way}"
        for label, value in (
            ("known_mean", self.known_mean),
            ("auroc_mean", self.auroc_mean),
        ):
            if value is not None:
                open_set += f", {label}={value:.4f}"
        return (
            f"{type(self).__name__}(mean={self.mean:.4f}, ci95={self.ci95:.4f}, "
            f"n_episodes={self.n_episodes}, n_way={self.n_way}, "
            f"n_shot={self.n_shot}, n_query={self.n_query}{open_set}{name})"
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per episode as a pandas DataFrame.

        Columns: ``episode``, ``accuracy``, ``n_way``, ``n_shot``, ``n_query``
        and ``estimator`` (then ``known_accuracy`` and ``auroc`` for open-set
        evaluations that have them), so frames of several evaluations
        concatenate into one long table (e.g. accuracy against shots).

        Returns
        -------
        frame : pandas.DataFrame of shape (n_episodes, 6)

        Raises
        ------
        ImportError
            When pandas is not installed.

        Examples
        --------
        >>> import numpy as np
        >>> from skfewshot.model_selection import EpisodeScores
        >>> scores = EpisodeScores(np.array([1.0, 0.5]), n_way=2, n_shot=1,
        ...                        n_query=2, estimator_name="NearestCentroid")
        >>> scores.to_frame()
           episode  accuracy  n_way  n_shot  n_query        estimator
        0        0       1.0      2       1        2  NearestCentroid
        1        1       0.5      2       1        2  NearestCentroid
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "EpisodeScores.to_frame needs pandas, which is not installed; "
                "install it with `pip install pandas`."
            ) from exc
        n = self.n_episodes
        columns = {
            "episode": np.arange(n),
            "accuracy": self.accuracies,
            "n_way": np.full(n, self.n_way),
            "n_shot": np.full(n, self.n_shot),
            "n_query": np.full(n, self.n_query),
            "estimator": [self.estimator_name] * n,
        }
        if self.known_accuracies is not None:
            columns["known_accuracy"] = self.known_accuracies
        if self.aurocs is not None:
            columns["auroc"] = self.aurocs
        return pd.DataFrame(columns)


def _ci95(values):
    """Half-width of the 95% confidence interval of the mean of ``values``."""
    return float(_ci95_of_std(np.std(values, ddof=0), len(values)))


def _ci95_of_std(std, n):
    """``1.96 * std / sqrt(n)``, the 95% half-width of a mean of ``n`` values
    of (population) standard deviation ``std``; NaN when ``n < 2``: one
    value says nothing of the spread (its std is 0, not a zero-width CI)."""
    if n < 2:
        return np.full_like(std, np.nan, dtype=np.float64)
    return 1.96 * std / math.sqrt(n)


def _plus_minus(mean, ci95, spec, factor=1):
    """``"mean ± ci95"`` formatted by ``spec`` (times ``factor``); ``"mean"``
    alone when ``ci95`` is NaN (a single episode)."""
    text = format(factor * mean, spec)
    return text if math.isnan(ci95) else f"{text} ± {format(factor * ci95, spec)}"


def _mean_or_none(values):
    """``float(np.mean(values))``, or None for None."""
    return None if values is None else float(np.mean(values))


def _warn_unused_groups(groups, within_groups, caller):
    """Warn that ``groups`` given without ``within_groups=True`` does nothing.

    Called from the body of a public function or ``fit`` method behind one
    wrapper (``validate_params``, ``_fit_context``): the warning points at
    the user's call.
    """
    if groups is not None and not within_groups:
        warnings.warn(
            f"groups has no effect in {caller} with within_groups=False; "
            "pass within_groups=True to draw the classes of each episode from "
            "one group, or leave groups out.",
            UserWarning,
            stacklevel=4,
        )


def _fit_and_score_episode(estimator, X_support, y_support, X_query, y_query):
    """Fit on the support set, return the accuracy on the whole query set."""
    estimator.fit(X_support, y_support)
    return accuracy_score(y_query, estimator.predict(X_query))


def _fit_and_score_open_set_episode(estimator, X_support, y_support, X_query, y_query):
    """``(accuracy, known accuracy, AUROC)`` of one open-set episode.

    A query of a class outside the support counts as right when its
    prediction is no support class (the head's ``unknown_label``), as
    :func:`open_set_accuracy_score` counts it. The AUROC is that of
    ``score_samples`` (None when the estimator has none).
    """
    estimator.fit(X_support, y_support)
    predicted = estimator.predict(X_query)
    right, known = open_set_right(y_query, predicted, y_support)
    auroc = None
    if hasattr(estimator, "score_samples"):
        auroc = roc_auc_score(known, estimator.score_samples(X_query))
    return float(np.mean(right)), float(np.mean(right[known])), auroc


@validate_params(
    {"y_true": ["array-like"], "y_pred": ["array-like"], "classes": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def open_set_accuracy_score(
    y_true: ArrayLike, y_pred: ArrayLike, *, classes: ArrayLike
) -> float:
    """Accuracy of open-set predictions: unknown queries are right when rejected.

    A query whose true label is one of ``classes`` (the classes the
    estimator was fitted on, its support set's) is right when predicted as
    that label; a query of any other class can never be predicted as its
    label, and is right when predicted as none of ``classes`` (e.g. the
    head's ``unknown_label``). With no unknown queries this is the
    accuracy. :func:`evaluate_episodes` scores open-set episodes so.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels, of known and unknown classes.

    y_pred : array-like of shape (n_samples,)
        Predicted labels: classes, or an answer that is none of them.

    classes : array-like of shape (n_classes,)
        The known classes: the fitted estimator's ``classes_``.

    Returns
    -------
    score : float
        The fraction of queries answered right, in [0, 1].

    Raises
    ------
    ValueError
        When ``y_true`` and ``y_pred`` differ in length or are empty.

    See Also
    --------
    open_set_scorer : This score as the ``scoring`` of scikit-learn's tools.
    evaluate_episodes : Open-set episodes with ``n_unknown_way``.

    Examples
    --------
    >>> from skfewshot.model_selection import open_set_accuracy_score
    >>> y_true = [0, 0, 1, 5, 6]   # 5 and 6: no class of the support
    >>> y_pred = [0, 1, 1, -1, 0]  # -1: the head's unknown_label
    >>> open_set_accuracy_score(y_true, y_pred, classes=[0, 1])
    0.6
    """
    return open_set_accuracy(y_true, y_pred, classes)


def open_set_scorer(estimator, X: ArrayLike, y_true: ArrayLike) -> float:
    """Score a fitted estimator on open-set queries: a scorer for ``scoring=``.

    :func:`open_set_accuracy_score` of ``estimator.predict(X)``, the known
    classes being ``estimator.classes_``: a query of another class is right
    when its prediction is none of them (the estimator's "unknown" answer).
    Pass it as ``scoring=open_set_scorer`` to ``cross_val_score``,
    ``cross_validate`` or ``GridSearchCV`` with
    ``cv=EpisodicSplit(..., n_unknown_way=...)``: each fold is then scored
    as :func:`evaluate_episodes` scores the episode (its ``accuracies``).

    The default scoring already does so for the library's heads (and a
    pipeline ending in one): the ``score`` of
    :class:`~skfewshot.PrototypeClassifier` and
    :class:`~skfewshot.FineTunedCosineClassifier` with an ``unknown_label``
    is this open-set accuracy. This scorer is for other estimators whose
    ``predict`` answers a label of their own for "unknown" while their
    ``score`` is the plain accuracy, which counts every unknown query as
    wrong.

    Parameters
    ----------
    estimator : fitted classifier
        Has ``predict`` and ``classes_`` (a pipeline ending in one has).

    X : array-like of shape (n_samples, ...)
        Queries, as ``estimator.predict`` takes them.

    y_true : array-like of shape (n_samples,)
        Their true labels, of known and unknown classes.

    Returns
    -------
    score : float
        The open-set accuracy, in [0, 1].

    Raises
    ------
    AttributeError
        When ``estimator`` has no ``classes_``.

    See Also
    --------
    open_set_accuracy_score : The score of labels.
    EpisodicSplit : Its ``n_unknown_way`` draws open-set episodes.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import cross_val_score
    >>> from skfewshot import PrototypeClassifier
    >>> from skfewshot.model_selection import (
    ...     EpisodicSplit, evaluate_episodes, open_set_scorer)
    >>> X, y = load_digits(return_X_y=True)
    >>> head = PrototypeClassifier(unknown_label=-1)
    >>> episodes = dict(n_way=5, n_shot=5, n_query=15, n_unknown_way=5,
    ...                 n_episodes=20, random_state=0)
    >>> cv = EpisodicSplit(**episodes)
    >>> open_set = cross_val_score(head, X, y, cv=cv, scoring=open_set_scorer)
    >>> print(round(open_set.mean(), 4))
    0.6523
    >>> round(evaluate_episodes(head, X, y, **episodes).mean, 4)
    0.6523

    The head's own ``score`` (the default scoring) is the same open-set
    accuracy:

    >>> bool((cross_val_score(head, X, y, cv=cv) == open_set).all())
    True
    """
    try:
        classes = estimator.classes_
    except AttributeError as exc:
        raise AttributeError(
            f"open_set_scorer needs the known classes of the fitted estimator, "
            f"but {type(estimator).__name__} has no classes_."
        ) from exc
    return open_set_accuracy_score(y_true, estimator.predict(X), classes=classes)


def _episode(X, y, episode):
    """``(X_support, y_support, X_query, y_query)`` of one episode's indices."""
    support, query = episode
    return _safe_indexing(X, support), y[support], _safe_indexing(X, query), y[query]


def _score_episode(score, estimator, X, y, episode):
    """``score(estimator, *_episode(X, y, episode))``: one per-episode task.

    The episode is sliced where the task runs, out of the ``X`` and ``y``
    that every task of the call shares (see :func:`_per_episode_scores`).
    """
    return score(estimator, *_episode(X, y, episode))


def _per_episode_scores(score, head, X, y, episodes, n_jobs):
    """``score(clone(head), *episode data)`` of each episode, in order, by joblib.

    Every task takes the same ``X`` and ``y`` objects and its episode's
    indices, and slices the episode where it runs, so joblib ships the data
    once per call instead of the rows of every episode: loky memory-maps an
    array over ``max_nbytes`` (1 MB), and under the ``dask`` backend ``X``
    and ``y`` are sent to every worker before the first task (see
    :func:`_episode_parallel`). A list or tuple (joblib cannot track it, so it
    would travel with every task) and a lazy dask collection (its whole graph
    would) are sliced here instead, as before. Returns a generator.
    """
    shared = _is_weakrefable(X) and not hasattr(X, "__dask_graph__")
    if shared:
        tasks = (
            delayed(_score_episode)(score, clone(head), X, y, episode)
            for episode in episodes
        )
    else:
        tasks = (
            delayed(score)(clone(head), *_episode(X, y, episode))
            for episode in episodes
        )
    return _episode_parallel([X, y] if shared else [], n_jobs)(tasks)


def _episode_parallel(shared, n_jobs):
    """The ``Parallel`` (a generator) of the per-episode tasks.

    Under joblib's ``dask`` backend, the objects ``shared`` by every task
    go to the cluster once, before the first task, as futures the scheduler
    can rebuild (:func:`~skfewshot._utils.rebuildable_future`, under keys of
    this job's own): a worker that dies with the only copy loses no data.
    The backend would otherwise scatter them (an argument over 1 kB, or its
    ``scatter=``), and scattered data is lost with the last worker holding
    it, which cancels the job's remaining tasks; the Active Memory Manager
    keeps one copy of scattered data, even of a broadcast.

    That backend takes the cluster's total worker threads as ``n_jobs``,
    whatever ``n_jobs`` the caller gives, and joblib runs ``n_jobs == 1``
    sequentially in this process: a cluster of one single-threaded worker
    receives nothing, and a warning says so, at the first caller outside
    skfewshot and scikit-learn.
    """
    dask_backend = sys.modules.get("joblib._dask")  # imported when active
    backend = get_active_backend()[0] if dask_backend else None
    if dask_backend is None or not isinstance(
        backend, dask_backend.DaskDistributedBackend
    ):
        return Parallel(n_jobs=n_jobs, return_as="generator")
    if backend.effective_n_jobs(n_jobs) == 1:
        warnings.warn(
            "joblib's dask backend runs every episode one after another in "
            "this process, not on the cluster: it takes the cluster's total "
            "number of worker threads as n_jobs (whatever n_jobs is given), and "
            "the cluster has 1. Give the cluster at least 2 worker threads, "
            "e.g. LocalCluster(n_workers=2, threads_per_worker=1), or leave "
            "out backend='dask' to use this machine's cores.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    elif shared:
        backend = type(backend)(
            client=backend.client,
            wait_for_workers_timeout=backend.wait_for_workers_timeout,
            **backend.submit_kwargs,
        )
        # what the backend's scatter= does, with futures a lost worker cannot
        # take along, and keys of this job's own: joblib scatters with
        # hash=True, so the same data as the job before got that job's keys,
        # which the scheduler could still be forgetting as this job used them
        # ("lost dependencies": its tasks cancelled)
        futures = [rebuildable_future(backend.client, x) for x in shared]
        backend._scatter = list(shared)
        backend.data_futures = {id(x): f for x, f in zip(shared, futures)}
    return Parallel(backend=backend, n_jobs=n_jobs, return_as="generator")


def _is_weakrefable(obj):
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


def _episode_codes(support_labels, query_labels):
    """Each row's index into its episode's sorted classes, for stacked episodes.

    ``support_labels`` (B, n_support) and ``query_labels`` (B, n_query) are
    integer labels; every episode's support holds its classes, each class as
    often as the others (as episodes are drawn), and its queries only those
    classes. The codes are what ``np.unique(y_support, return_inverse=True)``
    gives per episode, so classes keep the order a fitted head's
    ``classes_`` has.
    """
    order = np.argsort(support_labels, axis=1, kind="stable")
    ordered = np.take_along_axis(support_labels, order, axis=1)
    new = np.ones(ordered.shape, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    codes = np.empty(ordered.shape, dtype=np.intp)
    np.put_along_axis(codes, order, np.cumsum(new, axis=1) - 1, axis=1)
    classes = ordered[new].reshape(len(ordered), -1)
    query_codes = (query_labels[:, :, None] > classes[:, None, :]).sum(axis=-1)
    return codes, query_codes


def _batched_accuracies(batched, head, X, y, episodes, n_episodes, n_way, rows):
    """Accuracy of each episode, in order, computed a batch of episodes at a time.

    ``batched = (predict, finite_rows, features)`` is what
    :func:`~skfewshot._episodes.batch_predictor` returned for ``head``
    (``features``: ``X`` as a float ndarray); ``rows`` is the number of
    support and query rows of one episode. A batch that draws a non-finite
    row, or one the predictor declines, takes the per-episode path on ``X``
    itself (a list stays a list), so the head accepts or reports it exactly
    as it would without batching.
    """
    predict, finite_rows, features = batched
    labels = np.unique(y, return_inverse=True)[1]  # sorted: ranks are kept
    n_features = features.shape[1]
    for batch in episode_batches(episodes, n_episodes, rows, n_features):
        support = np.stack([s for s, _ in batch])
        query = np.stack([q for _, q in batch])
        predicted = None
        if finite_rows[support].all() and finite_rows[query].all():
            codes, query_codes = _episode_codes(labels[support], labels[query])
            predicted = predict(support, codes, query, n_way)
        if predicted is None:
            for episode in batch:
                yield _fit_and_score_episode(clone(head), *_episode(X, y, episode))
        else:
            yield from np.mean(predicted == query_codes, axis=1)


@validate_params(
    {
        "estimator": [HasMethods(["fit", "predict"])],
        "X": ["array-like", "sparse matrix"],
        "y": ["array-like"],
        "groups": ["array-like", None],
        "within_groups": ["boolean"],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
        "n_unknown_way": [Interval(Integral, 0, None, closed="left")],
        **EPISODE_CONSTRAINTS,
    },
    prefer_skip_nested_validation=False,
)
def evaluate_episodes(
    estimator,
    X: ArrayLike,
    y: ArrayLike,
    *,
    n_way: int,
    n_shot: int,
    n_query: int = EPISODE_DEFAULTS["n_query"],
    n_episodes: int = EPISODE_DEFAULTS["n_episodes"],
    groups: ArrayLike | None = None,
    within_groups: bool = False,
    random_state: int | np.random.RandomState | None = None,
    n_jobs: int | None = None,
    verbose: int = 0,
    n_unknown_way: int = 0,
) -> EpisodeScores:
    """Evaluate a few-shot classifier on random N-way K-shot episodes.

    For each episode drawn by :class:`EpisodicSplit`, a clone of ``estimator``
    is fitted on the support set and its accuracy measured on the query set;
    the mean accuracy and its 95% confidence interval summarise the episodes.

    The whole query set of an episode goes to one ``predict`` call, so a
    transductive classifier (e.g. ``FineTunedCosineClassifier(
    transductive=True)``) adapts to exactly the queries of that episode.

    **Feature reuse.** When ``estimator`` is a :class:`~sklearn.pipeline.Pipeline`
    whose leading steps are frozen, those steps are fitted and applied to ``X``
    once, and only the remaining steps run per episode on the features: each
    input passes through the backbone once for the whole evaluation, with the
    same result as without reuse. A step is frozen when it is a
    :class:`~sklearn.frozen.FrozenEstimator` or its class declares
    ``frozen_features = True``, a promise that its ``fit`` learns nothing from
    the data and its ``transform`` maps each row independently
    (:class:`~skfewshot.backbone.BackboneTransformer` and
    :class:`~skfewshot.text.SentenceEncoder` declare it; so can any
    transformer).

    **Batched episodes.** When what is fitted per episode is a single head
    whose class declares ``_fewshot_batch_predictor`` (the library's own
    heads), up to 64 episodes at a time are stacked and computed as one torch
    computation instead of one fitted clone each, on the head's ``device``:
    the same episodes and the same accuracies, many times faster. For
    :class:`~skfewshot.PrototypeClassifier` they are equal up to float
    rounding of exact ties; :class:`~skfewshot.FineTunedCosineClassifier` is
    fine-tuned by the same L-BFGS iteration to the same ``tol``; its
    inductive objective has one minimum, so the two paths' classifiers agree
    to within that tolerance and a query they label differently lies within
    it of a tie (one query in 45,000 on the benchmark of the user guide).
    With ``transductive=True`` the entropy terms make the objective
    non-convex, and the batched line search (backtracking) is not SciPy's, so
    an episode may settle in another minimum of the same objective: 9 queries
    in 45,000 were labelled differently on that benchmark (the same mean
    accuracy to 0.01%); compare transductive results computed by one path.
    The two paths agree only where the fine-tuning converges: an episode that
    runs out of ``max_iter`` iterations (or whose line search fails) keeps
    the last iterate of its own path's line search, so its predictions, and
    the accuracy, depend on the path (the ``ConvergenceWarning`` says so);
    give ``max_iter`` room, or compare results computed by one path.
    Options a head does not batch, a subclass that overrides ``fit`` or
    ``predict`` (of the head, or of a ``Pipeline`` around it), sparse or
    non-numeric features and any other estimator take the per-episode path.

    Parameters
    ----------
    estimator : estimator object implementing ``fit`` and ``predict``
        The few-shot classifier (or pipeline); cloned for every episode, never
        modified.

    X : array-like of shape (n_samples, ...)
        The pool of samples (images, texts, feature rows...) of the evaluation
        classes, indexed with :func:`sklearn.utils._safe_indexing`.

    y : array-like of shape (n_samples,)
        Class labels of ``X``.

    n_way : int
        Classes per episode, at least 2.

    n_shot : int
        Support samples per class.

    n_query : int, default=15
        Query samples per class.

    n_episodes : int, default=600
        Number of episodes.

    groups : array-like of shape (n_samples,), default=None
        Group of each sample, used with ``within_groups=True``; given without
        it, ``groups`` has no effect and a warning says so.

    within_groups : bool, default=False
        Draw all classes of an episode from one group (e.g. one Omniglot
        alphabet).

    random_state : int, RandomState instance or None, default=None
        Controls which episodes are drawn. They are drawn one at a time, in
        order, as the episodes are dispatched (so memory does not grow with
        ``n_episodes``), from one generator: the result does not depend on
        ``n_jobs``. Randomness inside the estimator is controlled by the
        estimator's own ``random_state``.

    n_jobs : int, default=None
        Episodes evaluated in parallel with joblib. ``None`` means 1 unless in a
        :obj:`joblib.parallel_backend` context; ``-1`` uses all processors.
        Batched episodes ignore it: each batch is one torch computation in
        this process.

    verbose : int, default=0
        When > 0, show a progress bar (tqdm) with the running mean accuracy.

    n_unknown_way : int, default=0
        Open-set episodes (see :class:`EpisodicSplit`): ``n_query`` queries
        of each of ``n_unknown_way`` classes outside the support are added to
        every episode. The result then holds, per episode, the accuracy on
        all queries (a query of an unknown class is right when its prediction
        is no support class, i.e. the head's ``unknown_label``), the
        accuracy on the support classes' queries (``known_accuracies``) and
        the AUROC of the estimator's ``score_samples`` between the two kinds
        of queries (``aurocs``; None, with a warning, for an estimator
        without ``score_samples``). Open-set episodes take the per-episode
        path (not batched). ``cross_val_score`` with the same
        ``EpisodicSplit`` gives the same ``accuracies`` with
        ``scoring=open_set_scorer``, and, for the library's heads (whose
        ``score`` is the open-set accuracy), with the default scoring.

    Returns
    -------
    scores : EpisodeScores
        Per-episode accuracies, mean, ``ci95`` (NaN with ``n_episodes=1``)
        and the settings used.

    Raises
    ------
    ValueError
        When ``X`` and ``y`` differ in length, when fewer than ``n_way``
        classes have ``n_shot + n_query`` samples (the message says how many
        do), or when ``y`` or ``groups`` mixes labels that cannot be sorted
        together (ints and strings, None) or ``groups`` contains NaN.

    Warns
    -----
    UserWarning
        When some classes are never drawn: those with fewer than ``n_shot +
        n_query`` samples (and, with ``within_groups``, those of groups with
        fewer than ``n_way`` such classes); the message says how many.

    See Also
    --------
    EpisodicSplit : The same episodes as a cross-validation splitter.
    EpisodeScores : The returned summary.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from skfewshot.model_selection import evaluate_episodes
    >>> X, y = load_digits(return_X_y=True)
    >>> one_nn = KNeighborsClassifier(n_neighbors=1)
    >>> scores = evaluate_episodes(one_nn, X, y, n_way=5, n_shot=1,
    ...                            n_episodes=20, random_state=0)
    >>> print(scores)
    72.5 ± 4.4 % (95% CI, 20 episodes, 5-way 1-shot)
    >>> scores.accuracies.shape
    (20,)
    """
    X, y, groups = indexable(X, y, groups)
    check_consistent_length(X, y, groups)
    y = check_array(y, input_name="y", ensure_2d=False, dtype=None)
    _warn_unused_groups(groups, within_groups, "evaluate_episodes")
    cv = EpisodicSplit(
        n_way,
        n_shot=n_shot,
        n_query=n_query,
        n_episodes=n_episodes,
        within_groups=within_groups,
        n_unknown_way=n_unknown_way,
        random_state=random_state,
    )
    # validated now (before the backbone runs); each episode is drawn only
    # when joblib dispatches it, in order, whatever n_jobs
    episodes = cv._sampler(y, groups).episodes(
        check_random_state(random_state), n_episodes
    )

    X, head = reuse_frozen_features(estimator, X, y)
    if n_unknown_way:
        return _evaluate_open_set(estimator, head, X, y, episodes, cv, n_jobs, verbose)
    batched = batch_predictor(head, X, y)
    if batched is None:
        results = _per_episode_scores(
            _fit_and_score_episode, head, X, y, episodes, n_jobs
        )
    else:
        results = _batched_accuracies(
            batched, head, X, y, episodes, n_episodes, n_way,
            rows=n_way * (n_shot + n_query),
        )  # fmt: skip
    accuracies = np.empty(n_episodes)
    total = 0.0  # running sum: the bar's mean costs O(1) per episode
    with tqdm(
        total=n_episodes,
        desc=f"{n_way}-way {n_shot}-shot",
        disable=not verbose,
        # a log file keeps every redraw: redraw rarely when not a terminal
        mininterval=0.1 if sys.stderr.isatty() else 30,
    ) as bar:
        for i, accuracy in enumerate(results):
            accuracies[i] = accuracy
            total += accuracy
            bar.update()
            bar.set_postfix(acc=f"{100 * total / (i + 1):.1f}%", refresh=False)
    return EpisodeScores(
        accuracies,
        n_way=n_way,
        n_shot=n_shot,
        n_query=n_query,
        random_state=random_state,
        estimator_name=estimator_name(estimator),
    )


def _evaluate_open_set(estimator, head, X, y, episodes, cv, n_jobs, verbose):
    """:func:`evaluate_episodes` of open-set episodes, one fitted clone each."""
    if not hasattr(head, "score_samples"):
        warnings.warn(
            f"{estimator_name(head)} has no score_samples, so the open-set "
            "evaluation reports no AUROC (aurocs is None).",
            UserWarning,
            stacklevel=4,
        )
    results = _per_episode_scores(
        _fit_and_score_open_set_episode, head, X, y, episodes, n_jobs
    )
    scores = np.full((cv.n_episodes, 3), np.nan)
    for i, result in enumerate(
        tqdm(
            results,
            total=cv.n_episodes,
            desc=f"{cv.n_way}-way {cv.n_shot}-shot open-set",
            disable=not verbose,
            mininterval=0.1 if sys.stderr.isatty() else 30,
        )
    ):
        scores[i] = [np.nan if value is None else value for value in result]
    has_auroc = not np.isnan(scores[:, 2]).any()
    return EpisodeScores(
        scores[:, 0],
        n_way=cv.n_way,
        n_shot=cv.n_shot,
        n_query=cv.n_query,
        random_state=cv.random_state,
        estimator_name=estimator_name(estimator),
        known_accuracies=scores[:, 1],
        aurocs=scores[:, 2] if has_auroc else None,
        n_unknown_way=cv.n_unknown_way,
    )


def _search_estimator_has(attr):
    """``available_if`` check: ``attr`` of the refitted (or given) estimator.

    As scikit-learn's search estimators do: unavailable with ``refit=False``
    (the error says so), otherwise available when the best estimator (after
    ``fit``) or the given estimator (before) has it.
    """

    def check(self):
        if not self.refit:
            raise AttributeError(
                f"This {type(self).__name__} instance was initialized with "
                f"refit=False. {attr} is available only after refitting on the "
                "best parameters; set refit=True, or fit "
                "estimator.set_params(**search.best_params_) yourself."
            )
        getattr(getattr(self, "best_estimator_", self.estimator), attr)
        return True

    return check


def _masked_param_arrays(candidates):
    """``param_<name>`` masked arrays of ``cv_results_``, as ``GridSearchCV``'s.

    A candidate without the parameter (a grid of a list of grids) is masked;
    numeric values keep their dtype, anything else is an object array.
    """
    values = {}
    for index, params in enumerate(candidates):
        for name, value in params.items():
            values.setdefault(f"param_{name}", {})[index] = value
    for key, by_index in values.items():
        try:
            inferred = np.array(list(by_index.values()))
        except ValueError:  # sequences of different lengths
            dtype = np.dtype(object)
        else:
            keep = inferred.ndim == 1 and inferred.dtype.kind != "U"
            dtype = inferred.dtype if keep else np.dtype(object)
        array = np.ma.MaskedArray(np.empty(len(candidates), dtype=dtype), mask=True)
        for index, value in by_index.items():
            array[index] = value  # unmasks it
        yield key, array


class EpisodicGridSearchCV(MetaEstimatorMixin, BaseEstimator):
    """Exhaustive search over a parameter grid, each candidate scored on episodes.

    The few-shot counterpart of :class:`~sklearn.model_selection.GridSearchCV`
    with ``cv=EpisodicSplit(...)``, with the same results: every candidate of
    ``param_grid`` is scored by :func:`evaluate_episodes` on the *same*
    ``n_episodes`` N-way K-shot episodes of ``X`` (fitted on each support set,
    accuracy on its queries), and ranked by its mean accuracy.

    It is faster than ``GridSearchCV`` for two reasons:

    - **Batched episodes.** A candidate whose per-episode part is one of the
      library's heads (:class:`~skfewshot.PrototypeClassifier`,
      :class:`~skfewshot.FineTunedCosineClassifier`) is computed up to 64
      episodes at a time as one torch computation instead of one fitted
      clone per episode; other candidates take the per-episode path (see
      :func:`evaluate_episodes`).
    - **Frozen steps once for the whole search.** When ``estimator`` is a
      :class:`~sklearn.pipeline.Pipeline` whose leading steps are frozen
      (:class:`~skfewshot.BackboneTransformer`,
      :class:`~skfewshot.text.SentenceEncoder`, a
      :class:`~sklearn.frozen.FrozenEstimator`, any step declaring
      ``frozen_features = True``) and no parameter of the grid belongs to
      those steps (e.g. a grid over ``"head__alpha"`` only), the frozen steps
      run once on ``X`` and every candidate is evaluated on the features.
      When the grid sets a frozen step's parameter (or replaces the step),
      each candidate computes its own frozen features once, for all its
      episodes: the same scores, one backbone pass per candidate.

    Parameters
    ----------
    estimator : estimator object implementing ``fit`` and ``predict``
        The few-shot classifier or pipeline to tune; cloned, never modified.

    param_grid : dict or list of dicts
        Parameter names (as for ``estimator.set_params``, e.g.
        ``"finetunedcosineclassifier__alpha"``) mapped to the lists of values
        to try, or a list of such dicts, each a grid of its own (see
        :class:`~sklearn.model_selection.ParameterGrid`).

    n_way : int, default=5
        Classes per episode, at least 2.

    n_shot : int, default=1
        Support samples per class.

    n_query : int, default=15
        Query samples per class.

    n_episodes : int, default=600
        Number of episodes every candidate is scored on.

    within_groups : bool, default=False
        Draw all classes of an episode from one group (the ``groups`` argument
        of :meth:`fit`), e.g. one Omniglot alphabet.

    random_state : int, RandomState instance or None, default=None
        Controls which episodes are drawn. All candidates are scored on the
        same episodes: an int is the seed of the episodes (the episodes of
        ``EpisodicSplit(..., random_state=that_int)``), and with None or a
        RandomState instance one seed is drawn from it once per call of
        :meth:`fit`. Randomness inside the estimator is controlled by the
        estimator's own ``random_state``.

    refit : bool, default=True
        Refit the estimator with the best parameters on the whole of ``X``
        and ``y``, as ``GridSearchCV`` does, for :meth:`predict` and
        :meth:`score`. In a few-shot setting this is usually not what you
        want: ``X`` holds the validation classes, which the test episodes will
        not contain, so the useful output is :attr:`best_params_`;
        ``refit=False`` skips the refit.

    n_jobs : int, default=None
        Episodes evaluated in parallel with joblib on the per-episode path
        (see :func:`evaluate_episodes`); batched episodes ignore it. ``None``
        means 1 unless in a :obj:`joblib.parallel_backend` context; ``-1``
        uses all processors.

    verbose : int, default=0
        When > 0, print the number of candidates and episodes, show a progress
        bar (tqdm) per candidate and print each candidate's score.

    Attributes
    ----------
    cv_results_ : dict of ndarray
        One entry per candidate in each array, in the keys of
        ``GridSearchCV``'s ``cv_results_`` that apply (so
        ``pandas.DataFrame(search.cv_results_)`` is a table):
        ``params`` (the list of parameter dicts), ``param_<name>`` (masked
        arrays, masked where a candidate of a list of grids lacks the
        parameter), ``split<i>_test_score`` (accuracy on episode ``i``),
        ``mean_test_score``, ``std_test_score`` (``ddof=0``),
        ``rank_test_score`` (1 is best; ties share the lowest rank) and
        ``ci95_test_score``, the half-width of the 95% confidence interval of
        the mean, ``1.96 * std / sqrt(n_episodes)``, as
        :class:`EpisodeScores` computes it (NaN with ``n_episodes=1``).
        There are no fit or score times: batched episodes have none of their
        own.

    best_estimator_ : estimator
        ``estimator`` with :attr:`best_params_`, fitted on all of ``X``;
        only with ``refit=True``.

    best_score_ : float
        Mean accuracy of the best candidate.

    best_params_ : dict
        Parameters of the best candidate: the first of those with the highest
        mean accuracy.

    best_index_ : int
        Index of the best candidate in the arrays of :attr:`cv_results_`.

    n_splits_ : int
        Number of episodes, ``n_episodes``.

    refit_time_ : float
        Seconds spent refitting the best estimator; only with ``refit=True``.

    classes_ : ndarray
        Class labels of :attr:`best_estimator_`; only with ``refit=True``.

    See Also
    --------
    evaluate_episodes : Score one estimator on episodes.
    EpisodicSplit : The episodes as a CV splitter, for ``GridSearchCV`` and
        any other scikit-learn search.
    sklearn.model_selection.GridSearchCV : The general search.

    Notes
    -----
    The scores are those of ``GridSearchCV`` with ``cv=EpisodicSplit(...,
    random_state=random_state)`` and an int ``random_state``: equal for
    :class:`~skfewshot.PrototypeClassifier` and foreign estimators; for the
    batched :class:`~skfewshot.FineTunedCosineClassifier` a query that lies
    within the solver's ``tol`` of a tie may be labelled differently, and with
    ``transductive=True`` an episode may settle in another minimum of its
    non-convex objective (see :func:`evaluate_episodes`), so two candidates
    whose mean accuracies differ by about one query may rank in the other
    order.

    A candidate whose fit fails raises its error (as ``GridSearchCV`` with
    ``error_score="raise"``): no score is silently replaced by NaN. A
    parameter that the estimator does not have raises the ``ValueError`` of
    ``set_params`` before any episode is evaluated.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skfewshot import PrototypeClassifier
    >>> from skfewshot.model_selection import EpisodicGridSearchCV
    >>> X, y = load_digits(return_X_y=True)
    >>> search = EpisodicGridSearchCV(
    ...     PrototypeClassifier(),
    ...     {"metric": ["cosine", "dot"]},
    ...     n_way=5, n_shot=1, n_episodes=100, random_state=0, refit=False,
    ... ).fit(X, y)
    >>> search.best_params_
    {'metric': 'cosine'}
    >>> search.cv_results_["mean_test_score"].round(2)
    array([0.72, 0.59])
    >>> search.cv_results_["rank_test_score"]
    array([1, 2], dtype=int32)
    >>> search.n_splits_
    100
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"])],
        "param_grid": [dict, list],
        **EPISODE_CONSTRAINTS,
        "within_groups": ["boolean"],
        "random_state": ["random_state"],
        "refit": ["boolean"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        estimator,
        param_grid: dict | list[dict],
        *,
        n_way: int = EPISODE_DEFAULTS["n_way"],
        n_shot: int = EPISODE_DEFAULTS["n_shot"],
        n_query: int = EPISODE_DEFAULTS["n_query"],
        n_episodes: int = EPISODE_DEFAULTS["n_episodes"],
        within_groups: bool = False,
        random_state: int | np.random.RandomState | None = None,
        refit: bool = True,
        n_jobs: int | None = None,
        verbose: int = 0,
    ) -> None:
        self.estimator = estimator
        self.param_grid = param_grid
        self.n_way = n_way
        self.n_shot = n_shot
        self.n_query = n_query
        self.n_episodes = n_episodes
        self.within_groups = within_groups
        self.random_state = random_state
        self.refit = refit
        self.n_jobs = n_jobs
        self.verbose = verbose

    # the estimator's own parameters are validated when each clone is fitted
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(
        self, X: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None
    ) -> EpisodicGridSearchCV:
        """Score every candidate on the same episodes of ``X``, ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            The pool of samples of the validation classes, indexed with
            :func:`sklearn.utils._safe_indexing`.

        y : array-like of shape (n_samples,)
            Class labels of ``X``.

        groups : array-like of shape (n_samples,), default=None
            Group of each sample, used with ``within_groups=True``; given
            without it, ``groups`` has no effect and a warning says so.

        Returns
        -------
        self : EpisodicGridSearchCV
            The fitted search.

        Raises
        ------
        ValueError
            When ``param_grid`` has no candidate, a parameter is not one of
            the estimator's, ``X`` and ``y`` differ in length, or fewer than
            ``n_way`` classes have ``n_shot + n_query`` samples.
        TypeError
            When ``param_grid`` is not a dict of lists or a list of them.

        Warns
        -----
        UserWarning
            Once, when some classes are too small to be drawn (see
            :func:`evaluate_episodes`).
        """
        candidates = list(ParameterGrid(self.param_grid))
        if not candidates:
            raise ValueError(
                f"param_grid={self.param_grid!r} has no candidate; give a dict "
                "of parameter lists or a non-empty list of them."
            )
        X, y, groups = indexable(X, y, groups)
        check_consistent_length(X, y, groups)
        y = check_array(y, input_name="y", ensure_2d=False, dtype=None)
        _warn_unused_groups(groups, self.within_groups, type(self).__name__)
        groups = groups if self.within_groups else None
        episode_settings = {
            "n_way": self.n_way,
            "n_shot": self.n_shot,
            "n_query": self.n_query,
            "n_episodes": self.n_episodes,
        }
        # enough classes for the episodes? (before any backbone runs)
        EpisodicSplit(**episode_settings, within_groups=self.within_groups)._sampler(
            y, groups
        )
        seed = self.random_state
        if not isinstance(seed, Integral):  # one draw: every candidate shares it
            seed = check_random_state(seed).randint(np.iinfo(np.int32).max)

        head = self._shared_head(candidates)
        base = self.estimator if head is None else head
        for params in candidates:  # unknown parameters raise before any work
            clone(base).set_params(**params)
        features = X if head is None else reuse_frozen_features(self.estimator, X, y)[0]
        if self.verbose > 0:
            n = len(candidates)
            print(
                f"Scoring {n} candidate{'s' * (n != 1)} on the same "
                f"{self.n_episodes} episodes ({self.n_way}-way {self.n_shot}-shot)"
            )
        scores = np.empty((len(candidates), self.n_episodes))
        # the body of evaluate_episodes: its settings are validated above, and
        # its validate_params wrapper would rename a head's invalid parameter
        # ("the 'alpha' parameter of FineTunedCosineClassifier") after itself
        evaluate = evaluate_episodes.__wrapped__
        for i, params in enumerate(candidates):
            with left_out_already_said():  # by the check above
                result = evaluate(
                    clone(base).set_params(**clone(params, safe=False)),
                    features,
                    y,
                    **episode_settings,
                    groups=groups,
                    within_groups=self.within_groups,
                    random_state=seed,
                    n_jobs=self.n_jobs,
                    verbose=self.verbose,
                )
            scores[i] = result.accuracies
            if self.verbose > 0:
                print(f"[{i + 1}/{len(candidates)}] {params}: {result}")

        self.cv_results_ = self._results(candidates, scores)
        self.best_index_ = int(self.cv_results_["rank_test_score"].argmin())
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.best_params_ = candidates[self.best_index_]
        self.n_splits_ = self.n_episodes
        if self.refit:
            start = time.perf_counter()
            self.best_estimator_ = (
                clone(self.estimator)
                .set_params(**clone(self.best_params_, safe=False))
                .fit(X, y)
            )
            self.refit_time_ = time.perf_counter() - start
        return self

    def _shared_head(self, candidates):
        """The part of the estimator every candidate sets, or None.

        That part is what follows the estimator's frozen leading steps (the
        whole estimator when it has none): when no candidate sets a parameter
        of those steps, their features are computed once for the search and
        each candidate is a clone of the rest. None when a candidate touches
        them (each evaluation then computes its own frozen features once).
        """
        prefix, head = _split_frozen_prefix(self.estimator)
        if not prefix:
            return head
        # a key names a parameter of the pipeline itself ("memory"), or of a
        # step ("head__alpha"), or replaces a step ("head")
        keys = {key.split("__", 1)[0] for params in candidates for key in params}
        return head if keys <= {name for name, _ in head.steps} else None

    def _results(self, candidates, scores):
        """``cv_results_`` of per-episode ``scores`` (n_candidates, n_episodes).

        The arithmetic of ``GridSearchCV`` (unweighted ``np.average`` for the
        mean and the standard deviation, ``rankdata(..., method="min")`` of
        the negated means), so equal episode scores give equal results.
        """
        results = dict(_masked_param_arrays(candidates))
        results["params"] = candidates
        for i in range(scores.shape[1]):
            results[f"split{i}_test_score"] = scores[:, i]
        means = np.average(scores, axis=1)
        stds = np.sqrt(np.average((scores - means[:, np.newaxis]) ** 2, axis=1))
        results["mean_test_score"] = means
        results["std_test_score"] = stds
        results["ci95_test_score"] = _ci95_of_std(stds, scores.shape[1])
        results["rank_test_score"] = rankdata(-means, method="min").astype(np.int32)
        return results

    @property
    def classes_(self) -> np.ndarray:
        """Class labels of :attr:`best_estimator_` (with ``refit=True``)."""
        _search_estimator_has("classes_")(self)
        return self.best_estimator_.classes_

    @available_if(_search_estimator_has("predict"))
    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predict with :attr:`best_estimator_`.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples, as ``estimator.predict`` takes them.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels.
        """
        check_is_fitted(self)
        return self.best_estimator_.predict(X)

    @available_if(_search_estimator_has("predict_proba"))
    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities from :attr:`best_estimator_`.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples, as ``estimator.predict_proba`` takes them.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities, columns in the order of :attr:`classes_`.
        """
        check_is_fitted(self)
        return self.best_estimator_.predict_proba(X)

    @available_if(_search_estimator_has("decision_function"))
    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Decision scores from :attr:`best_estimator_`.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples, as ``estimator.decision_function`` takes them.

        Returns
        -------
        scores : ndarray
            What ``best_estimator_.decision_function`` returns.
        """
        check_is_fitted(self)
        return self.best_estimator_.decision_function(X)

    @available_if(_search_estimator_has("score"))
    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Score of :attr:`best_estimator_` on ``X``, ``y`` (its ``score``).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples.

        y : array-like of shape (n_samples,)
            True labels.

        Returns
        -------
        score : float
            ``best_estimator_.score(X, y)``: the accuracy for a classifier.
        """
        check_is_fitted(self)
        return self.best_estimator_.score(X, y)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        estimator_tags = get_tags(self.estimator)
        tags.estimator_type = estimator_tags.estimator_type
        tags.classifier_tags = deepcopy(estimator_tags.classifier_tags)
        tags.input_tags.pairwise = estimator_tags.input_tags.pairwise
        tags.input_tags.sparse = estimator_tags.input_tags.sparse
        return tags
