"""Writing .safetensors by streaming each tensor's bytes: no second copy of the weights in memory.

``safetensors.torch.save_file`` turns every tensor into a ``bytes`` object before writing, so its peak
memory is the model's size, and it refuses tensors that share storage. Writing the (simple) format
directly keeps memory-mapped weights mapped and writes tied tensors as separate entries, so the file
loads with plain ``load_file`` + ``load_state_dict``.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .errors import SaveError
from .mapped_regions import MappedFiles, copy_region, read_region

CHUNK_BYTES = 64 << 20
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

    Memory-mapped tensors whose pages are unmodified are copied file to file, never paged in.
    """
    header, order = safetensors_header(tensors, metadata)
    fh.write(header)
    written = len(header)
    mapped = MappedFiles()
    for _name, tensor in order:
        region = mapped.region(tensor)
        if region is not None:
            fh.flush()
            copy_region(region, fh.fileno(), CHUNK_BYTES, tick)
            written += region.nbytes
            continue
        for chunk in _byte_chunks(tensor):
            view = memoryview(chunk)
            while view:
                view = view[fh.write(view) :]
            written += len(chunk)
            if tick:
                tick(len(chunk))
    return written


def _byte_chunks(tensor: torch.Tensor):
    """A tensor's raw bytes as memoryview slices of (at most) CHUNK_BYTES, without copying it whole."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.numel() == 0:
        return
    if not t.is_contiguous():
        t = t.contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy()
    view = memoryview(raw)
    for start in range(0, len(view), CHUNK_BYTES):
        yield view[start : start + CHUNK_BYTES]


def compare_safetensors(path: Path, expected: dict[str, torch.Tensor]) -> int:
    """Compare every tensor's bytes in the file with ``expected``, reading in chunks (no mapping, no copy).

    Reading instead of memory-mapping keeps the verification from doubling the process's memory.
    """
    with path.open("rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_len))
        header.pop("__metadata__", None)
        base = 8 + header_len
        missing = [k for k in expected if k not in header]
        if missing:
            raise SaveError(
                f"verification failed: {path.name} lacks {len(missing)} tensors (e.g. {missing[0]})"
            )
        size = min(CHUNK_BYTES, max(1, _largest(expected)))
        buffer, source_buffer = bytearray(size), bytearray(size)
        mapped = MappedFiles()
        with ThreadPoolExecutor(1) as pool:  # the written file is read while the source is read
            for name, want in expected.items():
                info = header[name]
                if info["shape"] != list(want.shape) or info["dtype"] != _DTYPE_NAMES.get(want.dtype):
                    raise SaveError(
                        f"verification failed: tensor '{name}' has another shape or dtype in the file"
                    )
                start, end = info["data_offsets"]
                if end - start != want.numel() * want.element_size():
                    raise SaveError(f"verification failed: tensor '{name}' has another size in the file")
                region = mapped.region(want)
                source = iter(read_region(region, source_buffer) if region else _byte_chunks(want))
                done, nbytes = 0, end - start
                while done < nbytes:
                    view = memoryview(buffer)[: min(size, nbytes - done)]
                    written = pool.submit(os.preadv, fh.fileno(), [view], base + start + done)
                    chunk = next(source)  # read while the pool reads the written file
                    if written.result() != len(view) or not _same_bytes(view, chunk):
                        raise SaveError(f"verification failed: tensor '{name}' differs after writing")
                    done += len(view)
    return len(expected)


def _same_bytes(a: memoryview, b: Any) -> bool:
    """Byte equality at memcmp speed (memoryview ``==`` goes item by item, ~50x slower)."""
    x, y = np.frombuffer(a, dtype=np.uint8), np.frombuffer(b, dtype=np.uint8)
    if len(x) != len(y):
        return False
    if _MEMCMP is None:
        return x.tobytes() == y.tobytes()
    return _MEMCMP(x.ctypes.data, y.ctypes.data, len(x)) == 0


def _largest(tensors: dict[str, torch.Tensor]) -> int:
    return max((t.numel() * t.element_size() for t in tensors.values()), default=0)
