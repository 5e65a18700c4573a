"""Builders shared by the tests of skfewshot.datasets (not a test module).

A PNG encoder written independently of the decoder under test, hand-made
Omniglot zips and runs folders, the real small Omniglot subsets (loaded once
per session), a peak-memory probe for the bounded-read tests, and the
scikit-learn checks that image steps (no 2-D input) can run.
"""

import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from sklearn.exceptions import SkipTestWarning
from sklearn.utils.estimator_checks import (
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_repr,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_set_params,
    parametrize_with_checks,
)

from skfewshot.datasets import load_omniglot


def png_chunk(kind, payload):
    """One PNG chunk: length, type, payload and CRC."""
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
    body = png_chunk(b"IHDR", header)
    if palette is not None:
        body += png_chunk(b"PLTE", np.asarray(palette, dtype=np.uint8).tobytes())
    body += png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


STROKE = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]])


def fake_omniglot(
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


_CACHE = {}


def real_omniglot(shared_data, subset):
    """``load_omniglot(subset)`` from the shared data, loaded once per session."""
    if subset not in _CACHE:
        _CACHE[subset] = load_omniglot(subset, path=shared_data / "omniglot")
    return _CACHE[subset]


def zip_folder(folder, zip_path, prefix=""):
    """Zip the files under ``folder`` as ``prefix + relative path``."""
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return zip_path


def tiny_run(root, lines):
    """``root/run01`` with class01, class02, item01 and ``lines`` as labels."""
    run = root / "run01"
    (run / "training").mkdir(parents=True)
    (run / "test").mkdir()
    blob = encode_png(STROKE, depth=1)
    for name in ("training/class01.png", "training/class02.png", "test/item01.png"):
        (run / name).write_bytes(blob)
    (run / "class_labels.txt").write_text("\n".join(lines) + "\n")


# One well-formed class_labels.txt line for tiny_run.
GOOD_LINE = ["run01/test/item01.png run01/training/class02.png"]


BOMB_BYTES = 64 << 20  # what the bomb's image data inflates to


def zip_with_member(path, name, data, compression=zipfile.ZIP_DEFLATED):
    """A zip at ``path`` holding one member ``name`` with ``data``."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr(name, data)
    return path


# scikit-learn's checks feed 2-D numeric arrays; a step on images or file paths
# declares other input (tag two_d_array=False), so parametrize_with_checks runs
# only the data-free checks and skips the rest with a SkipTestWarning (expected,
# caught here); DATA_FREE_API_CHECKS run on their own, and what the data-driven
# checks assert is tested with images or files in each step's tests.
DATA_FREE_API_CHECKS = [
    check_estimator_repr,
    check_no_attributes_set_in_init,
    check_do_not_raise_errors_in_init_or_set_params,
    check_get_params_invariance,
    check_set_params,
]


def data_free_checks(estimator):
    """``parametrize_with_checks([estimator])`` without its skip warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkipTestWarning)
        return parametrize_with_checks([estimator])
