"""``head export``, ``edit --from [--adapter auto]``, ``edit --remove``: one-line errors, no partial files."""

from __future__ import annotations

import json

import pytest
import torch
from cli_checks import listing, one_line_error, sha

R18 = "torchvision:resnet18"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A resnet18 checkpoint with a 7-class head (seeded), written by torch.save, and its head file."""
    import torchvision

    from headstudio.cli import main

    folder = tmp_path_factory.mktemp("heads")
    torch.manual_seed(5)
    model = torchvision.models.resnet18(num_classes=7)
    ckpt = folder / "cats.pt"
    torch.save(model.state_dict(), ckpt)
    head = folder / "cats-head.safetensors"
    assert (
        main(["head", "export", str(ckpt), "--arch", "torchvision:resnet18(num_classes=7)", "-o", str(head)])
        == 0
    )
    return ckpt, head, model.fc.state_dict()


def test_head_export_writes_the_head_with_its_description_and_source_hash(trained, cli, tmp_path) -> None:
    from headstudio.core.head_files import read_head_file

    ckpt, _, fc = trained
    out = tmp_path / "fc.safetensors"
    before = sha(ckpt)
    result = cli("head", "export", ckpt, "--arch", "torchvision:resnet18(num_classes=7)", "-o", out)
    assert result.status == 0, result.err
    assert "exported head fc (512 → 7, 3,591 params, linear)" in result.out
    loaded = read_head_file(out)
    assert loaded.description["source"] == {
        "name": "cats.pt",
        "arch": "torchvision:resnet18(num_classes=7)",
        "sha256": before,
        "head_path": "fc",
    }
    assert all(torch.equal(loaded.state[k], v) for k, v in fc.items())
    assert sha(ckpt) == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--head", "layer1", "-o", "x.safetensors"], "'layer1.0' is a BasicBlock"),
        (["--head", "layer1.0", "-o", "x.safetensors"], "BasicBlock, which a head file cannot describe"),
        (["-o", "x.pt"], "a head file is a .safetensors file"),
        (["--head", "nothere", "-o", "x.safetensors"], "no head 'nothere'"),
    ],
)
def test_head_export_refuses_in_one_line_and_writes_nothing(cli, tmp_path, monkeypatch, args, needle) -> None:
    monkeypatch.chdir(tmp_path)
    message = one_line_error(cli("head", "export", R18, *args))
    assert needle in message
    assert listing(tmp_path) == []


def test_edit_from_a_head_file_that_fits_and_the_saved_model_has_its_weights(trained, cli, tmp_path) -> None:
    from safetensors.torch import load_file

    _, head, fc = trained
    out = tmp_path / "r34.safetensors"
    result = cli(
        "edit", "torchvision:resnet34", "--from", head, "-o", out, "--recipe-out", tmp_path / "r.json"
    )
    assert result.status == 0, result.err
    assert "Replace head fc with cats-head.safetensors (512 → 7)" in result.out
    saved = load_file(out)
    assert torch.equal(saved["fc.weight"], fc["weight"]) and torch.equal(saved["fc.bias"], fc["bias"])
    edit = json.loads((tmp_path / "r.json").read_text())["edits"][0]
    assert edit["kind"] == "replace_head_from_file" and edit["sha256"] == sha(head)
    report = cli("inspect", out, "--json").records[0]
    assert report["error"] is None and report["output_shape"] == [1, 7]


def test_edit_from_a_head_file_that_does_not_fit_suggests_the_adapter(trained, cli, tmp_path) -> None:
    _, head, _ = trained
    out = tmp_path / "mb.safetensors"
    message = one_line_error(cli("edit", "torchvision:mobilenet_v3_small", "--from", head, "-o", out))
    assert "takes 512 features but 'classifier.3' gives 1024" in message and "--adapter auto" in message
    assert listing(tmp_path) == []
    result = cli("edit", "torchvision:mobilenet_v3_small", "--from", head, "--adapter", "auto", "-o", out)
    assert result.status == 0, result.err
    assert "adapter 1024 → 512" in result.out
    assert cli("inspect", out, "--json").records[0]["output_shape"] == [1, 7]


def test_edit_from_with_add_head_adds_the_file_head_under_a_name(trained, cli, tmp_path) -> None:
    _, head, _ = trained
    out = tmp_path / "two.pt"
    result = cli("edit", R18, "--from", head, "--add-head", "cats", "-o", out)
    assert result.status == 0, result.err
    assert "Add head cats from cats-head.safetensors (512 → 7) at fc" in result.out
    assert "{fc: [1, 1000], cats: [1, 7]}" in result.out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--adapter", "64"], "write --adapter auto"),
        (["--replace-head", "3"], "drop --replace-head"),
        (["--add-head", "cats:3"], "takes only the new head's NAME"),
    ],
)
def test_meaningless_from_options_are_one_line_errors(trained, cli, tmp_path, extra, needle) -> None:
    _, head, _ = trained
    message = one_line_error(cli("edit", R18, "--from", head, *extra, "-o", tmp_path / "x.pt"))
    assert needle in message


def test_edit_from_a_hostile_head_file_is_one_line(cli, tmp_path) -> None:
    from safetensors.torch import save_file

    forged = tmp_path / "forged.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(forged), {"headstudio.head": '{"format": "headstudio.head"'})
    message = one_line_error(cli("edit", R18, "--from", forged, "-o", tmp_path / "x.pt"))
    assert "not valid JSON" in message
    assert listing(tmp_path) == ["forged.safetensors"]


def test_apply_of_a_from_file_recipe_without_the_head_file_names_what_is_missing(
    trained, cli, tmp_path
) -> None:
    _, head, _ = trained
    moved = tmp_path / "cats-head.safetensors"
    moved.write_bytes(head.read_bytes())
    recipe = tmp_path / "r.json"
    assert cli("edit", R18, "--from", moved, "-o", tmp_path / "a.pt", "--recipe-out", recipe).status == 0
    moved.unlink()
    message = one_line_error(cli("apply", recipe, R18, "-o", tmp_path / "b.pt"))
    assert "cats-head.safetensors" in message and "is not on this machine" in message
    assert not (tmp_path / "b.pt").exists()


def test_edit_remove_layers_saves_a_model_that_reopens_with_fewer_blocks(cli, tmp_path) -> None:
    out = tmp_path / "cut.safetensors"
    result = cli("edit", R18, "--remove", "layer1.1,layer3.1", "-o", out, "--print-code")
    assert result.status == 0, result.err
    assert "Remove 2 layers (layer1.1, layer3.1)" in result.out and "del model.layer3[1]" in result.out
    report = cli("inspect", out, "--json").records[0]
    paths = {m["path"] for m in report["modules"]}
    assert "layer1.0" in paths and "layer1.1" not in paths and report["output_shape"] == [1, 1000]


def test_edit_remove_that_breaks_shapes_names_the_first_mismatch_and_writes_nothing(cli, tmp_path) -> None:
    message = one_line_error(cli("edit", R18, "--remove", "layer2.0", "-o", tmp_path / "x.pt"))
    assert "first mismatch at 'layer2.1.conv1'" in message
    assert listing(tmp_path) == []


@pytest.fixture
def labelled_factory(tmp_path, monkeypatch) -> str:
    """A user's model whose config names its classes (as a transformers config's id2label does)."""
    (tmp_path / "labelledmodels.py").write_text(
        "from types import SimpleNamespace\nfrom torch import nn\n\n\n"
        "class Labelled(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = nn.Linear(8, 16)\n"
        "        self.classifier = nn.Linear(16, 3)\n"
        "        self.config = SimpleNamespace(id2label={0: 'cat', 1: 'dog', 2: 'fox'})\n\n"
        "    def forward(self, x):\n"
        "        return self.classifier(self.body(x).relu())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "labelledmodels:Labelled"
    import sys

    sys.modules.pop("labelledmodels", None)


def test_head_export_keeps_the_class_names_the_config_carries(labelled_factory, cli, tmp_path) -> None:
    from headstudio.core.head_files import read_head_file

    out = tmp_path / "labelled-head.safetensors"
    result = cli("head", "export", labelled_factory, "-o", out)
    assert result.status == 0, result.err
    loaded = read_head_file(out)
    assert loaded.description["classes"] == ["cat", "dog", "fox"]
    assert loaded.description["source"]["head_path"] == "classifier" and loaded.out_features == 3
