"""`headstudio inspect` / `edit` with no --arch: the architecture comes from the file, and says so."""

from __future__ import annotations

import argparse

import pytest
import timm
import torch
from cli_checks import one_line_error


@pytest.fixture(scope="module")
def convnext7(tmp_path_factory):
    """A plain torch.save(model.state_dict()) of timm convnext_nano fine-tuned for 7 classes."""
    torch.manual_seed(0)
    model = timm.create_model("convnext_nano", pretrained=False, num_classes=7)
    path = tmp_path_factory.mktemp("w") / "weights.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_inspect_json_names_the_recognised_architecture_and_how(cli, convnext7):
    (record,) = cli("inspect", convnext7[0], "--json", "--depth", "0").records
    assert record["arch"] == "timm:convnext_nano(num_classes=7)"
    assert record["arch_from"] == "recognised from the weights as timm:convnext_nano(num_classes=7)"
    assert (record["head"]["path"], record["head"]["out_features"]) == ("head.fc", 7)


def test_inspect_human_view_has_a_line_saying_how_the_architecture_was_known(cli, convnext7):
    result = cli("inspect", convnext7[0], "--depth", "0")
    assert result.status == 0
    assert "Architecture: recognised from the weights as timm:convnext_nano(num_classes=7)" in result.out


def test_inspect_with_arch_says_it_came_from_the_option(cli, convnext7):
    (record,) = cli("inspect", convnext7[0], "--arch", "timm:convnext_nano(num_classes=7)", "--json").records
    assert record["arch_from"] == "--arch"


def test_weights_ema_opens_the_ema_copy_of_a_timm_checkpoint(cli, tmp_path, convnext7):
    state = convnext7[1]
    ema = {k: v * 0 if v.is_floating_point() else v for k, v in state.items()}
    args = argparse.Namespace(model="convnext_nano", num_classes=7)
    torch.save(
        {"arch": "convnext_nano", "args": args, "state_dict": state, "state_dict_ema": ema},
        tmp_path / "c.pth.tar",
    )
    (main,) = cli("inspect", tmp_path / "c.pth.tar", "--json", "--depth", "0").records
    (with_ema,) = cli("inspect", tmp_path / "c.pth.tar", "--weights", "ema", "--json", "--depth", "0").records
    assert main["arch_from"] == with_ema["arch_from"] == "timm checkpoint (args.model, args.num_classes)"
    assert "an EMA copy is in 'state_dict_ema': --weights ema opens it" in main["notes"]
    assert "EMA weights taken from 'state_dict_ema'" in with_ema["notes"]


def test_edit_without_arch_saves_a_file_that_reopens_edited(cli, tmp_path, convnext7):
    out = tmp_path / "three.safetensors"
    result = cli("edit", convnext7[0], "--replace-head", "3", "-o", out)
    assert result.status == 0, result.err
    assert "Architecture: recognised from the weights as timm:convnext_nano(num_classes=7)" in result.out
    (record,) = cli("inspect", out, "--json", "--depth", "0").records
    assert record["head"]["out_features"] == 3 and record["arch_from"] == "the file's recipe"


def test_near_weights_list_the_nearest_architectures_in_one_line(cli, tmp_path, convnext7):
    state = dict(convnext7[1])
    state.pop("stages.3.blocks.1.gamma")
    torch.save(state, tmp_path / "w.pth")
    line = one_line_error(cli("inspect", tmp_path / "w.pth"))
    assert (
        "nearest: timm:convnext_nano(num_classes=7)" in line and "1 missing (stages.3.blocks.1.gamma)" in line
    )
    assert "resnet50" not in line
