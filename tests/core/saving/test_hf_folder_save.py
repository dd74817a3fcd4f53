"""Saving a transformers model as a Hugging Face folder: shards, tokenizer files, atomic and verified."""

from __future__ import annotations

import shutil

import pytest
import torch

from headstudio.core.edits import ReplaceHead
from headstudio.core.errors import SaveError
from headstudio.core.opening.sources import open_source
from headstudio.core.saving import hf_folder as folder_format
from headstudio.core.saving.atomic import save

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_large_models_are_sharded_with_an_index_and_reload(hf_folder, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(folder_format, "SHARD_SIZE", "20KB")
    doc = open_source(str(hf_folder("causal", "llama")))
    save(doc, tmp_path / "sharded")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "sharded"))
    for name, tensor in doc.model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_tokenizer_and_processor_files_are_copied_unchanged(hf_folder, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(hf_folder("sequence", "bert"), source)
    (source / "tokenizer.json").write_text('{"version": "1.0", "model": {}}')
    (source / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\n\xc3\xa9\n")
    doc = open_source(str(source))
    doc.apply(ReplaceHead("classifier", 2))
    report = save(doc, tmp_path / "out")
    for name in ("tokenizer.json", "vocab.txt"):
        assert (tmp_path / "out" / name).read_bytes() == (source / name).read_bytes()
    assert any("copied 2" in w for w in report.warnings)


def test_a_head_its_class_cannot_load_is_refused_and_nothing_is_left(hf_folder, tmp_path):
    doc = open_source(str(hf_folder("sequence", "bert")))
    doc.apply(ReplaceHead("classifier", 4, hidden=(16,)))  # an MLP; the class has one Linear there
    with pytest.raises(SaveError, match=r"no longer fits this class, save as \.safetensors"):
        save(doc, tmp_path / "mlp")
    assert list(tmp_path.iterdir()) == []


def test_saving_over_a_previous_model_folder_replaces_it_whole(hf_folder, tmp_path):
    doc = open_source(str(hf_folder("sequence", "bert")))
    target = tmp_path / "out"
    target.mkdir()
    (target / "config.json").write_text("{}")
    (target / "stale-model-00001-of-00009.safetensors").write_bytes(b"old")
    save(doc, target)
    assert not (target / "stale-model-00001-of-00009.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_source_folder_is_never_the_target(hf_folder):
    folder = hf_folder("sequence", "bert")
    doc = open_source(str(folder))
    with pytest.raises(SaveError, match="source"):
        save(doc, folder)
