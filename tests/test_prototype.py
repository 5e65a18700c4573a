"""Tests for skfewshot.prototype.PrototypeClassifier."""

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_blobs
from sklearn.neighbors import NearestCentroid
from sklearn.utils.estimator_checks import parametrize_with_checks

from skfewshot._heads import _expected_failed_checks
from skfewshot.prototype import PrototypeClassifier

# Three classes in 2-D, small enough to compute everything by hand:
# prototypes (2, 0), (0, 3) and (-2, -2).
X_HAND = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0], [-2.0, -2.0]])
Y_HAND = np.array([0, 0, 1, 1, 2])
Q_HAND = np.array([[3.0, 4.0]])  # norm 5


def _softmax(z):
    e = np.exp(z - np.max(z))
    return e / e.sum()


@parametrize_with_checks(
    [
        PrototypeClassifier(),
        PrototypeClassifier(metric="euclidean", center=True),
        PrototypeClassifier(metric="dot"),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_prototypes_are_class_means():
    clf = PrototypeClassifier().fit(X_HAND, Y_HAND)
    assert_array_equal(clf.prototypes_, [[2.0, 0.0], [0.0, 3.0], [-2.0, -2.0]])
    assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.n_features_in_ == 2
    assert not hasattr(clf, "mean_")


def test_cosine_logits_and_softmax_by_hand():
    clf = PrototypeClassifier(scale=10.0).fit(X_HAND, Y_HAND)
    # cos(q, (2,0)) = 3/5, cos(q, (0,3)) = 4/5, cos(q, (-2,-2)) = -7/(5 sqrt 2).
    logits = 10.0 * np.array([0.6, 0.8, -7.0 / (5.0 * np.sqrt(2.0))])
    assert_allclose(clf.decision_function(Q_HAND), [logits])
    assert_allclose(clf.predict_proba(Q_HAND), [_softmax(logits)])
    assert_allclose(clf.predict_log_proba(Q_HAND), [np.log(_softmax(logits))])
    assert_array_equal(clf.predict(Q_HAND), [1])


def test_scale_changes_proba_not_predictions():
    X, y = make_blobs(n_samples=60, centers=4, random_state=0)
    sharp = PrototypeClassifier(scale=30.0).fit(X, y)
    flat = PrototypeClassifier(scale=1.0).fit(X, y)
    assert_array_equal(sharp.predict(X), flat.predict(X))
    assert sharp.predict_proba(X).max(axis=1).mean() > (
        flat.predict_proba(X).max(axis=1).mean()
    )


def test_euclidean_and_dot_logits_by_hand():
    euclidean = PrototypeClassifier(metric="euclidean").fit(X_HAND, Y_HAND)
    # |(3,4)-(2,0)|^2 = 1+16, |(3,4)-(0,3)|^2 = 9+1, |(3,4)-(-2,-2)|^2 = 25+36.
    assert_allclose(euclidean.decision_function(Q_HAND), [[-17.0, -10.0, -61.0]])
    dot = PrototypeClassifier(metric="dot").fit(X_HAND, Y_HAND)
    assert_allclose(dot.decision_function(Q_HAND), [[6.0, 12.0, -14.0]])
    assert_allclose(dot.predict_proba(Q_HAND), [_softmax([6.0, 12.0, -14.0])])


def test_center_is_cl2n_by_hand():
    clf = PrototypeClassifier(center=True, scale=1.0).fit(X_HAND, Y_HAND)
    mean = X_HAND.mean(axis=0)  # (0.4, 0.8)
    assert_allclose(clf.mean_, mean)
    assert_array_equal(clf.prototypes_[0], [2.0, 0.0])  # stored uncentred
    q = Q_HAND[0] - mean
    M = clf.prototypes_ - mean
    expected = M @ q / (np.linalg.norm(M, axis=1) * np.linalg.norm(q))
    assert_allclose(clf.decision_function(Q_HAND), [expected])


def test_binary_decision_function_is_logit_difference():
    X, y = X_HAND[:4], Y_HAND[:4]
    clf = PrototypeClassifier().fit(X, y)
    # logits 10 * (0.6, 0.8): difference 2, and P(class 1) is its sigmoid.
    assert_allclose(clf.decision_function(Q_HAND), [2.0])
    assert_allclose(clf.predict_proba(Q_HAND)[:, 1], 1.0 / (1.0 + np.exp(-2.0)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_euclidean_predict_equals_nearest_centroid(seed):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(60, 8))
    y = rng.randint(0, 4, size=60)
    X_test = rng.normal(size=(200, 8))
    ours = PrototypeClassifier(metric="euclidean").fit(X, y)
    reference = NearestCentroid().fit(X, y)
    assert_array_equal(ours.predict(X_test), reference.predict(X_test))
    assert_allclose(ours.prototypes_, reference.centroids_)


def test_sample_weight_weights_the_means():
    clf = PrototypeClassifier().fit(X_HAND, Y_HAND, sample_weight=[1, 3, 1, 1, 2])
    assert_allclose(clf.prototypes_[0], [(1 * 1 + 3 * 3) / 4, 0.0])
    repeated = PrototypeClassifier().fit(
        np.repeat(X_HAND, [1, 3, 1, 1, 2], 0), np.repeat(Y_HAND, [1, 3, 1, 1, 2])
    )
    assert_allclose(clf.prototypes_, repeated.prototypes_)


def test_zero_weight_class_is_an_error():
    with pytest.raises(ValueError, match="rows of class 2 all have zero sample_weight"):
        PrototypeClassifier().fit(X_HAND, Y_HAND, sample_weight=[1, 1, 1, 1, 0])


def test_unlabelled_rows_only_enter_the_mean():
    X = np.vstack([X_HAND, [[10.0, 10.0]]])
    y = np.append(Y_HAND, -1)
    clf = PrototypeClassifier(center=True).fit(X, y)
    assert_array_equal(clf.classes_, [0, 1, 2])
    assert_allclose(
        clf.prototypes_, PrototypeClassifier().fit(X_HAND, Y_HAND).prototypes_
    )
    assert_allclose(clf.mean_, X.mean(axis=0))


def test_string_labels_and_object_unlabelled():
    y = np.array(["b", "b", "a", "a", "c"])
    clf = PrototypeClassifier().fit(X_HAND, y)
    assert_array_equal(clf.classes_, ["a", "b", "c"])
    assert_array_equal(clf.predict([[5.0, 0.1], [0.1, 5.0]]), ["b", "a"])
    # Object labels may mix strings with the integer -1 (unlabelled).
    y_obj = np.array(["b", "b", "a", "a", -1], dtype=object)
    clf = PrototypeClassifier().fit(X_HAND, y_obj)
    assert_array_equal(clf.classes_, ["a", "b"])


def test_pickle_round_trip():
    clf = PrototypeClassifier(center=True).fit(X_HAND, Y_HAND)
    loaded = pickle.loads(pickle.dumps(clf))
    assert_array_equal(loaded.prototypes_, clf.prototypes_)
    assert_array_equal(loaded.predict_proba(Q_HAND), clf.predict_proba(Q_HAND))


def test_float32_is_preserved():
    clf = PrototypeClassifier().fit(X_HAND.astype(np.float32), Y_HAND)
    assert clf.prototypes_.dtype == np.float32


def test_episode_is_classified_well(episode):
    X_support, y_support, X_query, y_query = episode
    for metric in ["cosine", "euclidean", "dot"]:
        clf = PrototypeClassifier(metric=metric).fit(X_support, y_support)
        assert clf.score(X_query, y_query) >= 0.9, metric


@pytest.mark.parametrize(
    "X, y, match",
    [
        (X_HAND, np.zeros(5), "at least 2 classes.*got 1 class: 0"),
        (X_HAND, np.array([0, 0, 0, -1, -1]), r"2 rows with y == -1 are unlabelled"),
        (X_HAND, -np.ones(5), "All 5 labels are -1"),
        (np.array([[np.nan, 0.0], [1.0, 1.0]]), [0, 1], "NaN"),
        (np.array([[np.inf, 0.0], [1.0, 1.0]]), [0, 1], "infinity"),
        (np.empty((0, 2)), [], "0 sample"),
        (np.arange(5.0), Y_HAND, "Expected 2D array"),
        (X_HAND, Y_HAND + 0.5, "Unknown label type"),
    ],
)
def test_bad_input_in_fit(X, y, match):
    with pytest.raises(ValueError, match=match):
        PrototypeClassifier().fit(X, y)


def test_wrong_number_of_features_at_predict():
    clf = PrototypeClassifier().fit(X_HAND, Y_HAND)
    with pytest.raises(ValueError, match="3 features, but PrototypeClassifier"):
        clf.predict(np.ones((2, 3)))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"scale": 0.0}, "'scale' parameter"),
        ({"scale": -1.0}, "'scale' parameter"),
        ({"metric": "manhattan"}, "'metric' parameter"),
    ],
)
def test_invalid_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        PrototypeClassifier(**params).fit(X_HAND, Y_HAND)
