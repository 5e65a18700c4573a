"""Backbone training as scikit-learn estimators built on skorch.

Two ways to obtain a feature extractor from labelled base classes:
:class:`SupervisedPretrainer` (an ordinary classifier, the first step of the
fine-tuning family) and :class:`ProtoNetMetaTrainer` (episodic meta-training).
Both produce a plain ``torch.nn.Module`` as ``backbone_``, to wrap with
:class:`skfewshot.BackboneTransformer`; :class:`EpisodicValidation` measures
few-shot accuracy on held-out classes during training, and
:class:`TrainingCheckpoint` saves a resumable state after every epoch.
:class:`TextSupervisedPretrainer` and :class:`TextProtoNetMetaTrainer` do the
same on texts, training a sentence-transformers model or a
:class:`TextEmbedder` (a Hugging Face model with mean pooling) that
:class:`skfewshot.text.SentenceEncoder` then wraps.
"""

from ._callbacks import EpisodicValidation, TrainingCheckpoint
from ._pretrain import SupervisedPretrainer
from ._protonet import ProtoNetMetaTrainer
from ._text import TextEmbedder, TextProtoNetMetaTrainer, TextSupervisedPretrainer

__all__ = [
    "EpisodicValidation",
    "ProtoNetMetaTrainer",
    "SupervisedPretrainer",
    "TextEmbedder",
    "TextProtoNetMetaTrainer",
    "TextSupervisedPretrainer",
    "TrainingCheckpoint",
]
