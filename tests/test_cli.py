"""The ``skfewshot`` command: help, demo, evaluate, runs, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import build_omniglot_runs

from skfewshot.cli import build_parser, format_table, main
from skfewshot.model_selection import EpisodeScores
from skfewshot.models import Conv4, save_backbone

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


@pytest.mark.parametrize("command", ["demo", "evaluate", "runs"])
def test_help_lists_every_option(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
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
    status, out, _ = run_cli(capsys, *TINY_DEMO, "--json", "--quiet")
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
    status, out, _ = run_cli(capsys, *ONE_SHOT_DEMO, "--json", "--quiet")
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
        "skfewshot.cli.run_demo", lambda **kw: pytest.fail("trained anyway")
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


def test_evaluate_digits_json(digits_backbone, capsys):
    argv = ["evaluate", "--dataset", "digits", "--backbone", digits_backbone]
    argv += ["--n-way", "3", "--n-shot", "2", "--episodes", "4", "--json", "--quiet"]
    status, out, _ = run_cli(capsys, *argv)
    assert status == 0
    result = json.loads(out)
    assert result["architecture"] == "Conv4"
    assert (result["n_way"], result["n_shot"], result["n_episodes"]) == (3, 2, 4)
    assert 0.0 <= result["mean"] <= 1.0


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
    status, _, err = run_cli(capsys, *argv, "--n-way", "11", "--quiet")
    assert status == 1
    assert err.count("\n") == 1
    assert "n_way=11" in err and "only 10 of 10 classes" in err


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
def test_runs_on_runs_built_from_small2(shared_data, tmp_path, capsys):
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
    status, out, _ = run_cli(
        capsys, "runs", "--runs", str(tmp_path / "runs"), "--backbone", str(backbone)
    )
    assert "overall error rate" in out and "run02" in out


def test_evaluate_banking77_on_lsa_features(tmp_path, capsys):
    words = ["card", "transfer", "refund", "pin", "atm", "fee"]
    rows = ["text,category"]
    for c, word in enumerate(words):
        for i in range(6):
            rows.append(f'"my {word} issue number {i}, please help",intent_{c}')
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    argv = ["evaluate", "--dataset", "banking77", "--data-dir", str(tmp_path)]
    argv += ["--n-way", "5", "--n-shot", "1", "--n-query", "3", "--episodes", "5"]
    status, out, _ = run_cli(capsys, *argv, "--json", "--quiet")
    assert status == 0
    result = json.loads(out)
    assert result["architecture"].startswith("LSA")
    assert result["mean"] == 1.0  # each intent has its own keyword
