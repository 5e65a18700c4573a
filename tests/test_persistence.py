"""Saving fitted pipelines: pickle, joblib and skops.io round trips, bit for bit.

skops tests skip (with the reason) when skops is not installed.
"""

import importlib
import json
import os
import pickle
import subprocess
import sys
import zipfile

import joblib
import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.base import BaseEstimator
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline

from skfewshot import (
    BackboneTransformer,
    FineTunedCosineClassifier,
    PrototypeClassifier,
)
from skfewshot._persistence import TRUSTED_TYPES, restored_state
from skfewshot.datasets import ImageFileReader, InkNormalizer
from skfewshot.models import Conv4, ResNet12
from skfewshot.preprocessing import WithinClassWhitening
from skfewshot.text import SentenceEncoder

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml

try:
    import skops.io  # noqa: F401

    HAS_SKOPS = True
except ImportError:
    HAS_SKOPS = False

SKOPS_MISSING = "skops is not installed (pip install skops, or 'skfewshot[persist]')"
needs_skops = pytest.mark.skipif(not HAS_SKOPS, reason=SKOPS_MISSING)

BT = "skfewshot.backbone.BackboneTransformer"
PROTO = "skfewshot.prototype.PrototypeClassifier"
FINETUNED = "skfewshot.finetune.FineTunedCosineClassifier"


@pytest.fixture(autouse=True)
def _empty_feature_cache():
    BackboneTransformer.clear_cache()
    yield
    BackboneTransformer.clear_cache()


def _data(n_per_class=3, n_classes=3, size=16, channels=1):
    rng = np.random.RandomState(0)
    X = rng.rand(n_per_class * n_classes, channels, size, size).astype(np.float32)
    return X, np.repeat(np.arange(n_classes), n_per_class)


def _conv4(**kwargs):
    torch.manual_seed(0)
    return Conv4(hidden=4, **kwargs)


def _resnet12():
    torch.manual_seed(0)
    return ResNet12(in_channels=1, channels=(2, 3, 4, 5))


HEADS = {
    "prototype": lambda: PrototypeClassifier(),
    "prototype-transductive": lambda: PrototypeClassifier(transductive=True),
    "finetuned": lambda: FineTunedCosineClassifier(max_iter=5, device="cpu"),
    "finetuned-transductive": lambda: FineTunedCosineClassifier(
        max_iter=5, transductive=True, entropy_weight=0.1, device="cpu"
    ),
}


def _pickle(obj, tmp_path):
    return pickle.loads(pickle.dumps(obj))


def _joblib(obj, tmp_path):
    joblib.dump(obj, tmp_path / "model.joblib")
    return joblib.load(tmp_path / "model.joblib")


def _skops(obj, tmp_path):
    from skfewshot.persistence import dump, load

    dump(obj, tmp_path / "model.skops")
    return load(tmp_path / "model.skops")


FORMATS = [
    pytest.param(_pickle, id="pickle"),
    pytest.param(_joblib, id="joblib"),
    pytest.param(_skops, id="skops", marks=needs_skops),
]


def _assert_same_value(a, b, where):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, torch.nn.Module):
        _assert_same_module(a, b)
    elif isinstance(a, BaseEstimator):  # a FrozenEstimator's estimator
        _assert_same_estimator(a, b)
    else:
        assert type(a) is type(b) and a == b, where


def _assert_same_module(a, b):
    """Same class, configuration, weights (bit for bit), flags; b lives on the CPU."""
    assert type(a) is type(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k].cpu(), sb[k]), k
        assert sb[k].device.type == "cpu"
    assert [m.training for m in a.modules()] == [m.training for m in b.modules()]
    assert [p.requires_grad for p in a.parameters()] == [
        p.requires_grad for p in b.parameters()
    ]


def _assert_same_estimator(a, b):
    """Same class, parameters and fitted attributes, bit for bit."""
    assert type(a) is type(b)
    for name, value in a.get_params(deep=False).items():
        _assert_same_value(value, b.get_params(deep=False)[name], name)
    fitted = {k for k in vars(a) if k.endswith("_") and not k.startswith("_")}
    assert fitted == {k for k in vars(b) if k.endswith("_") and not k.startswith("_")}
    for name in fitted:
        _assert_same_value(getattr(a, name), getattr(b, name), name)
    if isinstance(a, BackboneTransformer) and hasattr(a, "module_"):
        assert b.module_ is b.module  # one module, as fit leaves it


def _assert_same_pipeline(pipe, loaded, X):
    """Every step equal, and the outputs bit for bit equal to the original's."""
    expected = {
        "predict": pipe.predict(X),
        "predict_proba": pipe.predict_proba(X),
        "transform": pipe[:-1].transform(X),
    }
    for a, b in zip(pipe, loaded):
        _assert_same_estimator(a, b)
    BackboneTransformer.clear_cache()  # the loaded backbone computes afresh
    assert_array_equal(loaded[:-1].transform(X), expected["transform"])
    assert_array_equal(loaded.predict_proba(X), expected["predict_proba"])
    assert_array_equal(loaded.predict(X), expected["predict"])


# -- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("save_load", FORMATS)
@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pipeline_round_trip_is_bit_exact(save_load, head, tmp_path):
    X, y = _data()
    pipe = make_pipeline(BackboneTransformer(_conv4(), device="cpu"), HEADS[head]())
    pipe.fit(X, y)
    _assert_same_pipeline(pipe, save_load(pipe, tmp_path), X)


@pytest.mark.parametrize("save_load", FORMATS)
def test_resnet12_round_trip_is_bit_exact(save_load, tmp_path):
    X, y = _data()
    pipe = make_pipeline(
        BackboneTransformer(_resnet12(), device="cpu"), PrototypeClassifier()
    ).fit(X, y)
    _assert_same_pipeline(pipe, save_load(pipe, tmp_path), X)


@pytest.mark.parametrize("save_load", FORMATS)
def test_pipeline_from_image_files_round_trips(save_load, tmp_path):
    from PIL import Image

    X, y = _data(size=16)
    files = []
    for i, image in enumerate(X):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray((image[0] * 255).astype(np.uint8)).save(files[-1])
    pipe = make_pipeline(
        ImageFileReader(image_size=16),
        BackboneTransformer(_conv4(), device="cpu"),
        PrototypeClassifier(),
    ).fit(files, y)
    _assert_same_pipeline(pipe, save_load(pipe, tmp_path), files)


@pytest.mark.parametrize("save_load", FORMATS)
def test_pipeline_with_ink_normalisation_round_trips(save_load, tmp_path):
    X, y = _data(size=32)
    pipe = make_pipeline(
        InkNormalizer(radius=0.15, image_size=16),
        BackboneTransformer(_conv4(), device="cpu"),
        PrototypeClassifier(),
    ).fit(X, y)
    _assert_same_pipeline(pipe, save_load(pipe, tmp_path), X)


@pytest.mark.parametrize("save_load", FORMATS)
def test_pipeline_with_frozen_whitening_round_trips(save_load, tmp_path):
    X, y = _data(n_per_class=4)
    embed = BackboneTransformer(_conv4(), device="cpu")
    whiten = WithinClassWhitening(shrinkage=1.0).fit(embed.fit_transform(X), y)
    pipe = make_pipeline(embed, FrozenEstimator(whiten), PrototypeClassifier())
    _assert_same_pipeline(pipe.fit(X, y), save_load(pipe, tmp_path), X)


@pytest.mark.parametrize("save_load", FORMATS)
def test_dtypes_flags_and_frozen_weights_survive(save_load, tmp_path):
    X, y = _data()
    net = _conv4().double()
    net.encoder[1].train(False)  # a mix of train and eval flags
    net.encoder[0][0].weight.requires_grad_(False)
    pipe = make_pipeline(
        BackboneTransformer(net, device="cpu", dtype="float64"), PrototypeClassifier()
    ).fit(X, y)
    loaded = save_load(pipe, tmp_path)
    assert next(loaded[0].module_.parameters()).dtype == torch.float64
    _assert_same_pipeline(pipe, loaded, X)


@needs_skops
def test_bfloat16_weights_round_trip_through_skops(tmp_path):
    X, y = _data()
    net = _conv4().to(torch.bfloat16)
    bt = BackboneTransformer(net, device="cpu", dtype="bfloat16").fit(X)
    loaded = _skops(bt, tmp_path)
    assert next(loaded.module_.parameters()).dtype == torch.bfloat16
    _assert_same_module(net, loaded.module_)
    assert_array_equal(loaded.transform(X), bt.transform(X))


@needs_skops
def test_unfitted_backbone_round_trips_through_skops(tmp_path):
    bt = BackboneTransformer(_conv4(), device="cpu", batch_size=7)
    loaded = _skops(bt, tmp_path)
    assert not hasattr(loaded, "module_")
    _assert_same_estimator(bt, loaded)


class Letters:
    """A toy sentence encoder: counts of five letters."""

    def encode(self, texts, batch_size=32, **kwargs):
        return np.array([[t.count(c) for c in "abcde"] for t in texts], float)


@pytest.mark.parametrize("save_load", FORMATS[:2])
def test_sentence_encoder_with_a_toy_encoder_round_trips(save_load, tmp_path):
    texts, y = ["aaa", "aab", "eee", "dee"], [0, 0, 1, 1]
    pipe = make_pipeline(SentenceEncoder(Letters()), PrototypeClassifier())
    pipe.fit(texts, y)
    loaded = save_load(pipe, tmp_path)
    assert_array_equal(
        loaded.predict_proba(["ab", "ed"]), pipe.predict_proba(["ab", "ed"])
    )


@needs_skops
def test_sentence_encoder_toy_class_must_be_trusted_by_name(tmp_path):
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    from skfewshot.persistence import dump, load

    pipe = make_pipeline(SentenceEncoder(Letters()), PrototypeClassifier())
    pipe.fit(["aaa", "aab", "eee", "dee"], [0, 0, 1, 1])
    path = tmp_path / "text.skops"
    dump(pipe, path)
    assert sio.get_untrusted_types(file=path) == [
        PROTO,
        "skfewshot.text.SentenceEncoder",
        f"{__name__}.Letters",
    ]
    with pytest.raises(UntrustedTypesFoundException, match=r"text.skops.*Letters"):
        load(path)
    loaded = load(path, trusted=[Letters])
    assert_array_equal(loaded.predict_proba(["ab"]), pipe.predict_proba(["ab"]))


# -- what skops stores, and what it must trust ------------------------------------


@needs_skops
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "head, name", [(PrototypeClassifier, PROTO), (FineTunedCosineClassifier, FINETUNED)]
)
def test_untrusted_types_are_only_the_library_estimators(head, name):
    import skops.io as sio

    X, y = _data()
    pipe = make_pipeline(BackboneTransformer(_conv4(), device="cpu"), head()).fit(X, y)
    data = sio.dumps(pipe)
    assert sio.get_untrusted_types(data=data) == [BT, name]
    # a torch.device parameter is the one torch type that appears
    pipe.set_params(backbonetransformer__device=torch.device("cpu"))
    assert sio.get_untrusted_types(data=sio.dumps(pipe)) == [BT, name, "torch.device"]
    # skops alone loads it when told exactly these types
    loaded = sio.loads(data, trusted=[BT, name])
    assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))


def test_trusted_types_name_the_library_classes():
    for path in TRUSTED_TYPES:
        module, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert isinstance(cls, type) and f"{cls.__module__}.{cls.__qualname__}" == path


@needs_skops
def test_skops_file_holds_the_backbone_as_plain_data(tmp_path):
    from skfewshot.persistence import dump

    X, y = _data()
    bt = BackboneTransformer(_conv4(), device="cpu").fit(X)
    dump(bt, tmp_path / "bt.skops")
    with zipfile.ZipFile(tmp_path / "bt.skops") as archive:
        schema = json.loads(archive.read("schema.json"))
    nodes = []
    _find_node(schema, lambda n: "__loader__" in n and nodes.append(n))
    modules = {n["__module__"] for n in nodes}
    assert modules == {"builtins", "numpy", "skfewshot.backbone"}  # no torch object
    assert {n["__loader__"] for n in nodes if n["__module__"] != "builtins"} == {
        "ObjectNode",  # the BackboneTransformer
        "NdArrayNode",  # the weights
    }
    # module and module_ share one description: each weight is stored once
    n_weights = sum(n["__loader__"] == "NdArrayNode" for n in nodes)
    assert n_weights == len(bt.module_.state_dict())


# -- what cannot be stored securely is refused, clearly -----------------------------


@needs_skops
def test_foreign_module_is_refused_naming_its_class(tmp_path):
    import skops.io as sio

    from skfewshot.persistence import dump

    X, y = _data()
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 4))
    pipe = make_pipeline(BackboneTransformer(net, device="cpu"), PrototypeClassifier())
    pipe.fit(X, y)
    message = (
        r"BackboneTransformer.module cannot be stored as plain data for skops.io: it "
        r"is a torch.nn.modules.container.Sequential, not a skfewshot.models "
        r"architecture \(Conv4, ResNet12\).*pickle or joblib"
    )
    with pytest.raises(TypeError, match=message):
        sio.dumps(pipe)
    target = tmp_path / "pipe.skops"
    target.write_bytes(b"previous version")
    with pytest.raises(TypeError, match=message):
        dump(pipe, target)
    # the failed write left the old file and no temporary file
    assert target.read_bytes() == b"previous version"
    assert os.listdir(tmp_path) == ["pipe.skops"]
    # pickle stores any module
    _assert_same_pipeline(pipe, _pickle(pipe, tmp_path), X)


def _with_attribute(net):
    net.scale = 2.0
    return net


def _with_hook(net):
    net.register_forward_hook(lambda m, i, o: o * 2)
    return net


def _with_nan(net):
    with torch.no_grad():
        net.encoder[0][0].weight[0, 0, 0, 0] = float("nan")
    return net


def _channels_last(net):
    return net.to(memory_format=torch.channels_last)


@needs_skops
@pytest.mark.parametrize(
    "edit, reason",
    [
        (_with_attribute, "differs from a Conv4 built from its configuration"),
        (_with_hook, "Conv4 has forward hooks"),
        (_with_nan, "encoder.0.0.weight' holds non-finite values"),
        (
            _channels_last,
            r"submodule 'encoder.1.0' has parameter 'weight' = a float32 tensor of "
            r"shape \(4, 4, 3, 3\) and strides \(36, 1, 12, 4\), not .* strides "
            r"\(36, 9, 3, 1\)",
        ),
    ],
    ids=["attribute", "hook", "nan", "channels_last"],
)
def test_library_module_with_extra_state_is_refused(edit, reason):
    import skops.io as sio

    bt = BackboneTransformer(edit(_conv4()), device="cpu", cache=False)
    with pytest.raises(
        TypeError, match=f"BackboneTransformer.module cannot .*{reason}"
    ):
        sio.dumps(bt)


# -- after a load: the feature cache, the device -------------------------------------


@pytest.mark.parametrize("save_load", FORMATS)
def test_loaded_copy_is_independent_and_never_served_stale_features(
    save_load, tmp_path
):
    X, _ = _data()
    bt = BackboneTransformer(_conv4(), device="cpu").fit(X)
    original = bt.transform(X)
    loaded = save_load(bt, tmp_path)
    assert_array_equal(loaded.transform(X), original)  # the cached rows, same state
    with torch.no_grad():
        loaded.module_.encoder[0][0].bias += 1.0
        expected = loaded.module_.eval()(torch.from_numpy(X)).numpy()
    changed = loaded.transform(X)
    assert not np.array_equal(changed, original)
    assert_array_equal(changed, expected.reshape(len(X), -1))
    assert_array_equal(bt.transform(X), original)  # the original is untouched


@pytest.mark.parametrize("save_load", FORMATS)
def test_gpu_device_parameters_load_and_predict_on_cpu(save_load, tmp_path):
    # What a pipeline fitted on a GPU holds besides its weights: its device
    # parameters. (The weights reach the file as host copies: skops stores
    # numpy arrays, pickle a CPU copy; see the CUDA tests below.)
    X, y = _data()
    pipe = make_pipeline(
        BackboneTransformer(_conv4(), device="auto"),
        FineTunedCosineClassifier(max_iter=3, device="auto"),
    )
    with pytest.warns(UserWarning, match="max_iter|L-BFGS"):
        pipe.fit(X, y)
    expected = pipe.predict_proba(X)
    pipe.set_params(backbonetransformer__device=torch.device("cuda", 0))
    loaded = save_load(pipe, tmp_path)
    assert loaded[0].device == torch.device("cuda", 0)
    assert next(loaded[0].module_.parameters()).device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda:0' was requested but CUDA"):
            loaded.predict_proba(X)
    loaded.set_params(backbonetransformer__device="auto")
    assert_array_equal(loaded.predict_proba(X), expected)


_LOAD_SCRIPT = """
import sys
import numpy as np, torch
assert not torch.cuda.is_available()
folder, how = sys.argv[1], sys.argv[2]
if how == "skops":
    from skfewshot.persistence import load
    pipe = load(folder + "/pipe.skops")
else:
    import joblib
    pipe = joblib.load(folder + "/pipe.joblib")
pipe.set_params(backbonetransformer__device="auto")
np.save(folder + "/out.npy", pipe.predict_proba(np.load(folder + "/X.npy")))
"""


def _predict_in_a_cpu_only_process(tmp_path, how):
    np.save(tmp_path / "X.npy", _data()[0])
    (tmp_path / "load.py").write_text(_LOAD_SCRIPT)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(
        [sys.executable, str(tmp_path / "load.py"), str(tmp_path), how],
        check=True,
        env=env,
    )
    return np.load(tmp_path / "out.npy")


@needs_skops
def test_skops_file_predicts_in_a_fresh_cpu_only_process(tmp_path):
    from skfewshot.persistence import dump

    X, y = _data()
    pipe = make_pipeline(
        BackboneTransformer(_conv4(), device="cpu"), PrototypeClassifier()
    ).fit(X, y)
    pipe.set_params(backbonetransformer__device="cuda")  # as a GPU fit leaves it
    dump(pipe, tmp_path / "pipe.skops")
    pipe.set_params(backbonetransformer__device="cpu")
    # a new process: no feature cache, the classes imported afresh
    assert_array_equal(
        _predict_in_a_cpu_only_process(tmp_path, "skops"), pipe.predict_proba(X)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("how", [pytest.param("skops", marks=needs_skops), "joblib"])
def test_pipeline_fitted_on_a_gpu_predicts_in_a_cpu_only_process(how, tmp_path):
    from skfewshot.persistence import dump

    X, y = _data()
    # cuDNN convolutions round float32 inputs to TF32 (10-bit mantissa) by
    # default: features 1e-4 to 1e-3 off the CPU's. Full float32 here, so the
    # CPU process may differ only by the order of the additions.
    full_float32 = torch.backends.cudnn.flags(
        enabled=None, benchmark=None, deterministic=None, allow_tf32=False
    )
    with full_float32:
        pipe = make_pipeline(
            BackboneTransformer(_conv4(), device="cuda"), PrototypeClassifier()
        ).fit(X, y)
        assert next(pipe[0].module_.parameters()).device.type == "cuda"
        expected = pipe.predict_proba(X)
    if how == "skops":
        dump(pipe, tmp_path / "pipe.skops")
    else:
        joblib.dump(pipe, tmp_path / "pipe.joblib")
    assert next(pipe[0].module_.parameters()).device.type == "cuda"  # left alone
    out = _predict_in_a_cpu_only_process(tmp_path, how)
    # CPU and GPU kernels round differently: equal up to float32 noise
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


# -- damaged, crafted and missing files -------------------------------------------


@pytest.fixture
def skops_file(tmp_path):
    if not HAS_SKOPS:
        pytest.skip(SKOPS_MISSING)
    from skfewshot.persistence import dump

    X, y = _data()
    pipe = make_pipeline(
        BackboneTransformer(_conv4(), device="cpu"), PrototypeClassifier()
    ).fit(X, y)
    dump(pipe, tmp_path / "pipe.skops")
    return tmp_path / "pipe.skops"


def _find_node(tree, match):
    """The first dict of the JSON ``tree`` (depth first) for which ``match`` holds."""
    if isinstance(tree, dict):
        if match(tree):
            return tree
        children = tree.values()
    else:
        children = tree if isinstance(tree, list) else ()
    for child in children:
        found = _find_node(child, match)
        if found is not None:
            return found
    return None


def _edit_backbone_description(path, keys, content):
    """Rewrite the JSON node at ``keys`` of the stored backbone description."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(members["schema.json"])
    node = _find_node(schema, lambda n: "architecture" in n.get("content", ()))
    for key in keys:
        node = node["content"][key]
    node["content"] = content
    node["__id__"] = 1  # a fresh id: no other node is read in its place
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_truncated_file_is_named(skops_file):
    from skfewshot.persistence import load

    data = skops_file.read_bytes()
    skops_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=r"pipe.skops' is not a readable skops file .*BadZipFile"
    ):
        load(skops_file)


def test_corrupted_member_is_named(skops_file):
    from skfewshot.persistence import load

    data = bytearray(skops_file.read_bytes())
    i = data.index(b"\x93NUMPY") + 200  # inside the first weight's bytes
    data[i] ^= 0xFF
    skops_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"pipe.skops' is not a readable .*CRC"):
        load(skops_file)


@needs_skops
def test_other_file_is_named(tmp_path):
    from skfewshot.persistence import load

    (tmp_path / "junk.skops").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk.skops' is not a readable skops"):
        load(tmp_path / "junk.skops")
    with pytest.raises(FileNotFoundError, match=r"missing.skops' does not exist"):
        load(tmp_path / "missing.skops")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load(tmp_path)


@pytest.mark.parametrize(
    "keys, content, problem",
    [
        (
            ("config", "hidden"),
            "8",
            r"state_dict entry 'encoder.0.0.weight' has shape \(4, 1, 3, 3\); "
            r"Conv4 needs \(8, 1, 3, 3\)",
        ),
        (("architecture",), '"Evil"', r"unknown architecture 'Evil'"),
    ],
    ids=["config", "architecture"],
)
def test_crafted_backbone_description_is_rejected(skops_file, keys, content, problem):
    from skfewshot.persistence import load

    _edit_backbone_description(skops_file, keys, content)
    with pytest.raises(
        ValueError,
        match=r"pipe.skops' is not a readable skops file .*ValueError: "
        rf"'BackboneTransformer.module': {problem}",
    ):
        load(skops_file)


@needs_skops
def test_untrusted_type_is_named_with_the_file(tmp_path):
    from skops.io.exceptions import UntrustedTypesFoundException

    from skfewshot.persistence import dump, load

    X, _ = _data()
    bt = BackboneTransformer(_conv4(), device="cpu", preprocess=np.asarray).fit(list(X))
    dump(bt, tmp_path / "bt.skops")
    with pytest.raises(
        UntrustedTypesFoundException, match=r"bt.skops'.*numpy.asarray.*trusted=\["
    ):
        load(tmp_path / "bt.skops")
    loaded = load(tmp_path / "bt.skops", trusted=["numpy.asarray"])
    assert_array_equal(loaded.transform(list(X)), bt.transform(list(X)))
    # a lone name was split into letters (the type the user named stayed
    # untrusted), and True failed with "'bool' object is not iterable"
    for trusted in ("numpy.asarray", True, np.asarray):
        with pytest.raises(TypeError, match="trusted must be a list of the types"):
            load(tmp_path / "bt.skops", trusted=trusted)
    assert load(tmp_path / "bt.skops", trusted=("numpy.asarray",)) is not None


def test_missing_skops_is_a_clear_import_error(monkeypatch, tmp_path):
    from skfewshot import persistence

    monkeypatch.setitem(sys.modules, "skops", None)
    monkeypatch.setitem(sys.modules, "skops.io", None)
    with pytest.raises(ImportError, match=r"needs skops; pip install skops"):
        persistence.dump(PrototypeClassifier(), tmp_path / "x.skops")
    with pytest.raises(ImportError, match=r"needs skops"):
        persistence.load(tmp_path / "x.skops")


def test_module_reference_must_name_an_earlier_key():
    bad = {"format": "skfewshot.module", "version": 1, "same_as": "nowhere"}
    with pytest.raises(ValueError, match="BackboneTransformer.module_: a reference"):
        restored_state({"module_": bad}, ("module", "module_"), "BackboneTransformer")


def test_restored_state_passes_modules_through():
    net = _conv4()
    state = restored_state({"module": net, "module_": net}, ("module", "module_"), "B")
    assert state["module"] is net and state["module_"] is net
