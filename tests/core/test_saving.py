"""Saving: every format reopens bit-identical, containers keep their keys, nothing is ever lost."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from headstudio.core import formats, saving
from headstudio.core.checkpoints import RECIPE_KEY
from headstudio.core.document import Document, Origin
from headstudio.core.errors import Cancelled, SaveError
from headstudio.core.saving import save
from headstudio.core.sources import open_source

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
    assert open_source(str(out)).origin.format == "checkpoint"  # reopens without --arch
    assert sha(training_ckpt) == before


def test_training_checkpoint_drops_optimizer_state_after_the_head_changes(training_ckpt, tmp_path):
    edits = pytest.importorskip("headstudio.core.edits")
    doc = open_source(str(training_ckpt), arch=R18)
    edit = edits.ReplaceHead("fc", 7)
    edit.apply(doc)
    doc.edits.append(edit)
    report = save(doc, tmp_path / "edited.ckpt")
    saved = torch.load(tmp_path / "edited.ckpt", weights_only=True)
    assert "optimizer" not in saved and saved["epoch"] == 7
    assert saved["model"]["module.fc.weight"].shape == (7, 512)
    assert any("optimizer" in w for w in report.warnings)


# --- nothing is lost ---------------------------------------------------------------------------------


def test_source_bytes_never_change_while_saving_every_format(resnet18_pt, tmp_path):
    before = sha(resnet18_pt)
    doc = open_source(str(resnet18_pt), arch=R18)
    for fmt in ("safetensors", "state_dict", "full"):
        save(doc, tmp_path / f"copy_{fmt}{SUFFIX[fmt]}", format=fmt)
    assert sha(resnet18_pt) == before


def test_refuses_to_write_over_the_source_even_through_a_symlink(resnet18_pt, tmp_path):
    before = sha(resnet18_pt)
    doc = open_source(str(resnet18_pt), arch=R18)
    link = tmp_path / "link.pt"
    link.symlink_to(resnet18_pt)
    for target in (resnet18_pt, link):
        with pytest.raises(SaveError, match="source"):
            save(doc, target)
    assert sha(resnet18_pt) == before


def test_directory_under_a_regular_file_is_a_one_line_save_error(r18, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SaveError, match="not a directory") as info:
        save(r18, tmp_path / "afile" / "out.safetensors")
    assert "\n" not in str(info.value)


def test_unwritable_directory_is_a_save_error_and_writes_nothing(r18, tmp_path, monkeypatch):
    monkeypatch.setattr(saving.os, "access", lambda *a, **k: False)
    with pytest.raises(SaveError, match="no permission"):
        save(r18, tmp_path / "out.safetensors")
    assert listing(tmp_path) == []


def _fail_midway(exc: BaseException):
    def writer(fh, tensors, metadata, tick=None):
        fh.write(b"\0" * 100_000)
        raise exc

    return writer


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_write_failing_midway_leaves_the_previous_file_and_no_partial(r18, tmp_path, monkeypatch, exc):
    out = tmp_path / "model.safetensors"
    save(r18, out)
    before = sha(out)
    monkeypatch.setattr(formats, "write_safetensors", _fail_midway(exc))
    with pytest.raises(SaveError if isinstance(exc, OSError) else KeyboardInterrupt) as info:
        save(r18, out)
    assert listing(tmp_path) == [out.name] and sha(out) == before
    if isinstance(exc, OSError):
        assert "No space left" in str(info.value) and "\n" not in str(info.value)


def test_a_corrupted_write_fails_verification_and_replaces_nothing(r18, tmp_path, monkeypatch):
    out = tmp_path / "model.pt"
    real_save = torch.save

    def corrupting_save(obj, path, *a, **k):
        obj = type(obj)(obj)
        obj["fc.bias"] = obj["fc.bias"] + 1
        real_save(obj, path, *a, **k)

    monkeypatch.setattr(formats.torch, "save", corrupting_save)
    with pytest.raises(SaveError, match=r"verification failed.*fc\.bias"):
        save(r18, out)
    assert listing(tmp_path) == []


def test_cancelling_from_progress_leaves_nothing(r18, tmp_path):
    def progress(message, fraction):
        if fraction > 0.3:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        save(r18, tmp_path / "m.safetensors", progress=progress)
    assert listing(tmp_path) == []


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


def test_saved_file_gets_normal_permissions_not_the_temp_files_private_mode(r18, tmp_path):
    out = tmp_path / "m.safetensors"
    save(r18, out)
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


def test_memory_mapped_weights_modified_in_place_are_saved_as_modified(resnet18_pt, tmp_path):
    from safetensors.torch import load_file

    doc = open_source(str(resnet18_pt), arch=R18)
    with torch.no_grad():
        doc.model.fc.weight[0, :] = 42.0  # copy-on-write: the mapping now differs from the file
    save(doc, tmp_path / "m.safetensors")
    saved = load_file(str(tmp_path / "m.safetensors"))
    assert torch.equal(saved["fc.weight"], doc.model.fc.weight) and saved["fc.weight"][0, 0] == 42.0
    assert torch.equal(saved["layer1.0.conv1.weight"], doc.model.layer1[0].conv1.weight)


def test_unmodified_memory_mapped_weights_are_copied_from_the_file_not_paged_in(resnet18_pt):
    from headstudio.core.mapped_regions import MappedFiles

    doc = open_source(str(resnet18_pt), arch=R18)
    region = MappedFiles().region(doc.model.layer4[1].conv2.weight)
    assert region is not None and Path(region.path).samefile(resnet18_pt)
    with torch.no_grad():
        doc.model.layer4[1].conv2.weight.mul_(2)
    assert MappedFiles().region(doc.model.layer4[1].conv2.weight) is None


def test_weights_mapped_from_a_file_replaced_since_are_read_from_memory(resnet18_pt, tmp_path):
    from headstudio.core.mapped_regions import MappedFiles

    copy = tmp_path / "r18.pt"
    copy.write_bytes(resnet18_pt.read_bytes())
    doc = open_source(str(copy), arch=R18)
    expected = doc.model.fc.weight.clone()
    replacement = tmp_path / "other.pt"
    replacement.write_bytes(resnet18_pt.read_bytes())
    os.replace(replacement, copy)  # same path, another file: its bytes are no longer the mapping's
    assert MappedFiles().region(doc.model.fc.weight) is None
    save(doc, tmp_path / "out.safetensors")
    assert torch.equal(open_source(str(tmp_path / "out.safetensors")).model.fc.weight, expected)


def test_a_model_that_cannot_be_pickled_is_a_clear_error_for_the_full_format(tmp_path):
    model = nn.Linear(4, 2)
    model.activation = lambda x: x  # a lambda attribute: pickle refuses it
    doc = Document(model, Origin("lin", "spec", "tests:Linear"), (1, 4))
    with pytest.raises(SaveError, match="cannot be pickled") as info:
        save(doc, tmp_path / "full.pt", format="full")
    assert "\n" not in str(info.value) and listing(tmp_path) == []
    assert save(doc, tmp_path / "weights.safetensors").tensors_verified == 2  # weights still save


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
