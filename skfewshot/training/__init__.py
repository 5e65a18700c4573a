"""Backbone training as scikit-learn estimators built on skorch.

Two ways to obtain a feature extractor from labelled base classes:
:class:`SupervisedPretrainer` (an ordinary classifier, the first step of the
fine-tuning family) and :class:`ProtoNetMetaTrainer` (episodic meta-training).
Both produce a plain ``torch.nn.Module`` as ``backbone_``, to wrap with
:class:`skfewshot.BackboneTransformer`; :class:`EpisodicValidation` measures
few-shot accuracy on held-out classes during training.
"""

from ._callbacks import EpisodicValidation
from ._pretrain import SupervisedPretrainer
from ._protonet import ProtoNetMetaTrainer

__all__ = ["EpisodicValidation", "ProtoNetMetaTrainer", "SupervisedPretrainer"]
