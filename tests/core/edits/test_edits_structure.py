"""CutAfter, AddHead, SetTrainable, FreezeBackbone: structure, trainable counts, BatchNorm choice, revert."""

from __future__ import annotations

import pytest
import torch
from edit_fixtures import assert_restored, opened, snapshot
from torch import nn

from headstudio.core import edits as E
from headstudio.core.errors import EditError
from headstudio.core.model.document import Document


def trainable(doc: Document) -> int:
    return doc.param_counts()[1]


def test_freeze_backbone_after_replace_head_trains_only_the_new_head() -> None:
    doc = opened("torchvision:resnet18")
    doc.apply(E.ReplaceHead("fc", 7))
    p = E.FreezeBackbone().preview(doc)
    assert (
        p.ok and p.trainable_after == 3591 and p.output_after == [1, 7] and trainable(doc) == p.params_after
    )
    doc.apply(E.FreezeBackbone())
    assert trainable(doc) == 3591  # 512 * 7 + 7
    assert all(p.requires_grad == n.startswith("fc.") for n, p in doc.model.named_parameters())


def test_freeze_backbone_keeps_a_whole_mlp_head_trainable() -> None:
    doc = opened("torchvision:mobilenet_v3_small", materialize=False)
    doc.apply(E.ReplaceHead("classifier.3", 4, hidden=(64,)))
    doc.apply(E.FreezeBackbone())
    assert trainable(doc) == (1024 * 64 + 64) + (64 * 4 + 4)


def test_freeze_backbone_includes_heads_added_earlier_in_the_recipe() -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    doc.apply(E.AddHead("age", 5, at="fc", adapter=32))
    edit = E.FreezeBackbone()
    doc.apply(edit)
    assert trainable(doc) == (512 * 1000 + 1000) + (512 * 32 + 32) + (32 * 5 + 5)
    assert edit.describe() == "Freeze backbone (train fc.heads.fc, fc.heads.age)"


def test_bn_eval_keeps_frozen_running_stats_still_in_train_mode() -> None:
    for bn_eval, should_move in [(True, False), (False, True)]:
        doc = opened("torchvision:resnet18")
        doc.apply(E.FreezeBackbone(bn_eval=bn_eval))
        before = doc.model.bn1.running_mean.clone()
        doc.model.train()
        doc.model(torch.randn(2, 3, 64, 64))
        assert (not torch.equal(before, doc.model.bn1.running_mean)) is should_move


def test_freeze_backbone_reverts_flags_and_hooks_exactly() -> None:
    doc = opened("torchvision:resnet18")
    doc.apply(E.SetTrainable("layer1", False))
    snap = snapshot(doc)
    edit = E.FreezeBackbone(bn_eval=True)
    doc.apply(edit)
    assert len(doc.model.bn1._forward_pre_hooks) == 1
    doc.revert(edit)
    assert_restored(doc, snap)


def test_set_trainable_is_recursive_and_accepts_globs() -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    doc.apply(E.SetTrainable("", False))
    assert trainable(doc) == 0
    doc.apply(E.SetTrainable("layer4", True))
    assert trainable(doc) == sum(p.numel() for p in doc.model.layer4.parameters())
    doc.apply(E.SetTrainable("layer4.*.bn*", False))
    bn = sum(p.numel() for n, p in doc.model.layer4.named_parameters() if ".bn" in n)
    assert trainable(doc) == sum(p.numel() for p in doc.model.layer4.parameters()) - bn
    with pytest.raises(EditError, match="selects no parameters"):
        doc.apply(E.SetTrainable("nothing*", True))


def test_set_trainable_bn_eval_applies_to_frozen_subtree_only() -> None:
    doc = opened("torchvision:resnet18")
    doc.apply(E.SetTrainable("layer1", False, bn_eval=True))
    assert len(doc.model.layer1[0].bn1._forward_pre_hooks) == 1
    assert len(doc.model.bn1._forward_pre_hooks) == 0


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


def test_add_head_returns_named_outputs_and_active_selects_one() -> None:
    doc = opened("torchvision:resnet18")
    snap = snapshot(doc)
    edit = E.AddHead("age", 5, at="fc")
    assert edit.preview(doc).output_after == {"fc": [1, 1000], "age": [1, 5]}
    doc.apply(edit)
    out = doc.model(torch.randn(1, 3, 64, 64))
    assert set(out) == {"fc", "age"} and out["age"].shape == (1, 5)
    doc.model.fc.active = "age"
    assert doc.model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert doc.model.fc.heads["fc"] is snap.modules["fc"]  # the old head is kept, weights and all
    doc.revert(edit)
    assert_restored(doc, snap)


def test_second_add_head_joins_the_first_and_reverts_in_order() -> None:
    doc = opened("timm:convnext_atto", materialize=False)
    first, second = E.AddHead("a", 2, at="head.fc"), E.AddHead("b", 3, at="head.fc", adapter=16)
    doc.apply(first)
    doc.apply(second)
    assert doc.trace().output == {"fc": [1, 1000], "a": [1, 2], "b": [1, 3]}
    assert isinstance(doc.model.head.fc.heads["b"], nn.Sequential)
    doc.revert(second)
    assert doc.trace().output == {"fc": [1, 1000], "a": [1, 2]}
    doc.revert(first)
    assert doc.trace().output == [1, 1000]


@pytest.mark.parametrize(
    "edit, words",
    [
        (E.AddHead("age", 0, at="fc"), "num_classes 0"),
        (E.AddHead("age", 5, at="fc", adapter=0), "adapter 0 cannot size"),
        (E.AddHead("age", 5, at="nope"), "no head 'nope'"),
        (E.AddHead("fc", 5, at="fc"), "already exists"),
        (E.AddHead("not a name", 5, at="fc"), "identifier"),
    ],
)
def test_bad_add_head_is_refused_with_model_untouched(edit: E.Edit, words: str) -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    snap = snapshot(doc)
    with pytest.raises(EditError, match=words):
        doc.apply(edit)
    assert_restored(doc, snap)


def test_add_head_where_later_layers_need_one_tensor_says_so() -> None:
    doc = opened("torchvision:squeezenet1_1", materialize=False)
    with pytest.raises(EditError, match="cannot take several outputs"):
        doc.apply(E.AddHead("aux", 3, at="classifier.1"))
    assert doc.trace().output == [1, 1000]


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
    from headstudio.core.model.document import Document, Origin

    doc = Document(_Branchy(), Origin("branchy", "module", "branchy"), (1, 8))
    snap = snapshot(doc)
    p = E.CutAfter("body").preview(doc)
    assert not p.ok and "torch.fx cannot trace this model" in p.problems[0]
    with pytest.raises(EditError, match="cannot cut after 'body'"):
        doc.apply(E.CutAfter("body"))
    assert_restored(doc, snap)


def test_freeze_backbone_with_named_heads_and_a_wrong_name() -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    doc.apply(E.FreezeBackbone(heads=["layer4", "fc"]))
    assert trainable(doc) == sum(
        p.numel() for p in [*doc.model.layer4.parameters(), *doc.model.fc.parameters()]
    )
    with pytest.raises(EditError, match="no head 'head9'"):
        doc.apply(E.FreezeBackbone(heads=["head9"]))


def test_preview_after_a_cut_works_on_the_cut_model() -> None:
    doc = opened("torchvision:resnet18")
    doc.apply(E.CutAfter("layer4"))
    p = E.SetTrainable("layer4", False).preview(doc)
    assert p.ok and p.output_after == [1, 512, 7, 7]
    assert p.trainable_before - p.trainable_after == sum(x.numel() for x in doc.model.layer4.parameters())
    assert doc.param_counts()[1] == p.trainable_before
