"""Save and load trained backbones as one self-describing, weights-only file."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

__all__ = ["save_backbone", "load_backbone"]

_FORMAT = "skfewshot.backbone"
_VERSION = 1


def _architectures():
    from ._conv4 import Conv4
    from ._resnet12 import ResNet12

    return {"Conv4": Conv4, "ResNet12": ResNet12}


def _config(module):
    """Constructor arguments of a skfewshot model, read back from its attributes."""
    params = inspect.signature(type(module).__init__).parameters
    config = {}
    for name in params:
        if name == "self":
            continue
        value = getattr(module, name)
        config[name] = list(value) if isinstance(value, tuple) else value
    return config


def save_backbone(module, path, *, input_shape=None):
    """Save a :mod:`skfewshot.models` backbone with its architecture and weights.

    The file holds only tensors and plain Python values, so
    :func:`load_backbone` reads it with ``torch.load(..., weights_only=True)``:
    loading never runs code from the file. For other modules, save
    ``module.state_dict()`` with :func:`torch.save` and load it into a module you
    build yourself.

    Parameters
    ----------
    module : Conv4 or ResNet12
        The trained backbone (e.g. a trainer's ``backbone_``).
    path : str or path-like
        Where to write the file (conventionally ``*.pt``).
    input_shape : tuple of int, default=None
        Per-sample input shape the backbone was trained on, e.g. ``(1, 28, 28)``;
        stored so that tools (the ``skfewshot`` command) can prepare data to match.

    Examples
    --------
    >>> import tempfile, os
    >>> from skfewshot.models import Conv4, save_backbone, load_backbone
    >>> path = os.path.join(tempfile.mkdtemp(), "conv4.pt")
    >>> save_backbone(Conv4(hidden=8), path, input_shape=(1, 28, 28))
    >>> net, meta = load_backbone(path)
    >>> type(net).__name__, net.hidden, meta["input_shape"]
    ('Conv4', 8, (1, 28, 28))
    """
    archs = _architectures()
    name = type(module).__name__
    if archs.get(name) is not type(module):
        raise TypeError(
            f"save_backbone saves skfewshot.models backbones ({', '.join(archs)}), "
            f"got {name}; save module.state_dict() with torch.save instead."
        )
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save(
        {
            "format": _FORMAT,
            "version": _VERSION,
            "architecture": name,
            "config": _config(module),
            "input_shape": None if input_shape is None else list(input_shape),
            "state_dict": state,
        },
        Path(path),
    )


def load_backbone(path):
    """Load a backbone written by :func:`save_backbone`, in eval mode on the CPU.

    Parameters
    ----------
    path : str or path-like
        The file to read.

    Returns
    -------
    module : torch.nn.Module
        The backbone with its trained weights.
    meta : dict
        ``architecture``, ``config`` (constructor arguments) and ``input_shape``
        (a tuple, or None when it was not recorded).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a skfewshot backbone file.

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
    if not path.is_file():
        raise FileNotFoundError(f"backbone file {str(path)!r} does not exist.")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, foreign formats
        raise ValueError(
            f"{str(path)!r} is not a readable skfewshot backbone file ({exc})."
        ) from exc
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a skfewshot backbone file (write one with "
            "skfewshot.models.save_backbone)."
        )
    archs = _architectures()
    name = blob["architecture"]
    if name not in archs:
        raise ValueError(f"{str(path)!r} holds an unknown architecture {name!r}.")
    config = {
        k: tuple(v) if isinstance(v, list) else v for k, v in blob["config"].items()
    }
    module = archs[name](**config)
    module.load_state_dict(blob["state_dict"])
    module.eval()
    shape = blob.get("input_shape")
    meta = {
        "architecture": name,
        "config": config,
        "input_shape": None if shape is None else tuple(shape),
    }
    return module, meta
