"""The Probe panel: a synthetic image through resnet18; top-k bars, activations, proof colours, heads."""

from __future__ import annotations

import numpy as np
import pytest
from probe_images import not_an_image, picture

from headstudio.gui.probe_panel import ALL_HEADS, ProbePanel
from headstudio.gui.tree_model import PROOF_COLORS, ProofRole
from headstudio.gui.tree_panel import ModuleTreePanel

PROBE_TIMEOUT_MS = 120_000
RESNET18 = "torchvision:resnet18"


@pytest.fixture
def panel(qtbot, controller):
    widget = ProbePanel(controller)
    qtbot.addWidget(widget)
    widget.show()
    return widget


@pytest.fixture
def tree(qtbot, controller):
    widget = ModuleTreePanel(controller)
    qtbot.addWidget(widget)
    return widget


@pytest.fixture
def image(tmp_path):
    return picture(tmp_path / "synthetic.png", (120, 90))


@pytest.fixture
def opened(open_model, controller, resnet18_file, traced, slow_wait):
    open_model(resnet18_file, arch=RESNET18)
    with traced(controller):
        controller.set_input_shape((1, 3, 64, 64))  # a small input keeps every forward quick
    slow_wait(lambda: not controller.busy)
    return controller


def run(qtbot, panel) -> None:
    with qtbot.waitSignal(panel.controller.probeFinished, timeout=PROBE_TIMEOUT_MS):
        panel.run()
    qtbot.waitUntil(lambda: not panel.controller.busy, timeout=PROBE_TIMEOUT_MS)


def edit(qtbot, controller, edit_value) -> None:
    with qtbot.waitSignal(controller.traceReady, timeout=PROBE_TIMEOUT_MS):
        assert controller.push_edit(edit_value)
    qtbot.waitUntil(lambda: not controller.busy, timeout=PROBE_TIMEOUT_MS)


def test_an_image_shows_the_heads_top_k_as_named_bars(qtbot, opened, panel, image):
    panel.set_image(str(image))
    run(qtbot, panel)
    (chart,) = [c for c in panel.charts if c.isVisible()]
    assert "fc" in chart.title.text() and "torchvision ResNet18_Weights categories" in chart.title.text()
    assert len(chart.labels) == 5 and all("(" in label for label in chart.labels)  # name (index) p
    assert chart.values == sorted(chart.values, reverse=True)
    top = panel.result.heads[0].top
    assert chart.bars.opts["width"] == [t.probability for t in top]
    assert panel.inputLabel.text().startswith("Input: synthetic.png: resize")


def test_the_selected_module_shows_its_feature_maps_or_vector(qtbot, opened, panel, image):
    panel.set_image(str(image))
    run(qtbot, panel)
    opened.select("layer1")
    assert panel.activation.layout_shown == "maps"
    grid = panel.activation.shown
    assert grid.ndim == 2 and grid.shape == (8 * 17 - 1, 8 * 17 - 1)  # 64 maps of 16x16, 1-pixel gaps
    assert "feature maps 64 x 16x16" in panel.activation.caption.text()
    assert "min 0" in panel.activation.caption.text()  # after a ReLU
    opened.select("avgpool")
    assert panel.activation.layout_shown == "vector" and panel.activation.shown.shape == (512,)


def test_random_input_runs_without_an_image(qtbot, opened, panel):
    with qtbot.waitSignal(opened.probeFinished, timeout=PROBE_TIMEOUT_MS):
        panel.use_random()
    assert "random normal values (seed 0)" in panel.inputLabel.text()
    assert panel.proofLabel.text().startswith("No edits yet")


def test_after_an_edit_the_tree_is_coloured_by_the_surgery_proof(qtbot, opened, panel, tree):
    from headstudio.core.edits import ReplaceHead

    edit(qtbot, opened, ReplaceHead("fc", 7, seed=0))
    run(qtbot, panel)
    assert "66 unchanged (bit-identical), 2 changed; first difference at fc" in panel.proofLabel.text()
    model = tree.model
    layer1, fc = model.index_for_path("layer1"), model.index_for_path("fc")
    assert layer1.data(ProofRole) == "unchanged" and fc.data(ProofRole) == "shape changed"
    from PySide6.QtCore import Qt

    assert layer1.data(Qt.ItemDataRole.BackgroundRole) == PROOF_COLORS["unchanged"]
    assert fc.data(Qt.ItemDataRole.BackgroundRole) == PROOF_COLORS["changed"]
    assert "probe: output unchanged (bit-identical)" in layer1.data(Qt.ItemDataRole.ToolTipRole)
    with qtbot.waitSignal(opened.traceReady, timeout=PROBE_TIMEOUT_MS):
        opened.undo()
    assert model.index_for_path("layer1").data(ProofRole) == ""  # the proof was of the edited model
    assert "changed since this probe" in panel.proofLabel.text()


def test_every_head_is_shown_and_the_active_head_is_chosen_undoably(qtbot, opened, panel):
    from headstudio.core.edits import AddHead

    edit(qtbot, opened, AddHead("age", 5, "fc", seed=0))
    run(qtbot, panel)
    titles = [c.title.text() for c in panel.charts if c.isVisible()]
    assert len(titles) == 2 and any("<b>age</b>" in t for t in titles)
    box = panel.active_boxes["fc"]
    assert [box.itemText(i) for i in range(box.count())] == [ALL_HEADS, "fc", "age"]
    with qtbot.waitSignal(opened.traceReady, timeout=PROBE_TIMEOUT_MS):
        box.setCurrentText("age")
        box.activated.emit(box.currentIndex())
    multihead = opened.document.model.fc
    assert multihead.active == "age" and opened.undo_stack.undoText() == "Active head at fc: age"
    with qtbot.waitSignal(opened.traceReady, timeout=PROBE_TIMEOUT_MS):
        opened.undo()
    assert multihead.active is None and box.currentText() == ALL_HEADS
    with qtbot.waitSignal(opened.traceReady, timeout=PROBE_TIMEOUT_MS):
        opened.redo()
    assert multihead.active == "age" and box.currentText() == "age"
    run(qtbot, panel)
    returned = [
        c.title.text() for c in panel.charts if c.isVisible() and "returned by the model" in c.title.text()
    ]
    assert len(returned) == 1 and "<b>age</b>" in returned[0]


def test_a_dropped_image_is_probed(qtbot, opened, panel, image):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(image))])
    event = QDropEvent(
        QPointF(5, 5),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    with qtbot.waitSignal(opened.probeFinished, timeout=PROBE_TIMEOUT_MS):
        panel.dropEvent(event)
    assert panel.image == str(image) and "synthetic.png" in panel.inputLabel.text()


def test_the_file_dialog_picks_the_image(qtbot, opened, panel, image, monkeypatch):
    from headstudio.gui import probe_panel

    monkeypatch.setattr(probe_panel, "ask_image_path", lambda parent: str(image))
    with qtbot.waitSignal(opened.probeFinished, timeout=PROBE_TIMEOUT_MS):
        panel.imageButton.click()
    assert panel.result.input.description.startswith("synthetic.png")


def test_a_file_that_is_not_an_image_is_one_line_and_nothing_changes(qtbot, opened, panel, tmp_path):
    bad = not_an_image(tmp_path / "notes.png")
    panel.set_image(str(bad))
    with qtbot.waitSignal(opened.errorRaised, timeout=PROBE_TIMEOUT_MS) as caught:
        panel.run()
    (message,) = caught.args
    assert "is not an image Pillow can read" in message and "\n" not in message
    assert panel.result is None and panel.runButton.isEnabled()


def test_cancel_stops_the_probe_and_shows_nothing(qtbot, opened, panel):
    with qtbot.waitSignal(opened.cancelled, timeout=PROBE_TIMEOUT_MS):
        panel.run()
        panel.cancel()
    qtbot.waitUntil(lambda: not opened.busy, timeout=PROBE_TIMEOUT_MS)
    assert panel.result is None and panel.runButton.isEnabled() and panel.progress.value() == 0


def test_the_activation_view_draws_token_matrices_with_a_diverging_map(qtbot, panel):
    from headstudio.core.model.activations import Activation

    data = np.linspace(-1, 2, 12 * 6, dtype=np.float16).reshape(12, 6)
    act = Activation("encoder", "TransformerEncoder", [1, 12, 6], "sequence", {}, data, 6)
    panel.activation.show_activation(act)
    assert panel.activation.shown.shape == (12, 6)
    assert panel.activation.image.getLevels().tolist() == [-2.0, 2.0]  # centred on zero
