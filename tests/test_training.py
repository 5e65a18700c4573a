import io
import pickle
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.utils._param_validation import InvalidParameterError
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, Checkpoint, EarlyStopping

from skfewshot.backbone import _CACHE, BackboneTransformer
from skfewshot.model_selection import evaluate_episodes
from skfewshot.models import Conv4
from skfewshot.prototype import PrototypeClassifier
from skfewshot.training import (
    EpisodicValidation,
    ProtoNetMetaTrainer,
    SupervisedPretrainer,
)
from skfewshot.training._heads import BackboneWithHead, CosineHead, PrototypeHead
from skfewshot.training._protonet import _EpisodeBatchSampler, _EpisodicNet


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits upsampled to (n, 1, 16, 16), 40 images per digit.

    Conv4 needs 16x16 at least (four 2x2 pools).
    """
    data = load_digits()
    keep = np.concatenate([np.flatnonzero(data.target == c)[:40] for c in range(10)])
    X = np.kron(data.images[keep] / 16.0, np.ones((2, 2)))[:, None]
    return X.astype(np.float32), data.target[keep]


@pytest.fixture
def base(digits):
    X, y = digits
    return X[y < 5], y[y < 5]


@pytest.fixture
def novel(digits):
    X, y = digits
    return X[y >= 5], y[y >= 5]


def _conv4(seed=0):
    torch.manual_seed(seed)
    return Conv4(hidden=8)


def _pretrainer(**params):
    params = {
        "max_epochs": 3,
        "batch_size": 32,
        "random_state": 0,
        "device": "cpu",  # bitwise determinism is a CPU promise
        **params,
    }
    return SupervisedPretrainer(_conv4(), **params)


def _protonet(**params):
    params = {
        "n_way": 5,
        "n_shot": 1,
        "n_query": 5,
        "episodes_per_epoch": 8,
        "max_epochs": 3,
        "random_state": 0,
        "device": "cpu",
        **params,
    }
    return ProtoNetMetaTrainer(_conv4(), **params)


TRAINERS = [
    pytest.param(_pretrainer, id="pretrain-linear"),
    pytest.param(lambda **p: _pretrainer(head="cosine", **p), id="pretrain-cosine"),
    pytest.param(_protonet, id="protonet-euclidean"),
    pytest.param(lambda **p: _protonet(metric="cosine", **p), id="protonet-cosine"),
]


def _same_state(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- learning -----------------------------------------------------------------


@pytest.mark.parametrize("make", TRAINERS)
def test_training_lowers_the_loss_and_raises_train_accuracy(make, base):
    trainer = make().fit(*base)
    loss = trainer.history_[:, "train_loss"]
    acc = trainer.history_[:, "train_acc"]
    assert len(loss) == 3
    assert loss[-1] < loss[0]
    assert acc[-1] > acc[0]
    assert acc[-1] > 0.6  # chance is 0.2


def test_fitted_attributes(base):
    X, y = base
    labels = np.array(["zero", "one", "two", "three", "four"])[y]
    trainer = _pretrainer(max_epochs=1).fit(X, labels)
    np.testing.assert_array_equal(trainer.classes_, sorted(set(labels)))
    assert trainer.n_features_out_ == 8
    assert trainer.n_features_in_ == 1
    assert not trainer.backbone_.training
    assert {p.device.type for p in trainer.backbone_.parameters()} == {"cpu"}
    # the backbone_ is a copy of the net's trained backbone, not the net's own
    assert trainer.backbone_ is not trainer.net_.module_.backbone
    assert _same_state(trainer.backbone_, trainer.net_.module_.backbone)
    assert isinstance(trainer.net_.module_.head, torch.nn.Linear)
    assert trainer.net_.module_.head.out_features == 5


def test_cosine_head_is_baseline_plus_plus(base):
    trainer = _pretrainer(head="cosine", max_epochs=1).fit(*base)
    head = trainer.net_.module_.head
    assert isinstance(head, CosineHead)
    assert head.weight.shape == (5, 8)
    # the scale is learnt: it moved away from its initial value of 10
    assert head.scale.item() != 10.0


# -- the user's module, determinism, save/load ---------------------------------


@pytest.mark.parametrize("make", TRAINERS)
def test_fit_leaves_the_module_and_global_rng_alone(make, base):
    trainer = make(max_epochs=1)
    module = trainer.module
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng_state = torch.get_rng_state()
    trainer.fit(*base)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert trainer.module is module and module.training
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not _same_state(trainer.backbone_, module)  # training did something


@pytest.mark.parametrize("make", TRAINERS)
def test_int_random_state_is_deterministic(make, base):
    a = make(max_epochs=2).fit(*base)
    b = clone(make(max_epochs=2)).fit(*base)
    c = make(max_epochs=2, random_state=1).fit(*base)
    assert _same_state(a.backbone_, b.backbone_)
    assert a.history_[:, "train_loss"] == b.history_[:, "train_loss"]
    assert not _same_state(a.backbone_, c.backbone_)


def test_backbone_state_dict_round_trip(base, tmp_path):
    trainer = _protonet(max_epochs=1).fit(*base)
    path = tmp_path / "backbone.pt"
    torch.save(trainer.backbone_.state_dict(), path)
    fresh = Conv4(hidden=8)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    fresh.eval()
    assert _same_state(fresh, trainer.backbone_)  # bit for bit
    x = torch.as_tensor(base[0][:7])
    with torch.no_grad():  # float32 outputs: within rounding on any CPU / BLAS
        torch.testing.assert_close(fresh(x), trainer.backbone_(x), rtol=1e-5, atol=1e-6)


def test_fitted_trainer_pickles(base):
    trainer = _pretrainer(max_epochs=1).fit(*base)
    again = pickle.loads(pickle.dumps(trainer))
    assert _same_state(again.backbone_, trainer.backbone_)  # bit for bit
    x = torch.as_tensor(base[0][:4])
    with torch.no_grad():  # float32 outputs: within rounding on any CPU / BLAS
        torch.testing.assert_close(
            again.backbone_(x), trainer.backbone_(x), rtol=1e-5, atol=1e-6
        )
    assert again.history_[:, "train_loss"] == trainer.history_[:, "train_loss"]


# -- errors -------------------------------------------------------------------


@pytest.mark.parametrize("make", TRAINERS)
def test_one_class_is_rejected(make, base):
    X, y = base
    with pytest.raises(ValueError, match="needs at least 2 base classes; y has 1 "):
        make().fit(X[y == 3], y[y == 3])


@pytest.mark.parametrize("make", TRAINERS)
def test_input_shape_rejected_by_the_module(make, base):
    X, y = base
    with pytest.raises(
        ValueError, match=r"module rejected inputs of shape \(1, 8, 8\).*16x16"
    ):
        make().fit(X[:, :, ::2, ::2], y)


def test_module_must_return_a_feature_matrix(base):
    trainer = SupervisedPretrainer(torch.nn.Conv2d(1, 2, 3), max_epochs=1)
    with pytest.raises(ValueError, match=r"2-D tensor.*returned \(2, 2, 14, 14\)"):
        trainer.fit(*base)


def test_protonet_needs_enough_classes_and_samples(base):
    X, y = base
    with pytest.raises(ValueError, match="n_way=6 classes .* only 5 of 5"):
        _protonet(n_way=6).fit(X, y)
    with pytest.raises(ValueError, match="at least n_shot \\+ n_query = 45"):
        _protonet(n_shot=5, n_query=40).fit(X, y)


@pytest.mark.parametrize(
    "make",
    [
        lambda: _pretrainer(head="svm"),
        lambda: _pretrainer(lr=0.0),
        lambda: _pretrainer(optimizer="rmsprop"),
        lambda: _protonet(metric="manhattan"),
        lambda: _protonet(n_way=1),
        lambda: SupervisedPretrainer("conv4"),
    ],
)
def test_invalid_parameters(make, base):
    with pytest.raises(InvalidParameterError):
        make().fit(*base)


def test_missing_device_is_a_clear_error(base):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="device='cuda' was requested"):
        _pretrainer(device="cuda").fit(*base)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make", TRAINERS)
def test_fit_on_cuda_returns_a_cpu_backbone(make, base, novel):
    trainer = make(device="cuda", callbacks=[_validation(novel)]).fit(*base)
    assert trainer.net_.module_.head is not None
    assert {p.device.type for p in trainer.backbone_.parameters()} == {"cpu"}
    assert {p.device.type for p in trainer.net_.module_.parameters()} == {"cuda"}
    assert trainer.history_[-1, "train_acc"] > 0.6
    assert 0.0 <= trainer.history_[-1, "valid_fsl_acc"] <= 1.0


# -- options ------------------------------------------------------------------


def test_augment_sees_every_training_batch(base):
    calls = []

    def augment(X):
        calls.append(tuple(X.shape))
        return X + 0.1 * torch.randn_like(X)

    plain = _protonet(max_epochs=2).fit(*base)
    augmented = _protonet(max_epochs=2, augment=augment).fit(*base)
    assert calls == [(5 * (1 + 5), 1, 16, 16)] * 16  # 2 epochs x 8 episodes
    assert not _same_state(plain.backbone_, augmented.backbone_)
    # augment draws from torch's global generator, seeded by fit
    again = _protonet(max_epochs=2, augment=augment).fit(*base)
    assert _same_state(augmented.backbone_, again.backbone_)


def test_optimizer_class_and_no_schedule(base):
    trainer = _pretrainer(
        optimizer=torch.optim.Adam, lr=1e-3, lr_schedule=None, max_epochs=1
    ).fit(*base)
    assert isinstance(trainer.net_.optimizer_, torch.optim.Adam)
    assert "lr_scheduler" not in dict(trainer.net_.callbacks_)


def test_cosine_schedule_anneals_the_learning_rate(base):
    trainer = _pretrainer(max_epochs=2).fit(*base)
    assert trainer.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(0.0)


def test_verbose_prints_the_epoch_table(base, capsys):
    _pretrainer(max_epochs=1, verbose=1).fit(*base)
    out = capsys.readouterr().out
    assert "train_acc" in out and "train_loss" in out


def test_internal_validation_split(base):
    from skorch.dataset import ValidSplit

    trainer = _pretrainer(max_epochs=1, train_split=ValidSplit(4, stratified=True)).fit(
        *base
    )
    assert 0.0 <= trainer.history_[-1, "valid_acc"] <= 1.0


# -- the episodic pieces, by hand ----------------------------------------------


def test_episode_batch_sampler_yields_support_then_query():
    y = np.repeat(np.arange(6), 5)
    sampler = _EpisodeBatchSampler(y, 3, 2, 1, n_episodes=4, random_state=0)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 4
    for batch in batches:
        assert len(batch) == len(set(batch)) == 3 * (2 + 1)
        support, query = y[batch[:6]], y[batch[6:]]
        # class-major: shots of one class together, same class order in both
        assert support[::2].tolist() == support[1::2].tolist() == query.tolist()
    assert list(sampler) != batches  # the next epoch draws new episodes


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_prototype_loss_matches_a_hand_computation(metric):
    net = _EpisodicNet(
        # the backbone is not called: the features go straight to the loss
        BackboneWithHead(torch.nn.Linear(2, 2), PrototypeHead(metric), False),
        n_support=4,
        criterion=torch.nn.CrossEntropyLoss,
    ).initialize()
    # classes 7 and 3, two shots each (labels unsorted), then two queries
    features = torch.tensor(
        [[0.0, 0.0], [0.0, 2.0], [4.0, 0.0], [4.0, 2.0], [3.0, 1.0], [0.0, 0.0]]
    )
    labels = torch.tensor([7, 7, 3, 3, 3, 7])
    logits, targets = net.logits_and_targets(features, labels)
    # prototypes in sorted class order: class 3 -> (4, 1), class 7 -> (0, 1)
    if metric == "euclidean":
        expected = -torch.tensor([[1.0, 9.0], [17.0, 1.0]])
    else:  # 10 * cosine; the zero query has cosine 0 to everything
        expected = 10.0 * torch.tensor(
            [[13.0 / (10.0 * 17.0) ** 0.5, 1.0 / 10.0**0.5], [0.0, 0.0]]
        )
    torch.testing.assert_close(logits, expected)
    assert targets.tolist() == [0, 1]
    loss = net.get_loss(features, labels, training=False)
    torch.testing.assert_close(
        loss, torch.nn.functional.cross_entropy(expected, torch.tensor([0, 1]))
    )


# -- EpisodicValidation ----------------------------------------------------------


def _validation(novel, **params):
    params = {"n_way": 5, "n_shot": 1, "n_query": 5, "n_episodes": 20, **params}
    return EpisodicValidation(*novel, **params)


@pytest.mark.parametrize("make", [_pretrainer, _protonet], ids=["pretrain", "proto"])
def test_episodic_validation_records_the_few_shot_accuracy(make, base, novel):
    trainer = make(max_epochs=2, callbacks=[_validation(novel)]).fit(*base)
    history = trainer.history_
    scores = history[:, "valid_fsl_acc"]
    assert len(scores) == 2
    assert history[0, "valid_fsl_acc_best"] is True
    assert history[1, "valid_fsl_acc_best"] == (scores[1] > scores[0])
    # the recorded number is evaluate_episodes on the final backbone's features
    features = BackboneTransformer(trainer.backbone_, device="cpu").fit_transform(
        novel[0]
    )
    expected = evaluate_episodes(
        PrototypeClassifier(),
        features,
        novel[1],
        n_way=5,
        n_shot=1,
        n_query=5,
        n_episodes=20,
        random_state=0,
    )
    assert scores[-1] == pytest.approx(expected.mean)
    assert history[-1, "valid_fsl_acc_ci95"] == pytest.approx(expected.ci95)
    assert trainer.backbone_.training is False


class _RecordTrainingFlags(Callback):
    """Records, after the validation callback, which backbone modules train."""

    def on_epoch_end(self, net, **kwargs):
        flags = [m.training for m in net.module_.backbone.modules()]
        net.history.record("backbone_training", flags)


def test_episodic_validation_restores_train_mode_and_skips_the_cache(base, novel):
    n_cached = len(_CACHE)
    callbacks = [_validation(novel), _RecordTrainingFlags()]
    trainer = _pretrainer(max_epochs=2, callbacks=callbacks).fit(*base)
    # skorch trains in train mode; the validation pass must hand it back so
    flags = trainer.history_[:, "backbone_training"]
    n_modules = len(list(trainer.backbone_.modules()))
    assert flags == [[True] * n_modules] * 2
    assert len(_CACHE) == n_cached  # validation features are not cached


def test_episodic_validation_drives_early_stopping_and_checkpoint(
    base, novel, tmp_path
):
    stop = EarlyStopping(
        monitor="valid_fsl_acc",
        lower_is_better=False,
        patience=1,
        threshold=1.0,  # no accuracy can improve by 1: stops after epoch 2
        threshold_mode="abs",
    )
    checkpoint = Checkpoint(
        monitor="valid_fsl_acc_best",
        dirname=str(tmp_path),
        f_optimizer=None,
        f_criterion=None,
        f_history=None,
    )
    callbacks = [_validation(novel), stop, checkpoint]
    trainer = _pretrainer(max_epochs=5, callbacks=callbacks).fit(*base)
    assert len(trainer.history_) == 2
    assert trainer.history_[0, "event_cp"] is True
    assert (tmp_path / "params.pt").exists()
    # the user's callbacks were copied, not fitted in place
    assert stop.dynamic_threshold_ is None and stop.misses_ == 0


def test_episodic_validation_with_another_head_and_within_groups(base, novel):
    from sklearn.linear_model import LogisticRegression

    X, y = novel
    groups = (y >= 8).astype(int)  # {5, 6, 7} and {8, 9}
    valid = _validation(
        novel, n_way=2, head=LogisticRegression(), groups=groups, within_groups=True
    )
    trainer = _pretrainer(max_epochs=1, callbacks=[valid]).fit(*base)
    assert 0.5 <= trainer.history_[-1, "valid_fsl_acc"] <= 1.0


def test_episodic_validation_fails_before_training(base, novel):
    X, y = novel
    valid = _validation((X[y < 7], y[y < 7]))  # 2 classes for 5-way episodes
    with pytest.raises(ValueError, match="n_way=5 classes .* only 2 of 2"):
        _pretrainer(callbacks=[valid]).fit(*base)
    with pytest.raises(ValueError, match="X_val has 200 samples but y_val has 3"):
        _pretrainer(callbacks=[EpisodicValidation(X, y[:3], n_way=5, n_shot=1)]).fit(
            *base
        )


def test_episodic_validation_needs_a_backbone_attribute(base, novel):
    net = NeuralNetClassifier(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 5)),
        criterion=torch.nn.CrossEntropyLoss,
        train_split=None,
        max_epochs=1,
        callbacks=[_validation(novel)],
    )
    with pytest.raises(TypeError, match="has no 'backbone' attribute"):
        net.fit(*base)


# -- divergence and interrupts ---------------------------------------------------


def _finite(module):
    return all(bool(torch.isfinite(v).all()) for v in module.state_dict().values())


@pytest.mark.parametrize("make", TRAINERS)
def test_a_diverging_loss_warns_stops_and_keeps_the_starting_weights(make, base):
    trainer = make(lr=1e12, lr_schedule=None, max_epochs=3)
    # SGD's loss turns NaN within the epoch; Adam's steps (about lr in size)
    # overflow the weights first
    with pytest.warns(
        RuntimeWarning,
        match=r"non-finite (training loss \(nan\) at|weights after) epoch 1;",
    ) as record:
        trainer.fit(*base)
    assert str(record[0].message).startswith(type(trainer).__name__)
    # training stopped at the diverged epoch
    assert len(trainer.history_) == 1
    # no epoch ended with finite weights: backbone_ holds the weights it started from
    assert "backbone_ holds the weights it started from" in str(record[0].message)
    assert _finite(trainer.backbone_)
    assert _same_state(trainer.backbone_, trainer.module)
    assert _finite(trainer.net_.module_)


class _BlowUpAfterFirstEpoch(Callback):
    """Sets an absurd learning rate once the first epoch is over."""

    def on_epoch_end(self, net, **kwargs):
        for group in net.optimizer_.param_groups:
            group["lr"] = 1e12


@pytest.mark.parametrize("make", TRAINERS)
def test_a_later_divergence_restores_the_last_finite_epoch(make, base):
    one_epoch = make(lr_schedule=None, max_epochs=1).fit(*base)
    trainer = make(lr_schedule=None, max_epochs=4, callbacks=[_BlowUpAfterFirstEpoch()])
    with pytest.warns(
        RuntimeWarning,
        match=r"(at|after) epoch 2;.*backbone_ holds the weights of epoch 1,",
    ) as record:
        trainer.fit(*base)
    assert type(trainer).__name__ in str(record[0].message)
    assert len(trainer.history_) == 2
    # the weights after epoch 1 are those of a one-epoch run, bit for bit
    assert _same_state(trainer.backbone_, one_epoch.backbone_)


def test_a_module_producing_inf_is_caught(base):
    class Inf(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = Conv4(hidden=8)

        def forward(self, x):
            return self.net(x) * float("inf")

    with pytest.warns(RuntimeWarning, match="at epoch 1"):
        trainer = SupervisedPretrainer(Inf(), max_epochs=2, device="cpu").fit(*base)
    assert len(trainer.history_) == 1
    assert _finite(trainer.backbone_)


class _InterruptAtBatch(Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) during the second batch."""

    def __init__(self, at=2):
        self.at = at

    def initialize(self):
        self.n_batches_ = 0
        self.train_end_ = False
        return self

    def on_batch_end(self, net, **kwargs):
        self.n_batches_ += 1
        if self.n_batches_ == self.at:
            raise KeyboardInterrupt

    def on_train_end(self, net, **kwargs):
        self.train_end_ = True


@pytest.mark.parametrize("make", TRAINERS)
def test_keyboard_interrupt_propagates_and_leaves_the_trainer_unfitted(make, base):
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    interrupt = _InterruptAtBatch()
    trainer = make(callbacks=[("interrupt", interrupt)])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*base)
    with pytest.raises(NotFittedError):
        check_is_fitted(trainer)
    # a fitted trainer interrupted in a refit is unfitted too: its old
    # backbone_ does not describe its current parameters
    trainer.set_params(callbacks=None).fit(*base)
    check_is_fitted(trainer)
    with pytest.raises(KeyboardInterrupt):
        trainer.set_params(callbacks=[interrupt]).fit(*base)
    assert not hasattr(trainer, "backbone_") and not hasattr(trainer, "n_features_in_")


def test_an_interrupt_does_not_run_the_end_of_training(base):
    # no callback is told that training ended (TrainEndCheckpoint would save
    # the half-trained weights as the final ones)
    seen = {}

    class Spy(Callback):
        def on_train_end(self, net, **kwargs):
            seen["train_end"] = True

    trainer = _pretrainer(callbacks=[_InterruptAtBatch(), Spy()])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*base)
    assert seen == {}


class _CtrlCAtEpochEnd(Callback):
    """A real SIGINT while an end-of-epoch callback runs (e.g. validation)."""

    def on_epoch_end(self, net, **kwargs):
        import signal

        signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("make", [_pretrainer, _protonet], ids=["pretrain", "proto"])
def test_ctrl_c_during_an_end_of_epoch_callback_is_an_interrupt(make, base):
    # skorch's EarlyStopping also raises KeyboardInterrupt at the end of an
    # epoch to stop training; a real Ctrl-C there must still interrupt
    trainer = make(callbacks=[_CtrlCAtEpochEnd()])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*base)
    assert not hasattr(trainer, "backbone_")


def test_early_stopping_still_ends_training_normally(base):
    stop = EarlyStopping(monitor="train_loss", patience=1, threshold=10.0)
    trainer = _pretrainer(max_epochs=5, callbacks=[stop]).fit(*base)
    assert len(trainer.history_) == 2
    assert hasattr(trainer, "backbone_")


def test_warm_start_divergence_names_the_right_epochs(base):
    X, y = base
    trainer = _pretrainer(max_epochs=1, lr_schedule=None).fit(X, y)
    before = {k: v.clone() for k, v in trainer.net_.module_.state_dict().items()}
    for group in trainer.net_.optimizer_.param_groups:
        group["lr"] = 1e12
    with pytest.warns(RuntimeWarning, match=r"epoch 2;.*the weights of epoch 1,"):
        trainer.net_.partial_fit(X, y)
    after = trainer.net_.module_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# -- what training prints -------------------------------------------------------


class _Terminal(io.StringIO):
    """A text stream that says it is an interactive terminal."""

    def isatty(self):
        return True


def _epoch_rows(text):
    """The data rows of skorch's epoch table (each starts with the epoch)."""
    return [line for line in text.splitlines() if line.strip()[:1].isdigit()]


def test_training_prints_one_line_per_epoch_by_default(base, capsys):
    trainer = SupervisedPretrainer(_conv4(), max_epochs=2, device="cpu")
    assert trainer.verbose == 1
    trainer.fit(*base)
    captured = capsys.readouterr()
    assert len(_epoch_rows(captured.out)) == 2
    assert "train_loss" in captured.out and "train_acc" in captured.out
    assert captured.err == ""


@pytest.mark.parametrize("make", [_pretrainer, _protonet], ids=["pretrain", "proto"])
def test_no_colour_codes_when_stdout_is_not_a_terminal(make, base, capsys):
    make(max_epochs=2, verbose=1).fit(*base)
    out = capsys.readouterr().out
    assert len(_epoch_rows(out)) == 2
    assert "\x1b[" not in out


def test_colour_codes_on_a_terminal(base, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    _pretrainer(max_epochs=1, verbose=1).fit(*base)
    # skorch colours the best scores (every score of epoch 1 is the best)
    assert "\x1b[" in terminal.getvalue()


def test_progress_bar_only_when_stderr_is_a_terminal(base, capsys, monkeypatch):
    redirected = _pretrainer(max_epochs=2, verbose=2).fit(*base)
    captured = capsys.readouterr()
    assert "progress_bar" not in dict(redirected.net_.callbacks_)
    assert captured.err == ""  # no per-batch bar in a log file
    assert len(_epoch_rows(captured.out)) == 2  # the epoch lines remain
    assert "\x1b[" not in captured.out
    monkeypatch.setattr(sys, "stderr", _Terminal())
    on_terminal = _pretrainer(max_epochs=1, verbose=2).fit(*base)
    assert "progress_bar" in dict(on_terminal.net_.callbacks_)


def test_silent_with_verbose_0(base, capsys):
    _protonet(max_epochs=1, verbose=0).fit(*base)
    assert capsys.readouterr() == ("", "")


# -- shared docstrings -----------------------------------------------------------


def test_shared_parameters_are_documented_once_with_their_own_defaults():
    pretrain, proto = SupervisedPretrainer.__doc__, ProtoNetMetaTrainer.__doc__
    assert "{" + "verbose}" not in pretrain and "{" + "module}" not in proto
    assert "    weight_decay : float, default=0.0005\n" in pretrain
    assert "    weight_decay : float, default=0.0\n" in proto
    optimizer = '    optimizer : {"sgd", "adam", "adamw"} or torch optimizer class, '
    assert optimizer + 'default="adam"\n' in proto
    shared = "L2 penalty of the optimizer."
    assert shared in pretrain and shared in proto
    assert "    module : torch.nn.Module\n" in pretrain  # required: no default


def test_unknown_placeholder_fails_at_class_definition():
    from skfewshot.training._docstrings import _fill_shared_docs

    with pytest.raises(KeyError, match=r"placeholder \{max_epoch\}, which names"):

        @_fill_shared_docs
        class Trainer:
            """Parameters
            ----------
            {max_epoch}
            """

            def __init__(self, max_epochs=3):
                pass
