"""File-system trouble when saving: a full disk is named with the space needed and free, in every format;
read-only, foreign or non-regular targets are refused; nothing is left behind."""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from headstudio.core.errors import SaveError
from headstudio.core.opening.sources import open_source
from headstudio.core.saving import atomic
from headstudio.core.saving.atomic import save

Usage = namedtuple("Usage", "total used free")
INLINE_CONTAINER = (
    "[enforce fail at inline_container.cc:672] . "
    "PytorchStreamWriter failed writing file data/3: file write failed"
)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return open_source("torchvision:squeezenet1_1", materialize=True)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict", "full", "torchscript"])
def test_a_disk_too_small_is_refused_before_writing_in_every_format(small, tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 2000, 2000))
    out = tmp_path / ("model.safetensors" if fmt == "safetensors" else "model.pt")
    with pytest.raises(SaveError) as info:
        save(small, out, fmt)
    message = str(info.value)
    assert "No space left on device (needs 4.9 MB, 0.0 MB free in" in message and "\n" not in message
    assert listing(tmp_path) == []


@pytest.mark.parametrize("fmt", ["state_dict", "full"])
def test_a_disk_filling_up_during_torch_save_is_named_not_blamed_on_torch(small, tmp_path, monkeypatch, fmt):
    calls = []

    def usage(path):  # room at the start, full once torch's writer failed
        calls.append(path)
        return Usage(10**9, 0, 10**9 if len(calls) == 1 else 4096)

    def failing_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise RuntimeError(INLINE_CONTAINER)

    monkeypatch.setattr(atomic.shutil, "disk_usage", usage)
    monkeypatch.setattr(torch, "save", failing_save)
    out = tmp_path / "model.pt"
    with pytest.raises(SaveError) as info:
        save(small, out, fmt)
    message = str(info.value)
    assert "No space left on device (needs 4.9 MB, 0.0 MB free" in message
    assert "inline_container" not in message and "pickled" not in message and listing(tmp_path) == []


def test_a_read_only_target_is_refused_and_kept(small, tmp_path):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"keep me")
    out.chmod(0o444)
    with pytest.raises(SaveError, match="it is read-only") as info:
        save(small, out)
    assert "\n" not in str(info.value) and out.read_bytes() == b"keep me"


def test_a_read_only_target_of_another_user_is_refused(small, tmp_path, monkeypatch):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"theirs")
    out.chmod(0o644)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(out).st_uid + 1)  # we are not its owner
    with pytest.raises(SaveError, match="belongs to another user and is read-only"):
        save(small, out)
    assert out.read_bytes() == b"theirs"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_target_that_is_not_a_regular_file_is_refused(small, tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(SaveError, match="not a regular file"):
        save(small, fifo)
    assert listing(tmp_path) == ["pipe.safetensors"]
