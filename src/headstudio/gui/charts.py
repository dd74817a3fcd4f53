"""Parameters per top-level block as stacked bars: trainable at the bottom, frozen on top.

The counts come from the core (``core.model.stats.count_blocks``); the chart only draws them.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QEvent
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from headstudio.core.model.stats import Block, count_blocks

from .controller import DocumentController
from .palette import style_plot

BAR_WIDTH = 0.7
MAX_LABEL = 14
HEADROOM = 1.2  # above the tallest bar, room for the count written on it


def short_count(n: float) -> str:
    """12_345_678 -> '12.3M'; 900 -> '900'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


class _CountAxis(pg.AxisItem):
    """A y axis labelled 1.2M, 500k instead of 1.2e+06."""

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        return [short_count(v * scale) if float(v * scale).is_integer() else "" for v in values]


class ParamsChart(QWidget):
    """Stacked bars of trainable vs frozen parameters per top-level block; follows modelEdited."""

    def __init__(self, controller: DocumentController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("paramsChart")
        self.controller = controller
        self.blocks: list[Block] = []
        self.totals: list[pg.TextItem] = []  # the count written above each bar
        self.plot = pg.PlotWidget(axisItems={"left": _CountAxis("left")})
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMinimumHeight(160)
        self.trainableBars = pg.BarGraphItem(x=[0], height=[0], width=BAR_WIDTH)
        self.frozenBars = pg.BarGraphItem(x=[0], y0=[0], height=[0], width=BAR_WIDTH)
        self.plot.addItem(self.trainableBars)
        self.plot.addItem(self.frozenBars)
        self.emptyNote = pg.TextItem("Open a model to see its parameters per block", anchor=(0.5, 0.5))
        self.emptyNote.setPos(0, 0.5)
        self.plot.addItem(self.emptyNote)
        self.legend = QLabel(objectName="paramsLegend")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.legend)
        self._style()
        controller.documentChanged.connect(self.refresh)
        controller.modelEdited.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        """Recount the blocks of the current model and redraw."""
        doc = self.controller.document
        self.blocks = count_blocks(doc.model) if doc is not None else []
        xs = list(range(len(self.blocks)))
        trainable = [b.trainable for b in self.blocks]
        frozen = [b.frozen for b in self.blocks]
        visible = bool(self.blocks)
        self.trainableBars.setVisible(visible)
        self.frozenBars.setVisible(visible)
        self.plot.getAxis("left").setStyle(showValues=visible)
        self.emptyNote.setVisible(not visible)
        if visible:
            self.trainableBars.setOpts(x=xs, height=trainable)
            self.frozenBars.setOpts(x=xs, y0=trainable, height=frozen)
        ticks = [(i, _label(b.name)) for i, b in enumerate(self.blocks)]
        self.plot.getAxis("bottom").setTicks([ticks, []])
        top = max((b.total for b in self.blocks), default=1)
        self.plot.setRange(xRange=(-0.6, max(len(xs), 1) - 0.4), yRange=(0, top * HEADROOM), padding=0)
        self._write_totals()
        self._update_legend()

    def _write_totals(self) -> None:
        """Small bars stay readable: each bar carries its count (trainable/total when partly frozen)."""
        for item in self.totals:
            self.plot.removeItem(item)
        color = self.palette().color(QPalette.ColorRole.Text)
        self.totals = []
        for i, block in enumerate(self.blocks):
            text = short_count(block.total)
            if block.trainable and block.frozen:
                text = f"{short_count(block.trainable)}/{text}"
            item = pg.TextItem(text, color=color, anchor=(0.5, 1.0))
            item.setPos(i, block.total)
            self.plot.addItem(item)
            self.totals.append(item)

    def _colors(self) -> tuple[QColor, QColor]:
        palette = self.palette()
        trainable = palette.color(QPalette.ColorRole.Highlight)
        dark = palette.color(QPalette.ColorRole.Base).lightness() < 128
        frozen = QColor("#7a7a7a") if dark else QColor("#b0b0b0")
        return trainable, frozen

    def _style(self) -> None:
        palette = self.palette()
        text = style_plot(self.plot, palette)
        trainable, frozen = self._colors()
        self.trainableBars.setOpts(brush=pg.mkBrush(trainable), pen=pg.mkPen(None))
        self.frozenBars.setOpts(brush=pg.mkBrush(frozen), pen=pg.mkPen(None))
        for item in (*self.totals, self.emptyNote):
            item.setColor(text)
        self._update_legend()

    def _update_legend(self) -> None:
        trainable, frozen = self._colors()
        total_t = sum(b.trainable for b in self.blocks)
        total_f = sum(b.frozen for b in self.blocks)
        self.legend.setText(
            f"<span style='color:{trainable.name()}'>■</span> trainable {short_count(total_t)}"
            f"&nbsp;&nbsp;<span style='color:{frozen.name()}'>■</span> frozen {short_count(total_f)}"
        )

    def changeEvent(self, event: QEvent) -> None:
        """Follow the system palette (dark mode)."""
        if event.type() == QEvent.Type.PaletteChange:
            self._style()
        super().changeEvent(event)


def _label(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"
