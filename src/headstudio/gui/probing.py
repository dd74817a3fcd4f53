"""Probing the open model for the controller: one probe at a time on the controller's model queue,
cancellable, with a surgery proof for an edited model; a result for a model edited meanwhile is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from headstudio.core.errors import Cancelled, Progress

from .workers import Task, WorkQueue, one_line

if TYPE_CHECKING:
    from headstudio.core.model.document import Document
    from headstudio.core.model.probe import ProbeResult
    from headstudio.core.model.surgery_proof import SurgeryProof

    Probed = tuple[ProbeResult, SurgeryProof | None]


class ProbeRuns(QObject):
    """The controller's probes, run on a queue the controller owns; outcomes come back as signals."""

    progress = Signal(str, float)  # message, fraction 0..1
    finished = Signal(object, object)  # ProbeResult, SurgeryProof (None for an unedited model)
    cancelled = Signal(str)  # stopped at the user's request, or the model changed meanwhile
    failed = Signal(str)  # one-line user-facing message

    def __init__(
        self, queue: WorkQueue, current: Callable[[], Document | None], parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._queue = queue
        self._current = current  # the controller's open document, asked when a result arrives
        self._task: Task | None = None  # the running probe (Cancel stops it at its next module)

    def start(self, doc: Document, image: str | None, seed: int, top_k: int) -> None:
        """Cancel a running probe, then probe ``doc`` (a detached copy of it) in the background."""
        self.cancel()
        version = doc.version
        self._task = self._queue.submit(
            lambda progress: probe_with_proof(doc, image, seed, top_k, progress),
            "Probing…",
            lambda found: self._on_probed(doc, version, found),
            self._on_failed,
            self.progress.emit,
        )

    def cancel(self) -> None:
        """Stop a running probe at its next module; nothing changes."""
        if self._task is not None:
            self._task.cancel()

    def _on_probed(self, doc: Document, version: int, found: Probed) -> None:
        task, self._task = self._task, None
        if doc is not self._current():
            return
        if task is not None and task.cancelled:  # finished before it saw the cancel: still show nothing
            self.cancelled.emit("Probing cancelled; nothing was changed")
            return
        if doc.version != version:  # edited while probing: the proof would colour a tree it is not about
            self.cancelled.emit("the model changed while probing; run the probe again")
            return
        self.finished.emit(*found)

    def _on_failed(self, err: BaseException) -> None:
        self._task = None
        if isinstance(err, Cancelled):
            self.cancelled.emit(str(err))
        else:
            self.failed.emit(one_line(err))


def probe_with_proof(doc: Document, image: str | None, seed: int, top_k: int, progress: Progress) -> Probed:
    """Runs on the worker thread: summarise every module's output for one input, and for an edited model
    run the same input through the model as opened (surgery proof)."""
    from headstudio.core.model.probe import make_input, probe
    from headstudio.core.model.surgery_proof import prove_surgery

    progress("preparing the input", 0.0)
    twin = doc.detached()
    given = make_input(twin, image, seed)
    result = probe(twin, given, top_k=top_k, all_modules=True, progress=progress)
    proof = None
    if twin.edits and twin.baseline is not None:
        proof = prove_surgery(twin, given.tensor, lambda m, f: progress(f"proof: {m}", f))
    return result, proof
