"""Tests for skfewshot.training._base: what both trainers share.

Fitting, determinism, errors, options, divergence, interrupts, what training
prints, and scikit-learn's estimator checks on small trainers.
"""

import io
import pickle
import sys

import numpy as np
import pytest
import torch
from _training_testing import (
    TRAINERS,
    conv4,
    episodic_validation,
    finite,
    pretrainer,
    protonet,
    same_state,
)
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks
from skorch.callbacks import Callback, EarlyStopping

from skfewshot.models import Conv4
from skfewshot.training import (
    ProtoNetMetaTrainer,
    SupervisedPretrainer,
)

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
    trainer = pretrainer(max_epochs=1).fit(X, labels)
    np.testing.assert_array_equal(trainer.classes_, sorted(set(labels)))
    assert trainer.n_features_out_ == 8
    assert trainer.n_features_in_ == 1
    assert not trainer.backbone_.training
    assert {p.device.type for p in trainer.backbone_.parameters()} == {"cpu"}
    # the backbone_ is a copy of the net's trained backbone, not the net's own
    assert trainer.backbone_ is not trainer.net_.module_.backbone
    assert same_state(trainer.backbone_, trainer.net_.module_.backbone)
    assert isinstance(trainer.net_.module_.head, torch.nn.Linear)
    assert trainer.net_.module_.head.out_features == 5


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
    assert not same_state(trainer.backbone_, module)  # training did something


def test_cpu_fit_leaves_the_cuda_generators_alone(base, monkeypatch):
    # a CPU fit on a CUDA machine must not reseed the caller's CUDA generators
    # (fork_rng restores only the devices of a CUDA fit); torch.manual_seed
    # reseeds them through torch.cuda.manual_seed_all, with or without CUDA
    trainer, seeded = pretrainer(max_epochs=1), []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    monkeypatch.setattr(torch.cuda, "manual_seed", seeded.append)
    trainer.fit(*base)
    assert seeded == []


@pytest.mark.parametrize("make", TRAINERS)
def test_int_random_state_is_deterministic(make, base):
    a = make(max_epochs=2).fit(*base)
    b = clone(make(max_epochs=2)).fit(*base)
    c = make(max_epochs=2, random_state=1).fit(*base)
    assert same_state(a.backbone_, b.backbone_)
    assert a.history_[:, "train_loss"] == b.history_[:, "train_loss"]
    assert not same_state(a.backbone_, c.backbone_)


def test_backbone_state_dict_round_trip(base, tmp_path):
    trainer = protonet(max_epochs=1).fit(*base)
    path = tmp_path / "backbone.pt"
    torch.save(trainer.backbone_.state_dict(), path)
    fresh = Conv4(hidden=8)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    fresh.eval()
    assert same_state(fresh, trainer.backbone_)  # bit for bit
    x = torch.as_tensor(base[0][:7])
    with torch.no_grad():  # float32 outputs: within rounding on any CPU / BLAS
        torch.testing.assert_close(fresh(x), trainer.backbone_(x), rtol=1e-5, atol=1e-6)


def test_fitted_trainer_pickles(base):
    trainer = pretrainer(max_epochs=1).fit(*base)
    again = pickle.loads(pickle.dumps(trainer))
    assert same_state(again.backbone_, trainer.backbone_)  # bit for bit
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


@pytest.mark.parametrize(
    "make",
    [
        lambda: pretrainer(head="svm"),
        lambda: pretrainer(lr=0.0),
        lambda: pretrainer(optimizer="rmsprop"),
        lambda: protonet(metric="manhattan"),
        lambda: protonet(n_way=1),
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
        pretrainer(device="cuda").fit(*base)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make", TRAINERS)
def test_fit_on_cuda_returns_a_cpu_backbone(make, base, novel):
    trainer = make(device="cuda", callbacks=[episodic_validation(novel)]).fit(*base)
    assert trainer.net_.module_.head is not None
    assert {p.device.type for p in trainer.backbone_.parameters()} == {"cpu"}
    assert {p.device.type for p in trainer.net_.module_.parameters()} == {"cuda"}
    assert trainer.history_[-1, "train_acc"] > 0.6
    assert 0.0 <= trainer.history_[-1, "valid_fsl_acc"] <= 1.0


# -- options ------------------------------------------------------------------


def test_optimizer_class_and_no_schedule(base):
    trainer = pretrainer(
        optimizer=torch.optim.Adam, lr=1e-3, lr_schedule=None, max_epochs=1
    ).fit(*base)
    assert isinstance(trainer.net_.optimizer_, torch.optim.Adam)
    assert "lr_scheduler" not in dict(trainer.net_.callbacks_)


def test_cosine_schedule_anneals_the_learning_rate(base):
    trainer = pretrainer(max_epochs=2).fit(*base)
    assert trainer.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(0.0)


# -- divergence and interrupts ---------------------------------------------------


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
    assert finite(trainer.backbone_)
    assert same_state(trainer.backbone_, trainer.module)
    assert finite(trainer.net_.module_)


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
    assert same_state(trainer.backbone_, one_epoch.backbone_)


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
    assert finite(trainer.backbone_)


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

    trainer = pretrainer(callbacks=[_InterruptAtBatch(), Spy()])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*base)
    assert seen == {}


class _CtrlCAtEpochEnd(Callback):
    """A real SIGINT while an end-of-epoch callback runs (e.g. validation)."""

    def on_epoch_end(self, net, **kwargs):
        import signal

        signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("make", [pretrainer, protonet], ids=["pretrain", "proto"])
def test_ctrl_c_during_an_end_of_epoch_callback_is_an_interrupt(make, base):
    # skorch's EarlyStopping also raises KeyboardInterrupt at the end of an
    # epoch to stop training; a real Ctrl-C there must still interrupt
    trainer = make(callbacks=[_CtrlCAtEpochEnd()])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*base)
    assert not hasattr(trainer, "backbone_")


def test_early_stopping_still_ends_training_normally(base):
    stop = EarlyStopping(monitor="train_loss", patience=1, threshold=10.0)
    trainer = pretrainer(max_epochs=5, callbacks=[stop]).fit(*base)
    assert len(trainer.history_) == 2
    assert hasattr(trainer, "backbone_")


def test_warm_start_divergence_names_the_right_epochs(base):
    X, y = base
    trainer = pretrainer(max_epochs=1, lr_schedule=None).fit(X, y)
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
    trainer = SupervisedPretrainer(conv4(), max_epochs=2, device="cpu")
    assert trainer.verbose == 1
    trainer.fit(*base)
    captured = capsys.readouterr()
    assert len(_epoch_rows(captured.out)) == 2
    assert "train_loss" in captured.out and "train_acc" in captured.out
    assert captured.err == ""


@pytest.mark.parametrize("make", [pretrainer, protonet], ids=["pretrain", "proto"])
def test_no_colour_codes_when_stdout_is_not_a_terminal(make, base, capsys):
    make(max_epochs=2, verbose=1).fit(*base)
    out = capsys.readouterr().out
    assert len(_epoch_rows(out)) == 2
    assert "\x1b[" not in out


def test_colour_codes_on_a_terminal(base, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    pretrainer(max_epochs=1, verbose=1).fit(*base)
    # skorch colours the best scores (every score of epoch 1 is the best)
    assert "\x1b[" in terminal.getvalue()


def test_progress_bar_only_when_stderr_is_a_terminal(base, capsys, monkeypatch):
    redirected = pretrainer(max_epochs=2, verbose=2).fit(*base)
    captured = capsys.readouterr()
    assert "progress_bar" not in dict(redirected.net_.callbacks_)
    assert captured.err == ""  # no per-batch bar in a log file
    assert len(_epoch_rows(captured.out)) == 2  # the epoch lines remain
    assert "\x1b[" not in captured.out
    monkeypatch.setattr(sys, "stderr", _Terminal())
    on_terminal = pretrainer(max_epochs=1, verbose=2).fit(*base)
    assert "progress_bar" in dict(on_terminal.net_.callbacks_)


def test_silent_with_verbose_0(base, capsys):
    protonet(max_epochs=1, verbose=0).fit(*base)
    assert capsys.readouterr() == ("", "")


# -- scikit-learn's estimator checks -----------------------------------------------


def _tiny_module():
    """A module for any 2-D input: the checks use tabular X of many widths."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))


@parametrize_with_checks(
    [
        SupervisedPretrainer(
            _tiny_module(), max_epochs=1, device="cpu", verbose=0, random_state=0
        ),
        ProtoNetMetaTrainer(
            _tiny_module(),
            n_way=2,
            n_shot=1,
            n_query=1,
            episodes_per_epoch=1,
            max_epochs=1,
            device="cpu",
            verbose=0,
            random_state=0,
        ),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
