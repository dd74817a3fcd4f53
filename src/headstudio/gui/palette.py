"""Colours for messages that stay readable in light and dark palettes."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette


def _dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def problem_color(palette: QPalette) -> QColor:
    """A red readable on this palette's window colour (dark mode gets a lighter red)."""
    return QColor("#ff6b6b") if _dark(palette) else QColor("#c62828")


def warning_color(palette: QPalette) -> QColor:
    """An amber readable on this palette's window colour."""
    return QColor("#ffb74d") if _dark(palette) else QColor("#a35a00")
