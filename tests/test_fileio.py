"""Atomic writes: the target holds the old file or the new one, never a part."""

import os
import stat

import pytest

from skfewshot._fileio import atomic_path


def _leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


def test_complete_write_replaces_target(tmp_path):
    target = tmp_path / "out.png"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.suffix == ".png"  # writers that pick a format by suffix agree
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the end
    assert target.read_text() == "new"
    assert _leftovers(tmp_path, "out.png") == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_keeps_old_file_and_removes_temp(tmp_path, error):
    target = tmp_path / "model.pt"
    target.write_bytes(b"good")
    with pytest.raises(error):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"trunc")
            raise error()
    assert target.read_bytes() == b"good"
    assert _leftovers(tmp_path, "model.pt") == []


def test_interrupted_first_write_leaves_nothing(tmp_path):
    target = tmp_path / "new.json"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_permissions_follow_umask_or_replaced_file(tmp_path):
    fresh = tmp_path / "fresh.txt"
    umask = os.umask(0o022)
    try:
        with atomic_path(fresh) as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    # mkstemp creates 0600 files; the result must look like an ordinary open()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    kept = tmp_path / "kept.txt"
    kept.write_text("x")
    kept.chmod(0o640)
    with atomic_path(kept) as tmp:
        tmp.write_text("y")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640


def test_a_symbolic_link_is_written_through(tmp_path):
    # os.replace used to put a file in the link's place: the file the link
    # points to kept the old content, and the link was gone
    release = tmp_path / "v1.skops"
    release.write_text("v1")
    latest = tmp_path / "latest.skops"
    latest.symlink_to(release.name)
    with atomic_path(latest) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".skops"
        tmp.write_text("v2")
    assert latest.is_symlink() and os.readlink(latest) == release.name
    assert release.read_text() == "v2"
    assert _leftovers(tmp_path, "v1.skops") == ["latest.skops"]
    # a dangling link: its target is created, as open(link, "w") would
    dangling = tmp_path / "next.skops"
    dangling.symlink_to(tmp_path / "sub" / "new.skops")
    (tmp_path / "sub").mkdir()
    with atomic_path(dangling) as tmp:
        assert tmp.parent == tmp_path / "sub"
        tmp.write_text("v3")
    assert dangling.is_symlink() and dangling.read_text() == "v3"


def test_a_name_near_the_length_limit_is_writable(tmp_path):
    # the temporary name added 15 characters and the suffix again to the
    # target's: a valid 246-byte name failed with "File name too long"
    target = tmp_path / ("a" * 240 + ".skops")
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".skops"
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert _leftovers(tmp_path, target.name) == []


def test_a_directory_a_missing_folder_or_a_read_only_file_is_refused_by_name(
    tmp_path, monkeypatch
):
    # the errors named the temporary file (".x.abc123.tmp"), and a file made
    # read-only to protect it was replaced: os.replace needs only its folder
    # to be writable. Nothing is written, and nothing is left behind.
    folder = tmp_path / "dir"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=r"is a directory, not a file: .*dir'"):
        with atomic_path(folder):
            raise AssertionError("the block ran")
    missing = tmp_path / "nope" / "x.skops"
    with pytest.raises(FileNotFoundError, match=r"its folder .*nope' does not exist"):
        with atomic_path(missing):
            raise AssertionError("the block ran")
    target = tmp_path / "model.skops"
    target.write_text("old")
    # as a user without write permission sees it (root may write anything)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode)
    )
    with pytest.raises(
        PermissionError, match=r"read-only: it is not replaced: .*model"
    ):
        with atomic_path(target):
            raise AssertionError("the block ran")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "model.skops"]


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root may write a read-only file, as open(path, 'w') lets it",
)
def test_a_read_only_file_is_not_replaced(tmp_path):
    target = tmp_path / "model.skops"
    target.write_text("old")
    target.chmod(stat.S_IRUSR)
    with pytest.raises(PermissionError, match="read-only"):
        with atomic_path(target):
            raise AssertionError("the block ran")
    assert target.read_text() == "old"
