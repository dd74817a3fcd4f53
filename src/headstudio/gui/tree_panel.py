"""The module tree panel: filter box, input shape editor, expand/collapse, Go to head, and the tree view."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QModelIndex, QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QToolButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from headstudio.core.model.shape_text import format_shape

from .controller import DocumentController
from .tree_model import (
    COLUMNS,
    MODULE,
    PARAMS,
    SHAPE,
    TRAINABLE,
    TYPE,
    ModuleFilter,
    ModuleTreeModel,
    PathRole,
)

CELL_PADDING_PX = 18  # a cell's margins on both sides, and room for the sort/resize handle
CHECKBOX_PX = 22  # the Trainable check box in front of its text
MODULE_MIN_PX = 140  # what the Module column keeps before Output shape, then Type, give way
SHAPE_MIN_PX, TYPE_MIN_PX = 140, 120  # the narrowest they give way to (ModelOutput fields: see tooltip)
NAMED_INPUTS_PX = 380  # the input field's width when it holds named inputs (input_ids=1,128:int64 ...)


def parse_input_shape(text: str) -> tuple[int, ...] | None:
    """The shape typed in the input-shape box, by the core's one shape grammar; None when it is not one."""
    from headstudio.core.errors import InputError
    from headstudio.core.model.shape_text import parse_sizes

    try:
        return parse_sizes(text)
    except InputError:
        return None


class ModuleTreePanel(QWidget):
    """Shows the controller's module tree; never holds model state of its own."""

    def __init__(self, controller: DocumentController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.model = ModuleTreeModel(self)
        self.model.on_trainable = self._set_trainable
        self.proxy = ModuleFilter(self)
        self.proxy.setSourceModel(self.model)
        self.view = self._make_view()
        self._natural: dict[int, int] = {}  # each column's natural width, from fit_columns
        self.view.viewport().installEventFilter(self)
        self.filter_box = QLineEdit(self, objectName="treeFilter", placeholderText="Filter by name or type")
        self.filter_box.setClearButtonEnabled(True)
        self.filter_box.textChanged.connect(self._on_filter)
        self.shape_box = QLineEdit(self, objectName="inputShape", placeholderText="1,3,224,224")
        self.shape_box.setToolTip(
            "Input shape to trace (press Enter to re-trace), or named inputs: "
            "input_ids=1,128:int64 attention_mask=1,128:int64"
        )
        self.shape_box.setMaximumWidth(150)
        self.shape_box.returnPressed.connect(self._apply_shape)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._make_bar())
        layout.addWidget(self.view)
        controller.documentChanged.connect(self._on_document)
        controller.traceReady.connect(self.rebuild)
        controller.headMarked.connect(self.model.set_head)
        controller.selectionChanged.connect(self._on_selection)
        controller.inputShapeChanged.connect(self._show_shape)
        controller.probeFinished.connect(lambda _result, proof: self.model.set_proof(proof))
        controller.modelEdited.connect(lambda: self.model.set_proof(None))  # the proof was of another model

    def _make_view(self) -> QTreeView:
        view = QTreeView(self, objectName="moduleTree")
        view.setModel(self.proxy)
        view.setUniformRowHeights(True)  # lets Qt skip measuring rows: smooth on 10k modules
        view.setAlternatingRowColors(True)
        view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)  # rows to Remove together
        view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        view.customContextMenuRequested.connect(self._context_menu)
        header = view.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(MODULE, QHeaderView.ResizeMode.Stretch)  # names take what is left
        for column, width in ((TYPE, 140), (SHAPE, 130), (PARAMS, 95), (TRAINABLE, 70)):
            header.resizeSection(column, width)
        view.selectionModel().currentChanged.connect(self._on_current)
        return view

    def _make_bar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        bar.addWidget(self.filter_box, 1)
        bar.addWidget(QLabel("Input:", self))
        bar.addWidget(self.shape_box)
        self.action_expand = self._tool(bar, "actionExpandAll", "Expand all", "Ctrl+E", self.view.expandAll)
        self.action_collapse = self._tool(bar, "actionCollapseAll", "Collapse", "Ctrl+Shift+E", self.collapse)
        self.action_go_to_head = self._tool(bar, "actionGoToHead", "Go to head", "Ctrl+H", self.go_to_head)
        self.action_remove = QAction("&Remove selected layers", self, objectName="actionRemoveLayers")
        self.action_remove.setShortcut(QKeySequence(QKeySequence.StandardKey.Delete))
        self.action_remove.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.action_remove.triggered.connect(self.remove_selected)
        self.view.addAction(self.action_remove)  # Delete acts in the tree only, never in the filter box
        return bar

    def _tool(self, bar: QHBoxLayout, name: str, text: str, keys: str, slot: Any) -> QAction:
        action = QAction(text, self, objectName=name, shortcut=QKeySequence(keys))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(slot)
        self.addAction(action)
        button = QToolButton(self)
        button.setDefaultAction(action)
        bar.addWidget(button)
        return action

    # -- rebuilding from the controller ----------------------------------------------------------------
    def fit_columns(self) -> None:
        """Type, Output shape, Params and Trainable as wide as their widest text; Module gets the rest.

        Measures the longest text of each column once per tree (not every cell), so 10,000 rows stay cheap.
        """
        root = self.controller.tree
        if root is None:
            return
        longest = {TYPE: "Type", SHAPE: "Output shape", PARAMS: "Params", TRAINABLE: "Trainable"}
        for node in root.walk():
            shape = format_shape(node.output_shape, "") if node.called else "(not called)"
            partial = f"{node.trainable_params:,}" if 0 < node.trainable_params < node.params else ""
            for column, text in (
                (TYPE, node.type),
                (SHAPE, shape),
                (PARAMS, f"{node.params:,}"),
                (TRAINABLE, partial),
            ):
                if len(text) > len(longest[column]):
                    longest[column] = text
        cells, titles = self.view.fontMetrics(), self.view.header().fontMetrics()
        self._natural = {}
        for column, text in longest.items():
            extra = CHECKBOX_PX if column == TRAINABLE else 0
            width = max(cells.horizontalAdvance(text) + extra, titles.horizontalAdvance(COLUMNS[column]))
            self._natural[column] = width + CELL_PADDING_PX
        self._give_way()

    def _give_way(self) -> None:
        """Natural widths; when they leave Module too little room, Output shape then Type give way.

        Elided cells keep their full text in the tooltip (a ModelOutput's fields one per line). Redone when
        the view is resized, since its first layout may come after the tree.
        """
        widths = dict(self._natural)
        overflow = sum(widths.values()) - (self.view.viewport().width() - MODULE_MIN_PX)
        for column, floor in ((SHAPE, SHAPE_MIN_PX), (TYPE, TYPE_MIN_PX)):
            cut = min(max(overflow, 0), max(widths[column] - floor, 0))
            widths[column] -= cut
            overflow -= cut
        for column, width in widths.items():
            self.view.header().resizeSection(column, width)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Columns give way again when the tree's viewport changes width."""
        if watched is self.view.viewport() and event.type() == QEvent.Type.Resize and self._natural:
            self._give_way()
        return super().eventFilter(watched, event)

    def _on_document(self) -> None:
        ctl = self.controller
        self.model.set_head(None)
        self.model.set_proof(None)
        self.model.set_tree(ctl.tree, ctl.original_tree)
        self.fit_columns()
        self.model.set_head(ctl.head_path)
        self._show_shape(ctl.document.input_shape if ctl.document is not None else None)
        root = self.proxy.index(0, 0)
        if root.isValid():
            self.view.expand(root)

    def rebuild(self) -> None:
        """Show the controller's new tree snapshot, keeping expansion and the selected module."""
        ctl = self.controller
        expanded = self.expanded_paths()
        self.model.set_tree(ctl.tree, ctl.original_tree)
        self.model.head_path = ctl.head_path
        self.fit_columns()
        for path in expanded:
            index = self._proxy_index(path)
            if index.isValid():
                self.view.setExpanded(index, True)
        if ctl.selected_path is not None:
            self._on_selection(ctl.selected_path)

    def expanded_paths(self) -> list[str]:
        """Paths of expanded rows (visits only expanded branches)."""
        paths: list[str] = []
        pending = [self.proxy.index(r, 0) for r in range(self.proxy.rowCount())]
        while pending:
            index = pending.pop()
            if self.view.isExpanded(index):
                paths.append(index.data(PathRole))
                pending.extend(self.proxy.index(r, 0, index) for r in range(self.proxy.rowCount(index)))
        return paths

    def _proxy_index(self, path: str) -> QModelIndex:
        return self.proxy.mapFromSource(self.model.index_for_path(path))

    def _show_shape(self, shape: Any) -> None:
        doc = self.controller.document
        named = doc.named_inputs() if doc is not None else None
        if named:  # a transformers model: the user's named inputs, else those its config implies
            from headstudio.core.model.inputs import describe_inputs

            self.shape_box.setMaximumWidth(NAMED_INPUTS_PX)
            self.shape_box.setMinimumWidth(NAMED_INPUTS_PX // 2)
            self.shape_box.setText(describe_inputs(named))
            self.shape_box.setCursorPosition(0)
            return
        self.shape_box.setMaximumWidth(150)
        self.shape_box.setMinimumWidth(0)
        self.shape_box.setText(",".join(str(d) for d in shape) if shape else "")

    # -- user actions ----------------------------------------------------------------------------------
    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.controller.select(current.data(PathRole))

    def _on_selection(self, path: str) -> None:
        index = self._proxy_index(path)
        if not index.isValid() or self.view.currentIndex().data(PathRole) == path:
            return
        self.view.setCurrentIndex(index)
        self.view.scrollTo(index)

    def go_to_head(self) -> None:
        """Reveal and select the head row."""
        path = self.controller.head_path
        if path is None:
            self.controller.errorRaised.emit("no head detected; select a module and use Model ▸ Mark as head")
            return
        if self.filter_box.text():
            self.filter_box.clear()
        index = self._proxy_index(path)
        if index.isValid():
            self.view.setCurrentIndex(index)
            self.view.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)
            self.view.setFocus()

    def collapse(self) -> None:
        """Collapse everything but the model row."""
        self.view.collapseAll()
        root = self.proxy.index(0, 0)
        if root.isValid():
            self.view.expand(root)

    def _on_filter(self, text: str) -> None:
        self.proxy.set_text(text)
        if text.strip():
            self.view.expandAll()

    def _apply_shape(self) -> None:
        from headstudio.core.errors import InputError
        from headstudio.core.model.inputs import is_named_text, parse_inputs

        text = self.shape_box.text()
        if is_named_text(text):
            try:
                self.controller.set_inputs(parse_inputs(text))
            except InputError as err:
                self.controller.errorRaised.emit(str(err))
            return
        shape = parse_input_shape(text)
        if shape is None:
            self.controller.errorRaised.emit(
                f"'{self.shape_box.text()}' is not an input shape; write sizes like 1,3,224,224"
            )
            return
        self.controller.set_input_shape(shape)

    def selected_paths(self) -> list[str]:
        """Paths of the selected rows, in tree order (the model row itself excluded)."""
        rows = self.view.selectionModel().selectedRows(MODULE)
        paths = [index.data(PathRole) for index in sorted(rows, key=self._row_order)]
        return [p for p in paths if p]

    def _row_order(self, index: QModelIndex) -> list[int]:
        order = []
        while index.isValid():
            order.insert(0, index.row())
            index = index.parent()
        return order

    def remove_selected(self) -> None:
        """Remove the selected rows' modules as one undoable RemoveLayers edit (refused if shapes break)."""
        from headstudio.core.edits import RemoveLayers

        paths = self.selected_paths()
        if not paths:
            self.controller.errorRaised.emit("select the layers to remove in the tree (not the model row)")
            return
        self.controller.push_edit(RemoveLayers(paths))

    def _set_trainable(self, path: str, trainable: bool) -> None:
        from headstudio.core.edits import SetTrainable

        self.controller.push_edit(SetTrainable(path, trainable))

    def _context_menu(self, pos: Any) -> None:
        index = self.view.indexAt(pos)
        if index.isValid():
            self.context_menu(index.data(PathRole)).exec(self.view.viewport().mapToGlobal(pos))

    def context_menu(self, path: str) -> QMenu:
        """The row's menu: Mark as head, Copy path, Remove (the selected rows)."""
        menu = QMenu(self)
        menu.addAction("Mark as head", lambda: self.controller.mark_head(path))
        menu.addAction("Copy path", lambda: _copy(path))
        if path:
            count = len(self.selected_paths())
            menu.addSeparator()
            menu.addAction(f"Remove {count} layers" if count > 1 else "Remove", self.remove_selected)
        return menu


def _copy(text: str) -> None:
    from PySide6.QtGui import QGuiApplication

    QGuiApplication.clipboard().setText(text)
