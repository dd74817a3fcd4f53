"""Live edit previews off the UI thread, and how the head editor words and colours them.

A preview runs the core's ``edit.preview`` (a trace of a meta copy of the model: 60 ms for resnet18,
0.5 s for vit_h_14) on a private thread, so typing in the head editor never stalls the window.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QColor, QPalette

from headstudio.core.errors import HeadStudioError


class InputProblem(ValueError):
    """The panel's inputs do not describe an edit yet (e.g. hidden sizes 'abc')."""


def parse_sizes(text: str) -> tuple[int, ...]:
    """'512, 256' -> (512, 256); raises InputProblem for anything that is not positive integers."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise InputProblem(f"hidden sizes '{text}' must be positive integers, e.g. 512,256") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise InputProblem(f"hidden sizes '{text}' must be positive integers, e.g. 512,256")
    return sizes


def format_delta(before: int, after: int) -> str:
    """'11,689,512 → 11,181,642 (−507,870)'."""
    delta = after - before
    sign = "+" if delta > 0 else "−" if delta < 0 else "±"
    return f"{before:,} → {after:,} ({sign}{abs(delta):,})"


def activation_names() -> list[str]:
    """The MLP activations the core offers."""
    try:
        from headstudio.core.edits.replace import ACTIVATIONS
    except ImportError:
        return ["relu"]
    return list(ACTIVATIONS)


def describe_head_sizes(head: Any) -> str:
    """' (Linear 512 → 1000)' for a HeadInfo; '' when unknown."""
    if head is None:
        return ""
    sizes = f" {head.in_features} → {head.out_features}" if head.in_features else ""
    return f" ({head.type}{sizes})"


def format_shape(shape: Any) -> str:
    """'[1, 10]', or a dash when there is no shape."""
    return "—" if shape is None else str(shape)


def problem_color(palette: QPalette) -> QColor:
    """A red readable on this palette's window colour (dark mode gets a lighter red)."""
    dark = palette.color(QPalette.ColorRole.Window).lightness() < 128
    return QColor("#ff6b6b") if dark else QColor("#c62828")


def warning_color(palette: QPalette) -> QColor:
    """An amber readable on this palette's window colour."""
    dark = palette.color(QPalette.ColorRole.Window).lightness() < 128
    return QColor("#ffb74d") if dark else QColor("#a35a00")


def pinned_document(doc: Any) -> Any:
    """A shallow copy of ``doc`` that keeps its current (cached) trace even if ``doc`` changes meanwhile.

    The preview thread then never traces the live model while the controller re-traces it.
    """
    doc.trace()  # cached when the controller is idle; otherwise computed here, on the calling thread
    pinned = copy.copy(doc)
    pinned.edits = list(doc.edits)
    return pinned


_RUNNERS: weakref.WeakSet[PreviewRunner] = weakref.WeakSet()


def wait_for_previews() -> None:
    """Before an edit changes a model: drop running previews and wait until none is copying the model.

    A preview deep-copies the live model; copied mid-edit (or mid-trace, hooks and all) it would be wrong.
    """
    for runner in list(_RUNNERS):
        runner.discard()
        runner.wait()


class _Signals(QObject):
    done = Signal(int, object, str)  # generation, Preview or None, problem text


class _PreviewJob(QRunnable):
    def __init__(self, signals: _Signals, latest: list[int], edit: Any, doc: Any) -> None:
        super().__init__()
        self.signals, self.latest, self.edit, self.doc = signals, latest, edit, doc
        self.generation = latest[0]

    def run(self) -> None:
        if self.generation != self.latest[0]:
            return  # a newer request is queued: skip this one
        try:
            result, problem = self.edit.preview(self.doc), ""
        except HeadStudioError as err:
            result, problem = None, str(err)
        except Exception as err:  # e.g. the model was edited while it was being copied: a stale preview
            result, problem = None, f"preview failed ({type(err).__name__}); change a value to retry"
        with contextlib.suppress(RuntimeError):  # the panel was closed meanwhile: nobody waits for it
            self.signals.done.emit(self.generation, result, problem)


class PreviewRunner(QObject):
    """Runs one preview at a time in the background; only the newest request's result is delivered."""

    finished = Signal(object, str)  # Preview or None, problem text ("" when there is a Preview)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._signals = _Signals()  # not parented: a job finishing after its widget closed emits harmlessly
        self._signals.done.connect(self._on_done)
        self._latest = [0]  # the newest request's number, shared with the jobs (read on their thread)
        _RUNNERS.add(self)

    @property
    def running(self) -> bool:
        """A requested preview has not been delivered yet."""
        return self._pool.activeThreadCount() > 0

    def request(self, edit: Any, doc: Any) -> None:
        """Preview ``edit`` on a pinned copy of ``doc``; an older request's result will be dropped."""
        self._latest[0] += 1
        self._pool.start(_PreviewJob(self._signals, self._latest, edit, pinned_document(doc)))

    def discard(self) -> None:
        """Drop whatever is running (the model changed, so its result would be stale)."""
        self._latest[0] += 1

    def wait(self) -> None:
        """Block until the preview thread no longer reads the model (before an edit changes it)."""
        self._pool.waitForDone()

    def _on_done(self, generation: int, result: Any, problem: str) -> None:
        if generation == self._latest[0]:
            self.finished.emit(result, problem)
