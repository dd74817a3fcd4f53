"""open_source: every kind of SOURCE a user has opens into a Document with the right weights and head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from headstudio.core.errors import (
    ArchitectureMismatchError,
    SourceError,
    TorchScriptConsentError,
    UnsafeCheckpointError,
    UnsupportedOperationError,
)
from headstudio.core.opening.sources import open_source
from headstudio.core.opening.specs import has_meta_tensors

R18 = "torchvision:resnet18"


def weights_equal(doc, state: dict) -> bool:
    """Every tensor of the opened model is bit-identical to what was saved."""
    mine = doc.model.state_dict()
    return mine.keys() == state.keys() and all(torch.equal(mine[k], v) for k, v in state.items())


# --- specs -------------------------------------------------------------------------------------------


def test_torchvision_spec_builds_on_meta_without_memory():
    doc = open_source(R18)
    assert doc.origin.kind == "spec" and doc.origin.arch == R18
    assert all(p.is_meta for p in doc.model.parameters())
    assert doc.head.path == "fc" and doc.trace().output == [1, 1000]


def test_spec_kwargs_reach_the_factory():
    doc = open_source("torchvision:resnet18(num_classes=10)")
    assert doc.head.out_features == 10
    assert doc.origin.arch == "torchvision:resnet18(num_classes=10)"


def test_materialize_gives_real_weights_for_saving():
    doc = open_source("torchvision:squeezenet1_1", materialize=True)
    assert not has_meta_tensors(doc.model)


def test_regnet_spec_builds_although_its_init_computes_with_tensors():
    doc = open_source("torchvision:regnet_y_400mf")
    assert doc.head.path == "fc" and doc.head.in_features == 440


def test_segmentation_spec_never_downloads_backbone_weights(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: any weights would need a download
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    doc = open_source("torchvision:lraspp_mobilenet_v3_large")
    assert doc.trace().output == {"out": [1, 21, 224, 224]}
    assert [h.path for h in doc.heads()] == ["classifier.low_classifier", "classifier.high_classifier"]


@pytest.mark.parametrize(("name", "shape"), [("r3d_18", (1, 3, 16, 112, 112)), ("s3d", (1, 3, 16, 224, 224))])
def test_video_spec_default_input_is_the_clip_its_weights_expect(name, shape):
    doc = open_source(f"torchvision:{name}")
    assert doc.input_shape == shape
    assert doc.trace().output == [1, 400]


def test_timm_spec_opens_with_its_head():
    pytest.importorskip("timm")
    doc = open_source("timm:resnet10t(num_classes=3)")
    assert (doc.head.path, doc.head.out_features) == ("fc", 3)


def test_user_factory_spec_from_own_module(tiny_factory):
    doc = open_source(f"{tiny_factory}:two_heads(num_classes=7)")
    assert doc.origin.arch == f"{tiny_factory}:two_heads(num_classes=7)"
    assert [h.out_features for h in doc.heads()] == [7, 4]


def test_user_factory_that_returns_no_model_is_refused(tiny_factory):
    with pytest.raises(SourceError, match=r"returned int, not a torch\.nn\.Module"):
        open_source(f"{tiny_factory}:not_a_model")


def test_user_factory_missing_attribute_is_named(tiny_factory):
    with pytest.raises(SourceError, match="has no attribute 'nothing_here'"):
        open_source(f"{tiny_factory}:nothing_here")


def test_unimportable_spec_module_says_install_it():
    with pytest.raises(SourceError, match=r"cannot import 'no_such_pkg_xyz\.models'.*install it"):
        open_source("no_such_pkg_xyz.models:net")


def test_misspelled_namespace_suggests_the_right_spec():
    with pytest.raises(SourceError, match=r"did you mean torchvision:resnet18\?"):
        open_source("tochvision:resnet18")


def test_wrong_spec_keyword_is_a_source_error():
    with pytest.raises(SourceError, match="num_clases"):
        open_source("torchvision:resnet18(num_clases=10)")


def test_arch_with_a_spec_source_is_refused():
    with pytest.raises(SourceError, match="--arch applies to weight files"):
        open_source(R18, arch=R18)


# --- weight files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_bare_state_dict_with_arch_opens_with_the_saved_weights(tmp_path, resnet18_state, suffix):
    path = tmp_path / f"weights{suffix}"
    torch.save(resnet18_state, path)
    doc = open_source(str(path), arch=R18)
    assert doc.origin.kind == "state_dict" and doc.origin.arch == R18
    assert weights_equal(doc, resnet18_state)
    assert doc.head.path == "fc" and doc.trace().mode == "fake"


def test_bare_state_dict_without_arch_is_recognised_by_its_weights(resnet18_pt, resnet18_state):
    doc = open_source(str(resnet18_pt))
    assert doc.origin.arch == R18 and doc.origin.arch_from == f"recognised from the weights as {R18}"
    assert weights_equal(doc, resnet18_state)


@pytest.mark.parametrize(
    ("container", "key"),
    [
        (
            lambda sd: {"epoch": 3, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}},
            "state_dict",
        ),
        (lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {}, "epoch": 9}, "model_state_dict"),
        (lambda sd: {"args": {"lr": 0.1}, "model": sd}, "model"),
        (lambda sd: {"ema": sd, "step": 100}, "ema"),
        (lambda sd: {"checkpoint": {"net": sd, "meta": {"epoch": 1}}}, "checkpoint.net"),
    ],
    ids=["state_dict", "model_state_dict", "model", "ema", "nested"],
)
def test_training_checkpoint_weights_are_found_under_any_common_key(tmp_path, resnet18_state, container, key):
    path = tmp_path / "train.ckpt"
    torch.save(container(resnet18_state), path)
    doc = open_source(str(path), arch=R18)
    assert doc.origin.kind == "checkpoint"
    assert ".".join(doc.origin.checkpoint.key) == key
    assert weights_equal(doc, resnet18_state)


@pytest.mark.parametrize("prefix", ["module.", "model.", "model.module.", "_orig_mod."])
def test_wrapper_prefixes_are_stripped_with_a_note(tmp_path, resnet18_state, prefix):
    path = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": {prefix + k: v for k, v in resnet18_state.items()}, "epoch": 1}, path)
    doc = open_source(str(path), arch=R18)
    assert weights_equal(doc, resnet18_state)
    assert f"stripped key prefix '{prefix}'" in doc.origin.notes


def test_lightning_extra_modules_outside_the_model_are_ignored_with_a_note(tmp_path, resnet18_state):
    state = {**{"model." + k: v for k, v in resnet18_state.items()}, "loss_fn.weight": torch.ones(3)}
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.4"}, tmp_path / "l.ckpt")
    doc = open_source(str(tmp_path / "l.ckpt"), arch=R18)
    assert "ignored 1 keys outside 'model.'" in doc.origin.notes


def test_model_weights_preferred_over_ema_of_the_same_size(tmp_path, resnet18_state):
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in resnet18_state.items()}
    torch.save({"model_ema": ema, "model": resnet18_state}, tmp_path / "both.pth")
    doc = open_source(str(tmp_path / "both.pth"), arch=R18)
    assert doc.origin.checkpoint.key == ("model",)
    assert weights_equal(doc, resnet18_state)
    assert any("also present: model_ema" in n for n in doc.origin.notes)


def test_old_checkpoint_without_num_batches_tracked_opens(tmp_path, resnet18_state):
    old = {k: v for k, v in resnet18_state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    doc = open_source(str(tmp_path / "old.pth"), arch=R18)
    assert doc.model.bn1.num_batches_tracked.item() == 0
    assert torch.equal(doc.model.fc.weight, resnet18_state["fc.weight"])
    assert any("num_batches_tracked" in n for n in doc.origin.notes)


def test_legacy_non_zip_state_dict_opens(tmp_path, resnet18_state):
    path = tmp_path / "legacy.pth"
    torch.save(resnet18_state, path, _use_new_zipfile_serialization=False)
    assert weights_equal(open_source(str(path), arch=R18), resnet18_state)


def test_safetensors_opens_with_the_saved_weights(tmp_path, resnet18_state):
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18_state.items()}, str(path))
    doc = open_source(str(path), arch=R18)
    assert doc.origin.kind == "safetensors"
    assert weights_equal(doc, resnet18_state)


def test_wrong_arch_is_an_architecture_mismatch(resnet18_pt):
    with pytest.raises(ArchitectureMismatchError, match=r"do not fit torchvision:resnet34: \d+ missing"):
        open_source(str(resnet18_pt), arch="torchvision:resnet34")


# --- whole pickled models and TorchScript --------------------------------------------------------------


@pytest.fixture(scope="module")
def pickled_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pickled") / "whole.pt"
    torch.save(torchvision.models.squeezenet1_1(weights=None), path)
    return path


def test_pickled_module_is_refused_without_trust_listing_its_globals(pickled_model):
    with pytest.raises(UnsafeCheckpointError) as info:
        open_source(str(pickled_model))
    assert "torchvision.models.squeezenet.SqueezeNet" in info.value.globals
    assert "torch.nn.modules.conv.Conv2d" in info.value.globals
    assert "--trust" in str(info.value) and "\n" not in str(info.value)


def test_pickled_module_opens_with_trust(pickled_model):
    doc = open_source(str(pickled_model), trust=True)
    assert doc.origin.kind == "module"
    assert doc.origin.arch == "torchvision.models.squeezenet.SqueezeNet"
    assert doc.editable and doc.head.path == "classifier.1"


def test_pickled_module_with_arch_says_drop_it(pickled_model):
    with pytest.raises(UnsupportedOperationError, match="drop --arch"):
        open_source(str(pickled_model), arch="torchvision:squeezenet1_1", trust=True)


def test_torchscript_needs_consent_like_any_code(scripted_pt):
    with pytest.raises(TorchScriptConsentError) as info:
        open_source(str(scripted_pt))
    assert isinstance(info.value, UnsafeCheckpointError)  # callers ask for consent the same way
    assert "TorchScript archive" in str(info.value)


def test_torchscript_with_trust_is_inspectable_but_not_editable(scripted_pt):
    doc = open_source(str(scripted_pt), trust=True)
    assert doc.origin.kind == "torchscript" and not doc.editable
    assert doc.trace().output == [1, 1000]
    assert doc.tree().find("classifier.1").type == "Conv2d"
    assert any("inspect only" in n for n in doc.origin.notes)


def test_progress_reports_until_ready(resnet18_pt):
    seen: list[tuple[str, float]] = []
    open_source(str(resnet18_pt), arch=R18, progress=lambda m, f: seen.append((m, f)))
    assert seen[-1] == ("ready", 1.0)
    assert [f for _, f in seen] == sorted(f for _, f in seen)


def test_trusted_pickle_whose_code_is_missing_says_which_module(tmp_path, tiny_factory, monkeypatch):
    import importlib
    import sys

    module = importlib.import_module(tiny_factory)
    torch.save(module.TwoHeads(), tmp_path / "whole.pt")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not Path(p, f"{tiny_factory}.py").exists()])
    monkeypatch.delitem(sys.modules, tiny_factory)
    with pytest.raises(SourceError, match=rf"refers to code that cannot be imported.*{tiny_factory}"):
        open_source(str(tmp_path / "whole.pt"), trust=True)
