"""Tests for skfewshot.training._callbacks: EpisodicValidation, TrainingCheckpoint."""

import pathlib
import re

import numpy as np
import pytest
import torch
from _training_testing import (
    CtrlC,
    episodic_validation,
    interrupted_run,
    pretrainer,
    protonet,
    resumed_run,
    same_state,
)
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, Checkpoint, EarlyStopping

from skfewshot._feature_cache import FEATURE_CACHE
from skfewshot.augment import RandomAffine
from skfewshot.backbone import BackboneTransformer
from skfewshot.model_selection import evaluate_episodes
from skfewshot.models import Conv4
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


@pytest.mark.parametrize("make", [pretrainer, protonet], ids=["pretrain", "proto"])
def test_checkpoint_resume_equals_an_uninterrupted_run(make, base, novel, tmp_path):
    path = tmp_path / "run.ckpt"
    validation = episodic_validation(novel)
    full = make(max_epochs=3, callbacks=[validation]).fit(*base)
    # Ctrl-C during the third epoch: the checkpoint of the second is on disk
    interrupted = make(
        max_epochs=3, callbacks=[validation, TrainingCheckpoint(path), CtrlC(3)]
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
    interrupted_run(pretrainer, base, path, settings=settings)

    def resume(settings, X, y):
        resumed_run(pretrainer, (X, y), path, settings=settings)

    with pytest.raises(ValueError, match=r"written with lr=0.05, this run has lr=0.1"):
        resume({**settings, "lr": 0.1}, *base)
    with pytest.raises(ValueError, match=r"written with seed=None, this run has seed"):
        resume({**settings, "seed": 1}, *base)
    X, y = base
    with pytest.raises(ValueError, match="written for other training data"):
        resume(settings, X[::-1], y[::-1])
    with pytest.raises(ValueError, match="trainer='SupervisedPretrainer', this run"):
        resumed_run(protonet, base, path, settings=settings)
    other = "another network .parameter 'backbone.*: .* there, .* here"

    def narrower(**params):  # the same trainer around another network
        return pretrainer(**params).set_params(module=Conv4(hidden=4))

    with pytest.raises(ValueError, match=other):
        resumed_run(narrower, base, path, settings=settings)


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
    interrupted_run(pretrainer, base, path)
    state = torch.load(path, weights_only=True)
    if damage == "drop_optimizer":
        del state["optimizer"]
        match = "run.ckpt' is a damaged training checkpoint: it lacks optimizer"
    else:
        state["optimizer"] = {"state": {}, "param_groups": []}
        match = "run.ckpt' is a damaged training checkpoint \\(ValueError"
    torch.save(state, path)
    with pytest.raises(ValueError, match=match):
        resumed_run(pretrainer, base, path)


# a parameter the interrupted run had, another value for it, and the value
# the checkpoint holds as the message shows it
OTHER_PRETRAINER_PARAMS = [
    ("lr", 0.5, "0.05"),
    ("weight_decay", 0.1, "0.0005"),
    ("batch_size", 7, "32"),
    ("max_epochs", 3, "2"),  # the cosine schedule spans max_epochs
    ("optimizer", "adam", "'sgd'"),  # was refused as a "damaged" file
    ("lr_schedule", None, "'cosine'"),  # idem
    ("optimizer", torch.optim.SGD, "'sgd'"),
    ("head", "cosine", "'linear'"),
    ("random_state", 1, "0"),
    ("augment", RandomAffine(degrees=10), "None"),
    ("rotation_loss_weight", 0.5, "0.0"),
]
OTHER_PROTONET_PARAMS = [
    ("n_way", 3, "5"),
    ("n_shot", 2, "1"),
    ("n_query", 3, "5"),
    ("episodes_per_epoch", 4, "8"),
    ("metric", "cosine", "'euclidean'"),
    ("lr", 0.01, "0.001"),
    ("augment", RandomAffine(degrees=10), "None"),
]


@pytest.mark.parametrize(
    "make, others",
    [(pretrainer, OTHER_PRETRAINER_PARAMS), (protonet, OTHER_PROTONET_PARAMS)],
    ids=["pretrain", "proto"],
)
def test_checkpoint_refuses_other_trainer_parameters(make, others, base, tmp_path):
    # the saved optimizer state and schedule would silently override the new
    # values (or clash with them): the result would equal neither run
    path = tmp_path / "run.ckpt"
    interrupted_run(make, base, path)
    for name, value, saved in others:
        match = re.escape(f"written with {name}={saved}, this run has {name}=")
        with pytest.raises(ValueError, match=match):
            resumed_run(make, base, path, **{name: value})
    resumed = resumed_run(make, base, path)  # the same parameters resume
    assert dict(resumed.net_.callbacks_)["TrainingCheckpoint"].resumed_epochs_ == 1


def test_checkpoint_records_the_settings_that_shape_the_training(base, tmp_path):
    path = tmp_path / "run.ckpt"
    trainer = pretrainer(
        max_epochs=1, optimizer=torch.optim.Adam, callbacks=[TrainingCheckpoint(path)]
    ).fit(*base)
    recorded = dict(trainer.net_.callbacks_)["TrainingCheckpoint"].trainer_settings_
    assert recorded == {
        "trainer": "SupervisedPretrainer",
        "augment": None,
        "batch_size": 32,
        "head": "linear",
        "lr": 0.05,
        "lr_schedule": "cosine",
        "max_epochs": 1,
        "mixup_alpha": 0.0,
        "optimizer": "torch.optim.adam.Adam",
        "random_state": 0,
        "rotation_loss_weight": 0.0,
        "train_split": None,
        "weight_decay": 0.0005,
        # off: contrastive_temperature, the teacher and its distillation
        "contrastive_loss_weight": 0.0,
    }
    assert torch.load(path, weights_only=True)["trainer_settings"] == recorded
    trainer = protonet(max_epochs=1, callbacks=[TrainingCheckpoint(path)]).fit(*base)
    recorded = dict(trainer.net_.callbacks_)["TrainingCheckpoint"].trainer_settings_
    assert set(recorded) == {
        "trainer",
        "n_way",
        "n_shot",
        "n_query",
        "episodes_per_epoch",
        "max_epochs",
        "lr",
        "optimizer",
        "weight_decay",
        "lr_schedule",
        "metric",
        "augment",
        "random_state",
    }


def test_a_checkpoint_older_than_the_trainer_settings_is_refused(base, tmp_path):
    path = tmp_path / "run.ckpt"
    interrupted_run(pretrainer, base, path)
    state = torch.load(path, weights_only=True)
    del state["trainer_settings"]  # as an older skfewshot wrote it
    torch.save(state, path)
    with pytest.raises(ValueError, match="written by an older skfewshot, which did"):
        resumed_run(pretrainer, base, path)


class _NoEpoch(Callback):
    def on_epoch_begin(self, net, **kwargs):
        raise AssertionError("an epoch began")


def test_checkpoint_settings_are_plain_data_or_refused_before_training(base, tmp_path):
    # numpy values are saved as Python ones: the checkpoint can be read back
    path = tmp_path / "run.ckpt"
    settings = {"lr": np.float64(0.1), "classes": np.arange(3), "n": np.int64(2)}
    interrupted_run(pretrainer, base, path, settings=settings)
    state = torch.load(path, weights_only=True)
    assert state["settings"] == {"lr": 0.1, "classes": [0, 1, 2], "n": 2}
    resumed = resumed_run(pretrainer, base, path, settings=settings)
    assert dict(resumed.net_.callbacks_)["TrainingCheckpoint"].resumed_epochs_ == 1
    # anything else could never be read back: refused before the first epoch
    for bad in [pathlib.Path("/data/x"), {"a": object()}, {1, 2}]:
        checkpoint = TrainingCheckpoint(tmp_path / "new.ckpt", settings={"data": bad})
        with pytest.raises(TypeError, match=r"settings\['data'\] is "):
            pretrainer(callbacks=[_NoEpoch(), checkpoint]).fit(*base)
    assert not (tmp_path / "new.ckpt").exists()
    with pytest.raises(TypeError, match="settings must be a dict or None, got list"):
        pretrainer(callbacks=[TrainingCheckpoint(path, settings=[1])]).fit(*base)


def test_a_missing_checkpoint_folder_fails_before_training(base, tmp_path):
    path = tmp_path / "no_such_folder" / "run.ckpt"
    checkpoint = TrainingCheckpoint(path)
    with pytest.raises(FileNotFoundError, match="no_such_folder/run.ckpt'.*its folder"):
        pretrainer(callbacks=[_NoEpoch(), checkpoint]).fit(*base)
    (tmp_path / "file").write_text("")
    checkpoint = TrainingCheckpoint(tmp_path / "file" / "run.ckpt", resume=True)
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        pretrainer(callbacks=[_NoEpoch(), checkpoint]).fit(*base)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        pretrainer(callbacks=[_NoEpoch(), TrainingCheckpoint(tmp_path)]).fit(*base)
