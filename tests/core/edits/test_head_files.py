"""Heads as files: export, attach to another backbone (fit / adapter), exact weights, hostile files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from edit_fixtures import assert_restored, opened, snapshot
from safetensors.torch import save_file
from torch import nn

from headstudio.core import edits as E
from headstudio.core.codegen import snippet_for
from headstudio.core.errors import EditError
from headstudio.core.head_description import METADATA_KEY, HeadFileError, describe_head
from headstudio.core.head_files import export_head, read_head_file, rebuild_head
from headstudio.core.recipe import Recipe


@pytest.fixture(scope="module")
def source_head() -> nn.Module:
    """A trained-looking MLP head on 512 features with 7 classes (seeded, real weights)."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Dropout(0.1), nn.Linear(512, 64), nn.GELU(), nn.Linear(64, 7)).eval()


@pytest.fixture(scope="module")
def head_path(tmp_path_factory, source_head):
    path = tmp_path_factory.mktemp("heads") / "cats.safetensors"
    names = [f"cat{i}" for i in range(7)]
    export_head(source_head, describe_head(source_head, "fc", names, {"name": "cats.pt"}), path)
    return path


def test_export_writes_description_and_weights_that_rebuild_the_same_head(head_path, source_head) -> None:
    loaded = read_head_file(head_path)
    assert loaded.in_features == 512 and loaded.out_features == 7
    assert loaded.description["classes"][6] == "cat6"
    assert [layer["kind"] for layer in loaded.description["layers"]] == [
        "dropout",
        "linear",
        "gelu",
        "linear",
    ]
    x = torch.randn(3, 512)
    assert torch.equal(rebuild_head(loaded)(x), source_head(x))
    assert head_path.stat().st_size < 200_000  # the head only, no backbone


def test_attach_to_a_backbone_that_fits_carries_the_exact_weights_and_reverts(head_path, source_head) -> None:
    doc = opened("torchvision:resnet34")
    snap = snapshot(doc)
    edit = E.ReplaceHeadFromFile.from_file("fc", head_path)
    assert E.head_fit(doc, "fc", edit.head) == (512, 512)
    preview = edit.preview(doc)
    assert preview.ok and preview.output_after == [1, 7]
    doc.apply(edit)
    for key, value in source_head.state_dict().items():
        assert torch.equal(doc.model.fc.state_dict()[key], value), key
    assert doc.trace().output == [1, 7]
    assert edit.describe() == "Replace head fc with cats.safetensors (512 → 7)"
    doc.revert(edit)
    assert_restored(doc, snap)


def test_a_mismatch_is_refused_unless_an_adapter_is_asked_for(head_path, source_head) -> None:
    doc = opened("torchvision:mobilenet_v3_small")
    with pytest.raises(EditError, match=r"takes 512 features but 'classifier.3' gives 1024.*--adapter auto"):
        doc.apply(E.ReplaceHeadFromFile.from_file("classifier.3", head_path))
    assert doc.edits == []
    edit = E.ReplaceHeadFromFile.from_file("classifier.3", head_path, adapter=True, seed=0)
    doc.apply(edit)
    new = doc.model.classifier[3]
    assert isinstance(new.adapter, nn.Linear) and (new.adapter.in_features, new.adapter.out_features) == (
        1024,
        512,
    )
    assert all(torch.equal(new.head.state_dict()[k], v) for k, v in source_head.state_dict().items())
    assert doc.trace().output == [1, 7]
    assert "adapter 1024 → 512" in edit.describe()


def test_add_head_from_file_next_to_the_old_head_returns_both(head_path) -> None:
    doc = opened("torchvision:resnet18")
    snap = snapshot(doc)
    edit = E.AddHeadFromFile.from_file("cats", "fc", head_path)
    doc.apply(edit)
    assert doc.trace().output == {"fc": [1, 1000], "cats": [1, 7]}
    doc.revert(edit)
    assert_restored(doc, snap)


def test_recipe_records_hash_and_description_and_replay_without_the_file_says_what_is_missing(
    head_path, tmp_path, monkeypatch
) -> None:
    doc = opened("torchvision:resnet34")
    doc.apply(E.ReplaceHeadFromFile.from_file("fc", head_path))
    data = json.loads(Recipe.from_document(doc).to_json())["edits"][0]
    assert data["sha256"] == read_head_file(head_path).sha256
    assert data["head"]["layers"][3] == {"kind": "linear", "in_features": 64, "out_features": 7, "bias": True}
    moved = tmp_path / "elsewhere.safetensors"
    shutil.copy(head_path, moved)
    data["file"] = str(tmp_path / "gone" / "cats.safetensors")
    monkeypatch.chdir(tmp_path)
    recipe = Recipe.from_json(json.dumps({"arch": "torchvision:resnet34", "edits": [data]}))
    with pytest.raises(EditError, match=r"cats.safetensors \(sha256 [0-9a-f]{12}…, head 512 → 7\) is not on"):
        recipe.replay(opened("torchvision:resnet34"))
    recipe.replay(opened("torchvision:resnet34", materialize=False))  # structure only: no file needed
    other = tmp_path / "cats.safetensors"  # a different head under the same name in the current folder
    export_head(nn.Linear(512, 7), describe_head(nn.Linear(512, 7), "fc", None, {}), other)
    with pytest.raises(EditError, match="is not the head file this edit attaches"):
        recipe.replay(opened("torchvision:resnet34"))


def test_code_export_loads_the_file_into_the_same_head(head_path, source_head) -> None:
    doc = opened("torchvision:mobilenet_v3_small", materialize=False)
    doc.apply(E.ReplaceHeadFromFile.from_file("classifier.3", head_path, adapter=True, seed=0))
    code = snippet_for(Recipe.from_document(doc))
    namespace = {"model": opened("torchvision:mobilenet_v3_small", materialize=False).model}
    exec(code, namespace)
    head = namespace["model"].classifier[3]
    assert torch.equal(head.head[3].weight, source_head[3].weight)
    assert isinstance(head.adapter, nn.Linear) and head.adapter.in_features == 1024


def test_a_recipe_whose_head_description_lies_is_refused_in_one_line(head_path) -> None:
    edit = E.ReplaceHeadFromFile.from_file("fc", head_path)
    data = edit.to_json()
    data["head"]["layers"][1]["kind"] = "os.system"
    with pytest.raises(EditError) as err:
        opened("torchvision:resnet34", materialize=False).apply(E.edit_from_json(data))
    assert "kind 'os.system'" in str(err.value) and "\n" not in str(err.value)


def _forged(tmp_path, description, tensors=None, raw=None):
    path = tmp_path / "forged.safetensors"
    tensors = tensors if tensors is not None else {"weight": torch.zeros(7, 512), "bias": torch.zeros(7)}
    meta = {METADATA_KEY: raw if raw is not None else json.dumps(description)}
    save_file(tensors, str(path), meta)
    return path


def _linear(**changes):
    layer = {"kind": "linear", "in_features": 512, "out_features": 7, "bias": True, **changes}
    return {
        "format": "headstudio.head", "version": 1, "layers": [layer], "input": "features",
        "in_features": 512, "out_features": 7, "classes": None, "source": {},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: _linear(kind="lambda"), "kind 'lambda'"),
        (lambda: _linear(in_features=-3), "in_features must be a positive whole number"),
        (lambda: _linear(in_features=True), "in_features must be a positive whole number"),
        (lambda: _linear(out_features="7"), "out_features must be a positive whole number"),
        (lambda: _linear(code="import os"), "unknown field 'code'"),
        (lambda: {**_linear(), "in_features": 999}, "says in_features 999 but its layers give 512"),
        (lambda: {**_linear(), "classes": ["a"]}, "class names must be 7 short strings"),
        (lambda: {**_linear(), "layers": []}, "needs 1 to 64 layers"),
        (lambda: {**_linear(), "format": "pickle"}, "not a headstudio.head object"),
        (
            lambda: {**_linear(), "layers": [_linear()["layers"][0], _linear(in_features=9)["layers"][0]]},
            "takes 9 features but gets 7",
        ),
        (lambda: {**_linear(in_features=1 << 23), "in_features": 1 << 23}, "has shape [7, 512]"),
    ],
)
def test_hostile_descriptions_are_one_line_errors(tmp_path, make, needle) -> None:
    description = make()
    with pytest.raises(HeadFileError) as err:
        read_head_file(_forged(tmp_path, description))
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("tensors", "raw", "needle"),
    [
        ({"weight": torch.zeros(7, 256), "bias": torch.zeros(7)}, None, "'weight' has shape [7, 256]"),
        ({"weight": torch.zeros(7, 512)}, None, "needs tensor 'bias'"),
        (
            {"weight": torch.zeros(7, 512), "bias": torch.zeros(7), "x": torch.zeros(1)},
            None,
            "'x' is not part",
        ),
        (
            {"weight": torch.zeros(7, 512, dtype=torch.int32), "bias": torch.zeros(7)},
            None,
            "dtype torch.int32",
        ),
        (None, "{not json", "not valid JSON"),
        (None, " " * (1 << 20) + "{}", "too long"),
    ],
)
def test_files_whose_tensors_lie_are_one_line_errors(tmp_path, tensors, raw, needle) -> None:
    with pytest.raises(HeadFileError) as err:
        read_head_file(_forged(tmp_path, _linear(), tensors, raw))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_files_that_are_not_head_files_are_one_line_errors(tmp_path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    for path, needle in ((junk, "not a readable .safetensors"), (plain, "without a head description")):
        with pytest.raises(HeadFileError) as err:
            read_head_file(path)
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_head_block_that_the_table_cannot_describe_is_refused() -> None:
    from torchvision.models.resnet import BasicBlock

    with pytest.raises(Exception, match="BasicBlock, which a head file cannot describe"):
        describe_head(BasicBlock(8, 8), "layer1.0", None, {})
