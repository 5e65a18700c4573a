"""Torch backbones as plain data, for secure persistence with ``skops.io`` (private).

``skops.io`` stores an object through its ``__getstate__`` and rebuilds it with
``__setstate__``, loading only the types a user trusts and never unpickling.
A ``torch.nn.Module`` is not such data (its tensors pickle through torch's own
code), so an estimator that holds one puts a *description* in its state
instead: a :mod:`skfewshot.models` architecture as the data
:func:`~skfewshot.models.save_backbone` writes (architecture name,
constructor arguments, weights, here as numpy arrays), plus every submodule's
train/eval flag and the names of the frozen parameters.
:func:`restore_module` rebuilds the module with the checks of
:func:`~skfewshot.models.load_backbone` (nothing in the data is trusted).

A module the description cannot reproduce exactly (another class, an added
attribute, hook or submodule, a non-contiguous weight, a non-finite weight) is
refused with an error naming it, so a round trip is either bit-exact or
impossible: such a pipeline is saved with pickle or joblib.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .models._io import _FORMAT as _BACKBONE_FORMAT
from .models._io import _VERSION as _BACKBONE_VERSION
from .models._io import (
    _check_keys,
    _config,
    _foreign,
    _known_architectures,
    _round_trip_problem,
    _validated,
)

__all__ = [
    "TRUSTED_TYPES",
    "describe_module",
    "portable_state",
    "restore_module",
    "restored_state",
]

_FORMAT = "skfewshot.module"
_VERSION = 1
_KEYS = ("format", "version", "backbone", "bit_views", "training", "frozen")
_SAME_AS_KEYS = ("format", "version", "same_as")
# numpy has no type for these torch dtypes: their bits go as same-size ints.
_BIT_VIEWS = {
    name: getattr(torch, name)
    for name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")
    if isinstance(getattr(torch, name, None), torch.dtype)
}
_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

#: The types a skfewshot artifact may hold beyond those skops trusts by default:
#: the library's estimators and ``torch.device`` (a ``device`` parameter).
TRUSTED_TYPES = (
    "skfewshot.backbone.BackboneTransformer",
    "skfewshot.datasets._folder.ImageFileReader",
    "skfewshot.datasets._ink.InkNormalizer",
    "skfewshot.finetune.FineTunedCosineClassifier",
    "skfewshot.preprocessing.WithinClassWhitening",
    "skfewshot.prototype.PrototypeClassifier",
    "skfewshot.text.LSAEncoder",
    "skfewshot.text.SentenceEncoder",
    "torch.device",
)


def _refusal(where, reason):
    return TypeError(
        f"{where} cannot be stored as plain data for skops.io: {reason}. Save "
        "this estimator with pickle or joblib instead (and load such files only "
        "from sources you trust)."
    )


def describe_module(module: torch.nn.Module, where: str) -> dict[str, Any]:
    """Plain data (dicts, lists, str, int, bool, numpy arrays) that rebuild ``module``.

    ``where`` names the module in messages (``"BackboneTransformer.module"``).
    The weights are copied to host memory (from any device). The description
    is rebuilt once here and compared with the module by the check
    :func:`~skfewshot.models.save_backbone` runs too (every parameter, buffer
    and attribute of every submodule), so what is returned reproduces the
    module exactly. Raises TypeError naming the module's class when it is not
    a :mod:`skfewshot.models` architecture, or naming what differs when it
    holds state its description cannot reproduce.
    """
    foreign = _foreign(module, where)
    if foreign is not None:
        cls = type(foreign[1])
        reason = (
            f"it is a {cls.__module__}.{cls.__qualname__}, not a skfewshot.models "
            f"architecture {_known_architectures()}, and skops cannot store an "
            "arbitrary torch module securely (loading it would run its code)"
        )
        raise _refusal(foreign[0], reason)
    name = type(module).__name__
    weights, bit_views = {}, {}
    for key, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu", copy=True)
        if tensor.dtype in _BIT_VIEWS.values():
            bit_views[key] = str(tensor.dtype).removeprefix("torch.")
            tensor = tensor.view(_INT_OF_SIZE[tensor.element_size()])
        weights[key] = tensor.numpy()
    description = {
        "format": _FORMAT,
        "version": _VERSION,
        "backbone": {
            "format": _BACKBONE_FORMAT,
            "version": _BACKBONE_VERSION,
            "architecture": name,
            "config": _config(module),
            "state_dict": weights,
        },
        "bit_views": bit_views,
        "training": [m.training for m in module.modules()],
        "frozen": [k for k, p in module.named_parameters() if not p.requires_grad],
    }
    problem = _round_trip_problem(
        module, lambda: restore_module(description, where), where
    )
    if problem is not None:
        raise _refusal(where, problem)
    return description


def restore_module(description: Any, where: str) -> torch.nn.Module:
    """The module :func:`describe_module` described, on the CPU; ValueError otherwise.

    Nothing in ``description`` is trusted: the keys, the architecture, its
    configuration and every weight's name, shape, dtype and values are checked
    (by :func:`~skfewshot.models.load_backbone`'s validation) before the module
    is assembled from the given arrays.
    """

    def fail(message):
        raise ValueError(f"{where}: {message}.")

    if not isinstance(description, dict) or description.get("format") != _FORMAT:
        fail("not a skfewshot module description")
    if type(description.get("version")) is not int or description["version"] != (
        _VERSION
    ):
        fail(
            f"description version {description.get('version')!r}; this skfewshot "
            f"reads version {_VERSION}"
        )
    problem = _check_keys("the description", description, _KEYS)
    if problem:
        fail(problem)
    backbone, bit_views = description["backbone"], description["bit_views"]
    state = backbone.get("state_dict") if isinstance(backbone, dict) else None
    if not isinstance(state, dict) or not isinstance(bit_views, dict):
        fail("'backbone' and 'bit_views' must be dicts, with a 'state_dict' dict")
    tensors = {}
    for key, array in state.items():
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
            fail(f"weight {key!r} is not a numeric numpy array")
        tensor = torch.from_numpy(
            array if array.flags.c_contiguous else array.copy(order="C")
        )
        view = bit_views.get(key)
        if view is not None:
            if view not in _BIT_VIEWS or (
                _BIT_VIEWS[view].itemsize != tensor.element_size()
            ):
                fail(f"weight {key!r}: bad stored dtype {view!r}")
            tensor = tensor.view(_BIT_VIEWS[view])
        tensors[key] = tensor
    if not set(bit_views) <= set(tensors):
        fail("'bit_views' names weights that are not there")
    module, _ = _validated(where, {**backbone, "state_dict": tensors})
    _set_flags(module, description["training"], description["frozen"], fail)
    return module


def _set_flags(module, training, frozen, fail):
    """Apply the stored train/eval flags and frozen parameter names."""
    modules = list(module.modules())
    names = {k for k, _ in module.named_parameters()}
    if not (
        isinstance(training, list)
        and len(training) == len(modules)
        and all(type(flag) is bool for flag in training)
    ):
        fail(f"'training' must be {len(modules)} bools, one per submodule")
    if not isinstance(frozen, list) or not set(frozen) <= names:
        fail("'frozen' must list parameter names of the architecture")
    for m, flag in zip(modules, training):
        m.training = flag
    for key, param in module.named_parameters():
        param.requires_grad_(key not in frozen)


def portable_state(state: dict, keys: tuple[str, ...], owner: str) -> dict:
    """``state`` with the torch modules under ``keys`` described as plain data.

    A module held under two keys is described once; the later key holds
    ``{"format", "version", "same_as": earlier_key}``.
    """
    state = dict(state)
    seen = {}
    for key in keys:
        module = state.get(key)
        if not isinstance(module, torch.nn.Module):
            continue
        if id(module) in seen:
            state[key] = {
                "format": _FORMAT,
                "version": _VERSION,
                "same_as": seen[id(module)],
            }
        else:
            seen[id(module)] = key
            state[key] = describe_module(module, f"{owner}.{key}")
    return state


def restored_state(state: dict, keys: tuple[str, ...], owner: str) -> dict:
    """Inverse of :func:`portable_state`: descriptions under ``keys`` rebuilt.

    Modules (as pickle stores them) and anything else pass through unchanged.
    """
    state = dict(state)
    restored = {}
    for key in keys:
        value = state.get(key)
        if not isinstance(value, dict):
            continue
        where = f"{owner}.{key}"
        if "same_as" in value:
            problem = _check_keys("the description", value, _SAME_AS_KEYS)
            if problem or restored.get(str(value["same_as"])) is None:
                raise ValueError(
                    f"{where}: a reference to a module must name an earlier key "
                    f"of {', '.join(keys)}; got {value!r}."
                )
            state[key] = restored[str(value["same_as"])]
        else:
            state[key] = restored[key] = restore_module(value, where)
    return state
