"""The status bar: parameter counts, memory, format, unsaved marker, and progress/cancel for long work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QToolButton, QWidget

if TYPE_CHECKING:
    from .controller import DocumentController


FORMAT_CHARS = 60  # the format/architecture label's longest text; the full text is its tooltip


class DocumentStatusBar(QStatusBar):
    """Follows the controller: counts after every trace, progress while busy, messages for results."""

    def __init__(self, controller: DocumentController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self._progress_message = ""
        self.params_label = QLabel(self, objectName="statusParams")
        self.memory_label = QLabel(self, objectName="statusMemory")
        self.format_label = QLabel(self, objectName="statusFormat")
        self.dirty_label = QLabel(self, objectName="statusDirty")
        self.progress = QProgressBar(self, objectName="progress", maximum=100, maximumWidth=180)
        self.cancel_button = QToolButton(self, objectName="cancelWork", text="Cancel")
        self.cancel_button.clicked.connect(controller.cancel)
        for widget in (self.progress, self.cancel_button):
            widget.hide()
            self.addPermanentWidget(widget)
        for label in (self.params_label, self.memory_label, self.format_label, self.dirty_label):
            self.addPermanentWidget(label)
        controller.documentChanged.connect(self.update_counts)
        controller.traceReady.connect(self._report_trace)
        controller.modelEdited.connect(self.update_counts)
        controller.busyChanged.connect(self._on_busy)
        controller.progressChanged.connect(self._on_progress)
        controller.cancelled.connect(lambda message: self.showMessage(message, 10000))

    def update_counts(self) -> None:
        """Total/trainable parameters, memory and format of the open model."""
        doc = self.controller.document
        if doc is None:
            for label in (self.params_label, self.memory_label, self.format_label):
                label.clear()
            return
        total, trainable = doc.param_counts()
        self.params_label.setText(f"{total:,} params · {trainable:,} trainable")
        from headstudio.core.model.stats import memory_bytes  # torch is loaded once a model is open

        self.memory_label.setText(memory_text(memory_bytes(doc.model)))
        text = f"{doc.origin.kind} · {doc.origin.arch}"
        # a long spec (a transformers class with its config folder) would push the messages off the bar
        self.format_label.setText(text if len(text) <= FORMAT_CHARS else text[: FORMAT_CHARS - 1] + "…")
        self.format_label.setToolTip(text)

    def set_dirty(self, dirty: bool) -> None:
        """Show the unsaved-edits marker."""
        self.dirty_label.setText("• unsaved" if dirty else "")

    def _report_trace(self) -> None:
        doc = self.controller.document
        trace = doc.trace() if doc is not None else None  # cached: traceReady means it is computed
        if trace is not None and trace.error:
            where = f" in {trace.failed_at}" if trace.failed_at else ""
            self.showMessage(f"shapes stop{where}: {trace.error}; try another input shape", 20000)

    def _on_busy(self, busy: int, message: str) -> None:
        busy = bool(busy)
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        if busy:
            self.progress.setRange(0, 0)
            self._show_progress_message(message)
        elif self.currentMessage() == self._progress_message:
            self.clearMessage()

    def _show_progress_message(self, message: str) -> None:
        self._progress_message = message
        self.showMessage(message)

    def _on_progress(self, message: str, fraction: float) -> None:
        self.progress.setRange(0, 100)
        self.progress.setValue(int(fraction * 100))
        self._show_progress_message(message)


def memory_text(size: int | None) -> str:
    """'97.7 MiB in memory', or a note when the weights are not loaded (``size`` None: all on meta)."""
    if size is None:
        return "weights not loaded (meta)"
    return f"{size / 2**20:,.1f} MiB in memory"
