"""Supervised pretraining: the first step of the fine-tuning family."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from skorch import NeuralNetClassifier

from ._base import _BaseTrainer, _TrainerNetMixin
from ._docstrings import _fill_shared_docs
from ._heads import BackboneWithHead, make_classifier_head

__all__ = ["SupervisedPretrainer"]


class _PretrainNet(_TrainerNetMixin, NeuralNetClassifier):
    """``NeuralNetClassifier`` with per-batch augmentation and train accuracy."""


@_fill_shared_docs
class SupervisedPretrainer(_BaseTrainer):
    """Pretrain a backbone as an ordinary classifier over all base classes.

    A copy of ``module`` plus a classification head is trained with
    cross-entropy on ``(X, y)``; the head is then dropped and the trained copy
    is ``backbone_``, ready for :class:`~skfewshot.BackboneTransformer` and a
    few-shot head on new classes (Chen et al., 2019; Tian et al., 2020). The
    training loop is skorch's :class:`~skorch.NeuralNetClassifier`: its
    callbacks (progress bar, learning-rate schedules, checkpoints, early
    stopping) go in ``callbacks`` and the net is kept as ``net_``.

    Parameters
    ----------
    {module}
    head : {"linear", "cosine"}, default="linear"
        ``"linear"``: a linear layer (the "Baseline" of Chen et al.).
        ``"cosine"``: a learnt scale times the cosine similarity between the
        features and one weight vector per class ("Baseline++").
    {max_epochs}
    {lr}
    batch_size : int, default=64
        Training mini-batch size.
    {optimizer}
    {weight_decay}
    {lr_schedule}
    {augment}
    train_split : callable or None, default=None
        skorch's internal validation split, e.g. ``skorch.dataset.ValidSplit(
        0.1, stratified=True)``, which adds ``valid_loss`` and ``valid_acc`` to
        the history. ``None`` trains on all the data. To validate few-shot
        accuracy on held-out classes, use :class:`EpisodicValidation`.
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
        Per-epoch records: ``train_loss``, ``train_acc``, ``dur``, and whatever
        the callbacks add.
    net_ : skorch.NeuralNetClassifier
        The trained net (backbone + head); ``net_.module_.backbone`` is the
        backbone it trained.
    {n_features_in_}

    See Also
    --------
    ProtoNetMetaTrainer : Episodic meta-training instead of plain classification.
    EpisodicValidation : Few-shot accuracy on held-out classes at every epoch.

    References
    ----------
    .. [1] W.-Y. Chen, Y.-C. Liu, Z. Kira, Y.-C. F. Wang, J.-B. Huang, "A Closer
       Look at Few-shot Classification", ICLR 2019.
    .. [2] Y. Tian, Y. Wang, D. Krishnan, J. B. Tenenbaum, P. Isola, "Rethinking
       Few-Shot Image Classification: a Good Embedding Is All You Need?",
       ECCV 2020.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skfewshot.models import Conv4
    >>> from skfewshot.training import SupervisedPretrainer
    >>> rng = np.random.RandomState(0)
    >>> X = rng.rand(40, 1, 16, 16).astype(np.float32)
    >>> y = np.repeat(np.arange(4), 10)
    >>> trainer = SupervisedPretrainer(Conv4(hidden=8), head="cosine",
    ...                                max_epochs=2, verbose=0,
    ...                                random_state=0).fit(X, y)
    >>> trainer.backbone_(torch.as_tensor(X[:3])).shape
    torch.Size([3, 8])
    >>> len(trainer.history_), trainer.n_features_out_
    (2, 8)
    """

    _parameter_constraints: dict = {
        **_BaseTrainer._parameter_constraints,
        "head": [StrOptions({"linear", "cosine"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "train_split": [callable, None],
    }

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        head: str = "linear",
        max_epochs: int = 100,
        lr: float = 0.05,
        batch_size: int = 64,
        optimizer: str | type[torch.optim.Optimizer] = "sgd",
        weight_decay: float = 5e-4,
        lr_schedule: str | None = "cosine",
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        train_split: Callable | None = None,
        device: str | torch.device = "auto",
        callbacks: Sequence | None = None,
        verbose: int = 1,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.module = module
        self.head = head
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.augment = augment
        self.train_split = train_split
        self.device = device
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state

    def _make_module(self, backbone, n_features, n_classes):
        head = make_classifier_head(self.head, n_features, n_classes)
        return BackboneWithHead(backbone, head)

    def _make_net(self, module, y_encoded, seed, common):
        return _PretrainNet(
            module,
            batch_size=self.batch_size,
            train_split=self.train_split,
            iterator_train__shuffle=True,
            **common,
        )
