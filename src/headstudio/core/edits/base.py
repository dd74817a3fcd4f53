"""Edits are data: small dataclasses with validate / preview / apply / revert and a JSON form.

Each edit keeps what it needs to revert (the original module objects, flags, hooks) on the instance,
never in its JSON. ``preview`` runs the edit on a structural copy of the model whose tensors live on
the meta device, so the real model is never touched. The base never imports its subclasses; the
package face (``headstudio.core.edits``) imports every kind, which registers it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from headstudio.core.errors import EditError, HeadStudioError, first_line
from headstudio.core.modules import meta_copy

if TYPE_CHECKING:
    from headstudio.core.model.document import Document

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
    layers: list[tuple[str, Shape, Shape]] = field(default_factory=list)  # changed layers' outputs

    @property
    def ok(self) -> bool:
        """True when the edit can be applied."""
        return not self.problems


def state(default: Any = None) -> Any:
    """A declared field for what an applied edit remembers (undo, code): not a parameter, not in its JSON."""
    return field(default=default, init=False, repr=False, compare=False)


@dataclass
class Edit:
    """Base of the dataclass edits. Subclasses set ``kind`` and implement check/_apply/_revert/code.

    Parameters are the subclass's init fields (its JSON); what an applied edit remembers to revert and to
    write code lives in ``state()`` fields, reset on every copy.
    """

    kind: ClassVar[str] = ""
    checks_forward: ClassVar[bool] = False  # validate must run the edited model once (shadow copy)
    _undo: Any = state()  # set by _apply, cleared by revert: the edit is applied while it is not None
    _notes: list[str] = field(default_factory=list, init=False, repr=False, compare=False)

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
            result.problems.append(
                f"cannot preview this edit on this model ({first_line(err, with_type=True)})"
            )
            return result
        trace = shadow.trace()
        if trace.error:
            where = f" at '{trace.failed_at}'" if trace.failed_at else ""
            result.problems.append(f"the model's forward fails after this edit{where}: {trace.error}")
        result.output_after = trace.output
        result.params_after, result.trainable_after = shadow.param_counts()
        result.warnings += [w for w in trial.notes if w not in result.warnings]
        outputs = doc.trace().outputs
        result.layers = [(p, outputs.get(p), trace.outputs.get(p)) for p in trial.changed_paths()]
        return result

    def apply(self, doc: Document) -> None:
        """Validate, then change ``doc.model``; remembers what revert needs."""
        if self.applied:
            raise EditError(f"'{self.describe()}' is already applied; revert it first")
        self.validate(doc)
        self._apply(doc)
        doc.changed()

    def revert(self, doc: Document) -> None:
        """Restore the original module objects, weights and flags exactly (undo the last edit first)."""
        if not self.applied:
            raise EditError(f"'{self.describe()}' is not applied, so there is nothing to revert")
        if any(e is self for e in doc.edits) and doc.edits[-1] is not self:
            raise EditError(f"'{self.describe()}' is not the last edit; revert the edits after it first")
        self._revert(doc)
        self._undo = None
        doc.changed()

    @property
    def applied(self) -> bool:
        """True between apply and revert (the edit holds what undo and code export need)."""
        return self._undo is not None

    def created_head(self) -> str | None:
        """The path of a head this edit put into the model (kept trainable by FreezeBackbone), if any."""
        return None

    def describe(self) -> str:
        """One line for the undo history."""
        return self.kind

    def to_json(self) -> dict[str, Any]:
        """``{"kind": ..., **fields}``; undo state is not part of it."""
        data: dict[str, Any] = {"kind": self.kind}
        for f in _parameters(type(self)):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    # ----- what subclasses implement
    @property
    def notes(self) -> list[str]:
        """Warnings found while applying (e.g. trained rows not copied from meta weights)."""
        return self._notes

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """(problems, warnings) found without changing anything."""
        return [], []

    def changed_paths(self) -> list[str]:
        """Layers whose outputs the preview shows before/after (after apply); none by default."""
        return []

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
    names = {f.name for f in _parameters(cls)}
    extra = sorted(set(data) - names - {"kind"})
    if extra:
        raise EditError(f"edit '{kind}' has unknown field(s) {', '.join(extra)}; check the recipe")
    try:
        return cls(**{k: v for k, v in data.items() if k != "kind"})
    except (TypeError, ValueError) as err:
        raise EditError(f"edit '{kind}' is malformed ({err}); check the recipe") from None


def _parameters(cls: type[Edit]) -> list[dataclasses.Field]:
    """An edit kind's parameters: its init fields (state fields are not part of its JSON)."""
    return [f for f in dataclasses.fields(cls) if f.init]


def shadow_document(doc: Document) -> Document:
    """A Document over a structural copy of ``doc.model`` whose tensors are on meta (no weight copies)."""
    from headstudio.core.model.document import Document

    shadow = Document(
        meta_copy(doc.model), doc.origin, doc.input_shape, doc.trace(), inputs=doc.inputs, shadow=True
    )
    shadow.edits = list(doc.edits)
    return shadow


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
