"""Text encoders (sentence-transformers style) as scikit-learn transformer steps."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from ._torch_utils import resolve_device
from ._utils import check_finite_features

__all__ = ["SentenceEncoder"]


def _texts(X):
    """Validate a 1-D collection of strings and return it as a list."""
    if isinstance(X, str):
        raise ValueError(
            "SentenceEncoder expects a list or 1-D array of strings, got a single "
            "string; wrap it in a list."
        )
    arr = np.asarray(X, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:  # a one-column frame or array
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            f"SentenceEncoder expects a 1-D collection of strings, got an array of "
            f"shape {arr.shape}."
        )
    if arr.size == 0:
        raise ValueError("SentenceEncoder got an empty input (0 texts).")
    bad = [type(t).__name__ for t in arr if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"SentenceEncoder expects strings; got {len(bad)} non-string item(s), "
            f"e.g. of type {bad[0]}."
        )
    return arr.tolist()


class SentenceEncoder(TransformerMixin, BaseEstimator):
    """A frozen sentence encoder as a transformer: texts in, embeddings out.

    Wraps a `sentence-transformers <https://www.sbert.net>`_ model (or any
    object with an ``encode(list_of_str, batch_size=..., ...) -> array`` method)
    so that texts go through a :class:`~sklearn.pipeline.Pipeline` like images
    go through :class:`~skfewshot.BackboneTransformer`: ``make_pipeline(
    SentenceEncoder("all-MiniLM-L6-v2"), PrototypeClassifier())`` is a few-shot
    intent classifier (e.g. on :func:`~skfewshot.datasets.load_banking77`).

    The encoder is frozen: ``fit`` only loads the model (once per instance;
    loading a named model needs the ``text`` extra, ``pip install
    'skfewshot[text]'``, and the model files on disk or a network).

    Parameters
    ----------
    model : str or object with an ``encode`` method
        A sentence-transformers model name or path, loaded at ``fit`` with
        ``sentence_transformers.SentenceTransformer(model, device=...)``; or a
        ready encoder object, used as is.
    batch_size : int, default=64
        Texts per forward pass.
    normalize : bool, default=False
        L2-normalise the embeddings (the cosine heads normalise anyway).
    device : str, default="auto"
        For a model name: ``"auto"`` picks CUDA, then Apple MPS, then CPU.

    Attributes
    ----------
    encoder_ : object
        The loaded encoder.
    n_features_out_ : int
        Embedding dimension.

    See Also
    --------
    skfewshot.BackboneTransformer : The same idea for any ``torch.nn.Module``.

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

    _parameter_constraints: dict = {
        "model": [str, HasMethods("encode")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "normalize": ["boolean"],
        "device": [str],
    }

    def __init__(self, model, *, batch_size=64, normalize=False, device="auto"):
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = device

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
        out = np.asarray(
            self.encoder_.encode(texts, batch_size=self.batch_size), dtype=np.float32
        )
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise ValueError(
                f"the encoder returned an array of shape {out.shape} for "
                f"{len(texts)} texts; expected (n_texts, n_features)."
            )
        check_finite_features(out, f"the encoder {type(self.encoder_).__name__}")
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the encoder and record the embedding dimension.

        Parameters
        ----------
        X : list or 1-D array of str
            Texts (one is encoded to learn the embedding size).
        y : ignored

        Returns
        -------
        self : SentenceEncoder
        """
        texts = _texts(X)
        if getattr(self, "_loaded_from", None) is not self.model:
            self.encoder_ = self._load()
            self._loaded_from = self.model
        self.n_features_out_ = self._encode(texts[:1]).shape[1]
        return self

    def transform(self, X):
        """Embed texts.

        Parameters
        ----------
        X : list or 1-D array of str

        Returns
        -------
        embeddings : ndarray of shape (n_texts, n_features_out), float32
        """
        check_is_fitted(self)
        out = self._encode(_texts(X))
        if out.shape[1] != self.n_features_out_:
            raise ValueError(
                f"the encoder now returns {out.shape[1]} features; it returned "
                f"{self.n_features_out_} at fit."
            )
        return out

    def get_feature_names_out(self, input_features=None):
        """Names ``sentenceencoder0``, ``sentenceencoder1``, ...

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        names : ndarray of str
        """
        check_is_fitted(self)
        return np.array([f"sentenceencoder{i}" for i in range(self.n_features_out_)])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags
