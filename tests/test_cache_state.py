"""The feature cache key against state a hostile audit found it did not read.

Each case changes what a backbone computes while keeping everything the key
read before the same; the key must change (or the cache turn off with a
warning), or the old rows are served: features of another model, silently.
"""

import enum
import threading
import time
import warnings
from collections import namedtuple

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal

# the cache emptied around every test
from test_cache_hostile import empty_cache  # noqa: F401

from skfewshot._feature_cache import _Uncacheable, module_digest
from skfewshot.backbone import BackboneTransformer

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml


class Holder(torch.nn.Module):
    """A module whose forward scales its input by what ``value`` says."""

    def __init__(self, value):
        super().__init__()
        self.value = value


def _digest(value):
    return module_digest(Holder(value))


def test_a_tensor_is_read_with_its_class_and_what_is_stored_on_it():
    # a quantised weight keeps its state on the Parameter (bitsandbytes'
    # Params4bit: quant_state); a subclass may compute otherwise
    weight = torch.nn.Parameter(torch.ones(3))
    weight.absmax = torch.ones(1)
    before = _digest(weight)
    weight.absmax.mul_(5)
    assert _digest(weight) != before

    class Negated(torch.Tensor):
        pass

    assert _digest(torch.ones(3)) != _digest(torch.ones(3).as_subclass(Negated))
    # the class is always written: a tensor then a class is not a subclass
    t = torch.ones(3)
    assert _digest([t, Negated]) != _digest([t.as_subclass(Negated)])

    class Slotted(torch.Tensor):
        __slots__ = ("scale",)

    with pytest.raises(_Uncacheable, match="a Slotted tensor with __slots__"):
        _digest(torch.ones(3).as_subclass(Slotted))
    # a plain tensor and a Parameter of the same bytes read as before
    assert _digest(torch.ones(3)) == _digest(torch.ones(3))


def test_numpy_values_are_read_with_their_type_shape_and_field_names():
    # np.ascontiguousarray made a 0-d array 1-d, and dtype.str reads '|V8'
    # for any two 4-byte fields: x[:, idx] has another rank with each
    values = [np.int64(2), np.array(2), np.array([2])]
    assert len({_digest(v) for v in values}) == 3
    a = np.zeros(2, dtype=[("x", "f4"), ("y", "f4")])
    b = np.zeros(2, dtype=[("y", "f4"), ("x", "f4")])
    assert _digest(a) != _digest(b)
    masked = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    assert _digest(masked) != _digest(np.ma.masked_array([1.0, 2.0]))


def test_enums_namedtuples_and_functions_are_read_with_their_code_and_state():
    # an Enum was read by its repr, a namedtuple by its class's identity, a
    # function without what is stored on it: a redefined or edited class, or
    # an edited attribute, kept the key
    def make_enum():
        class Mode(enum.Enum):
            A = 1

            def factor(self):
                return 1.0

        return Mode

    mode = make_enum()
    before = _digest(mode.A)
    assert _digest(make_enum().A) != before  # a notebook cell run again
    mode.factor.__code__ = (lambda self: 2.0).__code__  # %autoreload
    assert _digest(mode.A) != before
    before = _digest(mode.A)
    mode.A.k = 5  # an attribute of the member
    assert _digest(mode.A) != before

    class Perm(enum.IntFlag):
        R = 4
        W = 2

    # a flag's unnamed values (and, before Python 3.11, its combinations)
    # have no name: the value tells them apart
    assert len({_digest(Perm(v)) for v in (0, 8, 16, 6)}) == 4

    class Pair(namedtuple("Pair", "a b")):
        def total(self):
            return self.a + self.b

    pair = Pair(1, 2)
    before = _digest(pair)
    pair.scale = 3.0  # a subclass without __slots__ has a __dict__
    assert _digest(pair) != before
    before = _digest(pair)
    Pair.total.__code__ = (lambda self: self.a).__code__
    assert _digest(pair) != before

    scale = _scale  # its code reads scale.k
    scale.k = 1.0
    before = _digest(scale)
    scale.k = 2.0
    assert _digest(scale) != before
    # what is stored on a function is not a dict beside it
    assert _digest([scale, {"k": 2.0}]) != before
    del scale.k
    assert _digest([scale, {"k": 2.0}]) != before


def _scale(x):
    return x * _scale.k


def test_attribute_names_cannot_pose_as_other_attributes():
    one, two = Holder(2.0), Holder(1.0)
    del one.value, two.value
    setattr(one, "a=float:1.0;b", 2.0)
    one.value = None
    two.a, two.b, two.value = 1.0, 2.0, None
    assert module_digest(one) != module_digest(two)


def test_a_module_with_slots_turns_the_cache_off():
    class Slotted(torch.nn.Module):
        __slots__ = ("factor",)

        def forward(self, x):
            return x * self.factor

    net = Slotted()
    net.factor = 1.0
    with pytest.raises(_Uncacheable, match="Slotted has __slots__"):
        module_digest(net)
    X = np.ones((2, 3), dtype=np.float32)
    with pytest.warns(UserWarning, match="Slotted has __slots__"):
        bt = BackboneTransformer(net, device="cpu").fit(X)
        first = bt.transform(X)
        net.factor = 2.0
        assert_array_equal(bt.transform(X), 2 * first)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
def test_a_state_the_digest_cannot_read_turns_the_cache_off_instead_of_failing():
    class Nested(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.parts = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])

        def forward(self, x):
            return x * self.parts.unbind()[1].sum()

    X = np.ones((2, 4), dtype=np.float32)
    with pytest.warns(UserWarning, match=r"its state could not be read \("):
        out = BackboneTransformer(Nested(), device="cpu").fit(X).transform(X)
    assert_array_equal(out, 3 * X)


def test_weights_changed_during_a_forward_are_not_cached_under_the_old_state():
    # another thread's update during the forward, undone after it: the rows
    # of the updated weights were stored under the first state's key and
    # served to every later transform in that state
    started = threading.Event()

    class Slow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(4))

        def forward(self, x):
            started.set()
            time.sleep(0.05)
            return x * self.w

    net = Slow()
    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    bt = BackboneTransformer(net, device="cpu", batch_size=1).fit(X[:1])
    BackboneTransformer.clear_cache()
    started.clear()
    thread = threading.Thread(target=bt.transform, args=(X,))
    thread.start()
    assert started.wait(10)
    net.w.data.mul_(2)
    thread.join(30)
    assert not thread.is_alive()
    net.w.data.mul_(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_array_equal(bt.transform(X), X)
