"""Opening from the window: a file opened before reopens with its architecture, and an open that needs
the user (consent to run a file's code, or the architecture of bare weights) asks, then opens again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import dialogs
from .opening import needs_architecture, needs_consent
from .workers import one_line

if TYPE_CHECKING:
    from PySide6.QtWidgets import QWidget

    from .controller import DocumentController
    from .recent_files import RecentFiles


class OpenRequests:
    """The window's newest open request, kept so that an answer reopens it with everything it asked for."""

    def __init__(self, parent: QWidget, controller: DocumentController, recent: RecentFiles) -> None:
        self._parent = parent  # of the dialogs
        self._controller = controller
        self._recent = recent
        self._pending: dict[str, Any] = {}

    def open(self, source: str, arch: str | None, trust: bool, input_shape: Any, weights: str | None) -> None:
        """Start opening ``source``; without ``arch``, with the architecture it was last opened with."""
        remembered = self._recent.arch_for(source) if arch is None else None
        arch = arch or remembered
        self._pending = {
            "source": str(source),
            "arch": arch,
            "input_shape": input_shape,
            "weights": weights,
            "remembered": bool(remembered),
        }
        self._controller.open(str(source), arch=arch, trust=trust, input_shape=input_shape, weights=weights)

    def on_failed(self, source: str, err: BaseException, quiet: bool) -> str:
        """Ask what the failed open needs and open again; quiet (no dialogs): the line to show instead.

        Returns "" when nothing is left to show (other failures arrive through errorRaised)."""
        pending = self._pending if self._pending.get("source") == source else {"source": source}
        if pending.get("remembered"):
            self._recent.forget_arch(source)  # the file changed since: recognise it (or ask) next time
        if needs_consent(err) and not quiet:
            listed = list(err.globals)
            if dialogs.ask_consent(self._parent, source, listed):
                # exactly what the dialog listed (plus what was allowed before for this file) may run
                allowed = frozenset({*pending.get("allowed", ()), *listed})
                self._pending = {**pending, "allowed": allowed}
                self._controller.open(
                    source, pending.get("arch"), allowed, pending.get("input_shape"), pending.get("weights")
                )
        elif needs_architecture(err) and not quiet:
            arch = dialogs.ask_architecture(self._parent, source, list(err.candidates))
            if arch:
                self._pending = {**pending, "arch": arch, "remembered": False}
                self._controller.open(
                    source,
                    arch,
                    pending.get("allowed", False),
                    pending.get("input_shape"),
                    pending.get("weights"),
                )
        elif quiet and (needs_consent(err) or needs_architecture(err)):
            return one_line(err)
        return ""
