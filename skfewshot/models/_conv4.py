"""Conv-4: the four-block convolutional backbone of the few-shot literature."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._common import _check_images, _check_positive_int, _pooled_size

__all__ = ["Conv4"]

_N_BLOCKS = 4


def _conv_block(in_channels, out_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Four conv blocks (conv3x3, batch norm, ReLU, 2x2 max-pool), flattened.

    The backbone of prototypical networks (Snell et al., 2017) and of most
    few-shot baselines since Vinyals et al. (2016). Each block halves the
    spatial size (rounding down), so a 28x28 image ends as a 1x1 map and the
    output is ``hidden`` features; an 84x84 image ends as 5x5 and the output
    has ``25 * hidden`` features. :meth:`out_features` gives the number for any
    input shape. No pretrained weights are shipped.

    Parameters
    ----------
    in_channels : int, default=1
        Channels of the input images (1 for Omniglot, 3 for RGB).
    hidden : int, default=64
        Channels of every conv block.

    Attributes
    ----------
    encoder : torch.nn.Sequential
        The four blocks, in order.

    See Also
    --------
    ResNet12 : The deeper backbone, with global average pooling.
    skfewshot.BackboneTransformer : Wraps a backbone as a scikit-learn transformer.

    References
    ----------
    .. [1] J. Snell, K. Swersky, R. Zemel, "Prototypical Networks for Few-shot
       Learning", NeurIPS 2017.

    Examples
    --------
    >>> import torch
    >>> from skfewshot.models import Conv4
    >>> net = Conv4(in_channels=1)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 64])
    >>> net.out_features((1, 28, 28)), Conv4(in_channels=3).out_features((3, 84, 84))
    (64, 1600)
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64) -> None:
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("hidden", hidden)
        self.in_channels = in_channels
        self.hidden = hidden
        self.encoder = nn.Sequential(
            *(
                _conv_block(in_channels if i == 0 else hidden, hidden)
                for i in range(_N_BLOCKS)
            )
        )

    def out_features(self, input_shape: Sequence[int]) -> int:
        """Number of output features for images of ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int
            ``(height, width)`` or ``(channels, height, width)``.

        Returns
        -------
        int
            ``hidden * (height // 16) * (width // 16)``.

        Raises
        ------
        ValueError
            If the image is smaller than 16x16 (the fourth pool would see an
            empty map), or ``input_shape`` gives a channel count other than
            ``in_channels``.
        """
        height, width = _pooled_size(input_shape, _N_BLOCKS, "Conv4", self.in_channels)
        return self.hidden * height * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(batch, in_channels, H, W)`` to features ``(batch, d)``."""
        _check_images(x, self.in_channels, _N_BLOCKS, "Conv4")
        return self.encoder(x).flatten(1)
