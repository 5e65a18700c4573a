"""Tests for skfewshot.model_selection.EpisodicGridSearchCV: the results of
GridSearchCV(cv=EpisodicSplit(...)), every candidate on the same episodes,
frozen steps once for the search, refit, errors."""

import threading
import warnings

import numpy as np
import pytest
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    TransformerMixin,
    clone,
    is_classifier,
)
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

import skfewshot
from skfewshot import FineTunedCosineClassifier, PrototypeClassifier
from skfewshot._episodes import EpisodeSampler
from skfewshot.model_selection import EpisodicGridSearchCV, EpisodicSplit

N_CLASSES, PER_CLASS, DIM = 8, 12, 6
EPISODES = dict(n_way=4, n_shot=2, n_query=3, n_episodes=12)


@pytest.fixture
def blobs():
    """8 classes x 12 samples of overlapping 6-d blobs (accuracies below 1, so
    equal scores of two code paths are varied numbers); classes 0-3 in group
    'a', 4-7 in group 'b'."""
    rng = np.random.RandomState(0)
    centers = rng.normal(scale=1.2, size=(N_CLASSES, DIM))
    y = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    X = centers[y] + rng.normal(size=(len(y), DIM))
    groups = np.where(y < 4, "a", "b")
    return X, y, groups


def search_pair(estimator, param_grid, random_state=0, **kwargs):
    """The same search as EpisodicGridSearchCV and as GridSearchCV+EpisodicSplit."""
    settings = {**EPISODES, **kwargs}
    within_groups = settings.pop("within_groups", False)
    ours = EpisodicGridSearchCV(
        estimator,
        param_grid,
        **settings,
        within_groups=within_groups,
        random_state=random_state,
        refit=False,
    )
    cv = EpisodicSplit(
        **settings, within_groups=within_groups, random_state=random_state
    )
    theirs = GridSearchCV(estimator, param_grid, cv=cv, refit=False)
    return ours, theirs


def split_scores(results, n_splits):
    return np.column_stack([results[f"split{i}_test_score"] for i in range(n_splits)])


def assert_same_results(ours, theirs):
    """Every key GridSearchCV and EpisodicGridSearchCV share, exactly."""
    ours_r, theirs_r = ours.cv_results_, theirs.cv_results_
    shared = set(ours_r) & set(theirs_r)
    n = ours.n_splits_
    assert shared == set(ours_r) - {"ci95_test_score"}
    assert ours_r["params"] == theirs_r["params"]
    for key in sorted(shared - {"params"}):
        if key.startswith("param_"):
            np.testing.assert_array_equal(
                np.ma.getmaskarray(ours_r[key]), np.ma.getmaskarray(theirs_r[key])
            )
            assert ours_r[key].dtype == theirs_r[key].dtype, key
            assert list(ours_r[key].compressed()) == list(theirs_r[key].compressed())
        else:
            np.testing.assert_array_equal(ours_r[key], theirs_r[key], err_msg=key)
    np.testing.assert_allclose(
        ours_r["ci95_test_score"], 1.96 * theirs_r["std_test_score"] / np.sqrt(n)
    )
    assert ours.n_splits_ == theirs.n_splits_
    assert ours.best_index_ == theirs.best_index_
    assert ours.best_params_ == theirs.best_params_
    assert ours.best_score_ == theirs.best_score_


@pytest.fixture
def count_fits(monkeypatch):
    """Count fits of PrototypeClassifier and FineTunedCosineClassifier (a class
    attribute patched on the declaring class keeps the batched path on)."""
    counts = {"fits": 0}
    for cls in (PrototypeClassifier, FineTunedCosineClassifier):
        original = cls.fit

        def fit(self, *args, _original=original, **kwargs):
            counts["fits"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "fit", fit)
    return counts


# ------------------------------------------------ the results of GridSearchCV


def test_prototype_results_equal_grid_search_exactly(blobs, count_fits):
    X, y, _ = blobs
    grid = {"metric": ["cosine", "euclidean", "dot"], "center": [False, True]}
    ours, theirs = search_pair(PrototypeClassifier(), grid)
    ours.fit(X, y)
    assert count_fits["fits"] == 0  # every candidate batched: no clone fitted
    theirs.fit(X, y)
    assert count_fits["fits"] == 6 * EPISODES["n_episodes"]
    assert_same_results(ours, theirs)
    # the scores are varied, so equality is not trivial
    assert len(np.unique(ours.cv_results_["mean_test_score"])) > 2
    assert 0 < ours.cv_results_["split0_test_score"].min() < 1


def test_finetuned_results_equal_grid_search_within_a_query(blobs, count_fits):
    # the batched fine-tuned head may label a query within tol of a tie
    # differently: at most one query per episode apart
    X, y, _ = blobs
    grid = {"alpha": [1e-3, 1e-1, 10.0]}
    ours, theirs = search_pair(FineTunedCosineClassifier(), grid)
    ours.fit(X, y)
    assert count_fits["fits"] == 0
    theirs.fit(X, y)
    n = EPISODES["n_episodes"]
    one_query = 1 / (EPISODES["n_way"] * EPISODES["n_query"])
    np.testing.assert_allclose(
        split_scores(ours.cv_results_, n),
        split_scores(theirs.cv_results_, n),
        rtol=0,
        atol=one_query + 1e-12,
    )
    np.testing.assert_allclose(
        ours.cv_results_["mean_test_score"],
        theirs.cv_results_["mean_test_score"],
        rtol=0,
        atol=one_query + 1e-12,
    )
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    # alpha matters here: the candidates do not all score the same
    assert len(np.unique(ours.cv_results_["mean_test_score"])) > 1


def test_a_list_of_grids(blobs):
    X, y, _ = blobs
    grid = [
        {"metric": ["cosine"], "center": [True, False]},
        {"metric": ["euclidean"], "scale": [1.0, 5.0]},
    ]
    ours, theirs = search_pair(PrototypeClassifier(), grid)
    ours.fit(X, y)
    theirs.fit(X, y)
    assert_same_results(ours, theirs)
    center = ours.cv_results_["param_center"]
    assert list(np.ma.getmaskarray(center)) == [False, False, True, True]
    assert center.dtype == bool
    assert ours.cv_results_["param_metric"].dtype == object


def test_pipeline_params_and_foreign_heads(blobs, reset_counts):
    # "head__alpha" and a grid that replaces the head by a foreign estimator
    # (per-episode path): the results of GridSearchCV, features once
    X, y, _ = blobs
    pipe = Pipeline([("embed", CountingTransformer()), ("head", PrototypeClassifier())])
    grid = [
        {"head__metric": ["cosine", "euclidean"]},
        {"head": [NearestCentroid()]},
    ]
    ours, theirs = search_pair(pipe, grid)
    ours.fit(X, y)
    assert CountingTransformer.rows == len(X)
    theirs.fit(X, y)
    assert_same_results(ours, theirs)


def test_within_groups(blobs):
    X, y, groups = blobs
    ours, theirs = search_pair(
        NearestCentroid(), {"shrink_threshold": [None, 0.5]}, within_groups=True
    )
    ours.fit(X, y, groups)
    theirs.fit(X, y, groups=groups)
    assert_same_results(ours, theirs)


# ---------------------------------------------------------- shared episodes


class RecordingClassifier(ClassifierMixin, BaseEstimator):
    """Records the row ids (column 0 of X) of every support set it is fitted on."""

    supports = []

    def __init__(self, c=0):
        self.c = c

    def fit(self, X, y):
        type(self).supports.append(tuple(X[:, 0].astype(int)))
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


@pytest.mark.parametrize("random_state", [None, np.random.RandomState(3), 7])
def test_every_candidate_scored_on_the_same_episodes(blobs, random_state):
    X, y, _ = blobs
    X = np.column_stack([np.arange(len(y)), X])
    RecordingClassifier.supports = []
    n = EPISODES["n_episodes"]
    search = EpisodicGridSearchCV(
        RecordingClassifier(),
        {"c": [0, 1, 2]},
        **EPISODES,
        random_state=random_state,
        refit=False,
    ).fit(X, y)
    first, second, third = (
        RecordingClassifier.supports[i * n : (i + 1) * n] for i in range(3)
    )
    assert len(RecordingClassifier.supports) == 3 * n
    assert first == second == third
    assert len(set(first)) > n // 2  # the episodes differ from each other
    if isinstance(random_state, int):  # the episodes of EpisodicSplit
        cv = EpisodicSplit(**EPISODES, random_state=random_state)
        assert first == [tuple(s) for s, _ in cv.split(X, y)]
    else:  # a new draw on each fit
        search.fit(X, y)
        assert RecordingClassifier.supports[3 * n : 4 * n] != first


# ------------------------------------------------------ frozen steps, once


class CountingTransformer(TransformerMixin, BaseEstimator):
    """A fixed row-wise map that counts the rows it transforms (across clones)."""

    frozen_features = True
    rows = 0

    def __init__(self, factor=2.0):
        self.factor = factor

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=float)
        type(self).rows += len(X)
        return np.tanh(X) * self.factor


@pytest.fixture
def reset_counts():
    CountingTransformer.rows = 0


def test_frozen_step_runs_once_for_the_whole_search(blobs, reset_counts):
    X, y, _ = blobs
    pipe = Pipeline(
        [("embed", CountingTransformer()), ("head", FineTunedCosineClassifier())]
    )
    grid = {"head__alpha": [1e-3, 1e-2, 1e-1, 1.0]}
    search = EpisodicGridSearchCV(pipe, grid, **EPISODES, random_state=0, refit=False)
    search.fit(X, y)
    assert CountingTransformer.rows == len(X)
    # the scores of the pipeline itself, candidate by candidate
    for params, mean in zip(grid["head__alpha"], search.cv_results_["mean_test_score"]):
        alone = skfewshot.evaluate_episodes(
            clone(pipe).set_params(head__alpha=params), X, y, **EPISODES, random_state=0
        )
        assert mean == alone.mean
    assert not hasattr(pipe[0], "n_features_in_")  # the user's step is untouched


def test_a_grid_over_the_frozen_step_runs_it_once_per_candidate(blobs, reset_counts):
    X, y, _ = blobs
    pipe = Pipeline([("embed", CountingTransformer()), ("head", PrototypeClassifier())])
    grid = {"embed__factor": [1.0, 3.0], "head__metric": ["cosine", "euclidean"]}
    ours, theirs = search_pair(pipe, grid)
    ours.fit(X, y)
    assert CountingTransformer.rows == 4 * len(X)
    theirs.fit(X, y)
    assert_same_results(ours, theirs)


def test_a_pipeline_parameter_is_not_a_head_parameter(blobs, reset_counts):
    # "verbose" is the pipeline's own: each candidate runs its own frozen step
    X, y, _ = blobs
    pipe = Pipeline([("embed", CountingTransformer()), ("head", PrototypeClassifier())])
    EpisodicGridSearchCV(
        pipe, {"verbose": [False, False]}, **EPISODES, random_state=0, refit=False
    ).fit(X, y)
    assert CountingTransformer.rows == 2 * len(X)


# -------------------------------------------------------------------- refit


def test_refit_on_all_of_x_and_delegation(blobs, reset_counts):
    X, y, _ = blobs
    pipe = Pipeline([("embed", CountingTransformer()), ("head", PrototypeClassifier())])
    grid = {"head__metric": ["dot", "cosine"]}
    search = EpisodicGridSearchCV(pipe, grid, **EPISODES, random_state=0).fit(X, y)
    # the search's one pass plus the refit's pass over X
    assert CountingTransformer.rows == 2 * len(X)
    best = search.best_estimator_
    assert best is not pipe
    assert best.get_params()["head__metric"] == search.best_params_["head__metric"]
    np.testing.assert_array_equal(search.classes_, np.arange(N_CLASSES))
    expected = clone(pipe).set_params(**search.best_params_).fit(X, y)
    np.testing.assert_array_equal(search.predict(X[:20]), expected.predict(X[:20]))
    np.testing.assert_allclose(
        search.predict_proba(X[:20]), expected.predict_proba(X[:20])
    )
    np.testing.assert_allclose(
        search.decision_function(X[:20]), expected.decision_function(X[:20])
    )
    assert search.score(X, y) == expected.score(X, y)
    assert search.refit_time_ >= 0
    assert is_classifier(search)


def test_refit_false_skips_the_refit(blobs):
    X, y, _ = blobs
    search = EpisodicGridSearchCV(
        PrototypeClassifier(), {"scale": [1.0]}, **EPISODES, refit=False
    )
    assert not hasattr(search, "predict")
    with pytest.raises(AttributeError, match="has no attribute 'predict'") as error:
        search.predict(X)
    assert "initialized with refit=False" in str(error.value.__cause__)
    search.fit(X, y)
    assert not hasattr(search, "best_estimator_")
    assert not hasattr(search, "refit_time_")
    with pytest.raises(
        AttributeError, match="has no attribute 'predict_proba'"
    ) as error:
        search.predict_proba(X)
    assert "predict_proba is available only after" in str(error.value.__cause__)
    with pytest.raises(AttributeError, match="refit=False"):
        search.classes_  # noqa: B018 (a property that raises)
    assert search.best_params_ == {"scale": 1.0}


def test_predict_before_fit_raises_not_fitted(blobs):
    X, _, _ = blobs
    search = EpisodicGridSearchCV(PrototypeClassifier(), {"scale": [1.0]})
    assert hasattr(search, "predict")  # the estimator has it
    with pytest.raises(NotFittedError, match="EpisodicGridSearchCV instance"):
        search.predict(X)


# ------------------------------------------------------------------- errors


def test_an_unknown_parameter_raises_as_grid_search_does(blobs, reset_counts):
    X, y, _ = blobs
    pipe = Pipeline([("embed", CountingTransformer()), ("head", PrototypeClassifier())])
    for grid, match in [
        ({"head__nope": [1]}, "Invalid parameter 'nope' for estimator Proto"),
        ({"nope": [1]}, "Invalid parameter 'nope' for estimator Pipeline"),
        ({"head__scale": [1.0], "embed__nope": [1]}, "Invalid parameter 'nope'"),
    ]:
        ours, theirs = search_pair(pipe, grid)
        with pytest.raises(ValueError, match=match) as our_error:
            ours.fit(X, y)
        assert CountingTransformer.rows == 0  # before any feature or episode
        with pytest.raises(ValueError, match=match) as their_error:
            theirs.fit(X, y)
        assert str(our_error.value) == str(their_error.value)
        CountingTransformer.rows = 0


@pytest.mark.parametrize(
    "param_grid, error, match",
    [
        ([], ValueError, r"param_grid=\[\] has no candidate"),
        ({"scale": 1.0}, TypeError, "parameter 'scale' needs to be a list"),
        ({"scale": []}, ValueError, "parameter 'scale' need to be a non-empty"),
        ([{"scale": [1.0]}, 5], TypeError, r"Parameter grid is not a dict \(5\)"),
        ("scale", InvalidParameterError, "'param_grid' parameter of EpisodicGrid"),
    ],
)
def test_bad_param_grid(blobs, param_grid, error, match):
    X, y, _ = blobs
    with pytest.raises(error, match=match):
        EpisodicGridSearchCV(PrototypeClassifier(), param_grid, **EPISODES).fit(X, y)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_way": 1}, "'n_way' parameter of EpisodicGridSearchCV must be"),
        ({"n_episodes": 0}, "'n_episodes' parameter of EpisodicGridSearchCV"),
        ({"refit": "best"}, "'refit' parameter of EpisodicGridSearchCV must be"),
        ({"estimator": "knn"}, "'estimator' parameter of EpisodicGridSearchCV"),
        ({"verbose": -1}, "'verbose' parameter of EpisodicGridSearchCV"),
    ],
)
def test_bad_parameters_are_named(blobs, kwargs, match):
    X, y, _ = blobs
    params = {"estimator": PrototypeClassifier(), "param_grid": {"scale": [1.0]}}
    params.update(kwargs)
    with pytest.raises(InvalidParameterError, match=match):
        EpisodicGridSearchCV(**params).fit(X, y)


def test_data_errors_raise_before_the_frozen_step_runs(blobs, reset_counts):
    X, y, _ = blobs
    pipe = Pipeline([("embed", CountingTransformer()), ("head", PrototypeClassifier())])
    search = EpisodicGridSearchCV(
        pipe, {"head__scale": [1.0]}, n_way=9, n_shot=1, n_query=2
    )
    with pytest.raises(ValueError, match="only 8 of 8 classes have that many"):
        search.fit(X, y)
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[96, 95"):
        search.set_params(n_way=2).fit(X, y[:-1])
    assert CountingTransformer.rows == 0


def test_a_failing_candidate_raises_its_error(blobs):
    X, y, _ = blobs
    search = EpisodicGridSearchCV(
        FineTunedCosineClassifier(), {"alpha": [0.1, -1.0]}, **EPISODES
    )
    with pytest.raises(InvalidParameterError, match="'alpha' parameter of FineTuned"):
        search.fit(X, y)


def test_groups_without_within_groups_warn(blobs):
    X, y, groups = blobs
    search = EpisodicGridSearchCV(
        PrototypeClassifier(), {"scale": [1.0]}, **EPISODES, random_state=0
    )
    with pytest.warns(
        UserWarning, match="groups has no effect in EpisodicGridSea"
    ) as w:
        search.fit(X, y, groups)
    assert len(w) == 1 and w[0].filename == __file__  # points at the call
    ignored = search.cv_results_["mean_test_score"]
    np.testing.assert_array_equal(
        search.fit(X, y).cv_results_["mean_test_score"], ignored
    )


# -------------------------------------------------------------- the rest


def test_verbose_prints_each_candidate(blobs, capsys):
    X, y, _ = blobs
    EpisodicGridSearchCV(
        PrototypeClassifier(),
        {"metric": ["cosine", "dot"]},
        **EPISODES,
        random_state=0,
        refit=False,
        verbose=1,
    ).fit(X, y)
    out = capsys.readouterr().out
    assert "Scoring 2 candidates on the same 12 episodes (4-way 2-shot)" in out
    assert "[1/2] {'metric': 'cosine'}: " in out
    assert "[2/2] {'metric': 'dot'}: " in out
    assert "% (95% CI, 12 episodes, 4-way 2-shot)" in out


def test_clone_and_exported():
    search = EpisodicGridSearchCV(PrototypeClassifier(), {"scale": [1.0]}, n_way=3)
    assert clone(search).get_params()["n_way"] == 3
    assert skfewshot.EpisodicGridSearchCV is EpisodicGridSearchCV
    assert "EpisodicGridSearchCV" in skfewshot.__all__


def test_classes_left_out_are_said_once_per_search(blobs):
    # the check before any backbone warns; each candidate's evaluation does not
    X, y, _ = blobs
    keep = (y != 7) | (np.arange(len(y)) % PER_CLASS < 4)  # class 7: 4 rows
    search = EpisodicGridSearchCV(
        PrototypeClassifier(), {"scale": [1.0, 5.0, 10.0]}, refit=False, **EPISODES
    )
    with pytest.warns(UserWarning) as record:
        search.fit(X[keep], y[keep])
    assert [str(w.message) for w in record] == [
        "Episodes are drawn from 7 of the 8 classes, never from the other 1: 1 "
        "has fewer than n_shot + n_query = 5 samples."
    ]
    assert record[0].filename == __file__


def test_a_search_silences_its_repeats_in_its_own_thread_only(blobs):
    # while a candidate is evaluated, a sampler of another thread (started
    # before the search) still says which of its classes are left out
    X, y, _ = blobs
    asked, answered, said = threading.Event(), threading.Event(), []

    def other_thread():
        asked.wait(timeout=60)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always", append=True)  # after any "ignore"
            EpisodeSampler(np.repeat(np.arange(3), [2, 2, 1]), 2, 1, 1)
        said.extend(str(w.message) for w in record)
        answered.set()

    class Head(PrototypeClassifier):
        def fit(self, X, y):  # an override: fitted per episode, not batched
            if not asked.is_set():
                asked.set()
                answered.wait(timeout=60)
            return super().fit(X, y)

    thread = threading.Thread(target=other_thread)
    thread.start()
    EpisodicGridSearchCV(Head(), {"scale": [1.0]}, refit=False, **EPISODES).fit(X, y)
    thread.join(timeout=60)
    assert asked.is_set() and answered.is_set()  # asked during a candidate's fit
    assert said == [
        "Episodes are drawn from 2 of the 3 classes, never from the other 1: 1 "
        "has fewer than n_shot + n_query = 2 samples."
    ]


def test_one_episode_gives_no_confidence_interval(blobs):
    X, y, _ = blobs
    settings = {**EPISODES, "n_episodes": 1}
    search = EpisodicGridSearchCV(
        PrototypeClassifier(), {"scale": [1.0, 10.0]}, refit=False, random_state=0,
        **settings,
    ).fit(X, y)  # fmt: skip
    assert np.isnan(search.cv_results_["ci95_test_score"]).all()
    np.testing.assert_array_equal(search.cv_results_["std_test_score"], [0.0, 0.0])
