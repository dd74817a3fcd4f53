"""The Document traces a structural copy: its live model is only ever changed by edits."""

from __future__ import annotations

import threading

import torch
from torch import nn

from headstudio.core.edits import ReplaceHead
from headstudio.core.model.document import Document, Origin
from headstudio.core.modules import structure_copy


def small_doc() -> Document:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    return Document(model, Origin("tiny", "module", "tiny"), (1, 8))


def test_structure_copy_shares_every_weight_and_copies_every_module():
    doc = small_doc()
    copy = structure_copy(doc.model)
    assert copy is not doc.model and copy[0] is not doc.model[0]
    assert copy[0].weight is doc.model[0].weight  # no weight is copied


def test_live_weights_stay_real_tensors_while_a_trace_runs_on_another_thread():
    doc = small_doc()
    inside, release = threading.Event(), threading.Event()
    seen: list[torch.Tensor] = []

    def hold(_module, _inputs):  # mid-trace: look at what the live model holds now
        inside.set()
        release.wait(10)

    handle = doc.model[2].register_forward_pre_hook(hold)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(doc.compute_trace()))
    worker.start()
    assert inside.wait(10)
    seen.append(doc.model[2].weight)  # what a UI read sees in the middle of the trace
    handle.remove()
    release.set()
    worker.join(10)
    assert type(seen[0]) is nn.Parameter and not seen[0].is_meta
    assert seen[0].sum().item() == doc.model[2].weight.sum().item()
    assert doc.adopt(result[0]) and doc.trace().output == [1, 4]
    assert doc.tree().find("2").output_shape == [1, 4]


def test_a_trace_begun_before_an_edit_is_not_adopted():
    doc = small_doc()
    doc.trace()
    before = doc.compute_trace()
    doc.apply(ReplaceHead("2", 3))
    assert doc.adopt(before) is False  # computed for the model before the edit
    assert doc.trace().output == [1, 3]
    doc.set_input_shape((2, 8))
    assert doc.adopt(before) is False


def test_a_detached_document_keeps_the_model_as_it_was_when_the_user_edits_on():
    doc = small_doc()
    doc.trace()
    twin = doc.detached()
    doc.apply(ReplaceHead("2", 3))
    assert twin.trace().output == [1, 4] and doc.trace().output == [1, 3]
    assert twin.model[0].weight is doc.model[0].weight  # weights shared, never copied
    assert twin.edits == [] and len(doc.edits) == 1
    preview = ReplaceHead("2", 7).preview(twin)
    assert preview.output_before == [1, 4] and preview.output_after == [1, 7]
