"""What a pickle would import, found without running it; the basis of consent to load code.

Two readings of the same bytes, both without importing anything the file names: a static pass over
the opcodes (every GLOBAL / INST / STACK_GLOBAL name) and a dry run by an unpickler whose
``find_class`` hands back inert stand-ins, so names computed at load time (a STACK_GLOBAL fed by the
memo, ``torch._utils._import_dotted_name('os.system')``) are seen as the real load would see them.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import contextlib
import io
import pickle
import pickletools
from pathlib import Path
from typing import Any, BinaryIO

import torch

from headstudio.core.errors import printable
from headstudio.core.opening.archive_rules import read_pickle_members

_LEGACY_PICKLES = 5  # magic number, protocol, sys info, the object, storage keys
# Callables that import whatever name they are given: the name they receive is listed too.
_IMPORTERS = frozenset(
    {"torch._utils._import_dotted_name", "importlib.import_module", "builtins.__import__",
     "builtins.getattr", "operator.attrgetter", "pydoc.locate", "pkgutil.resolve_name"}
)  # fmt: skip


def unsafe_globals(path: str | Path) -> list[str]:
    """Globals the file needs beyond what ``torch.load(weights_only=True)`` allows; nothing is executed."""
    path = Path(path)
    with path.open("rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # torch's own test: junk before a zip makes it a legacy pickle
            fh.seek(0)
            return _not_allowed(pickle_globals(fh))
    return _not_allowed([name for data in read_pickle_members(path) for name in pickle_globals(data)])


def pickle_globals(data: bytes | BinaryIO) -> list[str]:
    """Every ``module.name`` a (possibly multi-part, legacy torch) pickle stream would import or resolve.

    A legacy torch file is five pickles followed by raw tensor bytes; the stream is read pickle by
    pickle and the tensor bytes are never scanned, so a multi-GB file costs little.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    found: list[str] = []
    for _ in range(_LEGACY_PICKLES):
        start = stream.tell()
        try:
            found += _globals_in_one_pickle(stream)
        except Exception:
            break  # end of the stream, or tensor data after the pickles
        end = stream.tell()
        stream.seek(start)
        found += _dry_run(stream)
        stream.seek(end)
    return sorted({printable(_python3_name(name))[:200] for name in found})  # names may hold escapes


def _globals_in_one_pickle(stream: BinaryIO) -> list[str]:
    """Globals of one pickle by its opcodes; follows the memo so STACK_GLOBAL names fetched with GET count."""
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


class _Inert:
    """Stands in for anything a pickle names: accepts every call, state and item, does nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        seen = getattr(cls, "seen", None)
        if seen is not None and getattr(cls, "imports", False):
            seen += [a for a in args if isinstance(a, str)]
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        """APPEND on a stand-in."""

    def extend(self, values: Any) -> None:
        """APPENDS on a stand-in."""


class _DryRun(pickle.Unpickler):
    """An unpickler that records each name it is asked for and returns an inert stand-in instead."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__(stream, encoding="latin1")
        self.names: list[str] = []

    def find_class(self, module: str, name: str) -> type:
        full = f"{module}.{name}"
        self.names.append(full)
        # names an importer receives are recorded as imported too (via the class's shared list)
        return type(name, (_Inert,), {"seen": self.names, "imports": full in _IMPORTERS})

    def persistent_load(self, pid: Any) -> _Inert:
        return _Inert()


def _dry_run(stream: BinaryIO) -> list[str]:
    unpickler = _DryRun(stream)
    with contextlib.suppress(Exception):  # what was seen before a failure counts; the static pass the rest
        unpickler.load()
    return [n if "." in n or ":" in n else f"{n} (a name given to an importer)" for n in unpickler.names]


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


def _python3_name(name: str) -> str:
    """Python 2 names in legacy pickles (``__builtin__.set``) as Python 3 unpickles them."""
    if " " in name:
        return name
    module, _, attr = name.rpartition(".")
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        return ".".join(_compat_pickle.NAME_MAPPING[(module, attr)])
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"


def _not_allowed(names: list[str]) -> list[str]:
    """The names torch's weights-only loader would refuse (torch's own gadgets included)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # private API moved: be conservative and report everything non-builtin
        allowed = set()
    allowed |= {f"{g.__module__}.{g.__qualname__}" for g in _safe_user_globals()}
    allowed |= {name for _, name in benign_globals()}
    return sorted({n for n in names if n not in allowed})


def _safe_user_globals() -> list[type]:
    out = []
    for entry in torch.serialization.get_safe_globals():
        obj = entry[0] if isinstance(entry, tuple) else entry
        if hasattr(obj, "__qualname__"):
            out.append(obj)
    return out
