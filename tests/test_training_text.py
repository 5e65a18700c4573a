"""Tests for skfewshot.training._text: the trainers on texts and TextEmbedder.

A tiny bag-of-words body (an ``nn.EmbeddingBag`` over a toy vocabulary) and a
toy character tokenizer stand in for sentence-transformers and Hugging Face
models: nothing is downloaded, and each test runs in well under a second.
"""

import signal

import numpy as np
import pytest
import torch
from _training_testing import interrupted_run, resumed_run
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import Callback, EarlyStopping

from skfewshot import PrototypeClassifier
from skfewshot.model_selection import evaluate_episodes
from skfewshot.text import SentenceEncoder
from skfewshot.training import (
    TextEmbedder,
    TextProtoNetMetaTrainer,
    TextSupervisedPretrainer,
)

# -- a toy text problem ----------------------------------------------------------

#: Each intent has its own two keywords; every text also has two shared words.
_KEYWORDS = {
    "card": ("card", "lost"),
    "topup": ("top", "up"),
    "refund": ("refund", "money"),
    "pin": ("pin", "blocked"),
    "fee": ("fee", "charged"),
    "rate": ("exchange", "rate"),
}
_SHARED = ("my", "the", "please", "help")
VOCAB = sorted({w for pair in _KEYWORDS.values() for w in pair} | set(_SHARED))
BASE = ("card", "topup", "refund", "pin")
NOVEL = ("fee", "rate")


def toy_texts(intents, per_intent=8, seed=0):
    """``per_intent`` texts per intent: one keyword among shared filler words."""
    rng = np.random.RandomState(seed)
    texts, labels = [], []
    for intent in intents:
        for _ in range(per_intent):
            words = [rng.choice(_KEYWORDS[intent])] + list(rng.choice(_SHARED, size=3))
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(intent)
    return texts, np.array(labels)


class BagOfWords(torch.nn.Module):
    """Mean of word embeddings; records the texts it sees while training."""

    def __init__(self, dim=6, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.index = {w: i for i, w in enumerate(VOCAB)}
        self.bag = torch.nn.EmbeddingBag(len(VOCAB), dim)
        self.seen = []

    def forward(self, texts):
        if self.training:
            self.seen.append(list(texts))
        ids = [torch.tensor([self.index[w] for w in t.split()]) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return self.bag(torch.cat(ids), offsets)

    def encode(self, texts, batch_size=32, **kwargs):
        with torch.no_grad():
            return self(list(texts)).numpy()


def char_tokenizer(texts, padding=True, truncation=True, max_length=128, **kwargs):
    """HF-style: ids 1..26 for a..z, 0 for padding, right-padded."""
    ids = [[ord(c) - 96 for c in t if c.isalpha()][:max_length] for t in texts]
    width = max(map(len, ids))
    ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
    return {"input_ids": ids, "attention_mask": (ids > 0).long()}


class CharModel(torch.nn.Module):
    """Token states of a character embedding: ``(batch, n_tokens, dim)``."""

    def __init__(self, dim=6, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = torch.nn.Embedding(27, dim)

    def forward(self, input_ids, attention_mask):
        return self.embedding(input_ids)


def supervised(body=None, **params):
    params = {"max_epochs": 4, "lr": 0.1, "batch_size": 8, "verbose": 0,
              "device": "cpu", "random_state": 0, **params}  # fmt: skip
    return TextSupervisedPretrainer(body or BagOfWords(), **params)


def protonet(body=None, **params):
    params = {"n_way": 3, "n_shot": 2, "n_query": 2, "episodes_per_epoch": 6,
              "max_epochs": 4, "lr": 0.1, "verbose": 0, "device": "cpu",
              "random_state": 0, **params}  # fmt: skip
    return TextProtoNetMetaTrainer(body or BagOfWords(), **params)


TRAINERS = [
    pytest.param(supervised, id="supervised-cosine"),
    pytest.param(lambda **p: supervised(head="linear", **p), id="supervised-linear"),
    pytest.param(protonet, id="protonet-cosine"),
    pytest.param(lambda **p: protonet(metric="euclidean", **p), id="protonet-eucl"),
]


@pytest.fixture(scope="module")
def base():
    return toy_texts(BASE)


# -- learning -------------------------------------------------------------------


@pytest.mark.parametrize("make", TRAINERS)
def test_training_lowers_the_loss_on_a_separable_problem(make, base):
    trainer = make().fit(*base)
    loss = trainer.history_[:, "train_loss"]
    acc = trainer.history_[:, "train_acc"]
    assert len(loss) == 4
    assert loss[-1] < loss[0]
    assert acc[-1] > acc[0]


@pytest.mark.parametrize("make", TRAINERS)
def test_a_text_embedder_trains_too(make, base):
    trainer = make(body=TextEmbedder(CharModel(), char_tokenizer)).fit(*base)
    loss = trainer.history_[:, "train_loss"]
    assert loss[-1] < loss[0]
    assert isinstance(trainer.backbone_, TextEmbedder)


def test_fitted_attributes_and_the_module_left_alone(base):
    body = BagOfWords()
    before = {k: v.clone() for k, v in body.state_dict().items()}
    trainer = supervised(body=body).fit(*base)
    assert body.seen == []  # the user's module is copied, never trained
    assert all(torch.equal(before[k], v) for k, v in body.state_dict().items())
    np.testing.assert_array_equal(trainer.classes_, sorted(BASE))
    assert trainer.n_features_out_ == 6
    assert not trainer.backbone_.training
    assert trainer.backbone_ is not trainer.net_.module_.backbone.body
    assert not hasattr(trainer, "n_features_in_")


def test_int_random_state_is_deterministic(base):
    a = protonet().fit(*base).backbone_.state_dict()
    b = protonet().fit(*base).backbone_.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_head_gets_its_own_learning_rate(base):
    trainer = supervised(lr=0.5, head_lr=0.25, lr_schedule=None).fit(*base)
    groups = trainer.net_.optimizer_.param_groups
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    head = trainer.net_.module_.head
    body = trainer.net_.module_.backbone.body
    assert {lrs[id(p)] for p in head.parameters()} == {0.25}
    assert {lrs[id(p)] for p in body.parameters()} == {0.5}
    single = supervised(head_lr=None, lr_schedule=None).fit(*base)
    assert len(single.net_.optimizer_.param_groups) == 1


# -- episodes -------------------------------------------------------------------


def test_episodes_never_mix_base_and_novel_intents(base):
    texts, y = base
    novel_texts, _ = toy_texts(NOVEL, seed=1)
    # the trainer sees base intents only; the novel texts are never given to it
    trainer = protonet().fit(texts, y)
    seen = trainer.net_.module_.backbone.body.seen
    assert len(seen) == 4 * 6  # one forward per episode
    intent_of = dict(zip(texts, y))
    for episode in seen:
        assert len(episode) == 3 * (2 + 2)
        assert not set(episode) & set(novel_texts)
        intents, counts = np.unique([intent_of[t] for t in episode], return_counts=True)
        assert set(intents) <= set(BASE)
        assert len(intents) == 3 and set(counts) == {4}  # 3-way, 2 + 2 per intent


def test_within_groups_episodes_hold_the_intents_of_one_group():
    texts, y = toy_texts(BASE + NOVEL)
    domain = {"card": "a", "topup": "a", "refund": "a", "pin": "b", "fee": "b"}
    groups = np.array([domain.get(intent, "b") for intent in y])
    trainer = protonet(within_groups=True).fit(texts, y, groups)
    intent_of = dict(zip(texts, y))
    episodes = [
        {intent_of[t] for t in e} for e in trainer.net_.module_.backbone.body.seen
    ]
    assert len(episodes) == 4 * 6
    assert all(
        e in ({"card", "topup", "refund"}, {"pin", "fee", "rate"}) for e in episodes
    )
    assert len({frozenset(e) for e in episodes}) == 2
    with pytest.raises(ValueError, match=r"within_groups=True\) needs groups in fit"):
        protonet(within_groups=True).fit(texts, y)
    with pytest.raises(ValueError, match="TextSupervisedPretrainer got groups but"):
        supervised().fit(texts, y, groups)


# -- plugging back into SentenceEncoder -------------------------------------------


def test_the_trained_body_plugs_into_sentence_encoder(base):
    texts, y = base
    trainer = supervised().fit(texts, y)
    encoder = SentenceEncoder(trainer.backbone_, cache=False)
    Z = encoder.fit_transform(texts)
    with torch.no_grad():
        expected = trainer.backbone_(texts).numpy()
    np.testing.assert_allclose(Z, expected, rtol=1e-5, atol=1e-6)
    novel_texts, novel_y = toy_texts(NOVEL, seed=1)
    pipe = make_pipeline(SentenceEncoder(trainer.backbone_, cache=False),
                         PrototypeClassifier())  # fmt: skip
    scores = evaluate_episodes(pipe, novel_texts, novel_y, n_way=2, n_shot=1,
                               n_query=3, n_episodes=5, random_state=0)  # fmt: skip
    assert scores.n_episodes == 5


def test_text_embedder_mean_pools_the_unmasked_tokens():
    model = CharModel(dim=2)
    with torch.no_grad():  # row c of the embedding is (c, -c)
        model.embedding.weight.copy_(
            torch.arange(27.0)[:, None] * torch.tensor([1, -1])
        )
    embedder = TextEmbedder(model, char_tokenizer)
    # "ab" -> ids (1, 2): mean (1.5, -1.5); "d" -> (4, padding): mean (4, -4)
    out = embedder.encode(["ab", "d"], batch_size=1)
    np.testing.assert_allclose(out, [[1.5, -1.5], [4.0, -4.0]], rtol=1e-6)
    assert out.dtype == np.float32
    first = TextEmbedder(model, char_tokenizer, pooling="cls")(["ab", "d"])
    np.testing.assert_allclose(first.detach().numpy(), [[1, -1], [4, -4]])
    unit = TextEmbedder(model, char_tokenizer, normalize=True).encode(["ab"])
    np.testing.assert_allclose(unit, [[0.5**0.5, -(0.5**0.5)]], rtol=1e-6)
    truncated = TextEmbedder(model, char_tokenizer, max_length=1).encode(["ab"])
    np.testing.assert_allclose(truncated, [[1.0, -1.0]])
    assert embedder.training  # encode restored the training flag


class FakeSentenceTransformer(torch.nn.Module):
    """The sentence-transformers protocol: ``preprocess`` then a feature dict."""

    def __init__(self):
        super().__init__()
        self.body = BagOfWords()

    def preprocess(self, texts):
        return {"texts": list(texts), "n": torch.tensor(len(texts))}

    def forward(self, features):
        assert features["n"].item() == len(features["texts"])
        return {**features, "sentence_embedding": self.body(features["texts"])}

    def encode(self, texts, batch_size=32, **kwargs):
        with torch.no_grad():
            return self(self.preprocess(texts))["sentence_embedding"].numpy()


def test_a_sentence_transformers_model_is_tokenised_by_itself(base):
    trainer = protonet(body=FakeSentenceTransformer()).fit(*base)
    assert isinstance(trainer.backbone_, FakeSentenceTransformer)
    assert trainer.n_features_out_ == 6
    Z = SentenceEncoder(trainer.backbone_, cache=False).fit_transform(base[0][:3])
    assert Z.shape == (3, 6)


# -- interrupts (as the image trainers) -------------------------------------------


class _InterruptAtBatch(Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) at the end of the second batch."""

    def initialize(self):
        self.n_batches_ = 0
        return self

    def on_batch_end(self, net, **kwargs):
        self.n_batches_ += 1
        if self.n_batches_ == 2:
            raise KeyboardInterrupt


class _CtrlCAtEpochEnd(Callback):
    def on_epoch_end(self, net, **kwargs):
        signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("make", [supervised, protonet], ids=["supervised", "proto"])
@pytest.mark.parametrize("callback", [_InterruptAtBatch, _CtrlCAtEpochEnd])
def test_an_interrupt_propagates_and_leaves_the_trainer_unfitted(make, callback, base):
    trainer = make().fit(*base)
    with pytest.raises(KeyboardInterrupt):
        trainer.set_params(callbacks=[callback()]).fit(*base)
    with pytest.raises(NotFittedError):
        check_is_fitted(trainer)
    assert not hasattr(trainer, "backbone_")


def test_early_stopping_still_ends_training_normally(base):
    stop = EarlyStopping(monitor="train_loss", patience=1, threshold=10.0)
    trainer = supervised(max_epochs=5, callbacks=[stop]).fit(*base)
    assert len(trainer.history_) == 2
    assert hasattr(trainer, "backbone_")


# -- errors name the bad input -------------------------------------------------------


@pytest.mark.parametrize("make", [supervised, protonet], ids=["supervised", "proto"])
def test_invalid_texts_and_intents(make, base):
    texts, y = base
    with pytest.raises(ValueError, match="got a single string; wrap it in a list"):
        make().fit("card lost", ["card"])
    with pytest.raises(TypeError, match="non-string item.*type int"):
        make().fit(texts[:-1] + [3], y)
    with pytest.raises(
        ValueError, match=r"inconsistent numbers of samples: \[32, 31\]"
    ):
        make().fit(texts, y[:-1])
    with pytest.raises(ValueError, match=r"needs at least 2 base classes; .*'card'"):
        make().fit(texts[:8], y[:8])


def test_too_few_texts_for_the_episodes_names_the_shortfall(base):
    texts, y = base
    with pytest.raises(ValueError, match="n_shot \\+ n_query = 10"):
        protonet(n_shot=5, n_query=5).fit(texts, y)


class _Rejects(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.linear(x)  # a list of str is not a tensor


class _TokenStates(BagOfWords):
    def forward(self, texts):
        return super().forward(texts)[:, None, :]  # 3-D: not pooled


def test_a_module_that_is_not_a_text_encoder_is_named(base):
    with pytest.raises(ValueError, match="the module _Rejects rejected a batch of 2"):
        supervised(body=_Rejects()).fit(*base)
    with pytest.raises(ValueError, match=r"shape \(2, n_features\); it returned "
                       r"\(2, 1, 6\)"):  # fmt: skip
        protonet(body=_TokenStates()).fit(*base)


def test_invalid_parameters(base):
    with pytest.raises(InvalidParameterError, match="'head_lr' parameter"):
        supervised(head_lr=-1.0).fit(*base)
    with pytest.raises(InvalidParameterError, match="'module' parameter"):
        TextSupervisedPretrainer("all-MiniLM-L6-v2").fit(*base)
    assert "augment" not in supervised().get_params()
    assert clone(protonet()).get_params()["n_way"] == 3


def test_text_embedder_errors():
    with pytest.raises(
        ValueError, match='pooling must be "mean" or "cls", got \'max\''
    ):
        TextEmbedder(CharModel(), char_tokenizer, pooling="max")
    with pytest.raises(TypeError, match="tokenizer must be callable.*type dict"):
        TextEmbedder(CharModel(), {})

    class Pooled(CharModel):
        def forward(self, input_ids, attention_mask):
            return super().forward(input_ids, attention_mask).mean(dim=1)

    with pytest.raises(ValueError, match=r"token states .* it returned \(1, 6\)"):
        TextEmbedder(Pooled(), char_tokenizer).encode(["ab"])


@pytest.mark.parametrize("make", [supervised, protonet], ids=["supervised", "proto"])
def test_a_checkpoint_of_other_texts_is_not_resumed(make, base, tmp_path):
    # the net is fit on row indices: the checkpoint must recognise the texts too
    path = tmp_path / "run.ckpt"
    texts, intents = base
    interrupted_run(make, base, path)
    other = [" ".join(reversed(t.split())) + " please" for t in texts]
    with pytest.raises(ValueError, match="other training data"):
        resumed_run(make, (other, intents), path)
    with pytest.raises(ValueError, match="head_lr=0.01, this run has head_lr=0.1"):
        resumed_run(make, base, path, head_lr=0.1)
    resumed = resumed_run(make, base, path)  # the same texts resume
    checkpoint = dict(resumed.net_.callbacks_)["TrainingCheckpoint"]
    assert checkpoint.resumed_epochs_ == 1
    # a text trainer records its own parameters: head_lr, and no augment
    recorded = checkpoint.trainer_settings_
    assert recorded["trainer"] == type(resumed).__name__
    assert recorded["head_lr"] == 0.01 and "augment" not in recorded
    assert "teacher" not in recorded and "distill_weight" not in recorded


@pytest.mark.parametrize("make", [supervised, protonet], ids=["supervised", "proto"])
def test_episodic_validation_is_refused_by_name(make, base):
    # it would embed the validation texts as float arrays through a backbone
    # that maps row indices of the training texts
    from skfewshot.training import EpisodicValidation

    texts, intents = toy_texts(NOVEL)
    valid = EpisodicValidation(texts, intents, n_way=2, n_shot=1, n_query=2)
    trainer = make(callbacks=[valid])
    match = (
        f"EpisodicValidation does not support {type(trainer).__name__}: it "
        "embeds X_val as arrays through the net's backbone"
    )
    with pytest.raises(TypeError, match=match):
        trainer.fit(*base)
