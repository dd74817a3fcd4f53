"""The start page: Open checkpoint…, recent files and demo models, shown when no model is open."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

DEMOS = (
    ("ResNet-18", "torchvision:resnet18"),
    ("ViT-B/16", "torchvision:vit_b_16"),
    ("EfficientNet-B0", "torchvision:efficientnet_b0"),
    ("SqueezeNet 1.1", "torchvision:squeezenet1_1"),
)
TIMM_DEMOS = (
    ("ConvNeXt (timm)", "timm:convnext_atto"),
    ("DeiT tiny (timm)", "timm:deit_tiny_patch16_224"),
)


def demo_models() -> list[tuple[str, str]]:
    """(label, spec) of the demo models; timm ones only when timm is installed (checked without importing)."""
    demos = list(DEMOS)
    if importlib.util.find_spec("timm") is not None:
        demos += list(TIMM_DEMOS)
    return demos


class StartPage(QWidget):
    """Asks what to open; emits ``openRequested(source)`` or ``browseRequested()``."""

    openRequested = Signal(str)
    browseRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="startPage")
        title = QLabel("Head Studio", self)
        font = QFont(title.font())
        font.setPointSizeF(font.pointSizeF() * 2)
        font.setBold(True)
        title.setFont(font)
        subtitle = QLabel(
            "See a PyTorch model's modules with live shapes, find its head, replace or freeze, save safely.\n"
            "Drop a checkpoint here, open one, or start from a demo model.",
            self,
        )
        subtitle.setWordWrap(True)
        open_button = QPushButton("Open checkpoint…", self, objectName="openCheckpoint")
        open_button.setToolTip("Ctrl+O")
        open_button.clicked.connect(self.browseRequested)
        self.recent = QListWidget(self, objectName="recentFiles")
        self.recent.itemActivated.connect(
            lambda item: self.openRequested.emit(item.data(Qt.ItemDataRole.UserRole))
        )
        layout = QVBoxLayout(self)
        layout.setContentsMargins(48, 36, 48, 36)
        layout.addWidget(title)
        layout.addWidget(subtitle)
        layout.addWidget(open_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self._demo_box())
        self.noRecent = QLabel(
            "No recent files yet: files you open appear here.", self, objectName="noRecentFiles"
        )
        self.noRecent.setEnabled(False)  # greyed: a note, not a control
        recent_box = QGroupBox("Recent files", self)
        box_layout = QVBoxLayout(recent_box)
        box_layout.addWidget(self.recent)
        box_layout.addWidget(self.noRecent)
        layout.addWidget(recent_box)
        layout.addStretch()
        self.set_recent([])

    def _demo_box(self) -> QGroupBox:
        box = QGroupBox("Demo models (random weights, nothing is downloaded)", self)
        grid = QGridLayout(box)
        for i, (label, spec) in enumerate(demo_models()):
            button = QPushButton(label, box, objectName=f"demo_{spec.split(':')[1]}")
            button.setToolTip(spec)
            button.clicked.connect(lambda _=False, s=spec: self.openRequested.emit(s))
            grid.addWidget(button, i // 3, i % 3)
        return box

    def set_recent(self, paths: list[str]) -> None:
        """Show recent files, newest first; with none, a one-line note instead of an empty list."""
        self.recent.clear()
        for path in paths:
            item = QListWidgetItem(f"{Path(path).name}    —    {path}")
            item.setData(Qt.ItemDataRole.UserRole, path)
            self.recent.addItem(item)
        self.recent.setVisible(bool(paths))
        self.noRecent.setVisible(not paths)
        layout = self.layout()  # the list takes the free height; without files the space stays below
        layout.setStretch(layout.count() - 2, 1 if paths else 0)
        layout.setStretch(layout.count() - 1, 0 if paths else 1)
