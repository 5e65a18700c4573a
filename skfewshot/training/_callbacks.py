"""Few-shot validation on held-out classes, as a skorch callback."""

from __future__ import annotations

from contextlib import suppress

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_array, column_or_1d
from skorch.callbacks import Callback

from .._episodes import EPISODE_DEFAULTS, EpisodeSampler
from ..backbone import BackboneTransformer

__all__ = ["EpisodicValidation"]


class EpisodicValidation(Callback):
    """Record few-shot accuracy on held-out classes at the end of every epoch.

    The net's current backbone embeds ``X_val`` once per epoch through a
    :class:`~skfewshot.BackboneTransformer` (eval mode, no gradients, batched on
    the net's device, training flags restored, feature cache off); then
    :func:`~skfewshot.model_selection.evaluate_episodes` fits ``head`` on the
    support features of ``n_episodes`` N-way K-shot episodes and scores it on
    their queries. The mean accuracy goes to the history as ``name``, its 95%
    confidence half-width as ``name + "_ci95"``, and whether it is the best so
    far as ``name + "_best"``, so skorch's ``EarlyStopping(monitor=name,
    lower_is_better=False)`` and ``Checkpoint(monitor=name + "_best")`` work
    with it.

    The backbone is found as ``net.module_.backbone``: the convention of
    :class:`SupervisedPretrainer` and :class:`ProtoNetMetaTrainer` (any skorch
    net whose module has a ``backbone`` attribute works too).

    Parameters
    ----------
    X_val : array-like of shape (n_samples, ...)
        Inputs of the validation classes (disjoint from the training classes).
    y_val : array-like of shape (n_samples,)
        Their labels.
    n_way : int
        Classes per validation episode.
    n_shot : int
        Support samples per class.
    n_query : int, default=15
        Query samples per class.
    n_episodes : int, default=100
        Episodes per evaluation.
    head : classifier or None, default=None
        Few-shot classifier fitted on the support features of each episode
        (cloned); ``None`` means :class:`~skfewshot.PrototypeClassifier`.
    groups : array-like of shape (n_samples,) or None, default=None
        Group of each validation sample (e.g. the Omniglot alphabet), used
        with ``within_groups=True``.
    within_groups : bool, default=False
        Draw all classes of an episode from one group.
    batch_size : int, default=256
        Batch size of the embedding pass.
    random_state : int, RandomState instance or None, default=0
        Seeds the episodes. An int evaluates the same episodes at every epoch,
        so epochs compare on equal terms.
    name : str, default="valid_fsl_acc"
        History key of the score.
    lower_is_better : bool, default=False
        Accuracy: higher is better.

    Attributes
    ----------
    best_score_ : float
        Best score recorded so far.

    See Also
    --------
    skfewshot.model_selection.evaluate_episodes : The evaluation run each epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from skorch.callbacks import EarlyStopping
    >>> from skfewshot.models import Conv4
    >>> from skfewshot.training import EpisodicValidation, SupervisedPretrainer
    >>> rng = np.random.RandomState(0)
    >>> X = rng.rand(80, 1, 16, 16).astype(np.float32)
    >>> y = np.repeat(np.arange(8), 10)
    >>> valid = EpisodicValidation(X[40:], y[40:], n_way=3, n_shot=1, n_query=5,
    ...                            n_episodes=10)
    >>> trainer = SupervisedPretrainer(
    ...     Conv4(hidden=8), max_epochs=3, verbose=0, random_state=0,
    ...     callbacks=[valid, EarlyStopping(monitor="valid_fsl_acc",
    ...                                     lower_is_better=False)],
    ... ).fit(X[:40], y[:40])
    >>> scores = trainer.history_[:, "valid_fsl_acc"]
    >>> len(scores), all(0.0 <= s <= 1.0 for s in scores)
    (3, True)
    """

    def __init__(
        self,
        X_val: ArrayLike,
        y_val: ArrayLike,
        *,
        n_way: int,
        n_shot: int,
        n_query: int = EPISODE_DEFAULTS["n_query"],
        n_episodes: int = 100,
        head: BaseEstimator | None = None,
        groups: ArrayLike | None = None,
        within_groups: bool = False,
        batch_size: int = 256,
        random_state: int | np.random.RandomState | None = 0,
        name: str = "valid_fsl_acc",
        lower_is_better: bool = False,
    ) -> None:
        self.X_val = X_val
        self.y_val = y_val
        self.n_way = n_way
        self.n_shot = n_shot
        self.n_query = n_query
        self.n_episodes = n_episodes
        self.head = head
        self.groups = groups
        self.within_groups = within_groups
        self.batch_size = batch_size
        self.random_state = random_state
        self.name = name
        self.lower_is_better = lower_is_better

    def initialize(self):
        self.best_score_ = np.inf if self.lower_is_better else -np.inf
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        if not hasattr(getattr(net, "module_", None), "backbone"):
            raise TypeError(
                "EpisodicValidation reaches the backbone as net.module_.backbone, "
                f"but the net's module {type(net.module_).__name__} has no "
                "'backbone' attribute."
            )
        self.X_val_ = check_array(
            self.X_val, allow_nd=True, dtype=np.float32, input_name="X_val"
        )
        self.y_val_ = column_or_1d(self.y_val)
        if len(self.y_val_) != len(self.X_val_):
            raise ValueError(
                f"X_val has {len(self.X_val_)} samples but y_val has "
                f"{len(self.y_val_)}."
            )
        # fail before training, not after the first epoch, if the validation
        # classes cannot make the episodes asked for
        EpisodeSampler(
            self.y_val_,
            self.n_way,
            self.n_shot,
            self.n_query,
            groups=self.groups,
            within_groups=self.within_groups,
        )
        # warm start: carry on from the best score already in the history
        with suppress(ValueError, IndexError, KeyError):
            flags = net.history[:, f"{self.name}_best"]
            last_best = len(flags) - 1 - flags[::-1].index(True)
            self.best_score_ = net.history[last_best, self.name]

    def _is_best_score(self, score):
        if self.lower_is_better:
            return score < self.best_score_
        return score > self.best_score_

    def on_epoch_end(self, net, **kwargs):
        from ..model_selection import evaluate_episodes
        from ..prototype import PrototypeClassifier

        # The one place that embeds with a frozen module: eval mode, inference
        # mode, batches, and every submodule's training flag restored after.
        # cache=False: weights change every epoch, so caching these rows would
        # only evict other transformers' features from the shared cache.
        embedder = BackboneTransformer(
            net.module_.backbone,
            device="cpu" if net.device is None else net.device,
            batch_size=self.batch_size,
            cache=False,
        )
        # fit on one row (it records the output width); transform does the rest
        features = embedder.fit(self.X_val_[:1]).transform(self.X_val_)
        head = PrototypeClassifier() if self.head is None else clone(self.head)
        scores = evaluate_episodes(
            head,
            features,
            self.y_val_,
            n_way=self.n_way,
            n_shot=self.n_shot,
            n_query=self.n_query,
            n_episodes=self.n_episodes,
            groups=self.groups,
            within_groups=self.within_groups,
            random_state=self.random_state,
        )
        score = float(scores.mean)
        is_best = self._is_best_score(score)
        if is_best:
            self.best_score_ = score
        net.history.record(self.name, score)
        net.history.record(f"{self.name}_ci95", float(scores.ci95))
        net.history.record(f"{self.name}_best", bool(is_best))
