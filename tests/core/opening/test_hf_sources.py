"""Opening Hugging Face model folders, cache snapshots, weight files in a folder, transformers specs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from headstudio.core.errors import HeadStudioError, MissingDependencyError, SourceError
from headstudio.core.opening.sources import open_source

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _reference(folder: Path):
    from transformers import AutoModel

    return AutoModel


def _same_weights(model: torch.nn.Module, folder: Path) -> None:
    """Every tensor equals what transformers' own from_pretrained loads from the folder."""
    import transformers

    cls = getattr(transformers, json.loads((folder / "config.json").read_text())["architectures"][0])
    reference = cls.from_pretrained(str(folder), local_files_only=True)
    expected = reference.state_dict()
    found = model.state_dict()
    assert set(found) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(found[name], tensor), name


def test_folder_opens_with_the_class_its_config_names_and_its_weights(hf_folder):
    folder = hf_folder("sequence", "bert")
    doc = open_source(str(folder))
    assert type(doc.model).__name__ == "BertForSequenceClassification"
    assert doc.origin.kind == "hf_folder"
    assert doc.origin.arch == f"transformers:BertForSequenceClassification(config='{folder.resolve()}')"
    assert doc.head.path == "classifier" and doc.head.role == "class logits"
    _same_weights(doc.model, folder)


def test_folder_weights_stay_memory_mapped_from_the_file(hf_folder):
    from headstudio.core.opening.mapped_regions import MappedFiles

    doc = open_source(str(hf_folder("sequence", "bert")))
    weight = doc.model.bert.embeddings.word_embeddings.weight
    region = MappedFiles().region(weight)
    assert region is not None and Path(region.path).name == "model.safetensors"


def test_sharded_safetensors_folder_opens_through_its_index(hf_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    source = AutoModelForCausalLM.from_pretrained(str(hf_folder("causal", "llama")))
    source.save_pretrained(str(tmp_path / "sharded"), max_shard_size="20KB")
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    doc = open_source(str(tmp_path / "sharded"))
    assert doc.head.path == "lm_head" and doc.head.role == "vocabulary logits"
    _same_weights(doc.model, tmp_path / "sharded")
    # the index file itself names the same folder
    assert type(open_source(str(tmp_path / "sharded" / "model.safetensors.index.json")).model) is type(
        doc.model
    )


def test_pytorch_model_bin_folder_opens(hf_folder, tmp_path):
    folder = tmp_path / "bin"
    shutil.copytree(hf_folder("sequence", "distilbert"), folder)
    state = open_source(str(folder)).model.state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    doc = open_source(str(folder))
    assert doc.head.path == "classifier"
    assert all(torch.equal(doc.model.state_dict()[k], v) for k, v in state.items())


def test_model_safetensors_beside_a_config_opens_as_its_folder(hf_folder):
    folder = hf_folder("image", "vit")
    doc = open_source(str(folder / "model.safetensors"))
    assert doc.origin.kind == "hf_folder" and type(doc.model).__name__ == "ViTForImageClassification"
    assert doc.trace().output == {"logits": [1, 3]}


def test_local_cache_snapshot_opens_by_repo_folder_and_snapshot(hf_folder, tmp_path):
    repo = tmp_path / "hub" / "models--org--tiny-bert"
    snapshot = repo / "snapshots" / "0123abcd"
    blobs = repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for i, path in enumerate(sorted(hf_folder("sequence", "bert").iterdir())):
        shutil.copy(path, blobs / f"blob{i}")
        (snapshot / path.name).symlink_to(Path("../../blobs") / f"blob{i}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for source in (repo, snapshot):
        doc = open_source(str(source))
        assert doc.head.path == "classifier" and doc.origin.path == snapshot


def test_transformers_renames_apply_to_bare_weights_named_by_a_spec(hf_folder, tmp_path):
    """Base-model keys (no 'bert.' prefix) and legacy LayerNorm gamma/beta load by transformers' rules."""
    from safetensors.torch import save_file

    folder = hf_folder("sequence", "bert")
    model = open_source(str(folder)).model
    legacy = {}
    for name, tensor in model.bert.state_dict().items():
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy[name] = tensor.clone()
    save_file(legacy, tmp_path / "legacy.safetensors")
    arch = f"transformers:BertForSequenceClassification(config='{folder}')"
    doc = open_source(str(tmp_path / "legacy.safetensors"), arch=arch)
    for name, tensor in model.bert.state_dict().items():
        assert torch.equal(doc.model.bert.state_dict()[name], tensor), name
    assert any("missing" in note and "classifier" in note for note in doc.origin.notes)


def test_gpt2_lm_head_left_out_of_the_file_is_tied_and_reported(hf_folder):
    from safetensors import safe_open

    folder = hf_folder("causal", "gpt2")
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        assert "lm_head.weight" not in set(fh.keys())
    doc = open_source(str(folder))
    assert doc.model.lm_head.weight is doc.model.transformer.wte.weight
    assert doc.head.path == "lm_head" and "tied to the input embeddings (transformer.wte)" in doc.head.rule


def test_a_tied_head_never_called_as_a_module_is_still_the_head(hf_folder):
    doc = open_source(str(hf_folder("masked", "mobilebert")))  # x @ cat(decoder.weight.T, ...)
    assert doc.model.cls.predictions.decoder.weight is doc.model.mobilebert.embeddings.word_embeddings.weight
    assert doc.head.path == "cls.predictions.decoder" and doc.head.role == "vocabulary logits"
    assert "tied to the input embeddings (mobilebert.embeddings.word_embeddings)" in doc.head.rule


def test_spec_builds_the_class_from_a_config_folder_on_meta(hf_folder):
    folder = hf_folder("sequence", "roberta")
    doc = open_source(f"transformers:RobertaForSequenceClassification(config='{folder}', num_labels=5)")
    assert doc.model.classifier.out_proj.weight.is_meta
    assert doc.head.path == "classifier.out_proj" and doc.head.out_features == 5


def test_spec_config_may_be_a_model_type():
    doc = open_source(
        "transformers:ResNetForImageClassification(config='resnet', num_labels=7, depths=[1,1,1,1])"
    )
    assert doc.trace().output == {"logits": [1, 7]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"auto_map": {"AutoModel": "modeling_evil.EvilModel"}}, "own Python code"),
        ({"architectures": ["EvilModel"]}, "not a transformers model class"),
        ({"architectures": ["os.system"]}, "not a transformers model class"),
        ({"architectures": "BertModel"}, "must be a list of class names"),
        ({"model_type": "evil"}, "not a transformers model type"),
        ({"hidden_size": "big"}, "bert"),
    ],
)
def test_lying_config_is_refused_in_one_line_and_runs_nothing(hf_folder, tmp_path, change, message):
    folder = tmp_path / "evil"
    shutil.copytree(hf_folder("sequence", "bert"), folder)
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(SourceError) as caught:
        open_source(str(folder))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not marker.exists() and "modeling_evil" not in sys.modules


def test_config_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(SourceError, match="not a config object"):
        open_source(str(tmp_path))


def test_index_naming_a_shard_outside_the_folder_is_refused(hf_folder, tmp_path):
    folder = tmp_path / "shards"
    shutil.copytree(hf_folder("sequence", "bert"), folder)
    index = {"weight_map": {"bert.pooler.dense.weight": "../../etc/passwd"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SourceError, match="outside its folder"):
        open_source(str(folder))


def test_without_transformers_the_error_says_how_to_install(monkeypatch):
    from headstudio.core.opening import hf

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'headstudio\[hf\]'"):
        hf.import_transformers()


def test_folder_without_weights_builds_from_its_config(hf_folder, tmp_path):
    shutil.copy(hf_folder("sequence", "bert") / "config.json", tmp_path / "config.json")
    doc = open_source(str(tmp_path))
    assert any("no weight files" in n for n in doc.origin.notes)
    assert doc.model.classifier.weight.is_meta and doc.head.path == "classifier"


def test_an_ordinary_directory_still_says_what_to_give(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(HeadStudioError, match="is a directory"):
        open_source(str(tmp_path))


def test_our_own_save_beside_a_config_reopens_from_its_recipe(hf_folder, tmp_path):
    from headstudio.core.edits import ReplaceHead
    from headstudio.core.saving.atomic import save

    folder = tmp_path / "with-edit"
    shutil.copytree(hf_folder("sequence", "bert"), folder)
    doc = open_source(str(folder))
    doc.apply(ReplaceHead("classifier", 4, labels=("a", "b", "c", "d")))
    save(doc, folder / "edited.safetensors")
    reopened = open_source(str(folder / "edited.safetensors"))
    assert reopened.origin.kind == "safetensors" and reopened.head.out_features == 4
    assert reopened.model.config.id2label == {0: "a", 1: "b", 2: "c", 3: "d"}


def test_a_folder_with_some_other_tools_config_is_still_just_a_directory(tmp_path):
    (tmp_path / "config.json").write_text('{"learning_rate": 0.1}')
    (tmp_path / "best.pt").write_bytes(b"x")
    with pytest.raises(SourceError, match="is a directory; give a checkpoint file inside it"):
        open_source(str(tmp_path))
