"""Reading checkpoint files: format sniffing, safe loading, finding the weights inside containers."""

from __future__ import annotations

import pickle
import pickletools
import re
import stat
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstudio.core.errors import (
    SourceError,
    TorchScriptConsentError,
    TrustedCodeWarning,
    UnsafeCheckpointError,
    first_line,
)
from headstudio.core.kinds import CHECKPOINT_SUFFIXES
from headstudio.core.opening.archive_rules import zip_members
from headstudio.core.opening.file_specs import Trust, is_allowed
from headstudio.core.opening.safetensors_file import read_safetensors
from headstudio.core.opening.safety import benign_globals, unsafe_globals

RECIPE_KEY = "headstudio.recipe"
TORCHSCRIPT = "TorchScript program"  # what consent to a TorchScript archive allows
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FOREIGN_MAGIC = (  # (first bytes, what the file is, what to do)
    (b"\x89HDF", "an HDF5 file (Keras/TensorFlow weights)", "convert it to PyTorch first"),
    (b"GGUF", "a GGUF file (llama.cpp)", "open the original PyTorch or safetensors weights"),
    (b"\x93NUMPY", "a NumPy array (.npy)", "save the model's state_dict with torch.save instead"),
    (b"\x1f\x8b", "gzip-compressed", "decompress it first (gunzip) and open the result"),
)
# Keys under which training code commonly stores the model; used only to break ties between
# equally large candidates, never to require a layout.
_PREFERRED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")


@dataclass
class Checkpoint:
    """What a file holds: weights (or a whole module) plus where they sat and any embedded recipe."""

    path: Path
    kind: str  # state_dict | checkpoint | module | safetensors | torchscript (kinds.SOURCE_KINDS)
    state_dict: dict[str, torch.Tensor] | None = None
    module: nn.Module | None = None
    container: dict[str, Any] | None = None
    key: tuple[str, ...] = ()  # where the weights sat in the container, e.g. ('state_dict',)
    key_prefix: str = ""  # wrapper prefix stripped from every weight name ('module.', 'model._orig_mod.')
    recipe: str | None = None
    notes: list[str] = field(default_factory=list)
    weights: str = "main"  # main | ema: which copy of the weights a container with EMA gave
    ema_key: tuple[str, ...] = ()  # where the container keeps EMA weights, when it has them


def check_path(path: Path) -> None:
    """Raise a SourceError for a path that cannot be a checkpoint (missing, not a regular file, empty)."""
    if not path.exists():
        broken = " (a symbolic link to a missing file)" if path.is_symlink() else ""
        raise SourceError(
            f"no such file: {path}{broken}; give a checkpoint path or a spec such as torchvision:resnet50"
        )
    if path.is_dir():
        try:
            inside = sorted(p.name for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)[:3]
        except OSError:
            inside = []
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise SourceError(f"{path} is a directory; give a checkpoint file inside it{hint}")
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise SourceError(f"{path} is not a regular file ({kind}); give a checkpoint file")
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        raise SourceError(f"{path} cannot be read ({err.strerror}); check its permissions") from None
    if path.stat().st_size == 0:
        raise SourceError(f"{path} is empty (0 bytes): the save that wrote it failed; save it again")


def sniff_format(path: Path) -> str:
    """Tell the container format from the bytes: zip, pickle, safetensors, torchscript or export."""
    with path.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"PK\x03\x04"):
        names = [m.filename for m in zip_members(path)]
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "zip"
        if any(n.endswith("archive_format") for n in names):
            return "export"
        raise SourceError(f"{path} is a zip archive but not a PyTorch checkpoint (no data.pkl)")
    if len(head) >= 10 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    foreign = next((found[1:] for found in _FOREIGN_MAGIC if head.startswith(found[0])), None)
    if foreign is None and path.suffix.lower() == ".onnx":
        foreign = ("an ONNX model", "open the PyTorch model it was exported from")
    if foreign:
        raise SourceError(f"{path} is {foreign[0]}, not a PyTorch checkpoint; {foreign[1]}")
    if path.suffix.lower() == ".safetensors":
        return "safetensors"  # by name too, so a broken header is told which rule it breaks
    if _is_text_pickle(path):
        return "pickle"  # protocol 0/1: printable, but a pickle all the same
    if _is_text(path):
        raise SourceError(f"{path} is a text file, not a checkpoint; give a .pt/.pth/.safetensors file")
    raise SourceError(
        f"{path} is not a PyTorch, safetensors or TorchScript file "
        f"(it starts with bytes {head[:4].hex(' ')}); check the path"
    )


def read_checkpoint(path: Path, *, trust: Trust = False, weights: str | None = None) -> Checkpoint:
    """Load a file's contents without running code from it (unless ``trust`` covers that code).

    ``weights="ema"`` takes a training checkpoint's EMA copy (timm ``state_dict_ema``, ``model_ema``).
    """
    if weights not in (None, "main", "ema"):
        raise SourceError(f"unknown weights choice '{weights}'; use main or ema")
    check_path(path)
    kind = sniff_format(path)
    if kind == "safetensors":
        tensors, metadata = read_safetensors(path)
        return Checkpoint(path, "safetensors", state_dict=tensors, recipe=metadata.get(RECIPE_KEY))
    if kind == "export":
        raise SourceError(
            f"{path} is a torch.export archive (.pt2); open the model it came from or its state_dict"
        )
    if kind == "torchscript":
        return _read_torchscript(path, trust)
    obj = _torch_load(path, mmap=kind == "zip", trust=trust)
    return _unpack(path, obj, ema=weights == "ema")


def _torch_load(path: Path, *, mmap: bool, trust: Trust) -> Any:
    try:
        return _quiet_load(path, mmap=mmap, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower() and "weights_only" not in str(err).lower():
            raise _corrupt(path, err) from None
        needed = unsafe_globals(path) or [f"code torch refused: {_refusal_reason(err)}"]
        if not is_allowed(trust, needed):
            raise UnsafeCheckpointError(str(path), needed) from None
    except Exception as err:
        raise _corrupt(path, err) from None
    warnings.warn(f"{path}: allowed by --trust: {', '.join(needed)}", TrustedCodeWarning, stacklevel=3)
    try:
        return _quiet_load(path, mmap=mmap, weights_only=False)
    except (ImportError, AttributeError) as err:
        raise SourceError(
            f"{path} refers to code that cannot be imported ({first_line(err)}); install that package or "
            "run from the project that saved it"
        ) from None
    except Exception as err:
        raise _corrupt(path, err) from None


def _quiet_load(path: Path, *, mmap: bool, weights_only: bool) -> Any:
    """torch.load without its warnings about pickle protocols (our errors say what matters)."""
    with warnings.catch_warnings(), torch.serialization.safe_globals(benign_globals()):
        warnings.filterwarnings("ignore", message=".*pickle protocol.*")
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=weights_only)


def _refusal_reason(err: BaseException) -> str:
    """The reason torch's weights-only loader gave, without its advice text and terminal colours."""
    text = _ANSI.sub("", str(err))
    match = re.search(r"WeightsUnpickler error: (.*)", text)
    return first_line(ValueError(match[1] if match else text), limit=160)


def _corrupt(path: Path, err: BaseException) -> SourceError:
    text = _ANSI.sub("", str(err))
    if "central directory" in text or "PytorchStreamReader" in text or "EOF" in text:
        return SourceError(f"{path} is truncated or corrupt; save or copy it again")
    return SourceError(f"{path} could not be read as a PyTorch checkpoint: {first_line(ValueError(text))}")


def _unpack(path: Path, obj: Any, ema: bool = False) -> Checkpoint:
    """Find the model inside whatever the pickle held."""
    if isinstance(obj, torch.jit.ScriptModule):
        return Checkpoint(path, "torchscript", module=obj)
    if isinstance(obj, nn.Module):
        return Checkpoint(path, "module", module=obj)
    if is_state_dict(obj):
        if ema:
            raise SourceError(f"{path} is a bare state_dict with no EMA copy; drop --weights ema")
        return Checkpoint(path, "state_dict", state_dict=dict(obj), recipe=_pt_recipe(obj))
    if isinstance(obj, Mapping):
        found = _find_weights(obj, ema=ema)
        if found is None:
            keys = ", ".join(map(str, list(obj)[:6]))
            what = "no EMA weights" if ema else "no model weights or nn.Module"
            raise SourceError(f"{path} holds a dict ({keys}) with {what} in it")
        key, value, others = found
        ckpt = Checkpoint(path, "checkpoint", container=dict(obj), key=key, weights="ema" if ema else "main")
        ckpt.ema_key = key if ema else next((tuple(o.split(".")) for o in others if _is_ema(o)), ())
        if isinstance(value, nn.Module):
            ckpt.module = value
        else:
            ckpt.state_dict, ckpt.recipe = dict(value), _pt_recipe(value)
        if ema:
            ckpt.notes.append(f"EMA weights taken from '{'.'.join(key)}'")
        elif others:
            ckpt.notes.append(f"weights taken from '{'.'.join(key)}'; also present: {', '.join(others)}")
        if ckpt.ema_key and not ema:
            ckpt.notes.append(f"an EMA copy is in '{'.'.join(ckpt.ema_key)}': --weights ema opens it")
        return ckpt
    raise SourceError(f"{path} holds a {type(obj).__name__}, not model weights or an nn.Module")


def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of string keys to tensors (what ``module.state_dict()`` returns)."""
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _is_ema(key: str) -> bool:
    return "ema" in key.lower().replace("schema", "")


def _find_weights(
    obj: Mapping, depth: int = 3, ema: bool = False
) -> tuple[tuple[str, ...], Any, list[str]] | None:
    """The largest state_dict or module inside a container (ties go to the usual key names).

    With ``ema`` only EMA copies (a key naming ``ema``) are candidates.
    """
    candidates: list[tuple[tuple[str, ...], Any]] = []

    def walk(node: Mapping, prefix: tuple[str, ...], level: int) -> None:
        for k, v in node.items():
            if not isinstance(k, str):
                continue
            if isinstance(v, nn.Module) or is_state_dict(v):
                candidates.append(((*prefix, k), v))
            elif isinstance(v, Mapping) and level > 1:
                walk(v, (*prefix, k), level - 1)

    walk(obj, (), depth)
    if ema:
        candidates = [c for c in candidates if _is_ema(".".join(c[0]))]
    if not candidates:
        return None

    def size(value: Any) -> int:
        return len(value.state_dict()) if isinstance(value, nn.Module) else len(value)

    largest = max(size(v) for _, v in candidates)

    def rank(item: tuple[tuple[str, ...], Any]) -> tuple[bool, bool, int, int]:
        key, value = item
        name = key[-1].lower()
        preferred = _PREFERRED_KEYS.index(name) if name in _PREFERRED_KEYS else len(_PREFERRED_KEYS)
        # an EMA copy carries a counter or two more (n_averaged): the trained weights still come first
        return (size(value) < 0.9 * largest, "ema" in name, -size(value), preferred)

    candidates.sort(key=rank)
    key, value = candidates[0]
    return key, value, [".".join(k) for k, _ in candidates[1:]]


def _pt_recipe(state_dict: Any) -> str | None:
    meta = getattr(state_dict, "_metadata", None) or {}
    root = meta.get("", {}) if isinstance(meta, Mapping) else {}
    value = root.get(RECIPE_KEY) if isinstance(root, Mapping) else None
    return value if isinstance(value, str) else None


def _read_torchscript(path: Path, trust: Trust) -> Checkpoint:
    if not is_allowed(trust, [TORCHSCRIPT]):
        raise TorchScriptConsentError(str(path))
    warnings.warn(f"{path}: allowed by --trust: {TORCHSCRIPT}", TrustedCodeWarning, stacklevel=3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", FutureWarning
            )  # "torch.jit.load is deprecated": not the user's fault
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise _corrupt(path, err) from None
    return Checkpoint(path, "torchscript", module=module)


def _is_text_pickle(path: Path) -> bool:
    """A protocol 0/1 pickle: its opcodes parse up to a STOP (text rarely does: most bytes are no opcode)."""
    with path.open("rb") as fh:
        try:
            ops = [op.name for op, _arg, _pos in pickletools.genops(fh)]
        except Exception:
            return False
    return len(ops) >= 2 and ops[-1] == "STOP"


def _is_text(path: Path) -> bool:
    with path.open("rb") as fh:
        chunk = fh.read(1024)
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)
