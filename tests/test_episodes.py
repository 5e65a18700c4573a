"""EpisodeSampler: the one N-way K-shot sampler every episodic caller uses."""

import re
import types
import warnings

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from skfewshot._episodes import (
    EPISODE_CONSTRAINTS,
    EpisodeSampler,
    _library_frame,
    left_out_already_said,
)


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
    with pytest.warns(UserWarning, match="from 2 of the 3 classes") as record:
        sampler = EpisodeSampler(y, n_way=2, n_shot=1, n_query=2)
    assert record[0].filename == __file__  # the caller's line
    np.testing.assert_array_equal(sampler.eligible_classes_, [0, 1])
    np.testing.assert_array_equal(sampler.drawable_classes_, [0, 1])
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


# ------------------------------------------------ classes left out: a warning


def test_classes_never_drawn_are_counted_in_a_warning():
    # class 3 is too small; group "b" holds 2 classes, an episode needs 3
    y = np.repeat(np.arange(6), [5, 5, 5, 1, 5, 5])
    groups = np.where(y < 4, "a", "b")
    message = (
        "Episodes are drawn from 3 of the 6 classes, never from the other 3: 1 "
        "has fewer than n_shot + n_query = 2 samples and 2 belong to groups with "
        "fewer than 3 classes of 2 samples (n_way=3 is drawn within one group)."
    )
    with pytest.warns(UserWarning) as record:
        sampler = EpisodeSampler(y, 3, 1, 1, groups=groups, within_groups=True)
    assert [str(w.message) for w in record] == [message]
    np.testing.assert_array_equal(sampler.eligible_classes_, [0, 1, 2, 4, 5])
    np.testing.assert_array_equal(sampler.drawable_classes_, [0, 1, 2])
    with pytest.warns(UserWarning, match=r"^Episodes are drawn from 5 of the 6 "):
        EpisodeSampler(y, 3, 1, 1)  # no groups: only the small class
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EpisodeSampler(y, 3, 1, 1, warn=False)
        EpisodeSampler(np.repeat(np.arange(4), 3), 2, 1, 2)  # nothing left out


def test_classes_left_out_already_said_silences_this_warning_in_its_context():
    y = np.repeat(np.arange(4), [3, 3, 3, 1])  # class 3: too small
    message = (
        "Episodes are drawn from 3 of the 4 classes, never from the other 1: 1 "
        "has fewer than n_shot + n_query = 2 samples."
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with left_out_already_said():
            EpisodeSampler(y, 2, 1, 1)
            with left_out_already_said():  # nested: its exit keeps the outer
                EpisodeSampler(y, 2, 1, 1)
            EpisodeSampler(y, 2, 1, 1)
            warnings.warn("another warning", UserWarning, stacklevel=1)  # left alone
        EpisodeSampler(y, 2, 1, 1)  # after the context: warns again
    assert [str(w.message) for w in record] == ["another warning", message]
    assert [w.filename for w in record] == [__file__, __file__]


@pytest.mark.parametrize(
    "module, library",
    [
        ("skfewshot.model_selection", True),
        ("sklearn.model_selection._validation", True),
        ("skorch.net", True),
        ("joblib.parallel", True),
        ("skorchy", False),
        ("__main__", False),
        ("test_episodes", False),
    ],
)
def test_warnings_look_past_the_frames_of_the_libraries_calling_back(module, library):
    frame = types.SimpleNamespace(f_globals={"__name__": module})
    assert _library_frame(frame) is library


# ---------------------------------------------- labels that cannot be grouped


@pytest.mark.parametrize(
    "labels, types",
    [
        (np.array([1, 1, "a", "a", 2, 2], dtype=object), "int, str"),
        (np.array([1, 1, None, None, 2, 2], dtype=object), "NoneType, int"),
    ],
)
def test_mixed_label_types_are_a_value_error(labels, types):
    # np.unique's TypeError "'<' not supported between instances of ..."
    def message(name):
        return re.escape(
            f"{name} mixes labels of types {types}, which cannot be sorted "
            f"together; give {name} labels of one type (e.g. all str)."
        )

    with pytest.raises(ValueError, match=f"^{message('y')}$"):
        EpisodeSampler(labels, 2, 1, 1)
    with pytest.raises(ValueError, match=f"^{message('groups')}$"):
        EpisodeSampler(np.repeat([0, 1, 2], 2), 2, 1, 1, groups=labels,
                       within_groups=True)  # fmt: skip


@pytest.mark.parametrize(
    "groups",
    [
        np.array([0.0, 0.0, np.nan, np.nan, 1.0, 1.0, np.nan, np.nan]),
        np.array(["a", "a", np.nan, np.nan, "b", "b", np.nan, np.nan], dtype=object),
    ],
    ids=["float", "object"],
)
def test_nan_groups_are_a_value_error(groups):
    # each class of a NaN group became a group of its own (NaN != NaN)
    y = np.repeat(np.arange(4), 2)
    with pytest.raises(
        ValueError,
        match=r"^groups contains NaN \(4 of 8 samples\); give every sample a group\.$",
    ):
        EpisodeSampler(y, 2, 1, 1, groups=groups, within_groups=True)
