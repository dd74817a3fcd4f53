"""The .safetensors format both ways: a reader that enforces the format's rules, a streamed writer.

Writing streams each tensor's bytes: no second copy of the weights in memory.

``safetensors.torch.save_file`` turns every tensor into a ``bytes`` object before writing, so its peak
memory is the model's size, and it refuses tensors that share storage. Writing the (simple) format
directly keeps memory-mapped weights mapped and writes tied tensors as separate entries, so the file
loads with plain ``load_file`` + ``load_state_dict``. ``Readback`` verifies the file while it is being
written: every tensor is read back from it and compared with the model's bytes.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, BinaryIO

import torch

from headstudio.core.errors import SaveError, SourceError, first_line
from headstudio.core.opening.mapped_regions import (
    MappedFiles,
    Region,
    copy_region,
    mapped_window,
    reserve_space,
    start_writeback,
)

CHUNK_BYTES = 16 << 20  # written, handed to the disk and read back in steps of this size
WINDOW_BYTES = 16 << 20
_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}  # fmt: skip

Tick = Callable[[int], None]


def _libc_memcmp() -> Any:
    try:
        memcmp = ctypes.CDLL(None).memcmp
    except (OSError, AttributeError):
        return None
    memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    memcmp.restype = ctypes.c_int
    return memcmp


_MEMCMP = _libc_memcmp()


def safetensors_header(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[bytes, list]:
    """The length-prefixed JSON header and the write order (largest element size first keeps alignment)."""
    order = sorted(tensors.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, tensor in order:
        dtype = _DTYPE_NAMES.get(tensor.dtype)
        if dtype is None:
            raise SaveError(
                f"tensor '{name}' has dtype {tensor.dtype}, which .safetensors cannot hold; use .pt"
            )
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + 8) % 8)  # data starts 8-byte aligned, as the reference writer does
    return struct.pack("<Q", len(text)) + text, order


def write_safetensors(
    fh: BinaryIO, tensors: dict[str, torch.Tensor], metadata: dict[str, str], tick: Tick | None = None
) -> int:
    """Write ``tensors`` to an unbuffered binary file; ``tick(nbytes)`` after each chunk; bytes written.

    Memory-mapped tensors whose pages are unmodified are copied file to file, never paged in. Each
    chunk is handed to the disk as soon as it is written, so the disk works while we copy.
    """
    header, order = safetensors_header(tensors, metadata)
    fd = fh.fileno()
    reserve_space(fd, len(header) + sum(t.numel() * t.element_size() for _, t in order))
    fh.write(header)
    written = len(header)

    def done(nbytes: int) -> None:
        nonlocal written
        start_writeback(fd, written, nbytes)
        written += nbytes
        if tick:
            tick(nbytes)

    mapped = MappedFiles()
    for _name, tensor in order:
        region = mapped.region(tensor)
        if region is not None:
            fh.flush()
            copy_region(region, fd, CHUNK_BYTES, done)
            continue
        for chunk in _byte_chunks(tensor):
            view = memoryview(chunk)
            while view:
                view = view[fh.write(view) :]
            done(len(chunk))
    return written


def _byte_chunks(tensor: torch.Tensor):
    """A tensor's raw bytes as memoryview slices of (at most) CHUNK_BYTES, without copying it whole."""
    t = _contiguous_cpu(tensor)
    if t.numel() == 0:
        return
    view = memoryview(t.reshape(-1).view(torch.uint8).numpy())
    for start in range(0, len(view), CHUNK_BYTES):
        yield view[start : start + CHUNK_BYTES]


def _contiguous_cpu(tensor: torch.Tensor) -> torch.Tensor:
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    return t if t.is_contiguous() else t.contiguous()


class _Stopped(Exception):
    """The write failed or was cancelled: the read-back stops without a verdict."""


class Readback:
    """Reads every tensor back from the .safetensors file being written and compares it with the model.

    Runs on its own thread and follows the writer: ``advance(nbytes)`` says how many more data bytes
    are complete, and each window is compared as soon as it is, so checking overlaps writing. Written
    bytes are compared with the source file's bytes for memory-mapped weights the writer copied (their
    pages were checked unmodified) and with the tensor's memory otherwise. ``finish()`` waits for the
    last window, checks the header and the file size and returns how many tensors were compared.
    """

    def __init__(self, path: Path, expected: dict[str, torch.Tensor]) -> None:
        self._path, self._expected = path, expected
        self._complete, self._closed, self._stopped = 0, False, False
        self._changed = threading.Condition()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="headstudio-readback")
        self._result = self._pool.submit(self._run)

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more data bytes (after the header) are in the file."""
        if self._result.done():
            self._result.result()  # a difference found already stops the write early
        with self._changed:
            self._complete += nbytes
            self._changed.notify()

    def finish(self) -> int:
        """Wait for the comparison of everything written; the number of tensors verified."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        try:
            return self._result.result()
        finally:
            self._pool.shutdown()

    def stop(self) -> None:
        """Abandon the comparison (the write failed) and wait for the thread to leave."""
        with self._changed:
            self._closed = self._stopped = True
            self._changed.notify()
        self._pool.shutdown()

    def __enter__(self) -> Readback:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.stop()

    def _wait_for(self, nbytes: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._complete >= nbytes or self._closed)
            if self._stopped:
                raise _Stopped

    def _run(self) -> int:
        try:
            self._wait_for(1)  # the header is written before the first data byte
            with self._path.open("rb") as fh:
                base, entries = _written_layout(fh, self._path, self._expected)
                regions, sources = MappedFiles(), _SourceFiles()
                with sources:
                    for name, start, end in entries:
                        want = self._expected[name]
                        region = regions.region(want)
                        source = sources.window(region) if region else _memory_window(want)
                        self._compare(fh.fileno(), name, base, start, end, source)
                self._wait_for(sys.maxsize)  # until the writer says it is done
                data_end = entries[-1][2] if entries else 0
                if self._complete != data_end or os.fstat(fh.fileno()).st_size != base + data_end:
                    raise SaveError(
                        f"verification failed: {self._path.name} does not end where its header says"
                    )
        except _Stopped:
            return 0
        return len(self._expected)

    def _compare(self, fd: int, name: str, base: int, start: int, end: int, source) -> None:
        for offset in range(start, end, WINDOW_BYTES):
            size = min(WINDOW_BYTES, end - offset)
            self._wait_for(offset + size)
            if os.fstat(fd).st_size < base + offset + size:
                raise SaveError(f"verification failed: tensor '{name}' is cut short in the file")
            with mapped_window(fd, base + offset, size) as got, source(offset - start, size) as want:
                if not _same_memory(got, want, size):
                    raise SaveError(f"verification failed: tensor '{name}' differs after writing")


def _written_layout(fh: BinaryIO, path: Path, expected: dict[str, torch.Tensor]) -> tuple[int, list]:
    """Parse the header as written: every expected tensor, right dtype and shape, packed in order."""
    raw = fh.read(8)
    (header_len,) = struct.unpack("<Q", raw) if len(raw) == 8 else (0,)
    try:
        header = json.loads(fh.read(header_len))
    except ValueError:
        raise SaveError(f"verification failed: {path.name} has an unreadable header") from None
    header.pop("__metadata__", None)
    missing = [k for k in expected if k not in header] or [k for k in header if k not in expected]
    if missing:
        raise SaveError(
            f"verification failed: {path.name} does not hold the model's tensors (e.g. {missing[0]})"
        )
    entries, end = [], 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        want = expected[name]
        start, stop = info["data_offsets"]
        if info["shape"] != list(want.shape) or info["dtype"] != _DTYPE_NAMES.get(want.dtype):
            raise SaveError(f"verification failed: tensor '{name}' has another shape or dtype in the file")
        if start != end or stop - start != want.numel() * want.element_size():
            raise SaveError(f"verification failed: tensor '{name}' has another size or place in the file")
        entries.append((name, start, stop))
        end = stop
    return 8 + header_len, entries


class _SourceFiles:
    """Open source files, by path, for comparing copied regions with the bytes they were copied from."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def window(self, region: Region):
        """A ``(offset, size) -> context of address`` over the region's bytes in its file."""
        fd = self._fds.get(region.path)
        if fd is None:
            fd = self._fds[region.path] = os.open(region.path, os.O_RDONLY)
        if os.fstat(fd).st_size < region.offset + region.nbytes:
            raise SaveError(f"verification failed: {region.path} changed while saving; save again")
        return lambda offset, size: mapped_window(fd, region.offset + offset, size)

    def __enter__(self) -> _SourceFiles:
        return self

    def __exit__(self, *exc) -> None:
        for fd in self._fds.values():
            os.close(fd)


def _memory_window(tensor: torch.Tensor):
    """A ``(offset, size) -> context of address`` over the tensor's bytes in memory."""
    t = _contiguous_cpu(tensor)
    return lambda offset, size: nullcontext(t.data_ptr() + offset)


def _same_memory(a: int, b: int, size: int) -> bool:
    """Byte equality of two address ranges at memcmp speed (libc's memcmp releases the GIL)."""
    if _MEMCMP is None:
        return ctypes.string_at(a, size) == ctypes.string_at(b, size)
    return _MEMCMP(a, b, size) == 0


# --- reading -----------------------------------------------------------------------------------------

HEADER_CAP = 100_000_000  # the format's own limit on the JSON header
_ITEM_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16, "I8": 8,
              "U8": 8, "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8}  # fmt: skip


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The file's tensors (memory-mapped views, read only when touched) and its ``__metadata__``.

    The header is checked against every rule of the format first, so a violation is one line naming
    the tensor and the rule (``safe_open`` misses duplicate names and a header not starting with ``{``
    and names no rule); then ``safetensors.safe_open``, the format's own validated reader, maps it.
    """
    from safetensors import SafetensorError, safe_open

    metadata = check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open is no dict)
    except (SafetensorError, RuntimeError, ValueError, TypeError) as err:
        raise SourceError(f"{path} breaks the safetensors format ({first_line(err)}); refused") from None
    return tensors, metadata


def check_safetensors_header(path: Path) -> dict[str, str]:
    """Check the header's rules (length, JSON object, entries, offsets, metadata); return the metadata."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        (length,) = struct.unpack("<Q", raw) if len(raw) == 8 else (-1,)
        if length < 2 or length > HEADER_CAP or length > size - 8:
            raise SourceError(
                f"{path}: the safetensors header length {length} is not sane (rule: 2 to "
                f"{HEADER_CAP:,} bytes, within the file's {size:,}); the file is truncated or not safetensors"
            )
        text = fh.read(length)
    if not text.startswith(b"{"):
        raise SourceError(f"{path}: the safetensors header does not start with '{{' (rule: a JSON object)")
    try:
        entries = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        raise SourceError(
            f"{path}: tensor '{dup}' appears twice in the header (rule: unique names)"
        ) from None
    except (UnicodeDecodeError, ValueError) as err:
        raise SourceError(f"{path}: the safetensors header is not valid JSON ({first_line(err)})") from None
    if not isinstance(entries, dict):
        raise SourceError(f"{path}: the safetensors header is not a JSON object")
    metadata = entries.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SourceError(f"{path}: __metadata__ must map strings to strings (rule: str -> str)")
    spans = sorted((_span(path, name, info), name) for name, info in entries.items())
    end = 0
    for (start, stop), name in spans:
        if start != end:
            problem = "overlaps the tensor before it" if start < end else f"leaves a gap at byte {end}"
            raise SourceError(f"{path}: tensor '{name}' {problem} (rule: offsets packed in order)")
        end = stop
    if 8 + length + end != size:
        raise SourceError(
            f"{path}: the tensors cover {end:,} data bytes but the file holds {size - 8 - length:,} "
            "(rule: offsets cover the data exactly); the file is truncated or padded"
        )
    return metadata


def _span(path: Path, name: str, info: object) -> tuple[int, int]:
    """A header entry's (start, stop) once its dtype, shape and offsets pass the rules."""
    if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"}:
        raise SourceError(f"{path}: tensor '{name}' is not an entry of dtype, shape and data_offsets")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in _ITEM_BITS:
        raise SourceError(f"{path}: tensor '{name}' has dtype {dtype!r}, which Head Studio cannot read")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise SourceError(f"{path}: tensor '{name}' has shape {shape!r} (rule: a list of non-negative ints)")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise SourceError(
            f"{path}: tensor '{name}' has data_offsets {offsets!r} (rule: [start, end], start <= end)"
        )
    count = 1
    for d in shape:
        count *= d
    if count * _ITEM_BITS[dtype] // 8 != offsets[1] - offsets[0]:
        raise SourceError(
            f"{path}: tensor '{name}' is {dtype} {shape} but spans {offsets[1] - offsets[0]:,} bytes "
            "(rule: shape x dtype size = byte length)"
        )
    return offsets[0], offsets[1]


class _Duplicate(ValueError):
    """A JSON object names a key twice."""


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out
