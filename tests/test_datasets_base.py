"""Tests for skfewshot.datasets._base: data home, download, bounded reads."""

import hashlib
import http.server
import os
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _datasets_testing import (
    BOMB_BYTES,
    STROKE,
    encode_png,
    fake_omniglot,
    tiny_run,
    zip_with_member,
)
from _memory_testing import peak_bytes

from skfewshot.datasets import (
    _base,
    _omniglot,
    clear_data_home,
    get_data_home,
    load_omniglot,
    load_omniglot_runs,
)

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml


def test_get_data_home_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SKFEWSHOT_DATA", raising=False)
    default = tmp_path / "home" / "skfewshot_data"
    assert get_data_home() == str(default) and default.is_dir()

    monkeypatch.setenv("SKFEWSHOT_DATA", str(tmp_path / "env"))
    assert get_data_home() == str(tmp_path / "env")
    assert get_data_home(tmp_path / "explicit") == str(tmp_path / "explicit")
    assert (tmp_path / "explicit").is_dir()

    clear_data_home(tmp_path / "explicit")
    assert not (tmp_path / "explicit").exists()


def test_empty_data_home_is_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("user data")
    monkeypatch.chdir(work)
    for call in (get_data_home, clear_data_home):
        for empty in ("", "  "):
            with pytest.raises(ValueError, match="data_home must be a folder, got"):
                call(empty)
    assert (work / "keep.txt").read_text() == "user data"


def test_clear_data_home_refuses_cwd_its_parents_and_home(tmp_path, monkeypatch):
    cwd, home = tmp_path / "a" / "b", tmp_path / "home"
    for folder in (cwd, home):
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("user data")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    for folder in (".", cwd, "..", tmp_path):
        with pytest.raises(ValueError, match="current working directory or a folder"):
            clear_data_home(folder)
    monkeypatch.setenv("SKFEWSHOT_DATA", ".")
    with pytest.raises(ValueError, match="refusing to delete"):
        clear_data_home()
    with pytest.raises(ValueError, match="it is your home folder"):
        clear_data_home("~")
    link = tmp_path / "link"
    link.symlink_to(home)
    with pytest.raises(ValueError, match="it is your home folder"):
        clear_data_home(link)
    assert (cwd / "keep.txt").read_text() == "user data"
    assert (home / "keep.txt").read_text() == "user data"
    # a root is refused by the check itself (never call rmtree on "/" in a test)
    with pytest.raises(ValueError, match="it is a filesystem root"):
        _base._refuse_to_delete(os.path.abspath(os.sep))
    # an ordinary data home is still deleted
    clear_data_home(tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_clear_data_home_refuses_a_folder_above_home(tmp_path, monkeypatch):
    home = tmp_path / "users" / "alice"
    (home / "thesis").mkdir(parents=True)
    (home / "thesis" / "chapter1.tex").write_text("user data")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("HOME", str(home))
    for folder in ("~/..", tmp_path / "users"):
        with pytest.raises(
            ValueError,
            match=f"refusing to delete {tmp_path / 'users'}: it is a folder above "
            f"your home folder \\({home}\\)",
        ):
            clear_data_home(folder)
    monkeypatch.setenv("SKFEWSHOT_DATA", str(tmp_path / "users"))
    with pytest.raises(ValueError, match="a folder above your home folder"):
        clear_data_home()
    assert (home / "thesis" / "chapter1.tex").read_text() == "user data"


def test_clear_data_home_refuses_a_symbolic_link_naming_it(tmp_path):
    target = tmp_path / "bigdisk" / "skfewshot_data"
    (target / "omniglot").mkdir(parents=True)
    link = tmp_path / "data"
    link.symlink_to(target)
    with pytest.raises(
        ValueError,
        match=f"refusing to delete {link}: it is a symbolic link \\(to {target}\\)",
    ):
        clear_data_home(link)
    assert (target / "omniglot").is_dir() and link.is_symlink()
    clear_data_home(target)  # the folder it points to is deleted
    assert not target.exists()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes``: path -> (bytes, announced length or None)."""

    def do_GET(self):
        self.server.hits.append(self.path)
        if self.path not in self.server.routes:
            self.send_error(404, "Not Found")
            return
        body, announced = self.server.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(announced or len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # never send the request to a proxy
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.hits = {}, []
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/omniglot"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def fake_remote(tmp_path, server, monkeypatch):
    """The fake zip served as images_background_small2.zip with a known md5."""
    body = fake_omniglot(tmp_path / "src.zip", "images_background_small2").read_bytes()
    monkeypatch.setattr(_omniglot, "_OMNIGLOT_URL", server.url)
    monkeypatch.setitem(
        _omniglot._OMNIGLOT_MD5,
        "images_background_small2",
        hashlib.md5(body).hexdigest(),
    )
    server.routes["/omniglot/images_background_small2.zip"] = (body, None)
    return server, body


def _files(folder):
    return sorted(p.name for p in Path(folder).rglob("*") if p.is_file())


def test_download_success_then_cached(tmp_path, fake_remote):
    server, body = fake_remote
    home = tmp_path / "home"
    bunch = load_omniglot(
        "images_background_small2", data_home=home, image_size=2, download=True
    )
    assert bunch.data.shape == (8, 1, 2, 2)
    assert server.hits == ["/omniglot/images_background_small2.zip"]
    assert (home / "omniglot" / "images_background_small2.zip").read_bytes() == body
    assert _files(home) == ["images_background_small2.zip"]  # no temp file left

    server.routes.clear()
    again = load_omniglot(
        "images_background_small2", data_home=home, image_size=2, download=True
    )
    np.testing.assert_array_equal(again.data, bunch.data)
    assert len(server.hits) == 1  # read from the data home, not fetched again


def test_download_into_path_folder(tmp_path, fake_remote):
    folder = tmp_path / "mine"
    folder.mkdir()
    load_omniglot("images_background_small2", path=folder, download=True)
    assert _files(folder) == ["images_background_small2.zip"]


def test_download_checksum_mismatch_is_not_kept(tmp_path, fake_remote, monkeypatch):
    _, body = fake_remote
    monkeypatch.setitem(_omniglot._OMNIGLOT_MD5, "images_background_small2", "0" * 32)
    home = tmp_path / "home"
    actual = hashlib.md5(body).hexdigest()
    with pytest.raises(OSError, match=f"expected md5 0{{32}}, got {actual}"):
        load_omniglot("images_background_small2", data_home=home, download=True)
    assert _files(home) == []


def test_download_truncated_transfer_is_not_kept(tmp_path, fake_remote):
    server, body = fake_remote
    route = "/omniglot/images_background_small2.zip"
    server.routes[route] = (body[:100], len(body))  # announces more than it sends
    home = tmp_path / "home"
    with pytest.raises(OSError, match=f"truncated: got 100 bytes.*{len(body)}"):
        load_omniglot("images_background_small2", data_home=home, download=True)
    assert _files(home) == []


def test_download_truncated_zip_without_known_md5(tmp_path, fake_remote, monkeypatch):
    # the published md5 unknown: the zip must at least open
    server, body = fake_remote
    monkeypatch.setitem(_omniglot._OMNIGLOT_MD5, "images_background_small2", None)
    server.routes["/omniglot/images_background_small2.zip"] = (body[:-30], None)
    home = tmp_path / "home"
    with pytest.raises(OSError, match="not a readable zip archive"):
        load_omniglot("images_background_small2", data_home=home, download=True)
    assert _files(home) == []


def test_download_404(tmp_path, fake_remote):
    server, _ = fake_remote
    server.routes.clear()
    home = tmp_path / "home"
    with pytest.raises(OSError, match="images_background_small2.zip: HTTP 404"):
        load_omniglot("images_background_small2", data_home=home, download=True)
    assert _files(home) == []


def test_zip_member_over_the_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(_base, "_MAX_FILE_BYTES", 1000)
    name = "images_background_small1/Greek/character01/01_01.png"
    path = zip_with_member(tmp_path / "images_background_small1.zip", name, bytes(2000))
    with pytest.raises(
        ValueError, match=f"member {name} is larger \\(2000 bytes\\) than the 1000"
    ):
        load_omniglot("images_background_small1", path=path)


def _set_declared_size(path, size):
    """Make the central directory of a one-member zip declare ``size`` bytes."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")
    data[at + 24 : at + 28] = struct.pack("<I", size)
    path.write_bytes(bytes(data))


def test_zip_member_larger_than_declared_is_read_with_a_bound(tmp_path):
    # declares 500 bytes but inflates to 64 MiB: reading stops at 500 bytes
    name = "run01/training/class01.png"
    path = zip_with_member(tmp_path / "runs.zip", name, bytes(BOMB_BYTES))
    _set_declared_size(path, 500)
    with zipfile.ZipFile(path) as archive:

        def call():
            with pytest.raises(OSError, match=f"member {name} is corrupt"):
                _base._read_member(archive, name, path)

        assert peak_bytes(call) < 4 << 20


def test_runs_folder_file_over_the_size_cap(tmp_path, monkeypatch):
    tiny_run(tmp_path, ["run01/test/item01.png run01/training/class02.png"])
    (tmp_path / "run01" / "test" / "item01.png").write_bytes(bytes(2000))
    monkeypatch.setattr(_base, "_MAX_FILE_BYTES", 1000)
    with pytest.raises(ValueError, match="item01.png is larger \\(2000 bytes\\)"):
        load_omniglot_runs(tmp_path)


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_corrupt_zip_member_names_zip_and_member(tmp_path, compression):
    name = "images_background_small1/Greek/character01/01_01.png"
    blob = encode_png(np.tile(STROKE, (8, 8)), depth=1)
    path = zip_with_member(
        tmp_path / "images_background_small1.zip", name, blob, compression
    )
    data = bytearray(path.read_bytes())
    start = data.index(name.encode()) + len(name)  # the member's data follows
    data[start + 5 : start + 25] = bytes(range(20, 40))
    path.write_bytes(bytes(data))
    with pytest.raises(
        OSError, match=f"images_background_small1.zip: member {name} is corrupt"
    ):
        load_omniglot("images_background_small1", path=path)
