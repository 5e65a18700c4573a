"""Tests for skfewshot.training._docstrings: one source for shared docs."""

import pytest

from skfewshot.training import (
    ProtoNetMetaTrainer,
    SupervisedPretrainer,
)


def test_shared_parameters_are_documented_once_with_their_own_defaults():
    pretrain, proto = SupervisedPretrainer.__doc__, ProtoNetMetaTrainer.__doc__
    assert "{" + "verbose}" not in pretrain and "{" + "module}" not in proto
    assert "    weight_decay : float, default=0.0005\n" in pretrain
    assert "    weight_decay : float, default=0.0\n" in proto
    optimizer = '    optimizer : {"sgd", "adam", "adamw"} or torch optimizer class, '
    assert optimizer + 'default="adam"\n' in proto
    shared = "L2 penalty of the optimizer."
    assert shared in pretrain and shared in proto
    assert "    module : torch.nn.Module\n" in pretrain  # required: no default


def test_unknown_placeholder_fails_at_class_definition():
    from skfewshot.training._docstrings import _fill_shared_docs

    with pytest.raises(KeyError, match=r"placeholder \{max_epoch\}, which names"):

        @_fill_shared_docs
        class Trainer:
            """Parameters
            ----------
            {max_epoch}
            """

            def __init__(self, max_epochs=3):
                pass
