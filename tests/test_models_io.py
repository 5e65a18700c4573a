"""save_backbone / load_backbone: round trip, weights-only loading, errors."""

import os
import re
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
import torch

from skfewshot.models import (
    BackboneEnsemble,
    Conv4,
    ResNet12,
    load_backbone,
    save_backbone,
)

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml


def _same_state(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "make", [lambda: Conv4(in_channels=1, hidden=8), lambda: ResNet12(in_channels=1)]
)
def test_round_trip_gives_identical_outputs(make, tmp_path):
    torch.manual_seed(0)
    net = make().eval()
    path = tmp_path / "net.pt"
    save_backbone(net, path, input_shape=(1, 28, 28))
    loaded, meta = load_backbone(path)
    # the weights are bit for bit the saved ones; the outputs are compared with
    # a float32 tolerance (kernels may differ with memory layout)
    assert _same_state(loaded, net)
    assert all(p.requires_grad for p in loaded.parameters())
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=1e-5, atol=1e-6)
    assert meta["input_shape"] == (1, 28, 28)
    assert meta["trained_on"] is None
    assert not loaded.training
    # the file is plain tensors and values: torch's safe loader reads it
    assert torch.load(path, weights_only=True)["architecture"] == type(net).__name__


def test_save_rejects_foreign_modules(tmp_path):
    with pytest.raises(TypeError, match="got Linear; save module.state_dict"):
        save_backbone(torch.nn.Linear(2, 2), tmp_path / "x.pt")


@pytest.mark.parametrize(
    "module, input_shape, match",
    [
        (
            Conv4(in_channels=1, hidden=4),
            (3, 28, 28),
            "input_shape=(3, 28, 28) is not a shape this Conv4 takes: Conv4 takes "
            "images of 1 channel(s) (in_channels=1), got input_shape=(3, 28, 28).",
        ),
        (
            Conv4(in_channels=1, hidden=4),
            (1, 8, 8),
            "input_shape=(1, 8, 8) is not a shape this Conv4 takes: Conv4 halves "
            "the image 4 times, so it needs inputs of at least 16x16",
        ),
        (
            ResNet12(in_channels=3, channels=(4, 4, 4, 4)),
            (1, 32, 32),
            "is not a shape this ResNet12 takes: ResNet12 takes images of 3 ",
        ),
        (
            BackboneEnsemble([Conv4(hidden=4), Conv4(in_channels=3, hidden=4)]),
            (1, 28, 28),
            "is not a shape this BackboneEnsemble takes: modules[1] (Conv4) rejects",
        ),
    ],
)
def test_save_refuses_an_input_shape_the_module_does_not_take(
    module, input_shape, match, tmp_path
):
    # the file would tell tools (skfewshot ensemble, evaluate) to prepare
    # images the backbone refuses; it was saved without a word
    path = tmp_path / "net.pt"
    with pytest.raises(ValueError, match=re.escape(match)):
        save_backbone(module, path, input_shape=input_shape)
    assert not path.exists()
    save_backbone(module, path)  # no input_shape: nothing to check
    assert load_backbone(path)[1]["input_shape"] is None


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="is not a skfewshot backbone file"):
        load_backbone(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable skfewshot backbone file"):
        load_backbone(tmp_path / "junk.pt")


def test_load_a_directory_says_it_is_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"is a directory, not a backbone file"):
        load_backbone(tmp_path)


# -- trained_on ------------------------------------------------------------------


def test_trained_on_round_trips_as_plain_data(tmp_path):
    path = tmp_path / "net.pt"
    trained_on = {
        "dataset": "omniglot",
        "subset": "images_background_small1",
        "alphabets": ["Greek", "Latin"],
        # numpy values (a trainer's classes_) are stored as plain Python values
        "classes": np.arange(3),
        "n_samples": np.int64(60),
        "shape": (1, 28, 28),
        "extra": {"seed": 0, "lr": 0.05, "augmented": False, "note": None},
    }
    save_backbone(Conv4(hidden=4), path, trained_on=trained_on)
    _, meta = load_backbone(path)
    assert meta["trained_on"] == {
        "dataset": "omniglot",
        "subset": "images_background_small1",
        "alphabets": ["Greek", "Latin"],
        "classes": [0, 1, 2],
        "n_samples": 60,
        "shape": [1, 28, 28],
        "extra": {"seed": 0, "lr": 0.05, "augmented": False, "note": None},
    }
    assert type(meta["trained_on"]["classes"][0]) is int
    assert torch.load(path, weights_only=True)["trained_on"]["dataset"] == "omniglot"


@pytest.mark.parametrize(
    "trained_on, match",
    [
        ("digits", r"trained_on must be a dict or None, got str"),
        ({1: "a"}, r"trained_on\[1\]: keys must be str, got int"),
        ({"x": torch.zeros(1)}, r"trained_on\['x'\] must be plain data .* got Tensor"),
        ({"x": [1, {2}]}, r"trained_on\['x'\]\[1\] must be plain data .* got set"),
        ({"x": float("nan")}, r"trained_on\['x'\] must be a finite number, got nan"),
    ],
)
def test_trained_on_must_be_plain_data(trained_on, match, tmp_path):
    path = tmp_path / "net.pt"
    with pytest.raises(TypeError if "finite" not in match else ValueError, match=match):
        save_backbone(Conv4(hidden=4), path, trained_on=trained_on)
    assert not path.exists()


def test_files_without_trained_on_still_load(tmp_path):
    path = tmp_path / "old.pt"
    blob = _blob(Conv4(hidden=4))
    del blob["trained_on"]  # a file written before trained_on existed
    torch.save(blob, path)
    assert load_backbone(path)[1]["trained_on"] is None


def test_files_written_before_last_pool_load_with_the_pool(tmp_path):
    path = tmp_path / "old.pt"
    net = Conv4(hidden=4).eval()
    torch.save(_blob(net), path)  # a config without last_pool
    assert "last_pool" not in torch.load(path)["config"]
    loaded, meta = load_backbone(path)
    assert loaded.last_pool is True
    assert meta["config"] == {"in_channels": 1, "hidden": 4}  # as written
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_last_pool_round_trips(tmp_path):
    net = BackboneEnsemble([Conv4(hidden=4, last_pool=False), Conv4(hidden=4)])
    save_backbone(net.eval(), tmp_path / "e.pt", input_shape=(1, 28, 28))
    loaded, _ = load_backbone(tmp_path / "e.pt")
    assert [m.last_pool for m in loaded.members] == [False, True]
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert loaded(x).shape == (2, 4 * 9 + 4)
        assert torch.equal(loaded(x), net(x))


# -- atomic writes ---------------------------------------------------------------


def test_an_interrupted_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    torch.manual_seed(0)
    old = Conv4(hidden=4)
    path = tmp_path / "net.pt"
    save_backbone(old, path)

    def interrupted_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_backbone(Conv4(hidden=4), path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["net.pt"]  # no temporary file left
    assert _same_state(load_backbone(path)[0], old)


def test_a_reader_racing_a_writer_never_sees_a_broken_file(tmp_path):
    path = tmp_path / "net.pt"
    nets = [Conv4(hidden=16), Conv4(hidden=16)]
    save_backbone(nets[0], path)
    n_saves = 40
    errors = []

    def writer():
        for i in range(n_saves):
            save_backbone(nets[i % 2], path)

    thread = threading.Thread(target=writer)
    thread.start()
    n_loads = 0
    while thread.is_alive() or n_loads < 5:
        try:
            load_backbone(path)
        except (ValueError, OSError) as exc:  # pragma: no cover - the bug
            errors.append(exc)
        n_loads += 1
    thread.join()
    assert errors == []
    assert os.listdir(tmp_path) == ["net.pt"]


# -- malformed files ---------------------------------------------------------------


def _blob(net, **changes):
    """The dictionary save_backbone writes for ``net``, with ``changes``."""
    config = {"in_channels": net.in_channels}
    if isinstance(net, Conv4):
        config["hidden"] = net.hidden
    else:
        config.update(channels=list(net.channels), drop_rate=net.drop_rate)
    blob = {
        "format": "skfewshot.backbone",
        "version": 1,
        "architecture": type(net).__name__,
        "config": config,
        "input_shape": [1, 28, 28],
        "trained_on": None,
        "state_dict": dict(net.state_dict()),
    }
    blob.update(changes)
    return blob


def _conv4_state(**changes):
    state = dict(Conv4(hidden=4).state_dict())
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


_W0 = "encoder.0.0.weight"

MALFORMED = [
    ([1, 2], r"is not a skfewshot backbone file"),
    ({"format": "other"}, r"is not a skfewshot backbone file"),
    ({"version": 2}, r"version 2; this skfewshot reads version 1"),
    ({"version": "1"}, r"version '1'; this skfewshot reads version 1"),
    ({"version": None}, r"version None; this skfewshot reads version 1"),
    ({"architecture": "VGG"}, r"unknown architecture 'VGG' \(known: Conv4, ResNet12"),
    ({"architecture": 3}, r"unknown architecture 3"),
    ({"config": [4]}, r"'config' must be a dict with str keys, got list"),
    (
        {"config": {"in_channels": 1, "hidden": 4, "depth": 3}},
        r"config does not match Conv4\(in_channels, hidden, last_pool\): "
        "unexpected 'depth'",
    ),
    (
        {"config": {"in_channels": 1}},
        r"config does not match Conv4\(in_channels, hidden, last_pool\): "
        "missing 'hidden'",
    ),
    ({"config": {"in_channels": 1, "hidden": "4"}}, r"hidden must be an int >= 1"),
    ({"config": {"in_channels": 1, "hidden": 0}}, r"hidden must be an int >= 1"),
    ({"config": {"in_channels": 1, "hidden": True}}, r"hidden must be an int >= 1"),
    ({"config": {"in_channels": 1, "hidden": 2**62}}, r"invalid config"),
    (
        {"config": {"in_channels": 1, "hidden": 4, "last_pool": 1}},
        r"last_pool must be True or False, got 1",
    ),
    ({"input_shape": "28x28"}, r"input_shape must be None or 2 or 3 ints >= 1"),
    ({"input_shape": [1, -28, 28]}, r"input_shape must be None or 2 or 3 ints >= 1"),
    ({"trained_on": {"x": torch.zeros(1)}}, r"trained_on\['x'\] must be plain data"),
    ({"state_dict": [1]}, r"'state_dict' must be a dict with str keys, got list"),
    (
        {"state_dict": _conv4_state(**{_W0: None})},
        r"state_dict does not match Conv4: missing 'encoder.0.0.weight'",
    ),
    (
        {"state_dict": _conv4_state(extra=torch.zeros(1))},
        r"state_dict does not match Conv4: unexpected 'extra'",
    ),
    (
        {"state_dict": _conv4_state(**{_W0: [[0.0]]})},
        r"'encoder.0.0.weight' is a list, not a tensor",
    ),
    (
        {"state_dict": _conv4_state(**{_W0: torch.zeros(4, 1, 3, 2)})},
        r"'encoder.0.0.weight' has shape \(4, 1, 3, 2\); Conv4 needs \(4, 1, 3, 3\)",
    ),
    (
        {"state_dict": _conv4_state(**{_W0: torch.zeros(4, 1, 3, 3, dtype=int)})},
        r"'encoder.0.0.weight' has dtype torch.int64; Conv4 needs torch.float32",
    ),
    (
        {"state_dict": _conv4_state(**{_W0: torch.full((4, 1, 3, 3), np.nan)})},
        r"'encoder.0.0.weight' holds non-finite values",
    ),
    (
        # a tensor that claims more values than its storage holds
        {"state_dict": _conv4_state(**{_W0: torch.zeros(1).expand(4, 1, 3, 3)})},
        r"'encoder.0.0.weight' does not hold its 36 values",
    ),
]


@pytest.mark.parametrize("changes, match", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_files_are_a_value_error_naming_the_file(changes, match, tmp_path):
    path = tmp_path / "bad.pt"
    if isinstance(changes, dict):
        blob = _blob(Conv4(hidden=4))
        blob.update(changes)
    else:
        blob = changes
    torch.save(blob, path)
    with pytest.raises(ValueError, match=match) as info:
        load_backbone(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("key", ["format", "version", "architecture", "state_dict"])
def test_missing_or_unknown_keys(key, tmp_path):
    path = tmp_path / "bad.pt"
    blob = _blob(Conv4(hidden=4))
    del blob[key]
    torch.save(blob, path)
    match = {"format": "not a skfewshot backbone", "version": "version None"}.get(
        key, f"missing {key!r}"
    )
    with pytest.raises(ValueError, match=match):
        load_backbone(path)
    torch.save(_blob(Conv4(hidden=4), comment="hi"), path)
    with pytest.raises(ValueError, match="unexpected key 'comment'"):
        load_backbone(path)


def test_resnet12_config_is_checked(tmp_path):
    path = tmp_path / "bad.pt"
    net = ResNet12(1, (4, 4, 4, 4))
    config = {"in_channels": 1, "channels": [4, 4, 4], "drop_rate": 0.0}
    torch.save(_blob(net, config=config), path)
    with pytest.raises(ValueError, match=r"4 ints, got \(4, 4, 4\)"):
        load_backbone(path)
    config = {"in_channels": 1, "channels": [4, 4, 4, 4], "drop_rate": "0.5"}
    torch.save(_blob(net, config=config), path)
    with pytest.raises(ValueError, match=r"invalid config .*drop_rate"):
        load_backbone(path)


def test_truncated_compressed_and_legacy_files(tmp_path):
    good = tmp_path / "good.pt"
    save_backbone(Conv4(hidden=4), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.pt' is not a readable"):
        load_backbone(truncated)
    # torch.save never compresses; a deflated member could inflate to anything
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(deflated, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match="compressed member"):
        load_backbone(deflated)
    legacy = tmp_path / "legacy.pt"
    torch.save(_blob(Conv4(hidden=4)), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="legacy.pt' is not a readable .* zip"):
        load_backbone(legacy)


_BIG_WIDTH = """
import resource, sys, torch
from skfewshot.models import load_backbone
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_backbone(sys.argv[1])
except ValueError as exc:
    print("rejected:", exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("grew_kib:", after - before)
"""


def test_a_crafted_width_is_rejected_before_any_allocation(tmp_path):
    # 10 KB of hidden=4 weights that declare a hidden width of 3000: building
    # the declared model would take ~1 GB
    path = tmp_path / "wide.pt"
    torch.save(_blob(Conv4(hidden=4), config={"in_channels": 1, "hidden": 3000}), path)
    assert path.stat().st_size < 64_000
    out = subprocess.run(
        [sys.executable, "-c", _BIG_WIDTH, str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "rejected:" in out and "has shape (4, 1, 3, 3); Conv4 needs (3000" in out
    grew_kib = int(out.rsplit("grew_kib:", 1)[1])
    assert grew_kib < 64 * 1024  # the declared model alone is ~1 GB


# -- a save loads back identical, or is refused before anything is written ---------


def _weight_norm(net):
    torch.nn.utils.parametrizations.weight_norm(net.encoder[0][0])


def _bn_eps(net):
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 0.5


def _extra_head(net):
    net.head = torch.nn.Linear(8, 5)


def _extra_attribute(net):
    net.scale = 2.0


def _nan_weight(net):
    with torch.no_grad():
        net.encoder[0][0].weight[0, 0, 0, 0] = float("nan")


@pytest.mark.parametrize(
    "edit, difference",
    [
        (_weight_norm, "submodule 'encoder.0.0' is a ParametrizedConv2d, not a Conv2d"),
        (_bn_eps, "submodule 'encoder.0.1' has attribute 'eps' = 0.5, not 1e-05"),
        (_extra_head, r"submodule 'head' \(Linear\) is not in it"),
        (_extra_attribute, "the module itself has an added attribute 'scale'"),
        (_nan_weight, "'encoder.0.0.weight' holds non-finite values"),
    ],
    ids=["weight_norm", "bn_eps", "extra_head", "extra_attribute", "nan"],
)
def test_a_module_that_would_not_load_back_identical_is_refused(
    edit, difference, tmp_path
):
    path = tmp_path / "net.pt"
    torch.manual_seed(0)
    good = Conv4(hidden=8)
    save_backbone(good, path)
    before = path.read_bytes()
    net = Conv4(hidden=8)
    edit(net)
    with pytest.raises(
        TypeError, match=f"save_backbone cannot save this Conv4: .*{difference}"
    ):
        save_backbone(net, path)
    # refused before anything is written: the good file is untouched
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["net.pt"]


def test_save_and_skops_refuse_with_the_same_check(tmp_path):
    from skfewshot._persistence import describe_module

    net = Conv4(hidden=8)
    _bn_eps(net)
    reason = "submodule 'encoder.0.1' has attribute 'eps' = 0.5, not 1e-05"
    with pytest.raises(TypeError, match=reason):
        describe_module(net, "module")
    with pytest.raises(TypeError, match=reason):
        save_backbone(net, tmp_path / "net.pt")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_weights_load_back_in_their_saved_dtype(dtype, tmp_path):
    # as on the skops path: a float64 backbone loads as float64, bit for bit
    torch.manual_seed(0)
    net = Conv4(hidden=8).to(dtype).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    save_backbone(net, tmp_path / "net.pt")
    loaded, _ = load_backbone(tmp_path / "net.pt")
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    assert _same_state(loaded, net)
    x = torch.rand(2, 1, 28, 28, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_a_channels_last_module_keeps_its_layout(tmp_path):
    torch.manual_seed(0)
    net = Conv4(hidden=8).to(memory_format=torch.channels_last)
    save_backbone(net, tmp_path / "net.pt")
    loaded, _ = load_backbone(tmp_path / "net.pt")
    for key, value in net.state_dict().items():
        assert loaded.state_dict()[key].stride() == value.stride(), key
    assert _same_state(loaded, net)


def test_loading_bytes_equals_loading_the_file(tmp_path):
    from skfewshot.models._io import _load_backbone_bytes

    torch.manual_seed(0)
    path = tmp_path / "net.pt"
    save_backbone(Conv4(hidden=4), path, input_shape=(1, 28, 28))
    from_file, meta = load_backbone(path)
    from_bytes, meta_bytes = _load_backbone_bytes(path.read_bytes(), path)
    assert meta_bytes == meta and _same_state(from_bytes, from_file)
    # the same checks, naming the file
    with pytest.raises(ValueError, match=r"net.pt' is not a readable skfewshot"):
        _load_backbone_bytes(path.read_bytes()[:200], path)


def test_a_global_forward_hook_does_not_stop_a_save(tmp_path):
    # a profiler's hook on every module's forward is no state of the backbone
    net = Conv4(hidden=4).eval()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        save_backbone(net, tmp_path / "net.pt")
    finally:
        handle.remove()
    loaded, _ = load_backbone(tmp_path / "net.pt")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_an_ensemble_of_members_sharing_their_channels_tuple_saves(tmp_path):
    # ResNet12s built with one channels tuple (the default, or one literal)
    # share it; members rebuilt from the file do not. The round-trip check
    # told them apart, so save_backbone refused every such ensemble, the one
    # pretrain_one_shot_ensemble(make_module=partial(ResNet12, ...)) returns
    from skfewshot._persistence import describe_module

    torch.manual_seed(0)
    members = [ResNet12(in_channels=1, channels=(2, 3, 4, 5)) for _ in range(2)]
    assert members[0].channels is members[1].channels
    ensemble = BackboneEnsemble(members).eval()
    describe_module(ensemble, "module")  # the skops path's check passes too
    save_backbone(ensemble, tmp_path / "ens.pt", input_shape=(1, 28, 28))
    loaded, _ = load_backbone(tmp_path / "ens.pt")
    assert loaded.members[0].channels is not loaded.members[1].channels
    assert _same_state(loaded, ensemble)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ensemble(x), rtol=1e-5, atol=1e-6)


def test_tags_stored_on_weights_do_not_stop_a_save(tmp_path):
    # an optimizer's no_weight_decay tag, or torch.compile's marker after one
    # compiled call: the file holds weights, not their tags, and the feature
    # cache's key (which reads them) made the round-trip check refuse the save
    net = Conv4(hidden=4).eval()
    net.encoder[0][0].weight.no_weight_decay = True
    save_backbone(net, tmp_path / "net.pt")
    loaded, _ = load_backbone(tmp_path / "net.pt")
    assert _same_state(loaded, net)
