"""Tests for the auxiliary supervised contrastive loss of
skfewshot.training.SupervisedPretrainer (``contrastive_loss_weight``)."""

import pickle

import numpy as np
import pytest
import torch
from _training_testing import pretrainer, same_state
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from test_training_boosters import (
    B_CLASS,
    B_ROT,
    W_CLASS,
    W_ROT,
    X_TINY,
    Y_TINY,
    checkpointed_run,
    cross_entropy,
    flip,
)
from torch import nn

from skfewshot.augment import RandomAffine
from skfewshot.training import SupervisedPretrainer
from skfewshot.training._pretrain import _supervised_contrastive_loss

RNG = np.random.RandomState(1)
#: the projection head's two layers: 4 -> 4 (ReLU) -> 128
W1, B1 = RNG.normal(size=(4, 4)), RNG.normal(size=4)
W2, B2 = RNG.normal(size=(128, 4)), RNG.normal(size=128)


def supcon_by_hand(z, labels, temperature):
    """Khosla et al.'s L_out, one anchor at a time."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        log_denominator = np.log(sum(np.exp(z[i] @ z[a] / temperature) for a in others))
        positives = [p for p in others if labels[p] == labels[i]]
        total += -np.mean(
            [z[i] @ z[p] / temperature - log_denominator for p in positives]
        )
    return total / len(z)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_supervised_contrastive_loss_by_hand(temperature):
    z = RNG.normal(size=(8, 5))
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2])  # one to three positives each
    loss = _supervised_contrastive_loss(
        torch.as_tensor(z), torch.as_tensor(labels), temperature
    )
    np.testing.assert_allclose(loss.item(), supcon_by_hand(z, labels, temperature))
    # the rows are normalised: their lengths change nothing
    scaled = _supervised_contrastive_loss(
        torch.as_tensor(z * RNG.uniform(0.1, 10, size=(8, 1))),
        torch.as_tensor(labels),
        temperature,
    )
    np.testing.assert_allclose(scaled.item(), loss.item(), rtol=1e-10)


def test_two_views_of_distinct_classes_is_nt_xent():
    # one class per image, two views each: SimCLR's NT-Xent, whose positive
    # for row i is its other view, i +- n
    n, temperature = 3, 0.5
    z = RNG.normal(size=(2 * n, 4))
    labels = np.tile(np.arange(n), 2)
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = unit @ unit.T / temperature
    expected = np.mean(
        [
            -sim[i, (i + n) % (2 * n)]
            + np.log(sum(np.exp(sim[i, a]) for a in range(2 * n) if a != i))
            for i in range(2 * n)
        ]
    )
    loss = _supervised_contrastive_loss(
        torch.as_tensor(z), torch.as_tensor(labels), temperature
    )
    np.testing.assert_allclose(loss.item(), expected)


class TwoViews:
    """A deterministic two-view augmentation: odd calls mirror the images
    left-right, even calls double them (which no rotation of the first view
    gives, so a wrong slice of the features cannot pass for the second view)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, X):
        self.calls += 1
        return X.flip(-1) if self.calls % 2 else 2 * X


def project(features):
    return np.maximum(features @ W1.T + B1, 0) @ W2.T + B2


@pytest.mark.parametrize("rotation_loss_weight", [0.0, 0.5])
def test_loss_of_a_contrastive_step_by_hand(rotation_loss_weight):
    weight, temperature = 0.7, 0.3
    augment = TwoViews()
    trainer = SupervisedPretrainer(
        nn.Flatten(),
        max_epochs=1,
        batch_size=len(X_TINY),
        augment=augment,
        rotation_loss_weight=rotation_loss_weight,
        contrastive_loss_weight=weight,
        contrastive_temperature=temperature,
        device="cpu",
        verbose=0,
        random_state=0,
    ).fit(X_TINY, Y_TINY)
    net, module = trainer.net_, trainer.net_.module_
    with torch.no_grad():
        for layer, (w, b) in [
            (module.head, (W_CLASS, B_CLASS)),
            (module.projection_head[0], (W1, B1)),
            (module.projection_head[2], (W2, B2)),
            *([(module.rotation_head, (W_ROT, B_ROT))] if rotation_loss_weight else []),
        ]:
            layer.weight.copy_(torch.as_tensor(w))
            layer.bias.copy_(torch.as_tensor(b))
    net.augment.calls = 0
    step = net.train_step_single((torch.as_tensor(X_TINY), torch.as_tensor(Y_TINY)))
    assert net.augment.calls == 2  # one draw per view
    first = X_TINY[..., ::-1].astype(np.float64)
    second = 2 * X_TINY.astype(np.float64)
    f1, f2 = first.reshape(6, -1), second.reshape(6, -1)
    # the class head sees the first view only; the contrastive loss both
    expected = cross_entropy(f1 @ W_CLASS.T + B_CLASS, Y_TINY)
    z = project(np.concatenate([f1, f2]))
    expected += weight * supcon_by_hand(z, np.tile(Y_TINY, 2), temperature)
    if rotation_loss_weight:
        rotated = np.concatenate([np.rot90(first, k, axes=(-2, -1)) for k in range(4)])
        logits = rotated.reshape(24, -1) @ W_ROT.T + B_ROT
        expected += rotation_loss_weight * cross_entropy(logits, np.repeat(range(4), 6))
    np.testing.assert_allclose(step["loss"].item(), expected, rtol=1e-5, atol=1e-6)
    # train_acc counts the class head's predictions on the first view
    predicted = (f1 @ W_CLASS.T + B_CLASS).argmax(axis=1)
    recorded = net.history[-1, "batches", -1, "train_acc"]
    assert recorded == pytest.approx(np.mean(predicted == Y_TINY))
    # the projection head trains with the net, and never goes with the backbone
    assert module.projection_head[2].weight.shape == (128, 4)
    assert isinstance(trainer.backbone_, nn.Flatten)


def test_contrastive_loss_changes_training_is_seeded_and_adds_only_its_head(base):
    augment = RandomAffine(degrees=10.0)
    plain = pretrainer(max_epochs=1, verbose=0, augment=augment).fit(*base)
    params = dict(max_epochs=1, verbose=0, augment=augment, contrastive_loss_weight=1)
    contrastive = pretrainer(**params).fit(*base)
    again = pretrainer(**params).fit(*base)
    assert contrastive.history_[:, "train_loss"] != plain.history_[:, "train_loss"]
    assert contrastive.history_[:, "train_loss"] == again.history_[:, "train_loss"]
    assert same_state(contrastive.net_.module_, again.net_.module_)
    extra = set(contrastive.net_.module_.state_dict()) - set(
        plain.net_.module_.state_dict()
    )
    assert extra == {
        f"projection_head.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")
    }
    assert "projection_head.0.weight" not in plain.net_.module_.state_dict()
    # the backbone is the plain one's kind, without the projection head
    assert set(contrastive.backbone_.state_dict()) == set(plain.backbone_.state_dict())


def test_a_trainer_pickled_before_the_contrastive_loss_existed_still_works():
    trainer = SupervisedPretrainer(
        nn.Flatten(), max_epochs=1, augment=flip, device="cpu", verbose=0,
        random_state=0,
    ).fit(X_TINY, Y_TINY)  # fmt: skip
    batch = (torch.as_tensor(X_TINY), torch.as_tensor(Y_TINY))
    step = trainer.net_.train_step_single(batch)
    old = pickle.loads(pickle.dumps(trainer))
    for name in ("contrastive_loss_weight", "contrastive_temperature"):
        delattr(old, name)
        delattr(old.net_, name)
        assert f"{name}=" not in repr(old)
    assert old.get_params()["contrastive_loss_weight"] == 0.0
    assert clone(old).contrastive_temperature == 0.1
    again = old.net_.train_step_single(batch)
    assert again["loss"].item() == step["loss"].item()


def test_contrastive_loss_needs_augment():
    with pytest.raises(
        ValueError,
        match=r"contrastive_loss_weight=0.5 compares two augmented views .* augment; "
        r"it is None",
    ):
        SupervisedPretrainer(nn.Flatten(), contrastive_loss_weight=0.5).fit(
            X_TINY, Y_TINY
        )


def test_contrastive_loss_and_mixup_do_not_combine():
    with pytest.raises(
        ValueError,
        match=r"contrastive_loss_weight=0.5 and mixup_alpha=0.2 cannot be combined",
    ):
        SupervisedPretrainer(
            nn.Flatten(), augment=flip, contrastive_loss_weight=0.5, mixup_alpha=0.2
        ).fit(X_TINY, Y_TINY)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"contrastive_loss_weight": -0.1}, "'contrastive_loss_weight' parameter"),
        ({"contrastive_loss_weight": "1"}, "'contrastive_loss_weight' parameter"),
        ({"contrastive_temperature": 0.0}, "'contrastive_temperature' parameter"),
        ({"contrastive_temperature": 0.009}, "'contrastive_temperature' parameter"),
        ({"contrastive_temperature": np.inf}, "'contrastive_temperature' parameter"),
        ({"contrastive_temperature": np.nan}, "'contrastive_temperature' parameter"),
    ],
)
def test_parameter_constraints(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        SupervisedPretrainer(nn.Flatten(), augment=flip, **params).fit(X_TINY, Y_TINY)


def test_checkpoint_refuses_to_resume_with_another_contrastive_loss(base, tmp_path):
    run = checkpointed_run(base, tmp_path / "run.ckpt")
    augment = RandomAffine(degrees=10.0)
    run(augment=augment, contrastive_loss_weight=0.5)
    with pytest.raises(ValueError, match="contrastive_loss_weight=0.5, this run has"):
        run(resume=True, augment=augment, contrastive_loss_weight=0.25)
    with pytest.raises(ValueError, match="contrastive_temperature=0.1, this run has"):
        run(
            resume=True,
            augment=augment,
            contrastive_loss_weight=0.5,
            contrastive_temperature=0.2,
        )
    with pytest.raises(ValueError, match="contrastive_loss_weight=0.5"):
        run(resume=True, augment=augment)
    resumed = run(resume=True, augment=augment, contrastive_loss_weight=0.5)
    checkpoint = dict(resumed.net_.callbacks_)["TrainingCheckpoint"]
    assert checkpoint.resumed_epochs_ == 1
    assert checkpoint.trainer_settings_["contrastive_temperature"] == 0.1
