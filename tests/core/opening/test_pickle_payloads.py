"""Pickle payloads of every kind are refused, listed truthfully, and never run; zip tricks and odd paths too.

Each payload is first loaded without protection to prove it fires (it makes a marker directory), so no
test here can pass because the payload was a dud.
"""

from __future__ import annotations

import copyreg
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from headstudio.core.errors import SourceError, UnsafeCheckpointError
from headstudio.core.opening.sources import open_source


class Payload:
    """REDUCE: unpickling calls os.mkdir(marker)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


class NewObjPayload:
    """NEWOBJ: the class's __new__ has the side effect."""

    def __new__(cls, marker: str = ""):
        if marker:
            os.mkdir(marker)
        return object.__new__(cls)

    def __init__(self, marker: str = "") -> None:
        self.marker = marker

    def __reduce_ex__(self, protocol):
        return (copyreg.__newobj__, (type(self), self.marker))


class BuildPayload:
    """BUILD: the class's __setstate__ has the side effect."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict) -> None:
        os.mkdir(state["marker"])


def ascii_pickle(marker: str, opcode: str) -> bytes:
    """Protocol-0 text pickles calling os.mkdir(marker) through INST or OBJ."""
    if opcode == "INST":
        return f"(S'{marker}'\nios\nmkdir\n.".encode()
    return f"(cos\nmkdir\nS'{marker}'\no.".encode()


def stack_global(marker: str) -> bytes:
    return pickle.dumps(Payload(marker), protocol=4)


def torch_gadget(marker: str) -> bytes:
    """torch._utils._import_dotted_name('os.mkdir')(marker): a torch-internal import gadget."""
    arg = marker.encode()
    return (
        b"\x80\x02ctorch._utils\n_import_dotted_name\nX\x08\x00\x00\x00os.mkdir\x85R"
        + b"X" + len(arg).to_bytes(4, "little") + arg + b"\x85R."
    )  # fmt: skip


def newobj(marker: str) -> NewObjPayload:
    obj = NewObjPayload()  # made without a marker; unpickling passes it to __new__
    obj.marker = marker
    return obj


def write_raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


RAW = {
    "REDUCE": lambda m: pickle.dumps(Payload(m), protocol=2),
    "INST": lambda m: ascii_pickle(m, "INST"),
    "OBJ": lambda m: ascii_pickle(m, "OBJ"),
    "NEWOBJ": lambda m: pickle.dumps(newobj(m), protocol=2),
    "STACK_GLOBAL": stack_global,
    "BUILD": lambda m: pickle.dumps(BuildPayload(m), protocol=2),
    "torch-gadget": torch_gadget,
}
EXPECTED = {
    "REDUCE": "mkdir",
    "INST": "os.mkdir",
    "OBJ": "os.mkdir",
    "NEWOBJ": "NewObjPayload",
    "STACK_GLOBAL": "mkdir",
    "BUILD": "BuildPayload",
    "torch-gadget": "os.mkdir",
}


def assert_refused(path: Path, marker: Path, listed: str) -> UnsafeCheckpointError:
    before = path.read_bytes()
    with pytest.raises(UnsafeCheckpointError) as info:
        open_source(str(path))
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message and info.value.exit_code == 2
    assert any(listed in name for name in info.value.globals), info.value.globals
    assert all(name in message for name in info.value.globals)  # the refusal names every one
    assert not marker.exists() and path.read_bytes() == before
    return info.value


@pytest.mark.parametrize("kind", list(RAW))
def test_raw_pickle_payloads_are_listed_and_refused(tmp_path, kind):
    marker = tmp_path / "ran"
    data = RAW[kind](str(marker))
    pickle.loads(data)  # live: unprotected unpickling fires
    assert marker.exists()
    marker.rmdir()
    assert_refused(write_raw(tmp_path / f"{kind}.pt", data), marker, EXPECTED[kind])


def test_torch_gadget_consent_lists_the_gadget_and_what_it_imports(tmp_path):
    marker = tmp_path / "ran"
    err = assert_refused(write_raw(tmp_path / "g.pt", torch_gadget(str(marker))), marker, "os.mkdir")
    assert "torch._utils._import_dotted_name" in err.globals
    assert err.globals.index("os.mkdir") < err.globals.index("torch._utils._import_dotted_name")


def test_a_protocol_0_text_pickle_is_a_pickle_not_a_text_file(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps(Payload(str(marker)), protocol=0)
    assert data.decode("ascii").isprintable() or "\n" in data.decode("ascii")
    assert_refused(write_raw(tmp_path / "text.pt", data), marker, "mkdir")


SAVED = {
    "in-state-dict": lambda m: {"weight": torch.zeros(2), "evil": Payload(m)},
    "in-optimizer-state": lambda m: {
        "model": {"weight": torch.zeros(2)},
        "optimizer": {"state": {0: {"momentum_buffer": Payload(m)}}, "param_groups": [{"params": [0]}]},
    },
}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("where", list(SAVED))
def test_payloads_nested_in_checkpoints_are_refused_in_both_layouts(tmp_path, where, zip_format):
    marker = tmp_path / "ran"
    path = tmp_path / "nested.pt"
    torch.save(SAVED[where](str(marker)), path, _use_new_zipfile_serialization=zip_format)
    torch.load(path, weights_only=False)  # live
    assert marker.exists()
    marker.rmdir()
    assert_refused(path, marker, "mkdir")


def test_consent_runs_exactly_what_it_listed_and_no_more(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "nested.pt"
    torch.save({"weight": torch.zeros(2), "evil": Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError):
        open_source(str(path), trust=frozenset({"something.else"}))
    assert not marker.exists()


# --- zip tricks ----------------------------------------------------------------------------------------


def torch_zip(tmp_path: Path, payload_marker: Path) -> Path:
    path = tmp_path / "base.pt"
    torch.save({"weight": torch.zeros(2), "evil": Payload(str(payload_marker))}, path)
    return path


def rewrite(src: Path, dst: Path, rename=None, extra=(), compress=None) -> Path:
    """Copy a torch zip member by member, renaming or adding members (the tricks a hostile file plays)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            name = rename(info.filename) if rename else info.filename
            zout.writestr(zipfile.ZipInfo(name), zin.read(info), compress_type=compress or zipfile.ZIP_STORED)
        for name, data, kind in extra:
            zout.writestr(zipfile.ZipInfo(name), data, compress_type=kind)
    return dst


def test_duplicate_zip_members_are_refused(tmp_path):
    marker = tmp_path / "ran"
    src = torch_zip(tmp_path, marker)
    inner = next(n for n in zipfile.ZipFile(src).namelist() if n.endswith("data.pkl"))
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = rewrite(src, tmp_path / "dup.pt", extra=[(inner, pickle.dumps({}), zipfile.ZIP_STORED)])
    with pytest.raises(SourceError, match=r"two members named '.*data\.pkl'") as info:
        open_source(str(path))
    assert "\n" not in str(info.value) and not marker.exists()


def test_zip_member_names_outside_the_archive_are_refused(tmp_path):
    marker = tmp_path / "ran"
    path = rewrite(torch_zip(tmp_path, marker), tmp_path / "trav.pt", rename=lambda n: "../" + n)
    with pytest.raises(SourceError, match="points outside the archive"):
        open_source(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("size", [80 << 20, 2 << 20], ids=["over-size-cap", "over-ratio-cap"])
def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch, size):
    src = tmp_path / "small.pt"
    torch.save({"weight": torch.zeros(2)}, src)
    prefix = zipfile.ZipFile(src).namelist()[0].split("/")[0]
    path = rewrite(src, tmp_path / "bomb.pt", extra=[(f"{prefix}/data/9", bytes(size), zipfile.ZIP_DEFLATED)])
    assert path.stat().st_size < size // 50
    inflated = []
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda self, n=-1: inflated.append(n) or b"")
    with pytest.raises(SourceError, match="refused before inflating") as info:
        open_source(str(path))
    assert "\n" not in str(info.value) and not inflated


def test_a_zip_with_its_directory_cut_off_is_corrupt(tmp_path):
    src = tmp_path / "ok.pt"
    torch.save({"weight": torch.zeros(2)}, src)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(src.read_bytes()[:-40])
    with pytest.raises(SourceError, match="truncated or corrupt") as info:
        open_source(str(cut))
    assert "\n" not in str(info.value)


# --- paths that are not regular files -------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_fifo_is_not_a_regular_file_and_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match=r"not a regular file \(a FIFO"):
        open_source(str(fifo))  # opening it for reading would block forever


def test_a_device_is_not_a_regular_file():
    with pytest.raises(SourceError, match="not a regular file"):
        open_source("/dev/null")


def test_a_symlink_to_weights_opens_and_a_broken_one_says_so(tmp_path, resnet18_pt):
    good, broken = tmp_path / "link.pt", tmp_path / "broken.pt"
    good.symlink_to(resnet18_pt)
    broken.symlink_to(tmp_path / "gone.pt")
    assert open_source(str(good), arch="torchvision:resnet18").model is not None
    with pytest.raises(SourceError, match="symbolic link to a missing file"):
        open_source(str(broken))


def test_unreadable_empty_and_directory_paths_are_one_line_errors(tmp_path, monkeypatch):
    empty, folder, locked = tmp_path / "empty.pt", tmp_path / "dir.pt", tmp_path / "locked.pt"
    empty.write_bytes(b"")
    folder.mkdir()
    locked.write_bytes(b"x" * 10)
    real_open = Path.open

    def deny(self, *args, **kwargs):  # root reads any file, so the permission error is simulated
        if self == locked:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    for path, said in ((empty, "is empty"), (folder, "is a directory"), (locked, "Permission denied")):
        with pytest.raises(SourceError, match=said) as info:
            open_source(str(path))
        assert "\n" not in str(info.value)


def test_a_payload_pickle_in_front_of_a_harmless_zip_is_scanned_as_torch_reads_it(tmp_path):
    marker = tmp_path / "ran"
    clean = tmp_path / "clean.pt"
    torch.save({"weight": torch.zeros(2)}, clean)
    path = write_raw(
        tmp_path / "front.pt", pickle.dumps(Payload(str(marker)), protocol=2) + clean.read_bytes()
    )
    assert zipfile.is_zipfile(path)  # a zip reader sees only the harmless archive
    with pytest.raises(Exception):  # noqa: B017 (live: torch reads the pickle in front, which fires)
        torch.load(path, weights_only=False)
    assert marker.exists()
    marker.rmdir()
    assert_refused(path, marker, "mkdir")


def test_zip_members_claiming_more_bytes_than_the_file_holds_are_refused(tmp_path):
    src = tmp_path / "ok.pt"
    torch.save({"weight": torch.zeros(2)}, src)
    data = bytearray(src.read_bytes())
    entry = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)  # the second member's directory entry
    data[entry + 20 : entry + 28] = (10**8).to_bytes(4, "little") * 2  # stored, 100 MB, in a 1 kB file
    path = write_raw(tmp_path / "overlap.pt", bytes(data))
    with pytest.raises(SourceError, match=r"rule: members do not overlap") as info:
        open_source(str(path))
    assert "\n" not in str(info.value)
