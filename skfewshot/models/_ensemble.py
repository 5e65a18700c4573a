"""BackboneEnsemble: several backbones as one, their features joined."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from skfewshot._torch_utils import l2_normalize

__all__ = ["BackboneEnsemble"]

_COMBINE = ("concat", "mean")


class BackboneEnsemble(nn.Module):
    """Run several backbones on the same input and join their features.

    Each member's output is flattened to ``(batch, d_i)`` and L2-normalised
    row by row (so that no member dominates by its scale; at any scale its
    dtype holds, an all-zero row staying zero), then the members'
    features are concatenated (``combine="concat"``: ``sum(d_i)`` features)
    or averaged (``combine="mean"``: ``d`` features, every member must give
    the same width ``d``). Wrap it with :class:`skfewshot.BackboneTransformer`
    like any backbone: one forward of the ensemble runs every member once.

    Parameters
    ----------
    modules : sequence of torch.nn.Module
        The members, at least one, each mapping a batch to ``(batch, ...)``
        features. Any modules run; an ensemble whose members are all
        :mod:`skfewshot.models` backbones (``Conv4``, ``ResNet12``, or
        ensembles of them) can also be saved with :func:`save_backbone` and
        :func:`skfewshot.persistence.dump`, which refuse any other member
        with a ``TypeError`` naming it.
    combine : {"concat", "mean"}, default="concat"
        How the normalised member features are joined.

    Attributes
    ----------
    members : torch.nn.ModuleList
        The members, in order (``modules`` itself would shadow
        :meth:`torch.nn.Module.modules`).
    combine : str
        As given.

    See Also
    --------
    Conv4, ResNet12 : Library backbones to combine.
    skfewshot.BackboneTransformer : Wraps a backbone as a scikit-learn transformer.

    Examples
    --------
    >>> import torch
    >>> from skfewshot.models import BackboneEnsemble, Conv4, ResNet12
    >>> net = BackboneEnsemble([Conv4(hidden=8), ResNet12(1, channels=(4, 4, 4, 4))])
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 12])
    >>> net.out_features((1, 28, 28))
    12
    >>> same = BackboneEnsemble([Conv4(hidden=8), Conv4(hidden=8)], combine="mean")
    >>> same.out_features((1, 28, 28))
    8
    """

    # how save_backbone and skfewshot.persistence store the members
    _member_args = {"modules": "members"}

    def __init__(self, modules: Sequence[nn.Module], combine: str = "concat") -> None:
        super().__init__()
        if isinstance(modules, nn.Module) or not isinstance(modules, Sequence):
            raise TypeError(
                "modules must be a sequence (list or tuple) of torch.nn.Module, got "
                f"{type(modules).__name__}."
            )
        if len(modules) == 0:
            raise ValueError("modules must hold at least one backbone, got none.")
        for i, module in enumerate(modules):
            if not isinstance(module, nn.Module):
                raise TypeError(
                    f"modules[{i}] must be a torch.nn.Module, got "
                    f"{type(module).__name__}."
                )
        if combine not in _COMBINE:
            raise ValueError(f"combine must be 'concat' or 'mean', got {combine!r}.")
        self.members = nn.ModuleList(modules)
        self.combine = combine

    def out_features(self, input_shape: Sequence[int]) -> int:
        """Number of output features for inputs of ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int
            Per-sample input shape, e.g. ``(channels, height, width)``.

        Returns
        -------
        int
            The sum of the members' widths (``"concat"``), or their common
            width (``"mean"``).

        Raises
        ------
        TypeError
            If a member has no ``out_features`` method (run the ensemble on
            one batch instead).
        ValueError
            If ``combine="mean"`` and the members' widths differ, or a
            member rejects ``input_shape`` (e.g. another channel count than
            its ``in_channels``; the message names the member).
        """
        widths = []
        for i, member in enumerate(self.members):
            if not callable(getattr(member, "out_features", None)):
                raise TypeError(
                    f"modules[{i}] ({type(member).__name__}) has no out_features "
                    "method; run the ensemble on one batch to learn its width."
                )
            try:
                widths.append(int(member.out_features(input_shape)))
            except ValueError as exc:
                raise ValueError(
                    f"modules[{i}] ({type(member).__name__}) rejects input_shape="
                    f"{tuple(input_shape)!r}: {exc}"
                ) from exc
        return self._width(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch to the joined, per-member L2-normalised features."""
        features = [l2_normalize(member(x).flatten(1)) for member in self.members]
        self._width([f.shape[1] for f in features])
        if self.combine == "concat":
            return torch.cat(features, dim=1)
        return torch.stack(features).mean(dim=0)

    def _width(self, widths):
        """Width of the joined features; ValueError when "mean" meets unequal ones."""
        if self.combine == "concat":
            return sum(widths)
        if len(set(widths)) > 1:
            raise ValueError(
                "BackboneEnsemble(combine='mean') averages features, so every "
                f"member must give the same width; got widths {widths}. Use "
                "combine='concat', or members of one width."
            )
        return widths[0]
