"""Tests for skfewshot.datasets: PNG decoding, loaders, download, augmentation."""

import hashlib
import http.server
import io
import json
import os
import struct
import threading
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import build_omniglot_runs
from sklearn.datasets import load_digits

from skfewshot.datasets import (
    _base,
    _omniglot,
    augment_rotations,
    clear_data_home,
    get_data_home,
    load_banking77,
    load_digits_images,
    load_omniglot,
    load_omniglot_runs,
    omniglot_shared_alphabets,
)
from skfewshot.datasets._images import area_resize
from skfewshot.datasets._png import decode_png

SMALL = {
    # subset: (alphabets, characters, images)
    "images_background_small1": (5, 136, 2720),
    "images_background_small2": (5, 156, 3120),
}


# --------------------------------------------------------------------------
# A tiny PNG encoder, written independently of the decoder under test
# --------------------------------------------------------------------------


def _chunk(kind, payload):
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter_row(kind, line, prev, bpp):
    out = []
    for i, x in enumerate(line):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
        out.append((x - pred) % 256)
    return bytes([kind] + out)


def encode_png(samples, *, color_type=0, depth=8, filters=(0,), palette=None):
    """PNG bytes of integer ``samples`` (h, w) or (h, w, channels).

    Row r uses filter ``filters[r % len(filters)]``.
    """
    samples = np.asarray(samples)
    if samples.ndim == 2:
        samples = samples[:, :, None]
    height, width, channels = samples.shape
    rows = []
    for row in samples.reshape(height, width * channels):
        if depth == 16:
            rows.append(row.astype(">u2").tobytes())
        elif depth == 8:
            rows.append(row.astype(np.uint8).tobytes())
        else:
            bits = [(int(v) >> (depth - 1 - k)) & 1 for v in row for k in range(depth)]
            rows.append(np.packbits(np.array(bits, dtype=np.uint8)).tobytes())
    bpp = max(1, channels * depth // 8)
    prev, raw = bytes(len(rows[0])), b""
    for r, line in enumerate(rows):
        raw += _filter_row(filters[r % len(filters)], line, prev, bpp)
        prev = line
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    body = _chunk(b"IHDR", header)
    if palette is not None:
        body += _chunk(b"PLTE", np.asarray(palette, dtype=np.uint8).tobytes())
    body += _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


ALL_FILTERS = (0, 1, 2, 3, 4)


# --------------------------------------------------------------------------
# PNG decoder
# --------------------------------------------------------------------------


@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), ALL_FILTERS])
def test_decode_png_grey8_every_filter(filters):
    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 256, size=(7, 9))
    image = decode_png(encode_png(pixels, filters=filters))
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, (pixels / 255).astype(np.float32))


@pytest.mark.parametrize("depth", [1, 2, 4, 16])
def test_decode_png_grey_bit_depths(depth):
    # width 11 leaves padding bits at the end of each packed row
    rng = np.random.RandomState(depth)
    pixels = rng.randint(0, 2**depth, size=(6, 11))
    image = decode_png(encode_png(pixels, depth=depth, filters=ALL_FILTERS))
    np.testing.assert_allclose(image, pixels / (2**depth - 1), rtol=0, atol=1e-7)


def test_decode_png_rgb_is_luminance_and_alpha_is_over_white():
    rng = np.random.RandomState(1)
    grey = rng.randint(0, 256, size=(5, 6))
    rgb = np.stack([grey, grey, grey], axis=2)
    rgb[0, 0] = (255, 0, 0)  # pure red: BT.601 luma 0.299
    image = decode_png(encode_png(rgb, color_type=2, filters=ALL_FILTERS))
    expected = grey / 255
    expected[0, 0] = 0.299
    np.testing.assert_allclose(image, expected, atol=1e-6)

    # grey + alpha: transparent -> white, opaque -> value, half -> halfway
    ga = np.array([[[0, 0], [0, 255], [100, 0]], [[0, 51], [200, 255], [50, 255]]])
    image = decode_png(encode_png(ga, color_type=4, filters=(4, 3)))
    expected = [[1.0, 0.0, 1.0], [0.8, 200 / 255, 50 / 255]]
    np.testing.assert_allclose(image, expected, atol=1e-6)

    rgba = np.array([[[10, 10, 10, 65535], [0, 0, 0, 0]]])
    image = decode_png(encode_png(rgba, color_type=6, depth=16, filters=(1,)))
    np.testing.assert_allclose(image, [[10 / 65535, 1.0]], atol=1e-6)


def test_decode_png_palette():
    palette = [(0, 0, 0), (255, 255, 255), (51, 51, 51)]
    index = np.array([[0, 1, 2], [2, 1, 0]])
    image = decode_png(encode_png(index, color_type=3, depth=2, palette=palette))
    np.testing.assert_allclose(image, [[0, 1, 0.2], [0.2, 1, 0]], atol=1e-6)


def test_decode_png_errors():
    good = encode_png(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not a PNG file"):
        decode_png(b"GIF89a" + good[6:])
    corrupt = bytearray(good)
    corrupt[good.index(b"IDAT") + 6] ^= 0xFF
    with pytest.raises(ValueError, match="bad CRC in b'IDAT'"):
        decode_png(bytes(corrupt), name="x.png")
    with pytest.raises(ValueError, match="truncated PNG"):
        decode_png(good[:-20])
    interlaced = bytearray(good)
    interlaced[28] = 1  # IHDR interlace byte, then fix its CRC
    interlaced[29:33] = struct.pack(">I", zlib.crc32(bytes(interlaced[12:29])))
    with pytest.raises(ValueError, match="interlaced"):
        decode_png(bytes(interlaced))
    with pytest.raises(ValueError, match="colour type 2 with bit depth 4"):
        decode_png(encode_png(np.zeros((2, 2, 3)), color_type=2, depth=4))


def test_decode_png_matches_pillow_encoder():
    # Pillow picks its own (adaptive) row filters: an independent encoder
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.RandomState(2)
    pixels = (rng.randint(0, 40, size=(20, 30)).cumsum(axis=1) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    np.testing.assert_array_equal(decode_png(buf.getvalue()) * 255, pixels)


@pytest.mark.shared_data
def test_decode_png_real_omniglot_matches_pillow(shared_data):
    Image = pytest.importorskip("PIL.Image")
    zip_path = shared_data / "omniglot" / "images_background_small1.zip"
    with zipfile.ZipFile(zip_path) as archive:
        names = [n for n in archive.namelist() if n.endswith(".png")][::400]
        for name in names:
            blob = archive.read(name)
            expected = np.asarray(Image.open(io.BytesIO(blob)).convert("L")) / 255
            np.testing.assert_array_equal(decode_png(blob), expected)


# --------------------------------------------------------------------------
# area resize
# --------------------------------------------------------------------------


def test_area_resize_hand_computed():
    # 3 -> 2: output pixel 0 covers [0, 1.5): weights 2/3, 1/3, 0
    image = np.array([[3.0, 6.0, 9.0]] * 3)
    out = area_resize(image[None], 2)[0]
    np.testing.assert_allclose(out, [[4.0, 8.0], [4.0, 8.0]], rtol=1e-6, atol=1e-6)
    # integer ratio: the block mean
    image = np.arange(16.0).reshape(4, 4)
    out = area_resize(image[None], 2)[0]
    np.testing.assert_allclose(out, [[2.5, 4.5], [10.5, 12.5]], rtol=1e-6)


def test_area_resize_105_to_28_keeps_mean_ink():
    rng = np.random.RandomState(0)
    images = (rng.rand(3, 105, 105) > 0.9).astype(float)
    out = area_resize(images, 28)
    assert out.shape == (3, 28, 28) and out.dtype == np.float32
    # preserved up to float32 rounding (out is float32, images float64)
    np.testing.assert_allclose(
        out.mean(axis=(1, 2)), images.mean(axis=(1, 2)), rtol=1e-5, atol=1e-7
    )
    assert out.min() >= 0 and out.max() <= 1


# --------------------------------------------------------------------------
# load_digits_images
# --------------------------------------------------------------------------


def test_load_digits_images():
    bunch = load_digits_images()
    reference = load_digits()
    assert bunch.data.shape == (1797, 1, 8, 8) and bunch.data.dtype == np.float32
    np.testing.assert_allclose(bunch.data[:, 0] * 16, reference.images)
    np.testing.assert_array_equal(bunch.target, reference.target)
    np.testing.assert_array_equal(bunch.target_names, np.arange(10))
    assert np.shares_memory(bunch.images, bunch.data)
    assert "digits" in bunch.DESCR.lower()
    X, y = load_digits_images(return_X_y=True)
    np.testing.assert_array_equal(X, bunch.data)
    np.testing.assert_array_equal(y, bunch.target)


# --------------------------------------------------------------------------
# data home
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# load_omniglot on a hand-made zip
# --------------------------------------------------------------------------

# 4x4 one-bit drawings: 1 = white background, 0 = black stroke
STROKE = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]])


def _fake_omniglot(
    path, subset="images_background_small1", *, rename=None, flip_greek=False
):
    """A zip in the published layout; alphabets written out of order.

    ``rename`` maps an alphabet to the folder name it is written under;
    ``flip_greek`` alters one pixel of every Greek drawing.
    """
    rename = rename or {}
    layout = [("Latin", "character02", 3), ("Greek", "character01", 7)]
    layout += [("Latin", "character01", 0), ("Greek", "character02", 1)]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{subset}/", b"")
        for alphabet, character, flips in layout:
            for drawer in (2, 1):
                pixels = STROKE.copy()
                pixels.flat[flips] ^= drawer == 2  # drawer 2 differs by one pixel
                pixels.flat[15] ^= flip_greek and alphabet == "Greek"
                folder = rename.get(alphabet, alphabet)
                name = f"{subset}/{folder}/{character}/0{flips}01_0{drawer}.png"
                archive.writestr(name, encode_png(pixels, depth=1, filters=(0, 2)))
        archive.writestr("__MACOSX/junk.png", b"not a png")
    return Path(path)


def test_load_omniglot_fake_zip_labels_and_pixels(tmp_path):
    path = _fake_omniglot(tmp_path / "images_background_small1.zip")
    bunch = load_omniglot("images_background_small1", path=path, image_size=None)
    assert bunch.data.shape == (8, 1, 4, 4) and bunch.data.dtype == np.float32
    np.testing.assert_array_equal(
        bunch.target_names,
        [
            "Greek/character01",
            "Greek/character02",
            "Latin/character01",
            "Latin/character02",
        ],
    )
    np.testing.assert_array_equal(bunch.group_names, ["Greek", "Latin"])
    np.testing.assert_array_equal(bunch.target, [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(bunch.groups, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(bunch.drawers, [1, 2] * 4)
    assert (
        bunch.filenames[0] == "images_background_small1/Greek/character01/0701_01.png"
    )
    # strokes = 1: the drawing inverted
    np.testing.assert_array_equal(bunch.data[0, 0], 1 - STROKE)
    flipped = 1 - STROKE
    flipped.flat[7] ^= 1
    np.testing.assert_array_equal(bunch.images[1], flipped)
    assert np.shares_memory(bunch.images, bunch.data)

    small = load_omniglot("images_background_small1", path=path, image_size=2)
    np.testing.assert_allclose(
        small.data[0, 0], [[1.0, 0.0], [0.0, 0.25]], rtol=0, atol=1e-6
    )
    X, y = load_omniglot(
        "images_background_small1", path=tmp_path, image_size=2, return_X_y=True
    )
    np.testing.assert_array_equal(X, small.data)
    np.testing.assert_array_equal(y, small.target)


def test_load_omniglot_data_home_from_environment(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "omniglot").mkdir(parents=True)
    _fake_omniglot(home / "omniglot" / "images_evaluation.zip", "images_evaluation")
    monkeypatch.setenv("SKFEWSHOT_DATA", str(home))
    bunch = load_omniglot("images_evaluation", image_size=3)
    assert bunch.data.shape == (8, 1, 3, 3)


def test_load_omniglot_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_omniglot("images_background", data_home=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "omniglot" / "images_background.zip") in message
    assert "download=True" in message and "path=" in message
    with pytest.raises(FileNotFoundError, match="images_evaluation.zip"):
        load_omniglot("images_evaluation", path=tmp_path)
    with pytest.raises(ValueError, match="subset must be one of .*'omniglot'"):
        load_omniglot("omniglot", path=tmp_path)
    with pytest.raises(ValueError, match="image_size must be >= 1 or None, got 0"):
        load_omniglot("images_background", path=tmp_path, image_size=0)
    with pytest.raises(TypeError, match="image_size must be an int or None"):
        load_omniglot("images_background", path=tmp_path, image_size=2.5)

    not_zip = tmp_path / "images_background.zip"
    not_zip.write_bytes(b"definitely not a zip")
    with pytest.raises(OSError, match="not a readable zip archive"):
        load_omniglot("images_background", path=tmp_path)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("README.txt", "nothing here")
    with pytest.raises(ValueError, match="no <Alphabet>/<character>/<image>.png"):
        load_omniglot("images_background", path=empty)


# --------------------------------------------------------------------------
# download=True against a local HTTP server
# --------------------------------------------------------------------------


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
    body = _fake_omniglot(tmp_path / "src.zip", "images_background_small2").read_bytes()
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


# --------------------------------------------------------------------------
# load_omniglot on the real zips
# --------------------------------------------------------------------------

_CACHE = {}


def _real(shared_data, subset):
    if subset not in _CACHE:
        _CACHE[subset] = load_omniglot(subset, path=shared_data / "omniglot")
    return _CACHE[subset]


@pytest.mark.shared_data
@pytest.mark.parametrize("subset", sorted(SMALL))
def test_load_omniglot_real_small_subsets(shared_data, subset):
    n_alphabets, n_characters, n_images = SMALL[subset]
    bunch = _real(shared_data, subset)
    assert bunch.data.shape == (n_images, 1, 28, 28)
    assert bunch.data.dtype == np.float32
    assert bunch.data.min() == 0.0 and bunch.data.max() == 1.0
    # strokes = 1 on a 0 background: little ink per image, none in the corners
    assert 0.02 < bunch.data.mean() < 0.2
    assert bunch.data[:, 0, 0, 0].max() == 0.0
    assert len(bunch.group_names) == n_alphabets
    assert len(bunch.target_names) == n_characters
    np.testing.assert_array_equal(np.bincount(bunch.target), np.full(n_characters, 20))
    assert list(bunch.target_names) == sorted(bunch.target_names)
    assert np.all(np.diff(bunch.target) >= 0)
    # every character's alphabet is its group
    alphabets = [name.split("/")[0] for name in bunch.target_names[bunch.target]]
    np.testing.assert_array_equal(bunch.group_names[bunch.groups], alphabets)
    assert set(bunch.drawers) == set(range(1, 21))


@pytest.mark.shared_data
def test_load_omniglot_real_zip_path_and_folder_agree(shared_data):
    folder = _real(shared_data, "images_background_small1")
    zip_path = shared_data / "omniglot" / "images_background_small1.zip"
    direct = load_omniglot("images_background_small1", path=zip_path, image_size=14)
    # 28 -> 14 is an integer ratio: area averaging composes exactly
    np.testing.assert_allclose(
        direct.data[:, 0], area_resize(folder.images, 14), atol=1e-6
    )


# --------------------------------------------------------------------------
# augment_rotations
# --------------------------------------------------------------------------


def test_augment_rotations_exact():
    X = np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[0, 0, 1], [0, 0, 0], [0, 0, 0]]])
    X_rot, y_rot, g_rot = augment_rotations(
        X[:, None], np.array([2, 0]), groups=["a", "b"]
    )
    assert X_rot.shape == (8, 1, 3, 3)
    np.testing.assert_array_equal(X_rot[:2, 0], X)
    # 90 degrees counter-clockwise
    np.testing.assert_array_equal(X_rot[2, 0], [[3, 6, 9], [2, 5, 8], [1, 4, 7]])
    np.testing.assert_array_equal(X_rot[4, 0], [[9, 8, 7], [6, 5, 4], [3, 2, 1]])
    np.testing.assert_array_equal(X_rot[6, 0], [[7, 4, 1], [8, 5, 2], [9, 6, 3]])
    np.testing.assert_array_equal(X_rot[3, 0], [[1, 0, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(y_rot, [2, 0, 5, 3, 8, 6, 11, 9])
    np.testing.assert_array_equal(g_rot, ["a", "b"] * 4)


def test_augment_rotations_errors():
    X = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match="square images, got 3x4"):
        augment_rotations(np.zeros((2, 3, 4)), [0, 1])
    with pytest.raises(ValueError, match=r"got shape \(2, 9\)"):
        augment_rotations(np.zeros((2, 9)), [0, 1])
    with pytest.raises(ValueError, match="one label per image"):
        augment_rotations(X, [0, 1, 2])
    with pytest.raises(TypeError, match="integer class labels, got dtype <U1"):
        augment_rotations(X, ["a", "b"])
    with pytest.raises(ValueError, match="non-negative, got the label -1"):
        augment_rotations(X, [0, -1])
    with pytest.raises(ValueError, match="groups must have one entry per image"):
        augment_rotations(X, [0, 1], groups=[0])


# --------------------------------------------------------------------------
# load_omniglot_runs on runs built from small2
# --------------------------------------------------------------------------


def _zip_folder(folder, zip_path, prefix=""):
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return zip_path


@pytest.mark.shared_data
def test_load_omniglot_runs_folder_and_zip(shared_data, tmp_path):
    runs_dir = tmp_path / "all_runs"
    expected = build_omniglot_runs(shared_data, runs_dir)
    omniglot = _real(shared_data, "images_background_small2")
    row = {name: i for i, name in enumerate(omniglot.filenames)}

    forms = [
        runs_dir,  # the parent of runNN
        tmp_path,  # one top folder above the runs
        _zip_folder(runs_dir, tmp_path / "flat.zip"),
        _zip_folder(runs_dir, tmp_path / "nested.zip", prefix="all_runs/"),
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


def _tiny_run(root, lines):
    run = root / "run01"
    (run / "training").mkdir(parents=True)
    (run / "test").mkdir()
    blob = encode_png(STROKE, depth=1)
    for name in ("training/class01.png", "training/class02.png", "test/item01.png"):
        (run / name).write_bytes(blob)
    (run / "class_labels.txt").write_text("\n".join(lines) + "\n")


def test_load_omniglot_runs_tiny_and_image_size(tmp_path):
    _tiny_run(tmp_path, ["run01/test/item01.png run01/training/class02.png"])
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
    _tiny_run(tmp_path, lines)
    with pytest.raises(ValueError, match=match):
        load_omniglot_runs(tmp_path)


def test_load_omniglot_runs_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a folder nor a zip"):
        load_omniglot_runs(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no runNN/class_labels.txt"):
        load_omniglot_runs(tmp_path)
    (tmp_path / "runs.zip").write_bytes(b"not a zip")
    with pytest.raises(OSError, match="runs.zip is not a readable zip archive"):
        load_omniglot_runs(tmp_path / "runs.zip")


# --------------------------------------------------------------------------
# load_banking77
# --------------------------------------------------------------------------

CSV = (
    "text,category\n"
    '"Hello, where is my card?",card_arrival\n'
    '"He said ""top up"", then left",top_up_failed\n'
    "Why the fee?,atm_fee\n"
    "\n"
    "Card still missing,card_arrival\n"
)


def test_load_banking77_small_csv_exact(tmp_path):
    (tmp_path / "train.csv").write_text(CSV)
    bunch = load_banking77(tmp_path)
    assert bunch.data == [
        "Hello, where is my card?",
        'He said "top up", then left',
        "Why the fee?",
        "Card still missing",
    ]
    np.testing.assert_array_equal(
        bunch.target_names, ["atm_fee", "card_arrival", "top_up_failed"]
    )
    np.testing.assert_array_equal(bunch.target, [1, 2, 0, 1])
    assert bunch.filename == str(tmp_path / "train.csv")

    # categories.json beside the CSV sets the order of target_names
    names = ["top_up_failed", "card_arrival", "atm_fee", "unused"]
    (tmp_path / "categories.json").write_text(json.dumps(names))
    texts, target = load_banking77(tmp_path / "train.csv", return_X_y=True)
    assert len(texts) == 4
    np.testing.assert_array_equal(target, [1, 0, 2, 1])
    assert list(load_banking77(tmp_path).target_names) == names


def test_load_banking77_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.csv"):
        load_banking77(tmp_path, subset="test")
    with pytest.raises(ValueError, match="subset must be 'train' or 'test'"):
        load_banking77(tmp_path, subset="dev")
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nhi,x\n")
    with pytest.raises(ValueError, match="expected the header 'text,category'"):
        load_banking77(bad)
    bad.write_text("text,category\nhi,x\nhello, there,y\n")
    with pytest.raises(ValueError, match="line 3: expected 2 fields"):
        load_banking77(bad)
    bad.write_text("text,category\n")
    with pytest.raises(ValueError, match="no rows"):
        load_banking77(bad)
    bad.write_text(CSV)
    (tmp_path / "categories.json").write_text(json.dumps(["card_arrival"]))
    with pytest.raises(
        ValueError, match="missing from .*\\['atm_fee', 'top_up_failed'\\]"
    ):
        load_banking77(bad)


@pytest.mark.shared_data
def test_load_banking77_real(shared_data):
    folder = shared_data / "banking77"
    bunch = load_banking77(folder)
    assert len(bunch.data) == 10003 and bunch.target.shape == (10003,)
    assert len(bunch.target_names) == 77
    assert len(np.unique(bunch.target)) == 77
    categories = json.loads((folder / "categories.json").read_text())
    assert list(bunch.target_names) == categories
    assert bunch.data[0] == "I am still waiting on my card?"
    assert bunch.target_names[bunch.target[0]] == "card_arrival"
    assert all(isinstance(text, str) and text for text in bunch.data)


def test_public_names_documented():
    import skfewshot.datasets as datasets

    for name in datasets.__all__:
        doc = getattr(datasets, name).__doc__
        assert "Examples\n    --------" in doc, name


# --------------------------------------------------------------------------
# data home: never delete more than data
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# decompression bombs and oversized files
# --------------------------------------------------------------------------

BOMB_BYTES = 64 << 20  # what the bomb's image data inflates to


@pytest.fixture(scope="module")
def bomb_png():
    """A valid 105x105 one-bit PNG header whose data inflates to 64 MiB."""
    row_bytes = (105 + 7) // 8
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(bytes(105 * (row_bytes + 1)))]
    block = bytes(1 << 20)
    parts += [compressor.compress(block) for _ in range(BOMB_BYTES >> 20)]
    idat = b"".join(parts) + compressor.flush()
    header = struct.pack(">IIBBBBB", 105, 105, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _peak_bytes(call):
    tracemalloc.start()
    try:
        call()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def _bomb_omniglot(tmp_path, bomb):
    path = _fake_omniglot(tmp_path / "images_background_small1.zip")
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images_background_small1/Latin/character03/bomb_01.png", bomb)
    assert path.stat().st_size < 200_000
    return lambda: load_omniglot("images_background_small1", path=path)


def _bomb_runs(tmp_path, bomb):
    _tiny_run(tmp_path, ["run01/test/item01.png run01/training/class02.png"])
    (tmp_path / "run01" / "training" / "class02.png").write_bytes(bomb)
    return lambda: load_omniglot_runs(tmp_path)


def _bomb_runs_zip(tmp_path, bomb):
    folder = tmp_path / "runs"
    _bomb_runs(folder, bomb)
    path = _zip_folder(folder, tmp_path / "runs.zip")
    return lambda: load_omniglot_runs(path)


@pytest.mark.parametrize(
    "build, member",
    [
        (_bomb_omniglot, "Latin/character03/bomb_01.png"),
        (_bomb_runs, "run01/training/class02.png"),
        (_bomb_runs_zip, "run01/training/class02.png"),
    ],
)
def test_png_bomb_is_refused_with_bounded_memory(tmp_path, bomb_png, build, member):
    load = build(tmp_path, bomb_png)

    def call():
        with pytest.raises(
            ValueError,
            match=f"{member}: PNG image data inflates to more than the 1575 bytes",
        ):
            load()

    assert _peak_bytes(call) < 4 << 20  # the bomb inflates to 64 MiB


def test_png_header_bounds(tmp_path):
    def png(width, height):
        header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(b""))
            + _chunk(b"IEND", b"")
        )

    for width, height in [(0, 0), (0, 5), (5, 0)]:
        with pytest.raises(ValueError, match=f"x.png: PNG of {width}x{height} pixels"):
            decode_png(png(width, height), name="x.png")
    with pytest.raises(ValueError, match="4097x4096 pixels, more than the 16777216"):
        decode_png(png(4097, 4096), name="x.png")
    short_header = _chunk(b"IHDR", b"\x00" * 12) + _chunk(b"IEND", b"")
    with pytest.raises(ValueError, match="x.png: corrupt PNG \\(IHDR chunk of 12"):
        decode_png(b"\x89PNG\r\n\x1a\n" + short_header, name="x.png")
    # a 0x0 drawing inside a runs folder names its file
    _tiny_run(tmp_path, ["run01/test/item01.png run01/training/class02.png"])
    (tmp_path / "run01" / "test" / "item01.png").write_bytes(png(0, 0))
    with pytest.raises(ValueError, match="item01.png: PNG of 0x0 pixels"):
        load_omniglot_runs(tmp_path)


def test_palette_png_with_long_transparency_decodes():
    palette = [(0, 0, 0), (255, 255, 255)]
    good = encode_png(np.array([[0, 1]]), color_type=3, depth=1, palette=palette)
    at = good.index(b"IDAT") - 4
    trns = _chunk(b"tRNS", bytes([255, 255, 0, 0]))  # 4 entries for 2 colours
    image = decode_png(good[:at] + trns + good[at:])
    np.testing.assert_array_equal(image, [[0.0, 1.0]])


def _zip_with_member(path, name, data, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr(name, data)
    return path


def test_zip_member_over_the_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(_base, "_MAX_FILE_BYTES", 1000)
    name = "images_background_small1/Greek/character01/01_01.png"
    path = _zip_with_member(
        tmp_path / "images_background_small1.zip", name, bytes(2000)
    )
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
    path = _zip_with_member(tmp_path / "runs.zip", name, bytes(BOMB_BYTES))
    _set_declared_size(path, 500)
    with zipfile.ZipFile(path) as archive:

        def call():
            with pytest.raises(OSError, match=f"member {name} is corrupt"):
                _base._read_member(archive, name, path)

        assert _peak_bytes(call) < 4 << 20


def test_runs_folder_file_over_the_size_cap(tmp_path, monkeypatch):
    _tiny_run(tmp_path, ["run01/test/item01.png run01/training/class02.png"])
    (tmp_path / "run01" / "test" / "item01.png").write_bytes(bytes(2000))
    monkeypatch.setattr(_base, "_MAX_FILE_BYTES", 1000)
    with pytest.raises(ValueError, match="item01.png is larger \\(2000 bytes\\)"):
        load_omniglot_runs(tmp_path)


# --------------------------------------------------------------------------
# corrupt files: one documented error naming the file
# --------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_corrupt_zip_member_names_zip_and_member(tmp_path, compression):
    name = "images_background_small1/Greek/character01/01_01.png"
    blob = encode_png(np.tile(STROKE, (8, 8)), depth=1)
    path = _zip_with_member(
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


def test_runs_class_labels_not_utf8(tmp_path):
    _tiny_run(tmp_path, ["run01/test/item01.png run01/training/class02.png"])
    (tmp_path / "run01" / "class_labels.txt").write_bytes(b"run01/test/\xe9.png x\n")
    with pytest.raises(ValueError, match="class_labels.txt is not UTF-8"):
        load_omniglot_runs(tmp_path)


def test_load_banking77_csv_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,category\nhi,x\n" + "a" * 200_000 + ",y\n")
    with pytest.raises(
        ValueError, match="bad.csv, line 3: not a readable CSV row.*field limit"
    ):
        load_banking77(bad)
    bad.write_bytes("text,category\ncafé au lait,x\n".encode("latin-1"))
    with pytest.raises(ValueError, match="bad.csv is not UTF-8 text"):
        load_banking77(bad)


def test_load_banking77_accepts_a_byte_order_mark(tmp_path):
    (tmp_path / "train.csv").write_bytes(CSV.encode("utf-8-sig"))
    (tmp_path / "categories.json").write_bytes(
        json.dumps(["top_up_failed", "card_arrival", "atm_fee"]).encode("utf-8-sig")
    )
    bunch = load_banking77(tmp_path)
    assert bunch.data[0] == "Hello, where is my card?"
    np.testing.assert_array_equal(bunch.target, [1, 0, 2, 1])


@pytest.mark.parametrize(
    "content, match",
    [
        (b'["card_arrival",', "categories.json is not a UTF-8 JSON file"),
        (b'["caf\xe9"]', "categories.json is not a UTF-8 JSON file"),
        (b'[1, {"a": 2}]', "categories.json must be a JSON list of distinct"),
    ],
)
def test_load_banking77_broken_categories_json(tmp_path, content, match):
    (tmp_path / "train.csv").write_text(CSV)
    (tmp_path / "categories.json").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_banking77(tmp_path)


# --------------------------------------------------------------------------
# load_omniglot_runs: every run, once
# --------------------------------------------------------------------------

GOOD_LINE = ["run01/test/item01.png run01/training/class02.png"]


def test_load_omniglot_runs_run_without_labels_is_an_error(tmp_path):
    _tiny_run(tmp_path, GOOD_LINE)
    _tiny_run(tmp_path / "more", GOOD_LINE)
    (tmp_path / "more" / "run01").rename(tmp_path / "run02")
    (tmp_path / "run02" / "class_labels.txt").unlink()
    with pytest.raises(
        ValueError, match="run folder\\(s\\) \\['run02'\\] have no class_labels.txt"
    ):
        load_omniglot_runs(tmp_path)


def test_load_omniglot_runs_run_found_twice_is_an_error(tmp_path):
    _tiny_run(tmp_path / "copy1", GOOD_LINE)
    _tiny_run(tmp_path / "copy2", GOOD_LINE)
    with pytest.raises(
        ValueError,
        match="found more than once: \\{'run01': \\['copy1/run01', 'copy2/run01'\\]",
    ):
        load_omniglot_runs(tmp_path)
    path = _zip_folder(tmp_path, tmp_path / "runs.zip")
    with pytest.raises(ValueError, match="runs.zip: run\\(s\\) found more than once"):
        load_omniglot_runs(path)


# --------------------------------------------------------------------------
# Omniglot alphabets: choose them, and know which two subsets share
# --------------------------------------------------------------------------


def test_load_omniglot_alphabets_and_exclude(tmp_path):
    path = _fake_omniglot(tmp_path / "images_background_small1.zip")
    greek = load_omniglot("images_background_small1", path=path, alphabets=["Greek"])
    np.testing.assert_array_equal(greek.group_names, ["Greek"])
    np.testing.assert_array_equal(
        greek.target_names, ["Greek/character01", "Greek/character02"]
    )
    np.testing.assert_array_equal(greek.target, [0, 0, 1, 1])
    latin = load_omniglot(
        "images_background_small1", path=path, exclude_alphabets=["Greek"]
    )
    np.testing.assert_array_equal(latin.group_names, ["Latin"])
    assert all(
        name.startswith("images_background_small1/Latin/") for name in latin.filenames
    )

    with pytest.raises(ValueError, match="has no alphabet \\['Cyrillic'\\]; its alph"):
        load_omniglot("images_background_small1", path=path, alphabets=["Cyrillic"])
    with pytest.raises(ValueError, match="has no alphabet \\['greek'\\]"):
        load_omniglot(
            "images_background_small1", path=path, exclude_alphabets=["greek"]
        )
    with pytest.raises(ValueError, match="no alphabet of .* is left"):
        load_omniglot(
            "images_background_small1",
            path=path,
            alphabets=["Greek"],
            exclude_alphabets=["Greek"],
        )
    for bad in ("Greek", 3, ["Greek", 3]):
        with pytest.raises(TypeError, match="alphabets must be a list of alphabet"):
            load_omniglot("images_background_small1", path=path, alphabets=bad)
    # any iterable of names, a generator included
    again = load_omniglot(
        "images_background_small1", path=path, alphabets=(a for a in ["Greek"])
    )
    np.testing.assert_array_equal(again.group_names, ["Greek"])


def test_omniglot_shared_alphabets_by_name_and_by_image(tmp_path):
    _fake_omniglot(tmp_path / "images_background_small1.zip")
    # small2: Greek by name (other drawings), Latin's images under another name
    _fake_omniglot(
        tmp_path / "images_background_small2.zip",
        "images_background_small2",
        rename={"Latin": "Roman"},
        flip_greek=True,
    )
    _fake_omniglot(
        tmp_path / "images_evaluation.zip",
        "images_evaluation",
        rename={"Latin": "Runic", "Greek": "Tifinagh"},
        flip_greek=True,
    )
    shared = omniglot_shared_alphabets(
        "images_background_small1", "images_background_small2", path=tmp_path
    )
    assert shared == ["Greek", "Latin"]
    assert omniglot_shared_alphabets(
        "images_background_small2",
        "images_background_small1",
        path=tmp_path / "images_background_small2.zip",  # the other zip beside it
    ) == ["Greek", "Roman"]
    # Tifinagh holds altered drawings, Runic Latin's very images
    assert omniglot_shared_alphabets(
        "images_evaluation", "images_background_small1", path=tmp_path
    ) == ["Runic"]
    with pytest.raises(FileNotFoundError, match="'images_background' not found"):
        omniglot_shared_alphabets(
            "images_evaluation", "images_background", path=tmp_path
        )


@pytest.mark.shared_data
def test_omniglot_small_subsets_share_greek_and_latin(shared_data):
    folder = shared_data / "omniglot"
    small1, small2 = "images_background_small1", "images_background_small2"
    assert omniglot_shared_alphabets(small2, small1, path=folder) == ["Greek", "Latin"]
    assert omniglot_shared_alphabets(small1, small2, path=folder) == ["Greek", "Latin"]
    train = {image.tobytes() for image in _real(shared_data, small1).data}
    full = _real(shared_data, small2)
    leaked = [image.tobytes() in train for image in full.data]
    assert sum(leaked) == 480 + 520  # every Greek and Latin image, no other
    novel = load_omniglot(small2, path=folder, exclude_alphabets=["Greek", "Latin"])
    np.testing.assert_array_equal(
        novel.group_names, ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
    )
    assert novel.data.shape == (3120 - 1000, 1, 28, 28)
    assert not any(image.tobytes() in train for image in novel.data)
    assert "share two alphabets" in novel.DESCR
