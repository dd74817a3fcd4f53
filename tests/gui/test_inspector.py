"""The inspector: path, type, repr, parameters with statistics and a weight histogram of the selection."""

from __future__ import annotations

import pytest

from headstudio.gui import inspector as inspector_module
from headstudio.gui.inspector import COLUMNS, Inspector, tensor_histogram, tensor_stats

RESNET18 = "torchvision:resnet18"


@pytest.fixture
def inspector(qtbot, controller):
    panel = Inspector(controller)
    qtbot.addWidget(panel)
    panel.show()
    return panel


def cell(panel: Inspector, row: int, column: str) -> str:
    return panel.paramTable.item(row, COLUMNS.index(column)).text()


def test_selecting_fc_shows_its_parameters_with_statistics(
    qtbot, controller, inspector, open_model, resnet18_file
):
    doc = open_model(resnet18_file, arch=RESNET18)
    controller.select("fc")
    assert inspector.pathLabel.text() == "fc"
    assert inspector.typeLabel.text().startswith("Linear")
    assert "in_features=512, out_features=1000" in inspector.reprView.toPlainText()
    assert inspector.paramTable.rowCount() == 2
    assert [cell(inspector, r, "Name") for r in range(2)] == ["weight", "bias"]
    assert cell(inspector, 0, "Shape") == "[1000, 512]"
    assert cell(inspector, 0, "Dtype") == "float32"
    assert cell(inspector, 0, "Trainable") == "yes"
    weight = doc.model.fc.weight
    assert float(cell(inspector, 0, "Mean")) == pytest.approx(weight.mean().item(), rel=1e-3, abs=1e-6)
    assert float(cell(inspector, 0, "Std")) == pytest.approx(weight.std().item(), rel=1e-3)


def test_histogram_of_the_selected_weight_counts_every_value(
    qtbot, controller, inspector, open_model, resnet18_file
):
    open_model(resnet18_file, arch=RESNET18)
    controller.select("layer1.0.conv1")
    assert inspector.histogram_name == "weight"
    edges, counts = inspector.histogram_data
    assert len(edges) == len(counts) + 1
    assert sum(counts) == 64 * 64 * 3 * 3
    _x, y = inspector.curve.getData()
    assert list(y) == counts  # what is drawn is the histogram
    controller.select("fc")
    inspector.select_parameter("bias")
    assert inspector.histogram_name == "bias"
    assert sum(inspector.histogram_data[1]) == 1000


def test_large_tensors_get_their_statistics_off_the_ui_thread(
    qtbot,
    monkeypatch,
    controller,
    inspector,
    open_model,
    resnet18_file,
):
    open_model(resnet18_file, arch=RESNET18)
    monkeypatch.setattr(inspector_module, "INLINE_LIMIT", 1000)
    with qtbot.waitSignal(inspector.statsReady, timeout=10_000):
        controller.select("fc")
        assert cell(inspector, 0, "Mean") == "…"  # shown at once, filled in later
    assert cell(inspector, 0, "Mean") not in ("…", "—")
    assert sum(inspector.histogram_data[1]) == 512_000


def test_an_edit_refreshes_the_shown_module(qtbot, controller, inspector, open_model, resnet18_file, traced):
    from headstudio.core.edits import FreezeBackbone

    open_model(resnet18_file, arch=RESNET18)
    controller.select("layer4")
    with traced(controller):
        controller.push_edit(FreezeBackbone())
    assert {cell(inspector, r, "Trainable") for r in range(inspector.paramTable.rowCount())} == {"no"}


def test_meta_weights_show_dashes_not_numbers():
    import torch

    meta = torch.empty(10, 4, device="meta")
    assert all(v != v for v in tensor_stats(meta))  # NaN -> shown as "—"
    assert tensor_histogram(meta) is None
    stats = tensor_stats(torch.arange(4.0))
    assert stats == pytest.approx((1.5, torch.arange(4.0).std().item()))


def test_a_module_over_the_automatic_limit_gets_statistics_only_when_asked(
    qtbot, monkeypatch, controller, inspector, open_model, resnet18_file
):
    doc = open_model(resnet18_file, arch=RESNET18)
    monkeypatch.setattr(inspector_module, "AUTO_STATS_LIMIT", 1_000_000)
    controller.select("layer4")
    values = sum(p.numel() for p in doc.model.layer4.parameters())
    assert not inspector.computeStats.isHidden()
    assert f"{values:,} values" in inspector.computeStats.text()
    rows = range(inspector.paramTable.rowCount())
    assert {cell(inspector, r, "Mean") for r in rows} == {""}  # nothing read from the weights yet
    inspector.computeStats.click()
    qtbot.waitUntil(lambda: all(cell(inspector, r, "Std") not in ("", "…") for r in rows), timeout=30_000)
    weight = doc.model.layer4[0].conv1.weight
    assert float(cell(inspector, 0, "Mean")) == pytest.approx(weight.mean().item(), rel=1e-3, abs=1e-6)
    assert inspector.computeStats.isHidden()


def test_selecting_a_module_while_shapes_are_traced_shows_real_weights_afterwards(
    qtbot, controller, inspector, open_model, resnet18_file
):
    import threading

    doc = open_model(resnet18_file, arch=RESNET18)
    inside, release = threading.Event(), threading.Event()

    def hold(_module, _inputs):  # mid-trace: fake tensors are swapped into the live modules now
        inside.set()
        release.wait(30)

    handle = doc.model.layer1.register_forward_pre_hook(hold)
    controller.set_input_shape((1, 3, 64, 64))
    assert inside.wait(30)
    controller.select("fc")  # the user clicks a row mid-trace
    release.set()
    handle.remove()
    qtbot.waitUntil(lambda: not controller.busy and inspector.pathLabel.text() == "fc", timeout=30_000)
    weight = doc.model.fc.weight
    qtbot.waitUntil(lambda: cell(inspector, 0, "Mean") not in ("…", "—", ""), timeout=10_000)
    assert float(cell(inspector, 0, "Mean")) == pytest.approx(weight.mean().item(), rel=1e-3, abs=1e-6)
