"""The one shape grammar: traced shapes as text, and sizes typed by people back into tuples.

Pure Python (no torch), so the GUI can use it before PyTorch has finished importing.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from headstudio.core.errors import InputError


def format_shape(shape: Any, empty: str = "-") -> str:
    """[1, 1000] -> '[1, 1000]'; tuple outputs as '(…)', dict outputs as '{name: …}'; ``empty`` for None."""
    if shape is None:
        return empty
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {format_shape(v, empty)}" for k, v in shape.items()) + "}"
    if isinstance(shape, (list, tuple)) and shape and not all(isinstance(d, int) for d in shape):
        return "(" + ", ".join(format_shape(s, empty) for s in shape) + ")"
    return "[" + ", ".join(str(d) for d in shape) + "]"


def parse_sizes(text: str, what: str = "shape", example: str = "1,3,224,224") -> tuple[int, ...]:
    """'1,3,224,224', '1x3x224x224' or '[1, 3, 224, 224]' -> (1, 3, 224, 224); InputError otherwise."""
    cleaned = text.replace("×", ",").replace("[", "").replace("]", "").replace(";", ",")
    cleaned = cleaned.replace("(", "").replace(")", "").replace("x", ",")
    try:
        sizes = tuple(int(p) for p in cleaned.split(",") if p.strip())
    except ValueError:
        raise InputError(
            f"'{text}' is not a {what}; write positive sizes separated by commas, e.g. {example}"
        ) from None
    if not sizes or any(d <= 0 for d in sizes):
        raise InputError(f"'{text}': every size of a {what} must be a positive integer, e.g. {example}")
    return sizes


def sizes_argument(what: str = "shape", example: str = "1,3,224,224") -> Callable[[str], tuple[int, ...]]:
    """An argparse ``type=`` for sizes (the CLI's and the app's command lines share it)."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            return parse_sizes(text, what, example)
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse
