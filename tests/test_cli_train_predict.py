"""``skfewshot train`` and ``skfewshot predict`` on small image folders."""

import csv
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from skfewshot.backbone import BackboneTransformer
from skfewshot.cli import main
from skfewshot.datasets import ImageFileReader, load_image_folder
from skfewshot.models import load_backbone
from skfewshot.prototype import PrototypeClassifier
from skfewshot.training._callbacks import TrainingCheckpoint

CLASSES = ("circle", "square", "stripes")
TRAIN_CLASSES = ("circle", "cross", "square", "stripes")


def _shape(name, seed):
    """A 20x20 grey picture of ``name`` with a little noise."""
    a = np.zeros((20, 20), np.uint8)
    if name == "circle":
        yy, xx = np.mgrid[:20, :20]
        a[(yy - 10) ** 2 + (xx - 10) ** 2 < 40] = 255
    elif name == "square":
        a[5:15, 5:15] = 255
    elif name == "cross":
        a[9:11], a[:, 9:11] = 255, 255
    else:
        a[::4] = 255
    noise = np.random.RandomState(seed).randint(0, 30, a.shape)
    return Image.fromarray(np.clip(a + noise, 0, 255).astype(np.uint8))


def _folder(root, per_class, flat=False, classes=CLASSES):
    for c, name in enumerate(classes):
        folder = root if flat else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _shape(name, 10 * c + i).save(folder / f"{name}_{i}.png")
    return root


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("train"), 6, classes=TRAIN_CLASSES)


# --device cpu: a resumed run equals the uninterrupted one bit for bit on the CPU
# only (on a GPU, cuDNN's backward kernels need not add in the same order twice)
TRAIN = ["--epochs", "2", "--image-size", "16", "--batch-size", "8", "--quiet"]
TRAIN += ["--device", "cpu"]


@pytest.fixture(scope="module")
def backbone(train_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "shapes.pt"
    assert main(["train", str(train_dir), "--output", str(out), *TRAIN]) == 0
    return out


def test_train_writes_the_backbone_and_its_record(train_dir, backbone):
    module, meta = load_backbone(backbone)
    assert meta["architecture"] == "Conv4"
    assert meta["input_shape"] == (1, 16, 16)
    X = load_image_folder(train_dir, image_size=16).data
    assert meta["trained_on"] == {
        "dataset": "folder",
        "classes": list(TRAIN_CLASSES),
        "pixel_mean": pytest.approx(float(np.mean(X)), abs=1e-4),
    }
    record = json.loads(backbone.with_name("shapes.pt.json").read_text())
    assert record["argv"] == [
        "train",
        str(train_dir),
        "--output",
        str(backbone),
        *TRAIN,
    ]
    assert record["settings"]["data"] == str(train_dir.resolve())
    assert record["settings"]["recipe"] == "pretrain"
    assert record["classes"] == list(TRAIN_CLASSES)
    assert record["n_images"] == 24
    assert record["epochs_run"] == 2 and record["resumed_from_epoch"] == 0
    assert record["final_train_loss"] == record["history"][-1]["train_loss"]
    assert record["final_val_accuracy"] is None
    assert set(record["versions"]) >= {"skfewshot", "torch", "scikit-learn"}
    # a completed run leaves no checkpoint
    assert not backbone.with_name("shapes.pt.ckpt").exists()


def test_train_protonet_with_validation_classes(train_dir, tmp_path, capsys):
    out = tmp_path / "proto.pt"
    status, stdout, err = run(
        capsys, "train", train_dir, "--output", out, "--recipe", "protonet",
        "--n-way", "2", "--n-shot", "1", "--n-query", "2", "--episodes-per-epoch",
        "2", "--epochs", "1", "--image-size", "16", "--val-classes", "2", "--json",
    )  # fmt: skip
    assert status == 0, err
    record = json.loads(stdout)
    assert len(record["val_classes"]) == 2
    kept = [c for c in TRAIN_CLASSES if c not in record["val_classes"]]
    assert record["classes"] == kept
    assert 0.0 <= record["final_val_accuracy"] <= 1.0
    assert "valid_fsl_acc" in err  # the epoch table, on stderr
    _, meta = load_backbone(out)
    assert meta["trained_on"]["classes"] == record["classes"]


def test_train_needs_enough_classes(train_dir, tmp_path, capsys):
    status, _, err = run(
        capsys, "train", train_dir, "-o", tmp_path / "x.pt", "--val-classes", "3"
    )
    assert status == 1
    assert "--val-classes 3 leaves 1 of the 4 classes" in err
    assert list(tmp_path.iterdir()) == []


def _interrupt_at_epoch(monkeypatch, epoch):
    """Ctrl-C during ``epoch``, after the checkpoint of the epoch before."""

    def ctrl_c(self, net, **kwargs):
        if len(net.history) == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainingCheckpoint, "on_batch_begin", ctrl_c, raising=False)


def test_interrupted_train_resumes_to_the_same_weights(
    train_dir, backbone, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "shapes.pt"
    with monkeypatch.context() as patch:
        _interrupt_at_epoch(patch, 2)
        status, _, err = run(capsys, "train", train_dir, "--output", out, *TRAIN)
    assert status == 130 and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes.pt.ckpt"]
    # another command line is refused, naming the setting
    status, _, err = run(
        capsys, "train", train_dir, "-o", out, *TRAIN, "--lr", "0.1", "--resume"
    )
    assert status == 1
    assert "written with lr=None, this run has lr=0.1" in err
    status, _, err = run(capsys, "train", train_dir, "--output", out, *TRAIN)
    assert status == 1 and "holds an interrupted run: continue it with --resume" in err
    status, _, err = run(capsys, "train", train_dir, "-o", out, *TRAIN, "--resume")
    assert status == 0, err
    resumed, _ = load_backbone(out)
    uninterrupted, _ = load_backbone(backbone)
    a, b = resumed.state_dict(), uninterrupted.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((tmp_path / "shapes.pt.json").read_text())
    assert record["resumed_from_epoch"] == 1 and record["epochs_run"] == 2
    assert not (tmp_path / "shapes.pt.ckpt").exists()


def test_resume_without_a_checkpoint(train_dir, tmp_path, capsys):
    status, _, err = run(
        capsys, "train", train_dir, "-o", tmp_path / "m.pt", *TRAIN, "--resume"
    )
    assert status == 1 and "--resume: no checkpoint" in err


def test_train_failure_writes_nothing(tmp_path, capsys):
    data = _folder(tmp_path / "data", per_class=2)
    (data / "square" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    out.mkdir()
    status, _, err = run(capsys, "train", data, "-o", out / "m.pt", *TRAIN)
    assert status == 1 and "broken.png" in err
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    """One support image per class; the queries are copies of them."""
    root = tmp_path_factory.mktemp("predict")
    support = _folder(root / "support", per_class=1)
    query = _folder(root / "query" / "nested", per_class=1, flat=True)
    return support, root / "query", sorted(query.iterdir())


def _expected(backbone, support, files, test_time_shifts=None, test_time_warps=None):
    """The same prediction through the library (a prototype head)."""
    module, _ = load_backbone(backbone)
    data = load_image_folder(support, image_size=16)
    features = BackboneTransformer(
        module,
        cache=False,
        test_time_shifts=test_time_shifts,
        test_time_warps=test_time_warps,
    ).fit(data.data)
    head = PrototypeClassifier().fit(
        features.transform(data.data), np.asarray(CLASSES)[data.target]
    )
    X = ImageFileReader(image_size=16).transform([str(f) for f in files])
    return head.predict_proba(features.transform(X))


def test_predict_prints_a_csv_row_per_query(backbone, episode, capsys):
    support, query, files = episode
    status, out, err = run(
        capsys, "predict", "--backbone", backbone, "--support", support,
        "--query", query, "--top-k", "3",
    )  # fmt: skip
    assert status == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == [
        "file", "prediction", "probability", "top2", "top2_probability", "top3",
        "top3_probability",
    ]  # fmt: skip
    assert [r[0] for r in rows[1:]] == [str(query / "nested" / f.name) for f in files]
    # each query is a copy of a support image: its class comes first
    assert [r[1] for r in rows[1:]] == ["circle", "square", "stripes"]
    proba = _expected(backbone, support, files)
    for row, p in zip(rows[1:], proba):
        order = np.argsort(-p, kind="stable")
        assert row[2::2] == [f"{v:.6f}" for v in p[order]]
        assert row[3::2] == [CLASSES[i] for i in order[1:]]


def test_predict_json_to_a_file(backbone, episode, tmp_path, capsys):
    support, _, files = episode
    target = tmp_path / "predictions.json"
    status, out, _ = run(
        capsys, "predict", "--backbone", backbone, "--support", support,
        "--query", *files[::-1], "--json", "--output", target,
    )  # fmt: skip
    assert status == 0 and out == ""
    payload = json.loads(target.read_text())
    assert payload["classes"] == list(CLASSES)
    rows = payload["predictions"]
    assert [r["file"] for r in rows] == [str(f) for f in files]  # sorted
    assert [r["prediction"] for r in rows] == list(CLASSES)
    proba = _expected(backbone, support, files)
    np.testing.assert_allclose(
        [r["probability"] for r in rows], proba.max(axis=1), rtol=1e-5, atol=1e-6
    )


def test_predict_test_time_shifts(backbone, episode, capsys):
    support, _, files = episode
    argv = ["predict", "--backbone", backbone, "--support", support, "--json"]
    status, out, err = run(capsys, *argv, "--query", *files, "--test-time-shifts", "1")
    assert status == 0, err
    payload = json.loads(out)
    assert payload["test_time_shifts"] == 1
    got = [r["probability"] for r in payload["predictions"]]
    shifted = _expected(backbone, support, files, test_time_shifts=1).max(axis=1)
    np.testing.assert_allclose(got, shifted, rtol=1e-5, atol=1e-6)
    # the shifts change the features: not the probabilities without them
    plain = _expected(backbone, support, files).max(axis=1)
    assert np.abs(shifted - plain).max() > 1e-3
    status, out, _ = run(capsys, *argv, "--query", *files)
    assert json.loads(out)["test_time_shifts"] == 0


@pytest.mark.parametrize(
    "flags, warps",
    [
        (
            ["--test-time-angles", "-20", "20", "--test-time-scales", "0.8", "1"],
            [(-20, 0.8), (-20, 1), (20, 0.8), (20, 1)],
        ),
        # a missing one is the identity: angle 0, scale 1
        (["--test-time-angles", "30"], [(30, 1)]),
        (["--test-time-scales", "0.7", "1.2"], [(0, 0.7), (0, 1.2)]),
    ],
    ids=["angles-x-scales", "angles-only", "scales-only"],
)
def test_predict_test_time_warps(backbone, episode, capsys, flags, warps):
    support, _, files = episode
    argv = ["predict", "--backbone", backbone, "--support", support, "--json"]
    argv += ["--query", *files, "--test-time-shifts", "1"]
    status, out, err = run(capsys, *argv, *flags)
    assert status == 0, err
    payload = json.loads(out)
    assert payload["test_time_warps"] == [list(pair) for pair in warps]
    got = [r["probability"] for r in payload["predictions"]]
    warped = _expected(backbone, support, files, 1, warps).max(axis=1)
    np.testing.assert_allclose(got, warped, rtol=1e-5, atol=1e-6)
    # the warps change the features: not the probabilities without them
    plain = _expected(backbone, support, files, 1).max(axis=1)
    assert np.abs(warped - plain).max() > 1e-3
    status, out, _ = run(capsys, *argv)
    assert json.loads(out)["test_time_warps"] is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--head-param", "alpah=1"], "--head-param alpah: FineTunedCosine has no"),
        (["--head-param", "alpha=-1"], "The 'alpha' parameter of FineTunedCosine"),
        (["--head-param", "alpha"], "--head-param 'alpha': expected KEY=VALUE"),
        (["--top-k", "4"], "--top-k 4 is more than the 3 support classes"),
        (["--image-size", "28"], "--image-size 28 does not match backbone file"),
        (["--color", "rgb"], "--color rgb does not match backbone file"),
    ],
)
def test_predict_option_errors(backbone, episode, argv, message, capsys):
    support, query, _ = episode
    status, out, err = run(
        capsys, "predict", "--backbone", backbone, "--support", support,
        "--query", query, "--head", "finetune", *argv,
    )  # fmt: skip
    assert status == 1 and out == ""
    assert message in err


def test_predict_names_the_bad_input(backbone, episode, tmp_path, capsys):
    support, query, _ = episode
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    args = ["predict", "--backbone", backbone, "--support", support]
    status, _, err = run(capsys, *args, "--query", empty)
    assert status == 1 and f"--query folder {empty} holds no image file" in err
    bad_support = _folder(tmp_path / "support", per_class=1)
    (bad_support / "triangle").mkdir()
    (bad_support / "triangle" / "todo.txt").write_text("draw triangles")
    status, _, err = run(
        capsys, "predict", "--backbone", backbone, "--support", bad_support,
        "--query", query,
    )  # fmt: skip
    assert status == 1 and "triangle has no image file" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    status, _, err = run(
        capsys, "predict", "--backbone", junk, "--support", support, "--query", query
    )
    assert status == 1 and "junk.pt' is not a readable skfewshot backbone" in err


def test_predict_unknown_needs_a_head_that_rejects(backbone, episode, capsys):
    support, query, _ = episode
    status, _, err = run(
        capsys, "predict", "--backbone", backbone, "--support", support,
        "--query", query, "--unknown", "--head", "logreg",
    )  # fmt: skip
    assert status == 1
    assert (
        "--unknown needs a head with an unknown_label parameter; the installed "
        "LogisticRegression has none"
    ) in err


def test_predict_unknown_answers_unknown(backbone, episode, tmp_path, capsys):
    support, query, _ = episode
    odd = tmp_path / "odd.png"
    Image.fromarray(np.full((20, 20), 128, np.uint8)).save(odd)
    status, out, err = run(
        capsys, "predict", "--backbone", backbone, "--support", support,
        "--query", query, odd, "--unknown", "--head-param", "unknown_threshold=0.99",
    )  # fmt: skip
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    # copies of the support images are at cosine 1 from their prototype; a
    # flat grey image is none of the classes
    assert [r["prediction"] for r in rows] == [*CLASSES, "unknown"]
    assert rows[-1]["file"] == str(odd)


def test_predict_csv_file_keeps_a_non_utf8_file_name(
    backbone, episode, tmp_path, capsys
):
    # a file name that is not UTF-8 (e.g. Latin-1 from an old camera or zip)
    support, _, files = episode
    query = tmp_path / os.fsdecode(b"caf\xe9.png")
    query.write_bytes(files[0].read_bytes())
    target = tmp_path / "predictions.csv"
    status, _, err = run(
        capsys, "predict", "--backbone", backbone, "--support", support,
        "--query", query, "--output", target,
    )  # fmt: skip
    assert status == 0, err
    # the name's original bytes, as printing to stdout writes them
    assert os.fsencode(str(query)) in target.read_bytes()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--device", "cpu"], "cpu"),
        (["--head-param", "device='cpu'"], "cpu"),  # the head's own wins
        (["--device", "cpu", "--head-param", "device='auto'"], "auto"),
    ],
)
def test_predict_head_follows_device_unless_its_param_says(
    backbone, episode, monkeypatch, capsys, extra, expected
):
    from skfewshot import FineTunedCosineClassifier

    support, query, _ = episode
    fit, devices = FineTunedCosineClassifier.fit, []

    def spy(self, *args, **kwargs):
        devices.append(self.device)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(FineTunedCosineClassifier, "fit", spy)
    status, _, err = run(
        capsys, "predict", "--backbone", backbone, "--support", support,
        "--query", query, "--head", "finetune", *extra,
    )  # fmt: skip
    assert status == 0, err
    assert devices == [expected]


def test_predict_refuses_an_output_that_is_one_of_its_inputs(
    backbone, episode, tmp_path, capsys
):
    # copies: a refusal that failed would destroy the module's shared files
    net = tmp_path / "net.pt"
    shutil.copy(backbone, net)
    shutil.copy(backbone.with_name("shapes.pt.json"), tmp_path / "net.pt.json")
    support = shutil.copytree(episode[0], tmp_path / "support")
    query = shutil.copytree(episode[1], tmp_path / "query")
    image = tmp_path / "one.png"
    shutil.copy(episode[2][0], image)
    link = tmp_path / "link.csv"
    link.symlink_to(net)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    argv = ["predict", "--backbone", net, "--support", support]
    argv += ["--query", query, image, "--quiet"]
    cases = [
        (net, f"the --backbone {net}"),
        (link, f"the --backbone {net}"),
        (tmp_path / "net.pt.json", f"the record of --backbone {net}"),
        (
            support / "circle" / "circle_0.png",
            f"an image read from --support {support}",
        ),
        (image, f"the --query {image}"),
        (query / "nested" / "square_0.png", f"an image read from --query {query}"),
    ]
    for output, label in cases:
        status, out, err = run(capsys, *argv, "--output", output)
        assert (status, out) == (1, ""), output
        assert err == (
            f"skfewshot predict: error: --output {output} is {label}: writing the "
            "predictions there would overwrite it; give another file name\n"
        )
    assert {p: p.read_bytes() for p in files} == before
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == files
    # a file beside the inputs (even in the query folder, not an image) is fine
    status, _, err = run(capsys, *argv, "--output", query / "predictions.csv")
    assert status == 0, err


def test_train_refuses_an_output_that_is_one_of_its_images(tmp_path, capsys):
    data = _folder(tmp_path / "data", per_class=2)
    image = data / "square" / "square_0.png"
    before = image.read_bytes()
    status, out, err = run(capsys, "train", data, "-o", image, *TRAIN)
    assert (status, out) == (1, "")
    assert err == (
        f"skfewshot train: error: --output {image} is an image read from DIR "
        f"{data}: writing the backbone there would overwrite it; give another "
        "file name\n"
    )
    assert image.read_bytes() == before
    assert sorted(p.name for p in image.parent.iterdir()) == [
        "square_0.png",
        "square_1.png",
    ]


def test_predict_runs_a_float64_backbone_in_float64(
    backbone, episode, tmp_path, capsys
):
    # load_backbone keeps the saved dtype: predict feeds the backbone its dtype
    from skfewshot.models import save_backbone

    module, meta = load_backbone(backbone)
    wide = tmp_path / "f64.pt"
    save_backbone(module.double(), wide, input_shape=meta["input_shape"])
    support, _, files = episode
    argv = ["predict", "--support", support, "--query", *files, "--json"]
    status, out, err = run(capsys, *argv, "--backbone", wide)
    assert status == 0, err
    got = [r["probability"] for r in json.loads(out)["predictions"]]
    np.testing.assert_allclose(
        got, _expected(backbone, support, files).max(axis=1), rtol=1e-4, atol=1e-5
    )
