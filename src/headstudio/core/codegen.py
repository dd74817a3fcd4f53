"""Code export: the plain-PyTorch snippet that performs a recipe's edits on a variable ``model``.

Sizes in the snippet are the ones the live trace measured (never guessed from attribute names), so a
recipe that was not applied yet is first replayed on a meta-device build of its architecture.
"""

from __future__ import annotations

from collections.abc import Sequence

from headstudio.core.edits import Edit
from headstudio.core.edits.add_head import multihead_source
from headstudio.core.errors import EditError
from headstudio.core.opening.file_specs import Trust
from headstudio.core.recipe import Recipe


def snippet_for(recipe_or_edits: Recipe | Sequence[Edit], trust: Trust = False) -> str:
    """Python source (``import torch; from torch import nn`` ...) doing the same edits on ``model``.

    A recipe read from a file is replayed on its architecture only if that is allow-listed or ``trust``
    covers it (see ``Recipe.build_arch``).
    """
    if isinstance(recipe_or_edits, Recipe):
        edits, arch = _applied_edits(recipe_or_edits, trust), recipe_or_edits.arch
    else:
        edits, arch = list(recipe_or_edits), None
        if not all(e.applied for e in edits):
            raise EditError("code can be written for applied edits only; pass a Recipe to replay them")
    lines = ["import torch", "from torch import nn", ""]
    lines.append(
        f"# `model` is your {arch} model (weights loaded as usual)." if arch else "# `model` is your model."
    )
    if any(e.kind in ("add_head", "add_head_from_file") for e in edits):
        lines += ["", *multihead_source()]
    defined: set[str] = set()
    for edit in edits:
        lines += ["", f"# {edit.describe()}", *_once(edit.code(), defined)]
    return "\n".join(lines) + "\n"


def _once(lines: list[str], defined: set[str]) -> list[str]:
    """Drop a ``def`` block (and its body) already written earlier in the snippet."""
    out: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith("def "):
            skipping = line in defined
            defined.add(line)
        elif skipping and not line.startswith((" ", "\t")) and line.strip():
            skipping = False
        if not skipping:
            out.append(line)
    return out


def _applied_edits(recipe: Recipe, trust: Trust) -> list[Edit]:
    """The recipe's edits with their traced sizes: as applied to a document, or replayed on meta."""
    if recipe.edits and all(e.applied for e in recipe.edits):
        return list(recipe.edits)
    from headstudio.core.model.document import Document, Origin

    model, spec, _notes = recipe.build_arch(trust)
    doc = Document(model, Origin(recipe.arch, "spec", spec), recipe.input_shape or None)
    recipe.replay(doc)
    return list(doc.edits)
