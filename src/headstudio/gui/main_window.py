"""The main window: actions, status bar, and the panels around the module tree, wired to the controller.

Its docks, panel creation and menus are laid out in ``window_layout.py``; the questions a failed open asks
(consent, architecture) are in ``open_requests.py``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import QMainWindow, QSplitter, QStackedWidget, QWidget

from . import dialogs
from .controller import DocumentController
from .open_requests import OpenRequests
from .recent_files import RecentFiles, recent_key
from .start_page import StartPage
from .status_bar import DocumentStatusBar
from .tree_panel import ModuleTreePanel
from .window_layout import PANEL_MODULES, DockLayout, add_dock, add_menus, create_panel

DEFAULT_SIZE = (1280, 800)
STAGGER_MS = 5  # between steps of UI work split up so input and painting get their turn in between


class MainWindow(QMainWindow):
    """Head Studio's window. ``open(source)`` starts loading in the background."""

    def __init__(
        self, controller: DocumentController | None = None, settings: QSettings | None = None
    ) -> None:
        super().__init__()
        self.setObjectName("mainWindow")
        self.controller = controller or DocumentController(self)
        self.controller.asks_user = True
        self.controller.panels_built = threading.Event()
        self.controller.preload = [m if "." in m else f"headstudio.gui.{m}" for m in PANEL_MODULES]
        self.settings = settings or QSettings()
        self.recent = RecentFiles(self.settings)
        self.quiet = False  # --screenshot: errors go to stderr, no dialogs
        self.open_requests = OpenRequests(self, self.controller, self.recent)
        self.setAcceptDrops(True)
        self.start_page = StartPage(self)
        self.start_page.openRequested.connect(self.open)
        self.start_page.browseRequested.connect(self.browse)
        self.tree_panel = ModuleTreePanel(self.controller, self)
        self.pages = QStackedWidget(self)
        self.pages.addWidget(self.start_page)
        self.pages.addWidget(self._workspace())
        self.setCentralWidget(self.pages)
        self._make_actions()
        self.recent_menu = add_menus(self)
        self.status = DocumentStatusBar(self.controller, self)
        self.setStatusBar(self.status)
        self._connect()
        self._on_document()  # the start page: actions that need a model start disabled
        self.resize(*DEFAULT_SIZE)
        self._restore()
        self._refresh_recent()
        self._update_title()

    # -- layout ----------------------------------------------------------------------------------------
    def _workspace(self) -> QWidget:
        split = QSplitter(Qt.Orientation.Horizontal, self, objectName="workspace")
        split.addWidget(self.tree_panel)
        self.workspace = split
        self.head_editor = self.inspector = self.chart = self.history = self.probe = None
        right, bottom = Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.BottomDockWidgetArea
        self.setCorner(Qt.Corner.BottomRightCorner, right)
        self.inspector_dock = add_dock(self, "Inspector", "inspectorDock", right)
        self.probe_dock = add_dock(self, "Probe", "probeDock", right)
        self.tabifyDockWidget(self.inspector_dock, self.probe_dock)
        self.chart_dock = add_dock(self, "Parameters per block", "chartDock", bottom)
        self.history_dock = add_dock(self, "History", "historyDock", bottom)
        self.tabifyDockWidget(self.chart_dock, self.history_dock)
        docks = (self.inspector_dock, self.probe_dock, self.chart_dock, self.history_dock)
        self.dock_layout = DockLayout(self, *docks)
        return split

    def build_panels(self) -> None:
        """Create the panels once the core is loaded (they import torch; the window must not wait for it)."""
        while self._build_next_panel():
            pass

    def build_panels_gradually(self) -> None:
        """Create the panels one per event-loop turn, so the window stays responsive meanwhile."""
        if self._build_next_panel():
            QTimer.singleShot(STAGGER_MS, self, self.build_panels_gradually)

    def _build_next_panel(self) -> bool:
        """Create the next missing panel; False when all exist."""
        ctl = self.controller
        if self.head_editor is None:
            self.head_editor = create_panel("head_editor", "HeadEditor", ctl, self.workspace)
            self.workspace.addWidget(self.head_editor)
            self.workspace.setStretchFactor(0, 1)  # a wider window widens the tree: its columns need it
            self.workspace.setStretchFactor(1, 0)
            self.workspace.setSizes([800, self.head_editor.minimumSizeHint().width()])
        elif self.inspector is None:
            self.inspector = create_panel("inspector", "Inspector", ctl, self.inspector_dock)
            self.inspector_dock.setWidget(self.inspector)
        elif self.chart is None:
            self.chart = create_panel("charts", "ParamsChart", ctl, self.chart_dock)
            self.chart_dock.setWidget(self.chart)
        elif self.history is None:
            self.history = create_panel("commands", "HistoryView", ctl, self.history_dock)
            self.history_dock.setWidget(self.history)
        elif self.probe is None:
            self.probe = create_panel("probe_panel", "ProbePanel", ctl, self.probe_dock)
            self.probe_dock.setWidget(self.probe)
        else:
            self.controller.panels_built.set()  # a first load waiting for them goes on
            return False
        return True

    def _action(self, name: str, text: str, keys: Any = None, slot: Any = None) -> QAction:
        action = QAction(text, self, objectName=name)
        if keys is not None:
            action.setShortcut(QKeySequence(keys))
        if slot is not None:
            action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _make_actions(self) -> None:
        keys = QKeySequence.StandardKey
        ctl = self.controller
        self.action_open = self._action("actionOpen", "&Open…", keys.Open, self.browse)
        self.action_open_folder = self._action(
            "actionOpenFolder", "Open &Folder…", "Ctrl+Shift+O", self.browse_folder
        )
        self.action_save = self._action("actionSave", "&Save", keys.Save, self.save)
        self.action_save_as = self._action("actionSaveAs", "Save &As…", "Ctrl+Shift+S", self.save_as)
        self.action_quit = self._action("actionQuit", "&Quit", keys.Quit, self.close)
        self.action_undo = self._action("actionUndo", "&Undo", keys.Undo, ctl.undo)
        self.action_redo = self._action("actionRedo", "&Redo", "Ctrl+Shift+Z", ctl.redo)
        self.action_mark_head = self._action("actionMarkHead", "&Mark as head", "Ctrl+M", self.mark_head)
        self.action_freeze = self._action("actionFreezeBackbone", "&Freeze backbone", "Ctrl+B", self.freeze)
        self.action_code = self._action("actionShowCode", "Show &code…", "Ctrl+Shift+C", self.show_code)
        self.action_ema = self._action("actionEmaWeights", "Use &EMA weights")
        self.action_ema.setCheckable(True)
        self.action_ema.setEnabled(False)
        self.action_ema.setToolTip("Open the checkpoint's EMA copy of the weights instead of the main ones")
        self.action_ema.triggered.connect(self.use_ema_weights)
        self.action_attach = self._action(
            "actionAttachHead", "&Attach head from file…", None, self.attach_head
        )
        self.action_undo.setEnabled(False)
        self.action_redo.setEnabled(False)
        ctl.undo_stack.canUndoChanged.connect(self.action_undo.setEnabled)
        ctl.undo_stack.canRedoChanged.connect(self.action_redo.setEnabled)
        ctl.undo_stack.undoTextChanged.connect(lambda t: self.action_undo.setText(f"&Undo {t}".strip()))
        ctl.undo_stack.redoTextChanged.connect(lambda t: self.action_redo.setText(f"&Redo {t}".strip()))

    def _connect(self) -> None:
        ctl = self.controller
        ctl.coreReady.connect(self.build_panels_gradually)  # before the model arrives: showing it is quick
        ctl.documentAboutToChange.connect(self.build_panels)
        ctl.documentChanged.connect(self._on_document)
        ctl.errorRaised.connect(self.show_error)
        ctl.openFailed.connect(self._on_open_failed)
        ctl.saveFinished.connect(self._on_saved)
        ctl.undo_stack.cleanChanged.connect(self._update_title)

    # -- opening ---------------------------------------------------------------------------------------
    def open(
        self,
        source: str,
        arch: str | None = None,
        trust: bool = False,
        input_shape: Any = None,
        weights: str | None = None,
    ) -> None:
        """Start opening ``source`` in the background (asks first about unsaved edits).

        A file opened before with a chosen or recognised architecture reopens with it, without asking."""
        if not self.maybe_keep_edits():
            return
        self.open_requests.open(source, arch, trust, input_shape, weights)

    def browse(self) -> None:
        """File ▸ Open: choose a checkpoint."""
        recent = self.recent_files()
        path = dialogs.ask_open_path(self, str(Path(recent[0]).parent) if recent else "")
        if path:
            self.open(path)

    def browse_folder(self) -> None:
        """File ▸ Open Folder: choose a Hugging Face model folder (config.json + weights)."""
        recent = self.recent_files()
        path = dialogs.ask_open_folder(self, str(Path(recent[0]).parent) if recent else "")
        if path:
            self.open(path)

    def _on_open_failed(self, source: str, err: BaseException) -> None:
        message = self.open_requests.on_failed(source, err, self.quiet)  # asks for consent or an architecture
        if message:
            self.show_error(message)  # other failures arrive through errorRaised

    def _model_actions(self) -> list[QAction]:
        """The actions that act on an open model (disabled on the start page)."""
        return [
            self.action_save,
            self.action_save_as,
            self.action_mark_head,
            self.tree_panel.action_go_to_head,
            self.action_freeze,
            self.action_code,
        ]

    def _on_document(self) -> None:
        ctl = self.controller
        opened = ctl.document is not None
        for action in self._model_actions():
            action.setEnabled(opened)
        self.action_freeze.setEnabled(opened and ctl.document.editable)
        self.pages.setCurrentIndex(1 if opened else 0)
        if opened:
            self.dock_layout.show_with_model(DEFAULT_SIZE[0])
        if opened and ctl.source and ctl.document.origin.path is not None:
            self.add_recent(recent_key(ctl.source), ctl.document.origin.remembered_arch())
        if opened:
            self._show_weights_choice()
            said = ctl.document.origin.architecture_line()
            if said:
                self.statusBar().showMessage(said, 20000)
        self._update_title()

    # -- editing ---------------------------------------------------------------------------------------
    def mark_head(self) -> None:
        """Model ▸ Mark as head: the selected module becomes the head the editor works on."""
        path = self.controller.selected_path
        if self.controller.document is None or not path:
            self.show_error("select a module in the tree first, then mark it as the head")
            return
        self.controller.mark_head(path)
        self.statusBar().showMessage(f"{path} marked as head", 5000)

    def freeze(self) -> None:
        """Model ▸ Freeze backbone: the head editor's action, with its BatchNorm-eval choice."""
        if self.head_editor is not None:
            self.head_editor.freeze_backbone()

    def attach_head(self) -> None:
        """Model ▸ Attach head from file: the head editor's action (fit check, adapter offer)."""
        if self.controller.document is None:
            self.show_error("open a model first (File ▸ Open)")
        elif self.head_editor is not None and hasattr(self.head_editor, "attach_from_file"):
            self.head_editor.attach_from_file()

    def show_code(self) -> None:
        """Model ▸ Show code: plain PyTorch for the edits so far."""
        if self.controller.document is None:
            return
        from .code_view import CodeView

        CodeView(self.controller, self).show()

    # -- saving ----------------------------------------------------------------------------------------
    def save(self) -> bool:
        """Save to the last save target; the first save asks where (the source is never written)."""
        if self.controller.document is None:
            return False
        if self.controller.saved_path is None:
            return self.save_as()
        self.controller.save(self.controller.saved_path)
        return True

    def save_as(self) -> bool:
        """Choose a file and format, then save in the background."""
        ctl = self.controller
        if ctl.document is None:
            return False
        name = Path(ctl.source or "model").name.replace(":", "_")
        stem = name.split(".")[0] or "model"
        folder = ctl.document.origin.path.parent if ctl.document.origin.path else Path.home()
        origin = ctl.document.origin
        suffix = origin.path.suffix if origin.kind == "checkpoint" and origin.path else ".safetensors"
        choice = dialogs.ask_save_path(self, str(folder / f"{stem}-edited{suffix}"))
        if choice is None:
            return False
        path, fmt = choice
        ctl.save(path, fmt)
        return True

    def _on_saved(self, report: Any) -> None:
        self.statusBar().showMessage(report.describe() + "".join(f"; {w}" for w in report.warnings), 15000)
        self._update_title()

    def maybe_keep_edits(self) -> bool:
        """True if it is fine to drop the current document (saved, discarded, or no edits)."""
        ctl = self.controller
        if ctl.document is None or not ctl.dirty:
            return True
        answer = dialogs.ask_save_changes(self)
        if answer == "discard":
            return True
        if answer == "save" and self.save():
            ctl.wait_idle()
            _deliver_pending_events()
            return not ctl.dirty
        return False

    def closeEvent(self, event: QCloseEvent) -> None:
        """Ask about unsaved edits; remember geometry and layout."""
        if not self.maybe_keep_edits():
            event.ignore()
            return
        self.controller.cancel()
        self.controller.wait_idle()
        self.settings.setValue("window/geometry", self.saveGeometry())
        if self.controller.document is not None:  # on the start page the docks are hidden, not closed
            self.settings.setValue("window/state", self.saveState())
        event.accept()

    # -- status ----------------------------------------------------------------------------------------
    def _update_title(self) -> None:
        ctl = self.controller
        name = Path(ctl.source).name if ctl.source else ""
        self.setWindowTitle(f"{name}[*] — Head Studio" if name else "Head Studio")
        self.setWindowModified(ctl.dirty)
        self.status.set_dirty(ctl.dirty)

    def show_error(self, message: str) -> None:
        """Errors are one line: a dialog (or stderr for --screenshot), never a traceback."""
        self.statusBar().showMessage(message, 10000)
        if self.quiet:
            import sys

            print(f"headstudio: {message}", file=sys.stderr)
        else:
            dialogs.show_error(self, message)

    # -- recent files, settings, drag and drop -------------------------------------------------------------
    def recent_files(self) -> list[str]:
        """Recently opened files, newest first."""
        return self.recent.paths()

    def add_recent(self, path: str, arch: str | None = None) -> None:
        """Remember ``path`` at the top of the recent list, with the architecture it was opened with."""
        self.recent.add(path, arch)
        self._refresh_recent()

    def _show_weights_choice(self) -> None:
        """Model ▸ Use EMA weights: offered when the checkpoint holds an EMA copy."""
        ckpt = self.controller.document.origin.checkpoint
        has_ema = ckpt is not None and (bool(ckpt.ema_key) or ckpt.weights == "ema")
        self.action_ema.setEnabled(has_ema)
        self.action_ema.setChecked(has_ema and ckpt.weights == "ema")

    def use_ema_weights(self, ema: bool) -> None:
        """Reopen the checkpoint with its EMA (or main) weights, with the same architecture."""
        doc = self.controller.document
        if doc is None or self.controller.source is None:
            return
        self.open(self.controller.source, doc.origin.remembered_arch(), weights="ema" if ema else "main")

    def _refresh_recent(self) -> None:
        paths = self.recent_files()
        self.start_page.set_recent(paths)
        self.recent_menu.clear()
        for path in paths:
            self.recent_menu.addAction(Path(path).name, lambda p=path: self.open(p)).setToolTip(path)
        self.recent_menu.setEnabled(bool(paths))

    def _restore(self) -> None:
        geometry, state = self.settings.value("window/geometry"), self.settings.value("window/state")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        self.dock_layout.restore(state)  # the start page stands alone; the docks come back with a model

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        """Accept dropped local files and folders."""
        if dialogs.dropped_files(event):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        """Open the first dropped file or model folder."""
        files = dialogs.dropped_files(event)
        if files:
            event.acceptProposedAction()
            self.open(files[0])


def _deliver_pending_events() -> None:
    from PySide6.QtCore import QCoreApplication

    QCoreApplication.processEvents()
