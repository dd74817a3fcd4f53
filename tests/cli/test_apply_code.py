"""``headstudio apply`` replays a recipe on another checkpoint; ``headstudio code`` prints plain PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from cli_checks import one_line_error, sha

R18 = "torchvision:resnet18"


@pytest.fixture
def recipe(cli, tmp_path) -> Path:
    """The recipe of 'replace resnet18's head with 7 classes, freeze the backbone', saved by edit."""
    path = tmp_path / "recipe.json"
    result = cli(
        "edit", R18, "--replace-head", "7", "--freeze-backbone", "--seed", "0",
        "-o", tmp_path / "first.safetensors", "--recipe-out", path,
    )  # fmt: skip
    assert result.status == 0, result.err
    return path


def test_apply_replays_a_recipe_on_bare_weights_of_the_same_architecture(cli, recipe, resnet18_pt, tmp_path):
    before = sha(resnet18_pt)
    out = tmp_path / "out" / "replayed.safetensors"
    out.parent.mkdir()
    result = cli("apply", recipe, resnet18_pt, "-o", out)
    assert result.status == 0, result.err
    assert "verified" in result.out
    report = cli("inspect", out, "--json").records[0]
    assert report["head"]["out_features"] == 7 and report["trainable_params"] == 3591
    assert sha(resnet18_pt) == before


def test_apply_keeps_the_trained_backbone_weights(cli, recipe, resnet18_pt, resnet18_state, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "replayed.safetensors"
    assert cli("apply", recipe, resnet18_pt, "-o", out).status == 0
    saved = load_file(str(out))
    assert torch.equal(saved["layer1.0.conv1.weight"], resnet18_state["layer1.0.conv1.weight"])
    assert saved["fc.weight"].shape == (7, 512)


def test_a_recipe_for_another_architecture_is_refused(cli, recipe, tmp_path):
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), tmp_path / "sq.pt")
    result = cli(
        "apply", recipe, tmp_path / "sq.pt", "--arch", "torchvision:squeezenet1_1", "-o", tmp_path / "o.pt"
    )
    one_line_error(result)
    assert not (tmp_path / "o.pt").exists()


def test_a_recipe_with_an_unknown_edit_is_refused(cli, recipe, resnet18_pt, tmp_path):
    data = json.loads(recipe.read_text())
    edit = data["edits"][0]
    kind_key = next(k for k, v in edit.items() if v == "ReplaceHead" or v == "replace_head")
    edit[kind_key] = "ExplodeHead"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    message = one_line_error(cli("apply", bad, resnet18_pt, "-o", tmp_path / "o.safetensors"))
    assert "ExplodeHead" in message
    assert not (tmp_path / "o.safetensors").exists()


def test_a_missing_recipe_file_is_one_line(cli, resnet18_pt, tmp_path):
    assert "no such recipe" in one_line_error(cli("code", tmp_path / "nope.json"))
    one_line_error(cli("apply", tmp_path / "nope.json", resnet18_pt, "-o", tmp_path / "o.pt"))


def test_code_prints_a_snippet_that_performs_the_same_edits(cli, recipe):
    result = cli("code", recipe)
    assert result.status == 0, result.err
    model = torchvision.models.resnet18(weights=None)
    namespace = {"model": model, "torch": torch, "nn": torch.nn}
    exec(result.out, namespace)  # the user's own model, edited by the printed plain PyTorch
    model = namespace["model"]
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 3591
