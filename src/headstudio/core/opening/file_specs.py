"""Specs from a file (an embedded or JSON recipe's ``arch``) are data, checked against an allow-list.

A spec a person types runs as typed. A spec read from a file may only name a registered builder of an
allow-listed library (torchvision's and timm's registered model names; more namespaces register with
``register_file_builders``) with literal keyword values, and never switches on a download: download
switches are forced off and file/URL/hub arguments are refused. Anything else (``module:callable``) is
refused naming what would be imported and called, and runs only with the user's consent; nothing is
imported before that.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from headstudio.core.errors import SourceError, TrustedCodeWarning, UntrustedSpecError
from headstudio.core.opening.specs import ArchSpec, parse_spec

Trust = bool | Collection[str]
"""``True`` allows every code a file names; a collection allows exactly the names the user consented to."""

# Arguments that fetch something from the network or a path, whatever the builder: refused outright.
_REFUSED_KWARGS = frozenset(
    {"pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir", "hf_hub_id", "url",
     "file", "model_dir", "trust_remote_code", "revision", "token", "local_files_only"}
)  # fmt: skip
_REMOTE_PREFIXES = ("hf-hub:", "hf_hub:", "http:", "https:", "ftp:", "file:", "s3:", "gs:")


@dataclass(frozen=True)
class FileBuilders:
    """A library whose registered builders a file may name.

    ``is_known(name)`` tells a registered name (it may import the library, which is allow-listed);
    ``names()`` lists them for "did you mean"; ``download_switches`` maps each argument that would
    download to the value that keeps it off.
    """

    is_known: Callable[[str], bool]
    names: Callable[[], list[str]]
    download_switches: dict[str, Any] = field(default_factory=dict)


_FILE_BUILDERS: dict[str, FileBuilders] = {}


def register_file_builders(namespace: str, builders: FileBuilders) -> None:
    """Allow files to name ``namespace:NAME`` specs (e.g. Hugging Face classes built from a config)."""
    _FILE_BUILDERS[namespace] = builders


def is_allowed(trust: Trust, names: Iterable[str]) -> bool:
    """True when ``trust`` covers every one of ``names`` (``True`` covers all)."""
    if trust is True:
        return True
    if not trust or isinstance(trust, bool):
        return False
    return set(names) <= set(trust)


def file_spec(text: str, where: str, trust: Trust = False) -> tuple[ArchSpec, list[str]]:
    """The spec a file names, made safe to build, and notes on what was switched off.

    Raises SourceError for a spec that breaks the rules and UntrustedSpecError (a consent request) for
    code outside the allow-list that ``trust`` does not cover. ``where`` names the file for messages.
    """
    try:
        spec = parse_spec(text)
    except SourceError as err:
        raise SourceError(f"{where}: its recipe's architecture is not a valid spec ({err})") from None
    builders = _FILE_BUILDERS.get(spec.namespace)
    if builders is None:
        call = describe_call(spec)
        if not is_allowed(trust, [call]):
            raise UntrustedSpecError(where, call)
        warnings.warn(f"{where}: allowed by --trust: {call}", TrustedCodeWarning, stacklevel=2)
        return spec, []
    _check_literals(spec, where)
    if not builders.is_known(spec.name):
        raise SourceError(
            f"{where}: its recipe names {spec.namespace}:{spec.name}, which is not a registered "
            f"{spec.namespace} model; pass --arch with the right architecture"
        )
    kwargs, notes = dict(spec.kwargs), []
    for key, off in builders.download_switches.items():
        if key in kwargs and kwargs[key] not in (None, False, off):
            notes.append(
                f"the file's recipe asked for {key}={kwargs[key]!r}; downloads are off ({key}={off!r})"
            )
            kwargs[key] = off
    return ArchSpec(spec.namespace, spec.name, kwargs), notes


def describe_call(spec: ArchSpec) -> str:
    """What building ``spec`` would import and call, e.g. ``os.system(command='ls')``."""
    args = ", ".join(f"{k}={v!r}" for k, v in spec.kwargs.items())
    return f"{spec.namespace}.{spec.name}({args})"


def _check_literals(spec: ArchSpec, where: str) -> None:
    """Refuse arguments that point at files, URLs or hubs (they would fetch something)."""
    for key, value in spec.kwargs.items():
        if key in _REFUSED_KWARGS:
            raise SourceError(
                f"{where}: its recipe passes {key}= to {spec.namespace}:{spec.name}, which would fetch "
                "files or weights; refused (remove it from the recipe or pass --arch)"
            )
        remote = next((s for s in _strings(value) if s.lower().startswith(_REMOTE_PREFIXES)), None)
        if remote is not None or "://" in "".join(_strings(value)):
            raise SourceError(
                f"{where}: its recipe passes {key}={value!r} to {spec.namespace}:{spec.name}, a URL or hub "
                "id that would be fetched; refused (remove it from the recipe or pass --arch)"
            )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple | set | frozenset):
        return [s for v in value for s in _strings(v)]
    return []


def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models())


def _timm_names() -> list[str]:
    from headstudio.core.opening.specs import import_timm

    return list(import_timm().list_models())


def _timm_is_known(name: str) -> bool:
    from headstudio.core.opening.specs import import_timm

    return "/" not in name and ":" not in name and bool(import_timm().is_model(name))


register_file_builders(
    "torchvision",
    FileBuilders(
        lambda name: name in _torchvision_names(),
        _torchvision_names,
        {"weights": None, "weights_backbone": None, "pretrained": False, "pretrained_backbone": False},
    ),
)
register_file_builders(
    "timm",
    FileBuilders(_timm_is_known, _timm_names, {"pretrained": False}),
)


def _transformers_is_known(name: str) -> bool:
    """A model class of the transformers package (built from a config folder; never remote code)."""
    from headstudio.core.opening.hf import transformers_class

    return transformers_class(name) is not None


register_file_builders("transformers", FileBuilders(_transformers_is_known, list))
