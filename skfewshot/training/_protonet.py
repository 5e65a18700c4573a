"""Episodic meta-training with the prototypical-network loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from skorch import NeuralNet
from torch.nn import functional as F

from .._episodes import EPISODE_CONSTRAINTS, EPISODE_DEFAULTS, EpisodeSampler
from ._base import _BaseTrainer, _TrainerNetMixin
from ._docstrings import _fill_shared_docs
from ._heads import BackboneWithHead, PrototypeHead

__all__ = ["ProtoNetMetaTrainer"]


class _EpisodeBatchSampler(torch.utils.data.Sampler):
    """A DataLoader batch sampler whose every batch is one N-way K-shot episode.

    Each batch is the support indices followed by the query indices, as
    :class:`~skfewshot._episodes.EpisodeSampler` draws them; ``n_episodes``
    batches per pass. The random state advances from one pass (epoch) to the
    next, so every epoch sees new episodes, reproducibly.
    """

    def __init__(
        self, y, n_way, n_shot, n_query, n_episodes, random_state, groups=None
    ):
        # the trainer's _check_targets has warned of classes left out, once
        self.sampler = EpisodeSampler(
            y,
            n_way,
            n_shot,
            n_query,
            groups=groups,
            within_groups=groups is not None,
            warn=False,
        )
        self.n_episodes = n_episodes
        self.rng = check_random_state(random_state)

    def __len__(self):
        return self.n_episodes

    def __iter__(self):
        for _ in range(self.n_episodes):
            support, query = self.sampler.sample(self.rng)
            yield np.concatenate([support, query]).tolist()


class _EpisodicNet(_TrainerNetMixin, NeuralNet):
    """A skorch net whose batches are episodes and whose loss is ProtoNet's.

    The module returns features; the first ``n_support`` rows of a batch are
    the support set. ``logits_and_targets`` averages the support features of
    each class into prototypes, asks the module's head for the query logits
    against them, and maps the query labels to episode-local targets.
    """

    def __init__(self, *args, n_support, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_support = n_support

    def logits_and_targets(self, y_pred, y_true):
        s = self.n_support
        classes, codes = torch.unique(y_true[:s], return_inverse=True)
        one_hot = F.one_hot(codes, len(classes)).T.to(y_pred.dtype)
        prototypes = (one_hot @ y_pred[:s]) / one_hot.sum(dim=1, keepdim=True)
        logits = self.module_.head(y_pred[s:], prototypes)
        return logits, torch.searchsorted(classes, y_true[s:])


@_fill_shared_docs
class ProtoNetMetaTrainer(_BaseTrainer):
    """Meta-train a backbone with prototypical networks on base-class episodes.

    Every training batch is one N-way K-shot episode drawn from ``(X, y)``
    (with ``within_groups``, from the classes of one group of ``fit``'s
    ``groups``, as the test episodes of a within-alphabet benchmark are): the
    support features of each class are averaged into a prototype, and the
    queries are classified by a softmax over their distances to the prototypes
    (Snell et al., 2017), with cross-entropy on the queries. The training loop
    is a skorch :class:`~skorch.NeuralNet` whose ``iterator_train__batch_sampler``
    yields the episodes; the trained copy of ``module`` is ``backbone_``.

    Parameters
    ----------
    {module}
    n_way : int, default=5
        Classes per training episode. Training with more ways than the test
        episodes often helps (Snell et al. trained 60-way for Omniglot).
    n_shot : int, default=1
        Support samples per class per episode. The default is the shot of
        :class:`~skfewshot.model_selection.EpisodicSplit` and
        :func:`~skfewshot.model_selection.evaluate_episodes`: Snell et al.
        found training with the shot of the test episodes works best.
    n_query : int, default=15
        Query samples per class per episode.
    episodes_per_epoch : int, default=100
        Episodes (optimizer steps) per epoch.
    {max_epochs}
    {lr}
    {optimizer}
    {weight_decay}
    {lr_schedule}
    metric : {"euclidean", "cosine"}, default="euclidean"
        How queries are scored against the prototypes (the ``metric`` of
        :class:`~skfewshot.PrototypeClassifier`): ``"euclidean"``, minus the
        squared Euclidean distances; ``"cosine"``, a learnt scale (starting
        at 10) times the cosine similarities.
    within_groups : bool, default=False
        Draw all classes of a training episode from one group of the
        ``groups`` that ``fit`` then needs (one per sample, e.g. the
        alphabet of each character), the group drawn uniformly, as
        :class:`~skfewshot.model_selection.EpisodicSplit` draws
        ``within_groups`` episodes. Such episodes hold similar classes (one
        script), as the within-alphabet test episodes of Omniglot do. Classes
        of groups with fewer than ``n_way`` classes (with enough samples) are
        never drawn (a warning says how many). With rotated classes, each
        rotation of an alphabet as a group of its own measured better on
        Omniglot than the alphabet's four orientations mixed (as
        :func:`~skfewshot.datasets.augment_rotations` repeats the groups):
        for ``X_rot, y_rot, g = augment_rotations(X, y, alphabet_codes)``,
        ``groups = g * 4 + np.repeat(np.arange(4), len(X))`` (its four
        blocks are the rotations).
    {augment}
    {device}
    {callbacks}
    {verbose}
    {random_state}

    Attributes
    ----------
    {backbone_}
    {classes_}
    {n_features_out_}
    history_ : skorch.history.History
        Per-epoch records: ``train_loss`` and ``train_acc`` (query loss and
        accuracy averaged over the epoch's episodes), ``dur``, and whatever the
        callbacks add.
    net_ : skorch.NeuralNet
        The trained net; ``net_.module_.backbone`` is the backbone it trained.
    {n_features_in_}

    See Also
    --------
    SupervisedPretrainer : Plain classification pretraining instead.
    EpisodicValidation : Few-shot accuracy on held-out classes at every epoch.

    References
    ----------
    .. [1] J. Snell, K. Swersky, R. Zemel, "Prototypical Networks for Few-shot
       Learning", NeurIPS 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot.models import Conv4
    >>> from skfewshot.training import ProtoNetMetaTrainer
    >>> rng = np.random.RandomState(0)
    >>> X = rng.rand(60, 1, 16, 16).astype(np.float32)
    >>> y = np.repeat(np.arange(6), 10)
    >>> trainer = ProtoNetMetaTrainer(
    ...     Conv4(hidden=8), n_way=3, n_shot=2, n_query=3, episodes_per_epoch=5,
    ...     max_epochs=2, verbose=0, random_state=0).fit(X, y)
    >>> trainer.net_.history[-1, "train_batch_count"]
    5
    >>> trainer.backbone_.training
    False
    """

    _parameter_constraints: dict = {
        **_BaseTrainer._parameter_constraints,
        "n_way": EPISODE_CONSTRAINTS["n_way"],
        "n_shot": EPISODE_CONSTRAINTS["n_shot"],
        "n_query": EPISODE_CONSTRAINTS["n_query"],
        "episodes_per_epoch": EPISODE_CONSTRAINTS["n_episodes"],
        "metric": [StrOptions({"euclidean", "cosine"})],
        "within_groups": ["boolean"],
    }

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        n_way: int = EPISODE_DEFAULTS["n_way"],
        n_shot: int = EPISODE_DEFAULTS["n_shot"],
        n_query: int = EPISODE_DEFAULTS["n_query"],
        episodes_per_epoch: int = 100,
        max_epochs: int = 100,
        lr: float = 1e-3,
        optimizer: str | type[torch.optim.Optimizer] = "adam",
        weight_decay: float = 0.0,
        lr_schedule: str | None = "cosine",
        metric: str = "euclidean",
        within_groups: bool = False,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: str | torch.device = "auto",
        callbacks: Sequence | None = None,
        verbose: int = 1,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.module = module
        self.n_way = n_way
        self.n_shot = n_shot
        self.n_query = n_query
        self.episodes_per_epoch = episodes_per_epoch
        self.max_epochs = max_epochs
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.metric = metric
        self.within_groups = within_groups
        self.augment = augment
        self.device = device
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state

    def _uses_groups(self):
        return self.within_groups

    def _check_targets(self, y, groups=None):
        # fails early, naming how many classes (in a group) have enough
        # samples, and warns once of classes never drawn
        EpisodeSampler(
            y,
            self.n_way,
            self.n_shot,
            self.n_query,
            groups=groups,
            within_groups=groups is not None,
        )

    def _batches_per_epoch(self):
        return self.episodes_per_epoch

    def _make_module(self, backbone, n_features, n_classes):
        head = PrototypeHead(self.metric)
        return BackboneWithHead(backbone, head, apply_head=False)

    def _checkpoint_settings(self):
        # off, it changes nothing: a checkpoint of an older release resumes
        settings = super()._checkpoint_settings()
        if not self.within_groups:
            settings.pop("within_groups", None)
        return settings

    def _make_net(self, module, y_encoded, seed, common, groups=None):
        episodes = _EpisodeBatchSampler(
            y_encoded,
            self.n_way,
            self.n_shot,
            self.n_query,
            self.episodes_per_epoch,
            seed,
            groups,
        )
        return _EpisodicNet(
            module,
            n_support=self.n_way * self.n_shot,
            train_split=None,  # validation is episodic: see EpisodicValidation
            iterator_train__batch_sampler=episodes,
            # DataLoader accepts a batch_sampler only with its default batch_size
            iterator_train__batch_size=1,
            **common,
        )
