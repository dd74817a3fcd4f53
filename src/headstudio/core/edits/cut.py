"""CutAfter: keep the computation up to a module and return its output (torch.fx graph cut)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from headstudio.core.edits.base import Edit, traced_input
from headstudio.core.edits.hf_config import is_hf_model
from headstudio.core.errors import EditError, first_line
from headstudio.core.modules import find_module

if TYPE_CHECKING:
    from headstudio.core.model.document import Document


def cut_after(model: nn.Module, path: str) -> torch.fx.GraphModule:
    """A graph module computing ``model`` up to and including ``path`` and returning that output."""
    from torchvision.models.feature_extraction import create_feature_extractor

    cut = create_feature_extractor(model, return_nodes={path: "out"}, suppress_diff_warning=True)
    for graph in {
        id(g): g for g in (getattr(cut, "train_graph", cut.graph), getattr(cut, "eval_graph", cut.graph))
    }.values():
        output = next(n for n in graph.nodes if n.op == "output")
        output.args = (output.args[0]["out"],)
        graph.eliminate_dead_code()
    cut.recompile()
    return cut.train(model.training)


@dataclass
class CutAfter(Edit):
    """Keep the model up to and including the module at ``path``; the model returns that module's output.

    Args:
        path: the last module to keep, e.g. ``layer4`` (a torch.fx cut: any model fx can trace works).

    Examples::

        >>> doc.apply(CutAfter("layer3"))  # resnet18 now outputs [1, 256, 14, 14]
    """

    kind = "cut_after"
    path: str

    def describe(self) -> str:
        """E.g. 'Cut after layer4'."""
        return f"Cut after {self.path}"

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """The module must exist and be part of the forward."""
        if not self.path:
            return ["cut after what? name a module, e.g. layer4 (the empty path is the whole model)"], []
        try:
            find_module(doc.model, self.path)
            traced_input(doc, self.path)
        except EditError as err:
            return [str(err)], []
        if is_hf_model(doc.model):
            return [_hf_alternative(doc.model, self.path)], []
        return [], []

    def _apply(self, doc: Document) -> None:
        try:
            cut = cut_after(doc.model, self.path)
        except Exception as err:  # fx raises many types; the user needs one line
            raise EditError(
                f"cannot cut after '{self.path}': torch.fx cannot trace this model "
                f"({first_line(err, with_type=True)})"
                f"; use RemoveHead, or cut after a module of a Sequential"
            ) from None
        self._undo = doc.model
        doc.model = cut

    def _revert(self, doc: Document) -> None:
        doc.model = self._undo

    def code(self) -> list[str]:
        """The same fx cut, as a small function the snippet defines."""
        return [*inspect.getsource(cut_after).splitlines(), "", f"model = cut_after(model, {self.path!r})"]


def _hf_alternative(model: nn.Module, path: str) -> str:
    """Why a transformers model is not cut by a graph, and the edit that keeps its class and config."""
    parent, _, index = path.rpartition(".")
    siblings = model.get_submodule(parent) if parent else None
    if isinstance(siblings, nn.ModuleList) and index.isdigit() and int(index) + 1 < len(siblings):
        rest = ",".join(f"{parent}.{i}" for i in range(int(index) + 1, len(siblings)))
        instead = f"remove the layers after it (--remove {rest}; num_hidden_layers follows)"
    else:
        instead = "remove the head for the hidden states (--remove-head), or remove layers (--remove PATHS)"
    return (
        f"a transformers model is not cut by a graph (it would stop being a {type(model).__name__} and its "
        f"folder would no longer load): to end at '{path}', {instead}"
    )
