"""Random image augmentations for training: affine warps and elastic distortions.

Each augmentation is a callable on a float tensor of images ``(n, channels,
height, width)`` that returns a tensor of the same shape, dtype and device, with
one independent random draw per image. The draws come from torch's global
generator (``torch.rand`` on the tensor's device), which the trainers of
:mod:`skfewshot.training` seed from their ``random_state``, so an augmentation
passed as ``augment=`` gives identical trainings for the same seed (on the CPU).
They run where the batch is (the GPU, when training there): one
:func:`torch.nn.functional.affine_grid` plus
:func:`torch.nn.functional.grid_sample` per batch, bilinear, with the
background (0) filling whatever comes from outside the image.

The objects are plain data: picklable, comparable (``==``) and with a ``repr``
that shows every parameter, the same for equal parameters, so it can serve as a
fingerprint of the augmentation (e.g. in the ``settings`` of
:class:`~skfewshot.training.TrainingCheckpoint`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real

import torch
import torch.nn.functional as F

from ._limits import SCALE_BOUNDS

__all__ = ["Compose", "ElasticDistortion", "RandomAffine"]


# -- parameter checks -------------------------------------------------------


def _real(owner, name, value, *, low=None, high=None, open_low=False):
    """``value`` as a finite float in [low, high] (or (low, high] when open_low);
    a ValueError / TypeError naming ``owner``'s parameter ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"{owner}: {name} must be a real number, got {value!r} "
            f"({type(value).__name__})."
        )
    value = float(value)
    too_low = low is not None and (value <= low if open_low else value < low)
    if not math.isfinite(value) or too_low or (high is not None and value > high):
        bounds = f"{'(' if open_low else '['}{low}, {high}]".replace("None", "inf")
        raise ValueError(
            f"{owner}: {name} must be finite and in {bounds}; got {value!r}."
        )
    return value


def _reals(owner, name, value, lengths, ranges=True, number=True, **bounds):
    """``value`` as a tuple of floats of one of ``lengths``, each in ``bounds``;
    with ``ranges``, (min, max) pairs with min <= max; ``number``: whether the
    caller also takes a single number (the error message says so)."""
    if hasattr(value, "__array__") and getattr(value, "ndim", None) == 1:
        value = value.tolist()  # a 1-D numpy array (or tensor) of numbers
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{owner}: {name} must be {'a number or ' if number else ''}a sequence "
            f"of {' or '.join(map(str, lengths))} numbers, got {value!r}."
        )
    if len(value) not in lengths:
        raise ValueError(
            f"{owner}: {name} must have {' or '.join(map(str, lengths))} "
            f"values, got {len(value)}: {tuple(value)!r}."
        )
    values = tuple(
        _real(owner, f"{name}[{i}]", v, **bounds) for i, v in enumerate(value)
    )
    for i in range(0, len(values) - 1 if ranges else 0, 2):
        if values[i] > values[i + 1]:
            raise ValueError(
                f"{owner}: {name} ranges are (min, max) pairs with min <= max; "
                f"got {name}[{i}]={values[i]!r} > {name}[{i + 1}]={values[i + 1]!r}."
            )
    return values


def _check_images(owner, X):
    if not isinstance(X, torch.Tensor):
        raise TypeError(
            f"{owner} takes a torch.Tensor of images (n, channels, height, "
            f"width), got {type(X).__name__}."
        )
    if X.ndim != 4:
        raise ValueError(
            f"{owner} takes images of shape (n, channels, height, width); got a "
            f"tensor of shape {tuple(X.shape)}."
        )
    if not X.is_floating_point():
        raise TypeError(
            f"{owner} takes a floating-point tensor (float32 or float64); got "
            f"dtype {X.dtype}."
        )


# -- the one resampling helper ----------------------------------------------


def _resample(X, theta, displacement=None):
    """Sample ``X`` at affinely mapped (and displaced) pixel positions.

    Parameters
    ----------
    X : tensor of shape (n, c, h, w)
    theta : tensor of shape (n, 2, 3)
        Per image, the map from output to input positions in pixel units,
        centred on the image centre (x right, y down): input position =
        ``theta[:, :, :2] @ (x, y) + theta[:, :, 2]``.
    displacement : tensor of shape (n, 2, h, w) or None
        Per output pixel, an (x, y) offset in pixels added to the input
        position.

    Bilinear interpolation; positions outside the image read 0.
    """
    n, _, h, w = X.shape
    # affine_grid works in [-1, 1] coordinates (align_corners=False: a pixel is
    # 2 / size wide), so pixel units become x * 2 / w and y * 2 / h; on a square
    # image the linear part is unchanged (multiplied by h / w == 1.0)
    norm = torch.empty_like(theta)
    norm[:, 0, 0] = theta[:, 0, 0]
    norm[:, 0, 1] = theta[:, 0, 1] * (h / w)
    norm[:, 1, 0] = theta[:, 1, 0] * (w / h)
    norm[:, 1, 1] = theta[:, 1, 1]
    norm[:, 0, 2] = theta[:, 0, 2] * 2 / w
    norm[:, 1, 2] = theta[:, 1, 2] * 2 / h
    grid = F.affine_grid(norm, [n, 1, h, w], align_corners=False)
    if displacement is not None:
        scale = torch.tensor([2 / w, 2 / h], dtype=X.dtype, device=X.device)
        grid = grid + displacement.permute(0, 2, 3, 1) * scale
    return F.grid_sample(
        X, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def _affine_entries(cos, sin, scale, kx=0.0, ky=0.0):
    """The entries (row by row) of the 2x2 output-to-input map of a rotation
    (``cos``, ``sin`` of its angle), x- and y-shears ``kx``, ``ky`` (tangents)
    and a scale, as numbers or tensors of one value per image.

    input = scale^-1 shear^-1 rotation^-1 output, where the forward shear is
    [[1, kx], [0, 1]] @ [[1, 0], [ky, 1]] (its inverse [[1, -kx], [-ky, 1 +
    kx ky]]) and rotation^-1 = [[cos, -sin], [sin, cos]]; with kx = ky = 0
    and scale 1 the entries are cos, -sin, sin, cos exactly.
    """
    return (
        (cos - kx * sin) / scale,
        (-sin - kx * cos) / scale,
        (-ky * cos + (1 + kx * ky) * sin) / scale,
        (ky * sin + (1 + kx * ky) * cos) / scale,
    )


def _uniform(n, low, high, like):
    """``n`` draws from U(low, high) as ``(rand * 2 - 1) * half + middle``;
    no draw (constant ``low``) when the range is one value."""
    if low == high:
        return torch.full((n,), low, dtype=like.dtype, device=like.device)
    u = torch.rand(n, dtype=like.dtype, device=like.device)
    return (u * 2 - 1) * ((high - low) / 2) + (high + low) / 2


class _Augmentation:
    """Equality, hashing and repr from the parameters (``_params``)."""

    def _params(self):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._params() == other._params()

    def __hash__(self):
        return hash((type(self).__name__, repr(self)))


# -- the augmentations ------------------------------------------------------


class RandomAffine(_Augmentation):
    """Random rotation, translation, scaling and shear of each image.

    Every image gets its own draw: a shift ``(dx, dy)``, then a scaling by
    ``s``, a shear and a rotation by ``a`` degrees about the image centre.
    Bilinear resampling; what comes from outside the image is background (0).
    The parameters follow :class:`torchvision.transforms.RandomAffine`, but
    not its order: the shift comes first, so it is scaled, sheared and
    rotated with the image (the content moves by up to ``s`` times the
    shift, along the rotated axes), where torchvision translates last, in
    the output's pixels.

    Conventions (x to the right, y downwards, as an image is displayed):
    a positive angle turns the image counter-clockwise, so an angle of 90
    degrees equals :func:`torch.rot90` with ``k=1, dims=(-2, -1)`` (the pixel
    grid maps onto itself about the centre for any size); ``s > 1`` enlarges
    the content; a positive x-shear moves the rows below the centre to the
    right, a positive y-shear the columns right of the centre downwards.

    Every parameter range that is a single value is used as is, without a
    draw; the others are drawn in the order angle, shift, scale, shear, with
    ``torch.rand`` on the images' device and dtype. Parameters that change
    nothing (the defaults) return the input tensor itself, untouched.

    Parameters
    ----------
    degrees : float or (float, float), default=0.0
        Rotation angle in degrees, uniform in ``[-degrees, degrees]`` (a
        number >= 0) or in ``[min, max]`` (a pair).
    translate : float or (float, float), default=0.0
        Largest shift as a fraction of the image size, in ``[0, 1]``: ``dx``
        is uniform in ``[-tx * width, tx * width]`` pixels and ``dy`` in
        ``[-ty * height, ty * height]``, with ``tx = ty = translate`` (a
        number) or ``(tx, ty) = translate`` (a pair). ``2 / 28`` shifts a
        28 x 28 image by up to 2 pixels each way, before the scaling, shear
        and rotation (which then apply to the shift too).
    scale : (float, float), default=(1.0, 1.0)
        Scale factor, uniform in ``[min, max]``, both in ``[0.001, 1000]``
        (a copy scaled further is blank or one pixel's value).
    shear : float or (float, float) or (float, float, float, float), \
default=0.0
        Shear angles in degrees, each in (-90, 90): the x-shear uniform in
        ``[-shear, shear]`` (a number >= 0) or ``[min, max]`` (a pair), no
        y-shear; or x-shear in ``[xmin, xmax]`` and y-shear in
        ``[ymin, ymax]`` (four numbers).

    Raises
    ------
    TypeError, ValueError
        At construction, naming the parameter that is not a number (or a
        sequence of numbers) in its range; when called, on an input that is
        not a floating-point tensor of shape (n, channels, height, width).

    See Also
    --------
    ElasticDistortion : Smooth random local deformations of strokes.
    Compose : Apply several augmentations in turn.
    skfewshot.datasets.augment_rotations : Rotations by 90 degrees as new
        classes (a dataset-level augmentation, not a random one).

    Examples
    --------
    >>> import torch
    >>> from skfewshot.augment import RandomAffine
    >>> augment = RandomAffine(degrees=10, translate=2 / 28)
    >>> augment
    RandomAffine(degrees=10.0, translate=0.07142857142857142, scale=(1.0, 1.0), \
shear=0.0)
    >>> _ = torch.manual_seed(0)
    >>> augment(torch.rand(8, 1, 28, 28)).shape
    torch.Size([8, 1, 28, 28])

    A fixed quarter turn is :func:`torch.rot90`:

    >>> X = torch.arange(9.0).reshape(1, 1, 3, 3)
    >>> turned = RandomAffine(degrees=(90, 90))(X)
    >>> torch.allclose(turned, torch.rot90(X, 1, dims=(-2, -1)), atol=1e-5)
    True
    >>> X[0, 0]
    tensor([[0., 1., 2.],
            [3., 4., 5.],
            [6., 7., 8.]])
    >>> turned[0, 0].round(decimals=4).abs()
    tensor([[2., 5., 8.],
            [1., 4., 7.],
            [0., 3., 6.]])
    """

    def __init__(
        self,
        degrees: float | tuple[float, float] = 0.0,
        translate: float | tuple[float, float] = 0.0,
        scale: tuple[float, float] = (1.0, 1.0),
        shear: float | tuple[float, ...] = 0.0,
    ) -> None:
        owner = type(self).__name__
        if isinstance(degrees, Real):
            self.degrees = _real(owner, "degrees", degrees, low=0.0)
            self._degrees = (-self.degrees, self.degrees)
        else:
            self.degrees = self._degrees = _reals(owner, "degrees", degrees, (2,))
        if isinstance(translate, Real):
            self.translate = _real(owner, "translate", translate, low=0.0, high=1.0)
            self._translate = (self.translate, self.translate)
        else:
            self.translate = self._translate = _reals(
                owner, "translate", translate, (2,), ranges=False, low=0.0, high=1.0
            )
        low, high = SCALE_BOUNDS
        self.scale = _reals(
            owner, "scale", scale, (2,), number=False, low=low, high=high
        )
        if isinstance(shear, Real):
            self.shear = _real(owner, "shear", shear, low=0.0)
            shears = (-self.shear, self.shear, 0.0, 0.0)
        else:
            self.shear = _reals(owner, "shear", shear, (2, 4))
            shears = self.shear + (0.0, 0.0)[: 4 - len(self.shear)]
        if any(abs(v) >= 90 for v in shears):
            raise ValueError(
                f"{owner}: shear angles must lie in (-90, 90) degrees; got "
                f"shear={self.shear!r}."
            )
        self._shear = shears

    def _params(self):
        return {
            "degrees": self.degrees,
            "translate": self.translate,
            "scale": self.scale,
            "shear": self.shear,
        }

    def _is_identity(self):
        return (
            self._degrees == (0.0, 0.0)
            and self._translate == (0.0, 0.0)
            and self.scale == (1.0, 1.0)
            and self._shear == (0.0, 0.0, 0.0, 0.0)
        )

    def _draw(self, X):
        """The (n, 2, 3) output-to-input maps of one draw per image, pixels."""
        n, _, h, w = X.shape
        angle = _uniform(n, *map(math.radians, self._degrees), X)
        if self._translate == (0.0, 0.0):
            shift = torch.zeros(n, 2, dtype=X.dtype, device=X.device)
        else:
            largest = torch.tensor(
                [self._translate[0] * w, self._translate[1] * h],
                dtype=X.dtype,
                device=X.device,
            )
            shift = (torch.rand(n, 2, dtype=X.dtype, device=X.device) * 2 - 1) * (
                largest
            )
        scale = _uniform(n, *self.scale, X)
        kx = torch.tan(_uniform(n, *map(math.radians, self._shear[:2]), X))
        ky = torch.tan(_uniform(n, *map(math.radians, self._shear[2:]), X))
        entries = _affine_entries(torch.cos(angle), torch.sin(angle), scale, kx, ky)
        theta = torch.empty(n, 2, 3, dtype=X.dtype, device=X.device)
        for (i, j), entry in zip(((0, 0), (0, 1), (1, 0), (1, 1)), entries):
            theta[:, i, j] = entry
        theta[:, :, 2] = shift
        return theta

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """Warp each image of ``X`` by its own random draw.

        Parameters
        ----------
        X : torch.Tensor of shape (n, channels, height, width)
            Floating-point images, on any device.

        Returns
        -------
        X_aug : torch.Tensor of shape (n, channels, height, width)
            Same dtype and device; ``X`` itself when the parameters change
            nothing.
        """
        _check_images(type(self).__name__, X)
        if self._is_identity() or len(X) == 0:
            return X
        return _resample(X, self._draw(X))


def _smooth(field, sigma):
    """Gaussian blur (std ``sigma`` pixels) of the last two axes of ``field``,
    zero padding, kernel cut at 4 sigma.

    Separable: one 1-D Gaussian per axis, applied as a product with the
    banded (Toeplitz) matrix of that convolution, ``K_h @ field @ K_w``. On
    images this small it is the same sum as ``conv1d`` (equal within float
    rounding) and far faster on the CPU, where a one-channel ``conv1d`` with
    a wide kernel is slow (64 x 2 fields of 105 x 105, sigma 15, one thread:
    6 ms against 400 ms).
    """
    radius = max(1, math.ceil(4 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=field.dtype, device=field.device)
    total = torch.exp(-0.5 * (taps / sigma) ** 2).sum()

    def matrix(size):
        index = torch.arange(size, dtype=field.dtype, device=field.device)
        offset = index[:, None] - index[None, :]
        weights = torch.exp(-0.5 * (offset / sigma) ** 2) / total
        return weights * (offset.abs() <= radius)

    h, w = field.shape[-2:]
    return matrix(h) @ field @ matrix(w)


class ElasticDistortion(_Augmentation):
    """Elastic distortion of each image (Simard, Steinkraus and Platt, 2003).

    For every image, a random displacement field is drawn: an (x, y) offset
    uniform in [-1, 1] at every pixel, smoothed by a Gaussian of standard
    deviation ``sigma`` pixels (separable: one 1-D Gaussian per axis, zero
    padding, kernel cut at 4 sigma), then multiplied by ``alpha`` pixels. The
    output pixel at ``p`` takes the input at ``p + displacement(p)``,
    bilinearly interpolated (background, 0, outside the image). Strokes bend
    smoothly, as different writers' strokes do.

    The size of the distortion: smoothing averages the noise away, so the
    root-mean-square displacement along each axis is about
    ``alpha / (6.1 * sigma)`` pixels (``sqrt(1/3) / (2 sqrt(pi) sigma)``
    times ``alpha``, away from the borders); ``sigma`` sets how local the
    bends are. The defaults are Simard et al.'s values for 28 x 28
    handwritten digits, ``alpha=34``, ``sigma=4`` (about 1.3 pixels rms per
    axis, measured in the central half of 28 x 28 images). For the same
    distortion relative to an image ``k`` times larger, multiply ``sigma`` by
    ``k`` and ``alpha`` by ``k ** 2``: ``alpha=478, sigma=15`` for 105 x 105
    Omniglot drawings (about 5.2 pixels rms per axis).

    The draws: one ``torch.rand`` of shape (n, 2, height, width) on the
    images' device and dtype; the smoothing runs there too (two matrix
    products per batch). ``alpha=0`` returns the input tensor itself,
    untouched, without a draw.

    Parameters
    ----------
    alpha : float, default=34.0
        Scale of the displacement, in pixels, >= 0.
    sigma : float, default=4.0
        Standard deviation of the Gaussian smoothing, in pixels, > 0.

    Raises
    ------
    TypeError, ValueError
        At construction, naming the parameter that is not a number in its
        range; when called, on an input that is not a floating-point tensor of
        shape (n, channels, height, width).

    See Also
    --------
    RandomAffine : Random rotation, shift, scaling and shear.
    Compose : Apply several augmentations in turn.

    References
    ----------
    .. [1] P. Y. Simard, D. Steinkraus and J. C. Platt, "Best Practices for
       Convolutional Neural Networks Applied to Visual Document Analysis",
       ICDAR 2003.

    Examples
    --------
    >>> import torch
    >>> from skfewshot.augment import ElasticDistortion
    >>> augment = ElasticDistortion()
    >>> augment
    ElasticDistortion(alpha=34.0, sigma=4.0)
    >>> _ = torch.manual_seed(0)
    >>> X = torch.rand(4, 1, 28, 28)
    >>> augment(X).shape
    torch.Size([4, 1, 28, 28])
    >>> ElasticDistortion(alpha=0)(X) is X
    True
    """

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0) -> None:
        owner = type(self).__name__
        self.alpha = _real(owner, "alpha", alpha, low=0.0)
        self.sigma = _real(owner, "sigma", sigma, low=0.0, open_low=True)

    def _params(self):
        return {"alpha": self.alpha, "sigma": self.sigma}

    def _displacement(self, X):
        """The (n, 2, h, w) displacement fields of one draw per image, pixels."""
        n, _, h, w = X.shape
        noise = torch.rand(n, 2, h, w, dtype=X.dtype, device=X.device) * 2 - 1
        return _smooth(noise, self.sigma) * self.alpha

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """Distort each image of ``X`` by its own random field.

        Parameters
        ----------
        X : torch.Tensor of shape (n, channels, height, width)
            Floating-point images, on any device.

        Returns
        -------
        X_aug : torch.Tensor of shape (n, channels, height, width)
            Same dtype and device; ``X`` itself when ``alpha == 0``.
        """
        _check_images(type(self).__name__, X)
        if self.alpha == 0 or len(X) == 0:
            return X
        identity = torch.zeros(len(X), 2, 3, dtype=X.dtype, device=X.device)
        identity[:, 0, 0] = identity[:, 1, 1] = 1
        return _resample(X, identity, self._displacement(X))


class Compose(_Augmentation):
    """Apply several augmentations in turn.

    Parameters
    ----------
    steps : sequence of callables
        Each maps a tensor of images to a tensor of images; applied in order
        (an empty sequence returns the input).

    Raises
    ------
    TypeError
        At construction, when ``steps`` is not a sequence or one of its items
        is not callable (the message gives its index).

    See Also
    --------
    RandomAffine, ElasticDistortion : The augmentations to compose.

    Examples
    --------
    >>> import torch
    >>> from skfewshot.augment import Compose, ElasticDistortion, RandomAffine
    >>> augment = Compose([RandomAffine(degrees=10, scale=(0.9, 1.1)),
    ...                    ElasticDistortion()])
    >>> augment
    Compose([RandomAffine(degrees=10.0, translate=0.0, scale=(0.9, 1.1), \
shear=0.0), ElasticDistortion(alpha=34.0, sigma=4.0)])
    >>> _ = torch.manual_seed(0)
    >>> augment(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(self, steps: Sequence[Callable[[torch.Tensor], torch.Tensor]]):
        if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
            raise TypeError(
                f"Compose: steps must be a sequence (list or tuple) of callables, "
                f"got {type(steps).__name__}."
            )
        for i, step in enumerate(steps):
            if not callable(step):
                raise TypeError(
                    f"Compose: steps[{i}] is not callable: {step!r} "
                    f"({type(step).__name__})."
                )
        self.steps = list(steps)

    def _params(self):
        return {"steps": self.steps}

    def __repr__(self):
        return f"Compose({self.steps!r})"

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """Apply every step to ``X`` in order.

        Parameters
        ----------
        X : torch.Tensor of shape (n, channels, height, width)

        Returns
        -------
        X_aug : torch.Tensor
            The output of the last step (``X`` when there is none).
        """
        for step in self.steps:
            X = step(X)
        return X
