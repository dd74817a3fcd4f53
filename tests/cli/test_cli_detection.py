"""``headstudio edit`` on a detector's bare weights: one command replaces its class head as the field does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

FRCNN = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(scope="module")
def frcnn_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torchvision's Faster R-CNN (random init) saved as a bare state_dict, as its reference scripts do."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(FRCNN, weights=None, weights_backbone=None)
    path = tmp_path_factory.mktemp("det") / "frcnn.pth"
    torch.save(model.state_dict(), path)
    return path


def test_replace_head_on_faster_rcnn_weights_loads_into_torchvision(cli, frcnn_pth, tmp_path):
    out = tmp_path / "out.pt"
    arch = f"torchvision:{FRCNN}"
    result = cli("edit", frcnn_pth, "--arch", arch, "--replace-head", "3", "--keep-classes", "1-2", "-o", out)
    assert result.status == 0, result.err
    assert "roi_heads.box_predictor.cls_score: 90 → 3 classes + background, 1 paired layer" in result.out
    assert "    roi_heads.box_predictor.bbox_pred: [" in result.out and ", 364] → [" in result.out
    model = torchvision.models.get_model(FRCNN, weights=None, weights_backbone=None, num_classes=4)
    model.load_state_dict(torch.load(out, weights_only=True))
    old = torch.load(frcnn_pth, weights_only=True)["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(model.roi_heads.box_predictor.cls_score.weight[:3], old[:3])  # background, 1, 2 kept
    with torch.no_grad():
        (found,) = model.eval()([torch.rand(3, 96, 96)])
    assert set(found) == {"boxes", "labels", "scores"}


def test_replacing_the_rpn_objectness_is_a_one_line_error_and_writes_nothing(cli, frcnn_pth, tmp_path):
    out = tmp_path / "bad.pt"
    result = cli("edit", frcnn_pth, "--arch", f"torchvision:{FRCNN}", "--head", "rpn.head.cls_logits",
                 "--replace-head", "3", "-o", out)  # fmt: skip
    assert result.status != 0 and not out.exists()
    (line,) = result.err.strip().splitlines()
    assert "objectness" in line and "roi_heads.box_predictor.cls_score" in line


def test_inspect_json_reports_each_heads_role_and_the_rule_that_decided(cli):
    spec = "torchvision:retinanet_resnet50_fpn(min_size=64, max_size=64)"
    (record,) = cli("inspect", spec, "--input-shape", "1,3,64,64", "--json", "--depth", "1").records
    assert record["head"]["path"] == "head.classification_head.cls_logits"
    assert [(h["role"], h["rule"]) for h in record["heads"]] == [
        ("class logits", "anchor channels (9 anchors x 91 classes)"),
        ("box regression", "anchor channels (9 anchors x 4)"),
    ]
