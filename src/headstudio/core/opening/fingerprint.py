"""Recognising bare weights among the known architectures by their parameter names and shapes.

A state_dict is scored against every torchvision and timm architecture in the fingerprint index; the
class count (and timm's ``in_chans``) are read from the shapes where the head and stem differ from the
defaults, so ``convnext_nano`` trained for 7 classes is recognised as ``timm:convnext_nano(num_classes=7)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from headstudio.core.errors import Progress
from headstudio.core.model.shape_text import format_shape
from headstudio.core.opening.fingerprint_index import (
    Entries,
    FingerprintIndex,
    ignored_key,
    load_index,
    shape_text,
)

SHORTLIST = 24  # candidates compared in detail after the vectorised first pass
_SHOW = 2
_HEAD_NAMES = ("head", "fc", "classifier", "last_linear")


@dataclass(frozen=True)
class Candidate:
    """An architecture the weights may belong to: its spec (with inferred sizes), score and differences."""

    arch: str  # spec, e.g. "timm:convnext_nano(num_classes=7)"
    score: float  # 1.0 = every name and shape fits
    differs: tuple[str, ...] = ()
    kwargs: dict[str, int] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return not self.differs

    def describe(self) -> str:
        """One line for people: spec, score and what differs."""
        what = "fits exactly" if self.exact else "; ".join(self.differs)
        return f"{self.arch}  ({self.percent}: {what})"

    @property
    def percent(self) -> str:
        """The score for people; a near match never rounds up to 100%."""
        return "100%" if self.exact else f"{int(self.score * 1000) / 10:g}%"


def shapes_of(state_dict: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a state_dict (of tensors, or of shapes already)."""
    out = {}
    for key, value in state_dict.items():
        shape = getattr(value, "shape", value)
        if isinstance(key, str) and not ignored_key(key) and isinstance(shape, (tuple, list)):
            out[key] = tuple(int(d) for d in shape)
    return out


def identify(
    state_dict: Mapping[str, Any],
    *,
    index: FingerprintIndex | None = None,
    limit: int = 5,
    prefer: str | None = None,
    progress: Progress | None = None,
) -> list[Candidate]:
    """Ranked candidates for ``state_dict`` (best first); an exact one first means it is recognised.

    ``prefer`` (a family name a file mentions, e.g. timm's ``arch='convnext'``) breaks ties.
    """
    index = index or load_index(progress)
    found = strip_wrapper(shapes_of(state_dict), index)
    if not found:
        return []
    shortlist = _shortlist(found, index)
    ranked = [compare(found, index.entries(a), index.archs[a], int(index.classes[a])) for a in shortlist]
    ranked.sort(key=lambda c: (-c.score, not _preferred(c.arch, prefer), _tie_order(c.arch)))
    return ranked[:limit]


def strip_wrapper(found: dict[str, tuple[int, ...]], index: FingerprintIndex) -> dict[str, tuple[int, ...]]:
    """Drop the wrapper prefix (DDP ``module.``, ``_orig_mod.``, Lightning ``model.``) the index fits best."""
    best, best_hits = found, _known(found, index)
    current = found
    for _ in range(3):
        firsts = Counter(k.split(".", 1)[0] for k in current if "." in k)
        if not firsts:
            break
        step = firsts.most_common(1)[0][0] + "."
        current = {k[len(step) :]: v for k, v in current.items() if k.startswith(step)}
        hits = _known(current, index)
        if hits > best_hits:
            best, best_hits = current, hits
    return best


def _known(found: dict[str, tuple[int, ...]], index: FingerprintIndex) -> int:
    return int((index.name_ids(list(found)) >= 0).sum())


def compare(found: dict[str, tuple[int, ...]], entries: Entries, arch: str, classes: int) -> Candidate:
    """How ``found`` fits one architecture, with the class count / input channels read from the shapes."""
    expected = dict(entries)
    kwargs = _infer_sizes(found, expected, arch, classes)
    adjusted = {k: _resized(shape, found.get(k), classes, kwargs) for k, shape in expected.items()}
    if kwargs.get("num_classes") == 0:
        adjusted = {k: s for k, s in adjusted.items() if not _class_key(s, classes) or k in found}
    elif kwargs.get("num_classes") and not classes:  # a head on a headless default: its new keys fit
        adjusted.update({k: found[k] for k in _added_head(found, expected)})
    missing = [k for k in adjusted if k not in found]
    unexpected = [k for k in found if k not in adjusted]
    other = [k for k in adjusted if k in found and found[k] != adjusted[k]]
    fits = len(adjusted) - len(missing) - len(other)
    score = fits / max(len(adjusted) + len(unexpected), 1)
    differs = []
    if missing:
        differs.append(f"{len(missing)} missing ({_first(missing)})")
    if unexpected:
        differs.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
    if other:
        k = other[0]
        file_shape, arch_shape = format_shape(list(found[k])), format_shape(list(adjusted[k]))
        differs.append(f"{len(other)} other shapes ({k}: {file_shape} vs {arch_shape})")
    return Candidate(_spec(arch, kwargs), round(score, 4), tuple(differs), kwargs)


def _infer_sizes(
    found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], arch: str, classes: int
) -> dict[str, int]:
    """num_classes from head rows that differ from the default count; in_chans from a stem that differs."""
    votes: Counter[int] = Counter()
    channels: Counter[int] = Counter()
    for key, shape in expected.items():
        got = found.get(key)
        if got is None or got == shape or len(got) != len(shape):
            continue
        if (
            classes
            and shape[0] % classes == 0
            and got[1:] == shape[1:]
            and got[0] % (shape[0] // classes) == 0
        ):
            votes[got[0] // (shape[0] // classes)] += 1
        elif len(shape) >= 2 and shape[1] == 3 and got[0] == shape[0] and got[2:] == shape[2:]:
            channels[got[1]] += 1
    kwargs: dict[str, int] = {}
    if len(votes) == 1:
        kwargs["num_classes"] = next(iter(votes))
    elif not votes and classes and arch.startswith("timm:"):
        head = [k for k, s in expected.items() if _class_key(s, classes)]
        if head and not any(k in found for k in head) and len(found) >= len(expected) - len(head):
            kwargs["num_classes"] = 0  # reset_classifier(0): a feature extractor's weights
    elif not classes and arch.startswith("timm:"):
        rows = {found[k][0] for k in _added_head(found, expected)}
        if len(rows) == 1:
            kwargs["num_classes"] = rows.pop()  # a model headless by default, given a classifier
    if len(channels) == 1 and arch.startswith("timm:"):
        kwargs["in_chans"] = next(iter(channels))
    return kwargs


def _resized(
    shape: tuple[int, ...], got: tuple[int, ...] | None, classes: int, kwargs: dict[str, int]
) -> tuple[int, ...]:
    """The shape a tensor has with the inferred sizes (only where the file shows that change)."""
    n, c = kwargs.get("num_classes"), kwargs.get("in_chans")
    if got is None or got == shape or len(got) != len(shape):
        return shape
    if n and classes and shape[0] % classes == 0 and got == (n * (shape[0] // classes), *shape[1:]):
        return got
    if c and len(shape) >= 2 and shape[1] == 3 and got == (shape[0], c, *shape[2:]):
        return got
    return shape


def _added_head(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> list[str]:
    """Keys beyond the architecture's that look like a classifier added to it (head, fc, classifier)."""
    extra = [k for k in found if k not in expected]
    heads = [k for k in extra if k.split(".")[0] in _HEAD_NAMES and found[k]]
    return heads if heads and len(heads) == len(extra) <= 4 else []


def _class_key(shape: tuple[int, ...], classes: int) -> bool:
    return bool(classes) and bool(shape) and shape[0] == classes


def _shortlist(found: dict[str, tuple[int, ...]], index: FingerprintIndex) -> list[int]:
    """Architectures sharing the most names (then names with shapes) with ``found``: a vectorised pass."""
    ids = index.name_ids(list(found))
    shape_ids = _derived(index)["shape_ids"]
    wanted = np.full(len(index.names), -2, dtype=np.int64)  # name id -> the file's shape id for it
    known = [shape_ids.get(shape_text(s), -1) for s, i in zip(found.values(), ids, strict=True) if i >= 0]
    wanted[ids[ids >= 0]] = known
    per_entry = wanted[index.entry_name]  # a gather, not a sort: linear in the index size
    arch_of = _derived(index)["arch_of"]
    sizes = np.diff(index.offsets)
    name_hits = np.bincount(arch_of[per_entry != -2], minlength=len(index.archs))
    pair_hits = np.bincount(arch_of[per_entry == index.entry_shape], minlength=len(index.archs))
    name_score = name_hits / (sizes + len(found) - name_hits)
    pair_score = pair_hits / (sizes + len(found) - pair_hits)
    order = np.lexsort((-pair_score, -name_score))
    return [int(a) for a in order[:SHORTLIST] if name_hits[a] > 0]


_DERIVED: dict[int, dict[str, Any]] = {}


def _derived(index: FingerprintIndex) -> dict[str, Any]:
    """Lookup tables built once per loaded index."""
    key = id(index)
    if key not in _DERIVED:
        _DERIVED.clear()
        _DERIVED[key] = {
            "shape_ids": {text: i for i, text in enumerate(index.shape_texts())},
            "arch_of": np.repeat(np.arange(len(index.archs)), np.diff(index.offsets)),
            "index": index,
        }
    return _DERIVED[key]


def _spec(arch: str, kwargs: dict[str, int]) -> str:
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{arch}({args})" if args else arch


def _preferred(arch: str, prefer: str | None) -> bool:
    return bool(prefer) and prefer.lower() in arch.split(":", 1)[1].split("(")[0].lower()


def _tie_order(arch: str) -> tuple[int, int, str]:
    """Equal fits: torchvision first (no extra dependency), then the plainest name."""
    name = arch.split("(")[0]
    return (0 if name.startswith("torchvision:") else 1, len(name), name)


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOW]) + (", ..." if len(keys) > _SHOW else "")
