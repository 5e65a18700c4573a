"""Training heads: what sits on top of the backbone while it trains (private).

The trainers wrap the user's backbone and one of these heads in a module whose
``backbone`` attribute is the backbone itself. That attribute is the convention
the trainers and :class:`~skfewshot.training.EpisodicValidation` rely on to
reach the backbone inside a skorch net (``net.module_.backbone``); the head is
dropped after training.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Initial inverse temperature of the cosine logits (learnable).
DEFAULT_SCALE = 10.0


def cosine_logits(x, weight, scale):
    """``scale * cos(x_i, weight_c)`` for every row ``i`` and class ``c``."""
    return scale * F.normalize(x, dim=1) @ F.normalize(weight, dim=1).T


def squared_euclidean_logits(x, centers):
    """``-||x_i - centers_c||^2`` for every row ``i`` and class ``c``."""
    return -torch.cdist(x, centers).pow(2)


class CosineHead(nn.Module):
    """Baseline++ classifier: scaled cosine similarity to one weight per class.

    The scale (inverse temperature) is learnt, starting at ``DEFAULT_SCALE``.
    """

    def __init__(self, in_features, n_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear's init
        self.scale = nn.Parameter(torch.tensor(DEFAULT_SCALE))

    def forward(self, x):
        return cosine_logits(x, self.weight, self.scale)


class PrototypeHead(nn.Module):
    """Prototypical-network logits of queries against class prototypes.

    ``metric="euclidean"``: minus the squared Euclidean distance (Snell et
    al., 2017); ``"cosine"``: a learnt scale times the cosine similarity.
    """

    def __init__(self, metric):
        super().__init__()
        self.metric = metric
        if metric == "cosine":
            self.scale = nn.Parameter(torch.tensor(DEFAULT_SCALE))

    def forward(self, queries, prototypes):
        if self.metric == "cosine":
            return cosine_logits(queries, prototypes, self.scale)
        return squared_euclidean_logits(queries, prototypes)


def make_classifier_head(kind, in_features, n_classes):
    """``"linear"`` -> ``nn.Linear``; ``"cosine"`` -> :class:`CosineHead`."""
    if kind == "cosine":
        return CosineHead(in_features, n_classes)
    return nn.Linear(in_features, n_classes)


#: Rotations of the auxiliary rotation-prediction task: k * 90 degrees, k < 4.
N_ROTATIONS = 4


class BackboneWithHead(nn.Module):
    """``forward(x) = head(backbone(x))``; ``apply_head=False`` returns features.

    The episodic trainer keeps ``apply_head=False``: its head compares query
    features with prototypes inside the loss, not inside ``forward``.
    ``rotation_head``: an extra head on the same features (the auxiliary
    rotation-prediction task of the supervised pretrainer), and
    ``projection_head`` another (its contrastive loss's projection), used by
    the losses only; ``None`` adds nothing to the module or its
    ``state_dict``.
    """

    def __init__(
        self, backbone, head, apply_head=True, rotation_head=None, projection_head=None
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.apply_head = apply_head
        self.rotation_head = rotation_head
        self.projection_head = projection_head

    def forward(self, x):
        features = self.backbone(x)
        return self.head(features) if self.apply_head else features
