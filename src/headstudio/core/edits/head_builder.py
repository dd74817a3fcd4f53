"""One description of a new head, built as modules and written as code from the same list of layers.

``HeadSpec.layers()`` is the single source: ``build`` instantiates each ``(class, args, kwargs)`` from
``torch.nn`` and ``code`` prints the same triples, so the module a user gets and the snippet they copy
cannot drift apart.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from headstudio.core.errors import EditError, size_text

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
Layer = tuple[str, tuple, dict[str, Any]]  # torch.nn class name, positional args, keyword args


@dataclass(frozen=True)
class HeadSpec:
    """[Dropout] Linear (or a conv like ``conv``) from in_features to num_classes; an MLP if ``hidden``."""

    in_features: int
    num_classes: int
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    dropout: float = 0.0
    conv: str | None = None  # Conv1d / Conv2d / Conv3d: the first layer mirrors the old conv head
    conv_kwargs: dict[str, Any] = field(default_factory=dict)
    bias: bool = (
        True  # False mirrors a bias-free Linear head (LLM ``score``/``lm_head``), so its class loads it
    )

    @classmethod
    def like(cls, old: nn.Module | None, in_features: int, num_classes: int, **kwargs: Any) -> HeadSpec:
        """A spec whose first layer is a conv of the old head's kind and geometry when ``old`` is a conv."""
        if isinstance(old, nn.Linear):
            return cls(in_features, num_classes, bias=old.bias is not None, **kwargs)
        if not isinstance(old, CONVS):
            return cls(in_features, num_classes, **kwargs)
        return cls(
            in_features, num_classes, conv=type(old).__name__, conv_kwargs=conv_geometry(old), **kwargs
        )

    def layers(self) -> list[Layer]:
        """The head as (class, args, kwargs) triples, in order."""
        sizes = [self.in_features, *self.hidden, self.num_classes]
        out: list[Layer] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            if self.dropout:
                out.append(("Dropout", (self.dropout,), {}))
            if self.conv is None:
                last = i == len(sizes) - 2
                out.append(("Linear", (a, b), {} if self.bias or not last else {"bias": False}))
            elif i == 0:
                out.append((self.conv, (a, b), dict(self.conv_kwargs)))
            else:
                out.append(
                    (self.conv, (a, b), {"kernel_size": 1, "bias": self.conv_kwargs.get("bias", True)})
                )
            if i < len(sizes) - 2:
                out.append((ACTIVATIONS[self.activation].__name__, (), {}))
        return out

    def build(self, seed: int | None = None) -> nn.Module:
        """The head as CPU modules with default init (reproducible with ``seed``; global RNG untouched).

        Sized on the meta device first: a head larger than the memory free now is refused, not allocated.
        """
        with torch.device("meta"):
            size = sum(p.numel() * p.element_size() for m in self._modules() for p in m.parameters())
        free = free_memory()
        if free is not None and size > free:
            raise EditError(
                f"the new head needs {size_text(size)} ({self.in_features} -> {self.num_classes} classes) "
                f"but {size_text(free)} of memory is free; ask for fewer classes or hidden units"
            )
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            modules = self._modules()
        return modules[0] if len(modules) == 1 else nn.Sequential(*modules)

    def _modules(self) -> list[nn.Module]:
        return [getattr(nn, name)(*args, **kwargs) for name, args, kwargs in self.layers()]

    def code(self) -> str:
        """The constructor expression ``build`` corresponds to, e.g. ``nn.Linear(512, 10)``."""
        parts = [f"nn.{name}({_arguments(args, kwargs)})" for name, args, kwargs in self.layers()]
        return parts[0] if len(parts) == 1 else "nn.Sequential(" + ", ".join(parts) + ")"


def conv_geometry(conv: Any) -> dict[str, Any]:
    """A conv layer's constructor keywords besides its channels, so a new layer can mirror it."""
    kwargs = {
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "bias": conv.bias is not None,
        "padding_mode": conv.padding_mode,
    }
    if getattr(conv, "transposed", False):
        kwargs["output_padding"] = conv.output_padding
    return kwargs


def free_memory() -> int | None:
    """Bytes of memory the system could give this process now (Linux MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _arguments(args: tuple, kwargs: dict[str, Any]) -> str:
    return ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
