"""The Probe panel: run an image (or a seeded random input) through the model and look at what it computed.

Shows each head's top-k (every head of a MultiHead, with a choice of which one the model returns, as an
undoable edit), the selected tree module's activation, and after a probe of an edited model a one-line
surgery proof (the tree colours each module by it). The work runs through ``DocumentController.probe``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .dialogs import dropped_files
from .probe_views import ActivationView, HeadChart

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp *.tif *.tiff);;All files (*)"
ALL_HEADS = "all heads (a dict)"
TOP_K = 5


def ask_image_path(parent: QWidget) -> str | None:
    """File dialog for an input image; None when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, "Probe with image", "", IMAGE_FILTER)
    return path or None


class ProbePanel(QWidget):
    """Probe controls, heads' top-k charts, the selected module's activation and the surgery proof."""

    def __init__(self, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("probePanel")
        self.controller = controller
        self.image: str | None = None  # None: a seeded random input
        self.result: Any = None  # the last ProbeResult
        self.proof: Any = None  # the last SurgeryProof (None for an unedited model)
        self.running = False
        self.charts: list[HeadChart] = []
        self.active_boxes: dict[str, QComboBox] = {}  # MultiHead path -> its "model returns" choice
        self.setAcceptDrops(True)
        self._build()
        controller.probeFinished.connect(self._on_probed)
        controller.selectionChanged.connect(self.show_module)
        controller.modelEdited.connect(self._on_model_edited)
        controller.documentChanged.connect(self._on_document)
        controller.progressChanged.connect(self._on_progress)
        controller.cancelled.connect(self._stopped)
        controller.errorRaised.connect(self._stopped)

    def _build(self) -> None:
        # tool buttons: narrow enough that the dock fits at the inspector's width
        self.imageButton = QToolButton(text="Image…", objectName="probeImage", clicked=self.choose_image)
        self.randomButton = QToolButton(text="Random", objectName="probeRandom", clicked=self.use_random)
        self.runButton = QToolButton(text="Run", objectName="probeRun", clicked=self.run)
        self.cancelButton = QToolButton(text="Cancel", objectName="probeCancel", clicked=self.cancel)
        self.cancelButton.setEnabled(False)
        self.imageButton.setToolTip("Choose an image to probe with (or drop one on this panel)")
        self.randomButton.setToolTip("Probe with seeded random values of the input shape")
        self.inputLabel = QLabel(objectName="probeInput", wordWrap=True)
        self.progress = QProgressBar(objectName="probeProgress", maximum=1000, textVisible=False)
        self.proofLabel = QLabel(objectName="probeProof", wordWrap=True)
        self.activeForm = QFormLayout()
        self.headsBox = QVBoxLayout()
        self.headsBox.addStretch(1)
        self._add_chart().setVisible(False)  # made now, so the first results appear without a pause
        heads = QWidget()
        column = QVBoxLayout(heads)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(self.activeForm)
        column.addLayout(self.headsBox)
        scroll = QScrollArea(widgetResizable=True)
        scroll.setWidget(heads)
        self.activation = ActivationView(self)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(scroll)
        split.addWidget(self.activation)
        split.setSizes([300, 300])
        buttons = QHBoxLayout()
        for button in (self.imageButton, self.randomButton, self.runButton, self.cancelButton):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.inputLabel)
        layout.addWidget(self.progress)
        layout.addWidget(self.proofLabel)
        layout.addWidget(split, 1)
        self._show_input()

    # ----- input and running
    def choose_image(self) -> None:
        """Pick an image file (dialog), then run."""
        path = ask_image_path(self)
        if path:
            self.set_image(path)
            self.run()

    def set_image(self, path: str | None) -> None:
        """Probe with this image file from now on (None: a seeded random input)."""
        self.image = path
        self._show_input()

    def use_random(self) -> None:
        """Probe with a seeded random input, then run."""
        self.set_image(None)
        self.run()

    def run(self) -> None:
        """Start a probe in the background (through the controller)."""
        if self.controller.document is None:
            self.controller.errorRaised.emit("open a model first (File ▸ Open), then probe it")
            return
        self.running = True
        self.runButton.setEnabled(False)
        self.cancelButton.setEnabled(True)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.controller.probe(self.image, top_k=TOP_K)

    def cancel(self) -> None:
        """Stop the running probe."""
        self.controller.cancel_probe()

    def _stopped(self, *_: object) -> None:
        self.running = False
        self.runButton.setEnabled(True)
        self.cancelButton.setEnabled(False)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)  # kept in place: showing and hiding it would re-lay the panel

    def _on_progress(self, message: str, fraction: float) -> None:
        if self.running:
            self.progress.setFormat(message)
            self.progress.setValue(int(fraction * 1000))

    def _show_input(self) -> None:
        what = f"Input: {Path(self.image).name}" if self.image else "Input: random values (seed 0)"
        self.inputLabel.setText(what + " — Image… or drop a picture here to change it")

    # ----- results
    def _on_probed(self, result: Any, proof: Any) -> None:
        self._stopped()
        self.result, self.proof = result, proof
        self.inputLabel.setText(f"Input: {result.input.description} — forward {result.seconds * 1000:.0f} ms")
        self._show_heads(result.heads)
        if proof is not None:
            self.proofLabel.setText(f"Surgery proof (vs the model as opened): {proof.summary()}")
        else:
            self.proofLabel.setText(
                "No edits yet: after an edit, a probe proves which outputs stayed identical"
            )
        self.show_module(self.controller.selected_path or "")

    def _show_heads(self, heads: list[Any]) -> None:
        while len(self.charts) < len(heads):
            self._add_chart()
        for chart, head in zip(self.charts, heads, strict=False):
            chart.show_head(head)
            chart.setVisible(True)
        for chart in self.charts[len(heads) :]:
            chart.setVisible(False)
        self._refresh_active_heads()

    def _add_chart(self) -> HeadChart:
        chart = HeadChart(self)
        self.headsBox.insertWidget(len(self.charts), chart)
        self.charts.append(chart)
        return chart

    def show_module(self, path: str) -> None:
        """Show the probed output of the module at ``path`` ("" = the model)."""
        if self.result is None:
            self.activation.clear("Run a probe, then select a module in the tree")
            return
        act = self.result.activations.get(path or "")
        if act is None:
            self.activation.clear(f"{path or '(model)'} did not run for this input")
            return
        self.activation.show_activation(act)

    def _on_model_edited(self) -> None:
        self._refresh_active_heads()
        if self.result is not None:
            self.proofLabel.setText("The model changed since this probe: Run again to see and prove the edit")

    def _on_document(self) -> None:
        self.result = self.proof = None
        self._show_heads([])
        self.proofLabel.setText("")
        self.activation.clear("Run a probe, then select a module in the tree")

    # ----- which head a MultiHead returns
    def _refresh_active_heads(self) -> None:
        """One 'Model returns' choice per MultiHead of the current model, showing its active head."""
        from headstudio.core.edits import MultiHead

        doc = self.controller.document
        found = (
            {} if doc is None else {p: m for p, m in doc.model.named_modules() if isinstance(m, MultiHead)}
        )
        for path in [p for p in self.active_boxes if p not in found]:
            box = self.active_boxes.pop(path)
            self.activeForm.removeRow(box)
        for path, multihead in found.items():
            box = self.active_boxes.get(path)
            if box is None:
                box = QComboBox(objectName=f"activeHead:{path}")
                box.activated.connect(lambda _i, p=path: self._choose_active(p))
                self.activeForm.addRow(f"Model returns (at {path}):", box)
                self.active_boxes[path] = box
            box.blockSignals(True)
            box.clear()
            box.addItems([ALL_HEADS, *multihead.heads])
            box.setCurrentText(multihead.active if multihead.active is not None else ALL_HEADS)
            box.blockSignals(False)

    def _choose_active(self, path: str) -> None:
        from headstudio.core.edits import SetActiveHead

        text = self.active_boxes[path].currentText()
        if not self.controller.push_edit(SetActiveHead(path, None if text == ALL_HEADS else text)):
            self._refresh_active_heads()

    # ----- drag and drop an image
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        """Accept a dropped local file (an image to probe with)."""
        if dropped_files(event):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        """Probe with the first dropped file."""
        files = dropped_files(event)
        if files:
            event.acceptProposedAction()
            self.set_image(files[0])
            self.run()
