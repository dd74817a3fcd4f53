"""What a pickle would import, found without running it; the basis of consent to load code."""

from __future__ import annotations

import _compat_pickle
import argparse
import io
import pickletools
import zipfile
from pathlib import Path
from typing import BinaryIO

import torch

_LEGACY_PICKLES = 5  # magic number, protocol, sys info, the object, storage keys


def unsafe_globals(path: str | Path) -> list[str]:
    """Globals the file needs beyond what ``torch.load(weights_only=True)`` allows; nothing is executed."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            benign = {name for _, name in benign_globals()}
            return sorted(set(found) - benign)
        except Exception:
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(name) if name else b""
            return _not_allowed(_pickle_globals(data))
    with path.open("rb") as fh:
        return _not_allowed(_pickle_globals(fh))


def benign_globals() -> list[tuple[object, str]]:
    """Data-only classes common in training checkpoints (argparse args, numpy values), allowed to load.

    They rebuild plain values from already-unpickled data and never run code of the file's choosing;
    timm and many training scripts store ``args`` and numpy metrics next to the weights.
    """
    found: list[tuple[object, str]] = [(argparse.Namespace, "argparse.Namespace")]
    try:
        import numpy as np
    except ImportError:
        return found
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None) or np.core.multiarray
    for attr in ("_reconstruct", "scalar"):
        for module in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2 and 1 spellings
            found.append((getattr(multiarray, attr), f"{module}.{attr}"))
    found += [(np.dtype, "numpy.dtype"), (np.ndarray, "numpy.ndarray")]
    for code in "?bhilqBHILQefdFD":
        cls = type(np.dtype(code))
        found.append((cls, f"{cls.__module__}.{cls.__qualname__}"))
    return found


def _pickle_globals(data: bytes | BinaryIO) -> list[str]:
    """Every ``module.name`` a (possibly multi-part, legacy torch) pickle stream refers to.

    A legacy torch file is five pickles followed by raw tensor bytes; the stream is read
    incrementally and the tensor bytes are never scanned, so a multi-GB file costs little.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    found: list[str] = []
    for _ in range(_LEGACY_PICKLES):
        try:
            found += _globals_in_one_pickle(stream)
        except Exception:
            break  # end of the stream, or tensor data after the pickles
    return [_python3_name(name) for name in found]


def _globals_in_one_pickle(stream: BinaryIO) -> list[str]:
    """Globals of one pickle; follows the memo so STACK_GLOBAL names fetched with GET are right."""
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, object] = {}
    last: object = None
    for opcode, arg, _pos in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            found.append(str(arg).replace(" ", "."))
        elif name == "STACK_GLOBAL" and len(strings) >= 2:
            found.append(f"{strings[-2]}.{strings[-1]}")
        if name == "MEMOIZE":
            memo[len(memo)] = last
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = last
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            last = memo.get(int(arg))
            if isinstance(last, str):
                strings.append(last)
        elif isinstance(arg, str):
            last = arg
            strings.append(arg)
        else:
            last = None
    return found


def _python3_name(name: str) -> str:
    """Python 2 names in legacy pickles (``__builtin__.set``) as Python 3 unpickles them."""
    module, _, attr = name.rpartition(".")
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        return ".".join(_compat_pickle.NAME_MAPPING[(module, attr)])
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"


def _not_allowed(names: list[str]) -> list[str]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # private API moved: be conservative and report everything non-builtin
        allowed = set()
    allowed |= {f"{g.__module__}.{g.__qualname__}" for g in _safe_user_globals()}
    allowed |= {name for _, name in benign_globals()}
    return sorted({n for n in names if n not in allowed and not n.startswith("torch._utils.")})


def _safe_user_globals() -> list[type]:
    out = []
    for entry in torch.serialization.get_safe_globals():
        obj = entry[0] if isinstance(entry, tuple) else entry
        if hasattr(obj, "__qualname__"):
            out.append(obj)
    return out
