"""What a pickle would import, found without running it; the basis of consent to load code."""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

import torch

_GLOBAL_OPS = {"GLOBAL", "INST", "STACK_GLOBAL"}


def unsafe_globals(path: str | Path) -> list[str]:
    """Globals the file needs beyond what ``torch.load(weights_only=True)`` allows; nothing is executed."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        try:
            return sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))))
        except Exception:
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(name) if name else b""
            return _not_allowed(_pickle_globals(data))
    return _not_allowed(_pickle_globals(path.read_bytes()))


def _pickle_globals(data: bytes) -> list[str]:
    """Every ``module.name`` a (possibly multi-part, legacy torch) pickle stream refers to."""
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        strings: list[str] = []
        try:
            for opcode, arg, _pos in pickletools.genops(stream):
                if isinstance(arg, str):
                    strings.append(arg)
                if opcode.name == "GLOBAL" or opcode.name == "INST":
                    found.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
        except Exception:
            break  # tensor data follows the pickles in the legacy format
    return found


def _not_allowed(names: list[str]) -> list[str]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # private API moved: be conservative and report everything non-builtin
        allowed = set()
    allowed |= {f"{g.__module__}.{g.__qualname__}" for g in _safe_user_globals()}
    return sorted({n for n in names if n not in allowed and not n.startswith("torch._utils.")})


def _safe_user_globals() -> list[type]:
    out = []
    for entry in torch.serialization.get_safe_globals():
        obj = entry[0] if isinstance(entry, tuple) else entry
        if hasattr(obj, "__qualname__"):
            out.append(obj)
    return out
