"""The Document: an opened model, where it came from and what was done to it. The one source of truth.

The tree, shapes and heads are derived from it on demand and cached until the model changes. A trace runs
on a structural copy of the model (weights shared, never copied), so the live model is only ever changed
by edits: another thread may trace, preview or save while the user edits (see ``compute_trace``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from headstudio.core.edits.base import Edit

from headstudio.core.errors import TraceError, first_line
from headstudio.core.model.heads import HeadInfo, describe_head
from headstudio.core.model.hf_heads import hf_head_roles
from headstudio.core.model.inputs import NamedInput, config_inputs
from headstudio.core.model.shapes import Trace, default_input_shape, trace_model
from headstudio.core.model.tree import ModuleNode, build_tree
from headstudio.core.modules import structure_copy
from headstudio.core.opening.checkpoints import Checkpoint

DETACH_ATTEMPTS = 3  # copies taken while an edit changed the model are retaken (edits are quick)


@dataclass
class Origin:
    """Where a model came from: the SOURCE as given, its source kind, architecture and file container."""

    source: str
    kind: str  # what was opened: one of kinds.SOURCE_KINDS (spec, state_dict, checkpoint, ...)
    arch: str
    path: Path | None = None
    checkpoint: Checkpoint | None = None
    notes: list[str] = field(default_factory=list)
    arch_from: str | None = None  # how the architecture was known: "--arch", a file's hint, the weights

    def architecture_line(self) -> str | None:
        """How the architecture was known, for people ('Architecture: recognised from the weights as ...')."""
        if not self.arch_from or self.arch_from == "spec":
            return None
        if self.arch_from.startswith("recognised"):
            return f"Architecture: {self.arch_from}"
        return f"Architecture: {self.arch} (from {self.arch_from})"

    def remembered_arch(self) -> str | None:
        """The spec that reopens this file without asking again (None when the file itself says it)."""
        if self.arch_from in (None, "spec", "the file's recipe", "the file (whole model)"):
            return None
        return self.arch


@dataclass(frozen=True)
class TracedModel:
    """A trace (and tree) computed for one ``Document.version``; ``Document.adopt`` caches it if current."""

    version: int
    input_shape: tuple[int, ...]
    trace: Trace
    tree: ModuleNode | None = None


class Document:
    """An opened model. Edits change ``model``; everything shown is derived from it."""

    def __init__(
        self,
        model: nn.Module,
        origin: Origin,
        input_shape: tuple[int, ...] | None = None,
        trace: Trace | None = None,
        *,
        inputs: tuple[NamedInput, ...] | None = None,
        shadow: bool = False,
    ) -> None:
        """``trace`` may hand over a trace of an identical model (a structural copy), saving a forward."""
        self.model = model
        self.origin = origin
        self.inputs: tuple[NamedInput, ...] | None = tuple(inputs) if inputs else None  # named by the user
        first = self.inputs[0].shape if self.inputs else None
        self.input_shape: tuple[int, ...] = tuple(input_shape or first or default_input_shape(model))
        self.edits: list[Edit] = []
        self.shadow = shadow  # a preview's meta copy: weights are not there, so edits skip copying them
        self.trace_before_edits: Trace | None = None  # the forward as opened (saving compares with it)
        self.version = 0  # counts changes; work computed for an older version is stale
        self.baseline: nn.Module | None = None  # the model before the first edit, sharing its weights
        self._trace: Trace | None = trace
        self._tree: ModuleNode | None = None

    @property
    def editable(self) -> bool:
        """TorchScript archives can be inspected but not edited."""
        return not isinstance(self.model, torch.jit.ScriptModule)

    def set_input_shape(self, shape: tuple[int, ...]) -> None:
        """Use another input shape; shapes are traced again on next access."""
        if not shape or any(int(d) <= 0 for d in shape):
            raise TraceError(f"input shape {list(shape)} must be positive sizes, e.g. 1,3,224,224")
        self.input_shape = tuple(int(d) for d in shape)
        self.inputs = None  # named inputs follow the new main shape (from the model's config)
        self.changed()

    def set_inputs(self, inputs: tuple[NamedInput, ...]) -> None:
        """Trace with these named, typed inputs (keyword arguments of the forward)."""
        if not inputs:
            raise TraceError("give at least one input, e.g. input_ids=1,128:int64")
        self.inputs = tuple(inputs)
        self.input_shape = self.inputs[0].shape
        self.changed()

    def named_inputs(self) -> tuple[NamedInput, ...] | None:
        """The keyword inputs the trace uses: the user's, else the model config's; None for plain models."""
        return self.inputs or config_inputs(self.model, self.input_shape)

    def changed(self) -> None:
        """Forget derived state after the model changed (edits call this)."""
        self.version += 1
        self._trace = None
        self._tree = None

    def apply(self, edit: Edit) -> None:
        """Apply an edit (see core.edits) and record it in ``edits``.

        Before the first edit a weight-sharing copy of the model is kept as ``baseline`` (module objects
        only), so a probe can prove which outputs the edits left bit-identical.
        """
        if not self.edits and self.editable:
            self.trace_before_edits = self.trace()
        if self.baseline is None and self.editable and not self.shadow:
            self.baseline = _baseline_of(self.model)
        edit.apply(self)
        self.edits.append(edit)
        self.changed()

    def revert(self, edit: Edit) -> None:
        """Revert an applied edit (the last one, for exact undo) and drop it from ``edits``."""
        edit.revert(self)
        for i in range(len(self.edits) - 1, -1, -1):
            if self.edits[i] is edit:
                del self.edits[i]
                break
        self.changed()

    def trace(self) -> Trace:
        """Shapes and heads for the current input shape (cached)."""
        if self._trace is None:
            self.adopt(self.compute_trace(with_tree=False))
        assert self._trace is not None
        return self._trace

    def tree(self) -> ModuleNode:
        """The module tree with shapes and head marks (cached)."""
        if self._tree is None:
            self._tree = build_tree(self.model, self.trace())
        return self._tree

    def compute_trace(self, with_tree: bool = True) -> TracedModel:
        """Trace (and snapshot the tree of) a structural copy of the model, caching nothing.

        Safe on a worker thread while this thread's owner edits: the live model is only read (copied);
        hand the result to ``adopt`` on the owner's thread, which drops it if the model changed meanwhile.
        """
        version, shape = self.version, self.input_shape
        if not self.editable:  # TorchScript: no copy, no hooks; a plain run that changes nothing
            return TracedModel(version, shape, _trace_script(self.model, shape))
        model = structure_copy(self.model)
        trace = trace_model(model, shape, inputs=self.inputs or config_inputs(model, shape))
        return TracedModel(version, shape, trace, build_tree(model, trace) if with_tree else None)

    def adopt(self, traced: TracedModel) -> bool:
        """Cache a ``compute_trace`` result; False (nothing cached) if the model changed since it began."""
        if traced.version != self.version or traced.input_shape != self.input_shape:
            return False
        self._trace = traced.trace
        if traced.tree is not None:
            self._tree = traced.tree
        return True

    def detached(self) -> Document:
        """A Document over a structural copy of this model (weights shared), with its edits and trace.

        Work on another thread (a preview, a save) reads the copy while this document is edited. A copy
        that an edit overlapped is taken again, so the copy always shows the model between two edits.
        """
        for _ in range(DETACH_ATTEMPTS):
            version, trace, edits = self.version, self._trace, list(self.edits)
            model = structure_copy(self.model) if self.editable else self.model
            if version == self.version:
                break
        twin = Document(model, self.origin, self.input_shape, inputs=self.inputs, shadow=self.shadow)
        twin.edits, twin._trace, twin.baseline = edits, trace, self.baseline
        twin.trace_before_edits = self.trace_before_edits  # a save of the copy judges the edits the same way
        return twin

    def heads(self) -> list[HeadInfo]:
        """Detected heads, primary first; empty for a headless model (feature extractor)."""
        trace = self.trace()
        heads = [
            describe_head(self.model, p, trace.inputs, trace.outputs, trace.roles.get(p)) for p in trace.heads
        ]
        return hf_head_roles(self.model, heads, trace)

    @property
    def head(self) -> HeadInfo | None:
        heads = self.heads()
        return heads[0] if heads else None

    def param_counts(self) -> tuple[int, int]:
        """(total, trainable) parameter counts, shared parameters counted once."""
        total = trainable = 0
        for p in self.model.parameters():
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        return total, trainable

    def summary(self) -> dict[str, Any]:
        """The inspect report as JSON-ready data (what ``headstudio inspect --json`` prints)."""
        tree = self.tree()
        trace = self.trace()
        total, trainable = self.param_counts()
        heads = [h.to_json() for h in self.heads()]
        return {
            "source": self.origin.source,
            "format": self.origin.kind,
            "arch": self.origin.arch,
            "arch_from": self.origin.arch_from,
            "input_shape": list(self.input_shape),
            "inputs": [i.to_json() for i in self.named_inputs() or ()],
            "params": total,
            "trainable_params": trainable,
            "output_shape": trace.output,
            "modules": [n.to_json() for n in tree.walk()],
            "head": heads[0] if heads else None,
            "heads": heads,
            "trace": {
                "mode": trace.mode,
                "error": trace.error,
                "failed_at": trace.failed_at,
                "fallback": trace.fallback,
            },
            "notes": list(self.origin.notes),
            "error": None,
        }


def _baseline_of(model: nn.Module) -> nn.Module | None:
    """A weight-sharing structural copy of ``model``; None for a model deepcopy cannot handle."""
    from headstudio.core.modules import structure_copy

    try:
        return structure_copy(model)
    except Exception:  # a module holding uncopyable state: the probe then asks for --against
        return None


def _trace_script(model: nn.Module, input_shape: tuple[int, ...]) -> Trace:
    """TorchScript has no hooks: run it once for the model's output shape only."""
    from headstudio.core.model.shapes import input_dtype, shape_of

    trace = Trace(tuple(input_shape), mode="real")
    try:
        with torch.no_grad():
            trace.output = shape_of(model(torch.zeros(input_shape, dtype=input_dtype(model))))
        trace.calls[""] = 1
        trace.outputs[""] = trace.output
    except Exception as err:
        trace.error = first_line(err, with_type=True)
        trace.failed_at = ""
    return trace
