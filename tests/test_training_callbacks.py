"""Tests for skfewshot.training._callbacks: EpisodicValidation."""

import pytest
import torch
from _training_testing import (
    episodic_validation,
    pretrainer,
    protonet,
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
