"""What one module's output looked like for a real input: statistics and a picture-ready array.

Conv outputs (N, C, H, W) become feature maps (the first ``MAX_MAPS`` channels, tiled by ``grid()``),
sequence outputs (N, T, C) a token x channel matrix, vectors a row of values. Statistics are computed
over the whole output; the arrays are of the first batch item and are shrunk for display when huge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_leaves

from headstudio.core.model.heads import as_plain_tree

MAX_MAPS = 64
MAX_SIDE = 128  # feature maps larger than this are average-pooled for display
MAX_SEQUENCE = 512  # tokens or channels beyond this are average-pooled for display
_CHANNELS_FIRST_1D = (
    nn.Conv1d,
    nn.ConvTranspose1d,
    nn.BatchNorm1d,
    nn.InstanceNorm1d,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
)


@dataclass
class Activation:
    """A module's output: shape, statistics, and ``data`` shaped for display by ``layout``."""

    path: str
    type: str
    shape: list[int]
    layout: str  # maps | sequence | vector | scalar | none
    stats: dict[str, float] = field(default_factory=dict)
    data: np.ndarray | None = None  # float16; maps: (k, H, W); sequence: (T, C); vector: (C,)
    channels: int = 0  # all maps / channels, of which ``data`` may show fewer
    note: str = ""

    def grid(self, columns: int | None = None) -> np.ndarray:
        """Feature maps tiled into one 2-D image, each map scaled to [0, 1]; NaN between the tiles."""
        if self.layout != "maps" or self.data is None:
            raise ValueError(f"{self.path or 'the output'} has no feature maps ({self.layout})")
        maps = self.data.astype(np.float32)
        count, height, width = maps.shape
        columns = columns or max(1, math.ceil(math.sqrt(count)))
        rows = math.ceil(count / columns)
        out = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan, dtype=np.float32)
        low = maps.reshape(count, -1).min(axis=1)
        span = maps.reshape(count, -1).max(axis=1) - low
        for i in range(count):
            r, c = divmod(i, columns)
            scaled = (maps[i] - low[i]) / span[i] if span[i] > 0 else np.zeros_like(maps[i])
            out[r * (height + 1) : r * (height + 1) + height, c * (width + 1) : c * (width + 1) + width] = (
                scaled
            )
        return out

    def describe(self) -> str:
        """'feature maps 64 x 56x56; min -1.2, max 5.3, mean 0.31, std 0.7, zeros 41%'."""
        s = self.stats
        what = {
            "maps": f"feature maps {self.channels} x {'x'.join(map(str, self.shape[-2:]))}",
            "sequence": f"{self.shape[-2]} tokens x {self.shape[-1]} channels",
            "vector": f"vector of {self.channels}",
            "scalar": "a single value",
        }.get(self.layout, "no tensor output")
        if not s:
            return what
        numbers = f"min {s['min']:.4g}, max {s['max']:.4g}, mean {s['mean']:.4g}, std {s['std']:.4g}"
        extra = f", zeros {s['zeros']:.0%}" + (f", {int(s['nonfinite'])} NaN/inf" if s["nonfinite"] else "")
        return f"{what}; {numbers}{extra}" + (f" ({self.note})" if self.note else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "shape": self.shape,
            "layout": self.layout,
            "stats": self.stats,
            "channels": self.channels,
            "note": self.note,
        }


def summarize(path: str, module: nn.Module, output: Any) -> Activation:
    """Statistics and a display array of ``module``'s output (the first tensor of a tuple/dict output)."""
    leaves = [t for t in tree_leaves(as_plain_tree(output)) if isinstance(t, torch.Tensor)]
    if not leaves:
        return Activation(path, type(module).__name__, [], "none")
    tensor = leaves[0].detach()
    note = f"first of {len(leaves)} output tensors" if len(leaves) > 1 else ""
    act = Activation(path, type(module).__name__, list(tensor.shape), "scalar", _stats(tensor), note=note)
    if not tensor.is_floating_point():
        tensor = tensor.float()
    item = tensor[0] if tensor.ndim >= 2 else tensor
    if tensor.ndim == 4 and item[0].numel() == 1:  # pooled to 1x1: one value per channel
        act.layout, act.channels = "vector", int(item.shape[0])
        act.data = _numpy(item.reshape(-1))
    elif tensor.ndim == 4:
        act.layout, act.channels = "maps", int(item.shape[0])
        act.data = _numpy(_shrink_maps(item[:MAX_MAPS]))
    elif tensor.ndim == 3:
        matrix = item.transpose(0, 1) if isinstance(module, _CHANNELS_FIRST_1D) else item
        act.layout, act.channels = "sequence", int(matrix.shape[1])
        act.data = _numpy(_shrink_matrix(matrix))
    elif tensor.ndim in (1, 2):
        act.layout, act.channels = "vector", int(item.shape[-1])
        act.data = _numpy(item.reshape(-1))
    return act


def _stats(tensor: torch.Tensor) -> dict[str, float]:
    if tensor.numel() == 0:
        return {}
    values = tensor.float() if not tensor.is_floating_point() or tensor.dtype != torch.float32 else tensor
    finite = torch.isfinite(values)
    nonfinite = int(values.numel() - finite.sum().item())
    shown = values[finite] if nonfinite else values
    if shown.numel() == 0:
        return {
            "min": math.nan,
            "max": math.nan,
            "mean": math.nan,
            "std": math.nan,
            "zeros": 0.0,
            "nonfinite": nonfinite,
        }
    low, high = torch.aminmax(shown)
    return {
        "min": low.item(),
        "max": high.item(),
        "mean": shown.mean().item(),
        "std": shown.std().item() if shown.numel() > 1 else 0.0,
        "zeros": (values == 0).float().mean().item(),
        "nonfinite": float(nonfinite),
    }


def _shrink_maps(maps: torch.Tensor) -> torch.Tensor:
    height, width = maps.shape[-2:]
    if max(height, width) <= MAX_SIDE:
        return maps
    scale = MAX_SIDE / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.adaptive_avg_pool2d(maps.unsqueeze(0), size)[0]


def _shrink_matrix(matrix: torch.Tensor) -> torch.Tensor:
    rows, cols = matrix.shape
    if rows <= MAX_SEQUENCE and cols <= MAX_SEQUENCE:
        return matrix
    size = (min(rows, MAX_SEQUENCE), min(cols, MAX_SEQUENCE))
    return F.adaptive_avg_pool2d(matrix[None, None], size)[0, 0]


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    shown = tensor.detach().float().clamp(-65504.0, 65504.0)  # float16 range: enough for a picture
    return shown.to(torch.float16).cpu().numpy().copy()
