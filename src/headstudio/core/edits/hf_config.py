"""Keeping a transformers model's config in step with head edits.

A new classifier changes ``num_labels``, ``id2label`` and ``label2id`` (kept rows keep their names) and
the model's own ``num_labels`` attribute (its loss reads it); replacing or removing a language-model
head tied to the input embeddings unties them; removing a head makes the saved folder the base model.
Each function returns what ``restore_config`` needs to undo it.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from headstudio.core.errors import EditError
from headstudio.core.model.hf_heads import base_of, output_embedding_path, tied_embedding

ConfigUndo = tuple[Any, dict[str, Any], dict[str, Any]]  # (config, its old __dict__ copy, model attrs)


def is_hf_model(model: nn.Module) -> bool:
    """A transformers model: has a config and the PreTrainedModel embedding accessors."""
    return getattr(model, "config", None) is not None and hasattr(model, "get_input_embeddings")


def label_problems(labels: Any, num_classes: int) -> list[str]:
    """Problems with user label names for ``num_classes`` classes (none for ``None``)."""
    if labels is None:
        return []
    if not isinstance(labels, (list, tuple)) or not all(isinstance(n, str) and n.strip() for n in labels):
        return [f"labels {labels!r} must be a list of names, e.g. --labels cat,dog,bird"]
    if len(labels) != num_classes:
        return [f"{len(labels)} label names for {num_classes} classes; give one name per class"]
    if len(set(labels)) != len(labels):
        return ["label names must differ from each other (label2id maps each name to one class)"]
    return []


def sync_replaced(
    model: nn.Module, path: str, old_count: int | None, new_count: int, labels: Any, keep: list[int] | None
) -> tuple[ConfigUndo | None, list[str]]:
    """After a head at ``path`` became ``new_count`` wide: labels, counts and ties in the config."""
    if not is_hf_model(model):
        return None, []
    undo = _remember(model)
    notes = _untie(model, path)
    config = model.config
    if old_count is not None and old_count == config.num_labels and not _is_vocabulary(config, old_count):
        old_names = dict(config.id2label or {})
        names = list(labels) if labels else _kept_names(old_names, keep, new_count)
        config.num_labels = new_count  # first: a few configs (PVT) save num_labels as a field of its own
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
        if isinstance(getattr(config, "label_names", None), list):  # timm_wrapper saves these, not id2label
            config.label_names = names
        _fix_problem_type(config, new_count)
        if hasattr(model, "num_labels"):
            model.num_labels = new_count
    elif labels:
        raise EditError(f"'{path}' is not the classifier the config's labels describe; drop --labels")
    return undo, notes


def sync_removed(model: nn.Module, path: str) -> tuple[ConfigUndo | None, list[str]]:
    """After the head at ``path`` became Identity: the model now returns features; it saves as its base."""
    if not is_hf_model(model):
        return None, []
    undo = _remember(model)
    notes = _untie(model, path)
    base = base_of(model)
    if base is not None:
        model.config.architectures = [type(base).__name__]
        notes.append(
            f"the model now returns features; a saved folder holds the base model {type(base).__name__}"
        )
    return undo, notes


def restore_config(model: nn.Module, undo: ConfigUndo | None) -> None:
    """Undo ``sync_replaced`` / ``sync_removed``."""
    if undo is None:
        return
    config, old, attrs = undo
    config.__dict__.clear()
    config.__dict__.update(old)
    for name, value in attrs.items():
        setattr(model, name, value)


def _remember(model: nn.Module) -> ConfigUndo:
    attrs = {"num_labels": model.num_labels} if hasattr(model, "num_labels") else {}
    return model.config, copy.deepcopy(model.config.__dict__), attrs


def _untie(model: nn.Module, path: str) -> list[str]:
    """The head is no longer the embeddings' weight: the config must not tie them again on load."""
    was_tied = getattr(model.config, "tie_word_embeddings", False)
    embedding = tied_embedding(model, path)
    if not (embedding or (was_tied and output_embedding_path(model) == path)):
        return []
    model.config.tie_word_embeddings = False
    text_config = getattr(model.config, "get_text_config", lambda: None)()
    if text_config is not None and text_config is not model.config:
        text_config.tie_word_embeddings = False
    return [f"'{path}' was tied to the input embeddings ({embedding or 'by the config'}); it is now untied"]


def _is_vocabulary(config: Any, count: int) -> bool:
    return count == getattr(config, "vocab_size", None) and count != 2


def _kept_names(old: dict, keep: list[int] | None, count: int) -> list[str]:
    """Kept rows keep their names; other classes are LABEL_i (transformers' own default names)."""
    names = [str(old.get(k, old.get(str(k), f"LABEL_{i}"))) for i, k in enumerate(keep or [])]
    used = set(names)
    for i in range(len(names), count):
        name = f"LABEL_{i}"
        while name in used:
            name += "_new"
        names.append(name)
        used.add(name)
    return names


def _fix_problem_type(config: Any, count: int) -> None:
    """``problem_type`` must stay valid for the new count (regression is one output only)."""
    kind = getattr(config, "problem_type", None)
    if (kind == "regression" and count != 1) or (kind == "single_label_classification" and count == 1):
        config.problem_type = None
