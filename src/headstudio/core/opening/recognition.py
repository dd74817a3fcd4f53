"""Knowing which architecture weights belong to when nobody said: the file's hints, then the fingerprint.

Hints come first, in the order they are trusted (see ``hints.read_hints``); a hint whose architecture
the weights do not fit is ignored with a note, so a file that lies cannot do more than be wrong.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from headstudio.core.errors import (
    ArchitectureRequiredError,
    HeadStudioError,
    Progress,
    UnsafeCheckpointError,
)
from headstudio.core.opening.checkpoints import Checkpoint
from headstudio.core.opening.file_specs import Trust, file_spec, is_allowed
from headstudio.core.opening.fingerprint import Candidate, compare, identify, shapes_of
from headstudio.core.opening.fingerprint_index import default_classes
from headstudio.core.opening.hints import Hint, read_hints
from headstudio.core.opening.specs import ArchSpec, build_model, resolve_factory
from headstudio.core.opening.weights import align_keys, attach_weights


def recognise(
    ckpt: Checkpoint, *, trust: Trust = False, progress: Progress | None = None
) -> tuple[nn.Module, str, str]:
    """(model with the weights attached, its spec, how it was known) for a file nobody gave ``--arch`` for."""
    consent: str | None = None
    family: str | None = None
    for hint in read_hints(ckpt):
        if hint.spec:
            fitted = _fit_hint(hint, ckpt)
            if fitted is not None:
                return fitted
        elif hint.class_path and is_allowed(trust, [hint.class_path]):
            model, name = lightning_model(_class_spec(hint.class_path), hint.kwargs)
            attach_weights(model, ckpt, name)
            return model, name, hint.said_by
        elif hint.class_path:
            consent = consent or hint.class_path
            ckpt.notes.append(f"{hint.said_by} names {hint.class_path}; not imported without --trust")
        elif hint.family:
            family = hint.family
        elif hint.config is not None:
            ckpt.notes.append(
                f"{hint.config} describes a Hugging Face model; weights recognised on their own"
            )
    candidates = identify(ckpt.state_dict or {}, prefer=family, progress=progress)
    if candidates and candidates[0].exact:
        opened = _open_candidate(candidates, ckpt)
        if opened is not None:
            return opened
    if consent:
        raise UnsafeCheckpointError(str(ckpt.path), [consent])
    raise unknown_weights(ckpt, candidates)


def build_for_checkpoint(spec: ArchSpec, ckpt: Checkpoint) -> tuple[nn.Module, str]:
    """Build a user-given spec; a LightningModule class is built from the file's hyper_parameters."""
    hparams = (ckpt.container or {}).get("hyper_parameters")
    if spec.namespace not in ("torchvision", "timm") and not spec.kwargs and isinstance(hparams, Mapping):
        factory = resolve_factory(spec)
        if isinstance(factory, type) and hasattr(factory, "load_from_checkpoint"):
            return lightning_model(spec, hparams)
    return build_model(spec), str(spec)


def lightning_model(spec: ArchSpec, hparams: Mapping[str, Any]) -> tuple[nn.Module, str]:
    """A LightningModule built like ``load_from_checkpoint`` does: ``cls(**hyper_parameters it takes)``."""
    factory = resolve_factory(spec)
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in hparams.items() if isinstance(k, str) and (takes_any or k in params)}
    full = ArchSpec(spec.namespace, spec.name, kwargs)
    model = build_model(full)
    return model, str(full) if _literal(kwargs) else str(spec)


def unknown_weights(ckpt: Checkpoint, candidates: list[Candidate]) -> ArchitectureRequiredError:
    """The one-line error for weights no hint or fingerprint placed, naming the nearest architectures."""
    count = len(ckpt.state_dict or {})
    if candidates:
        near = "; ".join(c.describe() for c in candidates[:3])
        return ArchitectureRequiredError(
            f"{ckpt.path} holds only weights ({count} tensors) that fit no known architecture exactly; "
            f"nearest: {near}; say which with --arch, e.g. --arch '{candidates[0].arch}'",
            candidates,
        )
    return ArchitectureRequiredError(
        f"{ckpt.path} holds only weights ({count} tensors) whose names match no torchvision or timm "
        "architecture; say which with --arch, e.g. --arch mypackage.models:build_model (your model's factory)"
    )


def _fit_hint(hint: Hint, ckpt: Checkpoint) -> tuple[nn.Module, str, str] | None:
    """Build the hinted spec with sizes read from the weights; None (and a note) when they disagree."""
    assert hint.spec is not None
    try:
        spec, notes = file_spec(hint.spec, str(ckpt.path))  # the allow-list every file spec passes
        ckpt.notes.extend(notes)
        model = build_model(spec)
        expected = shapes_of(model.state_dict())
        found, _, _ = align_keys(set(expected), ckpt.state_dict or {})
        base = f"{spec.namespace}:{spec.name}"
        classes = spec.kwargs.get("num_classes") or default_classes(model, base)
        fit = compare(shapes_of(found), list(expected.items()), base, classes)
        if not fit.exact:
            ckpt.notes.append(
                f"{hint.said_by} says {hint.spec}, but the weights do not fit it ({fit.differs[0]}); ignored"
            )
            return None
        said = hint.said_by
        if fit.kwargs:
            spec = ArchSpec(spec.namespace, spec.name, {**spec.kwargs, **fit.kwargs})
            model = build_model(spec)
            said += "; " + ", ".join(f"{k}={v}" for k, v in fit.kwargs.items()) + " read from the weights"
        attach_weights(model, ckpt, str(spec))
    except HeadStudioError as err:
        ckpt.notes.append(f"{hint.said_by} says {hint.spec}, which could not be used ({err}); ignored")
        return None
    return model, str(spec), said


def _open_candidate(candidates: list[Candidate], ckpt: Checkpoint) -> tuple[nn.Module, str, str] | None:
    best = candidates[0]
    try:
        model = build_model(best.arch)
        attach_weights(model, ckpt, best.arch)
    except HeadStudioError:
        return None
    ties = [c.arch for c in candidates[1:] if c.exact]
    if ties:
        ckpt.notes.append(
            f"the weights fit {', '.join(ties[:3])} as well (same parameters); --arch opens one of those"
        )
    return model, best.arch, f"recognised from the weights as {best.arch}"


def _class_spec(class_path: str) -> ArchSpec:
    module, _, name = class_path.rpartition(".")
    return ArchSpec(module, name)


def _literal(kwargs: Mapping[str, Any]) -> bool:
    """True when the kwargs survive a spec's text form (so a recipe can rebuild the model)."""
    try:
        return all(ast.literal_eval(repr(v)) == v for v in kwargs.values())
    except (ValueError, SyntaxError):
        return False
