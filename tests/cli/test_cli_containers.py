"""``headstudio edit`` on training checkpoints: the summary names every field it changed; names and formats
agree; a model whose forward the edit breaks is never written."""

from __future__ import annotations

import os

import pytest
import torch

LIT_ARCH = "container_zoo:tiny_net"


@pytest.fixture(scope="module")
def lit_ckpt(tmp_path_factory: pytest.TempPathFactory):
    from container_zoo import make_lightning_checkpoint

    return make_lightning_checkpoint(tmp_path_factory.mktemp("cli_lightning"))


def test_edit_of_a_lightning_checkpoint_says_which_fields_changed(cli, lit_ckpt, tmp_path):
    out = tmp_path / "edited.ckpt"
    result = cli("edit", lit_ckpt, "--arch", LIT_ARCH, "--replace-head", "3", "-o", out)
    assert result.status == 0, result.err
    assert "Note: changed hyper_parameters.num_classes from 10 to 3" in result.out
    assert "'optimizer_states[0]': kept the optimizer state of 4 unchanged parameters" in result.out
    saved = torch.load(out, weights_only=True)
    assert saved["hyper_parameters"]["num_classes"] == 3 and "lr_schedulers" in saved


@pytest.mark.parametrize("name", ["edited.pt", "edited.pth", "edited.tar"])
def test_torch_names_keep_the_container(cli, lit_ckpt, tmp_path, name):
    result = cli("edit", lit_ckpt, "--arch", LIT_ARCH, "--replace-head", "3", "-o", tmp_path / name)
    assert result.status == 0, result.err
    saved = torch.load(tmp_path / name, weights_only=True)
    assert {"state_dict", "optimizer_states", "hyper_parameters"} <= set(saved)


def test_a_format_that_contradicts_the_name_is_one_line_and_writes_nothing(cli, lit_ckpt, tmp_path):
    out = tmp_path / "edited.ckpt"
    result = cli(
        "edit", lit_ckpt, "--arch", LIT_ARCH, "--replace-head", "3", "--format", "safetensors", "-o", out
    )
    assert result.status == 1 and result.err.count("\n") == 1 and "misname" in result.err
    assert os.listdir(tmp_path) == []


def test_edit_refuses_to_save_a_model_whose_forward_the_edit_breaks(cli, tmp_path):
    out = tmp_path / "out.pt"
    result = cli("edit", "container_zoo:HeadFeedsLayer", "--head", "fc", "--replace-head", "3", "-o", out)
    assert result.status == 1 and result.err.count("\n") == 1
    assert (
        "forward fails after the edits at 'calibrate'" in result.err and "nothing was written" in result.err
    )
    assert os.listdir(tmp_path) == []
