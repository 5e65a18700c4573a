"""``train --ink-normalize``: moment-normalised drawings, recorded in the
backbone file, and applied by ``evaluate``, ``runs`` and ``predict`` to every
image they feed it (never raw drawings to a normalised backbone)."""

import json

import numpy as np
import pytest
import torch
from conftest import build_omniglot_runs
from PIL import Image
from test_cli_polarity import _folder as _ink_folder
from test_cli_recipe14 import QUICK, trainers  # noqa: F401 (a fixture)
from test_cli_train_predict import TRAIN_CLASSES, _folder, run

import skfewshot.model_selection
from skfewshot.backbone import BackboneTransformer
from skfewshot.cli import main
from skfewshot.datasets import (
    ImageFileReader,
    InkNormalizer,
    load_digits_images,
    load_image_folder,
    load_omniglot_runs,
)
from skfewshot.models import Conv4, load_backbone, save_backbone
from skfewshot.prototype import PrototypeClassifier

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml

#: What ``train --ink-normalize`` records at an --image-size up to 105.
RECORD = {"radius": None, "resolution": 105}


def _normalised(X, size):
    return InkNormalizer(image_size=size).transform(X)


def _save(path, trained_on, shape=(1, 16, 16), seed=0):
    """A tiny untrained Conv4 saved with ``trained_on``."""
    torch.manual_seed(seed)
    save_backbone(Conv4(hidden=4), path, input_shape=shape, trained_on=trained_on)
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("shapes"), 4, classes=TRAIN_CLASSES)


def test_train_fits_on_normalised_drawings_and_records_it(
    trainers,  # noqa: F811
    tmp_path,
    capsys,
):
    out = tmp_path / "d.pt"
    argv = ["train", "--dataset", "digits", "-o", out, *QUICK, "--json", "--quiet"]
    status, stdout, err = run(capsys, *argv, "--ink-normalize")
    assert status == 0, err
    record = json.loads(stdout)
    # the digits read at 105 x 105, centred on their ink, resized to 16 x 16
    X, y = load_digits_images(image_size=105, return_X_y=True)
    expected = _normalised(X[y < 5], 16)
    seen, _ = trainers[0].seen_
    np.testing.assert_array_equal(seen, expected)
    assert record["trained_on"]["ink_normalizer"] == RECORD
    assert record["trained_on"]["pixel_mean"] == round(float(expected.mean()), 4)
    assert record["settings"]["ink_normalize"] is True
    _, meta = load_backbone(out)
    assert meta["trained_on"]["ink_normalizer"] == RECORD
    assert meta["input_shape"] == (1, 16, 16)
    # without the flag: the images as read, nothing recorded (older
    # checkpoints, which lack the setting, still resume)
    status, stdout, err = run(capsys, *argv[:4], tmp_path / "plain.pt", *argv[5:])
    assert status == 0, err
    record = json.loads(stdout)
    np.testing.assert_array_equal(
        trainers[1].seen_[0], load_digits_images(image_size=16, return_X_y=True)[0][
            y < 5
        ],
    )  # fmt: skip
    assert "ink_normalizer" not in record["trained_on"]
    assert "ink_normalize" not in record["settings"]


def test_train_reads_larger_images_at_their_own_size(
    shapes,
    trainers,  # noqa: F811
    tmp_path,
    capsys,
):
    status, stdout, err = run(
        capsys, "train", shapes, "-o", tmp_path / "m.pt", *QUICK, "--image-size",
        "112", "--ink-normalize", "--json", "--quiet",
    )  # fmt: skip
    assert status == 0, err
    assert json.loads(stdout)["trained_on"]["ink_normalizer"] == {
        "radius": None,
        "resolution": 112,
    }
    expected = _normalised(load_image_folder(shapes, image_size=112).data, 112)
    np.testing.assert_array_equal(trainers[0].seen_[0], expected)


def test_train_ink_radius_median_is_the_training_classes(
    trainers,  # noqa: F811
    tmp_path,
    capsys,
):
    from skfewshot.datasets import ink_radius

    status, stdout, err = run(
        capsys, "train", "--dataset", "digits", "-o", tmp_path / "d.pt", *QUICK,
        "--ink-normalize", "--ink-radius", "median", "--val-classes", "2",
        "--json", "--quiet",
    )  # fmt: skip
    assert status == 0, err
    record = json.loads(stdout)
    X, y = load_digits_images(image_size=105, return_X_y=True)
    held = [int(c) for c in record["val_classes"]]
    train = (y < 5) & ~np.isin(y, held)
    # the lower middle of the training digits' radii, not the held-out ones'
    radii = np.sort(ink_radius(X[train]))
    radius = float(radii[(len(radii) - 1) // 2])
    assert record["trained_on"]["ink_normalizer"] == {
        "radius": radius,
        "resolution": 105,
    }
    assert record["settings"]["ink_radius"] == "median"
    expected = InkNormalizer(radius=radius, image_size=16).transform(X[train])
    np.testing.assert_array_equal(trainers[0].seen_[0], expected)
    status, stdout, err = run(
        capsys, "train", "--dataset", "digits", "-o", tmp_path / "f.pt", *QUICK,
        "--ink-normalize", "--ink-radius", "0.3", "--json", "--quiet",
    )  # fmt: skip
    assert status == 0, err
    assert json.loads(stdout)["trained_on"]["ink_normalizer"]["radius"] == 0.3


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--ink-normalize", "--color", "rgb"],
            "--ink-normalize centres drawings (bright ink on black); it needs "
            "grayscale images (leave --color out)",
        ),
        (
            ["--ink-radius", "0.2"],
            "--ink-radius sets the size --ink-normalize scales drawings to: "
            "give --ink-normalize too",
        ),
    ],
)
def test_train_ink_normalize_option_errors(shapes, tmp_path, capsys, flags, message):
    status, _, err = run(capsys, "train", shapes, "-o", tmp_path / "m.pt", *flags)
    assert status == 1
    assert err == f"skfewshot train: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0", "1.5", "nan", "-0.2", "mean"])
def test_ink_radius_syntax(shapes, tmp_path, capsys, value):
    argv = ["train", str(shapes), "-o", str(tmp_path / "m.pt"), "--ink-normalize"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--ink-radius", value])
    assert exc.value.code == 2
    assert (
        "argument --ink-radius: expected median or a fraction of the width in "
        f"(0, 1], got {value!r}\n"
    ) in capsys.readouterr().err


def test_train_refuses_to_normalise_dark_ink(tmp_path, capsys):
    # the normaliser would centre the white background, not the drawing
    data = tmp_path / "dark"
    _ink_folder(data, 3, dark_ink=True)
    status, _, err = run(
        capsys, "train", data, "-o", tmp_path / "m.pt", "--ink-normalize", *QUICK
    )
    assert status == 1
    mean = load_image_folder(data, image_size=105).data.mean(dtype=np.float64)
    assert err == (
        f"skfewshot train: error: --ink-normalize centres the bright ink of "
        f"drawings, but the images of DIR {data} have a mean pixel value of "
        f"{mean:.2f} (mostly bright: dark ink on a light background?); give "
        "drawings with bright ink on black, or leave --ink-normalize out\n"
    )
    assert not (tmp_path / "m.pt").exists()
    # the same drawings, bright on black, train
    _ink_folder(tmp_path / "bright", 3, dark_ink=False)
    status, _, err = run(
        capsys, "train", tmp_path / "bright", "-o", tmp_path / "m.pt",
        "--ink-normalize", *QUICK, "--quiet",
    )  # fmt: skip
    assert status == 0, err


@pytest.fixture
def episodes_fed(monkeypatch):
    """The images every evaluate_episodes call of the CLI gets."""
    fed = []
    real = skfewshot.model_selection.evaluate_episodes

    def spy(estimator, X, y, **kwargs):
        fed.append(X)
        return real(estimator, X, y, **kwargs)

    monkeypatch.setattr(skfewshot.model_selection, "evaluate_episodes", spy)
    return fed


@pytest.mark.parametrize("radius", [None, 0.25])
def test_evaluate_feeds_a_normalised_backbone_normalised_drawings(
    tmp_path, capsys, episodes_fed, radius
):
    digits = {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "pixel_mean": 0.2}
    record = {**RECORD, "radius": radius}
    ink = _save(tmp_path / "ink.pt", {**digits, "ink_normalizer": record})
    plain = _save(tmp_path / "plain.pt", digits)
    argv = ["evaluate", "--dataset", "digits", "--episodes", "4", "--n-query", "2"]
    status, out, err = run(capsys, *argv, "--backbone", ink, "--quiet")
    assert status == 0, err
    assert out.startswith(
        "digits (Conv4 + PrototypeClassifier, moment-normalised drawings): "
    )
    X, y = load_digits_images(image_size=105, return_X_y=True)
    expected = InkNormalizer(radius=radius, image_size=16).transform(X[y >= 5])
    np.testing.assert_array_equal(episodes_fed[0], expected)
    status, out, err = run(capsys, *argv, "--backbone", ink, "--json")
    assert json.loads(out)["trained_on"]["ink_normalizer"] == record
    # a backbone without the record gets the digits as read, at its size
    status, out, err = run(capsys, *argv, "--backbone", plain, "--quiet")
    assert status == 0, err
    assert out.startswith("digits (Conv4 + PrototypeClassifier): ")
    X, y = load_digits_images(image_size=16, return_X_y=True)
    np.testing.assert_array_equal(episodes_fed[-1], X[y >= 5])


def test_evaluate_normalises_omniglot_at_full_resolution(
    tmp_path, capsys, episodes_fed
):
    from _datasets_testing import fake_omniglot

    from skfewshot.datasets import load_omniglot

    subset = "images_background_small2"
    zip_path = fake_omniglot(tmp_path / f"{subset}.zip", subset)
    trained_on = {"dataset": "omniglot", "subset": ["images_background_small1"]}
    ink = _save(tmp_path / "ink.pt", {**trained_on, "ink_normalizer": RECORD})
    status, _, err = run(
        capsys, "evaluate", "--dataset", "omniglot", "--data-dir", tmp_path,
        "--backbone", ink, "--episodes", "2", "--n-way", "2", "--n-query", "1",
        "--quiet",
    )  # fmt: skip
    assert status == 0, err
    # (the fake drawings are smaller than 105 x 105: read at 105, as any size)
    full = load_omniglot(subset, path=zip_path, image_size=105)
    np.testing.assert_array_equal(episodes_fed[0], _normalised(full.data, 16))


def _features(backbone, X):
    module, _ = load_backbone(backbone)
    return BackboneTransformer(module, cache=False, device="cpu").fit_transform(X)


@pytest.mark.shared_data
def test_runs_normalise_support_and_query(shared_data, tmp_path, capsys):
    build_omniglot_runs(shared_data, tmp_path / "runs", n_runs=1, n_way=5)
    trained_on = {"dataset": "omniglot", "pixel_mean": 0.1, "ink_normalizer": RECORD}
    backbone = _save(tmp_path / "ink.pt", trained_on, shape=(1, 28, 28))
    status, out, err = run(
        capsys, "runs", "--runs", tmp_path / "runs", "--backbone", backbone,
        "--device", "cpu", "--json",
    )  # fmt: skip
    assert status == 0, err
    record = json.loads(out)
    assert record["ink_normalizer"] == RECORD
    # the same run through the library, on drawings normalised at 105 x 105
    (episode,) = load_omniglot_runs(tmp_path / "runs", image_size=None).runs
    support = _features(backbone, _normalised(episode.X_support, 28))
    query = _features(backbone, _normalised(episode.X_query, 28))
    pred = PrototypeClassifier(device="cpu").fit(support, episode.y_support)
    errors = int(np.sum(pred.predict(query) != episode.y_query))
    assert record["runs"][0]["errors"] == errors
    status, out, err = run(
        capsys, "runs", "--runs", tmp_path / "runs", "--backbone", backbone
    )
    assert out.endswith("(Conv4 + PrototypeClassifier, moment-normalised drawings)\n")


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    """Bright drawings: one support image per class, queries copies of them."""
    root = tmp_path_factory.mktemp("ink_predict")
    _ink_folder(root / "support", 1, dark_ink=False)
    _ink_folder(root / "query", 1, dark_ink=False)
    return root / "support", sorted((root / "query").rglob("*.png"))


@pytest.mark.parametrize("invert", [False, True])
def test_predict_normalises_support_and_query(
    tmp_path, capsys, episode, invert, recwarn
):
    support, files = episode
    trained_on = {"dataset": "folder", "pixel_mean": 0.1, "ink_normalizer": RECORD}
    backbone = _save(tmp_path / "ink.pt", trained_on)
    status, out, err = run(
        capsys, "predict", "--backbone", backbone, "--support", support,
        "--query", *files, "--device", "cpu", "--json",
        *(["--invert"] if invert else []),
    )  # fmt: skip
    assert status == 0, err
    # inverted (dark) drawings: one warning, the CLI's, which names --invert;
    # not also the normaliser's
    assert ("try without --invert" in err) is invert
    assert not [w for w in recwarn if "mean pixel" in str(w.message)]
    payload = json.loads(out)
    assert payload["ink_normalizer"] == RECORD

    def fed(X):  # read at 105 x 105, inverted with --invert, then normalised
        return _normalised(1 - X if invert else X, 16)

    data = load_image_folder(support, image_size=105)
    head = PrototypeClassifier(device="cpu").fit(
        _features(backbone, fed(data.data)), data.target_names[data.target]
    )
    X = ImageFileReader(image_size=105).transform([str(f) for f in files])
    proba = head.predict_proba(_features(backbone, fed(X)))
    np.testing.assert_allclose(
        [r["probability"] for r in payload["predictions"]],
        proba.max(axis=1),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "record",
    [
        {"radius": 2, "resolution": 105},
        {"radius": None},
        {"radius": None, "resolution": 10.5},
        {"radius": True, "resolution": 105},
        "centre",
    ],
)
def test_a_malformed_record_is_an_error_naming_the_file(tmp_path, capsys, record):
    backbone = _save(
        tmp_path / "odd.pt", {"dataset": "digits", "ink_normalizer": record}
    )
    status, _, err = run(
        capsys, "evaluate", "--dataset", "digits", "--backbone", backbone
    )
    assert status == 1
    assert err == (
        f"skfewshot evaluate: error: backbone file {backbone} records "
        f'ink_normalizer {record!r}; expected {{"radius": None or a fraction in '
        '(0, 1], "resolution": a side in pixels}, as skfewshot train '
        "--ink-normalize writes it\n"
    )


def test_ensemble_members_must_agree_on_normalisation(tmp_path, capsys):
    digits = {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}
    inked = {**digits, "ink_normalizer": RECORD}
    a = _save(tmp_path / "a.pt", inked, seed=0)
    b = _save(tmp_path / "b.pt", inked, seed=1)
    plain = _save(tmp_path / "plain.pt", digits, seed=2)
    status, _, err = run(capsys, "ensemble", a, b, "-o", tmp_path / "ab.pt")
    assert status == 0, err
    assert load_backbone(tmp_path / "ab.pt")[1]["trained_on"]["ink_normalizer"] == (
        RECORD
    )
    # one member saw raw drawings: no input suits both, so none is made
    status, _, err = run(capsys, "ensemble", a, plain, "-o", tmp_path / "ap.pt")
    assert status == 1
    assert "the members' training records disagree on 'ink_normalizer'" in err
    assert not (tmp_path / "ap.pt").exists()


def test_a_run_resumes_only_with_the_same_normalisation(
    shapes, tmp_path, capsys, monkeypatch
):
    from test_cli_train_predict import _interrupt_at_epoch

    out = tmp_path / "m.pt"
    argv = ["train", shapes, "-o", out, *QUICK, "--epochs", "2"]
    with monkeypatch.context() as patch:
        _interrupt_at_epoch(patch, 2)
        status, _, err = run(capsys, *argv, "--ink-normalize")
    assert status == 130, err
    status, _, err = run(capsys, *argv, "--resume")  # raw drawings this time
    assert status == 1
    assert (
        "it was written with ink_normalize=True, this run has no ink_normalize" in err
    )
    status, _, err = run(capsys, *argv, "--ink-normalize", "--resume")
    assert status == 0, err
    assert load_backbone(out)[1]["trained_on"]["ink_normalizer"] == RECORD


def test_ink_radius_median_of_blank_drawings_is_an_error(tmp_path, capsys):
    for name in ("a", "b", "c"):
        (tmp_path / "blank" / name).mkdir(parents=True)
        for i in range(2):
            image = np.zeros((20, 20), np.uint8)
            image[i, i] = 255 * (name == "a")  # one pixel, or none
            Image.fromarray(image).save(tmp_path / "blank" / name / f"{i}.png")
    status, _, err = run(
        capsys, "train", tmp_path / "blank", "-o", tmp_path / "m.pt", *QUICK,
        "--ink-normalize", "--ink-radius", "median",
    )  # fmt: skip
    assert status == 1
    assert err == (
        "skfewshot train: error: --ink-radius median: the median training drawing "
        "has no ink spread (radius 0: blank or one-pixel images); give "
        "--ink-radius R\n"
    )
    assert not (tmp_path / "m.pt").exists()
