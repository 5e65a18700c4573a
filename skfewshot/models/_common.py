"""Shape checks shared by the backbones (private)."""

from __future__ import annotations


def _spatial_shape(input_shape, in_channels, name):
    """``(H, W)`` from an input shape ``(H, W)`` or ``(C, H, W)``; a ``C``
    other than ``in_channels`` is a ValueError naming both."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"input_shape must be (height, width) or (channels, height, width), "
            f"got {tuple(input_shape)!r}."
        )
    if len(shape) == 3 and shape[0] != in_channels:
        raise ValueError(
            f"{name} takes images of {in_channels} channel(s) (in_channels="
            f"{in_channels}), got input_shape={tuple(input_shape)!r}."
        )
    return shape[-2:]


def _pooled_size(input_shape, n_pools, name, in_channels):
    """Spatial size after ``n_pools`` floor-halving 2x2 max-pools of images of
    ``input_shape`` (``(H, W)`` or ``(in_channels, H, W)``).

    Raises ``ValueError`` naming the shape when it has another channel count,
    or when a pool would see a map smaller than 2x2 (torch would fail with
    "output size is too small").
    """
    height, width = _spatial_shape(input_shape, in_channels, name)
    factor = 2**n_pools
    if height < factor or width < factor:
        raise ValueError(
            f"{name} halves the image {n_pools} times, so it needs inputs of at "
            f"least {factor}x{factor}; got input_shape={tuple(input_shape)!r}."
        )
    return height // factor, width // factor


def _check_images(x, in_channels, n_pools, name):
    """Fail with a ValueError naming the shape before torch fails cryptically."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"{name} expects images of shape (batch, {in_channels}, height, width), "
            f"got a tensor of shape {tuple(x.shape)}."
        )
    _pooled_size(x.shape[1:], n_pools, name, in_channels)


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")


def _check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
