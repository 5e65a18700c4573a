"""``skfewshot whiten``: a backbone file whose features are whitened by its base
classes, read by evaluate like any backbone file."""

import hashlib
import json
import os
import socket

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from test_cli import help_of
from test_cli_ensemble import (
    DIGITS_A,
    DIGITS_B,
    OMNIGLOT_1,
    OMNIGLOT_2,
    _save,
    evaluate_digits,
    run,
    runs_with_shifts,
)
from test_cli_train_predict import TRAIN_CLASSES, _folder

from skfewshot import BackboneTransformer
from skfewshot.cli import _CLIError, _whitened_trained_on, main
from skfewshot.datasets import load_digits_images, load_image_folder
from skfewshot.models import Conv4, WhitenedBackbone, load_backbone, save_backbone
from skfewshot.preprocessing import WithinClassWhitening
from skfewshot.recipes import whiten_backbone


def _digits_base(size=16):
    """The images ``whiten --dataset digits`` reads: digits 0-4 at ``size``."""
    X, y = load_digits_images(image_size=size, return_X_y=True)
    keep = y < 5
    return X[keep], y[keep]


def _by_hand(backbone, X, y, shrinkage=10.0, **tta):
    """The library's fit on what ``backbone`` gives ``X``: (module, whitening)."""
    module, _ = load_backbone(backbone)
    features = BackboneTransformer(module, cache=False, **tta).fit_transform(X)
    return module, WithinClassWhitening(shrinkage).fit(features, y)


def _assert_same_map(whitened, whitening):
    """The file's map is ``whitening``'s (in float32: to its largest entry's
    float32 precision)."""
    scale = np.abs(whitening.components_).max()
    assert_allclose(
        whitened.components.numpy(), whitening.components_, rtol=0, atol=1e-6 * scale
    )


def test_whitened_backbone_is_the_library_fit(tmp_path, capsys):
    backbone = _save(tmp_path / "b.pt", DIGITS_B)
    out = tmp_path / "w.pt"
    status, stdout, err = run(
        capsys, "whiten", "--backbone", backbone, "--dataset", "digits",
        "--test-time-shifts", "1", "--shrinkage", "3", "-o", out, "--quiet",
    )  # fmt: skip
    assert status == 0 and err == ""
    assert stdout.startswith("Conv4 whitened by 901 images of 5 classes (shrinkage 3")
    X, y = _digits_base()
    module, whitening = _by_hand(backbone, X, y, 3.0, test_time_shifts=1)
    whitened, meta = load_backbone(out)
    assert isinstance(whitened, WhitenedBackbone) and whitened.normalize
    assert meta["architecture"] == "WhitenedBackbone"
    assert meta["input_shape"] == (1, 16, 16)
    # the map in the backbone's dtype, the fit of the same features
    assert whitened.components.dtype == torch.float32
    _assert_same_map(whitened, whitening)
    # each forward: the backbone's features normalised and whitened
    plain = BackboneTransformer(module, cache=False).fit_transform(X[:50])
    got = BackboneTransformer(whitened, cache=False).fit_transform(X[:50])
    assert_allclose(got, whitening.transform(plain), rtol=1e-4, atol=1e-5)


def test_the_record_says_what_was_fitted(tmp_path, capsys):
    backbone = _save(tmp_path / "b.pt", DIGITS_B)
    out = tmp_path / "w.pt"
    status, stdout, err = run(
        capsys, "whiten", "--backbone", backbone, "--dataset", "digits",
        "-o", out, "--json",
    )  # fmt: skip
    assert status == 0, err
    printed = json.loads(stdout)
    record = json.loads((tmp_path / "w.pt.json").read_text())
    assert printed == record
    assert record["command"] == "whiten" and record["output"] == str(out)
    assert record["backbone"] == {
        "path": str(backbone),
        "sha256": hashlib.sha256(backbone.read_bytes()).hexdigest(),
        "architecture": "Conv4",
        "trained_on": DIGITS_B,
    }
    assert record["whitened_on"] == {
        **DIGITS_B,
        "rotations": False,
        "n_images": 901,
        "n_classes": 5,
    }
    assert record["shrinkage"] == 10.0 and record["test_time_shifts"] == 0
    assert record["n_features"] == 4 and record["input_shape"] == [1, 16, 16]
    eig = _by_hand(backbone, *_digits_base())[1].eigenvalues_
    assert record["eigenvalues"] == pytest.approx(
        {"max": eig.max(), "min": eig.min(), "mean": eig.mean()}, rel=1e-6
    )
    assert record["trained_on"] == DIGITS_B and record["warnings"] == []


def test_evaluate_leaves_out_the_backbone_and_the_whitening_classes(tmp_path, capsys):
    backbone = _save(tmp_path / "b.pt", DIGITS_A)  # trained on 0 1 2 9
    out = tmp_path / "w.pt"
    status, _, err = run(
        capsys, "whiten", "--backbone", backbone, "--dataset", "digits", "-o", out
    )
    assert status == 0, err
    assert load_backbone(out)[1]["trained_on"] == {
        "dataset": "digits",
        "classes": [0, 1, 2, 9, 3, 4],
    }
    result = evaluate_digits(capsys, out)
    assert result["architecture"] == "WhitenedBackbone"
    assert result["classes"] == [5, 6, 7, 8]
    assert result["excluded_classes"] == [0, 1, 2, 3, 4, 9]


def test_a_folder_of_classes_joins_the_backbones_classes(tmp_path, capsys):
    data = _folder(tmp_path / "data", 3, classes=TRAIN_CLASSES)
    seen = {"dataset": "folder", "classes": ["circle", "kite"], "pixel_mean": 0.2}
    backbone = _save(tmp_path / "b.pt", seen)
    out = tmp_path / "w.pt"
    status, _, err = run(capsys, "whiten", data, "--backbone", backbone, "-o", out)
    assert status == 0 and err == ""
    assert load_backbone(out)[1]["trained_on"] == {
        "dataset": "folder",
        "classes": ["circle", "kite", "cross", "square", "stripes"],
        "pixel_mean": 0.2,  # the backbone's: what it was trained on
    }
    bunch = load_image_folder(data, image_size=16)
    _, whitening = _by_hand(backbone, bunch.data, bunch.target)
    _assert_same_map(load_backbone(out)[0], whitening)


def test_images_the_other_way_round_are_warned_about(tmp_path, capsys):
    data = _folder(tmp_path / "data", 3, classes=TRAIN_CLASSES)  # mostly dark
    seen = {"dataset": "folder", "classes": ["circle"], "pixel_mean": 0.8}
    backbone = _save(tmp_path / "b.pt", seen)
    status, _, err = run(
        capsys, "whiten", data, "--backbone", backbone, "-o", tmp_path / "w.pt"
    )
    assert status == 0
    assert err.startswith(
        "skfewshot whiten: warning: the whitening images have a mean pixel value of"
    )
    assert "try --invert" in err
    status, _, err = run(
        capsys, "whiten", data, "--backbone", backbone, "-o", tmp_path / "i.pt",
        "--invert", "--json",
    )  # fmt: skip
    assert status == 0 and err == ""
    assert json.loads((tmp_path / "i.pt.json").read_text())["invert"] is True


def test_a_backbone_without_a_record_gives_none_with_a_warning(tmp_path, capsys):
    data = _folder(tmp_path / "data", 3, classes=TRAIN_CLASSES)
    backbone = _save(tmp_path / "b.pt", None)
    out = tmp_path / "w.pt"
    status, _, err = run(capsys, "whiten", data, "--backbone", backbone, "-o", out)
    assert status == 0
    assert err == (
        f"skfewshot whiten: warning: backbone {backbone} records no training "
        "data, so the whitened backbone records none and evaluate will not be "
        "able to leave out its training classes (record them with "
        "save_backbone(..., trained_on=...), or train with skfewshot train)\n"
    )
    assert load_backbone(out)[1]["trained_on"] is None


@pytest.mark.parametrize(
    "trained_on, data, expected",
    [
        (DIGITS_A, DIGITS_B, {"dataset": "digits", "classes": [0, 1, 2, 9, 3, 4]}),
        (
            {**OMNIGLOT_1, "ink_normalizer": {"radius": 0.28, "resolution": 105}},
            OMNIGLOT_2,
            {
                "dataset": "omniglot",
                "subset": ["images_background_small1", "images_background_small2"],
                "alphabets": ["Greek", "Latin", "Korean", "Tagalog"],
                "ink_normalizer": {"radius": 0.28, "resolution": 105},
            },
        ),
        # a list the backbone does not record stays unrecorded (evaluate warns)
        (
            {"dataset": "omniglot", "alphabets": ["Greek"]},
            OMNIGLOT_2,
            {"dataset": "omniglot", "alphabets": ["Greek", "Latin", "Tagalog"]},
        ),
    ],
)
def test_what_the_whitened_backbone_saw(trained_on, data, expected):
    assert _whitened_trained_on("b.pt", trained_on, data) == (expected, [])


def test_a_backbone_of_another_data_set_is_refused():
    with pytest.raises(_CLIError, match="trained on 'digits' and the whitening"):
        _whitened_trained_on("b.pt", DIGITS_A, OMNIGLOT_2)


FOLDER = {"dataset": "folder", "classes": ["circle"]}


def _refusal_cases(tmp_path, backbone):
    data = _folder(tmp_path / "data", 2, classes=TRAIN_CLASSES)
    lonely = _folder(tmp_path / "lonely", 1, classes=TRAIN_CLASSES)
    shapeless = _save(tmp_path / "shapeless.pt", DIGITS_B, input_shape=None)
    torch.manual_seed(0)
    whitened = tmp_path / "whitened.pt"
    save_backbone(
        WhitenedBackbone(Conv4(hidden=4), np.eye(4)), whitened, input_shape=(1, 16, 16)
    )
    named_like_a_record = _save(tmp_path / "x.pt.json", DIGITS_B)
    torch.manual_seed(0)
    rgb = tmp_path / "rgb.pt"
    save_backbone(Conv4(in_channels=3, hidden=4), rgb, input_shape=(3, 16, 16))
    out = tmp_path / "out.pt"
    digits = ["--dataset", "digits"]
    return [
        (["--backbone", backbone, *digits, "-o", backbone], "--output"),
        (
            ["--backbone", named_like_a_record, *digits, "-o", tmp_path / "x.pt"],
            f"--output {tmp_path / 'x.pt'}: its record x.pt.json is the --backbone",
        ),
        (["--backbone", whitened, *digits, "-o", out], "--backbone"),
        (["--backbone", shapeless, *digits, "-o", out], "backbone file"),
        (
            ["--backbone", backbone, data, "-o", out],
            f"backbone {backbone} was trained on 'digits' and the whitening would "
            "be fitted on 'folder'",
        ),
        (
            ["--backbone", backbone, *digits, "--rotations", "-o", out],
            "--rotations applies to --dataset omniglot only",
        ),
        (["--backbone", backbone, data, *digits, "-o", out], "give either"),
        (["--backbone", backbone, "-o", out], "give a folder of labelled images"),
        (
            ["--backbone", tmp_path / "absent.pt", *digits, "-o", out],
            f"--backbone {tmp_path / 'absent.pt'} does not exist",
        ),
        (
            ["--backbone", backbone, *digits, "-o", tmp_path / "no" / "w.pt"],
            f"--output {tmp_path / 'no' / 'w.pt'}: folder",
        ),
        (
            ["--backbone", _save(tmp_path / "f.pt", FOLDER), lonely, "-o", out],
            "WithinClassWhitening needs a class with at least two samples",
        ),
        (
            ["--backbone", backbone, "--dataset", "omniglot", "-o", out],
            "omniglot needs --data-dir",
        ),
        (
            ["--backbone", rgb, *digits, "-o", out],
            f"--dataset digits is grayscale, but backbone file {rgb} takes rgb images",
        ),
    ]


def test_each_refusal_is_one_line_and_writes_nothing(tmp_path, capsys):
    backbone = _save(tmp_path / "b.pt", DIGITS_B)
    before = backbone.read_bytes()
    for argv, message in _refusal_cases(tmp_path, backbone):
        status, stdout, err = run(capsys, "whiten", *argv)
        assert status == 1 and stdout == "", argv
        assert err.startswith(f"skfewshot whiten: error: {message}"), (argv, err)
        assert err.count("\n") == 1, err
        assert not (tmp_path / "out.pt").exists()
        assert not (tmp_path / "out.pt.json").exists()
    assert backbone.read_bytes() == before


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_negative_or_non_finite_shrinkage_is_a_syntax_error(value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["whiten", "--backbone", "b.pt", "-o", "w.pt", "--shrinkage", value])
    assert exc.value.code == 2
    assert "expected a finite value >= 0" in capsys.readouterr().err


def test_help_gives_the_recipe(capsys):
    out = help_of("whiten", capsys)  # every option: test_cli.py
    assert "  skfewshot whiten --backbone final.pt --dataset omniglot \\\n" in out
    assert "--rotations --test-time-shifts 1 \\\n      --output final-w.pt\n" in out
    assert "--backbone final-w.pt --test-time-shifts 1" in out


@pytest.mark.shared_data
def test_omniglot_with_rotations_and_the_recorded_normalisation(
    shared_data, tmp_path, capsys
):
    from skfewshot.datasets import InkNormalizer, augment_rotations, load_omniglot

    ink = {"radius": 0.28, "resolution": 105}
    seen = {**OMNIGLOT_1, "ink_normalizer": ink}
    backbone = _save(tmp_path / "b.pt", seen, input_shape=(1, 28, 28))
    out = tmp_path / "w.pt"
    status, stdout, err = run(
        capsys, "whiten", "--backbone", backbone, "--dataset", "omniglot",
        "--data-dir", shared_data / "omniglot", "--subset",
        "images_background_small2", "--rotations", "-o", out, "--json", "--quiet",
    )  # fmt: skip
    assert status == 0 and err == ""
    bunch = load_omniglot(
        "images_background_small2",
        path=shared_data / "omniglot" / "images_background_small2.zip",
        image_size=105,
    )
    X = InkNormalizer(radius=0.28, image_size=28).transform(bunch.data)
    X, y = augment_rotations(X, bunch.target)
    record = json.loads(stdout)
    assert record["whitened_on"]["n_images"] == len(X) == 4 * len(bunch.data)
    assert record["whitened_on"]["n_classes"] == 4 * len(bunch.target_names)
    assert record["whitened_on"]["rotations"] is True
    assert record["ink_normalizer"] == ink
    _, whitening = _by_hand(backbone, X, y)
    _assert_same_map(load_backbone(out)[0], whitening)
    trained_on = load_backbone(out)[1]["trained_on"]
    assert trained_on["subset"] == [
        "images_background_small1",
        "images_background_small2",
    ]
    assert trained_on["ink_normalizer"] == ink
    assert set(trained_on["alphabets"]) == set(OMNIGLOT_1["alphabets"]) | set(
        bunch.group_names
    )


@pytest.mark.shared_data
def test_runs_reads_the_whitened_file(shared_data, tmp_path, capsys):
    from conftest import build_omniglot_runs

    build_omniglot_runs(shared_data, tmp_path / "runs", n_runs=1, n_way=5)
    backbone = _save(tmp_path / "b.pt", OMNIGLOT_1, input_shape=(1, 28, 28))
    folder = _folder(tmp_path / "data", 3, classes=TRAIN_CLASSES)
    module, _ = load_backbone(backbone)
    bunch = load_image_folder(folder, image_size=28)
    whitened, _ = whiten_backbone(BackboneTransformer(module), bunch.data, bunch.target)
    out = tmp_path / "w.pt"
    save_backbone(whitened, out, input_shape=(1, 28, 28), trained_on=OMNIGLOT_1)
    runs_with_shifts(capsys, tmp_path / "runs", out)


def test_a_run_writing_the_same_output_is_refused(tmp_path, capsys):
    """Two runs writing one OUTPUT could leave OUTPUT.json describing the
    other's file: whiten holds OUTPUT.lock as train does."""
    backbone = _save(tmp_path / "b.pt", DIGITS_B)
    out, lock = tmp_path / "w.pt", tmp_path / "w.pt.lock"
    # a live process of this host (this one) holds the lock
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": "then"}
    lock.write_text(json.dumps({**owner, "argv": ["train"]}))
    status, stdout, err = run(
        capsys, "whiten", "--backbone", backbone, "--dataset", "digits", "-o", out
    )
    assert (status, stdout) == (1, "")
    assert err.startswith(
        f"skfewshot whiten: error: another skfewshot run writes --output {out} "
        f"(pid {os.getpid()} on {socket.gethostname()}, started then, by its lock"
    )
    assert not out.exists() and not (tmp_path / "w.pt.json").exists()
    assert json.loads(lock.read_text())["argv"] == ["train"]  # not taken over
    lock.unlink()
    status, _, err = run(
        capsys, "whiten", "--backbone", backbone, "--dataset", "digits", "-o", out
    )
    assert status == 0 and err == ""
    assert out.exists() and not lock.exists()  # released when the run ends


def test_an_interrupted_run_writes_nothing_and_releases_the_lock(
    tmp_path, capsys, monkeypatch
):
    import skfewshot.recipes

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(skfewshot.recipes, "whiten_backbone", interrupted)
    backbone = _save(tmp_path / "b.pt", DIGITS_B)
    out = tmp_path / "w.pt"
    out.write_bytes(b"a user's file")
    status, stdout, err = run(
        capsys, "whiten", "--backbone", backbone, "--dataset", "digits", "-o", out
    )
    assert (status, stdout, err) == (130, "", "skfewshot whiten: interrupted\n")
    assert out.read_bytes() == b"a user's file"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.pt", "w.pt"]


def test_a_folder_is_read_in_the_colour_the_backbone_takes(tmp_path, capsys):
    data = _folder(tmp_path / "data", 3, classes=TRAIN_CLASSES)
    torch.manual_seed(0)
    backbone = tmp_path / "rgb.pt"
    seen = {"dataset": "folder", "classes": ["circle"]}
    save_backbone(
        Conv4(in_channels=3, hidden=4), backbone, input_shape=(3, 16, 16),
        trained_on=seen,
    )  # fmt: skip
    out = tmp_path / "w.pt"
    status, _, err = run(capsys, "whiten", data, "--backbone", backbone, "-o", out)
    assert status == 0 and err == ""
    bunch = load_image_folder(data, image_size=16, color="rgb")
    assert bunch.data.shape[1:] == (3, 16, 16)
    _, whitening = _by_hand(backbone, bunch.data, bunch.target)
    _assert_same_map(load_backbone(out)[0], whitening)
    assert load_backbone(out)[1]["input_shape"] == (3, 16, 16)
