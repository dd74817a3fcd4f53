"""Paired head edits on detectors and segmenters: every layer carrying the class count changes in step."""

from __future__ import annotations

import pytest
import torch
import torchvision
from dense_models import AUX, PRIMARY, RCNN, RETINA, base_name, dense_doc, one_thread, spec_of
from edit_fixtures import assert_restored, snapshot

from headstudio.core import edits as E
from headstudio.core.codegen import snippet_for
from headstudio.core.errors import EditError
from headstudio.core.opening.sources import open_source
from headstudio.core.opening.specs import build_model
from headstudio.core.saving.atomic import save

FRCNN = "fasterrcnn_mobilenet_v3_large_320_fpn"
WITH_BACKGROUND = ("rcnn", "ssd")  # torchvision counts a background class in these families


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", [*PRIMARY, *AUX])
def test_replace_to_three_classes_matches_torchvision_built_for_them(name: str) -> None:
    doc = dense_doc(name)
    before = shapes(doc.model)
    edit = E.ReplaceHead(doc.head.path, 3, seed=0)
    doc.apply(edit)
    try:
        assert doc.trace().error is None  # the edited model runs
        count = 4 if any(f in name for f in WITH_BACKGROUND) else 3
        builder = build_model(spec_of(name, f"num_classes={count}"))
        assert shapes(doc.model) == shapes(builder)  # paired layers sized as the library sizes them
        assert doc.head.path == PRIMARY[base_name(name)]
    finally:
        doc.revert(edit)
    assert shapes(doc.model) == before


def test_faster_rcnn_predictor_follows_torchvisions_tutorial_idiom() -> None:
    doc = dense_doc(FRCNN)
    edit = E.ReplaceHead("roi_heads.box_predictor", 3)  # the predictor itself: its class head is meant
    doc.apply(edit)
    try:
        predictor = doc.model.roi_heads.box_predictor
        assert (predictor.cls_score.in_features, predictor.cls_score.out_features) == (1024, 4)
        assert predictor.bbox_pred.out_features == 16  # 4 x (3 classes + background)
        assert doc.model.rpn.head.cls_logits.out_channels == 15  # the RPN's objectness stays
        assert edit.describe() == (
            "Replace head roi_heads.box_predictor: 90 → 3 classes + background, 1 paired layer in step"
        )
        assert edit.changed_paths() == [RCNN, "roi_heads.box_predictor.bbox_pred"]
    finally:
        doc.revert(edit)


def test_one_stage_heads_are_sized_anchors_times_classes_and_counts_follow() -> None:
    retina = dense_doc("retinanet_resnet50_fpn")
    edit = E.ReplaceHead(RETINA, 3)
    retina.apply(edit)
    try:
        head = retina.model.head.classification_head
        assert head.cls_logits.out_channels == 9 * 3 and head.num_classes == 3
        assert torch.allclose(head.cls_logits.bias, torch.tensor(-4.59511985013459))  # prior 0.01
    finally:
        retina.revert(edit)
    assert retina.model.head.classification_head.num_classes == 91
    ssd = dense_doc("ssdlite320_mobilenet_v3_large")
    edit = E.ReplaceHead("head.classification_head", 3)
    ssd.apply(edit)
    try:
        head = ssd.model.head.classification_head
        assert head.num_columns == 4 and [lvl[1].out_channels for lvl in head.module_list] == [24] * 6
    finally:
        ssd.revert(edit)


def test_keypoint_head_changes_the_keypoint_count_only() -> None:
    doc = dense_doc("keypointrcnn_resnet50_fpn")
    edit = E.ReplaceHead("roi_heads.keypoint_predictor", 5)
    doc.apply(edit)
    try:
        predictor = doc.model.roi_heads.keypoint_predictor
        assert predictor.kps_score_lowres.out_channels == 5 and predictor.out_channels == 5
        assert doc.model.roi_heads.box_predictor.cls_score.out_features == 2
        built = build_model(spec_of("keypointrcnn_resnet50_fpn", "num_keypoints=5"))
        assert shapes(doc.model) == shapes(built)
        assert "17 → 5 keypoints" in edit.describe()
    finally:
        doc.revert(edit)


def test_box_and_objectness_heads_are_refused_with_the_class_head_named() -> None:
    doc = dense_doc(FRCNN)
    for path in ("rpn.head.cls_logits", "roi_heads.box_predictor.bbox_pred"):
        with pytest.raises(EditError, match=f"not a class head; replace the class head '{RCNN}'"):
            E.ReplaceHead(path, 3).validate(doc)
    with pytest.raises(EditError, match="single layer"):
        E.ReplaceHead(RCNN, 3, hidden=(64,)).validate(doc)
    with pytest.raises(EditError, match="background and is always kept"):
        E.ReplaceHead(RCNN, 3, keep_classes=[0, 1]).validate(doc)


def test_segmentation_main_and_auxiliary_classifiers_change_together_in_the_preview() -> None:
    doc = dense_doc("deeplabv3_resnet50(aux_loss=True)")
    preview = E.ReplaceHead("classifier", 3).preview(doc)
    assert preview.ok
    assert [(p, after[:2]) for p, _, after in preview.layers] == [
        ("classifier.4", [1, 3]),
        ("aux_classifier.4", [1, 3]),
    ]
    assert preview.output_after == {"out": [1, 3, 64, 64], "aux": [1, 3, 64, 64]}


def test_kept_classes_keep_the_background_and_each_anchors_rows() -> None:
    doc = dense_doc("ssdlite320_mobilenet_v3_large", materialize=True)
    old = doc.model.head.classification_head.module_list[0][1]
    snap = snapshot(doc)
    edit = E.ReplaceHead(doc.head.path, 3, keep_classes="5,7")
    doc.apply(edit)
    new = doc.model.head.classification_head.module_list[0][1]
    for anchor in range(6):  # channel = anchor x classes + class; class 0 is the background
        for new_class, old_class in enumerate([0, 5, 7]):
            assert torch.equal(new.weight[anchor * 4 + new_class], old.weight[anchor * 91 + old_class])
            assert torch.equal(new.bias[anchor * 4 + new_class], old.bias[anchor * 91 + old_class])
    doc.revert(edit)
    assert_restored(doc, snap)


def test_exported_code_makes_the_same_model_from_torchvisions_own_builder() -> None:
    doc = dense_doc(FRCNN)
    edit = E.ReplaceHead(RCNN, 3, seed=0)
    doc.apply(edit)
    try:
        code = snippet_for([edit])
        fresh = build_model(spec_of(FRCNN), meta=False)
        exec(code, {"model": fresh})
        assert shapes(fresh) == shapes(doc.model)
        assert "model.roi_heads.box_predictor.bbox_pred = nn.Linear(1024, 16)" in code
    finally:
        doc.revert(edit)


def test_edited_detector_saves_reopens_trains_and_loads_into_torchvision(tmp_path) -> None:
    doc = open_source(spec_of(FRCNN), input_shape=(1, 3, 64, 64), materialize=True)
    doc.apply(E.ReplaceHead(doc.head.path, 3, keep_classes=2, seed=1))
    out = tmp_path / "frcnn3.pt"
    save(doc, out)
    again = open_source(str(out))
    model = again.model
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    image = torch.rand(3, 64, 64)
    with torch.no_grad():
        (found,) = model.eval()([image])
    assert set(found) == {"boxes", "labels", "scores"}
    target = {"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]), "labels": torch.tensor([3])}
    losses = model.train()([image], [target])
    assert {"loss_classifier", "loss_box_reg"} <= set(losses) and all(v.isfinite() for v in losses.values())
    builder = torchvision.models.get_model(FRCNN, weights=None, weights_backbone=None, num_classes=4)
    builder.load_state_dict(torch.load(out, weights_only=True))
    kept = doc.model.roi_heads.box_predictor.cls_score.weight
    assert torch.equal(builder.roi_heads.box_predictor.cls_score.weight, kept)


def test_training_checkpoint_hyper_parameters_count_the_detectors_background(tmp_path) -> None:
    model = torchvision.models.get_model(FRCNN, weights=None, weights_backbone=None)
    source = tmp_path / "frcnn.ckpt"  # a LightningModule holding the detector as ``self.model``
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"num_classes": 91}, "epoch": 3}, source)
    doc = open_source(str(source), arch=spec_of(FRCNN), input_shape=(1, 3, 64, 64))
    doc.apply(E.ReplaceHead(doc.head.path, 3))
    assert doc.edits[0].class_counts() == (91, 4)
    save(doc, tmp_path / "out.ckpt")
    saved = torch.load(tmp_path / "out.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["num_classes"] == 4  # torchvision builds 3 classes + background
    assert saved["state_dict"]["model.roi_heads.box_predictor.cls_score.weight"].shape == (4, 1024)
