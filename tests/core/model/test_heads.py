"""Head detection by function: what reaches the output, whatever the attribute is called."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from headstudio.core.model.shapes import trace_model
from headstudio.core.opening.sources import open_source

# One or two small members of many timm families; the head attribute differs across them.
TIMM_MODELS = [
    "resnet10t",  # fc
    "convnext_atto",  # head.fc
    "vit_tiny_patch16_224",  # head
    "deit_tiny_distilled_patch16_224",  # head + head_dist
    "efficientnet_b0",  # classifier
    "regnetx_002",  # head.fc
    "mobilenetv3_small_050",  # classifier (after a conv_head)
    "swin_tiny_patch4_window7_224",  # head.fc
    "inception_v3",  # fc, 299 input
    "inception_v4",  # last_linear
    "inception_resnet_v2",  # classif
    "legacy_seresnet18",  # last_linear
    "levit_128s",  # head.linear + head_dist.linear
    "dla34",  # fc, a 1x1 Conv2d
    "dpn68",  # classifier, a 1x1 Conv2d
    "mixer_s16_224",  # head
    "mobilevit_xxs",  # head.fc, 256 input
    "poolformer_s12",  # head.fc
    "efficientformer_l1",  # head + head_dist
    "crossvit_tiny_240",  # head.0 + head.1, averaged into one output
    "repvit_m0_9",  # head.head.l + head.head_dist.l inside NormLinear wrappers
    "mobilenetv4_conv_small",  # classifier
    "hiera_tiny_224",  # head.fc
]


def module_path(model: nn.Module, module: nn.Module) -> str:
    return next(path for path, m in model.named_modules() if m is module)


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm")


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_head_found_by_function_agrees_with_timm_classifier_api(timm, name):
    doc = open_source(f"timm:{name}")
    cfg = doc.model.pretrained_cfg["classifier"]
    expected = [cfg] if isinstance(cfg, str) else list(cfg)
    found = [h.path for h in doc.heads()]
    assert found == expected
    classifier = doc.model.get_classifier()  # may wrap the projections (NormLinear, ModuleList)
    wrappers = [
        module_path(doc.model, c) for c in (classifier if isinstance(classifier, tuple) else (classifier,))
    ]
    assert all(any(f == w or f.startswith(w + ".") for w in wrappers) for f in found)
    assert doc.head.out_features == 1000
    assert doc.trace().error is None


def test_timm_default_input_shape_comes_from_pretrained_cfg(timm):
    doc = open_source("timm:inception_v4")
    assert doc.input_shape == (1, *doc.model.pretrained_cfg["input_size"]) == (1, 3, 299, 299)


def test_distilled_model_lists_both_heads_primary_first(timm):
    doc = open_source("timm:deit_tiny_distilled_patch16_224")
    assert [h.path for h in doc.heads()] == ["head", "head_dist"]
    assert doc.tree().find("head").head_rank == 0
    assert doc.tree().find("head_dist").head_rank == 1


def test_timm_model_reset_to_no_classifier_has_no_head(timm):
    doc = open_source("timm:resnet10t")
    doc.model.reset_classifier(0)
    doc.changed()
    assert doc.heads() == [] and doc.head is None
    assert doc.trace().output == [1, doc.model.num_features]


def test_timm_spec_without_classes_has_no_head(timm):
    doc = open_source("timm:vit_tiny_patch16_224(num_classes=0)")
    assert doc.heads() == []
    assert doc.summary()["head"] is None


def test_torchvision_fc_replaced_by_identity_has_no_head():
    doc = open_source("torchvision:resnet18")
    doc.model.fc = nn.Identity()
    doc.changed()
    assert doc.heads() == []
    assert doc.trace().output == [1, 512]


def test_replaced_head_is_found_again_after_change():
    doc = open_source("torchvision:mobilenet_v3_small")
    doc.model.classifier[3] = nn.Linear(1024, 7)
    doc.changed()
    assert [(h.path, h.in_features, h.out_features) for h in doc.heads()] == [("classifier.3", 1024, 7)]


def test_tuple_output_has_one_head_per_element(tiny_factory):
    doc = open_source(f"{tiny_factory}:TwoHeads")
    trace = doc.trace()
    assert trace.output == [[1, 5], [1, 4]]
    assert list(trace.heads_by_output.values()) == [["cls"], ["box"]]
    assert [h.path for h in doc.heads()] == ["cls", "box"]


def test_dict_output_has_one_head_per_key_even_after_an_activation(tiny_factory):
    doc = open_source(f"{tiny_factory}:DictHeads")
    trace = doc.trace()
    assert trace.output == {"logits": [1, 5], "boxes": [1, 4]}
    by_key = {key: paths for key, paths in trace.heads_by_output.items()}
    assert sorted(by_key.values()) == [["box"], ["cls"]]
    assert next(k for k, v in by_key.items() if v == ["cls"]).count("logits") == 1


def test_head_defined_first_is_still_found_by_what_reaches_the_output(tiny_factory):
    doc = open_source(f"{tiny_factory}:HeadDefinedFirst", input_shape=(1, 8))
    assert [(h.path, h.type, h.in_features, h.out_features) for h in doc.heads()] == [
        ("out", "Linear", 16, 3)
    ]


def test_squeezenet_head_is_the_conv_not_the_last_module():
    doc = open_source("torchvision:squeezenet1_1")
    head = doc.head
    assert (head.path, head.type, head.in_features, head.out_features) == (
        "classifier.1",
        "Conv2d",
        512,
        1000,
    )
    assert list(dict(doc.model.named_modules()))[-1] != "classifier.1"  # ReLU and pooling come after it


def test_tied_language_model_head_used_as_a_weight_is_found():
    class TinyLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(50, 16)
            self.block = nn.Linear(16, 16)
            self.norm = nn.LayerNorm(16)

        def forward(self, ids):
            return self.norm(self.block(self.embed(ids))) @ self.embed.weight.T  # no lm_head module

    trace = trace_model(TinyLM(), (1, 128))
    assert trace.output == [1, 128, 50]
    assert trace.heads == ["embed"]


def test_model_ending_in_a_norm_has_no_head():
    assert trace_model(nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)), (1, 8)).heads == []


def test_dataclass_output_has_one_head_per_field():
    @dataclasses.dataclass
    class Detections:
        logits: torch.Tensor
        boxes: torch.Tensor
        level: int = 3

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls = nn.Linear(4, 3)
            self.box = nn.Linear(4, 2)

        def forward(self, x):
            return Detections(self.cls(x), self.box(x).sigmoid())

    trace = trace_model(Detector(), (1, 4))
    assert trace.output == {"logits": [1, 3], "boxes": [1, 2], "level": None}
    assert trace.heads == ["cls", "box"]
