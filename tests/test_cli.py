"""The ``skfewshot`` command: help, demo, evaluate, runs, and one-line errors."""

import importlib.machinery
import io
import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import build_omniglot_runs

from skfewshot._torch_utils import resolve_device
from skfewshot.cli import build_parser, format_table, main
from skfewshot.model_selection import EpisodeScores
from skfewshot.models import Conv4, save_backbone

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml

TINY_DEMO = ["demo", "--epochs", "1", "--episodes", "3", "--shots", "1", "5"]
ONE_SHOT_DEMO = ["demo", "--epochs", "1", "--episodes", "3", "--shots", "1"]


def run_cli(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def digits_backbone(tmp_path_factory):
    """An untrained tiny Conv4 saved for 16x16 digits."""
    path = tmp_path_factory.mktemp("backbone") / "conv4.pt"
    save_backbone(Conv4(hidden=4), path, input_shape=(1, 16, 16))
    return str(path)


def help_of(command, capsys):
    """What ``skfewshot COMMAND --help`` prints (it must exit with status 0)."""
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "command", ["demo", "evaluate", "runs", "train", "predict", "ensemble", "whiten"]
)
def test_help_lists_every_option(command, capsys):
    out = help_of(command, capsys)
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in out
        if action.option_strings and action.help is not argparse_suppress():
            assert action.help  # every option is documented


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def test_python_dash_m_runs_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "skfewshot", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "demo" in result.stdout and "evaluate" in result.stdout


def test_demo_json_is_deterministic_and_complete(capsys):
    # a CPU promise: a GPU's non-deterministic kernels (cuDNN's backward) can
    # change the last digits of two runs with the same seed
    cpu = ["--device", "cpu"]
    status, out, _ = run_cli(capsys, *TINY_DEMO, *cpu, "--json", "--quiet")
    assert status == 0
    first = json.loads(out)
    records = first["results"]
    assert {r["head"] for r in records} == {
        "prototype",
        "finetune",
        "transductive",
        "logreg",
    }
    assert sorted({r["n_shot"] for r in records}) == [1, 5]
    assert all(r["n_way"] == 5 and r["n_episodes"] == 3 for r in records)
    assert all(0.0 <= r["mean"] <= 1.0 and r["ci95"] >= 0 for r in records)
    assert first["trained_on"] == {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}
    assert first["classes"] == [5, 6, 7, 8, 9]  # the novel digits evaluated
    assert first["epochs_trained"] == first["max_epochs"] == 1
    assert first["device"] == "cpu"
    status, out, _ = run_cli(capsys, *ONE_SHOT_DEMO, *cpu, "--json", "--quiet")
    again = [r for r in json.loads(out)["results"]]
    assert [r["mean"] for r in again] == [
        r["mean"] for r in records if r["n_shot"] == 1
    ]


def test_demo_table_and_plot(tmp_path, capsys):
    figure = tmp_path / "demo.png"
    status, out, err = run_cli(capsys, *TINY_DEMO, "--plot", str(figure))
    assert status == 0
    assert figure.stat().st_size > 0
    assert "PrototypeClassifier" in out and "1-shot" in out and "5-shot" in out
    assert f"Figure written to {figure}" in out
    assert "5-way 1-shot" in err  # progress bars go to stderr


def test_demo_plot_without_matplotlib_fails_before_training(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(
        "skfewshot.recipes.run_demo", lambda **kw: pytest.fail("trained anyway")
    )
    status, _, err = run_cli(capsys, "demo", "--plot", "x.png")
    assert status == 1
    assert "requires matplotlib; pip install 'skfewshot[plot]'" in err


def test_format_table_hand_values():
    s = EpisodeScores(np.array([0.5, 1.0]), n_way=5, n_shot=1, n_query=15)
    table = format_table({"prototype": [s]}, (1,))
    lines = table.splitlines()
    assert lines[0].split() == ["head", "1-shot"]
    # mean 75.0, std 0.25, ci95 = 1.96 * 0.25 / sqrt(2) = 0.3465 -> 34.6
    assert lines[2].split() == ["PrototypeClassifier", "75.0", "±", "34.6"]


def test_evaluate_digits_json(tmp_path, capsys):
    backbone = tmp_path / "conv4.pt"
    trained_on = {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}
    save_backbone(
        Conv4(hidden=4), backbone, input_shape=(1, 16, 16), trained_on=trained_on
    )
    argv = ["evaluate", "--dataset", "digits", "--backbone", str(backbone)]
    argv += ["--n-way", "3", "--n-shot", "2", "--episodes", "4", "--json", "--quiet"]
    status, out, err = run_cli(capsys, *argv)
    assert status == 0 and err == ""
    result = json.loads(out)
    assert result["architecture"] == "Conv4"
    assert result["trained_on"] == trained_on
    assert result["classes"] == [5, 6, 7, 8, 9]
    assert result["novelty_warning"] is None
    assert (result["n_way"], result["n_shot"], result["n_episodes"]) == (3, 2, 4)
    assert 0.0 <= result["mean"] <= 1.0


@pytest.mark.parametrize(
    "head, name",
    [("prototype", "PrototypeClassifier"), ("finetune", "FineTunedCosineClassifier")],
)
def test_evaluate_device_reaches_the_backbone_and_the_head(
    head, name, tmp_path, capsys, monkeypatch
):
    from skfewshot import model_selection

    backbone = tmp_path / "conv4.pt"
    save_backbone(Conv4(hidden=4), backbone, input_shape=(1, 16, 16))
    seen = set()
    evaluate = model_selection.evaluate_episodes

    def spy(pipe, *args, **kwargs):
        seen.update((type(s).__name__, s.device) for _, s in pipe.steps)
        return evaluate(pipe, *args, **kwargs)

    monkeypatch.setattr(model_selection, "evaluate_episodes", spy)
    argv = ["evaluate", "--dataset", "digits", "--backbone", str(backbone)]
    argv += ["--n-way", "3", "--n-shot", "1", "--episodes", "2", "--json"]
    argv += ["--quiet", "--head", head, "--device", "cpu"]
    status, out, _ = run_cli(capsys, *argv)
    assert status == 0
    assert json.loads(out)["device"] == "cpu"
    assert seen == {("BackboneTransformer", "cpu"), (name, "cpu")}


@pytest.mark.parametrize("command", ["demo", "evaluate", "runs", "train", "predict"])
def test_a_bad_device_fails_before_any_data_is_read(
    command, tmp_path, capsys, monkeypatch
):
    from skfewshot import cli, models, recipes

    backbone = tmp_path / "conv4.pt"
    save_backbone(Conv4(hidden=4), backbone, input_shape=(1, 28, 28))
    for where, name in [
        (cli, "_load_dataset"),
        (cli, "_train"),
        (recipes, "run_demo"),
        (models, "load_backbone"),
    ]:
        monkeypatch.setattr(where, name, lambda *a, **k: pytest.fail("read data"))
    argv = {
        "demo": ["demo"],
        "evaluate": ["evaluate", "--backbone", str(backbone), "--dataset", "digits"],
        "runs": ["runs", "--backbone", str(backbone), "--runs", str(tmp_path)],
        "train": ["train", "--dataset", "digits", "-o", str(tmp_path / "o.pt")],
        "predict": ["predict", "--backbone", str(backbone)]
        + ["--support", str(tmp_path), "--query", str(backbone)],
    }[command]
    status, out, err = run_cli(capsys, *argv, "--device", "nonsense")
    assert status == 1 and out == ""
    assert "--device: device='nonsense' is not a valid torch device" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["evaluate", "--dataset", "digits", "--backbone", "/nonexistent/b.pt"],
            "does not exist",
        ),
        (["evaluate", "--dataset", "digits"], "--backbone FILE is required"),
        (
            ["evaluate", "--dataset", "omniglot", "--backbone", "B"],
            "needs --data-dir",
        ),
        (["runs", "--runs", "/nonexistent", "--backbone", "/nonexistent.pt"], "exist"),
    ],
)
def test_user_errors_are_one_line(argv, message, capsys):
    status, _, err = run_cli(capsys, *argv)
    assert status == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_impossible_episode_is_one_line(digits_backbone, capsys):
    argv = ["evaluate", "--dataset", "digits", "--backbone", digits_backbone]
    status, _, err = run_cli(capsys, *argv, "--n-shot", "200", "--quiet")
    assert status == 1
    warning, error = err.splitlines()  # the backbone file records no training data
    assert warning.startswith("skfewshot evaluate: warning: ")
    assert error.startswith("skfewshot evaluate: error: n_way=5 classes")
    assert "only 0 of 5 classes" in error


def test_not_a_backbone_file(tmp_path, capsys):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a torch file")
    status, _, err = run_cli(
        capsys, "evaluate", "--dataset", "digits", "--backbone", str(bogus)
    )
    assert status == 1
    assert "not a readable skfewshot backbone file" in err


def test_bad_option_value_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--episodes", "0"])
    assert exc.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


@pytest.mark.shared_data
def test_runs_on_runs_built_from_small2(shared_data, tmp_path, capsys, monkeypatch):
    build_omniglot_runs(shared_data, tmp_path / "runs", n_runs=2)
    backbone = tmp_path / "conv4.pt"
    save_backbone(Conv4(hidden=4), backbone, input_shape=(1, 28, 28))
    status, out, _ = run_cli(
        capsys,
        "runs",
        "--runs",
        str(tmp_path / "runs"),
        "--backbone",
        str(backbone),
        "--json",
    )
    assert status == 0
    result = json.loads(out)
    assert [r["run"] for r in result["runs"]] == ["run01", "run02"]
    assert all(r["n_queries"] == 20 for r in result["runs"])
    rates = [r["errors"] / 20 for r in result["runs"]]
    assert result["error_rate"] == pytest.approx(np.mean(rates))
    assert result["device"] == str(resolve_device("auto"))
    status, out, _ = run_cli(
        capsys, "runs", "--runs", str(tmp_path / "runs"), "--backbone", str(backbone)
    )
    assert "overall error rate" in out and "run02" in out
    # --device reaches the head the runs fit (and the JSON)
    from skfewshot import FineTunedCosineClassifier

    fit, devices = FineTunedCosineClassifier.fit, []

    def spy(self, *args, **kwargs):
        devices.append(self.device)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(FineTunedCosineClassifier, "fit", spy)
    argv = ["runs", "--runs", str(tmp_path / "runs"), "--backbone", str(backbone)]
    argv += ["--head", "finetune", "--device", "cpu", "--json"]
    status, out, _ = run_cli(capsys, *argv)
    assert status == 0 and json.loads(out)["device"] == "cpu"
    assert devices == ["cpu", "cpu"]


def banking77_dir(folder):
    """A Banking77-style train.csv: 6 intents x 6 texts, one keyword each."""
    words = ["card", "transfer", "refund", "pin", "atm", "fee"]
    rows = ["text,category"]
    for c, word in enumerate(words):
        for i in range(6):
            rows.append(f'"my {word} issue number {i}, please help",intent_{c}')
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return folder


BANKING77 = ["evaluate", "--dataset", "banking77", "--n-way", "5", "--n-shot", "1"]
BANKING77 += ["--n-query", "3", "--episodes", "5"]


def test_evaluate_banking77_on_lsa_features(tmp_path, capsys):
    argv = [*BANKING77, "--data-dir", str(banking77_dir(tmp_path))]
    status, out, _ = run_cli(capsys, *argv, "--json", "--quiet")
    assert status == 0
    result = json.loads(out)
    assert result["architecture"].startswith("LSA")
    assert result["mean"] == 1.0  # each intent has its own keyword


# --------------------------------------------------------------------------
# issue 8: numbers that say what they are, interrupts, atomic and checked writes
# --------------------------------------------------------------------------


def fake_backbone(monkeypatch, folder, trained_on, *, input_shape=(1, 16, 16)):
    """Make ``load_backbone`` return a tiny Conv4 whose file records ``trained_on``.

    The command runs in ``folder``, where an empty ``b.pt`` stands for the file
    (the command checks that ``--backbone`` exists before importing torch).
    """
    monkeypatch.chdir(folder)
    (folder / "b.pt").write_bytes(b"")
    meta = {
        "architecture": "Conv4",
        "config": {},
        "input_shape": input_shape,
        "trained_on": trained_on,
    }
    monkeypatch.setattr(
        "skfewshot.models.load_backbone", lambda path: (Conv4(hidden=4), meta)
    )


def spy_on_episodes(monkeypatch):
    """Record the labels of the pool every evaluate_episodes call draws from."""
    import skfewshot.model_selection as ms

    pools, real = [], ms.evaluate_episodes

    def spy(estimator, X, y, **kwargs):
        pools.append(np.unique(y).tolist())
        return real(estimator, X, y, **kwargs)

    monkeypatch.setattr(ms, "evaluate_episodes", spy)
    return pools


EVAL_DIGITS = ["evaluate", "--dataset", "digits", "--backbone", "b.pt", "--quiet"]
EVAL_DIGITS += ["--n-way", "3", "--n-shot", "1", "--n-query", "2", "--episodes", "2"]


def test_evaluate_digits_leaves_out_the_recorded_training_classes(
    tmp_path, monkeypatch, capsys
):
    fake_backbone(monkeypatch, tmp_path, {"dataset": "digits", "classes": [0, 1, 2]})
    pools = spy_on_episodes(monkeypatch)
    status, out, err = run_cli(capsys, *EVAL_DIGITS, "--json")
    assert status == 0 and err == ""
    assert pools == [[3, 4, 5, 6, 7, 8, 9]]
    result = json.loads(out)
    assert result["classes"] == [3, 4, 5, 6, 7, 8, 9]
    assert result["excluded_classes"] == [0, 1, 2]
    assert result["trained_on"] == {"dataset": "digits", "classes": [0, 1, 2]}
    assert result["novelty_warning"] is None
    status, out, _ = run_cli(capsys, *EVAL_DIGITS)
    assert "on digits 3, 4, 5, 6, 7, 8, 9 (not 0, 1, 2: the backbone was " in out


def test_evaluate_digits_without_a_record_warns_and_uses_the_demo_split(
    tmp_path, monkeypatch, capsys
):
    fake_backbone(monkeypatch, tmp_path, None)
    pools = spy_on_episodes(monkeypatch)
    status, out, err = run_cli(capsys, *EVAL_DIGITS, "--json")
    assert status == 0
    assert pools == [[5, 6, 7, 8, 9]]
    assert err.count("\n") == 1
    assert err.startswith("skfewshot evaluate: warning: ")
    assert "does not record the data it was trained on" in err
    assert "digits 5, 6, 7, 8, 9" in err
    result = json.loads(out)
    assert result["classes"] == [5, 6, 7, 8, 9]
    assert result["trained_on"] is None
    assert result["novelty_warning"] == err.strip().split("warning: ", 1)[1]


def test_evaluate_digits_backbone_trained_elsewhere_uses_every_digit(
    tmp_path, monkeypatch, capsys
):
    fake_backbone(
        monkeypatch,
        tmp_path,
        {"dataset": "omniglot", "subset": "images_background_small1"},
    )
    pools = spy_on_episodes(monkeypatch)
    status, out, err = run_cli(capsys, *EVAL_DIGITS, "--json")
    assert status == 0 and err == ""
    assert pools == [list(range(10))]
    assert json.loads(out)["excluded_classes"] == []


def test_evaluate_one_episode_reports_no_ci_and_valid_json(
    tmp_path, monkeypatch, capsys
):
    # one episode has no CI: the JSON held NaN (not JSON) and the text "± nan"
    from types import SimpleNamespace

    from skfewshot.cli import format_table

    fake_backbone(monkeypatch, tmp_path, {"dataset": "digits", "classes": [0, 1, 2]})
    argv = [a if a != "2" else "1" for a in EVAL_DIGITS]  # --n-query 1, --episodes 1
    status, out, err = run_cli(capsys, *argv, "--json")
    assert status == 0, err
    result = json.loads(out)  # strict JSON: NaN would not parse in other readers
    assert result["n_episodes"] == 1 and result["ci95"] is None
    assert "NaN" not in out
    status, out, _ = run_cli(capsys, *argv)
    assert "(no CI from 1 episode" in out and "nan" not in out
    table = format_table(
        {"prototype": [SimpleNamespace(mean=0.5, ci95=float("nan"))]}, [1]
    )
    assert table.splitlines()[-1].endswith("  50.0       ") and "nan" not in table


FOLDER_TRAINED = {"dataset": "folder", "classes": ["a", "b"]}


def test_evaluate_digits_backbone_trained_on_a_folder_warns(
    tmp_path, monkeypatch, capsys
):
    # the folder may hold these very digits: every digit is used, with a warning
    fake_backbone(monkeypatch, tmp_path, FOLDER_TRAINED)
    pools = spy_on_episodes(monkeypatch)
    status, out, err = run_cli(capsys, *EVAL_DIGITS, "--json")
    assert status == 0 and pools == [list(range(10))]
    assert err == (
        "skfewshot evaluate: warning: backbone file b.pt was trained on an image "
        "folder, whose classes cannot be compared with the digits, so they may "
        "not be novel to it; train on a folder that holds none of them\n"
    )
    assert json.loads(out)["novelty_warning"] in err


def test_evaluate_digits_with_no_novel_class_left_is_one_line(
    tmp_path, monkeypatch, capsys
):
    trained_on = {"dataset": "digits", "classes": list(range(10))}
    fake_backbone(monkeypatch, tmp_path, trained_on)
    status, out, err = run_cli(capsys, *EVAL_DIGITS, "--json")
    assert status == 1 and out == ""
    assert err.count("\n") == 1
    assert "trained on every digit" in err


def test_evaluate_digits_too_many_ways_for_the_novel_classes(
    tmp_path, monkeypatch, capsys
):
    fake_backbone(monkeypatch, tmp_path, None)
    argv = [a if a != "3" else "6" for a in EVAL_DIGITS]
    status, _, err = run_cli(capsys, *argv)
    assert status == 1
    assert err.splitlines()[-1] == (
        "skfewshot evaluate: error: --n-way 6 needs 6 classes, but only 5 "
        "classes are novel to this backbone: digits 5, 6, 7, 8, 9"
    )


def fake_demo_results(**kwargs):
    s = EpisodeScores(np.array([0.5, 1.0]), n_way=5, n_shot=1, n_query=15)
    info = {
        "train_time_s": 0.0,
        "trained_on": {"dataset": "digits", "classes": [0, 1, 2, 3, 4]},
        "classes": [5, 6, 7, 8, 9],
        "n_base": 1,
        "n_novel": 1,
        "max_epochs": 1,
        "epochs_trained": 1,
    }
    return {"prototype": [s]}, info


def test_interrupted_demo_exits_130_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from skfewshot.training import SupervisedPretrainer

    def interrupted(self, X, y):
        raise KeyboardInterrupt

    monkeypatch.setattr(SupervisedPretrainer, "fit", interrupted)
    figure = tmp_path / "demo.png"
    status, out, err = run_cli(
        capsys, *ONE_SHOT_DEMO, "--json", "--quiet", "--plot", str(figure)
    )
    assert status == 130
    assert out == ""
    assert err == "skfewshot demo: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_failed_plot_leaves_the_previous_figure_intact(tmp_path, monkeypatch, capsys):
    from matplotlib.figure import Figure

    figure = tmp_path / "demo.png"
    figure.write_bytes(b"the previous figure")
    real_savefig = Figure.savefig

    def savefig_then_fail(self, fname, **kwargs):
        real_savefig(self, fname, **kwargs)  # a complete file, then a late failure
        raise OSError("disk full")

    monkeypatch.setattr("skfewshot.recipes.run_demo", fake_demo_results)
    monkeypatch.setattr(Figure, "savefig", savefig_then_fail)
    status, out, err = run_cli(capsys, *ONE_SHOT_DEMO, "--plot", str(figure))
    assert status == 1
    assert "disk full" in err
    assert figure.read_bytes() == b"the previous figure"
    assert list(tmp_path.iterdir()) == [figure]  # no temporary file left behind


def test_plot_is_written_in_the_format_of_its_suffix(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("skfewshot.recipes.run_demo", fake_demo_results)
    figure = tmp_path / "demo.svg"
    status, _, _ = run_cli(capsys, *ONE_SHOT_DEMO, "--plot", str(figure))
    assert status == 0
    assert b"<svg" in figure.read_bytes()[:500]
    assert list(tmp_path.iterdir()) == [figure]


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "no/such/dir/x.png",
            "cannot write the figure {path}: folder {folder} does not exist",
        ),
        (
            "out.xyz",
            "cannot write the figure {path}: matplotlib does not support "
            "the format 'xyz'",
        ),
        ("", "cannot write the figure {path}: it is a folder"),
    ],
)
def test_bad_plot_path_fails_before_training(
    name, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(
        "skfewshot.recipes.run_demo", lambda **kw: pytest.fail("trained anyway")
    )
    path = tmp_path / name if name else tmp_path
    status, out, err = run_cli(capsys, *ONE_SHOT_DEMO, "--json", "--plot", str(path))
    assert status == 1 and out == ""
    assert err.count("\n") == 1
    expected = message.format(path=path, folder=path.parent)
    assert err.startswith(f"skfewshot demo: error: {expected}")


def png_bytes(seed):
    """A 28x28 black-and-white PNG, different for each seed."""
    from PIL import Image

    pixels = np.random.RandomState(seed).randint(0, 2, size=(28, 28)) * 255
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_omniglot_zip(path, alphabets):
    """An Omniglot-layout zip: 3 characters x 2 drawings per alphabet.

    ``alphabets`` maps each alphabet to the seed of its images, so two zips
    given the same seed for an alphabet share it image for image.
    """
    with zipfile.ZipFile(path, "w") as archive:
        for alphabet, seed in alphabets.items():
            for c in range(1, 4):
                for d in range(1, 3):
                    name = f"{path.stem}/{alphabet}/character{c:02d}/{c}_{d:02d}.png"
                    archive.writestr(name, png_bytes(seed * 100 + c * 10 + d))
    return path


@pytest.fixture
def omniglot_dir(tmp_path):
    """small1 and small2 look-alikes sharing Greek and Latin image for image."""
    pytest.importorskip("PIL")
    write_omniglot_zip(
        tmp_path / "images_background_small1.zip",
        {"Greek": 1, "Latin": 2, "Alpha": 3},
    )
    write_omniglot_zip(
        tmp_path / "images_background_small2.zip",
        {"Greek": 1, "Latin": 2, "Beta": 4},
    )
    return tmp_path


def test_train_on_two_subsets_reads_their_shared_alphabets_once(omniglot_dir, capsys):
    # small2 holds Greek and Latin of small1 (image for image) and Beta; small1
    # also holds Alpha, which small2 lacks (it used to be refused: every
    # alphabet read before was excluded from small2, by name)
    pytest.importorskip("PIL")
    status, out, err = run_cli(
        capsys, "train", "--dataset", "omniglot", "--data-dir", str(omniglot_dir),
        "--subset", "images_background_small1", "images_background_small2",
        "--epochs", "1", "--image-size", "16", "--width", "4", "--batch-size", "8",
        "-o", str(omniglot_dir / "both.pt"), "--json", "--quiet",
    )  # fmt: skip
    assert status == 0, err
    record = json.loads(out)
    assert record["trained_on"]["alphabets"] == ["Alpha", "Greek", "Latin", "Beta"]
    assert record["classes"] == [
        f"{alphabet}/character0{c}"
        for alphabet in ("Alpha", "Greek", "Latin", "Beta")
        for c in (1, 2, 3)
    ]


EVAL_OMNIGLOT = ["evaluate", "--dataset", "omniglot", "--backbone", "b.pt"]
EVAL_OMNIGLOT += ["--n-way", "2", "--n-shot", "1", "--n-query", "1"]
EVAL_OMNIGLOT += ["--episodes", "2", "--quiet"]
SMALL1 = {"dataset": "omniglot", "subset": "images_background_small1"}


def test_evaluate_omniglot_leaves_out_alphabets_shared_with_training(
    omniglot_dir, monkeypatch, capsys
):
    fake_backbone(monkeypatch, omniglot_dir, SMALL1, input_shape=(1, 28, 28))
    pools = spy_on_episodes(monkeypatch)
    argv = [*EVAL_OMNIGLOT, "--data-dir", str(omniglot_dir)]
    status, out, err = run_cli(capsys, *argv, "--json")
    assert status == 0 and err == ""
    result = json.loads(out)
    assert result["subset"] == "images_background_small2"
    assert result["alphabets"] == ["Beta"]
    assert result["excluded_alphabets"] == ["Greek", "Latin"]
    assert result["n_classes"] == 3 and len(pools[0]) == 3
    assert result["novelty_warning"] is None
    status, out, err = run_cli(capsys, *argv)
    assert "3 classes, on images_background_small2 alphabets Beta (not Greek, " in out


@pytest.mark.parametrize("trained_on", [None, {"dataset": "omniglot"}])
def test_evaluate_omniglot_without_a_record_warns(
    trained_on, omniglot_dir, monkeypatch, capsys
):
    fake_backbone(monkeypatch, omniglot_dir, trained_on, input_shape=(1, 28, 28))
    argv = [*EVAL_OMNIGLOT, "--data-dir", str(omniglot_dir), "--json"]
    status, out, err = run_cli(capsys, *argv)
    assert status == 0
    assert err.count("\n") == 1 and "skfewshot evaluate: warning: " in err
    assert "may not be novel" in err and "share Greek and Latin" in err
    result = json.loads(out)
    assert result["alphabets"] == ["Beta", "Greek", "Latin"]
    assert result["novelty_warning"] in err


@pytest.mark.parametrize(
    "trained_on, source",
    [(FOLDER_TRAINED, "an image folder"), ({"dataset": "mine"}, "data set 'mine'")],
)
def test_evaluate_omniglot_backbone_trained_on_other_images_warns(
    trained_on, source, omniglot_dir, monkeypatch, capsys
):
    fake_backbone(monkeypatch, omniglot_dir, trained_on, input_shape=(1, 28, 28))
    argv = [*EVAL_OMNIGLOT, "--data-dir", str(omniglot_dir), "--json"]
    status, out, err = run_cli(capsys, *argv)
    assert status == 0
    assert err == (
        f"skfewshot evaluate: warning: backbone file b.pt was trained on {source}, "
        "whose classes cannot be compared with those of images_background_small2, "
        "so they may not be novel to it; train on a folder that holds none of them\n"
    )
    result = json.loads(out)
    assert result["alphabets"] == ["Beta", "Greek", "Latin"]
    assert result["novelty_warning"] in err


def test_evaluate_omniglot_zip_names_the_subset_reported(
    omniglot_dir, monkeypatch, capsys
):
    trained_on = {"dataset": "digits", "classes": [0]}
    fake_backbone(monkeypatch, omniglot_dir, trained_on, input_shape=(1, 28, 28))
    small1 = omniglot_dir / "images_background_small1.zip"
    status, out, err = run_cli(
        capsys, *EVAL_OMNIGLOT, "--data-dir", str(small1), "--json"
    )
    assert status == 0 and err == ""
    result = json.loads(out)
    assert result["subset"] == "images_background_small1"
    assert result["alphabets"] == ["Alpha", "Greek", "Latin"]
    argv = [*EVAL_OMNIGLOT, "--data-dir", str(small1)]
    status, out, err = run_cli(capsys, *argv, "--subset", "images_background_small2")
    assert status == 1 and out == ""
    assert err == (
        "skfewshot evaluate: error: --subset images_background_small2 does not "
        f"match --data-dir {small1}, which holds images_background_small1; leave "
        "--subset out or give the folder holding images_background_small2.zip\n"
    )


def test_evaluate_omniglot_on_the_training_subset_is_refused(
    omniglot_dir, monkeypatch, capsys
):
    fake_backbone(monkeypatch, omniglot_dir, SMALL1, input_shape=(1, 28, 28))
    argv = [*EVAL_OMNIGLOT, "--data-dir", str(omniglot_dir)]
    status, out, err = run_cli(capsys, *argv, "--subset", "images_background_small1")
    assert status == 1 and out == ""
    assert err == (
        "skfewshot evaluate: error: the backbone was trained on "
        "images_background_small1: none of its alphabets is novel; evaluate on "
        "another subset (e.g. images_evaluation)\n"
    )


def test_evaluate_omniglot_training_zip_absent_warns(tmp_path, monkeypatch, capsys):
    pytest.importorskip("PIL")
    write_omniglot_zip(tmp_path / "images_background_small2.zip", {"Beta": 4})
    fake_backbone(monkeypatch, tmp_path, SMALL1, input_shape=(1, 28, 28))
    argv = [*EVAL_OMNIGLOT, "--data-dir", str(tmp_path), "--json"]
    status, out, err = run_cli(capsys, *argv)
    assert status == 0
    assert err.startswith(
        "skfewshot evaluate: warning: cannot tell which alphabets of "
        "images_background_small2 the backbone saw in training"
    )
    assert err.count("\n") == 1
    assert json.loads(out)["novelty_warning"] in err


def corrupt_member_zip(path):
    """An Omniglot-layout zip whose one member's deflated data is garbage."""
    pytest.importorskip("PIL")
    name = f"{path.stem}/Beta/character01/1_01.png"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, png_bytes(0) * 4)
    raw = bytearray(path.read_bytes())
    start = 30 + len(name)  # local header, then the compressed data
    raw[start : start + 40] = b"\xff" * 40
    path.write_bytes(bytes(raw))
    return path


def not_a_png_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{path.stem}/Beta/character01/1_01.png", b"not a png")
    return path


@pytest.mark.parametrize("make_zip", [corrupt_member_zip, not_a_png_zip])
def test_unreadable_omniglot_zip_is_one_line_with_json(
    make_zip, tmp_path, monkeypatch, capsys
):
    fake_backbone(monkeypatch, tmp_path, {"dataset": "digits"}, input_shape=(1, 28, 28))
    path = make_zip(tmp_path / "images_background_small2.zip")
    argv = [*EVAL_OMNIGLOT, "--data-dir", str(path), "--json"]
    status, out, err = run_cli(capsys, *argv)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("skfewshot evaluate: error: ")
    assert str(path) in err


@pytest.mark.parametrize(
    "blob",
    [
        {"format": "skfewshot.backbone", "version": 1},  # keys missing
        {"format": "skfewshot.backbone", "version": 1, "architecture": ["Conv4"]},
        [1, 2, 3],
    ],
)
def test_malformed_backbone_file_is_one_line_with_json(blob, tmp_path, capsys):
    import torch

    path = tmp_path / "bad.pt"
    torch.save(blob, path)
    argv = ["evaluate", "--dataset", "digits", "--backbone", str(path), "--json"]
    status, out, err = run_cli(capsys, *argv)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("skfewshot evaluate: error: ")
    assert str(path) in err


def test_backbone_path_that_is_a_folder_is_one_line(tmp_path, capsys):
    argv = ["runs", "--runs", str(tmp_path), "--backbone", str(tmp_path), "--json"]
    status, out, err = run_cli(capsys, *argv)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and str(tmp_path) in err
    assert "is a directory, not a backbone file" in err  # not "does not exist"


def test_ctrl_c_during_pretraining_stops_the_demo(tmp_path, monkeypatch, capsys):
    # a real SIGINT in the middle of an epoch, not a patched-in exception:
    # skorch's fit catches KeyboardInterrupt, so the trainer must carry it out
    import signal

    from skorch import NeuralNet

    def interrupted_epoch(self, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(NeuralNet, "run_single_epoch", interrupted_epoch)
    figure = tmp_path / "demo.png"
    status, out, err = run_cli(
        capsys, *ONE_SHOT_DEMO, "--json", "--quiet", "--plot", str(figure)
    )
    assert (status, out, err) == (130, "", "skfewshot demo: interrupted\n")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# issue 9: user errors on one line, bugs with their traceback, checks first
# --------------------------------------------------------------------------


def failing_demo(error):
    def run_demo(**kwargs):
        raise error

    return run_demo


@pytest.mark.parametrize(
    "error",
    [
        TypeError("a bug"),
        AttributeError("a bug"),
        KeyError("a bug"),
        ImportError("a bug"),
    ],
)
def test_a_bug_shows_its_traceback(error, monkeypatch, capsys):
    monkeypatch.setattr("skfewshot.recipes.run_demo", failing_demo(error))
    with pytest.raises(type(error), match="a bug"):
        main(ONE_SHOT_DEMO)
    assert capsys.readouterr().err == ""  # not reported as a user error


@pytest.mark.parametrize(
    "error", [ValueError("bad value"), FileNotFoundError("no such file")]
)
def test_debug_shows_the_traceback_of_a_user_error(error, monkeypatch, capsys):
    monkeypatch.setattr("skfewshot.recipes.run_demo", failing_demo(error))
    status, out, err = run_cli(capsys, *ONE_SHOT_DEMO, "--debug")
    assert status == 1 and out == ""
    assert err.startswith("Traceback (most recent call last):\n")
    assert err.splitlines()[-1] == f"skfewshot demo: error: {error}"
    status, out, err = run_cli(capsys, *ONE_SHOT_DEMO)
    assert (status, err) == (1, f"skfewshot demo: error: {error}\n")


def test_ctrl_c_with_debug_still_exits_130(monkeypatch, capsys):
    monkeypatch.setattr("skfewshot.recipes.run_demo", failing_demo(KeyboardInterrupt))
    status, out, err = run_cli(capsys, *ONE_SHOT_DEMO, "--debug")
    assert (status, out, err) == (130, "", "skfewshot demo: interrupted\n")


IMPORTS = (
    "import sys; from skfewshot.cli import main; status = main(sys.argv[1:]); "
    "print(status, sorted({'torch', 'sklearn', 'matplotlib'} & set(sys.modules)))"
)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["evaluate", "--dataset", "digits", "--backbone", "missing.pt"],
            "--backbone missing.pt does not exist",
        ),
        (
            ["evaluate", "--dataset", "digits", "--backbone", "."],
            "--backbone . is a directory, not a backbone file",
        ),
        (
            ["evaluate", "--dataset", "omniglot", "--backbone", "b.pt"],
            "--data-dir ",  # the folder holds no Omniglot zip
        ),
        (
            ["runs", "--runs", "missing", "--backbone", "b.pt"],
            "--runs missing does not exist",
        ),
        (
            ["evaluate", "--dataset", "banking77", "--data-dir", "missing"],
            "--data-dir missing does not exist",
        ),
    ],
)
def test_errors_are_reported_before_torch_or_sklearn_is_imported(
    argv, message, tmp_path
):
    (tmp_path / "b.pt").write_bytes(b"")
    if argv[2] == "omniglot":
        argv = [*argv, "--data-dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS, *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.stdout == "1 []\n"
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


@pytest.mark.parametrize("command", ["demo", "evaluate"])
def test_help_prints_95_percent_once(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's wrapping
    assert "%%" not in out
    assert "95% confidence intervals" in out or "± 95% CI" in out


def test_missing_omniglot_zip_names_the_flag(tmp_path, monkeypatch, capsys):
    fake_backbone(monkeypatch, tmp_path, None, input_shape=(1, 28, 28))
    status, out, err = run_cli(capsys, *EVAL_OMNIGLOT, "--data-dir", str(tmp_path))
    assert status == 1 and out == ""
    assert err == (
        f"skfewshot evaluate: error: --data-dir {tmp_path} holds no "
        "images_background_small2.zip; give the folder holding the Omniglot "
        "zips, or one of the zips\n"
    )
    assert "download=True" not in err and "path=" not in err


def test_missing_training_zip_warning_names_the_flag(tmp_path, monkeypatch, capsys):
    pytest.importorskip("PIL")
    write_omniglot_zip(tmp_path / "images_background_small2.zip", {"Beta": 4})
    fake_backbone(monkeypatch, tmp_path, SMALL1, input_shape=(1, 28, 28))
    status, _, err = run_cli(capsys, *EVAL_OMNIGLOT, "--data-dir", str(tmp_path))
    assert status == 0
    assert "images_background_small1.zip, which it was trained on, is not " in err
    assert "--data-dir" in err
    assert "download=True" not in err and "path=" not in err


def test_missing_banking77_csv_names_the_flag(tmp_path, capsys):
    argv = ["evaluate", "--dataset", "banking77", "--data-dir", str(tmp_path)]
    status, out, err = run_cli(capsys, *argv)
    assert status == 1 and out == ""
    assert err.startswith(
        f"skfewshot evaluate: error: --data-dir {tmp_path} holds no train.csv"
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--text-encoder", "m"], "--text-encoder embeds texts (banking77)"),
        (["--data-dir", "."], "digits needs no --data-dir"),
        (["--subset", "images_evaluation"], "--subset names an Omniglot subset"),
        (["--within-alphabet"], "--within-alphabet needs a dataset with groups"),
    ],
)
def test_options_that_do_not_apply_are_refused(extra, message, capsys):
    argv = ["evaluate", "--dataset", "digits", "--backbone", "missing.pt", *extra]
    status, _, err = run_cli(capsys, *argv)
    assert status == 1
    assert err.startswith(f"skfewshot evaluate: error: {message}")


def test_banking77_shows_progress_and_times_each_step(tmp_path, capsys):
    argv = [*BANKING77, "--data-dir", str(banking77_dir(tmp_path))]
    status, out, err = run_cli(capsys, *argv, "--json")
    assert status == 0
    assert err.startswith(
        "skfewshot evaluate: building LSA (TF-IDF + SVD, 256-d) features of 36 texts\n"
    )
    result = json.loads(out)
    assert list(result["timings"]) == ["data", "features", "episodes"]
    assert result["seconds"] == pytest.approx(sum(result["timings"].values()), abs=0.02)
    status, out, _ = run_cli(capsys, *argv)
    assert re.search(
        r"  \[\d+\.\d s: data \d+\.\d s, features \d+\.\d s, episodes \d+\.\d s\]$",
        out.splitlines()[0],
    )
    status, _, err = run_cli(capsys, *argv, "--quiet")
    assert status == 0 and err == ""


class FakeSentenceTransformer:
    """Stands in for a sentence-transformers model: one keyword count per intent.

    The texts it encodes are recorded in a class attribute (not its state, so
    the feature cache keys every instance alike).
    """

    words = ["card", "transfer", "refund", "pin", "atm", "fee"]
    loads, encoded = [], []

    def __init__(self, name, device=None):
        type(self).loads.append((name, device))

    def encode(self, texts, batch_size=32, **kwargs):
        type(self).encoded.extend(texts)
        return np.array([[t.count(w) for w in self.words] for t in texts], float)


def test_text_encoder_embeds_each_text_once_with_progress(
    tmp_path, monkeypatch, capsys
):
    from skfewshot._feature_cache import FEATURE_CACHE

    fake = type(sys)("sentence_transformers")
    fake.__spec__ = importlib.machinery.ModuleSpec("sentence_transformers", None)
    fake.SentenceTransformer = FakeSentenceTransformer
    monkeypatch.setitem(sys.modules, "sentence_transformers", fake)
    FakeSentenceTransformer.loads, FakeSentenceTransformer.encoded = [], []
    FEATURE_CACHE.clear()
    argv = [*BANKING77, "--data-dir", str(banking77_dir(tmp_path)), "--json"]
    argv += ["--episodes", "40", "--text-encoder", "some/model", "--device", "cpu"]
    try:
        status, out, err = run_cli(capsys, *argv)
    finally:
        FEATURE_CACHE.clear()
    assert status == 0
    assert FakeSentenceTransformer.loads == [("some/model", "cpu")]
    texts = [
        f"my {w} issue number {i}, please help"
        for w in FakeSentenceTransformer.words
        for i in range(6)
    ]
    assert sorted(FakeSentenceTransformer.encoded) == sorted(texts)
    assert err.startswith(
        "skfewshot evaluate: building SentenceEncoder(some/model) features of 36 "
        "texts\n"
    )
    assert "SentenceEncoder: 100%" in err
    result = json.loads(out)
    assert result["architecture"] == "SentenceEncoder(some/model)"
    assert list(result["timings"]) == ["data", "features", "episodes"]
    assert result["n_episodes"] == 40 and result["mean"] == 1.0


def test_text_encoder_without_sentence_transformers_fails_first(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setattr(
        "skfewshot.datasets.load_banking77", lambda *a: pytest.fail("loaded anyway")
    )
    argv = [*BANKING77, "--data-dir", str(banking77_dir(tmp_path))]
    status, _, err = run_cli(capsys, *argv, "--text-encoder", "all-MiniLM-L6-v2")
    assert status == 1
    assert err == (
        "skfewshot evaluate: error: --text-encoder needs sentence-transformers; "
        "pip install 'skfewshot[text]'\n"
    )
