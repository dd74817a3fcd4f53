"""Every torchvision detection, segmentation and video model, built small and opened once per process.

Detectors get torchvision's own size knobs (``min_size``, proposal counts) so a real forward on a 64 px
image stays cheap; video models get short, small clips. Documents are cached: tests that edit one
revert it (exactly), so the next test sees the model as built.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torchvision

from headstudio.core.model.document import Document
from headstudio.core.opening.sources import open_source

IMAGE = (1, 3, 64, 64)
RCNN_KNOBS = (
    "min_size=64, max_size=64, rpn_pre_nms_top_n_test=10, rpn_post_nms_top_n_test=10, "
    "box_detections_per_img=5"
)
ONE_STAGE_KNOBS = "min_size=64, max_size=64, topk_candidates=20, detections_per_img=5"
SSD_KNOBS = "topk_candidates=20, detections_per_img=5"

# the primary head: the layer a user replaces to fine-tune for new classes
RCNN = "roi_heads.box_predictor.cls_score"
RETINA = "head.classification_head.cls_logits"
PRIMARY = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": RCNN,
    "fasterrcnn_mobilenet_v3_large_fpn": RCNN,
    "fasterrcnn_resnet50_fpn": RCNN,
    "fasterrcnn_resnet50_fpn_v2": RCNN,
    "maskrcnn_resnet50_fpn": RCNN,
    "maskrcnn_resnet50_fpn_v2": RCNN,
    "keypointrcnn_resnet50_fpn": RCNN,
    "retinanet_resnet50_fpn": RETINA,
    "retinanet_resnet50_fpn_v2": RETINA,
    "fcos_resnet50_fpn": RETINA,
    "ssd300_vgg16": "head.classification_head.module_list.0",
    "ssdlite320_mobilenet_v3_large": "head.classification_head.module_list.0.1",
    "deeplabv3_mobilenet_v3_large": "classifier.4",
    "deeplabv3_resnet50": "classifier.4",
    "deeplabv3_resnet101": "classifier.4",
    "fcn_resnet50": "classifier.4",
    "fcn_resnet101": "classifier.4",
    "lraspp_mobilenet_v3_large": "classifier.low_classifier",
    "mc3_18": "fc",
    "r3d_18": "fc",
    "r2plus1d_18": "fc",
    "s3d": "classifier.1",
    "mvit_v1_b": "head.1",
    "mvit_v2_s": "head.1",
    "swin3d_t": "head",
    "swin3d_s": "head",
    "swin3d_b": "head",
}
AUX = ("deeplabv3_resnet50(aux_loss=True)", "fcn_resnet50(aux_loss=True)")
DETECTION = torchvision.models.list_models(module=torchvision.models.detection)
SEGMENTATION = torchvision.models.list_models(module=torchvision.models.segmentation)
VIDEO = torchvision.models.list_models(module=torchvision.models.video)


def base_name(name: str) -> str:
    return name.split("(")[0]


def spec_of(name: str, extra: str = "") -> str:
    """The small-sized spec for a model name (its own arguments, if any, kept)."""
    base, _, args = name.partition("(")
    knobs = [args.rstrip(")")] if args else []
    if base in DETECTION:
        knobs.append(RCNN_KNOBS if "rcnn" in base else SSD_KNOBS if "ssd" in base else ONE_STAGE_KNOBS)
    knobs += [extra] if extra else []
    knobs = [k for k in knobs if k]
    return f"torchvision:{base}" + (f"({', '.join(knobs)})" if knobs else "")


def input_shape_of(name: str) -> tuple[int, ...] | None:
    """A 64 px image; short small clips for video (MViT and S3D need their 224 px clips)."""
    base = base_name(name)
    if base.startswith("mvit") or base == "s3d":
        return None  # their spec's clip (fake tensors: no compute)
    if base in VIDEO:
        return (1, 3, 4, 32, 32)
    return IMAGE


@functools.cache
def dense_doc(name: str, materialize: bool = False) -> Document:
    """The model opened once per process (meta weights unless ``materialize``)."""
    return open_source(spec_of(name), input_shape=input_shape_of(name), materialize=materialize)


@contextmanager
def one_thread() -> Iterator[None]:
    """Two busy cores run these small convs faster on one thread each (no oversubscription)."""
    was = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(was)
