"""Image files for probe tests: a synthetic picture, and files that lie (not an image, cut, huge header)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def picture(path: Path, size: tuple[int, int] = (96, 80)) -> Path:
    """A synthetic RGB picture (colour gradients and a square), saved by Pillow from its extension."""
    import numpy as np
    from PIL import Image

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], axis=-1).astype("uint8")
    rgb[h // 4 : h // 2, w // 4 : w // 2] = (250, 20, 20)
    Image.fromarray(rgb).save(path)
    return path


def not_an_image(path: Path) -> Path:
    """A text file with an image's name."""
    path.write_text("this is a note, not a picture\n")
    return path


def truncated(path: Path) -> Path:
    """A real PNG cut in the middle of its pixel data."""
    whole = picture(path.with_name("whole_" + path.name), (200, 160)).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


def lying_header(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A PNG whose header (with a valid checksum) claims ``width`` x ``height`` pixels; the data is tiny."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\x00" * 3 * 4)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path
