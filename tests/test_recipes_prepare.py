"""prepare_one_shot_training: the one-shot recipe's training images."""

import json

import numpy as np
import pytest
from test_cli_train_predict import run

import skfewshot.training
from skfewshot.datasets import (
    InkNormalizer,
    augment_rotations,
    augment_splices,
    load_omniglot,
)
from skfewshot.recipes import ONE_SHOT_INK_RADIUS, prepare_one_shot_training
from skfewshot.training import SupervisedPretrainer


def _drawings(n_classes=6, per_class=2, size=32, seed=0):
    """Random strokes: ``n_classes`` classes of ``per_class`` drawings."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n_classes * per_class, 1, size, size), dtype=np.float32)
    for image in X:
        top, left = rng.integers(4, size // 2, size=2)
        image[0, top : top + 8, left : left + rng.integers(3, 12)] = 1.0
    return X, np.repeat(np.arange(n_classes), per_class)


def test_normalises_rotates_then_splices_within_alphabet_and_orientation():
    X, y = _drawings()
    alphabets = np.array(["b", "b", "b", "a", "a", "a"])[y]  # strings, any order
    X_t, y_t, g_t = prepare_one_shot_training(
        X, y, alphabets, image_size=16, random_state=5
    )
    # by hand: the normaliser, the four rotations, each alphabet in each
    # orientation a group (code * 4 + rotation, codes in sorted order: a=0, b=1),
    # then the splices within those groups and the spliced blocks a group apart
    n = len(y)
    X_n = InkNormalizer(radius=ONE_SHOT_INK_RADIUS, image_size=16).transform(X)
    X_r, y_r, codes = augment_rotations(X_n, y, (alphabets == "b").astype(int))
    groups = codes * 4 + np.repeat(np.arange(4), n)
    X_s, y_s, tiled = augment_splices(X_r, y_r, groups, random_state=5)
    np.testing.assert_array_equal(X_t, X_s)
    np.testing.assert_array_equal(y_t, y_s)
    np.testing.assert_array_equal(g_t, tiled * 2 + np.repeat([0, 1], 4 * n))
    assert X_t.shape == (8 * n, 1, 16, 16) and X_t.dtype == np.float32
    assert len(np.unique(y_t)) == 8 * 6 and len(np.unique(g_t)) == 2 * 4 * 2
    # every group holds one alphabet: three classes in one orientation
    for g in np.unique(g_t):
        assert len(np.unique(y_t[g_t == g])) == 3
    # the splices are seeded: another seed pairs or cuts them otherwise
    other = prepare_one_shot_training(X, y, alphabets, image_size=16, random_state=6)
    np.testing.assert_array_equal(other[0][: 4 * n], X_t[: 4 * n])
    assert not np.array_equal(other[0], X_t)


def test_defaults_are_the_recipe_radius_and_28_pixels():
    X, y = _drawings(n_classes=4)
    X_t = prepare_one_shot_training(X, y, [0, 0, 0, 0, 1, 1, 1, 1])[0]
    expected = InkNormalizer(radius=0.28, image_size=28).transform(X)
    np.testing.assert_array_equal(X_t[: len(y)], expected)
    assert ONE_SHOT_INK_RADIUS == 0.28


@pytest.mark.parametrize(
    "groups, message",
    [
        (
            None,
            "groups is required: the group (alphabet) of each drawing, within "
            "which the splices pair classes.",
        ),
        (
            [0, 0, 1],
            "groups must have one entry per image, got shape (3,) for 8 images.",
        ),
        (
            [["a"]] * 8,
            "groups must have one entry per image, got shape (8, 1) for 8 images.",
        ),
        (
            ["Greek"] * 2 + ["Latin"] * 6,
            "group 'Greek' holds a single class (0), and the splices join two "
            "classes of one group; 1 group(s) hold only one.",
        ),
    ],
)
def test_refuses_groups_the_splices_cannot_use(groups, message):
    X, y = _drawings(n_classes=4)
    with pytest.raises(ValueError) as info:
        prepare_one_shot_training(X, y, groups)
    assert str(info.value) == message


def test_a_class_in_two_groups_is_refused():
    X, y = _drawings(n_classes=4)
    with pytest.raises(ValueError, match="is in two groups"):
        prepare_one_shot_training(X, y, [0, 1, 0, 0, 1, 1, 1, 1])


@pytest.fixture
def trainers(monkeypatch):
    """Every SupervisedPretrainer the CLI fits, with the images it got."""
    made = []

    class Spy(SupervisedPretrainer):
        def fit(self, X, y, **fit_params):
            made.append((X, y))
            return super().fit(X, y, **fit_params)

    monkeypatch.setattr(skfewshot.training, "SupervisedPretrainer", Spy)
    return made


def test_the_command_line_trains_on_the_same_images(trainers, tmp_path, capsys):
    from _datasets_testing import fake_omniglot

    data = fake_omniglot(tmp_path / "images_background_small1.zip")
    status, stdout, err = run(
        capsys, "train", "--dataset", "omniglot", "--data-dir", tmp_path,
        "--subset", "images_background_small1", "--ink-normalize",
        "--ink-radius", "0.28", "--rotations", "--splices", "--seed", "3",
        "-o", tmp_path / "m.pt", "--epochs", "1", "--image-size", "16",
        "--width", "4", "--batch-size", "8", "--json",
    )  # fmt: skip
    assert status == 0, err
    assert json.loads(stdout)["settings"]["splices"] is True
    # the command line reads the drawings at 105 x 105 to normalise them
    bunch = load_omniglot("images_background_small1", path=data, image_size=105)
    expected = prepare_one_shot_training(
        bunch.data, bunch.target, bunch.groups, image_size=16, random_state=3
    )
    ((X, y),) = trainers
    np.testing.assert_array_equal(X, expected[0])
    np.testing.assert_array_equal(y, expected[1])


@pytest.mark.parametrize(
    "subsets, n_images, episodes",
    [
        (["images_background_small1"], 21_760, 109),
        (["images_background_small1", "images_background_small2"], 38_720, 194),
    ],
)
def test_the_documented_episodes_per_epoch_match_the_data(
    shared_data, subsets, n_images, episodes
):
    # the docs and `skfewshot ensemble --help` give --episodes-per-epoch as
    # round(images / 200) for these subsets, the shared alphabets read once
    from argparse import Namespace

    from skfewshot.cli import _omniglot_training_data

    args = Namespace(data_dir=shared_data / "omniglot", subset=subsets)
    X, y, _, _, groups = _omniglot_training_data(args, image_size=16)
    X_t, _, _ = prepare_one_shot_training(X, y, groups, image_size=8)
    assert len(X_t) == n_images and round(n_images / 200) == episodes
