"""The Probe panel's two pictures: a head's top-k as horizontal bars, a module's activation as an image."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from .palette import style_plot

BAR_HEIGHT = 0.7
BAR_PIXELS = 22  # chart height per class shown
MAX_NAME = 28


class HeadChart(QWidget):
    """One head's top-k classes: bars of softmax probability, best on top, labelled by name or index."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel(objectName="headChartTitle", wordWrap=True)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "probability (softmax)")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)  # 0.36, not 360 (x0.001)
        self.bars = pg.BarGraphItem(x0=[0], y=[0], height=BAR_HEIGHT, width=[0])
        self.plot.addItem(self.bars)
        self.labels: list[str] = []  # the y-axis labels, best first
        self.values: list[float] = []  # the probabilities drawn, best first
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.addWidget(self.title)
        layout.addWidget(self.plot)
        self._style()

    def show_head(self, head: Any) -> None:
        """Draw ``head`` (a core HeadOutput)."""
        names = f"names from {head.classes_from}" if head.classes_from else "class indices"
        returned = {True: " — returned by the model", False: " — not returned"}.get(head.active, "")
        reduced = f"; {head.reduced}" if head.reduced else ""
        self.title.setText(
            f"<b>{head.name}</b> ({head.type}, {head.size} outputs; {names}{reduced}){returned}"
        )
        top = head.top
        self.labels = [_label(t) for t in top]
        self.values = [t.probability for t in top]
        count = len(top)
        ys = [count - 1 - i for i in range(count)]
        self.bars.setOpts(x0=[0] * count, y=ys, width=self.values, height=BAR_HEIGHT)
        axis = self.plot.getAxis("left")
        axis.setTicks([[(y, text) for y, text in zip(ys, self.labels, strict=True)], []])
        axis.setWidth(max((self.fontMetrics().horizontalAdvance(t) for t in self.labels), default=20) + 14)
        self.plot.setFixedHeight(BAR_PIXELS * max(count, 1) + 48)
        self.plot.setRange(
            xRange=(0, max(max(self.values, default=0.0) * 1.1, 1e-6)), yRange=(-0.6, count - 0.4), padding=0
        )

    def _style(self) -> None:
        palette = self.palette()
        style_plot(self.plot, palette)
        self.bars.setOpts(brush=pg.mkBrush(palette.color(QPalette.ColorRole.Highlight)), pen=pg.mkPen(None))


class ActivationView(QWidget):
    """A module's output: feature-map grid or token x channel heatmap (image), or a vector (curve)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.caption = QLabel("Run a probe, then select a module in the tree", objectName="activationCaption")
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plot = pg.PlotWidget(objectName="activationPlot")
        self.plot.setMenuEnabled(False)
        self.plot.setMinimumHeight(200)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.curve = self.plot.plot([], [])
        self.plot.addItem(self.image)
        self.colormaps = {name: pg.colormap.get(name) for name in ("viridis", "CET-D1")}  # read once, now
        self.shown: np.ndarray | None = None  # what is drawn: 2-D image array or 1-D values
        self.layout_shown = ""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.plot, 1)
        self.plot.setBackground(self.palette().color(QPalette.ColorRole.Base))

    def clear(self, message: str) -> None:
        """Show nothing but ``message``."""
        self.caption.setText(message)
        self.image.clear()
        self.curve.setData([], [])
        self.shown, self.layout_shown = None, ""

    def show_activation(self, act: Any) -> None:
        """Draw a core Activation."""
        self.caption.setText(f"<b>{act.path or '(model)'}</b> ({act.type}) {act.shape}: {act.describe()}")
        self.layout_shown = act.layout
        if act.layout in ("maps", "sequence"):
            array = act.grid() if act.layout == "maps" else act.data.astype(np.float32)
            self._show_image(array, act.layout == "sequence")
        elif act.layout == "vector":
            values = act.data.astype(np.float32)
            self.image.clear()
            self.plot.invertY(False)
            self.curve.setData(np.arange(values.size), values)
            self.plot.setLabel("bottom", "channel")
            self.plot.autoRange()
            self.shown = values
        else:
            self.image.clear()
            self.curve.setData([], [])
            self.shown = None

    def _show_image(self, array: np.ndarray, signed: bool) -> None:
        self.curve.setData([], [])
        finite = array[np.isfinite(array)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if signed and low < 0 < high:  # a diverging map centred on zero
            bound = max(-low, high)
            low, high, name = -bound, bound, "CET-D1"
        else:
            name = "viridis"
        self.image.setColorMap(self.colormaps[name])
        self.image.setImage(array, levels=(low, high if high > low else low + 1))
        self.plot.invertY(True)
        self.plot.setLabel("bottom", "channel" if signed else "")
        self.plot.setLabel("left", "token" if signed else "")
        self.plot.getViewBox().setAspectLocked(not signed)
        self.plot.autoRange()
        self.shown = array


def _label(top: Any) -> str:
    name = top.name if top.name else f"class {top.index}"
    name = name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"
    return f"{name} ({top.index})  {top.probability:.2f}" if top.name else f"{name}  {top.probability:.2f}"
