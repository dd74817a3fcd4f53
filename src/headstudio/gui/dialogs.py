"""Dialogs that ask the user something: consent to run code, which architecture, unsaved edits, where to save.

The main window calls the module-level ``ask_*``/``show_error`` functions, so tests replace them with
monkeypatch and never block on a modal dialog.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSortFilterProxyModel, QStringListModel, Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from headstudio.core.kinds import open_filter

SAVE_FILTERS = {  # the first, the default, lets the name decide (.ckpt/.pt/.pth/.tar keep a container)
    "By file name (*.safetensors *.ckpt *.pt *.pth *.tar *.pt2)": None,
    "Safetensors (*.safetensors)": "safetensors",
    "PyTorch state_dict (*.pt *.pth)": "state_dict",
    "Training checkpoint, container kept (*.ckpt *.pt *.pth *.tar)": "checkpoint",
    "Whole model, pickled (*.pt)": "full",
    "TorchScript (*.pt)": "torchscript",
    "torch.export program (*.pt2)": "export",
    "Hugging Face model folder (config.json + model.safetensors)": "hf_folder",
}
_DEFAULT_SUFFIX = {"safetensors": ".safetensors", "export": ".pt2"}


class ConsentDialog(QDialog):
    """Lists exactly what a file would import to load; Cancel is the default (Enter/Escape refuse)."""

    def __init__(self, path: str, globals_: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="consentDialog")
        self.setWindowTitle("Allow code to run?")
        layout = QVBoxLayout(self)
        name = QLabel(Path(path).name, self, objectName="consentFile")
        name.setTextFormat(Qt.TextFormat.PlainText)  # a file named 'x<!--.pt' must not rewrite the warning
        font = name.font()
        font.setBold(True)
        name.setFont(font)
        name.setWordWrap(True)
        layout.addWidget(name)
        text = QLabel(
            "This file would import and call the following to load. Loading it runs code from the file; "
            "nothing has run yet. Allow this only if you trust where the file came from.",
            self,
            objectName="consentText",
        )
        text.setTextFormat(Qt.TextFormat.PlainText)
        text.setWordWrap(True)
        layout.addWidget(text)
        self.globals_list = QListWidget(self, objectName="consentGlobals")
        self.globals_list.addItems(list(globals_))
        layout.addWidget(self.globals_list)
        buttons = QDialogButtonBox(self)
        self.cancel_button = buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.allow_button = QPushButton("Allow for this file", self, objectName="allowButton")
        buttons.addButton(self.allow_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.allow_button.setAutoDefault(False)
        self.cancel_button.setDefault(True)
        self.cancel_button.setFocus()
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


class ArchitectureDialog(QDialog):
    """Ranked guesses from the weights (score, what differs), then a searchable list of torchvision/timm
    names; any ``ns:name(...)`` or ``module:callable`` may be typed."""

    def __init__(
        self, path: str, names: list[str], guesses: Sequence[Any] = (), parent: QWidget | None = None
    ) -> None:
        super().__init__(parent, objectName="architectureDialog")
        self.setWindowTitle("Which architecture?")
        layout = QVBoxLayout(self)
        said = " Best guesses from the weights are listed first." if guesses else ""
        label = QLabel(f"{Path(path).name} holds only weights. Which architecture are they for?{said}")
        label.setTextFormat(Qt.TextFormat.PlainText)
        label.setWordWrap(True)
        layout.addWidget(label)
        self.guesses = QListWidget(self, objectName="archGuesses")
        for guess in guesses:
            what = "fits exactly" if guess.exact else "; ".join(guess.differs)
            item = QListWidgetItem(f"{guess.arch}    {guess.percent} · {what}", self.guesses)
            item.setData(Qt.ItemDataRole.UserRole, guess.arch)
            item.setToolTip(what)
        self.guesses.setVisible(bool(guesses))
        self.guesses.setMaximumHeight(130)
        layout.addWidget(self.guesses)
        self.search = QLineEdit(self, objectName="archSearch", placeholderText="resnet50, timm:…, pkg.mod:fn")
        layout.addWidget(self.search)
        self.names = QStringListModel(names, self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.names)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.list = QListView(self, objectName="archList")
        self.list.setModel(self.proxy)
        layout.addWidget(self.list)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.search.textChanged.connect(self.proxy.setFilterFixedString)
        self.search.textEdited.connect(lambda _text: self.guesses.clearSelection())
        self.list.clicked.connect(lambda _index: self.guesses.clearSelection())
        self.list.doubleClicked.connect(self.accept)
        self.guesses.itemDoubleClicked.connect(self.accept)
        if guesses:
            self.guesses.setCurrentRow(0)
            self.guesses.setFocus()

    def choice(self) -> str | None:
        """The selected guess or name, else the typed text when it looks like a spec."""
        guess = self.guesses.currentItem()
        if guess is not None and guess.isSelected():
            return str(guess.data(Qt.ItemDataRole.UserRole))
        index = self.list.currentIndex()
        if index.isValid():
            return str(index.data())
        text = self.search.text().strip()
        if ":" in text:
            return text
        if self.proxy.rowCount() == 1:
            return str(self.proxy.index(0, 0).data())
        return f"torchvision:{text}" if text else None


def architecture_names() -> list[str]:
    """torchvision classification names, then timm's when installed."""
    names: list[str] = []
    try:
        import torchvision

        names += [f"torchvision:{n}" for n in torchvision.models.list_models()]
    except Exception:  # a broken optional install must not block the dialog
        pass
    try:
        import timm

        names += [f"timm:{n}" for n in timm.list_models()]
    except Exception:
        pass
    return names


def ask_consent(parent: QWidget | None, path: str, globals_: list[str]) -> bool:
    """True only if the user explicitly allows the listed imports for this file."""
    return ConsentDialog(path, globals_, parent).exec() == QDialog.DialogCode.Accepted


def ask_architecture(parent: QWidget | None, path: str, guesses: Sequence[Any] = ()) -> str | None:
    """The architecture spec the user picked for a bare state_dict (guesses offered first), or None."""
    dialog = ArchitectureDialog(path, architecture_names(), guesses, parent)
    return dialog.choice() if dialog.exec() == QDialog.DialogCode.Accepted else None


def ask_save_changes(parent: QWidget | None) -> str:
    """'save', 'discard' or 'cancel' for unsaved edits."""
    buttons = QMessageBox.StandardButton
    answer = QMessageBox.question(
        parent,
        "Unsaved edits",
        "The model has edits that are not saved. Save them first?",
        buttons.Save | buttons.Discard | buttons.Cancel,
        buttons.Save,
    )
    return {buttons.Save: "save", buttons.Discard: "discard"}.get(answer, "cancel")


def ask_open_path(parent: QWidget | None, directory: str = "") -> str | None:
    """A checkpoint path chosen by the user, or None."""
    path, _ = QFileDialog.getOpenFileName(
        parent,
        "Open checkpoint",
        directory,
        open_filter(),
    )
    return path or None


def ask_open_folder(parent: QWidget | None, directory: str = "") -> str | None:
    """A model folder (config.json + weights, or a hub cache snapshot) chosen by the user, or None."""
    path = QFileDialog.getExistingDirectory(parent, "Open model folder", directory)
    return path or None


def ask_save_path(parent: QWidget | None, suggested: str) -> tuple[str, str | None] | None:
    """(path, format) chosen by the user: the name's suffix decides unless a format filter was picked.

    A picked format that contradicts the typed suffix (x.ckpt as safetensors) is refused by the save.
    """
    path, chosen = QFileDialog.getSaveFileName(parent, "Save model as", suggested, ";;".join(SAVE_FILTERS))
    if not path:
        return None
    fmt = SAVE_FILTERS.get(chosen)
    if fmt != "hf_folder" and not Path(path).suffix:
        path += _DEFAULT_SUFFIX.get(fmt, ".pt") if fmt else Path(suggested).suffix
    return path, fmt


def show_error(parent: QWidget | None, message: str) -> None:
    """One line for people, in a message box (plain text: file names in it are not markup)."""
    box = QMessageBox(QMessageBox.Icon.Warning, "Head Studio", message, QMessageBox.StandardButton.Ok, parent)
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.exec()


def show_info(parent: QWidget | None, title: str, message: str) -> None:
    """A short notice (e.g. a save's verification result)."""
    QMessageBox.information(parent, title, message)


def dropped_files(event: Any) -> list[str]:
    """The local files and folders a drag carries (URLs from elsewhere are not ours to open)."""
    return [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
