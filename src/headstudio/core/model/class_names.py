"""Class names for a head's outputs, from what the checkpoint or the model's config carries.

Looked for in order: the checkpoint container (``class_names``, ``classes``, ``id2label``,
``class_to_idx``... at the top or under ``hyper_parameters``/``hparams``/``args``/``config``), a
transformers config's ``id2label``, timm's ImageNet label tables for a timm model with 1000 classes, and
torchvision's weight metadata for the architecture. Names are used only when their count matches the head.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

NAME_KEYS = (
    "class_names",
    "classes",
    "label_names",
    "labels",
    "categories",
    "id2label",
    "idx_to_class",
    "class_to_idx",
)
NESTED_KEYS = ("hyper_parameters", "hparams", "args", "config", "meta", "metadata")


def class_names_for(
    model: nn.Module, size: int, container: Any = None, arch: str | None = None
) -> tuple[list[str], str] | None:
    """(names, where they came from) for a head of ``size`` outputs, or None when nothing fits."""
    for finder in (
        lambda: _from_container(container),
        lambda: _from_config(model),
        lambda: _from_timm(model, arch, size),
        lambda: _from_torchvision(arch),
    ):
        found = finder()
        if found is not None and len(found[0]) == size:
            return found
    return None


def names_from_value(value: Any) -> list[str] | None:
    """A list of names from a list of strings, an index->name mapping or a name->index mapping."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if not isinstance(value, Mapping) or not value:
        return None
    items = list(value.items())
    if all(isinstance(v, int) and isinstance(k, str) for k, v in items):  # class_to_idx
        items = [(v, k) for k, v in items]
    try:
        indexed = {int(k): str(v) for k, v in items}
    except (TypeError, ValueError):
        return None
    if sorted(indexed) != list(range(len(indexed))):
        return None
    return [indexed[i] for i in range(len(indexed))]


def _from_container(container: Any) -> tuple[list[str], str] | None:
    if not isinstance(container, Mapping):
        return None
    places = [("", container)]
    for key in NESTED_KEYS:
        inner = container.get(key)
        inner = vars(inner) if hasattr(inner, "__dict__") and not isinstance(inner, Mapping) else inner
        if isinstance(inner, Mapping):
            places.append((f"{key}.", inner))
    for prefix, place in places:
        for key in NAME_KEYS:
            names = names_from_value(place.get(key))
            if names:
                return names, f"checkpoint '{prefix}{key}'"
    return None


def _from_config(model: nn.Module) -> tuple[list[str], str] | None:
    config = getattr(model, "config", None)
    names = names_from_value(getattr(config, "id2label", None))
    if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)):  # transformers' placeholders
        return None
    return names, "config id2label"


def _from_timm(model: nn.Module, arch: str | None, size: int) -> tuple[list[str], str] | None:
    from_timm = (arch or "").startswith("timm:") or hasattr(model, "pretrained_cfg")
    if size != 1000 or not from_timm:
        return None
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo("imagenet-1k")
        return [info.index_to_description(i) for i in range(size)], "timm ImageNet-1k labels"
    except Exception:  # an old timm without label tables
        return None


def _from_torchvision(arch: str | None) -> tuple[list[str], str] | None:
    if not arch or not arch.startswith("torchvision:"):
        return None
    try:
        import torchvision

        weights = torchvision.models.get_model_weights(arch.split(":", 1)[1].split("(")[0]).DEFAULT
        names = list(weights.meta["categories"])
    except Exception:  # no weights metadata for this name
        return None
    return names, f"torchvision {type(weights).__name__} categories"
