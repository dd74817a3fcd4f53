"""Reading files: format sniffing, what a pickle would import, memory-mapped weights, odd containers."""

from __future__ import annotations

import argparse
import importlib
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from headstudio.core.errors import SourceError
from headstudio.core.opening.checkpoints import read_checkpoint, sniff_format
from headstudio.core.opening.safety import unsafe_globals
from headstudio.core.opening.sources import open_source

MAPS = Path("/proc/self/maps")


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process that are memory-mapped views of ``path``."""
    ranges = []
    for line in MAPS.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] == str(path):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((start, end))
    return ranges


def all_views_of(model: nn.Module, path: Path) -> bool:
    """Every parameter's data lives inside a memory mapping of the file (no copy in RAM)."""
    ranges = mapped_ranges(path)
    return bool(ranges) and all(
        any(start <= p.data_ptr() < end for start, end in ranges) for p in model.parameters()
    )


# --- formats ----------------------------------------------------------------------------------------


def test_sniff_tells_formats_from_bytes_not_suffix(tmp_path, resnet18_state, scripted_pt):
    small = {"w": torch.ones(2)}
    torch.save(small, tmp_path / "a.safetensors")  # a zip checkpoint with a misleading name
    torch.save(small, tmp_path / "b.bin", _use_new_zipfile_serialization=False)
    save_file(small, str(tmp_path / "c.pt"))
    assert sniff_format(tmp_path / "a.safetensors") == "zip"
    assert sniff_format(tmp_path / "b.bin") == "pickle"
    assert sniff_format(tmp_path / "c.pt") == "safetensors"
    assert sniff_format(scripted_pt) == "torchscript"


def test_torch_export_archive_says_open_the_original(tmp_path):
    model = nn.Sequential(nn.Linear(4, 2))
    torch.export.save(torch.export.export(model, (torch.zeros(1, 4),)), tmp_path / "m.pt2")
    with pytest.raises(SourceError, match=r"torch\.export archive"):
        read_checkpoint(tmp_path / "m.pt2")


def test_dict_without_weights_lists_its_keys(tmp_path):
    torch.save({"epoch": 3, "best_acc": 0.9}, tmp_path / "meta.pt")
    with pytest.raises(SourceError, match=r"holds a dict \(epoch, best_acc\) with no model weights"):
        read_checkpoint(tmp_path / "meta.pt")


def test_non_dict_payload_is_named(tmp_path):
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(SourceError, match="holds a list, not model weights"):
        read_checkpoint(tmp_path / "list.pt")


def test_truncated_safetensors_is_reported(tmp_path, resnet18_state):
    path = tmp_path / "cut.safetensors"
    save_file({"fc.weight": resnet18_state["fc.weight"]}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SourceError, match="truncated"):
        read_checkpoint(path)


# --- what a pickle would import ---------------------------------------------------------------------


def test_legacy_and_zip_pickles_of_a_model_list_the_same_globals(tmp_path):
    model = torchvision.models.squeezenet1_1(weights=None)
    torch.save(model, tmp_path / "zip.pt")
    torch.save(model, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    from_zip, from_legacy = unsafe_globals(tmp_path / "zip.pt"), unsafe_globals(tmp_path / "legacy.pt")
    assert "torchvision.models.squeezenet.SqueezeNet" in from_zip
    assert from_legacy == from_zip  # no Python 2 spellings such as __builtin__.set


def test_plain_state_dicts_need_no_globals_in_either_layout(tmp_path, resnet18_state):
    torch.save(resnet18_state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert unsafe_globals(tmp_path / "legacy.pt") == []


def test_protocol_5_pickle_globals_are_read_through_the_memo(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.ReLU())
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(model, protocol=5))
    found = unsafe_globals(tmp_path / "raw.pkl")
    assert "torch.nn.modules.linear.Linear" in found
    assert "torch.nn.modules.activation.ReLU" in found
    for name in found:  # each is a real module.attribute, not two unrelated strings glued together
        module, attr = name.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), attr), name


def test_legacy_pickled_model_opens_with_trust(tmp_path):
    torch.save(
        torchvision.models.squeezenet1_1(weights=None),
        tmp_path / "m.pt",
        _use_new_zipfile_serialization=False,
    )
    assert open_source(str(tmp_path / "m.pt"), trust=True).head.path == "classifier.1"


# --- memory mapping ---------------------------------------------------------------------------------


@pytest.mark.skipif(not MAPS.exists(), reason="needs /proc/self/maps (Linux)")
def test_opened_state_dict_parameters_are_views_of_the_file(resnet18_pt):
    doc = open_source(str(resnet18_pt), arch="torchvision:resnet18")
    assert all_views_of(doc.model, resnet18_pt.resolve())


@pytest.mark.skipif(not MAPS.exists(), reason="needs /proc/self/maps (Linux)")
def test_opened_training_checkpoint_parameters_are_views_of_the_file(tmp_path, resnet18_state):
    path = tmp_path / "train.ckpt"
    torch.save({"state_dict": {"module." + k: v for k, v in resnet18_state.items()}}, path)
    doc = open_source(str(path), arch="torchvision:resnet18")
    assert all_views_of(doc.model, path.resolve())


@pytest.mark.skipif(not MAPS.exists(), reason="needs /proc/self/maps (Linux)")
def test_opened_safetensors_parameters_are_views_of_the_file(tmp_path, resnet18_state):
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18_state.items()}, str(path))
    doc = open_source(str(path), arch="torchvision:resnet18")
    assert all_views_of(doc.model, path.resolve())


def test_opening_never_writes_the_source(tmp_path, resnet18_state):
    path = tmp_path / "r18.pt"
    torch.save(resnet18_state, path)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    doc = open_source(str(path), arch="torchvision:resnet18")
    doc.trace()
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


@pytest.mark.parametrize("zip_layout", [True, False], ids=["zip", "legacy"])
def test_training_checkpoint_with_args_and_numpy_metrics_opens_without_trust(
    tmp_path, resnet18_state, zip_layout
):
    np = pytest.importorskip("numpy")
    path = tmp_path / "timm_train.pth.tar"
    args = argparse.Namespace(model="resnet18", lr=0.1)
    payload = {"state_dict": resnet18_state, "args": args, "metric": np.float64(71.3), "hist": np.arange(3)}
    torch.save(payload, path, _use_new_zipfile_serialization=zip_layout)
    assert unsafe_globals(path) == []
    doc = open_source(str(path), arch="torchvision:resnet18")
    assert doc.origin.checkpoint.container["args"].model == "resnet18"
    assert doc.origin.checkpoint.container["metric"] == 71.3


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_changing_mapped_weights_in_memory_never_touches_the_file(tmp_path, resnet18_state, suffix):
    path = tmp_path / f"r18{suffix}"
    if suffix == ".pt":
        torch.save(resnet18_state, path)
    else:
        save_file({k: v.contiguous() for k, v in resnet18_state.items()}, str(path))
    before = path.read_bytes()
    doc = open_source(str(path), arch="torchvision:resnet18")
    with torch.no_grad():
        doc.model.fc.weight.add_(1.0)  # copy-on-write: the mapping is private
    assert torch.equal(doc.model.fc.weight, resnet18_state["fc.weight"] + 1.0)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("name", "data", "said"),
    [
        ("weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(64), "HDF5 file"),
        ("model.gguf", b"GGUF\x03\x00\x00\x00" + bytes(64), "GGUF file"),
        ("w.npy", b"\x93NUMPY\x01\x00" + bytes(64), "NumPy array"),
        ("model.pt.gz", b"\x1f\x8b\x08\x00" + bytes(64), "gzip-compressed"),
        ("model.onnx", b"\x08\x07\x12\x07pytorch" + bytes(64), "ONNX model"),
    ],
)
def test_other_frameworks_files_are_named_with_what_to_do(tmp_path, name, data, said):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(SourceError, match=rf"{said}.*, not a PyTorch checkpoint; \w+"):
        read_checkpoint(tmp_path / name)
