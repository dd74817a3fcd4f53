"""Head edits on transformers models keep the config in step and save back as a normal model folder."""

from __future__ import annotations

import hashlib

import pytest
import torch
from hf_fixtures import FAMILIES, expected_head

from headstudio.core.edits import RemoveHead, ReplaceHead
from headstudio.core.errors import EditError
from headstudio.core.model.inputs import make_tensors
from headstudio.core.opening.sources import open_source
from headstudio.core.saving.atomic import save

LABELS = ("ant", "bee", "cat", "dog", "eel")
AUTO = {
    "sequence": "AutoModelForSequenceClassification",
    "image": "AutoModelForImageClassification",
    "token": "AutoModelForTokenClassification",
}
CLASSIFIERS = [
    *[
        ("sequence", t)
        for t in ("bert", "roberta", "deberta-v2", "distilbert", "gpt2", "llama", "qwen2", "bart")
    ],
    *[("image", t) for t in ("vit", "convnext", "swin", "resnet")],
    *[("token", t) for t in ("bert", "distilbert", "roberta")],
]


def _train_step(model: torch.nn.Module, inputs: dict, family: str, width: int) -> None:
    """One SGD step with labels: the loss reads the model's num_labels, so it must be in step."""
    first = next(iter(inputs.values()))
    labels = torch.full(first.shape[:2] if family == "token" else first.shape[:1], width - 1)
    model.train()
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.01 * p.grad
    assert torch.isfinite(loss)


def _digest(folder) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize(("family", "model_type"), CLASSIFIERS)
def test_replace_head_with_named_labels_round_trips_through_from_pretrained(
    hf_folder, tmp_path, family, model_type
):
    import transformers

    folder = hf_folder(family, model_type)
    before = _digest(folder)
    doc = open_source(str(folder))
    head = doc.head
    assert head.path in expected_head(doc.model, family) and head.role == FAMILIES[family][1]
    doc.apply(ReplaceHead(head.path, 5, labels=LABELS, seed=0))
    assert doc.model.config.id2label == dict(enumerate(LABELS))
    assert doc.heads()[0].out_features == 5
    inputs = make_tensors(doc.named_inputs(), doc.model, torch.float32)
    _train_step(doc.model, inputs, family, 5)
    doc.model.eval()

    report = save(doc, tmp_path / "out")
    assert report.format == "hf_folder" and (tmp_path / "out" / "config.json").exists()
    auto = getattr(transformers, AUTO[family])
    reloaded, info = auto.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    assert reloaded.config.id2label == dict(enumerate(LABELS))
    assert reloaded.config.label2id == {name: i for i, name in enumerate(LABELS)}
    reloaded.eval()
    with torch.no_grad():
        logits = reloaded(**inputs).logits
        assert logits.shape[-1] == 5
        torch.testing.assert_close(logits, doc.model(**inputs).logits)
    _train_step(reloaded, inputs, family, 5)
    assert _digest(folder) == before  # the source folder is never written


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_question_answering_head_is_the_span_head(hf_folder, model_type):
    doc = open_source(str(hf_folder("qa", model_type)))
    assert doc.head.path == "qa_outputs" and doc.head.role == "span logits"


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
def test_drop_the_lm_head_to_get_hidden_states(hf_folder, tmp_path, model_type):
    from transformers import AutoModel

    doc = open_source(str(hf_folder("causal", model_type)))
    assert doc.head.path == "lm_head" and doc.head.role == "vocabulary logits"
    edit = RemoveHead("lm_head")
    doc.apply(edit)
    assert doc.trace().output["logits"] == [1, 62, 32]  # features, not vocabulary logits
    save(doc, tmp_path / "base")
    base, info = AutoModel.from_pretrained(str(tmp_path / "base"), output_loading_info=True)
    assert type(base).__name__ == type(doc.model.base_model).__name__
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    ids = torch.full((1, 8), 5)
    with torch.no_grad():
        assert base(input_ids=ids).last_hidden_state.shape == (1, 8, 32)


def test_replacing_a_tied_lm_head_unties_it_and_says_so(hf_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    doc = open_source(str(hf_folder("causal", "gpt2")))
    assert "tied" in doc.head.rule and doc.model.config.tie_word_embeddings
    edit = ReplaceHead("lm_head", 99, seed=1)
    doc.apply(edit)
    assert any("now untied" in note for note in edit.notes)
    assert doc.model.config.tie_word_embeddings is False
    assert doc.model.lm_head.weight is not doc.model.transformer.wte.weight
    assert "tied" not in (doc.head.rule or "")
    save(doc, tmp_path / "untied")
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "untied"))
    assert torch.equal(reloaded.lm_head.weight, doc.model.lm_head.weight)
    assert not torch.equal(reloaded.lm_head.weight, reloaded.transformer.wte.weight)
    doc.revert(edit)
    assert doc.model.config.tie_word_embeddings and "tied" in doc.head.rule


def test_kept_rows_keep_their_names_and_revert_restores_the_config(hf_folder):
    folder = hf_folder(
        "sequence", "bert", id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2}
    )
    doc = open_source(str(folder))
    edit = ReplaceHead("classifier", 4, keep_classes=[2, 0])
    doc.apply(edit)
    assert doc.model.config.id2label == {0: "pos", 1: "neg", 2: "LABEL_2", 3: "LABEL_3"}
    assert doc.model.num_labels == 4 and doc.model.config.num_labels == 4
    torch.testing.assert_close(doc.model.classifier.weight[0], edit._undo[0].weight[2])
    doc.revert(edit)
    assert doc.model.config.id2label == {0: "neg", 1: "neu", 2: "pos"} and doc.model.num_labels == 3


def test_problem_type_stays_valid_for_the_new_count(hf_folder):
    doc = open_source(str(hf_folder("sequence", "distilbert", problem_type="regression", num_labels=1)))
    doc.apply(ReplaceHead("classifier", 4))
    assert doc.model.config.problem_type is None and doc.model.config.num_labels == 4


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (("a", "b"), "2 label names for 5 classes"),
        (("a", "a", "b", "c", "d"), "differ"),
        (("a", "", "b", "c", "d"), "names"),
    ],
)
def test_bad_labels_are_refused_before_anything_changes(hf_folder, labels, message):
    doc = open_source(str(hf_folder("sequence", "bert")))
    with pytest.raises(EditError, match=message):
        doc.apply(ReplaceHead("classifier", 5, labels=labels))
    assert doc.model.config.num_labels == 3 and not doc.edits


def test_labels_need_a_transformers_model():
    from torch import nn

    from headstudio.core.model.document import Document, Origin

    doc = Document(nn.Sequential(nn.Linear(4, 3)), Origin("x", "spec", "x"), (1, 4))
    with pytest.raises(EditError, match="transformers model's config"):
        doc.apply(ReplaceHead("0", 2, labels=("a", "b")))


def test_replace_head_json_keeps_the_labels():
    from headstudio.core.edits import edit_from_json

    edit = ReplaceHead("classifier", 2, labels=("yes", "no"))
    assert edit_from_json(edit.to_json()) == edit


def test_removing_a_decoder_layer_saves_a_folder_with_fewer_layers(hf_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    from headstudio.core.edits import RemoveLayers

    doc = open_source(str(hf_folder("causal", "llama")))
    doc.apply(RemoveLayers(["model.layers.1"]))
    save(doc, tmp_path / "one-layer")
    reloaded, info = AutoModelForCausalLM.from_pretrained(
        str(tmp_path / "one-layer"), output_loading_info=True
    )
    assert reloaded.config.num_hidden_layers == 1 and len(reloaded.model.layers) == 1
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])


def test_cutting_a_transformers_model_names_the_edit_that_keeps_it_loadable(hf_folder):
    from headstudio.core.edits import CutAfter, RemoveLayers

    doc = open_source(str(hf_folder("sequence", "bert")))  # two encoder layers
    with pytest.raises(EditError, match=r"--remove bert\.encoder\.layer\.1; num_hidden") as info:
        doc.apply(CutAfter("bert.encoder.layer.0"))
    assert "\n" not in str(info.value) and type(doc.model).__name__ == "BertForSequenceClassification"
    doc.apply(RemoveLayers(["bert.encoder.layer.1"]))  # what it suggests works and keeps the class
    assert doc.model.config.num_hidden_layers == 1 and doc.trace().output["logits"] == [1, 3]


def test_a_timm_wrapper_folder_keeps_its_label_names_in_step(hf_folder, tmp_path):
    from transformers import AutoModelForImageClassification

    doc = open_source(str(hf_folder("image", "timm_wrapper")))  # a timm model inside a transformers class
    assert doc.head.path == "timm_model.fc" and doc.head.role == "class logits"
    doc.apply(ReplaceHead("timm_model.fc", 4, labels=("ant", "bee", "cat", "dog")))
    save(doc, tmp_path / "out")
    model, info = AutoModelForImageClassification.from_pretrained(
        str(tmp_path / "out"), output_loading_info=True
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert model.config.id2label == {0: "ant", 1: "bee", 2: "cat", 3: "dog"}  # saved as its label_names


def test_a_distilled_classifier_renames_both_heads_and_reloads(hf_folder, tmp_path):
    from transformers import AutoModelForImageClassification

    doc = open_source(str(hf_folder("image", "swiftformer")))  # logits = (head + dist_head) / 2
    doc.apply(ReplaceHead(doc.head.path, 4, labels=("ant", "bee", "cat", "dog")))
    save(doc, tmp_path / "out")
    model, info = AutoModelForImageClassification.from_pretrained(
        str(tmp_path / "out"), output_loading_info=True
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert model.config.id2label[3] == "dog" and model.head.out_features == model.dist_head.out_features == 4


def test_a_config_with_its_own_num_labels_field_is_kept_in_step(hf_folder, tmp_path):
    from transformers import AutoModelForImageClassification

    doc = open_source(str(hf_folder("image", "pvt")))  # PvtConfig saves num_labels besides id2label
    doc.apply(ReplaceHead(doc.head.path, 5))
    save(doc, tmp_path / "out")
    model, info = AutoModelForImageClassification.from_pretrained(
        str(tmp_path / "out"), output_loading_info=True
    )
    assert not info["mismatched_keys"] and model.config.num_labels == 5


def test_drop_a_masked_lm_head_saves_the_encoder_its_class_adds_a_pooler_to(hf_folder, tmp_path):
    from transformers import AutoModel

    doc = open_source(str(hf_folder("masked", "roberta")))  # RobertaForMaskedLM's encoder has no pooler
    doc.apply(RemoveHead(doc.head.path))
    report = save(doc, tmp_path / "base")
    assert any("adds pooler, which this model never had" in note for note in report.warnings)
    base, info = AutoModel.from_pretrained(str(tmp_path / "base"), output_loading_info=True)
    assert type(base).__name__ == "RobertaModel" and {k.split(".")[0] for k in info["missing_keys"]} == {
        "pooler"
    }
    assert not (info["unexpected_keys"] or info["mismatched_keys"])
    with torch.no_grad():
        assert base(input_ids=torch.full((1, 8), 5)).last_hidden_state.shape == (1, 8, 32)


def test_drop_the_lm_head_of_a_class_whose_base_prefix_names_nothing(hf_folder, tmp_path):
    from transformers import AutoModel

    doc = open_source(str(hf_folder("causal", "llama4_text")))  # base_model_prefix "language_model"
    doc.apply(RemoveHead("lm_head"))
    save(doc, tmp_path / "base")
    base, info = AutoModel.from_pretrained(str(tmp_path / "base"), output_loading_info=True)
    assert type(base).__name__ == "Llama4TextModel"
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])


def test_a_headless_body_that_automodel_would_not_build_is_not_saved_as_a_folder(hf_folder, tmp_path):
    from headstudio.core.errors import SaveError

    doc = open_source(str(hf_folder("causal", "bart")))  # BartForCausalLM: a decoder-only wrapper
    doc.apply(RemoveHead("lm_head"))
    with pytest.raises(SaveError, match="AutoModel would build BartModel; nothing was written"):
        save(doc, tmp_path / "base")
    assert not (tmp_path / "base").exists() and not list(tmp_path.iterdir())
