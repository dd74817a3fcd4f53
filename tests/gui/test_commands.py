"""EditCommand: Qt's undo stack drives the core edits; undo is exact, failures never enter the history."""

from __future__ import annotations

from PySide6.QtCore import Qt

from headstudio.gui.commands import EditCommand, HistoryView

RESNET18 = "torchvision:resnet18"


def push_and_wait(traced, controller, edit) -> None:
    with traced(controller):
        controller.undo_stack.push(EditCommand(controller, edit))


def test_command_text_is_the_edit_description(qtbot, controller, open_model, resnet18_file):
    from headstudio.core.edits import ReplaceHead

    open_model(resnet18_file, arch=RESNET18)
    edit = ReplaceHead("fc", 10)
    command = EditCommand(controller, edit)
    assert command.text() == edit.describe()
    assert "fc" in command.text()


def test_undo_restores_every_weight_bit_exactly_and_redo_reapplies(
    qtbot, controller, open_model, resnet18_file, traced
):
    import torch

    from headstudio.core.edits import FreezeBackbone, ReplaceHead

    doc = open_model(resnet18_file, arch=RESNET18)
    before = {k: v.clone() for k, v in doc.model.state_dict().items()}
    push_and_wait(traced, controller, ReplaceHead("fc", 10, seed=1))
    push_and_wait(traced, controller, FreezeBackbone())
    assert doc.param_counts()[1] == 512 * 10 + 10
    new_head = doc.model.fc.weight.detach().clone()

    for _ in range(2):
        with traced(controller):
            controller.undo_stack.undo()
    state = doc.model.state_dict()
    assert all(torch.equal(state[k], before[k]) for k in before)
    assert all(p.requires_grad for p in doc.model.parameters())
    assert doc.trace().output == [1, 1000]

    for _ in range(2):
        with traced(controller):
            controller.undo_stack.redo()
    assert torch.equal(doc.model.fc.weight, new_head)
    assert doc.param_counts()[1] == 512 * 10 + 10
    assert doc.trace().output == [1, 10]


def test_each_step_tells_the_panels_the_model_changed(qtbot, controller, open_model, resnet18_file, traced):
    from headstudio.core.edits import RemoveHead

    open_model(resnet18_file, arch=RESNET18)
    with traced(controller, controller.modelEdited):
        controller.undo_stack.push(EditCommand(controller, RemoveHead("fc")))
    assert controller.document.trace().output == [1, 512]
    with traced(controller, controller.modelEdited):
        controller.undo_stack.undo()
    assert controller.document.trace().output == [1, 1000]


def test_an_edit_that_fails_is_reported_and_leaves_no_history(qtbot, controller, open_model, resnet18_file):
    from headstudio.core.edits import ReplaceHead

    doc = open_model(resnet18_file, arch=RESNET18)
    with qtbot.waitSignal(controller.errorRaised, timeout=5_000) as error:
        controller.undo_stack.push(EditCommand(controller, ReplaceHead("no.such.module", 10)))
    assert "no.such.module" in error.args[0]
    assert "\n" not in error.args[0]
    assert controller.undo_stack.count() == 0
    assert doc.model.fc.out_features == 1000


def test_history_lists_each_edit_and_clicking_the_start_undoes_them_all(
    qtbot, controller, open_model, resnet18_file, slow_wait, traced
):
    from headstudio.core.edits import FreezeBackbone, ReplaceHead

    view = HistoryView(controller)
    qtbot.addWidget(view)
    view.show()
    doc = open_model(resnet18_file, arch=RESNET18)
    edits = [ReplaceHead("fc", 10), FreezeBackbone()]
    for edit in edits:
        push_and_wait(traced, controller, edit)
    rows = view.model()
    assert [rows.index(r, 0).data() for r in range(rows.rowCount())] == [
        "Opened model",
        *(e.describe() for e in edits),
    ]
    start = view.visualRect(rows.index(0, 0)).center()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=start)
    assert controller.undo_stack.index() == 0
    slow_wait(lambda: not controller.busy)
    assert doc.model.fc.out_features == 1000
    assert doc.param_counts()[1] == 11_689_512
