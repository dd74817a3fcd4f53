"""The CLI on Hugging Face model folders: inspect, named inputs, edit with labels, save back as a folder."""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_inspect_a_folder_shows_inputs_head_and_role(cli, hf_folder):
    result = cli("inspect", hf_folder("sequence", "bert"), "--depth", "1")
    assert result.status == 0, result.err
    assert "input input_ids=1,62:int64 attention_mask=1,62:int64" in result.out
    assert "Head: classifier (Linear 32 → 3, class logits)" in result.out
    assert "{logits: [1, 3]}" in result.out


def test_inspect_reports_a_tied_lm_head(cli, hf_folder):
    result = cli("inspect", hf_folder("causal", "gpt2"), "--depth", "0")
    assert (
        "lm_head (Linear 32 → 99, vocabulary logits) [its weight is tied to the input embeddings"
        in result.out
    )


def test_named_inputs_on_the_command_line_drive_the_trace(cli, hf_folder):
    result = cli(
        "inspect", hf_folder("sequence", "bert"), "--json",
        "--input", "input_ids=2,16:int64", "--input", "attention_mask=2,16:int64",
    )  # fmt: skip
    record = result.records[0]
    assert record["inputs"] == [
        {"name": "input_ids", "shape": [2, 16], "dtype": "int64"},
        {"name": "attention_mask", "shape": [2, 16], "dtype": "int64"},
    ]
    assert record["output_shape"] == {"logits": [2, 3]} and record["head"]["role"] == "class logits"


def test_bad_named_input_is_one_line_exit_2(cli, hf_folder):
    result = cli("inspect", hf_folder("sequence", "bert"), "--input", "input_ids=1,abc:int64")
    assert result.status == 2 and result.err.count("\n") == 1 and "positive sizes" in result.err


def test_change_a_bert_classifier_to_five_named_labels(cli, hf_folder, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "bert5"
    result = cli(
        "edit", hf_folder("sequence", "bert"), "--replace-head", "5", "--labels", "a, b,c,d,e", "-o", out
    )
    assert result.status == 0, result.err
    assert f"saved {out} (hf_folder" in result.out
    model, info = AutoModelForSequenceClassification.from_pretrained(str(out), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert model.config.id2label == {0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}


def test_give_a_vit_ten_classes(cli, hf_folder, tmp_path):
    out = tmp_path / "vit10"
    assert cli("edit", hf_folder("image", "vit"), "--replace-head", "10", "-o", out).status == 0
    record = cli("inspect", out, "--json").records[0]
    assert record["output_shape"] == {"logits": [1, 10]} and record["head"]["out_features"] == 10


def test_drop_the_lm_head_saves_the_base_model(cli, hf_folder, tmp_path):
    out = tmp_path / "hidden"
    result = cli("edit", hf_folder("causal", "llama"), "--remove-head", "-o", out)
    assert result.status == 0, result.err
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaModel"]
    record = cli("inspect", out, "--json").records[0]
    assert record["output_shape"]["last_hidden_state"] == [1, 62, 32] and record["heads"] == []


def test_labels_alone_give_one_class_per_name(cli, hf_folder, tmp_path):
    out = tmp_path / "three"
    assert cli("edit", hf_folder("sequence", "bert"), "--labels", "neg,neu,pos", "-o", out).status == 0
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "neu", "2": "pos"} and config["label2id"]["pos"] == 2


def test_labels_that_disagree_or_come_with_a_removed_head_are_refused(cli, hf_folder, tmp_path):
    folder = hf_folder("sequence", "bert")
    result = cli("edit", folder, "--replace-head", "4", "--labels", "a,b", "-o", tmp_path / "x")
    assert result.status == 2 and result.err.count("\n") == 1 and not (tmp_path / "x").exists()
    result = cli("edit", folder, "--remove-head", "--labels", "a,b", "-o", tmp_path / "y")
    assert result.status == 2 and "--replace-head" in result.err and not (tmp_path / "y").exists()


def test_output_folder_that_is_not_a_model_folder_is_left_alone(cli, hf_folder, tmp_path):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"jpg")
    result = cli("edit", hf_folder("sequence", "bert"), "--replace-head", "4", "-o", target)
    assert result.status != 0 and "not a model folder" in result.err
    assert [p.name for p in target.iterdir()] == ["holiday.jpg"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left


def test_config_asking_for_remote_code_is_one_line_exit_2(cli, hf_folder, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(hf_folder("sequence", "bert"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    result = cli("inspect", folder)
    assert result.status == 2 and result.err.count("\n") == 1 and "auto_map" in result.err


def test_transformers_spec_with_a_config_folder(cli, hf_folder):
    folder = hf_folder("sequence", "distilbert")
    result = cli("inspect", f"transformers:DistilBertForSequenceClassification(config='{folder}')", "--json")
    assert result.records[0]["head"]["path"] == "classifier"
