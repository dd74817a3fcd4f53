"""SetActiveHead: which head of a MultiHead the model returns (or all of them, as a dict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from headstudio.core.edits.add_head import MultiHead
from headstudio.core.edits.base import Edit, state
from headstudio.core.errors import EditError
from headstudio.core.modules import find_module, module_expr

if TYPE_CHECKING:
    from headstudio.core.model.document import Document


@dataclass
class SetActiveHead(Edit):
    """Make the MultiHead at ``path`` return only head ``name``; ``name=None`` returns every head (a dict).

    Saved models keep the choice: it is part of the recipe (and of a pickled module's state).
    """

    kind = "set_active_head"
    path: str
    name: str | None
    _expr: str = state("model")  # the MultiHead as a Python expression, for code()

    def describe(self) -> str:
        """E.g. 'Active head at fc: age' or 'Active head at fc: all (dict)'."""
        return f"Active head at {self.path}: {self.name if self.name is not None else 'all (dict)'}"

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """``path`` must be a MultiHead (made by AddHead) and ``name`` one of its heads, or None."""
        try:
            multihead = self._multihead(doc)
        except EditError as err:
            return [str(err)], []
        names = list(multihead.heads)
        if self.name is not None and self.name not in names:
            return [f"no head '{self.name}' at '{self.path}'; its heads are {', '.join(names)}"], []
        if multihead.active == self.name:
            which = f"'{self.name}' is" if self.name is not None else "all heads are"
            return [f"{which} already active at '{self.path}'"], []
        return [], []

    def _multihead(self, doc: Document) -> MultiHead:
        module = find_module(doc.model, self.path, "head")
        if not isinstance(module, MultiHead):
            raise EditError(
                f"'{self.path}' is a {type(module).__name__}, not several heads; add a head there first"
            )
        return module

    def _apply(self, doc: Document) -> None:
        multihead = self._multihead(doc)
        self._undo = (multihead, multihead.active)
        self._expr = module_expr(doc.model, self.path)
        multihead.active = self.name

    def _revert(self, doc: Document) -> None:
        multihead, active = self._undo
        multihead.active = active

    def code(self) -> list[str]:
        """``model.fc.active = 'age'``."""
        return [f"{self._expr}.active = {self.name!r}"]
