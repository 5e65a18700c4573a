"""pretrain_one_shot_ensemble's members: pretrained and ProtoNet meta-trained."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import DataConversionWarning

from skfewshot.models import Conv4
from skfewshot.recipes import ONE_SHOT_MEMBERS, pretrain_one_shot_ensemble
from skfewshot.training import ProtoNetMetaTrainer, SupervisedPretrainer

# 38 images of 4 classes (10, 10, 9, 9): 16 x 16, so a Conv4 gives hidden features
X = np.random.default_rng(0).random((38, 1, 16, 16), dtype=np.float32)
Y = np.repeat([0, 1, 2, 3], [10, 10, 9, 9])
# 3-way 2-shot 1-query: 9 images an episode, 38 / 9 = 4.2 -> 4 episodes an epoch
PROTONET = {
    "recipe": "protonet",
    "augment": "none",
    "n_way": 3,
    "n_shot": 2,
    "n_query": 1,
}


def _recipe(members, make_module=lambda: Conv4(hidden=4), **params):
    return pretrain_one_shot_ensemble(
        X,
        Y,
        members=members,
        make_module=make_module,
        max_epochs=1,
        device="cpu",
        **params,
    )


def test_default_members_are_read_only_and_end_with_a_protonet():
    assert ONE_SHOT_MEMBERS[-1] == {
        "recipe": "protonet",
        "augment": "affine-elastic",
        "n_way": 20,
        "n_shot": 5,
        "n_query": 5,
    }
    with pytest.raises(TypeError):
        ONE_SHOT_MEMBERS[-1]["n_way"] = 5


def test_protonet_member_is_a_protonet_trainer_seeing_an_epoch_of_images():
    members = [PROTONET, {**PROTONET, "episodes_per_epoch": 7, "max_epochs": 2}]
    _, trainers = _recipe(members)
    assert [type(t) for t in trainers] == [ProtoNetMetaTrainer] * 2
    first, second = trainers
    assert (first.n_way, first.n_shot, first.n_query) == (3, 2, 1)
    assert first.episodes_per_epoch == 4  # round(38 / (3 * (2 + 1)))
    assert second.episodes_per_epoch == 7  # the member's own wins
    assert first.history_[:, "train_batch_count"] == [4]
    assert second.history_[:, "train_batch_count"] == [7, 7]
    # the trainer's other defaults, and the recipe's seed
    params = first.get_params(deep=False)
    assert {k: params[k] for k in ("lr", "optimizer", "lr_schedule", "metric")} == {
        "lr": 1e-3,
        "optimizer": "adam",
        "lr_schedule": "cosine",
        "metric": "euclidean",
    }
    assert (params["random_state"], params["augment"]) == (0, None)
    assert members[0] == PROTONET and "episodes_per_epoch" not in PROTONET


def test_mixed_ensemble_concatenates_every_member_and_reruns_identically():
    members = [{"augment": "none"}, PROTONET, {**PROTONET, "augment": "affine"}]

    def recipe(**params):
        widths = iter([2, 3, 4])  # a module per member, each of its own width
        return _recipe(members, lambda: Conv4(hidden=next(widths)), **params)

    ensemble, trainers = recipe()
    assert [type(t) for t in trainers] == [
        SupervisedPretrainer,
        ProtoNetMetaTrainer,
        ProtoNetMetaTrainer,
    ]
    images = torch.as_tensor(X)
    with torch.no_grad():
        features = ensemble(images)
        # every member's fourth-block map of 16 x 16 images, 2 x 2 unpooled
        assert features.shape == (38, (2 + 3 + 4) * 4)
        # the ProtoNet member's L2-normalised map sits at its place; its
        # trainer's backbone still pools (its weights are the ensemble's)
        assert trainers[1].backbone_(images).shape == (38, 3)
        trainers[1].backbone_.last_pool = False
        own = torch.nn.functional.normalize(trainers[1].backbone_(images), dim=1)
        torch.testing.assert_close(features[:, 8:20], own, rtol=1e-5, atol=1e-6)
        pooled = recipe(last_pool=True)[0](images)
        assert pooled.shape == (38, 2 + 3 + 4)
        assert torch.equal(recipe()[0](images), features)  # same seed, same bits
        assert not torch.equal(recipe(random_state=1)[0](images), features)


P = PROTONET
NOT_TAKEN = r"members\[0\] has parameters ProtoNetMetaTrainer does not take .*: "


@pytest.mark.parametrize(
    "members, match",
    [
        (
            [{"augment": "none"}, {**P, "recipe": "maml"}],
            r"members\[1\]\['recipe'\] must be one of 'pretrain', 'protonet', "
            "got 'maml'",
        ),
        ([{**P, "recipe": None}], r"members\[0\]\['recipe'\] .* got None"),
        ([{**P, "born_again": True}], NOT_TAKEN + "'born_again'\\."),
        ([{**P, "rotation_loss_weight": 1.0}], NOT_TAKEN + "'rotation_loss_weight'"),
        ([{**P, "mixup_alpha": 1.0}], NOT_TAKEN + "'mixup_alpha'"),
        ([{"augment": "none", "mixup_alpha": -1}], r"members\[0\]: The 'mixup_alpha'"),
        ([{**P, "contrastive_loss_weight": 1.0}], NOT_TAKEN + "'contrastive_loss"),
        (
            [{"augment": "affine"}, {"augment": "none", "contrastive_loss_weight": 1}],
            r"members\[1\]: contrastive_loss_weight=1 compares two augmented views "
            "of every image, which needs augment",
        ),
        (
            [{"augment": "affine", "contrastive_loss_weight": 1, "mixup_alpha": 0.2}],
            r"members\[0\]: contrastive_loss_weight=1 and mixup_alpha=0.2 cannot "
            "be combined",
        ),
        ([{**P, "teacher": None}], NOT_TAKEN + "'teacher'"),
        (
            [{**P, "distill_weight": 0.5, "distill_temperature": 4.0}],
            NOT_TAKEN + "'distill_temperature', 'distill_weight'",
        ),
        ([{**P, "batch_size": 8, "head": "cos"}], NOT_TAKEN + "'batch_size', 'head'"),
        ([{**P, "random_state": None}], r"members\[0\]\['random_state'\] must be"),
        (
            [{"augment": "none", "n_way": 3}],
            r"members\[0\] has parameters SupervisedPretrainer does not take .*'n_way'",
        ),
        ([{**P, "n_way": 0}], r"members\[0\]: The 'n_way' parameter"),
        ([{**P, "metric": "cos"}], r"members\[0\]: The 'metric' parameter"),
        ([{**P, "episodes_per_epoch": 0}], r"members\[0\]: The 'episodes_per_epoch'"),
        ([{"recipe": "protonet"}], r"members\[0\] has no 'augment'"),
        (
            [{"augment": "none"}, {**P, "n_way": 5}],
            r"members\[1\]: n_way=5 classes with at least n_shot \+ n_query = 3 "
            r"samples each were asked, but only 4 of 4 classes have that many\.",
        ),
        (
            [{**P, "n_shot": 9}],
            r"members\[0\]: n_way=3 classes with at least n_shot \+ n_query = 10 "
            r"samples each were asked, but only 2 of 4 classes have that many\.",
        ),
        # equal networks, however they are written
        ([P, dict(P)], r"members\[1\] equals members\[0\]"),
        ([P, {**P, "episodes_per_epoch": 4}], r"members\[1\] equals members\[0\]"),
        (
            [{"augment": "none"}, {"recipe": "pretrain", "augment": "none"}],
            r"members\[1\] equals members\[0\]",
        ),
        # a trainer's default spelt out: euclidean, lr 0.05, distill_weight 0.5
        ([P, {**P, "metric": "euclidean"}], r"members\[1\] equals members\[0\]"),
        (
            [{"augment": "none"}, {"augment": "none", "lr": 0.05}],
            r"members\[1\] equals members\[0\]",
        ),
        (
            [
                {"augment": "none", "born_again": True},
                {"augment": "none", "born_again": True, "distill_weight": 0.5},
            ],
            r"members\[1\] equals members\[0\]",
        ),
        # the recipe's own values spelt out (_recipe: max_epochs=1, device="cpu")
        ([P, {**P, "max_epochs": 1}], r"members\[1\] equals members\[0\]"),
        (
            [{"augment": "none"}, {"augment": "none", "device": "cpu"}],
            r"members\[1\] equals members\[0\]",
        ),
        # distill_weight=0: the first generation again, whatever the temperature
        (
            [
                {"augment": "none"},
                {"augment": "none", "born_again": True, "distill_weight": 0.0},
            ],
            r"members\[1\] equals members\[0\]: both would train the same network "
            r"from the same seed \(the ensemble would hold one network twice\); a "
            r"born-again member with distill_weight=0 trains as its first "
            r"generation does, whatever its distill_temperature\.",
        ),
        (
            [
                {"augment": "none", "born_again": True, "distill_weight": 0},
                {"augment": "none", "lr": 0.05},
            ],
            r"members\[1\] equals members\[0\].*; a born-again member with "
            r"distill_weight=0",
        ),
        (
            [
                {"augment": "none", "born_again": True, "distill_weight": 0.0},
                {
                    "augment": "none",
                    "born_again": True,
                    "distill_weight": 0.0,
                    "distill_temperature": 2.0,
                },
            ],
            r"members\[1\] equals members\[0\].*distill_weight=0",
        ),
        # the verbosity does not change the network
        (
            [{"augment": "none"}, P, {"augment": "none", "verbose": 1}],
            r"members\[2\] equals members\[0\]: both would train the same "
            r"network from the same seed \(the ensemble would hold one network "
            r"twice\)\.",
        ),
    ],
)
def test_members_are_refused_before_any_training(members, match):
    def make_module():  # never reached: the checks come before any training
        raise AssertionError("trained despite invalid members")

    with pytest.raises(ValueError, match=match):
        _recipe(members, make_module)


class _TrainingStarted(Exception):
    """Raised by make_module: every member passed the checks."""


@pytest.mark.parametrize(
    "members",
    [
        [P, {**P, "metric": "cosine"}],
        [P, {**P, "max_epochs": 2}],
        [P, {**P, "episodes_per_epoch": 5}],
        [P, {**P, "augment": "affine"}],
        [{"augment": "none"}, {"augment": "none", "lr": 0.01}],
        [{"augment": "none"}, {"augment": "none", "born_again": True}],
        [{"augment": "none"}, {"augment": "none", "max_epochs": 2}],
        [{"augment": "none"}, {**P, "augment": "none"}],
        [
            {"augment": "none", "born_again": True},
            {"augment": "none", "born_again": True, "distill_weight": 0.25},
        ],
    ],
)
def test_different_members_are_accepted(members):
    def make_module():  # reached only once every member is accepted
        raise _TrainingStarted

    with pytest.raises(_TrainingStarted):
        _recipe(members, make_module)


def test_protonet_member_takes_a_column_y_with_a_warning():
    members = [PROTONET]
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed") as w:
        ensemble, (trainer,) = pretrain_one_shot_ensemble(
            X,
            Y[:, None],
            members=members,
            make_module=lambda: Conv4(hidden=4),
            max_epochs=1,
            device="cpu",
        )
    # once, by the recipe: the trainer is given the 1-D y
    assert [x.category for x in w] == [DataConversionWarning]
    assert trainer.history_[:, "train_batch_count"] == [4]
    np.testing.assert_array_equal(trainer.classes_, [0, 1, 2, 3])
    # the same network as from the 1-D y
    images = torch.as_tensor(X)
    with torch.no_grad():
        assert torch.equal(ensemble(images), _recipe(members)[0](images))


def test_born_again_members_differing_in_distillation_share_one_first_generation():
    members = [
        {"augment": "none", "born_again": True, "distill_weight": 0.25},
        {"augment": "none", "born_again": True, "distill_temperature": 2.0},
    ]
    _, trainers = _recipe(members)
    first, second = trainers
    # one teacher, trained once, without the distillation settings it ignores
    assert first.teacher is second.teacher
    assert first.teacher.teacher is None
    assert first.teacher.get_params()["distill_weight"] == 0.5
    assert first.teacher.get_params()["distill_temperature"] == 4.0
    assert (first.distill_weight, second.distill_temperature) == (0.25, 2.0)


def test_a_born_again_member_without_distillation_is_its_first_generation():
    # why such a member equals the plain one: it trains the same network, bit
    # for bit (its teacher's term has weight 0)
    images = torch.as_tensor(X)
    plain, _ = _recipe([{"augment": "none"}])
    zero, (trainer,) = _recipe(
        [{"augment": "none", "born_again": True, "distill_weight": 0.0}]
    )
    assert trainer.teacher is not None and trainer.distill_weight == 0.0
    a, b = plain.state_dict(), zero.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(plain(images), zero(images))


# -- within-group episodes -----------------------------------------------------------

#: classes 0 and 1 in group 0, classes 2 and 3 in group 1
GROUPS = np.repeat([0, 0, 1, 1], [10, 10, 9, 9])
WITHIN = {**PROTONET, "n_way": 2, "within_groups": True}


def test_a_within_groups_member_gets_the_groups_and_the_others_none(monkeypatch):
    seen = []
    real_fit = ProtoNetMetaTrainer.fit

    def spy(self, X, y, groups=None):
        seen.append(groups)
        return real_fit(self, X, y, groups)

    monkeypatch.setattr(ProtoNetMetaTrainer, "fit", spy)
    _, trainers = _recipe([WITHIN, {**WITHIN, "within_groups": False}], groups=GROUPS)
    assert seen[0] is GROUPS and seen[1] is None
    assert [t.within_groups for t in trainers] == [True, False]
    settings = trainers[0].net_._trainer_settings
    assert "groups_sha256" in settings and "groups_sha256" not in (
        trainers[1].net_._trainer_settings
    )


@pytest.mark.parametrize(
    "members, groups, match",
    [
        ([WITHIN], None, r"members\[1\]: it sets within_groups, but no groups"),
        ([P], GROUPS, "groups were given, but no member draws its episodes"),
        ([{**WITHIN, "n_way": 3}], GROUPS, r"members\[1\]: n_way=3 within one group"),
        ([WITHIN], GROUPS[:5], r"members\[1\]: groups must be 1-D with one group"),
    ],
)
def test_within_groups_members_are_refused_before_any_training(members, groups, match):
    def make_module():  # never reached: the checks come before any training
        raise AssertionError("trained despite invalid members")

    with pytest.raises(ValueError, match=match):
        _recipe([{"augment": "none"}, *members], make_module, groups=groups)


def test_a_members_own_seed_trains_the_network_of_that_seed():
    # one member from two seeds, in one call: each network is the one that
    # the function's random_state of that seed trains, bit for bit
    images = torch.as_tensor(X)
    members = [
        {"augment": "affine", "random_state": 3},
        PROTONET,
        {**PROTONET, "random_state": 4},
    ]
    ensemble, trainers = _recipe(members)
    assert [t.random_state for t in trainers] == [3, 0, 4]
    with torch.no_grad():
        features = ensemble(images)
        alone = [
            _recipe([{"augment": "affine"}], random_state=3)[0](images),
            _recipe([PROTONET])[0](images),
            _recipe([PROTONET], random_state=4)[0](images),
        ]
    assert torch.equal(features, torch.cat(alone, dim=1))
    # the seed is the network's: two seeds of a member are two networks
    assert not torch.equal(alone[1], alone[2])
