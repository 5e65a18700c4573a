"""Supervised pretraining: the first step of the fine-tuning family."""

from __future__ import annotations

from numbers import Integral

from sklearn.utils._param_validation import Interval, StrOptions
from skorch import NeuralNetClassifier

from ._base import _BaseTrainer, _TrainerNetMixin
from ._heads import BackboneWithHead, make_classifier_head

__all__ = ["SupervisedPretrainer"]


class _PretrainNet(_TrainerNetMixin, NeuralNetClassifier):
    """``NeuralNetClassifier`` with per-batch augmentation and train accuracy."""


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
    module : torch.nn.Module
        The backbone, mapping a batch of inputs to ``(batch, n_features)``.
        It is copied, never modified; training starts from its current weights.
    head : {"linear", "cosine"}, default="linear"
        ``"linear"``: a linear layer (the "Baseline" of Chen et al.).
        ``"cosine"``: a learnt scale times the cosine similarity between the
        features and one weight vector per class ("Baseline++").
    max_epochs : int, default=100
        Passes over the training data.
    lr : float, default=0.05
        Initial learning rate.
    batch_size : int, default=64
        Training mini-batch size.
    optimizer : {"sgd", "adam", "adamw"} or torch optimizer class, default="sgd"
        ``"sgd"`` uses Nesterov momentum 0.9. A class gets ``lr`` and
        ``weight_decay`` only.
    weight_decay : float, default=5e-4
        L2 penalty of the optimizer.
    lr_schedule : {"cosine"} or None, default="cosine"
        ``"cosine"`` anneals the learning rate to 0 over ``max_epochs`` (a
        skorch ``LRScheduler`` named ``"lr_scheduler"``). Use ``None`` when
        passing your own scheduler in ``callbacks``.
    augment : callable or None, default=None
        ``augment(X_batch) -> X_batch`` applied to every training batch (a float
        tensor already on the training device), e.g. random shifts or
        rotations. Draw its randomness from torch's global generator (``torch.
        rand`` and friends): ``fit`` seeds it from ``random_state``.
    train_split : callable or None, default=None
        skorch's internal validation split, e.g. ``skorch.dataset.ValidSplit(
        0.1, stratified=True)``, which adds ``valid_loss`` and ``valid_acc`` to
        the history. ``None`` trains on all the data. To validate few-shot
        accuracy on held-out classes, use :class:`EpisodicValidation`.
    device : str or torch.device, default="auto"
        ``"auto"``: CUDA, then Apple MPS, then CPU.
    callbacks : list or None, default=None
        skorch callbacks (or ``(name, callback)`` pairs) added to the defaults,
        e.g. ``EpisodicValidation``, ``EarlyStopping``, ``Checkpoint``. They are
        copied at ``fit``; the fitted copies are in ``net_.callbacks_``.
    verbose : int, default=0
        1 prints one line per epoch; 2 adds a progress bar per epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the head initialisation, the shuffling, dropout and
        ``augment``. An int gives identical results on the CPU (GPU kernels
        may not be bitwise deterministic).

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The trained copy of ``module``, on the CPU, in eval mode. Save it with
        ``torch.save(backbone_.state_dict(), path)``. Never holds NaN/inf
        weights: if training diverges, ``fit`` warns, stops and keeps the last
        finite weights (see :meth:`fit`).
    classes_ : ndarray of shape (n_classes,)
        The base classes.
    n_features_out_ : int
        Features the backbone produces per sample.
    history_ : skorch.history.History
        Per-epoch records: ``train_loss``, ``train_acc``, ``dur``, and whatever
        the callbacks add.
    net_ : skorch.NeuralNetClassifier
        The trained net (backbone + head); ``net_.module_.backbone`` is the
        backbone it trained.
    n_features_in_ : int
        Size of the second axis of ``X`` (the channels for images).

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
    ...                                max_epochs=2, random_state=0).fit(X, y)
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
        module,
        *,
        head="linear",
        max_epochs=100,
        lr=0.05,
        batch_size=64,
        optimizer="sgd",
        weight_decay=5e-4,
        lr_schedule="cosine",
        augment=None,
        train_split=None,
        device="auto",
        callbacks=None,
        verbose=0,
        random_state=None,
    ):
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
