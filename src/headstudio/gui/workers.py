"""The one background-work mechanism: tasks off the UI thread, with progress and cancel; results as signals.

Only the DocumentController creates queues (one per kind of work: model work, previews, weight reads); each
runs its tasks one at a time, in order. Tasks are plain callables ``fn(progress) -> result``;
``progress(message, fraction)`` raises ``Cancelled`` once the task was cancelled, so core code stops at its
next report.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from headstudio.core.errors import Cancelled, HeadStudioError, Progress, first_line

Job = Callable[[Progress], Any]


class TaskSignals(QObject):
    """Lives on the UI thread; the worker thread emits, so receivers run on the UI thread (queued)."""

    progress = Signal(str, float)
    finished = Signal(object)  # the job's result
    failed = Signal(object)  # the exception


class Task(QRunnable):
    """One job run on a pool thread; cancel() makes its next progress report raise ``Cancelled``."""

    def __init__(self, job: Job, message: str) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.job = job
        self.message = message
        self.signals = TaskSignals()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next progress report."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def report(self, message: str, fraction: float) -> None:
        """The progress callback handed to the job."""
        if self._cancelled.is_set():
            raise Cancelled(f"{self.message} cancelled; nothing was changed")
        self.signals.progress.emit(message, float(fraction))

    def run(self) -> None:
        """Run the job; exceptions become ``failed`` (unexpected ones are logged for developers)."""
        try:
            if self._cancelled.is_set():
                self.report(self.message, 0.0)
            result = self.job(self.report)
        except BaseException as err:  # every failure goes back to the UI as a signal
            if not isinstance(err, HeadStudioError):
                traceback.print_exc()
            self.signals.failed.emit(err)
        else:
            self.signals.finished.emit(result)


class WorkQueue(QObject):
    """Runs tasks one after another on a private thread; tracks how many are not yet delivered."""

    # busy (1 or 0), message of the newest task. Never a Python bool: PySide6 6.12 drops a reference to
    # True/False on Python emits of a bool (Signal(bool), or any signal without receivers), and after a
    # few thousand tasks Python aborts with "deallocating True or False".
    activeChanged = Signal(int, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._tasks: list[Task] = []

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def submit(
        self,
        job: Job,
        message: str,
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
        on_progress: Callable[[str, float], None] | None = None,
    ) -> Task:
        """Queue ``job``; ``on_done``/``on_error`` run on the UI thread when it ends."""
        task = Task(job, message)
        if on_progress is not None:
            task.signals.progress.connect(on_progress)
        task.signals.finished.connect(lambda result: self._deliver(task, on_done, result))
        task.signals.failed.connect(lambda err: self._deliver(task, on_error, err))
        self._tasks.append(task)
        self.activeChanged.emit(1, message)
        self._pool.start(task)
        return task

    def cancel_all(self) -> None:
        """Ask every queued or running task to stop."""
        for task in self._tasks:
            task.cancel()

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until the worker thread is idle (for shutdown and tests; results may still be queued)."""
        return self._pool.waitForDone(timeout_ms)

    def _deliver(self, task: Task, callback: Callable[[Any], None], value: Any) -> None:
        try:
            callback(value)
        finally:
            if task in self._tasks:
                self._tasks.remove(task)
            if not self._tasks:
                self.activeChanged.emit(0, "")


def one_line(err: BaseException) -> str:
    """A user-facing line for any failure: HeadStudioError text as is, anything else named briefly."""
    if isinstance(err, HeadStudioError):
        return str(err)
    if isinstance(err, MemoryError):
        return "not enough memory for this model; close other programs or open a smaller model"
    return f"unexpected {first_line(err, with_type=True)}"
