"""A small PNG decoder in numpy, so the image loaders need no Pillow.

Private module. It reads what image datasets ship in practice: every colour type
(greyscale, RGB, palette, with or without alpha), every bit depth the format
allows, all five row filters, chunk CRCs checked. Adam7-interlaced files are
refused with a clear error rather than decoded wrongly.

Memory is bounded by the header: an image may have at most ``_MAX_PIXELS``
pixels, and its compressed data is inflated only up to the size its header
implies, so a small file whose data inflates to gigabytes (a decompression
bomb) is refused after inflating one byte past that size.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["decode_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# colour type -> (channels, allowed bit depths)
_COLOR_TYPES = {
    0: (1, (1, 2, 4, 8, 16)),  # greyscale
    2: (3, (8, 16)),  # RGB
    3: (1, (1, 2, 4, 8)),  # palette index
    4: (2, (8, 16)),  # greyscale + alpha
    6: (4, (8, 16)),  # RGB + alpha
}
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's "L" mode
# At most 4096 x 4096 pixels per image: Omniglot drawings are 105 x 105.
_MAX_PIXELS = 1 << 24


def _chunks(data, name):
    """Yield ``(type, payload)`` of each chunk, checking length and CRC."""
    pos = len(_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError(f"{name}: truncated PNG (chunk header at byte {pos})")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 8 + length
        if end + 4 > len(data):
            raise ValueError(f"{name}: truncated PNG ({kind!r} chunk at byte {pos})")
        payload = data[pos + 8 : end]
        (crc,) = struct.unpack(">I", data[end : end + 4])
        if zlib.crc32(kind + payload) != crc:
            raise ValueError(f"{name}: corrupt PNG (bad CRC in {kind!r} chunk)")
        yield kind, payload
        if kind == b"IEND":
            return
        pos = end + 4
    raise ValueError(f"{name}: truncated PNG (no IEND chunk)")


def _inflate(compressed, size, name):
    """Inflate the zlib stream of the image data to exactly ``size`` bytes.

    At most ``size`` bytes, plus one to detect a stream that inflates to
    more than the header implies (refused: a decompression bomb, or a
    corrupt file); fewer is left to :func:`_unfilter` to report.
    """
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, size)
        extra = b""
        if not inflater.eof:
            extra = inflater.decompress(inflater.unconsumed_tail, 1)
    except zlib.error as exc:
        raise ValueError(f"{name}: corrupt PNG image data ({exc})") from exc
    if extra:
        raise ValueError(
            f"{name}: PNG image data inflates to more than the {size} bytes "
            "its header implies (a decompression bomb, or a corrupt file)."
        )
    return raw


def _unfilter(raw, height, row_bytes, bpp, name):
    """Undo the per-row PNG filters; returns uint8 of shape (height, row_bytes)."""
    expected = height * (row_bytes + 1)
    if len(raw) < expected:
        raise ValueError(
            f"{name}: image data has {len(raw)} bytes, expected {expected} "
            f"for {height} rows of {row_bytes} bytes"
        )
    rows = np.frombuffer(raw, dtype=np.uint8, count=expected).reshape(height, -1)
    filters = rows[:, 0]
    out = rows[:, 1:].copy()
    if not filters.any():  # the common case (e.g. every Omniglot image)
        return out
    if filters.max() > 4:
        bad = int(filters.max())
        raise ValueError(f"{name}: unknown PNG filter type {bad}")
    prev = np.zeros(row_bytes, dtype=np.uint8)
    for r in range(height):
        line, kind = out[r], filters[r]
        if kind == 1:  # Sub: running sum along the row, one per byte of a pixel
            line[:] = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).ravel()
        elif kind == 2:  # Up
            line += prev
        elif kind in (3, 4):  # Average, Paeth: sequential, done on Python ints
            cur, up = line.tolist(), prev.tolist()
            for i in range(row_bytes):
                left = cur[i - bpp] if i >= bpp else 0
                if kind == 3:
                    pred = (left + up[i]) >> 1
                else:
                    upleft = up[i - bpp] if i >= bpp else 0
                    p = left + up[i] - upleft
                    pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - upleft)
                    if pa <= pb and pa <= pc:
                        pred = left
                    elif pb <= pc:
                        pred = up[i]
                    else:
                        pred = upleft
                cur[i] = (cur[i] + pred) & 0xFF
            line[:] = cur
        prev = line
    return out


def _samples(rows, width, channels, depth):
    """Unpack filtered-free rows into an integer array (height, width, channels)."""
    height = rows.shape[0]
    if depth == 16:
        values = rows.view(">u2").astype(np.uint16)
    elif depth == 8:
        values = rows
    else:  # 1, 2 or 4 bits per sample, packed MSB first; rows are padded to bytes
        bits = np.unpackbits(rows, axis=1)
        per = bits.shape[1] // depth
        bits = bits[:, : per * depth].reshape(height, per, depth)
        weights = (1 << np.arange(depth - 1, -1, -1)).astype(np.uint8)
        values = (bits * weights).sum(axis=2, dtype=np.uint8)
    return values[:, : width * channels].reshape(height, width, channels)


def decode_png(data, *, name="PNG"):
    """Decode PNG bytes into a greyscale float32 image in [0, 1] of shape (h, w).

    Colour is converted to luminance with the ITU-R BT.601 weights; a
    transparent pixel is composited over white (the background of a drawing).

    Parameters
    ----------
    data : bytes
        The content of a ``.png`` file.
    name : str, default="PNG"
        What to call the file in error messages (e.g. its path).

    Returns
    -------
    image : ndarray of shape (height, width), dtype float32
        0 is black, 1 is white.

    Raises
    ------
    ValueError
        When ``data`` is not a PNG file this decoder reads (corrupt, truncated,
        interlaced, 0 pixels wide or high, more than ``_MAX_PIXELS`` pixels,
        or image data inflating past the size its header implies), naming
        ``name``.
    """
    data = bytes(data)
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"{name}: not a PNG file (bad signature {data[:8]!r})")
    header, palette, transparency, idat = None, None, None, []
    for kind, payload in _chunks(data, name):
        if kind == b"IHDR":
            if len(payload) != 13:
                raise ValueError(
                    f"{name}: corrupt PNG (IHDR chunk of {len(payload)} bytes, "
                    "expected 13)"
                )
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"PLTE":
            if not payload or len(payload) % 3:
                raise ValueError(
                    f"{name}: corrupt PNG (PLTE chunk of {len(payload)} bytes, "
                    "expected a positive multiple of 3)"
                )
            palette = np.frombuffer(payload, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"tRNS":
            transparency = payload
        elif kind == b"IDAT":
            idat.append(payload)
    if header is None or not idat:
        raise ValueError(f"{name}: PNG without IHDR or IDAT chunk")
    width, height, depth, color, _, _, interlace = header
    if color not in _COLOR_TYPES or depth not in _COLOR_TYPES[color][1]:
        raise ValueError(
            f"{name}: unsupported PNG colour type {color} with bit depth {depth}"
        )
    if interlace:
        raise ValueError(f"{name}: Adam7-interlaced PNG files are not supported")
    if width == 0 or height == 0:
        raise ValueError(
            f"{name}: PNG of {width}x{height} pixels; width and height must be >= 1"
        )
    if width * height > _MAX_PIXELS:
        raise ValueError(
            f"{name}: PNG of {width}x{height} pixels, more than the {_MAX_PIXELS} "
            "pixels an image may have (a decompression bomb, or not a drawing?)"
        )
    channels = _COLOR_TYPES[color][0]
    row_bytes = (width * channels * depth + 7) // 8
    bpp = max(1, channels * depth // 8)
    raw = _inflate(b"".join(idat), height * (row_bytes + 1), name)
    rows = _unfilter(raw, height, row_bytes, bpp, name)
    values = _samples(rows, width, channels, depth)

    if color == 3:
        if palette is None:
            raise ValueError(f"{name}: palette PNG without a PLTE chunk")
        index = values[..., 0]
        if index.max(initial=0) >= len(palette):
            raise ValueError(f"{name}: palette index out of range")
        alpha = np.full(len(palette), 255, dtype=np.uint8)
        if transparency is not None:
            entries = np.frombuffer(transparency, dtype=np.uint8)[: len(palette)]
            alpha[: len(entries)] = entries
        rgb = palette[index] / 255.0
        alpha = (alpha[index] / 255.0)[..., None]
    else:
        scale = float((1 << depth) - 1)
        values = values / scale
        has_alpha = color in (4, 6)
        rgb = values[..., :-1] if has_alpha else values
        alpha = values[..., -1:] if has_alpha else None
    gray = rgb[..., 0] if rgb.shape[-1] == 1 else rgb @ _LUMA
    if alpha is not None:
        gray = gray * alpha[..., 0] + (1.0 - alpha[..., 0])
    return gray.astype(np.float32)
