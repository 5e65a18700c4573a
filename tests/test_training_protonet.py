"""Tests for skfewshot.training._protonet: ProtoNetMetaTrainer and its episodes."""

from functools import partial

import numpy as np
import pytest
import torch
from _training_testing import (
    interrupted_run,
    pretrainer,
    protonet,
    resumed_run,
    same_state,
)

from skfewshot.training._heads import BackboneWithHead, PrototypeHead
from skfewshot.training._protonet import _EpisodeBatchSampler, _EpisodicNet


def test_protonet_needs_enough_classes_and_samples(base):
    X, y = base
    with pytest.raises(ValueError, match="n_way=6 classes .* only 5 of 5"):
        protonet(n_way=6).fit(X, y)
    with pytest.raises(ValueError, match="at least n_shot \\+ n_query = 45"):
        protonet(n_shot=5, n_query=40).fit(X, y)


def test_augment_sees_every_training_batch(base):
    calls = []

    def augment(X):
        calls.append(tuple(X.shape))
        return X + 0.1 * torch.randn_like(X)

    plain = protonet(max_epochs=2).fit(*base)
    augmented = protonet(max_epochs=2, augment=augment).fit(*base)
    assert calls == [(5 * (1 + 5), 1, 16, 16)] * 16  # 2 epochs x 8 episodes
    assert not same_state(plain.backbone_, augmented.backbone_)
    # augment draws from torch's global generator, seeded by fit
    again = protonet(max_epochs=2, augment=augment).fit(*base)
    assert same_state(augmented.backbone_, again.backbone_)


# -- the episodic pieces, by hand ----------------------------------------------


def test_episode_batch_sampler_yields_support_then_query():
    y = np.repeat(np.arange(6), 5)
    sampler = _EpisodeBatchSampler(y, 3, 2, 1, n_episodes=4, random_state=0)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 4
    for batch in batches:
        assert len(batch) == len(set(batch)) == 3 * (2 + 1)
        support, query = y[batch[:6]], y[batch[6:]]
        # class-major: shots of one class together, same class order in both
        assert support[::2].tolist() == support[1::2].tolist() == query.tolist()
    assert list(sampler) != batches  # the next epoch draws new episodes


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_prototype_loss_matches_a_hand_computation(metric):
    net = _EpisodicNet(
        # the backbone is not called: the features go straight to the loss
        BackboneWithHead(torch.nn.Linear(2, 2), PrototypeHead(metric), False),
        n_support=4,
        criterion=torch.nn.CrossEntropyLoss,
    ).initialize()
    # classes 7 and 3, two shots each (labels unsorted), then two queries
    features = torch.tensor(
        [[0.0, 0.0], [0.0, 2.0], [4.0, 0.0], [4.0, 2.0], [3.0, 1.0], [0.0, 0.0]]
    )
    labels = torch.tensor([7, 7, 3, 3, 3, 7])
    logits, targets = net.logits_and_targets(features, labels)
    # prototypes in sorted class order: class 3 -> (4, 1), class 7 -> (0, 1)
    if metric == "euclidean":
        expected = -torch.tensor([[1.0, 9.0], [17.0, 1.0]])
    else:  # 10 * cosine; the zero query has cosine 0 to everything
        expected = 10.0 * torch.tensor(
            [[13.0 / (10.0 * 17.0) ** 0.5, 1.0 / 10.0**0.5], [0.0, 0.0]]
        )
    torch.testing.assert_close(logits, expected)
    assert targets.tolist() == [0, 1]
    loss = net.get_loss(features, labels, training=False)
    torch.testing.assert_close(
        loss, torch.nn.functional.cross_entropy(expected, torch.tensor([0, 1]))
    )


# -- within-group episodes -------------------------------------------------------


def _three_groups(y):
    """Digits 0-4 in groups {0, 1}, {2, 3} and {4} (too small for 2-way)."""
    return np.array(["ab", "ab", "cd", "cd", "e"])[y]


def test_within_groups_draws_every_episode_from_one_group(base, monkeypatch):
    X, y = base
    groups = _three_groups(y)
    drawn = []
    real_iter = _EpisodeBatchSampler.__iter__

    def spy(self):
        for batch in real_iter(self):
            drawn.append(batch)
            yield batch

    monkeypatch.setattr(_EpisodeBatchSampler, "__iter__", spy)
    trainer = protonet(n_way=2, within_groups=True, max_epochs=2)
    with pytest.warns(UserWarning, match="never from the other 1: 1 belongs to"):
        trainer.fit(X, y, groups)
    assert len(drawn) == 2 * 8
    seen = set()
    for batch in drawn:
        labels = set(y[batch].tolist())
        assert labels in ({0, 1}, {2, 3})  # both classes of one group, never 4
        seen.add(frozenset(labels))
    assert len(seen) == 2  # both groups are drawn
    # without within_groups the same seed mixes the groups
    drawn.clear()
    protonet(n_way=2, max_epochs=2).fit(X, y)
    assert any(set(y[b].tolist()) not in ({0, 1}, {2, 3}) for b in drawn)


def test_within_groups_trains_otherwise_and_repeats(base):
    X, y = base
    groups = _three_groups(y)
    make = {"n_way": 2, "within_groups": True, "max_epochs": 2}
    with pytest.warns(UserWarning, match="never from the other 1"):
        first = protonet(**make).fit(X, y, groups)
    with pytest.warns(UserWarning, match="never from the other 1"):
        again = protonet(**make).fit(X, y, list(groups))
    plain = protonet(n_way=2, max_epochs=2).fit(X, y)
    assert same_state(first.backbone_, again.backbone_)
    assert not same_state(first.backbone_, plain.backbone_)
    # groups are read by their partition and sorted order, not their type
    codes = np.array([7, 7, 9, 9, 11])[y]
    with pytest.warns(UserWarning, match="never from the other 1"):
        coded = protonet(**make).fit(X, y, codes)
    assert same_state(first.backbone_, coded.backbone_)


def test_within_groups_needs_groups_and_others_refuse_them(base):
    X, y = base
    groups = _three_groups(y)
    with pytest.raises(ValueError, match=r"within_groups=True\) needs groups in fit"):
        protonet(within_groups=True).fit(X, y)
    with pytest.raises(ValueError, match="set within_groups=True or leave groups"):
        protonet().fit(X, y, groups)
    with pytest.raises(ValueError, match="one group per sample"):
        protonet(within_groups=True).fit(X, y, groups[:-1])
    with pytest.raises(ValueError, match="groups contains NaN"):
        protonet(n_way=2, within_groups=True).fit(X, y, np.where(y == 4, np.nan, y))
    with pytest.raises(ValueError, match="groups mixes labels of types int, str"):
        protonet(n_way=2, within_groups=True).fit(
            X, y, np.array([0, "a", 1, "b", 2], dtype=object)[y]
        )
    # a class in two groups is named as given, with its groups
    names = np.array(["zero", "one", "two", "three", "four"])[y]
    split = groups.copy()
    split[np.flatnonzero(y == 2)[0]] = "ab"
    with pytest.raises(
        ValueError, match=r"class 'two' spans several groups \['ab', 'cd'\]"
    ):
        protonet(n_way=2, within_groups=True).fit(X, names, split)
    # no group holds n_way classes: refused before training, naming the largest
    with pytest.raises(ValueError, match=r"the largest group has 2\)"):
        protonet(n_way=3, within_groups=True).fit(X, y, groups)
    # a trainer that draws no episodes would ignore them: refused, not ignored
    with pytest.raises(ValueError, match="SupervisedPretrainer got groups but"):
        pretrainer().fit(X, y, groups)
    # a failed fit leaves no fitted attributes
    trainer = protonet(within_groups=True)
    with pytest.raises(ValueError):
        trainer.fit(X, y)
    assert not hasattr(trainer, "backbone_")


def test_within_groups_checkpoint_resumes_only_with_the_same_groups(base, tmp_path):
    X, y = base
    groups = _three_groups(y)
    other = np.array(["ab", "bc", "bc", "ab", "e"])[y]  # other pairs, other episodes
    path = tmp_path / "run.ckpt"
    make = partial(protonet, n_way=2, within_groups=True)
    with pytest.warns(UserWarning, match="never from the other 1"):
        interrupted_run(make, (X, y, groups), path)
    with pytest.warns(UserWarning, match="never from the other 1"):
        with pytest.raises(ValueError, match="this run has groups_sha256="):
            resumed_run(make, (X, y, other), path)
    with pytest.raises(
        ValueError, match="within_groups=True, this run has no within_groups;"
    ):
        resumed_run(protonet, (X, y), path, n_way=2)
    with pytest.warns(UserWarning, match="never from the other 1"):
        resumed = resumed_run(make, (X, y, groups), path)
    with pytest.warns(UserWarning, match="never from the other 1"):
        whole = make(max_epochs=2).fit(X, y, groups)
    assert dict(resumed.net_.callbacks_)["TrainingCheckpoint"].resumed_epochs_ == 1
    assert same_state(resumed.backbone_, whole.backbone_)
