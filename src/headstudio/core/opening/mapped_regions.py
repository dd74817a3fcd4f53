"""Where a memory-mapped tensor's bytes live in its file, so saving can copy file to file.

A weight loaded with ``mmap=True`` is a private mapping of the checkpoint. Reading it through the
mapping makes every page resident in this process (peak RSS grows by the model's size); copying the
same bytes from the file in the kernel (``copy_file_range``) does not. This is only correct while the
mapped pages still equal the file, so a tensor qualifies only when ``/proc/self/pagemap`` shows none of
its pages was written to (copy-on-write pages are anonymous). Elsewhere (not Linux, not mapped,
modified) callers fall back to writing from memory.

Also here, the other file-level steps of a streamed save: reserving the blocks, handing each written
range to the disk at once, and mapping short read-only windows to compare written bytes in place.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import mmap
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Region:
    """``nbytes`` bytes of the file at ``path`` starting at ``offset``."""

    path: str
    offset: int
    nbytes: int


class MappedFiles:
    """A snapshot of this process's file mappings (``/proc/self/maps``), for looking tensors up."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._maps: list[tuple[int, int, int, str, int]] = []
        try:
            with open("/proc/self/maps") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return
        for line in lines:
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or not parts[5].startswith("/") or "r" not in parts[1]:
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            self._maps.append((start, end, int(parts[2], 16), parts[5], int(parts[4])))
        self._maps.sort()
        self._starts = [m[0] for m in self._maps]

    def region(self, tensor: torch.Tensor) -> Region | None:
        """The unmodified file bytes behind ``tensor``, or None when it must be read from memory."""
        if tensor.device.type != "cpu" or not tensor.is_contiguous() or tensor.numel() == 0:
            return None
        address, nbytes = tensor.data_ptr(), tensor.numel() * tensor.element_size()
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return None
        start, end, offset, path, inode = self._maps[i]
        if address + nbytes > end or not _same_inode(path, inode) or not _pages_unmodified(address, nbytes):
            return None
        return Region(path, offset + address - start, nbytes)


def _same_inode(path: str, inode: int) -> bool:
    """The path still names the mapped file (not a file that replaced it since it was opened)."""
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _pages_unmodified(address: int, nbytes: int) -> bool:
    """True when no page of the range is anonymous (written to, copy-on-write) or swapped."""
    first, last = address // _PAGE, (address + nbytes - 1) // _PAGE
    try:
        with open("/proc/self/pagemap", "rb") as fh:
            fh.seek(first * 8)
            data = fh.read((last - first + 1) * 8)
    except OSError:
        return False
    if len(data) != (last - first + 1) * 8:
        return False
    entries = np.frombuffer(data, dtype=np.uint64)
    present = (entries >> np.uint64(63)) & np.uint64(1)
    swapped = (entries >> np.uint64(62)) & np.uint64(1)
    file_page = (entries >> np.uint64(61)) & np.uint64(1)
    return not bool(np.any((present & (file_page ^ np.uint64(1))) | swapped))


def copy_region(region: Region, out_fd: int, chunk: int, tick=None) -> None:
    """Append the region's bytes to ``out_fd`` file to file (kernel copy where possible)."""
    src = os.open(region.path, os.O_RDONLY)
    try:
        done = 0
        while done < region.nbytes:
            size = min(chunk, region.nbytes - done)
            copied = _copy(src, out_fd, size, region.offset + done)
            if copied <= 0:
                raise OSError(5, f"{region.path} ended early while copying weights")
            done += copied
            if tick:
                tick(copied)
    finally:
        os.close(src)


@contextmanager
def mapped_window(fd: int, offset: int, nbytes: int) -> Iterator[int]:
    """The address of ``nbytes`` of the file at ``offset``, mapped read-only until the block ends.

    Comparing through short-lived windows reads the page cache in place (no copy into a buffer) and
    unmapping right after keeps the pages from counting in this process's memory for long.
    """
    skew = offset % mmap.ALLOCATIONGRANULARITY
    window = mmap.mmap(fd, nbytes + skew, access=mmap.ACCESS_READ, offset=offset - skew)
    try:
        view = np.frombuffer(window, dtype=np.uint8)
        address = view.ctypes.data + skew
        del view  # the mapping cannot close while an array still exports it
        yield address
    finally:
        window.close()


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing this range to disk now, so the final fsync has little left.

    Without it nothing reaches the disk until the dirty threshold or the fsync, and the disk idles
    while we copy. Best effort: a no-op where ``sync_file_range`` does not exist.
    """
    if _SYNC_FILE_RANGE is not None and nbytes > 0:
        _SYNC_FILE_RANGE(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def reserve_space(fd: int, nbytes: int) -> None:
    """Allocate the file's blocks up front (size unchanged): fewer, larger writes to disk; ENOSPC early.

    A file that cannot fit raises before anything is allocated (a failed ``fallocate`` may keep what it
    got, filling the disk for everyone until the temp file goes). Best effort otherwise: filesystems
    without ``fallocate`` allocate as we write.
    """
    if nbytes <= 0:
        return
    try:
        disk = os.fstatvfs(fd)
        free = disk.f_bavail * disk.f_frsize
    except (OSError, AttributeError):
        free = nbytes  # cannot tell: let the writes find out
    if free < nbytes:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (needs {nbytes / 1e9:,.2f} GB)")
    if _FALLOCATE is None:
        return
    if _FALLOCATE(fd, _FALLOC_FL_KEEP_SIZE, 0, nbytes) != 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(code, os.strerror(code))


def _libc_function(name: str, *argtypes):
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _libc_function(
    "sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint
)
_SYNC_FILE_RANGE_WRITE = 2
_FALLOCATE = _libc_function("fallocate", ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_FALLOC_FL_KEEP_SIZE = 1


def _copy(src: int, dst: int, size: int, offset: int) -> int:
    if hasattr(os, "copy_file_range"):
        try:
            return os.copy_file_range(src, dst, size, offset)
        except OSError:
            pass  # other filesystem or kernel: copy through user space
    data = memoryview(os.pread(src, size, offset))
    written = 0
    while written < len(data):
        written += os.write(dst, data[written:])
    return written
