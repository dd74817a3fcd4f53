"""A training checkpoint kept in step with its edited weights: weight copies, class counts, optimizers.

A container (Lightning, timm, torchvision's reference scripts...) holds more than the weights Head Studio
opened: EMA copies, hyper-parameters that rebuild the model, optimizer state indexed by parameter
position. ``edited_container`` returns a copy with all of them edited in step and names every field it
changed in ``notes``; the source's dicts are never modified.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from headstudio.core.edits import FreezeBackbone, ReplaceHead, SetTrainable
from headstudio.core.errors import SaveError
from headstudio.core.model.document import Document
from headstudio.core.saving.optimizer_state import BUFFER_LEAVES, sync_optimizers

RECORD_KEY = "headstudio"  # top-level key of an edited container: the recipe and the fields changed
CLASS_FIELDS = (
    "num_classes",
    "num_labels",
    "n_classes",
    "nb_classes",
    "num_class",
    "n_class",
    "out_features",
)
METADATA_KEYS = ("hyper_parameters", "hparams", "args", "cfg", "config")
_KEPT_BY_CLASS_COUNT = (ReplaceHead, SetTrainable, FreezeBackbone)  # a class count says all they change


@dataclass
class WeightsChange:
    """The main weights before and after the edits, keyed relative to the model (no container prefix)."""

    prefix: str
    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]
    untouched: set[str]  # keys of ``after`` holding the very tensor (or bytes) they held before
    params: set[str]  # parameter names of the edited model

    @classmethod
    def of(cls, doc: Document, original: Mapping[str, torch.Tensor], prefix: str) -> WeightsChange:
        """Compare the source's weights (``original``, with ``prefix``) with the edited model's."""
        before = {k[len(prefix) :]: v for k, v in original.items() if k.startswith(prefix)}
        after = doc.model.state_dict()
        untouched = {k for k, v in after.items() if k in before and same_tensor(before[k], v)}
        return cls(prefix, before, after, untouched, {n for n, _ in doc.model.named_parameters()})

    @property
    def structural(self) -> bool:
        """True when tensors were added, removed, reshaped or given new values."""
        return set(self.after) != self.untouched or set(self.before) != set(self.after)

    def moved_from(self) -> dict[str, str]:
        """New key -> old key for tensors the edits only moved (same storage under another name)."""
        where = {_identity(v): k for k, v in self.before.items()}
        return {k: where[_identity(v)] for k, v in self.after.items() if _identity(v) in where}

    def is_param(self, rel: str) -> bool:
        """Whether a model-relative key names a parameter (names gone from the model: by their leaf)."""
        if rel in self.params:
            return True
        if rel in self.after:
            return False
        value = self.before.get(rel)
        floating = value is None or value.is_floating_point()
        return floating and rel.rsplit(".", 1)[-1] not in BUFFER_LEAVES


def same_tensor(a: Any, b: Any) -> bool:
    """Same shape, dtype and bytes (the same storage, or equal values)."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return False
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.device == b.device and _identity(a) == _identity(b):
        return True
    return bool(torch.equal(a.cpu(), b.cpu()))


def _identity(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype) if t.numel() else (id(t),)


def splice(original: Mapping, prefix: str, model_keys: set[str], state: Mapping[str, torch.Tensor]) -> dict:
    """``original`` with its model keys (``prefix`` + key) replaced by ``state``, where the first one was.

    Keys outside the model (other modules of a LightningModule, ``n_averaged``) keep their place and
    value, so parameter order, and with it optimizer state, stays as the producing library wrote it.
    """
    out: dict[str, Any] = OrderedDict()
    placed = False
    for k, v in original.items():
        if isinstance(k, str) and k.startswith(prefix) and k[len(prefix) :] in model_keys:
            if not placed:
                out.update((prefix + n, t) for n, t in state.items())
                placed = True
            continue
        out[k] = v
    if not placed:
        out.update((prefix + n, t) for n, t in state.items())
    meta = getattr(original, "_metadata", None)
    if meta is not None:
        out._metadata = meta  # type: ignore[attr-defined]  # torch's per-module versions, as saved
    return out


def edited_container(
    doc: Document, container: Mapping, key: tuple[str, ...], weights: Mapping, change: WeightsChange,
    recipe: str, notes: list[str],
) -> dict:  # fmt: skip
    """A copy of ``container`` with ``weights`` at ``key`` and everything describing them kept in step."""
    out = replace_at(container, key, weights)
    if not change.structural:
        return out
    from headstudio.core.saving.weight_copies import edited_copy

    changes: list[str] = []
    copies = weight_copies(container, key, change.before)
    for path in stale_copies(container, key, change.before, copies):
        notes.append(f"kept '{path}' as it was: it names the model's layers but not with its shapes")
    for path, prefix in copies:
        copy = get_at(container, path)
        state = edited_copy(
            doc, change, {k: copy[prefix + k] for k in change.before if prefix + k in copy}, notes
        )
        out = replace_at(out, path, splice(copy, prefix, set(change.before), state))
        changes.append(f"edited the weight copy '{'.'.join(path)}' in step with the model")
    for name in METADATA_KEYS:
        if name in out:
            out[name] = _class_fields(out[name], class_count_changes(doc, change), name, changes)
            notes.extend(_rebuild_notes(doc, name))
    changes += sync_optimizers(out, change, get_at(container, key), weights, notes)
    notes.extend(c for c in changes if c not in notes)
    out[RECORD_KEY] = {"recipe": recipe, "changes": changes}
    return out


def weight_copies(container: Mapping, main: tuple[str, ...], before: Mapping) -> list[tuple[tuple, str]]:
    """(path, key prefix) of every other tensor dict holding a full copy of the model's weights (EMA...)."""
    reference = max((k for k in before if _is_weight(k, before[k])), key=len, default=None)
    if reference is None:
        return []
    weights = sum(1 for k, v in before.items() if _is_weight(k, v))
    found = []
    for path, value in _mappings(container, ()):
        if path == main or len(value) < weights:
            continue
        prefix = _copy_prefix(value, reference, before)
        if prefix is not None:
            found.append((path, prefix))
    return found


def stale_copies(container: Mapping, main: tuple[str, ...], before: Mapping, copies: list) -> list[str]:
    """Dicts that name most of the model's keys but do not fit its weights (a copy that lies): kept as is."""
    names = {k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1] if "." in k else k for k in before}
    found = []
    for path, value in _mappings(container, ()):
        if path == main or any(path == p for p, _ in copies) or len(value) < len(before) // 2:
            continue
        tails = {
            k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1]
            for k in value
            if isinstance(k, str) and "." in k
        }
        if len(names & tails) >= max(1, len(names) // 2):
            found.append(".".join(path))
    return found


def check_copies(doc: Document, written: Mapping, key: tuple[str, ...], prefix: str) -> int:
    """Every weight copy of the source is, in ``written``, a copy of the model's weights; how many."""
    ckpt = doc.origin.checkpoint
    source = ckpt.container if ckpt is not None and ckpt.container is not None else {}
    before = {k[len(prefix) :]: v for k, v in (ckpt.state_dict or {}).items() if k.startswith(prefix)}
    after = doc.model.state_dict()
    copies = weight_copies(source, key, before) if before else []
    for path, copy_prefix in copies:
        value = get_at(written, path)
        held = [n for n, t in after.items() if _is_weight(n, t) or copy_prefix + n in value]
        if not all(_fits(value.get(copy_prefix + n), after[n]) for n in held):
            raise SaveError(
                f"verification failed: the weight copy '{'.'.join(path)}' does not match the model"
            )
    return len(copies)


def _rebuild_notes(doc: Document, name: str) -> list[str]:
    """Edits a library cannot express in its hyper-parameters: its own builder makes the old structure."""
    rebuilt = [
        e
        for e in doc.edits
        if not isinstance(e, _KEPT_BY_CLASS_COUNT) or (isinstance(e, ReplaceHead) and e.hidden)
    ]
    if not rebuilt:
        return []
    return [
        f"'{name}' cannot describe '{rebuilt[0].describe()}': a model built from it has the old structure; "
        "load these weights into the edited model (strict=False loading drops the new layers)"
    ]


def _mappings(node: Mapping, path: tuple[str, ...], depth: int = 4) -> Iterator[tuple[tuple, Mapping]]:
    for k, v in node.items():
        if isinstance(k, str) and isinstance(v, Mapping) and depth > 0:
            yield (*path, k), v
            yield from _mappings(v, (*path, k), depth - 1)


def _copy_prefix(value: Mapping, reference: str, before: Mapping) -> str | None:
    for k in value:
        if not isinstance(k, str) or not k.endswith(reference):
            continue
        prefix = k[: len(k) - len(reference)]
        if prefix and not prefix.endswith("."):
            continue
        if all(
            _fits(value.get(prefix + n), t)
            for n, t in before.items()
            if _is_weight(n, t) or prefix + n in value
        ):
            return prefix  # a copy may leave out buffers (timm's ModelEmaV3(exclude_buffers=True))
    return None


def _is_weight(name: str, value: Any) -> bool:
    """A key every copy of the weights holds: a floating tensor that is not a BatchNorm statistic."""
    return (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and name.rsplit(".", 1)[-1] not in BUFFER_LEAVES
    )


def _fits(found: Any, want: torch.Tensor) -> bool:
    return isinstance(found, torch.Tensor) and found.shape == want.shape and found.dtype == want.dtype


def get_at(container: Mapping, path: tuple[str, ...]) -> Any:
    """The value at a nested key path."""
    node: Any = container
    for part in path:
        node = node[part]
    return node


def replace_at(container: Mapping, path: tuple[str, ...], value: Any) -> dict:
    """A copy of ``container`` with ``value`` at the nested ``path`` (the source's dicts untouched)."""
    out = dict(container)
    out[path[0]] = value if len(path) == 1 else replace_at(container[path[0]], path[1:], value)
    return out


def class_count_changes(doc: Document, change: WeightsChange) -> dict[int, int]:
    """Old head size -> new class count, for every ReplaceHead on a head the source had weights for."""
    per_head: dict[str, list[int]] = {}
    for edit in doc.edits:
        if not isinstance(edit, ReplaceHead):
            continue
        counted = edit.class_counts()  # a detector counts its background; RetinaNet's head is A x K wide
        if edit.path in per_head:
            per_head[edit.path][1] = counted[1] if counted else edit.num_classes
            continue
        if counted is not None and any(k.startswith(f"{edit.path}.") for k in change.before):
            per_head[edit.path] = list(counted)
            continue
        weight = change.before.get(f"{edit.path}.weight")
        if isinstance(weight, torch.Tensor) and weight.ndim >= 1:
            per_head[edit.path] = [int(weight.shape[0]), int(edit.num_classes)]
    counts: dict[int, int] = {}
    for old, new in per_head.values():
        counts[old] = new if counts.get(old, new) == new else -1  # two heads of one size disagree
    return {old: new for old, new in counts.items() if new > 0 and new != old}


def _class_fields(value: Any, counts: dict[int, int], where: str, changes: list[str]) -> Any:
    """``value`` (a dict or Namespace, nested) with class-count fields equal to an old head size updated."""
    if isinstance(value, argparse.Namespace):
        fields = vars(value)
        new = _class_fields(fields, counts, where, changes)
        return value if new is fields else argparse.Namespace(**new)
    if not isinstance(value, Mapping) or not counts:
        return value
    out = dict(value)
    for name, field in value.items():
        here = f"{where}.{name}"
        if (
            name in CLASS_FIELDS
            and isinstance(field, int)
            and not isinstance(field, bool)
            and field in counts
        ):
            out[name] = counts[field]
            changes.append(f"changed {here} from {field} to {counts[field]} (it held the old head size)")
        elif isinstance(field, (Mapping, argparse.Namespace)):
            out[name] = _class_fields(field, counts, here, changes)
    if all(out[name] is field for name, field in value.items()):
        return value
    try:
        return type(value)(out)
    except Exception:  # a Mapping type that cannot be built from a dict: keep the data as a plain dict
        return out
