"""Previews of an edit while the user types, for the controller: each runs on a detached copy of the
document, on a queue the controller owns, and only the newest request is delivered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from headstudio.core.errors import Progress

from .workers import WorkQueue, one_line

if TYPE_CHECKING:
    from headstudio.core.edits.base import Edit, Preview
    from headstudio.core.model.document import Document


class PreviewRuns(QObject):
    """The controller's edit previews; older requests are skipped or their results dropped."""

    ready = Signal(object, str)  # Preview or None, problem text ("" with a Preview): newest request

    def __init__(self, queue: WorkQueue, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._queue = queue
        self._generation = 0  # only the newest preview request is delivered

    def request(self, doc: Document | None, edit: Edit) -> None:
        """Preview ``edit`` on a detached copy of ``doc`` in the background (no document: nothing)."""
        self._generation += 1
        generation = self._generation
        if doc is None:
            return

        def job(progress: Progress) -> Preview | None:
            if generation != self._generation:
                return None  # a newer request is queued behind this one
            return edit.preview(doc.detached())

        self._queue.submit(
            job,
            "Previewing…",
            lambda preview: self._on_previewed(generation, preview, ""),
            lambda err: self._on_previewed(generation, None, one_line(err)),
        )

    def discard(self) -> None:
        """Drop previews that are running or queued (the model or the inputs changed)."""
        self._generation += 1

    def _on_previewed(self, generation: int, preview: Preview | None, problem: str) -> None:
        if generation == self._generation and (preview is not None or problem):
            self.ready.emit(preview, problem)
