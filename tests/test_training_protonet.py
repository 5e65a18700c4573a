"""Tests for skfewshot.training._protonet: ProtoNetMetaTrainer and its episodes."""

import numpy as np
import pytest
import torch
from _training_testing import (
    protonet,
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
