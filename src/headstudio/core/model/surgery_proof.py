"""Surgery proof: the same input through the original and the edited model, compared module by module.

For every module both models have at the same path with the same type, and that both ran, the proof says
whether its output is unchanged: bit-identical (``torch.equal``) or the largest absolute difference.
The first changed module in the edited model's execution order is where the outputs start to differ.

The original is the document's ``baseline``: a structural copy made before the first edit that shares
every weight tensor (edits swap modules, they never write into tensors), so it costs module objects only
and needs no re-reading of the source (which may have changed on disk, or be a randomly initialised spec).
Outputs of the original are kept as copies up to ``budget`` bytes, beyond that as a digest (equality only).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from headstudio.core.errors import Progress, UnsupportedOperationError
from headstudio.core.model.heads import as_plain_tree
from headstudio.core.model.probe import require_weights, run_forward

if TYPE_CHECKING:
    from headstudio.core.model.document import Document

BUDGET_BYTES = 1 << 30  # copies of the original's outputs; the rest are compared by digest


@dataclass
class ModuleComparison:
    """One module's output in the original vs the edited model."""

    path: str
    type: str
    status: str  # unchanged | changed | shape changed | replaced | added
    max_abs_diff: float | None = None  # None when not measured (digest only, or not comparable)
    note: str = ""

    @property
    def unchanged(self) -> bool:
        return self.status == "unchanged"

    def describe(self) -> str:
        """'unchanged (bit-identical)', 'changed: max |Δ| 0.0123', 'replaced (Linear → Sequential)'."""
        if self.status == "unchanged":
            return "unchanged (bit-identical)"
        if self.status == "changed" and self.max_abs_diff is not None:
            return f"changed: max |Δ| {self.max_abs_diff:.4g}"
        return self.status + (f" ({self.note})" if self.note else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "status": self.status,
            "max_abs_diff": self.max_abs_diff,
            "note": self.note,
        }


@dataclass
class SurgeryProof:
    """Per-module comparisons in the edited model's execution order, and where differences start."""

    modules: list[ModuleComparison] = field(default_factory=list)

    @property
    def compared(self) -> list[ModuleComparison]:
        return [m for m in self.modules if m.status in ("unchanged", "changed", "shape changed")]

    @property
    def first_difference(self) -> ModuleComparison | None:
        """The first module (in execution order) whose output differs, the model's output last; or None."""
        differ = [m for m in self.modules if m.status in ("changed", "shape changed")]
        return next((m for m in differ if m.path), differ[0] if differ else None)

    def by_path(self) -> dict[str, ModuleComparison]:
        return {m.path: m for m in self.modules}

    def summary(self) -> str:
        """'150 modules compared: 149 unchanged (bit-identical), 1 changed; first difference at fc'."""
        compared = self.compared
        same = sum(m.unchanged for m in compared)
        first = self.first_difference
        where = f"; first difference at {first.path or 'the output'} ({first.describe()})" if first else ""
        changed = len(compared) - same
        return f"{len(compared)} modules compared: {same} unchanged (bit-identical), {changed} changed{where}"

    def to_json(self) -> dict[str, Any]:
        first = self.first_difference
        compared = self.compared
        return {
            "compared": len(compared),
            "unchanged": sum(m.unchanged for m in compared),
            "first_difference": first.path if first else None,
            "modules": [m.to_json() for m in self.modules],
        }


def prove_surgery(doc: Document, x: torch.Tensor, progress: Progress | None = None) -> SurgeryProof:
    """Compare ``doc``'s model with its state before the first edit (``doc.baseline``) on input ``x``."""
    if doc.baseline is None:
        raise UnsupportedOperationError(
            "this model has no edits to prove (or its original could not be kept); "
            "compare two files with: headstudio probe EDITED --against ORIGINAL"
        )
    return compare_models(doc.baseline, doc.model, x, progress)


def compare_models(
    original: nn.Module,
    edited: nn.Module,
    x: torch.Tensor,
    progress: Progress | None = None,
    budget: int = BUDGET_BYTES,
) -> SurgeryProof:
    """Run ``x`` through both models and compare every module they share by path and type."""
    require_weights(original)
    require_weights(edited)
    kept: dict[str, tuple[str, list[Any]]] = {}
    room = [budget]

    def remember(path: str, module: nn.Module, args: tuple, output: Any) -> None:
        if path not in kept:
            kept[path] = (type(module).__name__, [_keep(t, room) for t in _leaves(output)])

    run_forward(original, x, {p: [remember] for p, _ in original.named_modules()}, _part(progress, 0.0))
    proof = SurgeryProof()
    seen: set[str] = set()

    def compare(path: str, module: nn.Module, args: tuple, output: Any) -> None:
        if path in seen:
            return
        seen.add(path)
        proof.modules.append(_compare(path, type(module).__name__, kept.get(path), _leaves(output)))

    run_forward(edited, x, {p: [compare] for p, _ in edited.named_modules()}, _part(progress, 0.5))
    return proof


def _compare(
    path: str, kind: str, before: tuple[str, list[Any]] | None, after: list[torch.Tensor]
) -> ModuleComparison:
    if before is None:
        return ModuleComparison(path, kind, "added", note="not in the original, or not run there")
    was_kind, was = before
    if was_kind != kind:
        return ModuleComparison(path, kind, "replaced", note=f"{was_kind} → {kind}")
    shapes = [tuple(w.shape) if isinstance(w, torch.Tensor) else w[0] for w in was]
    if shapes != [tuple(t.shape) for t in after]:
        return ModuleComparison(
            path,
            kind,
            "shape changed",
            note=f"{_shape_text(shapes)} → {_shape_text([tuple(t.shape) for t in after])}",
        )
    identical, worst = True, 0.0
    for old, new in zip(was, after, strict=True):
        if isinstance(old, torch.Tensor):
            if not torch.equal(old, new):
                identical = False
                worst = max(worst, _max_diff(old, new))
        elif old != _digest(new):
            identical, worst = False, float("nan")
    if identical:
        return ModuleComparison(path, kind, "unchanged", 0.0)
    measured = worst == worst  # NaN: compared by digest only
    return ModuleComparison(
        path, kind, "changed", worst if measured else None, "" if measured else "over the copy budget"
    )


def _leaves(output: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(as_plain_tree(output)) if isinstance(t, torch.Tensor)]


def _keep(tensor: torch.Tensor, room: list[int]) -> Any:
    """A copy (in-place ops later in the forward must not change it), or a digest once over budget."""
    size = tensor.numel() * tensor.element_size()
    if size <= room[0]:
        room[0] -= size
        return tensor.detach().clone()
    return _digest(tensor)


def _digest(tensor: torch.Tensor) -> tuple[tuple[int, ...], str, str]:
    data = tensor.detach().contiguous().cpu()
    raw = data.reshape(-1).view(torch.uint8)
    return (
        tuple(tensor.shape),
        str(tensor.dtype),
        hashlib.blake2b(raw.numpy().tobytes(), digest_size=16).hexdigest(),
    )


def _max_diff(old: torch.Tensor, new: torch.Tensor) -> float:
    if old.is_floating_point() or old.is_complex():
        return float((old.double() - new.double()).abs().max().item()) if old.numel() else 0.0
    return float((old.long() - new.long()).abs().max().item()) if old.numel() else 0.0


def _shape_text(shapes: list[Any]) -> str:
    return ", ".join(str(list(s)) for s in shapes) or "no tensor"


def _part(progress: Progress | None, start: float) -> Progress | None:
    if progress is None:
        return None
    return lambda message, fraction: progress(message, start + fraction / 2)
