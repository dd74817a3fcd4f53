"""The surgery core: open a source, derive its tree, apply edits, save verified files. Never imports Qt.

``from headstudio.core import open_source, save`` imports lazily, so ``headstudio.core.errors`` (and the
GUI that needs only it at start-up) does not pay for ``import torch``.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "open_source": "headstudio.core.opening.sources",
    "save": "headstudio.core.saving.atomic",
    "Document": "headstudio.core.model.document",
    "Recipe": "headstudio.core.recipe",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'headstudio.core' has no attribute {name!r}")
