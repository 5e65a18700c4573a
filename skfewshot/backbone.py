"""BackboneTransformer: a frozen ``torch.nn.Module`` as a scikit-learn transformer.

The backbone turns raw inputs (images, token ids, rows) into feature vectors; as
a transformer step it composes with ``Pipeline``, ``GridSearchCV`` and
``clone``. Features are computed in eval mode under ``torch.inference_mode``,
in batches, on the resolved device, and kept in a process-wide feature cache
keyed by the backbone's whole state and each row's content, so grid-search folds
and evaluation episodes over one data set cost one forward per row (the cache
itself is :mod:`skfewshot._feature_cache`).
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import math
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from tqdm.auto import tqdm

from ._feature_cache import FEATURE_CACHE, cached_features, row_keys, state_key
from ._limits import SCALE_BOUNDS
from ._persistence import portable_state, restored_state
from ._torch_utils import (
    amp_context,
    autocast_state,
    float32_settings,
    resolve_device,
    to_host_array,
    torch_dtype,
)
from ._utils import check_finite_features
from .augment import _affine_entries, _resample

__all__ = ["BackboneTransformer"]

# numpy dtype in which rows are held on the host (bfloat16 has none: float32).
_HOST_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "bfloat16": np.float32,
}
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# Attributes holding the torch module (one object after fit).
_MODULE_KEYS = ("module", "module_")


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
        train/eval flag. ``requires_grad`` flags are never touched. If
        ``fit`` or ``transform`` fails, the module is left as it was: the
        device is checked before the module moves, and after a move every
        parameter, gradient and buffer is put back (the original tensors are
        kept during the call). Lazy modules must be materialised (called
        once) before they are wrapped. A backbone that returns NaN or inf
        for a finite input raises ``ValueError`` naming it and the row.

    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA, then Apple MPS, then CPU. An explicit device
        this machine cannot run on (``"cuda"`` without CUDA, ``"xpu"`` or
        ``"xla"`` without their backend, ``"meta"``) raises ``ValueError``
        naming it at ``fit`` or ``transform``, before the module moves. The
        device is resolved again at every ``transform``, so an estimator
        pickled on a GPU machine transforms on a CPU-only one with
        ``device="auto"``.

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
        (float16 on CUDA and MPS, bfloat16 on CPU, whatever
        ``torch.set_autocast_dtype`` says; on other devices, torch's autocast
        dtype for them). With ``amp=False`` the forward runs in full
        precision even inside a caller's ``torch.autocast`` block for that
        device type.

    cache : bool, default=True
        Reuse features: rows already transformed by a backbone in the same
        state are read back from a process-wide cache instead of going
        through the backbone again, so clones (as made by ``GridSearchCV``
        and episodic evaluation) share features. A row is served from the
        cache only when the backbone's whole state and the settings equal
        those it was computed with; see Notes for exactly what the key holds
        and what it assumes. The cache lives in the process, is never
        pickled, and can be emptied with :meth:`clear_cache`.

    cache_size : int, default=100_000
        Most rows the process-wide cache keeps after this transformer writes
        to it; the least recently used rows are evicted first, and a call
        that computes more rows than that stores only its last
        ``cache_size``. The cache then holds at most ``cache_size * n_features
        * 4`` bytes of rows (100,000 rows of 640 features: 256 MB) plus about
        130 bytes per row for its index. A ``transform`` of ``n`` rows needs,
        besides its output, about 24 bytes per row while it runs.

    test_time_shifts : int, sequence of (int, int) pairs or None, default=None
        Test-time augmentation for image backbones: each row's features are
        the mean of the backbone's features of shifted copies of the image.
        An int ``s`` gives every shift ``(dy, dx)`` with ``-s <= dy, dx <= s``
        (``(2s + 1)**2`` copies, ``dy`` slowest); a sequence gives the
        ``(dy, dx)`` pairs themselves, in pixels. A shift by ``(dy, dx)``
        moves the content ``dy`` rows down and ``dx`` columns right, filling
        the uncovered border with zeros (the background); whole pixels, so
        no interpolation. ``None`` or ``0``: no augmentation. Each copy is one
        row of a forward pass (``batch_size`` copies per pass), so transforms
        cost ``len(shifts)`` times as many forwards; the feature cache keeps
        the averaged row, keyed by the shifts as well. ``X`` must be float
        images of shape ``(n, height, width)`` or ``(n, channels, height,
        width)`` (after ``preprocess``); anything else, or a shift of a whole
        image size or more, raises ``ValueError`` naming this parameter.

    test_time_warps : sequence of (float, float) pairs or None, default=None
        More test-time augmentation: ``(degrees, scale)`` pairs, each a copy of
        the image rotated by ``degrees`` (counter-clockwise as displayed) and
        scaled by ``scale`` about its centre, as
        :class:`~skfewshot.augment.RandomAffine` warps (bilinear, zeros
        outside). Combined with ``test_time_shifts``: every warp, then every
        shift of it (``len(warps) * len(shifts)`` copies, warps slowest); a
        row's features are the mean over all copies. ``(0, 1)`` is the image
        itself, not resampled. E.g. ``[(a, s) for a in (-10, 0, 10) for s in
        (0.9, 1, 1.1)]`` with ``test_time_shifts=1`` gives 81 copies. ``None``:
        no warp. Same requirements on ``X`` as ``test_time_shifts``; degrees
        must be finite and scales in ``[0.001, 1000]`` (as
        :class:`~skfewshot.augment.RandomAffine`'s), or ``ValueError`` names
        this parameter.

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

    **Saving.** Pickle and joblib store the module object itself (any
    ``nn.Module``), copied to the CPU first (the live module stays where it
    is), so a file written on a GPU machine loads on a CPU-only one; the next
    ``transform`` resolves ``device`` again and moves it there. ``skops.io``
    (:func:`skfewshot.persistence.dump`) stores a :mod:`skfewshot.models`
    backbone as plain data: its architecture, constructor arguments and
    weights (numpy arrays on the host), every submodule's train/eval flag and
    which parameters are frozen; loading checks all of it and rebuilds the
    module on the CPU, bit for bit. Any other module (your own class, a
    torchvision model), or one whose state that description would not
    reproduce (an added attribute or hook, non-contiguous or non-finite
    weights), makes ``skops.io.dump`` raise ``TypeError`` naming it: skops
    cannot store an arbitrary module without running its code at load.

    **Frozen.** The class attribute ``frozen_features = True`` declares that
    ``fit`` learns nothing from the data and ``transform`` maps each row
    independently, so :func:`~skfewshot.model_selection.evaluate_episodes`
    transforms a whole pool once instead of once per episode.

    **The feature cache.** A cached row is keyed by (1) a SHA-256 digest of
    the backbone's state, computed afresh at every ``fit`` and ``transform``
    (never memoised: an edit through ``p.data`` or of a plain tensor
    attribute is seen at the next call; hashing reads every weight once per
    call); (2) ``dtype``, ``amp``, the device type, the float32 matmul
    precision, the autocast state the forward runs under (``amp``'s, and a
    caller's ``torch.autocast`` for other device types) and the input's dtype
    and per-sample shape; (3) a blake2b digest of the row's bytes (after
    ``preprocess``). The state digest covers the module and every submodule:
    the class (its identity in the process, so a class redefined under the
    same name is another backbone, and the code of its methods, so a method
    edited in place, as IPython's ``%autoreload`` does, is seen), every
    parameter and buffer (persistent or not) by dtype, shape and bytes, and
    every other instance attribute, private ones included: tensors and numpy
    arrays by bytes, containers recursively, scalars and strings by type and
    ``repr``, functions and classes by identity and code, instances of
    pure-Python classes by their attribute dict. Changing any of these
    invalidates the rows of the old state (they stay until evicted, and are
    served again if the old state comes back). The train/eval flags of the
    module and its registered submodules are not part of the key: their
    features are always computed in eval mode. A module reached only
    through a plain attribute (a list or dict of modules rather than an
    ``nn.ModuleList``) is not switched by ``eval()``, so its flag is part of
    the key.

    While a backbone is switched to eval mode and run, it holds a lock of
    each of its modules: another forward that uses one of those modules,
    e.g. a transformer of a shared submodule, waits for it, so neither
    switches the other's flags; forwards of unrelated backbones run at
    once. The locks are re-entrant, so a forward may itself call a
    transformer in its own thread; a forward that hands a transform of one
    of its own modules to another thread and waits for it waits for ever.

    The cache assumes that ``forward`` is a deterministic function of the
    module's parameters, buffers and instance attributes and of the input:
    it does not read class attributes, global variables, random numbers or
    files, nor state hidden in closures. Where a module holds state the key
    cannot capture (a closure, an object of a compiled class such as a
    tokenizer, a non-strided tensor) or forward or forward-pre hooks are
    registered on any submodule or globally, the cache is bypassed for that
    call: every row is computed afresh, nothing is stored, and a
    ``UserWarning`` says why (once per message, under Python's default
    warning filter; ``cache=False`` silences it). Rows of non-finite
    features are never stored.

    ``sklearn.base.clone`` deep-copies ``module`` like any other parameter;
    clones recompute nothing thanks to the state-keyed cache, but each holds
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

    Test-time augmentation: with ``nn.Flatten`` as the backbone, the features
    are the mean of the image and its copy shifted one column right.

    >>> image = np.array([[[1.0, 2.0], [3.0, 4.0]]], dtype=np.float32)
    >>> tta = BackboneTransformer(torch.nn.Flatten(), device="cpu",
    ...                           test_time_shifts=[(0, 0), (0, 1)])
    >>> tta.fit_transform(image)
    array([[0.5, 1.5, 1.5, 3.5]], dtype=float32)

    ``test_time_warps=[(90, 1.0)]``: the image turned a quarter counter-clockwise.

    >>> turn = BackboneTransformer(torch.nn.Flatten(), device="cpu",
    ...                            test_time_warps=[(90, 1.0)])
    >>> turn.fit_transform(image).round(4)
    array([[2., 4., 1., 3.]], dtype=float32)
    """

    frozen_features = True

    _parameter_constraints: dict = {
        "module": [torch.nn.Module],
        "device": [str, torch.device],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "preprocess": [callable, None],
        "dtype": [StrOptions(set(_HOST_DTYPES))],
        "amp": ["boolean"],
        "cache": ["boolean"],
        "cache_size": [Interval(Integral, 1, None, closed="left")],
        "test_time_shifts": [
            None,
            Interval(Integral, 0, None, closed="left"),
            list,
            tuple,
        ],
        "test_time_warps": [None, list, tuple],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        device: str | torch.device = "auto",
        batch_size: int = 256,
        preprocess: Callable[[Any], Any] | None = None,
        dtype: str = "float32",
        amp: bool = False,
        cache: bool = True,
        cache_size: int = 100_000,
        test_time_shifts: int | Sequence[tuple[int, int]] | None = None,
        test_time_warps: Sequence[tuple[float, float]] | None = None,
        verbose: int = 0,
    ) -> None:
        self.module = module
        self.device = device
        self.batch_size = batch_size
        self.preprocess = preprocess
        self.dtype = dtype
        self.amp = amp
        self.cache = cache
        self.cache_size = cache_size
        self.test_time_shifts = test_time_shifts
        self.test_time_warps = test_time_warps
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: None = None) -> BackboneTransformer:
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
        views = self._views(X)
        with _restored_on_error(self.module):
            module = self.module.to(device)
            features = self._embed(module, X[: self.batch_size], device, None, views)
        self.module_ = module
        self.input_shape_ = tuple(int(s) for s in X.shape[1:])
        self.n_features_out_ = int(features.shape[1])
        return self

    def transform(self, X: Any) -> np.ndarray:
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
        views = self._views(X)
        with _restored_on_error(self.module_):
            self.module_.to(device)
            return self._embed(self.module_, X, device, self.n_features_out_, views)

    @staticmethod
    def clear_cache() -> int:
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
        n_rows = len(FEATURE_CACHE)
        FEATURE_CACHE.clear()
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

    def __reduce_ex__(self, protocol):
        # pickle, copy and joblib: the module objects themselves (any nn.Module)
        return copyreg.__newobj__, (type(self),), self._pickle_state()

    def _pickle_state(self):
        """The state pickle stores: modules as they are, copied to the CPU."""
        state = dict(super().__getstate__())
        copies = {}
        for key in _MODULE_KEYS:
            module = state.get(key)
            if isinstance(module, torch.nn.Module) and not _on_cpu(module):
                if id(module) not in copies:
                    copies[id(module)] = _cpu_copy(module)
                state[key] = copies[id(module)]
        return state

    def __getstate__(self):
        """The portable state: plain data only, as ``skops.io`` stores it.

        The module is described as a :mod:`skfewshot.models` architecture,
        its configuration and its weights as numpy arrays; a module that is
        not one raises ``TypeError`` naming its class (pickle and joblib,
        which go through ``__reduce_ex__``, store any module).
        """
        return portable_state(super().__getstate__(), _MODULE_KEYS, type(self).__name__)

    def __setstate__(self, state):
        super().__setstate__(restored_state(state, _MODULE_KEYS, type(self).__name__))

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

    def _shifts(self, X):
        """``test_time_shifts`` as a tuple of ``(dy, dx)`` int pairs, or None.

        Raises ValueError naming the parameter when it is malformed, when
        ``X`` is not a batch of float images, or when a shift moves a whole
        image out of view.
        """
        shifts = self.test_time_shifts
        if shifts is None or (isinstance(shifts, Integral) and shifts == 0):
            return None
        if isinstance(shifts, Integral) and not isinstance(shifts, bool):
            span = range(-int(shifts), int(shifts) + 1)
            shifts = tuple((dy, dx) for dy in span for dx in span)
        elif _pairs(shifts):
            shifts = tuple((int(dy), int(dx)) for dy, dx in shifts)
        else:
            raise ValueError(
                "test_time_shifts must be None, an int >= 0 or a non-empty sequence "
                f"of (dy, dx) int pairs, got {self.test_time_shifts!r}."
            )
        _check_augmented_images(X, "test_time_shifts", "shifts")
        height, width = X.shape[-2:]
        for dy, dx in shifts:
            if abs(dy) >= height or abs(dx) >= width:
                raise ValueError(
                    f"test_time_shifts holds the shift {(dy, dx)}, which moves a "
                    f"{height}x{width} image entirely out of view; shifts must be "
                    "smaller than the image."
                )
        return shifts

    def _warps(self, X):
        """``test_time_warps`` as a tuple of ``(degrees, scale)`` float pairs,
        or None; ValueError naming the parameter when it is malformed or ``X``
        is not a batch of float images."""
        warps = self.test_time_warps
        if warps is None:
            return None
        if not _pairs(warps, Real):
            raise ValueError(
                "test_time_warps must be None or a non-empty sequence of "
                f"(degrees, scale) pairs of numbers, got {warps!r}."
            )
        warps = tuple((float(degrees), float(scale)) for degrees, scale in warps)
        low, high = SCALE_BOUNDS
        for degrees, scale in warps:
            if not (math.isfinite(degrees) and low <= scale <= high):
                raise ValueError(
                    f"test_time_warps holds {(degrees, scale)}: degrees must be "
                    f"finite, and scales in [{low}, {high}] (a copy scaled "
                    "further is blank or one pixel's value)."
                )
        _check_augmented_images(X, "test_time_warps", "warps")
        return warps

    def _views(self, X):
        """The test-time copies of an image as ``(degrees, scale, dy, dx)``
        tuples (every warp, then every shift of it), or None for none."""
        shifts, warps = self._shifts(X), self._warps(X)
        if shifts is None and warps is None:
            return None
        return tuple(
            (degrees, scale, dy, dx)
            for degrees, scale in warps or ((0.0, 1.0),)
            for dy, dx in shifts or ((0, 0),)
        )

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

    def _embed(self, module, X, device, expected, views):
        """Features of the host array ``X``: cached rows read back, others computed.

        ``views``: the test-time copies (:meth:`_views`) or None.
        """
        # the key reads the autocast state the forward runs under, and the
        # flags of the module's submodules, which no other forward may switch
        # between the key and the forward (the locks are re-entrant)
        with _modules_locked(module), amp_context(device.type, self.amp):
            key = self._backbone_key(module, X, device, views) if self.cache else None
            if key is None:
                return self._forward(module, X, None, device, expected, views)
            width = FEATURE_CACHE.width(key)
            if width is not None and expected is not None and width != expected:
                raise _width_error(width, expected, X.shape[1:])
            return cached_features(
                key,
                X.shape[0],
                lambda rows: row_keys(X[rows]),
                lambda rows, out: self._forward(
                    module, X, rows, device, expected, views, out
                ),
                self.cache_size,
                lambda: self._backbone_key(module, X, device, views),
            )

    def _backbone_key(self, module, X, device, views):
        """Cache key of the module's state and of the settings (None: do not cache).

        The module and its registered submodules run in eval mode whatever
        their flags (:meth:`_forward`): their flags read as eval.
        """
        settings = (
            f"{self.dtype}|{self.amp}|{device.type}|{X.dtype.str}|{X.shape[1:]}"
            f"|{float32_settings()}|autocast={autocast_state()}"
        )
        if views is not None:
            settings += f"|views={views}"
        return state_key(
            module, settings, "backbone", stacklevel=4, eval_modules=module.modules()
        )

    def _forward(self, module, X, rows, device, expected, views, out=None):
        """Run ``module`` on ``X[rows]`` (all rows if None) batch by batch.

        Eval mode, inference mode, under the locks of the module's modules; the
        caller enters the autocast context (:meth:`_embed`). Results go to
        ``out[rows]`` (allocated here when None) and non-finite outputs raise
        ``ValueError``. With ``views``, the batches hold ``batch_size``
        augmented copies (row ``i`` gives copies ``i * k ... i * k + k - 1``,
        ``k = len(views)``) and a row's result is the mean of its copies'
        features, summed in float64 in the order of ``views`` (so
        independent of ``batch_size``).
        """
        n_rows = X.shape[0] if rows is None else rows.size
        in_dtype = torch.int64 if X.dtype == np.int64 else torch_dtype(self.dtype)
        k = 1 if views is None else len(views)
        sums = None
        batches = tqdm(
            list(gen_batches(n_rows * k, self.batch_size)),
            desc=type(self).__name__,
            unit="batch",
            disable=self.verbose <= 0,
        )
        with _modules_locked(module):
            modes = [(m, m.training) for m in module.modules()]
            module.eval()
            try:
                with torch.inference_mode():
                    for batch in batches:
                        copies = np.arange(batch.start, batch.stop)
                        local = batch if views is None else copies // k
                        index = local if rows is None else rows[local]
                        if views is None:
                            xb = torch.from_numpy(np.ascontiguousarray(X[index]))
                            xb = xb.to(device, in_dtype)
                        else:
                            first, last = local[0], local[-1] + 1
                            some = (
                                slice(first, last) if rows is None else rows[first:last]
                            )
                            xb = torch.from_numpy(np.ascontiguousarray(X[some]))
                            xb = _augmented_copies(
                                xb.to(device, in_dtype),
                                local - first,
                                copies % k,
                                views,
                            )
                        result = self._call_module(module, xb)
                        result = to_host_array(result.reshape(result.shape[0], -1))
                        if expected is not None and result.shape[1] != expected:
                            raise _width_error(result.shape[1], expected, X.shape[1:])
                        check_finite_features(
                            result, f"the backbone {type(module).__name__}", index
                        )
                        if out is None:
                            out = np.empty((X.shape[0], result.shape[1]), np.float32)
                        if views is None:
                            out[index] = result
                            continue
                        if sums is None:
                            sums = np.zeros((n_rows, result.shape[1]), np.float64)
                        np.add.at(sums, local, result)
            finally:
                for m, training in modes:
                    m.training = training
        if views is not None:
            out[slice(None) if rows is None else rows] = sums / k
        return out

    @staticmethod
    def _call_module(module, xb):
        try:
            out = module(xb)
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


def _pairs(value, kind=Integral) -> bool:
    """Whether ``value`` is a non-empty sequence of pairs of ``kind`` numbers
    (no bools)."""

    def is_number(v):
        return isinstance(v, kind) and not isinstance(v, bool)

    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(map(is_number, pair))
            for pair in value
        )
    )


def _check_augmented_images(X, name, what):
    """Raise ValueError naming ``name`` unless ``X`` is a batch of float images."""
    if X.ndim not in (3, 4) or X.dtype.kind != "f":
        raise ValueError(
            f"{name} {what} images, so X must hold float images of shape (n, "
            "height, width) or (n, channels, height, width); got "
            f"{X.dtype} rows of per-sample shape {X.shape[1:]}. Use "
            f"{name}=None for other inputs."
        )


def _warped(images, degrees, scale):
    """``images`` (``(b, h, w)`` or ``(b, c, h, w)``) rotated by ``degrees`` and
    scaled by ``scale`` about their centre, by augment's resampler, in float32
    at least (the CPU's grid sampler has no half-precision kernel) and outside
    any autocast (whose half-precision grid would misplace the samples)."""
    x = images if images.ndim == 4 else images.unsqueeze(1)
    work = x if x.dtype == torch.float64 else x.float()
    angle = math.radians(degrees)
    # RandomAffine's output-to-input map, without shear or shift
    a, b, c, d = _affine_entries(math.cos(angle), math.sin(angle), scale)
    theta = torch.tensor(
        [[a, b, 0.0], [c, d, 0.0]], dtype=work.dtype, device=work.device
    ).repeat(len(x), 1, 1)
    with torch.autocast(work.device.type, enabled=False):
        out = _resample(work, theta).to(images.dtype)
    return out if images.ndim == 4 else out.squeeze(1)


def _augmented_copies(images, sources, which, views):
    """``images[sources[j]]`` warped then shifted as ``views[which[j]]`` says,
    for every ``j``.

    ``images`` is a tensor ``(b, ..., height, width)``; a view ``(degrees,
    scale, dy, dx)`` rotates and scales the image about its centre
    (:func:`_warped`; ``(0, 1)`` leaves it as it is), then moves the content
    ``dy`` rows down and ``dx`` columns right, zeros filling the uncovered
    border. Shifts are exact: zero padding then slicing, one gather per
    distinct view; each distinct warp is computed once per batch.
    """
    height, width = images.shape[-2:]
    margin = max(max(abs(dy), abs(dx)) for *_, dy, dx in views)
    padded = {}
    out = images.new_empty((len(sources), *images.shape[1:]))
    for j in np.unique(which):
        degrees, scale, dy, dx = views[j]
        if (degrees, scale) not in padded:
            warped = (
                images
                if (degrees, scale) == (0.0, 1.0)
                else _warped(images, degrees, scale)
            )
            padded[degrees, scale] = torch.nn.functional.pad(warped, (margin,) * 4)
        sel = np.flatnonzero(which == j)
        top, left = margin - dy, margin - dx
        out[torch.from_numpy(sel).to(out.device)] = padded[degrees, scale][
            torch.from_numpy(sources[sel]).to(out.device),
            ...,
            top : top + height,
            left : left + width,
        ]
    return out


def _width_error(width, expected, sample_shape):
    return ValueError(
        f"the backbone returned {width} features per sample for input of "
        f"per-sample shape {sample_shape}, but {expected} during fit."
    )


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


# module -> re-entrant lock held while a forward switches the module to eval
# mode, runs it and switches it back (and while its cache key is read). A
# forward holds the lock of every module in module.modules(): two transformers
# whose modules share a submodule wait for each other (with one lock per
# top-level module, one restored a shared submodule's train mode while the
# other ran it), unrelated backbones run at once (in threads, on two GPUs), and
# a forward may call a transformer itself: in its own thread on any module, in
# another thread on a module sharing none of its own (one that shares any
# waits for the forward to end, which waits for it). Locks are taken in one
# order, by id, all at once; a forward calling a transformer takes more while
# holding its own, so two such nested calls over shared modules in two
# threads can still wait for each other.
_MODULE_LOCKS = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def _new_locks():
    """Forget every lock: in a forked child, a lock a vanished thread held
    would stay held for ever."""
    global _MODULE_LOCKS, _LOCKS_LOCK
    _MODULE_LOCKS, _LOCKS_LOCK = weakref.WeakKeyDictionary(), threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_new_locks)


@contextlib.contextmanager
def _modules_locked(module: torch.nn.Module):
    """Hold the lock of every module in ``module.modules()``.

    Taken in one order (by ``id``), so two forwards sharing submodules
    cannot each hold a lock the other waits for.
    """
    modules = sorted({id(m): m for m in module.modules()}.items())
    with _LOCKS_LOCK:
        locks = [_MODULE_LOCKS.setdefault(m, threading.RLock()) for _, m in modules]
    with contextlib.ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        yield


@contextlib.contextmanager
def _restored_on_error(module):
    """Put every parameter, gradient and buffer of ``module`` back if the block raises.

    The original tensor objects are kept (not copied) during the block, so a
    move to a device that loses the data (``meta``) or a forward that fails
    after ``module.to(device)`` leaves the caller's module as it was.
    """
    saved = [
        (
            m,
            [(n, p, p.data, p.grad) for n, p in m._parameters.items() if p is not None],
            dict(m._buffers),
        )
        for m in module.modules()
    ]
    try:
        yield
    except BaseException:
        for m, params, buffers in saved:
            for name, param, data, grad in params:
                m._parameters[name] = param
                param.data = data
                param.grad = grad
            m._buffers.update(buffers)
        raise


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
