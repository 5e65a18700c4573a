"""What both trainers share (private): seeding, devices, input checks, the
backbone copy and extraction, and the skorch net built around them.

A trainer is a scikit-learn estimator whose ``fit`` builds a skorch net around
a *copy* of the user's module plus a training head, trains it, and keeps the
trained copy as ``backbone_``. The subclasses say only what differs: the head,
the skorch net class, the loss and how batches are drawn.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data
from skorch.callbacks import (
    Callback,
    LRScheduler,
    PassthroughScoring,
    PrintLog,
    ProgressBar,
)
from skorch.dataset import unpack_data
from skorch.utils import to_device
from skorch.utils import to_tensor as _skorch_to_tensor

from .._episodes import _check_groups
from .._torch_utils import resolve_device, seeded_torch, to_device_tensor
from .._utils import seed_from
from ._callbacks import _setting_value

_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}

#: Name of the per-epoch training accuracy in ``history_``.
TRAIN_ACC = "train_acc"

#: Trainer parameters a TrainingCheckpoint does not record: they cannot change
#: the weights of a resumed run (its network is checked by the names and shapes
#: of its parameters, and starts from the checkpoint's weights)
_NOT_CHECKPOINTED = frozenset({"module", "callbacks", "device", "verbose"})


def _probe_backbone(backbone, X, device):
    """Run the backbone once on two samples; return its feature count.

    Turns the module's own failure on a wrong input shape into a ValueError
    that names the shape, before any training starts.
    """
    backbone.to(device)
    was_training = backbone.training
    backbone.eval()  # no batch-norm statistics are updated by the probe
    try:
        with torch.no_grad():
            out = backbone(to_device_tensor(X[:2], device=device))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(
            f"The module rejected inputs of shape {X.shape[1:]} (a batch of shape "
            f"{(min(len(X), 2),) + X.shape[1:]}): {exc}"
        ) from exc
    finally:
        backbone.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)
        raise ValueError(
            "The module must map a batch to a 2-D tensor (batch, n_features); "
            f"on inputs of shape {X.shape[1:]} it returned {shape}."
        )
    return int(out.shape[1])


class _Interrupted(BaseException):
    """Carries a KeyboardInterrupt past skorch's ``except KeyboardInterrupt``."""

    def __init__(self, interrupt):
        super().__init__(interrupt)
        self.interrupt = interrupt


@contextmanager
def _watch_sigint():
    """Yield a list that records every SIGINT (Ctrl-C) delivered meanwhile.

    The handler in place still runs (Python's default raises
    ``KeyboardInterrupt``). Handlers can be set in the main thread only; in
    other threads, or when SIGINT is ignored or has no Python handler, nothing
    is recorded (SIGINT reaches the main thread only anyway).
    """
    seen = []
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous) or threading.current_thread() is not (
        threading.main_thread()
    ):
        yield seen
        return

    def record(signum, frame):
        seen.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGINT, record)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def _all_finite(module):
    return all(
        bool(torch.isfinite(v).all())
        for v in module.state_dict().values()
        if v.is_floating_point() or v.is_complex()
    )


class _StopOnNonFinite(Callback):
    """End training at the first epoch with a non-finite loss or weights.

    The module's state (head included) is copied to the CPU as the first
    epoch begins (after any resumed state is loaded) and after every epoch
    that ends with finite batch losses and finite weights; at the first epoch
    that does not, that copy is loaded back, a ``RuntimeWarning`` names the
    epoch and the weights kept, and training ends the way skorch's
    ``EarlyStopping`` ends it (``KeyboardInterrupt`` from ``on_epoch_end``).
    It runs before the user's callbacks, so they never see the diverged
    weights.
    """

    def __init__(self, owner):
        self.owner = owner

    def on_train_begin(self, net, **kwargs):
        self._kept = None
        net._diverged = None  # what stopped the run, for skfewshot train

    def on_epoch_begin(self, net, **kwargs):
        # kept at the first epoch, after every on_train_begin: a resumed run
        # (TrainingCheckpoint) falls back to the weights it resumed from
        if self._kept is None:
            self._keep(net, len(net.history) - 1)  # the row just opened

    def _keep(self, net, epoch):
        state = net.module_.state_dict()
        self._kept = (
            epoch,
            {k: v.detach().to("cpu", copy=True) for k, v in state.items()},
        )

    def on_epoch_end(self, net, **kwargs):
        epoch = net.history[-1, "epoch"]
        losses = net.history[-1, "batches", :, "train_loss"]
        bad = [loss for loss in losses if not math.isfinite(loss)]
        if not bad and _all_finite(net.module_):
            self._keep(net, epoch)
            return
        kept_epoch, state = self._kept
        net.module_.load_state_dict(state)
        what = (
            f"non-finite training loss ({bad[0]}) at epoch {epoch}"
            if bad
            else f"non-finite weights after epoch {epoch}"
        )
        kept = (
            f"the weights of epoch {kept_epoch}, the last with a finite loss and "
            "finite weights"
            if kept_epoch
            else "the weights it started from (no epoch ended with a finite loss "
            "and finite weights)"
        )
        net._diverged = what
        warnings.warn(
            f"{self.owner}: {what}; training stopped and backbone_ holds {kept}. "
            "Lower lr (or check the inputs and the module for NaN/inf).",
            RuntimeWarning,
            stacklevel=2,
        )
        raise KeyboardInterrupt  # skorch's way for a callback to end training

    def on_train_end(self, net, **kwargs):
        self._kept = None  # the copy is not kept with the fitted net


#: The ANSI escape sequences (colours) that skorch's PrintLog writes.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (False when unsure)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


class _PrintLog(PrintLog):
    """skorch's one-line-per-epoch table, coloured only on a terminal.

    skorch colours the best scores with ANSI escape codes; written to a log
    file or a pipe they are noise, so they are dropped unless the table is
    printed to a stdout that is a terminal.
    """

    def format_row(self, row, key, color):
        text = super().format_row(row, key, color)
        if isinstance(text, str) and (
            self.sink is not print or not _is_terminal(sys.stdout)
        ):
            return _ANSI_ESCAPE.sub("", text)
        return text


class _TrainerNetMixin:
    """skorch net additions both trainers use.

    - The epoch table (``print_log``) has no colour codes unless stdout is a
      terminal.
    - ``augment``: a callable applied to each *training* batch (already on the
      net's device) before the forward pass; validation and inference see the
      raw inputs.
    - ``get_loss`` computes cross-entropy on the logits that
      :meth:`logits_and_targets` returns (the identity for plain classification,
      prototypes for episodes) and records the batch accuracy as
      ``"train_acc"``, averaged per epoch by a ``PassthroughScoring``.
    - An interrupt is not swallowed. skorch's ``partial_fit`` ends training
      quietly on any ``KeyboardInterrupt``, because that is also how a callback
      asks to stop after an epoch (``EarlyStopping``). Here only that request
      (a ``KeyboardInterrupt`` from a callback's ``on_epoch_end``, with no
      SIGINT meanwhile) ends training normally; any other ``KeyboardInterrupt``
      (Ctrl-C) propagates out of ``fit`` / ``partial_fit``, without
      ``on_train_end`` (so nothing is saved or reported as if training had
      completed).
    - A run resumed by :class:`~skfewshot.training._callbacks.TrainingCheckpoint`
      trains the epochs left to ``max_epochs``, not ``max_epochs`` more, and
      none when a callback had ended it (``_stop_requested`` tells the
      checkpoint that one did).
    """

    def __init__(self, *args, augment=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.augment = augment

    @property
    def _default_callbacks(self):
        return [
            (name, _PrintLog() if name == "print_log" else callback)
            for name, callback in super()._default_callbacks
        ]

    def notify(self, method_name, **cb_kwargs):
        try:
            super().notify(method_name, **cb_kwargs)
        except KeyboardInterrupt:
            self._stop_requested = method_name == "on_epoch_end"
            raise

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        self._stop_requested = False
        if epochs is None and getattr(self, "_epochs_restored", 0):
            # resumed by TrainingCheckpoint: only the epochs left to
            # max_epochs, none when a callback (EarlyStopping) had ended it
            epochs = (
                0
                if getattr(self, "_resumed_ended", False)
                else max(self.max_epochs - self._epochs_restored, 0)
            )
        with _watch_sigint() as sigints:
            try:
                return super().fit_loop(X, y, epochs=epochs, **fit_params)
            except KeyboardInterrupt as exc:
                if self._stop_requested and not sigints:
                    raise  # a callback ended training: skorch stops quietly
                raise _Interrupted(exc) from None

    def partial_fit(self, *args, **kwargs):
        # set by TrainingCheckpoint(resume=True)
        self._epochs_restored, self._resumed_ended = 0, False
        try:
            return super().partial_fit(*args, **kwargs)
        except _Interrupted as exc:
            raise exc.interrupt from None

    def _augmented(self, Xi):
        """The training inputs ``Xi`` on the net's device, through ``augment``."""
        Xi = to_device(Xi, self.device)
        return Xi if self.augment is None else self.augment(Xi)

    def train_step_single(self, batch, **fit_params):
        if self.augment is not None:
            Xi, yi = unpack_data(batch)
            batch = (self._augmented(Xi), yi)
        return super().train_step_single(batch, **fit_params)

    def logits_and_targets(self, y_pred, y_true):
        return y_pred, y_true

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = _skorch_to_tensor(y_true, device=self.device)
        logits, targets = self.logits_and_targets(y_pred, y_true)
        loss = self.criterion_(logits, targets)
        if training:
            correct = (logits.argmax(dim=1) == targets).float().mean()
            self.history.record_batch(TRAIN_ACC, correct.item())
        return loss


class _BaseTrainer(BaseEstimator):
    """Fit = copy the module, wrap it with a head, train it with skorch."""

    _parameter_constraints: dict = {
        "module": [torch.nn.Module],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "optimizer": [StrOptions(set(_OPTIMIZERS)), callable],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "lr_schedule": [StrOptions({"cosine"}), None],
        "augment": [callable, None],
        "device": [str, torch.device],
        "callbacks": [list, tuple, None],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    # -- hooks for the subclasses -------------------------------------------

    def _check_targets(self, y, groups=None):
        """Raise ValueError when the labels (and, for a trainer that uses
        them, the groups) cannot be trained on."""

    def _uses_groups(self):
        """Whether ``fit``'s ``groups`` shape the training (within-group
        episodes); a trainer that does not use them refuses them."""
        return False

    def _checked_targets(self, y, groups):
        """Check the labels and ``groups`` by :meth:`_check_targets`; return
        the groups as int64 codes in the sorted order of their labels, or None.

        Refuses ``groups`` given to a trainer that does not use them (they
        would be ignored, silently) and missing ones that it needs; the checks
        read the labels and groups as given, which their messages name.
        """
        owner = type(self).__name__
        if not self._uses_groups():
            if groups is not None:
                fix = (
                    "set within_groups=True or leave groups out"
                    if hasattr(self, "within_groups")
                    else "leave groups out"
                )
                raise ValueError(
                    f"{owner} got groups but does not use them: only the "
                    "ProtoNet trainers with within_groups=True draw their "
                    f"episodes within groups; {fix}."
                )
            self._check_targets(y)
            return None
        if groups is None:
            raise ValueError(
                f"{owner}(within_groups=True) needs groups in fit: the group of "
                "each sample (e.g. the alphabet of each character)."
            )
        groups = np.asarray(groups)
        if groups.shape != (len(y),):
            raise ValueError(
                f"groups must be 1-D with one group per sample ({len(y)}), "
                f"got an array of shape {groups.shape}."
            )
        _check_groups(groups)
        self._check_targets(y, groups)
        return np.unique(groups, return_inverse=True)[1].astype(np.int64)

    def _check_fit_inputs(self, X, classes):
        """Raise when the validated ``X`` or the ``classes`` of ``y`` cannot be
        trained on with this trainer's parameters (before any training)."""

    def _make_module(self, backbone, n_features, n_classes):
        """The ``nn.Module`` the net trains; its ``backbone`` is ``backbone``."""
        raise NotImplementedError

    def _make_net(self, module, y_encoded, seed, common, groups=None):
        """The skorch net, given the keyword arguments both trainers share.

        ``seed`` (an int drawn from ``random_state``) seeds any extra sampler;
        ``groups``: the group codes of :meth:`_checked_targets`.
        """
        raise NotImplementedError

    def _batches_per_epoch(self):
        """For the progress bar: an int, or ``"auto"`` (skorch computes it)."""
        return "auto"

    def _checkpoint_settings(self):
        """What shapes the training, as plain data: what a run resumed by a
        :class:`~skfewshot.training.TrainingCheckpoint` must share with the
        checkpoint's run. The class name and every parameter but those of
        :data:`_NOT_CHECKPOINTED`; subclasses drop the ones that are off."""
        params = self.get_params(deep=False)
        return {
            "trainer": type(self).__name__,
            **{
                k: _setting_value(v)
                for k, v in params.items()
                if k not in _NOT_CHECKPOINTED
            },
        }

    # -- shared machinery ---------------------------------------------------

    def _build_net(self, module, y_encoded, seed, device, groups=None):
        """The net of :meth:`_make_net`, declaring to a
        :class:`~skfewshot.training.TrainingCheckpoint` the settings that shape
        its training (:meth:`_checkpoint_settings`; with ``groups``, their
        digest too: other groups draw other episodes from the same data)."""
        common = self._common_net_kwargs(device, seed)
        net = self._make_net(module, y_encoded, seed, common, groups)
        net._trainer_settings = self._checkpoint_settings()
        if groups is not None:
            codes = np.ascontiguousarray(groups, dtype="<i8")
            net._trainer_settings["groups_sha256"] = hashlib.sha256(codes).hexdigest()
        return net

    def _default_callbacks(self):
        callbacks = [
            (
                TRAIN_ACC,
                PassthroughScoring(
                    name=TRAIN_ACC, lower_is_better=False, on_train=True
                ),
            )
        ]
        if self.lr_schedule == "cosine":
            callbacks.append(
                (
                    "lr_scheduler",
                    LRScheduler(
                        policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                        T_max=self.max_epochs,
                    ),
                )
            )
        # per-batch bars only on a terminal: in a log they are kilobytes of
        # carriage-return updates, and the epoch lines say the same
        if self.verbose >= 2 and _is_terminal(sys.stderr):
            callbacks.append(
                (
                    "progress_bar",
                    ProgressBar(batches_per_epoch=self._batches_per_epoch()),
                )
            )
        # after the epoch's scores, before the user's callbacks
        callbacks.append(("stop_on_non_finite", _StopOnNonFinite(type(self).__name__)))
        return callbacks

    def _common_net_kwargs(self, device, seed):
        optimizer = (
            _OPTIMIZERS[self.optimizer]
            if isinstance(self.optimizer, str)
            else self.optimizer
        )
        kwargs = {
            "criterion": torch.nn.CrossEntropyLoss,
            "optimizer": optimizer,
            "optimizer__weight_decay": self.weight_decay,
            "lr": self.lr,
            "max_epochs": self.max_epochs,
            # the user's callbacks are copied: fit must not change its params
            "callbacks": self._default_callbacks()
            + copy.deepcopy(list(self.callbacks or [])),
            "device": str(device),
            "verbose": int(self.verbose),
            "augment": self.augment,
            "iterator_train__generator": torch.Generator().manual_seed(seed),
        }
        if self.optimizer == "sgd":
            kwargs["optimizer__momentum"] = 0.9
            kwargs["optimizer__nesterov"] = True
        return kwargs

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None
    ) -> _BaseTrainer:
        """Train a copy of ``module`` on the base classes.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs the module accepts, e.g. images ``(n, channels, H, W)``.
        y : array-like of shape (n_samples,)
            Base-class labels (any hashable type), at least two classes.
        groups : array-like of shape (n_samples,), default=None
            Group of each sample (e.g. the Omniglot alphabet), for
            :class:`ProtoNetMetaTrainer` with ``within_groups=True``, which
            needs them; every other trainer refuses them.

        Returns
        -------
        self : object
            The fitted trainer; the trained module is ``backbone_``.

        Raises
        ------
        ValueError
            Before training, when ``groups`` are given to a trainer that does
            not use them, missing with ``within_groups=True``, not one per
            sample, hold NaN, or leave no group with ``n_way`` classes.
        KeyboardInterrupt
            When training is interrupted (Ctrl-C); the trainer is then left
            unfitted, as after any error in ``fit``.

        Warns
        -----
        RuntimeWarning
            When the training loss or the weights become non-finite (NaN or
            inf, e.g. a learning rate far too large): training stops at that
            epoch and ``backbone_`` holds the weights of the last epoch that
            ended finite (or the starting weights), as the warning says.
        UserWarning
            Once, before training, when episodes can never draw some classes
            (fewer than ``n_shot + n_query`` samples or, with
            ``within_groups``, in a group of fewer than ``n_way`` classes).
        """
        try:
            return self._fit(X, y, groups)
        except BaseException:
            self._forget_fit()
            raise

    def _forget_fit(self):
        """Remove the fitted attributes: a failed fit leaves no stale model."""
        for name in [k for k in vars(self) if k.endswith("_") and k[:2] != "__"]:
            delattr(self, name)

    def _fit(self, X, y, groups=None):
        X, y = validate_data(self, X, y, allow_nd=True, dtype=np.float32)
        X = np.ascontiguousarray(X)  # torch takes no negative strides (X[::-1])
        check_classification_targets(y)
        classes, y_encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 base classes; y has 1 "
                f"class: {classes[0]!r}."
            )
        y_encoded = y_encoded.astype(np.int64)
        codes = self._checked_targets(y, groups)
        self._check_fit_inputs(X, classes)
        device = resolve_device(self.device)
        seed = seed_from(self.random_state)
        with seeded_torch(seed, device):
            backbone = copy.deepcopy(self.module)
            n_features = _probe_backbone(backbone, X, device)
            module = self._make_module(backbone, n_features, len(classes))
            net = self._build_net(module, y_encoded, seed, device, codes)
            net.fit(X, y_encoded)
        self.classes_ = classes
        self.n_features_out_ = n_features
        self.net_ = net
        self.history_ = net.history
        self.backbone_ = copy.deepcopy(net.module_.backbone).to("cpu").eval()
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.three_d_array = True  # images: (n, channels, H, W)
        return tags
