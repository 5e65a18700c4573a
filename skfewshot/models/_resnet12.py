"""ResNet-12: the residual backbone of modern few-shot work."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ._common import _check_images, _check_positive_int, _pooled_size

__all__ = ["ResNet12"]

_SLOPE = 0.1  # LeakyReLU negative slope of the reference implementations


class _ResidualBlock(nn.Module):
    """Three conv3x3-BN-LeakyReLU layers, a 1x1 conv shortcut, a 2x2 max-pool."""

    def __init__(self, in_channels, out_channels, drop_rate):
        super().__init__()
        layers = []
        for i in range(3):
            layers.append(
                nn.Conv2d(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    kernel_size=3,
                    padding=1,
                    bias=False,
                )
            )
            layers.append(nn.BatchNorm2d(out_channels))
            if i < 2:  # the third activation comes after the residual sum
                layers.append(nn.LeakyReLU(_SLOPE))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.pool = nn.MaxPool2d(2)
        self.drop_rate = drop_rate

    def forward(self, x):
        out = F.leaky_relu(self.body(x) + self.shortcut(x), _SLOPE)
        out = self.pool(out)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class ResNet12(nn.Module):
    """The standard few-shot ResNet-12, with global average pooling.

    Four residual blocks; each has three conv3x3 - batch norm - LeakyReLU(0.1)
    layers, a 1x1 conv + batch norm shortcut added before the last activation,
    and a 2x2 max-pool (Oreshkin et al., 2018; Lee et al., 2019). A global
    average pool turns the last map into ``channels[-1]`` features whatever
    the image size (at least 16x16). Conv weights use Kaiming-normal
    initialisation, batch norm starts at weight 1 and bias 0. No pretrained
    weights are shipped.

    Parameters
    ----------
    in_channels : int, default=3
        Channels of the input images.
    channels : tuple of 4 int, default=(64, 160, 320, 640)
        Output channels of the four blocks.
    drop_rate : float, default=0.0
        Dropout probability after each block, in training mode only.

    Attributes
    ----------
    out_dim : int
        Number of output features, ``channels[-1]``.
    blocks : torch.nn.Sequential
        The four residual blocks.

    See Also
    --------
    Conv4 : The smaller, flattening backbone.

    References
    ----------
    .. [1] B. Oreshkin, P. Rodriguez, A. Lacoste, "TADAM: Task dependent adaptive
       metric for improved few-shot learning", NeurIPS 2018.
    .. [2] K. Lee, S. Maji, A. Ravichandran, S. Soatto, "Meta-Learning with
       Differentiable Convex Optimization", CVPR 2019.

    Examples
    --------
    >>> import torch
    >>> from skfewshot.models import ResNet12
    >>> net = ResNet12(in_channels=1, channels=(8, 16, 32, 64))
    >>> net.out_dim
    64
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 64])
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: tuple[int, int, int, int] = (64, 160, 320, 640),
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        channels = tuple(channels)
        if len(channels) != 4:
            raise ValueError(f"channels must hold 4 ints, got {channels!r}.")
        for c in channels:
            _check_positive_int("every entry of channels", c)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}.")
        self.in_channels = in_channels
        self.channels = channels
        self.drop_rate = float(drop_rate)
        self.out_dim = channels[-1]
        self.blocks = nn.Sequential(
            *(
                _ResidualBlock(c_in, c_out, self.drop_rate)
                for c_in, c_out in zip((in_channels,) + channels[:-1], channels)
            )
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(
                    m.weight, a=_SLOPE, mode="fan_out", nonlinearity="leaky_relu"
                )
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def out_features(self, input_shape: Sequence[int]) -> int:
        """Number of output features for images of ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int
            ``(height, width)`` or ``(channels, height, width)``.

        Returns
        -------
        int
            ``out_dim``, whatever the size (global average pooling).

        Raises
        ------
        ValueError
            If the image is smaller than 16x16, or ``input_shape`` gives a
            channel count other than ``in_channels``.
        """
        _pooled_size(input_shape, len(self.channels), "ResNet12", self.in_channels)
        return self.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(batch, in_channels, H, W)`` to features ``(batch, d)``."""
        _check_images(x, self.in_channels, len(self.channels), "ResNet12")
        return self.blocks(x).mean(dim=(2, 3))
