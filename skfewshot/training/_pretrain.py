"""Supervised pretraining: the first step of the fine-tuning family."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, Options, StrOptions
from skorch import NeuralNetClassifier
from skorch.dataset import unpack_data
from skorch.utils import to_device, to_tensor
from torch.nn import functional as F

from .._torch_utils import to_device_tensor
from ._base import _BaseTrainer, _TrainerNetMixin
from ._docstrings import _fill_shared_docs
from ._heads import N_ROTATIONS, BackboneWithHead, make_classifier_head

__all__ = ["SupervisedPretrainer"]


def _rotated_copies(X):
    """``X`` rotated by k * 90 degrees for k = 0..3, stacked, and each row's k.

    ``torch.rot90`` on the last two axes (counter-clockwise); the first
    ``len(X)`` rows are ``X`` itself.
    """
    rotated = torch.cat([torch.rot90(X, k, dims=(-2, -1)) for k in range(N_ROTATIONS)])
    k = torch.arange(N_ROTATIONS, device=X.device).repeat_interleave(len(X))
    return rotated, k


#: the values of ``mixup_alpha`` besides 0: float32 Beta(alpha, alpha) draws
#: are exact in distribution there (below, both gamma draws underflow)
_MIXUP_ALPHA_RANGE = (0.01, 1e4)


def _mixup_draw(n, alpha, device):
    """One mixup draw for a batch of ``n``: ``lam`` and a permutation.

    ``lam ~ Beta(alpha, alpha)`` folded to ``max(lam, 1 - lam)`` (so row ``i``
    of the mixed batch is mostly image ``i``; the pairs are drawn alike either
    way), a 0-d float32 tensor on the CPU, and a uniform permutation of the
    rows moved to ``device``. Both come from torch's global CPU generator
    (which every fit seeds, whatever its device; and every torch build can
    sample a Beta on the CPU). Float32 Beta draws are exact in distribution
    for ``alpha`` in the trainer's range, [0.01, 1e4]; below it both gamma
    draws underflow and ``lam`` would be 0.5, the strongest mix.
    """
    concentration = torch.tensor(float(alpha))
    lam = torch.distributions.Beta(concentration, concentration).sample()
    return torch.maximum(lam, 1 - lam), torch.randperm(n).to(device)


def _supervised_contrastive_loss(z, labels, temperature):
    """Supervised contrastive loss (Khosla et al., 2020, their L_out).

    ``z``: the projections of every view, one row each (normalised here);
    ``labels``: the row's class. Each row ``i`` is an anchor; its positives
    are the other rows of its class (its other view among them, so there is
    always one), and its loss is the mean over them of ``-log(exp(z_i . z_p /
    T) / sum_{a != i} exp(z_i . z_a / T))``; the result is the mean over the
    anchors. With one row per class and view it is SimCLR's NT-Xent.
    """
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    # -inf on the diagonal is never a positive: zero it before the product
    log_prob = log_prob.masked_fill(self_mask, 0.0)
    per_anchor = (log_prob * positives).sum(dim=1) / positives.sum(dim=1)
    return -per_anchor.mean()


#: output size of the contrastive loss's projection head (Khosla et al.'s 128)
_PROJECTION_DIM = 128


def _projection_head(n_features):
    """The contrastive loss's projection head: Linear, ReLU, Linear to 128."""
    return torch.nn.Sequential(
        torch.nn.Linear(n_features, n_features),
        torch.nn.ReLU(),
        torch.nn.Linear(n_features, _PROJECTION_DIM),
    )


def _distillation_loss(student_logits, teacher_logits, temperature):
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, batch mean.

    The ``T^2`` keeps the gradients' scale independent of ``T`` (Hinton et
    al., 2015).
    """
    return temperature**2 * F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )


def _state_digest(module):
    """SHA-256 of a module's ``state_dict``: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        value = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _frozen_copy(module):
    """A copy of ``module`` on the CPU, in eval mode, without gradients."""
    module = copy.deepcopy(module).to("cpu").eval()
    return module.requires_grad_(False)


class _PretrainNet(_TrainerNetMixin, NeuralNetClassifier):
    """``NeuralNetClassifier`` with per-batch augmentation and train accuracy,
    plus the optional mixup, rotation-prediction, contrastive and distillation
    losses.

    ``teacher``: a module of the net's own (see :func:`_frozen_copy`), moved
    to the net's device for training and back to the CPU after it (so a
    pickled net holds no device tensors of it).
    """

    # class-level defaults: a net pickled before mixup (or the contrastive
    # loss) existed has neither
    mixup_alpha = 0.0
    contrastive_loss_weight = 0.0
    contrastive_temperature = 0.1
    _mix = None  # (lam, permutation) of the batch being trained

    def __init__(
        self,
        *args,
        rotation_loss_weight=0.0,
        mixup_alpha=0.0,
        contrastive_loss_weight=0.0,
        contrastive_temperature=0.1,
        teacher=None,
        distill_weight=0.5,
        distill_temperature=4.0,
        **kwargs,
    ):
        # set before skorch's __init__: a module set later would be registered
        # as a part of the net (trained, saved, switched to train mode)
        self.teacher = teacher
        super().__init__(*args, **kwargs)
        self.rotation_loss_weight = rotation_loss_weight
        self.mixup_alpha = mixup_alpha
        self.contrastive_loss_weight = contrastive_loss_weight
        self.contrastive_temperature = contrastive_temperature
        self.distill_weight = distill_weight
        self.distill_temperature = distill_temperature

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        if self.teacher is None:
            return
        self.teacher.to(self.device).eval()
        n_classes = len(np.unique(y))
        with torch.no_grad():
            out = self.teacher(to_device_tensor(X[:2], device=self.device))
        if not isinstance(out, torch.Tensor) or out.shape != (len(X[:2]), n_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)
            raise ValueError(
                "The teacher must map a batch of inputs to base-class logits "
                f"(batch, n_classes) with n_classes={n_classes}, the classes of y; "
                f"on a batch of shape {tuple(X[:2].shape)} it returned {shape}."
            )

    def on_train_end(self, net, X=None, y=None, **kwargs):
        super().on_train_end(net, X=X, y=y, **kwargs)
        if self.teacher is not None:
            self.teacher.to("cpu")

    def train_step_single(self, batch, **fit_params):
        rotation, contrastive = self.rotation_loss_weight, self.contrastive_loss_weight
        if not (rotation or contrastive or self.mixup_alpha):
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        # on the device once: the contrastive loss augments it a second time
        raw = to_device(Xi, self.device)
        Xi = self._augmented(raw)
        if self.mixup_alpha:
            lam, order = _mixup_draw(len(Xi), self.mixup_alpha, Xi.device)
            Xi = lam * Xi + (1 - lam) * Xi[order]
            self._mix = lam, order
        module = self.module_
        n = len(Xi)
        try:
            if rotation or contrastive:
                # one forward pass over the batch, its three rotations (rotation
                # loss) and a second augmented view of it (contrastive loss)
                first, k = _rotated_copies(Xi) if rotation else (Xi, None)
                parts = [first, self._augmented(raw)] if contrastive else [first]
                features = module.backbone(torch.cat(parts))
                y_pred = module.head(features[:n])
            else:
                y_pred = self.infer(Xi, **fit_params)
            loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        finally:
            self._mix = None
        if rotation:
            rotation_loss = F.cross_entropy(module.rotation_head(features[: len(k)]), k)
            loss = loss + rotation * rotation_loss
        if contrastive:
            views = torch.cat([features[:n], features[-n:]])
            labels = to_tensor(yi, device=self.device).repeat(2)
            contrastive_loss = _supervised_contrastive_loss(
                module.projection_head(views), labels, self.contrastive_temperature
            )
            loss = loss + contrastive * contrastive_loss
        loss.backward()
        return {"loss": loss, "y_pred": y_pred}

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if training and self._mix is not None:
            lam, order = self._mix
            other = to_tensor(y_true, device=self.device)[order]
            loss = lam * loss + (1 - lam) * self.criterion_(y_pred, other)
        if not training or self.teacher is None:
            return loss
        with torch.no_grad():
            teacher_logits = self.teacher(to_device(X, self.device))
        distill = _distillation_loss(y_pred, teacher_logits, self.distill_temperature)
        return (1 - self.distill_weight) * loss + self.distill_weight * distill


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
    rotation_loss_weight : float, default=0.0
        Weight of an auxiliary rotation-prediction loss (Gidaris et al.,
        2019). When positive, every training batch (after ``augment``) is also
        rotated by 90, 180 and 270 degrees (``torch.rot90`` on the last two
        axes, so images must be square); one forward pass embeds the four
        copies, a separate 4-way linear head predicts each copy's rotation,
        and the loss is the cross-entropy of the class head on the unrotated
        images plus ``rotation_loss_weight`` times the rotation head's
        cross-entropy over the four copies. The rotation head is dropped with
        the class head. ``0.0`` trains exactly as without it.
    mixup_alpha : float, default=0.0
        Input mixup (Zhang et al., 2018). When positive, every training batch
        (after ``augment``) is mixed with a permutation of itself, ``lam * x_i
        + (1 - lam) * x_j``, with one ``lam ~ Beta(mixup_alpha, mixup_alpha)``
        per batch folded to ``max(lam, 1 - lam)``, and the class loss becomes
        ``lam * CE(y_i) + (1 - lam) * CE(y_j)``. The rotation loss, when on,
        sees the mixed images (a mix of two images turned alike is turned
        alike); a ``teacher`` gives its logits on the mixed images too.
        ``train_acc`` counts predictions of ``y_i``, the larger part of each
        mix. The draws come from torch's global CPU generator, seeded by
        ``random_state``. ``0.0`` trains exactly as without it; other values
        must lie in [0.01, 1e4] (below, float32 Beta draws underflow to the
        strongest mix instead of the weakest).
    contrastive_loss_weight : float, default=0.0
        Weight of an auxiliary supervised contrastive loss (Khosla et al.,
        2020). When positive, ``augment`` (required; it must not modify its
        input in place) draws a second view of every training batch;
        one forward pass embeds both views (and the rotations, when the
        rotation loss is on), a projection head (``Linear``, ``ReLU``,
        ``Linear`` to 128 dimensions) maps the features of both views to the
        unit sphere, and each view is pulled towards the other views of its
        class and pushed from the rest, at temperature
        ``contrastive_temperature``. The loss adds ``contrastive_loss_weight``
        times that term to the class head's cross-entropy on the first view.
        The projection head is dropped with the class head. It cannot be
        combined with ``mixup_alpha`` (a mix of two images has no one class to
        pull it towards). ``0.0`` trains exactly as without it.
    contrastive_temperature : float >= 0.01, default=0.1
        Temperature of the contrastive loss; used only when
        ``contrastive_loss_weight`` is positive. Below 0.01 the loss scales
        its gradients by more than 100 (and overflows float32 at the
        extreme), so smaller values are refused.
    teacher : SupervisedPretrainer, torch.nn.Module or None, default=None
        Born-again self-distillation (Furlanello et al., 2018; Tian et al.,
        2020): a fitted :class:`SupervisedPretrainer` trained on the same
        labels (its ``classes_`` must equal those of ``y``; its whole trained
        net, head included, gives the logits), or a module mapping a batch of
        inputs to ``(batch, n_classes)`` base-class logits in the order of
        ``np.unique(y)``. It sees the same (augmented) batch as the student,
        in eval mode, without gradients, on the training device, and the loss
        becomes ``(1 - distill_weight) * CE + distill_weight * T**2 *
        KL(softmax(teacher / T) || softmax(student / T))`` with ``T =
        distill_temperature``. The teacher is copied, never modified, and a
        clone of this trainer shares it (it is not refitted). ``None``: no
        distillation.
    distill_weight : float in [0, 1], default=0.5
        Weight of the distillation term; used only with a ``teacher``.
    distill_temperature : float > 0, default=4.0
        Softmax temperature ``T`` of the distillation term; used only with a
        ``teacher``.
    {device}
    {callbacks}
        Of the parameters a :class:`TrainingCheckpoint` records, a
        ``teacher`` is recorded by the SHA-256 of its weights;
        ``distill_weight`` and ``distill_temperature`` only with a teacher,
        ``contrastive_temperature`` only with a positive
        ``contrastive_loss_weight``.
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
    .. [3] S. Gidaris, A. Bursuc, N. Komodakis, P. Perez, M. Cord, "Boosting
       Few-Shot Visual Learning with Self-Supervision", ICCV 2019.
    .. [4] T. Furlanello, Z. C. Lipton, M. Tschannen, L. Itti, A. Anandkumar,
       "Born-Again Neural Networks", ICML 2018.
    .. [5] H. Zhang, M. Cisse, Y. N. Dauphin, D. Lopez-Paz, "mixup: Beyond
       Empirical Risk Minimization", ICLR 2018.
    .. [6] P. Khosla, P. Teterwak, A. Sarna, Y. Tian, P. Isola, A. Maschinot,
       C. Liu, D. Krishnan, "Supervised Contrastive Learning", NeurIPS 2020.

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

    A second generation with the rotation loss, distilled from the first:

    >>> student = SupervisedPretrainer(Conv4(hidden=8), rotation_loss_weight=1.0,
    ...                                teacher=trainer, max_epochs=2, verbose=0,
    ...                                random_state=0).fit(X, y)
    >>> student.backbone_(torch.as_tensor(X[:3])).shape
    torch.Size([3, 8])
    """

    _parameter_constraints: dict = {
        **_BaseTrainer._parameter_constraints,
        "head": [StrOptions({"linear", "cosine"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "train_split": [callable, None],
        "rotation_loss_weight": [Interval(Real, 0, None, closed="left")],
        "mixup_alpha": [
            Options(Real, {0.0}),
            Interval(Real, *_MIXUP_ALPHA_RANGE, closed="both"),
        ],
        # "teacher": set below the class (it names the class itself)
        "contrastive_loss_weight": [Interval(Real, 0, None, closed="left")],
        "contrastive_temperature": [Interval(Real, 0.01, None, closed="left")],
        "distill_weight": [Interval(Real, 0, 1, closed="both")],
        "distill_temperature": [Interval(Real, 0, None, closed="neither")],
    }
    # a trainer pickled before mixup (or the contrastive loss) existed has no
    # such parameter of its own
    mixup_alpha = 0.0
    contrastive_loss_weight = 0.0
    contrastive_temperature = 0.1

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
        rotation_loss_weight: float = 0.0,
        mixup_alpha: float = 0.0,
        contrastive_loss_weight: float = 0.0,
        contrastive_temperature: float = 0.1,
        teacher: SupervisedPretrainer | torch.nn.Module | None = None,
        distill_weight: float = 0.5,
        distill_temperature: float = 4.0,
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
        self.rotation_loss_weight = rotation_loss_weight
        self.mixup_alpha = mixup_alpha
        self.contrastive_loss_weight = contrastive_loss_weight
        self.contrastive_temperature = contrastive_temperature
        self.teacher = teacher
        self.distill_weight = distill_weight
        self.distill_temperature = distill_temperature
        self.device = device
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state

    def __sklearn_clone__(self):
        # clone() would refit nothing but unfit an estimator parameter: the
        # clone shares the (fitted) teacher instead, which fit never modifies
        if self.teacher is None:
            return super().__sklearn_clone__()
        twin = copy.copy(self)
        twin.teacher = None
        clone = twin.__sklearn_clone__()
        clone.teacher = self.teacher
        return clone

    def _check_fit_inputs(self, X, classes):
        if self.rotation_loss_weight and (X.ndim < 3 or X.shape[-1] != X.shape[-2]):
            raise ValueError(
                f"rotation_loss_weight={self.rotation_loss_weight} rotates the "
                "images by multiples of 90 degrees, which needs square images "
                f"(..., H, W) with H == W; X has samples of shape {X.shape[1:]}."
            )
        self._check_contrastive()
        teacher = self.teacher
        if not isinstance(teacher, SupervisedPretrainer):
            return
        if not hasattr(teacher, "net_"):
            raise NotFittedError(
                "The teacher SupervisedPretrainer is not fitted: fit it on the "
                "same (X, y) first, then pass it as teacher."
            )
        if not np.array_equal(teacher.classes_, classes):
            theirs, ours = teacher.classes_.tolist(), classes.tolist()
            at = next(
                (i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b),
                min(len(theirs), len(ours)),
            )
            raise ValueError(
                f"The teacher was fitted on {len(theirs)} classes and y has "
                f"{len(ours)}; its classes_ must equal the classes of y (its "
                "logits follow their order), but they differ at index "
                f"{at}: {theirs[at] if at < len(theirs) else 'none'!r} in the "
                f"teacher, {ours[at] if at < len(ours) else 'none'!r} in y."
            )

    def _check_contrastive(self):
        """The contrastive loss needs ``augment`` and excludes mixup."""
        weight = self.contrastive_loss_weight
        if weight and self.augment is None:
            raise ValueError(
                f"contrastive_loss_weight={weight} compares two augmented views "
                "of every image, which needs augment; it is None (both views "
                "would be the image itself)."
            )
        if weight and self.mixup_alpha:
            raise ValueError(
                f"contrastive_loss_weight={weight} and mixup_alpha="
                f"{self.mixup_alpha} cannot be combined: the contrastive loss "
                "pulls each view towards its class, and a mix of two images has "
                "no one class; set one of them to 0."
            )

    def _make_module(self, backbone, n_features, n_classes):
        head = make_classifier_head(self.head, n_features, n_classes)
        rotation_head = (
            torch.nn.Linear(n_features, N_ROTATIONS)
            if self.rotation_loss_weight
            else None
        )
        projection_head = (
            _projection_head(n_features) if self.contrastive_loss_weight else None
        )
        return BackboneWithHead(
            backbone,
            head,
            rotation_head=rotation_head,
            projection_head=projection_head,
        )

    def _teacher_module(self):
        """The teacher's module (a fitted trainer's net), or None."""
        teacher = self.teacher
        if isinstance(teacher, SupervisedPretrainer):
            return teacher.net_.module_
        return teacher

    def _make_net(self, module, y_encoded, seed, common, groups=None):
        teacher = self._teacher_module()
        teacher = None if teacher is None else _frozen_copy(teacher)
        return _PretrainNet(
            module,
            batch_size=self.batch_size,
            train_split=self.train_split,
            iterator_train__shuffle=True,
            rotation_loss_weight=self.rotation_loss_weight,
            mixup_alpha=self.mixup_alpha,
            contrastive_loss_weight=self.contrastive_loss_weight,
            contrastive_temperature=self.contrastive_temperature,
            teacher=teacher,
            distill_weight=self.distill_weight,
            distill_temperature=self.distill_temperature,
            **common,
        )

    def _checkpoint_settings(self):
        # a teacher by its weights; without one, the distillation parameters
        # change nothing, nor does the temperature without the contrastive loss
        settings = super()._checkpoint_settings()
        if self.teacher is None:
            for key in ("teacher", "distill_weight", "distill_temperature"):
                settings.pop(key, None)
        else:
            settings["teacher"] = _state_digest(self._teacher_module())
        if not self.contrastive_loss_weight:
            settings.pop("contrastive_temperature", None)
        return settings


SupervisedPretrainer._parameter_constraints["teacher"] = [
    SupervisedPretrainer,
    torch.nn.Module,
    None,
]
