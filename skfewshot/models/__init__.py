"""Few-shot backbones as plain ``torch.nn.Module`` s (architectures, no weights).

Train them with :mod:`skfewshot.training`, then wrap the trained module with
:class:`skfewshot.BackboneTransformer`.
"""

from ._conv4 import Conv4
from ._ensemble import BackboneEnsemble
from ._io import load_backbone, save_backbone
from ._resnet12 import ResNet12
from ._whitened import WhitenedBackbone

__all__ = [
    "BackboneEnsemble",
    "Conv4",
    "ResNet12",
    "WhitenedBackbone",
    "load_backbone",
    "save_backbone",
]
