"""Builders shared by the tests of skfewshot.training (not a test module).

Small digits images for the base and novel classes (loaded once per session),
small trainers with fixed seeds on the CPU, and comparisons of module states.
"""

import functools

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from skorch.callbacks import Callback

from skfewshot.models import Conv4
from skfewshot.training import (
    EpisodicValidation,
    ProtoNetMetaTrainer,
    SupervisedPretrainer,
    TrainingCheckpoint,
)


@functools.cache
def digits_images():
    """sklearn's 8x8 digits upsampled to (n, 1, 16, 16), 40 images per digit.

    Conv4 needs 16x16 at least (four 2x2 pools).
    """
    data = load_digits()
    keep = np.concatenate([np.flatnonzero(data.target == c)[:40] for c in range(10)])
    X = np.kron(data.images[keep] / 16.0, np.ones((2, 2)))[:, None]
    return X.astype(np.float32), data.target[keep]


def base_classes():
    """Digits 0-4: the classes the trainers train on."""
    X, y = digits_images()
    return X[y < 5], y[y < 5]


def novel_classes():
    """Digits 5-9: held-out classes for episodic validation."""
    X, y = digits_images()
    return X[y >= 5], y[y >= 5]


def conv4(seed=0):
    torch.manual_seed(seed)
    return Conv4(hidden=8)


def pretrainer(**params):
    params = {
        "max_epochs": 3,
        "batch_size": 32,
        "random_state": 0,
        "device": "cpu",  # bitwise determinism is a CPU promise
        **params,
    }
    return SupervisedPretrainer(conv4(), **params)


def protonet(**params):
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
    return ProtoNetMetaTrainer(conv4(), **params)


TRAINERS = [
    pytest.param(pretrainer, id="pretrain-linear"),
    pytest.param(lambda **p: pretrainer(head="cosine", **p), id="pretrain-cosine"),
    pytest.param(protonet, id="protonet-euclidean"),
    pytest.param(lambda **p: protonet(metric="cosine", **p), id="protonet-cosine"),
]


def same_state(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def finite(module):
    return all(bool(torch.isfinite(v).all()) for v in module.state_dict().values())


def episodic_validation(novel, **params):
    params = {"n_way": 5, "n_shot": 1, "n_query": 5, "n_episodes": 20, **params}
    return EpisodicValidation(*novel, **params)


class CtrlC(Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) as the first batch of epoch
    ``epoch`` begins: the checkpoint of the epoch before is on disk."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_begin(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt


def interrupted_run(make, fit_args, path, *, epoch=2, settings=None, **params):
    """Fit ``make(**params)`` on ``fit_args`` with a ``TrainingCheckpoint`` at
    ``path``, interrupted as epoch ``epoch`` begins (``max_epochs`` defaults
    to ``epoch``): the state of ``epoch - 1`` epochs is left to resume."""
    params = {"max_epochs": epoch, **params}
    checkpoint = TrainingCheckpoint(path, settings=settings)
    trainer = make(callbacks=[checkpoint, CtrlC(epoch)], **params)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*fit_args)


def resumed_run(make, fit_args, path, *, epoch=2, settings=None, **params):
    """Resume the run of :func:`interrupted_run` (same ``make`` and ``params``);
    returns the fitted trainer."""
    params = {"max_epochs": epoch, **params}
    checkpoint = TrainingCheckpoint(path, settings=settings, resume=True)
    return make(callbacks=[checkpoint], **params).fit(*fit_args)
