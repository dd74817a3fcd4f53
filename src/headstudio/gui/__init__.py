"""The desktop app: a PySide6 front door over the surgery core."""

from __future__ import annotations

from typing import Any

__all__ = ["DocumentController", "MainWindow"]


def __getattr__(name: str) -> Any:
    """``headstudio.gui.MainWindow`` without importing Qt widgets for every ``headstudio.gui.x`` import."""
    if name == "MainWindow":
        from .main_window import MainWindow

        return MainWindow
    if name == "DocumentController":
        from .controller import DocumentController

        return DocumentController
    raise AttributeError(f"module 'headstudio.gui' has no attribute {name!r}")
