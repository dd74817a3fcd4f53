"""Shape tracing: one forward on fake tensors gives every module's output shape, or where it failed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from headstudio.core.errors import TraceError
from headstudio.core.model.shapes import default_input_shape, trace_model
from headstudio.core.opening.sources import open_source


def test_every_called_module_has_its_output_shape():
    trace = open_source("torchvision:resnet18").trace()
    assert trace.mode == "fake" and trace.error is None
    assert trace.outputs["conv1"] == [1, 64, 112, 112]
    assert trace.outputs["layer3.1.bn2"] == [1, 256, 14, 14]
    assert trace.outputs["avgpool"] == [1, 512, 1, 1]
    assert trace.inputs["fc"] == [1, 512]
    assert trace.output == trace.outputs[""] == [1, 1000]


def test_fake_trace_leaves_spec_weights_on_meta():
    doc = open_source("torchvision:vit_b_16")
    assert doc.trace().outputs["encoder.layers.encoder_layer_11"] == [1, 197, 768]
    assert all(p.is_meta for p in doc.model.parameters())


def test_tuple_and_dict_outputs_keep_their_structure(tiny_factory):
    assert open_source(f"{tiny_factory}:TwoHeads").trace().output == [[1, 5], [1, 4]]
    assert open_source(f"{tiny_factory}:DictHeads").trace().output == {"logits": [1, 5], "boxes": [1, 4]}


def test_modules_not_called_in_eval_are_marked_not_called():
    tree = open_source("torchvision:googlenet").tree()
    assert tree.find("aux1").called is False and tree.find("aux1.fc2").called is False
    assert tree.find("aux1").output_shape is None
    assert tree.find("inception5b").called is True


def test_shared_module_counts_each_call():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            return self.out(self.block(self.block(x)))

    trace = trace_model(Twice(), (1, 4))
    assert trace.calls == {"": 1, "block": 2, "out": 1}


def test_data_dependent_forward_falls_back_to_a_real_trace(tiny_factory):
    doc = open_source(f"{tiny_factory}:ItemInForward")
    trace = doc.trace()
    assert trace.mode == "real" and trace.error is None
    assert trace.outputs == {"fc1": [1, 16], "fc2": [1, 2], "": [1, 2]}
    assert trace.heads == ["fc2"]
    assert all(p.is_meta for p in doc.model.parameters())  # the real run used throwaway zeros


def test_failing_forward_keeps_shapes_up_to_the_failing_module(tiny_factory):
    trace = open_source(f"{tiny_factory}:Mismatched").trace()
    assert trace.outputs == {"fc1": [1, 16]}
    assert trace.failed_at == "fc2"
    assert trace.error.startswith("RuntimeError:") and "\n" not in trace.error
    assert "fc3" not in trace.calls and trace.heads == []


def test_rejected_input_shape_names_the_failing_layer_and_keeps_earlier_shapes():
    trace = open_source("torchvision:alexnet", input_shape=(1, 3, 32, 32)).trace()
    assert trace.failed_at == "features.12"  # the third max-pool has nothing left to pool
    assert "Output size is too small" in trace.error
    assert trace.outputs["features.11"] == [1, 256, 1, 1]
    assert not any(path.startswith("classifier") for path in trace.outputs)
    assert trace.inputs["features"] == [1, 3, 32, 32]  # entered, never finished


def test_input_shape_override_retraces():
    doc = open_source("torchvision:resnet18")
    assert doc.trace().outputs["layer4"] == [1, 512, 7, 7]
    doc.set_input_shape((4, 3, 64, 96))
    assert doc.trace().outputs["layer4"] == [4, 512, 2, 3]
    assert doc.summary()["input_shape"] == [4, 3, 64, 96]


def test_non_positive_input_shape_is_refused():
    doc = open_source("torchvision:resnet18")
    with pytest.raises(TraceError, match="positive"):
        doc.set_input_shape((1, 3, 0, 224))


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ("torchvision:inception_v3", (1, 3, 299, 299)),
        ("torchvision:resnet18", (1, 3, 224, 224)),
        ("torchvision:vit_b_32", (1, 3, 224, 224)),
        ("torchvision:vit_b_32(image_size=256)", (1, 3, 256, 256)),
    ],
)
def test_default_input_shape_is_what_the_model_expects(spec, shape):
    assert open_source(spec).input_shape == shape


def test_default_input_shape_from_timm_pretrained_cfg():
    pytest.importorskip("timm")
    doc = open_source("timm:tinynet_e")
    assert doc.input_shape == (1, *doc.model.pretrained_cfg["input_size"]) == (1, 3, 106, 106)


def test_default_input_shape_from_the_first_layer_of_plain_models():
    assert default_input_shape(nn.Sequential(nn.Linear(8, 2))) == (1, 8)
    assert default_input_shape(nn.Sequential(nn.Conv1d(2, 4, 3))) == (1, 2, 1024)
    assert default_input_shape(nn.Sequential(nn.Conv2d(1, 4, 3))) == (1, 1, 224, 224)


def test_token_models_get_integer_inputs():
    model = nn.Sequential(nn.Embedding(100, 16), nn.Linear(16, 5))
    trace = trace_model(model, default_input_shape(model))
    assert trace.error is None and trace.output == [1, 128, 5]
    assert trace.heads == ["1"]


def test_half_precision_model_is_traced_with_matching_input():
    trace = trace_model(nn.Sequential(nn.Linear(8, 3)).half(), (2, 8))
    assert trace.error is None and trace.output == [2, 3]


def test_trace_never_raises_and_restores_training_mode(tiny_factory):
    doc = open_source(f"{tiny_factory}:Mismatched")
    doc.model.train()
    trace_model(doc.model, (1, 8))
    assert doc.model.training
    assert torch.is_grad_enabled()
