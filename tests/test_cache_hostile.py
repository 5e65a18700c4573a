"""The feature cache under hostile conditions: state the old key did not read.

A caller's ``torch.autocast``, the train/eval flag of modules ``eval()`` does
not reach, two threads switching the flags of a shared submodule, and code
edited in place (IPython's ``%autoreload``): in each case a row computed in
one condition must never be served in another.
"""

import contextlib
import threading

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from skfewshot._feature_cache import FEATURE_CACHE, module_digest
from skfewshot.backbone import BackboneTransformer
from skfewshot.text import SentenceEncoder

# Float32 results differ in the last bits across batch sizes and thread counts;
# bfloat16 / float16 ones are off full precision by about 1e-3.
RTOL, ATOL = 1e-5, 1e-6
TIMEOUT = 60  # seconds a thread may take before the test fails instead of hanging


@pytest.fixture(autouse=True)
def empty_cache():
    FEATURE_CACHE.clear()
    yield
    FEATURE_CACHE.clear()


@pytest.fixture
def X():
    return np.random.RandomState(0).rand(6, 8).astype(np.float32)


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    )


def full_precision(net, X):
    with torch.no_grad():
        return net(torch.from_numpy(X)).numpy()


class Counting(torch.nn.Module):
    """Wraps a module and counts the rows it sees (class-level)."""

    rows = 0

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        type(self).rows += len(x)
        return self.net(x)


class ModeHead(torch.nn.Module):
    """Deterministic and mode-dependent: the identity in train mode, tanh in eval."""

    def forward(self, x):
        return x if self.training else torch.tanh(x)


@contextlib.contextmanager
def cpu_autocast_dtype(dtype):
    """torch's thread-local autocast dtype for the CPU, set for the block."""
    before = torch.get_autocast_dtype("cpu")
    torch.set_autocast_dtype("cpu", dtype)
    try:
        yield
    finally:
        torch.set_autocast_dtype("cpu", before)


# -- a caller's autocast ---------------------------------------------------------


def test_a_callers_autocast_does_not_reach_the_forward_with_amp_off(X):
    Counting.rows = 0
    net = Counting(mlp())
    bt = BackboneTransformer(net, device="cpu").fit(X[:1])
    with torch.autocast("cpu"):  # the caller's own mixed precision
        inside = bt.transform(X)
    later = bt.transform(X)
    assert Counting.rows == 6  # one forward per row: the cache is shared
    exact = full_precision(net, X)
    # amp=False computes in full precision inside the block too (bfloat16 is
    # 1e-3 off), so the rows it caches are those of a full-precision call
    assert_allclose(inside, exact, rtol=RTOL, atol=ATOL)
    assert_allclose(later, exact, rtol=RTOL, atol=ATOL)
    assert_array_equal(later, inside)


def test_amp_uses_bfloat16_on_cpu_whatever_torch_autocast_dtype_says(X):
    net = mlp()
    with cpu_autocast_dtype(torch.bfloat16):
        cached = BackboneTransformer(net, device="cpu", amp=True).fit(X)
        default = BackboneTransformer(net, device="cpu", amp=True, cache=False)
        default = default.fit(X).transform(X)
    with cpu_autocast_dtype(torch.float16):
        other = BackboneTransformer(net, device="cpu", amp=True, cache=False)
        other = other.fit(X).transform(X)
        served = cached.transform(X)
    assert_array_equal(other, default)  # the same bfloat16 computation
    assert_array_equal(served, default)
    assert not np.array_equal(default, full_precision(net, X))  # amp really ran
    assert_allclose(default, full_precision(net, X), atol=5e-2)


class TextNet(torch.nn.Module):
    """An encoder object that is a module: texts -> 3 counts -> Linear -> head."""

    def __init__(self, head=None):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, 4)
        self.head = head if head is not None else torch.nn.Identity()

    def features(self, texts):
        return torch.tensor(
            [[len(t), t.count("a"), t.count("b")] for t in texts], dtype=torch.float32
        )

    @torch.no_grad()
    def encode(self, texts, batch_size=32, **kwargs):
        return self.head(self.lin(self.features(texts))).float().numpy()


TEXTS = ["ab", "aab", "bbb", "abab", "babble", "a"]


def test_sentence_encoder_keys_a_callers_autocast():
    enc = TextNet()
    se = SentenceEncoder(enc).fit(TEXTS[:1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = se.transform(TEXTS)
        reference = enc.encode(TEXTS)
    later = se.transform(TEXTS)
    with torch.no_grad():
        exact = enc.lin(enc.features(TEXTS)).numpy()
    # encode runs under the caller's autocast (it is the encoder's own choice
    # of precision), but its bfloat16 rows are cached apart
    assert_array_equal(inside, reference)
    assert not np.allclose(inside, exact, rtol=RTOL, atol=ATOL)
    assert_allclose(later, exact, rtol=RTOL, atol=ATOL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_array_equal(se.transform(TEXTS), inside)  # served again


# -- train/eval flags the key did not read -----------------------------------------


class HiddenHead(torch.nn.Module):
    """A Linear then a ModeHead held in a plain list: ``eval()`` does not reach it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(8, 4)
        self.heads = [ModeHead()]

    def forward(self, x):
        return self.heads[0](self.lin(x))


def test_the_flag_of_a_module_eval_does_not_reach_is_keyed(X):
    net = HiddenHead()
    bt = BackboneTransformer(net, device="cpu").fit(X[:1])
    with torch.no_grad():
        linear = net.lin(torch.from_numpy(X)).numpy()
    in_train = bt.transform(X)  # the hidden head keeps its train mode
    net.heads[0].eval()
    in_eval = bt.transform(X)
    net.heads[0].train()
    again = bt.transform(X)
    assert_allclose(in_train, linear, rtol=RTOL, atol=ATOL)
    assert_allclose(in_eval, np.tanh(linear), rtol=RTOL, atol=ATOL)
    assert_array_equal(again, in_train)


def test_toggling_registered_modules_keeps_the_cache(X):
    # they run in eval mode whatever their flag: a toggle costs no forward
    Counting.rows = 0
    head = ModeHead()
    net = Counting(torch.nn.Sequential(mlp(), head))
    net.aliases = [head]  # registered too: still switched to eval for the forward
    bt = BackboneTransformer(net, device="cpu").fit(X)
    first = bt.transform(X)
    for toggle in (net.train, net.eval, head.train):
        toggle()
        assert_array_equal(bt.transform(X), first)
    assert Counting.rows == 6
    assert_allclose(first, full_precision(net.eval(), X), rtol=RTOL, atol=ATOL)


def test_sentence_encoder_keys_the_train_eval_flags():
    enc = TextNet(head=ModeHead())
    se = SentenceEncoder(enc).fit(["zzz"])  # fit puts the encoder in eval mode
    with torch.no_grad():
        linear = enc.lin(enc.features(TEXTS)).numpy()
    enc.train()  # encode does not call eval(): it embeds in train mode
    in_train = se.transform(TEXTS)
    enc.eval()
    in_eval = se.transform(TEXTS)
    assert_allclose(in_train, linear, rtol=RTOL, atol=ATOL)
    assert_allclose(in_eval, np.tanh(linear), rtol=RTOL, atol=ATOL)
    assert_array_equal(
        in_eval, SentenceEncoder(enc, cache=False).fit(TEXTS).transform(TEXTS)
    )


# -- two threads, one shared submodule -------------------------------------------


def _start(target, results, name):
    def run():
        try:
            results[name] = target()
        except BaseException as exc:  # re-raised by the test
            results[name] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def gate_class():
    """A module class whose forward, once armed, waits until the test releases it.

    Its events are class attributes: no part of the cache key.
    """

    class Gate(torch.nn.Module):
        armed = False
        entered = threading.Event()
        release = threading.Event()

        def forward(self, x):
            if Gate.armed:
                Gate.armed = False
                Gate.entered.set()
                Gate.release.wait(TIMEOUT)
            return x

    return Gate


def test_transformers_sharing_a_submodule_do_not_switch_each_others_flags(X):
    GateA, GateB = gate_class(), gate_class()
    inner = torch.nn.Sequential(GateA(), ModeHead())
    outer = torch.nn.Sequential(GateB(), inner)  # inner is shared
    outer.train()
    inner_bt = BackboneTransformer(inner, device="cpu").fit(X[:1])
    outer_bt = BackboneTransformer(outer, device="cpu").fit(X[:1])
    results = {}
    GateA.armed = GateB.armed = True
    try:
        second = _start(lambda: inner_bt.transform(X), results, "inner")
        assert GateA.entered.wait(TIMEOUT)  # inner is in eval mode, in its forward
        first = _start(lambda: outer_bt.transform(X), results, "outer")
        # outer's forward must wait for inner's: with a lock per top-level
        # module it ran now, and inner's transform then put inner back in
        # train mode under it (and outer's, the eval mode it found, after it)
        GateB.entered.wait(0.5)
        GateA.release.set()
        second.join(TIMEOUT)
    finally:
        GateA.release.set()
        GateB.release.set()
    first.join(TIMEOUT)
    second.join(TIMEOUT)
    assert not first.is_alive() and not second.is_alive()
    for name in ("outer", "inner"):
        if isinstance(results[name], BaseException):
            raise results[name]
        assert_allclose(results[name], np.tanh(X), rtol=RTOL, atol=ATOL)
    assert [m.training for m in outer.modules()] == [True] * 5
    assert_allclose(outer_bt.transform(X), np.tanh(X), rtol=RTOL, atol=ATOL)


def test_a_forward_may_call_a_transformer_in_the_same_thread(X):
    class Nested(torch.nn.Module):
        """Its forward hands its registered head to a transformer of its own."""

        transformer = None  # a class attribute: no part of the cache key

        def __init__(self):
            super().__init__()
            self.head = ModeHead()

        def forward(self, x):
            features = Nested.transformer.transform(x.numpy())
            return torch.from_numpy(features) + 1

    net = Nested().train()
    Nested.transformer = BackboneTransformer(net.head, device="cpu").fit(X[:1])
    results = {}
    thread = _start(
        lambda: BackboneTransformer(net, device="cpu").fit(X).transform(X),
        results,
        "nested",
    )
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "a transform inside a forward deadlocked"
    if isinstance(results["nested"], BaseException):
        raise results["nested"]
    assert_allclose(results["nested"], np.tanh(X) + 1, rtol=RTOL, atol=ATOL)
    assert net.training and net.head.training


def test_a_forward_may_hand_another_backbone_to_another_thread(X):
    # with one lock for every forward of the process, the worker waited for
    # the lock the forward held while the forward waited for the worker
    from concurrent.futures import ThreadPoolExecutor

    inner = BackboneTransformer(torch.nn.Linear(8, 4), device="cpu").fit(X)
    expected = inner.transform(X)

    class Handing(torch.nn.Module):
        pool = None  # class attributes: no part of the cache key

        def forward(self, x):
            done = Handing.pool.submit(inner.transform, x.numpy())
            return torch.from_numpy(done.result(timeout=TIMEOUT))

    with ThreadPoolExecutor(1) as Handing.pool:
        results = {}
        thread = _start(
            lambda: BackboneTransformer(Handing(), device="cpu").fit(X).transform(X),
            results,
            "handing",
        )
        thread.join(2 * TIMEOUT)
    assert not thread.is_alive(), "a forward waiting on another thread deadlocked"
    if isinstance(results["handing"], BaseException):
        raise results["handing"]
    assert_allclose(results["handing"], expected, rtol=RTOL, atol=ATOL)


# Python 3.12+ warns at every fork of a multi-threaded process: these tests fork
# one on purpose (a parent thread mid-forward or holding the cache's lock)
_FORKS_THREADED = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
)


@_FORKS_THREADED
@pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(),
    reason="the fork start method does not exist on this platform",
)
def test_a_child_forked_during_a_forward_can_transform(X):
    # a child inherits the locks in the state they had: one that a thread of
    # the parent held (here the lock of ``lin``, mid-forward) stayed held for
    # ever in the child, which hung on its first transform of that module
    import multiprocessing

    entered, release = threading.Event(), threading.Event()

    class Parked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 4)

        def forward(self, x):
            entered.set()
            release.wait(TIMEOUT)
            return self.lin(x)

    parked = Parked()
    with torch.no_grad():
        expected = parked.lin(torch.from_numpy(X)).numpy()
    thread = threading.Thread(
        target=lambda: BackboneTransformer(parked, device="cpu").fit(X), daemon=True
    )
    thread.start()
    try:
        assert entered.wait(TIMEOUT)
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(
            target=lambda: queue.put(
                BackboneTransformer(parked.lin, device="cpu").fit(X).transform(X)
            )
        )
        child.start()
        child.join(TIMEOUT)
        hung = child.is_alive()
        if hung:
            child.kill()
        assert not hung, "a transform in a child forked during a forward hung"
        assert_allclose(queue.get(timeout=TIMEOUT), expected, rtol=RTOL, atol=ATOL)
    finally:
        release.set()
        thread.join(TIMEOUT)


@_FORKS_THREADED
@pytest.mark.skipif(
    not hasattr(__import__("os"), "fork"), reason="this platform does not fork"
)
def test_a_child_forked_while_the_cache_is_busy_can_transform(X):
    # a thread of the parent held the cache's lock (as during every read and
    # put) at the fork: the child inherited it held, and its first transform
    # waited for ever; the fork now waits for the lock instead
    import multiprocessing

    from skfewshot._feature_cache import FEATURE_CACHE

    holding, done = threading.Event(), threading.Event()

    def hold():
        with FEATURE_CACHE._lock:
            holding.set()
            done.wait(0.5)  # a slow put

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert holding.wait(TIMEOUT)
    lin = torch.nn.Linear(8, 4)
    with torch.no_grad():
        expected = lin(torch.from_numpy(X)).numpy()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(
        target=lambda: queue.put(
            BackboneTransformer(lin, device="cpu").fit(X).transform(X)
        )
    )
    child.start()
    child.join(TIMEOUT)
    hung = child.is_alive()
    if hung:
        child.kill()
    thread.join(TIMEOUT)
    assert not hung, "a transform in a child forked while the cache was busy hung"
    assert_allclose(queue.get(timeout=TIMEOUT), expected, rtol=RTOL, atol=ATOL)


# -- code edited in place (IPython's %autoreload) ----------------------------------


def test_a_forward_edited_in_place_is_not_served_old_features(X):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.lin(x)

    def edited(self, x):
        return torch.relu(self.lin(x))

    net = Net()
    bt = BackboneTransformer(net, device="cpu")
    before = bt.fit_transform(X)
    original = Net.forward.__code__
    Net.forward.__code__ = edited.__code__  # what %autoreload 2 does
    after = bt.transform(X)
    assert_allclose(after, np.maximum(before, 0), rtol=RTOL, atol=ATOL)
    assert (before < 0).any()  # the edit changes the features
    Net.forward.__code__ = original
    assert_array_equal(bt.transform(X), before)  # the old code's rows, cached


def _edits():
    """(name, make object, edit it in place) for every kind of code the key reads."""

    def helper(x):
        return x

    def other(x):
        return -x

    def method(self, x):
        return x

    def other_method(self, x):
        return -x

    class Block(torch.nn.Module):
        def forward(self, x):
            return x

        @staticmethod
        def scale(x):
            return x

        @property
        def factor(self):
            return 1

    class Decorated(torch.nn.Module):
        @torch.no_grad()  # functools.wraps: the wrapper's code is torch's
        def forward(self, x):
            return x

    class Base(torch.nn.Module):
        def forward(self, x):
            return x

    class Derived(Base):
        pass

    class Helper:
        def __init__(self):
            self.k = 1

        def apply(self, x):
            return x

    def with_block():
        return torch.nn.Sequential(torch.nn.Linear(2, 2), Block())

    def with_attribute(value):
        def make():
            net = torch.nn.Linear(2, 2)
            net.extra = value
            return net

        return make

    def swap(func, code):
        def edit():
            func.__code__ = code

        return edit

    return [
        ("submodule forward", with_block, swap(Block.forward, method.__code__)),
        (
            "staticmethod",
            with_block,
            swap(Block.__dict__["scale"].__func__, other.__code__),
        ),
        ("property", with_block, swap(Block.factor.fget, other.__code__)),
        (
            "decorated forward",
            Decorated,
            swap(Decorated.forward.__wrapped__, method.__code__),
        ),
        ("base class method", Derived, swap(Base.forward, other_method.__code__)),
        ("function attribute", with_attribute(helper), swap(helper, other.__code__)),
        (
            "plain object's method",
            with_attribute(Helper()),
            swap(Helper.apply, other_method.__code__),
        ),
        (
            "class attribute",
            with_attribute(Helper),
            swap(Helper.apply, method.__code__),
        ),
    ]


EDITS = _edits()


def test_the_digest_reads_the_flags_only_when_asked():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    in_train = module_digest(net.train(), modes=True)
    in_eval = module_digest(net.eval(), modes=True)
    assert in_train != in_eval
    net[1].train()
    assert module_digest(net, modes=True) not in (in_train, in_eval)
    forced = module_digest(net.train(), modes=True, eval_modules=net.modules())
    assert forced == in_eval
    # a comparison of states (the savers' round-trip check) leaves them out
    assert module_digest(net.train()) == module_digest(net.eval())
