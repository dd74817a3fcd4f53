""" "Show code": the plain-PyTorch snippet that performs the current edits, read-only and copyable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from headstudio.core.errors import HeadStudioError

from .controller import DocumentController

if TYPE_CHECKING:
    from headstudio.core.model.document import Document


def snippet_for_document(doc: Document | None) -> str:
    """The plain-PyTorch code for ``doc``'s edits (a comment when there are none yet)."""
    if doc is None:
        return "# No model is open."
    if not doc.edits:
        return "# No edits yet: the model is used as it is."
    from headstudio.core.codegen import snippet_for
    from headstudio.core.recipe import Recipe

    return snippet_for(Recipe.from_document(doc))


class CodeView(QDialog):
    """A dialog showing the snippet for the controller's document; follows modelEdited while open."""

    def __init__(self, controller: DocumentController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("codeView")
        self.setWindowTitle("Code for these edits")
        self.resize(720, 420)
        self.controller = controller
        self.note = QLabel("Plain PyTorch that performs the same edits on your model:")
        self.editor = QPlainTextEdit(objectName="codeText", readOnly=True)
        self.editor.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copyButton = QPushButton("Copy", objectName="copyCode")
        buttons.addButton(self.copyButton, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        self.copyButton.clicked.connect(self.copy)
        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addWidget(self.editor, 1)
        layout.addWidget(buttons)
        controller.modelEdited.connect(self._on_model_changed)
        controller.documentChanged.connect(self._on_model_changed)
        self.refresh()

    def _on_model_changed(self) -> None:
        if self.isVisible():  # a closed dialog catches up when shown again
            self.refresh()

    def showEvent(self, event: Any) -> None:
        """Show the code for the edits as they are now."""
        self.refresh()
        super().showEvent(event)

    @property
    def code(self) -> str:
        """The snippet as shown."""
        return self.editor.toPlainText()

    def refresh(self) -> None:
        """Regenerate the snippet from the document's edits."""
        doc = self.controller.document
        ok = doc is not None and bool(doc.edits)  # a comment alone is not worth copying
        try:
            text = snippet_for_document(doc)
        except HeadStudioError as err:
            text, ok = f"# Cannot write code for these edits: {err}", False
        self.editor.setPlainText(text)
        self.copyButton.setText("Copy")
        self.copyButton.setEnabled(ok)

    def copy(self) -> None:
        """Put the snippet on the clipboard."""
        QGuiApplication.clipboard().setText(self.code)
        self.copyButton.setText("Copied")
