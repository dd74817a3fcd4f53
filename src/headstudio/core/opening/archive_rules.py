"""Rules a zip archive must pass before torch or we read a byte of it: names, sizes, compression.

``torch.save`` writes one folder of *stored* (uncompressed) members, each name once. A hostile zip can
hide a second ``data.pkl`` behind the first (duplicate names), name members outside the archive
(``../x``), or declare a small member that inflates to gigabytes. Those are refused from the central
directory alone, so nothing is inflated; the pickle is read once, in a capped read, for listing its
globals.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path, PurePosixPath

from headstudio.core.errors import SourceError, first_line

PICKLE_CAP = 1 << 30  # a data.pkl beyond 1 GiB is not a checkpoint's (resnet152's is 40 kB)
COMPRESSED_CAP = 64 << 20  # compressed members (torch.save never writes them) inflate to at most this
RATIO_CAP = 100  # and by at most this factor


def zip_members(path: Path) -> list[zipfile.ZipInfo]:
    """The archive's members once its directory passes the rules; SourceError naming the first broken rule."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        raise SourceError(
            f"{path} is truncated or corrupt (incomplete zip archive); save or copy it again"
        ) from None
    seen: set[str] = set()
    for info in members:
        name = info.filename
        if name in seen:
            raise SourceError(
                f"{path}: the zip holds two members named '{name}' (rule: each name once); refused"
            )
        seen.add(name)
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise SourceError(
                f"{path}: zip member '{name}' points outside the archive (rule: relative names); refused"
            )
        _check_size(path, info)
    packed = sum(info.compress_size for info in members)
    if packed > path.stat().st_size:
        raise SourceError(
            f"{path}: its zip members claim {packed:,} bytes in a {path.stat().st_size:,}-byte file "
            "(rule: members do not overlap); refused before reading them"
        )
    pickles = sum(info.file_size for info in members if info.filename.endswith(".pkl"))
    if pickles > PICKLE_CAP:
        raise SourceError(
            f"{path}: its pickles declare {pickles:,} bytes (rule: at most {PICKLE_CAP:,} in all)"
        )
    return members


def _check_size(path: Path, info: zipfile.ZipInfo) -> None:
    if info.filename.endswith(".pkl") and info.file_size > PICKLE_CAP:
        raise SourceError(
            f"{path}: '{info.filename}' declares {info.file_size:,} bytes of pickle (rule: at most "
            f"{PICKLE_CAP:,}); refused before reading it"
        )
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise SourceError(
                f"{path}: stored member '{info.filename}' declares two sizes; refused as corrupt"
            )
        return
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > COMPRESSED_CAP or ratio > RATIO_CAP:
        raise SourceError(
            f"{path}: member '{info.filename}' would inflate from {info.compress_size:,} to "
            f"{info.file_size:,} bytes (rule: compressed members at most {COMPRESSED_CAP >> 20} MB and "
            f"{RATIO_CAP}x; torch.save never compresses); refused before inflating it"
        )


def read_pickle_members(path: Path) -> list[bytes]:
    """Every ``.pkl`` member (whichever one torch picks, it is among them), each read once and capped."""
    found = []
    members = zip_members(path)
    with zipfile.ZipFile(path) as archive:
        for info in members:
            if not info.filename.endswith(".pkl"):
                continue
            try:
                with archive.open(info) as fh:
                    data = fh.read(min(info.file_size, PICKLE_CAP) + 1)
            except (
                zipfile.BadZipFile,
                OSError,
                ValueError,
                EOFError,
                NotImplementedError,
                zlib.error,
            ) as err:
                raise SourceError(
                    f"{path} is truncated or corrupt ({first_line(err)}); save or copy it again"
                ) from None
            if len(data) > info.file_size:
                raise SourceError(f"{path}: '{info.filename}' is longer than it declares; refused as corrupt")
            found.append(data)
    return found
