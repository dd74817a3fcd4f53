"""Importing PyTorch on a worker thread without freezing the UI thread.

A thread holds Python's GIL while the interpreter loads a native extension and while the garbage
collector runs, so a plain ``import torch`` off the UI thread still stalls it for 0.2–0.5 s at a time:
``dlopen`` of libtorch (hundreds of MB of relocations and static initialisers) and full collections over
the millions of objects the import creates. We load the libraries first through a ctypes call (which
releases the GIL), keep the collector off during the import, then freeze what it created. A tiny trace
then pulls in what opening a model imports lazily (torchvision, sympy for fake tensors, …), here rather
than in the middle of loading a checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import importlib.util
import os
import sys
from pathlib import Path

_settled = False  # the first call froze the imported objects and ran the warm-up trace
# libtorch_global_deps pulls in the CUDA runtime libraries (when present), libtorch_python the rest.
_NATIVE = ("libtorch_global_deps", "libtorch_python")


def settle_imports(modules: tuple[str, ...] | list[str]) -> None:
    """Import ``modules`` (which import torch) so the UI thread keeps running, then freeze them for the GC."""
    global _settled
    if "torch" not in sys.modules:
        preload_torch_libraries()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            importlib.import_module(name)
        if not _settled:
            _settled = True
            _trace_a_tiny_model()
            gc.freeze()  # later collections skip these objects, so they stay short
    finally:
        if enabled:
            gc.enable()


def preload_torch_libraries() -> int:
    """``dlopen`` torch's native libraries with the GIL released; the import then finds them loaded.

    Returns how many were loaded. Best effort: on another platform or layout nothing is preloaded and
    ``import torch`` loads them itself, as usual.
    """
    if not sys.platform.startswith("linux"):
        return 0
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return 0
    libdir = Path(spec.origin).parent / "lib"
    try:
        libc = ctypes.CDLL(None)  # a foreign call through CDLL releases the GIL while it runs
        dlopen = libc.dlopen
    except (OSError, AttributeError):
        return 0
    dlopen.restype = ctypes.c_void_p
    dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    loaded = 0
    for name in _NATIVE:
        path = libdir / f"{name}.so"
        if path.exists() and dlopen(os.fsencode(path), os.RTLD_NOW | os.RTLD_GLOBAL):
            loaded += 1
    return loaded


def _trace_a_tiny_model() -> None:
    """Run the core's shape trace once, so its lazy imports happen now, with the collector off.

    Warm-up only: if it fails, opening a model reports the real problem.
    """
    import torch
    import torchvision.models  # noqa: F401  (builds of torchvision specs import it, and PIL with it)

    from headstudio.core.model.shapes import trace_model

    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    with contextlib.suppress(Exception):
        trace_model(tiny, (1, 3, 8, 8))
