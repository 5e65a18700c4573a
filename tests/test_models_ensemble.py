"""BackboneEnsemble: features by hand, widths, saving and loading, in a pipeline."""

import pickle
import re

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.pipeline import make_pipeline

from skfewshot import BackboneTransformer, PrototypeClassifier
from skfewshot.models import (
    BackboneEnsemble,
    Conv4,
    ResNet12,
    load_backbone,
    save_backbone,
)

try:
    import skops.io  # noqa: F401

    HAS_SKOPS = True
except ImportError:
    HAS_SKOPS = False

needs_skops = pytest.mark.skipif(not HAS_SKOPS, reason="skops is not installed")


@pytest.fixture(autouse=True)
def _empty_feature_cache():
    BackboneTransformer.clear_cache()
    yield
    BackboneTransformer.clear_cache()


def _linear(weight):
    layer = torch.nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
    return layer


def _trained_members():
    """A Conv4 and a ResNet12 with random weights and batch-norm statistics."""
    torch.manual_seed(0)
    members = [Conv4(hidden=4), ResNet12(1, (4, 4, 4, 6))]
    for member in members:
        member.train()
        with torch.no_grad():
            member(torch.rand(8, 1, 16, 16))  # moves the running statistics
            for p in member.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        member.eval()
    return members


def _same_state(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_concat_and_mean_by_hand():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    # member 1: x itself; member 2: x @ [[1, 0], [1, 1]].T = [[3, 7], [0, 2]]
    members = [torch.nn.Flatten(), _linear([[1.0, 0.0], [1.0, 1.0]])]
    r58 = np.sqrt(58.0)
    first = np.array([[0.6, 0.8], [0.0, 1.0]])
    second = np.array([[3 / r58, 7 / r58], [0.0, 1.0]])
    with torch.no_grad():
        concat = BackboneEnsemble(members)(x).numpy()
        mean = BackboneEnsemble(members, combine="mean")(x).numpy()
    np.testing.assert_allclose(concat, np.hstack([first, second]), rtol=1e-6)
    np.testing.assert_allclose(mean, (first + second) / 2, rtol=1e-6)


def test_mean_of_unequal_widths_names_them():
    net = BackboneEnsemble([torch.nn.Flatten(), _linear([[1.0, 0.0]] * 3)], "mean")
    with pytest.raises(ValueError, match=r"same width; got widths \[2, 3\]"):
        net(torch.ones(1, 2))
    net = BackboneEnsemble([Conv4(hidden=4), Conv4(hidden=8)], combine="mean")
    with pytest.raises(ValueError, match=r"got widths \[4, 8\]"):
        net.out_features((1, 28, 28))


@pytest.mark.parametrize(
    "members, combine, width",
    [
        # Conv4 at 64x64 ends as a 4x4 map (16 * hidden); ResNet12 pools globally
        (lambda: [Conv4(hidden=4), ResNet12(1, (4, 4, 4, 6))], "concat", 64 + 6),
        (lambda: [Conv4(hidden=6), ResNet12(1, (4, 4, 4, 96))], "mean", 96),
    ],
)
def test_out_features_matches_forward(members, combine, width):
    net = BackboneEnsemble(members(), combine=combine).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, width)
    assert net.out_features((1, 64, 64)) == width


def test_out_features_names_the_member_that_rejects_the_shape():
    # it summed the widths of members that cannot take the images (8 here)
    net = BackboneEnsemble(
        [Conv4(in_channels=1, hidden=4), Conv4(in_channels=3, hidden=4)]
    )
    match = re.escape(
        "modules[0] (Conv4) rejects input_shape=(3, 28, 28): Conv4 takes images "
        "of 1 channel(s) (in_channels=1), got input_shape=(3, 28, 28)."
    )
    with pytest.raises(ValueError, match=match):
        net.out_features((3, 28, 28))
    with pytest.raises(ValueError, match=r"modules\[1\] \(Conv4\) rejects input_s"):
        net.out_features((1, 28, 28))
    nested = BackboneEnsemble([Conv4(hidden=4), BackboneEnsemble([Conv4(hidden=4)])])
    with pytest.raises(ValueError, match=r"modules\[0\] \(Conv4\) rejects input_s"):
        nested.out_features((1, 8, 8))


def test_out_features_needs_it_from_every_member():
    net = BackboneEnsemble([Conv4(hidden=4), torch.nn.Flatten()])
    with pytest.raises(TypeError, match=r"modules\[1\] \(Flatten\) has no out_feat"):
        net.out_features((1, 28, 28))


@pytest.mark.parametrize(
    "modules, combine, error, match",
    [
        ([], "concat", ValueError, "at least one backbone"),
        (Conv4(hidden=4), "concat", TypeError, "sequence .* got Conv4"),
        ([Conv4(hidden=4), "conv"], "concat", TypeError, r"modules\[1\] must be a"),
        ([Conv4(hidden=4)], "max", ValueError, "'concat' or 'mean', got 'max'"),
    ],
)
def test_invalid_arguments(modules, combine, error, match):
    with pytest.raises(error, match=match):
        BackboneEnsemble(modules, combine=combine)


@pytest.mark.parametrize("combine", ["concat", "mean"])
def test_save_load_round_trip_is_bit_exact(combine, tmp_path):
    conv, resnet = _trained_members()
    members = [conv, resnet] if combine == "concat" else [conv, Conv4(hidden=4)]
    net = BackboneEnsemble(members, combine=combine).eval()
    save_backbone(net, tmp_path / "ensemble.pt", input_shape=(1, 16, 16))
    loaded, meta = load_backbone(tmp_path / "ensemble.pt")
    assert type(loaded) is BackboneEnsemble and loaded.combine == combine
    assert [type(m) for m in loaded.members] == [type(m) for m in net.members]
    assert _same_state(loaded, net)
    assert meta["architecture"] == "BackboneEnsemble"
    assert meta["config"]["modules"][0] == {
        "architecture": "Conv4",
        "config": {"in_channels": 1, "hidden": 4, "last_pool": True},
    }
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_nested_ensemble_round_trip(tmp_path):
    conv, resnet = _trained_members()
    net = BackboneEnsemble([BackboneEnsemble([conv, resnet]), Conv4(hidden=2)])
    save_backbone(net, tmp_path / "nested.pt")
    loaded, _ = load_backbone(tmp_path / "nested.pt")
    assert type(loaded.members[0]) is BackboneEnsemble
    assert _same_state(loaded, net)


def test_save_refuses_a_foreign_member(tmp_path):
    net = BackboneEnsemble([Conv4(hidden=4), BackboneEnsemble([torch.nn.Flatten()])])
    match = (
        r"saves skfewshot.models backbones \(Conv4, ResNet12\) or a "
        r"BackboneEnsemble or WhitenedBackbone of them, got Flatten as "
        r"modules\[1\].modules\[0\]; save module.state_dict"
    )
    with pytest.raises(TypeError, match=match):
        save_backbone(net, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def _ensemble_blob(member_spec):
    net = BackboneEnsemble([Conv4(hidden=4)])
    return {
        "format": "skfewshot.backbone",
        "version": 1,
        "architecture": "BackboneEnsemble",
        "config": {"modules": [member_spec], "combine": "concat"},
        "state_dict": net.state_dict(),
    }


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"architecture": "VGG", "config": {}}, r"modules\[0\]: unknown architecture"),
        ("Conv4", r"modules\[0\]: must be a dict of 'architecture' and 'config'"),
        ({"architecture": "Conv4"}, r"modules\[0\]: the member: missing 'config'"),
        (
            {"architecture": "Conv4", "config": {"hidden": 4}},
            r"modules\[0\]: config does not match "
            r"Conv4\(in_channels, hidden, last_pool\): "
            "missing 'in_channels'",
        ),
        (
            {"architecture": "Conv4", "config": {"in_channels": 1, "hidden": 5}},
            r"'members.0.encoder.0.0.weight' has shape \(4, 1, 3, 3\); "
            r"BackboneEnsemble needs \(5, 1, 3, 3\)",
        ),
    ],
)
def test_malformed_member_descriptions_are_refused(spec, match, tmp_path):
    path = tmp_path / "bad.pt"
    torch.save(_ensemble_blob(spec), path)
    with pytest.raises(ValueError, match=match) as info:
        load_backbone(path)
    assert str(path) in str(info.value)


def test_too_deeply_nested_description_is_refused(tmp_path):
    spec = {"architecture": "Conv4", "config": {"in_channels": 1, "hidden": 4}}
    for _ in range(20):
        spec = {"architecture": "BackboneEnsemble", "config": {"modules": [spec]}}
        spec["config"]["combine"] = "concat"
    torch.save(_ensemble_blob(spec), tmp_path / "deep.pt")
    with pytest.raises(ValueError, match="nested at most 16 deep"):
        load_backbone(tmp_path / "deep.pt")


def _pipeline(net):
    rng = np.random.RandomState(0)
    X = rng.rand(9, 1, 16, 16).astype(np.float32)
    y = np.repeat([0, 1, 2], 3)
    pipe = make_pipeline(
        BackboneTransformer(net, device="cpu", batch_size=4, cache=False),
        PrototypeClassifier(),
    )
    return pipe.fit(X, y), X, y


def test_pipeline_with_prototype_classifier():
    net = BackboneEnsemble(_trained_members()).eval()
    pipe, X, y = _pipeline(net)
    with torch.no_grad():
        expected = net(torch.from_numpy(X)).numpy()
    features = pipe[0].transform(X)
    assert pipe[0].n_features_out_ == 4 + 6
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    head = PrototypeClassifier().fit(features, y)
    assert_array_equal(pipe.predict(X), head.predict(features))
    # pickle keeps any module, the ensemble included
    again = pickle.loads(pickle.dumps(pipe))
    assert_array_equal(again[0].transform(X), features)


@needs_skops
def test_skops_round_trip_is_bit_exact(tmp_path):
    from skfewshot.persistence import dump, load

    pipe, X, _ = _pipeline(BackboneEnsemble(_trained_members(), combine="concat"))
    dump(pipe, tmp_path / "pipe.skops")
    loaded = load(tmp_path / "pipe.skops")
    net = loaded[0].module_
    assert type(net) is BackboneEnsemble and net is not pipe[0].module_
    assert _same_state(net, pipe[0].module_)
    assert_array_equal(loaded[0].transform(X), pipe[0].transform(X))
    assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))


@needs_skops
def test_skops_refuses_a_foreign_member_naming_it():
    import skops.io as sio

    pipe, _, _ = _pipeline(BackboneEnsemble([Conv4(hidden=4), torch.nn.Flatten()]))
    match = (
        r"BackboneTransformer.module.modules\[1\] cannot be stored as plain data "
        r"for skops.io: it is a torch.nn.modules.flatten.Flatten, not a "
        r"skfewshot.models architecture \(Conv4, ResNet12\) or a BackboneEnsemble "
        r"or WhitenedBackbone of them.*pickle or joblib"
    )
    with pytest.raises(TypeError, match=match):
        sio.dumps(pipe)


class _Scaled(torch.nn.Module):
    """The flattened input times a constant."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x.flatten(1) * self.factor


@pytest.mark.parametrize("factor", [1.0, 1e20, 1e-13, 1e-30])
def test_every_member_is_normalised_whatever_its_scale(factor):
    # (3, 4) at any float32 scale is (0.6, 0.8): F.normalize made 1e20 zeros
    # (its norm overflows) and left 1e-13 at half its length (eps=1e-12)
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    with torch.no_grad():
        out = BackboneEnsemble([_Scaled(factor), _Scaled(1.0)])(x).numpy()
    expected = [[0.6, 0.8, 0.6, 0.8], [0.0, 0.0, 0.0, 0.0]]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=0)


def test_float16_member_beyond_the_float16_range_is_normalised():
    # 640 entries of 3000: the norm 75,895 exceeds float16's largest, 65504
    half = torch.full((1, 640), 3000.0, dtype=torch.float16)
    out = BackboneEnsemble([torch.nn.Identity()])(half)
    assert out.dtype == torch.float16
    np.testing.assert_allclose(out.float().numpy(), 1 / np.sqrt(640), rtol=1e-3)


def test_an_all_zero_row_has_a_finite_gradient():
    # a ReLU backbone on a blank image: the row stays zero and trains on
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]], requires_grad=True)
    out = BackboneEnsemble([torch.nn.Identity()])(x)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert_array_equal(out[1].detach().numpy(), [0.0, 0.0])
