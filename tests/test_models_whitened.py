"""WhitenedBackbone: forward by hand, equal to WithinClassWhitening, saving."""

import pickle
import re

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.pipeline import make_pipeline

# the feature cache emptied around every test (an autouse fixture), a Linear
# layer of given weights, the mark of the tests that need skops
from test_models_ensemble import _empty_feature_cache, _linear, needs_skops  # noqa: F401

from skfewshot import BackboneTransformer, PrototypeClassifier
from skfewshot.models import (
    BackboneEnsemble,
    Conv4,
    WhitenedBackbone,
    load_backbone,
    save_backbone,
)
from skfewshot.preprocessing import WithinClassWhitening


def _trained_conv(seed=0, **kwargs):
    """A Conv4(hidden=4) with random weights and batch-norm statistics, in eval."""
    torch.manual_seed(seed)
    conv = Conv4(hidden=4, **kwargs)
    conv.train()
    with torch.no_grad():
        conv(torch.rand(8, 1, 16, 16))  # moves the running statistics
        for p in conv.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return conv.eval()


def _images(n, seed=0):
    return np.random.RandomState(seed).rand(n, 1, 16, 16).astype(np.float32)


def _features(module, X, **kwargs):
    return (
        BackboneTransformer(module, device="cpu", batch_size=512, **kwargs)
        .fit(X)
        .transform(X)
    )


def _assert_close(actual, expected):
    # float32 products of float64 maps: relative to the largest entry
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * scale)


def _same_state(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(
        x.dtype == b[k].dtype and torch.equal(x, b[k]) for k, x in a.items()
    )


# -- forward by hand ---------------------------------------------------------------

# backbone rows: x @ [[1, 0], [0, 1], [1, 1]].T
X_HAND = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, -1.0]])
FEATURES_HAND = np.array([[3.0, 4.0, 7.0], [0.0, 0.0, 0.0], [1.0, -1.0, 0.0]])
W_HAND = np.array([[1.0, 2.0], [0.0, -1.0], [0.5, 0.0]])


@pytest.mark.parametrize("normalize", [True, False])
def test_forward_by_hand(normalize):
    net = WhitenedBackbone(
        _linear([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), W_HAND, normalize=normalize
    )
    with torch.no_grad():
        out = net(X_HAND)
    # raw rows @ W: [6.5, 2], [0, 0], [1, 3]; norms sqrt(74), 0, sqrt(2)
    raw = np.array([[6.5, 2.0], [0.0, 0.0], [1.0, 3.0]])
    assert_array_equal(FEATURES_HAND @ W_HAND, raw)  # the hand product itself
    expected = raw / np.array([[np.sqrt(74.0)], [1.0], [np.sqrt(2.0)]])
    assert out.dtype == torch.float32 and out.shape == (3, 2)
    np.testing.assert_allclose(
        out.numpy(), expected if normalize else raw, rtol=1e-6, atol=1e-7
    )
    # the all-zero row stays zero (no NaN from 0 / 0)
    assert_array_equal(out[1].numpy(), [0.0, 0.0])


def test_forward_flattens_the_backbone_output():
    # a (1, 1, 2, 2) map [[3, 0], [0, 4]] is the row (3, 0, 0, 4), norm 5
    components = np.zeros((4, 2))
    components[0, 0] = components[3, 1] = 10.0
    net = WhitenedBackbone(torch.nn.Identity(), components)
    with torch.no_grad():
        out = net(torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]]))
    np.testing.assert_allclose(out.numpy(), [[6.0, 8.0]], rtol=1e-6)


def test_gradients_flow_to_the_backbone_not_to_the_map():
    backbone = _linear([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    net = WhitenedBackbone(backbone, W_HAND)
    net(X_HAND).sum().backward()
    assert backbone.weight.grad is not None
    assert torch.isfinite(backbone.weight.grad).all()  # the zero row included
    assert not net.components.requires_grad and net.components.grad is None


# -- equal to WithinClassWhitening ------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
def test_equals_within_class_whitening(normalize):
    conv = _trained_conv(last_pool=False)  # 16 features at 16x16
    X = _images(30)
    y = np.repeat(np.arange(5), 6)
    features = _features(conv, X)
    assert features.shape == (30, 16)
    whiten = WithinClassWhitening(normalize=normalize).fit(features, y)
    net = WhitenedBackbone(conv, whiten.components_, normalize=normalize)
    X_new = _images(7, seed=1)
    whitened = _features(net, X_new)
    assert whitened.dtype == np.float32 and whitened.shape == (7, 16)
    _assert_close(whitened, whiten.transform(_features(conv, X_new)))
    # the map is not the identity: whitening changed the features
    assert not np.allclose(whitened, _features(conv, X_new), atol=1e-2)


def test_test_time_shifts_of_an_ensemble_match_whitening_up_to_row_scale():
    # every shifted copy of a "concat" ensemble of two members has norm sqrt(2):
    # the module whitens each copy / sqrt(2), then averages, which is
    # mean(copies) @ W / sqrt(2) = transform(mean(copies)) * |mean(copies)| / sqrt(2)
    ensemble = BackboneEnsemble(
        [_trained_conv(0, last_pool=False), _trained_conv(1, last_pool=False)]
    ).eval()
    X_base, y_base = _images(30), np.repeat(np.arange(5), 6)
    whiten = WithinClassWhitening().fit(
        _features(ensemble, X_base, test_time_shifts=1), y_base
    )
    net = WhitenedBackbone(ensemble, whiten.components_)
    X = _images(12, seed=2)
    averaged = _features(ensemble, X, test_time_shifts=1)
    whitened = _features(net, X, test_time_shifts=1)
    factors = np.linalg.norm(averaged.astype(np.float64), axis=1) / np.sqrt(2.0)
    # the copies differ, so their mean is shorter: the factors are below 1 by
    # far more than the tolerance (1e-5) below, which tells the two apart
    assert np.all(factors > 0.5) and np.all(factors < 1 - 1e-4)
    expected = whiten.transform(averaged) * factors[:, None]
    _assert_close(whitened, expected)
    # one support row per class: its prototype is the row, and cosine scores
    # ignore the scale of every row
    support, y_support = slice(0, 3), np.array([0, 1, 2])
    query = slice(3, 12)
    ours = PrototypeClassifier().fit(whitened[support], y_support)
    theirs = PrototypeClassifier().fit(whiten.transform(averaged)[support], y_support)
    predicted = ours.predict(whitened[query])
    assert len(set(predicted)) > 1  # a test of something
    assert_array_equal(predicted, theirs.predict(whiten.transform(averaged)[query]))
    np.testing.assert_allclose(
        ours.predict_proba(whitened[query]),
        theirs.predict_proba(whiten.transform(averaged)[query]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_the_feature_cache_tells_maps_apart():
    conv = _trained_conv()
    X = _images(5)
    eye = np.eye(4)
    first = _features(WhitenedBackbone(conv, eye), X)
    second = _features(WhitenedBackbone(conv, 2 * eye), X)
    np.testing.assert_allclose(second, 2 * first, rtol=1e-6)
    net = WhitenedBackbone(conv, eye)
    transformer = BackboneTransformer(net, device="cpu").fit(X)
    assert_array_equal(transformer.transform(X), first)
    with torch.no_grad():
        net.components.mul_(3.0)  # the buffer is state: no stale features
    np.testing.assert_allclose(transformer.transform(X), 3 * first, rtol=1e-6)


# -- widths, arguments, dtypes ----------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, d, k",
    [({}, 4, 3), ({"last_pool": False}, 16, 5)],
)
def test_out_features_is_the_number_of_columns(kwargs, d, k):
    net = WhitenedBackbone(Conv4(hidden=4, **kwargs), np.ones((d, k))).eval()
    assert net.out_features((1, 16, 16)) == k
    with torch.no_grad():
        assert net(torch.rand(2, 1, 16, 16)).shape == (2, k)


def test_a_backbone_of_another_width_is_refused_naming_both():
    net = WhitenedBackbone(_linear([[1.0, 0.0]] * 5), np.ones((4, 2)))
    match = re.escape(
        "WhitenedBackbone: its backbone (Linear) gives 5 features for inputs of "
        "shape (2, 2), but components has 4 rows"
    )
    with pytest.raises(ValueError, match=match):
        net(torch.ones(2, 2))
    net = WhitenedBackbone(Conv4(hidden=4), np.ones((8, 2)))
    match = re.escape(
        "its backbone (Conv4) gives 4 features for input_shape=(1, 16, 16), but "
        "components has 8 rows"
    )
    with pytest.raises(ValueError, match=match):
        net.out_features((1, 16, 16))
    with pytest.raises(ValueError, match=match):
        net.out_features([1, 16, 16])  # any sequence, named as a tuple


def test_out_features_passes_on_the_backbone_s_refusal():
    net = WhitenedBackbone(Conv4(hidden=4), np.ones((4, 2)))
    with pytest.raises(ValueError, match="needs inputs of at least 16x16"):
        net.out_features((1, 8, 8))


@pytest.mark.parametrize(
    "backbone, name",
    [
        (torch.nn.Flatten(), "Flatten"),
        # Linear has an out_features, but it is an int, not a method
        (torch.nn.Linear(3, 4), "Linear"),
    ],
)
def test_out_features_needs_it_from_the_backbone(backbone, name):
    net = WhitenedBackbone(backbone, np.ones((4, 2)))
    with pytest.raises(TypeError, match=rf"backbone \({name}\) has no out_features m"):
        net.out_features((3,))


@pytest.mark.parametrize(
    "backbone, components, normalize, error, match",
    [
        ("conv", np.eye(2), True, TypeError, "backbone must be a torch.nn.Module, "),
        (lambda x: x, np.eye(2), True, TypeError, "got function"),
        (None, np.eye(2), 1, ValueError, "normalize must be True or False, got 1"),
        (None, np.eye(2), "yes", ValueError, "must be True or False, got 'yes'"),
        (None, np.ones(3), True, ValueError, r"2-D .* got shape \(3,\)"),
        (None, 5.0, True, ValueError, r"2-D .* got shape \(\)"),
        (None, torch.ones(2, 2, 2), True, ValueError, r"got shape \(2, 2, 2\)"),
        (None, np.ones((0, 3)), True, ValueError, r"d, k >= 1, got shape \(0, 3\)"),
        (None, torch.ones(3, 0), True, ValueError, r"d, k >= 1, got shape \(3, 0\)"),
        (None, [[1.0, np.nan]], True, ValueError, r"non-finite values \(NaN or inf"),
        (None, torch.tensor([[np.inf]]), True, ValueError, "non-finite values"),
        (None, np.full((2, 2), -np.inf, np.float16), True, ValueError, "non-finite"),
        (None, [["a", "b"]], True, ValueError, "array of numbers, got dtype <U1"),
        (None, [[None]], True, ValueError, "array of numbers, got dtype object"),
        (None, np.ones((2, 2), complex), True, ValueError, "got dtype complex128"),
        (None, torch.ones(2, 2, dtype=torch.complex64), True, ValueError, "real"),
        (None, [[1.0, 2.0], [3.0]], True, ValueError, "array of numbers: setting"),
    ],
)
def test_invalid_arguments(backbone, components, normalize, error, match):
    backbone = torch.nn.Flatten() if backbone is None else backbone
    with pytest.raises(error, match=match):
        WhitenedBackbone(backbone, components, normalize=normalize)


@pytest.mark.parametrize(
    "components, dtype",
    [
        (np.array([[1, 2], [3, 4]]), torch.float32),  # int64 -> float32
        (torch.tensor([[1, 2], [3, 4]], dtype=torch.int32), torch.float32),
        (np.array([[True, False], [False, True]]), torch.float32),
        (np.ones((2, 2), np.float64), torch.float64),
        (torch.ones(2, 2, dtype=torch.float16), torch.float16),
        ([[1.0, 2.0], [3.0, 4.0]], torch.float64),  # as numpy reads it
    ],
)
def test_components_dtype(components, dtype):
    net = WhitenedBackbone(torch.nn.Flatten(), components)
    assert net.components.dtype == dtype
    assert net.components.is_contiguous()


def test_float64_components_are_applied_in_the_features_dtype():
    # 1/3 is not a float32: float32 features get the float32 rounding of the map
    components = np.array([[1 / 3, 0.0], [0.0, 1.0]])
    net = WhitenedBackbone(torch.nn.Flatten(), components, normalize=False)
    assert net.components.dtype == torch.float64
    x = torch.tensor([[3.0, 4.0]])
    out = net(x)
    assert out.dtype == torch.float32
    assert out[0, 0].item() == np.float32(3.0) * np.float32(1 / 3)
    out64 = net(x.double())
    assert out64.dtype == torch.float64
    assert out64[0, 0].item() == 3.0 * (1 / 3)
    # an int map applied to float64 features: float32 values in float64
    net = WhitenedBackbone(torch.nn.Flatten(), [[2, 0], [0, 1]], normalize=False)
    assert net(x.double()).dtype == torch.float64
    assert_array_equal(net(x.double()).numpy(), [[6.0, 4.0]])


@pytest.mark.parametrize("source", ["numpy", "torch"])
def test_components_are_a_copy(source):
    values = np.array([[1.0, 2.0], [3.0, 4.0]])
    components = torch.tensor(values) if source == "torch" else values.copy()
    net = WhitenedBackbone(torch.nn.Flatten(), components, normalize=False)
    components[0, 0] = 100.0  # the caller's array changes afterwards...
    assert_array_equal(net.components.numpy(), values)  # ...the map does not
    assert_array_equal(net(torch.tensor([[1.0, 0.0]])).numpy(), [[1.0, 2.0]])
    with torch.no_grad():
        net.components[1, 1] = -1.0  # nor does the map write into the source
    assert components[1, 1] == 4.0


def test_components_from_a_parameter_are_a_plain_buffer():
    parameter = torch.nn.Parameter(torch.eye(2))
    net = WhitenedBackbone(torch.nn.Flatten(), parameter)
    assert type(net.components) is torch.Tensor
    assert not net.components.requires_grad


def test_components_is_a_buffer_not_a_parameter():
    conv = Conv4(hidden=4)
    net = WhitenedBackbone(conv, np.eye(4))
    assert "components" in net.state_dict()
    assert "components" in dict(net.named_buffers())
    assert not any("components" in k for k, _ in net.named_parameters())
    assert [id(p) for p in net.parameters()] == [id(p) for p in conv.parameters()]
    assert net.backbone is conv and net.normalize is True
    # a buffer moves with the module
    assert net.double().components.dtype == torch.float64


# -- save_backbone / load_backbone --------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_save_load_round_trip_is_bit_exact(normalize, dtype, tmp_path):
    conv = _trained_conv(last_pool=False)
    components = np.random.RandomState(0).standard_normal((16, 5)).astype(dtype)
    net = WhitenedBackbone(conv, components, normalize=normalize).eval()
    path = tmp_path / "whitened.pt"
    save_backbone(net, path, input_shape=(1, 16, 16), trained_on={"dataset": "x"})
    loaded, meta = load_backbone(path)
    assert type(loaded) is WhitenedBackbone and type(loaded.backbone) is Conv4
    assert loaded.normalize is normalize and loaded.backbone.last_pool is False
    assert loaded.components.dtype == net.components.dtype
    assert torch.equal(loaded.components, torch.from_numpy(components))
    assert _same_state(loaded, net)
    assert not any(m.training for m in loaded.modules())
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert meta["architecture"] == "WhitenedBackbone"
    assert meta["config"] == {
        "backbone": {
            "architecture": "Conv4",
            "config": {"in_channels": 1, "hidden": 4, "last_pool": False},
        },
        "components": (16, 5),
        "normalize": normalize,
    }
    assert meta["input_shape"] == (1, 16, 16)
    assert meta["trained_on"] == {"dataset": "x"}
    # the file stores the shape as plain data, the values as the buffer
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["components"] == [16, 5]
    assert blob["state_dict"]["components"].dtype == net.components.dtype


def test_whitened_ensemble_round_trips(tmp_path):
    ensemble = BackboneEnsemble(
        [_trained_conv(0, last_pool=False), _trained_conv(1)]  # 16 + 4 features
    )
    components = np.random.RandomState(0).standard_normal((20, 6))
    net = WhitenedBackbone(ensemble, components).train()  # saved in train mode
    save_backbone(net, tmp_path / "w.pt", input_shape=(1, 16, 16))
    loaded, meta = load_backbone(tmp_path / "w.pt")
    assert type(loaded.backbone) is BackboneEnsemble
    assert [type(m) for m in loaded.backbone.members] == [Conv4, Conv4]
    assert _same_state(loaded, net)
    # loaded in eval mode, down to the members' batch norms
    assert not any(m.training for m in loaded.modules())
    assert meta["config"]["components"] == (20, 6)
    assert meta["config"]["backbone"]["architecture"] == "BackboneEnsemble"
    assert [
        m["config"]["last_pool"]
        for m in meta["config"]["backbone"]["config"]["modules"]
    ] == [False, True]
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))


def test_whitened_members_of_an_ensemble_round_trip(tmp_path):
    # a composite inside a composite, and a whitened backbone whitened again
    inner = WhitenedBackbone(_trained_conv(), np.random.RandomState(0).rand(4, 3))
    twice = WhitenedBackbone(inner, np.eye(3, 2, dtype=np.float32), normalize=False)
    net = BackboneEnsemble([twice, _trained_conv(1)]).eval()
    save_backbone(net, tmp_path / "e.pt", input_shape=(1, 16, 16))
    loaded, meta = load_backbone(tmp_path / "e.pt")
    member = loaded.members[0]
    assert type(member) is WhitenedBackbone and type(member.backbone) is (
        WhitenedBackbone
    )
    assert member.normalize is False and member.backbone.normalize is True
    assert member.components.dtype == torch.float32
    assert member.backbone.components.dtype == torch.float64
    assert meta["config"]["modules"][0]["config"]["components"] == [3, 2]
    assert _same_state(loaded, net)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_save_refuses_an_input_shape_of_another_width(tmp_path):
    net = WhitenedBackbone(Conv4(hidden=4), np.ones((4, 2)))
    save_backbone(net, tmp_path / "w.pt", input_shape=(1, 28, 28))  # 4 features
    net.backbone.last_pool = False  # now 4 * 9 features at 28x28
    match = re.escape(
        "input_shape=(1, 28, 28) is not a shape this WhitenedBackbone takes: "
        "WhitenedBackbone: its backbone (Conv4) gives 36 features for "
        "input_shape=(1, 28, 28), but components has 4 rows"
    )
    with pytest.raises(ValueError, match=match):
        save_backbone(net, tmp_path / "w2.pt", input_shape=(1, 28, 28))
    assert not (tmp_path / "w2.pt").exists()


@pytest.mark.parametrize(
    "module, place",
    [
        (lambda: WhitenedBackbone(torch.nn.Flatten(), np.eye(2)), "backbone"),
        (
            lambda: BackboneEnsemble(
                [Conv4(hidden=4), WhitenedBackbone(torch.nn.Flatten(), np.eye(2))]
            ),
            r"modules\[1\].backbone",
        ),
        (
            lambda: WhitenedBackbone(
                BackboneEnsemble([Conv4(hidden=4), torch.nn.Flatten()]), np.eye(2)
            ),
            r"backbone.modules\[1\]",
        ),
    ],
)
def test_save_refuses_a_foreign_backbone_naming_it(module, place, tmp_path):
    with pytest.raises(TypeError, match=rf"got Flatten as {place}; save module.st"):
        save_backbone(module(), tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def _saved_blob(tmp_path):
    net = WhitenedBackbone(Conv4(hidden=4), np.random.RandomState(0).rand(4, 3))
    save_backbone(net, tmp_path / "good.pt")
    return torch.load(tmp_path / "good.pt", weights_only=True)


def _set_config(key, value):
    def edit(blob):
        blob["config"][key] = value

    return edit


def _set_state(value):
    def edit(blob):
        blob["state_dict"]["components"] = value

    return edit


def _backbone_as_a_list(blob):
    blob["config"]["backbone"] = [blob["config"]["backbone"]]


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            _set_config("components", [5, 3]),
            r"state_dict entry 'components' has shape \(4, 3\); WhitenedBackbone "
            r"needs \(5, 3\)",
        ),
        (_set_config("components", [3, 4]), r"needs \(3, 4\)"),
        # a crafted shape costs nothing: the skeleton is built on "meta"
        (_set_config("components", [2**30, 2**30]), r"needs \(1073741824, 1073"),
        (
            _set_config("components", [-1, 3]),
            r"'components' must be a tensor's shape \(ints >= 1\), got \(-1, 3\)",
        ),
        (_set_config("components", ["a"]), r"tensor's shape .*, got \('a',\)"),
        (_set_config("components", []), r"tensor's shape .*, got \(\)"),
        (_set_config("components", [4.0, 3]), r"tensor's shape .*, got \(4.0, 3\)"),
        (_set_config("components", [True, 3]), r"tensor's shape .*, got \(True, 3\)"),
        (_set_config("components", [2**31, 3]), r"tensor's shape .*, got \(2147483"),
        (_set_config("components", "4x3"), r"tensor's shape .*, got '4x3'"),
        (_set_config("components", None), r"tensor's shape .*, got None"),
        (
            _set_config("components", [4]),
            r"invalid config .*: components must be a 2-D array of shape \(d, k\), "
            r"d, k >= 1, got shape \(4,\)",
        ),
        (
            _set_config("normalize", "yes"),
            r"invalid config .*: WhitenedBackbone.normalize must be True or False",
        ),
        (
            _backbone_as_a_list,
            r"invalid config .*: backbone must be a torch.nn.Module, got list",
        ),
        (
            _set_config("backbone", "Conv4"),
            r"'backbone' must be a member or a list of members nested at most 16 "
            "deep, got str at depth 0",
        ),
        (
            _set_config("backbone", {"architecture": "VGG", "config": {}}),
            r"backbone: unknown architecture 'VGG'",
        ),
        (
            _set_config("backbone", {"architecture": "Conv4"}),
            r"backbone: the member: missing 'config'",
        ),
        (
            _set_config(
                "backbone",
                {"architecture": "Conv4", "config": {"in_channels": 1, "hidden": 5}},
            ),
            r"'backbone.encoder.0.0.weight' has shape \(4, 1, 3, 3\); "
            r"WhitenedBackbone needs \(5, 1, 3, 3\)",
        ),
        (
            lambda blob: blob["config"].pop("components"),
            r"config does not match WhitenedBackbone\(backbone, components, "
            r"normalize\): missing 'components'",
        ),
        (
            lambda blob: blob["state_dict"].pop("components"),
            r"state_dict does not match WhitenedBackbone: missing 'components'",
        ),
        (
            _set_state(torch.tensor([[np.nan, 0, 0]] * 4)),
            r"state_dict entry 'components' holds non-finite values \(NaN or inf\)",
        ),
        (
            _set_state(torch.full((4, 3), np.inf, dtype=torch.float64)),
            r"'components' holds non-finite values",
        ),
        (
            _set_state(torch.ones(4, 3, dtype=torch.int64)),
            r"state_dict entry 'components' has dtype torch.int64; WhitenedBackbone "
            r"needs torch.float32",
        ),
        (
            _set_state(torch.ones(4, 3).t()),
            r"state_dict entry 'components' has shape \(3, 4\)",
        ),
        (
            _set_state(torch.ones(3, 4).t()),  # the shape, but not dense
            r"'components' does not hold its 12 values \(not a dense tensor\)",
        ),
    ],
)
def test_load_refuses_tampered_files_naming_them(edit, match, tmp_path):
    blob = _saved_blob(tmp_path)
    edit(blob)
    path = tmp_path / "tampered.pt"
    torch.save(blob, path)
    with pytest.raises(ValueError, match=match) as info:
        load_backbone(path)
    assert repr(str(path)) in str(info.value)


def test_load_refuses_an_ensemble_whose_modules_are_one_dict(tmp_path):
    # a WhitenedBackbone's member is one dict; an ensemble's must be a list
    save_backbone(BackboneEnsemble([Conv4(hidden=4)]), tmp_path / "good.pt")
    blob = torch.load(tmp_path / "good.pt", weights_only=True)
    blob["config"]["modules"] = blob["config"]["modules"][0]
    path = tmp_path / "tampered.pt"
    torch.save(blob, path)
    match = (
        r"invalid config .*: modules must be a sequence \(list or tuple\) of "
        r"torch.nn.Module, got Conv4"
    )
    with pytest.raises(ValueError, match=match) as info:
        load_backbone(path)
    assert repr(str(path)) in str(info.value)


def test_the_untampered_blob_loads(tmp_path):
    # the edits above are all that makes those files fail
    blob = _saved_blob(tmp_path)
    torch.save(blob, tmp_path / "again.pt")
    loaded, meta = load_backbone(tmp_path / "again.pt")
    assert torch.equal(loaded.components, blob["state_dict"]["components"])
    assert meta["config"]["components"] == (4, 3)


# -- in a pipeline: pickle and skops ------------------------------------------------


def _pipeline(net):
    X = _images(9)
    y = np.repeat([0, 1, 2], 3)
    pipe = make_pipeline(
        BackboneTransformer(net, device="cpu", batch_size=4, cache=False),
        PrototypeClassifier(),
    )
    return pipe.fit(X, y), X


def _whitened():
    components = np.random.RandomState(0).standard_normal((16, 4))
    return WhitenedBackbone(_trained_conv(last_pool=False), components)


def test_pipeline_pickle_round_trip_is_bit_exact():
    pipe, X = _pipeline(_whitened())
    assert pipe[0].n_features_out_ == 4
    again = pickle.loads(pickle.dumps(pipe))
    assert _same_state(again[0].module_, pipe[0].module_)
    assert_array_equal(again[0].transform(X), pipe[0].transform(X))
    assert_array_equal(again.predict_proba(X), pipe.predict_proba(X))


@needs_skops
def test_skops_round_trip_is_bit_exact(tmp_path):
    from skfewshot.persistence import dump, load

    pipe, X = _pipeline(_whitened())
    dump(pipe, tmp_path / "pipe.skops")
    loaded = load(tmp_path / "pipe.skops")
    net = loaded[0].module_
    assert type(net) is WhitenedBackbone and net is not pipe[0].module_
    assert type(net.backbone) is Conv4 and net.backbone.last_pool is False
    assert net.components.dtype == torch.float64
    assert _same_state(net, pipe[0].module_)
    assert_array_equal(loaded[0].transform(X), pipe[0].transform(X))
    assert_array_equal(loaded.predict(X), pipe.predict(X))
    assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))


@needs_skops
def test_skops_refuses_a_foreign_backbone_naming_it():
    import skops.io as sio

    pipe, _ = _pipeline(WhitenedBackbone(torch.nn.Flatten(), np.eye(256, 4)))
    match = (
        r"BackboneTransformer.module.backbone cannot be stored as plain data for "
        r"skops.io: it is a torch.nn.modules.flatten.Flatten, not a skfewshot.models "
        r"architecture.*pickle or joblib"
    )
    with pytest.raises(TypeError, match=match):
        sio.dumps(pipe)
