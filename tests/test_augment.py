"""Tests of skfewshot.augment: geometry by hand, draws, parameters, trainers."""

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _training_testing import interrupted_run, resumed_run
from sklearn.base import clone

from skfewshot.augment import (
    Compose,
    ElasticDistortion,
    RandomAffine,
    _resample,
    _smooth,
)
from skfewshot.models import Conv4
from skfewshot.training import (
    ProtoNetMetaTrainer,
    SupervisedPretrainer,
)

TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=0, atol=1e-12),
}
DTYPES = [torch.float32, torch.float64]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"),
    ),
]


def dot(size, row, col, n=1, dtype=torch.float32):
    """``n`` images of ``size`` x ``size`` pixels, 1 at (row, col), 0 elsewhere."""
    X = torch.zeros(n, 1, size, size, dtype=dtype)
    X[:, :, row, col] = 1
    return X


def ramps(n, h, w, dtype=torch.float64):
    """``n`` two-channel images: channel 0 holds the column index, 1 the row."""
    cols = torch.arange(w, dtype=dtype).expand(h, w)
    rows = torch.arange(h, dtype=dtype)[:, None].expand(h, w)
    return torch.stack([cols, rows]).expand(n, 2, h, w).clone()


def shift_theta(n, dx, dy, dtype=torch.float32):
    theta = torch.zeros(n, 2, 3, dtype=dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = dx, dy
    return theta


# -- the resampling helper --------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_resample_whole_pixel_shift_is_a_shifted_image_with_zero_fill(dtype):
    X = torch.rand(2, 3, 5, 6, dtype=dtype) + 1  # no zero inside
    # the output at p reads the input at p + (1, 0): content moves left
    out = _resample(X, shift_theta(2, 1.0, 0.0, dtype))
    torch.testing.assert_close(out[..., :-1], X[..., 1:], **TOL[dtype])
    torch.testing.assert_close(
        out[..., -1], torch.zeros_like(out[..., -1]), **TOL[dtype]
    )
    # (0, -2): content moves down two rows, the top two are background
    out = _resample(X, shift_theta(2, 0.0, -2.0, dtype))
    torch.testing.assert_close(out[..., 2:, :], X[..., :-2, :], **TOL[dtype])
    zeros = torch.zeros_like(out[..., :2, :])
    torch.testing.assert_close(out[..., :2, :], zeros, **TOL[dtype])


def test_resample_works_in_pixels_on_non_square_images():
    # a shift of 1 pixel along each axis of a 4 x 7 image, and a quarter turn
    # of a 3 x 5 image (no longer the same shape, so the corners fall outside)
    X = torch.rand(1, 1, 4, 7) + 1
    out = _resample(X, shift_theta(1, 1.0, 1.0))
    torch.testing.assert_close(out[..., :-1, :-1], X[..., 1:, 1:], **TOL[X.dtype])
    Y = ramps(1, 3, 5, torch.float32)
    theta = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    out = _resample(Y, theta)
    # output (row 1, col 2) is the centre; col 3 reads the input one row down
    # (input = (-y, x)), col 1 one row up
    torch.testing.assert_close(out[0, :, 1, 2], torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(out[0, :, 1, 3], torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(out[0, :, 1, 1], torch.tensor([2.0, 0.0]))


# -- RandomAffine: geometry checked by hand ---------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"degrees": (0, 0), "translate": (0, 0), "scale": (1, 1), "shear": (0, 0)},
        {"shear": (0, 0, 0, 0)},
    ],
)
def test_random_affine_identity_returns_the_input_without_a_draw(params):
    X = torch.rand(3, 1, 7, 7)
    state = torch.get_rng_state()
    assert RandomAffine(**params)(X) is X
    assert torch.equal(torch.get_rng_state(), state)


def test_random_affine_quarter_turn_of_3x3_by_hand():
    X = torch.arange(9.0).reshape(1, 1, 3, 3)
    expected = torch.tensor([[2.0, 5.0, 8.0], [1.0, 4.0, 7.0], [0.0, 3.0, 6.0]])
    out = RandomAffine(degrees=(90, 90))(X)
    torch.testing.assert_close(out[0, 0], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [5, 7, 6])
@pytest.mark.parametrize("k", [1, -1, 2])
def test_random_affine_right_angles_equal_rot90(size, k, dtype):
    # positive degrees turn counter-clockwise on screen, as torch.rot90(k=1)
    X = torch.rand(4, 2, size, size, dtype=dtype)
    out = RandomAffine(degrees=(90 * k, 90 * k))(X)
    assert out.dtype == dtype
    torch.testing.assert_close(out, torch.rot90(X, k, dims=(-2, -1)), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_affine_fixed_scale_by_hand(dtype):
    # scale 2 about the centre (4, 4) of a 9 x 9 image: the output at pixel i
    # reads the input at 4 + (i - 4) / 2, so a dot at the centre spreads to
    # bilinear weights 0.5, 1, 0.5 along each axis
    out = RandomAffine(scale=(2, 2))(dot(9, 4, 4, dtype=dtype))
    line = torch.tensor([0, 0, 0, 0.5, 1, 0.5, 0, 0, 0], dtype=dtype)
    torch.testing.assert_close(out[0, 0], line[:, None] * line, **TOL[dtype])
    # scale 0.5: a dot 2 pixels right of the centre lands 1 pixel right
    out = RandomAffine(scale=(0.5, 0.5))(dot(9, 4, 6, dtype=dtype))
    torch.testing.assert_close(out, dot(9, 4, 5, dtype=dtype), **TOL[dtype])


@pytest.mark.parametrize(
    "shear, source, target",
    [
        # x-shear 45 degrees: x' = x + y; a dot one row below the centre
        # moves one column right, one above moves left
        ((45, 45), (5, 4), (5, 5)),
        ((45, 45), (3, 4), (3, 3)),
        ((-45, -45), (6, 4), (6, 2)),
        # y-shear 45 degrees: y' = y + x; right of the centre moves down
        ((0, 0, 45, 45), (4, 5), (5, 5)),
        ((0, 0, 45, 45), (4, 2), (2, 2)),
        # on the axis of the shear nothing moves
        ((45, 45), (4, 7), (4, 7)),
    ],
)
def test_random_affine_fixed_shear_by_hand(shear, source, target):
    out = RandomAffine(shear=shear)(dot(9, *source))
    torch.testing.assert_close(out, dot(9, *target), **TOL[torch.float32])


def test_random_affine_composes_shift_scale_shear_rotation_in_that_order():
    # a dot 1 pixel right of the centre of 9 x 9: scale 2 -> 2 right; a
    # quarter turn counter-clockwise -> 2 up: row 2, column 4
    out = RandomAffine(degrees=(90, 90), scale=(2, 2))(dot(9, 4, 5))
    assert out[0, 0, 2, 4] == pytest.approx(1, abs=1e-5)
    # x-shear 45 then the quarter turn: (x, y) = (0, 1) -> (1, 1) -> (1, -1)
    out = RandomAffine(degrees=(90, 90), shear=(45, 45))(dot(9, 5, 4))
    torch.testing.assert_close(out, dot(9, 3, 5), **TOL[torch.float32])


def test_random_affine_shift_draws_by_hand():
    # translate 1/7 of a 7 x 7 image: up to one pixel each way, drawn as
    # (rand(n, 2) * 2 - 1) * (1, 1) pixels by which the *sampling* moves, the
    # content by the opposite: along a row, output column j holds
    # max(0, 1 - |j + b - 3|) for a dot at column 3
    n = 6
    torch.manual_seed(3)
    b = (torch.rand(n, 2) * 2 - 1)[:, 0]
    torch.manual_seed(3)
    out = RandomAffine(translate=(1 / 7, 0))(dot(7, 3, 3, n=n))
    j = torch.arange(7.0)
    expected = (1 - (j + b[:, None] - 3).abs()).clamp(min=0)
    torch.testing.assert_close(out[:, 0, 3], expected, **TOL[torch.float32])
    assert out[:, 0, [0, 1, 2, 4, 5, 6]].abs().max() < 1e-6  # no vertical move
    assert len(set(b.tolist())) == n  # one draw per image


def test_random_affine_angles_drawn_per_image_in_the_range():
    # on ramp images the output is the sampled input position, whose slope
    # across columns is (cos a, sin a): the angle of each image, recovered
    n, size = 16, 9
    torch.manual_seed(0)
    u = torch.rand(n, dtype=torch.float64)
    torch.manual_seed(0)
    out = RandomAffine(degrees=(-30, 20))(ramps(n, size, size))
    centre = size // 2
    slope = out[:, :, centre, centre + 1] - out[:, :, centre, centre]
    angles = torch.rad2deg(torch.atan2(slope[:, 1], slope[:, 0]))
    torch.testing.assert_close(angles, u * 50 - 30, rtol=0, atol=1e-9)
    assert angles.min() >= -30 and angles.max() <= 20
    assert len(set(angles.round(decimals=6).tolist())) == n


def legacy_random_shift_rotate(X, max_shift=2.0, max_degrees=10.0):
    """The augmentation the Omniglot benchmark used before skfewshot.augment."""
    n, _, h, w = X.shape
    angle = (torch.rand(n, device=X.device) * 2 - 1) * math.radians(max_degrees)
    shift = (torch.rand(n, 2, device=X.device) * 2 - 1) * max_shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3, device=X.device, dtype=X.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    theta[:, 0, 2] = shift[:, 0] * 2 / w
    theta[:, 1, 2] = shift[:, 1] * 2 / h
    grid = F.affine_grid(theta, list(X.shape), align_corners=False)
    return F.grid_sample(X, grid, align_corners=False, padding_mode="zeros")


def test_random_affine_is_bitwise_the_old_benchmark_augmentation():
    X = (torch.rand(32, 1, 28, 28) > 0.7).float()
    for seed in range(3):
        torch.manual_seed(seed)
        expected = legacy_random_shift_rotate(X)
        torch.manual_seed(seed)
        assert torch.equal(RandomAffine(degrees=10.0, translate=2 / 28)(X), expected)


# -- ElasticDistortion ------------------------------------------------------


def test_smooth_is_a_normalised_separable_gaussian():
    sigma, size = 1.5, 21  # radius ceil(4 sigma) = 6 fits inside
    field = torch.zeros(1, 1, size, size, dtype=torch.float64)
    field[0, 0, 10, 10] = 1
    x = torch.arange(-6, 7, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    expected = torch.zeros(size, size, dtype=torch.float64)
    expected[4:17, 4:17] = g[:, None] * g
    torch.testing.assert_close(
        _smooth(field, sigma)[0, 0], expected, atol=1e-15, rtol=0
    )


def test_smooth_kernel_wider_than_the_image_reads_zero_padding():
    # sigma 3 on 4 pixels: the cut kernel gives the full kernel's values
    field = torch.zeros(1, 1, 1, 4, dtype=torch.float64)
    field[..., 0] = 1
    x = torch.arange(-12, 13, dtype=torch.float64)
    g = torch.exp(-(x**2) / 18)
    g = g / g.sum()
    out = _smooth(field, 3.0)
    # the row blur gives g[12:16]; the column blur (one row) multiplies by g[12]
    torch.testing.assert_close(out[0, 0, 0], g[12:16] * g[12], atol=1e-15, rtol=0)


def test_elastic_alpha_zero_returns_the_input_without_a_draw():
    X = torch.rand(2, 1, 8, 8)
    state = torch.get_rng_state()
    assert ElasticDistortion(alpha=0, sigma=3)(X) is X
    assert torch.equal(torch.get_rng_state(), state)


def test_elastic_moves_each_pixel_by_its_displacement_in_pixels():
    # bilinear sampling of a linear ramp is exact: the output at p equals the
    # coordinate of p + displacement(p), wherever that lies inside the image
    n, size = 3, 16
    augment = ElasticDistortion(alpha=20.0, sigma=3.0)
    X = ramps(n, size, size)
    torch.manual_seed(1)
    field = augment._displacement(X)
    torch.manual_seed(1)
    out = augment(X)
    expected = X + field
    inside = ((expected >= 0) & (expected <= size - 1)).all(dim=1, keepdim=True)
    inside = inside.expand_as(out)
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(out[inside], expected[inside], atol=1e-9, rtol=0)
    # (dx, dy) differ from pixel to pixel and from image to image
    assert field.abs().max() > 0.5
    assert not torch.allclose(field[0], field[1])


def test_elastic_default_size_matches_the_documented_rms():
    # about alpha / (6.1 sigma) pixels per axis away from the borders
    torch.manual_seed(0)
    X = torch.zeros(16, 1, 105, 105, dtype=torch.float64)
    field = ElasticDistortion(alpha=478, sigma=15)._displacement(X)
    rms = field[..., 26:79, 26:79].pow(2).mean().sqrt().item()
    assert rms == pytest.approx(478 / (6.14 * 15), rel=0.1)


# -- all augmentations: draws, dtypes, devices ------------------------------

AUGMENTS = [
    pytest.param(
        RandomAffine(degrees=15, translate=0.1, scale=(0.8, 1.2), shear=10), id="affine"
    ),
    pytest.param(ElasticDistortion(alpha=8.0, sigma=2.0), id="elastic"),
    pytest.param(
        Compose([RandomAffine(degrees=10), ElasticDistortion(alpha=8.0, sigma=2.0)]),
        id="compose",
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("augment", AUGMENTS)
def test_same_seed_same_output_and_one_draw_per_image(augment, dtype, device):
    X = torch.rand(1, 2, 12, 12, dtype=dtype, device=device).expand(5, 2, 12, 12)
    torch.manual_seed(0)
    first = augment(X)
    torch.manual_seed(0)
    second = augment(X)
    assert first.dtype == dtype and first.device == X.device
    assert first.shape == X.shape
    assert torch.equal(first, second)
    # equal images get different draws
    for i in range(1, 5):
        assert not torch.allclose(first[0], first[i])
    torch.manual_seed(1)
    assert not torch.allclose(augment(X), first)


@pytest.mark.parametrize("augment", AUGMENTS)
def test_empty_batch(augment):
    X = torch.zeros(0, 1, 8, 8)
    assert augment(X).shape == (0, 1, 8, 8)


@pytest.mark.parametrize("augment", [RandomAffine(degrees=5), ElasticDistortion()])
@pytest.mark.parametrize(
    "X, error, match",
    [
        (np.zeros((2, 1, 8, 8)), TypeError, "a torch.Tensor.*got ndarray"),
        (torch.zeros(2, 8, 8), ValueError, r"of shape \(n, channels.*\(2, 8, 8\)"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.int64), TypeError, "dtype torch.int64"),
    ],
)
def test_bad_inputs_are_named(augment, X, error, match):
    with pytest.raises(error, match=f"{type(augment).__name__} takes .*{match}"):
        augment(X)


# -- parameters -------------------------------------------------------------


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"degrees": -1}, ValueError, r"degrees must be finite and in \[0.0, inf\]"),
        ({"degrees": math.nan}, ValueError, "degrees must be finite.*nan"),
        ({"degrees": "10"}, TypeError, "degrees must be a number or a sequence"),
        ({"degrees": (1, 2, 3)}, ValueError, r"degrees must have 2 values, got 3"),
        (
            {"degrees": (5, -5)},
            ValueError,
            r"degrees ranges are \(min, max\) pairs with min <= max; got "
            r"degrees\[0\]=5.0 > degrees\[1\]=-5.0",
        ),
        ({"degrees": True}, TypeError, "degrees must be a real number, got True"),
        (
            {"translate": 1.5},
            ValueError,
            r"translate must be finite and in \[0.0, 1.0\]",
        ),
        ({"translate": (0.1, -0.1)}, ValueError, r"translate\[1\] must be finite"),
        # scale takes only a pair: the message offered a number too
        ({"scale": 1.0}, TypeError, "scale must be a sequence of 2 numbers, got 1.0"),
        (
            {"scale": (0, 1)},
            ValueError,
            r"scale\[0\] must be finite and in \[0.001, 1000.0\]",
        ),
        # the float32 grid (1 / scale) was not finite: every pixel NaN
        ({"scale": (1e-40, 1)}, ValueError, r"scale\[0\] must be finite and in"),
        ({"scale": (1, 1e4)}, ValueError, r"scale\[1\] must be finite and in"),
        ({"scale": (1.2, 0.8)}, ValueError, r"scale ranges .*scale\[0\]=1.2 > "),
        ({"scale": (1, math.inf)}, ValueError, r"scale\[1\] must be finite"),
        ({"shear": 90}, ValueError, r"shear angles must lie in \(-90, 90\).*90.0"),
        ({"shear": (0, 0, -95, 0)}, ValueError, "shear angles must lie in"),
        ({"shear": (1, 2, 3)}, ValueError, "shear must have 2 or 4 values, got 3"),
        ({"shear": (0, 1, 3, 2)}, ValueError, r"shear ranges .*shear\[2\]=3.0 >"),
    ],
)
def test_random_affine_bad_parameters_are_named(params, error, match):
    with pytest.raises(error, match=f"RandomAffine: {match}"):
        RandomAffine(**params)


def test_random_affine_takes_numpy_ranges():
    # a 1-D array is a range like a tuple (it was refused as "not a sequence")
    augment = RandomAffine(degrees=np.array([-5.0, 5.0]), scale=np.array([0.9, 1.1]))
    assert (augment.degrees, augment.scale) == ((-5.0, 5.0), (0.9, 1.1))


def test_random_affine_shift_turns_with_the_rotation():
    # the shift comes first (torchvision's comes last): rotated by 90 degrees,
    # an x-shift moves the content along y, and x stays where it was
    X = torch.zeros(20, 1, 17, 17)
    X[:, 0, 8, 8] = 1.0
    torch.manual_seed(0)
    out = RandomAffine(degrees=(90, 90), translate=(4 / 17, 0.0))(X)[:, 0]
    grid = torch.arange(17, dtype=out.dtype)
    mass = out.sum((1, 2))
    x = (out.sum(1) * grid).sum(1) / mass
    y = (out.sum(2) * grid).sum(1) / mass
    np.testing.assert_allclose(x.numpy(), 8.0, atol=1e-4)
    moved = (y - 8.0).abs()
    assert float(moved.max()) > 2.0 and float(moved.max()) <= 4.0 + 1e-4


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"alpha": -1.0}, ValueError, r"alpha must be finite and in \[0.0, inf\]"),
        ({"alpha": None}, TypeError, "alpha must be a real number, got None"),
        ({"sigma": 0}, ValueError, r"sigma must be finite and in \(0.0, inf\]"),
        ({"sigma": math.inf}, ValueError, "sigma must be finite"),
    ],
)
def test_elastic_bad_parameters_are_named(params, error, match):
    with pytest.raises(error, match=f"ElasticDistortion: {match}"):
        ElasticDistortion(**params)


def test_compose_applies_steps_in_order_and_checks_them():
    X = torch.ones(1, 1, 2, 2)
    assert torch.equal(Compose([lambda t: t + 1, lambda t: t * 3])(X), X * 6)
    assert Compose([])(X) is X
    with pytest.raises(TypeError, match=r"Compose: steps\[1\] is not callable: 3"):
        Compose([RandomAffine(), 3])
    with pytest.raises(TypeError, match="steps must be a sequence.*got RandomAffine"):
        Compose(RandomAffine())


# -- repr, pickling, equality: fingerprints ---------------------------------


def test_repr_shows_the_parameters_as_floats():
    assert repr(RandomAffine(degrees=10, translate=(0.1, 0), scale=[0.9, 1])) == (
        "RandomAffine(degrees=10.0, translate=(0.1, 0.0), scale=(0.9, 1.0), shear=0.0)"
    )
    assert repr(ElasticDistortion(alpha=np.float32(2), sigma=3)) == (
        "ElasticDistortion(alpha=2.0, sigma=3.0)"
    )
    assert repr(Compose([ElasticDistortion()])) == (
        "Compose([ElasticDistortion(alpha=34.0, sigma=4.0)])"
    )


FINGERPRINTS = [repr, pickle.dumps, hash]


@pytest.mark.parametrize("fingerprint", FINGERPRINTS)
def test_equal_parameters_fingerprint_equally_and_different_ones_differently(
    fingerprint,
):
    a = RandomAffine(degrees=10, translate=2 / 28)
    assert fingerprint(a) == fingerprint(RandomAffine(degrees=10.0, translate=2 / 28))
    assert a == RandomAffine(degrees=10.0, translate=2 / 28)
    for other in [
        RandomAffine(degrees=11, translate=2 / 28),
        RandomAffine(degrees=10, translate=3 / 28),
        RandomAffine(degrees=10, translate=2 / 28, scale=(0.9, 1.1)),
        RandomAffine(degrees=10, translate=2 / 28, shear=5),
        RandomAffine(degrees=(-10, 10), translate=2 / 28),  # same draws, other form
    ]:
        assert fingerprint(other) != fingerprint(a)
    assert fingerprint(ElasticDistortion(1, 2)) != fingerprint(ElasticDistortion(2, 2))
    compose = Compose([a, ElasticDistortion()])
    assert fingerprint(compose) == fingerprint(Compose([a, ElasticDistortion()]))
    assert fingerprint(compose) != fingerprint(Compose([ElasticDistortion(), a]))


@pytest.mark.parametrize("augment", AUGMENTS)
def test_pickle_round_trip_draws_the_same(augment):
    copy = pickle.loads(pickle.dumps(augment))
    assert copy == augment and repr(copy) == repr(augment)
    X = torch.rand(3, 1, 10, 10)
    torch.manual_seed(0)
    expected = augment(X)
    torch.manual_seed(0)
    assert torch.equal(copy(X), expected)


def test_checkpoint_settings_with_the_augment_repr_resume_only_if_equal(tmp_path):
    X = np.random.RandomState(0).rand(24, 1, 16, 16).astype(np.float32)
    y = np.repeat(np.arange(4), 6)
    path = tmp_path / "run.ckpt"

    def make(augment, **params):
        return SupervisedPretrainer(
            Conv4(hidden=4),
            batch_size=12,
            augment=augment,
            device="cpu",
            verbose=0,
            random_state=0,
            **params,
        )

    def settings(augment):
        return {"augment": repr(augment)}

    first = RandomAffine(degrees=10, translate=0.1)
    interrupted_run(make, (X, y), path, settings=settings(first), augment=first)
    same = RandomAffine(degrees=10.0, translate=0.1)
    resumed = resumed_run(make, (X, y), path, settings=settings(same), augment=same)
    assert dict(resumed.net_.callbacks_)["TrainingCheckpoint"].resumed_epochs_ == 1
    other = RandomAffine(degrees=20, translate=0.1)
    with pytest.raises(
        ValueError,
        match=r"augment='RandomAffine\(degrees=10.0.*"
        r"this run has augment='RandomAffine\(degrees=20.0",
    ):
        resumed_run(make, (X, y), path, settings=settings(other), augment=other)


# -- in the trainers --------------------------------------------------------


def make_trainer(kind, augment):
    torch.manual_seed(0)
    common = dict(
        max_epochs=1, augment=augment, device="cpu", verbose=0, random_state=0
    )
    if kind == "pretrain":
        return SupervisedPretrainer(Conv4(hidden=4), batch_size=12, **common)
    return ProtoNetMetaTrainer(
        Conv4(hidden=4), n_way=3, n_shot=1, n_query=2, episodes_per_epoch=2, **common
    )


@pytest.mark.parametrize("kind", ["pretrain", "protonet"])
def test_trainers_take_augmentations_clone_and_reproduce(kind):
    X = np.random.RandomState(0).rand(24, 1, 16, 16).astype(np.float32)
    y = np.repeat(np.arange(4), 6)
    augment = Compose([RandomAffine(degrees=10, translate=0.1), ElasticDistortion()])
    trainer = make_trainer(kind, augment)
    assert trainer.get_params()["augment"] is augment
    twin = clone(trainer)
    assert twin.get_params()["augment"] == augment
    assert repr(twin.get_params()["augment"]) == repr(augment)

    def weights(fitted):
        return torch.cat([p.flatten() for p in fitted.backbone_.parameters()])

    first = weights(trainer.fit(X, y))
    assert torch.equal(weights(twin.fit(X, y)), first)  # same seed, same run
    plain = weights(make_trainer(kind, None).fit(X, y))
    assert not torch.equal(plain, first)  # the augmentation was applied
    assert trainer.get_params()["augment"] is augment  # fit left it as it was
