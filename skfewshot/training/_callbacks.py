"""Training callbacks: few-shot validation on held-out classes, and a
checkpoint that lets an interrupted training resume exactly."""

from __future__ import annotations

import hashlib
import inspect
import math
import re
import warnings
from contextlib import suppress
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_array, column_or_1d
from skorch.callbacks import Callback, EarlyStopping

from .._episodes import EPISODE_DEFAULTS, EpisodeSampler, left_out_already_said
from .._fileio import atomic_path
from ..backbone import BackboneTransformer

__all__ = ["EpisodicValidation", "TrainingCheckpoint"]


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
    net whose module has a ``backbone`` attribute works too). The text
    trainers are not supported (their backbone maps row indices of the
    training texts): evaluate their ``backbone_`` after ``fit``.

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
        so epochs compare on equal terms. A RandomState draws new ones every
        epoch (a :class:`TrainingCheckpoint` saves and restores its state);
        None draws them from numpy's global generator, which a resumed run
        cannot reproduce (a resuming :class:`TrainingCheckpoint` warns).
    name : str, default="valid_fsl_acc"
        History key of the score.
    lower_is_better : bool, default=False
        Accuracy: higher is better.

    Attributes
    ----------
    best_score_ : float
        Best score recorded so far.
    data_digest_ : str
        SHA-256 of the validation inputs, label codes and, with
        ``within_groups``, group codes, set at the start of training (a
        resuming :class:`TrainingCheckpoint` compares it with the interrupted
        run's).

    Raises
    ------
    TypeError
        At the start of training, when the net's module has no ``backbone``
        or the trainer is a text trainer (:class:`TextSupervisedPretrainer`,
        :class:`TextProtoNetMetaTrainer`).
    ValueError
        At the start of training, when ``X_val`` and ``y_val`` differ in
        length, ``X_val``'s inputs have another shape than the training
        inputs (e.g. 48x48 validation images for 16x16 training images), or
        the validation classes cannot make the episodes asked for.

    Warns
    -----
    UserWarning
        Once, at the start of training (not at every epoch), when some
        validation classes are never drawn (those with fewer than ``n_shot +
        n_query`` samples and, with ``within_groups``, those of groups too
        small for an episode); the message says how many and points at the
        trainer's ``fit`` call.

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
        if getattr(net, "_row_inputs", None) is not None:
            # a text trainer: its backbone looks up rows of the training texts
            trainer = (getattr(net, "_trainer_settings", None) or {}).get(
                "trainer", type(net).__name__
            )
            raise TypeError(
                f"EpisodicValidation does not support {trainer}: it embeds X_val "
                "as arrays through the net's backbone, which here maps row "
                "indices of the training texts. Evaluate the trained encoder "
                "after fit instead: evaluate_episodes(make_pipeline("
                "SentenceEncoder(trainer.backbone_), PrototypeClassifier()), "
                "texts, labels, ...)."
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
        train_shape = getattr(X, "shape", None)
        if train_shape is not None and self.X_val_.shape[1:] != tuple(train_shape[1:]):
            raise ValueError(
                f"X_val holds inputs of shape {self.X_val_.shape[1:]}, but the "
                f"net trains on inputs of shape {tuple(train_shape[1:])}: the "
                "backbone embeds both, so they must have the same shape (e.g. "
                "resize the validation images to the training size)."
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
        # what a resuming TrainingCheckpoint compares (labels, and groups when
        # episodes are drawn within them, by their codes: the episodes depend
        # on nothing else of them; the sampler above has validated both)
        codes = [np.unique(self.y_val_, return_inverse=True)[1]]
        if self.within_groups:
            codes.append(np.unique(column_or_1d(self.groups), return_inverse=True)[1])
        self.data_digest_ = _data_digest(self.X_val_, np.stack(codes))
        self._best_read = False

    def _read_best(self, net):
        """Warm start or resumed run: carry on from the best score in the history.

        Read at the first epoch's end, after every ``on_train_begin`` (so after
        :class:`TrainingCheckpoint` restored the history).
        """
        self._best_read = True
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
        with left_out_already_said():  # by on_train_begin
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
        if not self._best_read:
            self._read_best(net)
        is_best = self._is_best_score(score)
        if is_best:
            self.best_score_ = score
        net.history.record(self.name, score)
        net.history.record(f"{self.name}_ci95", float(scores.ci95))
        net.history.record(f"{self.name}_best", bool(is_best))


_CHECKPOINT_FORMAT = "skfewshot.training_checkpoint"
_CHECKPOINT_VERSION = 1
#: What every checkpoint holds (a file without one of them is damaged).
_CHECKPOINT_KEYS = frozenset(
    {"settings", "data", "epochs", "history", "module_state", "optimizer"}
    | {"schedulers", "rng"}
)


def _data_digest(X, y, texts=None):
    """SHA-256 of the training inputs and labels, to recognise the same data.

    ``texts``: what ``X`` indexes when it is row indices (the text trainers
    fit their net on ``arange(n_texts)``), so other texts make another digest.
    """
    digest = hashlib.sha256()
    for array in (X, y):
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.data)
    for text in texts if texts is not None else ():
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def _schedulers(net):
    """The learning-rate schedulers of the net's callbacks, by callback name."""
    return {
        name: cb.lr_scheduler_
        for name, cb in getattr(net, "callbacks_", [])
        if hasattr(getattr(cb, "lr_scheduler_", None), "state_dict")
    }


def _python_values(value):
    """``value`` with numpy scalars and arrays as Python values (for torch.load's
    weights-only reader, which takes tensors and plain Python data only).

    Not :func:`skfewshot.models._io._plain`, which writes a backbone file's
    ``trained_on`` as JSON-like data for tools (tuples as lists, finite floats,
    str keys, bounded size): a checkpoint keeps what it is given, tuples and
    ``nan`` included, because a resumed run's values are compared with these
    as given (:func:`_same_value`).
    """
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _python_values(v) for k, v in value.items()}
    if type(value) in (list, tuple):  # not a namedtuple: it is no plain data
        return type(value)(_python_values(v) for v in value)
    return value


def _is_plain(value):
    """Whether ``value`` is plain data: None, bool, int, float, str, or lists,
    tuples and dicts of them (what torch.load's weights-only reader takes back
    as it was saved)."""
    if type(value) in (list, tuple):
        return all(_is_plain(v) for v in value)
    if type(value) is dict:
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    return value is None or type(value) in (bool, int, float, str)


def _same_value(a, b):
    """Whether the plain data ``a`` and ``b`` are equal, NaN equal to NaN (a
    setting ``nan``, saved and given again, is the same setting: ``==`` made
    every resume of such a run fail as if it had been changed)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is type(b) and type(a) in (list, tuple):
        return len(a) == len(b) and all(map(_same_value, a, b))
    if type(a) is dict and type(b) is dict:
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    return a == b


def _plain_settings(settings):
    """``settings`` (a dict or None) as plain data, numpy values as Python ones.

    Raises a TypeError naming the first key whose value (or the key itself)
    is not plain data: saved as it is, the checkpoint could never be read back.
    """
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise TypeError(
            "TrainingCheckpoint settings must be a dict or None, got "
            f"{type(settings).__name__}."
        )
    plain = _python_values(settings)
    for (key, value), original in zip(plain.items(), settings.values()):
        if not (_is_plain(key) and _is_plain(value)):
            raise TypeError(
                f"TrainingCheckpoint settings[{key!r}] is {original!r} (of type "
                f"{type(original).__name__}); the settings must be plain data "
                "(None, bool, int, float, str, and lists, tuples and dicts of "
                "them) to be read back on resuming: convert it, e.g. "
                "str(path) for a path."
            )
    return plain


#: a memory address in a repr, different in every process
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
#: ``object.__repr__``'s output: the type name and an address, no parameters
_BARE_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _setting_value(value):
    """A trainer's parameter as plain data, equal in every process for equal
    parameters (what :class:`TrainingCheckpoint` records of a trainer).

    Plain data (numpy values as Python ones) as it is; a class or a function
    by its qualified name; any other object by its repr (its attributes when
    the repr is ``object``'s), without memory addresses.
    """
    value = _python_values(value)
    if _is_plain(value):
        return value
    if isinstance(value, type) or inspect.isroutine(value):
        return f"{value.__module__}.{value.__qualname__}"
    text = repr(value)
    if _BARE_REPR.fullmatch(text) and hasattr(value, "__dict__"):
        text = f"{type(value).__qualname__}({vars(value)!r})"
    return _ADDRESS.sub("", text)


def _estimator_value(estimator):
    """An estimator as plain data to compare: its class and every parameter of
    ``get_params(deep=True)`` (its repr would not do: scikit-learn cuts long
    ones and long lists of steps, which could hide a difference), nested
    estimators by their class there, their parameters being listed apart;
    anything else as :func:`_setting_value` has it."""

    def value(v):
        if isinstance(v, BaseEstimator):
            return _setting_value(type(v))  # its qualified class name
        if type(v) in (list, tuple):
            return [value(item) for item in v]
        return _setting_value(v)

    if not isinstance(estimator, BaseEstimator):
        return _setting_value(estimator)
    params = estimator.get_params(deep=True)
    return {
        "class": value(estimator),
        **{k: value(v) for k, v in sorted(params.items())},
    }


def _numpy_rng_state(rng):
    name, keys, *rest = rng.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), *_python_values(rest)]


def _set_numpy_rng_state(rng, saved):
    """Give the RandomState ``rng`` the state :func:`_numpy_rng_state` saved."""
    name, keys, *rest = saved
    rng.set_state((name, keys.numpy().astype(np.uint32), *rest))


#: The parameters of EpisodicValidation its recorded scores depend on (beside
#: its head, random_state and validation data); batch_size only batches the
#: embedding.
_EPISODIC_VALIDATION_PARAMS = (
    "n_way",
    "n_shot",
    "n_query",
    "n_episodes",
    "within_groups",
    "name",
    "lower_is_better",
)

#: The parameters of skorch's EarlyStopping that give its state a meaning.
_EARLY_STOPPING_PARAMS = (
    "monitor",
    "patience",
    "threshold",
    "threshold_mode",
    "lower_is_better",
    "load_best",
)


def _callback_params(callback):
    """What a callback that carries a state from epoch to epoch or shapes the
    history is, as plain data (its class, and the parameters its state and
    records depend on); None for any other callback.

    skorch's ``EarlyStopping`` counts the epochs without improvement and keeps
    the score to beat, the best epoch and, with ``load_best``, its weights. An
    :class:`EpisodicValidation` records a score every epoch, which the saved
    epochs' scores must be comparable with (same episodes' settings, head and
    validation data, by digest); with a RandomState as ``random_state`` it
    draws every epoch's episodes from it (with an int seed, the episodes are
    the same every epoch, and the best score is read back from the history).
    """
    if isinstance(callback, EarlyStopping):
        return {
            "class": type(callback).__name__,
            **{k: _setting_value(getattr(callback, k)) for k in _EARLY_STOPPING_PARAMS},
        }
    if isinstance(callback, EpisodicValidation):
        random_state = callback.random_state
        return {
            "class": type(callback).__name__,
            **{
                k: _setting_value(getattr(callback, k))
                for k in _EPISODIC_VALIDATION_PARAMS
            },
            "head": _estimator_value(callback.head),
            "random_state": "RandomState"
            if isinstance(random_state, np.random.RandomState)
            else _setting_value(random_state),
            "data": getattr(callback, "data_digest_", None),
        }
    return None


def _callback_state(callback):
    """The state of a callback :func:`_callback_params` describes, to save
    (an :class:`EpisodicValidation` with an int or None seed has none)."""
    if isinstance(callback, EarlyStopping):
        weights = getattr(callback, "best_model_weights_", None)
        return {
            "misses_": int(callback.misses_),
            "dynamic_threshold_": _python_values(callback.dynamic_threshold_),
            "best_epoch_": int(callback.best_epoch_),
            "best_model_weights_": None if weights is None else dict(weights),
        }
    if isinstance(callback.random_state, np.random.RandomState):
        return {"rng": _numpy_rng_state(callback.random_state)}
    return {}


def _restore_callback_state(callback, state):
    """Give ``callback`` the state :func:`_callback_state` saved."""
    if isinstance(callback, EarlyStopping):
        callback.misses_ = state["misses_"]
        callback.dynamic_threshold_ = state["dynamic_threshold_"]
        callback.best_epoch_ = state["best_epoch_"]
        weights = state["best_model_weights_"]
        callback.best_model_weights_ = None if weights is None else dict(weights)
    elif isinstance(callback.random_state, np.random.RandomState):
        _set_numpy_rng_state(callback.random_state, state["rng"])


def _flat_callbacks(callbacks):
    """``{name: params}`` of stateful callbacks as one flat dict, to compare:
    ``callbacks['name']`` is the class, ``callbacks['name'].key`` a parameter."""
    flat = {}
    for name, params in callbacks.items():
        flat[f"callbacks[{name!r}]"] = params.get("class")
        flat.update(
            {f"callbacks[{name!r}].{k}": v for k, v in params.items() if k != "class"}
        )
    return flat


def _stateful_callbacks(net):
    """The net's callbacks that carry a state over epochs, by name: ``(callback,
    what _callback_params says it is)``."""
    return {
        name: (callback, params)
        for name, callback in getattr(net, "callbacks_", [])
        if (params := _callback_params(callback)) is not None
    }


class TrainingCheckpoint(Callback):
    """Save a resumable training state after every epoch; resume from it.

    After each epoch the whole training state is written to ``path``
    atomically (a reader sees the previous epoch's file or the new one, never
    a half-written one): the weights of the net's module (backbone and
    training head), the optimizer's state, the learning-rate schedulers'
    states, the history, the state of the callbacks that carry one from epoch
    to epoch (skorch's ``EarlyStopping``, and an :class:`EpisodicValidation`
    whose ``random_state`` is a RandomState), and every random number
    generator training draws from (torch's global generators, the data
    loader's generator and the episode sampler's). With ``resume=True``,
    ``fit`` starts by loading that state and trains only the epochs left to
    ``max_epochs``; on the CPU the result equals, bit for bit, a run that was
    never interrupted.

    A skfewshot trainer's run that a callback ended (e.g. ``EarlyStopping``)
    is saved as ended, with the epoch it ended at: resuming it trains no more
    epochs. A run the divergence guard stopped (non-finite loss or weights)
    keeps the state of its last finite epoch, so resuming it trains the
    diverging epoch again. The file is never removed: delete it to start
    over, or train without ``resume``.

    A resumed run must be the interrupted one: the same trainer parameters,
    ``settings`` and training data. The skfewshot trainers declare what
    shapes their training (``trainer_settings_``: every parameter but
    ``module``, ``callbacks``, ``device`` and ``verbose``, ``max_epochs``
    included, as the cosine schedule spans it); it is saved with the state
    and a resume with any difference is refused. To train longer, start a new
    run.

    Put it last in ``callbacks``, so that the saved history holds what the
    other callbacks record (e.g. :class:`EpisodicValidation`) and the saved
    callback states what they decided at that epoch's end; placed before an
    ``EarlyStopping`` or an :class:`EpisodicValidation`, it is refused.
    The stateful callbacks of a resumed run must be those of the interrupted
    run: the same names, classes and ``EarlyStopping`` parameters, and
    :class:`EpisodicValidation` callbacks with the same episode settings,
    head, seed (or RandomState) and validation data, so that the saved
    epochs' scores and those of the resumed epochs measure the same thing.

    Parameters
    ----------
    path : str or path-like
        The checkpoint file (its folder must exist).
    settings : dict or None, default=None
        Plain data describing the run beyond the trainer's parameters (e.g.
        the command-line options): None, bool, int, float, str, and lists,
        tuples and dicts of them (numpy scalars and arrays are saved as Python
        numbers and lists). A resumed run must have equal settings; the
        inputs and labels given to ``fit`` must be the same too (the file
        keeps their SHA-256 digest).
    resume : bool, default=False
        Load ``path`` at the start of training instead of starting over.

    Attributes
    ----------
    resumed_epochs_ : int
        Epochs restored from ``path`` at the start of training (0 when not
        resuming).
    trainer_settings_ : dict or None
        What the trainer being fitted declared as shaping its training, saved
        in the checkpoint and checked on resuming: ``"trainer"`` (its class
        name) and its parameters, as plain data (``augment`` and other
        objects by their repr, a ``teacher`` by the SHA-256 of its weights).
        ``None`` for a skorch net that is not a skfewshot trainer.

    Raises
    ------
    TypeError
        At the start of training, when ``settings`` is not a dict of plain
        data (the message names the key).
    ValueError
        At the start of training, when an ``EarlyStopping`` or an
        :class:`EpisodicValidation` comes after it in ``callbacks``.
    FileNotFoundError
        At the start of training, when the folder of ``path`` does not exist,
        or with ``resume=True`` and no file at ``path``.
    ValueError
        At the start of training, with ``resume=True``, when the file is not a
        training checkpoint, was written before skfewshot recorded the
        trainer's parameters, or was written with other settings or trainer
        parameters (the message names the first that differs and both
        values), other training data, another network (parameter names or
        shapes), or other stateful callbacks (an ``EarlyStopping`` or an
        :class:`EpisodicValidation` added, removed or with other parameters;
        for an ``EpisodicValidation``, also another seed or validation data),
        or when the file was written before skfewshot saved the callbacks'
        states and this run has such a callback.

    Warns
    -----
    UserWarning
        On resuming, for an :class:`EpisodicValidation` with
        ``random_state=None``: its episodes come from numpy's global
        generator, so the resumed run's scores (and what an ``EarlyStopping``
        decides from them) are not those of the interrupted run.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from skfewshot.models import Conv4
    >>> from skfewshot.training import SupervisedPretrainer
    >>> from skfewshot.training import TrainingCheckpoint
    >>> rng = np.random.RandomState(0)
    >>> X = rng.rand(40, 1, 16, 16).astype(np.float32)
    >>> y = np.repeat(np.arange(4), 10)
    >>> from skorch.callbacks import Callback
    >>> class Interrupt(Callback):  # stands in for Ctrl-C or a crash
    ...     def on_epoch_begin(self, net, **kwargs):
    ...         if len(net.history) == 3:  # as the third epoch begins
    ...             raise KeyboardInterrupt
    >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> module = Conv4(hidden=8)
    >>> def trainer(*callbacks):
    ...     return SupervisedPretrainer(
    ...         module, max_epochs=3, device="cpu", verbose=0, random_state=0,
    ...         callbacks=list(callbacks))
    >>> try:
    ...     trainer(Interrupt(), TrainingCheckpoint(path)).fit(X, y)
    ... except KeyboardInterrupt:
    ...     print("interrupted after 2 of 3 epochs")
    interrupted after 2 of 3 epochs
    >>> resumed = trainer(TrainingCheckpoint(path, resume=True)).fit(X, y)
    >>> checkpoint = dict(resumed.net_.callbacks_)["TrainingCheckpoint"]
    >>> len(resumed.history_), checkpoint.resumed_epochs_
    (3, 2)
    >>> uninterrupted = trainer().fit(X, y)
    >>> a, b = resumed.backbone_.state_dict(), uninterrupted.backbone_.state_dict()
    >>> all((a[k] == b[k]).all() for k in a)
    True

    Resuming with another parameter (here 5 epochs instead of 3) is refused:

    >>> longer = trainer(TrainingCheckpoint(path, resume=True))
    >>> try:
    ...     longer.set_params(max_epochs=5).fit(X, y)
    ... except ValueError as error:
    ...     print("max_epochs=3, this run has max_epochs=5" in str(error))
    True
    """

    def __init__(self, path, *, settings=None, resume=False):
        self.path = path
        self.settings = settings
        self.resume = resume

    def initialize(self):
        self.resumed_epochs_ = 0
        self.trainer_settings_ = None
        return self

    def _state(self, net, ended=False):
        params = net.get_params_for("iterator_train")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if isinstance(params.get("generator"), torch.Generator):
            rng["generator"] = params["generator"].get_state()
        sampler_rng = getattr(params.get("batch_sampler"), "rng", None)
        if isinstance(sampler_rng, np.random.RandomState):
            rng["batch_sampler"] = _numpy_rng_state(sampler_rng)
        return {
            "format": _CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "settings": self._settings,
            "trainer_settings": self.trainer_settings_,
            "data": self.data_digest_,
            "epochs": len(net.history),
            "history": _python_values(net.history.to_list()),
            "module_state": net.module_.state_dict(),
            "optimizer": net.optimizer_.state_dict(),
            "schedulers": {k: v.state_dict() for k, v in _schedulers(net).items()},
            "rng": rng,
            "callbacks": {
                name: {"params": params, "state": _callback_state(callback)}
                for name, (callback, params) in _stateful_callbacks(net).items()
            },
            "ended": ended,
        }

    def _save(self, net, ended=False):
        with atomic_path(self.path) as tmp:
            torch.save(self._state(net, ended), tmp)

    def _load(self):
        path = Path(self.path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no training checkpoint {str(path)!r} to resume from (a run "
                "with TrainingCheckpoint writes it at the end of each epoch); "
                "train without resume=True to start a run"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, foreign or corrupted files
            raise ValueError(
                f"{str(path)!r} is not a readable training checkpoint "
                f"({type(exc).__name__}: {str(exc).strip()[:200]})"
            ) from exc
        if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"{str(path)!r} is not a skfewshot training checkpoint")
        if state.get("version") != _CHECKPOINT_VERSION:
            raise ValueError(
                f"{str(path)!r} has checkpoint version {state.get('version')!r}; "
                f"this skfewshot reads version {_CHECKPOINT_VERSION}"
            )
        missing = sorted(_CHECKPOINT_KEYS - set(state))
        if missing:
            raise ValueError(
                f"{str(path)!r} is a damaged training checkpoint: it lacks "
                f"{', '.join(missing)}"
            )
        return state

    def _refuse_differences(self, saved, current, keys):
        """Raise a ValueError naming the first of ``keys`` whose value differs
        (a key one side lacks, e.g. a setting recorded only when on: "no key")."""

        def shown(settings, key):
            return f"{key}={settings[key]!r}" if key in settings else f"no {key}"

        for key in keys:
            if not _same_value(saved.get(key), current.get(key)):
                raise ValueError(
                    f"cannot resume from {str(self.path)!r}: it was written with "
                    f"{shown(saved, key)}, this run has {shown(current, key)}; "
                    "rerun with the same settings, or without resuming to start "
                    "over"
                )

    def _check_same_run(self, state, net):
        if self.trainer_settings_ is not None and "trainer_settings" not in state:
            raise ValueError(
                f"cannot resume from {str(self.path)!r}: it was written by an "
                "older skfewshot, which did not record the trainer's parameters "
                "(learning rate, epochs, batch size, ...), so this run cannot be "
                "checked against it; start over without resuming"
            )
        saved, current = state["settings"] or {}, self._settings or {}
        self._refuse_differences(
            saved, current, sorted(set(saved) | set(current), key=str)
        )
        saved = state.get("trainer_settings") or {}
        current = self.trainer_settings_ or {}
        self._refuse_differences(saved, current, dict.fromkeys([*saved, *current]))
        if state["data"] != self.data_digest_:
            raise ValueError(
                f"cannot resume from {str(self.path)!r}: it was written for other "
                "training data (other images, labels or order)"
            )
        saved = {k: tuple(v.shape) for k, v in state["module_state"].items()}
        current = {k: tuple(v.shape) for k, v in net.module_.state_dict().items()}
        if saved != current:
            key = next(k for k in [*saved, *current] if saved.get(k) != current.get(k))
            raise ValueError(
                f"cannot resume from {str(self.path)!r}: it trained another "
                f"network (parameter {key!r}: {saved.get(key)} there, "
                f"{current.get(key)} here)"
            )
        self._check_same_callbacks(state, net)

    def _check_same_callbacks(self, state, net):
        """Refuse a run whose stateful callbacks are not the saved ones."""
        current = {k: params for k, (_, params) in _stateful_callbacks(net).items()}
        if "callbacks" not in state:
            if current:
                name = next(iter(current))
                raise ValueError(
                    f"cannot resume from {str(self.path)!r}: it was written by an "
                    "older skfewshot, which did not save the state or the "
                    f"parameters of callbacks such as {name!r} "
                    f"({current[name]['class']}); start over without resuming"
                )
            return
        saved = state["callbacks"]
        if not isinstance(saved, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("params"), dict) and "state" in v
            for v in saved.values()
        ):
            raise ValueError(
                f"{str(self.path)!r} is a damaged training checkpoint: its "
                "'callbacks' entry is not a dict of callback states"
            )
        saved = _flat_callbacks({k: v["params"] for k, v in saved.items()})
        current = _flat_callbacks(current)
        self._refuse_differences(saved, current, dict.fromkeys([*saved, *current]))

    def _check_order(self, net):
        """Refuse to come before a callback whose end-of-epoch work it saves."""
        callbacks = list(getattr(net, "callbacks_", []))
        mine = next((i for i, (_, cb) in enumerate(callbacks) if cb is self), None)
        after = [] if mine is None else callbacks[mine + 1 :]
        later = [
            name
            for name, callback in after
            if isinstance(callback, (EarlyStopping, EpisodicValidation))
        ]
        if later:
            raise ValueError(
                f"TrainingCheckpoint comes before {later[0]!r} in callbacks: it "
                f"would save each epoch without what {later[0]!r} records and "
                "decides at that epoch's end, and a resumed run would differ "
                "from an uninterrupted one; put TrainingCheckpoint last"
            )

    def _check_folder(self):
        """Fail before the first epoch, not after it, on a path never writable."""
        path = Path(self.path)
        if not path.parent.is_dir():
            raise FileNotFoundError(
                f"cannot write the training checkpoint {str(path)!r}: its folder "
                f"{str(path.parent)!r} does not exist or is not a folder"
            )
        if path.is_dir():
            raise IsADirectoryError(
                f"the training checkpoint {str(path)!r} is a folder; give the "
                "path of a file"
            )

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self._settings = _plain_settings(self.settings)
        self._check_folder()
        self._check_order(net)
        # a text trainer's X is row indices into the texts its net declares
        self.data_digest_ = _data_digest(X, y, getattr(net, "_row_inputs", None))
        # what a skfewshot trainer declares shapes its training
        self.trainer_settings_ = getattr(net, "_trainer_settings", None)
        self.resumed_epochs_ = 0
        if not self.resume:
            return
        state = self._load()
        self._check_same_run(state, net)
        try:
            net.module_.load_state_dict(state["module_state"])
            net.optimizer_.load_state_dict(state["optimizer"])
            schedulers = _schedulers(net)
            for name, scheduler_state in state["schedulers"].items():
                schedulers[name].load_state_dict(scheduler_state)
            # after every callback's on_train_begin (this one comes last),
            # which resets what EarlyStopping counts
            callbacks = _stateful_callbacks(net)
            for name, saved in state.get("callbacks", {}).items():
                _restore_callback_state(callbacks[name][0], saved["state"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise ValueError(
                f"{str(self.path)!r} is a damaged training checkpoint "
                f"({type(exc).__name__}: {str(exc).strip()[:200]})"
            ) from exc
        net.history.clear()
        net.history.extend(state["history"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        params = net.get_params_for("iterator_train")
        if "generator" in rng:
            params["generator"].set_state(rng["generator"])
        if "batch_sampler" in rng:
            _set_numpy_rng_state(params["batch_sampler"].rng, rng["batch_sampler"])
        for name, callback in net.callbacks_:
            if isinstance(callback, EpisodicValidation) and (
                callback.random_state is None
            ):
                warnings.warn(
                    f"TrainingCheckpoint: the callback {name!r} has "
                    "random_state=None, so its episodes come from numpy's global "
                    "generator: the resumed run's validation scores (and what an "
                    "EarlyStopping decides from them) are not those the "
                    "interrupted run would have recorded. Give it an int "
                    "random_state (or a RandomState).",
                    UserWarning,
                    stacklevel=2,
                )
        self.resumed_epochs_ = state["epochs"]
        net._epochs_restored = state["epochs"]  # fit_loop trains the rest
        net._resumed_ended = bool(state.get("ended", False))  # or none

    def on_epoch_end(self, net, **kwargs):
        self._save(net)

    def on_train_end(self, net, **kwargs):
        # A callback ended a skfewshot trainer's run at an epoch's end (e.g.
        # EarlyStopping; skorch then skips the callbacks after it, this one
        # included): saved as ended, so that resuming it trains no more. Not
        # when the divergence guard stopped it: the file keeps the state of the
        # last finite epoch (resuming trains the diverging epoch again).
        if getattr(net, "_stop_requested", False) and (
            getattr(net, "_diverged", None) is None
        ):
            self._save(net, ended=True)
