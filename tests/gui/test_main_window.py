"""The main window: actions, shortcuts, input shape, head marking, freezing, saving, closing, screenshots."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QImage, QKeySequence

from headstudio.gui.tree_model import SHAPE, PathRole

RESNET18 = "torchvision:resnet18"
SHORTCUTS = {
    "actionOpen": "Ctrl+O",
    "actionSave": "Ctrl+S",
    "actionSaveAs": "Ctrl+Shift+S",
    "actionUndo": "Ctrl+Z",
    "actionRedo": "Ctrl+Shift+Z",
    "actionMarkHead": "Ctrl+M",
    "actionFreezeBackbone": "Ctrl+B",
}


@pytest.fixture
def resnet(window, open_in):
    open_in(window, RESNET18)
    return window


def click_row(qtbot, win, path: str) -> None:
    panel = win.tree_panel
    index = panel.proxy.mapFromSource(panel.model.index_for_path(path))
    panel.view.scrollTo(index)
    rect = panel.view.visualRect(index)
    qtbot.mouseClick(panel.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_actions_have_their_names_and_standard_shortcuts(window):
    for name, keys in SHORTCUTS.items():
        action = window.findChild(QAction, name)
        assert action is not None, name
        assert action.shortcut() == QKeySequence(keys), name
    assert window.findChild(object, "moduleTree") is not None


def test_window_appears_without_importing_torch_and_panels_follow_the_model(qtbot, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from headstudio.gui.app import application; from headstudio.gui import MainWindow\n"
        "app = application(); w = MainWindow(); w.show(); app.processEvents()\n"
        "print('torch' in sys.modules, w.findChild(object, 'moduleTree') is not None)"
    )
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_panels_are_built_once_pytorch_has_loaded_before_any_model_arrives(window, qtbot, slow_wait):
    window.controller.warm_up()
    slow_wait(lambda: window.controller.panels_built.is_set())
    assert window.controller.document is None
    for name in ("headEditor", "numClasses", "inspector", "historyView"):
        assert window.findChild(object, name) is not None, name


def test_torch_libraries_are_loaded_before_import_torch_without_holding_the_gil(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from headstudio.gui.imports import preload_torch_libraries\n"
        "loaded = preload_torch_libraries(); maps = open('/proc/self/maps').read()\n"
        "print(loaded, 'libtorch_python' in maps, 'torch' in sys.modules)\n"
        "import torch; print(torch.ones(3).sum().item())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "True", "False", "3.0"]


def test_panels_are_placed_once_a_model_is_open(resnet):
    for name in ("moduleTree", "headEditor", "numClasses", "applyHead", "historyView"):
        assert resnet.findChild(object, name) is not None, name


def test_changing_the_input_shape_retraces_in_the_background(resnet, qtbot, retraced):
    box = resnet.tree_panel.shape_box
    box.clear()
    qtbot.keyClicks(box, "1,3,64,64")
    retraced(resnet, lambda: qtbot.keyClick(box, Qt.Key.Key_Return))
    fc = resnet.tree_panel.model.index_for_path("layer4")
    assert fc.siblingAtColumn(SHAPE).data() == "[1, 512, 2, 2]"
    assert resnet.controller.document.input_shape == (1, 3, 64, 64)


def test_an_impossible_input_shape_is_an_error_message_not_a_crash(resnet, qtbot, answers):
    box = resnet.tree_panel.shape_box
    box.clear()
    qtbot.keyClicks(box, "one,two")
    qtbot.keyClick(box, Qt.Key.Key_Return)
    assert answers.errors and "1,3,224,224" in answers.errors[0]
    assert resnet.controller.document.input_shape == (1, 3, 224, 224)


def test_marking_a_module_as_head_and_going_back_to_it(resnet, qtbot):
    click_row(qtbot, resnet, "avgpool")
    assert resnet.controller.selected_path == "avgpool"
    with qtbot.waitSignal(resnet.controller.headMarked) as marked:
        qtbot.keyClick(resnet.tree_panel.view, Qt.Key.Key_M, Qt.KeyboardModifier.ControlModifier)
    assert marked.args == ["avgpool"] and resnet.controller.head_path == "avgpool"
    click_row(qtbot, resnet, "conv1")
    resnet.tree_panel.action_go_to_head.trigger()
    assert resnet.tree_panel.view.currentIndex().data(PathRole) == "avgpool"


def test_freeze_backbone_trains_only_the_head_and_undo_restores(resnet, qtbot, retraced):
    retraced(resnet, resnet.action_freeze.trigger)
    assert "513,000 trainable" in resnet.status.params_label.text()
    assert resnet.isWindowModified() and "•" in resnet.status.dirty_label.text()
    retraced(
        resnet,
        lambda: qtbot.keyClick(resnet.tree_panel.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier),
    )
    assert "11,689,512 trainable" in resnet.status.params_label.text()
    assert not resnet.isWindowModified()


def test_save_as_writes_a_verified_file_and_clears_the_unsaved_marker(
    resnet, qtbot, retraced, answers, tmp_path
):
    retraced(resnet, resnet.action_freeze.trigger)
    target = tmp_path / "frozen.safetensors"
    answers.save_path = (str(target), None)
    with qtbot.waitSignal(resnet.controller.saveFinished, timeout=120_000) as saved:
        resnet.action_save_as.trigger()
    assert target.exists() and saved.args[0].tensors_verified > 0
    assert not resnet.isWindowModified()
    assert "verified" in resnet.statusBar().currentMessage()


def test_closing_with_unsaved_edits_asks_and_cancel_keeps_the_window(resnet, retraced, answers):
    retraced(resnet, resnet.action_freeze.trigger)
    answers.save_changes = "cancel"
    assert not resnet.close()
    assert resnet.isVisible() and answers.asked[-1] == ("save_changes", None)
    answers.save_changes = "discard"
    assert resnet.close()


def test_closing_without_edits_does_not_ask(resnet, answers):
    assert resnet.close()
    assert answers.asked == []


def test_docks_wait_for_a_model_and_come_back_as_the_user_left_them(resnet, qtbot, open_in):
    from headstudio.gui import MainWindow

    resnet.history_dock.close()  # the user closes one dock; the layout is saved on quit
    assert resnet.close()
    second = MainWindow()
    qtbot.addWidget(second)
    second.show()
    docks = (second.inspector_dock, second.chart_dock, second.history_dock)
    assert [dock.isVisible() for dock in docks] == [False, False, False]  # the start page stands alone
    open_in(second, RESNET18)
    assert [dock.isVisible() for dock in docks] == [True, True, False]
    second.controller.undo_stack.setClean()


def test_window_size_is_remembered(qtbot, answers):
    from headstudio.gui import MainWindow

    first = MainWindow()
    qtbot.addWidget(first)
    first.resize(720, 540)  # within the offscreen screen (800x800)
    first.show()
    first.close()
    second = MainWindow()
    qtbot.addWidget(second)
    assert (second.width(), second.height()) == (720, 540)


def test_screenshot_option_writes_a_png_of_the_window(qtbot, tmp_path):
    from headstudio.cli import main

    target = tmp_path / "shot.png"
    assert main(["torchvision:squeezenet1_1", "--screenshot", str(target)]) == 0
    image = QImage(str(target))
    assert image.width() >= 1280 and image.height() >= 800


def test_closing_with_unsaved_edits_can_save_them_first(resnet, retraced, answers, tmp_path):
    retraced(resnet, resnet.action_freeze.trigger)
    target = tmp_path / "on-close.safetensors"
    answers.save_changes, answers.save_path = "save", (str(target), None)
    assert resnet.close()
    assert target.exists() and not resnet.controller.dirty


def test_second_save_goes_to_the_same_file_without_asking(resnet, qtbot, retraced, answers, tmp_path):
    target = tmp_path / "model.pt"
    answers.save_path = (str(target), "state_dict")
    with qtbot.waitSignal(resnet.controller.saveFinished, timeout=120_000):
        resnet.action_save.trigger()
    answers.save_path = None  # a second dialog would cancel the save
    retraced(resnet, resnet.action_freeze.trigger)
    with qtbot.waitSignal(resnet.controller.saveFinished, timeout=120_000) as saved:
        resnet.action_save.trigger()
    assert saved.args[0].path == target and saved.args[0].format == "state_dict"
    assert not resnet.isWindowModified()


def test_at_the_default_size_the_tree_shows_every_column_of_resnet50(window, qtbot, open_in):
    from headstudio.gui.main_window import DEFAULT_SIZE
    from headstudio.gui.tree_model import COLUMNS

    window.resize(*DEFAULT_SIZE)
    open_in(window, "torchvision:resnet50")
    view = window.tree_panel.view
    view.expandAll()
    qtbot.waitUntil(lambda: view.viewport().width() > 0)
    qtbot.wait(50)  # let the layout settle
    header = view.header()
    assert [header.isSectionHidden(c) for c in range(len(COLUMNS))] == [False] * len(COLUMNS)
    assert header.length() <= view.viewport().width()  # no horizontal scrolling
    assert view.horizontalScrollBar().maximum() == 0
    deepest = view.fontMetrics().horizontalAdvance("downsample") + 3 * view.indentation()
    assert header.sectionSize(0) >= deepest  # module names are readable, not squeezed to '…'
