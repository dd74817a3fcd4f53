"""Recipes: source architecture + input shape + edits, as JSON (filled in by the surgery issue)."""

from __future__ import annotations

import json

from torch import nn

from .errors import SourceError
from .specs import build_model, parse_spec


def build_from_recipe(text: str) -> tuple[nn.Module, str]:
    """Rebuild the architecture a saved file's recipe describes (weights attached by the caller)."""
    try:
        data = json.loads(text)
        arch = data["arch"]
    except (ValueError, KeyError, TypeError):
        raise SourceError("the file's embedded recipe is unreadable; pass --arch") from None
    if data.get("edits"):
        raise SourceError("this file was edited by a newer Head Studio; pass --arch")
    return build_model(arch), str(parse_spec(arch))
