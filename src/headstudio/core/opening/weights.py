"""Attaching a state_dict to an architecture: strip wrapper prefixes, check keys, assign without copy."""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from headstudio.core.errors import ArchitectureMismatchError

_SHOW = 3


def align_keys(expected: set[str], found: dict[str, torch.Tensor]) -> tuple[dict, str, list[str]]:
    """Strip the wrapper prefix (``module.``, ``model.``, ``_orig_mod.`` ...) that best fits ``expected``.

    Training wrappers (DDP, Lightning, torch.compile, EMA) prefix every key; the prefix is found by
    trying each leading component, not from a fixed list. Keys outside the chosen prefix are dropped
    with a note when everything expected is found without them. Returns (weights, prefix, notes).
    """
    notes: list[str] = []
    best, best_hits, best_prefix = found, len(expected & found.keys()), ""
    current, prefix = found, ""
    for _ in range(3):
        firsts = Counter(k.split(".", 1)[0] for k in current if "." in k)
        if not firsts:
            break
        step = firsts.most_common(1)[0][0] + "."
        prefix += step  # nested wrappers (Lightning around DDP: 'model.module.') strip together
        current = {k[len(step) :]: v for k, v in current.items() if k.startswith(step)}
        hits = len(expected & current.keys())
        if hits > best_hits:
            dropped = len(found) - len(current)
            best, best_hits, best_prefix = current, hits, prefix
            notes = [f"stripped key prefix '{prefix}'"]
            if dropped:
                notes.append(f"ignored {dropped} keys outside '{prefix}'")
    counters = [k for k in expected - best.keys() if k.rsplit(".", 1)[-1] == "num_batches_tracked"]
    if counters:
        best = {**best, **{k: torch.zeros((), dtype=torch.long) for k in counters}}
        notes.append(
            f"filled {len(counters)} missing BatchNorm num_batches_tracked counters (older checkpoint)"
        )
    return best, best_prefix, notes


def check_keys(model: nn.Module, state_dict: dict[str, torch.Tensor], arch: str) -> None:
    """Raise a one-line error with counts and first names when weights and architecture disagree."""
    expected = model.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        k for k, v in state_dict.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
    if mismatched:
        k = mismatched[0]
        parts.append(
            f"{len(mismatched)} with other shapes ({k}: file {list(state_dict[k].shape)} vs "
            f"architecture {list(expected[k].shape)})"
        )
    hint = _hint(arch, state_dict, expected, mismatched, missing, unexpected)
    raise ArchitectureMismatchError(f"the weights do not fit {arch}: {'; '.join(parts)}; {hint}")


def _hint(arch, state_dict, expected, mismatched, missing, unexpected) -> str:
    if mismatched and not missing and not unexpected:
        rows = {state_dict[k].shape[0] for k in mismatched if state_dict[k].ndim >= 1}
        if len(rows) == 1 and "(" not in arch:
            return f"for a changed head try --arch '{arch}(num_classes={rows.pop()})'"
    return "check that --arch names the architecture these weights were trained with"


def _first(keys: list[str]) -> str:
    more = ", ..." if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def assign_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Attach tensors as the model's own (no copy: memory-mapped data stays mapped)."""
    model.load_state_dict(state_dict, strict=True, assign=True)
