"""Weights without an architecture in the app: recognised without asking, ranked guesses in the dialog,
recent files that reopen with their architecture, and the EMA weights choice."""

from __future__ import annotations

import pytest
import torch
import torchvision
from PySide6.QtCore import Qt

from headstudio.core.opening.fingerprint import Candidate
from headstudio.gui import dialogs


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> tuple[str, dict]:
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None, num_classes=3).state_dict()
    path = tmp_path_factory.mktemp("w") / "weights.pth"
    torch.save(state, path)
    return str(path), state


def test_recognised_weights_open_without_asking_and_the_status_bar_says_how(
    window, open_in, answers, resnet18_file
):
    open_in(window, resnet18_file[0])
    assert answers.asked == [] and not answers.errors
    assert window.controller.document.origin.arch == "torchvision:resnet18(num_classes=3)"
    assert (
        "recognised from the weights as torchvision:resnet18(num_classes=3)"
        in window.statusBar().currentMessage()
    )


def test_near_weights_ask_with_ranked_guesses_first(window, qtbot, answers, tmp_path, resnet18_file):
    state = dict(resnet18_file[1])
    state["classifier.weight"], state["classifier.bias"] = state.pop("fc.weight"), state.pop("fc.bias")
    torch.save(state, tmp_path / "renamed.pth")
    window.open(str(tmp_path / "renamed.pth"))
    qtbot.waitUntil(lambda: bool(answers.asked) and not window.controller.busy, timeout=120_000)
    best = answers.guesses[0]
    assert best.arch in ("torchvision:resnet18", "timm:resnet18(num_classes=0)") and not best.exact
    assert "2 unexpected (classifier.weight, classifier.bias)" in best.differs
    assert {g.arch for g in answers.guesses[:3]} >= {"torchvision:resnet18", "timm:resnet18(num_classes=0)"}
    assert window.controller.document is None and not answers.errors


def test_architecture_dialog_preselects_the_best_guess_and_accepts_any_typed_spec(qtbot):
    guesses = [
        Candidate("timm:convnext_nano(num_classes=7)", 0.98, ("1 missing (head.norm.weight)",)),
        Candidate("timm:convnext_pico(num_classes=7)", 0.41, ("80 other shapes (stem.0.weight: ...)",)),
    ]
    dialog = dialogs.ArchitectureDialog("w.pth", ["torchvision:resnet18"], guesses)
    qtbot.addWidget(dialog)
    rows = [dialog.guesses.item(i).text() for i in range(dialog.guesses.count())]
    assert rows[0].startswith("timm:convnext_nano(num_classes=7)") and "98% · 1 missing" in rows[0]
    assert dialog.choice() == "timm:convnext_nano(num_classes=7)"
    qtbot.keyClicks(dialog.search, "mypkg.models:Net(width=3)")
    assert dialog.choice() == "mypkg.models:Net(width=3)"


def test_recent_file_reopens_with_its_architecture_without_asking(
    window, open_in, answers, tmp_path, tiny_factory
):
    import tinymodels

    path = tmp_path / "own.pt"
    torch.save(tinymodels.TwoHeads(num_classes=4).state_dict(), path)
    answers.arch = "tinymodels:two_heads(num_classes=4)"
    open_in(window, path)
    assert len(answers.asked) == 1
    open_in(window, "torchvision:squeezenet1_1")
    item = window.start_page.recent.item(0)
    assert item.data(Qt.ItemDataRole.UserRole) == str(path.resolve())
    open_in(window, item.data(Qt.ItemDataRole.UserRole))  # what activating the recent entry does
    assert len(answers.asked) == 1  # not asked again
    assert window.controller.document.origin.arch == "tinymodels:two_heads(num_classes=4)"


def test_ema_weights_are_a_choice_in_the_model_menu(window, open_in, qtbot, tmp_path, resnet18_file):
    state = resnet18_file[1]
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"state_dict": state, "state_dict_ema": ema, "epoch": 3}, tmp_path / "train.pth.tar")
    open_in(window, tmp_path / "train.pth.tar")
    assert window.action_ema.isEnabled() and not window.action_ema.isChecked()
    with qtbot.waitSignal(window.controller.traceReady, timeout=120_000):
        window.action_ema.trigger()
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=120_000)
    doc = window.controller.document
    assert doc.origin.checkpoint.key == ("state_dict_ema",) and window.action_ema.isChecked()
    assert torch.equal(doc.model.fc.bias, ema["fc.bias"])
