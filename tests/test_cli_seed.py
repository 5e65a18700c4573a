"""``--seed`` is offered only by the commands that draw at random.

``runs`` (the fixed Omniglot runs) and ``predict`` (a given support set) draw
nothing, and every head is deterministic, so a ``--seed`` there would be
silently ignored: argparse refuses it instead, before any file is read.
"""

import pytest

from skfewshot.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["runs", "--runs", "RUNS", "--backbone", "B.pt"],
        ["predict", "--backbone", "B.pt", "--support", "S", "--query", "Q"],
    ],
)
def test_commands_that_draw_nothing_refuse_seed(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--seed", "3"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --seed 3" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "evaluate", "train"])
def test_commands_that_draw_take_seed(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "--seed SEED" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["runs", "predict"])
def test_commands_that_draw_nothing_keep_quiet(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "--quiet" in out
    assert "--seed" not in out
