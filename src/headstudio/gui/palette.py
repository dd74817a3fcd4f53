"""Colours that stay readable in light and dark palettes: messages and charts."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QColor, QPalette


def _dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def problem_color(palette: QPalette) -> QColor:
    """A red readable on this palette's window colour (dark mode gets a lighter red)."""
    return QColor("#ff6b6b") if _dark(palette) else QColor("#c62828")


def warning_color(palette: QPalette) -> QColor:
    """An amber readable on this palette's window colour."""
    return QColor("#ffb74d") if _dark(palette) else QColor("#a35a00")


def style_plot(plot: Any, palette: QPalette) -> QColor:
    """Give a pyqtgraph plot the palette's background and axis colours; returns the text colour."""
    text = palette.color(QPalette.ColorRole.Text)
    plot.setBackground(palette.color(QPalette.ColorRole.Base))
    for axis in ("left", "bottom"):
        plot.getAxis(axis).setTextPen(text)
        plot.getAxis(axis).setPen(text)
    return text
