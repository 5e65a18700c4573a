"""Tests for skfewshot.datasets.load_omniglot_runs: every run, once."""

import errno

import numpy as np
import pytest
from _datasets_testing import GOOD_LINE, real_omniglot, tiny_run, zip_folder
from conftest import build_omniglot_runs

from skfewshot.datasets import load_omniglot_runs

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml


@pytest.mark.shared_data
def test_load_omniglot_runs_folder_and_zip(shared_data, tmp_path):
    runs_dir = tmp_path / "all_runs"
    expected = build_omniglot_runs(shared_data, runs_dir)
    omniglot = real_omniglot(shared_data, "images_background_small2")
    row = {name: i for i, name in enumerate(omniglot.filenames)}

    forms = [
        runs_dir,  # the parent of runNN
        tmp_path,  # one top folder above the runs
        zip_folder(runs_dir, tmp_path / "flat.zip"),
        zip_folder(runs_dir, tmp_path / "nested.zip", prefix="all_runs/"),
    ]
    loaded = [load_omniglot_runs(form) for form in forms]
    for bunch in loaded:
        assert [run.name for run in bunch.runs] == ["run01", "run02"]
        for run in bunch.runs:
            support, query, query_class = expected[run.name]
            assert run.X_support.shape == (20, 1, 28, 28)
            assert run.X_query.shape == (20, 1, 28, 28)
            np.testing.assert_array_equal(run.y_support, np.arange(1, 21))
            np.testing.assert_array_equal(run.y_query, query_class)
            # same image format as load_omniglot, image for image (up to the
            # float64 matrix products' rounding, which may depend on the BLAS)
            np.testing.assert_allclose(
                run.X_support,
                omniglot.data[[row[support[c]] for c in range(1, 21)]],
                rtol=0,
                atol=1e-6,
            )
            np.testing.assert_allclose(
                run.X_query, omniglot.data[[row[q] for q in query]], rtol=0, atol=1e-6
            )
            assert run.query_files[0].endswith(f"{run.name}/test/item01.png")
    assert "one-shot" in loaded[0].DESCR


def test_load_omniglot_runs_tiny_and_image_size(tmp_path):
    tiny_run(tmp_path, ["run01/test/item01.png run01/training/class02.png"])
    (run,) = load_omniglot_runs(tmp_path, image_size=2).runs
    np.testing.assert_array_equal(run.y_support, [1, 2])
    np.testing.assert_array_equal(run.y_query, [2])
    np.testing.assert_allclose(
        run.X_query[0, 0], [[1.0, 0.0], [0.0, 0.25]], rtol=0, atol=1e-6
    )


@pytest.mark.parametrize(
    "lines, match",
    [
        (["run01/test/item01.png"], "line 1: expected 'runNN/test/itemXX.png"),
        (["", "a b c"], "line 2: expected"),
        (["run01/test/item09.png run01/training/class01.png"], "item09.png.*not in"),
        (["run01/test/item01.png run01/training/class07.png"], "class07.png.*not in"),
        (["run01/test/item01.png run01/training/class01.png"] * 2, "repeated"),
        ([], "unlabelled: \\['item01.png'\\]"),
    ],
)
def test_load_omniglot_runs_malformed_labels(tmp_path, lines, match):
    tiny_run(tmp_path, lines)
    with pytest.raises(ValueError, match=match):
        load_omniglot_runs(tmp_path)


def test_load_omniglot_runs_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a folder nor a zip") as info:
        load_omniglot_runs(tmp_path / "missing")
    assert info.value.filename == str(tmp_path / "missing")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(FileNotFoundError, match="no runNN/class_labels.txt") as info:
        load_omniglot_runs(tmp_path)
    assert info.value.filename == str(tmp_path)
    (tmp_path / "runs.zip").write_bytes(b"not a zip")
    with pytest.raises(OSError, match="runs.zip is not a readable zip archive"):
        load_omniglot_runs(tmp_path / "runs.zip")


def test_runs_class_labels_not_utf8(tmp_path):
    tiny_run(tmp_path, ["run01/test/item01.png run01/training/class02.png"])
    (tmp_path / "run01" / "class_labels.txt").write_bytes(b"run01/test/\xe9.png x\n")
    with pytest.raises(ValueError, match="class_labels.txt is not UTF-8"):
        load_omniglot_runs(tmp_path)


def test_load_omniglot_runs_run_without_labels_is_an_error(tmp_path):
    tiny_run(tmp_path, GOOD_LINE)
    tiny_run(tmp_path / "more", GOOD_LINE)
    (tmp_path / "more" / "run01").rename(tmp_path / "run02")
    (tmp_path / "run02" / "class_labels.txt").unlink()
    with pytest.raises(
        ValueError, match="run folder\\(s\\) \\['run02'\\] have no class_labels.txt"
    ):
        load_omniglot_runs(tmp_path)


def test_load_omniglot_runs_run_found_twice_is_an_error(tmp_path):
    tiny_run(tmp_path / "copy1", GOOD_LINE)
    tiny_run(tmp_path / "copy2", GOOD_LINE)
    with pytest.raises(
        ValueError,
        match="found more than once: \\{'run01': \\['copy1/run01', 'copy2/run01'\\]",
    ):
        load_omniglot_runs(tmp_path)
    path = zip_folder(tmp_path, tmp_path / "runs.zip")
    with pytest.raises(ValueError, match="runs.zip: run\\(s\\) found more than once"):
        load_omniglot_runs(path)


def test_load_omniglot_runs_follows_a_symlinked_run_folder(tmp_path):
    tiny_run(tmp_path / "a", GOOD_LINE)
    tiny_run(tmp_path / "b", [line.replace("run01", "run02") for line in GOOD_LINE])
    (tmp_path / "b" / "run01").rename(tmp_path / "b" / "run02")
    (tmp_path / "a" / "run02").symlink_to(tmp_path / "b" / "run02")
    runs = load_omniglot_runs(tmp_path / "a").runs
    assert [run.name for run in runs] == ["run01", "run02"]
    np.testing.assert_array_equal(runs[1].X_query, runs[0].X_query)
    (tmp_path / "a" / "run03").symlink_to(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="dangling symbolic link") as info:
        load_omniglot_runs(tmp_path / "a")
    assert info.value.filename == str(tmp_path / "a" / "run03")


def test_load_omniglot_runs_skips_hidden_files(tmp_path):
    # macOS writes AppleDouble "._<name>" files beside each file on FAT,
    # exFAT and network volumes: not images of the run
    folder = tmp_path / "runs"
    tiny_run(folder, GOOD_LINE)
    training = folder / "run01" / "training"
    (training / "._class01.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (training / ".DS_Store").write_bytes(b"")
    for source in (folder, zip_folder(folder, tmp_path / "runs.zip")):
        (run,) = load_omniglot_runs(source).runs
        assert run.support_files == [
            "run01/training/class01.png",
            "run01/training/class02.png",
        ]


def test_load_omniglot_runs_repeated_class_number_names_the_files(tmp_path):
    tiny_run(tmp_path, GOOD_LINE)
    training = tmp_path / "run01" / "training"
    (training / "class1.png").write_bytes((training / "class01.png").read_bytes())
    with pytest.raises(
        ValueError,
        match="run run01 repeats a class number in training/: "
        "\\['class01.png', 'class1.png'\\]",
    ):
        load_omniglot_runs(tmp_path)


@pytest.mark.parametrize(
    "line, match",
    [
        (
            "run02/test/item01.png run02/training/class02.png",
            "line 1: query image 'run02/test/item01.png' is not in the run's "
            "test/ folder \\(expected run01/test/<file>\\)",
        ),
        (
            "run01/test/item01.png run02/training/class02.png",
            "line 1: class image 'run02/training/class02.png' is not in the "
            "run's training/ folder \\(expected run01/training/<file>\\)",
        ),
        (
            "run01/training/item01.png run01/training/class02.png",
            "line 1: query image 'run01/training/item01.png' is not in",
        ),
    ],
)
def test_load_omniglot_runs_line_naming_another_run_is_refused(tmp_path, line, match):
    # lines used to be matched by base name only, so run02/... was accepted
    tiny_run(tmp_path, [line])
    tiny_run(tmp_path / "other", GOOD_LINE)
    (tmp_path / "other" / "run01").rename(tmp_path / "run02")
    (tmp_path / "run02" / "class_labels.txt").write_text(
        "run02/test/item01.png run02/training/class02.png\n"
    )
    with pytest.raises(ValueError, match=f"run01/class_labels.txt, {match}"):
        load_omniglot_runs(tmp_path)
