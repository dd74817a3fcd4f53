"""ReplaceHead and RemoveHead: sized from the live trace, previewed untouched, reverted exactly."""

from __future__ import annotations

import pytest
import torch
from edit_fixtures import assert_restored, opened, snapshot
from torch import nn

from headstudio.core import edits as E
from headstudio.core.errors import EditError


def test_replace_head_on_resnet18_sizes_from_trace_and_reverts_bit_exact() -> None:
    doc = opened("torchvision:resnet18")
    snap = snapshot(doc)
    edit = E.ReplaceHead("fc", 10)
    doc.apply(edit)
    assert isinstance(doc.model.fc, nn.Linear) and doc.model.fc.in_features == 512
    assert doc.trace().output == [1, 10]
    assert edit.describe() == "Replace head fc: 1000 → 10 classes"
    assert doc.edits == [edit]
    doc.revert(edit)
    assert doc.edits == []
    assert_restored(doc, snap)
    assert doc.trace().output == [1, 1000]


def test_replace_head_on_squeezenet_keeps_conv_kind() -> None:
    doc = opened("torchvision:squeezenet1_1")
    old = doc.model.classifier[1]
    doc.apply(E.ReplaceHead("classifier.1", 10))
    new = doc.model.classifier[1]
    assert type(new) is nn.Conv2d and new.in_channels == 512 and new.out_channels == 10
    assert new.kernel_size == old.kernel_size and new.stride == old.stride
    assert doc.model.num_classes == 10  # torchvision's describing attribute follows
    assert doc.trace().output == [1, 10]


def test_replace_head_on_vit_and_mobilenet_uses_traced_features() -> None:
    vit = opened("torchvision:vit_b_16", materialize=False)
    vit.apply(E.ReplaceHead("heads.head", 5))
    assert vit.model.heads.head.in_features == 768 and vit.trace().output == [1, 5]
    mobile = opened("torchvision:mobilenet_v3_small", materialize=False)
    mobile.apply(E.ReplaceHead("classifier.3", 4, hidden=(64,), dropout=0.2, activation="gelu"))
    head = mobile.model.classifier[3]
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Dropout", "Linear", "GELU", "Dropout", "Linear"]
    assert head[1].in_features == 1024 and head[4].out_features == 4
    assert mobile.trace().output == [1, 4]


def test_twin_heads_averaged_into_one_output_change_in_step() -> None:
    doc = opened("timm:deit_tiny_distilled_patch16_224", materialize=False)  # (head + head_dist) / 2
    before = snapshot(doc)
    edit = E.ReplaceHead("head", 5)
    doc.apply(edit)
    assert doc.model.head.out_features == doc.model.head_dist.out_features == 5
    assert doc.trace().output == [1, 5]
    with pytest.raises(EditError, match="changes in step with head_dist"):
        doc.apply(E.ReplaceHead("head", 7, hidden=(64,)))
    doc.revert(edit)
    assert_restored(doc, before)


def test_new_head_on_a_meta_model_has_real_cpu_weights() -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    assert doc.model.conv1.weight.is_meta
    doc.apply(E.ReplaceHead("fc", 3, hidden=(16,)))
    for p in doc.model.fc.parameters():
        assert p.device.type == "cpu" and not p.is_meta and torch.isfinite(p).all()


def test_seed_makes_the_new_head_reproducible() -> None:
    heads = []
    for _ in range(2):
        doc = opened("torchvision:resnet18", materialize=False)
        doc.apply(E.ReplaceHead("fc", 10, hidden=(32,), seed=123))
        heads.append(doc.model.fc.state_dict())
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    unseeded = opened("torchvision:resnet18", materialize=False)
    unseeded.apply(E.ReplaceHead("fc", 10, hidden=(32,), seed=7))
    assert not torch.equal(unseeded.model.fc[0].weight, heads[0]["0.weight"])


@pytest.mark.parametrize(
    "keep, rows", [(10, list(range(10))), ([5, 2, 900], [5, 2, 900]), ("0-2,7", [0, 1, 2, 7])]
)
def test_keep_classes_copies_trained_rows(keep: object, rows: list[int]) -> None:
    doc = opened("torchvision:resnet18")
    old = doc.model.fc
    doc.apply(E.ReplaceHead("fc", 10, keep_classes=keep))
    new = doc.model.fc
    assert torch.equal(new.weight[: len(rows)], old.weight[rows])
    assert torch.equal(new.bias[: len(rows)], old.bias[rows])


def test_replacing_a_timm_head_block_points_to_its_classifier() -> None:
    doc = opened("timm:convnext_atto", materialize=False)
    edit = E.ReplaceHead("head", 10)
    p = edit.preview(doc)
    assert not p.ok and "head.fc" in p.problems[0] and "head block" in p.problems[0]
    with pytest.raises(EditError, match=r"head\.fc"):
        doc.apply(edit)
    assert doc.edits == []


def test_replace_head_on_timm_keeps_num_classes_consistent() -> None:
    doc = opened("timm:convnext_atto")
    snap = snapshot(doc)
    edit = E.ReplaceHead("head.fc", 12)
    doc.apply(edit)
    assert doc.model.num_classes == 12 and doc.model.get_classifier().out_features == 12
    assert doc.trace().output == [1, 12]
    doc.revert(edit)
    assert doc.model.num_classes == 1000
    assert_restored(doc, snap)


def test_remove_head_leaves_a_feature_extractor() -> None:
    for spec, path, features in [
        ("torchvision:resnet18", "fc", 512),
        ("torchvision:squeezenet1_1", "classifier.1", 512),
    ]:
        doc = opened(spec, materialize=False)
        edit = E.RemoveHead(path)
        assert edit.preview(doc).output_after == [1, features]
        doc.apply(edit)
        assert isinstance(doc.model.get_submodule(path), nn.Identity)
        assert doc.trace().output == [1, features]


def test_remove_head_on_timm_sets_num_classes_to_zero_and_reverts() -> None:
    doc = opened("timm:convnext_atto")
    snap = snapshot(doc)
    edit = E.RemoveHead("head.fc")
    doc.apply(edit)
    assert doc.model.num_classes == 0 and doc.trace().output == [1, 320]
    doc.revert(edit)
    assert_restored(doc, snap)


def test_replacing_a_whole_mlp_head_warns_that_hidden_layers_go() -> None:
    doc = opened("torchvision:mobilenet_v3_small", materialize=False)
    p = E.ReplaceHead("classifier", 5).preview(doc)
    assert p.ok and p.output_after == [1, 5]
    assert "whole block 'classifier' (Linear, Hardswish, Dropout, Linear)" in p.warnings[0]


class _Classifier(nn.Module):
    """A wrapper describing its head with ``out_features`` (as many hand-written heads do)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 10)
        self.out_features = 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.classifier = _Classifier()
        self.num_classes = 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def test_replace_head_keeps_wrapper_out_features_and_num_classes_in_step() -> None:
    from headstudio.core.model.document import Document, Origin

    doc = Document(_Net(), Origin("net", "module", "net"), (1, 4))
    edit = E.ReplaceHead("classifier.proj", 3)
    doc.apply(edit)
    assert doc.model.classifier.out_features == 3 and doc.model.num_classes == 3
    doc.revert(edit)
    assert doc.model.classifier.out_features == 10 and doc.model.num_classes == 10
