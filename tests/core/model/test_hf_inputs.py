"""Inputs from a transformers config, named typed inputs, ModelOutput fields, trace fallbacks."""

from __future__ import annotations

import pytest
import torch

from headstudio.core.errors import InputError
from headstudio.core.model.inputs import NamedInput, config_inputs, make_tensors, parse_input, parse_inputs
from headstudio.core.opening.sources import open_source


def test_named_input_text_round_trips():
    item = parse_input("input_ids=1,128:int64")
    assert item == NamedInput("input_ids", (1, 128), "int64")
    assert parse_input(item.to_text()) == item
    assert parse_input("pixel_values=1x3x32x32") == NamedInput("pixel_values", (1, 3, 32, 32), None)


def test_the_app_field_takes_several_inputs_at_once():
    found = parse_inputs("input_ids=1,16:int64; attention_mask=1,16:int64")
    assert [i.name for i in found] == ["input_ids", "attention_mask"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("input_ids", "NAME=SIZES"),
        ("1,128", "NAME=SIZES"),
        ("input_ids=1,128:int13", "dtype 'int13' is unknown"),
        ("input_ids=1,-5", "positive"),
        ("input_ids=1,2 input_ids=1,3", "twice"),
    ],
)
def test_bad_named_inputs_say_what_to_write(text, message):
    with pytest.raises(InputError, match=message):
        parse_inputs(text)


def test_text_model_gets_token_ids_and_mask_sized_from_its_config(hf_folder):
    doc = open_source(str(hf_folder("causal", "gpt2")))  # n_positions 64 in the tiny config
    assert [i.to_text() for i in doc.named_inputs()] == ["input_ids=1,62:int64", "attention_mask=1,62:int64"]
    assert doc.trace().output["logits"] == [1, 62, 99]  # vocabulary from the config


def test_vision_model_gets_pixel_values_sized_from_its_config(hf_folder):
    doc = open_source(str(hf_folder("image", "vit")))  # image_size 64
    assert doc.named_inputs() == (NamedInput("pixel_values", (1, 3, 64, 64)),)
    assert doc.input_shape == (1, 3, 64, 64)


def test_encoder_decoder_classifier_ids_end_with_eos_and_fall_back_to_a_real_forward(hf_folder):
    doc = open_source(str(hf_folder("sequence", "bart")))
    inputs = doc.named_inputs()
    assert {i.name for i in inputs} == {"input_ids", "attention_mask", "decoder_input_ids"}
    ids = make_tensors(inputs, doc.model, torch.float32)["input_ids"]
    assert ids[0, -1] == doc.model.config.eos_token_id and ids[0, 0] != doc.model.config.eos_token_id
    trace = doc.trace()
    assert trace.error is None and trace.mode == "real"
    assert "shape-only trace failed" in trace.fallback and trace.output["logits"] == [1, 3]
    assert doc.summary()["trace"]["fallback"] == trace.fallback


def test_model_output_is_shown_per_field(hf_folder):
    doc = open_source(str(hf_folder("qa", "bert")))
    assert doc.trace().output == {"start_logits": [1, 62], "end_logits": [1, 62]}


def test_user_named_inputs_drive_the_trace_and_a_shape_resets_them(hf_folder):
    doc = open_source(str(hf_folder("sequence", "bert")))
    doc.set_inputs(parse_inputs("input_ids=2,16:int64 attention_mask=2,16:int64"))
    assert doc.trace().outputs["bert"]["last_hidden_state"] == [2, 16, 32]
    doc.set_input_shape((1, 8))
    assert doc.inputs is None
    assert [i.shape for i in doc.named_inputs()] == [(1, 8), (1, 8)]
    assert doc.trace().outputs["bert"]["last_hidden_state"] == [1, 8, 32]


def test_plain_models_keep_their_single_positional_input():
    from torch import nn

    assert config_inputs(nn.Linear(3, 4)) is None


def test_question_answering_ids_hold_the_separators_longformer_counts(hf_folder):
    doc = open_source(str(hf_folder("qa", "longformer")))  # its forward asserts three </s> per sample
    ids = make_tensors(doc.named_inputs(), doc.model, torch.float32)["input_ids"]
    assert int((ids == doc.model.config.sep_token_id).sum()) == 3
    assert doc.trace().error is None and doc.head.path == "qa_outputs" and doc.head.role == "span logits"


def test_region_feature_model_gets_visual_features_from_its_config(hf_folder):
    doc = open_source(str(hf_folder("qa", "lxmert")))  # visual question answering over detector regions
    shapes = {i.name: i.shape for i in doc.named_inputs()}
    assert shapes["visual_feats"][-1] == doc.model.config.visual_feat_dim and shapes["visual_pos"][-1] == 4
    assert doc.trace().error is None
    assert doc.head.path == "answer_head.logit_fc.3" and doc.head.role == "class logits"  # VQA answers


@pytest.mark.parametrize(
    ("family", "dtype", "head"),
    [("sequence", "int64", "perceiver.decoder.decoder.final_layer"),
     ("image", None, "perceiver.decoder.decoder.final_layer")],
)  # fmt: skip
def test_perceiver_inputs_follow_its_preprocessor(hf_folder, family, dtype, head):
    doc = open_source(str(hf_folder(family, "perceiver")))
    main = doc.named_inputs()[0]
    assert main.name == "inputs" and main.dtype == dtype
    assert doc.trace().error is None and doc.head.path == head


def test_lm_logits_from_a_borrowed_embedding_matrix_name_that_matrix(hf_folder):
    doc = open_source(str(hf_folder("masked", "perceiver")))  # logits = x @ embeddings.weight.T + bias
    assert doc.head.path == "perceiver.input_preprocessor.embeddings" and doc.head.role == "vocabulary logits"


def test_a_patch_input_vision_model_gets_patches_with_their_grid(hf_folder):
    doc = open_source(str(hf_folder("image", "siglip2")))  # NaFlex: the image comes cut into patches
    shapes = {i.name: i.shape for i in doc.named_inputs()}
    vision = doc.model.config.vision_config
    assert shapes["pixel_values"] == (1, vision.num_patches, vision.num_channels * vision.patch_size**2)
    grid = make_tensors(doc.named_inputs(), doc.model, torch.float32)["spatial_shapes"]
    assert int(grid[0, 0] * grid[0, 1]) == vision.num_patches
    assert doc.trace().error is None and doc.head.path == "classifier" and doc.head.role == "class logits"


def test_a_codebook_language_model_gets_one_row_of_codes_per_codebook(hf_folder):
    doc = open_source(str(hf_folder("causal", "musicgen")))
    ids = doc.named_inputs()[0]
    assert ids.name == "input_ids" and ids.shape[0] == doc.model.config.num_codebooks
    assert (
        doc.trace().error is None and doc.head.path == "lm_heads.0" and doc.head.role == "vocabulary logits"
    )
