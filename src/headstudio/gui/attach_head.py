"""Attach head from file: pick a head file, see whether it fits at the head, accept an adapter if not.

The window and the head editor call the module-level ``ask_head_path`` / ``ask_attach`` functions, so
tests replace them (or drive ``AttachHeadDialog`` directly) and never block on a modal dialog.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QLineEdit,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)


@dataclass
class AttachChoice:
    """What the user chose: replace the head or add it as ``name``; with an adapter or not."""

    mode: str  # "replace" | "add"
    name: str
    adapter: bool


class AttachHeadDialog(QDialog):
    """Describes the head file and its fit at ``at``; a mismatch can only be accepted with the adapter."""

    def __init__(
        self,
        head_file: Any,
        at: str,
        features: int | None,
        parent: QWidget | None = None,
        preview: Callable[[AttachChoice], None] | None = None,
    ) -> None:
        super().__init__(parent, objectName="attachHeadDialog")
        self._request_preview = preview  # asks for a background preview of a choice; show_preview shows it
        self.setWindowTitle("Attach head from file")
        self.takes = head_file.in_features
        self.fits = features == self.takes
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(_summary(head_file), self, objectName="headSummary", wordWrap=True))
        self.fitLabel = QLabel(self, objectName="fitLabel", wordWrap=True)
        self.fitLabel.setText(
            f"Fits: '{at}' gives {features} features, the head takes {self.takes}."
            if self.fits
            else f"Does not fit: '{at}' gives {features} features but the head takes {self.takes}."
        )
        layout.addWidget(self.fitLabel)
        self.adapterBox = QCheckBox(f"Insert an adapter: Linear {features} → {self.takes}", self)
        self.adapterBox.setObjectName("adapterBox")
        self.adapterBox.setVisible(not self.fits and features is not None)
        layout.addWidget(self.adapterBox)
        self.replaceRadio = QRadioButton(f"Replace the head '{at}'", self, objectName="replaceRadio")
        self.addRadio = QRadioButton(f"Add it next to '{at}' as:", self, objectName="addRadio")
        self.replaceRadio.setChecked(True)
        stem = Path(head_file.path).stem.replace("-", "_")
        self.nameEdit = QLineEdit(stem if stem.isidentifier() else "extra", self, objectName="attachName")
        for widget in (self.replaceRadio, self.addRadio, self.nameEdit):
            layout.addWidget(widget)
        self.previewLabel = QLabel("", self, objectName="attachPreview", wordWrap=True)
        layout.addWidget(self.previewLabel)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel, self)
        self.attachButton = self.buttons.addButton("Attach", QDialogButtonBox.ButtonRole.AcceptRole)
        self.attachButton.setObjectName("attachButton")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        for signal in (self.adapterBox.toggled, self.addRadio.toggled, self.nameEdit.textChanged):
            signal.connect(self._update)
        self._update()

    def _update(self, *_: Any) -> None:
        """Never a silent mismatch: Attach needs a fit or the adapter, and a valid name to add under."""
        fits = self.fits or self.adapterBox.isChecked()
        named = not self.addRadio.isChecked() or self.nameEdit.text().strip().isidentifier()
        self.nameEdit.setEnabled(self.addRadio.isChecked())
        self.attachButton.setEnabled(fits and named)
        if self._request_preview is not None and fits and named:
            self.previewLabel.setText("Preview: computing…")
            self._request_preview(self.choice())
        elif self._request_preview is not None:
            self.previewLabel.setText("")

    def show_preview(self, preview: Any, problem: str = "") -> None:
        """Output shape and parameters before → after for the current choice (or why it cannot apply)."""
        if preview is None or preview.problems:
            self.previewLabel.setText(f"✖ {problem or preview.problems[0]}")
            self.attachButton.setEnabled(False)
            return
        from headstudio.core.model.shape_text import format_shape

        self.previewLabel.setText(
            f"Output {format_shape(preview.output_before)} → {format_shape(preview.output_after)}; "
            f"params {preview.params_before:,} → {preview.params_after:,}"
        )

    def choice(self) -> AttachChoice:
        """The user's choice as the dialog shows it."""
        mode = "add" if self.addRadio.isChecked() else "replace"
        return AttachChoice(mode, self.nameEdit.text().strip(), self.adapterBox.isChecked())


def _summary(head_file: Any) -> str:
    d = head_file.description
    kinds = " → ".join(layer["kind"] for layer in d["layers"])
    classes = d.get("classes")
    named = f"<br>Classes: {', '.join(classes[:5])}{', …' if len(classes) > 5 else ''}" if classes else ""
    source = d.get("source", {}).get("name")
    origin = f"<br>From: {source}" if source else ""
    return (
        f"<b>{Path(head_file.path).name}</b>: {d['in_features']} → {d['out_features']} ({kinds})"
        f"{named}{origin}<br>sha256 {head_file.sha256[:16]}…"
    )


def ask_head_path(parent: QWidget | None) -> str | None:
    """A head file chosen by the user, or None."""
    path, _ = QFileDialog.getOpenFileName(parent, "Attach head from file", "", "Head files (*.safetensors)")
    return path or None


def ask_attach(
    parent: QWidget | None,
    head_file: Any,
    at: str,
    features: int | None,
    controller: Any = None,
    edit_for: Any = None,
) -> AttachChoice | None:
    """The user's choice in an AttachHeadDialog (previewed through ``controller``), or None when cancelled."""
    dialog = attach_dialog(parent, head_file, at, features, controller, edit_for)
    return dialog.choice() if dialog.exec() == QDialog.DialogCode.Accepted else None


def attach_dialog(
    parent: QWidget | None, head_file: Any, at: str, features: int | None, controller: Any, edit_for: Any
) -> AttachHeadDialog:
    """The dialog, wired so each choice is previewed in the background by the controller."""
    if controller is None or edit_for is None:
        return AttachHeadDialog(head_file, at, features, parent)
    dialog = AttachHeadDialog(
        head_file, at, features, parent, lambda c: controller.request_preview(edit_for(c))
    )
    controller.previewReady.connect(dialog.show_preview)
    dialog.finished.connect(lambda _result: controller.previewReady.disconnect(dialog.show_preview))
    dialog._update()  # the first preview, now that it is wired
    return dialog
