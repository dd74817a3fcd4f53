"""What a container says about its architecture: Lightning, timm and torchvision training checkpoints.

Everything here is read as data. A name from a file becomes a spec only when it names a torchvision
or timm builder, with integer sizes (``num_classes``, ``in_chans``) as its only arguments; a class
path (Lightning's ``_class_path``) is reported, never imported here (that needs the user's consent).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstudio.core.opening.checkpoints import Checkpoint

# Sizes a file may set on an allow-listed builder, under the names training code uses for them.
_SIZE_KEYS = {
    "num_classes": ("num_classes", "n_classes", "num_labels", "nb_classes", "classes"),
    "in_chans": ("in_chans", "in_channels", "input_channels", "num_channels"),
}
_NAME_KEYS = ("arch", "architecture", "model_name", "model", "backbone", "net", "network", "encoder", "name")
_MAX_SIZE = 1_000_000


@dataclass(frozen=True)
class Hint:
    """One thing a file says: an allow-listed spec, a family name, or a class path needing consent."""

    said_by: str  # e.g. "timm checkpoint (args.model, args.num_classes)"
    spec: str | None = None  # torchvision:NAME / timm:NAME with integer sizes only
    family: str | None = None  # a name that is no builder (timm's arch = model class): ranks guesses
    class_path: str | None = None  # Lightning module class recorded in the file (import needs consent)
    kwargs: dict[str, Any] = field(default_factory=dict)  # hyper_parameters for that class
    config: Path | None = None  # a Hugging Face config.json beside the file


def read_hints(ckpt: Checkpoint) -> list[Hint]:
    """Every hint the file and its folder carry, in the order they are trusted."""
    hints: list[Hint] = []
    container = ckpt.container or {}
    if _is_lightning(container):
        hints += _lightning_hints(container)
    if "args" in container or isinstance(container.get("arch"), str):
        if _is_timm(container):
            hints += _timm_hints(container)
        else:
            hints += _reference_hints(container)
    config = _config_beside(ckpt.path)
    if config is not None:
        hints.append(Hint("config.json beside the file (Hugging Face)", config=config))
    return hints


def allowed_spec(
    name: Any, sizes: Mapping[str, Any] | None = None, order: tuple[str, ...] = ("torchvision", "timm")
) -> str | None:
    """``name`` as a torchvision/timm spec with integer sizes, or None when a file names anything else.

    This is the one gate file data passes to become a spec (the safety allow-list routes through here);
    a bare name both libraries have is tried in ``order``.
    """
    specs = allowed_specs(name, sizes, order)
    return specs[0] if specs else None


def allowed_specs(
    name: Any, sizes: Mapping[str, Any] | None = None, order: tuple[str, ...] = ("torchvision", "timm")
) -> list[str]:
    """Every allow-listed spec ``name`` can mean (a bare ``resnet50`` is in both libraries)."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        return []
    namespace, _, bare = name.strip().rpartition(":")
    bare = bare.removeprefix("timm/").split(".")[0]
    namespace = "timm" if namespace == "hf-hub" else namespace
    known = {"torchvision": _is_torchvision, "timm": _is_timm_model}
    specs = []
    for library in order:
        if namespace in ("", library) and known[library](bare):
            kwargs = clean_sizes(sizes or {}, library)
            args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            specs.append(f"{library}:{bare}" + (f"({args})" if args else ""))
    return specs


def clean_sizes(values: Mapping[str, Any], namespace: str = "timm") -> dict[str, int]:
    """The class count / input channels a file states, kept only when they are plain positive ints."""
    out: dict[str, int] = {}
    for size, aliases in _SIZE_KEYS.items():
        if size == "in_chans" and namespace != "timm":
            continue  # torchvision builders take no in_chans
        for alias in aliases:
            value = values.get(alias) if isinstance(values, Mapping) else None
            if type(value) is int and 0 < value < _MAX_SIZE:
                out[size] = value
                break
    return out


def _is_lightning(container: Mapping) -> bool:
    return any(k in container for k in ("pytorch-lightning_version", "hyper_parameters", "hparams_name"))


def _lightning_hints(container: Mapping) -> list[Hint]:
    hparams = container.get("hyper_parameters")
    if not isinstance(hparams, Mapping):
        return []
    hints = []
    class_path = hparams.get("_class_path")
    if isinstance(class_path, str) and _looks_like_class_path(class_path):
        init = {k: v for k, v in hparams.items() if isinstance(k, str) and not k.startswith("_")}
        hints.append(Hint("Lightning hyper_parameters (_class_path)", class_path=class_path, kwargs=init))
    for where, values in [("", hparams), *_nested(hparams)]:
        for key in _NAME_KEYS:
            sizes = {**hparams, **values} if isinstance(values, Mapping) else hparams
            specs = allowed_specs(values.get(key), sizes)
            if specs:  # a bare name both libraries know: the weights decide which
                return [*hints, *(Hint(f"Lightning hyper_parameters ({where}{key})", spec=s) for s in specs)]
    return hints


def _nested(hparams: Mapping) -> list[tuple[str, Mapping]]:
    return [(f"{k}.", v) for k, v in hparams.items() if isinstance(k, str) and isinstance(v, Mapping)]


def _is_timm(container: Mapping) -> bool:
    return "state_dict" in container and ("arch" in container or "state_dict_ema" in container)


def _timm_hints(container: Mapping) -> list[Hint]:
    args = _as_mapping(container.get("args"))
    sizes = {k: args[k] for k in ("num_classes", "in_chans") if k in args}
    spec = allowed_spec(args.get("model"), sizes, ("timm", "torchvision"))
    if spec:
        return [Hint(f"timm checkpoint (args.model{_listed(sizes, 'args')})", spec=spec)]
    arch = container.get("arch")
    spec = allowed_spec(arch, sizes, ("timm", "torchvision"))
    if spec and isinstance(arch, str):
        return [Hint(f"timm checkpoint (arch{_listed(sizes, 'args')})", spec=spec)]
    if isinstance(arch, str) and arch.isidentifier():
        return [Hint(f"timm checkpoint (arch '{arch}', a model class)", family=arch)]
    return []


def _reference_hints(container: Mapping) -> list[Hint]:
    args = _as_mapping(container.get("args"))
    sizes = {k: args[k] for k in _SIZE_KEYS["num_classes"] if k in args}
    spec = allowed_spec(args.get("model"), sizes)
    if spec:
        return [Hint(f"torchvision reference checkpoint (args.model{_listed(sizes, 'args')})", spec=spec)]
    return []


def _as_mapping(value: Any) -> Mapping:
    """argparse.Namespace or dict ``args`` as a mapping (anything else says nothing)."""
    if isinstance(value, Mapping):
        return value
    attrs = getattr(value, "__dict__", None)
    return attrs if type(value).__name__ == "Namespace" and isinstance(attrs, dict) else {}


def _listed(sizes: Mapping[str, Any], owner: str) -> str:
    kept = [k for k, v in sizes.items() if type(v) is int and v > 0]
    return "".join(f", {owner}.{k}" for k in kept)


def _config_beside(path: Path) -> Path | None:
    """A Hugging Face config.json next to the weights (the hf opener reads it)."""
    config = path.parent / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else None
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and ("model_type" in data or "architectures" in data):
        return config
    return None


def _looks_like_class_path(text: str) -> bool:
    module, _, name = text.rpartition(".")
    return bool(module) and name.isidentifier() and all(p.isidentifier() for p in module.split("."))


def _is_torchvision(name: str) -> bool:
    try:
        import torchvision
    except ImportError:
        return False
    return name in torchvision.models.list_models() and not name.startswith("quantized_")


def _is_timm_model(name: str) -> bool:
    try:
        import timm
    except ImportError:
        return False
    return bool(name) and timm.is_model(name)
