"""The inspector: the selected module's path, type, repr, parameters with statistics, a weight histogram.

The numbers come from the core (``core.model.stats``); large tensors are read through the controller's
background work, small ones at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from shiboken6 import isValid
from torch import nn

from headstudio.core.model.stats import tensor_histogram, tensor_stats

from .controller import DocumentController
from .palette import style_plot

COLUMNS = ("Name", "Shape", "Dtype", "Trainable", "Mean", "Std")
MEAN, STD = 4, 5
INLINE_LIMIT = 1 << 20  # elements per module: statistics of smaller modules at once, larger ones off-thread
AUTO_STATS_LIMIT = 50_000_000  # values: above this, statistics wait for a click (reading GBs of weights)
MAX_ROWS = 2000
FILL_DELAY_MS = 40  # the table fills a little after a new model appears, once the tree has painted
MAX_REPR = 200_000
DASH = "—"

__all__ = ["COLUMNS", "Inspector", "tensor_histogram", "tensor_stats"]


class Inspector(QWidget):
    """Details of the module selected in the tree; follows selectionChanged and modelEdited."""

    statsReady = Signal()  # every statistic and the histogram for the current module are shown

    def __init__(self, controller: DocumentController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspector")
        self.controller = controller
        self.path: str | None = None
        self.parameters: dict[str, nn.Parameter] = {}
        self.histogram_data: tuple[list[float], list[float]] | None = None
        self.histogram_name: str | None = None
        self._generation = 0
        self._inline_stats = True
        self._stats_on_click = False
        self._pending: set[str] = set()
        self._queued: dict[str, nn.Parameter] = {}  # statistics to read off-thread, in one task
        self._arrived: list[tuple[int, str, Any]] = []  # results not shown yet (shown in one batch)
        self._later = QTimer(self, singleShot=True, interval=FILL_DELAY_MS)
        self._later.timeout.connect(self.refresh)
        self._build()
        controller.selectionChanged.connect(self.show_module)
        controller.modelEdited.connect(self.refresh)
        controller.documentChanged.connect(self._on_document)

    def _build(self) -> None:
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.pathLabel = QLabel(objectName="inspectorPath", textInteractionFlags=Qt.TextSelectableByMouse)
        self.typeLabel = QLabel(objectName="inspectorType", textInteractionFlags=Qt.TextSelectableByMouse)
        self.pathLabel.setFont(mono)
        self.reprView = QPlainTextEdit(objectName="inspectorRepr", readOnly=True)
        self.reprView.setFont(mono)
        self.reprView.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.computeStats = QPushButton(objectName="computeStats", visible=False)
        self.computeStats.setToolTip("Mean and std read every weight of this module from the checkpoint")
        self.computeStats.clicked.connect(self.compute_statistics)
        self.paramTable = QTableWidget(0, len(COLUMNS), objectName="parameterTable")
        self.paramTable.setHorizontalHeaderLabels(COLUMNS)
        self.paramTable.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.paramTable.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.paramTable.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.paramTable.verticalHeader().setVisible(False)
        columns = self.paramTable.horizontalHeader()
        # Not ResizeToContents: measuring on every setItem costs ~16 ms a row; the fill measures once.
        columns.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        columns.setStretchLastSection(True)
        self.paramTable.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.paramTable.itemSelectionChanged.connect(self._on_parameter_selected)
        self.plot = pg.PlotWidget(objectName="weightHistogram")
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("left", "count")
        self.plot.setMinimumHeight(140)
        self.curve = self.plot.plot([0, 1], [0], stepMode="center", fillLevel=0)
        self.plotNote = pg.TextItem(anchor=(0.5, 0.5))
        self.plot.addItem(self.plotNote, ignoreBounds=True)  # its size follows the view: no autorange loop
        self.plot.setRange(xRange=(0, 1), yRange=(0, 1))  # ranges are set per histogram, never auto
        self._style_plot()

        header = QWidget()
        form = QFormLayout(header)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Path", self.pathLabel)
        form.addRow("Type", self.typeLabel)
        form.addRow(self.computeStats)
        splitter = QSplitter(Qt.Orientation.Vertical)
        for stretch, widget in enumerate((self.reprView, self.paramTable, self.plot), start=1):
            splitter.addWidget(widget)
            splitter.setStretchFactor(stretch - 1, stretch)  # the histogram gets the most room
        layout = QVBoxLayout(self)
        layout.addWidget(header)
        layout.addWidget(splitter, 1)

    # ----- showing a module
    def show_module(self, path: str) -> None:
        """Show the module at ``path`` ("" = the whole model)."""
        self.path = path
        self.refresh()

    def refresh(self) -> None:
        """Re-read the shown module from the document (after an edit its parameters may differ).

        At any time: background work never swaps anything into the live model.
        """
        self._later.stop()
        self._generation += 1
        self._pending.clear()
        self._queued.clear()
        doc = self.controller.document
        module = self._module(doc)
        self.parameters = dict(list(module.named_parameters())[:MAX_ROWS]) if module is not None else {}
        self._fill_header(module)
        self._fill_table()
        self._select_default_parameter()
        if not self._pending:
            self.statsReady.emit()

    def _module(self, doc: Any) -> nn.Module | None:
        if doc is None or self.path is None:
            return None
        from headstudio.core.errors import EditError
        from headstudio.core.modules import find_module

        try:
            return find_module(doc.model, self.path)  # TorchScript modules too
        except EditError:  # removed by an edit
            return None

    def _fill_header(self, module: nn.Module | None) -> None:
        if module is None:
            gone = self.path is not None and self.controller.document is not None
            self.pathLabel.setText(f"{self.path} (no longer in the model)" if gone else DASH)
            self.typeLabel.setText(DASH)
            self.reprView.setPlainText("")
            return
        self.pathLabel.setText(self.path or "(model)")
        cls = type(module)
        self.typeLabel.setText(f"{cls.__name__}  ({cls.__module__})")
        text = repr(module)
        self.reprView.setPlainText(text if len(text) <= MAX_REPR else text[:MAX_REPR] + "\n…")

    def _fill_table(self) -> None:
        table = self.paramTable
        table.setUpdatesEnabled(False)
        table.blockSignals(True)
        values = sum(p.numel() for p in self.parameters.values() if not p.is_meta)
        self._inline_stats = values <= INLINE_LIMIT
        self._stats_on_click = values > AUTO_STATS_LIMIT
        self.computeStats.setText(f"Compute statistics ({values:,} values)")
        self.computeStats.setVisible(self._stats_on_click)
        table.setRowCount(len(self.parameters))
        for row, (name, param) in enumerate(self.parameters.items()):
            cells = (name, str(list(param.shape)), str(param.dtype).removeprefix("torch."))
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                table.setItem(row, col, item)
            trainable = QTableWidgetItem("yes" if param.requires_grad else "no")
            table.setItem(row, 3, trainable)
            self._fill_stats(row, name, param)
        self._read_queued_stats()
        table.blockSignals(False)
        table.resizeColumnsToContents()
        names = max(table.viewport().width() // 3, 80)  # long paths (the whole model) elide; tooltips tell
        table.setColumnWidth(0, min(table.columnWidth(0), names))
        table.setUpdatesEnabled(True)

    def compute_statistics(self) -> None:
        """Compute mean/std of every listed parameter (off-thread), also for a module over the auto limit."""
        self.computeStats.setVisible(False)
        self._stats_on_click = False
        for row, (name, param) in enumerate(self.parameters.items()):
            self._fill_stats(row, name, param)
        self._read_queued_stats()
        if not self._pending:
            self.statsReady.emit()

    def _fill_stats(self, row: int, name: str, param: nn.Parameter) -> None:
        if self._stats_on_click and not param.is_meta:
            for col in (MEAN, STD):
                self.paramTable.setItem(row, col, QTableWidgetItem(""))
            return
        if param.is_meta or self._inline_stats:
            self._show_stats(row, tensor_stats(param))
            return
        for col in (MEAN, STD):
            self.paramTable.setItem(row, col, QTableWidgetItem("…"))
        self._queued[name] = param

    def _read_queued_stats(self) -> None:
        """One background task for all queued parameters (hundreds for a whole model), not one each."""
        if self._queued:
            params, self._queued = self._queued, {}
            self._submit("stats:", lambda: {name: tensor_stats(p) for name, p in params.items()})

    def _show_stats(self, row: int, stats: tuple[float, float] | None) -> None:
        for col, value in zip((MEAN, STD), stats or (math.nan, math.nan), strict=True):
            text = DASH if math.isnan(value) else f"{value:.3g}"
            item = QTableWidgetItem(text)
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.paramTable.setItem(row, col, item)

    def _select_default_parameter(self) -> None:
        names = list(self.parameters)
        if not names:
            self._show_histogram(None, None)
            return
        matrix = next((i for i, n in enumerate(names) if self.parameters[n].ndim >= 2), 0)
        self.paramTable.blockSignals(True)
        self.paramTable.selectRow(matrix)
        self.paramTable.blockSignals(False)
        self._on_parameter_selected()

    # ----- histogram
    def select_parameter(self, name: str) -> None:
        """Show the histogram of parameter ``name`` of the current module."""
        if name in self.parameters:
            self.paramTable.selectRow(list(self.parameters).index(name))

    def _on_parameter_selected(self) -> None:
        rows = self.paramTable.selectionModel().selectedRows()
        if not rows:
            return
        name = list(self.parameters)[rows[0].row()]
        param = self.parameters[name]
        self.histogram_name = name
        if param.is_meta or param.numel() <= INLINE_LIMIT:
            self._show_histogram(name, tensor_histogram(param))
        else:
            self.plotNote.setText("computing…")
            self._submit(f"hist:{name}", lambda: tensor_histogram(param))

    def _show_histogram(self, name: str | None, data: tuple[list[float], list[float]] | None) -> None:
        self.histogram_data = data
        if data is None:
            self.curve.setData([0, 1], [0])
            meta = name is not None and self.parameters[name].is_meta
            empty = "no parameters" if self.path is not None else "select a module in the tree"
            self.plotNote.setText("weights not loaded (meta device)" if meta else empty)
            self.plot.setTitle(name or "")
            self.plotNote.setPos(0.5, 0.5)
            self.plot.setRange(xRange=(0, 1), yRange=(0, 1))
            return
        edges, counts = data
        self.curve.setData(edges, counts)
        single = sum(1 for c in counts if c) == 1
        self.plotNote.setText("all values are equal" if single else "")
        self.plotNote.setPos((edges[0] + edges[-1]) / 2, max(counts) / 2)
        self.plot.setTitle(name)
        self.plot.setRange(xRange=(edges[0], edges[-1]), yRange=(0, max(max(counts), 1.0)))

    # ----- background work
    def _submit(self, key: str, work: Callable[[], Any]) -> None:
        self._pending.add(key)
        generation = self._generation
        self.controller.read_weights(work, lambda value: self._on_result(generation, key, value))

    def _on_result(self, generation: int, key: str, value: Any) -> None:
        if generation != self._generation or not isValid(self.paramTable):
            return  # for a module no longer shown, or an inspector already closed (its widgets deleted)
        if not self._arrived:  # hundreds arrive at once for a big module: one table update for all
            QTimer.singleShot(0, self.paramTable, self._show_arrived)
        self._arrived.append((generation, key, value))

    def _show_arrived(self) -> None:
        arrived, self._arrived = self._arrived, []
        rows = {name: row for row, name in enumerate(self.parameters)}
        self.paramTable.setUpdatesEnabled(False)
        for generation, key, value in arrived:
            if generation != self._generation:
                continue  # for a module no longer shown
            self._pending.discard(key)
            kind, name = key.split(":", 1)
            if kind == "stats":  # value: {name: (mean, std)}, or None when reading failed
                for name, row in rows.items():
                    if self.paramTable.item(row, MEAN).text() == "…":
                        self._show_stats(row, (value or {}).get(name))
            elif kind == "hist" and name == self.histogram_name:
                self._show_histogram(name, value)
        if not self._pending:
            self.paramTable.resizeColumnToContents(MEAN)  # it was sized while showing "…"
            self.statsReady.emit()
        self.paramTable.setUpdatesEnabled(True)

    def _on_document(self) -> None:
        self.path = "" if self.controller.document is not None else None
        self._later.start()  # after the tree has shown the new model

    # ----- palette
    def _style_plot(self) -> None:
        palette = self.palette()
        text = style_plot(self.plot, palette)
        accent = palette.color(QPalette.ColorRole.Highlight)
        self.curve.setPen(pg.mkPen(accent, width=1))
        fill = accent.lighter(130) if palette.color(QPalette.ColorRole.Base).lightness() < 128 else accent
        fill.setAlpha(120)
        self.curve.setBrush(pg.mkBrush(fill))
        self.plotNote.setColor(text)

    def changeEvent(self, event: QEvent) -> None:
        """Follow the system palette (dark mode)."""
        if event.type() == QEvent.Type.PaletteChange:
            self._style_plot()
        super().changeEvent(event)

    def closeEvent(self, event: Any) -> None:
        """Statistics still being read for this widget are no longer shown."""
        self._generation += 1
        super().closeEvent(event)
