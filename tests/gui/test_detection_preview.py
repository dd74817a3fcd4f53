"""The head editor on a detector and a segmenter: class count without background, paired layers shown."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from headstudio.gui.head_editor import HeadEditor

TIMEOUT_MS = 120_000  # a detector's preview traces a real forward on a busy 2-core machine
FRCNN = (
    "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn(min_size=64, max_size=64, "
    "rpn_pre_nms_top_n_test=10, rpn_post_nms_top_n_test=10)"
)
DEEPLAB = "torchvision:deeplabv3_mobilenet_v3_large(aux_loss=True)"


@pytest.fixture
def editor(qtbot, controller):
    panel = HeadEditor(controller)
    qtbot.addWidget(panel)
    panel.show()
    return panel


def set_classes(qtbot, editor: HeadEditor, count: int) -> None:
    """Type the class count like a user and wait for its preview."""
    line = editor.numClasses.lineEdit()
    line.selectAll()
    qtbot.keyClicks(line, str(count))
    qtbot.waitUntil(lambda: editor.preview is not None and bool(editor.preview.layers), timeout=TIMEOUT_MS)


def test_faster_rcnn_preview_shows_class_and_box_outputs_then_applies_and_undoes(
    qtbot, controller, editor, open_model, traced
):
    open_model(FRCNN)
    assert "roi_heads.box_predictor.cls_score" in editor.headLabel.text()
    assert editor.numClasses.value() == 90  # COCO's classes; the background is not the user's to count
    set_classes(qtbot, editor, 3)
    lines = editor.previewLayers.text().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "roi_heads.box_predictor.cls_score",
        "roi_heads.box_predictor.bbox_pred",
    ]
    assert lines[0].endswith(", 4]") and lines[1].endswith(", 16]")  # 3 + background, 4 boxes each
    assert editor.previewLayers.isVisible() and editor.applyButton.isEnabled()
    with traced(controller):
        qtbot.mouseClick(editor.applyButton, Qt.MouseButton.LeftButton)
    predictor = controller.document.model.roi_heads.box_predictor
    assert (predictor.cls_score.out_features, predictor.bbox_pred.out_features) == (4, 16)
    with traced(controller):
        controller.undo_stack.undo()
    assert controller.document.model.roi_heads.box_predictor.cls_score.out_features == 91


def test_deeplab_preview_changes_main_and_auxiliary_classifiers_together(qtbot, editor, open_model):
    open_model(DEEPLAB)
    assert editor.numClasses.value() == 21
    set_classes(qtbot, editor, 3)
    text = editor.previewLayers.text()
    assert "classifier.4: [1, 21, 28, 28] → [1, 3, 28, 28]" in text
    assert "aux_classifier.4: [1, 21, 28, 28] → [1, 3, 28, 28]" in text
    assert "aux: [1, 3, 224, 224]}" in editor.previewOutput.text()
