"""The head editor's widgets: operation pages, preview box and training box (behaviour in head_editor)."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from headstudio.core.edits.replace import ACTIVATIONS

OPERATIONS = (
    "Replace head",
    "Remove head (feature extractor)",
    "Cut after selected module",
    "Add another head",
)
REPLACE, REMOVE, CUT, ADD = range(4)


class HeadEditorForm(QWidget):
    """Builds the head editor's named widgets (``numClasses``, ``applyHead``, …); no behaviour."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("headEditor")
        self._build()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.headLabel = QLabel(objectName="headLabel", wordWrap=True)
        layout.addWidget(self.headLabel)
        self.operation = QComboBox(objectName="headOperation")
        self.operation.addItems(OPERATIONS)
        layout.addWidget(self.operation)
        self.pages = QStackedWidget()
        for page in (self._replace_page(), self._remove_page(), self._cut_page(), self._add_page()):
            self.pages.addWidget(page)
        layout.addWidget(self.pages)
        layout.addWidget(self._preview_box())
        self.applyButton = QPushButton("Apply", objectName="applyHead", enabled=False)
        layout.addWidget(self.applyButton)
        self.attachButton = QPushButton("Attach head from file…", objectName="attachHeadFile")
        self.attachButton.setToolTip(
            "Replace the head by (or add) a head exported with 'headstudio head export'"
        )
        layout.addWidget(self.attachButton)
        layout.addWidget(self._freeze_box())
        layout.addStretch(1)

    def _replace_page(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        self.numClasses = QSpinBox(objectName="numClasses", minimum=0, maximum=10_000_000, value=10)
        self.numClasses.setToolTip("Number of output classes of the new head")
        self.headKind = QComboBox(objectName="headKind")
        self.headKind.addItems(["Single layer", "MLP"])
        self.headKind.setToolTip("Single layer: a Linear, or a conv of the same kind for a conv head")
        self.hiddenSizes = QLineEdit(objectName="hiddenSizes", placeholderText="e.g. 512,256", enabled=False)
        self.activation = QComboBox(objectName="activation", enabled=False)
        self.activation.addItems(list(ACTIVATIONS))
        self.dropout = QDoubleSpinBox(objectName="dropout", minimum=0.0, maximum=0.95, singleStep=0.1)
        self.keepClasses = QCheckBox("Keep trained rows of classes that stay", objectName="keepClasses")
        self.keepClasses.setToolTip("Copy the old head's weights for the first classes (e.g. 10 of 1000)")
        form.addRow("Classes", self.numClasses)
        form.addRow("Kind", self.headKind)
        form.addRow("Hidden sizes", self.hiddenSizes)
        form.addRow("Activation", self.activation)
        form.addRow("Dropout", self.dropout)
        form.addRow(self.keepClasses)
        self.labels = QLineEdit(objectName="headLabels", placeholderText="e.g. cat,dog,bird (optional)")
        self.labels.setToolTip("Class names of a transformers model (its config's id2label); one per class")
        form.addRow("Labels", self.labels)
        return page

    def _remove_page(self) -> QWidget:
        return QLabel("The head becomes Identity: the model returns its features.", wordWrap=True)

    def _cut_page(self) -> QWidget:
        self.cutLabel = QLabel(objectName="cutLabel", wordWrap=True)
        return self.cutLabel

    def _add_page(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        self.addHeadName = QLineEdit("aux", objectName="addHeadName")
        self.addHeadClasses = QSpinBox(objectName="addHeadClasses", minimum=0, maximum=10_000_000, value=10)
        form.addRow("Name", self.addHeadName)
        form.addRow("Classes", self.addHeadClasses)
        return page

    def _preview_box(self) -> QGroupBox:
        box = QGroupBox("Preview")
        form = QFormLayout(box)
        self.previewOutput = QLabel("—", objectName="previewOutput", wordWrap=True)
        self.previewParams = QLabel("—", objectName="previewParams")
        self.previewTrainable = QLabel("—", objectName="previewTrainable")
        self.previewLayers = QLabel(objectName="previewLayers", wordWrap=True, visible=False)
        self.previewLayers.setToolTip("The output of every layer the edit resizes, before → after")
        self.previewProblems = QLabel(objectName="previewProblems", wordWrap=True, visible=False)
        self.previewWarnings = QLabel(objectName="previewWarnings", wordWrap=True, visible=False)
        form.addRow("Output", self.previewOutput)
        form.addRow("Params", self.previewParams)
        form.addRow("Trainable", self.previewTrainable)
        form.addRow(self.previewLayers)
        form.addRow(self.previewProblems)
        form.addRow(self.previewWarnings)
        return box

    def _freeze_box(self) -> QGroupBox:
        box = QGroupBox("Training")
        row = QHBoxLayout(box)
        self.freezeButton = QPushButton("Freeze backbone", objectName="freezeBackbone", enabled=False)
        self.freezeButton.setToolTip("Freeze everything but the head(s), as one undoable edit")
        self.bnEval = QCheckBox("BatchNorm in eval mode", objectName="bnEval")
        self.bnEval.setToolTip("Frozen BatchNorm layers stop updating their running statistics")
        row.addWidget(self.freezeButton)
        row.addWidget(self.bnEval)
        return box
