"""BackboneTransformer: a frozen ``torch.nn.Module`` as a scikit-learn transformer.

The backbone turns raw inputs (images, token ids, rows) into feature vectors; as
a transformer step it composes with ``Pipeline``, ``GridSearchCV`` and
``clone``. Features are computed in eval mode under ``torch.inference_mode``,
in batches, on the resolved device, and kept in a process-wide feature cache
keyed by the backbone's weights and each row's content, so grid-search folds
and evaluation episodes over one data set cost one forward per row.
"""

from __future__ import annotations

import io
import os
import threading
import weakref
from collections import OrderedDict
from hashlib import blake2b
from numbers import Integral

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from tqdm.auto import tqdm

from ._torch_utils import iter_batches, resolve_device, to_numpy, torch_dtype

__all__ = ["BackboneTransformer"]

# numpy dtype in which rows are held on the host (bfloat16 has none: float32).
_HOST_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "bfloat16": np.float32,
}
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class _FeatureCache:
    """Process-wide LRU map ``(backbone key, row key) -> float32 feature row``.

    One store for every transformer in the process, so the clones that
    ``GridSearchCV`` or episodic evaluation make of one frozen backbone reuse
    each other's features. The number of rows it holds is capped by the
    ``cache_size`` of the transformer that writes to it.
    """

    def __init__(self):
        self._rows = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._rows)

    def get(self, keys):
        """Cached rows for ``keys`` (``None`` where absent), marked recently used."""
        found = []
        with self._lock:
            for key in keys:
                row = self._rows.get(key)
                if row is not None:
                    self._rows.move_to_end(key)
                found.append(row)
        return found

    def put(self, keys, rows, max_rows):
        """Store ``rows`` under ``keys``, then evict the oldest beyond ``max_rows``."""
        with self._lock:
            for key, row in zip(keys, rows):
                self._rows[key] = row
                self._rows.move_to_end(key)
            while len(self._rows) > max_rows:
                self._rows.popitem(last=False)

    def clear(self):
        with self._lock:
            self._rows.clear()


_CACHE = _FeatureCache()
# module -> (cheap stamp of its tensors, digest of their bytes); see _weights_digest.
_WEIGHT_DIGESTS = weakref.WeakKeyDictionary()
# module -> lock held while the module is switched to eval mode and run.
_MODULE_LOCKS = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def _module_lock(module):
    with _LOCKS_LOCK:
        lock = _MODULE_LOCKS.get(module)
        if lock is None:
            lock = _MODULE_LOCKS[module] = threading.Lock()
        return lock


def _weights_digest(module) -> bytes:
    """Digest of every parameter and buffer (names, dtypes, shapes, bytes).

    Memoised per module object under a stamp of (storage pointer, version
    counter, device) of each tensor: an optimiser step, ``load_state_dict`` or
    a device move changes the stamp, so the weights are hashed again.
    """
    tensors = list(module.state_dict(keep_vars=True).items())
    stamp = tuple(
        (name, t.data_ptr(), t._version, str(t.device), t.dtype, tuple(t.shape))
        for name, t in tensors
    )
    memo = _WEIGHT_DIGESTS.get(module)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    h = blake2b(digest_size=16)
    for name, t in tensors:
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        data = t.detach().reshape(-1).contiguous().view(torch.uint8).cpu()
        h.update(data.numpy().tobytes())
    digest = h.digest()
    _WEIGHT_DIGESTS[module] = (stamp, digest)
    return digest


def _config_repr(module) -> str:
    """The module's structure and plain attributes (what weights do not show)."""
    parts = [f"{type(module).__module__}.{type(module).__qualname__}", repr(module)]
    plain = (bool, int, float, str, type(None))
    for name, sub in module.named_modules():
        attrs = sorted(
            (k, repr(v))
            for k, v in vars(sub).items()
            if not k.startswith("_") and k != "training" and isinstance(v, plain)
        )
        parts.append(f"{name}:{attrs}")
    return "\n".join(parts)


def _has_lazy_parameters(module) -> bool:
    is_lazy = torch.nn.parameter.is_lazy
    return any(is_lazy(p) for p in module.parameters())


def _on_cpu(module) -> bool:
    return all(t.device.type == "cpu" for t in module.state_dict().values())


def _cpu_copy(module):
    """A copy of ``module`` with every tensor on the CPU, without using GPU memory."""
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=False)


class BackboneTransformer(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Turn a frozen ``torch.nn.Module`` into a scikit-learn transformer.

    ``transform`` runs the module in eval mode under ``torch.inference_mode``,
    in batches of ``batch_size`` on the resolved device, and returns the
    outputs as a float32 array of shape (n_samples, n_features), trailing
    dimensions flattened. The backbone is frozen: ``fit`` only validates the
    input, runs one batch to learn the output width and records it; no weight
    ever changes.

    Parameters
    ----------
    module : torch.nn.Module
        The backbone. It receives a tensor of shape ``(batch, *per_sample_shape)``
        and returns a tensor whose first dimension is the batch. It is used in
        place, not copied: ``fit`` and ``transform`` move it to the resolved
        device (as skorch does), switch it (and every submodule) to eval mode
        for the forward passes and then restore each submodule's previous
        train/eval flag. ``requires_grad`` flags are never touched. Lazy
        modules must be materialised (called once) before they are wrapped.

    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA, then Apple MPS, then CPU. An explicit device
        this machine lacks (``"cuda"`` without CUDA) raises ``ValueError`` at
        ``fit`` or ``transform``. The device is resolved again at every
        ``transform``, so an estimator pickled on a GPU machine transforms on
        a CPU-only one with ``device="auto"``.

    batch_size : int, default=256
        Rows per forward pass. Results do not depend on it (up to the
        backbone's own numerical noise across batch sizes).

    preprocess : callable or None, default=None
        Applied **per sample**: ``preprocess(x)`` maps one item of ``X`` (a
        PIL image, a file path, a string, an array...) to an array or tensor;
        all results must share one shape and are stacked into a batch, as with
        torchvision transforms. Floating results are cast to ``dtype``; integer
        results (e.g. token ids of fixed length for a text encoder) are passed
        as int64. With ``preprocess=None``, ``X`` must be numeric.

    dtype : {"float32", "float64", "float16", "bfloat16"}, default="float32"
        Dtype of the input tensors handed to the module (it must match the
        module's weights; use ``amp`` for mixed precision). The output is
        always float32.

    amp : bool, default=False
        Run the forward pass under ``torch.autocast`` for the resolved device
        (float16 on CUDA, bfloat16 on CPU).

    cache : bool, default=True
        Reuse features: rows already transformed by a backbone with the same
        weights and settings are read back from a process-wide cache instead
        of going through the backbone again. Keys are a blake2b digest of the
        backbone (class, ``repr``, plain attributes, every parameter and
        buffer), ``dtype``, ``amp`` and device type, and of each row's bytes,
        dtype and shape (after ``preprocess``). Because the key is the
        backbone's content, clones (as made by ``GridSearchCV`` and episodic
        evaluation) share features, and changing the weights gives new keys.
        The cache lives in the process, is never pickled, and can be emptied
        with :meth:`clear_cache`.

    cache_size : int, default=100_000
        Most rows the process-wide cache keeps after this transformer writes
        to it; the least recently used rows are evicted first. Memory is about
        ``cache_size * n_features * 4`` bytes (100,000 rows of 640 features:
        256 MB).

    verbose : int, default=0
        Show a tqdm progress bar over batches when > 0.

    Attributes
    ----------
    module_ : torch.nn.Module
        The fitted backbone: ``module`` itself, on the resolved device.

    input_shape_ : tuple of int
        Per-sample shape of the input seen in ``fit`` (after ``preprocess``).

    n_features_out_ : int
        Number of features ``transform`` returns (the flattened output width).

    n_features_in_ : int
        Number of features seen during ``fit``; only defined when ``X`` was a
        2-D array without ``preprocess``.

    feature_names_in_ : ndarray of shape (n_features,)
        Names of features seen during ``fit``; only defined when ``X`` has
        string column names.

    See Also
    --------
    skfewshot.prototype.PrototypeClassifier : Nearest-prototype head on the features.
    skfewshot.finetune.FineTunedCosineClassifier : Fine-tuned cosine head.

    Notes
    -----
    Output feature names are ``backbonetransformer0``, ``backbonetransformer1``,
    ... (scikit-learn's class-name prefix convention, as ``PCA`` gives
    ``pca0``...), so ``set_output(transform="pandas")`` works.

    Pickling moves the module to the CPU first (a copy; the live module stays
    where it is), so a file written on a GPU machine loads on a CPU-only one;
    the next ``transform`` resolves ``device`` again and moves it there.

    ``sklearn.base.clone`` deep-copies ``module`` like any other parameter;
    clones recompute nothing thanks to the weight-keyed cache, but each holds
    its own copy of the weights while it lives. The cache is per process: with
    ``n_jobs`` worker processes (joblib's loky backend) each worker computes a
    row's features once and reuses them for every later task it runs.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skfewshot.backbone import BackboneTransformer
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16))
    >>> X = np.random.RandomState(0).rand(10, 8, 8).astype(np.float32)
    >>> backbone = BackboneTransformer(net, device="cpu", batch_size=4)
    >>> features = backbone.fit_transform(X)
    >>> features.shape, features.dtype
    ((10, 16), dtype('float32'))
    >>> backbone.input_shape_, backbone.n_features_out_
    ((8, 8), 16)
    >>> backbone.get_feature_names_out()[:2]
    array(['backbonetransformer0', 'backbonetransformer1'], dtype=object)
    """

    _parameter_constraints: dict = {
        "module": [torch.nn.Module],
        "device": [str, torch.device],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "preprocess": [callable, None],
        "dtype": [StrOptions(set(_HOST_DTYPES))],
        "amp": ["boolean"],
        "cache": ["boolean"],
        "cache_size": [Interval(Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        module,
        *,
        device="auto",
        batch_size=256,
        preprocess=None,
        dtype="float32",
        amp=False,
        cache=True,
        cache_size=100_000,
        verbose=0,
    ):
        self.module = module
        self.device = device
        self.batch_size = batch_size
        self.preprocess = preprocess
        self.dtype = dtype
        self.amp = amp
        self.cache = cache
        self.cache_size = cache_size
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate ``X``, run the backbone on one batch and record its output.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, ...), or sequence
            Inputs with any per-sample shape the module takes; with
            ``preprocess``, a sequence of items it accepts.

        y : None
            Ignored.

        Returns
        -------
        self : BackboneTransformer
            The fitted transformer.
        """
        if _has_lazy_parameters(self.module):
            raise ValueError(
                "module has uninitialised (lazy) parameters; call it once on an "
                "example batch before wrapping it, so that the backbone is frozen."
            )
        device = resolve_device(self.device)
        for stale in ("n_features_in_", "feature_names_in_"):
            if hasattr(self, stale):
                delattr(self, stale)
        X = self._validate_input(X, reset=True)
        self.module_ = self.module.to(device)
        self.input_shape_ = tuple(int(s) for s in X.shape[1:])
        features = self._embed(X[: self.batch_size], device, expected=None)
        self.n_features_out_ = int(features.shape[1])
        return self

    def transform(self, X):
        """Compute the backbone features of ``X``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, ...), or sequence
            Inputs as in ``fit``.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out), dtype float32
            The backbone outputs, trailing dimensions flattened.
        """
        check_is_fitted(self)
        device = resolve_device(self.device)
        X = self._validate_input(X, reset=False)
        if X.ndim - 1 != len(self.input_shape_):
            raise ValueError(
                f"X has per-sample shape {X.shape[1:]} but this "
                f"{type(self).__name__} was fitted on per-sample shape "
                f"{self.input_shape_}."
            )
        self.module_.to(device)
        return self._embed(X, device, expected=self.n_features_out_)

    @staticmethod
    def clear_cache():
        """Empty the process-wide feature cache shared by every transformer.

        Returns
        -------
        n_rows : int
            Number of cached rows that were dropped.

        Examples
        --------
        >>> from skfewshot.backbone import BackboneTransformer
        >>> n_dropped = BackboneTransformer.clear_cache()
        >>> BackboneTransformer.clear_cache()
        0
        """
        n_rows = len(_CACHE)
        _CACHE.clear()
        return n_rows

    @property
    def _n_features_out(self):
        return self.n_features_out_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.string = self.preprocess is not None
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def __getstate__(self):
        state = dict(super().__getstate__())
        copies = {}
        for key in ("module", "module_"):
            module = state.get(key)
            if isinstance(module, torch.nn.Module) and not _on_cpu(module):
                if id(module) not in copies:
                    copies[id(module)] = _cpu_copy(module)
                state[key] = copies[id(module)]
        return state

    # -- input -------------------------------------------------------------

    def _validate_input(self, X, reset):
        """``X`` -> C-contiguous host array of the host dtype, finite, >= 2-D."""
        host_dtype = _HOST_DTYPES[self.dtype]
        if self.preprocess is not None:
            X = self._preprocess(X)
            integer = X.dtype.kind in "iub"
            X = check_array(
                X,
                dtype=np.int64 if integer else host_dtype,
                allow_nd=True,
                ensure_min_features=0,
                input_name="preprocess(X)",
            )
            return np.ascontiguousarray(X)
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu()
            X = (X.float() if X.dtype == torch.bfloat16 else X).numpy()
        elif _holds_text(X):
            raise ValueError(
                "X holds strings or paths but preprocess=None; pass "
                "preprocess=<callable turning one item into an array>."
            )
        X = validate_data(self, X, reset=reset, dtype=host_dtype, allow_nd=True)
        if reset and X.ndim != 2 and hasattr(self, "n_features_in_"):
            del self.n_features_in_  # axis 1 of an image batch is not a feature
        return np.ascontiguousarray(X)

    def _preprocess(self, X):
        if isinstance(X, torch.Tensor) or not hasattr(X, "__len__"):
            X = list(X) if hasattr(X, "__iter__") else X
        if not hasattr(X, "__len__") or isinstance(X, (str, bytes)):
            raise TypeError(
                f"with preprocess, X must be a sequence of samples; got "
                f"{type(X).__name__}."
            )
        if len(X) == 0:
            raise ValueError("X is empty: found 0 samples, a minimum of 1 is required.")
        items = X.iloc if hasattr(X, "iloc") else X
        arrays = []
        for i in range(len(X)):
            out = self.preprocess(items[i])
            if isinstance(out, torch.Tensor):
                out = out.detach().cpu()
                out = out.float() if out.dtype == torch.bfloat16 else out
            arr = np.asarray(out)
            if arr.ndim == 0:
                raise ValueError(
                    f"preprocess returned a scalar for sample {i}; it must return "
                    "an array or tensor per sample."
                )
            if arrays and arr.shape != arrays[0].shape:
                raise ValueError(
                    f"preprocess returned shape {arr.shape} for sample {i} but "
                    f"{arrays[0].shape} for sample 0; every sample must give the "
                    "same shape to be stacked into a batch."
                )
            arrays.append(arr)
        return np.stack(arrays)

    # -- features ----------------------------------------------------------

    def _embed(self, X, device, expected):
        """Features of the host array ``X``: cached rows read back, others computed."""
        n = X.shape[0]
        if not self.cache:
            return self._forward(X, device, expected)
        keys = self._row_keys(X, device)
        found = _CACHE.get(keys)
        missing = np.array([i for i, row in enumerate(found) if row is None], int)
        computed = self._forward(X[missing], device, expected) if missing.size else None
        width = computed.shape[1] if computed is not None else found[0].shape[0]
        out = np.empty((n, width), dtype=np.float32)
        for i, row in enumerate(found):
            if row is not None:
                out[i] = row
        if computed is not None:
            out[missing] = computed
            _CACHE.put(
                [keys[i] for i in missing],
                [row.copy() for row in computed],
                self.cache_size,
            )
        return out

    def _row_keys(self, X, device):
        """One 32-byte key per row: backbone digest + row digest."""
        model = blake2b(digest_size=16)
        model.update(_config_repr(self.module_).encode())
        model.update(_weights_digest(self.module_))
        model.update(f"|{self.dtype}|{self.amp}|{device.type}".encode())
        prefix = model.digest()
        base = blake2b(digest_size=16)
        base.update(f"{X.dtype.str}|{X.shape[1:]}|".encode())
        keys = []
        for row in X:
            h = base.copy()
            h.update(row.data)
            keys.append(prefix + h.digest())
        return keys

    def _forward(self, X, device, expected):
        """Run the module on ``X`` batch by batch: eval mode, inference mode."""
        module = self.module_
        in_dtype = torch.int64 if X.dtype == np.int64 else torch_dtype(self.dtype)
        chunks = []
        batches = tqdm(
            list(iter_batches(X.shape[0], self.batch_size)),
            desc=type(self).__name__,
            unit="batch",
            disable=self.verbose <= 0,
        )
        with _module_lock(module):
            modes = [(m, m.training) for m in module.modules()]
            module.eval()
            try:
                with (
                    torch.inference_mode(),
                    torch.autocast(device.type, enabled=self.amp),
                ):
                    for batch in batches:
                        xb = torch.from_numpy(np.ascontiguousarray(X[batch]))
                        out = self._call_module(xb.to(device, in_dtype))
                        out = out.reshape(out.shape[0], -1)
                        if expected is not None and out.shape[1] != expected:
                            raise ValueError(
                                f"the backbone returned {out.shape[1]} features per "
                                f"sample for input of per-sample shape {X.shape[1:]}, "
                                f"but {expected} during fit."
                            )
                        chunks.append(to_numpy(out))
            finally:
                for m, training in modes:
                    m.training = training
        return np.concatenate(chunks)

    def _call_module(self, xb):
        try:
            out = self.module_(xb)
        except _OOM:
            raise
        except Exception as exc:
            raise ValueError(
                f"the backbone rejected input of shape {tuple(xb.shape[1:])} per "
                f"sample (batch {tuple(xb.shape)}): {exc}"
            ) from exc
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"the backbone returned {type(out).__name__}; expected a tensor of "
                "shape (batch, ...)."
            )
        if out.ndim == 0 or out.shape[0] != xb.shape[0]:
            raise ValueError(
                f"the backbone returned shape {tuple(out.shape)} for a batch of "
                f"{xb.shape[0]} samples; the first dimension must be the batch."
            )
        return out


def _holds_text(X) -> bool:
    """Whether ``X`` is a sequence of str / bytes / paths (needs ``preprocess``)."""
    if isinstance(X, np.ndarray):
        return (
            X.dtype.kind in "USO"
            and X.size > 0
            and isinstance(X.flat[0], (str, bytes, os.PathLike))
        )
    if isinstance(X, (list, tuple)) and len(X) > 0:
        return isinstance(X[0], (str, bytes, os.PathLike))
    return False
