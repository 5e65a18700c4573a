"""Tests for skfewshot.training._pretrain: SupervisedPretrainer."""

from _training_testing import (
    pretrainer,
)

from skfewshot.training._heads import CosineHead


def test_cosine_head_is_baseline_plus_plus(base):
    trainer = pretrainer(head="cosine", max_epochs=1).fit(*base)
    head = trainer.net_.module_.head
    assert isinstance(head, CosineHead)
    assert head.weight.shape == (5, 8)
    # the scale is learnt: it moved away from its initial value of 10
    assert head.scale.item() != 10.0


def test_verbose_prints_the_epoch_table(base, capsys):
    pretrainer(max_epochs=1, verbose=1).fit(*base)
    out = capsys.readouterr().out
    assert "train_acc" in out and "train_loss" in out


def test_internal_validation_split(base):
    from skorch.dataset import ValidSplit

    trainer = pretrainer(max_epochs=1, train_split=ValidSplit(4, stratified=True)).fit(
        *base
    )
    assert 0.0 <= trainer.history_[-1, "valid_acc"] <= 1.0
