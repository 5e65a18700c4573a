"""Tests for batched episodes: skfewshot._batched and its dispatch in
evaluate_episodes (skfewshot._episodes.batch_predictor)."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from _memory_testing import peak_bytes
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from skfewshot import _batched
from skfewshot._episodes import BATCH_EPISODES, EpisodeSampler, episode_batches
from skfewshot.finetune import FineTunedCosineClassifier
from skfewshot.model_selection import (
    EpisodicSplit,
    _episode_codes,
    evaluate_episodes,
)
from skfewshot.prototype import PrototypeClassifier

N_CLASSES, PER_CLASS, DIM = 10, 15, 6


class BatchedPrototype(PrototypeClassifier):
    """PrototypeClassifier declaring the batched capability (the one line its
    class is to get); counts the batches it is asked about."""

    batches = []

    def _fewshot_batch_predictor(self, X):
        predict = _batched.prototype_batch_predictor(self, X)
        if predict is None:
            return None

        def counting(support, codes, query, n_classes):
            type(self).batches.append(len(support))
            return predict(support, codes, query, n_classes)

        return counting


class PerEpisodePrototype(PrototypeClassifier):
    """PrototypeClassifier whose fit override voids the batched capability:
    one fitted clone per episode, which it counts."""

    fits = []

    def fit(self, X, y, sample_weight=None):
        type(self).fits.append(len(X))
        return super().fit(X, y, sample_weight)


@pytest.fixture(autouse=True)
def reset_batches(monkeypatch):
    monkeypatch.setattr(BatchedPrototype, "batches", [])
    monkeypatch.setattr(PerEpisodePrototype, "fits", [])


@pytest.fixture
def blobs():
    """10 overlapping 6-d classes of 15 rows: per-episode accuracies vary."""
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    X = rng.normal(scale=1.2, size=(N_CLASSES, DIM))[y] + rng.normal(size=(len(y), DIM))
    return X, y


def both_paths(X, y, n_episodes=40, **params):
    """Per-episode and batched accuracies of the same head on the same episodes.

    The per-episode side is really per episode: PrototypeClassifier itself is
    batched, so it is PerEpisodePrototype, fitted once an episode.
    """
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=n_episodes, random_state=0)
    plain = evaluate_episodes(PerEpisodePrototype(**params), X, y, **kwargs)
    assert len(PerEpisodePrototype.fits) == n_episodes  # fitted per episode
    PerEpisodePrototype.fits.clear()
    batched = evaluate_episodes(BatchedPrototype(**params), X, y, **kwargs)
    assert PerEpisodePrototype.fits == []
    return plain.accuracies, batched.accuracies


# ------------------------------------------------------------- same results


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_accuracies_are_the_per_episode_ones(blobs, metric, center, dtype):
    X, y = blobs
    plain, batched = both_paths(X.astype(dtype), y, metric=metric, center=center)
    # accuracies come from labels: only a float tie (none here) could differ
    np.testing.assert_array_equal(batched, plain)
    assert 0.3 < plain.mean() < 0.95 and plain.std() > 0  # varied numbers
    assert sum(BatchedPrototype.batches) == 40  # and they were batched


def test_batches_hold_at_most_batch_episodes(blobs):
    X, y = blobs
    plain, batched = both_paths(X, y, n_episodes=150)
    np.testing.assert_array_equal(batched, plain)
    assert BatchedPrototype.batches == [BATCH_EPISODES, BATCH_EPISODES, 22]


@pytest.mark.parametrize("labels", ["strings", "minus_one", "floats"])
def test_labels_of_any_kind(blobs, labels):
    # the per-episode classes_ order (np.unique of the labels) is kept
    X, y = blobs
    relabel = {
        "strings": np.array([f"c{9 - k}" for k in range(N_CLASSES)])[y],
        "minus_one": y - 1,
        "floats": y * 2.0 - 3.0,
    }[labels]
    plain, batched = both_paths(X, relabel)
    np.testing.assert_array_equal(batched, plain)
    assert BatchedPrototype.batches


def test_continuous_labels_are_reported_by_the_head(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        evaluate_episodes(BatchedPrototype(), X, y * 2.5, n_way=3, n_shot=1, n_query=2)
    assert BatchedPrototype.batches == []


def test_episode_codes_are_np_unique_per_episode():
    rng = np.random.RandomState(0)
    sampler = EpisodeSampler(np.repeat(np.arange(9), 8), 4, 2, 3)
    episodes = [sampler.sample(rng) for _ in range(20)]
    y = np.repeat(np.arange(9) * 7 - 20, 8)
    support = np.stack([s for s, _ in episodes])
    query = np.stack([q for _, q in episodes])
    codes, query_codes = _episode_codes(y[support], y[query])
    for i, (s, q) in enumerate(episodes):
        classes, expected = np.unique(y[s], return_inverse=True)
        np.testing.assert_array_equal(codes[i], expected)
        np.testing.assert_array_equal(query_codes[i], np.searchsorted(classes, y[q]))


def test_ties_break_as_predict_breaks_them():
    # identical rows in every class: all logits tie and predict picks the
    # first class of classes_; so does the batched path
    X = np.ones((40, 3))
    y = np.repeat(["d", "b", "c", "a"], 10)
    plain, batched = both_paths(X, y, n_episodes=10)
    np.testing.assert_array_equal(batched, plain)
    assert BatchedPrototype.batches


def test_same_episodes_as_the_splitter(blobs, monkeypatch):
    # the predictor sees exactly EpisodicSplit's episodes for the same seed
    X, y = blobs
    seen = []
    predict = _batched.prototype_batch_predictor

    def recording(head, X):
        inner = predict(head, X)

        def record(support, codes, query, n_classes):
            seen.extend(zip(support.tolist(), query.tolist()))
            return inner(support, codes, query, n_classes)

        return record

    monkeypatch.setattr(BatchedPrototype, "_fewshot_batch_predictor", recording)
    evaluate_episodes(
        BatchedPrototype(), X, y, n_way=3, n_shot=2, n_query=4, n_episodes=70,
        random_state=0,
    )  # fmt: skip
    cv = EpisodicSplit(3, n_shot=2, n_query=4, n_episodes=70, random_state=0)
    assert seen == [(s.tolist(), q.tolist()) for s, q in cv.split(X, y)]


def test_n_jobs_does_not_change_the_batched_result(blobs):
    X, y = blobs
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=30, random_state=0)
    one = evaluate_episodes(BatchedPrototype(), X, y, **kwargs)
    two = evaluate_episodes(BatchedPrototype(), X, y, n_jobs=2, **kwargs)
    np.testing.assert_array_equal(one.accuracies, two.accuracies)
    assert BatchedPrototype.batches == [30, 30]  # batched both times


def test_frozen_prefix_then_head_is_batched(blobs):
    X, y = blobs
    scaler = FrozenEstimator(StandardScaler().fit(X))
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=20, random_state=0)
    plain = evaluate_episodes(
        make_pipeline(scaler, PrototypeClassifier()), X, y, **kwargs
    )
    batched = evaluate_episodes(
        make_pipeline(scaler, "passthrough", BatchedPrototype()), X, y, **kwargs
    )
    np.testing.assert_array_equal(batched.accuracies, plain.accuracies)
    assert BatchedPrototype.batches == [20]


# ------------------------------------------------------------------ fallback


class CountingFits(BatchedPrototype):
    """Counts per-episode fits (class-wide: evaluate_episodes fits clones).
    Overriding fit voids the capability its parent declared."""

    fits = []

    def fit(self, X, y, sample_weight=None):
        type(self).fits.append(X.shape[0])
        return super().fit(X, y, sample_weight)


class CountingFitsRedeclared(CountingFits):
    """Declares the capability again: batched, so never fitted."""

    _fewshot_batch_predictor = BatchedPrototype._fewshot_batch_predictor


@pytest.fixture
def counting(monkeypatch):
    monkeypatch.setattr(CountingFits, "fits", [])
    return CountingFits.fits


def test_a_subclass_overriding_fit_takes_the_per_episode_path(blobs, counting):
    X, y = blobs
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=7, random_state=0)
    evaluate_episodes(CountingFits(), X, y, **kwargs)
    assert counting == [12] * 7 and BatchedPrototype.batches == []
    evaluate_episodes(CountingFitsRedeclared(), X, y, **kwargs)
    assert len(counting) == 7 and BatchedPrototype.batches == [7]


@pytest.mark.parametrize(
    "make",
    [
        lambda: CountingFits(),  # fit overridden
        lambda: CountingFitsRedeclared(unlabelled_label=-1),  # option not batched
        lambda: CountingFitsRedeclared(transductive=True),  # BD-CSPN: not batched
        lambda: make_pipeline(StandardScaler(), CountingFitsRedeclared()),
    ],
    ids=["override", "unlabelled_label", "transductive", "trainable_step_before_head"],
)
def test_per_episode_path_when_not_batchable(blobs, counting, make):
    X, y = blobs
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=5, random_state=0)
    scores = evaluate_episodes(make(), X, y, **kwargs)
    assert len(counting) == 5 and BatchedPrototype.batches == []
    plain = evaluate_episodes(make(), X, y, **kwargs)
    np.testing.assert_array_equal(scores.accuracies, plain.accuracies)


class FarthestPrototype(PrototypeClassifier):
    """Predicts the farthest class: negates the logits ``_scores`` delegates to."""

    def _scale_dependent_logits(self, X, M):
        return -super()._scale_dependent_logits(X, M)


def test_a_subclass_overriding_the_logits_delegate_takes_the_per_episode_path(blobs):
    X, y = blobs
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=8, random_state=0)
    head = FarthestPrototype(metric="euclidean")
    scores = evaluate_episodes(head, X, y, **kwargs)
    expected = [
        np.mean(clone(head).fit(X[s], y[s]).predict(X[q]) == y[q])
        for s, q in EpisodicSplit(**kwargs).split(X, y)
    ]
    np.testing.assert_array_equal(scores.accuracies, expected)
    assert np.mean(expected) < 0.25  # the farthest class: not the parent's answer


@pytest.mark.parametrize(
    "parent, method",
    [
        (PrototypeClassifier, "_scale_dependent_logits"),
        (PrototypeClassifier, "_validate_queries"),
        (PrototypeClassifier, "_shifted"),
        (PrototypeClassifier, "_scores"),
        (FineTunedCosineClassifier, "_validate_queries"),
        (FineTunedCosineClassifier, "_fine_tune"),
        (FineTunedCosineClassifier, "_logits"),
    ],
)
def test_overriding_a_method_the_predictions_delegate_to_voids_the_batching(
    blobs, parent, method
):
    from skfewshot._episodes import batch_predictor

    X, y = blobs
    assert batch_predictor(parent(), X, y) is not None
    subclass = type("Sub", (parent,), {method: getattr(parent, method)})
    assert batch_predictor(subclass(), X, y) is None


def test_a_head_with_an_unknown_parameter_is_not_batched(blobs):
    # an option added later (e.g. a rectification) is not computed in batches
    class WithOption(BatchedPrototype):
        def __init__(self, *, metric="cosine", rectify=False):
            super().__init__(metric=metric)
            self.rectify = rectify

    assert _batched.prototype_batch_predictor(WithOption(), blobs[0]) is None


def test_sparse_features_are_reported_by_the_head(blobs):
    import scipy.sparse

    X, y = blobs
    with pytest.raises(TypeError, match="Sparse data was passed for X"):
        evaluate_episodes(
            BatchedPrototype(), scipy.sparse.csr_array(X), y, n_way=4, n_shot=3,
            n_query=5, n_episodes=3,
        )  # fmt: skip
    assert BatchedPrototype.batches == []


def test_invalid_parameters_raise_as_fit_raises(blobs):
    X, y = blobs
    with pytest.raises(InvalidParameterError, match="'metric' parameter"):
        evaluate_episodes(
            BatchedPrototype(metric="nope"),
            X,
            y,
            n_way=3,
            n_shot=1,
            n_query=2,
            n_episodes=2,
        )


def test_a_drawn_nan_is_reported_by_the_head(blobs):
    X, y = blobs
    X = X.copy()
    X[y == 0] = np.nan  # class 0 is drawn in the first batch
    with pytest.raises(ValueError, match="Input X contains NaN"):
        evaluate_episodes(
            BatchedPrototype(), X, y, n_way=9, n_shot=1, n_query=2, n_episodes=5
        )


def test_an_undrawn_nan_changes_nothing(blobs):
    # rows of a class too small to be drawn are never looked at, as before
    X, y = blobs
    X = np.vstack([X, [[np.nan] * DIM]])
    y = np.append(y, 99)
    with pytest.warns(UserWarning, match=r"from 10 of the 11 classes.* 1 has fewer"):
        plain, batched = both_paths(X, y, n_episodes=20)
    np.testing.assert_array_equal(batched, plain)
    assert BatchedPrototype.batches == [20]


@pytest.mark.parametrize("metric", ["euclidean", "dot"])
def test_overflowing_logits_take_the_per_episode_path(blobs, metric):
    # float32 features at 1e20: the logits overflow float32; the head retries
    # in float64, the batch is handed to it, and the results agree
    X, y = blobs
    X = X.astype(np.float32) * np.float32(1e20)
    plain, batched = both_paths(X, y, n_episodes=10, metric=metric)
    np.testing.assert_array_equal(batched, plain)
    assert BatchedPrototype.batches == [10]


@pytest.mark.parametrize("factor", [1e20, 1e-30])
def test_cosine_does_not_depend_on_the_scale_of_the_features(blobs, factor):
    X, y = blobs
    X = X.astype(np.float32)
    _, unscaled = both_paths(X, y)
    plain, batched = both_paths(X * np.float32(factor), y)
    np.testing.assert_array_equal(batched, unscaled)
    np.testing.assert_array_equal(plain, unscaled)


def test_huge_scale_gives_finite_logits(blobs):
    X, y = blobs
    plain, batched = both_paths(X.astype(np.float32), y, scale=1e38)
    np.testing.assert_array_equal(batched, plain)
    assert BatchedPrototype.batches


# -------------------------------------------------------------------- memory


def test_episode_batches_shrink_with_the_features():
    episodes = iter(range(200))
    sizes = [len(b) for b in episode_batches(episodes, 200, 100, 640)]
    assert sizes == [64, 64, 64, 8]
    # 2**23 entries at most: 100 rows of 2**17 features -> 1 episode a batch
    assert [len(b) for b in episode_batches(iter(range(3)), 3, 100, 2**17)] == [1] * 3
    assert [len(b) for b in episode_batches(iter(range(5)), 5, 100, 640)] == [5]


def test_batches_are_drawn_lazily(blobs, monkeypatch):
    X, y = blobs
    draws = []
    sample = EpisodeSampler.sample
    monkeypatch.setattr(
        EpisodeSampler,
        "sample",
        lambda self, rng, *args: draws.append(1) or sample(self, rng, *args),
    )

    class Stop(Exception):
        pass

    def stop(head, X):
        def predict(*args):
            raise Stop

        return predict

    monkeypatch.setattr(BatchedPrototype, "_fewshot_batch_predictor", stop)
    with pytest.raises(Stop):
        evaluate_episodes(
            BatchedPrototype(),
            X,
            y,
            n_way=3,
            n_shot=1,
            n_query=2,
            n_episodes=10**6,
        )
    assert len(draws) == BATCH_EPISODES


def test_memory_does_not_grow_with_n_episodes(blobs):
    X, y = blobs

    def run(n_episodes):
        return lambda: evaluate_episodes(
            BatchedPrototype(), X, y, n_way=4, n_shot=3, n_query=5,
            n_episodes=n_episodes, random_state=0,
        )  # fmt: skip

    run(10)()  # warm up (imports, torch)
    small, large = peak_bytes(run(200)), peak_bytes(run(3000))
    # the accuracies (8 bytes an episode) grow; the batches do not
    assert large < small + 3000 * 8 + 256 * 2**10


# ------------------------------------------------------------------ layering


def test_declaring_the_capability_does_not_import_torch():
    code = """
import sys
import skfewshot._batched
import skfewshot._episodes
assert "torch" not in sys.modules, "torch was imported"
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_the_batched_parameter_lists_cover_every_prototype_parameter():
    # a parameter added to PrototypeClassifier must be placed in one list on
    # purpose (batched, or batched only at its default), or heads using it
    # silently lose the batched path
    from skfewshot._batched import _PROTOTYPE_PARAMS, _PROTOTYPE_UNBATCHED_OPTIONS

    listed = set(_PROTOTYPE_PARAMS) | set(_PROTOTYPE_UNBATCHED_OPTIONS)
    assert listed == set(PrototypeClassifier._get_param_names())


# ------------------------------------------------------ the fine-tuned head


def finetune_logits(X, y, episodes, **params):
    """Batched logits and per-episode decision_function of the same episodes."""
    import torch

    support = np.stack([s for s, _ in episodes])
    query = np.stack([q for _, q in episodes])
    codes, _ = _episode_codes(y[support], y[query])
    head = FineTunedCosineClassifier(**params)
    X_t = torch.as_tensor(X)
    batched = _batched._finetune_logits(
        X_t[support], torch.as_tensor(codes), X_t[query], codes.max() + 1,
        head.get_params(),
    ).numpy()  # fmt: skip
    plain = np.stack(
        [clone(head).fit(X[s], y[s]).decision_function(X[q]) for s, q in episodes]
    )
    return batched, plain


def draw(y, n_episodes=12, n_way=4, n_shot=3, n_query=5, seed=0):
    sampler = EpisodeSampler(y, n_way, n_shot, n_query)
    rng = np.random.RandomState(seed)
    return [sampler.sample(rng) for _ in range(n_episodes)]


# tol=1e-10 is at the rounding floor of the gradient: L-BFGS-B may stop there
# abnormally (its line search finds no decrease), which warns
@pytest.mark.filterwarnings(
    "ignore:FineTunedCosineClassifier stopped abnormally:"
    "sklearn.exceptions.ConvergenceWarning"
)
@pytest.mark.parametrize(
    "params, dtype",
    [
        ({}, np.float32),
        ({}, np.float64),
        ({"alpha": 0.5, "scale": 3.0}, np.float64),
        ({"learn_scale": True}, np.float32),
        ({"transductive": True, "entropy_weight": 0.1}, np.float32),
        (
            {"transductive": True, "entropy_weight": 1.0, "marginal_weight": 0.3},
            np.float64,
        ),
    ],
    ids=["default32", "default64", "alpha_scale", "learn_scale", "tim", "tim_mu"],
)
def test_batched_fine_tuning_finds_the_per_episode_classifier(blobs, params, dtype):
    # solved to a tight tol, both paths reach the same minimum: the same
    # logits to far better than the scale of the objective's curvature
    X, y = blobs
    X = X.astype(dtype)
    tight = dict(params, tol=1e-10, max_iter=1000)
    if params.get("learn_scale"):
        # a learned scale has a minimum only where the support is not
        # separable (its cosines): 12 shots of 4 classes of noise in 3-d
        y = np.repeat(np.arange(6), 40)
        X = np.random.RandomState(0).normal(size=(len(y), 3)).astype(dtype)
        batched, plain = finetune_logits(X, y, draw(y, n_shot=12), **tight)
    else:
        episodes = draw(y, n_episodes=6 if params.get("transductive") else 12)
        batched, plain = finetune_logits(X, y, episodes, **tight)
    np.testing.assert_allclose(batched, plain, rtol=1e-5, atol=1e-5)
    assert np.ptp(plain) > 1  # logits that tell the classes apart


# tol=1e-10 is at the rounding floor of the gradient: L-BFGS-B may stop there
# abnormally (its line search finds no decrease), which warns
@pytest.mark.filterwarnings(
    "ignore:FineTunedCosineClassifier stopped abnormally:"
    "sklearn.exceptions.ConvergenceWarning"
)
def test_batched_fine_tuning_in_more_features_than_rows():
    # 64-d rows, 12 support and 20 query rows an episode: the episode's span is
    # smaller than the features, where the batched path solves it
    rng = np.random.RandomState(1)
    y = np.repeat(np.arange(8), 12)
    X = rng.normal(scale=0.4, size=(8, 64))[y] + rng.normal(size=(len(y), 64))
    for params in [{}, {"transductive": True, "entropy_weight": 0.1}]:
        tight = dict(params, tol=1e-10, max_iter=1000)
        batched, plain = finetune_logits(X, y, draw(y, n_episodes=4), **tight)
        np.testing.assert_allclose(batched, plain, rtol=1e-5, atol=1e-5)


def test_max_iter_zero_is_the_cosine_prototype_classifier(blobs):
    X, y = blobs
    episodes = draw(y)
    batched, plain = finetune_logits(X, y, episodes, max_iter=0, scale=2.0)
    np.testing.assert_allclose(batched, plain, rtol=1e-10, atol=1e-12)
    for logits, (s, q) in zip(batched, episodes):
        prototypes = PrototypeClassifier(metric="cosine", scale=2.0).fit(X[s], y[s])
        np.testing.assert_allclose(
            logits, prototypes.decision_function(X[q]), rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize(
    "params",
    [{}, {"transductive": True, "entropy_weight": 0.1}],
    ids=["default", "tim"],
)
def test_fine_tuned_head_is_batched_in_evaluate_episodes(blobs, monkeypatch, params):
    # at the default tol the two paths may differ only on a query within the
    # tolerance of a tie: none on these episodes (a learned scale is left
    # out: on a separable support it grows until max_iter, wherever the path)
    X, y = blobs
    batches = []
    predictor = _batched.finetune_batch_predictor

    def counting(head, X):
        inner = predictor(head, X)

        def predict(support, codes, query, n_classes):
            batches.append(len(support))
            return inner(support, codes, query, n_classes)

        return predict

    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=70, random_state=0)
    plain = evaluate_episodes(PerEpisodeFineTuned(**params), X, y, **kwargs)
    monkeypatch.setattr(FineTunedCosineClassifier, "_fewshot_batch_predictor", counting)
    batched = evaluate_episodes(FineTunedCosineClassifier(**params), X, y, **kwargs)
    np.testing.assert_array_equal(batched.accuracies, plain.accuracies)
    assert batches == [BATCH_EPISODES, 70 - BATCH_EPISODES]
    assert 0.3 < plain.mean < 0.95


class PerEpisodeFineTuned(FineTunedCosineClassifier):
    """Overrides fit, which voids the batched capability: one clone an episode."""

    def fit(self, X, y, sample_weight=None):
        return super().fit(X, y, sample_weight)


def test_a_subclass_overriding_the_fine_tuning_takes_the_per_episode_path(blobs):
    # the batched path replaces _fine_tune: an override of it must be run
    class NegatedFineTuned(FineTunedCosineClassifier):
        def _fine_tune(self, start, unlabelled):
            coef, intercept, scale = start
            return -coef, intercept, scale, 0

    X, y = blobs
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=6, random_state=0)
    scores = evaluate_episodes(NegatedFineTuned(), X, y, **kwargs)
    expected = [
        np.mean(NegatedFineTuned().fit(X[s], y[s]).predict(X[q]) == y[q])
        for s, q in EpisodicSplit(**kwargs).split(X, y)
    ]
    np.testing.assert_array_equal(scores.accuracies, expected)


def test_batched_fine_tuning_warns_when_iterations_run_out(blobs):
    X, y = blobs
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=6, random_state=0)
    message = (
        "FineTunedCosineClassifier stopped after max_iter=2 L-BFGS-B iterations "
        "with the largest gradient entry above tol=1e-06 in 6 of 6 batched "
        "episodes (their predictions then depend on the path: the batched line "
        "search is not SciPy's, so fitting each episode's head, as "
        "cross_val_score does, may label their queries differently); increase "
        "max_iter or tol."
    )
    with pytest.warns(ConvergenceWarning) as record:
        batched = evaluate_episodes(
            FineTunedCosineClassifier(max_iter=2), X, y, **kwargs
        )
    assert [str(w.message) for w in record] == [message]
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        plain = evaluate_episodes(PerEpisodeFineTuned(max_iter=2), X, y, **kwargs)
    np.testing.assert_array_equal(batched.accuracies, plain.accuracies)


def _negated_gradient(monkeypatch):
    """Make every fine-tuning objective report the opposite of its gradient:
    no step along the reported descent direction decreases the objective."""
    from skfewshot import finetune

    objective = finetune._objective

    def wrong(*args, **kwargs):
        loss, grad_W, grad_b, grad_log_s = objective(*args, **kwargs)
        return loss, -grad_W, -grad_b, -grad_log_s

    monkeypatch.setattr(finetune, "_objective", wrong)


def test_batched_fine_tuning_warns_on_an_abnormal_stop(blobs, monkeypatch):
    # the line search fails from the start: both paths keep W0 (the cosine
    # prototype classifier) and say so, as they do when iterations run out
    _negated_gradient(monkeypatch)
    X, y = blobs
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=6, random_state=0)
    with pytest.warns(ConvergenceWarning, match=r"abnormally .* in 6 of 6 batched"):
        batched = evaluate_episodes(FineTunedCosineClassifier(), X, y, **kwargs)
    with pytest.warns(ConvergenceWarning, match="stopped abnormally"):
        plain = evaluate_episodes(PerEpisodeFineTuned(), X, y, **kwargs)
    np.testing.assert_array_equal(batched.accuracies, plain.accuracies)
    prototypes = evaluate_episodes(PrototypeClassifier(), X, y, **kwargs)
    np.testing.assert_array_equal(batched.accuracies, prototypes.accuracies)


def test_an_all_zero_class_is_fine_tuned_alike_by_both_paths(blobs):
    # class 0's rows are all zero (a ReLU backbone on blank images): its
    # weight row stays zero, the other classes are fine-tuned; the batched
    # logits are the per-episode ones (they were NaN: 0 / 0)
    X, y = blobs
    X = np.abs(X)
    X[y == 0] = 0.0
    episodes = [(s, q) for s, q in draw(y, n_episodes=40) if (y[s] == 0).any()][:6]
    assert len(episodes) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        batched, plain = finetune_logits(X, y, episodes, tol=1e-8, max_iter=1000)
    np.testing.assert_allclose(batched, plain, rtol=1e-5, atol=1e-5)
    # fine-tuned: not the cosine prototype classifier's logits
    prototypes = np.stack(
        [
            PrototypeClassifier().fit(X[s], y[s]).decision_function(X[q])
            for s, q in episodes
        ]
    )
    assert np.abs(plain - prototypes).max() > 0.1


@pytest.mark.parametrize(
    "params", [{"unlabelled_label": -1}, {"device": "meta"}], ids=["unlabelled", "meta"]
)
def test_fine_tuned_options_not_batched(blobs, params):
    # an unlabelled_label could make a drawn class unlabelled
    X, _ = blobs
    head = FineTunedCosineClassifier(**params)
    if params.get("device") == "meta":
        with pytest.raises(ValueError, match="meta"):
            _batched.finetune_batch_predictor(head, X)
    else:
        assert _batched.finetune_batch_predictor(head, X) is None


def test_the_batched_parameter_lists_cover_every_fine_tuned_parameter():
    from skfewshot._batched import _FINETUNE_PARAMS, _FINETUNE_UNBATCHED_OPTIONS

    listed = set(_FINETUNE_PARAMS) | set(_FINETUNE_UNBATCHED_OPTIONS)
    assert listed == set(FineTunedCosineClassifier._get_param_names())


def test_prototype_batched_episodes_compute_on_the_heads_device(monkeypatch):
    from skfewshot import _torch_utils

    asked = []
    resolve = _torch_utils.resolve_device

    def spy(device="auto"):
        asked.append(device)
        return resolve(device)

    monkeypatch.setattr(_torch_utils, "resolve_device", spy)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), np.repeat(np.arange(6), 5)
    kwargs = dict(n_way=3, n_shot=1, n_query=2, n_episodes=4, random_state=0)
    on_cpu = evaluate_episodes(PrototypeClassifier(device="cpu"), X, y, **kwargs)
    assert asked == ["cpu"]  # the batched path, on the head's device
    on_auto = evaluate_episodes(PrototypeClassifier(), X, y, **kwargs)
    assert asked == ["cpu", "auto"]
    np.testing.assert_array_equal(on_cpu.accuracies, on_auto.accuracies)
    with pytest.raises(ValueError, match="device='nonsense' is not a valid"):
        evaluate_episodes(PrototypeClassifier(device="nonsense"), X, y, **kwargs)


# ------------------------------------------------- pipeline subclasses, lists


class FirstClassPipeline(Pipeline):
    """A pipeline whose predict post-processes its head's labels: it always
    answers the first class."""

    def predict(self, X, **params):
        predicted = super().predict(X, **params)
        return np.full_like(predicted, self.classes_[0])


def test_a_pipeline_subclass_overriding_predict_is_not_batched(blobs):
    # its head alone was batched and the override ignored (0.88 on average):
    # each episode has 5 queries of each of its 4 classes, one class right
    X, y = blobs
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=20, random_state=1)
    scores = evaluate_episodes(
        FirstClassPipeline([("clf", BatchedPrototype())]), X, y, **kwargs
    )
    np.testing.assert_array_equal(scores.accuracies, np.full(20, 0.25))
    assert BatchedPrototype.batches == []


def test_a_pipeline_subclass_overriding_nothing_is_still_batched(blobs):
    class Named(Pipeline):
        """A subclass that only adds a method."""

        def describe(self):
            return "named"

    X, y = blobs
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=20, random_state=1)
    scores = evaluate_episodes(Named([("clf", BatchedPrototype())]), X, y, **kwargs)
    plain = evaluate_episodes(PerEpisodePrototype(), X, y, **kwargs)
    np.testing.assert_array_equal(scores.accuracies, plain.accuracies)
    assert BatchedPrototype.batches == [20]


def test_features_as_a_list_are_batched(blobs):
    # X.shape of the caller's list: AttributeError (also in the search and
    # the curve display); the batched path now uses the converted features
    from skfewshot.model_selection import EpisodicGridSearchCV

    X, y = blobs
    kwargs = dict(n_way=4, n_shot=3, n_query=5, n_episodes=20, random_state=1)
    from_list = evaluate_episodes(BatchedPrototype(), X.tolist(), y, **kwargs)
    assert BatchedPrototype.batches == [20]
    from_array = evaluate_episodes(PerEpisodePrototype(), X, y, **kwargs)
    np.testing.assert_array_equal(from_list.accuracies, from_array.accuracies)
    search = EpisodicGridSearchCV(
        PrototypeClassifier(), {"metric": ["cosine", "euclidean"]}, refit=False,
        **kwargs,
    ).fit(X.tolist(), y)  # fmt: skip
    np.testing.assert_array_equal(
        search.cv_results_["split3_test_score"],
        [
            evaluate_episodes(PerEpisodePrototype(metric=m), X, y, **kwargs).accuracies[
                3
            ]
            for m in ("cosine", "euclidean")
        ],
    )


def test_features_as_a_list_draw_a_curve(blobs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skfewshot.plotting import FewShotCurveDisplay

    X, y = blobs
    kwargs = dict(shots=(1, 3), n_way=4, n_query=5, n_episodes=10, random_state=0)
    from_list = FewShotCurveDisplay.from_estimator(
        BatchedPrototype(), X.tolist(), y, **kwargs
    )
    from_array = FewShotCurveDisplay.from_estimator(
        PerEpisodePrototype(), X, y, **kwargs
    )
    plt.close("all")
    assert BatchedPrototype.batches == [10, 10]
    np.testing.assert_array_equal(from_list.mean, from_array.mean)


def test_the_per_episode_side_of_both_paths_is_not_batched(blobs):
    # PrototypeClassifier itself declares the capability: compared with a
    # batched twin it compared the batched path with itself
    from skfewshot._episodes import batch_predictor

    X, y = blobs
    assert batch_predictor(PrototypeClassifier(), X, y) is not None
    assert batch_predictor(PerEpisodePrototype(), X, y) is None
