"""Undoable commands: Qt's QUndoStack is the one history; each command applies or reverts one core edit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtGui import QUndoCommand
from PySide6.QtWidgets import QUndoView, QWidget

from headstudio.core.errors import HeadStudioError

if TYPE_CHECKING:
    from headstudio.core.edits.base import Edit
    from headstudio.core.model.document import Document

    from .controller import DocumentController


class EditCommand(QUndoCommand):
    """One core edit on one document: redo() applies it, undo() reverts it exactly; nothing else.

    The controller hears every move of the history (``QUndoStack.indexChanged``) and re-traces.
    """

    def __init__(
        self, controller: DocumentController, edit: Edit, parent: QUndoCommand | None = None
    ) -> None:
        super().__init__(edit.describe(), parent)
        assert controller.document is not None
        self.document: Document = controller.document  # the edit belongs to it, even if another opens
        self.edit = edit
        self.report = controller.errorRaised.emit  # one line saying why an apply or revert failed

    def redo(self) -> None:
        """Apply the edit; a failure is reported and makes the command obsolete (dropped from the stack)."""
        try:
            self.document.apply(self.edit)
        except HeadStudioError as err:
            self.setObsolete(True)
            self.report(str(err))
            return
        self.setText(self.edit.describe())  # now it can name what it replaced ("1000 → 10 classes")

    def undo(self) -> None:
        """Revert the edit, restoring the original modules and weights."""
        try:
            self.document.revert(self.edit)
        except HeadStudioError as err:
            self.report(str(err))


class HistoryView(QUndoView):
    """The visible history: every applied edit by its description; clicking a row undoes/redoes to it."""

    def __init__(self, controller: DocumentController, parent: QWidget | None = None) -> None:
        super().__init__(controller.undo_stack, parent)
        self.setObjectName("historyView")
        self.setEmptyLabel("Opened model")
