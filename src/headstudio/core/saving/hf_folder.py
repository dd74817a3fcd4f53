"""Saving a transformers model back as a Hugging Face model folder, atomically and verified.

transformers' own ``save_pretrained`` writes ``config.json`` and the weights (its key conversions
reversed, tied weights once, shards with an index above ``SHARD_SIZE``) into a hidden folder beside the
target; the tokenizer and processor files of the source folder are copied unchanged; ``from_pretrained``
then reloads it and must report no missing, unexpected or mismatched keys and equal tensors. Only then
does the folder take the target's name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from torch import nn

from headstudio.core.errors import HeadStudioError, Progress, SaveError, first_line
from headstudio.core.model.document import Document
from headstudio.core.model.hf_heads import base_of

SHARD_SIZE = "2GB"
_WRITTEN_BY_TRANSFORMERS = ("config.json", "generation_config.json")


def saved_model(doc: Document) -> nn.Module:
    """What the folder holds: the model, or its base model once its head was removed."""
    model = doc.model
    names = getattr(model.config, "architectures", None) or []
    base = base_of(model)
    if base is not None and names[:1] == [type(base).__name__]:
        return base
    return model


def write_hf_folder(doc: Document, temp: Path, notes: list[str], progress: Progress) -> None:
    """config.json + weights by ``save_pretrained`` in ``temp``, then the source's other files copied."""
    from headstudio.core.opening.hf import quiet_transformers

    model = saved_model(doc)
    if not hasattr(model, "save_pretrained"):
        raise SaveError("only transformers models save as a model folder; give a .safetensors file name")
    progress("writing weights", 0.1)
    try:
        with quiet_transformers():
            model.save_pretrained(str(temp), max_shard_size=SHARD_SIZE)
    except Exception as err:
        raise SaveError(f"transformers could not save the model: {first_line(err, with_type=True)}") from None
    copied = _copy_source_files(doc, temp)
    if copied:
        notes.append(f"copied {copied} tokenizer/processor file(s) from the source folder unchanged")
    progress("written", 1.0)


def _copy_source_files(doc: Document, temp: Path) -> int:
    source = doc.origin.path if doc.origin.kind == "hf_folder" else None
    if source is None or not Path(source).is_dir():
        return 0
    copied = 0
    for path in sorted(Path(source).iterdir()):
        name = path.name
        if not path.is_file() or name.startswith(".") or (temp / name).exists() or _is_weights(name):
            continue
        if name in _WRITTEN_BY_TRANSFORMERS:
            continue
        shutil.copy2(path, temp / name)
        copied += 1
    return copied


def _is_weights(name: str) -> bool:
    return name.endswith((".safetensors", ".bin", ".index.json", ".pt", ".pth", ".msgpack", ".h5"))


def verify_hf_folder(doc: Document, temp: Path, notes: list[str]) -> int:
    """Reload with ``from_pretrained``: no missing/unexpected/mismatched keys, every tensor equal."""
    from headstudio.core.opening.hf import quiet_transformers
    from headstudio.core.saving.formats import tensors_equal

    model = saved_model(doc)
    try:
        with quiet_transformers():
            reloaded, info = type(model).from_pretrained(
                str(temp), local_files_only=True, output_loading_info=True
            )
    except Exception as err:
        raise SaveError(f"verification failed: from_pretrained cannot load it ({first_line(err)})") from None
    added = parts_the_class_adds(model, info.get("missing_keys") or ())
    if added:  # e.g. RobertaModel builds a pooler that a masked LM's encoder never had
        info["missing_keys"] = set()
        notes.append(
            f"{type(model).__name__}.from_pretrained adds {', '.join(added)}, which this model never had; "
            "transformers initialises it fresh on load (the hidden states do not use it)"
        )
    for what in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(what):
            key = sorted(map(str, info[what]))[0]
            raise SaveError(
                f"verification failed: {type(model).__name__}.from_pretrained reports "
                f"{what.replace('_', ' ')} "
                f"({key}); the edited head no longer fits this class, save as .safetensors instead"
            )
    if model is not doc.model:
        _check_auto_class(model)
    return tensors_equal(model.state_dict(), reloaded.state_dict(), temp)


def _check_auto_class(base: nn.Module) -> None:
    """A head-less folder must load as this body with ``AutoModel``, not as a bigger model of its type."""
    from transformers import AutoModel

    mapping = getattr(AutoModel, "_model_mapping", None)
    try:
        auto = mapping[type(base.config)] if mapping is not None else type(base)
    except KeyError:
        auto = None
    choices = auto if isinstance(auto, (tuple, list)) else (auto,)  # a type may map to several classes
    if type(base) not in choices:
        built = f"would build {choices[0].__name__}" if choices[0] is not None else "has no class for it"
        raise SaveError(
            f"without its head the model is a {type(base).__name__}, and AutoModel {built}; "
            "nothing was written: save it as .safetensors, or keep the head"
        )


def parts_the_class_adds(model: nn.Module, missing: Any) -> list[str]:
    """Top-level parts every missing key belongs to, when the saved model has none of them (else [])."""
    parts = sorted({str(key).split(".")[0] for key in missing})
    if not parts or any(getattr(model, part, None) is not None for part in parts):
        return []
    return parts


def check_folder_target(doc: Document, target: Path) -> None:
    """An existing target folder is replaced only when it is empty or a model folder (config.json)."""
    if target.is_dir() and any(target.iterdir()) and not (target / "config.json").is_file():
        raise SaveError(f"{target} is a folder that is not a model folder; give a new or empty folder for -o")


def save_folder(doc: Document, target: Path, progress: Progress) -> Any:
    """Write, verify, fsync, then swap the folder in; the previous target stays until the swap."""
    from headstudio.core.saving.atomic import SaveReport

    started = time.perf_counter()
    notes: list[str] = []
    check_folder_target(doc, target)
    try:
        temp = Path(
            tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}-", suffix=".partial")
        )
    except OSError as err:
        raise SaveError(
            f"cannot write in {target.parent}: {err.strerror or err}; nothing was changed"
        ) from None
    try:
        write_hf_folder(doc, temp, notes, lambda m, f: progress(m, 0.7 * f))
        progress("verifying", 0.7)
        count = verify_hf_folder(doc, temp, notes)
        size = _fsync_tree(temp)
        _swap_in(temp, target)
    except HeadStudioError:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    except OSError as err:
        shutil.rmtree(temp, ignore_errors=True)
        raise SaveError(f"could not write {target}: {err.strerror or err}; nothing was changed") from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    progress("saved", 1.0)
    return SaveReport(target, "hf_folder", size, count, time.perf_counter() - started, notes)


def _fsync_tree(folder: Path) -> int:
    """fsync every file and the folder; the total bytes written."""
    total = 0
    for path in folder.iterdir():
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
        total += path.stat().st_size
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return total


def _swap_in(temp: Path, target: Path) -> None:
    """Rename ``temp`` to ``target``; an existing target moves aside first and is removed after."""
    if not target.exists():
        os.replace(temp, target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}-", suffix=".old"))
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(temp, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
