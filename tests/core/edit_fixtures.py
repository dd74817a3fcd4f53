"""Helpers shared by the edit tests: open small models and take exact snapshots to compare after revert."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from headstudio.core.model.document import Document
from headstudio.core.opening.sources import open_source


def opened(spec: str, materialize: bool = True) -> Document:
    """A Document for ``spec``; materialized (real random weights) unless asked otherwise."""
    return open_source(spec, materialize=materialize)


@dataclass
class Snapshot:
    """Everything revert must restore: module objects by identity, tensors by value, requires_grad flags."""

    model: nn.Module
    modules: dict[str, nn.Module]
    tensors: dict[str, torch.Tensor]
    flags: dict[str, bool]
    hooks: dict[str, int]


def snapshot(doc: Document) -> Snapshot:
    """Record the document's model exactly."""
    m = doc.model
    return Snapshot(
        m,
        dict(m.named_modules()),
        {k: v.detach().clone() for k, v in m.state_dict().items()},
        {k: p.requires_grad for k, p in m.named_parameters()},
        {k: len(mod._forward_pre_hooks) for k, mod in m.named_modules()},
    )


def assert_restored(doc: Document, snap: Snapshot) -> None:
    """The model is the same object tree with bit-identical tensors, flags and hooks."""
    assert doc.model is snap.model
    now = dict(doc.model.named_modules())
    assert now.keys() == snap.modules.keys()
    assert all(now[k] is snap.modules[k] for k in now)
    state = doc.model.state_dict()
    assert state.keys() == snap.tensors.keys()
    for k, v in snap.tensors.items():
        assert v.is_meta or torch.equal(state[k], v), k
    assert {k: p.requires_grad for k, p in doc.model.named_parameters()} == snap.flags
    assert {k: len(mod._forward_pre_hooks) for k, mod in now.items()} == snap.hooks
