"""Tests for skfewshot.datasets._images: Pillow decoding and exact area resizing.

The PNG files are written by an encoder independent of Pillow
(``_datasets_testing.encode_png``): every row filter, bit depth and colour
type the Omniglot loaders may meet.
"""

import hashlib
import io
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from _datasets_testing import encode_png, fake_omniglot, png_chunk, tiny_run
from PIL import Image

from skfewshot.datasets import load_omniglot, load_omniglot_runs
from skfewshot.datasets._images import area_resize, decode_image

ALL_FILTERS = (0, 1, 2, 3, 4)


def decode(blob, **kwargs):
    """The (h, w) grey image of PNG bytes, as the loaders decode it."""
    return decode_image(io.BytesIO(blob), name="x.png", **kwargs)[0]


def test_area_resize_hand_computed():
    # 3 -> 2: output pixel 0 covers [0, 1.5): weights 2/3, 1/3, 0
    image = np.array([[3.0, 6.0, 9.0]] * 3)
    out = area_resize(image[None], 2)[0]
    np.testing.assert_allclose(out, [[4.0, 8.0], [4.0, 8.0]], rtol=1e-6, atol=1e-6)
    # integer ratio: the block mean
    image = np.arange(16.0).reshape(4, 4)
    out = area_resize(image[None], 2)[0]
    np.testing.assert_allclose(out, [[2.5, 4.5], [10.5, 12.5]], rtol=1e-6, atol=1e-6)
    # a (height, width) pair: 4x4 -> 1x2, the means of the two column halves
    out = area_resize(image[None], (1, 2))[0]
    np.testing.assert_allclose(out, [[6.5, 8.5]], rtol=1e-6, atol=1e-6)


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


def test_decode_resizes_as_area_resize_in_blocks(monkeypatch):
    # the row blocks of the decoder sum to the one-shot area_resize
    rng = np.random.RandomState(3)
    pixels = rng.randint(0, 256, size=(37, 23))
    expected = area_resize(pixels[None] / 255, (5, 7))[0]
    monkeypatch.setattr("skfewshot.datasets._images._BLOCK_SAMPLES", 50)
    out = decode(encode_png(pixels), image_size=(5, 7))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), ALL_FILTERS])
def test_decode_png_grey8_every_filter(filters):
    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 256, size=(7, 9))
    image = decode(encode_png(pixels, filters=filters))
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, (pixels / 255).astype(np.float32))


@pytest.mark.parametrize("depth", [1, 2, 4, 16])
def test_decode_png_grey_bit_depths(depth):
    # width 11 leaves padding bits at the end of each packed row; 16 bits are
    # kept (Pillow's own "L" conversion would truncate them)
    rng = np.random.RandomState(depth)
    pixels = rng.randint(0, 2**depth, size=(6, 11))
    image = decode(encode_png(pixels, depth=depth, filters=ALL_FILTERS))
    np.testing.assert_allclose(image, pixels / (2**depth - 1), rtol=0, atol=1e-7)


def test_decode_png_rgb_is_luminance_and_alpha_is_over_white():
    rng = np.random.RandomState(1)
    grey = rng.randint(0, 256, size=(5, 6))
    rgb = np.stack([grey, grey, grey], axis=2)
    rgb[0, 0] = (255, 0, 0)  # pure red: BT.601 luma 0.299
    image = decode(encode_png(rgb, color_type=2, filters=ALL_FILTERS))
    expected = grey / 255
    expected[0, 0] = 0.299
    np.testing.assert_allclose(image, expected, atol=1e-6)

    # grey + alpha: transparent -> white, opaque -> value, half -> halfway
    ga = np.array([[[0, 0], [0, 255], [100, 0]], [[0, 51], [200, 255], [50, 255]]])
    image = decode(encode_png(ga, color_type=4, filters=(4, 3)))
    expected = [[1.0, 0.0, 1.0], [0.8, 200 / 255, 50 / 255]]
    np.testing.assert_allclose(image, expected, atol=1e-6)

    # 16-bit RGBA: Pillow reads it as 8-bit RGBA (10/65535 rounds to 0)
    rgba = np.array([[[10, 10, 10, 65535], [0, 0, 0, 0]]])
    image = decode(encode_png(rgba, color_type=6, depth=16, filters=(1,)))
    np.testing.assert_allclose(image, [[0.0, 1.0]], atol=1e-6)


def test_decode_png_palette_and_long_transparency():
    palette = [(0, 0, 0), (255, 255, 255), (51, 51, 51)]
    index = np.array([[0, 1, 2], [2, 1, 0]])
    image = decode(encode_png(index, color_type=3, depth=2, palette=palette))
    np.testing.assert_allclose(image, [[0, 1, 0.2], [0.2, 1, 0]], atol=1e-6)

    good = encode_png(np.array([[0, 1]]), color_type=3, depth=1, palette=palette[:2])
    at = good.index(b"IDAT") - 4
    trns = png_chunk(b"tRNS", bytes([255, 255, 0, 0]))  # 4 entries for 2 colours
    np.testing.assert_array_equal(decode(good[:at] + trns + good[at:]), [[0.0, 1.0]])


def test_decode_png_grey16_transparent_value_is_white_and_keeps_16_bits():
    # a 16-bit grey tRNS names one 16-bit grey level: it alone is transparent
    # (composited over white); the rest keep their 16 bits (1 / 65535 is not 0)
    pixels = np.array([[0, 16384, 32768, 65535], [7, 1, 65534, 8]])
    good = encode_png(pixels, depth=16, filters=ALL_FILTERS)
    at = good.index(b"IDAT") - 4
    trns = png_chunk(b"tRNS", struct.pack(">H", 7))
    image = decode(good[:at] + trns + good[at:])
    expected = pixels / 65535
    expected[1, 0] = 1.0
    np.testing.assert_allclose(image, expected, rtol=0, atol=1e-7)
    rgb = decode_image(io.BytesIO(good[:at] + trns + good[at:]), name="x", color="rgb")
    np.testing.assert_allclose(rgb, np.stack([expected] * 3), rtol=0, atol=1e-7)


def test_decode_errors_name_the_file():
    good = encode_png(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"x.png: not an image Pillow can read \("):
        decode(b"GIF89a" + good[6:])
    corrupt = bytearray(good)
    corrupt[good.index(b"IDAT") + 6] ^= 0xFF
    with pytest.raises(ValueError, match="x.png: not an image .*broken data stream"):
        decode(bytes(corrupt))
    rng = np.random.RandomState(0)
    blob = encode_png(rng.randint(0, 256, size=(64, 64)))
    with pytest.raises(ValueError, match="x.png: .*image file is truncated"):
        decode(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="x.png: not an image .*Truncated IHDR"):
        decode(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", b"\x00" * 12))


def test_decode_refuses_what_pillow_calls_a_decompression_bomb(monkeypatch):
    # over MAX_IMAGE_PIXELS: Pillow warns (an error here); over twice: it raises
    blob = encode_png(np.zeros((10, 10)))
    for limit in (60, 40):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(ValueError, match="x.png: refused as a possible decomp"):
            decode(blob)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert decode(blob).shape == (10, 10)


def test_zero_pixel_png_in_a_runs_folder_is_named(tmp_path):
    header = struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)
    empty = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b""))
        + png_chunk(b"IEND", b"")
    )
    tiny_run(tmp_path, ["run01/test/item01.png run01/training/class02.png"])
    (tmp_path / "run01" / "test" / "item01.png").write_bytes(empty)
    with pytest.raises(ValueError, match="item01.png: not an image Pillow can read"):
        load_omniglot_runs(tmp_path)


def test_omniglot_member_that_is_no_image_names_zip_and_member(tmp_path):
    path = fake_omniglot(tmp_path / "images_background_small1.zip")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("images_background_small1/Latin/character03/x_01.png", b"?")
    with pytest.raises(
        ValueError,
        match="images_background_small1.zip: images_background_small1/Latin/"
        "character03/x_01.png: not an image Pillow can read",
    ):
        load_omniglot("images_background_small1", path=path)


_BOMB_SCRIPT = r"""
import io, resource, struct, sys, zlib
sys.path.insert(0, {tests!r})
from _datasets_testing import png_chunk
from skfewshot.datasets._images import decode_image

# a valid 105x105 one-bit PNG whose image data inflates to 64 MiB
row_bytes = (105 + 7) // 8
compressor = zlib.compressobj(9)
parts = [compressor.compress(bytes(105 * (row_bytes + 1)))]
parts += [compressor.compress(bytes(1 << 20)) for _ in range(64)]
idat = b"".join(parts) + compressor.flush()
header = struct.pack(">IIBBBBB", 105, 105, 1, 0, 0, 0, 0)
bomb = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))
normal = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
          + png_chunk(b"IDAT", zlib.compress(bytes(105 * (row_bytes + 1))))
          + png_chunk(b"IEND", b""))
decode_image(io.BytesIO(normal), name="warm-up", image_size=28)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = decode_image(io.BytesIO(bomb), name="bomb.png", image_size=28)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, float(image.min()), float(image.max()), len(bomb))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB")
def test_png_whose_data_inflates_past_its_size_is_read_with_bounded_memory():
    # Pillow inflates only the rows the header declares (1575 bytes) and
    # stops; Python's tracemalloc cannot see Pillow's buffers, so measure the
    # peak resident memory of a fresh process.
    tests = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_BOMB_SCRIPT.format(tests=tests))],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    grown, low, high, size = done.stdout.split()
    assert int(size) < 200_000
    assert int(grown) < 8 << 20  # 64 MiB if the data were inflated
    assert (float(low), float(high)) == (0.0, 0.0)  # all-zero rows: black


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "subset, digest",
    [
        (
            "images_background_small1",
            "3d758fccc2c901be720c3bcb42baf84f8ee80190203b06f7217ff6d5b8c85bab",
        ),
        (
            "images_background_small2",
            "e99be4aa829997ff6b2d6e8d8f330fe3895b34c0790184da626a0957418b40aa",
        ),
    ],
)
def test_real_omniglot_decodes_as_the_former_numpy_decoder(shared_data, subset, digest):
    # The digest of every drawing at 105x105 (strokes = 1, packed bits) as the
    # hand-written numpy PNG decoder this library used before Pillow decoded
    # them: the same pixels, image for image.
    bunch = load_omniglot(subset, path=shared_data / "omniglot", image_size=None)
    assert set(np.unique(bunch.data).tolist()) == {0.0, 1.0}
    packed = np.packbits(bunch.data > 0.5).tobytes()
    assert hashlib.sha256(packed).hexdigest() == digest


def test_a_float_image_with_nan_is_refused_naming_the_file(tmp_path):
    from PIL import Image

    from skfewshot.datasets import ImageFileReader

    values = np.full((4, 4), 0.5, np.float32)
    values[0, 0] = np.nan
    path = tmp_path / "nan.tif"
    Image.fromarray(values, mode="F").save(path)
    with pytest.raises(ValueError, match="nan.tif"):
        ImageFileReader(image_size=None).transform([str(path)])
