"""The feature cache key and the code of module classes: methods edited in place.

The key reads every function a module's class statement defines as it reads a
function attribute: by identity, code object, defaults and keyword defaults,
so that a method edited in place (IPython's ``%autoreload``, which also sets
``__defaults__``) never has the old rows served. A method's closure (the class,
for ``super()``; a decorator's) is not read, so ordinary classes stay cacheable.
"""

import functools
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

# the code edits (%autoreload), and the cache emptied around every test
from test_cache_hostile import ATOL, RTOL, empty_cache  # noqa: F401
from test_cache_hostile import EDITS as CODE_EDITS

from skfewshot._feature_cache import _Uncacheable, module_digest
from skfewshot.backbone import BackboneTransformer
from skfewshot.models import Conv4, ResNet12


@pytest.fixture
def X():
    return np.random.RandomState(0).rand(5, 8).astype(np.float32)


def test_a_method_default_edited_in_place_is_not_served_old_features(X):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(8, 4)

        def forward(self, x, scale=1.0):
            return self.lin(x) * scale

    bt = BackboneTransformer(Net(), device="cpu")
    before = bt.fit_transform(X)
    Net.forward.__defaults__ = (2.0,)  # what %autoreload 2 does, with the code
    assert_allclose(bt.transform(X), 2 * before, rtol=RTOL, atol=ATOL)
    Net.forward.__defaults__ = (1.0,)
    assert_array_equal(bt.transform(X), before)  # the old defaults' rows, cached


def _default_edits():
    """(name, make a module, edit a default of its class's code in place)."""

    class Positional(torch.nn.Module):
        def forward(self, x, scale=1.0):
            return x * scale

    class KeywordOnly(torch.nn.Module):
        def forward(self, x, *, scale=1.0):
            return x * scale

    class Static(torch.nn.Module):
        @staticmethod
        def scale(x, k=1.0):
            return x * k

    class Property(torch.nn.Module):
        @property
        def factor(self, k=1.0):
            return k

    class Decorated(torch.nn.Module):
        @torch.no_grad()  # a closure wrapping forward (functools.wraps)
        def forward(self, x, scale=1.0):
            return x * scale

    class Base(torch.nn.Module):
        def forward(self, x, scale=1.0):
            return x * scale

    class Derived(Base):
        pass

    zeros = torch.zeros(2)

    class Tensor(torch.nn.Module):
        def forward(self, x, shift=zeros):
            return x + shift

    def set_defaults(func, defaults):
        def edit():
            func.__defaults__ = defaults

        return edit

    def set_kwdefaults(func, kwdefaults):
        def edit():
            func.__kwdefaults__ = kwdefaults

        return edit

    def fill(tensor):
        def edit():
            tensor.fill_(1.0)  # the default itself changed, not replaced

        return edit

    return [
        ("positional", Positional, set_defaults(Positional.forward, (2.0,))),
        (
            "keyword-only",
            KeywordOnly,
            set_kwdefaults(KeywordOnly.forward, {"scale": 2.0}),
        ),
        ("staticmethod", Static, set_defaults(Static.scale, (2.0,))),
        ("property", Property, set_defaults(Property.factor.fget, (2.0,))),
        (
            "decorated forward",
            Decorated,
            set_defaults(Decorated.forward.__wrapped__, (2.0,)),
        ),
        ("base class method", Derived, set_defaults(Base.forward, (2.0,))),
        ("tensor default", Tensor, fill(Tensor.forward.__defaults__[0])),
    ]


DEFAULT_EDITS = _default_edits()


@pytest.mark.parametrize(
    "make, edit",
    [e[1:] for e in CODE_EDITS + DEFAULT_EDITS],
    ids=[e[0] for e in CODE_EDITS] + [f"default: {e[0]}" for e in DEFAULT_EDITS],
)
def test_code_or_a_default_edited_in_place_changes_the_digest(make, edit):
    obj = make()
    before = module_digest(obj)
    assert module_digest(obj) == before
    edit()
    assert module_digest(obj) != before


def test_a_method_replaced_by_a_function_of_the_same_code_changes_the_digest():
    def make_forward(k):
        def forward(self, x):
            return x * k

        return forward

    class Net(torch.nn.Module):
        forward = make_forward(1.0)

    net = Net()
    before = module_digest(net)
    # the same code object, another closure: the function's identity tells
    Net.forward = make_forward(2.0)
    assert Net.forward.__code__ is make_forward(1.0).__code__
    assert module_digest(net) != before


def test_a_default_may_refer_to_its_own_class():
    class Net(torch.nn.Module):
        def forward(self, x, kind=None):
            return x

    Net.forward.__defaults__ = (Net,)
    net = torch.nn.Sequential(Net(), Net())
    assert module_digest(net) == module_digest(net)


def test_an_attribute_sharing_a_default_encodes_as_an_equal_copy():
    # ResNet12 keeps its default channels tuple: its digest must not tell it
    # from a ResNet12 given an equal tuple (the savers' round-trip check)
    class Net(torch.nn.Module):
        def __init__(self, sizes=(1, 2)):
            super().__init__()
            self.sizes = sizes

    shared, copy = Net(), Net(tuple([1, 2]))
    assert shared.sizes is Net.__init__.__defaults__[0]
    assert copy.sizes is not shared.sizes
    assert module_digest(shared) == module_digest(copy)


def test_modules_sharing_a_tuple_of_plain_values_encode_as_equal_copies():
    # two members built with one channels tuple share it; rebuilt from a
    # file they hold equal copies: one digest (the savers' round-trip check)
    class Net(torch.nn.Module):
        def __init__(self, sizes):
            super().__init__()
            self.sizes = sizes

    sizes = (1, (2.0, "a"), frozenset({"b", "c"}), torch.Size([3]))
    shared = torch.nn.Sequential(Net(sizes), Net(sizes))
    copies = torch.nn.Sequential(
        Net((1, (2.0, "a"), frozenset({"c", "b"}), torch.Size([3]))),
        Net((1, (2.0, "a"), frozenset({"b", "c"}), torch.Size([3]))),
    )
    assert module_digest(shared) == module_digest(copies)
    # the values still count: another item, type or container type differs
    for other in [(1, (2.0, "b")), (1, (2, "a")), [1, (2.0, "a")], (1, [2.0, "a"])]:
        changed = torch.nn.Sequential(Net(sizes), Net(other))
        assert module_digest(changed) != module_digest(shared), other
    # a tuple holding a mutable object keeps its sharing in the digest: two
    # members sharing one list are not two members with a list each
    items = [1]
    one_list = torch.nn.Sequential(Net((items,)), Net((items,)))
    two_lists = torch.nn.Sequential(Net(([1],)), Net(([1],)))
    assert module_digest(one_list) != module_digest(two_lists)


def test_a_tuple_met_many_times_is_scanned_once(monkeypatch):
    # hostile: 2**20 leaves by value from 20 objects, and one shared tuple
    # that is not plain (a numpy value in it) met 1,000 times: each tuple is
    # scanned once, plain or not (the scans were exponential and quadratic)
    from skfewshot._feature_cache import _StateHash

    scans = []
    scan = _StateHash._plain_value

    def counted(self, value):
        if type(value) is tuple and id(value) not in self._plain:
            scans.append(value)  # not remembered: its items are read
        return scan(self, value)

    monkeypatch.setattr(_StateHash, "_plain_value", counted)
    value = (0,)
    for _ in range(20):
        value = (value, value)
    shared = (*range(10), np.float64(1.0))
    module_digest([value, [shared] * 1000])
    assert len(scans) == len({id(v) for v in scans}) == 22


def test_a_method_default_the_digest_cannot_read_keeps_the_cache_on(X):
    # a sentinel, a Path or a slice as a default of any method made the whole
    # backbone uncacheable (every row recomputed, with a warning); such a
    # default is now read by its type and repr, which a swap changes
    from pathlib import Path

    missing = object()

    class Net(torch.nn.Linear):
        def forward(self, x, scale=missing, idx=slice(None)):
            return super().forward(x)

        def save(self, path=Path("out")):  # never called by forward
            return path

    torch.manual_seed(0)
    net = Net(8, 2)
    digest = module_digest(net)
    assert module_digest(net) == digest
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "the feature cache is off" warning
        bt = BackboneTransformer(net, device="cpu").fit(X)
        first = bt.transform(X)
    assert_array_equal(bt.transform(X), first)
    Net.forward.__defaults__ = (object(), slice(None))
    assert module_digest(net) != digest
    # a function attribute's unreadable default still turns the cache off
    net.helper = lambda x, scale=missing: x
    with pytest.raises(_Uncacheable, match=r"a default of .*<lambda>: a object"):
        module_digest(net)


def _wrapping(func):
    """A typical decorator: a closure, with ``functools.wraps``."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


class _Wrapped(torch.nn.Module):
    def __init__(self):
        super().__init__()  # a closure over __class__
        self.lin = torch.nn.Linear(2, 2)

    @_wrapping
    def forward(self, x, scale=1.0):
        return self.lin(x) * scale


class _NoGrad(torch.nn.Module):
    @torch.no_grad()
    def forward(self, x):
        return x


@pytest.mark.parametrize(
    "make",
    [
        Conv4,
        lambda: ResNet12(channels=(2, 2, 2, 2)),
        lambda: torch.nn.Sequential(
            torch.nn.Conv2d(1, 2, 3),
            torch.nn.BatchNorm2d(2),
            torch.nn.MultiheadAttention(2, 1),
            torch.nn.TransformerEncoderLayer(2, 1, 4),
        ),
        _Wrapped,
        _NoGrad,
    ],
    ids=["Conv4", "ResNet12", "torch.nn layers", "functools.wraps", "no_grad"],
)
def test_ordinary_classes_with_closures_in_their_methods_stay_cacheable(make):
    net = make()
    assert module_digest(net) == module_digest(net)
