"""Functional head detection: the parametrised modules whose outputs reach the model output directly.

While the model runs (on fake tensors), every tensor carries the set of "last parametrised modules"
it came from. A parametrised leaf module resets that set to itself; any other op unions its inputs'
sets. Whatever the model returns then names its head(s) - whatever the attribute is called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import keystr, tree_flatten_with_path, tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

if TYPE_CHECKING:
    from headstudio.core.model.shapes import Trace

# What a parametrised output is for; the primary head is the first by this rank (a class head).
ROLES = ("class logits", "mask logits", "keypoint logits", "box regression", "objectness", "auxiliary")
ROLE_RANK: dict[str | None, int] = {None: 0, **{role: rank for rank, role in enumerate(ROLES)}}


@dataclass(frozen=True)
class HeadInfo:
    """A detected head: path, type, the feature sizes it maps between, its role and the rule that said so."""

    path: str
    type: str
    in_features: int | None
    out_features: int | None
    role: str | None = None
    rule: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "role": self.role,
            "rule": self.rule,
        }


@dataclass(frozen=True)
class HeadRole:
    """What one head is for, which rule decided, and how its channels count classes.

    ``anchors`` is the number of predictions per position (num_anchors for a dense detector, 1 for a
    per-region or per-image classifier); ``classes`` the class count its channels hold (out / anchors,
    or out / 4 for class-specific box regression).
    """

    role: str
    rule: str
    anchors: int | None = None
    classes: int | None = None


RoleRule = Callable[[nn.Module, "Trace"], dict[str, HeadRole]]


def role_rules() -> list[RoleRule]:
    """The rules naming heads' roles, in order; a later rule only fills heads the earlier left open."""
    from headstudio.core.model import dense_heads

    return [*dense_heads.RULES]


def head_roles(model: nn.Module, trace: Trace) -> dict[str, HeadRole]:
    """Every head's role by the first rule that decides it; a failing rule is skipped, never fatal."""
    roles: dict[str, HeadRole] = {}
    for rule in role_rules():
        try:
            found = rule(model, trace)
        except Exception:  # a rule meeting a model it does not understand decides nothing
            continue
        for path, role in found.items():
            roles.setdefault(path, role)
    return roles


def is_barrier(module: nn.Module) -> bool:
    """A parametrised leaf: owns parameters and has no parametrised children (Linear, Conv, Norm...)."""
    if next(module.parameters(recurse=False), None) is None:
        return False
    return all(next(child.parameters(), None) is None for child in module.children())


def is_projection(module: nn.Module) -> bool:
    """Maps features to new features: owns a parameter of 2+ dims (norms and scales own 1-D ones)."""
    return any(p.ndim >= 2 for p in module.parameters(recurse=False))


class HeadTracker(TorchFunctionMode):
    """Propagates module provenance through every torch function call during a forward.

    ``running`` is the stack of module paths being called (kept by the trace's hooks). A projection's
    weight used while its own module is not running (a tied LM head computing ``x @ embedding.weight.T``)
    is "borrowed": it survives the reset at a bias-only module that wraps that product (Perceiver).
    """

    def __init__(self, running: list[str] | None = None) -> None:
        super().__init__()
        self.sources: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.borrowed: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.weights: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.first_call: dict[str, int] = {}
        self.running = running if running is not None else []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        merged: frozenset[str] = frozenset()
        borrowed: frozenset[str] = frozenset()
        for t in _tensors((args, kwargs)):
            merged |= self.sources.get(t, frozenset())
            borrowed |= self.borrowed.get(t, frozenset())
            owners = self.weights.get(t)
            if owners and not any(p in self.running for p in owners):
                borrowed |= {owners[0]}
        if merged or borrowed:
            for t in _tensors(out):
                self.sources[t] = merged | self.sources.get(t, frozenset())
                if borrowed:
                    self.borrowed[t] = borrowed | self.borrowed.get(t, frozenset())
        return out

    def mark(self, path: str, output: Any, projection: bool = True) -> None:
        """Record that ``output`` was produced by the parametrised module at ``path``."""
        self.first_call.setdefault(path, len(self.first_call))
        for t in _tensors(output):
            kept = frozenset() if projection else self.borrowed.get(t, frozenset())
            self.sources[t] = frozenset({path}) | kept
            self.borrowed[t] = kept

    def mark_weights(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Let a projection's weight carry its module too, for weights used outside their module.

        Tied language-model heads compute ``x @ embedding.weight.T`` without calling a module.
        ``state`` holds the tensors the forward will actually see (fake or real), by name.
        """
        modules = dict(model.named_modules())
        owners: dict[int, tuple[torch.Tensor, list[str]]] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            path = name.rpartition(".")[0]
            module = modules.get(path)
            if path and param.ndim >= 2 and module is not None and is_barrier(module):
                # the first name of a shared weight is the one ``state`` holds (functional_call ties the rest)
                owners.setdefault(id(param), (state.get(name, param), []))[1].append(path)
        for tensor, paths in owners.values():
            # a weight tied between the input embedding and a Linear LM head belongs to the head
            heads = [p for p in paths if not isinstance(modules[p], nn.Embedding)]
            self.sources[tensor] = frozenset(heads[:1] or paths[:1])
            self.weights[tensor] = tuple(dict.fromkeys([*heads, *paths]))

    def heads_of(self, output: Any, model: nn.Module) -> dict[str, list[str]]:
        """For each tensor the model returned (keyed by its place in the output), its head paths."""
        modules = dict(model.named_modules())
        result: dict[str, list[str]] = {}
        leaves, _ = tree_flatten_with_path(as_plain_tree(output))
        for key_path, leaf in leaves:
            if not isinstance(leaf, torch.Tensor):
                continue
            paths = [p for p in self.sources.get(leaf, ()) if is_projection(modules[p])]
            result[keystr(key_path)] = sorted(paths, key=lambda p: self.first_call.get(p, len(modules)))
        return result


def as_plain_tree(value: Any) -> Any:
    """Dataclass outputs (``Output(logits=..., boxes=...)``) as dicts, so their tensors can be found."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_plain_tree(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: as_plain_tree(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(as_plain_tree(v) for v in value) if type(value) in (tuple, list) else value
    return value


def describe_head(
    model: nn.Module, path: str, inputs: dict, outputs: dict, role: HeadRole | None = None
) -> HeadInfo:
    """HeadInfo from the module (Linear/Conv sizes) or else from its traced shapes, with its role."""
    module = model.get_submodule(path)
    in_f = getattr(module, "in_features", None) or getattr(module, "in_channels", None)
    out_f = getattr(module, "out_features", None) or getattr(module, "out_channels", None)
    if in_f is None:
        in_f = _feature_dim(inputs.get(path), conv=False)
    if out_f is None:
        out_f = _feature_dim(outputs.get(path), conv=False)
    if role is None:
        return HeadInfo(path, type(module).__name__, _int(in_f), _int(out_f))
    return HeadInfo(path, type(module).__name__, _int(in_f), _int(out_f), role.role, role.rule)


def _feature_dim(shape: Any, conv: bool) -> int | None:
    if isinstance(shape, list) and shape and all(isinstance(d, int) for d in shape):
        return shape[1] if conv and len(shape) > 2 else shape[-1]
    return None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) else None


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]
