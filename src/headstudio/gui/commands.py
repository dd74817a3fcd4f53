"""Undoable commands: Qt's QUndoStack is the one history; each command applies or reverts one core edit."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QUndoCommand
from PySide6.QtWidgets import QUndoView, QWidget

from headstudio.core.errors import HeadStudioError


class EditCommand(QUndoCommand):
    """One core edit on the controller's document: redo() applies it, undo() reverts it exactly."""

    def __init__(self, controller: Any, edit: Any, parent: QUndoCommand | None = None) -> None:
        super().__init__(edit.describe(), parent)
        self.controller = controller
        self.edit = edit
        self.document = controller.document  # the edit belongs to this document, even if another opens

    def redo(self) -> None:
        """Apply the edit; a failure is reported and makes the command obsolete (dropped from the stack)."""
        self._wait_for_background_work()
        try:
            _apply(self.document, self.edit)
        except HeadStudioError as err:
            self.setObsolete(True)
            self.controller.errorRaised.emit(str(err))
            return
        self.setText(self.edit.describe())  # now it can name what it replaced ("1000 → 10 classes")
        self._after()

    def undo(self) -> None:
        """Revert the edit, restoring the original modules and weights."""
        self._wait_for_background_work()
        try:
            _revert(self.document, self.edit)
        except HeadStudioError as err:
            self.controller.errorRaised.emit(str(err))
            return
        self._after()

    def _wait_for_background_work(self) -> None:
        """Never change a model that a trace, save or preview is reading (history clicks come here too)."""
        from .previews import wait_for_previews

        wait_for_previews()
        wait = getattr(self.controller, "wait_idle", None)
        if callable(wait):
            wait()

    def _after(self) -> None:
        if self.controller.document is not self.document:
            return
        self.controller.modelEdited.emit()
        retrace = getattr(self.controller, "retrace", None)
        if callable(retrace):
            retrace()


class HistoryView(QUndoView):
    """The visible history: every applied edit by its description; clicking a row undoes/redoes to it."""

    def __init__(self, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__(controller.undo_stack, parent)
        self.setObjectName("historyView")
        self.setEmptyLabel("Opened model")


def _apply(document: Any, edit: Any) -> None:
    if hasattr(document, "apply"):
        document.apply(edit)
    else:  # a Document without apply(): the edit does the work, the document records it
        edit.apply(document)
        document.edits.append(edit)
        document.changed()


def _revert(document: Any, edit: Any) -> None:
    if hasattr(document, "revert"):
        document.revert(edit)
    else:
        edit.revert(document)
        document.edits[:] = [e for e in document.edits if e is not edit]
        document.changed()
