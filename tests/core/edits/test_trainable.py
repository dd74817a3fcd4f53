"""SetTrainable and FreezeBackbone: trainable counts, globs, BatchNorm kept in eval, exact revert."""

from __future__ import annotations

import pytest
import torch
from edit_fixtures import assert_restored, opened, snapshot

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


def test_freeze_backbone_with_named_heads_and_a_wrong_name() -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    doc.apply(E.FreezeBackbone(heads=["layer4", "fc"]))
    assert trainable(doc) == sum(
        p.numel() for p in [*doc.model.layer4.parameters(), *doc.model.fc.parameters()]
    )
    with pytest.raises(EditError, match="no head 'head9'"):
        doc.apply(E.FreezeBackbone(heads=["head9"]))
