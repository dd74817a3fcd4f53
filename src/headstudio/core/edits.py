"""Edits are data: small dataclasses with validate / preview / apply / revert and a JSON form.

Each edit keeps what it needs to revert (the original module objects, flags, hooks) on the instance,
never in its JSON. ``preview`` runs the edit on a structural copy of the model whose tensors live on
the meta device, so the real model is never touched. The edits themselves live in ``replacing``,
``cutting``, ``multihead`` and ``freezing``; this module is their common ground and their one import.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .errors import EditError, HeadStudioError

if TYPE_CHECKING:
    from .document import Document

Shape = Any

_KINDS: dict[str, type[Edit]] = {}


@dataclass
class Preview:
    """What an edit would do, computed without touching the model; ``problems`` mean it cannot apply."""

    output_before: Shape
    output_after: Shape
    params_before: int
    params_after: int
    trainable_before: int
    trainable_after: int
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the edit can be applied."""
        return not self.problems


class Edit:
    """Base of the dataclass edits. Subclasses set ``kind`` and implement check/_apply/_revert/code."""

    kind: ClassVar[str] = ""
    checks_forward: ClassVar[bool] = False  # validate must run the edited model once (shadow copy)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _KINDS[cls.kind] = cls

    # ----- the public protocol
    def validate(self, doc: Document) -> None:
        """Raise EditError (one line: what is wrong, what to do) when the edit cannot apply to ``doc``."""
        _require_editable(doc)
        problems, _ = self.check(doc)
        if not problems and self.checks_forward:
            problems = self.preview(doc).problems
        if problems:
            raise EditError(problems[0])

    def preview(self, doc: Document) -> Preview:
        """Output shape, parameter and trainable counts before/after, problems, warnings; model untouched."""
        before = doc.trace().output
        total, trainable = doc.param_counts()
        problems, warnings = self.check(doc) if doc.editable else (["this model cannot be edited"], [])
        result = Preview(before, None, total, total, trainable, trainable, problems, warnings)
        if problems:
            return result
        trial = dataclasses.replace(self)
        try:
            shadow = shadow_document(doc)
            trial._apply(shadow)
            shadow.changed()
        except HeadStudioError as err:
            result.problems.append(str(err))
            return result
        except Exception as err:  # a model we cannot copy or edit on meta: say so, never crash the caller
            first = (str(err).strip().splitlines() or [""])[0][:200]
            result.problems.append(f"cannot preview this edit on this model ({type(err).__name__}: {first})")
            return result
        trace = shadow.trace()
        if trace.error:
            where = f" at '{trace.failed_at}'" if trace.failed_at else ""
            result.problems.append(f"the model's forward fails after this edit{where}: {trace.error}")
        result.output_after = trace.output
        result.params_after, result.trainable_after = shadow.param_counts()
        result.warnings += [w for w in trial.notes if w not in result.warnings]
        return result

    def apply(self, doc: Document) -> None:
        """Validate, then change ``doc.model``; remembers what revert needs."""
        if getattr(self, "_undo", None) is not None:
            raise EditError(f"'{self.describe()}' is already applied; revert it first")
        self.validate(doc)
        self._apply(doc)
        doc.changed()

    def revert(self, doc: Document) -> None:
        """Restore the original module objects, weights and flags exactly (undo the last edit first)."""
        if getattr(self, "_undo", None) is None:
            raise EditError(f"'{self.describe()}' is not applied, so there is nothing to revert")
        if any(e is self for e in doc.edits) and doc.edits[-1] is not self:
            raise EditError(f"'{self.describe()}' is not the last edit; revert the edits after it first")
        self._revert(doc)
        self._undo = None
        doc.changed()

    def describe(self) -> str:
        """One line for the undo history."""
        return self.kind

    def to_json(self) -> dict[str, Any]:
        """``{"kind": ..., **fields}``; undo state is not part of it."""
        data: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    # ----- what subclasses implement
    @property
    def notes(self) -> list[str]:
        """Warnings found while applying (e.g. trained rows not copied from meta weights)."""
        return self.__dict__.setdefault("_notes", [])

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """(problems, warnings) found without changing anything."""
        return [], []

    def _apply(self, doc: Document) -> None:
        raise NotImplementedError

    def _revert(self, doc: Document) -> None:
        raise NotImplementedError

    def code(self) -> list[str]:
        """Plain-PyTorch lines doing this edit on ``model``; only after apply (they use traced sizes)."""
        raise NotImplementedError


def edit_from_json(data: dict[str, Any]) -> Edit:
    """The edit a ``to_json`` dict describes; EditError for an unknown kind or bad fields."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise EditError(f"an edit must be an object with a 'kind', got {str(data)[:80]}")
    kind = data["kind"]
    cls = _KINDS.get(kind)
    if cls is None:
        raise EditError(f"unknown edit kind '{kind}'; known kinds: {', '.join(sorted(_KINDS))}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    extra = sorted(set(data) - names - {"kind"})
    if extra:
        raise EditError(f"edit '{kind}' has unknown field(s) {', '.join(extra)}; check the recipe")
    try:
        return cls(**{k: v for k, v in data.items() if k != "kind"})
    except (TypeError, ValueError) as err:
        raise EditError(f"edit '{kind}' is malformed ({err}); check the recipe") from None


def shadow_document(doc: Document) -> Document:
    """A Document over a structural copy of ``doc.model`` whose tensors are on meta (no weight copies)."""
    from .document import Document

    shadow = Document(meta_copy(doc.model), doc.origin, doc.input_shape)
    shadow.edits = list(doc.edits)
    shadow.is_shadow = True  # type: ignore[attr-defined]  # previews skip copying weights that are not there
    return shadow


def meta_copy(model: nn.Module) -> nn.Module:
    """Deep copy of the module structure with every parameter and buffer replaced by a meta tensor."""
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = (
            nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
        )
    return copy.deepcopy(model, memo)


def find_module(doc: Document, path: str, what: str = "module") -> nn.Module:
    """The module at ``path``, or an EditError naming close paths."""
    try:
        return doc.model.get_submodule(path)
    except AttributeError:
        import difflib

        paths = [p for p, _ in doc.model.named_modules() if p]
        close = difflib.get_close_matches(path, paths, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "pick a path from the module tree"
        raise EditError(f"no {what} '{path}' in this model; {hint}") from None


def swap_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``path`` and return the module that was there."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    old = parent._modules[name]
    parent._modules[name] = new
    return old


def module_expr(model: nn.Module, path: str) -> str:
    """Python expression for the module at ``path`` on ``model``: ``model.classifier[1]``."""
    expr, module = "model", model
    for part in path.split(".") if path else []:
        if part.isidentifier():
            expr += f".{part}"
        elif isinstance(module, (nn.Sequential, nn.ModuleList)) and part.isdigit():
            expr += f"[{part}]"
        else:
            expr += f".get_submodule({part!r})"
        module = module._modules[part]  # type: ignore[assignment]
    return expr


def feature_size(shape: Shape, channels: bool) -> int | None:
    """Feature count of a traced tensor shape: dim 1 for conv inputs, else the last dim."""
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) for d in shape):
        return None
    return shape[1] if channels and len(shape) > 2 else shape[-1]


def traced_input(doc: Document, path: str) -> Shape:
    """The input shape the live trace saw at ``path``; EditError when the forward never reaches it."""
    trace = doc.trace()
    if trace.error and path not in trace.inputs:
        raise EditError(f"the model's forward fails ({trace.error}); fix the input shape before editing")
    if path not in trace.inputs:
        raise EditError(f"'{path}' is not called in the model's forward, so the output does not depend on it")
    return trace.inputs[path]


def _require_editable(doc: Document) -> None:
    if not doc.editable:
        raise EditError("TorchScript archives cannot be edited; open the original model or its weights")


# The edits register themselves on import; this module is the one place callers import them from.
from .cutting import CutAfter  # noqa: E402
from .freezing import FreezeBackbone, SetTrainable  # noqa: E402
from .multihead import AddHead, MultiHead  # noqa: E402
from .replacing import RemoveHead, ReplaceHead  # noqa: E402

__all__ = [
    "AddHead",
    "CutAfter",
    "Edit",
    "FreezeBackbone",
    "MultiHead",
    "Preview",
    "RemoveHead",
    "ReplaceHead",
    "SetTrainable",
    "edit_from_json",
]
