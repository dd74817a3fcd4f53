"""RemoveLayers: delete blocks from a Sequential / ModuleList / ModuleDict, or make an attribute Identity.

Indices of a numbered container are renumbered (as ``del seq[i]`` does), so the saved state_dict loads
into the edited structure and a recipe replays to the same keys. Modules that remember their index
(``layer_idx`` of transformers attention layers) and config fields counting the layers
(``config.num_hidden_layers``, per-layer lists such as ``layer_types``) are kept in step. A trace after
the removal must run: the first shape that no longer fits refuses the edit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from headstudio.core.edits.base import Edit, Preview, state
from headstudio.core.modules import find_module, module_expr, swap_module

if TYPE_CHECKING:
    from headstudio.core.model.document import Document

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
COUNT_FIELDS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "depth")
PER_LAYER_FIELDS = ("layer_types",)
INDEX_ATTRS = ("layer_idx", "layer_id")


@dataclass
class RemoveLayers(Edit):
    """Remove the modules at ``paths``: deleted from their container, or replaced by ``nn.Identity``."""

    kind = "remove_layers"
    checks_forward = True  # refuse a removal after which the shapes no longer fit
    paths: tuple[str, ...]
    _code: list[str] | None = state()  # the lines code() returns, written while applying

    def __post_init__(self) -> None:
        self.paths = (self.paths,) if isinstance(self.paths, str) else tuple(self.paths or ())

    def describe(self) -> str:
        """E.g. 'Remove layer1.1' or 'Remove 4 layers (blocks.8, …, blocks.11)'."""
        if len(self.paths) == 1:
            return f"Remove {self.paths[0]}"
        shown = ", ".join(self.paths) if len(self.paths) == 2 else f"{self.paths[0]}, …, {self.paths[-1]}"
        return f"Remove {len(self.paths)} layers ({shown})"

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """Paths exist, are not the whole model and do not contain one another."""
        if not self.paths:
            return ["remove what? name one or more module paths, e.g. layer1.1"], []
        for path in self.paths:
            if not isinstance(path, str) or not path:
                return [f"cannot remove {path!r}: name a module inside the model, e.g. layer1.1"], []
            try:
                find_module(doc.model, path)
            except Exception as err:  # EditError naming close paths
                return [str(err)], []
        for a in self.paths:
            for b in self.paths:
                if a != b and b.startswith(a + "."):
                    return [f"'{b}' is inside '{a}', which is removed already; name only '{a}'"], []
        if len(set(self.paths)) != len(self.paths):
            return ["a path is named twice; name each module once"], []
        return [], []

    def preview(self, doc: Document) -> Preview:
        """As Edit.preview; a failing forward is reported as the first shape that no longer fits."""
        result = super().preview(doc)
        result.problems = [_explain(p, self.paths, self._old_names(doc)) for p in result.problems]
        return result

    def _old_names(self, doc: Document) -> dict[str, str]:
        """Renumbered paths after the removal -> the paths the user knows (before it)."""
        names: dict[str, str] = {}
        for parent_path in {p.rpartition(".")[0] for p in self.paths}:
            try:
                keys = list(doc.model.get_submodule(parent_path)._modules)
            except AttributeError:
                continue
            gone = {p.rpartition(".")[2] for p in self.paths if p.rpartition(".")[0] == parent_path}
            prefix = f"{parent_path}." if parent_path else ""
            kept = [k for k in keys if k not in gone]
            names.update({f"{prefix}{i}": f"{prefix}{k}" for i, k in enumerate(kept) if k.isdigit()})
        return names

    def _apply(self, doc: Document) -> None:
        self.notes.clear()
        by_parent: dict[str, list[str]] = {}
        for path in self.paths:
            parent, _, name = path.rpartition(".")
            by_parent.setdefault(parent, []).append(name)
        containers, swaps, attrs, code = [], [], [], []
        for parent_path, names in by_parent.items():
            parent = doc.model.get_submodule(parent_path)
            if isinstance(parent, _CONTAINERS):
                step = _remove_from(doc.model, parent_path, parent, names)
                containers.append(step[0])
                attrs += step[1]
                code += step[2]
            else:
                for name in names:
                    path = f"{parent_path}.{name}" if parent_path else name
                    code.append(f"{module_expr(doc.model, path)} = nn.Identity()")
                    swaps.append((path, swap_module(doc.model, path, nn.Identity())))
        self._undo = (containers, swaps, attrs)
        self._code = code + [_attr_line(doc.model, owner, name) for owner, name, _ in attrs]

    def _revert(self, doc: Document) -> None:
        containers, swaps, attrs = self._undo
        for owner, name, old in reversed(attrs):
            _set(owner, name, old)
        for path, old in reversed(swaps):
            swap_module(doc.model, path, old)
        for parent, modules in reversed(containers):
            parent._modules = modules

    def code(self) -> list[str]:
        """``del model.layer1[1]``, ``model.x = nn.Identity()``, then counts and indices kept in step."""
        return list(self._code or [])


def _remove_from(model: nn.Module, parent_path: str, parent: nn.Module, names: list[str]) -> tuple:
    """Drop ``names`` from a container, renumbering numbered ones; (undo, attribute changes, code)."""
    old = parent._modules
    numbered = list(old) == [str(i) for i in range(len(old))] and not isinstance(parent, nn.ModuleDict)
    expr = module_expr(model, parent_path)
    if numbered:
        gone = sorted((int(n) for n in names), reverse=True)
        code = [f"del {expr}[{i}]" for i in gone]
    else:
        code = [
            f"del {expr}[{n!r}]" if isinstance(parent, nn.ModuleDict) else _del_attr(expr, n) for n in names
        ]
    kept = [(key, m) for key, m in old.items() if key not in names]
    attrs: list[tuple[Any, str, Any]] = []
    if numbered:
        for new_index, (key, module) in enumerate(kept):
            attrs += _renumber(module, int(key), new_index)
        parent._modules = OrderedDict((str(i), m) for i, (_, m) in enumerate(kept))
    else:
        parent._modules = OrderedDict(kept)
    removed = [i for i, key in enumerate(old) if key in names]
    attrs += _sync_configs(model, parent_path, len(old), len(kept), removed)
    return (parent, old), attrs, code


def _del_attr(expr: str, name: str) -> str:
    return f"del {expr}.{name}" if name.isidentifier() else f"delattr({expr}, {name!r})"


def _renumber(block: nn.Module, old_index: int, new_index: int) -> list[tuple[Any, str, Any]]:
    """Modules remembering their layer index (transformers' ``layer_idx``) get their new index."""
    changed = []
    if old_index == new_index:
        return changed
    for module in block.modules():
        for attr in INDEX_ATTRS:
            if getattr(module, attr, None) == old_index and type(getattr(module, attr)) is int:
                changed.append((module, attr, old_index))
                setattr(module, attr, new_index)
    return changed


def _sync_configs(model: nn.Module, parent_path: str, before: int, after: int, removed: list[int]) -> list:
    """Config fields that count the container's layers (or list one value per layer) follow the removal."""
    changed: list[tuple[Any, str, Any]] = []
    parts = parent_path.split(".") if parent_path else []
    configs = {}
    for depth in range(len(parts) + 1):
        config = getattr(model.get_submodule(".".join(parts[:depth])), "config", None)
        if config is not None and not isinstance(config, nn.Module):
            configs[id(config)] = config
    for config in configs.values():
        for field in COUNT_FIELDS:
            if getattr(config, field, None) == before and type(getattr(config, field)) is int:
                changed.append((config, field, before))
                _set(config, field, after)
        for field in PER_LAYER_FIELDS:
            value = getattr(config, field, None)
            if isinstance(value, list) and len(value) == before:
                changed.append((config, field, value))
                _set(config, field, [v for i, v in enumerate(value) if i not in removed])
    return changed


def _set(owner: Any, name: str, value: Any) -> None:
    """Set an attribute (configs may validate on assignment; ours are consistent values)."""
    setattr(owner, name, value)


def _attr_line(model: nn.Module, owner: Any, name: str) -> str:
    """``model.config.num_hidden_layers = 8`` / ``model.model.layers[4].self_attn.layer_idx = 4``."""
    value = getattr(owner, name)
    if isinstance(owner, nn.Module):
        path = next(p for p, m in model.named_modules() if m is owner)
        return f"{module_expr(model, path)}.{name} = {value!r}"
    path = next((p for p, m in model.named_modules() if getattr(m, "config", None) is owner), "")
    return f"{module_expr(model, path)}.config.{name} = {value!r}"


def _explain(problem: str, paths: tuple[str, ...], old_names: dict[str, str]) -> str:
    if not problem.startswith("the model's forward fails after this edit"):
        return problem
    where, _, error = problem.partition(": ")
    at = where.rpartition(" at ")[2].strip("'") if " at " in where else ""
    for new, old in old_names.items():
        if at == new or at.startswith(new + "."):
            at = old + at[len(new) :]
            break
    removed = ", ".join(paths)
    first = f"first mismatch at '{at}'" if at else "the forward fails"
    return (
        f"removing {removed} breaks the shapes: {first} ({error}); remove blocks that keep their input shape"
    )
