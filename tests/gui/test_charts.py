"""The params-per-block chart: stacked trainable / frozen bars named by block, following edits."""

from __future__ import annotations

import pytest

from headstudio.gui.charts import ParamsChart, short_count

RESNET18 = "torchvision:resnet18"


@pytest.fixture
def chart(qtbot, controller):
    widget = ParamsChart(controller)
    qtbot.addWidget(widget)
    widget.show()
    return widget


def bars(chart: ParamsChart) -> dict[str, tuple[float, float, float]]:
    """name -> (trainable height, frozen bottom, frozen height) as drawn."""
    t, f = chart.trainableBars.opts, chart.frozenBars.opts
    names = [label for _, label in chart.plot.getAxis("bottom")._tickLevels[0]]
    return {n: (t["height"][i], f["y0"][i], f["height"][i]) for i, n in enumerate(names)}


def test_resnet18_blocks_are_named_on_the_x_axis_with_their_parameters(chart, open_model, resnet18_file):
    open_model(resnet18_file, arch=RESNET18)
    drawn = bars(chart)
    assert list(drawn) == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]  # no empty relu/pool
    assert drawn["fc"] == (513_000, 513_000, 0)
    assert sum(t + f for t, _, f in drawn.values()) == 11_689_512
    assert "trainable 11.7M" in chart.legend.text()


def test_freezing_the_backbone_stacks_frozen_on_top_of_trainable(
    qtbot, controller, chart, open_model, resnet18_file, traced
):
    from headstudio.core.edits import FreezeBackbone

    open_model(resnet18_file, arch=RESNET18)
    with traced(controller):
        controller.push_edit(FreezeBackbone())
    drawn = bars(chart)
    assert drawn["layer4"] == (0, 0, 8_393_728)
    assert drawn["fc"] == (513_000, 513_000, 0)
    assert "frozen 11.2M" in chart.legend.text()
    with traced(controller):
        controller.undo_stack.undo()
    assert bars(chart)["layer4"] == (8_393_728, 8_393_728, 0)


def test_counts_read_like_people_write_them():
    assert short_count(11_689_512) == "11.7M"
    assert short_count(513_000) == "513k"
    assert short_count(900) == "900"
    assert short_count(2.5e9) == "2.5G"


def test_each_bar_carries_its_count_so_small_blocks_stay_readable(
    qtbot, controller, chart, open_model, resnet18_file, traced
):
    from headstudio.core.edits import FreezeBackbone

    open_model(resnet18_file, arch=RESNET18)
    assert [t.toPlainText() for t in chart.totals][-2:] == ["8.39M", "513k"]
    with traced(controller):
        controller.push_edit(FreezeBackbone(heads=["layer4.1"]))
    labels = dict(zip([b.name for b in chart.blocks], [t.toPlainText() for t in chart.totals], strict=True))
    assert labels["layer4"] == "4.72M/8.39M"  # partly frozen: trainable / total


def test_a_dark_palette_restyles_the_chart(chart):
    from PySide6.QtGui import QColor, QPalette

    dark = QPalette(chart.palette())
    dark.setColor(QPalette.ColorRole.Window, QColor("#202020"))
    dark.setColor(QPalette.ColorRole.Base, QColor("#1a1a1a"))
    dark.setColor(QPalette.ColorRole.Text, QColor("#eeeeee"))
    chart.setPalette(dark)
    assert chart.plot.backgroundBrush().color() == QColor("#1a1a1a")
    assert chart.plot.getAxis("bottom").textPen().color() == QColor("#eeeeee")
