"""Saving: every format reopens bit-identical, containers keep their keys, nothing is ever lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from headstudio.core.errors import SaveError
from headstudio.core.model.document import Document, Origin
from headstudio.core.opening.checkpoints import RECIPE_KEY
from headstudio.core.opening.sources import open_source
from headstudio.core.saving import atomic as saving
from headstudio.core.saving.atomic import save

R18 = "torchvision:resnet18"
SUFFIX = {
    "safetensors": ".safetensors",
    "state_dict": ".pt",
    "full": ".pt",
    "torchscript": ".pt",
    "export": ".pt2",
}


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return open_source(R18, materialize=True)


@pytest.fixture(scope="module")
def squeeze():
    torch.manual_seed(0)
    return open_source("torchvision:squeezenet1_1", materialize=True)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def same_weights(model: nn.Module, state: dict) -> bool:
    mine = model.state_dict()
    return all(torch.equal(mine[k], state[k]) for k in mine) and len(state) >= len(mine)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- round trips -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict", "full", "torchscript", "export"])
def test_resnet18_saves_and_reopens_bit_identical_in_every_format(r18, tmp_path, fmt):
    out = tmp_path / f"r18{SUFFIX[fmt]}"
    report = save(r18, out, format=fmt)
    assert report.format == fmt and report.path == out
    assert (
        report.tensors_verified == len(r18.model.state_dict()) and report.bytes_written == out.stat().st_size
    )
    assert listing(tmp_path) == [out.name]  # no temp file left behind


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict", "full", "torchscript", "export"])
def test_squeezenet_saves_and_reopens_bit_identical(squeeze, tmp_path, fmt):
    report = save(squeeze, tmp_path / f"sq{SUFFIX[fmt]}", format=fmt)
    assert report.tensors_verified == len(squeeze.model.state_dict())


def test_edited_timm_model_reopens_from_safetensors_and_pt(tmp_path):
    pytest.importorskip("timm")
    from headstudio.core.edits import ReplaceHead

    doc = open_source("timm:resnet10t", materialize=True)
    doc.apply(ReplaceHead(doc.head.path, 4, hidden=(32,), seed=1))
    for name in ("t.safetensors", "t.pt"):
        save(doc, tmp_path / name)
        reopened = open_source(str(tmp_path / name))
        assert reopened.trace().output == [1, 4] and same_weights(reopened.model, doc.model.state_dict())


def test_safetensors_reopens_without_arch_through_the_embedded_recipe(r18, tmp_path):
    out = tmp_path / "r18.safetensors"
    save(r18, out)
    doc = open_source(str(out))
    assert doc.origin.arch == R18 and doc.head.out_features == 1000
    assert same_weights(doc.model, r18.model.state_dict())


def test_safetensors_loads_with_plain_safetensors_and_load_state_dict(r18, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    out = tmp_path / "r18.safetensors"
    save(r18, out)
    plain = torchvision.models.resnet18(weights=None)
    plain.load_state_dict(load_file(str(out)))
    assert same_weights(plain, r18.model.state_dict())
    with safe_open(str(out), framework="pt") as fh:
        assert RECIPE_KEY in fh.metadata()


def test_pt_loads_with_weights_only_and_plain_load_state_dict(r18, tmp_path):
    out = tmp_path / "r18.pth"
    assert save(r18, out).format == "state_dict"
    state = torch.load(out, weights_only=True)
    plain = torchvision.models.resnet18(weights=None)
    plain.load_state_dict(state)
    assert same_weights(plain, r18.model.state_dict())
    assert RECIPE_KEY in state._metadata[""]
    assert open_source(str(out)).origin.arch == R18


def test_tied_weights_are_written_as_separate_entries_plain_safetensors_can_load(tmp_path):
    from safetensors.torch import load_file

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 4)
            self.out = nn.Linear(4, 4)
            self.out.weight = self.embed.weight

        def forward(self, x):
            return self.out(self.embed(x))

    doc = Document(Tied(), Origin("tied", "spec", "tests:Tied"), (1, 4))
    report = save(doc, tmp_path / "tied.safetensors")
    loaded = load_file(str(tmp_path / "tied.safetensors"))
    assert torch.equal(loaded["out.weight"], loaded["embed.weight"])
    assert report.tensors_verified == 4 and any("--arch" in w for w in report.warnings)


# --- training checkpoints ----------------------------------------------------------------------------


@pytest.fixture
def training_ckpt(tmp_path):
    """A DDP-style training checkpoint: prefixed weights, optimizer state, epoch, scheduler."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.zeros(1, 3, 64, 64)).sum().backward()
    opt.step()
    container = {
        "epoch": 7,
        "model": {f"module.{k}": v for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "best_acc": 0.93,
    }
    path = tmp_path / "src" / "train.ckpt"
    path.parent.mkdir()
    torch.save(container, path)
    return path


def test_training_checkpoint_keeps_its_other_keys_and_prefix(training_ckpt, tmp_path):
    doc = open_source(str(training_ckpt), arch=R18)
    before = sha(training_ckpt)
    out = tmp_path / "resaved.ckpt"
    report = save(doc, out)
    assert report.format == "checkpoint"
    saved = torch.load(out, weights_only=True)
    assert saved["epoch"] == 7 and saved["best_acc"] == 0.93
    assert "optimizer" in saved  # nothing structural changed: the optimizer state still fits
    assert all(k.startswith("module.") for k in saved["model"])
    assert same_weights(doc.model, {k[len("module.") :]: v for k, v in saved["model"].items()})
    assert open_source(str(out)).origin.kind == "checkpoint"  # reopens without --arch
    assert sha(training_ckpt) == before


def test_training_checkpoint_keeps_a_resumable_optimizer_after_the_head_changes(training_ckpt, tmp_path):
    edits = pytest.importorskip("headstudio.core.edits")
    doc = open_source(str(training_ckpt), arch=R18)
    doc.apply(edits.ReplaceHead("fc", 7))
    report = save(doc, tmp_path / "edited.ckpt")
    saved = torch.load(tmp_path / "edited.ckpt", weights_only=True)
    assert saved["epoch"] == 7 and saved["model"]["module.fc.weight"].shape == (7, 512)
    model = torchvision.models.resnet18(num_classes=7)
    model.load_state_dict({k[len("module.") :]: v for k, v in saved["model"].items()})
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.load_state_dict(saved["optimizer"])
    assert model.conv1.weight in opt.state and model.fc.weight not in opt.state
    assert any("'optimizer': kept the optimizer state of 60" in w for w in report.warnings)


def test_spec_on_the_meta_device_must_be_materialized_to_save(tmp_path):
    with pytest.raises(SaveError, match="materialize"):
        save(open_source(R18), tmp_path / "m.safetensors")
    assert listing(tmp_path) == []


def test_format_comes_from_the_extension_or_is_a_clear_error(r18, tmp_path):
    with pytest.raises(SaveError, match="--format"):
        save(r18, tmp_path / "model.weights")
    with pytest.raises(SaveError, match="unknown format 'onnx'"):
        save(r18, tmp_path / "model.pt", format="onnx")
    assert saving.resolve_format(r18, Path("a.pt2")) == "export"
    assert listing(tmp_path) == []


def test_a_model_torch_export_cannot_trace_is_a_clear_error(tmp_path):
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) if x.sum().item() > 0 else -self.fc(x)

    doc = Document(DataDependent(), Origin("dd", "spec", "tests:DataDependent"), (1, 4))
    with pytest.raises(SaveError, match="cannot be exported") as info:
        save(doc, tmp_path / "dd.pt2")
    assert "\n" not in str(info.value) and listing(tmp_path) == []


def test_a_model_that_cannot_be_pickled_is_a_clear_error_for_the_full_format(tmp_path):
    model = nn.Linear(4, 2)
    model.activation = lambda x: x  # a lambda attribute: pickle refuses it
    doc = Document(model, Origin("lin", "spec", "tests:Linear"), (1, 4))
    with pytest.raises(SaveError, match="cannot be pickled") as info:
        save(doc, tmp_path / "full.pt", format="full")
    assert "\n" not in str(info.value) and listing(tmp_path) == []
    assert save(doc, tmp_path / "weights.safetensors").tensors_verified == 2  # weights still save


def test_a_model_opened_from_safetensors_saves_as_a_full_pickle(r18, tmp_path):
    save(r18, tmp_path / "weights.safetensors")
    mapped = open_source(str(tmp_path / "weights.safetensors"))  # every weight views one mapped file
    report = save(mapped, tmp_path / "full.pt", format="full")
    loaded = torch.load(tmp_path / "full.pt", weights_only=False)
    assert report.tensors_verified == len(r18.model.state_dict()) and same_weights(
        loaded, r18.model.state_dict()
    )


# --- edited models -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edited_r18():
    from headstudio.core.edits import FreezeBackbone, ReplaceHead

    torch.manual_seed(0)
    doc = open_source(R18, materialize=True)
    doc.apply(ReplaceHead("fc", 7, seed=0))
    doc.apply(FreezeBackbone())
    return doc


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict", "full"])
def test_edited_model_reopens_with_its_new_head_and_trainable_flags(edited_r18, tmp_path, fmt):
    out = tmp_path / f"edited{SUFFIX[fmt]}"
    save(edited_r18, out, format=fmt)
    doc = open_source(str(out), trust=fmt == "full")
    assert doc.head.out_features == 7 and doc.param_counts() == (11_180_103, 3591)
    assert same_weights(doc.model, edited_r18.model.state_dict())


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_edited_model_compiles_with_its_new_output(edited_r18, tmp_path, fmt):
    report = save(edited_r18, tmp_path / f"edited{SUFFIX[fmt]}", format=fmt)
    assert report.tensors_verified >= 60  # export keeps parameters and persistent buffers
    if fmt == "torchscript":
        doc = open_source(str(tmp_path / "edited.pt"), trust=True)
        assert doc.trace().output == [1, 7]


def test_a_two_headed_model_reopens_from_safetensors_with_both_heads(tmp_path):
    from headstudio.core.edits import AddHead

    doc = open_source("torchvision:mobilenet_v3_small", materialize=True)
    doc.apply(AddHead("age", 5, at=doc.head.path))
    save(doc, tmp_path / "two.safetensors")
    reopened = open_source(str(tmp_path / "two.safetensors"))
    assert reopened.trace().output == doc.trace().output
    assert same_weights(reopened.model, doc.model.state_dict())


def test_editing_a_saved_file_again_records_both_edits(edited_r18, tmp_path):
    from headstudio.core.edits import SetTrainable
    from headstudio.core.recipe import Recipe

    save(edited_r18, tmp_path / "first.safetensors")
    doc = open_source(str(tmp_path / "first.safetensors"))
    doc.apply(SetTrainable("layer4", True))
    save(doc, tmp_path / "second.safetensors")
    again = open_source(str(tmp_path / "second.safetensors"))
    kinds = [e.kind for e in Recipe.from_document(again).edits]
    assert kinds == ["replace_head", "freeze_backbone", "set_trainable"]
    assert again.param_counts()[1] == doc.param_counts()[1] > 3591
