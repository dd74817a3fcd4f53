"""The writers and verifiers behind ``saving.save``: one pair per output format.

A writer fills a temp path; a verifier reads that path back and compares every tensor with the model,
returning how many it checked. Both raise SaveError with one line when they cannot do their job.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from headstudio.core.errors import (
    HeadStudioError,
    Progress,
    SaveError,
    UnsafeCheckpointError,
    UntrustedSpecError,
    first_line,
)
from headstudio.core.model.document import Document
from headstudio.core.opening.checkpoints import RECIPE_KEY, read_checkpoint
from headstudio.core.opening.safetensors_file import Readback, write_safetensors
from headstudio.core.opening.weights import align_keys
from headstudio.core.saving.containers import (
    WeightsChange,
    check_copies,
    edited_container,
    replace_at,
    splice,
)
from headstudio.core.saving.hf_folder import verify_hf_folder, write_hf_folder


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's deprecation chatter (TorchScript, export) that is not the user's business."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def write_safetensors_file(doc: Document, temp: Path, notes: list[str], progress: Progress) -> None:
    """Weights + recipe metadata, streamed tensor by tensor, each read back and compared as it lands.

    Memory-mapped weights stay mapped; the read-back (``Readback``) runs beside the writer, so when
    this returns every tensor's bytes in ``temp`` have been compared with the model's.
    """
    state = model_state(doc)
    total = sum(t.numel() * t.element_size() for t in state.values()) or 1
    done = 0
    metadata = {RECIPE_KEY: recipe_json(doc), "format": "pt"}
    with Readback(temp, state) as readback:

        def tick(nbytes: int) -> None:
            nonlocal done
            readback.advance(nbytes)
            done += nbytes
            progress("writing weights", done / total)

        with temp.open("wb", buffering=0) as fh:
            write_safetensors(fh, state, metadata, tick)
        readback.finish()


def write_state_dict(doc: Document, temp: Path, notes: list[str], progress: Progress) -> None:
    """A plain state_dict for ``torch.load(weights_only=True)``; the recipe rides in ``_metadata``."""
    torch.save(set_recipe_metadata(compact_views(model_state(doc)), recipe_json(doc)), temp)
    progress("written", 1.0)


def write_checkpoint(doc: Document, temp: Path, notes: list[str], progress: Progress) -> None:
    """The source's training checkpoint, its weights, weight copies, class counts and optimizers edited."""
    ckpt = doc.origin.checkpoint
    if ckpt is None or ckpt.container is None:
        raise SaveError("the source is not a training checkpoint; save as .safetensors or .pt instead")
    if ckpt.module is not None:
        container = replace_at(ckpt.container, ckpt.key, doc.model)
    else:
        prefix = ckpt.key_prefix
        original = ckpt.state_dict or {}
        change = WeightsChange.of(doc, original, prefix)
        merged = splice(original, prefix, set(change.before), compact_views(change.after))
        weights = set_recipe_metadata(merged, recipe_json(doc))
        if prefix and change.structural and len(merged) > len(change.after):
            notes.append(f"kept {len(merged) - len(change.after)} keys outside '{prefix}' unchanged")
        container = edited_container(doc, ckpt.container, ckpt.key, weights, change, recipe_json(doc), notes)
    torch.save(container, temp)
    progress("written", 1.0)


def write_full(doc: Document, temp: Path, notes: list[str], progress: Progress) -> None:
    """The whole pickled module (needs ``torch.load(weights_only=False)`` and the model's code)."""
    try:
        torch.save(_compact_module(doc.model), temp)
    except (OSError, RuntimeError) as err:
        if isinstance(err, OSError) or "write failed" in str(err):
            raise  # the disk, not the pickling: save() names the cause and the space
        raise SaveError(f"the model cannot be pickled: {first_line(err)}; save as .safetensors") from None
    except Exception as err:
        raise SaveError(f"the model cannot be pickled: {first_line(err)}; save as .safetensors") from None
    notes.append("a full (pickled) model runs code when loaded; share .safetensors with others instead")
    progress("written", 1.0)


def write_torchscript(doc: Document, temp: Path, notes: list[str], progress: Progress) -> None:
    """torch.jit.script, falling back to torch.jit.trace on the document's input shape."""
    with _quiet():
        try:
            compiled = torch.jit.script(doc.model)
        except Exception as script_err:
            try:
                compiled = torch.jit.trace(doc.model, _example(doc), strict=False, check_trace=False)
            except Exception:
                raise SaveError(
                    f"the model cannot be compiled to TorchScript: {first_line(script_err)}; "
                    "save as .safetensors or try --format export"
                ) from None
            notes.append("TorchScript by tracing: control flow is frozen for the traced input shape")
        compiled.save(str(temp))
    progress("written", 1.0)


def write_export(doc: Document, temp: Path, notes: list[str], progress: Progress) -> None:
    """A ``torch.export`` program (.pt2) traced on the document's input shape."""
    with _quiet():
        try:
            program = torch.export.export(doc.model, (_example(doc),))
        except Exception as err:
            raise SaveError(
                f"the model cannot be exported with torch.export: {first_line(err)}; "
                "save as .safetensors or try --format torchscript"
            ) from None
        torch.export.save(program, str(temp))
    progress("written", 1.0)


def verify_safetensors(doc: Document, temp: Path, notes: list[str]) -> int:
    """Reread the file with open_source's reader: header, recipe, every tensor's name, shape and dtype.

    The bytes were compared while writing (``Readback``). The architecture is not rebuilt by replaying
    the recipe (a shape trace, 0.3 s on vit_h_14): the recipe read back must equal the open document's,
    and that document is what replaying it builds.
    """
    from headstudio.core.opening.file_specs import file_spec
    from headstudio.core.opening.specs import resolve_factory
    from headstudio.core.recipe import Recipe

    ckpt = read_checkpoint(temp)
    if ckpt.recipe != recipe_json(doc):
        raise SaveError(f"verification failed: the recipe read back from {temp.name} is not the model's")
    try:
        resolve_factory(file_spec(Recipe.from_json(ckpt.recipe).arch, temp.name)[0])
    except UntrustedSpecError as err:
        notes.append(f"reopening this file will need --trust or --arch: its recipe names {err.globals[0]}")
    except HeadStudioError as err:
        notes.append(f"reopening this file will need --arch ({err})")
    return _same_entries(model_state(doc), ckpt.state_dict or {})


def _same_entries(expected: dict[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> int:
    """Every tensor is there with its shape and dtype (values were compared by ``Readback``)."""
    for name, want in expected.items():
        got = found.get(name)
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            raise SaveError(f"verification failed: the reopened file has no tensor '{name}' like the model's")
    return len(expected)


def verify_reopened(doc: Document, temp: Path, notes: list[str], compare: Callable | None = None) -> int:
    """Reopen our own format through open_source (embedded recipe) and compare every tensor."""
    from headstudio.core.opening.sources import open_source

    compare = compare or (lambda expected, found: tensors_equal(expected, found, temp))
    expected = model_state(doc)
    try:
        reopened = open_source(str(temp))
    except HeadStudioError as err:
        notes.append(f"reopening this file will need --arch ({err})")
        ckpt = read_checkpoint(temp)
        found, _, _ = align_keys(set(expected), ckpt.state_dict or {})
        return compare(expected, found)
    count = compare(expected, reopened.model.state_dict())
    if reopened.param_counts() != doc.param_counts():
        _total, trainable = reopened.param_counts()
        notes.append(f"reopened with {trainable:,} trainable params, not {doc.param_counts()[1]:,}")
    return count


def verify_checkpoint(doc: Document, temp: Path, notes: list[str]) -> int:
    """As ``verify_reopened``, and every weight copy (EMA...) read back fits the model's weights."""
    count = verify_reopened(doc, temp, notes)
    ckpt = doc.origin.checkpoint
    if ckpt is not None and ckpt.module is None and ckpt.container is not None:
        prefix = ckpt.key_prefix
        try:
            written = read_checkpoint(temp).container or {}
        except UnsafeCheckpointError:  # the source's own classes, loaded with consent; weights checked above
            return count
        count += check_copies(doc, written, ckpt.key, prefix) * len(model_state(doc))
    return count


def verify_full(doc: Document, temp: Path, notes: list[str]) -> int:
    """Unpickle our own file (we just wrote it, so loading its code is safe) and compare."""
    with _quiet():
        model = torch.load(temp, map_location="cpu", mmap=True, weights_only=False)
    return tensors_equal(model_state(doc), model.state_dict(), temp)


def verify_torchscript(doc: Document, temp: Path, notes: list[str]) -> int:
    """Load the compiled archive and compare its state_dict."""
    with _quiet():
        model = torch.jit.load(str(temp), map_location="cpu")
    return tensors_equal(model_state(doc), model.state_dict(), temp)


def verify_export(doc: Document, temp: Path, notes: list[str]) -> int:
    """Load the exported program and compare the parameters and buffers it carries."""
    with _quiet():
        program = torch.export.load(str(temp))
    expected = model_state(doc)
    found = dict(program.state_dict)
    return tensors_equal({k: expected[k] for k in found if k in expected}, found, temp)


def _example(doc: Document) -> torch.Tensor:
    from headstudio.core.model.shapes import input_dtype

    return torch.zeros(doc.input_shape, dtype=input_dtype(doc.model))


def recipe_json(doc: Document) -> str:
    """The recipe embedded in saved files: architecture, input shape, edits (so reopening needs no --arch)."""
    from headstudio.core.recipe import Recipe

    return Recipe.from_document(doc).to_json()


def model_state(doc: Document) -> dict[str, torch.Tensor]:
    """The model's state_dict (detached tensors that share storage stay shared; no copies)."""
    return doc.model.state_dict()


def tensors_equal(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path) -> int:
    """Compare every tensor by name, shape, dtype and value; raise SaveError naming the first difference."""
    missing = [k for k in expected if k not in found]
    if missing:
        raise SaveError(f"verification failed: {path.name} lacks {len(missing)} tensors (e.g. {missing[0]})")
    for name, want in expected.items():
        got = found[name]
        if got.shape != want.shape or got.dtype != want.dtype or not torch.equal(got.cpu(), want.cpu()):
            raise SaveError(
                f"verification failed: tensor '{name}' differs after writing; nothing was replaced"
            )
    return len(expected)


def compact_views(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors that view part of a larger storage (a memory-mapped .safetensors file) cloned to their own.

    torch.save writes whole storages and refuses one storage viewed as several dtypes; tied tensors
    (the same view twice) stay tied.
    """
    out: dict[str, torch.Tensor] = {}
    clones: dict[tuple, torch.Tensor] = {}
    for name, t in state.items():
        whole = t.untyped_storage().nbytes() == t.numel() * t.element_size()
        if whole or t.is_meta:
            out[name] = t
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key not in clones:
            clones[key] = t.detach().clone()
        out[name] = clones[key]
    if hasattr(state, "_metadata"):
        out = OrderedDict(out)
        out._metadata = state._metadata  # type: ignore[attr-defined]
    return out


def _compact_module(model: torch.nn.Module) -> torch.nn.Module:
    """``model``, or a copy whose views of a larger storage (a mapped .safetensors) are tensors of their own.

    The copy shares every other tensor, so only the mapped weights are read into memory.
    """
    tensors = list(itertools.chain(model.parameters(), model.buffers()))
    views = [t for t in tensors if t.untyped_storage().nbytes() != t.numel() * t.element_size()]
    if not views:
        return model
    memo: dict[int, Any] = {id(t): t for t in tensors}
    for t in views:
        own = t.detach().clone()
        memo[id(t)] = torch.nn.Parameter(own, t.requires_grad) if isinstance(t, torch.nn.Parameter) else own
    return copy.deepcopy(model, memo)


def set_recipe_metadata(state: dict[str, torch.Tensor], recipe: str) -> dict[str, torch.Tensor]:
    """A state_dict OrderedDict whose ``_metadata['']`` carries the recipe (weights_only-loadable)."""
    from collections import OrderedDict

    out = OrderedDict(state)
    meta = OrderedDict(getattr(state, "_metadata", None) or {})
    meta[""] = {**dict(meta.get("", {})), RECIPE_KEY: recipe}
    out._metadata = meta  # type: ignore[attr-defined]
    return out


WRITERS: dict[str, Callable[[Document, Path, list[str], Progress], None]] = {
    "safetensors": write_safetensors_file,
    "state_dict": write_state_dict,
    "checkpoint": write_checkpoint,
    "full": write_full,
    "torchscript": write_torchscript,
    "export": write_export,
    "hf_folder": write_hf_folder,
}
VERIFIERS: dict[str, Callable[[Document, Path, list[str]], int]] = {
    "safetensors": verify_safetensors,
    "state_dict": verify_reopened,
    "checkpoint": verify_checkpoint,
    "full": verify_full,
    "torchscript": verify_torchscript,
    "export": verify_export,
    "hf_folder": verify_hf_folder,
}
