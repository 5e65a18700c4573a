"""The "unknown" answer of the heads and open-set episodes."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skfewshot import _batched
from skfewshot._episodes import EpisodeSampler, unknown_stream
from skfewshot.finetune import FineTunedCosineClassifier
from skfewshot.model_selection import (
    EpisodeScores,
    EpisodicSplit,
    evaluate_episodes,
    open_set_accuracy_score,
    open_set_scorer,
)
from skfewshot.prototype import PrototypeClassifier

HEADS = [PrototypeClassifier, FineTunedCosineClassifier]

# Two classes, two rows each: prototypes (1, 1) / 2 -> direction (1, 1) and
# (-1, 1) / 2 -> direction (-1, 1).
X_TOY = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 1.0]])
Y_TOY = np.array([0, 0, 1, 1])
R = 1 / np.sqrt(2)


@parametrize_with_checks(
    [
        PrototypeClassifier(unknown_label=-1),
        PrototypeClassifier(unknown_label=-1, center=True),
        FineTunedCosineClassifier(unknown_label=-1, max_iter=20),
    ],
    expected_failed_checks=lambda estimator: {
        "check_sample_weight_equivalence_on_dense_data": (
            "the auto threshold is a quantile over the support rows, each "
            "counted once and left out once: a weight does not act as "
            "repeating the row there (a float unknown_threshold passes)"
        ),
        **dict.fromkeys(
            ["check_classifiers_train", "check_classifiers_classes"],
            "by design predict answers unknown_label (not a class, not the "
            "argmax of decision_function) for the training rows whose score "
            "is below the auto threshold, about 5% of them",
        ),
    },
)
def test_sklearn_compatible_with_unknown_label(estimator, check):
    with warnings.catch_warnings():
        # some checks fit one row per class: the auto threshold warns
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


@pytest.mark.parametrize("head", HEADS)
def test_score_samples_by_hand(head):
    clf = head().fit(X_TOY, Y_TOY)
    queries = np.array([[1.0, 1.0], [1.0, -1.0], [0.0, 2.0], [3.0, 0.0]])
    # cosines to (1, 1) and (-1, 1), the largest
    assert_allclose(clf.score_samples(queries), [1.0, 0.0, R, R], rtol=1e-12)


def test_score_samples_centred_by_hand():
    clf = PrototypeClassifier(center=True).fit(X_TOY, Y_TOY)
    # mean (0, 0.5); centred prototypes (0.5, 0), (-0.5, 0)
    assert_allclose(clf.score_samples([[1.0, 1.5], [0.0, 2.5]]), [R, 0.0])


def test_leave_one_out_threshold_by_hand():
    # class 0: rows (1, 0), (0, 1) -> without (1, 0) its prototype is (0, 1):
    # cos 0; the other class's prototype (-1, 1): cos -R; score max = 0.
    # Without (0, 1): prototype (1, 0), cos 0; vs (-1, 1): cos R -> R.
    # class 1: without (-1, 0): (0, 1), cos 0; vs (1, 1): cos -R -> 0.
    # without (0, 1): (-1, 0), cos 0; vs (1, 1): cos R -> R.
    # scores [0, R, 0, R]; 5% quantile (linear): 0.
    clf = PrototypeClassifier(unknown_label=-1).fit(X_TOY, Y_TOY)
    assert clf.unknown_threshold_ == pytest.approx(np.quantile([0, R, 0, R], 0.05))
    X = np.array([[1.0, 0.2], [1.0, 0.0], [2.0, 2.0], [0.0, 3.0]])
    # class 0 rows (1, .2), (1, 0), (2, 2); class 1 one row (0, 3): no LOO.
    clf = PrototypeClassifier(unknown_label=-1).fit(X, np.array([0, 0, 0, 1]))

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    other = X[3]
    known = [max(cos(X[i], X[[j for j in range(3) if j != i]].sum(0)),
                 cos(X[i], other)) for i in range(3)]  # fmt: skip
    assert clf.unknown_threshold_ == pytest.approx(np.quantile(known, 0.05))


def test_one_shot_auto_threshold_warns_and_uses_the_other_classes():
    X = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    with pytest.warns(UserWarning, match="one row per class.*a guess"):
        clf = PrototypeClassifier(unknown_label=-1).fit(X, [0, 1, 2])
    # each row's largest cosine to another class: R, R, R
    assert clf.unknown_threshold_ == pytest.approx(R)


@pytest.mark.parametrize("head", HEADS)
def test_one_shot_auto_threshold_warning_points_at_the_fit_call(head):
    X = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    with pytest.warns(UserWarning, match="a guess") as record:
        head(unknown_label=-1).fit(X, [0, 1, 2])
    assert [w.filename for w in record if "a guess" in str(w.message)] == [__file__]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize(
    "y, unknown, dtype",
    [
        (Y_TOY, -1, np.int64),
        (np.array(["a", "a", "b", "b"]), "unknown", np.dtype("<U7")),
        (Y_TOY.astype(np.uint8), -1, np.int16),
        (Y_TOY, "unknown", object),
    ],
)
def test_predict_unknown_exactly_below_the_threshold(head, y, unknown, dtype):
    clf = head(unknown_label=unknown, unknown_threshold=0.5).fit(X_TOY, y)
    assert clf.unknown_threshold_ == 0.5
    queries = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 2.0], [0.0, -1.0]])
    scores = clf.score_samples(queries)
    predicted = clf.predict(queries)
    assert predicted.dtype == dtype
    closed = head().fit(X_TOY, y).predict(queries)
    expected = np.where(scores < 0.5, unknown, closed.astype(object))
    assert_array_equal(predicted.astype(object), expected)
    assert list(predicted == unknown) == [False, True, False, True]
    proba = clf.predict_proba(queries)
    assert proba.shape == (4, 2)
    assert_allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize("head", HEADS)
def test_unknown_label_errors(head):
    with pytest.raises(ValueError, match=r"unknown_label=1 is one of the classes"):
        head(unknown_label=1).fit(X_TOY, Y_TOY)
    with pytest.raises(ValueError, match=r"unknown_label='b' is one of the classes"):
        head(unknown_label="b").fit(X_TOY, ["a", "a", "b", "b"])
    with pytest.raises(ValueError, match=r"unknown_label=-1 equals unlabelled_label"):
        head(unknown_label=-1, unlabelled_label=-1).fit(X_TOY, Y_TOY)
    with pytest.raises(ValueError, match="unknown_threshold"):
        head(unknown_label=-1, unknown_threshold="max").fit(X_TOY, Y_TOY)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize(
    "classes, dtype",
    [
        # numpy's common dtype with -1 is float64 (it merged these two) or
        # int8; int64 holds them exactly, and scikit-learn's metrics take it
        (np.array([3, 7], dtype=np.uint64), np.int64),
        (np.array([2**60 + 1, 2**60 + 3], dtype=np.uint64), np.int64),
        (np.array([False, True]), np.int8),
        # no numeric dtype holds these and -1: the labels themselves
        (np.array([2**63 + 1, 2**64 - 1], dtype=np.uint64), object),
    ],
    ids=["uint64", "uint64_above_2**53", "bool", "uint64_above_int64"],
)
def test_unknown_label_beside_classes_numpy_would_not_hold(head, classes, dtype):
    y = classes[Y_TOY]
    clf = head(unknown_label=-1, unknown_threshold=0.5).fit(X_TOY, y)
    queries = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 2.0], [0.0, -1.0]])
    predicted = clf.predict(queries)
    assert predicted.dtype == dtype
    assert predicted.tolist() == [classes[0].item(), -1, classes[1].item(), -1]
    if dtype is object:
        assert [type(p) for p in predicted[[0, 2]]] == [type(c.item()) for c in classes]
    else:  # scikit-learn's metrics take a numeric array (an object one of ints not)
        assert clf.score(X_TOY, y) == np.mean(clf.predict(X_TOY) == y)


@pytest.mark.parametrize("head", HEADS)
def test_unknown_threshold_nan_is_refused(head):
    # NaN: no score is below it, so unknown_label was silently never answered
    with pytest.raises(InvalidParameterError, match="unknown_threshold"):
        head(unknown_label=-1, unknown_threshold=np.nan).fit(X_TOY, Y_TOY)
    # the infinities are thresholds: every query unknown, or none
    queries = np.array([[1.0, 1.0], [0.0, -1.0]])
    closed = head().fit(X_TOY, Y_TOY).predict(queries).tolist()
    for threshold, expected in [(np.inf, [-1, -1]), (-np.inf, closed)]:
        clf = head(unknown_label=-1, unknown_threshold=threshold).fit(X_TOY, Y_TOY)
        assert clf.predict(queries).tolist() == expected


def test_unknown_label_off_sets_no_threshold():
    clf = PrototypeClassifier(unknown_label=-1).fit(X_TOY, Y_TOY)
    clf.set_params(unknown_label=None).fit(X_TOY, Y_TOY)
    assert not hasattr(clf, "unknown_threshold_")


def test_transductive_score_samples_do_not_depend_on_the_batch():
    clf = PrototypeClassifier(transductive=True).fit(X_TOY, Y_TOY)
    queries = np.array([[1.0, 1.0], [1.0, -1.0], [5.0, 0.3]])
    whole = clf.score_samples(queries)
    one_by_one = [clf.score_samples(q[None])[0] for q in queries]
    assert_allclose(whole, one_by_one)


# ------------------------------------------------------------ episodes


def test_open_set_split_draws_unknown_classes_outside_the_support():
    y = np.repeat(np.arange(12), 6)
    cv = EpisodicSplit(3, n_shot=2, n_query=2, n_unknown_way=4, n_episodes=20,
                       random_state=0)  # fmt: skip
    for support, query in cv.split(y, y):
        assert query.shape == (14,) and not set(support) & set(query)
        known, unknown = y[query[:6]], y[query[6:]]
        assert set(known) == set(y[support])
        assert len(set(unknown)) == 4 and not set(unknown) & set(y[support])


def test_n_unknown_way_zero_keeps_the_episodes():
    y = np.repeat(np.arange(12), 6)
    plain = EpisodicSplit(3, n_shot=2, n_query=2, n_episodes=5, random_state=3)
    zero = EpisodicSplit(3, n_shot=2, n_query=2, n_episodes=5, random_state=3,
                         n_unknown_way=0)  # fmt: skip
    for (s1, q1), (s2, q2) in zip(plain.split(y, y), zero.split(y, y)):
        assert_array_equal(s1, s2)
        assert_array_equal(q1, q2)
    # the first episode's known part does not change with unknown classes
    rng_a, rng_b = np.random.RandomState(0), np.random.RandomState(0)
    s_a, q_a = EpisodeSampler(y, 3, 2, 2).sample(rng_a)
    s_b, q_b = EpisodeSampler(y, 3, 2, 2, n_unknown_way=2).sample(rng_b)
    assert_array_equal(s_a, s_b)
    assert_array_equal(q_a, q_b[:6])


def test_open_set_needs_enough_classes():
    y = np.repeat(np.arange(6), 6)
    with pytest.raises(ValueError, match=r"n_way \+ n_unknown_way = 3 \+ 4"):
        list(EpisodicSplit(3, n_unknown_way=4, n_query=2).split(y, y))


def _blobs(seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.normal(size=(10, 8)) * 3
    X = np.concatenate([c + rng.normal(size=(12, 8)) for c in centers])
    return X, np.repeat(np.arange(10), 12)


def test_evaluate_open_set_by_hand():
    X, y = _blobs()
    kwargs = dict(n_way=3, n_shot=2, n_query=4, n_unknown_way=3, n_episodes=6)
    head = PrototypeClassifier(unknown_label=-1)
    result = evaluate_episodes(head, X, y, random_state=0, **kwargs)
    episodes = EpisodicSplit(
        kwargs["n_way"], n_shot=2, n_query=4, n_unknown_way=3, n_episodes=6,
        random_state=0,
    ).split(X, y)  # fmt: skip
    for i, (support, query) in enumerate(episodes):
        clf = PrototypeClassifier(unknown_label=-1).fit(X[support], y[support])
        known = np.isin(y[query], y[support])
        predicted = clf.predict(X[query])
        truth = np.where(known, y[query], -1)
        assert result.accuracies[i] == pytest.approx(np.mean(predicted == truth))
        assert result.known_accuracies[i] == pytest.approx(
            np.mean(predicted[known] == y[query][known])
        )
        assert result.aurocs[i] == pytest.approx(
            roc_auc_score(known, clf.score_samples(X[query]))
        )
    assert result.n_unknown_way == 3
    assert result.auroc_mean == pytest.approx(np.mean(result.aurocs))
    assert "3 unknown classes; known" in str(result)


def test_evaluate_open_set_without_score_samples_warns():
    from sklearn.neighbors import KNeighborsClassifier

    X, y = _blobs()
    with pytest.warns(UserWarning, match="no score_samples"):
        result = evaluate_episodes(
            KNeighborsClassifier(1), X, y, n_way=3, n_shot=2, n_query=2,
            n_unknown_way=2, n_episodes=3, random_state=0,
        )  # fmt: skip
    assert result.aurocs is None and result.known_accuracies.shape == (3,)


def test_episode_scores_closed_set_api_unchanged():
    scores = EpisodeScores(np.array([1.0, 0.5]), n_way=2, n_shot=1, n_query=2)
    assert scores.known_mean is None and scores.auroc_ci95 is None
    assert str(scores) == "75.0 ± 34.6 % (95% CI, 2 episodes, 2-way 1-shot)"
    with pytest.raises(ValueError, match="aurocs has shape"):
        EpisodeScores(np.ones(2), 2, 1, 2, aurocs=np.ones(3))


@pytest.mark.parametrize(
    "make, predictor",
    [
        (PrototypeClassifier, _batched.prototype_batch_predictor),
        (FineTunedCosineClassifier, _batched.finetune_batch_predictor),
    ],
)
def test_unknown_label_is_not_batched(make, predictor):
    X, _ = _blobs()
    assert predictor(make(unknown_label=-1), X) is None
    # the threshold alone changes nothing batched: predictions are classes
    assert predictor(make(unknown_threshold=0.3), X) is not None


# --------------------------------------- the same episodes with unknown classes


@pytest.mark.parametrize("within_groups", [False, True])
def test_unknown_classes_keep_every_episode_of_the_seed(within_groups):
    # the unknown classes' samples come from a second stream: the support and
    # known queries of *every* episode are the closed-set ones (episode 1 and
    # later differed: the unknown draws advanced the one generator)
    y = np.repeat(np.arange(10), 15)
    groups = y % 2  # two groups of 5 classes: room for 2 + 2 in each
    closed = EpisodicSplit(2, n_shot=2, n_query=3, n_episodes=200, random_state=4,
                           within_groups=within_groups)  # fmt: skip
    open_ = EpisodicSplit(2, n_shot=2, n_query=3, n_episodes=200, random_state=4,
                          within_groups=within_groups, n_unknown_way=2)  # fmt: skip
    episodes = zip(closed.split(y, y, groups), open_.split(y, y, groups))
    n = 0
    for (support, query), (open_support, open_query) in episodes:
        assert_array_equal(open_support, support)
        assert_array_equal(open_query[:6], query)
        unknown = y[open_query[6:]]
        assert len(set(unknown)) == 2 and not set(unknown) & set(y[support])
        assert sorted(np.unique(unknown, return_counts=True)[1]) == [3, 3]
        assert len(set(open_query)) == 12
        if within_groups:
            assert len(set(groups[np.r_[open_support, open_query]])) == 1
        n += 1
    assert n == 200


def test_sampler_episodes_use_one_unknown_stream_derived_from_the_seed():
    y = np.repeat(np.arange(8), 6)
    sampler = EpisodeSampler(y, 3, 1, 2, n_unknown_way=2)
    rng = np.random.RandomState(5)
    state = rng.get_state()
    unknown = unknown_stream(rng)
    # derived without advancing rng, and a function of its state only
    assert_array_equal(rng.get_state()[1], state[1])
    assert rng.get_state()[2] == state[2]
    assert unknown.randint(2**31) == unknown_stream(np.random.RandomState(5)).randint(
        2**31
    )
    eager_rng = np.random.RandomState(5)
    eager_unknown = unknown_stream(eager_rng)
    lazy = sampler.episodes(np.random.RandomState(5), 4)
    for support, query in lazy:
        expected = sampler.sample(eager_rng, eager_unknown)
        assert_array_equal(support, expected[0])
        assert_array_equal(query, expected[1])


# ------------------------------------------------------------ the open-set score


def test_open_set_accuracy_score_by_hand():
    # known 0, 0, 1: right, wrong, right; unknown 5 answered -1 (no class):
    # right; unknown 6 answered 0: wrong -> 3 / 5
    y_true, y_pred = [0, 0, 1, 5, 6], [0, 1, 1, -1, 0]
    assert open_set_accuracy_score(y_true, y_pred, classes=[0, 1]) == 0.6
    # an unknown query answered with another unknown class is still "unknown"
    assert open_set_accuracy_score([7], [8], classes=[0, 1]) == 1.0
    # strings, an object unknown_label beside int classes
    labels = np.array(["a", "a", "b", "x", "y"])
    assert (
        open_set_accuracy_score(
            labels, ["a", "b", "b", "unknown", "a"], classes=["a", "b"]
        )
        == 0.6
    )
    mixed = np.array([0, 1, "unknown", 0], dtype=object)
    assert open_set_accuracy_score([0, 1, 9, 9], mixed, classes=[0, 1]) == 0.75
    # no unknown query: the accuracy
    assert open_set_accuracy_score([0, 1, 1, 0], [0, 1, 0, 0], classes=[0, 1]) == 0.75
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[5, 4\]"):
        open_set_accuracy_score(y_true, y_pred[:4], classes=[0, 1])


class _Fixed:
    """A fitted stand-in: its classes and the answers it gives."""

    def __init__(self, classes, answers):
        self.classes_ = np.asarray(classes)
        self.answers = np.asarray(answers)

    def predict(self, X):
        assert len(X) == len(self.answers)
        return self.answers


def test_open_set_scorer_scores_the_prediction_against_classes_():
    head = _Fixed([0, 1], [0, 1, 1, -1, 0])
    assert open_set_scorer(head, np.zeros((5, 2)), [0, 0, 1, 5, 6]) == 0.6
    del head.classes_
    with pytest.raises(
        AttributeError,
        match=r"^open_set_scorer needs the known classes of the fitted estimator, "
        r"but _Fixed has no classes_\.$",
    ):
        open_set_scorer(head, np.zeros((5, 2)), [0, 0, 1, 5, 6])


OPEN_SET_EPISODES = dict(n_shot=2, n_query=4, n_episodes=20, random_state=0,
                         n_unknown_way=2)  # fmt: skip


@pytest.mark.parametrize(
    "estimator",
    [
        PrototypeClassifier(unknown_label=-1),
        make_pipeline(
            StandardScaler(), FineTunedCosineClassifier(unknown_label=-1, max_iter=20)
        ),
    ],
    ids=["prototype", "pipeline-finetune"],
)
def test_default_scoring_of_open_set_folds_is_evaluate_episodes(estimator):
    # the heads' score is the open-set accuracy: scikit-learn's default
    # scoring gives evaluate_episodes' accuracies, episode by episode, as the
    # open-set scorer does
    X, y = _blobs()
    cv = EpisodicSplit(3, **OPEN_SET_EPISODES)
    expected = evaluate_episodes(estimator, X, y, n_way=3, **OPEN_SET_EPISODES)
    default = cross_val_score(estimator, X, y, cv=cv)
    assert_array_equal(default, expected.accuracies)
    assert_array_equal(
        cross_val_score(estimator, X, y, cv=cv, scoring=open_set_scorer), default
    )
    # by hand: the open-set verdict of each query of each episode
    for score, (support, query) in zip(default, cv.split(X, y)):
        clf = clone(estimator).fit(X[support], y[support])
        truth = np.where(np.isin(y[query], y[support]), y[query], -1)
        assert score == np.mean(clf.predict(X[query]) == truth)
    assert expected.accuracies.min() < 1.0  # varied scores, not all perfect


def test_a_search_tunes_the_threshold_with_the_default_scoring():
    # the accuracy counted every unknown query as wrong, so a search picked
    # the threshold that never rejects (-1.0); the head's score picks what
    # evaluate_episodes and the open-set scorer pick
    X, y = _blobs()
    cv = EpisodicSplit(3, **OPEN_SET_EPISODES)
    head = PrototypeClassifier(unknown_label=-1)
    thresholds = [-1.0, 0.5, 0.8, 0.9]
    grid = {"unknown_threshold": thresholds}
    default = GridSearchCV(head, grid, cv=cv, refit=False).fit(X, y)
    scorer = GridSearchCV(head, grid, cv=cv, refit=False, scoring=open_set_scorer)
    scorer.fit(X, y)
    means = [
        evaluate_episodes(
            clone(head).set_params(unknown_threshold=t), X, y, n_way=3,
            **OPEN_SET_EPISODES,
        ).mean
        for t in thresholds
    ]  # fmt: skip
    assert_array_equal(
        default.cv_results_["mean_test_score"], scorer.cv_results_["mean_test_score"]
    )
    assert_allclose(default.cv_results_["mean_test_score"], means, rtol=0, atol=1e-12)
    best = {"unknown_threshold": thresholds[np.argmax(means)]}
    assert default.best_params_ == scorer.best_params_ == best
    assert best != {"unknown_threshold": -1.0}


def test_open_set_split_does_not_warn():
    y = np.repeat(np.arange(8), 6)
    cv = EpisodicSplit(2, n_shot=1, n_query=2, n_episodes=5, n_unknown_way=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(cv.split(y, y))) == 5


@pytest.mark.parametrize("head", HEADS)
def test_score_with_an_unknown_label_is_the_open_set_accuracy(head):
    # threshold 0.9: the rows along a class direction are that class, and
    # (0, -1) (cosine -0.71 to both) is rejected
    clf = head(unknown_label=-1, unknown_threshold=0.9).fit(X_TOY, Y_TOY)
    X = np.array([[1.0, 1.0], [-2.0, 2.0], [0.0, -1.0], [3.0, 3.0], [1.0, 1.0]])
    assert_array_equal(clf.predict(X), [0, 1, -1, 0, 0])
    y = np.array([0, 0, 5, 6, -1])
    # right: row 0 (class 0), row 2 (unknown, rejected); wrong: row 1 (0 ->
    # 1), row 3 (unknown answered 0), row 4 (the label -1 is no class here)
    assert clf.score(X, y) == 0.4
    assert clf.score(X, y, sample_weight=[1, 1, 3, 1, 1]) == (1 + 3) / 7
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples"):
        clf.score(X, y, sample_weight=[1, 1])
    # a column vector compared every row with every row (0.28 here), and a
    # NaN weight gave nan: scikit-learn's metrics ravel y with a warning and
    # refuse the weights
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        assert clf.score(X, y.reshape(-1, 1)) == 0.4
    with pytest.raises(ValueError, match="sample_weight contains NaN"):
        clf.score(X, y, sample_weight=[1, 1, np.nan, 1, 1])
    with pytest.raises(ValueError, match="at least one non-zero|sums to zero"):
        clf.score(X, y, sample_weight=np.zeros(5))


@pytest.mark.parametrize("head", HEADS)
def test_score_without_an_unknown_label_is_the_accuracy(head):
    clf = head().fit(X_TOY, Y_TOY)
    X = np.array([[1.0, 1.0], [-2.0, 2.0], [0.0, -1.0], [3.0, 3.0]])
    y = np.array([0, 0, 5, 0])
    weights = np.array([1.0, 2.0, 3.0, 0.5])
    predicted = clf.predict(X)
    assert clf.score(X, y) == accuracy_score(y, predicted)
    assert clf.score(X, y, sample_weight=weights) == accuracy_score(
        y, predicted, sample_weight=weights
    )
