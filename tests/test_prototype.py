"""Tests for skfewshot.prototype.PrototypeClassifier."""

import copy
import pickle

import numpy as np
import pytest
from _memory_testing import peak_bytes
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.neighbors import NearestCentroid
from sklearn.utils.estimator_checks import parametrize_with_checks

from skfewshot.prototype import PrototypeClassifier

# Three classes in 2-D, small enough to compute everything by hand:
# prototypes (2, 0), (0, 3) and (-2, -2).
X_HAND = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0], [-2.0, -2.0]])
Y_HAND = np.array([0, 0, 1, 1, 2])
Q_HAND = np.array([[3.0, 4.0]])  # norm 5
# Its cosine logits at scale 10: cos(q, (2,0)) = 3/5, cos(q, (0,3)) = 4/5,
# cos(q, (-2,-2)) = -7/(5 sqrt 2).
COS_HAND = np.array([0.6, 0.8, -7.0 / (5.0 * np.sqrt(2.0))])
# float32 results: a few float32 ulps, whatever the BLAS and thread count.
F32 = {"rtol": 1e-5, "atol": 1e-6}


def _softmax(z):
    e = np.exp(z - np.max(z))
    return e / e.sum()


@parametrize_with_checks(
    [
        PrototypeClassifier(),
        PrototypeClassifier(metric="euclidean", center=True),
        PrototypeClassifier(metric="dot"),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@parametrize_with_checks(
    [
        PrototypeClassifier(transductive=True),
        PrototypeClassifier(transductive=True, center=True, scale=3.0),
    ],
    expected_failed_checks=lambda estimator: {
        "check_methods_subset_invariance": (
            "transductive: the queries of one call rectify the prototypes, so "
            "predicting rows one by one differs from predicting them together"
        )
    },
)
def test_sklearn_compatible_transductive(estimator, check):
    check(estimator)


def test_prototypes_are_class_means():
    clf = PrototypeClassifier().fit(X_HAND, Y_HAND)
    assert_array_equal(clf.prototypes_, [[2.0, 0.0], [0.0, 3.0], [-2.0, -2.0]])
    assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.n_features_in_ == 2
    assert not hasattr(clf, "mean_")


def test_cosine_logits_and_softmax_by_hand():
    clf = PrototypeClassifier(scale=10.0).fit(X_HAND, Y_HAND)
    logits = 10.0 * COS_HAND
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
    assert_allclose(ours.prototypes_, reference.centroids_, rtol=1e-12, atol=1e-15)


def test_sample_weight_weights_the_means():
    clf = PrototypeClassifier().fit(X_HAND, Y_HAND, sample_weight=[1, 3, 1, 1, 2])
    assert_allclose(clf.prototypes_[0], [(1 * 1 + 3 * 3) / 4, 0.0], rtol=1e-12)
    repeated = PrototypeClassifier().fit(
        np.repeat(X_HAND, [1, 3, 1, 1, 2], 0), np.repeat(Y_HAND, [1, 3, 1, 1, 2])
    )
    assert_allclose(clf.prototypes_, repeated.prototypes_, rtol=1e-12, atol=1e-15)


def test_zero_weight_class_is_an_error():
    with pytest.raises(ValueError, match="rows of class 2 all have zero sample_weight"):
        PrototypeClassifier().fit(X_HAND, Y_HAND, sample_weight=[1, 1, 1, 1, 0])


def test_unlabelled_rows_only_enter_the_mean():
    X = np.vstack([X_HAND, [[10.0, 10.0]]])
    y = np.append(Y_HAND, -1)
    clf = PrototypeClassifier(center=True, unlabelled_label=-1).fit(X, y)
    assert_array_equal(clf.classes_, [0, 1, 2])
    assert_array_equal(clf.prototypes_, [[2.0, 0.0], [0.0, 3.0], [-2.0, -2.0]])
    assert_allclose(clf.mean_, [12.0 / 6, 14.0 / 6], rtol=1e-12)


def test_minus_one_is_an_ordinary_class_by_default():
    X = np.vstack([X_HAND, [[10.0, 10.0]]])
    y = np.append(Y_HAND, -1)
    clf = PrototypeClassifier().fit(X, y)
    assert_array_equal(clf.classes_, [-1, 0, 1, 2])
    assert_array_equal(clf.prototypes_[0], [10.0, 10.0])
    assert_array_equal(clf.predict([[9.0, 9.5], [3.0, 0.0]]), [-1, 0])


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
def test_labels_minus_one_to_three_equal_labels_zero_to_four(episode, metric):
    # Same data, classes relabelled 0 -> -1, 1 -> 0, ..., 4 -> 3 (same order).
    X_support, y_support, X_query, _ = episode
    relabel = np.array([-1, 0, 1, 2, 3])
    clf = PrototypeClassifier(metric=metric)
    shifted = clone(clf).fit(X_support, relabel[y_support])
    plain = clone(clf).fit(X_support, y_support)
    assert_array_equal(shifted.classes_, [-1, 0, 1, 2, 3])
    assert_array_equal(shifted.predict(X_query), relabel[plain.predict(X_query)])
    assert_array_equal(shifted.predict_proba(X_query), plain.predict_proba(X_query))


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
def test_binary_minus_one_plus_one_labels(metric):
    # Tabular binary data is often labelled {-1, +1}: two ordinary classes.
    X = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    y = np.array([-1, -1, 1, 1])
    clf = PrototypeClassifier(metric=metric).fit(X, y)
    assert_array_equal(clf.classes_, [-1, 1])
    assert_array_equal(clf.prototypes_, [[2.0, 0.0], [0.0, 3.0]])
    assert_array_equal(clf.predict([[5.0, 1.0], [1.0, 5.0]]), [-1, 1])
    assert clf.score(X, y) == 1.0


def test_string_unlabelled_label():
    y = np.array(["b", "b", "a", "a", "?"])
    # By default "?" is a class like any other...
    assert_array_equal(PrototypeClassifier().fit(X_HAND, y).classes_, ["?", "a", "b"])
    # ...and only unlabelled when asked for; the integer -1 never matches text.
    clf = PrototypeClassifier(unlabelled_label="?").fit(X_HAND, y)
    assert_array_equal(clf.classes_, ["a", "b"])
    assert_array_equal(clf.prototypes_, [[0.0, 3.0], [2.0, 0.0]])
    text = PrototypeClassifier(unlabelled_label=-1).fit(X_HAND, y)
    assert_array_equal(text.classes_, ["?", "a", "b"])
    # Object labels may mix strings with the integer -1.
    y_obj = np.array(["b", "b", "a", "a", -1], dtype=object)
    clf = PrototypeClassifier(unlabelled_label=-1).fit(X_HAND, y_obj)
    assert_array_equal(clf.classes_, ["a", "b"])
    # A text unlabelled_label never matches numeric labels.
    numeric = PrototypeClassifier(unlabelled_label="-1").fit(X_HAND, Y_HAND - 1)
    assert_array_equal(numeric.classes_, [-1, 0, 1])


def test_string_labels():
    y = np.array(["b", "b", "a", "a", "c"])
    clf = PrototypeClassifier().fit(X_HAND, y)
    assert_array_equal(clf.classes_, ["a", "b", "c"])
    assert_array_equal(clf.predict([[5.0, 0.1], [0.1, 5.0]]), ["b", "a"])


def test_pickle_round_trip():
    clf = PrototypeClassifier(center=True).fit(X_HAND, Y_HAND)
    loaded = pickle.loads(pickle.dumps(clf))
    assert_array_equal(loaded.prototypes_, clf.prototypes_)
    # Same arithmetic on arrays at other addresses: equal up to rounding.
    assert_allclose(loaded.predict_proba(Q_HAND), clf.predict_proba(Q_HAND), rtol=1e-12)


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
        (X_HAND, -np.ones(5), "at least 2 classes.*got 1 class: -1"),
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


@pytest.mark.parametrize(
    "y, unlabelled_label, match",
    [
        ([0, 0, 0, -1, -1], -1, r"got 1 class: 0 \(2 rows with y == -1 are unlab"),
        (-np.ones(5), -1, "All 5 labels are -1 \\(unlabelled_label=-1 marks"),
        (["?"] * 5, "?", "All 5 labels are '\\?' \\(unlabelled_label='\\?'"),
    ],
)
def test_too_few_labelled_rows(y, unlabelled_label, match):
    clf = PrototypeClassifier(unlabelled_label=unlabelled_label)
    with pytest.raises(ValueError, match=match):
        clf.fit(X_HAND, y)


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
        ({"scale": np.inf}, "'scale' parameter"),
        ({"unlabelled_label": 1.5}, "'unlabelled_label' parameter.*int.*str"),
    ],
)
def test_invalid_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        PrototypeClassifier(**params).fit(X_HAND, Y_HAND)


# -- scale: cosine scores must not depend on the features' scale --------------


@pytest.mark.parametrize(
    "dtype, factor",
    [
        (np.float32, 1e20),  # squared norms overflow float32
        (np.float32, 1e-30),  # squared norms underflow float32
        (np.float64, 1e200),
        (np.float64, 1e-200),
    ],
)
@pytest.mark.parametrize("center", [False, True])
def test_cosine_does_not_depend_on_the_feature_scale(dtype, factor, center):
    X, Q = (X_HAND * factor).astype(dtype), (Q_HAND * factor).astype(dtype)
    clf = PrototypeClassifier(center=center).fit(X, Y_HAND)
    reference = PrototypeClassifier(center=center).fit(X_HAND, Y_HAND)
    expected = reference.decision_function(Q_HAND)
    if not center:
        assert_allclose(expected, [10.0 * COS_HAND], rtol=1e-12)
    assert_allclose(clf.decision_function(Q), expected, rtol=1e-5, atol=1e-5)
    assert_allclose(clf.predict_proba(Q), reference.predict_proba(Q_HAND), **F32)
    assert_array_equal(clf.predict(Q), [1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_scale_gives_finite_probabilities(dtype):
    X, Q = X_HAND.astype(dtype), Q_HAND.astype(dtype)
    clf = PrototypeClassifier(scale=1e300).fit(X, Y_HAND)
    logits = clf.decision_function(Q)
    # float32 cosines: a few float32 ulps (relative), whatever the CPU
    assert_allclose(logits, [1e300 * COS_HAND], rtol=1e-5)
    # Logits 1e300 * (0.6, 0.8, -0.99): the softmax is one-hot on class 1.
    assert_array_equal(clf.predict_proba(Q), [[0.0, 1.0, 0.0]])
    log_proba = clf.predict_log_proba(Q)
    assert_allclose(log_proba, [1e300 * (COS_HAND - 0.8)], rtol=1e-5)
    assert np.isfinite(log_proba).all()
    assert_array_equal(clf.predict(Q), [1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight", [1e300, 1e-300])
def test_uniform_extreme_sample_weight_equals_unweighted(dtype, weight):
    X = X_HAND.astype(dtype)
    weighted = PrototypeClassifier(center=True).fit(
        X, Y_HAND, sample_weight=np.full(5, weight)
    )
    plain = PrototypeClassifier(center=True).fit(X, Y_HAND)
    assert_array_equal(weighted.prototypes_, plain.prototypes_)
    assert_array_equal(weighted.mean_, plain.mean_)
    assert_allclose(weighted.mean_, [0.4, 0.8], **F32)
    assert_array_equal(weighted.predict_proba(Q_HAND), plain.predict_proba(Q_HAND))
    assert np.isfinite(weighted.predict_proba(Q_HAND)).all()


def test_huge_unequal_sample_weight_on_float32_features():
    clf = PrototypeClassifier().fit(
        X_HAND.astype(np.float32), Y_HAND, sample_weight=[4e307, 3e307, 1, 1, 1]
    )
    # Class 0: (4 * 1 + 3 * 3) / 7 = 13/7.
    assert_allclose(clf.prototypes_, [[13.0 / 7.0, 0.0], [0, 3], [-2, -2]], **F32)


@pytest.mark.parametrize("metric", ["euclidean", "dot"])
def test_scale_dependent_metrics_of_huge_float32_features(metric):
    # 1e20-sized float32 features: the logits (about 1e40) overflow float32,
    # so they are computed in float64.
    clf = PrototypeClassifier(metric=metric).fit(
        (X_HAND * 1e20).astype(np.float32), Y_HAND
    )
    Q = (Q_HAND * 1e20).astype(np.float32)
    hand = [[-17.0, -10.0, -61.0]] if metric == "euclidean" else [[6.0, 12.0, -14.0]]
    assert_allclose(clf.decision_function(Q), np.array(hand) * 1e40, rtol=1e-5)
    assert_array_equal(clf.predict_proba(Q), [[0.0, 1.0, 0.0]])
    assert_array_equal(clf.predict(Q), [1])


@pytest.mark.parametrize("metric", ["euclidean", "dot"])
def test_scale_dependent_metrics_overflowing_float64_is_an_error(metric):
    clf = PrototypeClassifier(metric=metric).fit(X_HAND * 1e200, Y_HAND)
    with pytest.raises(ValueError, match=f"'{metric}' logits of these features "):
        clf.predict_proba(Q_HAND * 1e200)
    # Cosine scores of the same features are fine.
    cosine = PrototypeClassifier().fit(X_HAND * 1e200, Y_HAND)
    assert_array_equal(cosine.predict(Q_HAND * 1e200), [1])


# -- memory -------------------------------------------------------------------


@pytest.mark.parametrize("center", [False, True])
def test_fit_memory_is_bounded_by_the_input_at_many_classes(center):
    # 2000 classes of 10 rows: a dense classes x rows matrix would be 32x X.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20_000, 64), dtype=np.float32)
    y = np.repeat(np.arange(2000), 10)
    clf = PrototypeClassifier(center=center)
    peak = peak_bytes(lambda: clf.fit(X, y))
    assert peak <= 1.2 * X.nbytes, peak / X.nbytes
    assert_allclose(clf.prototypes_[7], X[70:80].mean(axis=0), **F32)


# -- transductive=True: BD-CSPN prototype rectification -----------------------


def _bd_cspn_reference(X_support, y_support, weight, Q, center, unlabelled=None):
    """Rectified prototypes by the formula, one class and one row at a time."""
    labelled = np.ones(len(y_support), bool) if unlabelled is None else ~unlabelled
    classes = np.unique(y_support[labelled])
    support_mean = np.average(X_support, axis=0, weights=weight)
    origin = support_mean if center else 0.0

    def cos(a, b):
        a, b = a - origin, b - origin
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    prototypes = [
        np.average(
            X_support[labelled & (y_support == c)],
            axis=0,
            weights=weight[labelled & (y_support == c)],
        )
        for c in classes
    ]
    shifted = Q + support_mean - Q.mean(axis=0)
    pseudo = [np.argmax([cos(q, m) for m in prototypes]) for q in shifted]
    rectified = []
    for k, c in enumerate(classes):
        rows, weights = [], []
        for x, label, w in zip(
            X_support[labelled], y_support[labelled], weight[labelled]
        ):
            if label == c:
                rows.append(x)
                weights.append(w * np.exp(cos(x, prototypes[k])))
        for q, label in zip(shifted, pseudo):
            if label == k:
                rows.append(q)
                weights.append(np.exp(cos(q, prototypes[k])))
        rectified.append(np.average(rows, axis=0, weights=weights))
    return np.array(rectified), origin


def _cosine_scores(Q, prototypes, origin, scale):
    Q, M = Q - origin, prototypes - origin
    Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    M = M / np.linalg.norm(M, axis=1, keepdims=True)
    return scale * Q @ M.T


def test_transductive_rectified_prototypes_by_hand():
    # Support (1, 0) and (0, 1), mean (0.5, 0.5); queries (1.5, 0.5) and
    # (0.5, 0.5), mean (1, 0.5): shifted by (-0.5, 0) to (1, 0.5) and (0, 0.5),
    # pseudo-labelled 0 (cosines 2/sqrt 5 and 1/sqrt 5) and 1 (cosines 0, 1).
    # Class 0: (1, 0) weight e^1 and (1, 0.5) weight a = e^(2/sqrt 5);
    # class 1: (0, 1) and (0, 0.5), both of weight e^1, mean (0, 0.75).
    X, y = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])
    Q = np.array([[1.5, 0.5], [0.5, 0.5]])
    a = np.exp(2 / np.sqrt(5))
    rectified = np.array([[1.0, 0.5 * a / (np.e + a)], [0.0, 0.75]])
    clf = PrototypeClassifier(transductive=True, scale=10.0).fit(X, y)
    # The queries themselves (not shifted) are scored against them.
    expected = _cosine_scores(Q, rectified, 0.0, 10.0)
    assert_allclose(
        clf.decision_function(Q),
        expected[:, 1] - expected[:, 0],
        rtol=1e-10,
        atol=1e-12,
    )
    assert_allclose(
        clf.predict_proba(Q)[:, 1],
        1 / (1 + np.exp(expected[:, 0] - expected[:, 1])),
        rtol=1e-10,
        atol=1e-12,
    )
    # (0.5, 0.5) now leans to the rectified prototype 0 (cosines 0.85, 0.71).
    assert_array_equal(clf.predict(Q), [0, 0])
    reference, _ = _bd_cspn_reference(X, y, np.ones(2), Q, center=False)
    assert_allclose(reference, rectified, rtol=1e-12, atol=1e-15)


def test_transductive_single_query_by_hand():
    # Support (2, 0) and (0, 1), mean (1, 0.5). One query (0, 3) is shifted
    # onto the support mean, pseudo-labelled 0 (cosines 2/sqrt 5, 1/sqrt 5),
    # and joins prototype 0 with weight a = e^(2/sqrt 5) beside (2, 0) of
    # weight e^1; prototype 1 stays (0, 1). The query itself is then scored.
    X, y = np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 1])
    a = np.exp(2 / np.sqrt(5))
    p0 = (np.e * np.array([2.0, 0.0]) + a * np.array([1.0, 0.5])) / (np.e + a)
    clf = PrototypeClassifier(transductive=True, scale=10.0).fit(X, y)
    expected = 10.0 * (1.0 - p0[1] / np.linalg.norm(p0))
    assert_allclose(
        clf.decision_function([[0.0, 3.0]]), [expected], rtol=1e-10, atol=1e-12
    )
    assert_array_equal(clf.predict([[0.0, 3.0]]), [1])
    assert np.isfinite(clf.predict_proba([[0.0, 3.0]])).all()


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transductive_matches_the_reference_formula(center, dtype):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(12, 6)).astype(dtype)
    y = np.array([0, 1, 2, 3] * 3)
    y[[3, 7]] = -1  # unlabelled: in the support mean only
    weight = rng.uniform(0.5, 3.0, size=12)
    weight[5] = 0.0  # a support row of weight zero does not count
    Q = rng.normal(loc=0.5, size=(10, 6)).astype(dtype)
    clf = PrototypeClassifier(transductive=True, center=center, unlabelled_label=-1)
    clf.fit(X, y, sample_weight=weight)
    X64, Q64 = X.astype(np.float64), Q.astype(np.float64)
    rectified, origin = _bd_cspn_reference(
        X64, y, weight, Q64, center, unlabelled=(y == -1)
    )
    tol = (
        {"rtol": 1e-4, "atol": 1e-4}
        if dtype == np.float32
        else {"rtol": 1e-9, "atol": 1e-9}
    )
    expected = _cosine_scores(Q64, rectified, origin, 10.0)
    assert_allclose(clf.decision_function(Q), expected, **tol)
    assert_array_equal(clf.classes_, [0, 1, 2, 3])


def test_transductive_integer_weight_is_repetition():
    rng = np.random.RandomState(1)
    X = rng.normal(size=(6, 4))
    y = np.array([0, 1, 2, 0, 1, 2])
    weight = np.array([1, 3, 2, 1, 1, 4])
    Q = rng.normal(size=(9, 4))
    weighted = PrototypeClassifier(transductive=True).fit(X, y, sample_weight=weight)
    repeated = PrototypeClassifier(transductive=True).fit(
        np.repeat(X, weight, axis=0), np.repeat(y, weight)
    )
    assert_allclose(
        weighted.predict_proba(Q), repeated.predict_proba(Q), rtol=1e-9, atol=1e-12
    )


def test_transductive_leaves_the_fitted_state_alone(episode):
    X_support, y_support, X_query, _ = episode
    clf = PrototypeClassifier(transductive=True).fit(X_support, y_support)
    state = copy.deepcopy(clf.__dict__)
    first = clf.predict_proba(X_query)
    clf.predict_proba(X_query[:3])  # other queries in between
    assert_array_equal(clf.predict_proba(X_query), first)
    assert state.keys() == clf.__dict__.keys()
    for name, value in state.items():
        if isinstance(value, tuple):
            for a, b in zip(value, clf.__dict__[name]):
                assert_array_equal(a, b)
        else:
            assert_array_equal(value, clf.__dict__[name])
    # The support copy is not the caller's array.
    X_support[:] = 0.0
    assert_array_equal(clf.predict_proba(X_query), first)


def _clustered_episode(seed, n_way=20, n_shot=1, n_query=15, dim=64, noise=1.2):
    """Non-negative class clusters (like post-ReLU features), float32."""
    rng = np.random.RandomState(seed)
    centers = rng.normal(size=(n_way, dim))

    def draw(k):
        X = np.repeat(centers, k, axis=0)
        X += rng.normal(scale=noise, size=X.shape)
        return np.maximum(X, 0).astype(np.float32), np.repeat(np.arange(n_way), k)

    return (*draw(n_shot), *draw(n_query))


@pytest.mark.parametrize("center", [False, True])
def test_transductive_gains_at_one_shot(center):
    # 20-way 1-shot, 300 queries: about 0.68 inductive, 0.80-0.90 rectified
    # on these seeds (a gain of 0.12 to 0.22 per episode).
    gains = []
    for seed in range(3):
        X_s, y_s, X_q, y_q = _clustered_episode(seed)
        inductive = PrototypeClassifier(center=center).fit(X_s, y_s)
        rectified = PrototypeClassifier(center=center, transductive=True).fit(X_s, y_s)
        gains.append(rectified.score(X_q, y_q) - inductive.score(X_q, y_q))
    assert min(gains) >= 0.08, gains


def test_transductive_needs_the_support_kept_at_fit():
    clf = PrototypeClassifier().fit(X_HAND, Y_HAND)
    assert not hasattr(clf, "_support")
    clf.set_params(transductive=True)
    with pytest.raises(ValueError, match="fitted with transductive=False: fit it"):
        clf.predict(Q_HAND)
    clf.fit(X_HAND, Y_HAND)
    assert clf.predict(Q_HAND).shape == (1,)
    clf.set_params(transductive=False).fit(X_HAND, Y_HAND)
    assert not hasattr(clf, "_support")


@pytest.mark.parametrize("metric", ["euclidean", "dot"])
def test_transductive_needs_the_cosine_metric(metric):
    clf = PrototypeClassifier(transductive=True, metric=metric)
    with pytest.raises(
        ValueError, match=f"needs metric='cosine'; got metric='{metric}'"
    ):
        clf.fit(X_HAND, Y_HAND)


@pytest.mark.parametrize(
    "dtype, factor",
    [(np.float32, 1e20), (np.float32, 1e-30), (np.float32, 1e37), (np.float64, 1e200)],
)
def test_transductive_does_not_depend_on_the_feature_scale(dtype, factor):
    # 1e37: the shifted float32 queries overflow float32 and use float64.
    Q = np.array([[3.0, 4.0], [1.0, 0.5], [-1.0, -2.5]])
    clf = PrototypeClassifier(transductive=True).fit(
        (X_HAND * factor).astype(dtype), Y_HAND
    )
    reference = PrototypeClassifier(transductive=True).fit(X_HAND, Y_HAND)
    expected = reference.decision_function(Q)
    scaled = clf.decision_function((Q * factor).astype(dtype))
    assert_allclose(scaled, expected, rtol=1e-5, atol=1e-4)
    assert_array_equal(clf.predict((Q * factor).astype(dtype)), reference.predict(Q))


def test_transductive_shift_overflowing_float64_is_an_error():
    # Support mean (1.6e307, 3.2e307), query mean 0: 1.79e308 + 1.6e307 = inf.
    clf = PrototypeClassifier(transductive=True).fit(X_HAND * 4e307, Y_HAND)
    with pytest.raises(ValueError, match="shifted onto the support mean .* overflow"):
        clf.predict(np.array([[1.79e308, 0.0], [-1.79e308, 0.0]]))


def test_a_head_pickled_before_device_existed_computes_on_auto():
    old = PrototypeClassifier(metric="euclidean")
    del old.__dict__["device"]  # as estimators pickled before the parameter
    back = pickle.loads(pickle.dumps(old))
    assert back.get_params()["device"] == "auto"
    X, y = np.eye(4), np.array([0, 0, 1, 1])
    assert_array_equal(back.fit(X, y).predict(X), [0, 0, 1, 1])
