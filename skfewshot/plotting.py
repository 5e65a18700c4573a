"""Accuracy-vs-shots curves with a 95% confidence band, in scikit-learn's Display style.

matplotlib is an optional extra (``pip install 'skfewshot[plot]'``): importing this
module never needs it; drawing does, and says so clearly when it is missing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._optional_dependencies import check_matplotlib_support
from sklearn.utils._param_validation import validate_parameter_constraints
from sklearn.utils.validation import check_array, check_consistent_length, indexable

from ._episodes import (
    EPISODE_CONSTRAINTS,
    EPISODE_DEFAULTS,
    EpisodeSampler,
    estimator_name,
    reuse_frozen_features,
)
from ._utils import seed_from
from .model_selection import evaluate_episodes

__all__ = ["FewShotCurveDisplay"]

_SCORE_ATTRS = ("n_shot", "n_way", "mean", "ci95")


def _check_shots(shots):
    """Shot counts as a 1-D int array of distinct values >= 1."""
    arr = np.asarray(shots)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"shots must be a non-empty 1-D sequence of ints, got {shots!r}."
        )
    if arr.dtype.kind not in "iu" and not (
        arr.dtype.kind == "f" and np.all(arr == np.round(arr))
    ):
        raise ValueError(f"shots must be ints, got {shots!r}.")
    arr = arr.astype(int)
    if np.any(arr < 1):
        raise ValueError(f"shots must all be >= 1, got {arr.tolist()}.")
    if len(np.unique(arr)) != len(arr):
        raise ValueError(f"shots must be distinct, got {arr.tolist()}.")
    return arr


def _check_names(names, n_estimators):
    """``None``, one string (one estimator) or a list of ``n_estimators`` strings."""
    if names is None:
        return [None] * n_estimators
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if len(names) != n_estimators:
        raise ValueError(
            f"got {len(names)} estimator names {names!r} for {n_estimators} "
            "estimator(s); give one name per estimator."
        )
    return names


def _check_curves(shots, mean, ci95):
    """Validate the curve arrays; returns shots (n_shots,), mean and ci95 2-D."""
    shots = _check_shots(shots)
    arrays = []
    for label, values in (("mean", mean), ("ci95", ci95)):
        arr = np.asarray(values, dtype=float)
        if arr.ndim == 1:
            arr = arr[np.newaxis, :]
        if arr.ndim != 2 or arr.shape[1] != len(shots):
            raise ValueError(
                f"{label} must have shape (n_estimators, n_shots) = (?, {len(shots)}) "
                f"to match shots={shots.tolist()}, got shape {np.shape(values)}."
            )
        arrays.append(arr)
    mean, ci95 = arrays
    if mean.shape != ci95.shape:
        raise ValueError(
            f"mean has shape {mean.shape} but ci95 has shape {ci95.shape}; "
            "they must match."
        )
    if np.any(ci95 < 0):
        raise ValueError(f"ci95 must be >= 0 (a half-width), got {ci95.tolist()}.")
    return shots, mean, ci95


class FewShotCurveDisplay:
    """Few-shot accuracy versus shots per class, with a 95% confidence band.

    One line per estimator: the mean episode accuracy at each number of shots K,
    with a shaded band ``mean +/- ci95``. It is recommended to build it with
    :meth:`from_estimator` (runs the episodes) or :meth:`from_scores` (from
    :class:`~skfewshot.model_selection.EpisodeScores` already computed). All
    parameters are stored as attributes; :meth:`plot` draws them.

    Parameters
    ----------
    shots : array-like of int of shape (n_shots,)
        Shots per class (K) of each point, distinct and >= 1.

    mean : array-like of shape (n_estimators, n_shots) or (n_shots,)
        Mean episode accuracy of each estimator at each shot count.

    ci95 : array-like of the same shape as ``mean``
        Half-width of the 95% confidence interval of each mean.

    estimator_names : list of str, default=None
        Legend label of each estimator. ``None`` draws no legend.

    n_way : int, default=None
        Classes per episode; titles the axes ``"{n_way}-way"`` when given.

    scores : dict of str to list of EpisodeScores, or list, default=None
        The episodic results the curves summarise, as given to :meth:`from_scores`
        (:meth:`from_estimator` stores the dict it computed); kept so the
        per-episode accuracies stay at hand, not used for drawing.

    Attributes
    ----------
    lines_ : list of matplotlib Line2D
        One line per estimator (markers at the shot values).

    bands_ : list of matplotlib PolyCollection
        One ``mean +/- ci95`` band per estimator, in the colour of its line.

    ax_ : matplotlib Axes
        Axes with the curves.

    figure_ : matplotlib Figure
        Figure containing the curves.

    See Also
    --------
    skfewshot.model_selection.evaluate_episodes : Episodic accuracy with its 95% CI.
    sklearn.model_selection.LearningCurveDisplay : The curve of accuracy against
        training-set size, for the usual (not few-shot) setting.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skfewshot.plotting import FewShotCurveDisplay
    >>> display = FewShotCurveDisplay(
    ...     shots=[1, 5, 10],
    ...     mean=[[0.52, 0.71, 0.78], [0.55, 0.76, 0.83]],
    ...     ci95=[[0.02, 0.015, 0.01], [0.02, 0.015, 0.01]],
    ...     estimator_names=["prototypes", "fine-tuned"],
    ...     n_way=5,
    ... )
    >>> display.plot()
    <skfewshot.plotting.FewShotCurveDisplay object at ...>
    >>> display.ax_.get_title()
    '5-way'
    >>> [text.get_text() for text in display.ax_.get_legend().get_texts()]
    ['prototypes', 'fine-tuned']
    """

    def __init__(
        self,
        *,
        shots: ArrayLike,
        mean: ArrayLike,
        ci95: ArrayLike,
        estimator_names: Sequence[str] | None = None,
        n_way: int | None = None,
        scores: Mapping | Sequence | None = None,
    ) -> None:
        self.shots = shots
        self.mean = mean
        self.ci95 = ci95
        self.estimator_names = estimator_names
        self.n_way = n_way
        self.scores = scores

    def plot(
        self,
        ax=None,
        *,
        names: str | Sequence[str] | None = None,
        band_alpha: float = 0.2,
        **kwargs,
    ) -> FewShotCurveDisplay:
        """Draw the curves and their confidence bands.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure and axes.

        names : str or list of str, default=None
            Legend labels, overriding ``estimator_names``.

        band_alpha : float, default=0.2
            Opacity of the confidence bands.

        **kwargs : dict
            Passed to :meth:`matplotlib.axes.Axes.plot` for every line (e.g.
            ``linewidth``, ``marker``).

        Returns
        -------
        display : FewShotCurveDisplay
            This object, with ``ax_``, ``figure_``, ``lines_`` and ``bands_`` set.
        """
        check_matplotlib_support(f"{type(self).__name__}.plot")
        import matplotlib.pyplot as plt
        from sklearn.utils._plotting import _validate_style_kwargs

        shots, mean, ci95 = _check_curves(self.shots, self.mean, self.ci95)
        names = _check_names(
            self.estimator_names if names is None else names, len(mean)
        )
        order = np.argsort(shots, kind="stable")
        shots, mean, ci95 = shots[order], mean[:, order], ci95[:, order]

        if ax is None:
            _, ax = plt.subplots()
        line_kwargs = _validate_style_kwargs({"marker": "o"}, kwargs)
        self.lines_, self.bands_ = [], []
        for m, ci, name in zip(mean, ci95, names):
            (line,) = ax.plot(shots, m, label=name, **line_kwargs)
            band = ax.fill_between(
                shots,
                m - ci,
                m + ci,
                color=line.get_color(),
                alpha=band_alpha,
                linewidth=0,
            )
            self.lines_.append(line)
            self.bands_.append(band)

        # K doubles more often than it steps by one: a log2 axis labelled at each K
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, labels=[str(k) for k in shots])
        ax.set_xticks([], minor=True)
        ax.set(xlabel="shots per class (K)", ylabel="accuracy")
        if self.n_way is not None:
            ax.set_title(f"{self.n_way}-way")
        ax.grid(True, alpha=0.3)
        if any(name is not None for name in names):
            ax.legend(loc="lower right")

        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_scores(
        cls,
        scores: Mapping[str, Sequence] | Sequence,
        *,
        names: str | Sequence[str] | None = None,
        ax=None,
        band_alpha: float = 0.2,
        **kwargs,
    ) -> FewShotCurveDisplay:
        """Plot the curves from episodic scores already computed.

        Parameters
        ----------
        scores : dict of str to list of EpisodeScores, or list of EpisodeScores
            For each estimator (the dict keys name them), one
            :class:`~skfewshot.model_selection.EpisodeScores` per shot count, as
            returned by :func:`~skfewshot.model_selection.evaluate_episodes`. A
            plain list is the scores of one estimator. Every estimator must have
            the same shot counts, all with the same ``n_way``; the order of a list
            does not matter (points are sorted by ``n_shot``).

        names : str or list of str, default=None
            Legend labels; default the dict keys, or for a plain list the
            ``estimator_name`` of its scores (no legend when that is empty).

        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure and axes.

        band_alpha : float, default=0.2
            Opacity of the confidence bands.

        **kwargs : dict
            Passed to :meth:`matplotlib.axes.Axes.plot` for every line.

        Returns
        -------
        display : FewShotCurveDisplay
            The display, drawn.

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from types import SimpleNamespace
        >>> from skfewshot.plotting import FewShotCurveDisplay
        >>> def point(k, mean):  # stands in for evaluate_episodes(..., n_shot=k)
        ...     return SimpleNamespace(n_shot=k, n_way=5, mean=mean, ci95=0.01)
        >>> display = FewShotCurveDisplay.from_scores(
        ...     {"prototypes": [point(1, 0.5), point(5, 0.7)],
        ...      "fine-tuned": [point(1, 0.55), point(5, 0.75)]}
        ... )
        >>> display.mean
        array([[0.5 , 0.7 ],
               [0.55, 0.75]])
        >>> display.lines_[1].get_label()
        'fine-tuned'
        """
        check_matplotlib_support(f"{cls.__name__}.from_scores")
        if isinstance(scores, Mapping):
            keys, per_estimator = list(scores), list(scores.values())
        elif isinstance(scores, Sequence) and not isinstance(scores, str):
            keys, per_estimator = [None], [scores]
            if names is None and scores:
                names = getattr(scores[0], "estimator_name", None) or None
        else:
            raise TypeError(
                "scores must be a dict of name -> list of EpisodeScores, or a list "
                f"of EpisodeScores for one estimator; got {type(scores).__name__}."
            )
        if not per_estimator:
            raise ValueError("scores is empty; give at least one estimator.")
        names = _check_names(keys if names is None else names, len(per_estimator))

        shots, n_way, mean, ci95 = None, None, [], []
        for key, points in zip(keys, per_estimator):
            who = "scores" if key is None else f"scores[{key!r}]"
            points = _sorted_points(points, who)
            k = [p.n_shot for p in points]
            if shots is None:
                shots = k
            elif k != shots:
                raise ValueError(
                    f"{who} has shots {k} but the first estimator has {shots}; "
                    "every estimator needs the same shot counts."
                )
            for p in points:
                if n_way is None:
                    n_way = p.n_way
                elif p.n_way != n_way:
                    raise ValueError(
                        f"{who} mixes n_way={p.n_way} with n_way={n_way}; one "
                        "curve display shows one n_way."
                    )
            mean.append([float(p.mean) for p in points])
            ci95.append([float(p.ci95) for p in points])

        display = cls(
            shots=np.asarray(shots, dtype=int),
            mean=np.asarray(mean),
            ci95=np.asarray(ci95),
            estimator_names=None if all(n is None for n in names) else names,
            n_way=n_way,
            scores=scores,
        )
        return display.plot(ax=ax, band_alpha=band_alpha, **kwargs)

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        y,
        *,
        shots: Sequence[int] = (1, 5),
        n_way: int = EPISODE_DEFAULTS["n_way"],
        n_query: int = EPISODE_DEFAULTS["n_query"],
        n_episodes: int = EPISODE_DEFAULTS["n_episodes"],
        groups: ArrayLike | None = None,
        within_groups: bool = False,
        random_state: int | np.random.RandomState | None = None,
        n_jobs: int | None = None,
        name: str | None = None,
        ax=None,
        band_alpha: float = 0.2,
        verbose: int = 0,
        **kwargs,
    ) -> FewShotCurveDisplay:
        """Run episodes at each shot count and plot accuracy versus shots.

        Calls :func:`~skfewshot.model_selection.evaluate_episodes` once per
        estimator and shot count. Every estimator is evaluated on the same
        episodes (one seed per shot count, drawn from ``random_state``), so the
        lines compare like with like. The frozen feature extractors leading a
        pipeline (e.g. a :class:`~skfewshot.backbone.BackboneTransformer`) run
        once per estimator for all shot counts, as ``evaluate_episodes`` does
        for the episodes of one shot count.

        Every shot count draws its episodes from the same classes: those the
        largest shot count can draw (at least ``max(shots) + n_query``
        samples; with ``within_groups``, in a group with ``n_way`` such
        classes), so that the points of a line differ by the shots only, not
        by which classes they average over. A warning says how many classes
        that leaves out.

        Parameters
        ----------
        estimator : estimator or dict of str to estimator
            A classifier (or pipeline) whose ``fit`` takes a support set and whose
            ``predict`` labels the queries; or a dict of them, one line each, the
            keys being the legend labels.

        X : array-like of shape (n_samples, ...)
            The pool episodes are drawn from (usually novel classes).

        y : array-like of shape (n_samples,)
            Class labels of ``X``.

        shots : sequence of int, default=(1, 5)
            Shots per class (K) to evaluate, in any order (evaluated and stored
            in increasing order).

        n_way : int, default=5
            Classes per episode.

        n_query : int, default=15
            Query samples per class in each episode.

        n_episodes : int, default=600
            Episodes per shot count and estimator.

        groups : array-like of shape (n_samples,), default=None
            Group of each sample (e.g. the Omniglot alphabet), used with
            ``within_groups=True``.

        within_groups : bool, default=False
            Draw all classes of an episode from one group.

        random_state : int, RandomState instance or None, default=None
            Seeds the episodes; an int gives the same figure every time.

        n_jobs : int, default=None
            Parallel jobs for the episodes (see ``evaluate_episodes``).

        name : str, default=None
            Legend label of a single estimator; default its class name (a
            pipeline's step class names joined by ``+``). Not allowed with a dict
            (its keys are the names).

        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure and axes.

        band_alpha : float, default=0.2
            Opacity of the confidence bands.

        verbose : int, default=0
            Progress output of ``evaluate_episodes``.

        **kwargs : dict
            Passed to :meth:`matplotlib.axes.Axes.plot` for every line.

        Returns
        -------
        display : FewShotCurveDisplay
            The display, drawn; ``display.scores`` holds the EpisodeScores.

        Raises
        ------
        ValueError
            When fewer than ``n_way`` classes have ``max(shots) + n_query``
            samples (within one group, with ``within_groups``), and for the
            other bad inputs of ``evaluate_episodes``.

        Warns
        -----
        UserWarning
            When some classes have too few samples for the largest shot count:
            they are left out at every shot count.

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from sklearn.datasets import make_blobs
        >>> from sklearn.neighbors import NearestCentroid
        >>> from skfewshot.plotting import FewShotCurveDisplay
        >>> from sklearn.neighbors import KNeighborsClassifier
        >>> X, y = make_blobs(n_samples=300, centers=10, cluster_std=3, random_state=0)
        >>> display = FewShotCurveDisplay.from_estimator(
        ...     {"centroid": NearestCentroid(), "3-NN": KNeighborsClassifier(3)},
        ...     X, y, shots=[3, 5, 10], n_way=5, n_episodes=20, random_state=0,
        ... )
        >>> display.mean.shape
        (2, 3)
        >>> print(display.scores["centroid"][0])
        61.7 ± 5.8 % (95% CI, 20 episodes, 5-way 3-shot)
        >>> display.ax_.get_xlabel()
        'shots per class (K)'
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        if isinstance(estimator, Mapping):
            if name is not None:
                raise ValueError(
                    f"name={name!r} labels a single estimator; with a dict of "
                    "estimators the keys are the names."
                )
            if not estimator:
                raise ValueError("estimator is an empty dict; give at least one.")
            estimators = dict(estimator)
        else:
            estimators = {
                estimator_name(estimator) if name is None else name: estimator
            }
        shots = np.sort(_check_shots(shots))
        X, y, groups = _classes_of_the_largest_shot_count(
            X,
            y,
            groups,
            n_way=n_way,
            n_shot=int(shots[-1]),
            n_query=n_query,
            n_episodes=n_episodes,
            within_groups=within_groups,
        )
        # one seed per shot count, shared by every estimator: the same episodes
        rng = check_random_state(random_state)
        seeds = [seed_from(rng) for _ in shots]

        scores = {}
        for label, est in estimators.items():
            # a frozen backbone runs once per estimator, not once per shot count
            # (the same reuse evaluate_episodes does within one shot count)
            X_head, head = reuse_frozen_features(est, X, y)
            scores[label] = [
                replace(
                    evaluate_episodes(
                        head,
                        X_head,
                        y,
                        n_way=n_way,
                        n_shot=int(k),
                        n_query=n_query,
                        n_episodes=n_episodes,
                        groups=groups,
                        within_groups=within_groups,
                        random_state=seed,
                        n_jobs=n_jobs,
                        verbose=verbose,
                    ),
                    estimator_name=estimator_name(est),
                )
                for k, seed in zip(shots, seeds)
            ]
        return cls.from_scores(scores, ax=ax, band_alpha=band_alpha, **kwargs)


def _classes_of_the_largest_shot_count(X, y, groups, *, within_groups, **settings):
    """``X``, ``y`` and ``groups`` restricted to the classes episodes of the
    largest shot count can draw (all of them, unchanged, when none is left
    out; a warning says how many are).

    Episodes of fewer shots could draw more classes (smaller ones): the
    points of one curve would then average over different classes.
    Validates the settings, ``y`` and ``groups`` before any backbone runs.
    """
    validate_parameter_constraints(
        EPISODE_CONSTRAINTS, settings, caller_name="FewShotCurveDisplay.from_estimator"
    )
    X, y, groups = indexable(X, y, groups)
    check_consistent_length(X, y, groups)
    y = check_array(y, input_name="y", ensure_2d=False, dtype=None)
    sampler = EpisodeSampler(
        y,
        settings["n_way"],
        settings["n_shot"],
        settings["n_query"],
        groups=groups if within_groups else None,
        within_groups=within_groups,
        warn=False,
    )
    keep = np.isin(y, sampler.drawable_classes_)
    if keep.all():
        return X, y, groups
    n_classes = len(np.unique(y))
    n_left_out = n_classes - len(sampler.drawable_classes_)
    need = settings["n_shot"] + settings["n_query"]
    in_groups = " in a group with n_way such classes" if within_groups else ""
    warnings.warn(
        f"FewShotCurveDisplay.from_estimator leaves out {n_left_out} of the "
        f"{n_classes} classes at every shot count: the largest, "
        f"{settings['n_shot']} shots, draws only classes with at least "
        f"max(shots) + n_query = {need} samples{in_groups}, and every point "
        "averages over the same classes.",
        UserWarning,
        stacklevel=3,
    )
    rows = np.flatnonzero(keep)
    groups = None if groups is None else _safe_indexing(groups, rows)
    return _safe_indexing(X, rows), y[rows], groups


def _sorted_points(points, who):
    """The EpisodeScores of one estimator, checked and sorted by ``n_shot``."""
    if not isinstance(points, Sequence) or isinstance(points, str):
        raise TypeError(
            f"{who} must be a list of EpisodeScores (one per shot count), got "
            f"{type(points).__name__}."
        )
    if not points:
        raise ValueError(f"{who} is empty; give one EpisodeScores per shot count.")
    for i, p in enumerate(points):
        missing = [a for a in _SCORE_ATTRS if not hasattr(p, a)]
        if missing:
            raise TypeError(
                f"{who}[{i}] is a {type(p).__name__} without {missing}; expected "
                "EpisodeScores from evaluate_episodes."
            )
    points = sorted(points, key=lambda p: p.n_shot)
    k = [p.n_shot for p in points]
    if len(set(k)) != len(k):
        raise ValueError(f"{who} has repeated shot counts {k}; give one per K.")
    return points
