"""The three estimators together, as scikit-learn users compose them."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skfewshot import (
    BackboneTransformer,
    EpisodicSplit,
    FineTunedCosineClassifier,
    PrototypeClassifier,
    evaluate_episodes,
)

# float32 features that two forwards may round differently (batch size,
# alignment, BLAS kernel, thread count): a few float32 ulps, times the scale.
F32 = {"rtol": 1e-5, "atol": 1e-6}


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh())


@pytest.fixture
def pipe():
    return make_pipeline(BackboneTransformer(_net()), FineTunedCosineClassifier())


def test_pipeline_fits_support_and_predicts_queries(pipe, episode):
    Xs, ys, Xq, yq = episode
    pipe.fit(Xs, ys)
    proba = pipe.predict_proba(Xq)
    assert proba.shape == (len(Xq), 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, **F32)
    assert np.mean(pipe.predict(Xq) == yq) > 0.9
    # the head sees the backbone's features
    features = pipe[0].transform(Xq)
    np.testing.assert_allclose(pipe[-1].predict_proba(features), proba, **F32)


def test_string_labels_round_trip(pipe, episode):
    Xs, ys, Xq, yq = episode
    names = np.array(["ant", "bee", "cat", "dog", "eel"])
    pipe.fit(Xs, names[ys])
    assert list(pipe.classes_) == list(names)
    assert np.mean(pipe.predict(Xq) == names[yq]) > 0.9


def test_clone_get_set_params(pipe):
    pipe.set_params(
        finetunedcosineclassifier__alpha=0.5, backbonetransformer__batch_size=7
    )
    params = pipe.get_params()
    assert params["finetunedcosineclassifier__alpha"] == 0.5
    assert params["backbonetransformer__batch_size"] == 7
    copy = clone(pipe)
    assert copy.get_params()["finetunedcosineclassifier__alpha"] == 0.5
    assert copy[0].module is not pipe[0].module  # a clone owns its module


def test_pickled_fitted_pipeline_predicts_the_same(pipe, episode):
    Xs, ys, Xq, _ = episode
    pipe.fit(Xs, ys)
    loaded = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_allclose(loaded.predict_proba(Xq), pipe.predict_proba(Xq), **F32)


def test_grid_search_over_alpha_and_entropy_weight_in_parallel(episode):
    Xs, ys, Xq, yq = episode
    X, y = np.concatenate([Xs, Xq]), np.concatenate([ys, yq])
    pipe = make_pipeline(
        BackboneTransformer(_net()),
        FineTunedCosineClassifier(transductive=True),
    )
    grid = {
        "finetunedcosineclassifier__alpha": [1e-3, 1e-1],
        "finetunedcosineclassifier__entropy_weight": [0.0, 1.0],
    }
    cv = EpisodicSplit(n_way=3, n_shot=1, n_query=5, n_episodes=4, random_state=0)
    search = GridSearchCV(pipe, grid, cv=cv, n_jobs=2, refit=False).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    # same folds, same numbers as a sequential search
    serial = GridSearchCV(pipe, grid, cv=cv, n_jobs=1, refit=False).fit(X, y)
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"]
    )
    assert search.best_params_ in search.cv_results_["params"]


def test_prototype_head_in_pipeline_equals_head_on_features(episode):
    Xs, ys, Xq, _ = episode
    backbone = BackboneTransformer(_net())
    pipe = make_pipeline(backbone, PrototypeClassifier(metric="cosine", scale=10.0))
    pipe.fit(Xs, ys)
    direct = PrototypeClassifier(scale=10.0).fit(backbone.transform(Xs), ys)
    np.testing.assert_allclose(
        pipe.predict_proba(Xq), direct.predict_proba(backbone.transform(Xq)), **F32
    )


@pytest.mark.parametrize(
    "head",
    [
        PrototypeClassifier(),
        FineTunedCosineClassifier(transductive=True, entropy_weight=0.1),
    ],
)
def test_class_minus_one_scores_like_any_class(head, episode):
    # EpisodicSplit and evaluate_episodes draw -1 as a class; so do the heads.
    # Relabelling 0..4 as -1..3 keeps the order, the episodes and the scores.
    Xs, ys, Xq, yq = episode
    X, y = np.concatenate([Xs, Xq]), np.concatenate([ys, yq])
    pipe = make_pipeline(BackboneTransformer(_net()), head)
    kwargs = {"n_way": 3, "n_shot": 1, "n_query": 5, "n_episodes": 6}
    plain = evaluate_episodes(pipe, X, y, random_state=0, **kwargs)
    shifted = evaluate_episodes(pipe, X, y - 1, random_state=0, **kwargs)
    np.testing.assert_array_equal(shifted.accuracies, plain.accuracies)
    assert plain.mean > 0.9
