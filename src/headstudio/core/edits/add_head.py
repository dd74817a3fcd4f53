"""AddHead: a second head on the same features; the model returns a dict of named outputs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from headstudio.core.edits.base import Edit, Preview, state, traced_input
from headstudio.core.edits.head_builder import CONVS, HeadSpec
from headstudio.core.errors import EditError
from headstudio.core.modules import feature_size, find_module, module_expr, swap_module

if TYPE_CHECKING:
    from headstudio.core.model.document import Document


class MultiHead(nn.Module):
    """Several heads on the same features: a dict of their outputs, or only ``active``'s output when set."""

    def __init__(self, heads: dict[str, nn.Module], active: str | None = None) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)
        self.active = active

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        if self.active is not None:
            return self.heads[self.active](x)
        return {name: head(x) for name, head in self.heads.items()}


@dataclass
class AddHead(Edit):
    """Add head ``name`` with ``num_classes`` next to the head at ``at``, on the same features.

    The head at ``at`` becomes a MultiHead holding the old head (under its attribute name, or "main")
    and the new one; set ``MultiHead.active`` to a name to return only that output.

    Args:
        name: the new head's name (a Python identifier); the model returns a dict keyed by head names.
        num_classes: the new head's class count.
        at: the existing head whose input feeds the new one, e.g. ``fc``.
        adapter: put a Linear to this many features (then ReLU) in front of the new classifier.
        seed: makes the new weights reproducible.

    Examples::

        >>> doc.apply(AddHead("age", 5, at="fc", adapter=256))  # outputs {"fc": [1, 1000], "age": [1, 5]}
    """

    kind = "add_head"
    checks_forward = True  # a dict output must flow through what follows the head
    name: str
    num_classes: int
    at: str
    adapter: int | None = None
    seed: int | None = None
    _code: list[str] | None = state()  # the lines code() returns, with the traced feature size

    def created_head(self) -> str | None:
        """The added head, inside the MultiHead at ``at``."""
        return self.head_path

    def describe(self) -> str:
        """E.g. 'Add head age (5 classes) at fc'."""
        via = f" via adapter {self.adapter}" if self.adapter else ""
        return f"Add head {self.name} ({self.num_classes} classes) at {self.at}{via}"

    @property
    def head_path(self) -> str:
        """Where the new head lives once applied."""
        return f"{self.at}.heads.{self.name}"

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """Name, class count, adapter size, and that the features at ``at`` can size the new head."""
        problems = []
        if not isinstance(self.name, str) or not self.name.isidentifier():
            problems.append(f"head name {self.name!r} must be a Python identifier, e.g. aux")
        if not isinstance(self.num_classes, int) or self.num_classes <= 0:
            problems.append(f"num_classes {self.num_classes!r} must be a whole number of 1 or more")
        if self.adapter is not None and (not isinstance(self.adapter, int) or self.adapter <= 0):
            problems.append(f"adapter {self.adapter!r} cannot size a Linear; give a positive feature count")
        try:
            old, _features = self._features(doc)
        except EditError as err:
            return [*problems, str(err)], []
        taken = list(old.heads) if isinstance(old, MultiHead) else [old_key(self.at)]
        if self.name in taken:
            problems.append(f"a head named '{self.name}' already exists at '{self.at}'; choose another name")
        return problems, []

    def preview(self, doc: Document) -> Preview:
        """As Edit.preview; a forward failing after the head says that the layers after it need one tensor."""
        result = super().preview(doc)
        result.problems = [_explain(p, self.at) for p in result.problems]
        return result

    def _features(self, doc: Document) -> tuple[nn.Module, int]:
        if not self.at:
            raise EditError("add the head next to which head? name it with at=, e.g. fc")
        old = find_module(doc.model, self.at, "head")
        shape = traced_input(doc, self.at)
        size = feature_size(shape, channels=_conv_of(old) is not None)
        if size is None:
            raise EditError(
                f"the input of '{self.at}' is {shape}, not one tensor, so a new head cannot be sized"
            )
        return old, size

    def _apply(self, doc: Document) -> None:
        old, size = self._features(doc)
        hidden = (self.adapter,) if self.adapter else ()
        spec = HeadSpec.like(_conv_of(old), size, self.num_classes, hidden=hidden)
        new = spec.build(self.seed)
        self._undo, line = add_beside(doc, self.at, self.name, new, spec.code())
        self._code = [line]

    def _revert(self, doc: Document) -> None:
        remove_beside(doc, self.at, self.name, self._undo)

    def code(self) -> list[str]:
        """Defines MultiHead (once per snippet) and wraps or extends the head."""
        seed = [f"torch.manual_seed({self.seed})"] if self.seed is not None else []
        return [*seed, *self._code]


def add_beside(doc: Document, at: str, name: str, new: nn.Module, built: str) -> tuple[tuple, str]:
    """Put head ``new`` beside the head at ``at`` (wrapping it in a MultiHead, or joining one).

    Returns the undo state for ``remove_beside`` and the line of code doing the same with ``built``.
    """
    old = find_module(doc.model, at, "head")
    expr = module_expr(doc.model, at)
    if isinstance(old, MultiHead):
        old.heads[name] = new
        return ("added", old), f"{expr}.heads[{name!r}] = {built}"
    swap_module(doc.model, at, MultiHead({old_key(at): old, name: new}))
    return ("wrapped", old), f"{expr} = MultiHead({{{old_key(at)!r}: {expr}, {name!r}: {built}}})"


def remove_beside(doc: Document, at: str, name: str, undo: tuple) -> None:
    """Undo ``add_beside`` exactly."""
    how, old = undo
    if how == "added":
        del old.heads[name]
    else:
        swap_module(doc.model, at, old)


def multihead_source() -> list[str]:
    """MultiHead's class source for snippets (plain PyTorch)."""
    return inspect.getsource(MultiHead).splitlines()


def _explain(problem: str, at: str) -> str:
    if not problem.startswith("the model's forward fails"):
        return problem
    return (
        f"the layers after '{at}' cannot take several outputs ({problem.rpartition(': ')[2]}); "
        "add heads at a head whose output is the model's output, or cut after it first"
    )


def old_key(at: str) -> str:
    """The name the existing head keeps inside the MultiHead: its attribute name, or "main"."""
    last = at.rpartition(".")[2]
    return last if last.isidentifier() else "main"


def _conv_of(module: nn.Module) -> nn.Module | None:
    """The conv a new head should mirror: the module itself, or a MultiHead's first head when conv."""
    if isinstance(module, MultiHead):
        module = next(iter(module.heads.values()))
    return module if isinstance(module, CONVS) else None
