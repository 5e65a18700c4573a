"""What every episodic caller shares: the CV splitter, the evaluation, the curve
display and the episodic meta-trainer.

``EPISODE_CONSTRAINTS`` and ``EPISODE_DEFAULTS`` are the one set of parameter
constraints and defaults of ``n_way``, ``n_shot``, ``n_query`` and
``n_episodes``; ``EpisodeSampler`` draws the N-way K-shot episodes (and
warns about the classes it leaves out, but not within
``left_out_already_said``);
``reuse_frozen_features`` computes the features of a pipeline's frozen steps
once for all episodes; ``batch_predictor``, ``batchable_features`` and
``episode_batches`` let a head that declares ``BATCH_CAPABILITY`` compute many
episodes at once (see :mod:`skfewshot._batched`).

Private module (numpy and scikit-learn only, no torch).
"""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from copy import deepcopy
from numbers import Integral

import numpy as np
import scipy.sparse
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, validate_parameter_constraints
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array

__all__ = [
    "BATCH_CAPABILITY",
    "EPISODE_CONSTRAINTS",
    "EPISODE_DEFAULTS",
    "LEFT_OUT_WARNING",
    "EpisodeSampler",
    "batch_predictor",
    "batchable_features",
    "episode_batches",
    "estimator_name",
    "is_frozen_step",
    "left_out_already_said",
    "reuse_frozen_features",
    "unknown_stream",
    "user_stacklevel",
]

#: Constraints (scikit-learn ``_param_validation``) of the episode settings: an
#: episode classifies among at least 2 classes, with at least one support and
#: one query sample of each.
EPISODE_CONSTRAINTS: dict = {
    "n_way": [Interval(Integral, 2, None, closed="left")],
    "n_shot": [Interval(Integral, 1, None, closed="left")],
    "n_query": [Interval(Integral, 1, None, closed="left")],
    "n_episodes": [Interval(Integral, 1, None, closed="left")],
}

#: Defaults of the episode settings: 5-way 1-shot, 15 queries per class, 600
#: episodes (the usual protocol of few-shot papers).
EPISODE_DEFAULTS: dict = {"n_way": 5, "n_shot": 1, "n_query": 15, "n_episodes": 600}

#: How the sampler's warning that some classes are never drawn begins (a
#: ``message`` for ``warnings`` filters).
LEFT_OUT_WARNING = "Episodes are drawn from"

#: Whether the classes left out were already said in this context (see
#: :func:`left_out_already_said`): a context variable, so it holds in one
#: thread (or asyncio task) and not in the others, as a ``warnings`` filter
#: (process-wide) would.
_LEFT_OUT_SAID = ContextVar("skfewshot_left_out_said", default=False)


class EpisodeSampler:
    """Draw disjoint support/query index sets of N-way K-shot episodes from labels.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels of the pool episodes are drawn from.
    n_way, n_shot, n_query : int
        Classes per episode (>= 2), support and query samples per class (>= 1).
    groups : array-like of shape (n_samples,), default=None
        Group of each sample (e.g. the Omniglot alphabet). Used with
        ``within_groups=True``: all classes of one episode come from one group.
    within_groups : bool, default=False
        Draw every episode's classes from a single group, chosen uniformly among
        the groups that have at least ``n_way + n_unknown_way`` eligible
        classes.
    n_unknown_way : int, default=0
        Classes per episode outside the support (open-set episodes): after
        the ``n_way`` classes, exactly as drawn without this option,
        ``n_unknown_way`` other eligible classes are drawn and ``n_query``
        samples of each are appended to the queries. Their samples are drawn
        from a second generator (see :meth:`sample`), so the support and the
        known queries are those drawn without this option.
    warn : bool, default=True
        Warn (``UserWarning``) when some classes can never be drawn: those
        with fewer than ``n_shot + n_query`` samples and, with
        ``within_groups``, those of groups with fewer than ``n_way +
        n_unknown_way`` eligible classes. The warning names how many and
        points at the first caller outside skfewshot and the libraries it
        runs in (see :func:`user_stacklevel`). Not within
        :func:`left_out_already_said`.

    Attributes
    ----------
    eligible_classes_ : ndarray
        Classes with at least ``n_shot + n_query`` samples.
    drawable_classes_ : ndarray
        The classes episodes are drawn from: the eligible classes, less,
        with ``within_groups``, those of groups too small for an episode.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        When ``n_way``, ``n_shot`` or ``n_query`` breaks ``EPISODE_CONSTRAINTS``.
    ValueError
        When fewer than ``n_way`` classes (in any group, with ``within_groups``)
        have ``n_shot + n_query`` samples (the message says how many do), when
        ``y`` or ``groups`` mixes labels that cannot be sorted together (e.g.
        ints and strings, or None), or when ``groups`` contains NaN.
    """

    def __init__(
        self,
        y,
        n_way,
        n_shot,
        n_query,
        *,
        groups=None,
        within_groups=False,
        n_unknown_way=0,
        warn=True,
    ):
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, got an array of shape {y.shape}.")
        settings = {"n_way": n_way, "n_shot": n_shot, "n_query": n_query}
        validate_parameter_constraints(
            {name: EPISODE_CONSTRAINTS[name] for name in settings},
            settings,
            caller_name=type(self).__name__,
        )
        self.n_way, self.n_shot, self.n_query = int(n_way), int(n_shot), int(n_query)
        if not isinstance(n_unknown_way, Integral) or n_unknown_way < 0:
            raise ValueError(
                f"n_unknown_way must be an int >= 0, got {n_unknown_way!r}."
            )
        self.n_unknown_way = int(n_unknown_way)
        n_classes = self.n_way + self.n_unknown_way  # classes an episode draws
        need = self.n_shot + self.n_query
        classes, y_idx, counts = _sorted_labels(
            y, "y", return_inverse=True, return_counts=True
        )
        order = np.argsort(y_idx, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._members = {
            c: order[s : s + n] for c, s, n in zip(range(len(classes)), starts, counts)
        }
        eligible = np.flatnonzero(counts >= need)
        self.eligible_classes_ = classes[eligible]
        if within_groups:
            if groups is None:
                raise ValueError("within_groups=True needs groups (one per sample).")
            groups = np.asarray(groups)
            if groups.shape != y.shape:
                raise ValueError(
                    f"groups has shape {groups.shape} but y has shape {y.shape}."
                )
            _check_groups(groups)
            # group of each class: every class must sit in exactly one group
            pools = {}
            for c in eligible:
                g = np.unique(groups[self._members[c]])
                if len(g) != 1:
                    raise ValueError(
                        f"class {classes[c : c + 1].tolist()[0]!r} spans several "
                        f"groups {g.tolist()}; "
                        "within-group episodes need each class in one group."
                    )
                pools.setdefault(g[0], []).append(c)
            self._pools = [
                np.array(v) for _, v in sorted(pools.items()) if len(v) >= n_classes
            ]
            if not self._pools:
                best = max((len(v) for v in pools.values()), default=0)
                raise ValueError(
                    f"{self._asked_classes()} within one group was asked, but no group "
                    f"has that many classes with at least n_shot + n_query = {need} "
                    "samples "
                    f"(the largest group has {best})."
                )
        else:
            if len(eligible) < n_classes:
                raise ValueError(
                    f"{self._asked_classes()} classes with at least n_shot + n_query = "
                    f"{need} samples each were asked, but only {len(eligible)} of "
                    f"{len(classes)} classes have that many."
                )
            self._pools = [eligible]
        drawable = np.sort(np.concatenate(self._pools))
        self.drawable_classes_ = classes[drawable]
        if warn and len(drawable) < len(classes) and not _LEFT_OUT_SAID.get():
            warnings.warn(
                self._left_out_message(len(classes), len(eligible), len(drawable)),
                UserWarning,
                stacklevel=user_stacklevel(),
            )

    def _left_out_message(self, n_all, n_eligible, n_drawable):
        """The warning that ``n_all - n_drawable`` classes are never drawn."""
        need = self.n_shot + self.n_query
        reasons = []
        if n_all > n_eligible:
            n = n_all - n_eligible
            reasons.append(
                f"{n} {'has' if n == 1 else 'have'} fewer than n_shot + n_query = "
                f"{need} samples"
            )
        if n_eligible > n_drawable:
            n = n_eligible - n_drawable
            reasons.append(
                f"{n} {'belongs' if n == 1 else 'belong'} to groups with fewer than "
                f"{self.n_way + self.n_unknown_way} classes of {need} samples "
                f"({self._asked_classes()} is drawn within one group)"
            )
        return (
            f"{LEFT_OUT_WARNING} {n_drawable} of the {n_all} classes, never from "
            f"the other {n_all - n_drawable}: {' and '.join(reasons)}."
        )

    def _asked_classes(self):
        """``n_way=5`` or ``n_way + n_unknown_way = 5 + 5``, for messages."""
        if not self.n_unknown_way:
            return f"n_way={self.n_way}"
        return f"n_way + n_unknown_way = {self.n_way} + {self.n_unknown_way}"

    def sample(self, rng, unknown_rng=None):
        """Draw one episode.

        Parameters
        ----------
        rng : numpy.random.RandomState
            Source of randomness (use ``sklearn.utils.check_random_state``) of
            the support and the known queries: advanced exactly as it is
            without ``n_unknown_way``.
        unknown_rng : numpy.random.RandomState, default=None
            Source of the samples of the ``n_unknown_way`` classes outside the
            support (their classes come from ``rng``'s draw of the episode's
            classes, which it makes anyway). None: :func:`unknown_stream` of
            ``rng`` as it is before this episode. Unused without
            ``n_unknown_way``.

        Returns
        -------
        support_idx : ndarray of shape (n_way * n_shot,)
            Indices into ``y``, class-major (the shots of class 1, then class 2...).
        query_idx : ndarray of shape ((n_way + n_unknown_way) * n_query,)
            Indices into ``y``, class-major, disjoint from ``support_idx``:
            the queries of the support's classes, then those of the
            ``n_unknown_way`` classes outside the support.
        """
        if self.n_unknown_way and unknown_rng is None:
            unknown_rng = unknown_stream(rng)
        pool = (
            self._pools[rng.randint(len(self._pools))]
            if len(self._pools) > 1
            else self._pools[0]
        )
        # rng.choice(a, size, replace=False) is a[rng.permutation(len(a))[:size]]
        # in RandomState (same draws, same state after), at half the overhead
        order = rng.permutation(len(pool))
        chosen = pool[order[: self.n_way]]
        support, query = [], []
        for c in chosen:
            members = self._members[c]
            picks = members[rng.permutation(len(members))[: self.n_shot + self.n_query]]
            support.append(picks[: self.n_shot])
            query.append(picks[self.n_shot :])
        # open-set classes: the next ones of the permutation drawn anyway, and
        # their samples from the second stream, so that rng (the known part,
        # and every later episode) is what it is without them
        for c in pool[order[self.n_way : self.n_way + self.n_unknown_way]]:
            members = self._members[c]
            query.append(members[unknown_rng.permutation(len(members))[: self.n_query]])
        return np.concatenate(support), np.concatenate(query)

    def episodes(self, rng, n_episodes):
        """Draw ``n_episodes`` episodes lazily, one per iteration.

        Each episode is drawn only when the caller asks for the next one, so
        memory does not grow with ``n_episodes``; the episodes are those of
        ``n_episodes`` successive calls ``sample(rng, unknown_rng)``, with
        ``unknown_rng = unknown_stream(rng)`` derived once, before the first
        episode (with ``n_unknown_way``).

        Parameters
        ----------
        rng : numpy.random.RandomState
            Source of randomness, advanced by each episode drawn.
        n_episodes : int
            Number of episodes.

        Yields
        ------
        support_idx, query_idx : ndarray
            One episode, as returned by :meth:`sample`.
        """
        unknown_rng = unknown_stream(rng) if self.n_unknown_way else None
        for _ in range(n_episodes):
            yield self.sample(rng, unknown_rng)


def unknown_stream(rng):
    """A second generator, a function of ``rng``'s state, which it leaves as is.

    The samples of open-set episodes' unknown classes come from it, so that
    ``rng`` draws the same support and known queries, episode after episode,
    as without unknown classes: the same seed keeps its episodes. Seeded by
    a :class:`numpy.random.SeedSequence` of the next draws of a copy of
    ``rng`` (``rng`` itself does not move), so it does not repeat ``rng``'s
    stream.
    """
    entropy = deepcopy(rng).randint(0, 2**32, size=8, dtype=np.uint32)
    return np.random.RandomState(np.random.MT19937(np.random.SeedSequence(entropy)))


def _sorted_labels(values, name, **kwargs):
    """``np.unique(values, **kwargs)``; a ValueError naming ``name`` when the
    labels cannot be sorted together (ints and strings, None)."""
    try:
        return np.unique(values, **kwargs)
    except TypeError as exc:
        types = sorted({type(value).__name__ for value in values.tolist()})
        raise ValueError(
            f"{name} mixes labels of types {', '.join(types)}, which cannot be "
            f"sorted together; give {name} labels of one type (e.g. all str)."
        ) from exc


def _check_groups(groups):
    """ValueError when ``groups`` has NaN or labels that cannot be sorted."""
    if groups.dtype.kind == "f":
        missing = np.isnan(groups)
    elif groups.dtype.kind == "O":
        missing = np.array(
            [isinstance(v, (float, np.floating)) and np.isnan(v) for v in groups],
            dtype=bool,
        )
    else:
        missing = np.zeros(groups.shape, dtype=bool)
    if missing.any():
        raise ValueError(
            f"groups contains NaN ({int(missing.sum())} of {len(groups)} samples); "
            "give every sample a group."
        )
    _sorted_labels(groups, "groups")


@contextmanager
def left_out_already_said():
    """Within it, :class:`EpisodeSampler` does not warn about classes left out.

    For a caller that has said it once, by a sampler of its own (its check
    of the episodes before any work), and then draws the same episodes
    again: each candidate of a search, the validation at every epoch's end.
    A context variable, not a ``warnings`` filter: it holds in the thread
    (or asyncio task) that enters it only, so a sampler of another thread
    meanwhile still warns, and the other warnings are left alone. Nests.

    Examples
    --------
    >>> import warnings
    >>> from skfewshot._episodes import EpisodeSampler, left_out_already_said
    >>> y = [0, 0, 1, 1, 2]  # class 2: too few samples for 1 shot + 1 query
    >>> with warnings.catch_warnings(record=True) as said:
    ...     warnings.simplefilter("always")
    ...     _ = EpisodeSampler(y, n_way=2, n_shot=1, n_query=1)
    ...     with left_out_already_said():
    ...         _ = EpisodeSampler(y, n_way=2, n_shot=1, n_query=1)
    >>> [str(w.message) for w in said]
    ['Episodes are drawn from 2 of the 3 classes, never from the other 1:
      1 has fewer than n_shot + n_query = 2 samples.']
    """
    token = _LEFT_OUT_SAID.set(True)
    try:
        yield
    finally:
        _LEFT_OUT_SAID.reset(token)


#: Top-level packages whose frames a warning of skfewshot looks past to
#: reach the user's call (see :func:`user_stacklevel`): skfewshot, and the
#: libraries that call back into it (scikit-learn's tools, skorch's
#: training loop and callbacks, joblib's dispatch).
_LIBRARIES = frozenset({"skfewshot", "sklearn", "skorch", "joblib"})


def _library_frame(frame):
    """Whether ``frame`` runs code of one of ``_LIBRARIES``."""
    module = frame.f_globals.get("__name__", "")
    return module.split(".")[0] in _LIBRARIES


def user_stacklevel():
    """``stacklevel`` making the caller's warning point at the user's code.

    For ``warnings.warn`` in the function calling this one: the first frame
    above that function that runs none of ``_LIBRARIES`` (skfewshot,
    scikit-learn, skorch, joblib): a warning raised deep in an evaluation, a
    split, a search or a training callback points at the call that started
    it.
    """
    frame, stacklevel = sys._getframe(2), 2  # the caller's caller is level 2
    while frame.f_back is not None and _library_frame(frame):
        frame, stacklevel = frame.f_back, stacklevel + 1
    return stacklevel


def is_frozen_step(step) -> bool:
    """Whether a pipeline step's features can be computed once for all episodes.

    True for a step that declares the class attribute ``frozen_features = True``
    and for a :class:`~sklearn.frozen.FrozenEstimator`; no class is special-cased.
    """
    return getattr(step, "frozen_features", False) is True or isinstance(
        step, FrozenEstimator
    )


def _split_frozen_prefix(estimator):
    """Split a pipeline into its leading frozen steps and the rest.

    Returns ``(prefix_steps, rest)`` where ``prefix_steps`` is the list of
    leading frozen steps (``"passthrough"`` included) and ``rest`` the estimator
    fitted per episode; ``([], estimator)`` when there is nothing to reuse,
    or when ``estimator`` is a subclass of ``Pipeline`` that overrides one of
    ``_PIPELINE_METHODS`` (its own ``fit`` or ``predict`` must see the raw
    rows, as ``cross_val_score`` gives them).
    """
    if not _plain_pipeline(estimator):
        return [], estimator
    n_frozen = 0
    for _, step in estimator.steps[:-1]:
        if step is None or step == "passthrough" or is_frozen_step(step):
            n_frozen += 1
        else:
            break
    prefix = [step for _, step in estimator.steps[:n_frozen]]
    if not any(is_frozen_step(step) for step in prefix):
        return [], estimator
    return prefix, estimator[n_frozen:]


def reuse_frozen_features(estimator, X, y):
    """Run the frozen prefix of ``estimator`` on ``X`` once.

    Returns ``(Xt, head)``: the features of ``X`` after the leading frozen
    steps (``X`` itself when there are none) and the part of ``estimator`` to
    fit per episode on them. The frozen steps are cloned, so ``estimator`` is
    left untouched.
    """
    prefix, head = _split_frozen_prefix(estimator)
    for step in prefix:
        if step is not None and step != "passthrough":
            X = clone(step).fit(X, y).transform(X)
    return X, head


def estimator_name(estimator) -> str:
    """Readable name: the class, or a pipeline's step classes joined by ``+``."""
    if isinstance(estimator, Pipeline):
        return "+".join(
            type(step).__name__
            for _, step in estimator.steps
            if step is not None and step != "passthrough"
        )
    return type(estimator).__name__


#: Method by which a head class declares that its episodes can be computed in
#: batches: ``head._fewshot_batch_predictor()`` returns a batch predictor or
#: None (the protocol is documented in :mod:`skfewshot._batched`).
BATCH_CAPABILITY = "_fewshot_batch_predictor"

#: Methods whose override in a subclass voids the capability its parent
#: declared: the batched computation would no longer be what they compute.
#: The public ones and every method they delegate to on the batched options
#: (the logits of ``PrototypeClassifier`` go through ``_scores``, then
#: ``_scale_dependent_logits`` for "dot" and "euclidean"; both heads'
#: ``_logits`` validate the queries with ``_validate_queries``).
_PREDICTION_METHODS = (
    "fit",
    "predict",
    "predict_proba",
    "decision_function",
    "_logits",
    "_validate_queries",
    "_scores",
    "_scale_dependent_logits",
    "_rectify",
    "_shifted",
    "_fine_tune",
)

#: Methods of :class:`~sklearn.pipeline.Pipeline` whose override in a
#: subclass makes the pipeline more than its steps: such a pipeline is fitted
#: and asked to predict as a whole, per episode (no frozen features reused,
#: no batching of its head). The prediction methods above (``fit`` and
#: ``predict`` among them) and what ``Pipeline`` runs them with.
_PIPELINE_METHODS = _PREDICTION_METHODS + (
    "fit_predict",
    "fit_transform",
    "transform",
    "score",
    "__getitem__",
    "_fit",
    "_iter",
    "_final_estimator",
)

#: Episodes per batch, and the most feature entries one batch's stacked
#: support and query features may hold (32 MiB of float32): memory is bounded
#: by the batch, whatever ``n_episodes``.
BATCH_EPISODES = 64
_BATCH_ENTRIES = 1 << 23


def _overrides(cls, base, names):
    """Whether a class of ``cls``'s MRO before ``base`` defines one of ``names``."""
    mro = cls.__mro__
    return any(name in vars(c) for c in mro[: mro.index(base)] for name in names)


def _plain_pipeline(estimator):
    """Whether ``estimator`` is a ``Pipeline`` that is nothing but its steps.

    True for a :class:`~sklearn.pipeline.Pipeline` and for a subclass that
    overrides none of ``_PIPELINE_METHODS``: episodic callers may then take
    it apart (reuse its frozen steps' features, batch its one head).
    """
    return isinstance(estimator, Pipeline) and not _overrides(
        type(estimator), Pipeline, _PIPELINE_METHODS
    )


def batch_predictor(head, X, y):
    """The batched computation ``head`` declares for episodes of ``X``, or None.

    ``head`` is what is fitted per episode: an estimator, or a pipeline whose
    steps other than ``"passthrough"`` are one estimator (a ``Pipeline``
    subclass only when it overrides none of ``_PIPELINE_METHODS``). The
    capability is the method ``BATCH_CAPABILITY`` of the head's class; it
    covers the class that declares it, so a subclass that overrides one of
    ``_PREDICTION_METHODS`` must declare it again to be batched. No class is
    special-cased.

    Returns
    -------
    batched : tuple or None
        ``(predict, finite_rows, features)``: the batch predictor for
        ``features``, the float ndarray of ``X`` (see
        :mod:`skfewshot._batched`), and a boolean mask of its rows whose
        entries are all finite (an episode that draws another row must take
        the per-episode path, where the head reports it). None when the head
        declares nothing, declines its parameters, or ``X`` and ``y`` are not
        dense numeric features and class labels (see
        :func:`batchable_features`).
    """
    if isinstance(head, Pipeline):
        if not _plain_pipeline(head):
            return None
        steps = [s for _, s in head.steps if s is not None and s != "passthrough"]
        if len(steps) != 1:
            return None
        head = steps[0]
    mro = type(head).__mro__
    declarer = next((cls for cls in mro if BATCH_CAPABILITY in vars(cls)), None)
    if declarer is None or _overrides(type(head), declarer, _PREDICTION_METHODS):
        return None
    X = batchable_features(X, y)
    if X is None:
        return None
    predict = getattr(head, BATCH_CAPABILITY)(X)
    return None if predict is None else (predict, _finite_rows(X), X)


def batchable_features(X, y):
    """``X`` as a dense float ndarray when episodes of it can be batched, else None.

    Batched heads need dense numeric 2-D features and class labels that stay
    class labels in every episode (binary or multiclass targets); anything
    else takes the per-episode path, which accepts or reports it as the head
    does. float32 stays float32, other numbers become float64, as the heads'
    own validation converts them; non-finite values are kept (only the rows
    an episode draws matter, see :func:`batch_predictor`).
    """
    if type_of_target(y) not in ("binary", "multiclass"):
        return None
    if scipy.sparse.issparse(X):
        return None
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        return None
    return check_array(
        X, dtype=[np.float64, np.float32], ensure_all_finite=False, order="C"
    )


def _finite_rows(X):
    """Mask of the rows of ``X`` with finite entries only, block by block."""
    finite = np.empty(X.shape[0], dtype=bool)
    for rows in gen_batches(X.shape[0], max(1, _BATCH_ENTRIES // max(1, X.shape[1]))):
        finite[rows] = np.isfinite(X[rows]).all(axis=1)
    return finite


def episode_batches(episodes, n_episodes, rows_per_episode, n_features):
    """Group lazily drawn episodes into lists of at most ``BATCH_EPISODES``.

    The batch shrinks so that its stacked features hold at most
    ``_BATCH_ENTRIES`` entries (one episode at least); each batch is drawn
    only when the previous one has been consumed.
    """
    fit = _BATCH_ENTRIES // max(1, rows_per_episode * n_features)
    size = max(1, min(BATCH_EPISODES, fit, n_episodes))
    batch = []
    for episode in episodes:
        batch.append(episode)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
