"""The app opens Hugging Face model folders (File > Open Folder, drop), names classes, saves a folder."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
OPEN_TIMEOUT_MS = 120_000


def test_file_open_folder_opens_a_model_folder(window, qtbot, monkeypatch, hf_folder):
    from headstudio.gui import dialogs

    folder = hf_folder("sequence", "bert")
    monkeypatch.setattr(dialogs, "ask_open_folder", lambda parent, directory="": str(folder))
    assert window.action_open_folder in window.menuBar().actions()[0].menu().actions()
    with qtbot.waitSignal(window.controller.traceReady, timeout=OPEN_TIMEOUT_MS):
        window.action_open_folder.trigger()
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=OPEN_TIMEOUT_MS)
    assert window.controller.document.origin.kind == "hf_folder"
    assert window.controller.head_path == "classifier"
    # the field shows the inputs the config implies, in the form it accepts back
    assert window.tree_panel.shape_box.text() == "input_ids=1,62:int64 attention_mask=1,62:int64"
    from headstudio.gui.tree_model import SHAPE

    model = window.tree_panel.model
    root = model.index(0, SHAPE)
    assert "logits: [1, 3]" in model.data(root, Qt.ItemDataRole.ToolTipRole).splitlines()  # one line a field
    label = window.status.format_label  # the spec names the whole config folder: shortened, full in tooltip
    assert (
        len(label.text()) <= 60 and label.toolTip() == f"hf_folder · {window.controller.document.origin.arch}"
    )
    # a ModelOutput's long shapes give way when the tree is narrow, and take their width back when it widens
    panel, header = window.tree_panel, window.tree_panel.view.header()
    natural = panel._natural[SHAPE]
    panel.view.resize(420, panel.view.height())
    qtbot.waitUntil(lambda: header.sectionSize(SHAPE) < natural)
    panel.view.resize(1400, panel.view.height())
    qtbot.waitUntil(lambda: header.sectionSize(SHAPE) == natural)


def test_dropping_a_model_folder_opens_it(window, qtbot, hf_folder):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(hf_folder("image", "vit")))])
    drop = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)  # fmt: skip
    with qtbot.waitSignal(window.controller.traceReady, timeout=OPEN_TIMEOUT_MS):
        window.dropEvent(drop)
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=OPEN_TIMEOUT_MS)
    assert type(window.controller.document.model).__name__ == "ViTForImageClassification"
    assert window.controller.head_path == "classifier"


def test_named_inputs_typed_in_the_input_field_retrace(window, qtbot, open_in, retraced, hf_folder):
    open_in(window, hf_folder("sequence", "bert"))
    box = window.tree_panel.shape_box
    box.setText("input_ids=2,16:int64 attention_mask=2,16:int64")
    retraced(window, lambda: qtbot.keyClick(box, Qt.Key.Key_Return))
    assert window.controller.document.trace().outputs["bert"]["last_hidden_state"] == [2, 16, 32]
    assert box.text() == "input_ids=2,16:int64 attention_mask=2,16:int64"


def test_labels_in_the_head_editor_name_the_new_classes_and_save_as_a_folder(
    window, qtbot, open_in, retraced, hf_folder, tmp_path
):
    from PySide6.QtWidgets import QLineEdit, QPushButton, QSpinBox, QWidget
    from transformers import AutoModelForSequenceClassification

    open_in(window, hf_folder("sequence", "bert"))
    panel = window.findChild(QWidget, "headEditor")
    labels = panel.findChild(QLineEdit, "headLabels")
    labels.setText("red, green, blue, gold")
    assert panel.findChild(QSpinBox, "numClasses").value() == 4
    apply = panel.findChild(QPushButton, "applyHead")
    qtbot.waitUntil(apply.isEnabled, timeout=10_000)
    retraced(window, lambda: qtbot.mouseClick(apply, Qt.MouseButton.LeftButton))
    config = window.controller.document.model.config
    assert config.id2label == {0: "red", 1: "green", 2: "blue", 3: "gold"}
    with qtbot.waitSignal(window.controller.saveFinished, timeout=OPEN_TIMEOUT_MS):
        window.controller.save(tmp_path / "colours")
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "colours"))
    assert reloaded.config.label2id == {"red": 0, "green": 1, "blue": 2, "gold": 3}
