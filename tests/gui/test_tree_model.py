"""The module tree: columns, live shapes, tri-state Trainable boxes as undoable edits, changes, filter."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QModelIndex, Qt
from torch import nn

from headstudio.core.model.document import Document, Origin
from headstudio.gui.tree_model import (
    MODULE,
    SHAPE,
    TRAINABLE,
    ModuleFilter,
    ModuleTreeModel,
    PathRole,
)

RESNET18 = "torchvision:resnet18"
Checked, Unchecked, Partial = (
    Qt.CheckState.Checked,
    Qt.CheckState.Unchecked,
    Qt.CheckState.PartiallyChecked,
)


class WithUnusedBranch(nn.Module):
    """``aux`` is defined but forward() never calls it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.aux = nn.Linear(8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.body(x))


def model_for(module: nn.Module, shape=(1, 8)) -> ModuleTreeModel:
    doc = Document(module, Origin("test", "module", type(module).__name__), shape)
    model = ModuleTreeModel()
    model.set_tree(doc.tree(), doc.tree())
    return model


def cell(model, path: str, column: int, role=Qt.ItemDataRole.DisplayRole):
    index = model.index_for_path(path)
    assert index.isValid(), path
    return model.index(index.row(), column, index.parent()).data(role)


def state(win, path: str) -> Qt.CheckState | None:
    value = cell(win.tree_panel.model, path, TRAINABLE, Qt.ItemDataRole.CheckStateRole)
    return None if value is None else Qt.CheckState(value)


@pytest.fixture
def resnet(window, open_in):
    open_in(window, RESNET18)
    return window


def test_columns_are_module_type_output_shape_params_trainable(resnet):
    model = resnet.tree_panel.view.model()
    headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert headers == ["Module", "Type", "Output shape", "Params", "Trainable"]


def test_modules_never_called_by_forward_say_so_instead_of_a_shape():
    model = model_for(WithUnusedBranch())
    assert cell(model, "aux", SHAPE) == "(not called)"
    assert cell(model, "fc", SHAPE) == "[1, 2]"
    assert cell(model, "body.1", SHAPE) == "[1, 8]"


def test_rows_without_parameters_have_no_trainable_box():
    model = model_for(WithUnusedBranch())
    model.on_trainable = lambda path, trainable: None
    relu = model.index_for_path("body.1")
    assert model.index(relu.row(), TRAINABLE, relu.parent()).data(Qt.ItemDataRole.CheckStateRole) is None
    assert (
        not model.flags(model.index(relu.row(), TRAINABLE, relu.parent())) & Qt.ItemFlag.ItemIsUserCheckable
    )
    assert cell(model, "fc", TRAINABLE, Qt.ItemDataRole.CheckStateRole) == Checked


def test_thousands_of_modules_are_browsable_through_the_filter(qtbot):
    from headstudio.core.model.tree import build_tree

    wide = nn.Sequential(*[nn.Sequential(nn.Linear(2, 2), nn.ReLU()) for _ in range(3400)])
    model = ModuleTreeModel()
    model.set_tree(build_tree(wide, None))  # 10,201 rows; shapes are not the point here
    proxy = ModuleFilter()
    proxy.setSourceModel(model)
    root = proxy.index(0, 0)
    assert proxy.rowCount(root) == 3400
    proxy.set_text("3399.0")
    root = proxy.index(0, 0)
    matches = proxy.index(0, 0, root)
    assert proxy.rowCount(root) == 1 and matches.data(PathRole) == "3399"


def test_unticking_a_parent_freezes_its_subtree_as_one_undoable_edit(resnet, qtbot, retraced):
    undo = resnet.controller.undo_stack
    layer1 = resnet.tree_panel.proxy.mapFromSource(resnet.tree_panel.model.index_for_path("layer1"))
    box = layer1.siblingAtColumn(TRAINABLE)
    retraced(resnet, lambda: resnet.tree_panel.proxy.setData(box, Unchecked, Qt.ItemDataRole.CheckStateRole))
    assert undo.count() == 1
    assert state(resnet, "layer1") == Unchecked
    assert state(resnet, "layer1.0.conv1") == Unchecked
    assert state(resnet, "") == Partial
    assert state(resnet, "layer2") == Checked
    retraced(resnet, resnet.action_undo.trigger)
    assert state(resnet, "layer1") == Checked and state(resnet, "") == Checked


def test_ticking_a_partially_trainable_parent_makes_all_of_it_trainable(resnet, retraced):
    ctl = resnet.controller
    retraced(resnet, lambda: resnet.tree_panel._set_trainable("layer1.0", False))
    assert state(resnet, "layer1") == Partial
    index = resnet.tree_panel.model.index_for_path("layer1")
    retraced(
        resnet,
        lambda: resnet.tree_panel.model.setData(
            index.siblingAtColumn(TRAINABLE), Checked, Qt.ItemDataRole.CheckStateRole
        ),
    )
    assert state(resnet, "layer1") == Checked and state(resnet, "layer1.0") == Checked
    assert ctl.undo_stack.count() == 2


def test_replaced_head_row_shows_what_it_was(resnet, retraced):
    from headstudio.core.edits import ReplaceHead

    retraced(resnet, lambda: resnet.controller.push_edit(ReplaceHead("fc", 10)))
    model = resnet.tree_panel.model
    assert cell(model, "fc", SHAPE) == "[1, 10]"
    assert "was [1, 1000]" in cell(model, "fc", SHAPE, Qt.ItemDataRole.ToolTipRole)
    assert cell(model, "fc", MODULE) == "fc"  # the name stays the name: copied or searched, it has no marker
    assert cell(model, "fc", MODULE, Qt.ItemDataRole.FontRole).italic()
    assert cell(model, "", MODULE) == "(model)"  # its output changed too: a dot icon says so
    assert not cell(model, "", MODULE, Qt.ItemDataRole.DecorationRole).isNull()
    assert cell(model, "layer1", MODULE, Qt.ItemDataRole.DecorationRole) is None
    assert cell(model, "layer1", MODULE, Qt.ItemDataRole.FontRole) is None


def test_rebuilding_after_an_edit_keeps_expansion_and_selection(resnet, qtbot, retraced):
    panel = resnet.tree_panel
    panel.view.expand(panel.proxy.mapFromSource(panel.model.index_for_path("layer3")))
    resnet.controller.select("layer3.1")
    before = set(panel.expanded_paths())
    retraced(resnet, lambda: panel._set_trainable("layer2", False))
    assert set(panel.expanded_paths()) == before and "layer3" in before
    assert panel.view.currentIndex().data(PathRole) == "layer3.1"


def test_filter_keeps_matching_modules_and_their_ancestors(resnet, qtbot):
    panel = resnet.tree_panel
    qtbot.keyClicks(panel.filter_box, "downsample")
    visible = _visible_paths(panel.proxy)
    assert "layer2.0.downsample" in visible and "layer2.0" in visible and "layer2" in visible
    assert "layer1.0.conv1" not in visible and "conv1" not in visible
    panel.filter_box.clear()
    assert "conv1" in _visible_paths(panel.proxy)


def _visible_paths(proxy) -> set[str]:
    paths, pending = set(), [QModelIndex()]
    while pending:
        parent = pending.pop()
        for row in range(proxy.rowCount(parent)):
            index = proxy.index(row, 0, parent)
            paths.add(index.data(PathRole))
            pending.append(index)
    return paths
