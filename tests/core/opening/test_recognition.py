"""Checkpoints people really have open without --arch: what the file says first, then the weights."""

from __future__ import annotations

import argparse
import sys

import pytest
import torch

from headstudio.core.errors import ArchitectureRequiredError, SourceError, UnsafeCheckpointError
from headstudio.core.opening.sources import open_source


def same_weights(model, state: dict) -> bool:
    mine = model.state_dict()
    return all(torch.equal(mine[k], v) for k, v in state.items() if not k.endswith("num_batches_tracked"))


# --- Lightning -----------------------------------------------------------------------------------------


def test_lightning_checkpoint_opens_from_its_hyper_parameters(lightning_timm_ckpt):
    doc = open_source(str(lightning_timm_ckpt.path))
    assert doc.origin.arch == "timm:resnet10t(num_classes=4)"
    assert doc.origin.arch_from == "Lightning hyper_parameters (model_name)"
    assert (doc.head.path, doc.head.out_features) == ("fc", 4)
    assert same_weights(doc.model, lightning_timm_ckpt.state)
    assert "ignored 1 keys outside 'model.'" in doc.origin.notes  # the loss's class weights


def test_lightning_class_given_by_the_user_is_built_from_hyper_parameters(lightning_own_ckpt):
    doc = open_source(str(lightning_own_ckpt.path), arch="lit_classifiers:LitSmallNet")
    assert type(doc.model).__name__ == "LitSmallNet"
    assert doc.origin.arch == "lit_classifiers:LitSmallNet(num_classes=3, width=8)"
    assert (doc.head.path, doc.head.out_features) == ("model.5", 3)
    assert same_weights(doc.model, lightning_own_ckpt.state)


def test_lightning_own_network_without_arch_names_what_to_pass(lightning_own_ckpt):
    with pytest.raises(ArchitectureRequiredError, match="match no torchvision or timm architecture"):
        open_source(str(lightning_own_ckpt.path))


def test_lightning_class_path_recorded_in_the_file_needs_consent(tmp_path, lightning_own_ckpt):
    ckpt = torch.load(lightning_own_ckpt.path, weights_only=True)
    ckpt["hyper_parameters"]["_class_path"] = "lit_classifiers.LitSmallNet"
    ckpt["hyper_parameters"]["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    torch.save(ckpt, tmp_path / "cli.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"lit_classifiers\.LitSmallNet.*--trust"):
        open_source(str(tmp_path / "cli.ckpt"))
    doc = open_source(str(tmp_path / "cli.ckpt"), trust=True)
    assert type(doc.model).__name__ == "LitSmallNet" and doc.head.out_features == 3
    assert "_class_path" in doc.origin.arch_from


def test_class_path_in_a_file_is_never_imported_without_trust(tmp_path, resnet18_state):
    marker = tmp_path / "ran"
    (tmp_path / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Lit: pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        state = {"model." + k: v for k, v in resnet18_state.items()}
        ckpt = {"state_dict": state, "hyper_parameters": {"_class_path": "evil_module.Lit"}}
        torch.save(ckpt, tmp_path / "lies.ckpt")
        doc = open_source(str(tmp_path / "lies.ckpt"))  # the weights are recognised on their own
    finally:
        sys.path.remove(str(tmp_path))
    assert not marker.exists() and "evil_module" not in sys.modules
    assert doc.origin.arch == "torchvision:resnet18"
    assert any("evil_module.Lit" in n and "not imported" in n for n in doc.origin.notes)


# --- timm ----------------------------------------------------------------------------------------------


def test_timm_checkpoint_saver_output_opens_its_main_weights(timm_saver_ckpt):
    doc = open_source(str(timm_saver_ckpt.path))
    assert doc.origin.arch == "timm:convnext_atto(num_classes=5)"
    assert doc.origin.arch_from == "timm checkpoint (args.model, args.num_classes)"
    assert (doc.head.path, doc.head.out_features) == ("head.fc", 5)
    assert doc.origin.checkpoint.key == ("state_dict",)
    assert same_weights(doc.model, timm_saver_ckpt.state)


def test_timm_ema_weights_open_with_weights_ema(timm_saver_ckpt):
    doc = open_source(str(timm_saver_ckpt.path), weights="ema")
    assert doc.origin.checkpoint.key == ("state_dict_ema",)
    assert same_weights(doc.model, timm_saver_ckpt.ema)
    assert not same_weights(doc.model, timm_saver_ckpt.state)


def test_timm_checkpoint_without_args_is_recognised_by_its_weights(timm_saver_no_args_ckpt):
    doc = open_source(str(timm_saver_no_args_ckpt.path))
    assert doc.origin.arch == "timm:convnext_atto(num_classes=5)"
    assert doc.origin.arch_from.startswith("recognised from the weights")
    assert same_weights(doc.model, timm_saver_no_args_ckpt.state)


# --- torchvision reference scripts ---------------------------------------------------------------------


def test_torchvision_reference_checkpoint_reads_args_model_and_classes_from_weights(
    torchvision_reference_ckpt,
):
    doc = open_source(str(torchvision_reference_ckpt.path))
    assert doc.origin.arch == "torchvision:mobilenet_v3_small(num_classes=6)"
    assert (
        doc.origin.arch_from
        == "torchvision reference checkpoint (args.model); num_classes=6 read from the weights"
    )
    assert (doc.head.path, doc.head.out_features) == ("classifier.3", 6)
    assert same_weights(doc.model, torchvision_reference_ckpt.state)


def test_torchvision_reference_model_ema_opens_with_weights_ema(torchvision_reference_ckpt):
    doc = open_source(str(torchvision_reference_ckpt.path), weights="ema")
    assert doc.origin.checkpoint.key == ("model_ema",)
    assert same_weights(doc.model, torchvision_reference_ckpt.ema)


def test_weights_ema_on_a_file_without_ema_says_so(ddp_state_pth):
    with pytest.raises(SourceError, match="no EMA copy; drop --weights ema"):
        open_source(str(ddp_state_pth.path), weights="ema")


# --- wrappers and bare weights -------------------------------------------------------------------------


def test_ddp_state_dict_is_recognised_with_its_class_count(ddp_state_pth):
    doc = open_source(str(ddp_state_pth.path))
    assert doc.origin.arch == "torchvision:squeezenet1_1(num_classes=5)"
    assert doc.head.out_features == 5
    assert same_weights(doc.model, ddp_state_pth.state)
    assert "stripped key prefix 'module.'" in doc.origin.notes


def test_compiled_state_dict_is_recognised_with_its_class_count(compiled_state_pth):
    doc = open_source(str(compiled_state_pth.path))
    assert doc.origin.arch == "timm:convnext_atto(num_classes=7)"
    assert doc.origin.arch_from == "recognised from the weights as timm:convnext_atto(num_classes=7)"
    assert same_weights(doc.model, compiled_state_pth.state)


def test_bare_state_dict_is_recognised(resnet18_pt, resnet18_state):
    doc = open_source(str(resnet18_pt))
    assert doc.origin.arch == "torchvision:resnet18"
    assert any("timm:resnet18" in n for n in doc.origin.notes)  # same parameters: the tie is said
    assert same_weights(doc.model, resnet18_state)


# --- files that lie ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "arch"),
    [
        (argparse.Namespace(model="os.system", num_classes=5), "'os.system'"),
        (argparse.Namespace(model="convnext_atto", num_classes="5; import os"), "string class count"),
        (argparse.Namespace(model=["convnext_atto"], num_classes=5.0), "wrong types"),
        (argparse.Namespace(model="resnet50", num_classes=5), "an architecture the weights do not fit"),
        (argparse.Namespace(model="convnext_atto", num_classes=1000), "a class count the weights deny"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_hints_that_lie_are_ignored_and_the_weights_decide(tmp_path, timm_saver_ckpt, args, arch):
    ckpt = torch.load(timm_saver_ckpt.path, weights_only=False)  # our own file, args and all
    ckpt["args"], ckpt["arch"] = args, getattr(args, "model", None)
    torch.save(ckpt, tmp_path / "lies.pth.tar")
    doc = open_source(str(tmp_path / "lies.pth.tar"))
    assert doc.origin.arch == "timm:convnext_atto(num_classes=5)"
    assert same_weights(doc.model, timm_saver_ckpt.state)


def test_lightning_hint_naming_a_non_allow_listed_callable_runs_nothing(tmp_path, lightning_timm_ckpt):
    ckpt = torch.load(lightning_timm_ckpt.path, weights_only=True)
    ckpt["hyper_parameters"] = {"model_name": "subprocess:call", "num_classes": "4"}
    torch.save(ckpt, tmp_path / "lies.ckpt")
    doc = open_source(str(tmp_path / "lies.ckpt"))
    assert doc.origin.arch == "timm:resnet10t(num_classes=4)"
    assert doc.origin.arch_from.startswith("recognised from the weights")


def test_a_name_both_libraries_have_is_tried_in_each_until_the_weights_fit(tmp_path):
    import timm

    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=4)  # not torchvision's layout
    ckpt = {
        "state_dict": {"model." + k: v for k, v in model.state_dict().items()},
        "hyper_parameters": {"model_name": "efficientnet_b0", "num_classes": 4},
        "pytorch-lightning_version": "2.6.6",
    }
    torch.save(ckpt, tmp_path / "both.ckpt")
    doc = open_source(str(tmp_path / "both.ckpt"))
    assert doc.origin.arch == "timm:efficientnet_b0(num_classes=4)"
    assert doc.origin.arch_from == "Lightning hyper_parameters (model_name)"
    assert any(
        "torchvision:efficientnet_b0(num_classes=4), but the weights do not fit" in n
        for n in doc.origin.notes
    )
