"""Text features as scikit-learn transformer steps.

:class:`SentenceEncoder` wraps a frozen sentence encoder (sentence-transformers
style); :class:`LSAEncoder` learns latent semantic analysis features (TF-IDF,
then truncated SVD) from the texts it is fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._feature_cache import cached_features, state_key, text_keys
from ._torch_utils import autocast_state, float32_settings, resolve_device
from ._utils import check_finite_features

__all__ = ["LSAEncoder", "SentenceEncoder"]


def _texts(X: Any, owner: str) -> list[str]:
    """Validate a 1-D collection of strings and return it as a list."""
    if isinstance(X, str):
        raise ValueError(
            f"{owner} expects a list or 1-D array of strings, got a single "
            "string; wrap it in a list."
        )
    arr = np.asarray(X, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:  # a one-column frame or array
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            f"{owner} expects a 1-D collection of strings, got an array of "
            f"shape {arr.shape}."
        )
    if arr.size == 0:
        raise ValueError(f"{owner} got an empty input (0 texts).")
    bad = [type(t).__name__ for t in arr if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"{owner} expects strings; got {len(bad)} non-string item(s), "
            f"e.g. of type {bad[0]}."
        )
    return arr.tolist()


class SentenceEncoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """A frozen sentence encoder as a transformer: texts in, embeddings out.

    Wraps a `sentence-transformers <https://www.sbert.net>`_ model (or any
    object with an ``encode(list_of_str, batch_size=..., ...) -> array`` method)
    so that texts go through a :class:`~sklearn.pipeline.Pipeline` like images
    go through :class:`~skfewshot.BackboneTransformer`: ``make_pipeline(
    SentenceEncoder("all-MiniLM-L6-v2"), PrototypeClassifier())`` is a few-shot
    intent classifier (e.g. on :func:`~skfewshot.datasets.load_banking77`).

    The encoder is frozen: ``fit`` only loads the model (once per instance;
    loading a named model needs the ``text`` extra, ``pip install
    'skfewshot[text]'``, and the model files on disk or a network) and
    encodes one text to learn the embedding size.

    Parameters
    ----------
    model : str or object with an ``encode`` method
        A sentence-transformers model name or path, loaded at ``fit`` with
        ``sentence_transformers.SentenceTransformer(model, device=...)``; or a
        ready encoder object, used as is.

    batch_size : int, default=64
        Texts per forward pass, passed to ``encode``.

    normalize : bool, default=False
        L2-normalise the embeddings (the cosine heads normalise anyway).

    device : str, default="auto"
        For a model name: ``"auto"`` picks CUDA, then Apple MPS, then CPU.

    cache : bool, default=True
        Reuse embeddings: a text already embedded by an encoder in the same
        state is read back from the process-wide feature cache that
        :class:`~skfewshot.BackboneTransformer` uses, keyed the same way
        (see Notes).

    cache_size : int, default=100_000
        Most rows the process-wide cache keeps after this encoder writes to
        it, least recently used evicted first, as for
        :class:`~skfewshot.BackboneTransformer`.

    verbose : int, default=0
        If positive, texts to embed are passed to ``encode`` ``batch_size`` at
        a time under a progress bar (tqdm, on stderr); otherwise in one call.

    Attributes
    ----------
    encoder_ : object
        The loaded encoder (a ``torch.nn.Module`` one is put in eval mode).

    n_features_out_ : int
        Embedding dimension.

    See Also
    --------
    skfewshot.BackboneTransformer : The same idea for any ``torch.nn.Module``.
    LSAEncoder : Text features learnt from the texts themselves.

    Notes
    -----
    **Frozen.** The class attribute ``frozen_features = True`` declares that
    ``fit`` learns nothing from the data and ``transform`` maps each text
    independently, so :func:`~skfewshot.model_selection.evaluate_episodes`
    embeds a whole pool once instead of once per episode.

    **The feature cache.** A text is served from the cache only when the
    encoder's whole state (the digest :class:`~skfewshot.BackboneTransformer`
    documents, computed afresh at every call), the train/eval flag of every
    module in it (those held in plain lists or dicts included), the device
    type of its tensors, the float32 matmul precision and the autocast state
    ``encode`` runs under equal those it was embedded with; the text itself
    is keyed by a digest of its UTF-8 bytes. ``encode`` runs under a
    caller's ``torch.autocast``, and what it returns there is cached apart
    from full-precision embeddings. ``transform`` leaves the train/eval
    flags as they are: ``fit`` puts a ``torch.nn.Module`` encoder in eval
    mode, and one switched back to train mode whose ``encode`` does not call
    ``eval()`` (sentence-transformers' does) embeds in train mode, cached
    apart from its eval-mode embeddings. For a
    sentence-transformers (or Hugging Face ``transformers``) model the state
    is its weights and buffers, every module's settings (``max_seq_length``,
    ``do_lower_case``, pooling and normalisation, prompts) and the whole
    serialised fast tokenizer (its ``tokenizer.json``), so a loaded
    all-MiniLM-L6-v2 embeds each distinct text once per process, and any
    change of weights, tokenizer or settings embeds afresh. Embeddings are
    cached before ``normalize``. A text repeated within one call is encoded
    once. An encoder holding state that digest cannot capture (an object of
    an extension class it does not know) embeds every text afresh, and a
    ``UserWarning`` says why (``cache=False`` silences it).

    Output feature names are ``sentenceencoder0``, ``sentenceencoder1``, ...

    Examples
    --------
    Any object with an ``encode`` method works, here a toy bag-of-letters one:

    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from skfewshot import PrototypeClassifier
    >>> from skfewshot.text import SentenceEncoder
    >>> class Letters:
    ...     def encode(self, texts, batch_size=32, **kwargs):
    ...         return np.array([[t.count(c) for c in "abcde"] for t in texts], float)
    >>> pipe = make_pipeline(SentenceEncoder(Letters()), PrototypeClassifier())
    >>> pipe.fit(["aaa", "aab", "eee", "dee"], [0, 0, 1, 1]).predict(["aa", "ed"])
    array([0, 1])
    """

    frozen_features = True

    _parameter_constraints: dict = {
        "model": [str, HasMethods("encode")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "normalize": ["boolean"],
        "device": [str],
        "cache": ["boolean"],
        "cache_size": [Interval(Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model: str | Any,
        *,
        batch_size: int = 64,
        normalize: bool = False,
        device: str = "auto",
        cache: bool = True,
        cache_size: int = 100_000,
        verbose: int = 0,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = device
        self.cache = cache
        self.cache_size = cache_size
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Sequence[str], y: None = None) -> SentenceEncoder:
        """Load the encoder and record the embedding dimension.

        Parameters
        ----------
        X : list or 1-D array of str
            Texts (the first is encoded to learn the embedding size).

        y : None
            Ignored.

        Returns
        -------
        self : SentenceEncoder
            The fitted encoder.
        """
        texts = _texts(X, type(self).__name__)
        # loaded again when set_params changed the model or its device
        loaded_from = getattr(self, "_loaded_from", (None, None))
        if loaded_from[0] is not self.model or loaded_from[1] != self.device:
            self.encoder_ = self._load()
            self._loaded_from = (self.model, self.device)
        if isinstance(self.encoder_, torch.nn.Module):
            # frozen: eval mode, as sentence-transformers' encode sets it (the
            # cache key reads every module's mode)
            self.encoder_.eval()
        self.n_features_out_ = self._encode(texts[:1]).shape[1]
        return self

    def transform(self, X: Sequence[str]) -> np.ndarray:
        """Embed texts.

        Parameters
        ----------
        X : list or 1-D array of str
            Texts.

        Returns
        -------
        embeddings : ndarray of shape (n_texts, n_features_out), dtype float32
            One embedding per text.
        """
        check_is_fitted(self)
        out = self._encode(_texts(X, type(self).__name__))
        if out.shape[1] != self.n_features_out_:
            raise ValueError(
                f"the encoder now returns {out.shape[1]} features; it returned "
                f"{self.n_features_out_} at fit."
            )
        return out

    @property
    def _n_features_out(self):
        return self.n_features_out_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def _load(self):
        if not isinstance(self.model, str):
            return self.model
        device = str(resolve_device(self.device))
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError(
                f"SentenceEncoder({self.model!r}) needs sentence-transformers to "
                "load a named model; pip install 'skfewshot[text]', or pass an "
                "encoder object with an encode method."
            ) from exc
        return SentenceTransformer(self.model, device=device)

    def _encode(self, texts):
        """Embeddings of ``texts``: cached ones read back, the others encoded."""
        key = self._encoder_key() if self.cache else None
        if key is None:
            out = self._compute(texts, np.arange(len(texts)), None)
        else:
            out = cached_features(
                key,
                len(texts),
                lambda rows: text_keys(texts[rows]),
                lambda rows, out: self._compute(texts, rows, out),
                self.cache_size,
                self._encoder_key,
            )
        return normalize(out, copy=False) if self.normalize else out

    def _encoder_key(self):
        """Cache key of the encoder's state (None: do not cache)."""
        encoder = self.encoder_
        devices = (
            sorted({t.device.type for t in encoder.state_dict().values()})
            if isinstance(encoder, torch.nn.Module)
            else []
        )
        settings = f"text|{devices}|{float32_settings()}|autocast={autocast_state()}"
        return state_key(encoder, settings, "encoder", stacklevel=4)

    def _encode_batches(self, batch):
        """``encode(batch)``: one call, or ``batch_size`` texts a call when verbose."""
        if self.verbose <= 0:
            return self.encoder_.encode(batch, batch_size=self.batch_size)
        parts = [
            np.asarray(
                self.encoder_.encode(batch[part], batch_size=self.batch_size),
                dtype=np.float32,
            )
            for part in tqdm(
                list(gen_batches(len(batch), self.batch_size)),
                desc=type(self).__name__,
                unit="batch",
            )
        ]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _compute(self, texts, rows, out):
        """Encode ``texts[rows]`` into ``out[rows]`` (allocated here when None).

        A text repeated in ``rows`` is encoded once.
        """
        first = {}
        where = np.array([first.setdefault(texts[i], len(first)) for i in rows])
        batch = list(first)
        name = type(self.encoder_).__name__
        emb = np.asarray(self._encode_batches(batch), dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(batch):
            raise ValueError(
                f"the encoder returned an array of shape {emb.shape} for "
                f"{len(batch)} texts; expected (n_texts, n_features)."
            )
        if out is not None and emb.shape[1] != out.shape[1]:
            raise ValueError(
                f"the encoder {name} returned {emb.shape[1]} features per text, "
                f"but {out.shape[1]} for earlier texts in the same state."
            )
        firsts = rows[np.unique(where, return_index=True)[1]]
        check_finite_features(emb, f"the encoder {name}", firsts)
        if out is None:
            out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
        out[rows] = emb[where]
        return out


class LSAEncoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Latent semantic analysis text features: TF-IDF, then truncated SVD.

    ``fit`` learns a TF-IDF vocabulary (sublinear term frequency, word
    n-grams) from the texts and a truncated SVD of their TF-IDF matrix;
    ``transform`` maps texts to their coordinates on the SVD components.
    Unlike :class:`SentenceEncoder` it is not frozen: it learns from the
    texts it is fitted on, with no model to download. The recipe is
    ``make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=...),
    TruncatedSVD(...))`` with the number of components capped to what the
    vocabulary allows.

    Parameters
    ----------
    n_components : int, default=256
        Number of SVD components wanted. At most ``n_terms - 1`` are kept
        (``n_terms``: the size of the learnt vocabulary), and at most the
        number of texts.

    ngram_range : tuple (min_n, max_n), default=(1, 2)
        Word n-grams of the vocabulary, as in
        :class:`~sklearn.feature_extraction.text.TfidfVectorizer`.

    random_state : int, RandomState instance or None, default=0
        Seed of the randomized SVD; the same seed gives the same features.

    Attributes
    ----------
    vectorizer_ : sklearn.feature_extraction.text.TfidfVectorizer
        The fitted TF-IDF vectorizer.

    svd_ : sklearn.decomposition.TruncatedSVD
        The fitted truncated SVD.

    n_components_ : int
        Number of features ``transform`` returns.

    See Also
    --------
    SentenceEncoder : Embeddings from a frozen, pretrained sentence encoder.
    sklearn.decomposition.TruncatedSVD : The SVD step.

    Notes
    -----
    ``fit_transform`` returns the SVD's own ``fit_transform`` output, which
    equals ``fit(X).transform(X)`` up to floating-point rounding.

    Output feature names are ``lsaencoder0``, ``lsaencoder1``, ...

    Examples
    --------
    >>> from skfewshot.text import LSAEncoder
    >>> texts = ["my card is lost", "I lost my card", "top up failed",
    ...          "the top up did not work", "card not arrived"]
    >>> lsa = LSAEncoder(n_components=3)
    >>> features = lsa.fit_transform(texts)
    >>> features.shape, features.dtype
    ((5, 3), dtype('float32'))
    >>> lsa.transform(["where is my card"]).shape
    (1, 3)
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "ngram_range": [tuple],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components: int = 256,
        *,
        ngram_range: tuple[int, int] = (1, 2),
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.n_components = n_components
        self.ngram_range = ngram_range
        self.random_state = random_state

    def fit(self, X: Sequence[str], y: None = None) -> LSAEncoder:
        """Learn the TF-IDF vocabulary and the SVD components of ``X``.

        Parameters
        ----------
        X : list or 1-D array of str
            Texts.

        y : None
            Ignored.

        Returns
        -------
        self : LSAEncoder
            The fitted encoder.
        """
        self.fit_transform(X)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X: Sequence[str], y: None = None) -> np.ndarray:
        """Fit to ``X`` and return its LSA features.

        Parameters
        ----------
        X : list or 1-D array of str
            Texts.

        y : None
            Ignored.

        Returns
        -------
        features : ndarray of shape (n_texts, ``n_components_``), dtype float32
            The texts' coordinates on the SVD components.
        """
        texts = _texts(X, type(self).__name__)
        self.vectorizer_ = TfidfVectorizer(
            sublinear_tf=True, ngram_range=self.ngram_range
        )
        tfidf = self.vectorizer_.fit_transform(texts)
        n_terms = tfidf.shape[1]
        if n_terms < 2:
            raise ValueError(
                f"LSAEncoder needs at least 2 distinct terms in the texts to fit "
                f"an SVD; the {len(texts)} texts have {n_terms}."
            )
        self.svd_ = TruncatedSVD(
            n_components=min(self.n_components, n_terms - 1),
            random_state=self.random_state,
        )
        features = self.svd_.fit_transform(tfidf)
        self.n_components_ = int(features.shape[1])
        return features.astype(np.float32)

    def transform(self, X: Sequence[str]) -> np.ndarray:
        """Map texts to their LSA features.

        Parameters
        ----------
        X : list or 1-D array of str
            Texts.

        Returns
        -------
        features : ndarray of shape (n_texts, ``n_components_``), dtype float32
            The texts' coordinates on the SVD components.
        """
        check_is_fitted(self)
        tfidf = self.vectorizer_.transform(_texts(X, type(self).__name__))
        return self.svd_.transform(tfidf).astype(np.float32)

    @property
    def _n_features_out(self):
        return self.n_components_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
