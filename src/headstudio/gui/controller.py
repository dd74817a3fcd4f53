"""DocumentController: the GUI's single owner of the open Document, its history and background work.

Widgets listen to its signals and call its methods; none of them holds model state. The core is
imported lazily (in workers), so the window can appear before ``import torch`` has finished.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoStack

from .imports import settle_imports
from .workers import WorkQueue, one_line

if TYPE_CHECKING:
    from headstudio.core.model.document import Document
    from headstudio.core.model.tree import ModuleNode


PANELS_WAIT_S = 2.0  # at most this long the first load waits for the window's panels


class DocumentController(QObject):
    """Opens, edits (through the undo stack), re-traces and saves one Document at a time."""

    coreReady = Signal()  # PyTorch and the core are imported (emitted from the worker, delivered queued)
    documentAboutToChange = Signal()  # a loaded document is about to be shown (torch is imported by now)
    documentChanged = Signal()  # a document was opened or closed (rebuild everything)
    modelEdited = Signal()  # an edit was applied/reverted (refresh tree, status, panels)
    traceReady = Signal()  # shapes/heads recomputed in the background and available
    selectionChanged = Signal(str)  # module path selected in the tree ("" = root)
    headMarked = Signal(str)  # the user marked a module as head (defaults to the detected head)
    busyChanged = Signal(bool, str)  # long work started/ended, with a message
    errorRaised = Signal(str)  # one-line user-facing message
    progressChanged = Signal(str, float)  # message, fraction 0..1 of the running task
    openFailed = Signal(str, object)  # source, the exception (the window decides: consent, arch, error)
    saveFinished = Signal(object)  # SaveReport of a verified save
    cancelled = Signal(str)  # long work stopped at the user's request; nothing changed
    inputShapeChanged = Signal(object)  # the new input shape tuple

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.document: Document | None = None
        self.undo_stack = QUndoStack(self)
        self.selected_path: str | None = None
        self.head_path: str | None = None
        self.tree: ModuleNode | None = None  # the last traced snapshot (read on the UI thread)
        self.original_tree: ModuleNode | None = None  # as loaded, to show what edits changed
        self.source: str | None = None
        self.saved_path: Path | None = None
        self.preload: list[str] = []  # modules to import on the worker (panels that need torch/pyqtgraph)
        self.panels_built: threading.Event | None = None  # a window sets it once its panels exist
        self.asks_user = False  # the window handles openFailed for consent/architecture with dialogs
        self._user_head = False
        self._generation = 0  # results of work started for an older document/state are dropped
        self._queue = WorkQueue(self)
        self._queue.activeChanged.connect(self.busyChanged)

    # -- state ---------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Background work is running or its result has not been delivered yet."""
        return self._queue.busy

    @property
    def dirty(self) -> bool:
        """There are edits since opening or the last save."""
        return not self.undo_stack.isClean()

    @property
    def traced(self) -> bool:
        """``tree`` reflects the current model and input shape."""
        return self.document is not None and self.tree is not None and not self._queue.busy

    def wait_idle(self, timeout_ms: int = -1) -> bool:
        """Block until background work has finished (results arrive on the next event loop turn)."""
        return self._queue.wait(timeout_ms)

    shutdown = wait_idle

    def cancel(self) -> None:
        """Cancel the running load/save; it stops at its next progress report and changes nothing."""
        self._queue.cancel_all()

    # -- opening -------------------------------------------------------------------------------------
    def open(
        self,
        source: str,
        arch: str | None = None,
        trust: bool = False,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        """Open ``source`` in the background; documentChanged + traceReady follow, else openFailed."""
        self._generation += 1
        generation = self._generation
        self._queue.cancel_all()

        import_core = self._core_importer()

        def job(progress: Any) -> Document:
            import_core()
            return _load(source, arch, trust, input_shape, progress)

        self._queue.submit(
            job,
            f"Opening {Path(source).name or source}…",
            lambda doc: self._on_opened(generation, source, doc),
            lambda err: self._on_open_failed(generation, source, err),
            self.progressChanged.emit,
        )

    def warm_up(self) -> None:
        """Import the core and the panels' heavy modules in the background, so the first open is quicker."""
        import_core = self._core_importer()
        self._queue.submit(lambda progress: import_core(), "Loading PyTorch…", _ignore, _ignore)

    def _core_importer(self) -> Any:
        """A job step for the worker: import the core and the panels' modules, then emit coreReady."""
        modules = ("headstudio.core.opening.sources", *self.preload)

        def import_core() -> None:
            settle_imports(modules)
            self.coreReady.emit()
            if self.panels_built is not None:  # let the UI build its panels without sharing the GIL
                self.panels_built.wait(PANELS_WAIT_S)

        return import_core

    def close_document(self) -> None:
        """Forget the open document (the caller has asked about unsaved edits)."""
        self._generation += 1
        self.undo_stack.clear()
        self.document = self.tree = self.original_tree = None
        self.source = self.saved_path = None
        self.selected_path = self.head_path = None
        self.documentChanged.emit()

    def _on_opened(self, generation: int, source: str, doc: Document) -> None:
        if generation != self._generation:
            return
        self.documentAboutToChange.emit()
        self.undo_stack.clear()
        self.undo_stack.setClean()
        self.document, self.source, self.saved_path = doc, source, None
        self.tree = self.original_tree = doc.tree()
        self.selected_path = None
        self._user_head = False
        self.head_path = _detected_head(doc)
        self.documentChanged.emit()
        self.traceReady.emit()
        self.headMarked.emit(self.head_path or "")

    def _on_open_failed(self, generation: int, source: str, err: BaseException) -> None:
        if generation != self._generation:
            return
        if _is_cancelled(err):
            self.cancelled.emit(str(err))
            return
        self.openFailed.emit(source, err)
        if not (self.asks_user and _needs_user_choice(err)):
            self.errorRaised.emit(one_line(err))

    # -- editing -------------------------------------------------------------------------------------
    def push_edit(self, edit: Any) -> bool:
        """Validate ``edit`` and push it (as an EditCommand) on the undo stack; False if refused."""
        from headstudio.core.errors import HeadStudioError

        from .commands import EditCommand

        if self.document is None:
            self.errorRaised.emit("open a model first (File ▸ Open)")
            return False
        self.wait_idle()  # an edit never changes a model a background trace is reading
        try:
            edit.validate(self.document)
        except HeadStudioError as err:
            self.errorRaised.emit(str(err))
            return False
        self.undo_stack.push(EditCommand(self, edit))
        return True

    def undo(self) -> None:
        """Undo the last edit (after background work on the model has finished)."""
        self.wait_idle()
        self.undo_stack.undo()

    def redo(self) -> None:
        """Redo the next edit (after background work on the model has finished)."""
        self.wait_idle()
        self.undo_stack.redo()

    def retrace(self) -> None:
        """Recompute shapes/heads/tree for the current model in the background; traceReady follows."""
        doc = self.document
        if doc is None:
            return
        self._generation += 1
        generation = self._generation
        self._queue.submit(
            lambda progress: doc.tree(),
            "Tracing shapes…",
            lambda tree: self._on_traced(generation, doc, tree),
            lambda err: self._on_trace_failed(generation, err),
            self.progressChanged.emit,
        )

    def _on_traced(self, generation: int, doc: Document, tree: ModuleNode) -> None:
        if generation != self._generation or doc is not self.document:
            return
        self.tree = tree
        detected = _detected_head(doc)
        if not self._user_head or self.head_path is None or tree.find(self.head_path) is None:
            self._user_head = False
            changed = detected != self.head_path
            self.head_path = detected
        else:
            changed = False
        if self.selected_path and tree.find(self.selected_path) is None:
            self.select("")
        self.traceReady.emit()
        if changed:
            self.headMarked.emit(self.head_path or "")

    def _on_trace_failed(self, generation: int, err: BaseException) -> None:
        if generation == self._generation:
            self.errorRaised.emit(one_line(err))

    # -- selection, head, input shape ------------------------------------------------------------------
    def select(self, path: str | None) -> None:
        """Select the module at ``path`` ("" = the whole model)."""
        path = path or ""
        if path == (self.selected_path or ""):
            return
        self.selected_path = path
        self.selectionChanged.emit(path)

    def mark_head(self, path: str | None) -> None:
        """Mark the module at ``path`` as the head the head editor works on."""
        if path is None:
            path = self.selected_path or ""
        self.head_path = path or None
        self._user_head = bool(path)
        self.headMarked.emit(path)

    def set_input_shape(self, shape: tuple[int, ...]) -> None:
        """Trace with another input shape (in the background); errors are reported, nothing changes."""
        from headstudio.core.errors import HeadStudioError

        if self.document is None:
            return
        self.wait_idle()
        try:
            self.document.set_input_shape(tuple(shape))
        except HeadStudioError as err:
            self.errorRaised.emit(str(err))
            return
        self.inputShapeChanged.emit(self.document.input_shape)
        self.retrace()

    def set_inputs(self, inputs: tuple[Any, ...]) -> None:
        """Trace with named, typed inputs (``input_ids=1,128:int64 ...``) in the background."""
        from headstudio.core.errors import HeadStudioError

        if self.document is None:
            return
        self.wait_idle()
        try:
            self.document.set_inputs(tuple(inputs))
        except HeadStudioError as err:
            self.errorRaised.emit(str(err))
            return
        self.inputShapeChanged.emit(self.document.input_shape)
        self.retrace()

    # -- saving --------------------------------------------------------------------------------------
    def save(self, path: str | Path, fmt: str | None = None) -> None:
        """Save in the background (atomic, verified); saveFinished(report) or errorRaised follows."""
        doc = self.document
        if doc is None:
            self.errorRaised.emit("nothing to save: open a model first")
            return
        target = Path(path)
        clean_index = self.undo_stack.index()

        def job(progress: Any) -> Any:
            from headstudio.core.saving.atomic import save

            return save(doc, target, format=fmt, progress=progress)

        self._queue.submit(
            job,
            f"Saving {target.name}…",
            lambda report: self._on_saved(doc, clean_index, report),
            self._on_save_failed,
            self.progressChanged.emit,
        )

    def _on_save_failed(self, err: BaseException) -> None:
        if _is_cancelled(err):
            self.cancelled.emit(str(err))
        else:
            self.errorRaised.emit(one_line(err))

    def _on_saved(self, doc: Document, clean_index: int, report: Any) -> None:
        if doc is self.document:
            self.saved_path = Path(report.path)
            if self.undo_stack.index() == clean_index:
                self.undo_stack.setClean()
        self.saveFinished.emit(report)


def _load(
    source: str,
    arch: str | None,
    trust: bool,
    input_shape: tuple[int, ...] | None,
    progress: Any,
) -> Document:
    """Runs on the worker thread: open (spec models with real weights, so they can be saved) and trace."""
    from headstudio.core.opening.sources import open_source
    from headstudio.core.opening.specs import looks_like_spec

    is_spec = not Path(source).expanduser().exists() and looks_like_spec(source)
    doc = open_source(
        source, arch=arch, trust=trust, input_shape=input_shape, materialize=is_spec, progress=progress
    )
    progress("tracing shapes", 0.9)
    doc.tree()
    return doc


def _is_cancelled(err: BaseException) -> bool:
    from headstudio.core.errors import Cancelled

    return isinstance(err, Cancelled)


def _ignore(_value: object) -> None:
    """Warm-up results need no handling (a failing import shows up again, with a message, on open)."""


def _detected_head(doc: Document) -> str | None:
    heads = doc.trace().heads
    return heads[0] if heads else None


def needs_architecture(err: BaseException) -> bool:
    """The file holds only weights: the user must say which architecture they belong to."""
    from headstudio.core.errors import ArchitectureRequiredError

    return isinstance(err, ArchitectureRequiredError)


def needs_consent(err: BaseException) -> bool:
    """The file would run code to load: the user must allow it (for this file only)."""
    from headstudio.core.errors import UnsafeCheckpointError

    return isinstance(err, UnsafeCheckpointError)


def _needs_user_choice(err: BaseException) -> bool:
    return needs_architecture(err) or needs_consent(err)
