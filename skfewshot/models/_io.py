"""Save and load trained backbones as one self-describing, weights-only file.

``load_backbone`` trusts nothing in the file: it checks the keys, types,
version and configuration, builds the declared architecture on the ``meta``
device (no memory) and compares its parameter names, shapes and dtypes with the
file's tensors before any real module exists. The loaded module's parameters
are the file's own tensors (``load_state_dict(..., assign=True)``), so loading
takes about the file's size in memory, whatever the file claims.
"""

from __future__ import annotations

import inspect
import io
import math
import numbers
import os
import reprlib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._feature_cache import _MODULE_INTERNALS, _Uncacheable, module_digest
from .._fileio import atomic_path

__all__ = ["save_backbone", "load_backbone"]

_FORMAT = "skfewshot.backbone"
_VERSION = 1
_REQUIRED_KEYS = ("format", "version", "architecture", "config", "state_dict")
_OPTIONAL_KEYS = ("input_shape", "trained_on")  # absent in older files

# bounds on ``trained_on``: a few hundred class names, not a data set
_MAX_DEPTH = 16
_MAX_ITEMS = 100_000


def _architectures():
    from ._conv4 import Conv4
    from ._ensemble import BackboneEnsemble
    from ._resnet12 import ResNet12
    from ._whitened import WhitenedBackbone

    return {
        "Conv4": Conv4,
        "ResNet12": ResNet12,
        "BackboneEnsemble": BackboneEnsemble,
        "WhitenedBackbone": WhitenedBackbone,
    }


def _member_args(cls):
    """Constructor arguments of ``cls`` that hold member modules -> attribute names.

    A composite architecture (``BackboneEnsemble``, ``WhitenedBackbone``)
    declares them as the class attribute ``_member_args``; its members are
    stored as their own ``{"architecture", "config"}`` (a list of them for an
    argument that takes a list, one for an argument that takes one module) and
    their weights under the composite's.
    """
    return getattr(cls, "_member_args", {})


def _tensor_args(cls):
    """Constructor arguments of ``cls`` that are tensors it keeps as buffers.

    Declared as the class attribute ``_tensor_args`` (``WhitenedBackbone``'s
    ``components``): the configuration stores such a tensor's shape, and its
    values are the state-dict entry of the buffer of the same name.
    """
    return getattr(cls, "_tensor_args", ())


def _members(module, attribute):
    """``[(place, member)]`` of a composite's member attribute: ``("[i]", m)``
    for each module of a ``ModuleList``, ``("", m)`` for a single module."""
    value = getattr(module, attribute)
    if isinstance(value, torch.nn.ModuleList):
        return [(f"[{i}]", m) for i, m in enumerate(value)]
    return [("", value)]


def _known_architectures():
    """``"(Conv4, ResNet12) or a BackboneEnsemble or WhitenedBackbone of
    them"``, for messages."""
    archs = _architectures()
    leaves = [name for name, cls in archs.items() if not _member_args(cls)]
    composites = [name for name, cls in archs.items() if _member_args(cls)]
    return f"({', '.join(leaves)}) or a {' or '.join(composites)} of them"


def _foreign(module, where):
    """``(where, module)`` of the first module that is no skfewshot architecture.

    ``module`` itself, or a member of a composite (``where`` then names it, e.g.
    ``"module.modules[1]"``); None when every module is one.
    """
    archs = _architectures()
    if archs.get(type(module).__name__) is not type(module):
        return where, module
    for arg, attribute in _member_args(type(module)).items():
        for place, member in _members(module, attribute):
            found = _foreign(member, f"{where}.{arg}{place}")
            if found is not None:
                return found
    return None


#: Constructor arguments added after files were written without them: such a
#: file builds the architecture with the argument's default (what it meant then).
_ADDED_LATER = {"Conv4": ("last_pool",)}


def _init_params(cls):
    """Names of the constructor arguments of a skfewshot model class."""
    params = inspect.signature(cls.__init__).parameters
    return [name for name in params if name != "self"]


def _config(module):
    """Constructor arguments of a skfewshot model, read back from its attributes.

    Members of a composite are ``{"architecture": name, "config": config}``
    (a list of them where the argument takes a list); a tensor argument
    (:func:`_tensor_args`) is its shape, a list of ints.
    """
    members = _member_args(type(module))
    tensors = _tensor_args(type(module))
    config = {}
    for name in _init_params(type(module)):
        value = getattr(module, members.get(name, name))
        if name in members:
            specs = [
                {"architecture": type(m).__name__, "config": _config(m)}
                for _, m in _members(module, members[name])
            ]
            value = specs if isinstance(value, torch.nn.ModuleList) else specs[0]
        elif name in tensors:
            value = list(value.shape)
        config[name] = list(value) if isinstance(value, tuple) else value
    return config


def _plain(value, where, counter, depth=0):
    """``value`` as JSON-like plain data (dict, list, str, int, float, bool, None).

    Tuples become lists and numpy scalars and arrays their Python values.
    Raises TypeError naming the offending entry (``where``), or ValueError for
    a non-finite float or data too deeply nested or too large.
    """
    counter[0] += 1
    if counter[0] > _MAX_ITEMS or depth > _MAX_DEPTH:
        raise ValueError(
            f"{where} is too large or too deeply nested for a description of "
            f"training data (at most {_MAX_ITEMS} values, {_MAX_DEPTH} levels)."
        )
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}.")
        return value
    if isinstance(value, (list, tuple)):
        return [
            _plain(v, f"{where}[{i}]", counter, depth + 1) for i, v in enumerate(value)
        ]
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where}[{key!r}]: keys must be str, got {type(key).__name__}."
                )
            out[key] = _plain(v, f"{where}[{key!r}]", counter, depth + 1)
        return out
    raise TypeError(
        f"{where} must be plain data (dict, list, str, int, float, bool or None), "
        f"got {type(value).__name__}."
    )


def _check_trained_on(trained_on):
    """``trained_on`` as plain data; TypeError/ValueError naming what is wrong."""
    if trained_on is None:
        return None
    if not isinstance(trained_on, dict):
        raise TypeError(
            f"trained_on must be a dict or None, got {type(trained_on).__name__}."
        )
    return _plain(trained_on, "trained_on", [0])


def _check_input_shape(input_shape):
    """``input_shape`` as a list of 2 or 3 ints >= 1 (or None); else ValueError."""
    if input_shape is None:
        return None
    shape = None if isinstance(input_shape, (str, bytes)) else input_shape
    try:
        shape = list(shape)
    except TypeError:
        shape = []
    if len(shape) not in (2, 3) or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
        for v in shape
    ):
        raise ValueError(
            "input_shape must be None or 2 or 3 ints >= 1 ((height, width) or "
            f"(channels, height, width)), got {input_shape!r}."
        )
    return [int(v) for v in shape]


def _is_dense(tensor):
    """Whether ``tensor`` is laid out densely: contiguous, or channels-last (4-D)."""
    return tensor.layout == torch.strided and (
        tensor.is_contiguous()
        or (
            tensor.ndim == 4 and tensor.is_contiguous(memory_format=torch.channels_last)
        )
    )


_ABSENT = object()


def _attributes(module):
    """``module``'s own attributes, without those every ``nn.Module`` has."""
    return {k: v for k, v in vars(module).items() if k not in _MODULE_INTERNALS}


def _words(value):
    """``value`` in a few words, for messages (a tensor by dtype, shape, strides)."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        return (
            f"a {dtype} tensor of shape {tuple(value.shape)} and strides "
            f"{value.stride()}"
        )
    return reprlib.repr(value)


def _difference(module, other, *, values):
    """The first way ``module`` differs from ``other``, its rebuilt copy, in words.

    Submodules are matched by name and class, then their parameters, buffers
    and own attributes by name; with ``values``, also by state digest (without,
    ``other`` may be on the ``meta`` device). None when nothing differs.
    """
    twins = dict(other.named_modules())
    for path, sub in module.named_modules():
        at = f"submodule {path!r}" if path else "the module itself"
        twin = twins.pop(path, None)
        if twin is None:
            return f"{at} ({type(sub).__name__}) is not in it"
        if type(twin) is not type(sub):
            return f"{at} is a {type(sub).__name__}, not a {type(twin).__name__}"
        for kind, mine, theirs in (
            ("parameter", sub._parameters, twin._parameters),
            ("buffer", sub._buffers, twin._buffers),
            ("attribute", _attributes(sub), _attributes(twin)),
        ):
            for key in {**mine, **theirs}:
                a, b = mine.get(key, _ABSENT), theirs.get(key, _ABSENT)
                if a is _ABSENT or b is _ABSENT:
                    change = "an added" if b is _ABSENT else "no"
                    return f"{at} has {change} {kind} {key!r}"
                if values and _digest(a) != _digest(b):
                    return f"{at} has {kind} {key!r} = {_words(a)}, not {_words(b)}"
    if twins:
        path, twin = next(iter(twins.items()))
        return f"it has no submodule {path!r} ({type(twin).__name__})"
    return None


def _digest(obj):
    """The state digest the round-trip check compares: hooks registered for
    every module's forward are no state of ``obj`` (a profiler's must not
    stop a save), nor are tags stored on its tensors, which a file does not
    hold (an optimizer's ``no_weight_decay``, ``torch.compile``'s markers)."""
    return module_digest(obj, global_hooks=False, tensor_attributes=False)


def _round_trip_problem(module, rebuild, where):
    """Why ``module`` would not come back identical from its saved data, or None.

    ``rebuild()`` returns the module as a reader rebuilds it from the data
    (architecture, configuration, weights), or raises ValueError (its message
    prefixed by ``where``, as :func:`_validated` writes it) when the reader
    would refuse the data. The structure is first compared with the
    architecture built from ``module``'s configuration on the ``meta`` device
    (no memory), then the rebuilt module's state digest (the feature cache's:
    every parameter, buffer and attribute of every submodule, tensors by
    dtype, shape, strides and bytes) with ``module``'s. Both ways of saving
    (:func:`save_backbone` and the skops path,
    :func:`skfewshot._persistence.describe_module`) refuse with this check, so
    a saved module is either rebuilt exactly or not saved.
    """
    name = type(module).__name__

    def fail(message):
        raise ValueError(message)

    try:
        with torch.device("meta"):
            skeleton, _ = _skeleton(name, _config(module), fail)
        found = _difference(module, skeleton, values=False)
        if found is None:
            rebuilt = rebuild()
            if _digest(rebuilt) == _digest(module):
                return None
            found = _difference(module, rebuilt, values=True) or "its state"
    except _Uncacheable as exc:
        return str(exc)
    except ValueError as exc:
        return str(exc).rstrip(".").removeprefix(f"{where!r}: ")
    return f"it differs from a {name} built from its configuration: {found}"


def save_backbone(
    module: torch.nn.Module,
    path: str | os.PathLike,
    *,
    input_shape: Sequence[int] | None = None,
    trained_on: Mapping[str, Any] | None = None,
) -> None:
    """Save a :mod:`skfewshot.models` backbone with its architecture and weights.

    The file holds only tensors and plain Python values, so
    :func:`load_backbone` reads it with ``torch.load(..., weights_only=True)``:
    loading never runs code from the file. For other modules, save
    ``module.state_dict()`` with :func:`torch.save` and load it into a module you
    build yourself.

    Before anything is written, the module is rebuilt from what the file
    would hold, as :func:`load_backbone` rebuilds it, and compared with
    ``module`` (every parameter, buffer and attribute of every submodule): a
    module that would not load back identical (an added submodule or
    attribute, a parametrization such as weight norm, a changed attribute
    such as a BatchNorm's ``eps``, non-finite weights) is refused. Weights
    keep their dtype (float64, float16, bfloat16...).

    The write is atomic: the file is written beside ``path`` under a temporary
    name, then renamed onto ``path``. An interrupted or failed save leaves an
    existing ``path`` exactly as it was, and a reader never sees a half-written
    file.

    Parameters
    ----------
    module : Conv4, ResNet12, BackboneEnsemble or WhitenedBackbone
        The trained backbone (e.g. a trainer's ``backbone_``); the members
        of a ``BackboneEnsemble`` or ``WhitenedBackbone`` must be such
        backbones too.
    path : str or path-like
        Where to write the file (conventionally ``*.pt``). Its folder must
        exist.
    input_shape : tuple of int, default=None
        Per-sample input shape the backbone was trained on, e.g. ``(1, 28, 28)``;
        stored so that tools (the ``skfewshot`` command) can prepare data to match.
        It must be a shape the module takes (its ``out_features`` accepts it):
        ``in_channels`` channels, and at least 16x16 for ``Conv4`` and
        ``ResNet12``.
    trained_on : dict or None, default=None
        What the backbone was trained on, as plain data (str keys; str, int,
        float, bool, None, lists and dicts as values; tuples and numpy values
        are stored as lists and Python numbers), e.g. ``{"dataset": "digits",
        "classes": [0, 1, 2, 3, 4]}`` or ``{"dataset": "omniglot", "subset":
        "images_background_small1", "alphabets": [...]}``. Returned by
        :func:`load_backbone` as ``meta["trained_on"]``, so that tools can
        refuse to evaluate the backbone on classes it has seen. The command
        line also reads ``"pixel_mean"`` (the training images' mean pixel:
        ``predict`` and ``runs`` warn about images the other way round) and
        ``"ink_normalizer"`` (``{"radius": None or float, "resolution":
        int}``: its images were read at that side and moment-normalised,
        :class:`~skfewshot.datasets.InkNormalizer`; ``evaluate``, ``runs``
        and ``predict`` normalise theirs alike), as ``skfewshot train``
        records them.

    Raises
    ------
    TypeError
        When ``module`` is not a :mod:`skfewshot.models` backbone or would not
        load back identical (the message names what differs), or
        ``trained_on`` is not plain data. Nothing is written then.
    ValueError
        When ``input_shape`` is not 2 or 3 positive ints or is not a shape the
        module takes (another channel count than its ``in_channels``, images
        too small), or ``trained_on`` holds a non-finite float. Nothing is
        written then.

    Examples
    --------
    >>> import tempfile, os
    >>> from skfewshot.models import Conv4, save_backbone, load_backbone
    >>> path = os.path.join(tempfile.mkdtemp(), "conv4.pt")
    >>> save_backbone(Conv4(hidden=8), path, input_shape=(1, 28, 28),
    ...               trained_on={"dataset": "digits", "classes": [0, 1, 2, 3, 4]})
    >>> net, meta = load_backbone(path)
    >>> type(net).__name__, net.hidden, meta["input_shape"]
    ('Conv4', 8, (1, 28, 28))
    >>> meta["trained_on"]
    {'dataset': 'digits', 'classes': [0, 1, 2, 3, 4]}
    """
    foreign = _foreign(module, "module")
    if foreign is not None:
        where, member = foreign
        place = "" if member is module else f" as {where.removeprefix('module.')}"
        raise TypeError(
            "save_backbone saves skfewshot.models backbones "
            f"{_known_architectures()}, got {type(member).__name__}{place}; save "
            "module.state_dict() with torch.save instead."
        )
    shape = _check_input_shape(input_shape)
    if shape is not None:
        try:  # every skfewshot architecture says which shapes it takes
            module.out_features(tuple(shape))
        except ValueError as exc:
            raise ValueError(
                f"input_shape={tuple(shape)!r} is not a shape this "
                f"{type(module).__name__} takes: {exc}"
            ) from exc
    state = {}
    for key, value in module.state_dict().items():
        value = value.detach().cpu()
        state[key] = value if _is_dense(value) else value.contiguous()
    blob = {
        "format": _FORMAT,
        "version": _VERSION,
        "architecture": type(module).__name__,
        "config": _config(module),
        "input_shape": shape,
        "trained_on": _check_trained_on(trained_on),
        "state_dict": state,
    }
    problem = _round_trip_problem(
        module, lambda: _validated("module", blob)[0], "module"
    )
    if problem is not None:
        raise TypeError(
            f"save_backbone cannot save this {type(module).__name__}: {problem}; "
            "load_backbone would not give it back as it is. Save "
            "module.state_dict() with torch.save instead (and load it into a "
            "module you build yourself)."
        )
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _read(source, path):
    """The object of file ``path`` read by torch's weights-only loader, or ValueError.

    ``source`` is ``path`` itself or a binary file object of its bytes.

    Only the zip format that :func:`torch.save` writes is accepted, with its
    members stored uncompressed (as ``torch.save`` writes them): a compressed
    member, or the legacy format whose storages are allocated at the size the
    file declares, could cost any amount of memory.
    """
    problem = None
    try:
        with zipfile.ZipFile(source) as archive:
            if any(i.compress_type != zipfile.ZIP_STORED for i in archive.infolist()):
                problem = "it has a compressed member, which torch.save never writes"
    except zipfile.BadZipFile:
        problem = "it is not the zip archive that torch.save writes"
    if problem is None:
        if hasattr(source, "seek"):
            source.seek(0)
        try:
            return torch.load(source, map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception as exc:  # pickle errors, truncated files, foreign formats
            problem = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            problem = f"{type(exc).__name__}: {problem}"
    raise ValueError(
        f"{str(path)!r} is not a readable skfewshot backbone file ({problem})."
    )


def _check_keys(what, found, required, optional=()):
    """ValueError text for missing / unexpected keys, or None."""
    missing = [k for k in required if k not in found]
    unexpected = [k for k in found if k not in required and k not in optional]
    if missing:
        return f"{what}: missing {missing[0]!r}" + (
            f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        )
    if unexpected:
        return f"{what}: unexpected {unexpected[0]!r}" + (
            f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        )
    return None


def _str_keyed_dict(value):
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def _check_tensor(key, value, expected, name):
    """Problem with one state-dict entry against the meta model's, or None."""
    if not isinstance(value, torch.Tensor):
        return f"{key!r} is a {type(value).__name__}, not a tensor"
    if value.shape != expected.shape:
        return (
            f"{key!r} has shape {tuple(value.shape)}; {name} needs "
            f"{tuple(expected.shape)}"
        )
    if value.dtype != expected.dtype and not (
        value.is_floating_point() and expected.is_floating_point()
    ):
        return f"{key!r} has dtype {value.dtype}; {name} needs {expected.dtype}"
    # a tensor whose strides reuse a few stored values (e.g. expand) claims
    # more data than the file holds
    needed = value.numel() * value.element_size()
    held = value.untyped_storage().nbytes() - value.storage_offset() * (
        value.element_size()
    )
    if not _is_dense(value) or needed > held:
        return f"{key!r} does not hold its {value.numel()} values (not a dense tensor)"
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        return f"{key!r} holds non-finite values (NaN or inf)"
    return None


def _validated(path, blob):
    """Check everything in ``blob`` and build the module; ValueError otherwise."""

    def fail(message):
        raise ValueError(f"{str(path)!r}: {message}.")

    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a skfewshot backbone file (write one with "
            "skfewshot.models.save_backbone)."
        )
    version = blob.get("version")
    if type(version) is not int or version != _VERSION:
        fail(
            f"the file has format version {version!r}; this skfewshot reads "
            f"version {_VERSION}"
        )
    problem = _check_keys("the file", blob, _REQUIRED_KEYS, _OPTIONAL_KEYS)
    if problem:
        fail(problem.replace("unexpected", "unexpected key", 1))
    name, config, state = blob["architecture"], blob["config"], blob["state_dict"]
    if not _str_keyed_dict(state):
        fail(f"'state_dict' must be a dict with str keys, got {type(state).__name__}")
    try:
        input_shape = _check_input_shape(blob.get("input_shape"))
        trained_on = _check_trained_on(blob.get("trained_on"))
    except (TypeError, ValueError) as exc:
        fail(str(exc).rstrip("."))
    # the declared model, without memory: its parameter names, shapes, dtypes
    with torch.device("meta"):
        skeleton, config = _skeleton(name, config, fail)
    expected = skeleton.state_dict()
    problem = _check_keys(f"state_dict does not match {name}", state, expected)
    if problem:
        fail(problem)
    for key, value in expected.items():
        problem = _check_tensor(key, state[key], value, name)
        if problem:
            fail(f"state_dict entry {problem}")
    # the skeleton takes the file's tensors as its own, in their stored dtypes
    skeleton.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)
    skeleton.eval()
    meta = {
        "architecture": name,
        "config": config,
        "input_shape": None if input_shape is None else tuple(input_shape),
        "trained_on": trained_on,
    }
    return skeleton, meta


def _skeleton(name, config, fail, where="", depth=0):
    """``(module, config)``: the declared architecture built from ``config``.

    Called under ``torch.device("meta")``; ``fail(message)`` raises. The members
    of a composite (``BackboneEnsemble``, ``WhitenedBackbone``) are checked and
    built the same way, each named in messages by its place (``modules[1]``,
    ``backbone``); a tensor argument is built empty (on ``meta``) at the shape
    the configuration gives.
    """
    archs = _architectures()
    if not isinstance(name, str) or name not in archs:
        fail(f"{where}unknown architecture {name!r} (known: {', '.join(archs)})")
    if not _str_keyed_dict(config):
        fail(
            f"{where}'config' must be a dict with str keys, got {type(config).__name__}"
        )
    cls = archs[name]
    params = _init_params(cls)
    added = _ADDED_LATER.get(name, ())
    problem = _check_keys(
        f"{where}config does not match {name}({', '.join(params)})",
        config,
        [p for p in params if p not in added],
        added,
    )
    if problem:
        fail(problem)
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    arguments = dict(config)
    for arg in _member_args(cls):
        specs = config[arg]
        single = isinstance(specs, dict)
        if not (single or isinstance(specs, tuple)) or depth >= _MAX_DEPTH:
            fail(
                f"{where}{arg!r} must be a member or a list of members nested at "
                f"most {_MAX_DEPTH} deep, got {type(specs).__name__} at depth {depth}"
            )
        members = []
        for i, spec in enumerate([specs] if single else specs):
            at = f"{where}{arg}{'' if single else f'[{i}]'}: "
            if not _str_keyed_dict(spec):
                fail(f"{at}must be a dict of 'architecture' and 'config'")
            problem = _check_keys("the member", spec, ("architecture", "config"))
            if problem:
                fail(at + problem)
            member, _ = _skeleton(
                spec["architecture"], spec["config"], fail, at, depth + 1
            )
            members.append(member)
        arguments[arg] = members[0] if single else members
    for arg in _tensor_args(cls):
        shape = config[arg]
        if not (
            isinstance(shape, tuple)
            and 1 <= len(shape) <= 8
            and all(type(n) is int and 1 <= n < 2**31 for n in shape)
        ):
            fail(f"{where}{arg!r} must be a tensor's shape (ints >= 1), got {shape!r}")
        arguments[arg] = torch.empty(shape)
    try:
        return cls(**arguments), config
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        fail(f"{where}invalid config {config!r}: {exc}".rstrip("."))


def load_backbone(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """Load a backbone written by :func:`save_backbone`, in eval mode on the CPU.

    Nothing in the file is trusted: it is read with torch's weights-only loader
    (no code runs), and its keys, format version, architecture, configuration
    and every tensor's name, shape, dtype and values are checked against the
    declared architecture built on the ``meta`` device (which allocates
    nothing) before the module is assembled from the file's own tensors. So
    loading costs about the file's size in memory, and a file that declares a
    huge model it does not hold is rejected. Floating-point weights keep the
    dtype they were saved in (a float64 backbone loads as float64); integer
    tensors must have the architecture's dtype.

    Parameters
    ----------
    path : str or path-like
        The file to read.

    Returns
    -------
    module : torch.nn.Module
        The backbone with its trained weights.
    meta : dict
        ``architecture``, ``config`` (constructor arguments), ``input_shape``
        (a tuple, or None when it was not recorded) and ``trained_on`` (the
        plain-data description given to :func:`save_backbone`, or None when it
        was not recorded).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    IsADirectoryError
        When ``path`` is a directory.
    ValueError
        When the file is not a valid skfewshot backbone file: not the zip
        archive ``torch.save`` writes, truncated, another format version,
        missing or unexpected keys, an unknown architecture, an invalid
        configuration, or tensors that do not match the architecture (names,
        shapes, dtypes, non-finite values). The message names the file and the
        problem.

    Examples
    --------
    >>> import tempfile, os
    >>> from skfewshot.models import Conv4, save_backbone, load_backbone
    >>> path = os.path.join(tempfile.mkdtemp(), "conv4.pt")
    >>> save_backbone(Conv4(hidden=4), path)
    >>> load_backbone(path)[1]["architecture"]
    'Conv4'
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"{str(path)!r} is a directory, not a backbone file (give the .pt "
            "file written by skfewshot.models.save_backbone)."
        )
    if not path.exists():
        raise FileNotFoundError(f"backbone file {str(path)!r} does not exist.")
    return _validated(path, _read(path, path))


def _load_backbone_bytes(data: bytes, path: str | os.PathLike):
    """:func:`load_backbone` of the bytes ``data`` of the file ``path``.

    With every check of :func:`load_backbone` (messages name ``path``). For a
    caller that records what it loaded (``skfewshot ensemble`` records each
    member's SHA-256): it reads the file once, then hashes and loads the same
    bytes, so a file rewritten meanwhile cannot be recorded as one version and
    loaded as another.
    """
    return _validated(path, _read(io.BytesIO(data), path))
