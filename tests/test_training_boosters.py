"""Tests for the boosters of skfewshot.training.SupervisedPretrainer: the
auxiliary rotation-prediction loss, input mixup and born-again
self-distillation."""

import pickle

import numpy as np
import pytest
import torch
from _training_testing import (
    conv4,
    interrupted_run,
    pretrainer,
    resumed_run,
    same_state,
)
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

from skfewshot.training import SupervisedPretrainer

# -- a tiny deterministic module: the loss by hand --------------------------

RNG = np.random.RandomState(0)
#: 6 single-channel 2x2 images of 3 classes; their features are the 4 pixels
X_TINY = RNG.normal(size=(6, 1, 2, 2)).astype(np.float32)
Y_TINY = np.array([0, 1, 2, 0, 1, 2])
W_CLASS, B_CLASS = RNG.normal(size=(3, 4)), RNG.normal(size=3)
W_ROT, B_ROT = RNG.normal(size=(4, 4)), RNG.normal(size=4)
W_TEACHER, B_TEACHER = RNG.normal(size=(3, 4)), RNG.normal(size=3)


def flip(X):
    """A deterministic augmentation: mirror the images left-right."""
    return X.flip(-1)


def fixed_linear(weight, bias):
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight))
        layer.bias.copy_(torch.as_tensor(bias))
    return layer


def teacher_module():
    return nn.Sequential(nn.Flatten(), fixed_linear(W_TEACHER, B_TEACHER))


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def cross_entropy(logits, y):
    return -log_softmax(logits)[np.arange(len(y)), y].mean()


#: a mixup draw: lam and the permutation pairing row i with row ORDER[i]
LAM, ORDER = 0.7, np.array([3, 0, 5, 1, 2, 4])


def expected_loss(
    rotation_loss_weight, teacher, distill_weight, temperature, mix=False
):
    """The loss of one step on (flip(X_TINY), Y_TINY), in numpy; with ``mix``,
    the batch mixed by (LAM, ORDER) after the augmentation."""
    X = X_TINY[..., ::-1].astype(np.float64)  # the augmented batch
    if mix:
        X = LAM * X + (1 - LAM) * X[ORDER]
    features = X.reshape(len(X), -1)
    loss = cross_entropy(features @ W_CLASS.T + B_CLASS, Y_TINY)
    if mix:
        other = cross_entropy(features @ W_CLASS.T + B_CLASS, Y_TINY[ORDER])
        loss = LAM * loss + (1 - LAM) * other
    if teacher:
        log_s = log_softmax((features @ W_CLASS.T + B_CLASS) / temperature)
        log_t = log_softmax((features @ W_TEACHER.T + B_TEACHER) / temperature)
        kl = (np.exp(log_t) * (log_t - log_s)).sum(axis=1).mean()
        loss = (1 - distill_weight) * loss + distill_weight * temperature**2 * kl
    if rotation_loss_weight:
        # every image turned by k * 90 degrees counter-clockwise, k = 0..3
        rotated = np.concatenate([np.rot90(X, k, axes=(-2, -1)) for k in range(4)])
        rot_logits = rotated.reshape(len(rotated), -1) @ W_ROT.T + B_ROT
        k = np.repeat(np.arange(4), len(X))
        loss += rotation_loss_weight * cross_entropy(rot_logits, k)
    return loss


def tiny_trainer(**params):
    params = {
        "max_epochs": 1,
        "batch_size": len(X_TINY),
        "augment": flip,
        "device": "cpu",
        "verbose": 0,
        "random_state": 0,
        **params,
    }
    return SupervisedPretrainer(nn.Flatten(), **params).fit(X_TINY, Y_TINY)


def fixed_heads_trainer(rotation_loss_weight, teacher, **params):
    """A one-epoch tiny_trainer whose heads are then set to W_CLASS, W_ROT
    (distill_weight 0.3, distill_temperature 2, the teacher_module if asked)."""
    trainer = tiny_trainer(
        rotation_loss_weight=rotation_loss_weight,
        teacher=teacher_module() if teacher else None,
        distill_weight=0.3,
        distill_temperature=2.0,
        **params,
    )
    module = trainer.net_.module_
    with torch.no_grad():
        module.head.weight.copy_(torch.as_tensor(W_CLASS))
        module.head.bias.copy_(torch.as_tensor(B_CLASS))
        if rotation_loss_weight:
            module.rotation_head.weight.copy_(torch.as_tensor(W_ROT))
            module.rotation_head.bias.copy_(torch.as_tensor(B_ROT))
    return trainer


@pytest.mark.parametrize("rotation_loss_weight", [0.0, 0.5])
@pytest.mark.parametrize("teacher", [False, True])
def test_loss_of_a_training_step_by_hand(rotation_loss_weight, teacher):
    distill_weight, temperature = 0.3, 2.0
    trainer = fixed_heads_trainer(rotation_loss_weight, teacher)
    net = trainer.net_
    step = net.train_step_single((torch.as_tensor(X_TINY), torch.as_tensor(Y_TINY)))
    expected = expected_loss(rotation_loss_weight, teacher, distill_weight, temperature)
    np.testing.assert_allclose(step["loss"].item(), expected, rtol=1e-5, atol=1e-6)
    # the rotation head exists only when used, and never goes with the backbone
    assert hasattr(net.module_.rotation_head, "weight") == bool(rotation_loss_weight)
    assert isinstance(trainer.backbone_, nn.Flatten)


@pytest.mark.parametrize("rotation_loss_weight", [0.0, 0.5])
@pytest.mark.parametrize("teacher", [False, True])
def test_loss_of_a_mixup_step_by_hand(monkeypatch, rotation_loss_weight, teacher):
    distill_weight, temperature = 0.3, 2.0
    net = fixed_heads_trainer(rotation_loss_weight, teacher, mixup_alpha=0.4).net_
    draws = []

    def draw(n, alpha, device):
        draws.append((n, alpha, device))
        return torch.tensor(LAM), torch.as_tensor(ORDER)

    monkeypatch.setattr("skfewshot.training._pretrain._mixup_draw", draw)
    step = net.train_step_single((torch.as_tensor(X_TINY), torch.as_tensor(Y_TINY)))
    assert draws == [(6, 0.4, torch.device("cpu"))]
    expected = expected_loss(
        rotation_loss_weight, teacher, distill_weight, temperature, mix=True
    )
    np.testing.assert_allclose(step["loss"].item(), expected, rtol=1e-5, atol=1e-6)
    # train_acc counts the predictions of each mix's larger part, Y_TINY
    mixed = LAM * X_TINY[..., ::-1] + (1 - LAM) * X_TINY[..., ::-1][ORDER]
    predicted = (mixed.reshape(6, -1) @ W_CLASS.T + B_CLASS).argmax(axis=1)
    recorded = net.history[-1, "batches", -1, "train_acc"]
    assert recorded == pytest.approx(np.mean(predicted == Y_TINY))
    assert 0 < recorded < 1 and np.mean(predicted == Y_TINY[ORDER]) != recorded
    # the draw is the step's own: after it (even a failed one), losses are plain
    assert net._mix is None
    backbone, net.module_.backbone = net.module_.backbone, _Failing()
    with pytest.raises(RuntimeError, match="forward failed"):
        net.train_step_single((torch.as_tensor(X_TINY), torch.as_tensor(Y_TINY)))
    net.module_.backbone = backbone
    assert net._mix is None
    X = torch.as_tensor(X_TINY)
    for training in (False, True):
        plain = net.get_loss(
            net.module_(X), torch.as_tensor(Y_TINY), X=X, training=training
        )
        if teacher and training:
            continue  # the distillation term: the test below
        np.testing.assert_allclose(
            plain.item(),
            cross_entropy(X_TINY.reshape(6, -1) @ W_CLASS.T + B_CLASS, Y_TINY),
            rtol=1e-5,
        )


class _Failing(nn.Module):
    def forward(self, X):
        raise RuntimeError("forward failed")


def test_mixup_draws_come_from_the_cpu_generator_whatever_the_device():
    from skfewshot.training._pretrain import _mixup_draw

    with torch.random.fork_rng():
        torch.manual_seed(3)
        lam, order = _mixup_draw(5, 0.5, torch.device("meta"))
        torch.manual_seed(3)
        lam_cpu, order_cpu = _mixup_draw(5, 0.5, torch.device("cpu"))
    assert lam.device.type == "cpu" and order.device.type == "meta"
    assert lam == lam_cpu and order.shape == order_cpu.shape == (5,)


def test_mixup_draws_are_folded_seeded_and_beta_distributed():
    from skfewshot.training._pretrain import _mixup_draw

    with torch.random.fork_rng():
        torch.manual_seed(0)
        draws = [_mixup_draw(5, 1.0, torch.device("cpu")) for _ in range(4000)]
        torch.manual_seed(0)
        again = _mixup_draw(5, 1.0, torch.device("cpu"))
    lams = np.array([float(lam) for lam, _ in draws])
    assert float(again[0]) == lams[0] and torch.equal(again[1], draws[0][1])
    # every row of the batch is mixed with one row: a permutation
    assert all(sorted(order.tolist()) == list(range(5)) for _, order in draws)
    # Beta(1, 1) is uniform, so max(lam, 1 - lam) is uniform on [0.5, 1]:
    # mean 0.75 (standard error 0.144 / sqrt(4000) = 0.0023), a quarter
    # below 0.625 (standard error 0.0068)
    assert lams.min() >= 0.5 and lams.max() <= 1.0
    assert abs(lams.mean() - 0.75) < 0.01
    assert abs(np.mean(lams < 0.625) - 0.25) < 0.03


def test_mixup_changes_training_and_is_seeded(base):
    plain = pretrainer(max_epochs=1, verbose=0).fit(*base)
    mixed = pretrainer(max_epochs=1, verbose=0, mixup_alpha=1.0).fit(*base)
    again = pretrainer(max_epochs=1, verbose=0, mixup_alpha=1.0).fit(*base)
    assert mixed.history_[:, "train_loss"] != plain.history_[:, "train_loss"]
    assert mixed.history_[:, "train_loss"] == again.history_[:, "train_loss"]
    assert same_state(mixed.net_.module_, again.net_.module_)


def test_a_trainer_pickled_before_mixup_existed_still_works():
    trainer = tiny_trainer()
    batch = (torch.as_tensor(X_TINY), torch.as_tensor(Y_TINY))
    step = trainer.net_.train_step_single(batch)
    old = pickle.loads(pickle.dumps(tiny_trainer()))
    # as unpickled from an earlier version: no mixup attributes of their own
    del old.mixup_alpha, old.net_.mixup_alpha
    assert old.get_params()["mixup_alpha"] == 0.0 and "mixup_alpha=" not in repr(old)
    assert clone(old).mixup_alpha == 0.0
    again = old.net_.train_step_single(batch)
    assert again["loss"].item() == step["loss"].item()


def test_the_distillation_term_alone_by_hand():
    # distill_weight=1: only T^2 * KL is left; it is 0 when student == teacher
    trainer = tiny_trainer(teacher=teacher_module(), distill_weight=1.0)
    net = trainer.net_
    with torch.no_grad():
        net.module_.head.weight.copy_(torch.as_tensor(W_TEACHER))
        net.module_.head.bias.copy_(torch.as_tensor(B_TEACHER))
    X, y = torch.as_tensor(X_TINY), torch.as_tensor(Y_TINY)
    loss = net.get_loss(net.module_(X), y, X=X, training=True)
    assert abs(loss.item()) < 1e-6
    # validation (training=False) is the plain cross-entropy
    plain = net.get_loss(net.module_(X), y, X=X, training=False)
    np.testing.assert_allclose(
        plain.item(),
        cross_entropy(X_TINY.reshape(6, -1) @ W_TEACHER.T + B_TEACHER, Y_TINY),
        rtol=1e-5,
    )


# -- the defaults change nothing ------------------------------------------


def test_defaults_train_exactly_as_before(base):
    # the history of pretrainer(max_epochs=2) before the boosters existed
    # (commit 2d320e7, CPU)
    before = [1.3604781341552734, 0.6142786669731141]
    default = pretrainer(max_epochs=2, verbose=0).fit(*base)
    np.testing.assert_allclose(default.history_[:, "train_loss"], before, rtol=1e-5)
    off = pretrainer(
        max_epochs=2,
        verbose=0,
        rotation_loss_weight=0.0,
        mixup_alpha=0.0,
        contrastive_loss_weight=0.0,
        contrastive_temperature=0.5,
        teacher=None,
        distill_weight=0.9,
        distill_temperature=1.0,
    ).fit(*base)
    for key in ("train_loss", "train_acc"):
        assert off.history_[:, key] == default.history_[:, key]
    assert same_state(off.net_.module_, default.net_.module_)
    assert "rotation_head.weight" not in off.net_.module_.state_dict()
    assert "projection_head.0.weight" not in off.net_.module_.state_dict()


# -- a trainer as teacher ---------------------------------------------------


def test_fitted_trainer_teaches_with_its_whole_net_and_is_not_modified(base):
    teacher = pretrainer(max_epochs=1, verbose=0, rotation_loss_weight=1.0).fit(*base)
    before = {k: v.clone() for k, v in teacher.net_.module_.state_dict().items()}
    student = pretrainer(max_epochs=1, verbose=0, teacher=teacher).fit(*base)
    # the student's copy: the teacher's net (head included), on the CPU, eval
    copy = student.net_.teacher
    assert copy is not teacher.net_.module_ and not copy.training
    assert same_state(copy, teacher.net_.module_)
    after = teacher.net_.module_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # distillation changes training; clone shares the fitted teacher
    plain = pretrainer(max_epochs=1, verbose=0).fit(*base)
    assert student.history_[:, "train_loss"] != plain.history_[:, "train_loss"]
    assert clone(student).teacher is teacher
    assert clone(student).get_params()["distill_weight"] == 0.5
    assert pickle.loads(pickle.dumps(student)).net_.teacher is not None


# -- errors -----------------------------------------------------------------


def test_rotation_needs_square_images():
    X = np.zeros((6, 1, 2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"needs square images .* shape \(1, 2, 3\)"):
        SupervisedPretrainer(nn.Flatten(), rotation_loss_weight=0.1).fit(X, Y_TINY)
    X = np.zeros((6, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"needs square images .* shape \(4,\)"):
        SupervisedPretrainer(nn.Flatten(), rotation_loss_weight=0.1).fit(X, Y_TINY)


def test_teacher_with_another_number_of_logits():
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"n_classes=3, .* it returned \(2, 2\)"):
        tiny_trainer(teacher=teacher)


def test_teacher_not_fitted():
    with pytest.raises(NotFittedError, match="teacher SupervisedPretrainer is not"):
        tiny_trainer(teacher=SupervisedPretrainer(nn.Flatten()))


def test_teacher_fitted_on_other_classes():
    teacher = tiny_trainer()
    with pytest.raises(ValueError, match="differ at index 0: 0 in the teacher, 1 in y"):
        SupervisedPretrainer(nn.Flatten(), teacher=teacher).fit(X_TINY, Y_TINY + 1)
    with pytest.raises(ValueError, match="3 classes and y has 2;.* 'none' in y"):
        SupervisedPretrainer(nn.Flatten(), teacher=teacher).fit(
            X_TINY[Y_TINY < 2], Y_TINY[Y_TINY < 2]
        )


@pytest.mark.parametrize(
    "params, match",
    [
        ({"rotation_loss_weight": -0.1}, "'rotation_loss_weight' parameter"),
        ({"mixup_alpha": -1.0}, "'mixup_alpha' parameter"),
        ({"mixup_alpha": 0.001}, "'mixup_alpha' parameter"),
        ({"mixup_alpha": float("inf")}, "'mixup_alpha' parameter"),
        ({"distill_weight": 1.5}, "'distill_weight' parameter"),
        ({"distill_temperature": 0.0}, "'distill_temperature' parameter"),
        ({"teacher": "teacher.pt"}, "'teacher' parameter"),
    ],
)
def test_parameter_constraints(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        SupervisedPretrainer(nn.Flatten(), **params).fit(X_TINY, Y_TINY)


# -- checkpoints ------------------------------------------------------------


def checkpointed_run(base, path, settings=None):
    """``run(resume=False, **params)``: a 2-epoch pretrainer fit on ``base``
    with a TrainingCheckpoint at ``path`` (its ``settings`` given), interrupted
    as the second epoch begins, or resuming that run (returned fitted)."""

    def run(resume=False, **params):
        fit = resumed_run if resume else interrupted_run
        return fit(pretrainer, base, path, settings=settings, verbose=0, **params)

    return run


def test_checkpoint_refuses_to_resume_with_other_boosters(base, tmp_path):
    run = checkpointed_run(base, tmp_path / "run.ckpt", settings={"a": 1})
    run(rotation_loss_weight=0.5, teacher=conv4_teacher(0))
    with pytest.raises(
        ValueError,
        match="rotation_loss_weight=0.5, this run has rotation_loss_weight=0.25",
    ):
        run(resume=True, rotation_loss_weight=0.25, teacher=conv4_teacher(0))
    with pytest.raises(ValueError, match="written with teacher='[0-9a-f]{64}'"):
        run(resume=True, rotation_loss_weight=0.5, teacher=conv4_teacher(1))
    with pytest.raises(ValueError, match="distill_temperature=4.0, this run has"):
        run(
            resume=True,
            rotation_loss_weight=0.5,
            teacher=conv4_teacher(0),
            distill_temperature=2.0,
        )
    resumed = run(resume=True, rotation_loss_weight=0.5, teacher=conv4_teacher(0))
    checkpoint = dict(resumed.net_.callbacks_)["TrainingCheckpoint"]
    assert checkpoint.resumed_epochs_ == 1
    assert checkpoint.settings["a"] == 1
    assert checkpoint.trainer_settings_["rotation_loss_weight"] == 0.5


def test_checkpoint_refuses_to_resume_with_other_mixup(base, tmp_path):
    run = checkpointed_run(base, tmp_path / "run.ckpt")
    run(mixup_alpha=0.5)
    with pytest.raises(ValueError, match="mixup_alpha=0.5, this run has mixup_alpha"):
        run(resume=True, mixup_alpha=0.2)
    with pytest.raises(ValueError, match="mixup_alpha=0.5"):
        run(resume=True)
    resumed = run(resume=True, mixup_alpha=0.5)
    checkpoint = dict(resumed.net_.callbacks_)["TrainingCheckpoint"]
    assert checkpoint.resumed_epochs_ == 1
    assert checkpoint.trainer_settings_["mixup_alpha"] == 0.5


def test_checkpoint_refuses_to_resume_with_another_augmentation(base, tmp_path):
    from skfewshot.augment import RandomAffine

    path = tmp_path / "run.ckpt"

    run = checkpointed_run(base, path)
    run(augment=RandomAffine(degrees=5.0))
    with pytest.raises(ValueError, match="RandomAffine.degrees=5.0.*this run has"):
        run(resume=True, augment=RandomAffine(degrees=7.0))
    resumed = run(resume=True, augment=RandomAffine(degrees=5.0))
    checkpoint = dict(resumed.net_.callbacks_)["TrainingCheckpoint"]
    assert checkpoint.resumed_epochs_ == 1


def conv4_teacher(seed):
    """A module mapping the digits images to 5 logits, its weights from seed."""
    torch.manual_seed(seed)
    return nn.Sequential(conv4(seed), nn.Linear(8, 5))
