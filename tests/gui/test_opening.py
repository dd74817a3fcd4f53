"""Opening models in the app: demos, checkpoint files, bare weights, consent for code, bad files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
import torchvision
from PySide6.QtCore import Qt

from headstudio.gui.tree_model import SHAPE, PathRole

RESNET18 = "torchvision:resnet18"


class Payload:
    """A pickle that would create a file if it were ever loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def shape_of(win, path: str) -> str:
    index = win.tree_panel.model.index_for_path(path)
    return index.siblingAtColumn(SHAPE).data()


@pytest.fixture(scope="module")
def resnet18_state_dict(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("weights") / "resnet18_weights.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def own_weights(tmp_path_factory, tiny_factory) -> str:
    """A bare state_dict of a project's own model (no torchvision/timm architecture fits it)."""
    import tinymodels

    path = tmp_path_factory.mktemp("weights") / "own_weights.pt"
    torch.save(tinymodels.TwoHeads(num_classes=5).state_dict(), path)
    return str(path)


def test_window_starts_on_the_start_page_with_demo_models(window):
    assert window.pages.currentWidget() is window.start_page
    assert window.findChild(object, "demo_resnet18") is not None
    assert window.findChild(object, "demo_squeezenet1_1") is not None


def test_resnet18_demo_shows_live_shapes_and_its_fc_head(window, open_in):
    open_in(window, RESNET18)
    assert window.pages.currentIndex() == 1
    assert shape_of(window, "fc") == "[1, 1000]"
    assert shape_of(window, "layer4") == "[1, 512, 7, 7]"
    assert window.controller.head_path == "fc"
    assert "11,689,512 params" in window.status.params_label.text()


def test_squeezenet_demo_opens_from_its_start_page_button(window, qtbot):
    button = window.findChild(object, "demo_squeezenet1_1")
    with qtbot.waitSignal(window.controller.traceReady, timeout=120_000):
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=120_000)
    assert window.controller.head_path == "classifier.1"
    assert shape_of(window, "classifier") == "[1, 1000, 1, 1]"
    assert window.controller.document.model.classifier[1].weight.device.type == "cpu"  # saveable


@pytest.mark.parametrize("spec, head", [("vit_b_16", "heads.head"), ("efficientnet_b0", "classifier.1")])
def test_bigger_demos_open_with_their_heads(window, open_in, spec, head):
    open_in(window, f"torchvision:{spec}")
    assert window.controller.head_path == head
    assert shape_of(window, head) == "[1, 1000]"


def test_unknown_bare_state_dict_asks_for_the_architecture_and_opens_with_it(
    window, open_in, answers, own_weights
):
    answers.arch = "tinymodels:two_heads"
    open_in(window, own_weights)
    assert answers.asked == [("arch", own_weights)]
    assert window.controller.document.origin.arch == "tinymodels:two_heads"
    assert shape_of(window, "cls") == "[1, 5]"
    assert own_weights in window.recent_files()
    assert not answers.errors


def test_unknown_bare_state_dict_left_without_an_architecture_opens_nothing(
    window, qtbot, answers, own_weights
):
    window.open(own_weights)
    qtbot.waitUntil(lambda: bool(answers.asked) and not window.controller.busy, timeout=60_000)
    assert window.controller.document is None
    assert window.pages.currentWidget() is window.start_page


def test_unsafe_checkpoint_is_refused_by_default_and_nothing_runs(window, qtbot, answers, tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": Payload(str(marker))}))
    window.open(str(path))
    qtbot.waitUntil(lambda: bool(answers.asked) and not window.controller.busy, timeout=60_000)
    kind, globals_ = answers.asked[0]
    assert kind == "consent" and any("mkdir" in name for name in globals_)
    assert not marker.exists()
    assert window.controller.document is None
    assert not answers.errors


def test_allowing_a_pickled_model_reopens_it_with_trust(window, open_in, answers, tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(torchvision.models.squeezenet1_1(weights=None), path)
    answers.consent = True
    open_in(window, path)
    kind, globals_ = answers.asked[0]
    assert kind == "consent" and any("SqueezeNet" in name for name in globals_)
    assert window.controller.head_path == "classifier.1"


@pytest.mark.parametrize("content", [b"", os.urandom(4096)], ids=["empty", "random-bytes"])
def test_bad_file_shows_a_one_line_error_and_opens_nothing(window, qtbot, answers, tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    window.open(str(path))
    qtbot.waitUntil(lambda: bool(answers.errors), timeout=60_000)
    assert len(answers.errors) == 1
    message = answers.errors[0]
    assert "\n" not in message and "Traceback" not in message and "broken.pt" in message
    assert window.controller.document is None


def test_opening_another_model_replaces_the_tree(window, open_in):
    open_in(window, RESNET18)
    open_in(window, "torchvision:squeezenet1_1")
    root = window.tree_panel.model.index_for_path("")
    assert window.tree_panel.model.index(0, 0, root).data(PathRole) == "features"
    assert window.controller.undo_stack.count() == 0


def test_dropping_a_file_on_the_window_opens_it(window, qtbot, answers, resnet18_state_dict):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    answers.arch = RESNET18
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(resnet18_state_dict)])
    drop = QDropEvent(
        QPointF(50, 50),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    with qtbot.waitSignal(window.controller.traceReady, timeout=120_000):
        window.dropEvent(drop)
    assert window.controller.document.origin.path.name == "resnet18_weights.pt"


def test_cancelling_an_open_opens_nothing_and_shows_no_error(window, qtbot, answers):
    window.open("torchvision:efficientnet_b0")
    window.status.cancel_button.click()
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=120_000)
    assert window.controller.document is None or window.controller.document.origin.arch.endswith("b0")
    assert not answers.errors
