"""Head roles of detection, segmentation and video models: the class head is primary, found by function."""

from __future__ import annotations

import pytest
import torch
from dense_models import AUX, PRIMARY, RCNN, RETINA, dense_doc, one_thread
from torch import nn

from headstudio.core.model.document import Document, Origin


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.mark.parametrize("name", [*PRIMARY, *AUX])
def test_every_torchvision_dense_model_has_its_class_head_first(name: str) -> None:
    doc = dense_doc(name)
    assert doc.trace().error is None
    head = doc.head
    assert head.path == PRIMARY[name.split("(")[0]]
    assert head.role == "class logits" and head.rule
    assert doc.tree().find(head.path).head_rank == 0


def roles(doc: Document) -> dict[str, tuple[str | None, str | None]]:
    return {h.path: (h.role, h.rule) for h in doc.heads()}


def test_faster_rcnn_rpn_objectness_is_not_the_class_head() -> None:
    found = roles(dense_doc("fasterrcnn_mobilenet_v3_large_320_fpn"))
    assert found[RCNN] == ("class logits", "per-class boxes (364 = 4 x 91)")
    assert found["roi_heads.box_predictor.bbox_pred"][0] == "box regression"
    assert found["rpn.head.cls_logits"] == ("objectness", "anchor channels (15 anchors x 1)")
    assert found["rpn.head.bbox_pred"] == ("box regression", "anchor channels (15 anchors x 4)")
    assert list(found)[-1] == "rpn.head.cls_logits"  # objectness ranks after the class and box heads


def test_one_stage_detectors_read_classes_from_anchor_channels() -> None:
    retina = roles(dense_doc("retinanet_resnet50_fpn"))
    assert retina[RETINA] == ("class logits", "anchor channels (9 anchors x 91 classes)")
    assert retina["head.regression_head.bbox_reg"][0] == "box regression"
    fcos = roles(dense_doc("fcos_resnet50_fpn"))
    assert fcos["head.regression_head.bbox_ctrness"] == ("objectness", "anchor channels (1 anchor x 1)")
    ssd = roles(dense_doc("ssd300_vgg16"))
    levels = [p for p, (role, _) in ssd.items() if role == "class logits"]
    assert levels == [f"head.classification_head.module_list.{i}" for i in range(6)]
    assert ssd["head.classification_head.module_list.0"][1] == "anchor channels (4 anchors x 91 classes)"
    assert all(role == "box regression" for p, (role, _) in ssd.items() if "regression" in p)


def test_mask_keypoint_and_auxiliary_heads_have_their_roles() -> None:
    mask = roles(dense_doc("maskrcnn_resnet50_fpn"))
    assert mask["roi_heads.mask_predictor.mask_fcn_logits"] == ("mask logits", "output key 'masks'")
    keypoints = roles(dense_doc("keypointrcnn_resnet50_fpn"))
    # its heatmaps leave through non-torch code, so only torchvision's family knowledge names it
    kps = keypoints["roi_heads.keypoint_predictor.kps_score_lowres"]
    assert kps == ("keypoint logits", "torchvision KeypointRCNNPredictor")
    seg = roles(dense_doc("deeplabv3_resnet50(aux_loss=True)"))
    assert seg == {
        "classifier.4": ("class logits", "main output"),
        "aux_classifier.4": ("auxiliary", "output key 'aux'"),
    }


def test_summary_json_says_every_heads_role_and_rule() -> None:
    summary = dense_doc("fasterrcnn_mobilenet_v3_large_320_fpn").summary()
    assert summary["head"]["path"] == RCNN and summary["head"]["role"] == "class logits"
    assert {h["role"] for h in summary["heads"]} == {"class logits", "box regression", "objectness"}
    assert all(h["rule"] for h in summary["heads"])


class TinyDetector(nn.Module):
    """A home-made detector: names say nothing, the outputs and channel counts say it all."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.p = nn.Conv2d(8, 3 * 5, 1)  # 3 anchors x 5 classes
        self.q = nn.Conv2d(8, 3 * 4, 1)  # 3 anchors x 4 box deltas
        self.r = nn.Conv2d(8, 3, 1)  # 3 anchors x 1 (objectness)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.body(x).relu()
        scores = self.p(f).flatten(2).sigmoid() * self.r(f).flatten(2).sigmoid().repeat(1, 5, 1)
        return {"boxes": self.q(f).flatten(2), "scores": scores}


def test_roles_come_from_function_whatever_the_layers_are_called() -> None:
    doc = Document(TinyDetector().eval(), Origin("tiny", "module", "TinyDetector"), (1, 3, 16, 16))
    found = roles(doc)
    assert doc.head.path == "p"
    assert found == {
        "p": ("class logits", "anchor channels (3 anchors x 5 classes)"),
        "q": ("box regression", "anchor channels (3 anchors x 4)"),
        "r": ("objectness", "anchor channels (3 anchors x 1)"),
    }


def test_detector_tree_shows_image_batch_fpn_levels_and_roi_shapes() -> None:
    tree = dense_doc("fasterrcnn_mobilenet_v3_large_320_fpn").tree()
    assert tree.find("transform").output_shape[0] == [1, 3, 64, 64]  # the ImageList's batch
    inner = tree.find("backbone.fpn.inner_blocks")  # a ModuleList: only its members are called
    assert inner.called and inner.output_shape == tree.find("backbone.fpn.inner_blocks.1").output_shape
    rois = tree.find("roi_heads.box_head").output_shape
    assert rois[1] == 1024 and tree.find(RCNN).output_shape == [rois[0], 91]
