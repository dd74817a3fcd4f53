"""How the main window is laid out: its docks (hidden on the start page, back with a model as the user left
them), the panels created in them once PyTorch is loaded, and the menus and toolbar over its actions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMenu, QWidget

if TYPE_CHECKING:
    from .controller import DocumentController
    from .main_window import MainWindow

INSPECTOR_WIDTH = 340  # first run: the tree keeps room for all five columns at the default size
CHART_HEIGHT = 190  # first run: the parameters chart below the tree
PANEL_MODULES = (
    "head_editor",
    "inspector",
    "charts",
    "commands",
    "code_view",
    "probe_panel",
    "headstudio.core.edits",
    "headstudio.core.model.surgery_proof",  # the probe's first run then imports nothing on its worker
    "PIL.Image",
)


def add_dock(window: QMainWindow, title: str, name: str, area: Qt.DockWidgetArea) -> QDockWidget:
    """An empty dock in ``area``, hidden until a model is open."""
    dock = QDockWidget(title, window, objectName=name)
    window.addDockWidget(area, dock)
    dock.hide()  # shown once a model is open
    return dock


def create_panel(module: str, name: str, controller: DocumentController, parent: QWidget) -> Any:
    """The panel class ``name`` of ``headstudio.gui.<module>`` as ``cls(controller, parent)``.

    Imported here, not at the top: panels import torch, and the window appears before torch has loaded.
    """
    return getattr(importlib.import_module(f"headstudio.gui.{module}"), name)(controller, parent)


class DockLayout:
    """Which docks show: none on the start page; with a model, those the user had last time (all at first)."""

    def __init__(
        self,
        window: QMainWindow,
        inspector: QDockWidget,
        probe: QDockWidget,
        chart: QDockWidget,
        history: QDockWidget,
    ) -> None:
        self._window = window
        self._inspector, self._chart = inspector, chart
        self._docks = [inspector, probe, chart, history]
        self._wanted: list[QDockWidget] | None = None  # None: no saved layout (first run)

    def restore(self, state: object) -> None:
        """Restore the saved window state, if any, then hide the docks: the start page stands alone."""
        if isinstance(state, QByteArray):
            self._window.restoreState(state)
            self._wanted = [dock for dock in self._docks if not dock.isHidden()]
        for dock in self._docks:
            dock.hide()  # the start page stands alone; the docks come back with a model

    def show_with_model(self, default_width: int) -> None:
        """With the first model: the docks the user had last time, or the default layout on a first run."""
        first_run = self._wanted is None
        docks = self._docks if first_run else self._wanted
        for dock in docks:
            dock.show()
        self._wanted = []  # from now on the user's own showing and hiding stands
        if first_run:
            self._chart.raise_()
            self._inspector.raise_()
            window = self._window
            wider = max(window.width() - default_width, 0) // 2  # a larger window: half to the inspector
            window.resizeDocks([self._inspector], [INSPECTOR_WIDTH + wider], Qt.Orientation.Horizontal)
            window.resizeDocks([self._chart], [CHART_HEIGHT], Qt.Orientation.Vertical)


def add_menus(window: MainWindow) -> QMenu:
    """The menu bar and the toolbar over the window's actions; returns the (empty) Open recent menu."""
    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    file_menu.addActions([window.action_open, window.action_open_folder])
    recent_menu = file_menu.addMenu("Open &recent")
    file_menu.addSeparator()
    file_menu.addActions([window.action_save, window.action_save_as])
    file_menu.addSeparator()
    file_menu.addAction(window.action_quit)
    bar.addMenu("&Edit").addActions([window.action_undo, window.action_redo])
    model_menu = bar.addMenu("&Model")
    panel = window.tree_panel
    model_menu.addActions([window.action_mark_head, panel.action_go_to_head, window.action_freeze])
    model_menu.addActions([window.action_attach, panel.action_remove])
    model_menu.addSeparator()
    model_menu.addAction(window.action_ema)
    model_menu.addSeparator()
    model_menu.addAction(window.action_code)
    view_menu = bar.addMenu("&View")
    view_menu.addActions([panel.action_expand, panel.action_collapse])
    view_menu.addSeparator()
    docks = (window.inspector_dock, window.probe_dock, window.chart_dock, window.history_dock)
    view_menu.addActions([dock.toggleViewAction() for dock in docks])
    tools = window.addToolBar("Main")
    tools.setObjectName("mainToolBar")
    tools.addActions([window.action_open, window.action_save, window.action_undo, window.action_redo])
    tools.addSeparator()
    tools.addActions(
        [window.action_mark_head, panel.action_go_to_head, window.action_freeze, window.action_code]
    )
    return recent_menu
