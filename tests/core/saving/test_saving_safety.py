"""Saving never loses anything: the source stays, failed, corrupted or killed saves leave the old file."""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from headstudio.core.errors import Cancelled, SaveError
from headstudio.core.opening import safetensors_file
from headstudio.core.opening.sources import open_source
from headstudio.core.saving import atomic as saving
from headstudio.core.saving import formats, partial_files
from headstudio.core.saving.atomic import save

R18 = "torchvision:resnet18"
SUFFIX = {"safetensors": ".safetensors", "state_dict": ".pt", "full": ".pt"}


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return open_source(R18, materialize=True)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


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


def test_a_disk_too_full_for_the_file_fails_before_writing_and_keeps_the_previous_file(
    r18, tmp_path, monkeypatch
):
    from types import SimpleNamespace

    out = tmp_path / "model.safetensors"
    save(r18, out)
    before = sha(out)
    monkeypatch.setattr(os, "fstatvfs", lambda fd: SimpleNamespace(f_bavail=100, f_frsize=4096))
    with pytest.raises(SaveError, match=r"No space left on device \(needs 46\.8 MB, ") as info:
        save(r18, out)
    assert "\n" not in str(info.value) and listing(tmp_path) == [out.name] and sha(out) == before


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
    from headstudio.core.opening.mapped_regions import MappedFiles

    doc = open_source(str(resnet18_pt), arch=R18)
    region = MappedFiles().region(doc.model.layer4[1].conv2.weight)
    assert region is not None and Path(region.path).samefile(resnet18_pt)
    with torch.no_grad():
        doc.model.layer4[1].conv2.weight.mul_(2)
    assert MappedFiles().region(doc.model.layer4[1].conv2.weight) is None


def test_weights_mapped_from_a_file_replaced_since_are_read_from_memory(resnet18_pt, tmp_path):
    from headstudio.core.opening.mapped_regions import MappedFiles

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


# --- read back while writing -------------------------------------------------------------------------


def test_safetensors_bytes_written_wrong_from_memory_fail_verification(r18, tmp_path, monkeypatch):
    real = safetensors_file._byte_chunks

    def off_by_one(tensor):
        return real(tensor + 1 if tuple(tensor.shape) == (1000,) else tensor)  # only fc.bias

    monkeypatch.setattr(safetensors_file, "_byte_chunks", off_by_one)
    with pytest.raises(SaveError, match=r"verification failed: tensor 'fc\.bias' differs"):
        save(r18, tmp_path / "m.safetensors")
    assert listing(tmp_path) == []


def test_safetensors_bytes_copied_wrong_from_the_mapped_file_fail_verification(
    resnet18_pt, tmp_path, monkeypatch
):
    doc = open_source(str(resnet18_pt), arch=R18)

    def zeros(region, fd, chunk, tick):
        os.write(fd, bytes(region.nbytes))
        tick(region.nbytes)

    monkeypatch.setattr(safetensors_file, "copy_region", zeros)
    with pytest.raises(SaveError, match=r"verification failed: tensor '[\w.]+' differs"):
        save(doc, tmp_path / "m.safetensors")
    assert listing(tmp_path) == []


# --- saves killed midway -----------------------------------------------------------------------------

_KILLED_SAVE = """
import sys
from headstudio.core.saving.atomic import save
from headstudio.core.opening.sources import open_source

doc = open_source("torchvision:resnet18", materialize=True)
paused = []


def progress(message, fraction):
    if 0.3 < fraction < 0.7 and not paused:
        paused.append(fraction)
        print("mid-write", flush=True)
        sys.stdin.readline()  # held here, temp file half written, until the test kills us


save(doc, sys.argv[1], progress=progress)
"""


def _first_line(process: subprocess.Popen, timeout: float = 120) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else ""


def test_a_killed_save_leaves_the_target_and_the_next_save_removes_only_its_partial_file(r18, tmp_path):
    out = tmp_path / "model.safetensors"
    save(r18, out)
    before = sha(out)
    foreign = [
        ".model.notapid.partial.safetensors",  # not our pattern
        ".model.123-abcdefgh.partial.pt",  # another target's partial
        ".other.123-abcdefgh.partial.safetensors",
        "model.123-abcdefgh.partial.safetensors",  # not hidden: not ours
    ]
    for name in foreign:
        (tmp_path / name).write_bytes(b"someone else's")
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SAVE, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert _first_line(writer) == "mid-write"
        partial = [n for n in listing(tmp_path) if n.startswith(f".model.{writer.pid}-")]
        assert len(partial) == 1 and (tmp_path / partial[0]).stat().st_size > 0
        save(r18, out)  # the writer is alive: its file is left alone
        assert partial[0] in listing(tmp_path)
        writer.kill()  # SIGKILL mid-write: no handler runs, the partial file stays behind
        writer.wait(30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(30)
    assert sha(out) == before and partial[0] in listing(tmp_path)
    report = save(r18, out)
    assert listing(tmp_path) == sorted([out.name, *foreign])
    assert any("interrupted save" in w for w in report.warnings) and sha(out) == before


def test_partial_files_are_removed_only_when_their_writer_is_gone(r18, tmp_path):
    exited = subprocess.Popen(["true"])
    exited.wait()
    day_ago = time.time() - 86400

    def partial(pid: int, tag: str) -> Path:
        path = tmp_path / f".model.{pid}-{tag}.partial.safetensors"
        path.write_bytes(b"half")
        return path

    reused = partial(os.getpid(), "reused00")  # our pid, but written before we started: a reused pid
    os.utime(reused, (day_ago, day_ago))
    recent = partial(os.getpid(), "recent00")  # our pid, written since we started: maybe ours, kept
    locked = partial(exited.pid, "locked00")  # pid gone here, but someone holds its lock: kept
    holder = os.open(locked, os.O_RDONLY)
    partial_files.fcntl.flock(holder, partial_files.fcntl.LOCK_EX)
    link = tmp_path / f".model.{exited.pid}-symlink0.partial.safetensors"
    link.symlink_to(tmp_path / "elsewhere")  # not a regular file: kept
    (tmp_path / "elsewhere").write_bytes(b"keep")
    dead = partial(exited.pid, "deadpid0")
    try:
        report = save(r18, tmp_path / "model.safetensors")
    finally:
        os.close(holder)
    left = listing(tmp_path)
    assert reused.name not in left and dead.name not in left
    assert {recent.name, locked.name, link.name, "elsewhere"} <= set(left)
    assert any("removed 2 partial" in w for w in report.warnings)
