"""The trainers on texts: the encoder itself trained, both ways.

:class:`TextSupervisedPretrainer` (cross-entropy with a linear or cosine head,
the fine-tuning family) and :class:`TextProtoNetMetaTrainer` (prototypical
episodes, the meta-learning family) are the image trainers with texts in place
of tensors. The skorch net sees row indices; a :class:`_TextRows` module in
front of the encoder looks the texts of a batch up and tokenises them (padded
to the longest text of the batch only), so the training loop, the heads, the
callbacks, the divergence guard and the Ctrl-C handling are the image
trainers' own (but for :class:`~skfewshot.training.EpisodicValidation`, which
embeds arrays and refuses a text trainer). The trained encoder, a
sentence-transformers model or a :class:`TextEmbedder`, has an ``encode``
method: it plugs into :class:`~skfewshot.text.SentenceEncoder` unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, column_or_1d
from torch import nn
from torch.nn import functional as F

from .._torch_utils import resolve_device, seeded_torch, to_host_array
from .._utils import seed_from
from ..text import _texts
from ._docstrings import _fill_shared_docs
from ._pretrain import SupervisedPretrainer
from ._protonet import ProtoNetMetaTrainer

__all__ = ["TextEmbedder", "TextProtoNetMetaTrainer", "TextSupervisedPretrainer"]


def _module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter (CPU for a module with none)."""
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def _to(features: Mapping, device: torch.device) -> dict:
    """A tokeniser's output with its tensors moved to ``device``."""
    return {
        k: v.to(device) if isinstance(v, torch.Tensor) else v
        for k, v in features.items()
    }


def _embed_texts(body: nn.Module, texts: list[str]) -> torch.Tensor:
    """Forward ``texts`` through a text body, with gradients.

    A sentence-transformers model (it has ``preprocess`` or ``tokenize``)
    tokenises the texts itself and returns ``"sentence_embedding"``; any other
    module (a :class:`TextEmbedder`, or one of the user's) is called on the
    list of strings.
    """
    tokenize = getattr(body, "preprocess", None) or getattr(body, "tokenize", None)
    if tokenize is None:
        return body(texts)
    features = body(_to(tokenize(texts), _module_device(body)))
    return features["sentence_embedding"]


class TextEmbedder(nn.Module):
    """A Hugging Face ``transformers`` model and its tokenizer as a text encoder.

    ``forward(texts)`` tokenises a list of strings (padded to the longest of
    the batch, truncated to ``max_length`` tokens), runs ``model`` and pools
    its token states into one vector per text, with gradients, so the text
    trainers can train it. :meth:`encode` is the inference path (eval mode, no
    gradients, batched, numpy out), the method
    :class:`~skfewshot.text.SentenceEncoder` calls, so a trained
    ``TextEmbedder`` goes into a pipeline as ``SentenceEncoder(embedder)``.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(**tokens)``; returns the token states ``(batch,
        n_tokens, n_features)``: a tensor, a tuple whose first item is that
        tensor, or an object with ``last_hidden_state`` (e.g.
        ``transformers.AutoModel.from_pretrained(name)``).
    tokenizer : callable
        Called as ``tokenizer(texts, padding=True, truncation=True,
        max_length=max_length, return_tensors="pt")``; returns a mapping
        with ``"input_ids"`` and ``"attention_mask"`` (e.g.
        ``transformers.AutoTokenizer.from_pretrained(name)``). The whole
        mapping is passed to ``model``.
    pooling : {"mean", "cls"}, default="mean"
        ``"mean"``: the average of the token states that the attention mask
        keeps (what sentence-transformers models such as all-MiniLM-L6-v2
        use); ``"cls"``: the state of the first token.
    max_length : int, default=128
        Longest tokenised text; longer ones are truncated.
    normalize : bool, default=False
        L2-normalise the pooled vectors.

    See Also
    --------
    TextSupervisedPretrainer : Trains it (or a sentence-transformers model)
        as a classifier of the base intents.
    TextProtoNetMetaTrainer : Trains it on prototypical episodes.
    skfewshot.text.SentenceEncoder : Uses its ``encode`` in a pipeline.

    Examples
    --------
    A toy model and tokenizer (one id per character) stand in for
    ``AutoModel`` / ``AutoTokenizer``:

    >>> import torch
    >>> from skfewshot.training import TextEmbedder
    >>> def tokenizer(texts, max_length, **kwargs):
    ...     ids = [[ord(c) % 50 + 1 for c in t[:max_length]] for t in texts]
    ...     width = max(map(len, ids))
    ...     pad = [row + [0] * (width - len(row)) for row in ids]
    ...     ids = torch.tensor(pad)
    ...     return {"input_ids": ids, "attention_mask": (ids > 0).long()}
    >>> class Model(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embedding = torch.nn.Embedding(51, 4)
    ...     def forward(self, input_ids, attention_mask):
    ...         return self.embedding(input_ids)
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> embedder = TextEmbedder(Model(), tokenizer)
    >>> embedder(["card lost", "top up"]).shape
    torch.Size([2, 4])
    >>> embedder.encode(["card lost", "top up", "refund"], batch_size=2).shape
    (3, 4)
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[..., Mapping[str, torch.Tensor]],
        *,
        pooling: str = "mean",
        max_length: int = 128,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f'pooling must be "mean" or "cls", got {pooling!r}.')
        if not callable(tokenizer):
            raise TypeError(
                "tokenizer must be callable (e.g. a transformers tokenizer), got "
                f"an object of type {type(tokenizer).__name__}."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.normalize = normalize

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled embeddings of ``texts``, shape ``(len(texts), n_features)``."""
        tokens = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        tokens = _to(tokens, _module_device(self))
        out = self.model(**tokens)
        states = getattr(out, "last_hidden_state", out)
        if isinstance(states, (tuple, list)):
            states = states[0]
        if not isinstance(states, torch.Tensor) or states.ndim != 3:
            shape = tuple(states.shape) if isinstance(states, torch.Tensor) else None
            raise ValueError(
                f"TextEmbedder: the model must return token states of shape "
                f"(batch, n_tokens, n_features); it returned "
                f"{shape or type(states).__name__}."
            )
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return F.normalize(pooled, dim=1) if self.normalize else pooled

    def encode(
        self, sentences: Sequence[str], batch_size: int = 64, **kwargs: Any
    ) -> np.ndarray:
        """Embed texts for inference: eval mode, no gradients, batched.

        Parameters
        ----------
        sentences : list of str
            Texts.
        batch_size : int, default=64
            Texts per forward pass.
        **kwargs
            Ignored (sentence-transformers options such as
            ``show_progress_bar``).

        Returns
        -------
        embeddings : ndarray of shape (n_texts, n_features), dtype float32
            One row per text; the training flag is restored afterwards.
        """
        texts = list(sentences)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                parts = [
                    to_host_array(self(texts[b]))
                    for b in gen_batches(len(texts), batch_size)
                ]
        finally:
            self.train(was_training)
        return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)


class _TextRows(nn.Module):
    """Row indices of the training texts -> the body's embeddings of them.

    The skorch nets batch integer row indices (a tensor of strings is not a
    thing); this module, the net's ``backbone``, looks the texts up. Only the
    ``body`` is kept after training.
    """

    def __init__(self, body, texts):
        super().__init__()
        self.body = body
        self.texts = texts

    def forward(self, rows):
        return _embed_texts(self.body, [self.texts[i] for i in rows.tolist()])


def _probe_text_body(rows: _TextRows, owner: str, device) -> int:
    """Embed two texts; return the feature count (a ValueError says why not)."""
    body = rows.body
    rows.to(device)
    was_training = body.training
    body.eval()
    sample = rows.texts[:2]
    try:
        with torch.no_grad():
            out = rows(torch.arange(len(sample)))
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(
            f"{owner}: the module {type(body).__name__} rejected a batch of "
            f"{len(sample)} texts ({sample!r}); it must be a sentence-transformers "
            "model, a TextEmbedder, or a module mapping a list of str to a "
            f"(batch, n_features) tensor: {exc}"
        ) from exc
    finally:
        body.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != len(sample):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{owner}: the module {type(body).__name__} must map a list of "
            f"{len(sample)} texts to a tensor of shape ({len(sample)}, n_features); "
            f"it returned {got}."
        )
    return int(out.shape[1])


class _TextTrainerMixin:
    """What a trainer on texts changes in its image sibling (``_BaseTrainer``).

    ``fit`` validates texts (not arrays), wraps the copied body in
    :class:`_TextRows` and trains the net on row indices; ``backbone_`` is the
    trained copy of the body itself. ``head_lr`` gives the head its own
    learning rate (a new head beside a pretrained body needs a larger one).
    """

    augment = None  # a training batch is row indices: nothing to augment

    def fit(self, X: Sequence[str], y: ArrayLike, groups: ArrayLike | None = None):
        """Train a copy of ``module`` on the texts of the base intents.

        Parameters
        ----------
        X : list or 1-D array of str
            Texts.
        y : array-like of shape (n_texts,)
            Their intents (any hashable type), at least two.
        groups : array-like of shape (n_texts,), default=None
            Group of each text (e.g. the domain of its intent), for
            :class:`TextProtoNetMetaTrainer` with ``within_groups=True``,
            which needs them; :class:`TextSupervisedPretrainer` refuses them.

        Returns
        -------
        self : object
            The fitted trainer; the trained encoder is ``backbone_``.

        Raises
        ------
        KeyboardInterrupt
            When training is interrupted (Ctrl-C); the trainer is then left
            unfitted, as after any error in ``fit``.

        Warns
        -----
        RuntimeWarning
            When the training loss or the weights become non-finite: training
            stops and ``backbone_`` holds the last finite weights.
        """
        return super().fit(X, y, groups)

    def _fit(self, X, y, groups=None):
        owner = type(self).__name__
        texts = _texts(X, owner)
        y = column_or_1d(y, warn=True)
        check_consistent_length(texts, y)
        check_classification_targets(y)
        classes, y_encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"{owner} needs at least 2 base classes; y has 1 class: {classes[0]!r}."
            )
        y_encoded = y_encoded.astype(np.int64)
        codes = self._checked_targets(y, groups)
        device = resolve_device(self.device)
        seed = seed_from(self.random_state)
        with seeded_torch(seed, device):
            rows = _TextRows(copy.deepcopy(self.module), texts)
            n_features = _probe_text_body(rows, owner, device)
            module = self._make_module(rows, n_features, len(classes))
            net = self._build_net(module, y_encoded, seed, device, codes)
            net._row_inputs = texts  # what X indexes, for TrainingCheckpoint
            net.fit(np.arange(len(texts)), y_encoded)
        self.classes_ = classes
        self.n_features_out_ = n_features
        self.net_ = net
        self.history_ = net.history
        self.backbone_ = copy.deepcopy(net.module_.backbone.body).to("cpu").eval()
        return self

    def _common_net_kwargs(self, device, seed):
        kwargs = super()._common_net_kwargs(device, seed)
        if self.head_lr is not None:
            kwargs["optimizer__param_groups"] = [("head.*", {"lr": self.head_lr})]
        return kwargs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = False
        tags.input_tags.string = True
        return tags


#: SupervisedPretrainer parameters that only make sense for images
_IMAGE_ONLY = (
    "rotation_loss_weight",
    "contrastive_loss_weight",
    "contrastive_temperature",
    "teacher",
    "distill_weight",
    "distill_temperature",
)


def _text_constraints(parent: type) -> dict:
    """``parent``'s parameter constraints, without ``augment``, with ``head_lr``."""
    constraints = {k: v for k, v in parent._parameter_constraints.items()}
    del constraints["augment"]
    # the image boosters (rotations, distillation) are not text trainers' parameters
    for name in _IMAGE_ONLY:
        constraints.pop(name, None)
    constraints["head_lr"] = [Interval(Real, 0, None, closed="neither"), None]
    return constraints


_TEXT_MODULE_DOC = """\
    module : torch.nn.Module
        The text encoder: a sentence-transformers ``SentenceTransformer``
        (it tokenises; its ``"sentence_embedding"`` is the feature vector), a
        :class:`TextEmbedder` (a Hugging Face ``transformers`` model with
        mean pooling), or any module mapping a list of ``str`` to a
        ``(batch, n_features)`` tensor. It is copied, never modified;
        training starts from its current weights."""


def _text_module_doc(cls: type) -> type:
    """Class decorator: put the text ``module`` entry at the ``__MODULE__`` line."""
    cls.__doc__ = cls.__doc__.replace("    __MODULE__", _TEXT_MODULE_DOC)
    return cls


@_fill_shared_docs
@_text_module_doc
class TextSupervisedPretrainer(_TextTrainerMixin, SupervisedPretrainer):
    """Fine-tune a text encoder as a classifier of the base intents.

    The fine-tuning family on text: a copy of ``module`` plus a linear or
    cosine head is trained with cross-entropy on the texts ``X`` and intents
    ``y``, in mini-batches tokenised on the fly; the head is then dropped and
    the trained copy is ``backbone_``, which a few-shot head uses on new
    intents through :class:`~skfewshot.text.SentenceEncoder`. Everything else
    (skorch loop, callbacks, schedule, divergence guard, Ctrl-C) is
    :class:`SupervisedPretrainer`'s; :class:`EpisodicValidation`, which
    embeds arrays, is refused (evaluate ``backbone_`` after ``fit``).

    Parameters
    ----------
    __MODULE__
    head : {"linear", "cosine"}, default="cosine"
        ``"cosine"``: a learnt scale times the cosine similarity to one
        weight per intent (suits encoders whose embeddings are normalised,
        as all-MiniLM-L6-v2's are); ``"linear"``: a linear layer.
    {max_epochs}
    lr : float, default=2e-05
        Learning rate of the encoder (the usual one for fine-tuning a
        pretrained transformer with AdamW).
    head_lr : float or None, default=0.01
        Learning rate of the head, which starts from random weights; ``None``
        uses ``lr``. The head is then the first parameter group, so the
        ``lr`` column of the epoch table (skorch reports the first group's)
        is the head's.
    batch_size : int, default=32
        Texts per training mini-batch.
    {optimizer}
    {weight_decay}
    {lr_schedule}
    train_split : callable or None, default=None
        skorch's internal validation split (``valid_loss``, ``valid_acc``);
        ``None`` trains on all the texts.
    {device}
    {callbacks}
    {verbose}
    {random_state}

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The trained copy of ``module``, on the CPU, in eval mode: a
        sentence-transformers model or a :class:`TextEmbedder` has ``encode``
        and goes into ``SentenceEncoder(backbone_)``; save it as usual
        (``backbone_.save(path)`` for sentence-transformers,
        ``torch.save(backbone_.state_dict(), path)`` otherwise).
    {classes_}
    {n_features_out_}
    history_ : skorch.history.History
        Per-epoch records: ``train_loss``, ``train_acc``, ``dur``, and whatever
        the callbacks add.
    net_ : skorch.NeuralNetClassifier
        The trained net; ``net_.module_.backbone`` maps row indices of the
        training texts (kept there) to embeddings, ``net_.module_.backbone.body``
        is the encoder it trained.

    See Also
    --------
    TextProtoNetMetaTrainer : The meta-learning family on text.
    SupervisedPretrainer : The same on images.
    skfewshot.text.SentenceEncoder : The trained encoder in a pipeline.

    References
    ----------
    .. [1] W.-Y. Chen, Y.-C. Liu, Z. Kira, Y.-C. F. Wang, J.-B. Huang, "A Closer
       Look at Few-shot Classification", ICLR 2019.

    Examples
    --------
    A tiny bag-of-words encoder stands in for a sentence-transformers model
    (which would be ``SentenceTransformer("all-MiniLM-L6-v2")``: a download):

    >>> import numpy as np
    >>> import torch
    >>> from sklearn.pipeline import make_pipeline
    >>> from skfewshot import PrototypeClassifier
    >>> from skfewshot.text import SentenceEncoder
    >>> from skfewshot.training import TextSupervisedPretrainer
    >>> class BagOfWords(torch.nn.Module):
    ...     def __init__(self, vocab):
    ...         super().__init__()
    ...         self.vocab = {w: i for i, w in enumerate(vocab)}
    ...         self.bag = torch.nn.EmbeddingBag(len(vocab), 8)
    ...     def forward(self, texts):
    ...         on = self.bag.weight.device  # the trainer's device
    ...         ids = [[self.vocab[w] for w in t.split()] for t in texts]
    ...         offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
    ...         flat = torch.tensor(sum(ids, []))
    ...         return self.bag(flat.to(on), offsets.to(on))
    ...     def encode(self, texts, batch_size=32, **kwargs):
    ...         with torch.no_grad():
    ...             return self(texts).cpu().numpy()
    >>> texts = ["card lost", "lost card", "top up", "up top", "refund please",
    ...          "please refund"] * 4
    >>> intents = ["card", "card", "top_up", "top_up", "refund", "refund"] * 4
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> body = BagOfWords(["card", "lost", "top", "up", "refund", "please"])
    >>> trainer = TextSupervisedPretrainer(body, max_epochs=10, lr=0.1,
    ...                                    verbose=0, random_state=0)
    >>> trainer.fit(texts, intents).n_features_out_
    8
    >>> pipe = make_pipeline(SentenceEncoder(trainer.backbone_, cache=False),
    ...                      PrototypeClassifier())
    >>> pipe.fit(texts[:6], intents[:6]).predict(["lost card", "refund"])
    array(['card', 'refund'], dtype='<U6')
    """

    _parameter_constraints: dict = _text_constraints(SupervisedPretrainer)
    # SupervisedPretrainer's image-only boosters, off (not parameters here)
    rotation_loss_weight = 0.0
    contrastive_loss_weight = 0.0
    contrastive_temperature = 0.1
    teacher = None
    distill_weight = 0.5
    distill_temperature = 4.0

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        head: str = "cosine",
        max_epochs: int = 3,
        lr: float = 2e-5,
        head_lr: float | None = 1e-2,
        batch_size: int = 32,
        optimizer: str | type[torch.optim.Optimizer] = "adamw",
        weight_decay: float = 0.01,
        lr_schedule: str | None = "cosine",
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
        self.head_lr = head_lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.train_split = train_split
        self.device = device
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state


@_fill_shared_docs
@_text_module_doc
class TextProtoNetMetaTrainer(_TextTrainerMixin, ProtoNetMetaTrainer):
    """Meta-train a text encoder with prototypical episodes over base intents.

    The meta-learning family on text: every training batch is one N-way K-shot
    episode of texts drawn from ``(X, y)``, tokenised on the fly; the support
    embeddings of each intent are averaged into a prototype and the queries
    are classified against the prototypes with cross-entropy (Snell et al.,
    2017). Everything else (episode sampler, skorch loop, callbacks, divergence
    guard, Ctrl-C) is :class:`ProtoNetMetaTrainer`'s; :class:`EpisodicValidation`,
    which embeds arrays, is refused (evaluate ``backbone_`` after ``fit``). The
    trained copy of ``module`` is ``backbone_``, for
    :class:`~skfewshot.text.SentenceEncoder`.

    Parameters
    ----------
    __MODULE__
    n_way : int, default=10
        Intents per training episode.
    n_shot : int, default=5
        Support texts per intent per episode.
    n_query : int, default=5
        Query texts per intent per episode.
    episodes_per_epoch : int, default=100
        Episodes (optimizer steps) per epoch.
    {max_epochs}
    lr : float, default=2e-05
        Learning rate of the encoder (the usual one for fine-tuning a
        pretrained transformer with AdamW).
    head_lr : float or None, default=0.01
        Learning rate of the head (the learnt scale of ``metric="cosine"``);
        ``None`` uses ``lr``. The ``lr`` column of the epoch table is the
        head's (skorch reports the first parameter group's).
    {optimizer}
    {weight_decay}
    {lr_schedule}
    metric : {"cosine", "euclidean"}, default="cosine"
        How queries are scored against the prototypes: a learnt scale
        (starting at 10) times the cosine similarities (suits normalised
        embeddings), or minus the squared Euclidean distances.
    within_groups : bool, default=False
        Draw all intents of a training episode from one group of the
        ``groups`` that ``fit`` then needs (e.g. the domain of each intent),
        as :class:`ProtoNetMetaTrainer` does.
    {device}
    {callbacks}
    {verbose}
    {random_state}

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The trained copy of ``module``, on the CPU, in eval mode (see
        :class:`TextSupervisedPretrainer`).
    {classes_}
    {n_features_out_}
    history_ : skorch.history.History
        Per-epoch records: ``train_loss`` and ``train_acc`` (query loss and
        accuracy averaged over the epoch's episodes), ``dur``, and whatever the
        callbacks add.
    net_ : skorch.NeuralNet
        The trained net; ``net_.module_.backbone.body`` is the encoder it
        trained.

    See Also
    --------
    TextSupervisedPretrainer : The fine-tuning family on text.
    ProtoNetMetaTrainer : The same on images.

    References
    ----------
    .. [1] J. Snell, K. Swersky, R. Zemel, "Prototypical Networks for Few-shot
       Learning", NeurIPS 2017.

    Examples
    --------
    With a :class:`TextEmbedder` around a toy model and tokenizer (for a real
    one: ``TextEmbedder(AutoModel.from_pretrained(name),
    AutoTokenizer.from_pretrained(name))``, a download):

    >>> import torch
    >>> from skfewshot.text import SentenceEncoder
    >>> from skfewshot.training import TextEmbedder, TextProtoNetMetaTrainer
    >>> def tokenizer(texts, max_length, **kwargs):
    ...     ids = [[ord(c) % 50 + 1 for c in t[:max_length]] for t in texts]
    ...     width = max(map(len, ids))
    ...     ids = torch.tensor([r + [0] * (width - len(r)) for r in ids])
    ...     return {"input_ids": ids, "attention_mask": (ids > 0).long()}
    >>> class Model(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embedding = torch.nn.Embedding(51, 8)
    ...     def forward(self, input_ids, attention_mask):
    ...         return self.embedding(input_ids)
    >>> texts = ["aaa", "aab", "abb", "ccc", "ccd", "cdd", "eee", "eef", "eff"]
    >>> trainer = TextProtoNetMetaTrainer(
    ...     TextEmbedder(Model(), tokenizer), n_way=3, n_shot=1, n_query=1,
    ...     episodes_per_epoch=4, max_epochs=2, lr=0.01, verbose=0,
    ...     random_state=0).fit(texts, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    >>> trainer.net_.history[-1, "train_batch_count"]
    4
    >>> SentenceEncoder(trainer.backbone_, cache=False).fit_transform(texts).shape
    (9, 8)
    """

    _parameter_constraints: dict = _text_constraints(ProtoNetMetaTrainer)

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        n_way: int = 10,
        n_shot: int = 5,
        n_query: int = 5,
        episodes_per_epoch: int = 100,
        max_epochs: int = 3,
        lr: float = 2e-5,
        head_lr: float | None = 1e-2,
        optimizer: str | type[torch.optim.Optimizer] = "adamw",
        weight_decay: float = 0.01,
        lr_schedule: str | None = "cosine",
        metric: str = "cosine",
        within_groups: bool = False,
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
        self.head_lr = head_lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.metric = metric
        self.within_groups = within_groups
        self.device = device
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state
