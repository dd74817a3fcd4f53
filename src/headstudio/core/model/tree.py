"""A read-only snapshot of the module tree: names, types, counts, trainability, traced shapes, heads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from headstudio.core.model.shapes import Shape, Trace


@dataclass
class ModuleNode:
    """One module as shown to the user; derived from the model and a trace, never edited by hand."""

    path: str
    name: str
    type: str
    params: int
    trainable_params: int
    own_params: int
    output_shape: Shape
    input_shape: Shape
    calls: int
    head_rank: int | None = None  # 0 for the primary head, 1.. for others, None if not a head
    through_children: bool = False  # a container (ModuleList) never called itself, its children were
    children: list[ModuleNode] = field(default_factory=list)
    parent: ModuleNode | None = field(default=None, repr=False, compare=False)

    @property
    def called(self) -> bool:
        """The forward ran this module, or (for a ModuleList) the modules it holds."""
        return self.calls > 0 or self.through_children

    @property
    def is_head(self) -> bool:
        return self.head_rank is not None

    @property
    def depth(self) -> int:
        return 0 if not self.path else self.path.count(".") + 1

    def walk(self) -> Iterator[ModuleNode]:
        """This node and all below it, depth first in definition order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, path: str) -> ModuleNode | None:
        return next((n for n in self.walk() if n.path == path), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "type": self.type,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "output_shape": self.output_shape,
            "called": self.called,
        }


def build_tree(model: nn.Module, trace: Trace | None) -> ModuleNode:
    """Snapshot ``model`` as a ModuleNode tree, with shapes from ``trace`` when there is one."""
    head_rank = {p: i for i, p in enumerate(trace.heads)} if trace else {}

    def node(path: str, name: str, module: nn.Module, parent: ModuleNode | None) -> ModuleNode:
        total = trainable = 0
        for p in module.parameters():
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        me = ModuleNode(
            path=path,
            name=name,
            type=_type_name(module),
            params=total,
            trainable_params=trainable,
            own_params=sum(p.numel() for p in module.parameters(recurse=False)),
            output_shape=trace.outputs.get(path) if trace else None,
            input_shape=trace.inputs.get(path) if trace else None,
            calls=trace.calls.get(path, 0) if trace else 0,
            head_rank=head_rank.get(path),
            parent=parent,
        )
        for child_name, child in module.named_children():
            child_path = f"{path}.{child_name}" if path else child_name
            me.children.append(node(child_path, child_name, child, me))
        ran = [c for c in me.children if c.called]
        if trace and not me.calls and ran:  # FPN's inner_blocks: shown by what its last member returned
            me.through_children = True
            me.output_shape = ran[-1].output_shape
        return me

    return node("", "", model, None)


def _type_name(module: nn.Module) -> str:
    """The class name; for TorchScript the original Python class, not RecursiveScriptModule."""
    return getattr(module, "original_name", None) or type(module).__name__
