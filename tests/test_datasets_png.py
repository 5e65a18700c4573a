"""Tests for skfewshot.datasets._png: the numpy PNG decoder and its bounds."""

import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
from _datasets_testing import (
    BOMB_BYTES,
    encode_png,
    fake_omniglot,
    png_chunk,
    tiny_run,
    zip_folder,
)
from _memory_testing import peak_bytes

from skfewshot.datasets import load_omniglot, load_omniglot_runs
from skfewshot.datasets._png import decode_png

ALL_FILTERS = (0, 1, 2, 3, 4)


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


def test_palette_png_with_long_transparency_decodes():
    palette = [(0, 0, 0), (255, 255, 255)]
    good = encode_png(np.array([[0, 1]]), color_type=3, depth=1, palette=palette)
    at = good.index(b"IDAT") - 4
    trns = png_chunk(b"tRNS", bytes([255, 255, 0, 0]))  # 4 entries for 2 colours
    image = decode_png(good[:at] + trns + good[at:])
    np.testing.assert_array_equal(image, [[0.0, 1.0]])


def test_png_header_bounds(tmp_path):
    def png(width, height):
        header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b""))
            + png_chunk(b"IEND", b"")
        )

    for width, height in [(0, 0), (0, 5), (5, 0)]:
        with pytest.raises(ValueError, match=f"x.png: PNG of {width}x{height} pixels"):
            decode_png(png(width, height), name="x.png")
    with pytest.raises(ValueError, match="4097x4096 pixels, more than the 16777216"):
        decode_png(png(4097, 4096), name="x.png")
    short_header = png_chunk(b"IHDR", b"\x00" * 12) + png_chunk(b"IEND", b"")
    with pytest.raises(ValueError, match="x.png: corrupt PNG \\(IHDR chunk of 12"):
        decode_png(b"\x89PNG\r\n\x1a\n" + short_header, name="x.png")
    # a 0x0 drawing inside a runs folder names its file
    tiny_run(tmp_path, ["run01/test/item01.png run01/training/class02.png"])
    (tmp_path / "run01" / "test" / "item01.png").write_bytes(png(0, 0))
    with pytest.raises(ValueError, match="item01.png: PNG of 0x0 pixels"):
        load_omniglot_runs(tmp_path)


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
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def _bomb_omniglot(tmp_path, bomb):
    path = fake_omniglot(tmp_path / "images_background_small1.zip")
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images_background_small1/Latin/character03/bomb_01.png", bomb)
    assert path.stat().st_size < 200_000
    return lambda: load_omniglot("images_background_small1", path=path)


def _bomb_runs(tmp_path, bomb):
    tiny_run(tmp_path, ["run01/test/item01.png run01/training/class02.png"])
    (tmp_path / "run01" / "training" / "class02.png").write_bytes(bomb)
    return lambda: load_omniglot_runs(tmp_path)


def _bomb_runs_zip(tmp_path, bomb):
    folder = tmp_path / "runs"
    _bomb_runs(folder, bomb)
    path = zip_folder(folder, tmp_path / "runs.zip")
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

    assert peak_bytes(call) < 4 << 20  # the bomb inflates to 64 MiB
