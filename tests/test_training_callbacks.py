"""Tests for skfewshot.training._callbacks: EpisodicValidation, TrainingCheckpoint."""

import pytest
import torch
from _training_testing import (
    episodic_validation,
    pretrainer,
    protonet,
    same_state,
)
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, Checkpoint, EarlyStopping

from skfewshot._feature_cache import FEATURE_CACHE
from skfewshot.backbone import BackboneTransformer
from skfewshot.model_selection import evaluate_episodes
from skfewshot.prototype import PrototypeClassifier
from skfewshot.training import (
    EpisodicValidation,
)
from skfewshot.training._callbacks import TrainingCheckpoint


class _RecordTrainingFlags(Callback):
    """Records, after the validation callback, which backbone modules train."""

    def on_epoch_end(self, net, **kwargs):
        flags = [m.training for m in net.module_.backbone.modules()]
        net.history.record("backbone_training", flags)


@pytest.mark.parametrize("make", [pretrainer, protonet], ids=["pretrain", "proto"])
def test_episodic_validation_records_the_few_shot_accuracy(make, base, novel):
    trainer = make(max_epochs=2, callbacks=[episodic_validation(novel)]).fit(*base)
    history = trainer.history_
    scores = history[:, "valid_fsl_acc"]
    assert len(scores) == 2
    assert history[0, "valid_fsl_acc_best"] is True
    assert history[1, "valid_fsl_acc_best"] == (scores[1] > scores[0])
    # the recorded number is evaluate_episodes on the final backbone's features
    features = BackboneTransformer(trainer.backbone_, device="cpu").fit_transform(
        novel[0]
    )
    expected = evaluate_episodes(
        PrototypeClassifier(),
        features,
        novel[1],
        n_way=5,
        n_shot=1,
        n_query=5,
        n_episodes=20,
        random_state=0,
    )
    assert scores[-1] == pytest.approx(expected.mean)
    assert history[-1, "valid_fsl_acc_ci95"] == pytest.approx(expected.ci95)
    assert trainer.backbone_.training is False


def test_episodic_validation_restores_train_mode_and_skips_the_cache(base, novel):
    n_cached = len(FEATURE_CACHE)
    callbacks = [episodic_validation(novel), _RecordTrainingFlags()]
    trainer = pretrainer(max_epochs=2, callbacks=callbacks).fit(*base)
    # skorch trains in train mode; the validation pass must hand it back so
    flags = trainer.history_[:, "backbone_training"]
    n_modules = len(list(trainer.backbone_.modules()))
    assert flags == [[True] * n_modules] * 2
    assert len(FEATURE_CACHE) == n_cached  # validation features are not cached


def test_episodic_validation_drives_early_stopping_and_checkpoint(
    base, novel, tmp_path
):
    stop = EarlyStopping(
        monitor="valid_fsl_acc",
        lower_is_better=False,
        patience=1,
        threshold=1.0,  # no accuracy can improve by 1: stops after epoch 2
        threshold_mode="abs",
    )
    checkpoint = Checkpoint(
        monitor="valid_fsl_acc_best",
        dirname=str(tmp_path),
        f_optimizer=None,
        f_criterion=None,
        f_history=None,
    )
    callbacks = [episodic_validation(novel), stop, checkpoint]
    trainer = pretrainer(max_epochs=5, callbacks=callbacks).fit(*base)
    assert len(trainer.history_) == 2
    assert trainer.history_[0, "event_cp"] is True
    assert (tmp_path / "params.pt").exists()
    # the user's callbacks were copied, not fitted in place
    assert stop.dynamic_threshold_ is None and stop.misses_ == 0


def test_episodic_validation_with_another_head_and_within_groups(base, novel):
    from sklearn.linear_model import LogisticRegression

    X, y = novel
    groups = (y >= 8).astype(int)  # {5, 6, 7} and {8, 9}
    valid = episodic_validation(
        novel, n_way=2, head=LogisticRegression(), groups=groups, within_groups=True
    )
    trainer = pretrainer(max_epochs=1, callbacks=[valid]).fit(*base)
    assert 0.5 <= trainer.history_[-1, "valid_fsl_acc"] <= 1.0


def test_episodic_validation_fails_before_training(base, novel):
    X, y = novel
    valid = episodic_validation((X[y < 7], y[y < 7]))  # 2 classes for 5-way episodes
    with pytest.raises(ValueError, match="n_way=5 classes .* only 2 of 2"):
        pretrainer(callbacks=[valid]).fit(*base)
    with pytest.raises(ValueError, match="X_val has 200 samples but y_val has 3"):
        pretrainer(callbacks=[EpisodicValidation(X, y[:3], n_way=5, n_shot=1)]).fit(
            *base
        )


def test_episodic_validation_needs_a_backbone_attribute(base, novel):
    net = NeuralNetClassifier(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 5)),
        criterion=torch.nn.CrossEntropyLoss,
        train_split=None,
        max_epochs=1,
        callbacks=[episodic_validation(novel)],
    )
    with pytest.raises(TypeError, match="has no 'backbone' attribute"):
        net.fit(*base)


class _CtrlC(Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) in the middle of an epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_begin(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("make", [pretrainer, protonet], ids=["pretrain", "proto"])
def test_checkpoint_resume_equals_an_uninterrupted_run(make, base, novel, tmp_path):
    path = tmp_path / "run.ckpt"
    validation = episodic_validation(novel)
    full = make(max_epochs=3, callbacks=[validation]).fit(*base)
    # Ctrl-C during the third epoch: the checkpoint of the second is on disk
    interrupted = make(
        max_epochs=3, callbacks=[validation, TrainingCheckpoint(path), _CtrlC(3)]
    )
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(*base)
    assert not hasattr(interrupted, "backbone_")
    resumed = make(
        max_epochs=3, callbacks=[validation, TrainingCheckpoint(path, resume=True)]
    ).fit(*base)
    checkpoint = dict(resumed.net_.callbacks_)["TrainingCheckpoint"]
    assert checkpoint.resumed_epochs_ == 2
    assert len(resumed.history_) == 3
    # weights, optimizer state, schedule and random streams all carried over
    assert same_state(resumed.net_.module_, full.net_.module_)
    for key in ("train_loss", "valid_fsl_acc", "valid_fsl_acc_best"):
        assert resumed.history_[:, key] == full.history_[:, key]


def test_checkpoint_of_a_finished_run_trains_no_more_epochs(base, tmp_path):
    path = tmp_path / "run.ckpt"
    first = pretrainer(max_epochs=2, callbacks=[TrainingCheckpoint(path)]).fit(*base)
    again = pretrainer(
        max_epochs=2, callbacks=[TrainingCheckpoint(path, resume=True)]
    ).fit(*base)
    assert len(again.history_) == 2
    assert same_state(again.backbone_, first.backbone_)


def test_checkpoint_refuses_another_run(base, tmp_path):
    path = tmp_path / "run.ckpt"
    settings = {"lr": 0.05, "epochs": 2}
    pretrainer(
        max_epochs=1, callbacks=[TrainingCheckpoint(path, settings=settings)]
    ).fit(*base)

    def resume(settings, X, y):
        callback = TrainingCheckpoint(path, settings=settings, resume=True)
        pretrainer(max_epochs=2, callbacks=[callback]).fit(X, y)

    with pytest.raises(ValueError, match=r"written with lr=0.05, this run has lr=0.1"):
        resume({**settings, "lr": 0.1}, *base)
    with pytest.raises(ValueError, match=r"written with seed=None, this run has seed"):
        resume({**settings, "seed": 1}, *base)
    X, y = base
    with pytest.raises(ValueError, match="written for other training data"):
        resume(settings, X[::-1], y[::-1])
    other = "another network .parameter 'head.weight': .5, 8. there, None here"
    with pytest.raises(ValueError, match=other):
        callback = TrainingCheckpoint(path, settings=settings, resume=True)
        protonet(max_epochs=2, callbacks=[callback]).fit(X, y)


def test_checkpoint_missing_or_foreign_file(base, tmp_path):
    missing = TrainingCheckpoint(tmp_path / "none.ckpt", resume=True)
    with pytest.raises(FileNotFoundError, match="no training checkpoint .*none.ckpt"):
        pretrainer(max_epochs=1, callbacks=[missing]).fit(*base)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt' is not a readable training"):
        pretrainer(max_epochs=1, callbacks=[TrainingCheckpoint(junk, resume=True)]).fit(
            *base
        )


@pytest.mark.parametrize("damage", ["drop_optimizer", "bad_module_state"])
def test_a_damaged_checkpoint_is_a_value_error_naming_it(base, tmp_path, damage):
    # a file in the checkpoint format whose content is incomplete or does not
    # fit the network: a ValueError naming the file, not a KeyError/RuntimeError
    path = tmp_path / "run.ckpt"
    pretrainer(max_epochs=1, callbacks=[TrainingCheckpoint(path)]).fit(*base)
    state = torch.load(path, weights_only=True)
    if damage == "drop_optimizer":
        del state["optimizer"]
        match = "run.ckpt' is a damaged training checkpoint: it lacks optimizer"
    else:
        state["optimizer"] = {"state": {}, "param_groups": []}
        match = "run.ckpt' is a damaged training checkpoint \\(ValueError"
    torch.save(state, path)
    resume = TrainingCheckpoint(path, resume=True)
    with pytest.raises(ValueError, match=match):
        pretrainer(max_epochs=2, callbacks=[resume]).fit(*base)
