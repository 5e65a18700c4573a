"""EpisodeSampler: the one N-way K-shot sampler every episodic caller uses."""

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from skfewshot._episodes import EPISODE_CONSTRAINTS, EpisodeSampler


def test_episode_is_class_major_and_disjoint():
    y = np.repeat(np.arange(6), 10)
    sampler = EpisodeSampler(y, n_way=3, n_shot=2, n_query=4)
    support, query = sampler.sample(np.random.RandomState(0))
    assert support.shape == (6,) and query.shape == (12,)
    assert not set(support) & set(query)
    # class-major: shots of one class, then the next, in the same class order
    support_classes = y[support].reshape(3, 2)
    query_classes = y[query].reshape(3, 4)
    assert (support_classes == support_classes[:, :1]).all()
    assert (query_classes == query_classes[:, :1]).all()
    np.testing.assert_array_equal(support_classes[:, 0], query_classes[:, 0])
    assert len(set(support_classes[:, 0])) == 3


def test_same_rng_same_episode():
    y = np.repeat(np.arange(6), 10)
    sampler = EpisodeSampler(y, 3, 1, 2)
    a = sampler.sample(np.random.RandomState(7))
    b = sampler.sample(np.random.RandomState(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_only_classes_with_enough_samples_are_drawn():
    y = np.array([0] * 3 + [1] * 3 + [2] * 2)  # class 2 has too few for 1 + 2
    sampler = EpisodeSampler(y, n_way=2, n_shot=1, n_query=2)
    np.testing.assert_array_equal(sampler.eligible_classes_, [0, 1])
    for seed in range(5):
        support, query = sampler.sample(np.random.RandomState(seed))
        assert 2 not in y[np.concatenate([support, query])]


def test_within_groups_draws_one_group():
    y = np.repeat(np.arange(8), 5)
    groups = np.repeat([0, 1], 20)
    sampler = EpisodeSampler(y, 4, 1, 1, groups=groups, within_groups=True)
    for seed in range(5):
        support, _ = sampler.sample(np.random.RandomState(seed))
        assert len(set(groups[support])) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_way=5, n_shot=1, n_query=4), "only 4 of 4 classes have that many"),
        (
            dict(n_way=2, n_shot=0, n_query=1),
            r"'n_shot' parameter of EpisodeSampler must be an int in the range "
            r"\[1, inf\). Got 0 instead",
        ),
        (
            dict(n_way=2, n_shot=1, n_query=1, within_groups=True),
            "within_groups=True needs groups",
        ),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EpisodeSampler(np.repeat(np.arange(4), 5), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        # one class is no classification: the meta-trainer's bound, for everyone
        (dict(n_way=1, n_shot=1, n_query=1), r"'n_way' .* range \[2, inf\). Got 1"),
        # an episode without queries has no accuracy and no loss
        (dict(n_way=2, n_shot=1, n_query=0), r"'n_query' .* range \[1, inf\). Got 0"),
        (dict(n_way=2.0, n_shot=1, n_query=1), r"'n_way' .* must be an int"),
    ],
)
def test_settings_follow_the_shared_constraints(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        EpisodeSampler(np.repeat(np.arange(4), 5), **kwargs)


def test_shared_constraints_cover_the_episode_settings():
    assert set(EPISODE_CONSTRAINTS) == {"n_way", "n_shot", "n_query", "n_episodes"}


def test_class_spanning_groups_is_rejected():
    y = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="spans several groups"):
        EpisodeSampler(y, 2, 1, 1, groups=[0, 1, 1, 1], within_groups=True)


def test_episodes_are_successive_samples_drawn_lazily():
    y = np.repeat(np.arange(6), 10)
    sampler = EpisodeSampler(y, 3, 1, 2)
    rng = np.random.RandomState(3)
    episodes = sampler.episodes(rng, 1_000_000)
    # nothing drawn until asked: rng is still where RandomState(3) starts
    assert rng.randint(2**31) == np.random.RandomState(3).randint(2**31)
    rng.seed(3)
    eager = np.random.RandomState(3)
    for _ in range(4):
        support, query = next(episodes)
        expected = sampler.sample(eager)
        np.testing.assert_array_equal(support, expected[0])
        np.testing.assert_array_equal(query, expected[1])
    assert len(list(sampler.episodes(np.random.RandomState(0), 5))) == 5
