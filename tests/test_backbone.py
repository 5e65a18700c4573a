"""Tests for skfewshot.backbone.BackboneTransformer."""

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _memory_testing import traced
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skfewshot import backbone as backbone_mod
from skfewshot._feature_cache import FEATURE_CACHE
from skfewshot.backbone import BackboneTransformer


class RowStats(torch.nn.Module):
    """Parameter-free backbone mapping rows of any width to 4 features."""

    def forward(self, x):
        x = x.reshape(len(x), -1)
        return torch.stack([x.mean(1), x.amax(1), x.amin(1), x.tanh().sum(1)], 1)


class Counting(torch.nn.Module):
    """Linear backbone that counts the rows it sees (class-level, shared by copies)."""

    rows = 0

    def __init__(self, d_in=6, d_out=3):
        super().__init__()
        self.linear = torch.nn.Linear(d_in, d_out)

    def forward(self, x):
        type(self).rows += len(x)
        return self.linear(x)


class Probe(torch.nn.Module):
    """Records the grad / inference mode it ran under."""

    seen = []

    def forward(self, x):
        type(self).seen.append(
            (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        )
        return x * 2


# Float32 results of matmuls differ in the last bits across CPUs, BLAS builds,
# thread counts and batch sizes: compare them with these, never atol=0.
RTOL, ATOL = 1e-5, 1e-6


def text_to_array(s):
    """Per-sample preprocess: a string -> (length, number of 'a')."""
    return np.array([len(s), s.count("a")], dtype=np.float32)


def seeded(module_fn, seed=0):
    torch.manual_seed(seed)
    return module_fn()


@pytest.fixture(autouse=True)
def empty_cache():
    BackboneTransformer.clear_cache()
    Counting.rows = 0
    yield
    BackboneTransformer.clear_cache()


@pytest.fixture
def rng():
    return np.random.RandomState(0)


@parametrize_with_checks([BackboneTransformer(RowStats(), device="cpu", batch_size=7)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_declares_itself_frozen():
    # evaluate_episodes reads this to transform a whole pool once
    assert BackboneTransformer.frozen_features is True


# -- shapes and values ----------------------------------------------------------


@pytest.mark.parametrize(
    "shape, make",
    [
        (
            (5, 3, 8, 8),
            lambda: torch.nn.Sequential(
                torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten()
            ),
        ),
        (
            (5, 8, 8),
            lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 7)),
        ),
        ((5, 6), lambda: torch.nn.Linear(6, 7)),
    ],
)
def test_transform_equals_direct_forward(shape, make, rng):
    net = seeded(make)
    X = rng.normal(size=shape)
    bt = BackboneTransformer(net, device="cpu", batch_size=2)
    Xt = bt.fit_transform(X)
    with torch.no_grad():
        expected = net(torch.as_tensor(X, dtype=torch.float32)).reshape(shape[0], -1)
    assert Xt.dtype == np.float32
    assert Xt.shape == (shape[0], expected.shape[1])
    assert bt.n_features_out_ == expected.shape[1]
    assert bt.input_shape_ == shape[1:]
    assert hasattr(bt, "n_features_in_") == (len(shape) == 2)
    assert_allclose(Xt, expected.numpy(), rtol=RTOL, atol=ATOL)


def test_tensor_input_matches_numpy(rng):
    net = seeded(lambda: torch.nn.Linear(6, 3))
    X = rng.normal(size=(9, 6)).astype(np.float32)
    bt = BackboneTransformer(net, device="cpu", cache=False).fit(X)
    from_tensor = bt.transform(torch.from_numpy(X).requires_grad_())
    assert_allclose(from_tensor, bt.transform(X), rtol=RTOL, atol=ATOL)


def test_batching_does_not_change_result(rng):
    net = seeded(lambda: torch.nn.Linear(6, 3))
    X = rng.normal(size=(23, 6))
    small = BackboneTransformer(net, device="cpu", batch_size=4, cache=False)
    big = BackboneTransformer(net, device="cpu", batch_size=100, cache=False)
    # A BLAS may sum in another order for another batch size (MKL does).
    assert_allclose(small.fit_transform(X), big.fit_transform(X), rtol=RTOL, atol=ATOL)


def test_float64_dtype_with_double_module(rng):
    net = seeded(lambda: torch.nn.Linear(6, 3).double())
    X = rng.normal(size=(4, 6))
    Xt = BackboneTransformer(net, device="cpu", dtype="float64").fit_transform(X)
    with torch.no_grad():
        expected = net(torch.from_numpy(X)).numpy()
    assert Xt.dtype == np.float32
    assert_allclose(Xt, expected.astype(np.float32), rtol=RTOL, atol=ATOL)


def test_amp_on_cpu_is_close_to_full_precision(rng):
    net = seeded(lambda: torch.nn.Linear(6, 3))
    X = rng.normal(size=(8, 6))
    full = BackboneTransformer(net, device="cpu").fit_transform(X)
    mixed = BackboneTransformer(net, device="cpu", amp=True).fit_transform(X)
    assert mixed.dtype == np.float32
    assert not np.array_equal(full, mixed)  # bfloat16 really ran (distinct cache key)
    assert_allclose(mixed, full, atol=5e-2)


# -- frozen backbone: eval mode, inference mode, weights untouched --------------


def test_eval_mode_and_restored_flags(rng):
    net = seeded(
        lambda: torch.nn.Sequential(
            torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5)
        )
    )
    net.train()
    net[1].eval()  # a mixed state must come back exactly as it was
    before = {k: v.clone() for k, v in net.state_dict().items()}
    grads = [p.requires_grad for p in net.parameters()]
    X = rng.normal(size=(16, 6))
    bt = BackboneTransformer(net, device="cpu", batch_size=5, cache=False)
    first = bt.fit_transform(X)
    second = bt.transform(X)
    assert_allclose(first, second, rtol=RTOL, atol=ATOL)  # no dropout noise
    assert [m.training for m in net.modules()] == [True, True, False, True]
    assert [p.requires_grad for p in net.parameters()] == grads
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm running stats included
    net.eval()
    with torch.no_grad():
        expected = net(torch.as_tensor(X, dtype=torch.float32)).numpy()
    assert_allclose(first, expected, rtol=RTOL, atol=ATOL)


def test_forward_runs_under_inference_mode(rng):
    Probe.seen = []
    BackboneTransformer(Probe(), device="cpu").fit(rng.normal(size=(3, 2)))
    assert Probe.seen == [(False, True)]


# -- preprocess -----------------------------------------------------------------


def test_preprocess_per_sample_strings():
    texts = ["banana", "kiwi", "apple", "a"]
    bt = BackboneTransformer(
        torch.nn.Identity(), device="cpu", preprocess=text_to_array
    )
    Xt = bt.fit_transform(texts)
    assert_array_equal(Xt, [[6, 3], [4, 0], [5, 1], [1, 1]])
    assert bt.input_shape_ == (2,)
    assert not hasattr(bt, "n_features_in_")
    assert bt.__sklearn_tags__().input_tags.string


def test_preprocess_integer_output_stays_int64():
    emb = seeded(lambda: torch.nn.Embedding(10, 3))
    bt = BackboneTransformer(
        torch.nn.Sequential(emb, torch.nn.Flatten()),
        device="cpu",
        preprocess=lambda s: np.array([int(c) for c in s]),
    )
    Xt = bt.fit_transform(["12", "90"])
    with torch.no_grad():
        expected = emb(torch.tensor([[1, 2], [9, 0]])).reshape(2, -1).numpy()
    assert_array_equal(Xt, expected)


def test_preprocess_shape_mismatch():
    bt = BackboneTransformer(
        torch.nn.Identity(), device="cpu", preprocess=lambda s: np.ones(len(s))
    )
    with pytest.raises(ValueError, match=r"shape \(3,\) for sample 1 but \(2,\)"):
        bt.fit(["ab", "abc"])


# -- errors -----------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_fails_at_fit(rng):
    bt = BackboneTransformer(torch.nn.Identity(), device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        bt.fit(rng.normal(size=(3, 2)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_fails_at_transform(rng):
    # As after unpickling a transformer fitted with device="cuda" on a GPU machine.
    bt = BackboneTransformer(torch.nn.Identity(), device="cpu").fit(np.ones((2, 2)))
    bt.device = "cuda"
    with pytest.raises(ValueError, match="device='cuda' was requested but CUDA"):
        bt.transform(np.ones((2, 2)))


def test_rejected_shape_names_per_sample_shape(rng):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    bt = BackboneTransformer(net, device="cpu")
    with pytest.raises(
        ValueError,
        match=r"rejected input of shape \(3, 28, 28\) per sample "
        r"\(batch \(5, 3, 28, 28\)\): .*channels",
    ):
        bt.fit(rng.normal(size=(5, 3, 28, 28)))


def test_transform_rejects_other_rank_and_width(rng):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    bt = BackboneTransformer(net, device="cpu").fit(rng.normal(size=(3, 4, 4)))
    with pytest.raises(ValueError, match=r"per-sample shape \(16,\) but .* \(4, 4\)"):
        bt.transform(rng.normal(size=(3, 16)))
    with pytest.raises(ValueError, match=r"rejected input of shape \(5, 5\)"):
        bt.transform(rng.normal(size=(3, 5, 5)))
    tab = BackboneTransformer(torch.nn.Identity(), device="cpu").fit(np.ones((2, 3)))
    with pytest.raises(ValueError, match="X has 4 features, but .* expecting 3"):
        tab.transform(np.ones((2, 4)))


def test_output_width_change_is_an_error(rng):
    # Flatten alone accepts any image size but then gives another width.
    bt = BackboneTransformer(torch.nn.Flatten(), device="cpu").fit(np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="returned 16 features .* but 9 during fit"):
        bt.transform(np.ones((2, 4, 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input(bad):
    X = np.ones((3, 2))
    X[1, 0] = bad
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        BackboneTransformer(torch.nn.Identity(), device="cpu").fit(X)


def test_empty_and_1d_input():
    bt = BackboneTransformer(torch.nn.Identity(), device="cpu")
    with pytest.raises(ValueError, match="0 sample"):
        bt.fit(np.empty((0, 3)))
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        bt.fit(np.ones(3))
    with pytest.raises(ValueError, match="X is empty"):
        bt.set_params(preprocess=text_to_array).fit([])


def test_strings_without_preprocess():
    with pytest.raises(ValueError, match="preprocess=None"):
        BackboneTransformer(torch.nn.Identity(), device="cpu").fit(["a", "b"])


@pytest.mark.parametrize("param", ["batch_size", "cache_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_invalid_sizes(param, value):
    bt = BackboneTransformer(torch.nn.Identity(), **{param: value})
    with pytest.raises(InvalidParameterError, match=param):
        bt.fit(np.ones((2, 2)))


def test_lazy_module_and_non_tensor_output():
    with pytest.raises(ValueError, match="lazy"):
        BackboneTransformer(torch.nn.LazyLinear(2), device="cpu").fit(np.ones((2, 2)))

    class Pair(torch.nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(TypeError, match="returned tuple; expected a tensor"):
        BackboneTransformer(Pair(), device="cpu").fit(np.ones((2, 2)))


# -- feature cache ----------------------------------------------------------------


def test_one_forward_per_row_across_transforms_and_clones(rng):
    net = seeded(Counting)
    X = rng.normal(size=(20, 6))
    bt = BackboneTransformer(net, device="cpu", batch_size=8)
    first = bt.fit_transform(X)
    assert Counting.rows == 20
    assert_array_equal(bt.transform(X), first)
    assert_array_equal(bt.transform(X[15:3:-1]), first[15:3:-1])
    twin = clone(bt)
    assert twin.module is not net  # clone deep-copies the module ...
    assert_array_equal(twin.fit(X[:4]).transform(X), first)
    assert Counting.rows == 20  # ... yet reuses the features of equal weights
    X_more = np.vstack([X, rng.normal(size=(5, 6))])
    assert_array_equal(bt.transform(X_more)[:20], first)
    assert Counting.rows == 25  # only the new rows went through the backbone


def test_grid_search_forwards_each_row_once(rng):
    X = rng.normal(size=(30, 6))
    y = np.arange(30) % 2
    pipe = make_pipeline(
        BackboneTransformer(seeded(Counting), device="cpu"), LogisticRegression()
    )
    GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=3).fit(X, y)
    assert Counting.rows == 30


def test_changed_weights_are_not_served_from_cache(rng):
    net = seeded(Counting)
    X = rng.normal(size=(5, 6)).astype(np.float32)
    bt = BackboneTransformer(net, device="cpu")
    old = bt.fit_transform(X)
    with torch.no_grad():
        net.linear.bias.add_(1.0)
    new = bt.transform(X)
    assert Counting.rows == 10
    assert_allclose(new, old + 1.0, rtol=RTOL, atol=ATOL)


def _other_precision(setting):
    """(read, write, another value) of one float32 precision setting."""
    if setting == "matmul":  # the legacy getter and setter, every torch version
        read, write = (
            torch.get_float32_matmul_precision,
            (torch.set_float32_matmul_precision),
        )
        return read, write, "high" if read() != "high" else "highest"
    if setting == "cuda.matmul" or hasattr(torch.backends.cudnn, "conv"):
        module = (
            torch.backends.cuda.matmul
            if setting == "cuda.matmul"
            else torch.backends.cudnn.conv
        )
        if not hasattr(module, "fp32_precision"):
            pytest.skip("torch < 2.9 has no per-operator fp32_precision")

        def write(value):
            module.fp32_precision = value

        read = lambda: module.fp32_precision  # noqa: E731
        return read, write, "tf32" if read() != "tf32" else "ieee"
    cudnn = torch.backends.cudnn  # torch < 2.9: the legacy TF32 flag

    def write(value):
        cudnn.allow_tf32 = value

    return (lambda: cudnn.allow_tf32), write, not cudnn.allow_tf32


@pytest.mark.parametrize("setting", ["cudnn.conv", "matmul", "cuda.matmul"])
def test_float32_precision_settings_are_part_of_the_cache_key(rng, setting):
    # cuDNN runs float32 convolutions in TF32 by default (about 1e-3 off full
    # float32): features computed under one setting must not be served under
    # another, on any device (the key cannot know which ops the module runs);
    # "cuda.matmul" sets only torch >= 2.9's per-operator API, after which the
    # legacy getter raises: the key must not call it
    X = rng.normal(size=(5, 6)).astype(np.float32)
    bt = BackboneTransformer(seeded(Counting), device="cpu")
    bt.fit_transform(X)
    bt.transform(X)
    assert Counting.rows == 5  # the second transform came from the cache
    read, write, other = _other_precision(setting)
    before = read()
    write(other)
    try:
        bt.transform(X)
    finally:
        write(before)
    assert Counting.rows == 10  # computed again under the other setting
    if setting != "matmul":
        # (the legacy setter leaves torch >= 2.9's per-operator values at
        # "ieee" where they were "none" before: the same arithmetic, another key)
        bt.transform(X)
        assert Counting.rows == 10  # the first setting's features still serve


def test_cache_disabled_runs_every_time(rng):
    X = rng.normal(size=(5, 6))
    bt = BackboneTransformer(seeded(Counting), device="cpu", cache=False)
    bt.fit_transform(X)
    bt.transform(X)
    assert Counting.rows == 15  # fit's batch + two transforms
    assert len(FEATURE_CACHE) == 0


def test_cache_is_lru_with_a_cap(rng):
    X = rng.normal(size=(6, 6))
    bt = BackboneTransformer(seeded(Counting), device="cpu", cache_size=4)
    bt.fit(X[:4])
    assert (Counting.rows, len(FEATURE_CACHE)) == (4, 4)
    bt.transform(X[[0]])  # hit: row 0 becomes the most recently used
    bt.transform(X[[4]])  # miss: evicts row 1, the least recently used
    assert (Counting.rows, len(FEATURE_CACHE)) == (5, 4)
    bt.transform(X[[0, 2, 3, 4]])
    assert Counting.rows == 5
    bt.transform(X[[1]])
    assert Counting.rows == 6
    assert BackboneTransformer.clear_cache() == 4


# -- persistence, clone, output containers ----------------------------------------


def test_pickle_round_trip(rng):
    X = rng.normal(size=(7, 6))
    bt = BackboneTransformer(seeded(Counting), device="cpu").fit(X)
    loaded = pickle.loads(pickle.dumps(bt))
    assert loaded.module_ is loaded.module
    BackboneTransformer.clear_cache()
    assert_array_equal(loaded.transform(X), bt.transform(X))


def test_pickled_state_moves_accelerator_modules_to_cpu(rng, monkeypatch):
    bt = BackboneTransformer(seeded(Counting), device="cpu").fit(
        rng.normal(size=(3, 6))
    )
    # Pretend the module sits on an accelerator: the state pickle stores (through
    # __reduce_ex__) must hold a CPU copy of it.
    monkeypatch.setattr(backbone_mod, "_on_cpu", lambda module: False)
    state = bt.__reduce_ex__(pickle.HIGHEST_PROTOCOL)[2]
    assert state["module"] is not bt.module  # the live module is left alone
    assert state["module_"] is state["module"]  # one copy, identity kept
    for name, tensor in state["module"].state_dict().items():
        assert tensor.device.type == "cpu"
        assert torch.equal(tensor, bt.module.state_dict()[name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_pickle_loads_and_transforms_on_cpu_only_process(rng, tmp_path):
    X = rng.normal(size=(6, 6)).astype(np.float32)
    bt = BackboneTransformer(seeded(Counting), device="auto").fit(X)
    assert next(bt.module_.parameters()).device.type == "cuda"
    expected = bt.transform(X)
    path = tmp_path / "bt.pkl"
    path.write_bytes(pickle.dumps(bt))
    np.save(tmp_path / "X.npy", X)
    script = tmp_path / "load.py"
    script.write_text(
        "import pickle, sys\n"
        "import numpy as np, torch\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "assert not torch.cuda.is_available()\n"
        "folder = sys.argv[1]\n"
        "bt = pickle.loads(open(folder + '/bt.pkl', 'rb').read())\n"
        "np.save(folder + '/out.npy', bt.transform(np.load(folder + '/X.npy')))\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(Path(__file__).parent)],
        check=True,
        env=env,
    )
    assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-4, atol=1e-5)


def test_clone_is_unfitted_with_equal_params():
    bt = BackboneTransformer(RowStats(), device="cpu", batch_size=3, cache_size=9)
    bt.fit(np.ones((2, 5)))
    twin = clone(bt)
    assert not hasattr(twin, "module_")
    params = twin.get_params()
    assert params.pop("module") is not bt.module
    assert params == {k: v for k, v in bt.get_params().items() if k != "module"}


def test_deepcopy_keeps_working(rng):
    X = rng.normal(size=(3, 6))
    bt = BackboneTransformer(seeded(Counting), device="cpu").fit(X)
    assert_array_equal(copy.deepcopy(bt).transform(X), bt.transform(X))


def test_feature_names_and_pandas_output(rng):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(
        rng.normal(size=(4, 6)), columns=list("abcdef"), index=list("wxyz")
    )
    bt = BackboneTransformer(seeded(Counting), device="cpu").set_output(
        transform="pandas"
    )
    out = bt.fit_transform(X)
    names = ["backbonetransformer0", "backbonetransformer1", "backbonetransformer2"]
    assert_array_equal(bt.get_feature_names_out(), names)
    assert list(out.columns) == names
    assert list(out.index) == list("wxyz")
    assert_array_equal(bt.feature_names_in_, list("abcdef"))
    assert_allclose(
        out.to_numpy(),
        bt.set_output(transform="default").transform(X),
        rtol=RTOL,
        atol=ATOL,
    )


def test_verbose_shows_progress(rng, capsys):
    X = rng.normal(size=(6, 6))
    BackboneTransformer(seeded(Counting), device="cpu", verbose=0).fit(X)
    assert capsys.readouterr().err == ""
    bt = BackboneTransformer(seeded(Counting), device="cpu", batch_size=2, verbose=1)
    bt.fit(X).transform(X[::-1] + 1)
    assert "3/3" in capsys.readouterr().err


# -- the cache never answers with another module state's features --------------


class Scaled(torch.nn.Module):
    """Multiplies by a factor kept in a plain (unregistered) attribute ``name``."""

    def __init__(self, factor, name="factor"):
        super().__init__()
        self.name = name
        setattr(self, name, factor)

    def forward(self, x):
        factor = getattr(self, self.name)
        factor = factor["f"] if isinstance(factor, dict) else factor
        return x * float(np.asarray(factor).reshape(-1)[0])


def test_weights_edited_through_data_are_seen(rng):
    # p.data has its own version counter: a stamp of versions cannot see this.
    net = seeded(Counting)
    X = rng.normal(size=(5, 6)).astype(np.float32)
    bt = BackboneTransformer(net, device="cpu")
    old = bt.fit_transform(X)
    for p in net.parameters():
        p.data.mul_(2)
    assert_allclose(bt.transform(X), 2 * old, rtol=RTOL, atol=ATOL)
    assert_allclose(bt.fit(X).transform(X), 2 * old, rtol=RTOL, atol=ATOL)
    for p in net.parameters():
        p.data.div_(2)
    assert_array_equal(bt.transform(X), old)  # the first state's rows, cached


@pytest.mark.parametrize(
    "make",
    [
        torch.tensor,
        np.float32,
        lambda f: np.array([f]),
        lambda f: [f],
        float,
        lambda f: {"f": f},
    ],
    ids=["tensor", "numpy-scalar", "numpy-array", "list", "float", "dict"],
)
@pytest.mark.parametrize("name", ["factor", "_factor"])
def test_state_in_plain_attributes_is_part_of_the_key(make, name, rng):
    X = rng.normal(size=(4, 3)).astype(np.float32)
    two = BackboneTransformer(Scaled(make(2.0), name), device="cpu").fit_transform(X)
    three = BackboneTransformer(Scaled(make(3.0), name), device="cpu").fit_transform(X)
    assert_allclose(two, 2 * X, rtol=RTOL, atol=ATOL)
    assert_allclose(three, 3 * X, rtol=RTOL, atol=ATOL)


def test_tensor_attribute_edited_in_place_is_seen(rng):
    X = rng.normal(size=(4, 3)).astype(np.float32)
    net = Scaled(torch.tensor(2.0))
    bt = BackboneTransformer(net, device="cpu")
    bt.fit_transform(X)
    net.factor.mul_(2)
    assert_allclose(bt.transform(X), 4 * X, rtol=RTOL, atol=ATOL)


def test_same_class_name_other_code_is_not_shared(rng):
    def make_class(k):
        class Times(torch.nn.Module):
            def forward(self, x):
                return x * k

        return Times

    X = rng.normal(size=(4, 3)).astype(np.float32)
    for k in (2, 3):
        out = BackboneTransformer(make_class(k)(), device="cpu").fit_transform(X)
        assert_allclose(out, k * X, rtol=RTOL, atol=ATOL)


def _add_hook(net, kind):
    if kind == "forward":
        return net.register_forward_hook(lambda m, i, o: o * 2)
    if kind == "forward_pre":
        return net.register_forward_pre_hook(lambda m, i: (i[0] * 2,))
    return torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: o * 2)


@pytest.mark.parametrize("kind", ["forward", "forward_pre", "global"])
def test_hooks_added_after_a_transform_take_effect(kind, rng):
    net = seeded(Counting)
    X = rng.normal(size=(5, 6)).astype(np.float32)
    bt = BackboneTransformer(net, device="cpu")
    first = bt.fit_transform(X)
    handle = _add_hook(net, kind)
    try:
        with pytest.warns(UserWarning, match="feature cache is off .* hooks"):
            hooked = bt.transform(X)
        with torch.no_grad():
            expected = net(torch.from_numpy(X)).numpy()
    finally:
        handle.remove()
    assert not np.allclose(expected, first)
    assert_allclose(hooked, expected, rtol=RTOL, atol=ATOL)
    assert len(FEATURE_CACHE) == 5  # hooked rows were not cached
    rows = Counting.rows
    assert_array_equal(bt.transform(X), first)  # hook gone: the cache answers again
    assert Counting.rows == rows


def test_state_the_key_cannot_capture_bypasses_the_cache(rng):
    def offset_by(v):
        return lambda x: x + v  # a closure: its cell is invisible to the key

    class Offset(Counting):
        def __init__(self, v):
            super().__init__()
            self.offset = offset_by(v)

        def forward(self, x):
            return self.offset(super().forward(x))

    X = rng.normal(size=(5, 6)).astype(np.float32)
    one, two = seeded(lambda: Offset(1.0)), seeded(lambda: Offset(2.0))
    with pytest.warns(UserWarning, match="attribute 'offset' of Offset: the closure"):
        out_one = BackboneTransformer(one, device="cpu").fit_transform(X)
    with pytest.warns(UserWarning, match="cache is off for this Offset"):
        out_two = BackboneTransformer(two, device="cpu").fit_transform(X)
    assert_allclose(out_two, out_one + 1, rtol=RTOL, atol=ATOL)
    assert Offset.rows == 20 and len(FEATURE_CACHE) == 0  # fit + transform, x2


# -- the cache's memory follows cache_size --------------------------------------


def test_cache_memory_follows_cache_size(rng):
    n, d, k = 20_000, 64, 500
    X = rng.normal(size=(n, d)).astype(np.float32)
    bt = BackboneTransformer(torch.nn.Identity(), device="cpu", cache_size=k)
    bt.fit(X[:3])
    BackboneTransformer.clear_cache()
    out_bytes, peak, held = traced(lambda: bt.transform(X))
    assert len(FEATURE_CACHE) == k
    assert FEATURE_CACHE.nbytes() == k * (d * 4 + 8)  # rows + last-use ticks
    # Held: k rows and about 200 bytes of index per row; the peak: the output,
    # the cache and 24 bytes per row (its index and key while it is computed).
    assert held < k * (d * 4 + 200) + 64 * 1024
    assert peak < out_bytes + k * (d * 4 + 200) + n * 24 + 256 * 1024
    # The last rows transformed are the ones kept: they come back unchanged.
    rows = bt.transform(X[-k:])
    assert_array_equal(rows, X[-k:])


# -- non-finite features ----------------------------------------------------------


class Blows(torch.nn.Module):
    """Returns NaN (or inf) for the rows whose first value exceeds 0.5."""

    def __init__(self, bad=float("nan")):
        super().__init__()
        self.bad = bad

    def forward(self, x):
        out = x.clone()
        out[x[:, 0] > 0.5] = self.bad
        return out


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_name_the_backbone_and_row(bad):
    X = np.zeros((6, 2), dtype=np.float32)
    X[:, 1] = np.arange(6)  # distinct rows: none is a cache hit for another
    X[[2, 4], 0] = 1
    msg = (
        r"backbone Blows returned non-finite features \(NaN or inf\) for 2 of the "
        r"6 rows of a batch, first for row 2 of X"
    )
    with pytest.raises(ValueError, match=msg):
        BackboneTransformer(Blows(bad), device="cpu").fit(X)
    bt = BackboneTransformer(Blows(bad), device="cpu", batch_size=3).fit(X[:2])
    with pytest.raises(
        ValueError, match="for 2 of the 3 rows of a batch, first for row 2"
    ):
        bt.transform(X)  # rows 0 and 1 come from the cache
    assert len(FEATURE_CACHE) == 2  # nothing of the failed call was cached
    with pytest.raises(ValueError, match="first for row 2 of X"):
        bt.set_params(cache=False).transform(X)


# -- a failure leaves the caller's module as it was -------------------------------


def _snapshot(net):
    return [(p, p.detach().clone()) for p in net.parameters()]


def _assert_untouched(net, snapshot):
    assert [p for p, _ in snapshot] == list(net.parameters())  # same objects
    for p, before in snapshot:
        assert p.device.type == "cpu"
        assert torch.equal(p.detach(), before)


def test_meta_device_leaves_the_module_untouched(rng):
    net = seeded(Counting)
    snapshot = _snapshot(net)
    with pytest.raises(ValueError, match="device='meta' holds no data"):
        BackboneTransformer(net, device="meta").fit(rng.normal(size=(3, 6)))
    _assert_untouched(net, snapshot)


class Fails(Counting):
    fail = False

    def forward(self, x):
        if self.fail:
            raise RuntimeError("boom")
        return super().forward(x)


@pytest.mark.parametrize("stage", ["fit", "transform"])
def test_failure_after_the_move_restores_the_module(stage, rng, monkeypatch):
    # A device that loses the data, as a move to an accelerator followed by an
    # error would leave the module there: the original tensors must come back.
    net = seeded(Fails)
    X = rng.normal(size=(3, 6))
    bt = BackboneTransformer(net, device="cpu", cache=False)
    if stage == "transform":
        bt.fit(X)
    snapshot = _snapshot(net)
    monkeypatch.setattr(backbone_mod, "resolve_device", lambda d: torch.device("meta"))
    net.fail = True
    with pytest.raises(ValueError, match="rejected input .*: boom"):
        bt.fit(X) if stage == "fit" else bt.transform(X)
    _assert_untouched(net, snapshot)
