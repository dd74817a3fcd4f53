"""Head files: one head's weights in a .safetensors file, its description (JSON) in the metadata.

The description (``head_description``) says how to rebuild the head from a fixed table of layer kinds,
so a head file carries no code and no pickle. Reading one is hostile-input territory: the description
is validated as data and the file's tensors must be exactly the rebuilt head's names, shapes, dtypes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstudio.core.errors import HeadStudioError, SaveError, SourceError, first_line
from headstudio.core.head_description import (
    METADATA_KEY,
    HeadFileError,
    build_described,
    check_description,
    layer_modules,
)

MAX_DESCRIPTION_CHARS = 1 << 20
_FLOATS = {torch.float32, torch.float16, torch.bfloat16, torch.float64}


@dataclass
class HeadFile:
    """A read and validated head file: its description, weights and sha256."""

    path: Path
    sha256: str
    description: dict[str, Any]
    state: dict[str, torch.Tensor]

    @property
    def in_features(self) -> int:
        """The feature (or channel) count the head takes."""
        return int(self.description["in_features"])

    @property
    def out_features(self) -> int:
        """The head's output count (classes)."""
        return int(self.description["out_features"])


# ----- reading and writing head files
def file_sha256(path: Path) -> str:
    """The file's sha256 (hex), read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_head_file(path: str | Path) -> HeadFile:
    """Read and validate a head file; HeadFileError (one line) when it is not one or lies."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HeadFileError(f"no head file at {path}; export one with 'headstudio head export'")
    try:
        from safetensors import safe_open

        from headstudio.core.opening.safetensors_file import check_safetensors_header

        try:
            check_safetensors_header(path)  # every rule of the format, one line naming the tensor and rule
        except SourceError as err:
            raise HeadFileError(f"{path.name} is not a readable .safetensors head file ({err})") from None
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            text = metadata.get(METADATA_KEY)
            if not isinstance(text, str):
                raise HeadFileError(f"{path.name} is a .safetensors file without a head description; "
                                    "export heads with 'headstudio head export'")  # fmt: skip
            description = _parse_description(text, path)
            expected = build_described(description["layers"], "meta").state_dict()
            _check_names(path, set(fh.keys()), set(expected))
            state = {name: fh.get_tensor(name) for name in expected}
    except HeadStudioError:
        raise
    except Exception as err:  # safetensors raises several types for a damaged file
        raise HeadFileError(
            f"{path.name} is not a readable .safetensors head file ({first_line(err)})"
        ) from None
    for name, want in expected.items():
        _check_tensor(path, name, state[name], want)
    return HeadFile(path, file_sha256(path), description, state)


def _parse_description(text: str, path: Path) -> dict[str, Any]:
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise HeadFileError(
            f"{path.name}: the head description is {len(text):,} characters; too long to be one"
        )
    try:
        data = json.loads(text)
    except ValueError as err:
        raise HeadFileError(f"{path.name}: the head description is not valid JSON ({err})") from None
    try:
        return check_description(data)
    except HeadFileError as err:
        raise HeadFileError(f"{path.name}: {err}") from None


def _check_names(path: Path, found: set[str], expected: set[str]) -> None:
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing:
        raise HeadFileError(f"{path.name}: the description needs tensor '{missing[0]}' but the file lacks it")
    if extra:
        raise HeadFileError(f"{path.name}: tensor '{extra[0][:80]}' is not part of the described head")


def _check_tensor(path: Path, name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    if tuple(got.shape) != tuple(want.shape):
        raise HeadFileError(
            f"{path.name}: tensor '{name}' has shape {list(got.shape)} but the description gives "
            f"{list(want.shape)}"
        )
    ok = got.dtype in _FLOATS if want.is_floating_point() else got.dtype == want.dtype
    if not ok:
        raise HeadFileError(
            f"{path.name}: tensor '{name}' has dtype {got.dtype}, which this layer cannot hold"
        )


def rebuild_head(head_file: HeadFile, device: str | torch.device = "cpu") -> nn.Module:
    """The head a file describes, with its weights (exactly the file's values, its float dtype)."""
    module = build_described(head_file.description["layers"], device)
    dtypes = {t.dtype for t in head_file.state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        module.to(dtype=dtypes.pop())
    module.load_state_dict(head_file.state)
    return module.eval()


def export_head(head: nn.Module, description: dict[str, Any], target: str | Path) -> HeadFile:
    """Write ``head``'s weights in the described layout to ``target`` atomically; the file as read back."""
    from safetensors.torch import save_file

    from headstudio.core.saving.partial_files import discard, temp_path

    target = Path(target).expanduser()
    check_description(description)
    leaves = [m for _, m in layer_modules(head, "head")]
    prefixes = [f"{i}." for i in range(len(leaves))] if len(leaves) > 1 else [""]
    state = {
        prefix + name: tensor.detach().cpu().contiguous()
        for prefix, leaf in zip(prefixes, leaves, strict=True)
        for name, tensor in leaf.state_dict().items()
    }
    expected = build_described(description["layers"], "meta").state_dict()
    if set(state) != set(expected):
        raise HeadStudioError(
            "the head's tensors do not match its description; describe it with describe_head"
        )
    if any(t.is_meta for t in state.values()):
        raise HeadStudioError(
            "the head has no real weights (meta); open a checkpoint or a materialized model"
        )
    temp, lock = temp_path(target)
    try:
        save_file(state, str(temp), {METADATA_KEY: json.dumps(description, ensure_ascii=False)})
        written = read_head_file(temp)
        for name, tensor in state.items():
            if not torch.equal(written.state[name], tensor):
                raise SaveError(f"verification failed: tensor '{name}' differs after writing")
        os.replace(temp, target)
    except HeadStudioError:
        discard(temp)
        raise
    except OSError as err:
        discard(temp)
        raise SaveError(f"could not write {target}: {err.strerror or err}; nothing was changed") from None
    finally:
        if lock is not None:
            os.close(lock)
    written.path, written.sha256 = target, file_sha256(target)
    return written
