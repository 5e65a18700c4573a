"""SentenceEncoder: texts through a pipeline, with a toy encoder object."""

import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline

from skfewshot import PrototypeClassifier
from skfewshot.text import SentenceEncoder

LETTERS = "abcdefgh"


class Letters:
    """Bag of letters: one count per letter of LETTERS."""

    def __init__(self):
        self.calls = []

    def encode(self, texts, batch_size=32, **kwargs):
        self.calls.append((list(texts), batch_size))
        return np.array([[t.count(c) for c in LETTERS] for t in texts], float)


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
    np.testing.assert_allclose(out[0, :2], [2 / np.sqrt(5), 1 / np.sqrt(5)], rtol=1e-6)


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
