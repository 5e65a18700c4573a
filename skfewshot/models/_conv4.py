"""Conv-4: the four-block convolutional backbone of the few-shot literature."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._common import _check_bool, _check_images, _check_positive_int, _pooled_size

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

    The last pool rounds down: at 28x28 it sees a 3x3 map and keeps the
    maximum of its top-left 2x2 window only, so the third row and column of
    the fourth block's map never reach the features. ``last_pool=False``
    returns that whole map instead (``9 * hidden`` features at 28x28). The
    weights are the same either way, so a network trained with the pool can
    embed without it: set ``net.last_pool = False``, as
    :func:`skfewshot.recipes.pretrain_one_shot_ensemble` does for Omniglot
    (1.8 to 2.0 points more on its test alphabets, see
    :ref:`benchmarks_omniglot`).

    Parameters
    ----------
    in_channels : int, default=1
        Channels of the input images (1 for Omniglot, 3 for RGB).
    hidden : int, default=64
        Channels of every conv block.
    last_pool : bool, default=True
        Whether the fourth block ends with its max-pool. False: the output is
        the fourth block's map before that pool, flattened (``hidden *
        (height // 8) * (width // 8)`` features), and images need only be 8x8.
        An attribute, so it can be switched on a trained network.

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
    >>> net.last_pool = False  # the fourth block's whole 3x3 map
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 576])
    """

    def __init__(
        self, in_channels: int = 1, hidden: int = 64, last_pool: bool = True
    ) -> None:
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("hidden", hidden)
        self.in_channels = in_channels
        self.hidden = hidden
        self.last_pool = last_pool
        self._n_pools()
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
            ``hidden * (height // 16) * (width // 16)``; without the last
            pool, ``hidden * (height // 8) * (width // 8)``.

        Raises
        ------
        ValueError
            If the image is smaller than 16x16 (the fourth pool would see an
            empty map; 8x8 without it), or ``input_shape`` gives a channel
            count other than ``in_channels``.
        """
        height, width = _pooled_size(
            input_shape, self._n_pools(), "Conv4", self.in_channels
        )
        return self.hidden * height * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(batch, in_channels, H, W)`` to features ``(batch, d)``."""
        _check_images(x, self.in_channels, self._n_pools(), "Conv4")
        if self.last_pool:
            return self.encoder(x).flatten(1)
        return self.encoder[-1][:-1](self.encoder[:-1](x)).flatten(1)

    def _n_pools(self):
        """The pools a forward applies; ValueError when ``last_pool`` is no bool."""
        _check_bool("Conv4.last_pool", self.last_pool)
        return _N_BLOCKS if self.last_pool else _N_BLOCKS - 1


def _without_last_pool(module):
    """A copy of ``module`` whose Conv4s (members of ensembles too) embed
    without their last max-pool, and how many it switched.

    The copy leaves ``module`` (e.g. a trainer's ``backbone_``, whose linear
    head takes the pooled features) as it is. Other architectures are copied
    unchanged: ResNet12 averages its whole last map.
    """
    import copy

    unpooled = copy.deepcopy(module)
    switched = 0
    for sub in unpooled.modules():
        if isinstance(sub, Conv4):
            sub.last_pool = False
            switched += 1
    return unpooled, switched
