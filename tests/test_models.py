import pickle
import re

import pytest
import torch

from skfewshot.models import Conv4, ResNet12


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "in_channels, size, hidden, expected",
    [
        (1, 28, 64, 64),  # 28 -> 14 -> 7 -> 3 -> 1
        (3, 84, 64, 64 * 5 * 5),  # 84 -> 42 -> 21 -> 10 -> 5
        (2, 16, 8, 8),
        (1, 31, 8, 8),  # floors: 31 -> 15 -> 7 -> 3 -> 1
        (1, 32, 4, 4 * 2 * 2),
    ],
)
def test_conv4_output_shape(in_channels, size, hidden, expected):
    net = Conv4(in_channels=in_channels, hidden=hidden)
    out = net(torch.zeros(3, in_channels, size, size))
    assert out.shape == (3, expected)
    assert net.out_features((in_channels, size, size)) == expected
    assert net.out_features((size, size)) == expected


def test_conv4_rectangular_input():
    net = Conv4(hidden=4)
    assert net(torch.zeros(1, 1, 32, 64)).shape == (1, 4 * 2 * 4)
    assert net.out_features((32, 64)) == 32


@pytest.mark.parametrize(
    "size, hidden, expected",
    [
        (28, 64, 64 * 3 * 3),  # 28 -> 14 -> 7 -> 3, the fourth block unpooled
        (84, 4, 4 * 10 * 10),
        (8, 4, 4),  # 8x8 is enough without the fourth pool
    ],
)
def test_conv4_without_its_last_pool(size, hidden, expected):
    net = Conv4(hidden=hidden, last_pool=False).eval()
    assert net(torch.zeros(2, 1, size, size)).shape == (2, expected)
    assert net.out_features((size, size)) == expected
    with pytest.raises(ValueError, match="at least 8x8"):
        net(torch.zeros(1, 1, 7, 7))


def test_conv4_last_pool_keeps_the_top_left_window_of_a_3x3_map():
    # the floor pool of a 28x28 image's 3x3 map is the max of its top-left 2x2:
    # the map's third row and column never reach the pooled features
    torch.manual_seed(0)
    net = Conv4(hidden=8).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        pooled = net(x)
        net.last_pool = False  # switched on the same weights
        maps = net(x).view(5, 8, 3, 3)
    assert torch.equal(pooled, maps[:, :, :2, :2].amax(dim=(2, 3)))
    assert not torch.equal(pooled, maps.amax(dim=(2, 3)))


@pytest.mark.parametrize("value", [0, 1, "False", None])
def test_conv4_last_pool_must_be_a_bool(value):
    with pytest.raises(
        ValueError, match=f"last_pool must be True or False, got {value!r}"
    ):
        Conv4(last_pool=value)
    net = Conv4(hidden=4)
    net.last_pool = value  # an attribute switched after construction
    with pytest.raises(ValueError, match="last_pool must be True or False"):
        net(torch.zeros(1, 1, 28, 28))


def test_conv4_parameter_count():
    # block 1: conv 1*64*9 weights + 64 bias, batch norm 2*64 -> 768
    # blocks 2-4: conv 64*64*9 + 64, batch norm 128 -> 37056 each
    assert _n_params(Conv4(in_channels=1)) == 768 + 3 * 37056 == 111936
    # the 113,088 of the miniImageNet papers (3 input channels)
    assert _n_params(Conv4(in_channels=3)) == 113088


def _resnet12_n_params(in_channels, channels):
    total = 0
    for c_in, c_out in zip((in_channels,) + channels[:-1], channels):
        convs = 9 * c_in * c_out + 2 * 9 * c_out * c_out  # bias-free conv3x3
        shortcut = c_in * c_out  # bias-free conv1x1
        batch_norms = 4 * 2 * c_out
        total += convs + shortcut + batch_norms
    return total


@pytest.mark.parametrize(
    "in_channels, channels", [(3, (64, 160, 320, 640)), (1, (4, 8, 8, 16))]
)
def test_resnet12_parameter_count(in_channels, channels):
    net = ResNet12(in_channels=in_channels, channels=channels)
    assert _n_params(net) == _resnet12_n_params(in_channels, channels)
    if channels == (64, 160, 320, 640):
        assert _n_params(net) == 12424320  # the "12.4M" of the literature


@pytest.mark.parametrize("in_channels, size", [(1, 16), (3, 28), (2, 37)])
def test_resnet12_output_shape(in_channels, size):
    net = ResNet12(in_channels=in_channels, channels=(4, 8, 8, 12))
    assert net.out_dim == 12
    assert net(torch.zeros(2, in_channels, size, size)).shape == (2, 12)
    assert net.out_features((in_channels, size, size)) == 12


@pytest.mark.parametrize(
    "net, shape, match",
    [
        (Conv4(hidden=4), (2, 1, 8, 8), r"at least 16x16; got input_shape=\(1, 8, 8\)"),
        (Conv4(hidden=4), (2, 3, 28, 28), r"\(batch, 1, height, width\).*\(2, 3, 28"),
        (Conv4(hidden=4), (2, 28, 28), r"got a tensor of shape \(2, 28, 28\)"),
        (
            ResNet12(1, (4, 4, 4, 4)),
            (2, 1, 12, 12),
            r"ResNet12 halves the image 4 times.*\(1, 12, 12\)",
        ),
    ],
)
def test_wrong_input_shape_is_a_clear_error(net, shape, match):
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(shape))


def test_out_features_rejects_small_or_malformed_shapes():
    with pytest.raises(ValueError, match=r"at least 16x16; got input_shape=\(15, 40\)"):
        Conv4().out_features((15, 40))
    with pytest.raises(ValueError, match=r"\(height, width\) or"):
        ResNet12().out_features((28,))


@pytest.mark.parametrize(
    "net, shape, match",
    [
        (Conv4(in_channels=1, hidden=4), (3, 28, 28), "Conv4 takes images of 1 "),
        (Conv4(in_channels=3, hidden=4), (1, 84, 84), "Conv4 takes images of 3 "),
        (
            ResNet12(3, channels=(4, 4, 4, 4)),
            (1, 28, 28),
            "ResNet12 takes images of 3 ",
        ),
    ],
)
def test_out_features_rejects_another_channel_count(net, shape, match):
    # it answered the width of images the module's forward refuses
    match += (
        rf"channel\(s\) \(in_channels={net.in_channels}\), got input_shape="
        + re.escape(f"{shape}.")
    )
    with pytest.raises(ValueError, match=match):
        net.out_features(shape)
    # (height, width) says nothing of the channels: taken, the forward's width
    images = torch.zeros((1, net.in_channels, *shape[1:]))
    assert net.out_features(shape[1:]) == net.eval()(images).shape[1]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Conv4(in_channels=0), "in_channels must be an int >= 1, got 0"),
        (lambda: Conv4(hidden=2.5), "hidden must be an int >= 1, got 2.5"),
        (lambda: ResNet12(channels=(1, 2, 3)), r"4 ints, got \(1, 2, 3\)"),
        (lambda: ResNet12(drop_rate=1.0), r"drop_rate must be in \[0, 1\), got 1.0"),
    ],
)
def test_invalid_hyper_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "make", [lambda: Conv4(hidden=8), lambda: ResNet12(1, (4, 8, 8, 16))]
)
def test_seeded_initialisation_is_deterministic(make):
    torch.manual_seed(0)
    a = make().state_dict()
    torch.manual_seed(0)
    b = make().state_dict()
    c = make().state_dict()  # global state moved on: different weights
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resnet12_dropout_only_in_training_mode():
    torch.manual_seed(0)
    net = ResNet12(1, (4, 4, 4, 4), drop_rate=0.5)
    x = torch.randn(2, 1, 16, 16)
    net.eval()
    # float32 tolerance: kernels may differ with memory layout from call to call
    torch.testing.assert_close(net(x), net(x), rtol=1e-5, atol=1e-6)
    net.train()
    # dropout zeroes different halves of the maps: far beyond any rounding
    assert not torch.allclose(net(x), net(x), rtol=1e-3, atol=1e-3)


def test_resnet12_init_and_pickle_round_trip():
    net = ResNet12(1, (4, 4, 4, 4)).eval()
    bn = net.blocks[0].body[1]
    assert torch.equal(bn.weight, torch.ones(4))
    assert torch.equal(bn.bias, torch.zeros(4))
    x = torch.randn(2, 1, 16, 16)
    again = pickle.loads(pickle.dumps(net))
    # the weights are bit for bit the same; the outputs within float32 rounding
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), net.parameters()))
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x), rtol=1e-5, atol=1e-6)
