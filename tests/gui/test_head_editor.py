"""The head editor panel: detected head, live preview, problems in red, apply / undo / freeze / remove."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette

from headstudio.gui.code_view import CodeView
from headstudio.gui.head_editor import ADD, CUT, REMOVE, HeadEditor
from headstudio.gui.palette import problem_color

RESNET18 = "torchvision:resnet18"


@pytest.fixture
def editor(qtbot, controller):
    panel = HeadEditor(controller)
    qtbot.addWidget(panel)
    panel.show()
    return panel


@pytest.fixture
def resnet(open_model, resnet18_file):
    return open_model(resnet18_file, arch=RESNET18)


def type_into(qtbot, widget, text: str) -> None:
    """Select what the field holds and type ``text`` like a user."""
    line = widget.lineEdit() if hasattr(widget, "lineEdit") else widget
    line.selectAll()
    qtbot.keyClicks(line, text)


def wait_preview(qtbot, editor: HeadEditor, check) -> None:
    """Wait until the debounced preview shows what ``check`` expects."""
    qtbot.waitUntil(lambda: editor.preview is not None and check(editor.preview), timeout=10_000)


def apply_and_wait(qtbot, traced, controller, button) -> None:
    with traced(controller):
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_head_editor_shows_the_detected_head_of_resnet18(editor, resnet):
    assert "fc" in editor.headLabel.text()
    assert "512 → 1000" in editor.headLabel.text()
    assert editor.numClasses.value() == 1000


def test_typing_ten_classes_previews_output_and_params_delta(qtbot, editor, resnet):
    type_into(qtbot, editor.numClasses, "10")
    wait_preview(qtbot, editor, lambda p: p.output_after == [1, 10])
    assert editor.preview.output_before == [1, 1000]
    assert "[1, 1000] → [1, 10]" in editor.previewOutput.text()
    assert "−507,870" in editor.previewParams.text()  # 513,000 -> 5,130 head parameters
    assert editor.applyButton.isEnabled()


def test_apply_right_after_typing_applies_what_the_form_shows(qtbot, controller, editor, resnet, traced):
    type_into(qtbot, editor.numClasses, "10")
    assert editor.preview is None  # the preview has not even started (it waits for the typing to stop)
    assert editor.applyButton.isEnabled()
    with traced(controller):
        qtbot.mouseClick(editor.applyButton, Qt.MouseButton.LeftButton)
    assert controller.document.model.fc.out_features == 10
    assert controller.undo_stack.count() == 1


def test_zero_classes_shows_a_red_problem_and_disables_apply(qtbot, editor, resnet):
    type_into(qtbot, editor.numClasses, "10")
    wait_preview(qtbot, editor, lambda p: p.ok)
    type_into(qtbot, editor.numClasses, "0")
    qtbot.waitUntil(lambda: not editor.previewProblems.isHidden(), timeout=10_000)
    assert editor.previewProblems.text()
    assert editor.previewProblems.palette().color(QPalette.ColorRole.WindowText) == problem_color(
        editor.palette()
    )
    assert not editor.applyButton.isEnabled()


def test_mlp_hidden_sizes_that_are_not_numbers_show_a_problem(qtbot, editor, resnet):
    editor.headKind.setCurrentText("MLP")
    type_into(qtbot, editor.hiddenSizes, "abc")
    qtbot.waitUntil(lambda: "abc" in editor.previewProblems.text(), timeout=10_000)
    assert not editor.previewProblems.isHidden()
    assert not editor.applyButton.isEnabled()


def test_mlp_preview_adds_hidden_layer_parameters(qtbot, editor, resnet):
    editor.headKind.setCurrentText("MLP")
    type_into(qtbot, editor.hiddenSizes, "256")
    type_into(qtbot, editor.numClasses, "10")
    wait_preview(qtbot, editor, lambda p: p.output_after == [1, 10])
    preview = editor.preview
    assert preview.params_after - preview.params_before == (512 * 256 + 256 + 256 * 10 + 10) - 513_000


def test_apply_replaces_the_head_and_undo_restores_weights_bit_exactly(
    qtbot, controller, editor, resnet, traced
):
    import torch

    before = {k: v.clone() for k, v in resnet.model.state_dict().items()}
    type_into(qtbot, editor.numClasses, "10")
    wait_preview(qtbot, editor, lambda p: p.ok)
    apply_and_wait(qtbot, traced, controller, editor.applyButton)
    assert controller.document.trace().output == [1, 10]
    assert controller.undo_stack.count() == 1

    with traced(controller):
        controller.undo_stack.undo()
    after = controller.document.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert controller.document.trace().output == [1, 1000]

    with traced(controller):
        controller.undo_stack.redo()
    assert controller.document.model.fc.out_features == 10


def test_freeze_backbone_leaves_only_the_head_trainable(qtbot, controller, editor, resnet, traced):
    apply_and_wait(qtbot, traced, controller, editor.freezeButton)
    total, trainable = controller.document.param_counts()
    assert trainable == 513_000  # fc: 512 * 1000 + 1000
    assert total == 11_689_512
    assert all(p.requires_grad for p in controller.document.model.fc.parameters())


def test_public_freeze_backbone_is_one_undoable_step(qtbot, controller, editor, resnet, traced):
    with traced(controller):
        editor.freeze_backbone()
    assert controller.undo_stack.count() == 1
    with traced(controller):
        controller.undo_stack.undo()
    assert controller.document.param_counts()[1] == 11_689_512


def test_freeze_backbone_keeps_the_head_the_user_marked_trainable(qtbot, controller, editor, resnet, traced):
    controller.select("layer4.1")
    controller.mark_head("layer4.1")
    assert "layer4.1" in editor.headLabel.text()
    with traced(controller):
        editor.freeze_backbone()
    block = controller.document.model.layer4[1]
    assert controller.document.param_counts()[1] == sum(p.numel() for p in block.parameters())


def test_remove_head_turns_resnet18_into_a_512_feature_extractor(qtbot, controller, editor, resnet, traced):
    editor.operation.setCurrentIndex(REMOVE)
    wait_preview(qtbot, editor, lambda p: p.output_after == [1, 512])
    apply_and_wait(qtbot, traced, controller, editor.applyButton)
    assert controller.document.trace().output == [1, 512]


def test_cut_after_follows_the_selected_module(qtbot, controller, editor, resnet):
    controller.select("layer3")
    editor.operation.setCurrentIndex(CUT)
    assert "layer3" in editor.cutLabel.text()
    wait_preview(qtbot, editor, lambda p: p.output_after == [1, 256, 14, 14])


def test_add_head_previews_a_second_output(qtbot, editor, resnet):
    editor.operation.setCurrentIndex(ADD)
    type_into(qtbot, editor.addHeadName, "age")
    type_into(qtbot, editor.addHeadClasses, "5")
    wait_preview(qtbot, editor, lambda p: p.params_after - p.params_before == 512 * 5 + 5)
    assert "age" in str(editor.preview.output_after)


def test_show_code_after_replacing_the_head_writes_nn_linear(qtbot, controller, editor, resnet, traced):
    type_into(qtbot, editor.numClasses, "10")
    wait_preview(qtbot, editor, lambda p: p.ok)
    apply_and_wait(qtbot, traced, controller, editor.applyButton)
    dialog = CodeView(controller)
    qtbot.addWidget(dialog)
    assert "model.fc = nn.Linear(" in dialog.code
    assert dialog.editor.isReadOnly()
    qtbot.mouseClick(dialog.copyButton, Qt.MouseButton.LeftButton)
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == dialog.code


def test_squeezenet_head_is_its_final_conv_and_replacing_keeps_a_conv(qtbot, editor, open_model):
    open_model("torchvision:squeezenet1_1")
    assert "classifier.1" in editor.headLabel.text()
    assert "Conv2d" in editor.headLabel.text()
    type_into(qtbot, editor.numClasses, "7")
    wait_preview(qtbot, editor, lambda p: p.output_after == [1, 7])
    assert editor.preview.params_after - editor.preview.params_before == (512 * 7 + 7) - (512 * 1000 + 1000)


def test_in_the_main_window_apply_changes_the_tree_and_ctrl_z_undoes(
    qtbot, window, open_in, resnet18_file, traced, slow_wait
):
    from PySide6.QtWidgets import QPushButton, QSpinBox, QTreeView, QWidget

    open_in(window, resnet18_file, arch=RESNET18)
    panel = window.findChild(QWidget, "headEditor")
    classes = panel.findChild(QSpinBox, "numClasses")
    apply = panel.findChild(QPushButton, "applyHead")
    type_into(qtbot, classes, "10")
    qtbot.waitUntil(apply.isEnabled, timeout=10_000)
    apply_and_wait(qtbot, traced, window.controller, apply)
    slow_wait(lambda: not window.controller.busy)
    tree = window.findChild(QTreeView, "moduleTree")
    shape_column = [tree.model().headerData(c, Qt.Orientation.Horizontal) for c in range(5)].index(
        "Output shape"
    )
    assert tree.model().index(0, shape_column).data() == "[1, 10]"  # the model row's output
    with traced(window.controller):
        qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: tree.model().index(0, shape_column).data() == "[1, 1000]", timeout=10_000)


def test_marking_a_timm_head_block_points_to_its_classifier_in_red(qtbot, controller, editor, open_model):
    open_model("timm:convnext_atto")
    assert "head.fc" in editor.headLabel.text()
    controller.mark_head("head")
    type_into(qtbot, editor.numClasses, "10")
    qtbot.waitUntil(lambda: "head.fc" in editor.previewProblems.text(), timeout=10_000)
    assert "head block" in editor.previewProblems.text()
    assert not editor.applyButton.isEnabled()


def test_warnings_show_in_amber_and_do_not_block_apply(qtbot, editor, resnet):
    from headstudio.core.edits import Preview
    from headstudio.gui.palette import warning_color

    type_into(qtbot, editor.numClasses, "10")
    wait_preview(qtbot, editor, lambda p: p.ok)
    with qtbot.waitSignal(editor.previewUpdated):
        editor._on_previewed(Preview([1, 1000], [1, 10], 1, 1, 1, 1, [], ["no trained rows were kept"]), "")
    assert "no trained rows were kept" in editor.previewWarnings.text()
    assert not editor.previewWarnings.isHidden()
    assert editor.previewWarnings.palette().color(QPalette.ColorRole.WindowText) == warning_color(
        editor.palette()
    )
    assert editor.applyButton.isEnabled()


def test_a_new_input_shape_updates_the_preview(qtbot, controller, editor, resnet, traced):
    type_into(qtbot, editor.numClasses, "10")
    wait_preview(qtbot, editor, lambda p: p.ok)
    with traced(controller):
        controller.set_input_shape((2, 3, 160, 160))
    wait_preview(qtbot, editor, lambda p: p.output_after == [2, 10])
    assert editor.preview.output_before == [2, 1000]


def test_keep_trained_rows_copies_the_first_classes_into_the_new_head(
    qtbot, controller, editor, resnet, traced
):
    import torch

    old_weight = resnet.model.fc.weight.detach().clone()
    type_into(qtbot, editor.numClasses, "10")
    qtbot.mouseClick(editor.keepClasses, Qt.MouseButton.LeftButton)
    assert editor.keepClasses.isChecked()
    wait_preview(qtbot, editor, lambda p: p.ok and p.output_after == [1, 10])
    apply_and_wait(qtbot, traced, controller, editor.applyButton)
    assert torch.equal(controller.document.model.fc.weight, old_weight[:10])


def test_show_code_before_any_edit_says_so_and_offers_nothing_to_copy(qtbot, controller, resnet):
    dialog = CodeView(controller)
    qtbot.addWidget(dialog)
    assert dialog.code.startswith("# No edits yet")
    assert not dialog.copyButton.isEnabled()


def test_an_open_code_view_follows_each_new_edit(qtbot, controller, editor, resnet, traced):
    dialog = CodeView(controller)
    qtbot.addWidget(dialog)
    dialog.show()
    apply_and_wait(qtbot, traced, controller, editor.freezeButton)
    assert "requires_grad" in dialog.code
    assert dialog.copyButton.isEnabled()


def test_problems_stay_readable_red_in_a_dark_palette(editor):
    from PySide6.QtGui import QColor

    dark = QPalette(editor.palette())
    dark.setColor(QPalette.ColorRole.Window, QColor("#202020"))
    editor.setPalette(dark)
    shown = editor.previewProblems.palette().color(QPalette.ColorRole.WindowText)
    assert shown == problem_color(dark)
    assert shown.lightness() > 128  # a light red on a dark window


def test_no_preview_runs_until_the_user_sets_up_an_edit(
    qtbot, monkeypatch, controller, editor, open_model, resnet18_file, traced
):
    requested = []
    monkeypatch.setattr(controller, "request_preview", lambda edit: requested.append(edit))
    open_model(resnet18_file, arch=RESNET18)
    editor.refresh_preview()  # what the debounce timer would do
    assert requested == []  # replacing 1000 classes by 1000 would show no change: nothing is traced
    assert "set the class count" in editor.previewOutput.text()
    assert not editor.applyButton.isEnabled()
    type_into(qtbot, editor.numClasses, "10")
    editor.refresh_preview()
    assert [(e.kind, e.num_classes) for e in requested] == [("replace_head", 10)]


def test_after_apply_the_preview_waits_for_the_next_edit(qtbot, controller, editor, resnet, traced):
    type_into(qtbot, editor.numClasses, "10")
    wait_preview(qtbot, editor, lambda p: p.output_after == [1, 10])
    apply_and_wait(qtbot, traced, controller, editor.applyButton)
    qtbot.waitUntil(lambda: "set the class count" in editor.previewOutput.text(), timeout=10_000)
    assert editor.preview is None
    editor.operation.setCurrentIndex(REMOVE)
    wait_preview(qtbot, editor, lambda p: p.output_after == [1, 512])
