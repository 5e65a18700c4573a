"""BackboneTransformer: a frozen ``torch.nn.Module`` as a scikit-learn transformer.

The backbone turns raw inputs (images, token ids, rows) into feature vectors; as
a transformer step it composes with ``Pipeline``, ``GridSearchCV`` and
``clone``. Features are computed in eval mode under ``torch.inference_mode``,
in batches, on the resolved device, and kept in a process-wide feature cache
keyed by the backbone's whole state and each row's content, so grid-search folds
and evaluation episodes over one data set cost one forward per row.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import functools
import hashlib
import io
import itertools
import os
import threading
import types
import warnings
import weakref
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
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from tqdm.auto import tqdm

from ._torch_utils import (
    resolve_device,
    to_host_array,
    torch_dtype,
)
from ._utils import check_finite_features

__all__ = ["BackboneTransformer"]

# numpy dtype in which rows are held on the host (bfloat16 has none: float32).
_HOST_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "bfloat16": np.float32,
}
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class _Block:
    """Cached rows of one backbone key: contiguous float32 storage and an index.

    ``rows[slot]`` holds a feature row, ``ticks[slot]`` when it was last used
    (-1: a free slot), ``keys[slot]`` its row key and ``index`` maps a row key
    to its slot. Per row this costs the row itself plus the 16-byte key, its
    index entry and the tick (about 150 bytes together, measured).
    """

    def __init__(self, width):
        self.rows = np.empty((0, width), dtype=np.float32)
        self.ticks = np.empty(0, dtype=np.int64)
        self.keys = []
        self.index = {}

    @property
    def capacity(self):
        return len(self.keys)

    def resize(self, capacity):
        """Move the live rows to the front, then grow or shrink to ``capacity``."""
        live = np.flatnonzero(self.ticks >= 0)
        n = live.size
        if n and live[-1] != n - 1:  # holes before the last live row: compact
            for start in range(0, n, _COPY_CHUNK):
                part = live[start : start + _COPY_CHUNK]
                self.rows[start : start + part.size] = self.rows[part]
            self.ticks[:n] = self.ticks[live]
            self.keys = [self.keys[s] for s in live]
            self.index = {key: slot for slot, key in enumerate(self.keys)}
        else:
            self.keys = self.keys[:n]
        width = self.rows.shape[1]
        # In place (realloc): no second copy of the block is ever held.
        self.rows.resize((capacity, width), refcheck=False)
        self.ticks.resize(capacity, refcheck=False)
        self.ticks[n:] = -1
        self.keys.extend([None] * (capacity - n))

    def evict(self, slots):
        for slot in slots:
            del self.index[self.keys[slot]]
            self.keys[slot] = None
        self.ticks[slots] = -1


class _FeatureCache:
    """Process-wide LRU store ``(backbone key, row key) -> float32 feature row``.

    One store for every transformer in the process, so the clones that
    ``GridSearchCV`` or episodic evaluation make of one frozen backbone reuse
    each other's features. Rows live in one :class:`_Block` per backbone key;
    after a transformer writes, the blocks hold at most its ``cache_size``
    rows and have room (capacity) for at most that many, so the storage is
    bounded by ``cache_size * n_features * 4`` bytes plus the per-row index.
    """

    def __init__(self):
        self._blocks = {}
        self._lock = threading.Lock()
        self._tick = 0

    def __len__(self):
        with self._lock:
            return sum(len(block.index) for block in self._blocks.values())

    def nbytes(self):
        """Bytes of row storage and ticks held (the index is extra)."""
        with self._lock:
            return sum(b.rows.nbytes + b.ticks.nbytes for b in self._blocks.values())

    def clear(self):
        with self._lock:
            self._blocks.clear()

    def width(self, key):
        """Feature width of the rows cached under backbone ``key`` (None: none)."""
        with self._lock:
            block = self._blocks.get(key)
            return None if block is None else block.rows.shape[1]

    def read(self, key, row_keys, out, offset):
        """Copy cached rows into ``out[offset + i]``; return the hit mask.

        Hits are marked as used now, in the order of ``row_keys``.
        """
        hits = np.zeros(len(row_keys), dtype=bool)
        with self._lock:
            block = self._blocks.get(key)
            if block is None:
                return hits
            slots = np.fromiter(
                (block.index.get(k, -1) for k in row_keys), np.int64, len(row_keys)
            )
            hits = slots >= 0
            found = np.flatnonzero(hits)
            if found.size:
                out[offset + found] = block.rows[slots[found]]
                block.ticks[slots[found]] = self._next_ticks(found.size)
        return hits

    def put(self, key, row_keys, out, positions, max_rows):
        """Store ``out[positions]`` under ``row_keys``; keep at most ``max_rows``.

        Only the last ``max_rows`` rows are stored (the others would be
        evicted at once); the least recently used rows of any backbone are
        evicted to make room, and blocks are compacted so that their total
        capacity never exceeds ``max_rows``.
        """
        row_keys, positions = row_keys[-max_rows:], positions[-max_rows:]
        with self._lock:
            block = self._blocks.get(key)
            if block is None:
                block = self._blocks[key] = _Block(out.shape[1])
            known = np.fromiter(
                (block.index.get(k, -1) for k in row_keys), np.int64, len(row_keys)
            )
            old = np.flatnonzero(known >= 0)  # written by another thread meanwhile
            block.rows[known[old]] = out[positions[old]]
            block.ticks[known[old]] = self._next_ticks(old.size)
            new = np.flatnonzero(known < 0)
            n_live = sum(len(b.index) for b in self._blocks.values())
            self._evict_oldest(n_live + new.size - max_rows)
            self._make_room(block, new.size, max_rows)
            free = np.flatnonzero(block.ticks < 0)[: new.size]
            for start in range(0, new.size, _COPY_CHUNK):
                part = slice(start, start + _COPY_CHUNK)
                block.rows[free[part]] = out[positions[new[part]]]
            block.ticks[free] = self._next_ticks(new.size)
            for slot, i in zip(free.tolist(), new.tolist()):
                block.keys[slot] = row_keys[i]
                block.index[row_keys[i]] = slot

    def _next_ticks(self, n):
        ticks = np.arange(self._tick, self._tick + n, dtype=np.int64)
        self._tick += n
        return ticks

    def _evict_oldest(self, n):
        """Drop the ``n`` least recently used rows over every block."""
        if n <= 0:
            return
        blocks = list(self._blocks.items())
        ticks = np.concatenate([b.ticks for _, b in blocks])
        owner = np.repeat(np.arange(len(blocks)), [b.capacity for _, b in blocks])
        starts = np.cumsum([0] + [b.capacity for _, b in blocks])
        live = np.flatnonzero(ticks >= 0)
        oldest = (
            live[np.argpartition(ticks[live], n - 1)[:n]] if n < live.size else live
        )
        for j, (_, block) in enumerate(blocks):
            mine = oldest[owner[oldest] == j]
            if mine.size:
                block.evict(mine - starts[j])

    def _make_room(self, block, n_new, max_rows):
        """Give ``block`` ``n_new`` free slots; keep total capacity <= ``max_rows``."""
        for other_key, other in list(self._blocks.items()):
            if other is not block and not other.index:
                del self._blocks[other_key]
        others = [b for b in self._blocks.values() if b is not block]
        needed = len(block.index) + n_new
        room = max_rows - sum(b.capacity for b in others)
        if room < needed or block.capacity > room:
            for other in others:  # give back the holes eviction left
                if other.capacity > len(other.index):
                    other.resize(len(other.index))
            room = max_rows - sum(b.capacity for b in others)
        if block.capacity - len(block.index) < n_new or block.capacity > room:
            block.resize(min(room, max(needed, 2 * block.capacity)))


_CACHE = _FeatureCache()
# Rows copied at once between the cache and an output array (bounds temporaries).
_COPY_CHUNK = 1024
# Rows whose keys are computed and looked up at once.
_KEY_CHUNK = 1024
# class or function -> serial number, never reused in the process (see _identity).
_IDENTITIES = weakref.WeakKeyDictionary()
_SERIALS = itertools.count()
# module -> lock held while the module is switched to eval mode and run.
_MODULE_LOCKS = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()
# Attributes every nn.Module has, encoded (or checked) explicitly by _StateHash.
_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes)


def _module_lock(module):
    with _LOCKS_LOCK:
        lock = _MODULE_LOCKS.get(module)
        if lock is None:
            lock = _MODULE_LOCKS[module] = threading.Lock()
        return lock


class _Uncacheable(Exception):
    """The module holds state the cache key cannot capture (the message says which)."""


def _identity(obj) -> int:
    """A serial number for a class or function object, never reused in the process.

    Unlike ``id``, a class redefined under the same name (as in a notebook) or
    created after another was freed gets a new number.
    """
    with _LOCKS_LOCK:
        serial = _IDENTITIES.get(obj)
        if serial is None:
            serial = _IDENTITIES[obj] = next(_SERIALS)
        return serial


def _is_plain_object(value) -> bool:
    """Whether ``value``'s whole state is its ``__dict__`` (a pure-Python class)."""
    mro = type(value).__mro__[:-1]
    return (
        hasattr(value, "__dict__")
        and all(c.__flags__ & _HEAP_TYPE and "__slots__" not in vars(c) for c in mro)
        and not isinstance(value, type)
    )


class _StateHash:
    """SHA-256 of everything a module's forward may read: its whole object graph.

    Parameters, buffers (persistent or not) and tensor attributes by dtype,
    shape, stride and bytes; numpy arrays and scalars by dtype, shape and
    bytes; containers recursively; plain scalars by type and ``repr``; classes
    and functions by identity (:func:`_identity`) and their defaults and
    ``functools.partial`` arguments; instances of pure-Python classes by class
    and attribute dict. Anything else, a forward hook on any submodule, or a
    closure raises :class:`_Uncacheable` naming it. Shared objects and cycles
    are encoded once, then referred to by position.
    """

    def __init__(self):
        self._hash = hashlib.sha256()
        self._seen = {}
        self._keep = []  # objects seen, alive so that their ids stay unique

    def digest(self) -> bytes:
        return self._hash.digest()[:16]

    def _text(self, text):
        self._hash.update(text.encode())

    def add(self, value):
        if type(value) in _PLAIN_TYPES or isinstance(
            value, (torch.dtype, torch.device, enum.Enum)
        ):
            self._text(f"{type(value).__qualname__}:{value!r};")
            return
        if id(value) in self._seen:
            self._text(f"ref:{self._seen[id(value)]};")
            return
        self._seen[id(value)] = len(self._seen)
        self._keep.append(value)
        if isinstance(value, torch.nn.Module):
            self._module(value)
        elif isinstance(value, torch.Tensor):
            self._tensor(value)
        elif isinstance(value, (np.ndarray, np.generic)):
            self._array(value)
        elif type(value) in (list, tuple, torch.Size) or (
            isinstance(value, tuple) and hasattr(type(value), "_fields")
        ):
            self._text(f"{type(value).__qualname__}#{_identity(type(value))}[")
            for item in value:
                self.add(item)
            self._text("]")
        elif type(value) in (dict, collections.OrderedDict):
            self._text(f"{type(value).__qualname__}{{")
            for k, v in value.items():
                self.add(k)
                self.add(v)
            self._text("}")
        elif type(value) in (set, frozenset):
            if not all(type(v) in _PLAIN_TYPES for v in value):
                raise _Uncacheable("a set of non-scalar items")
            self._text(f"{type(value).__qualname__}{sorted(map(repr, value))};")
        else:
            self._callable_or_object(value)

    def _module(self, module):
        if module._forward_hooks or module._forward_pre_hooks:
            raise _Uncacheable(f"{type(module).__name__} has forward hooks")
        self._text(f"module:{type(module).__qualname__}#{_identity(type(module))}(")
        for group in ("_parameters", "_buffers", "_modules"):
            self._text(f"{group}:")
            for name, value in getattr(module, group).items():
                self._text(f"{name}=")
                self.add(value)
        for name, value in vars(module).items():
            if name in _MODULE_INTERNALS:
                continue
            self._text(f"{name}=")
            try:
                self.add(value)
            except _Uncacheable as exc:
                raise _Uncacheable(
                    f"attribute {name!r} of {type(module).__name__}: {exc}"
                ) from None
        self._text(")")

    def _tensor(self, tensor):
        t = tensor.detach()
        if t.layout != torch.strided or t.is_meta or t.is_quantized:
            raise _Uncacheable(f"a {t.layout} / {t.device.type} tensor")
        t = t.resolve_conj().resolve_neg()
        self._text(f"tensor:{t.dtype}{tuple(t.shape)}{t.stride()}:")
        data = t.reshape(-1).contiguous().view(torch.uint8).cpu()
        self._hash.update(memoryview(data.numpy()))

    def _array(self, array):
        if array.dtype.hasobject:
            raise _Uncacheable("a numpy array of Python objects")
        array = np.ascontiguousarray(array)
        self._text(f"ndarray:{array.dtype.str}{array.shape}:")
        self._hash.update(memoryview(array.reshape(-1).view(np.uint8)))

    def _callable_or_object(self, value):
        if isinstance(value, types.FunctionType):
            if value.__closure__:
                raise _Uncacheable(f"the closure {value.__qualname__}")
            self._text(f"function:{value.__qualname__}#{_identity(value)}(")
            self.add(value.__defaults__)
            self.add(value.__kwdefaults__)
            self._text(")")
        elif isinstance(value, types.BuiltinFunctionType) and (
            value.__self__ is None or isinstance(value.__self__, types.ModuleType)
        ):
            self._text(f"builtin:{value.__module__}.{value.__qualname__};")
        elif isinstance(value, types.MethodType):
            self._text("method:")
            self.add(value.__func__)
            self.add(value.__self__)
        elif isinstance(value, functools.partial):
            self._text("partial:")
            self.add(value.func)
            self.add(value.args)
            self.add(value.keywords)
        elif isinstance(value, type):
            self._text(f"class:{value.__qualname__}#{_identity(value)};")
        elif _is_plain_object(value):
            self._text(f"object:{type(value).__qualname__}#{_identity(type(value))}:")
            self.add(vars(value))
        else:
            raise _Uncacheable(f"a {type(value).__name__} object")


def _global_forward_hooks() -> bool:
    """Whether hooks registered for every module's forward are present."""
    hooks = torch.nn.modules.module
    return any(
        getattr(hooks, name, None)
        for name in ("_global_forward_hooks", "_global_forward_pre_hooks")
    )


def _module_digest(module) -> bytes:
    """Digest of the module's whole state (see :class:`_StateHash`); may raise."""
    if _global_forward_hooks():
        raise _Uncacheable("global module forward hooks are registered")
    state = _StateHash()
    state.add(module)
    return state.digest()


def _row_keys(X) -> list:
    """One 16-byte blake2b digest of each row's bytes."""
    base = blake2b(digest_size=16)
    keys = []
    for row in X:
        h = base.copy()
        h.update(row.data)
        keys.append(h.digest())
    return keys


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
        (float16 on CUDA, bfloat16 on CPU).

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

    **The feature cache.** A cached row is keyed by (1) a SHA-256 digest of
    the backbone's state, computed afresh at every ``fit`` and ``transform``
    (never memoised: an edit through ``p.data`` or of a plain tensor
    attribute is seen at the next call; hashing costs about 1 ms for a
    :class:`~skfewshot.models.Conv4` and 45 ms for a
    :class:`~skfewshot.models.ResNet12`, 47 MiB, per call on a CPU core);
    (2) ``dtype``, ``amp``, the device type, the float32 matmul precision
    and the input's dtype and per-sample shape; (3) a blake2b digest of the
    row's bytes (after ``preprocess``). The state digest covers the module
    and every submodule: the class (its identity in the process, so a class
    redefined under the same name is another backbone), every parameter and
    buffer (persistent or not) by dtype, shape and bytes, and every other
    instance attribute, private ones included: tensors and numpy arrays by
    bytes, containers recursively, scalars and strings by type and ``repr``,
    functions and classes by identity, instances of pure-Python classes by
    their attribute dict. Changing any of these invalidates the rows of the
    old state (they stay until evicted, and are served again if the old
    state comes back). The train/eval flags are not part of the key:
    features are always computed in eval mode.

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
        with _restored_on_error(self.module):
            module = self.module.to(device)
            features = self._embed(module, X[: self.batch_size], device, None)
        self.module_ = module
        self.input_shape_ = tuple(int(s) for s in X.shape[1:])
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
        with _restored_on_error(self.module_):
            self.module_.to(device)
            return self._embed(self.module_, X, device, self.n_features_out_)

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

    def _embed(self, module, X, device, expected):
        """Features of the host array ``X``: cached rows read back, others computed.

        Keys are computed and looked up ``_KEY_CHUNK`` rows at a time; besides
        the output, a call holds 24 bytes per row to compute (its index and
        key) and the cache at most ``cache_size`` rows.
        """
        key = self._backbone_key(module, X, device) if self.cache else None
        if key is None:
            return self._forward(module, X, None, device, expected)
        n = X.shape[0]
        width = _CACHE.width(key)
        if width is not None and expected is not None and width != expected:
            raise _width_error(width, expected, X.shape[1:])
        out = None if width is None else np.empty((n, width), dtype=np.float32)
        missing, missing_keys = [], []
        for chunk in gen_batches(n, _KEY_CHUNK):
            keys = _row_keys(X[chunk])
            if out is None:
                hits = np.zeros(len(keys), dtype=bool)
            else:
                hits = _CACHE.read(key, keys, out, chunk.start)
            misses = np.flatnonzero(~hits)
            missing.append(misses + chunk.start)
            missing_keys.append(b"".join(keys[i] for i in misses))
        missing = np.concatenate(missing)
        if not missing.size:
            return out
        missing_keys = b"".join(missing_keys)
        out = self._forward(module, X, missing, device, expected, out)
        keep = missing[-self.cache_size :]
        first = (missing.size - keep.size) * 16
        row_keys = [
            missing_keys[i : i + 16] for i in range(first, len(missing_keys), 16)
        ]
        del missing_keys
        _CACHE.put(key, row_keys, out, keep, self.cache_size)
        return out

    def _backbone_key(self, module, X, device):
        """Digest of the module's state and of the settings (None: do not cache)."""
        try:
            digest = _module_digest(module)
        except _Uncacheable as exc:
            warnings.warn(
                f"the feature cache is off for this {type(module).__name__} "
                f"backbone: {exc}, whose effect on the output the cache key cannot "
                "capture, so every row is computed afresh. Pass cache=False to "
                "silence this warning.",
                UserWarning,
                stacklevel=4,
            )
            return None
        settings = (
            f"|{self.dtype}|{self.amp}|{device.type}|{X.dtype.str}|{X.shape[1:]}"
            f"|{torch.get_float32_matmul_precision()}"
        )
        return digest + settings.encode()

    def _forward(self, module, X, rows, device, expected, out=None):
        """Run ``module`` on ``X[rows]`` (all rows if None) batch by batch.

        Eval mode, inference mode; results go to ``out[rows]`` (allocated
        here when None) and non-finite outputs raise ``ValueError``.
        """
        n_rows = X.shape[0] if rows is None else rows.size
        in_dtype = torch.int64 if X.dtype == np.int64 else torch_dtype(self.dtype)
        batches = tqdm(
            list(gen_batches(n_rows, self.batch_size)),
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
                    torch.autocast(device.type)
                    if self.amp
                    else contextlib.nullcontext(),
                ):
                    for batch in batches:
                        index = batch if rows is None else rows[batch]
                        xb = torch.from_numpy(np.ascontiguousarray(X[index]))
                        result = self._call_module(module, xb.to(device, in_dtype))
                        result = to_host_array(result.reshape(result.shape[0], -1))
                        if expected is not None and result.shape[1] != expected:
                            raise _width_error(result.shape[1], expected, X.shape[1:])
                        check_finite_features(
                            result, f"the backbone {type(module).__name__}", index
                        )
                        if out is None:
                            out = np.empty((X.shape[0], result.shape[1]), np.float32)
                        out[index] = result
            finally:
                for m, training in modes:
                    m.training = training
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
