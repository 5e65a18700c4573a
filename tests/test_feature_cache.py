"""Tests for skfewshot._feature_cache: the store, its bounds and the state key."""

import copy
import sys

import numpy as np
import pytest
import torch
from _memory_testing import traced
from numpy.testing import assert_array_equal
from sklearn.utils import gen_batches

from skfewshot._feature_cache import (
    FEATURE_CACHE,
    _Uncacheable,
    cached_features,
    module_digest,
    row_keys,
    state_key,
    text_keys,
)

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml


@pytest.fixture(autouse=True)
def empty_cache():
    FEATURE_CACHE.clear()
    yield
    FEATURE_CACHE.clear()


class Identity:
    """``compute`` for :func:`cached_features`: the rows of ``X`` themselves."""

    def __init__(self, X):
        self.X = X
        self.computed = []

    def __call__(self, rows, out):
        self.computed.extend(rows.tolist())
        if out is None:
            out = np.empty(self.X.shape, dtype=np.float32)
        out[rows] = self.X[rows]
        return out


def features(X, key=b"k", max_rows=1000):
    compute = Identity(X)
    out = cached_features(
        key, len(X), lambda rows: row_keys(X[rows]), compute, max_rows, lambda: key
    )
    return out, compute.computed


# -- cached_features: read back what is cached, compute the rest ---------------


def test_only_missing_rows_are_computed_and_order_is_kept():
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    out, computed = features(X[:4])
    assert_array_equal(out, X[:4])
    assert computed == [0, 1, 2, 3]
    out, computed = features(X[[5, 2, 0, 4]])
    assert_array_equal(out, X[[5, 2, 0, 4]])
    assert computed == [0, 3]  # the rows X[5] and X[4]; X[2] and X[0] are hits
    assert len(FEATURE_CACHE) == 6


def test_keys_are_separate_stores():
    X = np.ones((3, 2), dtype=np.float32)
    features(X, key=b"a")
    _, computed = features(X * 2, key=b"b")
    assert computed == [0, 1, 2]
    assert FEATURE_CACHE.width(b"a") == 2 and FEATURE_CACHE.width(b"zzz") is None


def test_lru_with_a_cap():
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    features(X[:4], max_rows=4)
    features(X[[0]], max_rows=4)  # hit: row 0 becomes the most recently used
    _, computed = features(X[[4]], max_rows=4)  # miss: evicts row 1
    assert computed == [0] and len(FEATURE_CACHE) == 4
    _, computed = features(X[[0, 2, 3, 4]], max_rows=4)
    assert computed == []
    _, computed = features(X[[1]], max_rows=4)
    assert computed == [0]


def test_a_call_larger_than_the_cap_keeps_its_last_rows():
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    features(X, max_rows=3)
    assert len(FEATURE_CACHE) == 3
    _, computed = features(X[7:], max_rows=3)
    assert computed == []


def test_a_row_repeated_in_one_call_is_stored_once():
    X = np.array([[1, 2], [1, 2], [3, 4]], dtype=np.float32)
    features(X, key=b"a", max_rows=4)
    assert len(FEATURE_CACHE) == 2
    Y = np.arange(20, dtype=np.float32).reshape(10, 2) + 100
    features(Y, key=b"b", max_rows=4)  # evicts both rows of b"a"
    assert len(FEATURE_CACHE) == 4
    _, computed = features(X, key=b"a", max_rows=4)
    assert computed == [0, 1, 2]


def test_a_smaller_cap_shrinks_the_storage():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    features(X, key=b"big", max_rows=1000)
    assert len(FEATURE_CACHE) == 300
    small = rng.normal(size=(20, 4)).astype(np.float32)
    features(small, key=b"small", max_rows=10)
    assert len(FEATURE_CACHE) == 10
    assert FEATURE_CACHE.nbytes() <= 10 * (4 * 4 + 8)
    # only the 10 last rows of the small call are kept; the big key's are gone
    _, computed = features(X[:5], key=b"big", max_rows=1000)
    assert computed == [0, 1, 2, 3, 4]


def copy_rows(X):
    """``compute`` that copies the rows of ``X`` in batches, as a backbone does."""

    def compute(rows, out):
        if out is None:
            out = np.empty(X.shape, dtype=np.float32)
        for batch in gen_batches(len(rows), 256):
            out[rows[batch]] = X[rows[batch]]
        return out

    return compute


def test_memory_follows_max_rows():
    n, d, k = 20_000, 64, 500
    X = np.random.RandomState(0).normal(size=(n, d)).astype(np.float32)
    out_bytes, peak, held = traced(
        lambda: cached_features(
            b"k", n, lambda r: row_keys(X[r]), copy_rows(X), k, lambda: b"k"
        )
    )
    assert len(FEATURE_CACHE) == k
    assert FEATURE_CACHE.nbytes() == k * (d * 4 + 8)  # rows + last-use ticks
    # Held: k rows and about 200 bytes of index per row; the peak: the output,
    # the cache and 24 bytes per row (its index and key while it is computed).
    assert held < k * (d * 4 + 200) + 64 * 1024
    assert peak < out_bytes + k * (d * 4 + 200) + n * 24 + 256 * 1024
    # The last rows are the ones kept: they come back unchanged.
    out, computed = features(X[-k:], max_rows=k)
    assert computed == [] and np.array_equal(out, X[-k:])


def test_small_rows_cost_little():
    n = 10_000
    X = np.random.RandomState(0).normal(size=(n, 4)).astype(np.float32)
    _, _, held = traced(
        lambda: cached_features(
            b"k", n, lambda r: row_keys(X[r]), copy_rows(X), n, lambda: b"k"
        )
    )
    assert len(FEATURE_CACHE) == n
    assert held / n < 4 * 4 + 200  # was about 750 bytes per 4-feature row


# -- row keys ----------------------------------------------------------------------


def test_row_keys_follow_the_bytes():
    X = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [-0.0, 0.0], [0.0, 0.0]])
    keys = row_keys(np.ascontiguousarray(X, dtype=np.float32))
    assert all(len(k) == 16 for k in keys)
    assert keys[0] == keys[1]
    assert len({keys[0], keys[2], keys[3], keys[4]}) == 4  # -0.0 is other bytes


def test_text_keys():
    keys = text_keys(["a", "a", "b", "\ud800", ""])
    assert keys[0] == keys[1] and len(set(keys)) == 4
    assert all(len(k) == 16 for k in keys)


# -- the state digest ------------------------------------------------------------


class Plain:
    def __init__(self, factor):
        self.factor = factor


def test_digest_of_equal_copies_is_equal_and_follows_edits():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    assert module_digest(net) == module_digest(copy.deepcopy(net))
    before = module_digest(net)
    with torch.no_grad():
        net.bias.data.add_(1)
    assert module_digest(net) != before
    assert module_digest(Plain(2.0)) == module_digest(Plain(2.0))
    assert module_digest(Plain(2.0)) != module_digest(Plain(3.0))
    assert module_digest(Plain([1, 2])) != module_digest(Plain((1, 2)))


def test_same_class_name_other_class_differs():
    def make(k):
        class Times:
            factor = k

        return Times()

    assert module_digest(make(2)) != module_digest(make(2))


@pytest.mark.parametrize(
    "value, match",
    [
        ((lambda k: lambda x: x + k)(1), "the closure"),
        ({object()}, "a set of non-scalar items"),
        (np.array([object()]), "numpy array of Python objects"),
        (iter([]), "a list_iterator object"),
    ],
    ids=["closure", "set", "object-array", "iterator"],
)
def test_state_the_digest_cannot_capture(value, match):
    with pytest.raises(_Uncacheable, match=match):
        module_digest(Plain(value))


def test_hooks_make_a_module_uncacheable():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    handle = net[0].register_forward_hook(lambda m, i, o: o)
    try:
        with pytest.raises(_Uncacheable, match="Linear has forward hooks"):
            module_digest(net)
    finally:
        handle.remove()
    module_digest(net)


def test_state_key_holds_the_settings_and_warns_when_off():
    net = torch.nn.Linear(2, 2)
    assert state_key(net, "a", "backbone", 1) != state_key(net, "b", "backbone", 1)
    with pytest.warns(
        UserWarning,
        match=r"feature cache is off for this Plain encoder: the closure .*"
        r"Pass cache=False to silence this warning",
    ):
        assert state_key(Plain(lambda: net), "a", "encoder", 1) is None


# -- extension objects: native state beyond the __dict__ ---------------------------


class FakeTokenizer:
    """Stands in for ``tokenizers.Tokenizer``: native state (slots), ``to_str``."""

    __slots__ = ("json", "encode_special_tokens")

    def __init__(self, json, encode_special_tokens=False):
        self.json = json
        self.encode_special_tokens = encode_special_tokens

    def to_str(self):
        return self.json


class FakeAddedToken:
    __slots__ = ("content",)

    def __init__(self, content):
        self.content = content

    def __getstate__(self):
        return {"content": self.content}


class TextEncoder(torch.nn.Module):
    """A sentence-transformers-like module: weights and a tokenizer object."""

    def __init__(self, json="{vocab: a b}", max_length=8):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(2, 2)
        self.tokenizer = Plain(FakeTokenizer(json))  # a transformers tokenizer
        self.tokenizer.model_max_length = max_length
        self.tokenizer.pad = FakeAddedToken("[PAD]")


@pytest.fixture
def fake_tokenizers(monkeypatch):
    fake = type(sys)("tokenizers")
    fake.Tokenizer, fake.AddedToken = FakeTokenizer, FakeAddedToken
    monkeypatch.setitem(sys.modules, "tokenizers", fake)


def test_a_tokenizer_is_uncacheable_unless_its_package_serialises_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "tokenizers", raising=False)
    with pytest.raises(
        _Uncacheable,
        match="attribute .tokenizer. of TextEncoder: a FakeTokenizer object",
    ):
        module_digest(TextEncoder())


@pytest.mark.usefixtures("fake_tokenizers")
def test_the_serialised_tokenizer_and_its_settings_are_keyed():
    base = module_digest(TextEncoder())
    assert module_digest(TextEncoder()) == base
    assert module_digest(TextEncoder(json="{vocab: a c}")) != base
    assert module_digest(TextEncoder(max_length=4)) != base
    special = TextEncoder()
    special.tokenizer.factor.encode_special_tokens = True
    assert module_digest(special) != base
    padded = TextEncoder()
    padded.tokenizer.pad.content = "<pad>"
    assert module_digest(padded) != base
    heavier = TextEncoder()
    with torch.no_grad():
        heavier.linear.weight[0, 0] += 1
    assert module_digest(heavier) != base


def test_extension_classes_are_not_plain_objects():
    tokenizers = pytest.importorskip(
        "tokenizers", reason="a real extension class with a __dict__"
    )
    # A PyO3 class is a heap type with a __dict__, as a Python class is; its
    # native state once went unseen, so two different tokens had one digest.
    a, b = tokenizers.AddedToken("a"), tokenizers.AddedToken("b")
    assert module_digest(Plain(a)) != module_digest(Plain(b))
    assert module_digest(Plain(a)) == module_digest(Plain(tokenizers.AddedToken("a")))
    model = tokenizers.models.WordLevel({"a": 0}, unk_token="a")
    with pytest.raises(_Uncacheable, match="a WordLevel object"):
        module_digest(Plain(model))


class Version(str):
    __slots__ = ()


class Tagged(str):
    pass


class Packed(str):
    __slots__ = ("extra",)


def test_subclasses_of_scalars():
    assert module_digest(Plain(Version("2.13"))) == module_digest(
        Plain(Version("2.13"))
    )
    assert module_digest(Plain(Version("2.13"))) != module_digest(Plain(Version("2.1")))
    assert module_digest(Plain(Version("2.13"))) != module_digest(Plain("2.13"))
    one, two = Tagged("x"), Tagged("x")
    one.tag, two.tag = 1, 2
    assert module_digest(Plain(one)) != module_digest(Plain(two))
    with pytest.raises(_Uncacheable, match="a Packed object"):
        module_digest(Plain(Packed("x")))
