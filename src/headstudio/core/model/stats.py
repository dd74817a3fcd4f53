"""Numbers derived from a model for people to look at: per-block counts, memory, tensor statistics.

The app's chart, status bar and inspector show these; they compute nothing themselves.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

HISTOGRAM_BINS = 60


@dataclass(frozen=True)
class Block:
    """One top-level block of a model and its parameter counts."""

    name: str
    trainable: int
    frozen: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


def count_blocks(model: nn.Module) -> list[Block]:
    """Trainable / frozen parameters of each top-level child (and the model's own), skipping empty ones."""
    blocks = []
    own = list(model.parameters(recurse=False))
    if own:
        blocks.append(_block("(own)", own))
    for name, child in model.named_children():
        block = _block(name, list(child.parameters()))
        if block.total:
            blocks.append(block)
    return blocks


def _block(name: str, params: list[nn.Parameter]) -> Block:
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return Block(name, trainable, sum(p.numel() for p in params) - trainable)


def memory_bytes(model: nn.Module) -> int | None:
    """Bytes the model's loaded parameters and buffers take; None when no weight is loaded (all on meta)."""
    tensors = list(itertools.chain(model.parameters(), model.buffers()))
    if tensors and all(t.is_meta for t in tensors):
        return None
    return sum(t.numel() * t.element_size() for t in tensors if not t.is_meta)


def tensor_stats(tensor: torch.Tensor) -> tuple[float, float]:
    """(mean, std) of a tensor's values as floats; NaN where undefined (meta tensors, one element)."""
    if tensor.is_meta or tensor.numel() == 0:
        return math.nan, math.nan
    with torch.no_grad():
        values = tensor.detach().float()
        mean = values.mean().item()
        std = values.std().item() if values.numel() > 1 else math.nan
    return mean, std


def tensor_histogram(
    tensor: torch.Tensor, bins: int = HISTOGRAM_BINS
) -> tuple[list[float], list[float]] | None:
    """(bin edges, counts) of a tensor's values, or None for meta or empty tensors."""
    if tensor.is_meta or tensor.numel() == 0:
        return None
    with torch.no_grad():
        values = tensor.detach().float().flatten()
        low, high = values.min().item(), values.max().item()
        if low == high:
            low, high = low - 0.5, high + 0.5
        counts = torch.histc(values, bins=bins, min=low, max=high)
    edges = torch.linspace(low, high, bins + 1)
    return edges.tolist(), counts.tolist()
