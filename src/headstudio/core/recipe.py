"""Recipes: source architecture + input shape + edits, as JSON; replayed on any checkpoint of that arch."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from headstudio.core.edits import Edit, edit_from_json
from headstudio.core.errors import EditError, HeadStudioError, SourceError
from headstudio.core.opening.file_specs import Trust, file_spec
from headstudio.core.opening.specs import build_model, looks_like_spec, parse_spec

if TYPE_CHECKING:
    from headstudio.core.model.document import Document

VERSION = 1
MAX_EDIT_SIZE = 1 << 20  # classes / hidden / adapter sizes a recipe file may ask for (vocab heads ~256k)
MAX_INPUT_ELEMENTS = 1 << 28  # elements of a recipe file's input shape (a 4k RGB image is 50M)


@dataclass
class Recipe:
    """What was done to which architecture: replaying it on the same arch gives the same structure."""

    arch: str
    input_shape: tuple[int, ...]
    edits: list[Edit] = field(default_factory=list)
    source: str | None = field(default=None, compare=False)  # read from this file: its arch is data

    @classmethod
    def from_document(cls, doc: Document) -> Recipe:
        """The document's edits, after any edits already recorded in the file it was opened from."""
        earlier: list[Edit] = []
        embedded = getattr(doc.origin.checkpoint, "recipe", None) if doc.origin.checkpoint else None
        if embedded:
            try:
                base = cls.from_json(embedded, max_size=None)  # parsed, never built here
                earlier = base.edits if _same_arch(base.arch, doc.origin.arch) else []
            except HeadStudioError:
                earlier = []
        return cls(doc.origin.arch, tuple(doc.input_shape), [*earlier, *doc.edits])

    def to_json(self) -> str:
        """The recipe as a JSON document (undo state is never part of it)."""
        data = {
            "format": "headstudio.recipe",
            "version": VERSION,
            "arch": self.arch,
            "input_shape": list(self.input_shape),
            "edits": [e.to_json() for e in self.edits],
        }
        return json.dumps(data, indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, source: str = "the recipe", max_size: int | None = MAX_EDIT_SIZE) -> Recipe:
        """Parse a recipe read from ``source`` (a file: its arch is data, see ``build_arch``).

        EditError with one line for malformed JSON, missing fields or unknown edits; SourceError for an
        edit size above ``max_size`` (None: the caller bounds sizes itself).
        """
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as err:
            raise EditError(f"the recipe is not valid JSON ({err}); check the file") from None
        if not isinstance(data, dict) or not isinstance(data.get("arch"), str):
            raise EditError("the recipe has no 'arch' (e.g. \"torchvision:resnet18\"); check the file")
        if isinstance(data.get("version"), int) and data["version"] > VERSION:
            raise EditError(
                f"the recipe is version {data['version']}; this Head Studio reads up to {VERSION}"
            )
        shape = data.get("input_shape") or []
        edits = data.get("edits", [])
        if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise EditError(
                f"the recipe's input_shape {shape!r} must be positive sizes, e.g. [1, 3, 224, 224]"
            )
        if not isinstance(edits, list):
            raise EditError("the recipe's 'edits' must be a list of edits; check the file")
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise EditError(f"the recipe's input_shape {shape} is too large to trace; check the file")
        recipe = cls(data["arch"], tuple(shape), [edit_from_json(e) for e in edits], source)
        if max_size is not None:
            check_sizes(recipe, max_size, source, "the largest Head Studio builds from a file")
        return recipe

    def build_arch(self, trust: Trust = False) -> tuple[nn.Module, str, list[str]]:
        """Build the recipe's architecture on meta: (model, spec, notes).

        A recipe read from a file names only allow-listed builders unless ``trust`` covers its code
        (``file_specs.file_spec``); one made in this session builds as typed.
        """
        if self.source is None:
            spec, notes = parse_spec(self.arch), []
        else:
            spec, notes = file_spec(self.arch, self.source, trust)
            self.arch = str(spec)  # downloads switched off stay off when it is saved again
        return build_model(spec), str(spec), notes

    def replay(self, doc: Document) -> None:
        """Apply every edit to ``doc`` in order; on any failure the model is left as it was."""
        if not _same_arch(self.arch, doc.origin.arch):
            raise EditError(
                f"this recipe is for {self.arch} but the model is {doc.origin.arch}; "
                f"open a {self.arch} checkpoint (or pass --arch {self.arch})"
            )
        if self.input_shape and tuple(self.input_shape) != tuple(doc.input_shape):
            doc.set_input_shape(tuple(self.input_shape))
        done: list[Edit] = []
        try:
            for edit in self.edits:
                fresh = edit_from_json(edit.to_json())  # a recipe can be replayed many times
                doc.apply(fresh)
                done.append(fresh)
        except HeadStudioError as err:
            for fresh in reversed(done):
                doc.revert(fresh)
            step = len(done) + 1
            raise type(err)(f"recipe step {step} ({self.edits[step - 1].describe()}): {err}") from None


def build_from_recipe(
    text: str, where: str = "the file", trust: Trust = False, weights: Mapping[str, Any] | None = None
) -> tuple[nn.Module, str, list[str]]:
    """Rebuild the edited architecture a saved file's recipe describes: (model, spec, notes).

    The recipe is data from the file ``where``: its arch is checked by ``file_spec`` (``trust`` may
    allow code outside the allow-list), and no edit may ask for a size larger than any dimension of
    the file's ``weights`` (new heads are built for real: a hostile size would exhaust memory). Built
    on meta; the weights come later.
    """
    from headstudio.core.model.document import Document, Origin

    try:
        recipe = Recipe.from_json(text, where, None if weights is not None else MAX_EDIT_SIZE)
    except EditError as err:
        raise SourceError(f"the file's embedded recipe is unreadable ({err}); pass --arch") from None
    if weights is not None:
        dims = (max(t.shape, default=1) for t in weights.values() if t.numel() > 0)
        check_sizes(recipe, max(dims, default=0), where, "larger than any tensor dimension in the file")
    model, spec, notes = recipe.build_arch(trust)
    if recipe.edits:
        doc = Document(model, Origin(recipe.arch, "spec", spec), recipe.input_shape or None)
        try:
            recipe.replay(doc)
        except HeadStudioError as err:
            raise SourceError(f"the file's recipe cannot be replayed ({err}); pass --arch") from None
        model = doc.model
    return model, spec, notes


def check_sizes(recipe: Recipe, largest: int, where: str, why: str) -> None:
    """Refuse an edit asking for a size above ``largest`` (new heads are built for real: memory)."""
    for step, edit in enumerate(recipe.edits, 1):
        size = max(_sizes(edit.to_json()), default=0)
        if size > largest:
            raise SourceError(
                f"{where}: its recipe step {step} ({edit.kind}) asks for size {size:,} ({why}: "
                f"{largest:,}); refused"
            )


def _sizes(value: Any, key: str = "") -> list[int]:
    if isinstance(value, dict):
        return [n for k, v in value.items() if k != "seed" for n in _sizes(v, k)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _sizes(v, key)]
    return [value] if type(value) is int else []


def _same_arch(a: str, b: str) -> bool:
    return _normal(a) == _normal(b)


def _normal(arch: str) -> Any:
    try:
        return str(parse_spec(arch)) if looks_like_spec(arch) else arch
    except HeadStudioError:
        return arch
