"""WhitenedBackbone: a backbone whose features a fixed matrix transforms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from skfewshot._torch_utils import l2_normalize

from ._common import _check_bool

__all__ = ["WhitenedBackbone"]


class WhitenedBackbone(nn.Module):
    """A backbone followed by a fixed linear map of its (normalised) features.

    The forward runs ``backbone``, flattens its output to ``(batch, d)``,
    L2-normalises every row (``normalize=True``) and multiplies it by
    ``components`` (``(d, k)``): what
    :class:`skfewshot.preprocessing.WithinClassWhitening` does to features,
    built into the backbone, so that one backbone file (``skfewshot
    whiten``, :func:`save_backbone`) carries the whitening fitted on its base
    classes to every command and pipeline that reads it.

    With test-time copies (:class:`skfewshot.BackboneTransformer`'s
    ``test_time_shifts`` or ``test_time_warps``), each copy's features are
    whitened, then averaged: the map is linear, so that is the whitening of
    the average of the normalised copies. Where every copy's features have
    one norm (a :class:`BackboneEnsemble` of ``"concat"``-ed members, each
    L2-normalised), it equals the whitening of the averaged features up to
    the scale of each row: a cosine head ignores it where each class has one
    support example, and with several its prototypes average rows whose
    scales differ slightly.

    Parameters
    ----------
    backbone : torch.nn.Module
        Maps a batch to ``(batch, ...)`` features of ``d`` values per sample.
        Any module runs; one of :mod:`skfewshot.models` (``Conv4``,
        ``ResNet12``, ``BackboneEnsemble``) can also be saved with
        :func:`save_backbone` and :func:`skfewshot.persistence.dump`.
    components : array-like or torch.Tensor of shape (d, k)
        The map, finite, e.g. a fitted ``WithinClassWhitening``'s
        ``components_``. Copied into the buffer ``components``, in its own
        floating-point dtype (integers become float32); applied in the
        features' dtype.
    normalize : bool, default=True
        L2-normalise each row before the map, as ``WithinClassWhitening``
        does with its ``normalize=True`` (give that estimator's value).

    Attributes
    ----------
    backbone : torch.nn.Module
        As given.
    components : torch.Tensor of shape (d, k)
        The map (a buffer: saved and moved with the module, never trained).
    normalize : bool
        As given.

    See Also
    --------
    skfewshot.preprocessing.WithinClassWhitening : Fits ``components``.
    BackboneEnsemble : Joins several backbones, often the ``backbone`` here.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skfewshot.models import Conv4, WhitenedBackbone
    >>> net = WhitenedBackbone(Conv4(hidden=8), np.eye(8))
    >>> net(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 8])
    >>> net.out_features((1, 28, 28))
    8

    Fitted on base-class features:

    >>> from skfewshot import BackboneTransformer
    >>> from skfewshot.preprocessing import WithinClassWhitening
    >>> rng = np.random.default_rng(0)
    >>> X_base = rng.random((40, 1, 28, 28), dtype=np.float32)
    >>> y_base = np.repeat(np.arange(10), 4)
    >>> conv = Conv4(hidden=8)
    >>> whiten = WithinClassWhitening().fit(
    ...     BackboneTransformer(conv).fit_transform(X_base), y_base)
    >>> net = WhitenedBackbone(conv, whiten.components_)
    >>> features = BackboneTransformer(net).fit_transform(X_base[:3])
    >>> expected = whiten.transform(BackboneTransformer(conv).fit_transform(X_base[:3]))
    >>> bool(np.allclose(features, expected, atol=1e-4))
    True
    """

    # how save_backbone and skfewshot.persistence store the member and the map
    _member_args = {"backbone": "backbone"}
    _tensor_args = ("components",)

    def __init__(
        self, backbone: nn.Module, components, *, normalize: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(
                f"backbone must be a torch.nn.Module, got {type(backbone).__name__}."
            )
        _check_bool("WhitenedBackbone.normalize", normalize)
        self.backbone = backbone
        self.register_buffer("components", _as_components(components))
        self.normalize = normalize

    def out_features(self, input_shape: Sequence[int]) -> int:
        """Number of output features for inputs of ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int
            Per-sample input shape, e.g. ``(channels, height, width)``.

        Returns
        -------
        int
            ``k``, the number of columns of ``components``.

        Raises
        ------
        TypeError
            If ``backbone`` has no ``out_features`` method.
        ValueError
            If ``backbone`` rejects ``input_shape``, or gives another number
            of features than ``components`` has rows.
        """
        inner = getattr(self.backbone, "out_features", None)
        if not callable(inner):
            raise TypeError(
                f"backbone ({type(self.backbone).__name__}) has no out_features "
                "method; run the module on one batch to learn its width."
            )
        self._check_width(int(inner(input_shape)), f"input_shape={tuple(input_shape)}")
        return int(self.components.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch to its features, normalised and multiplied by ``components``."""
        features = self.backbone(x).flatten(1)
        self._check_width(features.shape[1], f"inputs of shape {tuple(x.shape)}")
        if self.normalize:
            features = l2_normalize(features)
        return features @ self.components.to(features.dtype)

    def _check_width(self, width, inputs):
        rows = self.components.shape[0]
        if width != rows:
            raise ValueError(
                f"WhitenedBackbone: its backbone ({type(self.backbone).__name__}) "
                f"gives {width} features for {inputs}, but components has {rows} "
                "rows; fit the map on this backbone's features (at this input "
                "size, with its last pool as it is now)."
            )


def _as_components(components):
    """``components`` as a fresh 2-D floating-point tensor; ValueError otherwise."""
    if isinstance(components, torch.Tensor):
        if components.is_complex():
            raise ValueError(
                "components must be a 2-D array of real numbers, got dtype "
                f"{components.dtype}."
            )
        tensor = components.detach().clone()
    else:
        try:
            array = np.asarray(components)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"components must be a 2-D array of numbers: {exc}"
            ) from None
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"components must be a 2-D array of numbers, got dtype {array.dtype}."
            )
        tensor = torch.from_numpy(np.array(array, order="C"))
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
    if tensor.ndim != 2 or 0 in tensor.shape:
        raise ValueError(
            "components must be a 2-D array of shape (d, k), d, k >= 1, got shape "
            f"{tuple(tensor.shape)}."
        )
    # the meta tensors that load_backbone builds its skeleton with hold no values
    if not tensor.is_meta and not bool(torch.isfinite(tensor).all()):
        raise ValueError("components holds non-finite values (NaN or inf).")
    return tensor.contiguous()
