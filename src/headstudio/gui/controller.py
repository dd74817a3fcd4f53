"""DocumentController: the GUI's single owner of the open Document, its history and background work.

Widgets listen to its signals and call its methods; none of them holds model state or a thread. The core
is imported lazily (in workers), so the window can appear before ``import torch`` has finished.

Nothing waits: background work never changes the live model. Traces and previews run on structural copies
(``Document.compute_trace``/``detached``), saves on a detached copy, and weight statistics only read
tensors (edits swap modules, they never write a tensor in place). A result computed for a model that was
edited meanwhile is dropped (generation and ``Document.version`` checks) and the newer work follows.
Probes (``probing.py``) and previews (``previews.py``) are parts it composes, run on queues it owns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoStack

from headstudio.core.errors import Cancelled, HeadStudioError, Progress

from .imports import settle_imports
from .opening import detected_head, load_document, needs_user_choice
from .previews import PreviewRuns
from .probing import ProbeRuns
from .workers import WorkQueue, one_line

if TYPE_CHECKING:
    from headstudio.core.edits.base import Edit
    from headstudio.core.model.document import Document, TracedModel
    from headstudio.core.model.inputs import NamedInput
    from headstudio.core.model.tree import ModuleNode
    from headstudio.core.saving.atomic import SaveReport

T = TypeVar("T")


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
    busyChanged = Signal(int, str)  # 1/0: long work started/ended, with a message (an int: see workers)
    errorRaised = Signal(str)  # one-line user-facing message
    progressChanged = Signal(str, float)  # message, fraction 0..1 of the running task
    openFailed = Signal(str, object)  # source, the exception (the window decides: consent, arch, error)
    saveFinished = Signal(object)  # SaveReport of a verified save
    cancelled = Signal(str)  # long work stopped at the user's request; nothing changed
    inputShapeChanged = Signal(object)  # the new input shape tuple
    previewReady = Signal(object, str)  # Preview or None, problem text ("" with a Preview): newest request
    probeFinished = Signal(object, object)  # ProbeResult, SurgeryProof (None for an unedited model)

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
        self._traced_version = -1  # the Document.version that ``tree`` shows
        self._resetting_history = False  # clearing the undo stack for a new document is not an edit
        self._queue = WorkQueue(self)  # opening, tracing, saving: one at a time, shown as busy
        self._preview_queue = WorkQueue(self)  # edit previews while the user types
        self._reads = WorkQueue(self)  # statistics over weights for the inspector
        self._probes = ProbeRuns(self._queue, lambda: self.document, self)  # on the model queue
        self._previews = PreviewRuns(self._preview_queue, self)
        self._queue.activeChanged.connect(self.busyChanged)
        self._previews.ready.connect(self.previewReady)
        self._probes.progress.connect(self.progressChanged)
        self._probes.finished.connect(self.probeFinished)
        self._probes.cancelled.connect(self.cancelled)
        self._probes.failed.connect(self.errorRaised)
        self.undo_stack.indexChanged.connect(self._on_history_moved)

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
        doc = self.document
        return doc is not None and self.tree is not None and self._traced_version == doc.version

    def wait_idle(self, timeout_ms: int = -1) -> bool:
        """Block until all background work has finished: for closing and tests, never before an edit."""
        return all(queue.wait(timeout_ms) for queue in (self._queue, self._preview_queue, self._reads))

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
        weights: str | None = None,
    ) -> None:
        """Open ``source`` in the background; documentChanged + traceReady follow, else openFailed.

        ``weights="ema"`` opens a training checkpoint's EMA copy."""
        self._generation += 1
        generation = self._generation
        self._queue.cancel_all()

        import_core = self._core_importer()

        def job(progress: Progress) -> Document:
            import_core()
            return load_document(source, arch, trust, input_shape, progress, weights)

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

    def _core_importer(self) -> Callable[[], None]:
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
        self._clear_history()
        self.document = self.tree = self.original_tree = None
        self.source = self.saved_path = None
        self.selected_path = self.head_path = None
        self.documentChanged.emit()

    def _on_opened(self, generation: int, source: str, doc: Document) -> None:
        if generation != self._generation:
            return
        self.documentAboutToChange.emit()
        self._clear_history()
        self.document, self.source, self.saved_path = doc, source, None
        self.tree = self.original_tree = doc.tree()
        self._traced_version = doc.version
        self.selected_path = None
        self._user_head = False
        self.head_path = detected_head(doc)
        self.documentChanged.emit()
        self.traceReady.emit()
        self.headMarked.emit(self.head_path or "")

    def _clear_history(self) -> None:
        self._resetting_history = True
        try:
            self.undo_stack.clear()
            self.undo_stack.setClean()
        finally:
            self._resetting_history = False

    def _on_open_failed(self, generation: int, source: str, err: BaseException) -> None:
        if generation != self._generation:
            return
        if isinstance(err, Cancelled):
            self.cancelled.emit(str(err))
            return
        self.openFailed.emit(source, err)
        if not (self.asks_user and needs_user_choice(err)):
            self.errorRaised.emit(one_line(err))

    # -- editing -------------------------------------------------------------------------------------
    def push_edit(self, edit: Edit) -> bool:
        """Validate ``edit`` and push it (as an EditCommand) on the undo stack; False if refused."""
        from .commands import EditCommand

        if self.document is None:
            self.errorRaised.emit("open a model first (File ▸ Open)")
            return False
        try:
            edit.validate(self.document)
        except HeadStudioError as err:
            self.errorRaised.emit(str(err))
            return False
        self.undo_stack.push(EditCommand(self, edit))
        return True

    def undo(self) -> None:
        """Undo the last edit."""
        self.undo_stack.undo()

    def redo(self) -> None:
        """Redo the next edit."""
        self.undo_stack.redo()

    def _on_history_moved(self, _index: int) -> None:
        """An edit was applied or reverted (push, undo, redo, a click in the history): tell and re-trace."""
        if self._resetting_history or self.document is None:
            return
        self.discard_previews()
        self.modelEdited.emit()
        self.retrace()

    def retrace(self) -> None:
        """Recompute shapes/heads/tree for the current model in the background; traceReady follows."""
        doc = self.document
        if doc is None:
            return
        self._generation += 1
        generation = self._generation
        self._queue.submit(
            lambda progress: doc.compute_trace(),
            "Tracing shapes…",
            lambda traced: self._on_traced(generation, doc, traced),
            lambda err: self._on_trace_failed(generation, err),
            self.progressChanged.emit,
        )

    def _on_traced(self, generation: int, doc: Document, traced: TracedModel) -> None:
        if generation != self._generation or doc is not self.document:
            return
        if not doc.adopt(traced):  # changed behind the controller's back: trace what it is now
            self.retrace()
            return
        tree = self.tree = doc.tree()
        self._traced_version = doc.version
        detected = detected_head(doc)
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

    # -- previews and weight reads ----------------------------------------------------------------------
    def request_preview(self, edit: Edit) -> None:
        """Preview ``edit`` on a detached copy of the document in the background; previewReady follows.

        Only the newest request is delivered: older ones are skipped or their results dropped.
        """
        self._previews.request(self.document, edit)

    def discard_previews(self) -> None:
        """Drop previews that are running or queued (the model or the inputs changed)."""
        self._previews.discard()

    def read_weights(self, work: Callable[[], T], on_done: Callable[[T | None], None]) -> None:
        """Run ``work`` (statistics over weight tensors) in the background; ``on_done(result or None)``.

        No wait is needed: edits replace modules and flags, they never write into a tensor in place.
        """
        self._reads.submit(lambda progress: work(), "Reading weights…", on_done, lambda err: on_done(None))

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
        if self.document is not None:
            self._change_inputs(self.document.set_input_shape, tuple(shape))

    def set_inputs(self, inputs: tuple[NamedInput, ...]) -> None:
        """Trace with named, typed inputs (``input_ids=1,128:int64 ...``) in the background."""
        if self.document is not None:
            self._change_inputs(self.document.set_inputs, tuple(inputs))

    def _change_inputs(self, change: Callable[[T], object], value: T) -> None:
        """``change(value)`` on the document's inputs, then tell and re-trace; a refusal is reported."""
        try:
            change(value)
        except HeadStudioError as err:
            self.errorRaised.emit(str(err))
            return
        self.inputShapeChanged.emit(self.document.input_shape)
        self.retrace()

    # -- probing -------------------------------------------------------------------------------------
    def probe(self, image: str | None = None, seed: int = 0, top_k: int = 5) -> None:
        """Run an image (or a seeded random input) through the model in the background.

        The probe runs on a detached copy (weights shared), so editing may go on meanwhile; every module's
        output is summarised, and for an edited model the same input also runs through the model as
        opened (surgery proof). probeFinished(result, proof), or errorRaised/cancelled, follows.
        """
        if self.document is None:
            self.errorRaised.emit("open a model first (File ▸ Open)")
            return
        self._probes.start(self.document, image, seed, top_k)

    def cancel_probe(self) -> None:
        """Stop a running probe at its next module; nothing changes."""
        self._probes.cancel()

    # -- saving --------------------------------------------------------------------------------------
    def save(self, path: str | Path, fmt: str | None = None) -> None:
        """Save in the background (atomic, verified); saveFinished(report) or errorRaised follows."""
        doc = self.document
        if doc is None:
            self.errorRaised.emit("nothing to save: open a model first")
            return
        target = Path(path)
        clean_index, version = self.undo_stack.index(), doc.version

        def job(progress: Progress) -> SaveReport:
            from headstudio.core.saving.atomic import save

            return save(doc.detached(), target, format=fmt, progress=progress)  # edits may go on meanwhile

        self._queue.submit(
            job,
            f"Saving {target.name}…",
            lambda report: self._on_saved(doc, clean_index, version, report),
            self._on_save_failed,
            self.progressChanged.emit,
        )

    def _on_save_failed(self, err: BaseException) -> None:
        if isinstance(err, Cancelled):
            self.cancelled.emit(str(err))
        else:
            self.errorRaised.emit(one_line(err))

    def _on_saved(self, doc: Document, clean_index: int, version: int, report: SaveReport) -> None:
        if doc is self.document:
            self.saved_path = Path(report.path)
            if self.undo_stack.index() == clean_index and doc.version == version:
                self.undo_stack.setClean()
        self.saveFinished.emit(report)


def _ignore(_value: object) -> None:
    """Warm-up results need no handling (a failing import shows up again, with a message, on open)."""
