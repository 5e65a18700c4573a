"""The "unknown" answer of the heads and open-set episodes."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics import roc_auc_score
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skfewshot import _batched
from skfewshot._episodes import EpisodeSampler
from skfewshot.finetune import FineTunedCosineClassifier
from skfewshot.model_selection import EpisodeScores, EpisodicSplit, evaluate_episodes
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
        next(EpisodicSplit(3, n_unknown_way=4, n_query=2).split(y, y))


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
