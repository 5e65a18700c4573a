"""Tests for skfewshot._base: the heads' shared validation and arithmetic."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.utils.validation import validate_data

from skfewshot import _base
from skfewshot._base import (
    _FLOAT_DTYPES,
    _class_means,
    _cosine_logits,
    _l2_normalize,
    _validate_support,
    _validate_X,
)
from skfewshot.prototype import PrototypeClassifier

F32 = {"rtol": 1e-5, "atol": 1e-6}


def _forbid_validate_data(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("validate_data was called")

    monkeypatch.setattr(_base, "validate_data", fail)


# -- the short path: plain float arrays skip validate_data ---------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_float_input_takes_the_short_path(monkeypatch, dtype):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(10, 4)).astype(dtype)
    y = np.arange(10) % 3
    _forbid_validate_data(monkeypatch)
    clf = PrototypeClassifier()
    X_valid, classes, codes, weight = _validate_support(clf, X, y, None)
    assert X_valid is X  # no copy, no dtype round trip
    assert clf.n_features_in_ == 4
    assert_array_equal(classes, [0, 1, 2])
    assert_array_equal(codes, y)
    assert weight.dtype == np.float64
    assert_array_equal(weight, np.ones(10))
    assert _validate_X(clf, X[:3], reset=False) is not None
    clf.fit(X, y).predict_proba(X)  # fit and predict never call validate_data
    assert clf.prototypes_.dtype == dtype


@pytest.mark.parametrize(
    "X",
    [
        [[1.0, 2.0], [3.0, 4.0]],  # a list
        np.array([[1, 2], [3, 4]]),  # integers -> float64
        np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float16),  # -> float64
        np.array([[1.0, 2.0], [3.0, 4.0]], dtype=">f4"),  # big-endian -> float64
        np.asfortranarray([[1.0, 2.0], [3.0, 4.0]]),  # plain: returned as is
        np.arange(12.0).reshape(3, 4)[::2, 1:3],  # plain: a strided view
        np.array([[3e38, 0.0], [3e38, 1e38]], dtype=np.float32),  # sum overflows
    ],
)
def test_short_path_returns_what_validate_data_returns(X):
    ours, theirs = PrototypeClassifier(), PrototypeClassifier()
    got = _validate_X(ours, X, reset=True)
    expected = validate_data(theirs, X, dtype=_FLOAT_DTYPES)
    assert got.dtype == expected.dtype
    assert_array_equal(got, expected)
    assert ours.n_features_in_ == theirs.n_features_in_ == 2


@pytest.mark.parametrize(
    "X, match",
    [
        (np.array([[np.nan, 0.0], [1.0, 1.0]]), "Input X contains NaN"),
        (np.array([[np.inf, 0.0], [1.0, 1.0]], np.float32), "X contains infinity"),
        (np.empty((0, 2)), "0 sample"),
        (np.empty((2, 0)), "0 feature"),
        (np.ones((2, 2), dtype=complex), "Complex data not supported"),
    ],
)
def test_bad_plain_arrays_get_validate_data_errors(X, match):
    with pytest.raises(ValueError, match=match):
        PrototypeClassifier().fit(X, [0, 1])


def test_finite_features_whose_sum_overflows_are_accepted():
    # The short path's finiteness test (on the sum) overflows; the entries
    # are checked one by one instead, and the features are accepted.
    X = np.array([[3e38, 0.0], [3e38, 1e38], [0.0, 3e38]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = PrototypeClassifier().fit(X, [0, 0, 1])
        assert_array_equal(clf.predict(X), [0, 0, 1])
    assert np.isfinite(clf.prototypes_).all()


def test_feature_names_go_through_validate_data():
    pd = pytest.importorskip("pandas")
    X = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    y = np.array([0, 0, 1, 1])
    frame = pd.DataFrame(X, columns=["a", "b"])
    clf = PrototypeClassifier().fit(frame, y)
    assert_array_equal(clf.feature_names_in_, ["a", "b"])
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        clf.predict(X)
    clf.fit(X, y)  # refitted on an array: the names are gone
    assert not hasattr(clf, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names, but"):
        clf.predict(frame)


def test_wrong_feature_count_on_the_short_path():
    clf = PrototypeClassifier().fit(np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match="X has 2 features, but PrototypeClassifier"):
        clf.predict(np.ones((2, 2)))


def test_many_classes_warning_is_kept_for_integer_labels():
    # scikit-learn warns when more than half of over 20 labels are distinct.
    X = np.random.RandomState(0).normal(size=(22, 3))
    with pytest.warns(UserWarning, match="number of unique classes is greater"):
        PrototypeClassifier().fit(X, np.arange(22))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PrototypeClassifier().fit(X[:20], np.arange(20))  # 20 rows: no warning
        PrototypeClassifier().fit(X, np.arange(22) % 11)  # half: no warning


@pytest.mark.parametrize("y", [np.array([0, 1, 0]) + 0.5, np.array([[0], [1], [0]])])
def test_other_labels_go_through_validate_data(y):
    X = np.eye(3)
    if y.ndim == 2:
        with pytest.warns(UserWarning, match="column-vector y was passed"):
            PrototypeClassifier().fit(X, y)
    else:
        with pytest.raises(ValueError, match="Unknown label type: continuous"):
            PrototypeClassifier().fit(X, y)


# -- parameters are validated once per distinct value ---------------------------


def test_parameters_are_still_validated_after_a_valid_fit():
    clf = PrototypeClassifier(scale=2.0).fit(np.eye(2), [0, 1])
    clf.fit(np.eye(2), [0, 1])  # the same valid values: no check needed
    for params in ({"scale": -2.0}, {"scale": 2}, {"metric": "cos"}):
        clf.set_params(scale=2.0, metric="cosine").set_params(**params)
        if params == {"scale": 2}:  # an int is a valid Real
            clf.fit(np.eye(2), [0, 1])
            continue
        with pytest.raises(ValueError, match="parameter of PrototypeClassifier"):
            clf.fit(np.eye(2), [0, 1])
    clf.set_params(metric="cosine", scale=np.array(2.0))  # unhashable: checked
    with pytest.raises(ValueError, match="'scale' parameter"):
        clf.fit(np.eye(2), [0, 1])


def test_validated_parameters_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(_base, "_VALIDATED_PARAMS", set())
    monkeypatch.setattr(_base, "_VALIDATED_PARAMS_MAX", 3)
    for scale in range(1, 10):
        PrototypeClassifier(scale=float(scale)).fit(np.eye(2), [0, 1])
        assert len(_base._VALIDATED_PARAMS) <= 3


# -- class means: dense and sparse averaging agree -----------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_and_sparse_class_means_agree(monkeypatch, dtype):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 5)).astype(dtype)
    codes = rng.randint(-1, 4, size=30)  # -1: unlabelled rows
    codes[:4] = [0, 1, 2, 3]
    weight = rng.uniform(0.0, 2.0, size=30)
    classes = np.arange(4)
    dense = _class_means(X, codes, classes, weight)
    monkeypatch.setattr(_base, "_DENSE_AVERAGING_MAX_ENTRIES", 0)
    sparse = _class_means(X, codes, classes, weight)
    tol = F32 if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    assert dense.dtype == sparse.dtype == dtype
    assert_allclose(dense, sparse, **tol)
    for c in classes:
        rows = codes == c
        assert_allclose(
            dense[c], np.average(X[rows], axis=0, weights=weight[rows]), **tol
        )


# -- cosine logits without normalising the queries -----------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factor", [1.0, 1e20, 1e-30])
def test_cosine_logits_equal_normalised_products(dtype, factor):
    rng = np.random.RandomState(0)
    X = (rng.normal(size=(7, 5)) * factor).astype(dtype)
    X[3] = 0.0  # an all-zero row has zero cosines
    M = rng.normal(size=(3, 5)).astype(dtype)
    got = _cosine_logits(X, M, 10.0)
    expected = (
        10.0
        * _l2_normalize(X.astype(np.float64) / factor)
        @ (_l2_normalize(M.astype(np.float64)).T)
    )
    assert got.dtype == dtype
    assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert_array_equal(got[3], 0.0)


def test_cosine_logits_of_float32_rows_and_float64_weights():
    X = np.array([[3.0, 4.0]], dtype=np.float32)
    M = np.array([[1.0, 0.0], [0.0, 2.0]])
    got = _cosine_logits(X, M, 1.0)
    assert got.dtype == np.float64
    assert_allclose(got, [[0.6, 0.8]], **F32)
