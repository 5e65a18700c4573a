"""Tests for skfewshot.model_selection: EpisodicSplit, evaluate_episodes and
EpisodeScores."""

import inspect
import math
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from _memory_testing import peak_bytes
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from skfewshot._episodes import EPISODE_DEFAULTS, _split_frozen_prefix
from skfewshot.model_selection import EpisodeScores, EpisodicSplit, evaluate_episodes

N_CLASSES, PER_CLASS, DIM = 8, 12, 4


@pytest.fixture
def blobs():
    """8 classes x 12 samples of overlapping 4-d blobs; classes 0-3 in group 'a',
    4-7 in group 'b'. Overlap keeps per-episode accuracies below 1, so equality
    checks between code paths compare varied numbers."""
    rng = np.random.RandomState(0)
    centers = rng.normal(scale=1.5, size=(N_CLASSES, DIM))
    y = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    X = centers[y] + rng.normal(size=(len(y), DIM))
    groups = np.where(y < 4, "a", "b")
    return X, y, groups


def hand_accuracies(estimator, X, y, cv, groups=None):
    """The protocol written out: fit a clone on the support, accuracy on queries."""
    return np.array(
        [
            np.mean(clone(estimator).fit(X[s], y[s]).predict(X[q]) == y[q])
            for s, q in cv.split(X, y, groups)
        ]
    )


# --------------------------------------------------------------------- split


@pytest.mark.parametrize("n_way, n_shot, n_query", [(5, 1, 15), (3, 4, 2), (8, 2, 3)])
def test_split_sizes_disjoint_and_class_counts(n_way, n_shot, n_query):
    y = np.repeat(np.arange(10), 20)
    cv = EpisodicSplit(
        n_way, n_shot=n_shot, n_query=n_query, n_episodes=25, random_state=0
    )
    splits = list(cv.split(np.zeros(len(y)), y))
    assert len(splits) == cv.get_n_splits() == 25
    for support, query in splits:
        assert support.shape == (n_way * n_shot,)
        assert query.shape == (n_way * n_query,)
        assert np.intersect1d(support, query).size == 0
        assert len(np.unique(support)) == len(support)
        classes, counts = np.unique(y[support], return_counts=True)
        assert len(classes) == n_way and set(counts) == {n_shot}
        q_classes, q_counts = np.unique(y[query], return_counts=True)
        np.testing.assert_array_equal(q_classes, classes)
        assert set(q_counts) == {n_query}


def test_split_skips_classes_too_small():
    # class 2 has 3 samples < n_shot + n_query = 4: never drawn
    y = np.array([0] * 5 + [1] * 5 + [2] * 3 + [3] * 4)
    cv = EpisodicSplit(n_way=3, n_shot=1, n_query=3, n_episodes=30, random_state=0)
    message = (
        "Episodes are drawn from 3 of the 4 classes, never from the other 1: 1 "
        "has fewer than n_shot + n_query = 4 samples."
    )
    with pytest.warns(UserWarning, match=f"^{re.escape(message)}$") as record:
        drawn = np.concatenate([y[s] for s, _ in cv.split(y, y)])
    assert len(record) == 1 and record[0].filename == __file__
    assert set(drawn) == {0, 1, 3}


def test_split_int_random_state_is_deterministic(blobs):
    X, y, _ = blobs
    cv = EpisodicSplit(3, n_shot=2, n_query=4, n_episodes=10, random_state=42)
    first, second = list(cv.split(X, y)), list(cv.split(X, y))
    again = list(
        EpisodicSplit(3, n_shot=2, n_query=4, n_episodes=10, random_state=42).split(
            X, y
        )
    )
    for (s1, q1), (s2, q2), (s3, q3) in zip(first, second, again):
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(q1, q2)
        np.testing.assert_array_equal(s1, s3)
        np.testing.assert_array_equal(q1, q3)
    other = list(
        EpisodicSplit(3, n_shot=2, n_query=4, n_episodes=10, random_state=43).split(
            X, y
        )
    )
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))


@pytest.mark.parametrize("random_state", [None, "instance"])
def test_split_new_episodes_on_each_call(blobs, random_state):
    X, y, _ = blobs
    if random_state == "instance":
        random_state = np.random.RandomState(0)
    cv = EpisodicSplit(3, n_shot=2, n_query=4, n_episodes=10, random_state=random_state)
    first = np.concatenate([s for s, _ in cv.split(X, y)])
    second = np.concatenate([s for s, _ in cv.split(X, y)])
    assert not np.array_equal(first, second)


def test_split_within_groups(blobs):
    X, y, groups = blobs
    cv = EpisodicSplit(
        3, n_shot=1, n_query=2, n_episodes=40, within_groups=True, random_state=0
    )
    seen = set()
    for support, query in cv.split(X, y, groups):
        (group,) = np.unique(groups[np.concatenate([support, query])])
        seen.add(group)
    assert seen == {"a", "b"}
    # without within_groups, 3-way episodes over 8 classes mix the two groups
    mixed = EpisodicSplit(3, n_shot=1, n_query=2, n_episodes=40, random_state=0)
    assert any(len(set(groups[s])) == 2 for s, _ in mixed.split(X, y))


def test_split_ignores_groups_silently_without_within_groups(blobs):
    # as scikit-learn's splitters that do not use groups: cross_validate and
    # metadata routing hand groups to every splitter, asked for or not
    X, y, groups = blobs
    cv = EpisodicSplit(3, n_shot=2, n_query=2, n_episodes=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with_groups = list(cv.split(X, y, groups))
        cross_validate(NearestCentroid(), X, y, groups=groups, cv=cv)
        with config_context(enable_metadata_routing=True):
            cross_validate(NearestCentroid(), X, y, params={"groups": groups}, cv=cv)
    without = list(cv.split(X, y))
    for (s1, q1), (s2, q2) in zip(with_groups, without, strict=True):
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(q1, q2)


def test_split_arguments_are_keyword_only_after_n_way():
    with pytest.raises(TypeError, match="positional argument"):
        EpisodicSplit(5, 1)
    assert EpisodicSplit(7).n_way == 7


def test_one_set_of_episode_defaults():
    # every public entry point takes its defaults from EPISODE_DEFAULTS
    from skfewshot.plotting import FewShotCurveDisplay

    split = inspect.signature(EpisodicSplit).parameters
    evaluate = inspect.signature(evaluate_episodes).parameters
    curve = inspect.signature(FewShotCurveDisplay.from_estimator).parameters
    assert EPISODE_DEFAULTS == {
        "n_way": 5, "n_shot": 1, "n_query": 15, "n_episodes": 600
    }  # fmt: skip
    for name, default in EPISODE_DEFAULTS.items():
        assert split[name].default == default
    for name in ("n_query", "n_episodes"):
        assert evaluate[name].default == EPISODE_DEFAULTS[name]
        assert curve[name].default == EPISODE_DEFAULTS[name]
    assert curve["n_way"].default == EPISODE_DEFAULTS["n_way"]
    # n_way and n_shot are the question asked: evaluate_episodes has no default
    assert evaluate["n_way"].default is evaluate["n_shot"].default is inspect._empty


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_way=1), r"'n_way' parameter of .* range \[2, inf\). Got 1 instead"),
        (dict(n_query=0), r"'n_query' parameter of .* range \[1, inf\). Got 0"),
        (dict(n_shot=0), r"'n_shot' parameter of .* range \[1, inf\). Got 0"),
        (dict(n_episodes=0), r"'n_episodes' parameter of .* range \[1, inf\)"),
    ],
)
def test_split_and_evaluate_share_the_episode_constraints(blobs, kwargs, match):
    X, y, _ = blobs
    settings = {"n_way": 2, "n_shot": 1, "n_query": 2, "n_episodes": 2, **kwargs}
    with pytest.raises(InvalidParameterError, match=match):
        next(EpisodicSplit(**settings).split(X, y))
    with pytest.raises(InvalidParameterError, match=match):
        evaluate_episodes(NearestCentroid(), X, y, **settings)


def test_split_error_messages(blobs):
    X, y, groups = blobs
    with pytest.raises(ValueError, match=r"n_way=9 .* only 8 of 8 classes"):
        next(EpisodicSplit(n_way=9, n_query=2).split(X, y))
    with pytest.raises(ValueError, match=r"n_shot \+ n_query = 13 .* only 0 of 8"):
        next(EpisodicSplit(n_way=2, n_shot=1, n_query=12).split(X, y))
    with pytest.raises(ValueError, match="within_groups=True needs groups"):
        next(EpisodicSplit(within_groups=True).split(X, y))
    with pytest.raises(ValueError, match=r"n_way=5 within one group .* has 4\)"):
        next(
            EpisodicSplit(5, n_shot=1, n_query=2, within_groups=True).split(
                X, y, groups
            )
        )
    with pytest.raises(InvalidParameterError, match="'n_episodes' parameter"):
        next(EpisodicSplit(n_episodes=0).split(X, y))
    with pytest.raises(InvalidParameterError, match="'n_query' parameter"):
        next(EpisodicSplit(n_query=0).split(X, y))


def test_split_repr():
    assert repr(EpisodicSplit(20, n_shot=1, n_episodes=100, random_state=3)) == (
        "EpisodicSplit(n_episodes=100, n_query=15, n_shot=1, n_unknown_way=0, "
        "n_way=20,\n       random_state=3, within_groups=False)"
    )


# ------------------------------------------------- sklearn model selection


def test_cross_val_score_is_the_protocol(blobs):
    X, y, _ = blobs
    cv = EpisodicSplit(4, n_shot=2, n_query=3, n_episodes=12, random_state=0)
    scores = cross_val_score(NearestCentroid(), X, y, cv=cv)
    expected = hand_accuracies(NearestCentroid(), X, y, cv)
    np.testing.assert_allclose(scores, expected)
    assert 0 < scores.min() < scores.max()  # varied, so the comparison means sth


def test_cross_validate_parallel_with_groups(blobs):
    X, y, groups = blobs
    cv = EpisodicSplit(
        3, n_shot=2, n_query=2, n_episodes=6, within_groups=True, random_state=1
    )
    result = cross_validate(NearestCentroid(), X, y, groups=groups, cv=cv, n_jobs=2)
    expected = hand_accuracies(NearestCentroid(), X, y, cv, groups)
    np.testing.assert_allclose(result["test_score"], expected)


def test_groups_routed_with_metadata_routing(blobs):
    X, y, groups = blobs
    cv = EpisodicSplit(
        3, n_shot=2, n_query=2, n_episodes=6, within_groups=True, random_state=1
    )
    with config_context(enable_metadata_routing=True):
        result = cross_validate(
            NearestCentroid(), X, y, params={"groups": groups}, cv=cv
        )
    expected = hand_accuracies(NearestCentroid(), X, y, cv, groups)
    np.testing.assert_allclose(result["test_score"], expected)


def test_grid_search_scores_queries(blobs):
    X, y, _ = blobs
    cv = EpisodicSplit(4, n_shot=2, n_query=3, n_episodes=5, random_state=0)
    grid = GridSearchCV(
        LogisticRegression(), {"C": [0.01, 10.0]}, cv=cv, refit=False
    ).fit(X, y)
    assert grid.n_splits_ == 5
    means = []
    for i, C in enumerate([0.01, 10.0]):
        expected = hand_accuracies(LogisticRegression(C=C), X, y, cv)
        got = [grid.cv_results_[f"split{k}_test_score"][i] for k in range(5)]
        np.testing.assert_allclose(got, expected)
        means.append(expected.mean())
    assert means[0] != means[1]
    assert grid.best_params_ == {"C": [0.01, 10.0][int(np.argmax(means))]}


# ------------------------------------------------------------ EpisodeScores


def test_episode_scores_arithmetic_by_hand():
    scores = EpisodeScores([1.0, 0.5, 0.75, 0.75], n_way=5, n_shot=1, n_query=2)
    # deviations from 0.75: .25, -.25, 0, 0 -> population variance .125 / 4
    std = math.sqrt(0.125 / 4)
    assert scores.n_episodes == 4
    assert scores.mean == pytest.approx(0.75)
    assert scores.std == pytest.approx(std)
    assert scores.ci95 == pytest.approx(1.96 * std / 2)
    assert str(scores) == "75.0 ± 17.3 % (95% CI, 4 episodes, 5-way 1-shot)"


def test_episode_scores_str_and_repr():
    scores = EpisodeScores(
        np.full(600, 0.973), n_way=20, n_shot=1, n_query=15, estimator_name="Proto"
    )
    assert str(scores) == "97.3 ± 0.0 % (95% CI, 600 episodes, 20-way 1-shot)"
    assert repr(scores) == (
        "EpisodeScores(mean=0.9730, ci95=0.0000, n_episodes=600, n_way=20, "
        "n_shot=1, n_query=15, estimator_name='Proto')"
    )
    one = EpisodeScores([0.5], n_way=2, n_shot=5, n_query=1)
    assert str(one) == "50.0 % (no CI from 1 episode, 2-way 5-shot)"


def test_episode_scores_owns_a_read_only_copy():
    raw = np.array([0.5, 1.0])
    scores = EpisodeScores(raw, n_way=2, n_shot=1, n_query=1)
    raw[0] = 0.0
    assert scores.mean == pytest.approx(0.75)
    with pytest.raises(ValueError, match="read-only"):
        scores.accuracies[0] = 1.0
    with pytest.raises(AttributeError):
        scores.n_way = 3


def test_episode_scores_rejects_empty():
    with pytest.raises(ValueError, match=r"non-empty 1-D array, got shape \(0,\)"):
        EpisodeScores([], n_way=2, n_shot=1, n_query=1)


def test_to_frame():
    pd = pytest.importorskip("pandas")
    scores = EpisodeScores(
        [1.0, 0.5, 0.25], n_way=3, n_shot=5, n_query=4, estimator_name="X"
    )
    frame = scores.to_frame()
    assert list(frame.columns) == [
        "episode",
        "accuracy",
        "n_way",
        "n_shot",
        "n_query",
        "estimator",
    ]
    np.testing.assert_array_equal(frame["episode"], [0, 1, 2])
    np.testing.assert_array_equal(frame["accuracy"], [1.0, 0.5, 0.25])
    assert (frame["n_shot"] == 5).all() and (frame["estimator"] == "X").all()
    both = pd.concat([frame, scores.to_frame()], ignore_index=True)
    assert both.groupby("n_shot")["accuracy"].mean().loc[5] == pytest.approx(
        scores.mean
    )


def test_to_frame_without_pandas(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    scores = EpisodeScores([1.0], n_way=2, n_shot=1, n_query=1)
    with pytest.raises(ImportError, match="to_frame needs pandas"):
        scores.to_frame()


# --------------------------------------------------------- evaluate_episodes


def test_evaluate_episodes_is_the_protocol(blobs):
    X, y, _ = blobs
    scores = evaluate_episodes(
        NearestCentroid(), X, y, n_way=4, n_shot=2, n_query=3, n_episodes=20,
        random_state=0,
    )  # fmt: skip
    cv = EpisodicSplit(4, n_shot=2, n_query=3, n_episodes=20, random_state=0)
    expected = hand_accuracies(NearestCentroid(), X, y, cv)
    np.testing.assert_allclose(scores.accuracies, expected)
    assert scores.mean == pytest.approx(expected.mean())
    assert (scores.n_way, scores.n_shot, scores.n_query) == (4, 2, 3)
    assert scores.n_episodes == 20 and scores.random_state == 0
    assert scores.estimator_name == "NearestCentroid"


def test_evaluate_episodes_warns_when_groups_have_no_effect(blobs):
    # the one use of groups in evaluate_episodes is within_groups=True
    X, y, groups = blobs
    kwargs = dict(n_way=3, n_shot=2, n_query=2, n_episodes=4, random_state=0)
    with pytest.warns(UserWarning, match="groups has no effect in evaluate_ep") as w:
        ignored = evaluate_episodes(NearestCentroid(), X, y, groups=groups, **kwargs)
    assert w[0].filename == __file__  # points at the call
    plain = evaluate_episodes(NearestCentroid(), X, y, **kwargs)
    np.testing.assert_array_equal(ignored.accuracies, plain.accuracies)


def test_evaluate_episodes_within_groups(blobs):
    X, y, groups = blobs
    kwargs = dict(n_way=3, n_shot=2, n_query=2, n_episodes=8, random_state=2)
    scores = evaluate_episodes(
        NearestCentroid(), X, y, groups=groups, within_groups=True, **kwargs
    )
    cv = EpisodicSplit(
        3, n_shot=2, n_query=2, n_episodes=8, within_groups=True, random_state=2
    )
    expected = hand_accuracies(NearestCentroid(), X, y, cv, groups)
    np.testing.assert_allclose(scores.accuracies, expected)


def test_evaluate_episodes_n_jobs_does_not_change_the_result(blobs):
    X, y, _ = blobs
    kwargs = dict(n_way=3, n_shot=2, n_query=3, n_episodes=12, random_state=5)
    head = LogisticRegression(C=0.5)
    serial = evaluate_episodes(head, X, y, n_jobs=1, **kwargs)
    parallel = evaluate_episodes(head, X, y, n_jobs=2, **kwargs)
    np.testing.assert_array_equal(serial.accuracies, parallel.accuracies)
    assert len(set(serial.accuracies)) > 1


def test_evaluate_episodes_random_state_none_varies(blobs):
    X, y, _ = blobs
    kwargs = dict(n_way=3, n_shot=2, n_query=2, n_episodes=30)
    first = evaluate_episodes(NearestCentroid(), X, y, **kwargs)
    second = evaluate_episodes(NearestCentroid(), X, y, **kwargs)
    assert not np.array_equal(first.accuracies, second.accuracies)


def test_evaluate_episodes_does_not_touch_the_estimator(blobs):
    X, y, _ = blobs
    pipe = make_pipeline(StandardScaler(), NearestCentroid())
    evaluate_episodes(pipe, X, y, n_way=2, n_shot=2, n_query=2, n_episodes=3)
    assert not hasattr(pipe[-1], "classes_") and not hasattr(pipe[0], "mean_")


def test_evaluate_episodes_on_texts():
    # a list of strings is indexed like an array: texts go through the pipeline
    words = ["card", "loan", "atm", "fee", "pin"]
    y = np.repeat(np.arange(5), 6)
    texts = [f"my {words[c]} problem number {i}" for i, c in enumerate(y)]
    pipe = make_pipeline(CountVectorizer(), KNeighborsClassifier(n_neighbors=1))
    scores = evaluate_episodes(
        pipe, texts, y, n_way=5, n_shot=1, n_query=3, n_episodes=4, random_state=0
    )
    np.testing.assert_array_equal(scores.accuracies, np.ones(4))
    assert scores.estimator_name == "CountVectorizer+KNeighborsClassifier"


def test_evaluate_episodes_errors(blobs):
    X, y, _ = blobs
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[96, 95"):
        evaluate_episodes(NearestCentroid(), X, y[:-1], n_way=2, n_shot=1)
    with pytest.raises(ValueError, match=r"n_way=10 .* only 8 of 8 classes"):
        evaluate_episodes(NearestCentroid(), X, y, n_way=10, n_shot=1, n_query=2)
    with pytest.raises(ValueError, match=r"n_shot \+ n_query = 20 .* only 0 of 8"):
        evaluate_episodes(NearestCentroid(), X, y, n_way=2, n_shot=5)
    with pytest.raises(InvalidParameterError, match="'estimator' parameter"):
        evaluate_episodes(StandardScaler(), X, y, n_way=2, n_shot=1)
    with pytest.raises(InvalidParameterError, match="'n_episodes' parameter"):
        evaluate_episodes(NearestCentroid(), X, y, n_way=2, n_shot=1, n_episodes=0)


def test_evaluate_episodes_verbose_shows_running_accuracy(blobs, capsys):
    X, y, _ = blobs
    scores = evaluate_episodes(
        NearestCentroid(), X, y, n_way=3, n_shot=2, n_query=2, n_episodes=7,
        random_state=0, verbose=1,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert "3-way 2-shot" in err and "7/7" in err
    assert f"acc={100 * scores.mean:.1f}%" in err
    evaluate_episodes(
        NearestCentroid(), X, y, n_way=3, n_shot=2, n_query=2, n_episodes=7,
        random_state=0,
    )  # fmt: skip
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------- feature reuse


class CountingTransformer(TransformerMixin, BaseEstimator):
    """A fixed row-wise map that counts the rows it transforms (across clones)."""

    frozen_features = True
    rows = 0

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=float)
        type(self).rows += len(X)
        return np.tanh(X) * 2.0


class NotFrozenCountingTransformer(CountingTransformer):
    frozen_features = False


class OnlyTruthyFrozenCountingTransformer(CountingTransformer):
    """Says "yes" and the old private name: neither is the declaration."""

    frozen_features = "yes"
    _skfewshot_frozen = True


@pytest.fixture
def reset_counts():
    CountingTransformer.rows = NotFrozenCountingTransformer.rows = 0
    OnlyTruthyFrozenCountingTransformer.rows = 0


def test_only_frozen_features_true_declares_a_frozen_step(blobs, reset_counts):
    X, y, _ = blobs
    kwargs = dict(n_way=2, n_shot=2, n_query=2, n_episodes=5, random_state=0)
    pipe = make_pipeline(OnlyTruthyFrozenCountingTransformer(), NearestCentroid())
    evaluate_episodes(pipe, X, y, **kwargs)
    # run per episode: support rows (fit + transform is one transform here)
    # and query rows of each of the 5 episodes
    assert OnlyTruthyFrozenCountingTransformer.rows == 5 * 2 * (2 + 2)


def test_frozen_features_computed_once(blobs, reset_counts):
    X, y, _ = blobs
    kwargs = dict(n_way=4, n_shot=2, n_query=3, n_episodes=50, random_state=0)
    frozen = make_pipeline(CountingTransformer(), NearestCentroid())
    reused = evaluate_episodes(frozen, X, y, **kwargs)
    assert CountingTransformer.rows == len(X)

    per_episode = make_pipeline(NotFrozenCountingTransformer(), NearestCentroid())
    recomputed = evaluate_episodes(per_episode, X, y, **kwargs)
    # support + query rows of every episode, transformed separately
    assert NotFrozenCountingTransformer.rows == 50 * 4 * (2 + 3)
    np.testing.assert_allclose(reused.accuracies, recomputed.accuracies)
    assert reused.estimator_name == "CountingTransformer+NearestCentroid"
    assert not hasattr(frozen[0], "n_features_in_")  # the user's step is untouched


def test_frozen_prefix_stops_at_first_trainable_step(blobs, reset_counts):
    X, y, _ = blobs
    kwargs = dict(n_way=2, n_shot=2, n_query=2, n_episodes=5, random_state=0)
    # frozen, passthrough, frozen: all three leading steps reused
    pipe = make_pipeline(
        CountingTransformer(), "passthrough", CountingTransformer(), NearestCentroid()
    )
    evaluate_episodes(pipe, X, y, **kwargs)
    assert CountingTransformer.rows == 2 * len(X)
    # a trainable step first: the frozen one after it runs per episode
    CountingTransformer.rows = 0
    pipe = make_pipeline(StandardScaler(), CountingTransformer(), NearestCentroid())
    evaluate_episodes(pipe, X, y, **kwargs)
    assert CountingTransformer.rows == 5 * 2 * (2 + 2)


def test_frozen_estimator_is_reused(blobs, reset_counts):
    X, y, _ = blobs
    fitted = NotFrozenCountingTransformer().fit(X)
    pipe = make_pipeline(FrozenEstimator(fitted), KNeighborsClassifier(1))
    scores = evaluate_episodes(
        pipe, X, y, n_way=3, n_shot=2, n_query=2, n_episodes=10, random_state=0
    )
    assert NotFrozenCountingTransformer.rows == len(X)
    expected = evaluate_episodes(
        KNeighborsClassifier(1), np.tanh(X) * 2.0, y,
        n_way=3, n_shot=2, n_query=2, n_episodes=10, random_state=0,
    )  # fmt: skip
    np.testing.assert_allclose(scores.accuracies, expected.accuracies)


# ------------------------------------------ with skfewshot's own estimators


class CountingNet(torch.nn.Module):
    """A fixed random projection that counts forward calls and rows (class-wide,
    since cloning a BackboneTransformer deep-copies its module)."""

    calls = 0
    rows = 0

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(DIM, 6)

    def forward(self, x):
        type(self).calls += 1
        type(self).rows += x.shape[0]
        return torch.tanh(self.proj(x))


@pytest.fixture
def counting_net():
    from skfewshot.backbone import BackboneTransformer

    BackboneTransformer.clear_cache()
    CountingNet.calls = CountingNet.rows = 0
    yield CountingNet()
    BackboneTransformer.clear_cache()


def test_backbone_forward_once_per_input(blobs, counting_net):
    from skfewshot.backbone import BackboneTransformer
    from skfewshot.prototype import PrototypeClassifier

    X, y, _ = blobs
    X = X.astype(np.float32)
    kwargs = dict(n_way=4, n_shot=1, n_query=5, n_episodes=50, random_state=0)
    pipe = make_pipeline(
        BackboneTransformer(counting_net, device="cpu", batch_size=32),
        PrototypeClassifier(),
    )
    scores = evaluate_episodes(pipe, X, y, **kwargs)
    assert CountingNet.rows == len(X)  # 96 rows, not 50 * 4 * (1 + 5)

    # the same numbers as features computed by hand, then episodes on them;
    # in the transformer's batches of 32 rows, since a float32 matmul may round
    # differently with another batch size (on MKL, say)
    with torch.no_grad():
        features = np.concatenate(
            [counting_net(torch.from_numpy(X[i : i + 32])).numpy() for i in (0, 32, 64)]
        )
    expected = evaluate_episodes(PrototypeClassifier(), features, y, **kwargs)
    np.testing.assert_allclose(scores.accuracies, expected.accuracies)
    assert scores.estimator_name == "BackboneTransformer+PrototypeClassifier"


def test_backbone_reuse_without_its_cache(blobs, counting_net):
    from skfewshot.backbone import BackboneTransformer
    from skfewshot.prototype import PrototypeClassifier

    X, y, _ = blobs
    X = X.astype(np.float32)
    kwargs = dict(n_way=4, n_shot=1, n_query=5, n_episodes=50, random_state=0)
    backbone = BackboneTransformer(
        counting_net, device="cpu", batch_size=32, cache=False
    )
    evaluate_episodes(make_pipeline(backbone, PrototypeClassifier()), X, y, **kwargs)
    # fit probes one batch for the output width, then 3 batches transform X
    assert (CountingNet.calls, CountingNet.rows) == (1 + 3, 32 + len(X))

    # behind a trainable step the backbone runs on every episode's rows
    CountingNet.calls = CountingNet.rows = 0
    per_episode = make_pipeline(StandardScaler(), backbone, PrototypeClassifier())
    evaluate_episodes(per_episode, X, y, **kwargs)
    # per episode: fit probe + transform on 4 support rows, transform 20 queries
    assert CountingNet.rows == 50 * (4 + 4 + 20)


# max_iter is kept low on purpose (speed): the fits stop before converging
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_transductive_classifier_adapts_to_each_episode_queries(blobs):
    from skfewshot.finetune import FineTunedCosineClassifier

    X, y, _ = blobs
    kwargs = dict(n_way=3, n_shot=1, n_query=4, n_episodes=4, random_state=0)
    transductive = FineTunedCosineClassifier(
        transductive=True, entropy_weight=1.0, max_iter=20, device="cpu"
    )
    scores = evaluate_episodes(transductive, X, y, **kwargs)
    # one predict call on the whole query set of each episode
    cv = EpisodicSplit(3, n_shot=1, n_query=4, n_episodes=4, random_state=0)
    np.testing.assert_allclose(
        scores.accuracies, hand_accuracies(transductive, X, y, cv)
    )
    inductive = evaluate_episodes(
        clone(transductive).set_params(transductive=False), X, y, **kwargs
    )
    assert not np.array_equal(scores.accuracies, inductive.accuracies)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_over_a_backbone_pipeline(blobs, counting_net):
    from skfewshot.backbone import BackboneTransformer
    from skfewshot.finetune import FineTunedCosineClassifier

    X, y, _ = blobs
    X = X.astype(np.float32)
    pipe = make_pipeline(
        BackboneTransformer(counting_net, device="cpu"),
        FineTunedCosineClassifier(max_iter=10, device="cpu"),
    )
    cv = EpisodicSplit(n_way=3, n_shot=2, n_query=3, n_episodes=4, random_state=0)
    alphas = [1e-3, 1e-1]
    grid = GridSearchCV(
        pipe, {"finetunedcosineclassifier__alpha": alphas}, cv=cv, refit=False
    ).fit(X, y)
    for i, alpha in enumerate(alphas):
        # the protocol by hand: the backbone embeds the same rows in the same
        # batches, so the features, hence the predictions, are the same bits
        one = clone(pipe).set_params(finetunedcosineclassifier__alpha=alpha)
        np.testing.assert_array_equal(
            [grid.cv_results_[f"split{k}_test_score"][i] for k in range(4)],
            hand_accuracies(one, X, y, cv),
        )


# ------------------------------------------------------ episodes drawn lazily

# The first episodes of a fixed seed, recorded from the code that drew every
# episode up front (before episodes were drawn lazily): the lazy draw must give
# exactly these, so results for a given random_state never change.
PINNED_Y = np.repeat(np.arange(8), 12)
PINNED = [
    (
        [75, 83, 26, 27, 21, 19],
        [73, 82, 81, 80, 28, 30, 24, 34, 16, 18, 13, 20],
    ),
    (
        [61, 69, 26, 27, 89, 84],
        [71, 65, 62, 68, 31, 25, 33, 34, 88, 86, 87, 90],
    ),
    (
        [61, 62, 74, 83, 35, 33],
        [65, 60, 69, 63, 78, 82, 81, 73, 31, 30, 27, 34],
    ),
]
PINNED_WITHIN_GROUPS = [
    ([25, 2, 23], [30, 32, 3, 8, 13, 19]),
    ([56, 95, 77], [58, 53, 87, 90, 72, 76]),
    ([85, 70, 83], [86, 95, 62, 69, 81, 79]),
]


def as_lists(episodes):
    return [(s.tolist(), q.tolist()) for s, q in episodes]


def test_split_draws_the_pinned_episodes():
    y = PINNED_Y
    cv = EpisodicSplit(3, n_shot=2, n_query=4, n_episodes=3, random_state=0)
    assert as_lists(cv.split(y, y)) == PINNED
    groups = np.where(y < 4, "a", "b")
    cv = EpisodicSplit(
        3, n_shot=1, n_query=2, n_episodes=3, within_groups=True, random_state=0
    )
    assert as_lists(cv.split(y, y, groups)) == PINNED_WITHIN_GROUPS


class IndexRecorder(ClassifierMixin, BaseEstimator):
    """Records the row indices it is fitted on and asked about (X holds each
    row's index), class-wide since evaluate_episodes fits clones."""

    episodes = []

    def fit(self, X, y):
        self.support_ = X[:, 0].astype(int).tolist()
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        type(self).episodes.append((self.support_, X[:, 0].astype(int).tolist()))
        return np.full(len(X), self.classes_[0])


def test_evaluate_episodes_draws_the_pinned_episodes(monkeypatch):
    monkeypatch.setattr(IndexRecorder, "episodes", [])
    y = PINNED_Y
    X = np.arange(len(y), dtype=float)[:, None]
    evaluate_episodes(
        IndexRecorder(), X, y, n_way=3, n_shot=2, n_query=4, n_episodes=3,
        random_state=0,
    )  # fmt: skip
    assert IndexRecorder.episodes == PINNED


class StopEpisodes(Exception):
    """Raised by FitOnce to stop an evaluation at its first fit."""


class FitOnce(ClassifierMixin, BaseEstimator):
    """Stops the evaluation at its first fit."""

    def fit(self, X, y):
        raise StopEpisodes

    def predict(self, X):
        raise AssertionError("never fitted, never asked to predict")


@pytest.fixture
def count_draws(monkeypatch):
    """Count the episodes drawn (in this process, where they are drawn)."""
    from skfewshot._episodes import EpisodeSampler

    draws = []
    sample = EpisodeSampler.sample

    def counting_sample(self, rng, *args):
        draws.append(1)
        return sample(self, rng, *args)

    monkeypatch.setattr(EpisodeSampler, "sample", counting_sample)
    return draws


def test_evaluate_episodes_draws_one_episode_before_the_first_fit(blobs, count_draws):
    X, y, _ = blobs
    with pytest.raises(StopEpisodes):
        evaluate_episodes(
            FitOnce(), X, y, n_way=3, n_shot=1, n_query=2, n_episodes=100_000
        )
    assert len(count_draws) == 1


def test_split_draws_lazily(blobs, count_draws):
    X, y, _ = blobs
    splits = EpisodicSplit(
        3, n_shot=1, n_query=2, n_episodes=10**9, random_state=0
    ).split(X, y)
    assert count_draws == []
    next(splits), next(splits)
    assert len(count_draws) == 2


def test_evaluate_episodes_draws_lazily_in_parallel(blobs, count_draws):
    # an invalid parameter makes every fit fail in the workers; joblib
    # dispatches a few tasks ahead (pre_dispatch="2*n_jobs"), never all of them
    X, y, _ = blobs
    with pytest.raises(InvalidParameterError, match="'metric' parameter"):
        evaluate_episodes(
            NearestCentroid(metric="no-such-metric"), X, y, n_way=3, n_shot=1,
            n_query=2, n_episodes=100_000, n_jobs=2,
        )  # fmt: skip
    assert 1 <= len(count_draws) < 100


def test_evaluate_episodes_memory_does_not_grow_with_n_episodes(blobs):
    X, y, _ = blobs

    def call():
        with pytest.raises(StopEpisodes):
            evaluate_episodes(
                FitOnce(), X, y, n_way=5, n_shot=1, n_query=5, n_episodes=100_000
            )

    peak = peak_bytes(call)
    # drawing the 100,000 episodes up front took ~100 MiB
    assert peak < 4 * 2**20


@pytest.mark.parametrize("head", ["NearestCentroid", "PrototypeClassifier"])
def test_label_minus_one_is_an_ordinary_class(blobs, head):
    # episodes draw -1 like any class, fit gets it as a class (not as
    # "unlabelled"), and scores do not depend on the label values: 0..7
    # shifted to -1..6 give the same accuracies
    from skfewshot.prototype import PrototypeClassifier

    heads = {
        "NearestCentroid": NearestCentroid,
        "PrototypeClassifier": PrototypeClassifier,
    }
    head = heads[head]()
    X, y, _ = blobs
    kwargs = dict(n_way=4, n_shot=2, n_query=3, n_episodes=30, random_state=0)
    cv = EpisodicSplit(4, n_shot=2, n_query=3, n_episodes=30, random_state=0)
    drawn = np.concatenate([(y - 1)[s] for s, _ in cv.split(X, y - 1)])
    assert -1 in drawn
    shifted = evaluate_episodes(head, X, y - 1, **kwargs)
    plain = evaluate_episodes(head, X, y, **kwargs)
    np.testing.assert_array_equal(shifted.accuracies, plain.accuracies)


# ------------------------------------------------- pipeline subclasses


class RecordingPipeline(Pipeline):
    """A pipeline whose own fit sees what it is given (the shapes)."""

    shapes = []

    def fit(self, X, y=None, **params):
        type(self).shapes.append(np.shape(X))
        return super().fit(X, y, **params)


def test_a_pipeline_subclass_overriding_fit_is_fitted_whole(blobs, reset_counts):
    # its frozen prefix was run once and its fit given the features (2 of
    # them), not the raw support rows (4 columns) cross_val_score gives it
    X, y, _ = blobs
    RecordingPipeline.shapes = []
    pipe = RecordingPipeline(
        [("frozen", CountingTransformer()), ("clf", NearestCentroid())]
    )
    assert _split_frozen_prefix(pipe) == ([], pipe)
    kwargs = dict(n_way=3, n_shot=2, n_query=2, n_episodes=5, random_state=0)
    scores = evaluate_episodes(pipe, X, y, **kwargs)
    assert RecordingPipeline.shapes == [(6, DIM)] * 5
    cv = EpisodicSplit(3, n_shot=2, n_query=2, n_episodes=5, random_state=0)
    np.testing.assert_array_equal(scores.accuracies, hand_accuracies(pipe, X, y, cv))
    # a plain Pipeline still reuses the frozen features: one pass over X
    CountingTransformer.rows = 0
    evaluate_episodes(Pipeline(pipe.steps), X, y, **kwargs)
    assert CountingTransformer.rows == len(X)


# -------------------------------------------- classes left out, bad labels


def test_evaluate_episodes_warns_about_classes_left_out(blobs):
    X, y, _ = blobs
    keep = (y != 7) | (np.arange(len(y)) % PER_CLASS < 3)  # class 7: 3 rows
    message = (
        "Episodes are drawn from 7 of the 8 classes, never from the other 1: 1 "
        "has fewer than n_shot + n_query = 4 samples."
    )
    kwargs = dict(n_way=3, n_shot=1, n_query=3, n_episodes=4, random_state=0)
    with pytest.warns(UserWarning) as record:
        evaluate_episodes(KNeighborsClassifier(1), X[keep], y[keep], **kwargs)
    assert [str(w.message) for w in record] == [message]
    assert record[0].filename == __file__  # the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_episodes(KNeighborsClassifier(1), X, y, **kwargs)  # nothing left out


def test_mixed_label_types_are_a_value_error_naming_y(blobs):
    # np.unique raised "'<' not supported between instances of 'int' and 'str'"
    X, y, _ = blobs
    mixed = y.astype(object)
    mixed[y == 0] = "zero"
    message = (
        "y mixes labels of types int, str, which cannot be sorted together; "
        "give y labels of one type (e.g. all str)."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        evaluate_episodes(
            KNeighborsClassifier(1), X, mixed, n_way=2, n_shot=1, n_query=2
        )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        next(EpisodicSplit(2, n_query=2).split(X, mixed))


def _int_and_str_groups(y):
    groups = np.zeros(len(y), dtype=object)  # classes 0-3 in group 0
    groups[y >= 4] = "b"
    return groups


@pytest.mark.parametrize(
    "make_groups, match",
    [
        (_int_and_str_groups, "^groups mixes labels of types int, str"),
        (
            lambda y: np.where(y < 4, np.nan, 1.0),
            r"^groups contains NaN \(48 of 96 samples\)",
        ),
    ],
    ids=["mixed-types", "nan"],
)
def test_unsortable_groups_are_a_value_error(blobs, make_groups, match):
    X, y, _ = blobs
    with pytest.raises(ValueError, match=match):
        evaluate_episodes(
            KNeighborsClassifier(1), X, y, groups=make_groups(y), within_groups=True,
            n_way=2, n_shot=1, n_query=2,
        )  # fmt: skip


# ------------------------------------------------------------ one episode


def test_one_episode_has_no_confidence_interval(blobs):
    X, y, _ = blobs
    one = evaluate_episodes(
        KNeighborsClassifier(1), X, y, n_way=2, n_shot=1, n_query=2, n_episodes=1,
        random_state=0,
    )  # fmt: skip
    assert math.isnan(one.ci95)
    assert str(one) == (f"{100 * one.mean:.1f} % (no CI from 1 episode, 2-way 1-shot)")
    assert repr(one).startswith(f"EpisodeScores(mean={one.mean:.4f}, ci95=nan, ")
    open_set = EpisodeScores(
        [0.5], n_way=5, n_shot=1, n_query=2, known_accuracies=[0.8],
        aurocs=[0.75], n_unknown_way=5,
    )  # fmt: skip
    assert math.isnan(open_set.known_ci95) and math.isnan(open_set.auroc_ci95)
    assert str(open_set) == (
        "50.0 % (no CI from 1 episode, 5-way 1-shot, 5 unknown classes; "
        "known 80.0 %, AUROC 0.750)"
    )
    two = EpisodeScores([0.5, 1.0], n_way=5, n_shot=1, n_query=2)
    assert two.ci95 == pytest.approx(1.96 * 0.25 / math.sqrt(2), rel=1e-15)


# ------------------------------------------------------------------- layering


def test_import_and_evaluate_without_torch():
    # model_selection uses only the scikit-learn estimator API: neither the
    # import nor an evaluation (feature reuse included) pulls torch in
    code = """
import sys
import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
import skfewshot.model_selection as ms
y = np.repeat(np.arange(4), 5)
X = np.random.RandomState(0).normal(size=(20, 3)) + y[:, None]
pipe = make_pipeline(FrozenEstimator(StandardScaler().fit(X)), NearestCentroid())
ms.evaluate_episodes(pipe, X, y, n_way=2, n_shot=1, n_query=2, n_episodes=3)
list(ms.EpisodicSplit(2, n_query=2, n_episodes=2).split(X, y))
assert "torch" not in sys.modules, "torch was imported"
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
