"""Attach head from file: the dialog shows the fit, a mismatch needs the adapter, the edit undoes."""

from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import Qt
from torch import nn

from headstudio.core.head_description import describe_head
from headstudio.core.head_files import export_head, read_head_file
from headstudio.gui import attach_head
from headstudio.gui.attach_head import AttachHeadDialog
from headstudio.gui.head_editor import HeadEditor

OPEN_TIMEOUT_MS = 120_000
RESNET18 = "torchvision:resnet18"


def head_file(folder, name: str, features: int) -> str:
    torch.manual_seed(features)
    head = nn.Linear(features, 7)
    path = folder / name
    export_head(head, describe_head(head, "fc", [f"c{i}" for i in range(7)], {"name": "donor.pt"}), path)
    return str(path)


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guiheads")
    return {
        "fits": head_file(folder, "fits.safetensors", 512),
        "wide": head_file(folder, "wide.safetensors", 256),
    }


@pytest.fixture
def editor(qtbot, controller, open_model, resnet18_file):
    panel = HeadEditor(controller)
    qtbot.addWidget(panel)
    panel.show()
    open_model(resnet18_file, arch=RESNET18)
    return panel


def user_answers(monkeypatch, qtbot, path: str, act) -> list[AttachHeadDialog]:
    """The file dialog returns ``path``; the attach dialog is real; ``act(dialog)`` is what the user does."""
    shown: list[AttachHeadDialog] = []

    def ask_attach(parent, loaded, at, features, controller, edit_for):
        dialog = attach_head.attach_dialog(parent, loaded, at, features, controller, edit_for)
        qtbot.addWidget(dialog)
        dialog.show()
        shown.append(dialog)
        return dialog.choice() if act(dialog) else None

    monkeypatch.setattr(attach_head, "ask_head_path", lambda parent: path)
    monkeypatch.setattr(attach_head, "ask_attach", ask_attach)
    return shown


def test_dialog_for_a_head_that_fits_attaches_without_an_adapter(qtbot, heads):
    dialog = AttachHeadDialog(read_head_file(heads["fits"]), "fc", 512)
    qtbot.addWidget(dialog)
    assert dialog.fitLabel.text().startswith("Fits: 'fc' gives 512 features")
    assert dialog.adapterBox.isHidden() and dialog.attachButton.isEnabled()
    assert "c0, c1, c2, c3, c4, …" in dialog.findChild(type(dialog.fitLabel), "headSummary").text()
    assert dialog.choice().mode == "replace" and not dialog.choice().adapter


def test_dialog_for_a_mismatch_enables_attach_only_with_the_adapter(qtbot, heads):
    dialog = AttachHeadDialog(read_head_file(heads["wide"]), "fc", 512)
    qtbot.addWidget(dialog)
    dialog.show()
    assert "Does not fit: 'fc' gives 512 features but the head takes 256" in dialog.fitLabel.text()
    assert dialog.adapterBox.text() == "Insert an adapter: Linear 512 → 256"
    assert not dialog.attachButton.isEnabled()
    qtbot.mouseClick(dialog.adapterBox, Qt.MouseButton.LeftButton)
    assert dialog.attachButton.isEnabled() and dialog.choice().adapter
    qtbot.mouseClick(dialog.addRadio, Qt.MouseButton.LeftButton)
    dialog.nameEdit.setText("not a name")
    assert not dialog.attachButton.isEnabled()
    dialog.nameEdit.setText("wide")
    assert dialog.attachButton.isEnabled() and dialog.choice().mode == "add"


def test_attaching_a_fitting_head_replaces_it_with_the_file_weights_and_undo_restores(
    qtbot, controller, editor, heads, monkeypatch
):
    old = controller.document.model.fc

    def look_then_attach(dialog):
        qtbot.waitUntil(lambda: "[1, 7]" in dialog.previewLabel.text(), timeout=OPEN_TIMEOUT_MS)
        assert dialog.previewLabel.text() == "Output [1, 1000] → [1, 7]; params 11,689,512 → 11,180,103"
        return True

    user_answers(monkeypatch, qtbot, heads["fits"], look_then_attach)
    with qtbot.waitSignal(controller.traceReady, timeout=OPEN_TIMEOUT_MS):
        qtbot.mouseClick(editor.attachButton, Qt.MouseButton.LeftButton)
    fc = controller.document.model.fc
    assert torch.equal(fc.weight, read_head_file(heads["fits"]).state["weight"])
    assert controller.document.trace().output == [1, 7]
    assert controller.undo_stack.text(0) == "Replace head fc with fits.safetensors (512 → 7)"
    with qtbot.waitSignal(controller.traceReady, timeout=OPEN_TIMEOUT_MS):
        controller.undo()
    assert controller.document.model.fc is old


def test_a_mismatch_is_never_attached_silently_and_the_adapter_makes_it_fit(
    qtbot, controller, editor, heads, monkeypatch
):
    shown = user_answers(monkeypatch, qtbot, heads["wide"], lambda dialog: False)  # the user cancels
    qtbot.mouseClick(editor.attachButton, Qt.MouseButton.LeftButton)
    assert not shown[0].attachButton.isEnabled()
    assert controller.undo_stack.count() == 0

    def with_adapter(dialog):
        qtbot.mouseClick(dialog.adapterBox, Qt.MouseButton.LeftButton)
        return dialog.attachButton.isEnabled()

    user_answers(monkeypatch, qtbot, heads["wide"], with_adapter)
    with qtbot.waitSignal(controller.traceReady, timeout=OPEN_TIMEOUT_MS):
        qtbot.mouseClick(editor.attachButton, Qt.MouseButton.LeftButton)
    fc = controller.document.model.fc
    assert (fc.adapter.in_features, fc.adapter.out_features) == (512, 256)
    assert torch.equal(fc.head.weight, read_head_file(heads["wide"]).state["weight"])
    assert controller.document.trace().output == [1, 7]


def test_a_hostile_head_file_is_one_line_error(qtbot, controller, editor, tmp_path, monkeypatch):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08" + b"\x00" * 7 + b"{}garbage")
    user_answers(monkeypatch, qtbot, str(bad), lambda dialog: True)
    with qtbot.waitSignal(controller.errorRaised, timeout=10_000) as error:
        qtbot.mouseClick(editor.attachButton, Qt.MouseButton.LeftButton)
    assert "bad.safetensors" in error.args[0] and "\n" not in error.args[0]
    assert controller.undo_stack.count() == 0


def test_model_menu_has_attach_head_from_file(window):
    texts = [a.text() for a in window.menuBar().actions()[2].menu().actions()]
    assert "&Attach head from file…" in texts and "&Remove selected layers" in texts
