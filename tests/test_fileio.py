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
