"""The process-wide feature cache of the frozen transformer steps.

Features are stored under two keys: a *state key* (a digest of everything the
encoder's forward may read, see :class:`_StateHash`, plus the settings that
change its output) and a *row key* (a digest of one input row's bytes, or of
one text). :func:`cached_features` reads the rows already computed under a
state key back and computes only the others, so clones of one frozen encoder
(as ``GridSearchCV`` and episodic evaluation make them) cost one forward per
row. :class:`~skfewshot.backbone.BackboneTransformer` and
:class:`~skfewshot.text.SentenceEncoder` use it.

The store is bounded: after a write it holds at most the writer's
``max_rows`` rows, least recently used evicted first (:class:`_FeatureCache`).
"""

from __future__ import annotations

import collections
import enum
import functools
import hashlib
import itertools
import os
import sys
import threading
import types
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from hashlib import blake2b

import numpy as np
import torch
from sklearn.utils import gen_batches

__all__ = [
    "FEATURE_CACHE",
    "cached_features",
    "module_digest",
    "row_keys",
    "state_key",
    "text_keys",
]


# Rows copied at once between the cache and an output array (bounds temporaries).
_COPY_CHUNK = 1024
# Rows whose keys are computed and looked up at once.
_KEY_CHUNK = 1024
# class or function -> serial number, never reused in the process (see _identity).
_IDENTITIES = weakref.WeakKeyDictionary()
_SERIALS = itertools.count()
_IDENTITIES_LOCK = threading.Lock()
# Attributes every nn.Module has, encoded (or checked) explicitly by _StateHash.
_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))
# Classes whose functions every module or tensor shares (nn.Module, Parameter,
# Tensor, object): torch's own code, not encoded.
_MODULE_BASES = frozenset(torch.nn.Module.__mro__ + torch.nn.Parameter.__mro__)
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class created at run time
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes)


class _PlainProbe:
    """A pure-Python class: the instance layout every such class shares."""


# Extension classes (PyO3, Cython, pybind11) are heap types with a __dict__ too,
# but their instances hold native state beyond it, so their layout differs.
_PLAIN_LAYOUT = (
    _PlainProbe.__basicsize__,
    _PlainProbe.__dictoffset__,
    _PlainProbe.__weakrefoffset__,
)
# Extension classes whose whole native state one call returns, by (module, name):
# the class is looked up in sys.modules, so its package is never imported here.
_SERIALISED_STATE = {
    # A fast tokenizer's tokenizer.json (model, normalizer, pre- and post-
    # processor, decoder, added tokens, truncation, padding) and the one
    # setting that JSON leaves out.
    ("tokenizers", "Tokenizer"): lambda t: (t.to_str(), t.encode_special_tokens),
    ("tokenizers", "AddedToken"): lambda t: t.__getstate__(),
}


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
            # a row repeated within the call takes one slot (its last position)
            new = np.fromiter({row_keys[i]: i for i in new.tolist()}.values(), np.int64)
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


FEATURE_CACHE = _FeatureCache()


def _fork_locks():
    """The module's locks, in the order :func:`os.fork` takes them."""
    return (_IDENTITIES_LOCK, FEATURE_CACHE._lock)


def _before_fork():
    # held across the fork, so that no thread holds one in the child (where a
    # lock a vanished thread held stays held for ever) and the cache is whole
    for lock in _fork_locks():
        lock.acquire()


def _after_fork():
    for lock in reversed(_fork_locks()):
        lock.release()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )


class _Uncacheable(Exception):
    """The module holds state the cache key cannot capture (the message says which)."""


def _identity(obj) -> int:
    """A serial number for a class, function or code object, never reused.

    Unlike ``id``, a class redefined under the same name (as in a notebook) or
    created after another was freed gets a new number. Classes and functions
    compare by identity, code objects by value: two equal code objects alive
    at once share a number, which is safe, as equal code runs alike (what
    else a function reads, its defaults, closure and globals, is no part of
    its code object).
    """
    with _IDENTITIES_LOCK:
        serial = _IDENTITIES.get(obj)
        if serial is None:
            serial = _IDENTITIES[obj] = next(_SERIALS)
        return serial


def _is_python_class(cls) -> bool:
    """Whether ``cls`` was defined by a ``class`` statement, without ``__slots__``."""
    layout = (cls.__basicsize__, cls.__dictoffset__, cls.__weakrefoffset__)
    return (
        bool(cls.__flags__ & _HEAP_TYPE)
        and "__slots__" not in vars(cls)
        and (layout == _PLAIN_LAYOUT)
    )


def _is_plain_object(value) -> bool:
    """Whether ``value``'s whole state is its ``__dict__`` (a pure-Python class)."""
    return (
        hasattr(value, "__dict__")
        and all(_is_python_class(c) for c in type(value).__mro__[:-1])
        and not isinstance(value, type)
    )


def _has_slots(cls) -> bool:
    """Whether a class of ``cls``'s MRO (but torch's) declares non-empty
    ``__slots__``: state that ``vars`` does not show."""
    return any(
        vars(c).get("__slots__", ())
        for c in cls.__mro__
        if c not in _MODULE_BASES and c.__flags__ & _HEAP_TYPE
    )


def _scalar_base(value):
    """The builtin scalar type of a pure-Python subclass instance, else None.

    Such a value (``torch.__version__``, a ``str`` subclass) is the scalar
    plus its ``__dict__``, if any; classes with non-empty ``__slots__`` hold
    more and are not accepted.
    """
    mro = type(value).__mro__
    base = next((c for c in mro if c in _PLAIN_TYPES), None)
    if base is None or base is type(value):
        return None
    for cls in mro[: mro.index(base)]:
        if not cls.__flags__ & _HEAP_TYPE or vars(cls).get("__slots__", ()) != ():
            return None
    return base


def _serialised_state(value):
    """``(name, state)`` for an extension object of :data:`_SERIALISED_STATE`."""
    cls = type(value)
    for (module, name), state in _SERIALISED_STATE.items():
        if cls is getattr(sys.modules.get(module), name, None):
            return f"{module}.{name}", state(value)
    return None


class _StateHash:
    """SHA-256 of everything a module's forward may read: its whole object graph.

    Parameters, buffers (persistent or not) and tensor attributes by dtype,
    shape, stride and bytes; numpy arrays and scalars by dtype, shape and
    bytes; containers recursively; plain scalars by type and ``repr``; classes
    and functions by identity (:func:`_identity`) and their code, functions
    also by their defaults and ``functools.partial`` arguments; instances of
    pure-Python classes (not extension classes, whose instances hold native
    state beside their ``__dict__``: told apart by their layout) by class and
    attribute dict; pure-Python subclasses of ``str``, ``int`` ...
    (``torch.__version__``) by class, value and attribute dict; the extension
    objects of :data:`_SERIALISED_STATE` (a fast tokenizer) by their
    serialised state. Anything else, a forward hook on any submodule, or a
    closure raises :class:`_Uncacheable` naming it. Shared objects and cycles
    are encoded once, then referred to by position, but for tuples,
    ``torch.Size`` and frozensets of plain values (nested or not), encoded by
    value wherever they are (:meth:`_plain_value`): sharing an immutable value
    changes nothing.

    A class is encoded with every function its class statement defines
    (methods, static and class methods, properties, and what
    ``functools.wraps`` decorators wrap), along its MRO but for ``nn.Module``
    and ``object``, each as a function attribute is: by identity, code
    object and defaults, so that a function edited in place
    (``f.__code__ = ...`` or ``f.__defaults__ = ...``, as IPython's
    ``%autoreload`` does) changes the digest. Unlike a function attribute's,
    a method's closure is not refused: it holds what the class statement
    fixed (the class, for ``super()``; a decorator's arguments and the
    function it wraps, encoded through ``__wrapped__``), and is not read, as
    the class's other attributes are not. The functions
    are hashed apart from the object graph (see :meth:`_class`), so that a
    module sharing an object with a default (a default tuple kept as an
    attribute) encodes as one holding an equal copy.

    Parameters
    ----------
    modes : bool
        Encode every module's train/eval flag.
    eval_modules : iterable of torch.nn.Module
        Modules whose flag is encoded as eval whatever it is (the caller
        switches them to eval mode for the forward).
    classes : dict, optional
        The encodings of the classes met so far (:meth:`_class`), shared with
        the hash of a class's functions.
    attributes : bool
        Encode what is stored on tensors (their ``__dict__``). The savers'
        round-trip check does not: a file holds weights, not their tags (an
        optimizer's ``no_weight_decay``, ``torch.compile``'s markers).
    """

    def __init__(self, modes=False, eval_modules=(), classes=None, attributes=True):
        self._hash = hashlib.sha256()
        self._seen = {}
        self._keep = []  # objects seen, alive so that their ids stay unique
        self._modes = modes
        self._eval_modules = list(eval_modules)  # alive, so that their ids stay unique
        self._eval = {id(m) for m in self._eval_modules}
        self._classes = {} if classes is None else classes
        self._plain = {}  # id -> (value, digest) of _plain_value's containers
        self._attrs = attributes

    def digest(self) -> bytes:
        return self._hash.digest()[:16]

    def _text(self, text):
        self._hash.update(text.encode())

    def add(self, value):
        if type(value) in _PLAIN_TYPES or isinstance(
            value, (torch.dtype, torch.device)
        ):
            self._text(f"{type(value).__qualname__}:{value!r};")
            return
        base = _scalar_base(value)
        if base is not None:
            cls = type(value)
            self._text(f"{cls.__qualname__}#{_identity(cls)}:{base.__repr__(value)}:")
            self.add(getattr(value, "__dict__", None))
            return
        plain = self._plain_value(value)
        if plain is not None:
            self._text(f"plain:{plain};")
            return
        if id(value) in self._seen:
            self._text(f"ref:{self._seen[id(value)]};")
            return
        self._seen[id(value)] = len(self._seen)
        self._keep.append(value)
        if isinstance(value, torch.nn.Module):
            self._module(value)
        elif isinstance(value, enum.Enum):
            # its class with its methods, and what the member holds (value,
            # name, attributes): a flag's unnamed values have no name
            self._text(f"enum:{self._class(type(value))}:")
            self.add(vars(value))
        elif isinstance(value, torch.Tensor):
            self._tensor(value)
        elif isinstance(value, (np.ndarray, np.generic)):
            self._array(value)
        elif type(value) in (list, tuple, torch.Size) or (
            isinstance(value, tuple) and hasattr(type(value), "_fields")
        ):
            # a namedtuple by its class with its methods, and its __dict__ if
            # a subclass without __slots__ gave it one
            self._text(f"{self._class(type(value))}[")
            for item in value:
                self.add(item)
            self._text("]")
            if hasattr(value, "__dict__"):  # the class says whether it has one
                self.add(vars(value))
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

    def _plain_value(self, value):
        """Digest of a tuple, ``torch.Size`` or frozenset of plain values, else None.

        Nested ones count as plain values. The digest is of the value alone,
        not of where else the object appears: ResNet12s built with one default
        ``channels`` tuple share it, and the same modules rebuilt from a file
        do not. Memoised per object, so a value nested many times is encoded
        once, and so is one found not plain.
        """
        if type(value) not in (tuple, torch.Size, frozenset):
            return None
        memo = self._plain.get(id(value))
        if memo is not None:
            return memo[1]
        parts = []
        for item in value:
            part = (
                f"{type(item).__qualname__}:{item!r}"
                if type(item) in _PLAIN_TYPES
                else self._plain_value(item)
            )
            if part is None:  # remembered too: a shared one is scanned once
                self._plain[id(value)] = (value, None)
                return None
            parts.append(f"{len(part)}:{part}")
        if type(value) is frozenset:
            parts.sort()
        text = f"{type(value).__qualname__}[{''.join(parts)}]"
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        self._plain[id(value)] = (value, digest)
        return digest

    def _module(self, module):
        if module._forward_hooks or module._forward_pre_hooks:
            raise _Uncacheable(f"{type(module).__name__} has forward hooks")
        if _has_slots(type(module)):  # state outside vars(module)
            raise _Uncacheable(f"{type(module).__name__} has __slots__")
        self._text(f"module:{self._class(type(module))}(")
        if self._modes:
            training = module.training and id(module) not in self._eval
            self._text(f"training={training!r};")
        # names by length and text: an attribute named "a=float:1.0;b" is
        # not the attributes a and b
        for group in ("_parameters", "_buffers", "_modules"):
            self._text(f"{group}:")
            for name, value in getattr(module, group).items():
                self._text(f"{len(name)}:{name}=")
                self.add(value)
        for name, value in vars(module).items():
            if name in _MODULE_INTERNALS:
                continue
            self._text(f"{len(name)}:{name}=")
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
        # a subclass by its class with its methods (one overriding
        # __torch_function__ computes otherwise), and what is stored on the
        # tensor (a quantised weight's state): both change the output. Written
        # for every tensor, so that no tensor reads as a tensor and a class
        if _has_slots(type(tensor)):
            raise _Uncacheable(f"a {type(tensor).__name__} tensor with __slots__")
        self._text(f"{self._class(type(tensor))}:")
        self.add((getattr(tensor, "__dict__", None) or None) if self._attrs else None)

    def _array(self, array):
        if array.dtype.hasobject:
            raise _Uncacheable("a numpy array of Python objects")
        # its type (a scalar, an array, a masked array), its shape as it is
        # (ascontiguousarray makes a 0-d one 1-d), its dtype with field names
        if _has_slots(type(array)):
            raise _Uncacheable(f"a {type(array).__name__} array with __slots__")
        fields = array.dtype.descr if array.dtype.names else ""
        self._text(
            f"ndarray:{self._class(type(array))}:{array.dtype.str}{fields}"
            f"{np.shape(array)}:"
        )
        flat = np.ascontiguousarray(array).reshape(-1)
        self._hash.update(memoryview(flat.view(np.uint8)))
        self.add(getattr(array, "__dict__", None) or None)  # a masked array's mask

    def _callable_or_object(self, value):
        if isinstance(value, types.FunctionType):
            if value.__closure__:
                raise _Uncacheable(f"the closure {value.__qualname__}")
            self._function(value)
            self.add(vars(value) or None)  # what is stored on it, read by its code
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
            self._text(f"class:{self._class(value)};")
        elif _is_plain_object(value):
            self._text(f"object:{self._class(type(value))}:")
            self.add(vars(value))
        elif (serialised := _serialised_state(value)) is not None:
            name, state = serialised
            self._text(f"serialised:{name}:")
            self.add(state)
            self.add(getattr(value, "__dict__", None))
        else:
            raise _Uncacheable(f"a {type(value).__name__} object")

    def _function(self, func, method=False):
        """``func`` by name, identity, code object, defaults and keyword defaults.

        Its closure is the caller's concern: refused for a function attribute,
        not read for a method (see above). A default the hash cannot read
        makes a function attribute uncacheable; a method's (a sentinel
        ``object()``, a ``Path``, a ``slice``, in any method of the class,
        called by ``forward`` or not) is read by its type and ``repr``
        instead, which an in-place swap of ``__defaults__`` changes.
        """
        self._text(
            f"function:{func.__qualname__}#{_identity(func)}"
            f"@{_identity(func.__code__)}("
        )
        try:
            self.add(func.__defaults__)
            self.add(func.__kwdefaults__)
        except _Uncacheable as exc:
            if not method:
                raise _Uncacheable(f"a default of {func.__qualname__}: {exc}") from None
            self._text(f"unread:{func.__defaults__!r};{func.__kwdefaults__!r}")
        self._text(")")

    def _class(self, cls):
        """``cls`` by name, identity and the hash of its functions (see above).

        The functions are hashed by a :class:`_StateHash` of their own, whose
        shared objects are not the object graph's; the encoding is computed
        once per digest. While it is, ``cls`` is encoded by name and identity
        alone, where a default refers to it.
        """
        text = self._classes.get(cls)
        if text is None:
            text = self._classes[cls] = f"{cls.__qualname__}#{_identity(cls)}"
            functions = _StateHash(self._modes, self._eval_modules, self._classes)
            for c in cls.__mro__:
                if c in _MODULE_BASES or not c.__flags__ & _HEAP_TYPE:
                    continue
                for name, value in vars(c).items():
                    for func in _functions(value):
                        functions._text(f"{name}=")
                        functions._function(func, method=True)
            text = self._classes[cls] = f"{text}[{functions.digest().hex()}]"
        return text


def _functions(value):
    """The functions of a class attribute that is one (else none).

    Static and class methods give their function, a property its getter,
    setter and deleter; a function decorated with ``functools.wraps`` gives
    itself and the wrapped function, down the ``__wrapped__`` chain.
    """
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return [g for f in (value.fget, value.fset, value.fdel) for g in _functions(f)]
    functions = []
    while isinstance(value, types.FunctionType) and len(functions) < 16:
        functions.append(value)
        value = getattr(value, "__wrapped__", None)
    return functions


def _global_forward_hooks() -> bool:
    """Whether hooks registered for every module's forward are present."""
    hooks = torch.nn.modules.module
    return any(
        getattr(hooks, name, None)
        for name in ("_global_forward_hooks", "_global_forward_pre_hooks")
    )


def module_digest(
    obj: object,
    *,
    global_hooks: bool = True,
    modes: bool = False,
    eval_modules: Iterable[torch.nn.Module] = (),
    tensor_attributes: bool = True,
) -> bytes:
    """16-byte digest of ``obj``'s whole state (see :class:`_StateHash`).

    Raises :class:`_Uncacheable` naming the state the digest cannot capture,
    including, unless ``global_hooks`` is False, hooks registered for every
    module's forward (they change outputs, not the state of ``obj``: a
    comparison of states, such as the savers' round-trip check, passes False).
    With ``modes``, every module's train/eval flag is part of the digest,
    those of ``eval_modules`` read as eval. With ``tensor_attributes``
    False, what is stored on tensors is left out (the savers' comparison).
    """
    if global_hooks and _global_forward_hooks():
        raise _Uncacheable("global module forward hooks are registered")
    state = _StateHash(modes, eval_modules, attributes=tensor_attributes)
    state.add(obj)
    return state.digest()


def state_key(
    obj: object,
    settings: str,
    what: str,
    stacklevel: int,
    eval_modules: Iterable[torch.nn.Module] = (),
) -> bytes | None:
    """Cache key of ``obj`` in its current state with ``settings``; None: do not cache.

    The key is computed afresh at every call (never memoised) and holds
    every module's train/eval flag, but for ``eval_modules``, which the
    caller switches to eval mode for the forward (their flag reads as eval,
    so toggling it costs no cache miss). Where ``obj`` holds state the
    digest cannot capture, a ``UserWarning`` naming it (as ``what``, e.g.
    ``"backbone"``) says that every row is computed afresh; ``stacklevel``
    counts from the caller of this function. A digest that fails for any
    other reason (a tensor type whose sizes cannot be read) turns the cache
    off the same way, naming the error.
    """
    try:
        digest = module_digest(obj, modes=True, eval_modules=eval_modules)
    except Exception as exc:  # noqa: BLE001 (any failure: compute, do not crash)
        if not isinstance(exc, _Uncacheable):  # e.g. a nested tensor's sizes
            exc = f"its state could not be read ({type(exc).__name__}: {exc})"
        warnings.warn(
            f"the feature cache is off for this {type(obj).__name__} {what}: "
            f"{exc}, whose effect on the output the cache key cannot capture, so "
            "every row is computed afresh. Pass cache=False to silence this warning.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
        return None
    return digest + f"|{settings}".encode()


def row_keys(X: np.ndarray) -> list[bytes]:
    """One 16-byte blake2b digest of each row's bytes (``X`` C-contiguous)."""
    base = blake2b(digest_size=16)
    keys = []
    for row in X:
        h = base.copy()
        h.update(row.data)
        keys.append(h.digest())
    return keys


def text_keys(texts: Sequence[str]) -> list[bytes]:
    """One 16-byte blake2b digest of each text's UTF-8 bytes."""
    return [
        blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        for t in texts
    ]


def cached_features(
    key: bytes,
    n_rows: int,
    keys_of: Callable[[slice], list[bytes]],
    compute: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
    max_rows: int,
    key_now: Callable[[], bytes | None],
) -> np.ndarray:
    """Features of ``n_rows`` rows: cached ones read back, the others computed.

    Parameters
    ----------
    key : bytes
        The state key (:func:`state_key`).
    n_rows : int
        Number of rows.
    keys_of : callable
        ``keys_of(rows)`` returns the 16-byte row keys of the rows in the
        slice ``rows``.
    compute : callable
        ``compute(rows, out)`` computes the rows ``rows`` (an index array),
        writes them to ``out[rows]`` and returns ``out``; ``out`` is None when
        nothing is cached under ``key`` (the width is unknown): ``compute``
        then allocates a float32 array of shape (n_rows, n_features).
    max_rows : int
        Most rows the cache keeps after this call; only the last ``max_rows``
        computed rows are stored.
    key_now : callable
        ``key_now()`` computes the state key afresh. Computed rows are stored
        only when it still equals ``key`` after ``compute``: a state changed
        during the forward (another thread's weight update, undone later)
        would have stored rows of that other state under ``key``.

    Returns
    -------
    out : ndarray of shape (n_rows, n_features), dtype float32

    Notes
    -----
    Keys are computed and looked up ``_KEY_CHUNK`` rows at a time; besides
    the output, a call holds 24 bytes per row to compute (its index and key)
    and the cache at most ``max_rows`` rows.
    """
    width = FEATURE_CACHE.width(key)
    out = None if width is None else np.empty((n_rows, width), dtype=np.float32)
    missing, missing_keys = [], []
    for chunk in gen_batches(n_rows, _KEY_CHUNK):
        keys = keys_of(chunk)
        if out is None:
            hits = np.zeros(len(keys), dtype=bool)
        else:
            hits = FEATURE_CACHE.read(key, keys, out, chunk.start)
        misses = np.flatnonzero(~hits)
        missing.append(misses + chunk.start)
        missing_keys.append(b"".join(keys[i] for i in misses))
    missing = np.concatenate(missing)
    if not missing.size:
        return out
    missing_keys = b"".join(missing_keys)
    out = compute(missing, out)
    if key_now() != key:
        return out
    keep = missing[-max_rows:]
    first = (missing.size - keep.size) * 16
    kept_keys = [missing_keys[i : i + 16] for i in range(first, len(missing_keys), 16)]
    del missing_keys
    FEATURE_CACHE.put(key, kept_keys, out, keep, max_rows)
    return out
