"""ModuleTreeModel: a lazy QAbstractItemModel adapter over the core's ModuleNode snapshot.

Rows are produced on demand from the snapshot (no per-row Qt objects), so 10,000+ modules stay smooth.
The model never changes itself: ticking a Trainable box asks the controller for one undoable
SetTrainable edit, and the new tree arrives as a fresh snapshot via ``set_tree``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QPalette

from headstudio.core.model.shape_text import format_shape

if TYPE_CHECKING:
    from headstudio.core.model.tree import ModuleNode

COLUMNS = ("Module", "Type", "Output shape", "Params", "Trainable")
MODULE, TYPE, SHAPE, PARAMS, TRAINABLE = range(len(COLUMNS))
PathRole = Qt.ItemDataRole.UserRole + 1
ChangedRole = Qt.ItemDataRole.UserRole + 2
ProofRole = Qt.ItemDataRole.UserRole + 3  # after a probe of an edited model: "unchanged", "changed", ...
PROOF_COLORS = {"unchanged": QColor(46, 160, 67, 60), "changed": QColor(215, 58, 73, 70)}
Index = QModelIndex | QPersistentModelIndex
_NO_PARENT = QModelIndex()


def trainable_state(node: ModuleNode) -> Qt.CheckState | None:
    """Checked if all params train, Unchecked if none, PartiallyChecked otherwise; None without params."""
    if node.params == 0:
        return None
    if node.trainable_params == node.params:
        return Qt.CheckState.Checked
    if node.trainable_params == 0:
        return Qt.CheckState.Unchecked
    return Qt.CheckState.PartiallyChecked


class ModuleTreeModel(QAbstractItemModel):
    """Module | Type | Output shape | Params | Trainable over a ModuleNode tree (the root is one row)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._root: ModuleNode | None = None
        self._original: dict[str, tuple[int, Any]] = {}
        self._nodes: dict[int, ModuleNode] = {}
        self._rows: dict[int, int] = {}
        self.head_path: str | None = None
        self.proof: dict[str, tuple[str, str]] = {}  # path -> (status, description) from a surgery proof
        self.traced = True
        self.on_trainable: Callable[[str, bool], None] | None = None  # set by the view: push SetTrainable

    # -- content -------------------------------------------------------------------------------------
    def set_tree(self, root: ModuleNode | None, original: ModuleNode | None = None) -> None:
        """Show a new snapshot; ``original`` (the tree as loaded) lets changed rows say what they were."""
        self.beginResetModel()
        self._root = root
        self._nodes, self._rows = {}, {}
        if original is not None:
            self._original = {n.path: (n.params, n.output_shape) for n in original.walk()}
        elif root is None:
            self._original = {}
        self.endResetModel()

    def set_head(self, path: str | None) -> None:
        """Mark the head row (icon, bold, tinted background)."""
        old, self.head_path = self.head_path, path or None
        for p in (old, self.head_path):
            index = self.index_for_path(p) if p is not None else QModelIndex()
            if index.isValid():
                last = self.index(index.row(), len(COLUMNS) - 1, index.parent())
                self.dataChanged.emit(index, last)

    def set_proof(self, proof: Any) -> None:
        """Tint rows by a SurgeryProof (green: output bit-identical, red: changed); None clears it."""
        self.proof = {} if proof is None else {m.path: (m.status, m.describe()) for m in proof.modules}
        if self._root is not None:  # every row's colour may change; no row moves
            self.layoutAboutToBeChanged.emit()
            self.layoutChanged.emit()

    @property
    def root(self) -> ModuleNode | None:
        return self._root

    def node(self, index: Index) -> ModuleNode | None:
        """The ModuleNode behind ``index`` (None for the invisible root)."""
        if not index.isValid():
            return None
        return self._nodes.get(index.internalId())

    def index_for_path(self, path: str) -> QModelIndex:
        """The Module-column index of ``path`` ("" = the model row), invalid if absent."""
        if self._root is None:
            return QModelIndex()
        node = self._root.find(path) if path else self._root
        if node is None:
            return QModelIndex()
        return self._index_of(node)

    def _index_of(self, node: ModuleNode, column: int = 0) -> QModelIndex:
        row = self._rows.get(id(node))
        if row is None:
            siblings = [] if node.parent is None else node.parent.children
            row = next((i for i, n in enumerate(siblings) if n is node), 0)
        return self._make(row, column, node)

    def _make(self, row: int, column: int, node: ModuleNode) -> QModelIndex:
        self._nodes[id(node)] = node
        self._rows[id(node)] = row
        return self.createIndex(row, column, id(node))

    # -- QAbstractItemModel --------------------------------------------------------------------------
    def index(self, row: int, column: int, parent: Index = _NO_PARENT) -> QModelIndex:
        if self._root is None or not 0 <= column < len(COLUMNS):
            return QModelIndex()
        if not parent.isValid():
            return self._make(row, column, self._root) if row == 0 else QModelIndex()
        node = self.node(parent)
        if node is None or not 0 <= row < len(node.children):
            return QModelIndex()
        return self._make(row, column, node.children[row])

    def parent(self, index: Index = _NO_PARENT) -> QModelIndex:  # type: ignore[override]
        node = self.node(index)
        if node is None or node.parent is None:
            return QModelIndex()
        return self._index_of(node.parent)

    def rowCount(self, parent: Index = _NO_PARENT) -> int:
        if self._root is None:
            return 0
        if not parent.isValid():
            return 1
        if parent.column() > 0:
            return 0
        node = self.node(parent)
        return len(node.children) if node is not None else 0

    def hasChildren(self, parent: Index = _NO_PARENT) -> bool:
        return self.rowCount(parent) > 0

    def columnCount(self, parent: Index = _NO_PARENT) -> int:
        return len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        node = self.node(index)
        if index.column() == TRAINABLE and node is not None and node.params and self.on_trainable:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        return flags

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        node = self.node(index)
        if node is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(node, column)
        if role == Qt.ItemDataRole.CheckStateRole and column == TRAINABLE:
            return trainable_state(node)
        if role == PathRole:
            return node.path
        if role == ChangedRole:
            return self._change(node)
        if role == ProofRole:
            return self.proof.get(node.path, ("", ""))[0]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(node, column)
        if role == Qt.ItemDataRole.TextAlignmentRole and column == PARAMS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return self._style(node, column, role)

    def _text(self, node: ModuleNode, column: int) -> str:
        if column == MODULE:
            return node.name or "(model)"  # a changed row is marked by its icon and font, not its text
        if column == TYPE:
            return node.type
        if column == SHAPE:
            if node.output_shape is None and self.traced and not node.called:
                return "(not called)"
            return format_shape(node.output_shape, "")
        if column == PARAMS:
            return f"{node.params:,}"
        if column == TRAINABLE and node.params and node.trainable_params not in (0, node.params):
            return f"{node.trainable_params:,}"
        return ""

    def _style(self, node: ModuleNode, column: int, role: int) -> Any:
        is_head = self.head_path is not None and node.path == self.head_path
        if role == Qt.ItemDataRole.DecorationRole and column == MODULE:
            if is_head:
                return _icon("head")
            return _icon("changed") if self._change(node) else None
        if role == Qt.ItemDataRole.FontRole and (is_head or self._change(node)):
            font = QFont()
            font.setBold(is_head)
            font.setItalic(bool(self._change(node)))
            return font
        status = self.proof.get(node.path, ("",))[0]
        if role == Qt.ItemDataRole.BackgroundRole and status not in ("", "added"):
            return PROOF_COLORS["unchanged" if status == "unchanged" else "changed"]
        if role == Qt.ItemDataRole.BackgroundRole and is_head:
            color = QColor(QGuiApplication.palette().color(QPalette.ColorRole.Highlight))
            color.setAlpha(60)
            return color
        if role == Qt.ItemDataRole.ForegroundRole and not node.called and self.traced:
            return QGuiApplication.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
        return None

    def _change(self, node: ModuleNode) -> str:
        """What differs from the tree as loaded ('' when nothing does)."""
        if not self._original:
            return ""
        was = self._original.get(node.path)
        if was is None:
            return "added by an edit"
        params, shape = was
        parts = []
        if shape != node.output_shape and shape is not None:
            parts.append(f"was {format_shape(shape, '')}")
        if params != node.params:
            parts.append(f"params were {params:,}")
        return "; ".join(parts)

    def _tooltip(self, node: ModuleNode, column: int) -> str:
        lines = [node.path or "(model)", node.type]
        if self.head_path is not None and node.path == self.head_path:
            lines.append("head (the prediction layer the head editor works on)")
        if not node.called and self.traced:
            lines.append("not called by forward() for this input")
        change = self._change(node)
        if change:
            lines.append(change)
        if node.path in self.proof:
            lines.append(f"probe: output {self.proof[node.path][1]}")
        if column == TRAINABLE and node.params:
            lines.append(f"{node.trainable_params:,} of {node.params:,} parameters trainable")
        if column == SHAPE and isinstance(node.output_shape, dict):  # a ModelOutput: one line per field
            lines += [f"{name}: {format_shape(shape, '')}" for name, shape in node.output_shape.items()]
        return "\n".join(lines)

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        """A tick on Trainable becomes one SetTrainable edit; the tree itself is never patched."""
        node = self.node(index)
        if role != Qt.ItemDataRole.CheckStateRole or node is None or index.column() != TRAINABLE:
            return False
        if not node.params or self.on_trainable is None:
            return False
        trainable = trainable_state(node) != Qt.CheckState.Checked
        self.on_trainable(node.path, trainable)
        return True


class ModuleFilter(QSortFilterProxyModel):
    """Filters rows by name, path or type (case-insensitive), keeping the ancestors of matches."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self._text = ""

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        text = self._text
        if not text:
            return True
        model = self.sourceModel()
        node = model.node(model.index(source_row, 0, source_parent))
        if node is None:
            return False
        return text in node.path.lower() or text in node.type.lower()

    def set_text(self, text: str) -> None:
        """Show only modules whose name/path or type contains ``text``."""
        self._text = text.strip().lower()
        self.setFilterFixedString(self._text)  # re-runs filterAcceptsRow


_ICONS: dict[str, Any] = {}


def _icon(kind: str) -> Any:
    """16 px icons in the palette's highlight colour, drawn once: a target for the head row, a dot for
    a row an edit changed."""
    if kind not in _ICONS:
        from PySide6.QtGui import QIcon, QPainter, QPixmap

        pixmap = QPixmap(16, 16)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        color = QGuiApplication.palette().color(QPalette.ColorRole.Highlight)
        painter.setPen(color)
        if kind == "head":
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(2, 2, 12, 12)
            painter.setBrush(color)
            painter.drawEllipse(6, 6, 4, 4)
        else:
            painter.setBrush(color)
            painter.drawEllipse(5, 5, 6, 6)
        painter.end()
        _ICONS[kind] = QIcon(pixmap)
    return _ICONS[kind]
