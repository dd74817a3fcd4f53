"""CutAfter: the model returns a module's output (torch.fx cut), same features, clear refusals, revert."""

from __future__ import annotations

import pytest
import torch
from edit_fixtures import assert_restored, opened, snapshot
from torch import nn

from headstudio.core import edits as E
from headstudio.core.errors import EditError
from headstudio.core.model.document import Document


@pytest.mark.parametrize(
    "spec, path, shape",
    [
        ("torchvision:resnet18", "layer4", [1, 512, 7, 7]),
        ("torchvision:vit_b_16", "encoder", [1, 197, 768]),
        ("torchvision:efficientnet_b0", "avgpool", [1, 1280, 1, 1]),
        ("timm:convnext_atto", "stages.3", [1, 320, 7, 7]),
    ],
)
def test_cut_after_returns_that_modules_output(spec: str, path: str, shape: list[int]) -> None:
    doc = opened(spec, materialize=False)
    head = doc.head.path
    edit = E.CutAfter(path)
    assert edit.preview(doc).output_after == shape
    doc.apply(edit)
    assert doc.trace().output == shape
    assert not any(k.startswith(head + ".") for k in doc.model.state_dict())  # the classifier is gone


def test_cut_after_on_real_weights_computes_the_same_features_and_reverts() -> None:
    doc = opened("torchvision:resnet18")
    snap = snapshot(doc)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = doc.model.layer3(doc.model.layer2(doc.model.layer1(
            doc.model.maxpool(doc.model.relu(doc.model.bn1(doc.model.conv1(x)))))))  # fmt: skip
    edit = E.CutAfter("layer3")
    doc.apply(edit)
    with torch.no_grad():
        assert torch.equal(doc.model(x), expected)
    doc.revert(edit)
    assert_restored(doc, snap)


def test_cut_after_a_module_the_output_does_not_depend_on_is_refused() -> None:
    doc = opened("torchvision:googlenet", materialize=False)  # aux heads only run in training
    snap = snapshot(doc)
    with pytest.raises(EditError, match="not called in the model's forward"):
        doc.apply(E.CutAfter("aux1"))
    assert_restored(doc, snap)


class _Branchy(nn.Module):
    """Control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        if h.sum() > 0:
            h = h * 2
        return self.fc(h)


def test_cut_after_on_an_untraceable_model_is_a_clear_error() -> None:
    from headstudio.core.model.document import Origin

    doc = Document(_Branchy(), Origin("branchy", "module", "branchy"), (1, 8))
    snap = snapshot(doc)
    p = E.CutAfter("body").preview(doc)
    assert not p.ok and "torch.fx cannot trace this model" in p.problems[0]
    with pytest.raises(EditError, match="cannot cut after 'body'"):
        doc.apply(E.CutAfter("body"))
    assert_restored(doc, snap)


def test_preview_after_a_cut_works_on_the_cut_model() -> None:
    doc = opened("torchvision:resnet18")
    doc.apply(E.CutAfter("layer4"))
    p = E.SetTrainable("layer4", False).preview(doc)
    assert p.ok and p.output_after == [1, 512, 7, 7]
    assert p.trainable_before - p.trainable_after == sum(x.numel() for x in doc.model.layer4.parameters())
    assert doc.param_counts()[1] == p.trainable_before
