"""Issue 14's training recipe through the CLI: ``train --augment --width
--rotation-loss-weight --distill-generations``, ``--test-time-shifts`` and
``--test-time-angles --test-time-scales``."""

import json

import numpy as np
import pytest
from conftest import build_omniglot_runs
from sklearn.pipeline import make_pipeline
from test_cli_train_predict import TRAIN_CLASSES, _folder, run

import skfewshot.augment
import skfewshot.backbone
import skfewshot.cli
import skfewshot.training
from skfewshot.augment import Compose, ElasticDistortion, RandomAffine
from skfewshot.backbone import BackboneTransformer
from skfewshot.cli import main
from skfewshot.datasets import load_digits_images
from skfewshot.model_selection import evaluate_episodes
from skfewshot.models import Conv4, load_backbone, save_backbone
from skfewshot.prototype import PrototypeClassifier
from skfewshot.training import SupervisedPretrainer

#: One quick epoch of a 4-channel Conv4 on 16 x 16 images.
QUICK = ["--epochs", "1", "--image-size", "16", "--width", "4", "--batch-size", "8"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("shapes"), 4, classes=TRAIN_CLASSES)


@pytest.fixture
def trainers(monkeypatch):
    """Every SupervisedPretrainer the CLI fits, in order."""
    made = []

    class Spy(SupervisedPretrainer):
        def fit(self, X, y, **fit_params):
            made.append(self)
            self.seen_ = X, y  # what the CLI fits it on
            return super().fit(X, y, **fit_params)

    monkeypatch.setattr(skfewshot.training, "SupervisedPretrainer", Spy)
    return made


@pytest.mark.parametrize(
    "name, expected",
    [
        ("none", None),
        ("shift-rotate", RandomAffine(degrees=10.0, translate=2 / 28)),
        (
            "affine",
            RandomAffine(degrees=15.0, translate=0.08, scale=(0.85, 1.15), shear=10.0),
        ),
        (
            "affine-elastic",
            Compose(
                [
                    RandomAffine(
                        degrees=15.0, translate=0.08, scale=(0.85, 1.15), shear=10.0
                    ),
                    # Simard's 28 x 28 alpha=34, sigma=4 at 16 x 16: k = 16/28,
                    # alpha * k^2 = 34 * 256 / 784, sigma * k = 4 * 16 / 28
                    ElasticDistortion(alpha=8704 / 784, sigma=64 / 28),
                ]
            ),
        ),
    ],
)
def test_train_augment_reaches_the_trainer(
    shapes, trainers, tmp_path, capsys, name, expected
):
    out = tmp_path / "m.pt"
    status, stdout, err = run(
        capsys, "train", shapes, "-o", out, *QUICK, "--augment", name, "--json"
    )
    assert status == 0, err
    (trainer,) = trainers
    assert repr(trainer.augment) == repr(expected)
    record = json.loads(stdout)
    assert record["settings"]["augment"] == name
    assert json.loads((tmp_path / "m.pt.json").read_text()) == record


def test_train_width_and_rotation_loss(shapes, trainers, tmp_path, capsys):
    out = tmp_path / "m.pt"
    status, stdout, err = run(
        capsys, "train", shapes, "-o", out, *QUICK, "--rotation-loss-weight", "0.5",
        "--json",
    )  # fmt: skip
    assert status == 0, err
    (trainer,) = trainers
    assert trainer.rotation_loss_weight == 0.5 and trainer.teacher is None
    module, _ = load_backbone(out)
    assert module.hidden == 4
    settings = json.loads(stdout)["settings"]
    assert settings["width"] == 4 and settings["rotation_loss_weight"] == 0.5
    assert settings["distill_generations"] == 0
    assert "mixup_alpha" not in settings  # not given: not recorded


#: the pretrainer's optional boosters recorded only when on: (flag, trainer
#: parameter, the other flags they need)
RECORDED_WHEN_ON = [
    ("--mixup-alpha", "mixup_alpha", []),
    ("--contrastive-loss-weight", "contrastive_loss_weight", ["--augment", "affine"]),
]


@pytest.mark.parametrize("flag, name, needs", RECORDED_WHEN_ON)
def test_train_booster_is_passed_and_recorded(
    shapes, trainers, tmp_path, capsys, flag, name, needs
):
    status, stdout, err = run(
        capsys, "train", shapes, "-o", tmp_path / "m.pt", *QUICK, *needs,
        flag, "0.4", "--json",
    )  # fmt: skip
    assert status == 0, err
    (trainer,) = trainers
    assert getattr(trainer, name) == 0.4
    assert json.loads(stdout)["settings"][name] == 0.4


@pytest.mark.parametrize("flag, name, needs", RECORDED_WHEN_ON)
def test_train_booster_0_is_off_and_not_recorded(
    shapes, trainers, tmp_path, capsys, flag, name, needs
):
    # the same training as without the flag, so the same record: a run
    # interrupted without it resumes with it, and the reverse
    status, stdout, err = run(
        capsys, "train", shapes, "-o", tmp_path / "m.pt", *QUICK,
        flag, "0", "--json",
    )  # fmt: skip
    assert status == 0, err
    (trainer,) = trainers
    assert getattr(trainer, name) == 0.0
    assert name not in json.loads(stdout)["settings"]


def test_train_born_again_generations(shapes, trainers, tmp_path, capsys):
    out = tmp_path / "m.pt"
    status, stdout, err = run(
        capsys, "train", shapes, "-o", out, *QUICK, "--distill-generations", "2",
        "--val-classes", "2",
    )  # fmt: skip
    assert status == 0, err
    assert len(trainers) == 3
    assert trainers[0].teacher is None
    assert trainers[1].teacher is trainers[0] and trainers[2].teacher is trainers[1]
    # the same settings in every generation, the last one written
    assert {t.module.hidden for t in trainers} == {4}
    assert {t.max_epochs for t in trainers} == {1}
    assert "born-again generation 2 of 2, taught by generation 1" in err
    assert "  generation 0: final loss" in stdout
    assert "  generation 2 (teacher: 1): final loss" in stdout
    record = json.loads((tmp_path / "m.pt.json").read_text())
    generations = record["generations"]
    assert [g["generation"] for g in generations] == [0, 1, 2]
    assert [g["teacher"] for g in generations] == [None, 0, 1]
    assert all(g["epochs_run"] == 1 for g in generations)
    for g, trainer in zip(generations, trainers):
        history = trainer.history_[-1]
        assert g["final_train_loss"] == float(history["train_loss"])
        assert g["final_val_accuracy"] == float(history["valid_fsl_acc"])
    assert record["final_train_loss"] == generations[-1]["final_train_loss"]
    assert record["settings"]["distill_generations"] == 2
    written, _ = load_backbone(out)
    final = trainers[2].backbone_.state_dict()
    assert all(np.array_equal(v, final[k]) for k, v in written.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.json"]


def test_interrupted_born_again_run_leaves_nothing(
    shapes, trainers, tmp_path, capsys, monkeypatch
):
    fit = skfewshot.training.SupervisedPretrainer.fit

    def ctrl_c_in_generation_1(self, X, y, **fit_params):
        if len(trainers) == 1:
            trainers.append(self)
            raise KeyboardInterrupt
        return fit(self, X, y, **fit_params)

    monkeypatch.setattr(
        skfewshot.training.SupervisedPretrainer, "fit", ctrl_c_in_generation_1
    )
    status, _, err = run(
        capsys, "train", shapes, "-o", tmp_path / "m.pt", *QUICK,
        "--distill-generations", "1",
    )  # fmt: skip
    assert status == 130 and "interrupted" in err
    assert len(trainers) == 2 and trainers[1].teacher is trainers[0]
    assert list(tmp_path.iterdir()) == []  # no output, no checkpoint to resume


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--arch", "resnet12", "--width", "8"],
            "--width sets Conv4's hidden channels; --arch resnet12 has no width",
        ),
        (
            ["--recipe", "protonet", "--rotation-loss-weight", "0.5"],
            "--rotation-loss-weight applies to --recipe pretrain only",
        ),
        (
            ["--recipe", "protonet", "--mixup-alpha", "0.5"],
            "--mixup-alpha applies to --recipe pretrain only",
        ),
        (
            ["--mixup-alpha", "0.001"],
            "--mixup-alpha 0.001: give 0 (off) or a value in [0.01, 1e4] (below "
            "0.01, float32 Beta draws underflow to the strongest mix)",
        ),
        (
            ["--mixup-alpha", "2e4"],
            "--mixup-alpha 20000: give 0 (off) or a value in [0.01, 1e4] (below "
            "0.01, float32 Beta draws underflow to the strongest mix)",
        ),
        (
            ["--recipe", "protonet", "--contrastive-loss-weight", "0.5"],
            "--contrastive-loss-weight applies to --recipe pretrain only",
        ),
        (
            ["--contrastive-loss-weight", "0.5"],
            "--contrastive-loss-weight compares two augmented views of every "
            "image: give --augment too (with none both views are the image)",
        ),
        (
            "--augment affine --contrastive-loss-weight 0.5 --mixup-alpha 0.2".split(),
            "--contrastive-loss-weight and --mixup-alpha cannot be combined: a "
            "mix of two images has no one class to pull it towards",
        ),
        (
            ["--recipe", "protonet", "--distill-generations", "1"],
            "--distill-generations applies to --recipe pretrain only",
        ),
        (
            ["--distill-generations", "1", "--resume"],
            "--resume cannot continue a run with --distill-generations: such a run "
            "keeps no checkpoint (its teachers would be lost); run it again without "
            "--resume",
        ),
    ],
)
def test_train_refuses_flags_that_do_not_go_together(
    shapes, tmp_path, capsys, argv, message
):
    status, out, err = run(capsys, "train", shapes, "-o", tmp_path / "m.pt", *argv)
    assert status == 1 and out == ""
    assert err == f"skfewshot train: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rotation-loss-weight", "-1"], "expected a finite value >= 0, got -1"),
        (["--rotation-loss-weight", "nan"], "expected a finite value >= 0, got nan"),
        (["--mixup-alpha", "inf"], "expected a finite value >= 0, got inf"),
        (["--contrastive-loss-weight", "-2"], "expected a finite value >= 0, got -2"),
        (["--distill-generations", "-1"], "expected a finite value >= 0, got -1"),
        (["--distill-generations", "1.5"], "expected an integer, got '1.5'"),
        (["--augment", "elastic"], "invalid choice: 'elastic'"),
    ],
)
def test_train_option_syntax(shapes, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["train", str(shapes), "-o", str(tmp_path / "m.pt"), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_resume_with_another_augmentation_is_refused(
    shapes, tmp_path, capsys, monkeypatch
):
    from test_cli_train_predict import _interrupt_at_epoch

    out = tmp_path / "m.pt"
    argv = ["train", shapes, "-o", out, *QUICK, "--epochs", "2"]
    with monkeypatch.context() as patch:
        _interrupt_at_epoch(patch, 2)
        status, _, err = run(capsys, *argv, "--augment", "affine")
    assert status == 130, err
    status, _, err = run(capsys, *argv, "--augment", "affine-elastic", "--resume")
    assert status == 1
    assert (
        "it was written with augment='affine', this run has augment='affine-elastic'"
    ) in err
    status, _, err = run(capsys, *argv, "--augment", "affine", "--resume")
    assert status == 0, err
    assert not (tmp_path / "m.pt.ckpt").exists()


@pytest.fixture
def transformers(monkeypatch):
    """Every BackboneTransformer the CLI builds."""
    made = []

    class Spy(skfewshot.backbone.BackboneTransformer):
        def fit(self, X, y=None):
            made.append(self)
            return super().fit(X, y)

    monkeypatch.setattr(skfewshot.backbone, "BackboneTransformer", Spy)
    return made


@pytest.fixture(scope="module")
def digits_backbone(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "digits.pt"
    assert main(["train", "--dataset", "digits", "-o", str(out), *QUICK]) == 0
    return out


@pytest.mark.parametrize("shifts, expected", [("0", None), ("1", 1)])
def test_evaluate_test_time_shifts(
    digits_backbone, transformers, capsys, shifts, expected
):
    status, out, err = run(
        capsys, "evaluate", "--dataset", "digits", "--backbone", digits_backbone,
        "--episodes", "2", "--n-query", "2", "--test-time-shifts", shifts, "--json",
        "--quiet",
    )  # fmt: skip
    assert status == 0, err
    assert {t.test_time_shifts for t in transformers} == {expected}
    assert json.loads(out)["test_time_shifts"] == int(shifts)


def test_evaluate_table_names_the_shifts(digits_backbone, capsys):
    status, out, err = run(
        capsys, "evaluate", "--dataset", "digits", "--backbone", digits_backbone,
        "--episodes", "2", "--n-query", "2", "--test-time-shifts", "2", "--quiet",
    )  # fmt: skip
    assert status == 0, err
    assert out.startswith(
        "digits (Conv4 + PrototypeClassifier, test-time shifts of up to 2 pixels): "
    )


def test_evaluate_refuses_shifts_of_texts(tmp_path, capsys):
    status, _, err = run(
        capsys, "evaluate", "--dataset", "banking77", "--data-dir", tmp_path,
        "--test-time-shifts", "1",
    )  # fmt: skip
    assert status == 1
    assert err == (
        "skfewshot evaluate: error: --test-time-shifts shifts images; banking77 is "
        "evaluated on texts (leave it out)\n"
    )


#: ``--test-time-angles -10 10 --test-time-scales 0.9 1``: every angle with
#: every scale, angles slowest
WARP_FLAGS = ["--test-time-angles", "-10", "10", "--test-time-scales", "0.9", "1"]
WARPS = [(-10.0, 0.9), (-10.0, 1.0), (10.0, 0.9), (10.0, 1.0)]


def test_evaluate_test_time_warps(digits_backbone, transformers, capsys):
    argv = ["evaluate", "--dataset", "digits", "--backbone", digits_backbone]
    argv += ["--episodes", "10", "--n-query", "5", "--quiet", "--device", "cpu"]
    status, out, err = run(capsys, *argv, "--test-time-shifts", "1", *WARP_FLAGS)
    assert status == 0, err
    assert [(t.test_time_shifts, t.test_time_warps) for t in transformers] == [
        (1, WARPS)
    ]
    assert out.startswith(
        "digits (Conv4 + PrototypeClassifier, test-time shifts of up to 1 pixel, "
        "test-time warps by -10 10 degrees x scales 0.9 1): "
    )
    status, out, err = run(capsys, *argv, *WARP_FLAGS, "--json")
    assert status == 0, err
    record = json.loads(out)
    assert record["test_time_warps"] == [list(pair) for pair in WARPS]
    # the same accuracy as the library's pipeline on the same episodes
    module, meta = load_backbone(digits_backbone)
    X, y = load_digits_images(image_size=16, return_X_y=True)
    novel = ~np.isin(y, meta["trained_on"]["classes"])

    def accuracy(warps):  # (that the warps change it, the predict tests show)
        pipe = make_pipeline(
            BackboneTransformer(module, test_time_warps=warps, device="cpu"),
            PrototypeClassifier(device="cpu"),
        )
        return evaluate_episodes(
            pipe, X[novel], y[novel], n_way=5, n_shot=1, n_query=5, n_episodes=10,
            random_state=0,
        ).mean  # fmt: skip

    assert record["mean"] == accuracy(WARPS)
    status, out, _ = run(capsys, *argv, "--json")
    assert json.loads(out)["test_time_warps"] is None


@pytest.mark.parametrize(
    "flag, verb", [("--test-time-angles", "rotates"), ("--test-time-scales", "scales")]
)
def test_evaluate_refuses_warps_of_texts(tmp_path, capsys, flag, verb):
    status, _, err = run(
        capsys, "evaluate", "--dataset", "banking77", "--data-dir", tmp_path,
        flag, "1",
    )  # fmt: skip
    assert status == 1
    assert err == (
        f"skfewshot evaluate: error: {flag} {verb} images; banking77 is "
        "evaluated on texts (leave it out)\n"
    )


@pytest.mark.shared_data
def test_runs_test_time_shifts(shared_data, transformers, tmp_path, capsys):
    build_omniglot_runs(shared_data, tmp_path / "runs", n_runs=1, n_way=5)
    backbone = tmp_path / "conv4.pt"
    save_backbone(Conv4(hidden=4), backbone, input_shape=(1, 28, 28))
    status, out, err = run(
        capsys, "runs", "--runs", tmp_path / "runs", "--backbone", backbone,
        "--test-time-shifts", "2", "--json",
    )  # fmt: skip
    assert status == 0, err
    assert [t.test_time_shifts for t in transformers] == [2]
    assert json.loads(out)["test_time_shifts"] == 2
    status, out, _ = run(
        capsys, "runs", "--runs", tmp_path / "runs", "--backbone", backbone,
        "--test-time-shifts", "1",
    )  # fmt: skip
    assert out.endswith(
        "over 1 runs (Conv4 + PrototypeClassifier, test-time shifts of up to 1 pixel)\n"
    )


@pytest.mark.shared_data
def test_runs_test_time_warps(shared_data, transformers, tmp_path, capsys):
    build_omniglot_runs(shared_data, tmp_path / "runs", n_runs=1, n_way=5)
    backbone = tmp_path / "conv4.pt"
    save_backbone(Conv4(hidden=4), backbone, input_shape=(1, 28, 28))
    argv = ["runs", "--runs", tmp_path / "runs", "--backbone", backbone]
    status, out, err = run(capsys, *argv, "--test-time-angles", "15", "--json")
    assert status == 0, err
    assert [t.test_time_warps for t in transformers] == [[(15.0, 1.0)]]
    assert json.loads(out)["test_time_warps"] == [[15.0, 1.0]]
    status, out, _ = run(capsys, *argv, "--test-time-scales", "0.9", "1.1")
    assert out.endswith(
        "over 1 runs (Conv4 + PrototypeClassifier, test-time warps by scales 0.9 1.1)\n"
    )


def _train_on_fake_omniglot(capsys, tmp_path, *flags):
    """``skfewshot train`` on a fake small1 holding out 2 characters: the
    record (the run must succeed)."""
    from _datasets_testing import fake_omniglot

    fake_omniglot(tmp_path / "images_background_small1.zip")
    status, stdout, err = run(
        capsys, "train", "--dataset", "omniglot", "--data-dir", tmp_path,
        "--subset", "images_background_small1", *flags, "--val-classes", "2",
        "-o", tmp_path / "m.pt", *QUICK, "--json",
    )  # fmt: skip
    assert status == 0, err
    return json.loads(stdout)


def test_rotations_never_make_a_held_out_character_a_training_class(
    trainers, tmp_path, capsys
):
    # --val-classes holds out whole characters; --rotations then rotates the
    # training characters only (it used to rotate first, so a held-out class
    # could be the 90-degree turn of a character trained on)
    record = _train_on_fake_omniglot(capsys, tmp_path, "--rotations")
    held = record["val_classes"]
    assert len(held) == 2 and not any("degrees" in c for c in held)
    base = [c for c in record["classes"] if "degrees" not in c]
    assert len(base) == 2 and not set(held) & set(base)
    assert not any(c.startswith(h + " (") for h in held for c in record["classes"])
    assert len(record["classes"]) == 8  # 2 characters in 4 orientations
    assert "mirrors" not in record["settings"]  # off: not recorded
    assert record["settings"]["data_dir"] == str(tmp_path.resolve())
    (trainer,) = trainers
    assert len(trainer.classes_) == 8


def test_mirrors_after_rotations_make_eight_classes_per_training_character(
    trainers, tmp_path, capsys
):
    record = _train_on_fake_omniglot(capsys, tmp_path, "--rotations", "--mirrors")
    held, classes = record["val_classes"], record["classes"]
    assert not any(c.startswith(h + " (") for h in held for c in classes)
    assert len(classes) == 16  # 2 characters in 4 orientations, mirrored or not
    assert classes[8:] == [f"{c} (mirrored)" for c in classes[:8]]
    assert record["settings"]["mirrors"] is True
    (trainer,) = trainers
    assert len(trainer.classes_) == 16
    # class 8 + j holds the mirror images of class j's images, in their order
    X, y = trainer.seen_
    for j in range(8):
        np.testing.assert_array_equal(X[y == 8 + j], X[y == j][..., ::-1])


@pytest.mark.parametrize("flag", ["--mirrors", "--splices"])
def test_new_classes_of_drawings_need_omniglot(flag, shapes, tmp_path, capsys):
    status, out, err = run(
        capsys, "train", shapes, "-o", tmp_path / "n.pt", *QUICK, flag
    )
    assert status == 1 and out == ""
    assert err == f"skfewshot train: error: {flag} applies to --dataset omniglot only\n"


def test_splices_join_two_training_characters_of_one_alphabet_and_orientation(
    trainers, monkeypatch, tmp_path, capsys
):
    from _datasets_testing import fake_omniglot

    import skfewshot.datasets

    calls = []
    real = skfewshot.datasets.augment_splices

    def spy(X, y, groups, **kwargs):
        calls.append((X, y, groups, kwargs))
        return real(X, y, groups, **kwargs)

    monkeypatch.setattr(skfewshot.datasets, "augment_splices", spy)
    fake_omniglot(tmp_path / "images_background_small1.zip")
    status, stdout, err = run(
        capsys, "train", "--dataset", "omniglot", "--data-dir", tmp_path,
        "--subset", "images_background_small1", "--rotations", "--splices",
        "--seed", "3", "-o", tmp_path / "m.pt", *QUICK, "--json",
    )  # fmt: skip
    assert status == 0, err  # the supervised trainer got no groups
    record = json.loads(stdout)
    classes = record["classes"]
    assert len(classes) == 32  # 4 characters in 4 orientations, spliced or not
    assert classes[16:] == [f"{c} (spliced)" for c in classes[:16]]
    assert record["settings"]["splices"] is True
    (trainer,) = trainers
    ((X, y, groups, kwargs),) = calls
    assert kwargs == {"random_state": 3}  # drawn with --seed
    # the rotated training characters, each group one alphabet in one orientation
    np.testing.assert_array_equal(trainer.seen_[0][: len(X)], X)
    assert len(np.unique(groups)) == 8
    for g in np.unique(groups):
        kinds = {_alphabet_and_orientation(classes[c]) for c in y[groups == g]}
        assert len(kinds) == 1 and len(np.unique(y[groups == g])) == 2, kinds
    # and the trainer fitted on exactly their splices
    X_s, y_s, _ = real(X, y, groups, random_state=3)
    np.testing.assert_array_equal(trainer.seen_[0], X_s)
    np.testing.assert_array_equal(trainer.seen_[1], y_s)


def test_splices_need_two_training_characters_per_alphabet(tmp_path, capsys):
    from _datasets_testing import fake_omniglot

    fake_omniglot(tmp_path / "images_background_small1.zip")
    status, out, err = run(
        capsys, "train", "--dataset", "omniglot", "--data-dir", tmp_path,
        "--subset", "images_background_small1", "--splices", "--val-classes",
        "2", "--seed", "3", "-o", tmp_path / "m.pt", *QUICK,
    )  # fmt: skip
    # seed 3 holds out one character of each alphabet
    assert status == 1 and out == ""
    assert err == (
        "skfewshot train: error: --splices joins two training characters of one "
        "alphabet (in one orientation), and 2 alphabet(s) hold only one (e.g. "
        "Greek/character01, after --val-classes); hold out fewer classes or drop "
        "--splices\n"
    )
    assert not (tmp_path / "m.pt").exists()


# -- train --within-alphabet --------------------------------------------------------


@pytest.fixture
def episodic_trainers(monkeypatch):
    """Every ProtoNetMetaTrainer the CLI fits, with the groups it got."""
    made = []

    class Spy(skfewshot.training.ProtoNetMetaTrainer):
        def fit(self, X, y, **fit_params):
            made.append(self)
            self.seen_ = X, y, fit_params["groups"]
            return super().fit(X, y, **fit_params)

    monkeypatch.setattr(skfewshot.training, "ProtoNetMetaTrainer", Spy)
    return made


def _alphabet_and_orientation(name):
    """'Latin/character01 (90 degrees)' -> 'Latin (90 degrees)'."""
    character, _, orientation = name.partition(" ")
    return f"{character.split('/')[0]} {orientation}"


EPISODES = ["--recipe", "protonet", "--n-way", "2", "--n-shot", "1", "--n-query", "1"]


@pytest.mark.parametrize(
    "flags, n_groups",
    [((), 2), (("--rotations",), 8), (("--mirrors",), 4), (("--splices",), 4)],
)
def test_within_alphabet_episodes_hold_one_alphabet_in_one_orientation(
    episodic_trainers, flags, n_groups, tmp_path, capsys
):
    from _datasets_testing import fake_omniglot

    fake_omniglot(tmp_path / "images_background_small1.zip")
    status, stdout, err = run(
        capsys, "train", "--dataset", "omniglot", "--data-dir", tmp_path,
        "--subset", "images_background_small1", *flags, "--within-alphabet",
        *EPISODES, "--epochs", "1", "--image-size", "16", "--width", "4",
        "--episodes-per-epoch", "3", "-o", tmp_path / "m.pt", "--json",
    )  # fmt: skip
    assert status == 0, err
    record = json.loads(stdout)
    assert record["settings"]["within_alphabet"] is True
    (trainer,) = episodic_trainers
    assert trainer.within_groups is True
    _, y, groups = trainer.seen_
    names = np.array(record["classes"])[y]
    assert len(np.unique(groups)) == n_groups
    for g in np.unique(groups):
        # one alphabet, one orientation: the same name once its character is cut
        kinds = {_alphabet_and_orientation(n) for n in names[groups == g]}
        assert len(kinds) == 1, kinds
        assert len(np.unique(y[groups == g])) == 2  # both characters of it


def test_within_alphabet_needs_omniglot_and_protonet(shapes, tmp_path, capsys):
    argv = ["train", shapes, "-o", tmp_path / "n.pt", "--epochs", "1"]
    status, out, err = run(capsys, *argv, *EPISODES, "--within-alphabet")
    assert status == 1 and out == ""
    assert err == (
        "skfewshot train: error: --within-alphabet needs --dataset omniglot "
        "(its alphabets)\n"
    )
    from _datasets_testing import fake_omniglot

    fake_omniglot(tmp_path / "images_background_small1.zip")
    argv = ["train", "--dataset", "omniglot", "--data-dir", tmp_path, "-o", tmp_path]
    argv += ["--subset", "images_background_small1"]
    status, out, err = run(capsys, *argv, "--within-alphabet")
    assert status == 1 and out == ""
    assert "--within-alphabet draws the training episodes of --recipe protonet" in err


def test_without_within_alphabet_no_groups_reach_the_trainer(
    episodic_trainers, tmp_path, capsys
):
    from _datasets_testing import fake_omniglot

    fake_omniglot(tmp_path / "images_background_small1.zip")
    status, stdout, err = run(
        capsys, "train", "--dataset", "omniglot", "--data-dir", tmp_path,
        "--subset", "images_background_small1", "--rotations", *EPISODES,
        "--epochs", "1", "--image-size", "16", "--width", "4",
        "--episodes-per-epoch", "3", "-o", tmp_path / "m.pt", "--json",
    )  # fmt: skip
    assert status == 0, err
    assert "within_alphabet" not in json.loads(stdout)["settings"]
    (trainer,) = episodic_trainers
    assert trainer.within_groups is False and trainer.seen_[2] is None


def test_within_alphabet_line_counts_only_the_classes_drawn(tmp_path, capsys):
    # Latin holds two characters, Greek one: 2-way episodes within one alphabet
    # never draw Greek's, and the line that says what trains says so
    import zipfile

    from _datasets_testing import STROKE, encode_png

    subset = "images_background_small1"
    with zipfile.ZipFile(tmp_path / f"{subset}.zip", "w") as archive:
        for i, (alphabet, character) in enumerate(
            [("Latin", "character01"), ("Latin", "character02"), ("Greek", "c01")]
        ):
            for drawer in (1, 2):
                pixels = STROKE.copy()
                pixels.flat[i] ^= 1  # each character its own drawing
                name = f"{subset}/{alphabet}/{character}/0{i}01_0{drawer}.png"
                archive.writestr(name, encode_png(pixels, depth=1))
    argv = [
        "train", "--dataset", "omniglot", "--data-dir", tmp_path, "--subset", subset,
        *EPISODES, "--epochs", "1", "--image-size", "16", "--width", "4",
        "--episodes-per-epoch", "2", "-o", tmp_path / "m.pt",
    ]  # fmt: skip
    with pytest.warns(UserWarning, match="Episodes are drawn from 2 of the 3"):
        status, _, err = run(capsys, *argv, "--within-alphabet")
    assert status == 0, err
    assert "on 6 images of 3 classes (2 of them drawn in the episodes)" in err
    status, _, err = run(capsys, *argv)  # every class drawn: nothing said
    assert status == 0, err
    assert err.startswith("skfewshot train: protonet Conv4 on 6 images of 3 classes\n")
