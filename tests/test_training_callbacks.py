"""Tests for skfewshot.training._callbacks: EpisodicValidation, TrainingCheckpoint."""

import math
import pathlib
import re
import warnings

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

from skfewshot._episodes import LEFT_OUT_WARNING
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


def test_validation_classes_left_out_are_said_once_at_the_fit_call(base, novel):
    # said by the check at the start of training, not again at each epoch's
    # evaluation, and at the user's fit call, past skorch's frames
    X, y = novel
    keep = np.flatnonzero((y != 9) | (np.cumsum(y == 9) <= 3))  # digit 9: 3 rows
    valid = episodic_validation((X[keep], y[keep]), n_way=3)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pretrainer(max_epochs=3, callbacks=[valid]).fit(*base)
    left_out = [
        (str(w.message), w.filename)
        for w in record
        if str(w.message).startswith(LEFT_OUT_WARNING)
    ]
    message = (
        "Episodes are drawn from 4 of the 5 classes, never from the other 1: 1 "
        "has fewer than n_shot + n_query = 6 samples."
    )
    assert left_out == [(message, __file__)]


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
    with pytest.raises(ValueError, match=r"written with no seed, this run has seed=1;"):
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


@pytest.mark.parametrize(
    "damage", ["drop_optimizer", "bad_module_state", "bad_callbacks"]
)
def test_a_damaged_checkpoint_is_a_value_error_naming_it(base, tmp_path, damage):
    # a file in the checkpoint format whose content is incomplete or does not
    # fit the network: a ValueError naming the file, not a KeyError/RuntimeError
    path = tmp_path / "run.ckpt"
    interrupted_run(pretrainer, base, path)
    state = torch.load(path, weights_only=True)
    if damage == "drop_optimizer":
        del state["optimizer"]
        match = "run.ckpt' is a damaged training checkpoint: it lacks optimizer"
    elif damage == "bad_callbacks":
        state["callbacks"] = {"EarlyStopping": [1, 2]}
        match = "run.ckpt' is a damaged training checkpoint: its 'callbacks' entry"
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


def test_a_nan_setting_given_again_resumes(base, tmp_path):
    # nan != nan: the resume of a run with a nan setting was refused as if the
    # setting had been changed ("written with x=nan, this run has x=nan")
    path = tmp_path / "run.ckpt"
    settings = {"x": float("nan"), "nested": [1.0, np.float64("nan")]}
    interrupted_run(pretrainer, base, path, settings=settings)
    resumed = resumed_run(pretrainer, base, path, settings=dict(settings))
    assert dict(resumed.net_.callbacks_)["TrainingCheckpoint"].resumed_epochs_ == 1
    for other in [{"x": 1.0}, {"nested": [1.0, 2.0]}, {"nested": (1.0, math.nan)}]:
        with pytest.raises(ValueError, match="written with "):
            resumed_run(pretrainer, base, path, settings={**settings, **other})


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


def test_episodic_validation_refuses_images_of_another_shape(base, novel):
    # Conv4 embeds any size >= 16x16: 32x32 validation images of a net that
    # trains on 16x16 would give a number that means nothing
    X, y = novel
    larger = np.kron(X, np.ones((1, 1, 2, 2), dtype=X.dtype))
    valid = episodic_validation((larger, y))
    match = re.escape(
        "X_val holds inputs of shape (1, 32, 32), but the net trains on inputs "
        "of shape (1, 16, 16): the backbone embeds both"
    )
    with pytest.raises(ValueError, match=match):
        pretrainer(callbacks=[valid, _NoEpoch()]).fit(*base)


# -- TrainingCheckpoint and the callbacks that carry a state over epochs --------


def _early_stopping(**params):
    # no accuracy improves by 1: with patience=2, the run ends after epoch 3
    params = {
        "monitor": "valid_fsl_acc",
        "lower_is_better": False,
        "patience": 2,
        "threshold": 1.0,
        "threshold_mode": "abs",
        **params,
    }
    return EarlyStopping(**params)


@pytest.mark.parametrize("load_best", [False, True], ids=["last", "load_best"])
def test_checkpoint_resume_with_early_stopping_equals_an_uninterrupted_run(
    load_best, base, novel, tmp_path
):
    path = tmp_path / "run.ckpt"

    def run(*callbacks):
        stop = _early_stopping(load_best=load_best)
        callbacks = [episodic_validation(novel), stop, *callbacks]
        return pretrainer(max_epochs=5, callbacks=callbacks)

    full = run().fit(*base)
    assert len(full.history_) == 3  # ended by EarlyStopping, not max_epochs
    # Ctrl-C as epoch 3 begins: EarlyStopping has counted one miss so far,
    # and (load_best) keeps the weights of epoch 1
    with pytest.raises(KeyboardInterrupt):
        run(TrainingCheckpoint(path), CtrlC(3)).fit(*base)
    resumed = run(TrainingCheckpoint(path, resume=True)).fit(*base)
    assert dict(resumed.net_.callbacks_)["TrainingCheckpoint"].resumed_epochs_ == 2
    assert len(resumed.history_) == 3
    assert same_state(resumed.net_.module_, full.net_.module_)
    assert same_state(resumed.backbone_, full.backbone_)
    for key in ("train_loss", "valid_fsl_acc", "valid_fsl_acc_best"):
        assert resumed.history_[:, key] == full.history_[:, key]


class _StopAt(Callback):
    """Ends training at the end of epoch ``epoch``, as EarlyStopping does."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "stopper, before",
    [
        # before the checkpoint: it ends the run before the epoch is saved
        pytest.param(_early_stopping, True, id="early-stopping"),
        # after it: the epoch is saved, then the run ends
        pytest.param(lambda: _StopAt(3), False, id="stop-after-checkpoint"),
    ],
)
def test_a_run_a_callback_ended_resumes_as_ended(
    stopper, before, base, novel, tmp_path
):
    path = tmp_path / "run.ckpt"

    def run(checkpoint):
        callbacks = [episodic_validation(novel), checkpoint]
        callbacks.insert(1 if before else 2, stopper())
        return pretrainer(max_epochs=5, callbacks=callbacks)

    ended = run(TrainingCheckpoint(path)).fit(*base)
    assert len(ended.history_) == 3
    # resuming it trains no epoch: the same weights and history
    again = run(TrainingCheckpoint(path, resume=True))
    again.set_params(callbacks=[*again.callbacks, _NoEpoch()]).fit(*base)
    assert dict(again.net_.callbacks_)["TrainingCheckpoint"].resumed_epochs_ == 3
    assert len(again.history_) == 3
    assert same_state(again.net_.module_, ended.net_.module_)
    assert again.history_[:, "valid_fsl_acc"] == ended.history_[:, "valid_fsl_acc"]
    saved = torch.load(path, weights_only=True)
    assert saved["epochs"] == 3 and saved["ended"] is True


class _PoisonAt(Callback):
    """Puts a NaN into the weights during epoch ``epoch``."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history) == self.epoch:
            with torch.no_grad():
                next(net.module_.parameters()).view(-1)[0] = float("nan")


def test_a_diverged_run_keeps_its_last_finite_epoch_to_resume(base, tmp_path):
    # the divergence guard ends the run too, but the file keeps the epoch
    # before (as `skfewshot train` tells): resuming trains the diverging epoch
    # again, and warns again
    path = tmp_path / "run.ckpt"

    def run(checkpoint):
        return pretrainer(max_epochs=5, callbacks=[_PoisonAt(2), checkpoint])

    with pytest.warns(
        RuntimeWarning, match=r"non-finite training loss \(nan\) at epoch 2"
    ):
        first = run(TrainingCheckpoint(path)).fit(*base)
    saved = torch.load(path, weights_only=True)
    assert saved["epochs"] == 1 and saved["ended"] is False
    with pytest.warns(
        RuntimeWarning, match=r"non-finite training loss \(nan\) at epoch 2"
    ):
        again = run(TrainingCheckpoint(path, resume=True)).fit(*base)
    assert same_state(again.backbone_, first.backbone_)


def test_checkpoint_restores_the_random_state_of_episodic_validation(
    base, novel, tmp_path
):
    # a RandomState draws new episodes every epoch: the resumed run must go on
    # drawing where the interrupted run was, not from the start again
    path = tmp_path / "run.ckpt"

    def run(*callbacks):
        rng = np.random.RandomState(0)
        valid = episodic_validation(novel, random_state=rng)
        return pretrainer(max_epochs=3, callbacks=[valid, *callbacks])

    full = run().fit(*base)
    with pytest.raises(KeyboardInterrupt):
        run(TrainingCheckpoint(path), CtrlC(3)).fit(*base)
    resumed = run(TrainingCheckpoint(path, resume=True)).fit(*base)
    assert resumed.history_[:, "valid_fsl_acc"] == full.history_[:, "valid_fsl_acc"]
    assert same_state(resumed.net_.module_, full.net_.module_)


def test_resuming_with_episodes_of_numpy_global_random_state_warns(
    base, novel, tmp_path
):
    path = tmp_path / "run.ckpt"
    valid = episodic_validation(novel, random_state=None)
    interrupted = pretrainer(
        max_epochs=2, callbacks=[valid, TrainingCheckpoint(path), CtrlC(2)]
    )
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(*base)
    resumed = pretrainer(
        max_epochs=2, callbacks=[valid, TrainingCheckpoint(path, resume=True)]
    )
    match = (
        "the callback 'EpisodicValidation' has random_state=None, so its "
        "episodes come from numpy's global generator"
    )
    with pytest.warns(UserWarning, match=match):
        resumed.fit(*base)


def test_checkpoint_refuses_other_stateful_callbacks(base, novel, tmp_path):
    path = tmp_path / "run.ckpt"
    valid = episodic_validation(novel)

    def run(*callbacks, resume):
        checkpoint = TrainingCheckpoint(path, resume=resume)
        callbacks = [valid, *callbacks, checkpoint]
        if not resume:
            callbacks.append(CtrlC(2))
        return pretrainer(max_epochs=5, callbacks=callbacks)

    with pytest.raises(KeyboardInterrupt):
        run(_early_stopping(), resume=False).fit(*base)
    cases = [
        ([_early_stopping(patience=3)], "patience=2, this run has callbacks"),
        ([], "callbacks['EarlyStopping']='EarlyStopping', this run has no callbacks["),
        ([_early_stopping(load_best=True)], "load_best=False, this run has"),
    ]
    for callbacks, match in cases:
        with pytest.raises(ValueError, match=re.escape(match)):
            run(*callbacks, resume=True).fit(*base)
    # and the other way round: a stateful callback the interrupted run lacked
    with pytest.raises(KeyboardInterrupt):
        run(resume=False).fit(*base)
    match = "written with no callbacks['EarlyStopping'], this run has callbacks"
    with pytest.raises(ValueError, match=re.escape(match)):
        run(_early_stopping(), resume=True).fit(*base)
    assert len(run(resume=True).fit(*base).history_) == 5  # the same: resumes


def test_checkpoint_refuses_another_episodic_validation(base, novel, tmp_path):
    # the saved epochs' scores and the resumed ones must measure the same
    # thing: a resumed run that validated otherwise would mix two measures in
    # one history column (and its "_best" flags, and an EarlyStopping on it)
    path = tmp_path / "run.ckpt"
    X, y = novel

    def run(valid, resume):
        callbacks = [valid, TrainingCheckpoint(path, resume=resume)]
        return pretrainer(max_epochs=3, callbacks=callbacks + [CtrlC(2)] * (not resume))

    with pytest.raises(KeyboardInterrupt):
        run(episodic_validation(novel), resume=False).fit(*base)
    other_X = X.copy()
    other_X[0, 0, 0, 0] += 1.0
    key = "callbacks['EpisodicValidation']"
    cases = [
        ({"n_way": 3}, f"{key}.n_way=5, this run has {key}.n_way=3"),
        ({"n_shot": 2}, f"{key}.n_shot=1, this run has {key}.n_shot=2"),
        ({"n_query": 4}, f"{key}.n_query=5, this run has {key}.n_query=4"),
        ({"n_episodes": 10}, f"{key}.n_episodes=20, this run has"),
        ({"lower_is_better": True}, f"{key}.lower_is_better=False, this run"),
        ({"random_state": 1}, f"{key}.random_state=0, this run has"),
        (
            {"random_state": np.random.RandomState(0)},
            f"{key}.random_state=0, this run has {key}.random_state='RandomState'",
        ),
        ({"head": PrototypeClassifier(center=True)}, f"{key}.head=None, this run"),
        ({"name": "acc"}, f"{key}.name='valid_fsl_acc', this run has"),
    ]
    for params, match in cases:
        with pytest.raises(ValueError, match=re.escape(match)):
            run(episodic_validation(novel, **params), resume=True).fit(*base)
    for other in [(other_X, y), (X, y[::-1])]:
        with pytest.raises(ValueError, match=re.escape(f"{key}.data=")):
            run(episodic_validation(other), resume=True).fit(*base)
    # the same validation, with labels renamed, another batch size and groups
    # it does not draw within: resumes to the uninterrupted run's scores
    renamed = EpisodicValidation(
        X,
        y + 100,
        n_way=5,
        n_shot=1,
        n_query=5,
        n_episodes=20,
        batch_size=7,
        groups=(y >= 8).astype(int),
    )
    with pytest.warns(UserWarning, match="groups has no effect in evaluate_episodes"):
        resumed = run(renamed, resume=True).fit(*base)
    full = pretrainer(max_epochs=3, callbacks=[episodic_validation(novel)]).fit(*base)
    assert resumed.history_[:, "valid_fsl_acc"] == full.history_[:, "valid_fsl_acc"]


def test_checkpoint_compares_the_groups_drawn_within(base, novel, tmp_path):
    path = tmp_path / "run.ckpt"
    X, y = novel
    groups = (y >= 8).astype(int)  # {5, 6, 7} and {8, 9}

    def run(resume, **params):
        params = {"n_way": 2, "groups": groups, "within_groups": True, **params}
        callbacks = [episodic_validation(novel, **params)]
        callbacks.append(TrainingCheckpoint(path, resume=resume))
        return pretrainer(max_epochs=3, callbacks=callbacks + [CtrlC(2)] * (not resume))

    with pytest.raises(KeyboardInterrupt):
        run(False).fit(*base)
    key = "callbacks['EpisodicValidation']"
    with pytest.raises(ValueError, match=re.escape(f"{key}.data=")):
        run(True, groups=(y >= 7).astype(int)).fit(*base)  # {5, 6} and {7, 8, 9}
    match = f"{key}.within_groups=True, this run has {key}.within_groups=False"
    with pytest.raises(ValueError, match=re.escape(match)):
        run(True, within_groups=False).fit(*base)
    assert len(run(True, groups=groups + 10).fit(*base).history_) == 3


def test_heads_that_differ_past_sklearn_repr_cut_differ_in_the_checkpoint(novel):
    # sklearn cuts a long repr to about 700 characters, dropping its middle
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from skfewshot.training._callbacks import _callback_params

    def head(n_components):
        steps = [(f"s{i}", StandardScaler()) for i in range(30)]
        steps += [("pca", PCA(n_components=n_components))]
        steps += [(f"t{i}", StandardScaler()) for i in range(30)]
        return Pipeline([*steps, ("lr", LogisticRegression())])

    assert repr(head(5)) == repr(head(10))  # the cut hides the difference
    five, ten = (
        _callback_params(episodic_validation(novel, head=head(n)))["head"]
        for n in (5, 10)
    )
    assert (five["pca__n_components"], ten["pca__n_components"]) == (5, 10)
    assert five["pca"] == "sklearn.decomposition._pca.PCA"
    assert {k: v for k, v in five.items() if k != "pca__n_components"} == {
        k: v for k, v in ten.items() if k != "pca__n_components"
    }


def test_a_checkpoint_older_than_the_callback_states(base, novel, tmp_path):
    path = tmp_path / "run.ckpt"

    def run(*callbacks):
        return pretrainer(
            max_epochs=3, callbacks=[episodic_validation(novel), *callbacks]
        )

    with pytest.raises(KeyboardInterrupt):
        run(_early_stopping(), TrainingCheckpoint(path), CtrlC(2)).fit(*base)
    state = torch.load(path, weights_only=True)
    del state["callbacks"], state["ended"]  # as an older skfewshot wrote it
    torch.save(state, path)
    match = (
        "written by an older skfewshot, which did not save the state or the "
        "parameters of callbacks such as 'EpisodicValidation' (EpisodicValidation)"
    )
    with pytest.raises(ValueError, match=re.escape(match)):
        run(_early_stopping(), TrainingCheckpoint(path, resume=True)).fit(*base)
    # a run without such callbacks has nothing to miss: it resumes
    resumed = pretrainer(
        max_epochs=3, callbacks=[TrainingCheckpoint(path, resume=True)]
    ).fit(*base)
    assert len(resumed.history_) == 3


@pytest.mark.parametrize("late", ["EarlyStopping", "EpisodicValidation"])
def test_checkpoint_must_come_after_the_callbacks_it_saves(late, base, novel, tmp_path):
    # saved before them, an epoch's checkpoint would miss the score recorded
    # and the count of epochs without improvement of that epoch
    path = tmp_path / "run.ckpt"
    if late == "EarlyStopping":
        callbacks = [episodic_validation(novel), TrainingCheckpoint(path)]
        callbacks += [_early_stopping(), _NoEpoch()]
    else:
        callbacks = [TrainingCheckpoint(path), episodic_validation(novel), _NoEpoch()]
    match = f"TrainingCheckpoint comes before '{late}' in callbacks"
    with pytest.raises(ValueError, match=match):
        pretrainer(callbacks=callbacks).fit(*base)
    assert not path.exists()


def test_a_missing_checkpoint_is_not_said_to_be_removed(base, tmp_path):
    # the library never removes the file (only `skfewshot train` does, when
    # its run completes)
    missing = TrainingCheckpoint(tmp_path / "none.ckpt", resume=True)
    match = (
        r"no training checkpoint '.*none.ckpt' to resume from \(a run with "
        r"TrainingCheckpoint writes it at the end of each epoch\); train without "
        r"resume=True to start a run"
    )
    with pytest.raises(FileNotFoundError, match=match):
        pretrainer(max_epochs=1, callbacks=[missing]).fit(*base)
