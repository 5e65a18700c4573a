"""The CLI against hostile inputs: odd arguments, odd query paths, no memory."""

import csv
import io
import os

import pytest
import test_cli_train_predict as train_predict

import skfewshot.cli

# the module's fixtures: a trained backbone and a predict episode
pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml

train_dir, backbone = train_predict.train_dir, train_predict.backbone
episode, run = train_predict.episode, train_predict.run


def _rows(out):
    return [row[0] for row in list(csv.reader(io.StringIO(out)))[1:]]


def test_a_query_file_named_twice_is_predicted_once(backbone, episode, capsys):
    # sorted(set(paths)) kept ./q/a.png, q/../q/a.png and the folder's a.png
    support, query, files = episode
    inner = query / "nested"
    again = [f"{inner}/../nested/{files[0].name}", f"{inner}/./{files[1].name}"]
    status, out, err = run(
        capsys, "predict", "--backbone", backbone, "--support", support,
        "--query", query, *again, files[0],
    )  # fmt: skip
    assert status == 0, err
    assert _rows(out) == [str(inner / f.name) for f in files]


def test_a_query_folder_follows_links_and_names_what_it_cannot_read(
    backbone, episode, tmp_path, capsys
):
    # rglob skipped a linked folder and an unreadable one without a word
    support, query, files = episode
    root = tmp_path / "q"
    root.mkdir()
    os.symlink(query / "nested", root / "linked")
    status, out, err = run(
        capsys, "predict", "--backbone", backbone, "--support", support,
        "--query", root,
    )  # fmt: skip
    assert status == 0, err
    assert _rows(out) == [str(root / "linked" / f.name) for f in files]
    os.symlink(tmp_path / "gone", root / "dangling")
    status, out, err = run(
        capsys, "predict", "--backbone", backbone, "--support", support,
        "--query", root,
    )  # fmt: skip
    assert status == 1 and out == ""
    assert err.startswith("skfewshot predict: error: ")
    assert "dangling symbolic link" in err and str(root / "dangling") in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "--dataset", "digits", "--val-classes", "-2", "-o", "x.pt"],
            "argument --val-classes: expected a finite value >= 0, got -2",
        ),
        (
            ["demo", "--seed", "99999999999999999999"],
            "argument --seed: expected an integer in [0, 2**32 - 1], got "
            "99999999999999999999",
        ),
        (
            ["runs", "--runs", "r", "--backbone", "b.pt"]
            + ["--test-time-scales", "0.9", "5000"],
            "argument --test-time-scales: expected a number in [0.001, 1000], got 5000",
        ),
        (
            ["predict", "--backbone", "b.pt", "--support", "s", "--query", "q"]
            + ["--test-time-angles", "-10", "nan"],
            "argument --test-time-angles: expected a finite number, got nan",
        ),
    ],
    ids=["negative-val-classes", "huge-seed", "huge-warp-scale", "nan-warp-angle"],
)
def test_out_of_range_arguments_are_refused_by_name(argv, message, capsys):
    # --val-classes -2 held out 3 of 5 classes; the seed overflowed in numpy
    with pytest.raises(SystemExit) as exit_:
        skfewshot.cli.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "error",
    [
        MemoryError("Unable to allocate 40.0 GiB for an array"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] can't allocate memory"),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    ],
    ids=["numpy", "torch-cpu", "torch-cuda"],
)
def test_running_out_of_memory_is_one_line(error, monkeypatch, capsys):
    # --width 1000000 ended in a traceback
    def demo(args):
        raise error

    monkeypatch.setattr(skfewshot.cli, "_cmd_demo", demo)
    assert skfewshot.cli.main(["demo"]) == 1
    first = str(error).splitlines()[0]
    assert capsys.readouterr().err == (
        f"skfewshot demo: error: out of memory ({first}); try a smaller "
        "--image-size, --width or --batch-size\n"
    )


def test_another_runtime_error_is_a_bug_with_its_traceback(monkeypatch):
    def demo(args):
        raise RuntimeError("an internal invariant broke")

    monkeypatch.setattr(skfewshot.cli, "_cmd_demo", demo)
    with pytest.raises(RuntimeError, match="invariant"):
        skfewshot.cli.main(["demo"])


@pytest.mark.parametrize("recipe", ["pretrain", "protonet"])
def test_a_diverged_run_writes_nothing(recipe, tmp_path, capsys):
    # it wrote the weights it started from over a good backbone, exit 0
    out = tmp_path / "model.pt"
    argv = ["train", "--dataset", "digits", "--recipe", recipe, "-o", out]
    argv += ["--epochs", "1", "--image-size", "16", "--width", "4", "--quiet"]
    argv += ["--device", "cpu"]
    assert skfewshot.cli.main([str(a) for a in argv]) == 0
    before = out.read_bytes(), (tmp_path / "model.pt.json").read_bytes()
    capsys.readouterr()
    with pytest.warns(RuntimeWarning, match="non-finite") as caught:
        status = skfewshot.cli.main([str(a) for a in argv + ["--lr", "1e10"]])
    assert status == 1
    # the guard's reason: a NaN loss, or (ProtoNet here) NaN weights
    what = str(caught[0].message).split(": ", 1)[1].split(";")[0]
    assert what.startswith("non-finite") and what.endswith("epoch 1")
    assert capsys.readouterr().err == (
        f"skfewshot train: error: training diverged: {what}; nothing is written "
        f"(an existing {out} is untouched); lower --lr, or check the images for "
        "NaN/inf\n"
    )
    assert (out.read_bytes(), (tmp_path / "model.pt.json").read_bytes()) == before
    assert not (tmp_path / "model.pt.lock").exists()
