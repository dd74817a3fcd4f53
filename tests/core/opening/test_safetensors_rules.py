"""Every rule of the safetensors format is enforced: one line naming the tensor and the rule."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from headstudio.core.errors import SourceError
from headstudio.core.opening.checkpoints import read_checkpoint

GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


def write(path: Path, header: object, data: bytes = b"\0" * 8, raw: bytes | None = None, length=None) -> Path:
    text = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def entry(dtype="F32", shape=(2,), offsets=(0, 8)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


CASES = {
    "header-too-long": (dict(header=GOOD, length=100_000_001), "header length"),
    "header-past-end": (dict(header=GOOD, length=10_000), "header length"),
    "not-an-object-start": (dict(header=None, raw=b' {"a": 1}'), "start with '{'"),
    "not-json": (dict(header=None, raw=b"{not json}"), "not valid JSON"),
    "unknown-dtype": (dict(header={"a": entry(dtype="Q9")}), "tensor 'a' has dtype 'Q9'"),
    "negative-shape": (dict(header={"a": entry(shape=(-2,))}), "tensor 'a' has shape"),
    "float-shape": (dict(header={"a": entry(shape=(2.0,))}), "tensor 'a' has shape"),
    "one-offset": (dict(header={"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}), "data_offsets"),
    "reversed-offsets": (dict(header={"a": entry(offsets=(8, 0))}), "tensor 'a' has data_offsets"),
    "entry-not-object": (dict(header={"a": [1, 2]}), "tensor 'a' is not an entry"),
    "extra-field": (dict(header={"a": {**entry(), "code": "x"}}), "tensor 'a' is not an entry"),
    "size-mismatch": (dict(header={"a": entry(shape=(3,))}), "rule: shape x dtype size"),
    "overlap": (
        dict(header={"a": entry(offsets=(0, 8)), "b": entry(offsets=(4, 12))}, data=b"\0" * 12),
        "tensor 'b' overlaps",
    ),
    "gap": (
        dict(
            header={"a": entry(shape=(1,), offsets=(0, 4)), "b": entry(shape=(1,), offsets=(8, 12))},
            data=b"\0" * 12,
        ),
        "tensor 'b' leaves a gap",
    ),
    "not-covering": (dict(header=GOOD, data=b"\0" * 16), "rule: offsets cover the data"),
    "truncated": (dict(header=GOOD, data=b"\0" * 4), "rule: offsets cover the data"),
    "duplicate-name": (
        dict(
            header=None,
            raw=b'{"a":' + json.dumps(entry()).encode() + b',"a":' + json.dumps(entry()).encode() + b"}",
        ),
        "tensor 'a' appears twice",
    ),
    "metadata-not-str": (dict(header={"__metadata__": {"k": 1}, **GOOD}), "rule: str -> str"),
    "metadata-not-map": (dict(header={"__metadata__": ["k"], **GOOD}), "rule: str -> str"),
    "array-header": (dict(header=None, raw=b"[1, 2]"), "start with '{'"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_each_safetensors_rule_is_a_one_line_error_naming_it(tmp_path, case):
    kwargs, said = CASES[case]
    path = write(tmp_path / f"{case}.safetensors", **kwargs)
    before = path.read_bytes()
    with pytest.raises(SourceError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert said in message and "\n" not in message and info.value.exit_code == 2
    assert path.read_bytes() == before


def test_the_duplicate_rule_is_one_the_library_itself_misses(tmp_path):
    from safetensors import safe_open

    raw = b'{"a":' + json.dumps(entry()).encode() + b',"a":' + json.dumps(entry()).encode() + b"}"
    path = write(tmp_path / "dup.safetensors", None, raw=raw)
    with safe_open(str(path), framework="pt") as fh:  # what makes our own header check necessary
        assert list(fh.keys()) == ["a"]


def test_a_valid_file_from_the_reference_writer_opens_with_its_metadata(tmp_path):
    path = tmp_path / "ok.safetensors"
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "i": torch.arange(3), "b": torch.tensor([True]),
               "h": torch.ones(1, dtype=torch.float16)}  # fmt: skip
    save_file(tensors, str(path), metadata={"k": "v"})
    ckpt = read_checkpoint(path)
    assert set(ckpt.state_dict) == set(tensors)
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in tensors.items())


def test_a_misaligned_but_valid_file_opens(tmp_path):
    header = {
        "b": entry(dtype="U8", shape=(1,), offsets=(0, 1)),
        "w": entry(dtype="F32", shape=(1,), offsets=(1, 5)),
    }
    path = write(tmp_path / "odd.safetensors", header, data=b"\x07" + struct.pack("<f", 1.5))
    state = read_checkpoint(path).state_dict
    assert state["w"].item() == 1.5 and state["b"].item() == 7


def test_head_files_obey_the_same_rules(tmp_path):
    from headstudio.core.errors import HeadStudioError
    from headstudio.core.head_files import read_head_file

    raw = b'{"a":' + json.dumps(entry()).encode() + b',"a":' + json.dumps(entry()).encode() + b"}"
    path = write(tmp_path / "head.safetensors", None, raw=raw)
    with pytest.raises(HeadStudioError, match="tensor 'a' appears twice"):
        read_head_file(path)
