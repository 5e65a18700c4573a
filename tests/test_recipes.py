"""skfewshot.recipes: the head registry and the digits demo."""

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from skfewshot import FineTunedCosineClassifier, PrototypeClassifier
from skfewshot.recipes import (
    DEMO_BASE_CLASSES,
    HEAD_LABELS,
    HEADS,
    make_head,
    run_demo,
)


def test_every_head_has_a_label():
    assert HEADS == ("prototype", "finetune", "transductive", "logreg")
    assert list(HEAD_LABELS) == list(HEADS)


def test_make_head_builds_the_documented_estimators():
    assert isinstance(make_head("prototype"), PrototypeClassifier)
    finetune = make_head("finetune")
    assert isinstance(finetune, FineTunedCosineClassifier)
    assert finetune.get_params() == FineTunedCosineClassifier().get_params()
    transductive = make_head("transductive")
    assert transductive.transductive is True
    assert transductive.entropy_weight == 0.1
    logreg = make_head("logreg")
    assert isinstance(logreg, Pipeline)
    normalizer, clf = (step for _, step in logreg.steps)
    assert isinstance(normalizer, Normalizer) and normalizer.norm == "l2"
    assert isinstance(clf, LogisticRegression) and clf.max_iter == 1000


def test_make_head_params_override_the_defaults():
    head = make_head("transductive", entropy_weight=0.3, alpha=0.5)
    assert (head.transductive, head.entropy_weight, head.alpha) == (True, 0.3, 0.5)
    clf = make_head("logreg", C=10.0, max_iter=50).steps[-1][1]
    assert (clf.C, clf.max_iter) == (10.0, 50)


def test_make_head_returns_a_fresh_estimator_each_time():
    assert make_head("prototype") is not make_head("prototype")


def test_make_head_unknown_name():
    with pytest.raises(ValueError, match=r"unknown head 'knn'; choose from proto"):
        make_head("knn")


def test_make_head_unknown_param():
    with pytest.raises(TypeError, match="unexpected keyword argument 'C'"):
        make_head("prototype", C=1.0)


@pytest.mark.parametrize("name", HEADS)
def test_every_head_classifies_an_easy_episode(name, episode):
    Xs, ys, Xq, yq = episode
    head = make_head(name)
    assert is_classifier(head)
    pred = clone(head).fit(Xs, ys).predict(Xq)
    assert np.mean(pred == yq) >= 0.9  # well separated blobs


TINY = dict(shots=(1,), n_episodes=2, max_epochs=1, heads=("prototype",), verbose=0)


def test_run_demo_splits_the_digits_by_class_and_is_deterministic(capsys):
    # on the CPU: the same seed repeats a training bit for bit there only
    # (cuDNN's backward kernels may not)
    state = torch.random.get_rng_state()
    results, info = run_demo(**TINY, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert capsys.readouterr() == ("", "")  # verbose=0 is silent
    assert info["trained_on"] == {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}
    assert tuple(info["trained_on"]["classes"]) == DEMO_BASE_CLASSES
    assert info["classes"] == [5, 6, 7, 8, 9]
    assert info["n_base"] + info["n_novel"] == 1797
    assert info["epochs_trained"] == info["max_epochs"] == 1
    assert info["device"] == "cpu"
    assert list(results) == ["prototype"]
    (scores,) = results["prototype"]
    assert (scores.n_way, scores.n_shot, scores.n_query) == (5, 1, 15)
    assert scores.n_episodes == 2
    again, _ = run_demo(**TINY, device="cpu")
    np.testing.assert_array_equal(again["prototype"][0].accuracies, scores.accuracies)


def test_run_demo_trains_embeds_and_fits_the_heads_on_its_device(monkeypatch):
    from skfewshot import model_selection
    from skfewshot.training import SupervisedPretrainer

    seen = set()
    fit, evaluate = SupervisedPretrainer.fit, model_selection.evaluate_episodes

    def spy_fit(self, *args, **kwargs):
        seen.add(("SupervisedPretrainer", self.device))
        return fit(self, *args, **kwargs)

    def spy_evaluate(pipe, *args, **kwargs):
        # each step that takes a device (the heads may be fitted in batches,
        # never through their fit): the backbone's and the torch heads'
        for _, step in pipe.steps:
            if "device" in step.get_params(deep=False):
                seen.add((type(step).__name__, step.device))
        return evaluate(pipe, *args, **kwargs)

    monkeypatch.setattr(SupervisedPretrainer, "fit", spy_fit)
    monkeypatch.setattr(model_selection, "evaluate_episodes", spy_evaluate)
    heads = ("prototype", "finetune", "transductive", "logreg")
    run_demo(**{**TINY, "heads": heads}, device="cpu")
    assert seen == {
        ("SupervisedPretrainer", "cpu"),
        ("BackboneTransformer", "cpu"),
        ("PrototypeClassifier", "cpu"),
        ("FineTunedCosineClassifier", "cpu"),
    }


def test_run_demo_unknown_head_fails_before_training(monkeypatch):
    from skfewshot.training import SupervisedPretrainer

    monkeypatch.setattr(
        SupervisedPretrainer, "fit", lambda *a, **k: pytest.fail("trained anyway")
    )
    with pytest.raises(ValueError, match="unknown head 'knn'"):
        run_demo(**{**TINY, "heads": ("prototype", "knn")})


# -- make_augmentation -------------------------------------------------------


def test_make_augmentation_names_and_sizes():
    from skfewshot.augment import Compose, ElasticDistortion, RandomAffine
    from skfewshot.recipes import AUGMENTATIONS, make_augmentation

    assert AUGMENTATIONS == ("none", "shift-rotate", "affine", "affine-elastic")
    assert make_augmentation("none") is None
    assert make_augmentation("shift-rotate") == RandomAffine(
        degrees=10.0, translate=2 / 28
    )
    affine = RandomAffine(degrees=15.0, translate=0.08, scale=(0.85, 1.15), shear=10.0)
    assert make_augmentation("affine", image_size=105) == affine
    # Simard et al.'s alpha=34, sigma=4 at 28 px, scaled by k**2 and k
    assert make_augmentation("affine-elastic") == Compose(
        [affine, ElasticDistortion(alpha=34.0, sigma=4.0)]
    )
    assert make_augmentation("affine-elastic", image_size=56) == Compose(
        [affine, ElasticDistortion(alpha=136.0, sigma=8.0)]
    )


@pytest.mark.parametrize(
    "name, image_size, match",
    [
        ("elastic", 28, "unknown augmentation 'elastic'; choose from none, "),
        ("affine", 0, "image_size must be a positive int, got 0"),
        ("affine", 28.0, "image_size must be a positive int, got 28.0"),
        ("affine", True, "image_size must be a positive int, got True"),
    ],
)
def test_make_augmentation_rejects(name, image_size, match):
    from skfewshot.recipes import make_augmentation

    with pytest.raises(ValueError, match=match):
        make_augmentation(name, image_size=image_size)


def _after_affine(**second):
    """The recipe's ``members=``: an *affine* member, then one with ``second``."""
    return {"members": [{"augment": "affine"}, {"augment": "affine", **second}]}


@pytest.mark.parametrize(
    "X_shape, params, match",
    [
        ((6, 16, 16), {}, r"X must hold images of shape .* got shape \(6, 16, 16\)"),
        ((6, 1, 16, 16), {"members": []}, "members is empty"),
        (
            (6, 1, 16, 16),
            {"members": [{"augment": "affine"}, {"augment": "elastic"}]},
            r"members\[1\]: unknown augmentation 'elastic'",
        ),
        (
            (6, 1, 16, 16),
            {"members": [{"born_again": True}]},
            r"members\[0\] has no 'augment': \{'born_again': True\}",
        ),
        ((6, 1, 16, 16), {"members": [["affine"]]}, r"members\[0\] must be a dict"),
        (
            (6, 1, 16, 16),
            {"members": [{"augment": "affine", "teacher": None, "lr_max": 1}]},
            r"members\[0\] has parameters .*: 'lr_max', 'teacher'",
        ),
        (
            (6, 1, 16, 16),
            {"members": [{"augment": "affine", "random_state": 1.0}]},
            r"members\[0\]\['random_state'\] must be an int, got 1\.0\.",
        ),
        (
            (6, 1, 16, 16),
            {"members": [{"augment": "affine", "random_state": True}]},
            r"members\[0\]\['random_state'\] must be an int, got True\.",
        ),
        (
            (6, 1, 16, 16),
            # the function's seed spelt out: the same network twice
            _after_affine(random_state=0),
            r"members\[1\] equals members\[0\]",
        ),
        (
            (6, 1, 16, 16),
            _after_affine(max_epochs=0),
            r"members\[1\]: The 'max_epochs' parameter",
        ),
        (
            (6, 1, 16, 16),
            {"members": [{"augment": "affine", "born_again": "no"}]},
            r"members\[0\]\['born_again'\] must be True or False, got 'no'",
        ),
        (
            (6, 1, 16, 16),
            {"members": [{"augment": "affine", "distill_weight": 0.9}]},
            r"members\[0\] sets distill_weight but is not born-again",
        ),
        (
            (6, 1, 16, 12),
            _after_affine(rotation_loss_weight=1.0),
            r"members\[1\] sets rotation_loss_weight.* got \(16, 12\)",
        ),
        (
            (6, 1, 16, 16),
            _after_affine(),
            r"members\[1\] equals members\[0\]",
        ),
        ((6, 1, 16, 16), {"random_state": None}, "random_state must be an int"),
        ((6, 1, 16, 16), {"last_pool": 0}, "last_pool must be True or False, got 0"),
        (
            (6, 1, 16, 16),
            {
                "members": [
                    {"augment": "affine", "born_again": True, "callbacks": "ckpt"}
                ]
            },
            r"members\[0\] is born-again and has a TrainingCheckpoint",
        ),
    ],
)
def test_pretrain_one_shot_ensemble_rejects_before_training(
    X_shape, params, match, tmp_path
):
    from skfewshot.recipes import pretrain_one_shot_ensemble
    from skfewshot.training import TrainingCheckpoint

    if "members" in params:  # "ckpt" stands for a checkpoint in tmp_path
        checkpoint = [TrainingCheckpoint(tmp_path / "run.ckpt")]
        params = {
            **params,
            "members": [
                {**m, "callbacks": checkpoint} if "callbacks" in m else m
                for m in params["members"]
            ],
        }

    def make_module():  # never reached: the checks come before any training
        raise AssertionError("trained despite invalid input")

    with pytest.raises(ValueError, match=match):
        pretrain_one_shot_ensemble(
            np.zeros(X_shape, np.float32),
            np.arange(6) % 2,
            make_module=make_module,
            **params,
        )


def test_pretrain_one_shot_ensemble_member_epochs_and_default():
    from skfewshot.models import Conv4
    from skfewshot.recipes import ONE_SHOT_MEMBERS, pretrain_one_shot_ensemble

    with pytest.raises(TypeError):  # the library default cannot be changed
        ONE_SHOT_MEMBERS[0]["max_epochs"] = 5
    X = np.random.default_rng(0).random((12, 1, 16, 16), dtype=np.float32)
    members = [{"augment": "none", "max_epochs": 2}, {"augment": "affine"}]
    state = torch.get_rng_state()
    _, trainers = pretrain_one_shot_ensemble(
        X,
        np.arange(12) % 3,
        members=members,
        make_module=lambda: Conv4(hidden=2),
        max_epochs=1,
        device="cpu",
    )
    assert [len(t.history_) for t in trainers] == [2, 1]  # the member's wins
    assert members[0] == {"augment": "none", "max_epochs": 2}  # not modified
    assert torch.equal(torch.get_rng_state(), state)  # global generator untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_whiten_backbone_builds_the_fitted_map_into_the_module(dtype):
    from numpy.testing import assert_allclose

    from skfewshot import BackboneTransformer
    from skfewshot.models import Conv4, WhitenedBackbone
    from skfewshot.preprocessing import WithinClassWhitening
    from skfewshot.recipes import whiten_backbone

    rng = np.random.default_rng(0)
    X = rng.random((30, 1, 16, 16), dtype=np.float32)
    y = np.repeat(np.arange(6), 5)
    torch.manual_seed(0)
    conv = Conv4(hidden=6).to(dtype).eval()
    np_dtype = "float64" if dtype == torch.float64 else "float32"
    embedding = BackboneTransformer(
        conv, test_time_shifts=1, cache=False, dtype=np_dtype
    )
    whitened, whitening = whiten_backbone(embedding, X, y, shrinkage=3.0)
    assert isinstance(whitened, WhitenedBackbone) and whitened.backbone is conv
    assert not hasattr(embedding, "module_")  # the caller's transformer: unfitted
    assert whitened.components.dtype == dtype  # the weights' dtype
    features = BackboneTransformer(
        conv, test_time_shifts=1, cache=False, dtype=np_dtype
    ).fit_transform(X)
    expected = WithinClassWhitening(3.0).fit(features, y)
    assert whitening.shrinkage == 3.0
    assert_allclose(whitening.components_, expected.components_, rtol=1e-6, atol=1e-9)
    assert_allclose(
        whitened.components.numpy(), expected.components_, rtol=1e-6, atol=1e-6
    )


def test_whiten_backbone_names_a_class_problem():
    from skfewshot import BackboneTransformer
    from skfewshot.models import Conv4
    from skfewshot.recipes import whiten_backbone

    X = np.random.default_rng(0).random((3, 1, 16, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="needs a class with at least two samples"):
        whiten_backbone(BackboneTransformer(Conv4(hidden=4)), X, [0, 1, 2])
