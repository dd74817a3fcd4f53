"""Edited training checkpoints are accepted by the libraries that wrote them, as if trained with the new head.

Each source file is made by the library's own save code (conftest.py); each result is read back with that
library's own loader or resume path.
"""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from container_zoo import LitTiny, TinyNet, lightning_trainer
from torch import nn

from headstudio.core.edits import ReplaceHead
from headstudio.core.errors import SaveError
from headstudio.core.opening.sources import open_source
from headstudio.core.saving import save

LIT_ARCH = "container_zoo:tiny_net"


def edited(source, arch, out, *edits):
    """Open ``source`` with ``arch``, apply ``edits``, save to ``out``: (document, report)."""
    doc = open_source(str(source), arch=arch)
    for edit in edits:
        doc.apply(edit)
    return doc, save(doc, out)


def load(path):
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


# --- Lightning --------------------------------------------------------------------------------------


def test_lightning_checkpoint_loads_with_the_new_class_count_and_resumes_training(lightning_ckpt, tmp_path):
    out = tmp_path / "edited.ckpt"
    doc, report = edited(lightning_ckpt, LIT_ARCH, out, ReplaceHead("fc", 3, keep_classes="0-1"))
    assert any("hyper_parameters.num_classes from 10 to 3" in w for w in report.warnings)
    lit = LitTiny.load_from_checkpoint(out, map_location="cpu")
    assert lit.hparams.num_classes == 3 and lit(torch.zeros(2, 3, 8, 8)).shape == (2, 3)
    assert torch.equal(lit.model.fc.weight, doc.model.fc.weight)

    src, saved = load(lightning_ckpt), load(out)
    kept, fresh = saved["optimizer_states"][0]["state"], saved["optimizer_states"][0]["param_groups"][0]
    assert torch.equal(kept[0]["exp_avg"], src["optimizer_states"][0]["state"][0]["exp_avg"])
    assert fresh["params"] == [0, 1, 2, 3, 4, 5] and 4 not in kept and 5 not in kept  # fc restarts
    trainer = lightning_trainer(str(tmp_path), max_steps=3)
    trainer.fit(LitTiny(num_classes=3), ckpt_path=out)
    assert trainer.global_step == 3  # resumed at step 2, trained one more


def test_lightning_ema_copy_is_edited_from_its_own_values_and_resumes(lightning_ema_ckpt, tmp_path):
    from lightning.pytorch.callbacks import EMAWeightAveraging

    out = tmp_path / "edited.ckpt"
    _, report = edited(lightning_ema_ckpt, LIT_ARCH, out, ReplaceHead("fc", 4, keep_classes=[0, 2]))
    src, saved = load(lightning_ema_ckpt), load(out)
    assert not torch.equal(
        src["state_dict"]["model.fc.weight"], src["current_model_state"]["model.fc.weight"]
    )
    for key in ("state_dict", "current_model_state"):
        assert torch.equal(saved[key]["model.fc.weight"][:2], src[key]["model.fc.weight"][[0, 2]])
        assert torch.equal(saved[key]["model.fc.bias"][:2], src[key]["model.fc.bias"][[0, 2]])
        untouched = {k: v for k, v in src[key].items() if not k.startswith("model.fc.")}
        assert all(torch.equal(saved[key][k], v) for k, v in untouched.items())
    new_rows = [saved[key]["model.fc.weight"][2:] for key in ("state_dict", "current_model_state")]
    assert torch.equal(*new_rows)  # a fresh head starts identical in the weights and their average
    assert any("current_model_state" in w for w in report.warnings)
    trainer = lightning_trainer(str(tmp_path), max_steps=3, callbacks=[EMAWeightAveraging(decay=0.5)])
    trainer.fit(LitTiny(num_classes=4), ckpt_path=out)
    assert trainer.global_step == 3


# --- timm -------------------------------------------------------------------------------------------


def test_timm_checkpoint_loads_with_and_without_ema_and_resumes(timm_ckpt, tmp_path):
    import timm
    from timm.models import load_checkpoint, resume_checkpoint

    out = tmp_path / "edited.pth.tar"
    _, report = edited(
        timm_ckpt, "timm:test_resnet(num_classes=10)", out, ReplaceHead("fc", 3, keep_classes=3)
    )
    src = load(timm_ckpt)
    assert not torch.equal(src["state_dict"]["fc.weight"], src["state_dict_ema"]["fc.weight"])
    for use_ema, key in ((True, "state_dict_ema"), (False, "state_dict")):
        model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
        load_checkpoint(model, str(out), use_ema=use_ema)
        assert torch.equal(model.fc.weight, src[key]["fc.weight"][:3])
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    assert load(out)["args"].num_classes == 3 and load(out)["args"].model == "test_resnet"
    assert any("args.num_classes from 10 to 3" in w for w in report.warnings)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    assert resume_checkpoint(model, str(out), optimizer=opt, log_info=False) == 1  # next epoch
    assert torch.equal(opt.state[model.conv1[0].weight]["exp_avg"], src["optimizer"]["state"][0]["exp_avg"])


# --- torchvision reference scripts ------------------------------------------------------------------


def test_torchvision_reference_layout_resumes_with_plain_load_state_dict(torchvision_ckpt, tmp_path):
    import torchvision
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    out = tmp_path / "checkpoint.pth"
    arch = "torchvision:mobilenet_v3_small(num_classes=10)"
    edited(torchvision_ckpt, arch, out, ReplaceHead("classifier.3", 3))
    src, ckpt = load(torchvision_ckpt), load(out)
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=3)
    model.load_state_dict(ckpt["model"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.load_state_dict(ckpt["optimizer"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    sched.load_state_dict(ckpt["lr_scheduler"])
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    ema.load_state_dict(ckpt["model_ema"])
    assert ckpt["epoch"] == 1 and ckpt["args"].num_classes == 3
    first = next(model.parameters())
    assert torch.equal(opt.state[first]["momentum_buffer"], src["optimizer"]["state"][0]["momentum_buffer"])
    assert model.classifier[3].weight not in opt.state  # the replaced head starts without momentum
    ema_layer = src["model_ema"]["module.classifier.0.weight"]  # untouched layers keep the EMA's own bytes
    assert torch.equal(ckpt["model_ema"]["module.classifier.0.weight"], ema_layer)
    assert not torch.equal(ckpt["model"]["classifier.0.weight"], ema_layer)
    assert ckpt["model_ema"]["module.classifier.3.weight"].shape == (3, 1024)
    model.train()
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 2])).backward()
    opt.step()
    sched.step()


def tiny_container(tmp_path, optimizer_factory, mutate=None):
    """A reference-layout checkpoint of TinyNet after one optimizer step, optionally made to lie."""
    torch.manual_seed(0)
    net = TinyNet(10)
    opt = optimizer_factory(net.parameters())
    torch.nn.functional.cross_entropy(net(torch.randn(2, 3, 8, 8)), torch.tensor([1, 2])).backward()
    opt.step()
    container = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 0}
    if mutate:
        mutate(container["optimizer"])
    path = tmp_path / "src" / "tiny.pth"
    path.parent.mkdir()
    torch.save(container, path)
    return path


def test_plain_sgd_without_state_is_kept_as_it_is(tmp_path):
    path = tiny_container(tmp_path, lambda p: torch.optim.SGD(p, lr=0.1))
    edited(path, LIT_ARCH, tmp_path / "out.pth", ReplaceHead("fc", 3))
    assert load(tmp_path / "out.pth")["optimizer"] == load(path)["optimizer"]


def test_an_mlp_head_keeps_the_backbone_state_and_groups_match_the_new_parameters(tmp_path):
    path = tiny_container(tmp_path, lambda p: torch.optim.AdamW(p, lr=0.1))
    edited(path, LIT_ARCH, tmp_path / "out.pth", ReplaceHead("fc", 3, hidden=(16,)))
    net = TinyNet(3)
    net.fc = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    saved = load(tmp_path / "out.pth")
    net.load_state_dict(saved["model"])
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    opt.load_state_dict(saved["optimizer"])
    body = net.body[0].weight
    assert torch.equal(opt.state[body]["exp_avg"], load(path)["optimizer"]["state"][0]["exp_avg"])
    assert net.fc[0].weight not in opt.state and len(saved["optimizer"]["param_groups"][0]["params"]) == 8


def test_optimizer_state_with_wrong_sizes_is_written_empty_with_matching_groups(tmp_path):
    def lie(osd):
        osd["state"][0]["exp_avg"] = torch.zeros(5)

    path = tiny_container(tmp_path, lambda p: torch.optim.AdamW(p, lr=0.1), lie)
    _, report = edited(path, LIT_ARCH, tmp_path / "out.pth", ReplaceHead("fc", 3, hidden=(16,)))
    saved = load(tmp_path / "out.pth")["optimizer"]
    assert saved["state"] == {} and saved["param_groups"][0]["params"] == list(range(8))
    assert any("could not be matched" in w and "empty per-parameter state" in w for w in report.warnings)


def test_optimizer_state_of_the_wrong_types_is_kept_as_it_was_with_a_note(tmp_path):
    def lie(osd):
        osd["param_groups"][0]["params"] = ["conv", "fc"]

    path = tiny_container(tmp_path, lambda p: torch.optim.AdamW(p, lr=0.1), lie)
    _, report = edited(path, LIT_ARCH, tmp_path / "out.pth", ReplaceHead("fc", 3))
    assert load(tmp_path / "out.pth")["optimizer"]["param_groups"][0]["params"] == ["conv", "fc"]
    assert any("kept 'optimizer' as it was" in w for w in report.warnings)


# --- names, formats, broken models ------------------------------------------------------------------


def test_a_safetensors_file_saves_as_pt_pth_and_ckpt(tmp_path):
    doc = open_source(LIT_ARCH, materialize=True)
    save(doc, tmp_path / "a.safetensors")
    # one mapped storage viewed as float and int64; its recipe names the user's own factory: consent needed
    again = open_source(str(tmp_path / "a.safetensors"), trust=True)
    for name in ("b.pt", "b.pth", "b.ckpt"):
        assert save(again, tmp_path / name).format == "state_dict"
        state = torch.load(tmp_path / name, weights_only=True)
        assert all(torch.equal(state[k], v) for k, v in doc.model.state_dict().items())


@pytest.mark.parametrize(
    ("name", "fmt"), [("x.ckpt", "safetensors"), ("x.safetensors", "state_dict"), ("x.pt", "export")]
)
def test_a_format_that_contradicts_the_name_is_refused_and_nothing_written(tmp_path, name, fmt):
    doc = open_source(LIT_ARCH, materialize=True)
    with pytest.raises(SaveError, match="misname") as caught:
        save(doc, tmp_path / name, format=fmt)
    assert "\n" not in str(caught.value) and os.listdir(tmp_path) == []


def test_a_model_whose_forward_breaks_after_the_edit_is_never_written(tmp_path):
    doc = open_source("container_zoo:HeadFeedsLayer", materialize=True)
    doc.apply(ReplaceHead("fc", 3))
    with pytest.raises(SaveError, match="forward fails after the edits at 'calibrate'"):
        save(doc, tmp_path / "broken.safetensors")
    assert os.listdir(tmp_path) == []


def test_a_weight_copy_that_lies_about_its_shapes_is_kept_as_it_was_with_a_note(tmp_path):
    path = tiny_container(tmp_path, lambda p: torch.optim.SGD(p, lr=0.1))
    container = torch.load(path, weights_only=True)
    container["model_ema"] = {f"module.{k}": torch.zeros(2) for k in container["model"]}
    torch.save(container, path)
    _, report = edited(path, LIT_ARCH, tmp_path / "out.pth", ReplaceHead("fc", 3))
    assert torch.equal(load(tmp_path / "out.pth")["model_ema"]["module.fc.weight"], torch.zeros(2))
    assert any("kept 'model_ema' as it was" in w for w in report.warnings)


def test_an_mlp_head_says_the_hyper_parameters_cannot_rebuild_it(lightning_ckpt, tmp_path):
    _, report = edited(lightning_ckpt, LIT_ARCH, tmp_path / "out.ckpt", ReplaceHead("fc", 3, hidden=(16,)))
    assert any("'hyper_parameters' cannot describe" in w for w in report.warnings)
    saved = load(tmp_path / "out.ckpt")
    assert saved["headstudio"]["recipe"] and saved["optimizer_states"][0]["param_groups"][0][
        "params"
    ] == list(range(8))


def test_weight_decay_groups_in_model_order_keep_each_parameters_state(tmp_path):
    from timm.optim import create_optimizer_v2

    path = tiny_container(tmp_path, lambda p: torch.optim.SGD(p, lr=0.1))  # its optimizer is replaced here
    container = torch.load(path, weights_only=True)
    net = TinyNet(10)
    net.load_state_dict(container["model"])
    opt = create_optimizer_v2(net, "adamw", lr=0.1, weight_decay=0.05)  # [no decay: 1-D, decay: the rest]
    torch.nn.functional.cross_entropy(net(torch.randn(2, 3, 8, 8)), torch.tensor([1, 2])).backward()
    opt.step()
    container["model"], container["optimizer"] = net.state_dict(), opt.state_dict()
    torch.save(container, path)

    edited(path, LIT_ARCH, tmp_path / "out.pth", ReplaceHead("fc", 3, hidden=(16,)))
    new = TinyNet(3)
    new.fc = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    saved = load(tmp_path / "out.pth")
    new.load_state_dict(saved["model"])
    resumed = create_optimizer_v2(new, "adamw", lr=0.1, weight_decay=0.05)
    resumed.load_state_dict(saved["optimizer"])
    for old_param, new_param in (
        (net.body[0].weight, new.body[0].weight),
        (net.body[1].bias, new.body[1].bias),
    ):
        assert torch.equal(resumed.state[new_param]["exp_avg"], opt.state[old_param]["exp_avg"])
    assert new.fc[0].weight not in resumed.state and new.fc[2].bias not in resumed.state


@pytest.mark.parametrize(
    "lie",
    [
        lambda osd: osd.update(param_groups={"params": [0]}),
        lambda osd: osd.update(state={"0": {"exp_avg": "not a tensor"}}),
        lambda osd: osd["param_groups"][0].update(param_names=5),
        lambda osd: osd["state"][0].update(exp_avg="not a tensor", exp_avg_sq=torch.zeros(3, 3)),
    ],
)
def test_an_optimizer_state_that_lies_never_raises(tmp_path, lie):
    path = tiny_container(tmp_path, lambda p: torch.optim.AdamW(p, lr=0.1), lie)
    _, report = edited(path, LIT_ARCH, tmp_path / "out.pth", ReplaceHead("fc", 3))
    assert any("'optimizer'" in w for w in report.warnings)
    assert load(tmp_path / "out.pth")["model"]["fc.weight"].shape == (3, 8)


def test_a_parameters_only_ema_copy_is_edited_and_gains_no_buffers(tmp_path):
    path = tiny_container(tmp_path, lambda p: torch.optim.SGD(p, lr=0.1))
    container = torch.load(path, weights_only=True)
    torch.manual_seed(1)
    ema = {n: torch.randn_like(p) for n, p in TinyNet(10).named_parameters()}  # exclude_buffers=True
    container["state_dict_ema"] = ema
    torch.save(container, path)
    _, report = edited(path, LIT_ARCH, tmp_path / "out.pth", ReplaceHead("fc", 4, keep_classes=[1, 3]))
    saved = load(tmp_path / "out.pth")["state_dict_ema"]
    assert set(saved) == set(ema) and torch.equal(saved["fc.weight"][:2], ema["fc.weight"][[1, 3]])
    assert torch.equal(saved["body.0.weight"], ema["body.0.weight"])
    assert any("edited the weight copy 'state_dict_ema'" in w for w in report.warnings)
