"""``skfewshot train`` holds ``OUTPUT.lock``: one run at a time writes OUTPUT."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from test_cli_train_predict import (
    TRAIN,
    TRAIN_CLASSES,
    _folder,
    _interrupt_at_epoch,
    run,
)

import skfewshot.cli
from skfewshot.models import load_backbone

#: One quick epoch of a 4-channel Conv4 on 16 x 16 images.
pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml

QUICK = [*TRAIN, "--epochs", "1", "--width", "4"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("shapes"), 2, classes=TRAIN_CLASSES)


def _lock(path, pid, host=None, started="2026-01-02T03:04:05+0000"):
    """Write the lock of a run ``pid`` on ``host`` (this one by default)."""
    owner = {"pid": pid, "host": host or socket.gethostname(), "started": started}
    path.write_text(json.dumps({**owner, "argv": ["train", "elsewhere"]}))
    return path


def _dead_pid():
    """The pid of a process that has ended and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def _held(out, lock, pid, host):
    return (
        f"skfewshot train: error: another skfewshot run writes --output "
        f"{out} (pid {pid} on {host}, started 2026-01-02T03:04:05+0000, by its "
        f"lock {lock}); wait for it to end or give another --output; if no such "
        f"run is alive, delete {lock}\n"
    )


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_a_held_lock_refuses_the_run_and_touches_nothing(
    shapes, tmp_path, capsys, resume
):
    out = tmp_path / "m.pt"
    lock = _lock(tmp_path / "m.pt.lock", os.getpid())  # alive: this process
    files = {out: b"backbone", tmp_path / "m.pt.json": b"{}"}
    # a checkpoint too: the lock is checked first, so neither run's checkpoint
    # test (fresh: "holds an interrupted run"; --resume: continue it) is reached
    files[tmp_path / "m.pt.ckpt"] = b"checkpoint"
    for path, data in files.items():
        path.write_bytes(data)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    status, stdout, err = run(capsys, "train", shapes, "-o", out, *QUICK, *resume)
    assert (status, stdout) == (1, "")
    assert err == _held(out, lock, os.getpid(), socket.gethostname())
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_dead_run_of_another_host_is_not_guessed_at(shapes, tmp_path, capsys):
    # its pid means nothing here: the run may be alive on its own host
    out = tmp_path / "m.pt"
    lock = _lock(tmp_path / "m.pt.lock", _dead_pid(), host="elsewhere.example")
    pid = json.loads(lock.read_text())["pid"]
    status, _, err = run(capsys, "train", shapes, "-o", out, *QUICK)
    assert status == 1
    assert err == _held(out, lock, pid, "elsewhere.example")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt.lock"]


def test_the_lock_of_a_dead_run_on_this_host_is_taken_over(shapes, tmp_path, capsys):
    out = tmp_path / "m.pt"
    pid = _dead_pid()
    lock = _lock(tmp_path / "m.pt.lock", pid)
    status, _, err = run(capsys, "train", shapes, "-o", out, *QUICK)
    assert status == 0, err
    assert err == (
        f"skfewshot train: warning: taking over {lock}, left by a run that is no "
        f"longer running (pid {pid} on {socket.gethostname()}, started "
        "2026-01-02T03:04:05+0000)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.json"]
    assert load_backbone(out)[1]["input_shape"] == (1, 16, 16)


def test_losing_the_race_for_a_dead_run_lock_is_refused(
    shapes, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "m.pt"
    lock = _lock(tmp_path / "m.pt.lock", _dead_pid())
    create, calls = skfewshot.cli._create_lock, []

    def racing(path, owner):
        calls.append(path)
        if calls.count(lock) == 2:  # another run re-created it first
            _lock(path, os.getpid())
        return create(path, owner)

    monkeypatch.setattr(skfewshot.cli, "_create_lock", racing)
    status, _, err = run(capsys, "train", shapes, "-o", out, *QUICK)
    assert status == 1
    assert err.endswith(
        f"skfewshot train: error: another skfewshot run writes --output "
        f"{out} (it took over the stale lock {lock} at the same time as this "
        "one); wait for it to end or give another --output; if no such run is "
        f"alive, delete {lock}\n"
    )
    assert err.startswith(f"skfewshot train: warning: taking over {lock}")
    assert json.loads(lock.read_text())["pid"] == os.getpid()  # the winner's
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt.lock"]


def test_a_run_that_read_a_dead_lock_another_run_took_over_is_refused(
    tmp_path, monkeypatch
):
    # B reads the dead run's lock; before B replaces it, A takes it over: B
    # must find A's lock under the takeover guard and stop, not delete it
    out, cli = tmp_path / "m.pt", skfewshot.cli
    lock = _lock(tmp_path / "m.pt.lock", _dead_pid())
    is_stale, runs = cli._is_stale, contextlib.ExitStack()

    def b_reads_then_a_takes_over(owner):
        monkeypatch.setattr(cli, "_is_stale", is_stale)
        runs.enter_context(cli._output_lock(out, ["A"]))
        return is_stale(owner)

    monkeypatch.setattr(cli, "_is_stale", b_reads_then_a_takes_over)
    with runs:
        with pytest.raises(cli._CLIError, match="at the same time as this one"):
            with cli._output_lock(out, ["B"]):
                pytest.fail("B ran beside A")
        assert json.loads(lock.read_text())["argv"] == ["A"]  # A's lock stays
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt.lock"]
    assert not lock.exists()  # A's run ended


def test_a_takeover_in_progress_is_refused_naming_its_guard(tmp_path):
    out = tmp_path / "m.pt"
    _lock(tmp_path / "m.pt.lock", _dead_pid())
    guard = _lock(tmp_path / "m.pt.lock.takeover", os.getpid())
    with pytest.raises(skfewshot.cli._CLIError, match=f"delete .*{guard.name}$"):
        with skfewshot.cli._output_lock(out, ["B"]):
            pytest.fail("ran during another run's takeover")
    assert guard.exists()  # not ours to remove


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", "JSONDecodeError: Expecting value: line 1 column 1 (char 0)"),
        ("[1, 2]", "TypeError: list indices must be integers or slices, not str"),
        ('{"pid": 12, "host": "h"}', "KeyError: 'started'"),
        (
            '{"pid": "12", "host": "h", "started": "s"}',
            "TypeError: pid must be an int and host a str",
        ),
    ],
)
def test_an_unreadable_lock_is_refused(shapes, tmp_path, capsys, content, problem):
    out, lock = tmp_path / "m.pt", tmp_path / "m.pt.lock"
    lock.write_text(content)
    status, _, err = run(capsys, "train", shapes, "-o", out, *QUICK)
    assert status == 1
    assert err == (
        f"skfewshot train: error: {lock} is not a lock record that skfewshot "
        f"can read ({problem}); another run writing the same --output may "
        f"hold it (or be starting): if no such run is alive, delete {lock}\n"
    )
    assert lock.read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt.lock"]


def test_the_lock_names_the_run_while_it_runs_and_goes_with_it(
    shapes, tmp_path, capsys, monkeypatch
):
    out, lock = tmp_path / "m.pt", tmp_path / "m.pt.lock"
    seen = []

    def train(args):
        seen.append(json.loads(lock.read_text()))
        raise ValueError("a bad image")

    monkeypatch.setattr(skfewshot.cli, "_train", train)
    argv = ["train", str(shapes), "-o", str(out), *QUICK]
    status, _, err = run(capsys, *argv)
    assert (status, err) == (1, "skfewshot train: error: a bad image\n")
    [owner] = seen
    assert owner.pop("started")[:2] == "20"
    assert owner == {"pid": os.getpid(), "host": socket.gethostname(), "argv": argv}
    assert list(tmp_path.iterdir()) == []  # gone after an error


def test_a_lock_that_is_no_longer_ours_is_left_alone(
    shapes, tmp_path, capsys, monkeypatch
):
    # someone deleted the lock during the run and another run took it
    out, lock = tmp_path / "m.pt", tmp_path / "m.pt.lock"
    monkeypatch.setattr(
        skfewshot.cli, "_train", lambda args: _lock(lock, os.getpid() + 1)
    )
    status, _, err = run(capsys, "train", shapes, "-o", out, *QUICK)
    assert (status, err) == (0, "")
    assert json.loads(lock.read_text())["pid"] == os.getpid() + 1


def test_an_interrupted_run_drops_the_lock_and_keeps_its_checkpoint(
    shapes, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "m.pt"
    argv = ["train", shapes, "-o", out, *QUICK, "--epochs", "2"]
    with monkeypatch.context() as patch:
        _interrupt_at_epoch(patch, 2)
        status, _, err = run(capsys, *argv)
    assert status == 130, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt.ckpt"]
    status, _, err = run(capsys, *argv)
    assert status == 1 and "holds an interrupted run: continue it with --resume" in err
    status, _, err = run(capsys, *argv, "--resume")
    assert status == 0, err
    assert json.loads((tmp_path / "m.pt.json").read_text())["resumed_from_epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.json"]


def test_two_runs_started_at_once_one_proceeds(shapes, tmp_path, capsys, monkeypatch):
    out, lock = tmp_path / "m.pt", tmp_path / "m.pt.lock"
    start, other_done = threading.Barrier(2), threading.Event()
    trained, statuses = [], []

    def train(args):
        trained.append(args)
        # hold the lock until the other run has given up (no timing involved)
        assert other_done.wait(timeout=30)

    def one_run():
        start.wait()
        statuses.append(
            skfewshot.cli.main(["train", str(shapes), "-o", str(out), *QUICK])
        )
        other_done.set()

    monkeypatch.setattr(skfewshot.cli, "_train", train)
    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [0, 1] and len(trained) == 1
    # the loser read the winner's lock, or found it still empty (being written)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"delete {lock}\n" in err
    assert not lock.exists()


#: A process that holds the lock of argv[1] until its stdin closes.
HOLDER = """
import sys
from skfewshot.cli import _output_lock
with _output_lock(sys.argv[1], ["holder"]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_another_process_holds_the_lock_until_it_ends(shapes, tmp_path, capsys):
    out, lock = tmp_path / "m.pt", tmp_path / "m.pt.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        owner = json.loads(lock.read_text())
        assert owner["pid"] == holder.pid and owner["argv"] == ["holder"]
        status, _, err = run(capsys, "train", shapes, "-o", out, *QUICK)
        assert status == 1
        assert f"(pid {holder.pid} on {socket.gethostname()}, started " in err
        assert lock.exists()
    finally:
        holder.communicate(timeout=60)
    assert holder.returncode == 0
    assert not lock.exists()  # its run ended: its lock went with it


def test_a_record_path_that_is_a_folder_fails_before_training(shapes, tmp_path, capsys):
    out = tmp_path / "m.pt"
    (tmp_path / "m.pt.json").mkdir()
    status, _, err = run(capsys, "train", shapes, "-o", out, *QUICK)
    assert status == 1
    assert err == (
        f"skfewshot train: error: --output {out}: its record {out}.json would be "
        "written over a folder; move the folder or give another --output\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt.json"]


def test_a_lock_that_cannot_be_written_is_not_left_behind(
    shapes, tmp_path, capsys, monkeypatch
):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(skfewshot.cli.json, "dump", full_disk)
    status, _, err = run(capsys, "train", shapes, "-o", tmp_path / "m.pt", *QUICK)
    assert (status, err) == (
        1,
        f"skfewshot train: error: cannot write the lock {tmp_path / 'm.pt.lock'}: "
        "[Errno 28] No space left on device\n",
    )
    assert list(tmp_path.iterdir()) == []
