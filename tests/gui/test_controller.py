"""The controller owns the background work, and nothing the user does waits for it."""

from __future__ import annotations

import threading
import time

from headstudio.core.edits import ReplaceHead

RESNET18 = "torchvision:resnet18"


def test_an_edit_during_a_trace_applies_at_once_and_the_stale_trace_is_dropped(
    qtbot, controller, open_model, resnet18_file, traced
):
    doc = open_model(resnet18_file, arch=RESNET18)
    inside, release = threading.Event(), threading.Event()

    def hold(_module, _inputs):  # keeps the background trace (of a copy) in the middle of its forward
        inside.set()
        release.wait(30)

    handle = doc.model.layer1.register_forward_pre_hook(hold)
    controller.set_input_shape((1, 3, 64, 64))
    assert inside.wait(30)
    handle.remove()  # copies made from now on trace freely
    started = time.perf_counter()
    assert controller.push_edit(ReplaceHead("fc", 10))  # mid-trace: no wait for the trace to end
    assert time.perf_counter() - started < 10
    assert doc.model.fc.out_features == 10 and type(doc.model.fc.weight).__name__ == "Parameter"
    with traced(controller):
        release.set()
    qtbot.waitUntil(lambda: controller.traced, timeout=30_000)
    assert controller.tree.find("fc").output_shape == [1, 10]  # the trace begun before the edit is gone
    assert controller.tree.find("layer1").output_shape == [1, 64, 16, 16]
