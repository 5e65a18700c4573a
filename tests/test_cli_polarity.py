"""Image polarity: ``train`` records its images' mean pixel value, ``predict``
and ``runs`` warn when theirs lie on the other side of 0.5 (``--invert``)."""

import csv
import io
import json

import numpy as np
import pytest
from conftest import build_omniglot_runs
from PIL import Image
from test_cli_train_predict import run

from skfewshot.cli import main
from skfewshot.datasets import load_image_folder, load_omniglot_runs
from skfewshot.models import Conv4, load_backbone, save_backbone

CLASSES = ("bar", "dot", "ring")


def _ink(name, seed):
    """A 16x16 drawing of ``name``: ink 1 (bright) on a black background."""
    a = np.zeros((16, 16))
    yy, xx = np.mgrid[:16, :16]
    if name == "bar":
        a[6:10, 2:14] = 1
    elif name == "dot":
        a[(yy - 8) ** 2 + (xx - 8) ** 2 < 10] = 1
    else:
        r = (yy - 8) ** 2 + (xx - 8) ** 2
        a[(r > 20) & (r < 40)] = 1
    a += np.random.RandomState(seed).uniform(0, 0.1, a.shape)
    return np.clip(a, 0, 1)


def _folder(root, per_class, *, dark_ink, seed=0):
    """One sub-folder of PNGs per class: bright ink on black, or (``dark_ink``)
    black ink on white, as Omniglot's own PNGs are."""
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = _ink(name, seed + 10 * c + i)
            a = 1 - a if dark_ink else a
            Image.fromarray(np.round(255 * a).astype(np.uint8)).save(
                root / name / f"{name}_{i}.png"
            )
    return root


@pytest.fixture(scope="module")
def bright_train(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("bright_train"), 4, dark_ink=False)


@pytest.fixture(scope="module")
def backbone(bright_train, tmp_path_factory):
    """A tiny Conv4 trained on bright-ink images (as Omniglot is loaded)."""
    out = tmp_path_factory.mktemp("model") / "bright.pt"
    argv = ["train", bright_train, "-o", out, "--epochs", "1", "--width", "4"]
    argv += ["--image-size", "16", "--batch-size", "6", "--quiet", "--device", "cpu"]
    assert main([str(a) for a in argv]) == 0
    return out


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """The same support and query drawings, bright ink and dark ink."""
    root = tmp_path_factory.mktemp("episodes")
    return {
        polarity: (
            _folder(root / polarity / "support", 1, dark_ink=dark, seed=100),
            _folder(root / polarity / "query", 2, dark_ink=dark, seed=200),
        )
        for polarity, dark in (("bright", False), ("dark", True))
    }


def _mean(folder):
    return float(np.mean(load_image_folder(folder, image_size=16).data))


def _warning(mean, recorded, backbone, invert=False):
    side = {True: "mostly dark", False: "mostly bright"}
    return (
        f"the support images{', inverted,' if invert else ''} have a mean pixel "
        f"value of {mean:.2f} ({side[mean < 0.5]}) but backbone {backbone} was "
        f"trained on images of mean {recorded:.2f} ({side[recorded < 0.5]}): they "
        "are likely the wrong way round; "
        + ("try without --invert" if invert else "try --invert (feeds 1 - x)")
    )


def _predict(capsys, backbone, support, query, *extra):
    argv = ["predict", "--backbone", backbone, "--support", support, "--query"]
    argv += [query, "--device", "cpu", "--quiet", *extra]
    return run(capsys, *argv)


def test_train_records_the_mean_pixel_value_of_its_images(bright_train, backbone):
    _, meta = load_backbone(backbone)
    recorded = meta["trained_on"]["pixel_mean"]
    assert recorded == pytest.approx(_mean(bright_train), abs=1e-4)
    assert recorded < 0.5  # bright ink on black: mostly dark
    record = json.loads(backbone.with_name("bright.pt.json").read_text())
    assert record["trained_on"]["pixel_mean"] == recorded


def test_predict_warns_when_the_images_are_the_other_way_round(
    backbone, episodes, capsys
):
    support, query = episodes["dark"]
    recorded = load_backbone(backbone)[1]["trained_on"]["pixel_mean"]
    warning = _warning(_mean(support), recorded, backbone)
    status, out, err = _predict(capsys, backbone, support, query)
    assert status == 0
    assert err == f"skfewshot predict: warning: {warning}\n"
    assert out.startswith("file,prediction,probability\n")
    status, out, err = _predict(capsys, backbone, support, query, "--json")
    assert (status, err) == (0, f"skfewshot predict: warning: {warning}\n")
    result = json.loads(out)
    assert result["polarity_warning"] == warning and result["invert"] is False


def test_invert_is_feeding_inverted_images(backbone, episodes, capsys):
    status, out, err = _predict(capsys, backbone, *episodes["dark"], "--invert")
    assert (status, err) == (0, "")
    by_hand = _predict(capsys, backbone, *episodes["bright"])
    assert by_hand[0] == 0 and by_hand[2] == ""
    rows = list(csv.DictReader(io.StringIO(out)))
    expected = list(csv.DictReader(io.StringIO(by_hand[1])))
    assert len(rows) == len(expected) == 6
    for row, want in zip(rows, expected):
        assert row["file"].replace("dark", "bright") == want["file"]
        assert row["prediction"] == want["prediction"]
        assert float(row["probability"]) == pytest.approx(
            float(want["probability"]), abs=1e-5
        )
    status, out, err = _predict(
        capsys, backbone, *episodes["dark"], "--invert", "--json"
    )
    result = json.loads(out)
    assert result["invert"] is True and result["polarity_warning"] is None
    # --invert on images already the right way round: warned the other way
    support, query = episodes["bright"]
    recorded = load_backbone(backbone)[1]["trained_on"]["pixel_mean"]
    warning = _warning(1 - _mean(support), recorded, backbone, True)
    status, _, err = _predict(capsys, backbone, support, query, "--invert")
    assert (status, err) == (0, f"skfewshot predict: warning: {warning}\n")


def test_a_backbone_without_the_record_is_not_checked(episodes, tmp_path, capsys):
    old = tmp_path / "old.pt"
    trained_on = {"dataset": "folder", "classes": list(CLASSES)}
    save_backbone(Conv4(hidden=4), old, input_shape=(1, 16, 16), trained_on=trained_on)
    status, out, err = _predict(capsys, old, *episodes["dark"], "--json")
    assert (status, err) == (0, "")
    result = json.loads(out)
    assert result["polarity_warning"] is None and result["invert"] is False


@pytest.mark.shared_data
def test_runs_warns_and_inverts(shared_data, tmp_path, capsys):
    build_omniglot_runs(shared_data, tmp_path / "runs", n_runs=2)
    # as if trained by `train DIR` on Omniglot's own dark-ink PNGs
    backbone = tmp_path / "dark.pt"
    trained_on = {"dataset": "folder", "classes": ["a", "b"], "pixel_mean": 0.9}
    save_backbone(
        Conv4(hidden=4), backbone, input_shape=(1, 28, 28), trained_on=trained_on
    )
    runs = load_omniglot_runs(tmp_path / "runs", image_size=28).runs
    mean = float(np.mean(np.concatenate([r.X_support for r in runs])))
    warning = _warning(mean, 0.9, backbone)
    argv = ["runs", "--runs", tmp_path / "runs", "--backbone", backbone]
    argv += ["--device", "cpu", "--quiet"]
    status, out, err = run(capsys, *argv, "--json")
    assert (status, err) == (0, f"skfewshot runs: warning: {warning}\n")
    result = json.loads(out)
    assert result["polarity_warning"] == warning and result["invert"] is False
    status, out, err = run(capsys, *argv, "--json", "--invert")
    assert (status, err) == (0, "")
    result = json.loads(out)
    assert result["polarity_warning"] is None and result["invert"] is True
    status, out, err = run(capsys, *argv, "--invert")
    assert (status, err) == (0, "") and "inverted" in out.splitlines()[-1]


def test_ensemble_keeps_its_members_mean_pixel_value(tmp_path, capsys):
    paths = []
    for i, mean in enumerate([0.1, 0.2, None]):
        trained_on = {"dataset": "folder"}
        if mean is not None:
            trained_on["pixel_mean"] = mean
        paths.append(tmp_path / f"m{i}.pt")
        save_backbone(
            Conv4(hidden=4), paths[-1], input_shape=(1, 16, 16), trained_on=trained_on
        )
    status, _, err = run(capsys, "ensemble", *paths[:2], "-o", tmp_path / "e.pt")
    assert (status, err) == (0, "")
    assert load_backbone(tmp_path / "e.pt")[1]["trained_on"] == {
        "dataset": "folder",
        "pixel_mean": pytest.approx(0.15),
    }
    # a member without the record: the ensemble records none (no check)
    status, _, err = run(capsys, "ensemble", *paths, "-o", tmp_path / "f.pt")
    assert status == 0
    assert err == (
        f"skfewshot ensemble: warning: {paths[2]} records no 'pixel_mean', so "
        "the ensemble records none and predict and runs will not be able to "
        "check that images are the right way round\n"
    )
    assert load_backbone(tmp_path / "f.pt")[1]["trained_on"] == {"dataset": "folder"}


def test_ensemble_of_members_of_both_polarities_records_no_mean(tmp_path, capsys):
    paths = [tmp_path / "m0.pt", tmp_path / "m1.pt"]
    for path, mean in zip(paths, [0.1, 0.9]):
        trained_on = {"dataset": "folder", "pixel_mean": mean}
        save_backbone(
            Conv4(hidden=4), path, input_shape=(1, 16, 16), trained_on=trained_on
        )
    status, _, err = run(capsys, "ensemble", *paths, "-o", tmp_path / "e.pt")
    assert status == 0
    assert err == (
        "skfewshot ensemble: warning: the members were trained on images of mean "
        f"pixel values on both sides of 0.5 ({paths[0]}: 0.1, {paths[1]}: 0.9), so "
        "the ensemble records none and predict and runs will not be able to "
        "check that images are the right way round\n"
    )
    assert load_backbone(tmp_path / "e.pt")[1]["trained_on"] == {"dataset": "folder"}
