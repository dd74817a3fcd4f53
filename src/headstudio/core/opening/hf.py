"""Hugging Face transformers models: model folders, cache snapshots, ``transformers:Class(config=...)``.

The architecture comes from ``config.json`` (``architectures``, ``model_type``), read as data and checked
first: remote code (``auto_map``) is refused and only classes of the transformers package are built.
Weights are memory-mapped by our own readers and handed to transformers' ``from_pretrained`` as a
state_dict, so its key renames, conversions and weight tying apply while no tensor is copied.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstudio.core.errors import MissingDependencyError, SourceError, first_line
from headstudio.core.opening.specs import ArchSpec

CONFIG = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_HINT = "Head Studio never runs code from a model folder"
_HF_WEIGHT_NAME = re.compile(r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?")


def import_transformers() -> Any:
    """Import transformers or explain how to get it."""
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError(
            "transformers is not installed: pip install 'headstudio[hf]' (or pip install transformers)"
        ) from None
    return transformers


def hf_folder_of(path: Path) -> Path | None:
    """The model folder ``path`` names: a folder with config.json, a cache repo, or a weight file in one."""
    if path.is_dir():
        snapshot = _cache_snapshot(path)
        if snapshot is not None:
            return snapshot
        return path if (path / CONFIG).is_file() and not _foreign_config(path) else None
    if path.is_file() and _HF_WEIGHT_NAME.fullmatch(path.name) and (path.parent / CONFIG).is_file():
        return path.parent if _has_model_type(path.parent) else None
    return None  # other files beside a config (e.g. our own saves, with their recipe) open as files


def _cache_snapshot(path: Path) -> Path | None:
    """``models--org--name`` in the local HF cache: the snapshot ``refs/main`` names (else the newest)."""
    snapshots = path / "snapshots"
    if not snapshots.is_dir() or (path / CONFIG).exists():
        return None
    ref = path / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8", errors="replace").strip()
        if commit and "/" not in commit and (snapshots / commit / CONFIG).is_file():
            return snapshots / commit
    found = sorted(
        (p for p in snapshots.iterdir() if (p / CONFIG).is_file()), key=lambda p: p.stat().st_mtime
    )
    return found[-1] if found else None


def _foreign_config(folder: Path) -> bool:
    """A config.json that is an object naming no model type nor architecture: some other tool's file."""
    try:
        data = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # a broken model config is reported as such
    return isinstance(data, dict) and not ({"model_type", "architectures"} & data.keys())


def _has_model_type(folder: Path) -> bool:
    try:
        data = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "model_type" in data


def read_config_json(folder: Path) -> dict[str, Any]:
    """config.json as data, refused when it asks for remote code or is not a transformers config."""
    path = folder / CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SourceError(
            f"{path} is not readable JSON ({first_line(err)}); fix or re-save the config"
        ) from None
    if not isinstance(data, dict):
        raise SourceError(f"{path} holds a {type(data).__name__}, not a config object; re-save the model")
    if data.get("auto_map") or data.get("trust_remote_code"):
        raise SourceError(
            f"{path} asks to run the folder's own Python code (auto_map); {_HINT}, "
            "so only models built into transformers open"
        )
    model_type = data.get("model_type")
    mapping = import_transformers().CONFIG_MAPPING
    if not isinstance(model_type, str) or model_type not in mapping:
        raise SourceError(
            f"{path}: model_type {model_type!r} is not a transformers model type; "
            "upgrade transformers or check the config"
        )
    names = data.get("architectures")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise SourceError(f"{path}: 'architectures' must be a list of class names, got {names!r}")
    return data


def load_config(folder: Path, data: dict[str, Any], overrides: dict[str, Any] | None = None) -> Any:
    """The transformers config for ``folder`` (local files only; never downloads, never runs code)."""
    transformers = import_transformers()
    try:
        with quiet_transformers():
            config = transformers.AutoConfig.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False, **(overrides or {})
            )
    except Exception as err:
        raise SourceError(
            f"{folder / CONFIG} is not a valid {data.get('model_type')} config: "
            f"{first_line(err, with_type=True)}"
        ) from None
    return config


def model_class(data: dict[str, Any], config: Any, where: str) -> type:
    """The class named by ``architectures`` (transformers classes only), else the base model for its type."""
    transformers = import_transformers()
    for name in data.get("architectures") or []:
        cls = transformers_class(name)
        if cls is not None:
            return cls
    if data.get("architectures"):
        raise SourceError(
            f"{where}: architecture {data['architectures'][0]!r} is not a transformers model class; "
            f"{_HINT}; name one with --arch 'transformers:CLASS(config=FOLDER)'"
        )
    try:
        return transformers.AutoModel._model_mapping[type(config)]
    except KeyError:
        raise SourceError(f"{where}: transformers has no model for type {config.model_type!r}") from None


def transformers_class(name: str) -> type | None:
    """``transformers.NAME`` when it is a model class of the package, else None (never imports user code)."""
    transformers = import_transformers()
    if not name.isidentifier() or name.startswith("_"):
        return None
    try:
        cls = getattr(transformers, name, None)
    except Exception:  # the lazy module raises when an optional backend is missing
        return None
    is_model = isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)
    return cls if is_model and cls.__module__.startswith("transformers.") else None


def weight_files(folder: Path) -> list[Path]:
    """The folder's weight files: the shards an index names, or the single file; [] for a config only."""
    for index_name in INDEX_FILES:
        index = folder / index_name
        if index.is_file():
            return _shards(index)
    return [folder / n for n in WEIGHT_FILES if (folder / n).is_file()][:1]


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise SourceError(f"{index} is not a shard index (no weight_map); re-save the model") from None
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise SourceError(f"{index} names shard {name!r} outside its folder; the index is refused")
        if not (index.parent / name).is_file():
            raise SourceError(f"{index} names shard {name} which is missing; copy the whole folder")
    return [index.parent / n for n in names]


def read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """Every tensor of the files, memory-mapped (safetensors) or mmap-loaded weights-only (.bin)."""
    from headstudio.core.opening.checkpoints import read_checkpoint

    state: dict[str, torch.Tensor] = {}
    for path in files:
        ckpt = read_checkpoint(path)
        if ckpt.state_dict is None:
            raise SourceError(f"{path} holds no weights; re-save the model with save_pretrained")
        state.update(ckpt.state_dict)
    return state


def load_model(cls: type, config: Any, state: dict[str, torch.Tensor], where: str) -> tuple[nn.Module, list]:
    """Build ``cls`` on meta, attach ``state`` by transformers' loading rules; notes say what differed."""
    try:
        with quiet_transformers():
            model, info = cls.from_pretrained(
                None, config=config, state_dict=state, output_loading_info=True, local_files_only=True
            )
    except Exception as err:
        raise SourceError(f"{where}: transformers cannot load these weights into {cls.__name__}: "
                          f"{first_line(err, with_type=True)}") from None  # fmt: skip
    notes = []
    for what, keys in (("missing from the files (initialised fresh)", info["missing_keys"]),
                       ("in the files but not used", info["unexpected_keys"])):  # fmt: skip
        if keys:
            shown = ", ".join(sorted(map(str, keys))[:3])
            notes.append(f"{len(keys)} weights {what}: {shown}")
    if info["mismatched_keys"]:
        raise SourceError(f"{where}: weights do not fit {cls.__name__}: {sorted(info['mismatched_keys'])[0]}")
    return model.eval(), notes


def build_from_config(cls: type, config: Any, *, meta: bool) -> nn.Module:
    """``cls(config)`` with parameters on meta (no memory) or initialised for real."""
    try:
        with quiet_transformers(), torch.device("meta") if meta else _nothing():
            model = cls._from_config(config)
    except Exception as err:
        raise SourceError(
            f"building {cls.__name__} from its config failed: {first_line(err, with_type=True)}"
        ) from None
    return model.eval()


def spec_config(spec: ArchSpec) -> tuple[type, Any, Path | None]:
    """Class, config and folder of ``transformers:Class(config=FOLDER or model_type, key=value...)``."""
    transformers = import_transformers()
    cls = transformers_class(spec.name)
    if cls is None:
        raise SourceError(f"'{spec.name}' is not a transformers model class, e.g. transformers:BertModel")
    kwargs = dict(spec.kwargs)
    source = kwargs.pop("config", None)
    if not isinstance(source, str):
        raise SourceError(f"'{spec}': say where the config is: transformers:{spec.name}(config='FOLDER')")
    folder = Path(source).expanduser()
    if folder.is_file() and folder.name == CONFIG:
        folder = folder.parent
    if folder.is_dir():
        folder = hf_folder_of(folder) or folder
        data = read_config_json(folder)
        return cls, load_config(folder, data, kwargs), folder
    if source in transformers.CONFIG_MAPPING:
        try:
            return cls, transformers.CONFIG_MAPPING[source](**kwargs), None
        except Exception as err:
            raise SourceError(f"'{spec}': {first_line(err, with_type=True)}") from None
    raise SourceError(f"'{spec}': config {source!r} is neither a folder with config.json nor a model type")


def hf_factory(spec: ArchSpec) -> Any:
    """A factory for specs.build_model: builds the class from its config (real weights, default init)."""
    cls, config, _folder = spec_config(spec)
    return lambda **_ignored: build_from_config(cls, config, meta=False)


def arch_name(cls: type, folder: Path | None, config: Any) -> str:
    """The spec that rebuilds this architecture: ``transformers:Class(config='FOLDER')``."""
    where = str(folder.resolve()) if folder is not None else config.model_type
    return f"transformers:{cls.__name__}(config={where!r})"


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars or info logs from transformers while we load (our progress reports instead)."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def open_folder(source: str, folder: Path, progress: Any, materialize: bool = False) -> tuple[nn.Module, Any]:
    """Model and Origin for an HF model folder: config first, then its weights through transformers."""
    from headstudio.core.model.document import Origin

    data = read_config_json(folder)
    config = load_config(folder, data)
    cls = model_class(data, config, str(folder / CONFIG))
    files = weight_files(folder)
    origin = Origin(source, "hf_folder", arch_name(cls, folder, config), folder)
    if not files:
        progress(f"building {cls.__name__} (config only, no weights)", 0.5)
        origin.notes.append("the folder has no weight files: the model is built from config.json alone")
        return build_from_config(cls, config, meta=not materialize), origin
    progress(f"mapping {len(files)} weight file(s)", 0.3)
    state = read_weights(files)
    progress(f"attaching weights to {cls.__name__}", 0.6)
    model, notes = load_model(cls, config, state, str(folder))
    origin.notes += notes
    return model, origin


def open_spec(spec: ArchSpec, materialize: bool) -> tuple[nn.Module, str]:
    """A ``transformers:Class(config=...)`` spec built from its config (meta unless ``materialize``)."""
    cls, config, folder = spec_config(spec)
    return build_from_config(cls, config, meta=not materialize), arch_name(cls, folder, config)


def load_into_spec(spec: ArchSpec, state: dict[str, torch.Tensor], where: str) -> tuple[nn.Module, str, list]:
    """Weights of a bare file attached to a ``transformers:`` spec, renamed by transformers' rules."""
    cls, config, folder = spec_config(spec)
    model, notes = load_model(cls, config, state, where)
    return model, arch_name(cls, folder, config), notes


def is_hf_spec(spec: ArchSpec | str | None) -> bool:
    """True for ``transformers:...`` specs."""
    text = spec.namespace if isinstance(spec, ArchSpec) else (spec or "")
    return text.split(":", 1)[0].strip() == "transformers"
