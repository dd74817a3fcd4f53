"""Small pure helpers over ``nn.Module``: find, swap and name submodules, copy structure, feature sizes.

One home for them (timm's ``_manipulate.py`` idea): edits, tracing and saving call these, never rewrite them.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch import nn

from headstudio.core.errors import EditError

Shape = Any


def meta_copy(model: nn.Module) -> nn.Module:
    """Deep copy of the module structure with every parameter and buffer replaced by a meta tensor."""
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = (
            nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
        )
    return copy.deepcopy(model, memo)


def structure_copy(model: nn.Module) -> nn.Module:
    """Deep copy of the module structure sharing every parameter and buffer (no weight is copied).

    Tracing or previewing the copy never touches ``model``, so another thread may edit it meanwhile.
    """
    memo: dict[int, Any] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def find_module(model: nn.Module, path: str, what: str = "module") -> nn.Module:
    """The module at ``path``, or an EditError naming close paths."""
    try:
        return model.get_submodule(path)
    except RuntimeError:  # a TorchScript module has no get_submodule, but lists its modules
        found = dict(model.named_modules()).get(path)
        if found is not None:
            return found
    except AttributeError:
        pass
    import difflib

    paths = [p for p, _ in model.named_modules() if p]
    close = difflib.get_close_matches(path, paths, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "pick a path from the module tree"
    raise EditError(f"no {what} '{path}' in this model; {hint}")


def swap_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``path`` and return the module that was there."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    old = parent._modules[name]
    parent._modules[name] = new
    return old


def module_expr(model: nn.Module, path: str) -> str:
    """Python expression for the module at ``path`` on ``model``: ``model.classifier[1]``."""
    expr, module = "model", model
    for part in path.split(".") if path else []:
        if part.isidentifier():
            expr += f".{part}"
        elif isinstance(module, (nn.Sequential, nn.ModuleList)) and part.isdigit():
            expr += f"[{part}]"
        else:
            expr += f".get_submodule({part!r})"
        module = module._modules[part]  # type: ignore[assignment]
    return expr


def feature_size(shape: Shape, channels: bool) -> int | None:
    """Feature count of a traced tensor shape: dim 1 for conv inputs, else the last dim."""
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) for d in shape):
        return None
    return shape[1] if channels and len(shape) > 2 else shape[-1]


def float_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype of the module's parameters (the default dtype when it has none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def real_device(module: nn.Module) -> torch.device:
    """Where the module's weights live; CPU for a module on meta (its replacement gets real weights)."""
    p = next(module.parameters(), None)
    return torch.device("cpu") if p is None or p.is_meta else p.device
