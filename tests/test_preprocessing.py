"""WithinClassWhitening: hand-computed matrices, whitening, errors, pipelines."""

import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skfewshot import PrototypeClassifier
from skfewshot.model_selection import evaluate_episodes
from skfewshot.preprocessing import WithinClassWhitening

# class "a" spreads by +-1 along the first axis, class "b" by +-2 along the
# second: S_w = (2 * diag(1, 0) + 2 * diag(0, 4)) / 4 = diag(0.5, 2), whose
# mean eigenvalue is 1.25
X_HAND = np.array([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0], [5.0, 9.0]])
Y_HAND = np.array(["a", "a", "b", "b"])


@parametrize_with_checks(
    [WithinClassWhitening(), WithinClassWhitening(shrinkage=0.5, normalize=False)]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "shrinkage, expected",
    [(0.0, [0.5**-0.5, 2**-0.5]), (1.0, [1.75**-0.5, 3.25**-0.5])],
)
def test_components_equal_the_hand_computation(shrinkage, expected):
    whiten = WithinClassWhitening(shrinkage, normalize=False).fit(X_HAND, Y_HAND)
    assert_allclose(whiten.eigenvalues_, [0.5, 2.0], rtol=1e-12)
    assert_allclose(whiten.components_, np.diag(expected), rtol=1e-12, atol=1e-15)
    assert_allclose(whiten.transform([[1.0, 1.0]]), [expected], rtol=1e-12)
    assert_array_equal(whiten.classes_, ["a", "b"])


def test_a_rotation_of_the_data_rotates_the_components():
    angle = 0.3
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    )
    whiten = WithinClassWhitening(1.0, normalize=False)
    whiten.fit(X_HAND @ rotation.T, Y_HAND)
    expected = rotation @ np.diag([1.75**-0.5, 3.25**-0.5]) @ rotation.T
    assert_allclose(whiten.components_, expected, rtol=1e-12, atol=1e-15)


def test_no_shrinkage_makes_the_within_class_covariance_the_identity():
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(10), 50)
    mixing = rng.normal(size=(5, 5))
    X = rng.normal(size=(500, 5)) @ mixing + 3 * rng.normal(size=(10, 5))[y]
    Z = WithinClassWhitening(0.0, normalize=False).fit_transform(X, y)
    means = np.array([Z[y == c].mean(axis=0) for c in range(10)])
    residuals = Z - means[y]
    assert_allclose(residuals.T @ residuals / len(Z), np.eye(5), atol=1e-10)


def test_a_large_shrinkage_leaves_cosines_unchanged():
    rng = np.random.RandomState(1)
    X, y = rng.normal(size=(40, 6)), np.repeat(np.arange(4), 10)
    Z = WithinClassWhitening(1e12).fit(X, y).transform(X)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    assert_allclose(Z @ Z.T, unit @ unit.T, atol=1e-8)


def test_normalize_makes_each_row_scale_free():
    rng = np.random.RandomState(2)
    X, y = rng.normal(size=(30, 4)), np.repeat(np.arange(3), 10)
    scales = rng.uniform(0.1, 100, size=(30, 1))
    whiten = WithinClassWhitening().fit(X, y)
    assert_allclose(whiten.transform(X * scales), whiten.transform(X), rtol=1e-10)
    assert_allclose(
        WithinClassWhitening().fit(X * scales, y).components_,
        whiten.components_,
        rtol=1e-9,
    )
    assert_array_equal(whiten.transform(np.zeros((2, 4))), np.zeros((2, 4)))


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_huge_and_tiny_features_give_the_same_whitening(scale):
    rng = np.random.RandomState(5)
    X, y = rng.normal(size=(30, 4)), np.repeat(np.arange(3), 10)
    whiten = WithinClassWhitening().fit(X, y)
    scaled = WithinClassWhitening().fit(X * scale, y)
    assert_allclose(scaled.transform(X * scale), whiten.transform(X), rtol=1e-10)
    raw = WithinClassWhitening(normalize=False).fit(X, y)
    raw_scaled = WithinClassWhitening(normalize=False).fit(X * scale, y)
    assert_allclose(raw_scaled.components_ * scale, raw.components_, rtol=1e-10)
    assert_allclose(raw_scaled.transform(X * scale), raw.transform(X), rtol=1e-10)
    assert_allclose(scaled.eigenvalues_, whiten.eigenvalues_, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_output_keeps_the_input_dtype(dtype):
    whiten = WithinClassWhitening(normalize=False).fit(X_HAND, Y_HAND)
    assert whiten.transform(X_HAND.astype(dtype)).dtype == dtype
    assert whiten.components_.dtype == np.float64


def test_whitening_recovers_the_direction_that_separates_novel_classes():
    # every class differs from the others along the first 2 features only;
    # drawings of one class vary ten times more along the other 8
    rng = np.random.RandomState(3)

    def classes(n_classes, n_per_class):
        y = np.repeat(np.arange(n_classes), n_per_class)
        centres = np.c_[3 * rng.normal(size=(n_classes, 2)), np.zeros((n_classes, 8))]
        noise = np.c_[0.1 * rng.normal(size=(len(y), 2)), rng.normal(size=(len(y), 8))]
        return centres[y] + noise, y

    X_base, y_base = classes(30, 20)
    X_novel, y_novel = classes(40, 10)
    whiten = FrozenEstimator(WithinClassWhitening(0.01).fit(X_base, y_base))
    accuracy = {
        name: evaluate_episodes(
            clf,
            X_novel,
            y_novel,
            n_way=5,
            n_shot=1,
            n_query=5,
            n_episodes=100,
            random_state=0,
        ).mean
        for name, clf in [
            ("raw", PrototypeClassifier()),
            ("whitened", make_pipeline(whiten, PrototypeClassifier())),
        ]
    }
    assert accuracy["raw"] < 0.7 and accuracy["whitened"] > 0.8, accuracy


def test_each_class_with_one_sample_is_refused():
    with pytest.raises(ValueError, match="each of the 3 classes of y has 1 sample"):
        WithinClassWhitening().fit(np.eye(3), [0, 1, 2])


@pytest.mark.parametrize("normalize", [True, False])
def test_features_constant_within_every_class_are_refused(normalize):
    X = np.repeat(np.array([[0.1, 0.3], [0.7, 0.2]]), 3, axis=0)
    with pytest.raises(ValueError, match="do not vary within any class of y"):
        WithinClassWhitening(normalize=normalize).fit(X, [0, 0, 0, 1, 1, 1])


def test_no_shrinkage_with_a_singular_covariance_is_refused():
    rng = np.random.RandomState(4)
    X, y = rng.normal(size=(6, 5)), [0, 0, 0, 1, 1, 1]  # rank 4 for 5 features
    message = (
        "shrinkage=0.0 leaves the within-class covariance singular: it has rank 4 "
        "for 5 features (6 samples in 2 classes); set a larger shrinkage."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        WithinClassWhitening(0.0, normalize=False).fit(X, y)
    WithinClassWhitening(0.1, normalize=False).fit(X, y)  # shrunk: invertible


@pytest.mark.parametrize("bad", [-1.0, "1"])
def test_bad_shrinkage_is_refused(bad):
    with pytest.raises(InvalidParameterError, match="shrinkage"):
        WithinClassWhitening(bad).fit(X_HAND, Y_HAND)


def test_non_finite_features_are_refused():
    X = X_HAND.copy()
    X[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        WithinClassWhitening().fit(X, Y_HAND)
    whiten = WithinClassWhitening().fit(X_HAND, Y_HAND)
    with pytest.raises(ValueError, match="infinity"):
        whiten.transform([[np.inf, 0.0]])
    with pytest.raises(ValueError, match="expecting 2 features"):
        whiten.transform(np.ones((1, 3)))


def test_feature_names_out():
    whiten = WithinClassWhitening().fit(X_HAND, Y_HAND)
    assert list(whiten.get_feature_names_out()) == [
        "withinclasswhitening0",
        "withinclasswhitening1",
    ]
