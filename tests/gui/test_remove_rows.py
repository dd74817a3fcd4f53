"""Remove on selected tree rows: Delete key and context menu, one undoable RemoveLayers, refusals."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt

from headstudio.gui.tree_panel import ModuleTreePanel

OPEN_TIMEOUT_MS = 120_000
RESNET18 = "torchvision:resnet18"


@pytest.fixture
def panel(qtbot, controller, open_model, resnet18_file):
    tree = ModuleTreePanel(controller)
    qtbot.addWidget(tree)
    tree.show()
    open_model(resnet18_file, arch=RESNET18)
    return tree


def select_rows(qtbot, panel: ModuleTreePanel, *paths: str) -> None:
    """Click the first row, Ctrl+click the others, like a user picking several layers."""
    for i, path in enumerate(paths):
        parent = path.rpartition(".")[0]
        panel.view.expand(panel._proxy_index(parent))
        index = panel._proxy_index(path)
        panel.view.scrollTo(index)
        rect = panel.view.visualRect(index)
        modifier = Qt.KeyboardModifier.ControlModifier if i else Qt.KeyboardModifier.NoModifier
        qtbot.mouseClick(panel.view.viewport(), Qt.MouseButton.LeftButton, modifier, rect.center())
    assert panel.selected_paths() == sorted(paths)  # tree order


def test_delete_key_removes_the_selected_blocks_and_undo_brings_them_back(qtbot, controller, panel):
    model = controller.document.model
    blocks = (model.layer1[1], model.layer3[1])
    select_rows(qtbot, panel, "layer1.1", "layer3.1")
    with qtbot.waitSignal(controller.traceReady, timeout=OPEN_TIMEOUT_MS):
        qtbot.keyClick(panel.view, Qt.Key.Key_Delete)
    assert controller.undo_stack.count() == 1
    assert controller.undo_stack.text(0) == "Remove 2 layers (layer1.1, layer3.1)"
    assert controller.tree.find("layer1.1") is None and controller.tree.find("layer3.1") is None
    assert not panel._proxy_index("layer1.1").isValid()
    with qtbot.waitSignal(controller.traceReady, timeout=OPEN_TIMEOUT_MS):
        controller.undo()
    assert (model.layer1[1], model.layer3[1]) == blocks  # the same module objects, weights untouched
    assert panel._proxy_index("layer3.1").isValid()


def test_context_menu_offers_remove_for_the_selection(qtbot, controller, panel):
    select_rows(qtbot, panel, "layer4.1", "layer1.1")
    menu = panel.context_menu("layer1.1")
    texts = [a.text() for a in menu.actions()]
    assert "Remove 2 layers" in texts and "Mark as head" in texts
    with qtbot.waitSignal(controller.traceReady, timeout=OPEN_TIMEOUT_MS):
        next(a for a in menu.actions() if a.text() == "Remove 2 layers").trigger()
    assert controller.tree.find("layer4.1") is None and controller.tree.find("layer1.1") is None


def test_a_removal_that_breaks_shapes_is_refused_with_the_first_mismatch(qtbot, controller, panel):
    select_rows(qtbot, panel, "layer2.0")
    with qtbot.waitSignal(controller.errorRaised, timeout=OPEN_TIMEOUT_MS) as error:
        panel.action_remove.trigger()
    assert "first mismatch at 'layer2.1.conv1'" in error.args[0]
    assert controller.undo_stack.count() == 0
    assert controller.tree.find("layer2.0") is not None


def test_the_model_row_alone_is_not_removable(qtbot, controller, panel):
    root = panel.proxy.index(0, 0)
    panel.view.selectionModel().select(
        root, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
    )
    with qtbot.waitSignal(controller.errorRaised, timeout=5_000) as error:
        panel.remove_selected()
    assert "select the layers to remove" in error.args[0]
