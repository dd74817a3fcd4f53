"""Architecture specs (``torchvision:NAME``, ``timm:NAME``, ``pkg.module:factory``) and building them.

Models are built with parameters on the meta device (no memory, no init cost) so weights can be
attached memory-mapped afterwards; buffers stay real because some models compute them in ``__init__``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from headstudio.core.errors import MissingDependencyError, SourceError, first_line
from headstudio.core.kinds import is_file_name

_SPEC_RE = re.compile(r"^(?P<ns>[A-Za-z_][\w.]*):(?P<name>[A-Za-z_][\w.]*)(?P<args>\(.*\))?$", re.S)
_BUILD_LOCK = threading.Lock()


@dataclass(frozen=True)
class ArchSpec:
    """A parsed spec: namespace (torchvision, timm or a module path), name and keyword arguments."""

    namespace: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.namespace}:{self.name}" + (f"({args})" if args else "")


def looks_like_spec(text: str) -> bool:
    """True when ``text`` has the shape of an architecture spec rather than a file path."""
    text = text.strip()
    if is_file_name(text):
        return False
    head = text.split("(", 1)[0]  # paths may appear inside arguments: (config='models/bert')
    return bool(_SPEC_RE.match(text)) and "/" not in head and "\\" not in head


def parse_spec(text: str) -> ArchSpec:
    """Parse ``ns:name`` or ``ns:name(key=value, ...)``; values are Python literals."""
    match = _SPEC_RE.match(text.strip())
    if not match:
        raise SourceError(
            f"'{text}' is not an architecture spec: use torchvision:NAME, timm:NAME or "
            "package.module:factory, optionally with (num_classes=10)"
        )
    kwargs: dict[str, Any] = {}
    if match["args"]:
        try:
            call = ast.parse(f"f{match['args']}", mode="eval").body
            if not isinstance(call, ast.Call) or call.args:
                raise ValueError
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
        except (SyntaxError, ValueError):
            raise SourceError(
                f"'{text}': arguments must be keyword literals, e.g. torchvision:resnet18(num_classes=10)"
            ) from None
    return ArchSpec(match["ns"], match["name"], kwargs)


def resolve_factory(spec: ArchSpec) -> Callable[..., nn.Module]:
    """Return a callable that builds the architecture, or raise a SourceError naming the fix."""
    if spec.namespace == "torchvision":
        import torchvision

        names = torchvision.models.list_models()
        if spec.name not in names:
            close = _close_names(spec.name, names)
            raise SourceError(
                f"unknown torchvision model '{spec.name}'"
                + (f"; did you mean {close}?" if close else "; see torchvision.models.list_models()")
            )
        builder = torchvision.models.get_model_builder(spec.name)
        # never download: detection/segmentation builders fetch backbone weights unless told not to
        offline = {"weights": None}
        if "weights_backbone" in inspect.signature(builder).parameters:
            offline["weights_backbone"] = None
        return lambda **kw: builder(**{**offline, **kw})
    if spec.namespace == "transformers":
        from headstudio.core.opening.hf import hf_factory

        return hf_factory(spec)
    if spec.namespace == "timm":
        timm = import_timm()
        if not timm.is_model(spec.name):
            close = _close_names(spec.name, timm.list_models())
            raise SourceError(
                f"unknown timm model '{spec.name}'"
                + (f"; did you mean {close}?" if close else "; see timm.list_models()")
            )
        return lambda **kw: timm.create_model(spec.name, pretrained=False, **kw)
    try:
        module = _import_user_module(spec.namespace)
    except ImportError as err:
        close = _close_names(spec.namespace, ["torchvision", "timm"])
        if close and "." not in spec.namespace:
            raise SourceError(
                f"unknown spec namespace '{spec.namespace}'; did you mean {close}:{spec.name}?"
            ) from None
        raise SourceError(
            f"cannot import '{spec.namespace}' for spec '{spec}' ({err}); "
            "install it or run from its project directory"
        ) from None
    factory = module
    for part in spec.name.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise SourceError(f"'{spec.namespace}' has no attribute '{spec.name}'")
    if not callable(factory):
        raise SourceError(f"'{spec}' is not callable; point at a class or a function returning a model")
    return factory


def _import_user_module(name: str) -> Any:
    """Import a module a spec names, finding it in the current directory too (as ``python -m`` does)."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def spec_input_shape(spec: ArchSpec | str) -> tuple[int, ...] | None:
    """The clip a torchvision video spec expects (its weights' frames and crop); None for other specs."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.namespace != "torchvision":
        return None
    import torchvision

    if spec.name not in torchvision.models.list_models(module=torchvision.models.video):
        return None
    weights = torchvision.models.get_model_weights(spec.name).DEFAULT
    crop = weights.transforms.keywords.get("crop_size", (112, 112))
    crop = (crop, crop) if isinstance(crop, int) else tuple(crop)
    return (1, 3, max(16, int(weights.meta.get("min_temporal_size", 1))), *crop)


def import_timm() -> Any:
    """Import timm or explain how to get it."""
    try:
        import timm
    except ImportError:
        raise MissingDependencyError(
            "timm is not installed: pip install 'headstudio[timm]' (or pip install timm)"
        ) from None
    return timm


def build_model(spec: ArchSpec | str, *, meta: bool = True) -> nn.Module:
    """Build the architecture in eval mode; with ``meta`` its parameters take no memory."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    factory = resolve_factory(spec)
    model, built = None, False
    if meta:
        try:
            with _parameters_on_meta():
                model, built = _call_factory(factory, spec), True
        except SourceError:
            raise
        except Exception:
            model = None  # some __init__ reads parameter values; build it for real instead
    if not built:  # a factory that returned (rather than raised) is never called twice
        try:
            model = _call_factory(factory, spec)
        except SourceError:
            raise
        except Exception as err:
            raise SourceError(f"building '{spec}' failed: {first_line(err, with_type=True)}") from None
    if not isinstance(model, nn.Module):
        raise SourceError(f"'{spec}' returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def _call_factory(factory: Callable[..., nn.Module], spec: ArchSpec) -> nn.Module:
    try:
        with warnings.catch_warnings():
            # torchvision's notice about its future default init is not about the user's model
            warnings.filterwarnings("ignore", message=".*default weight initialization.*")
            return factory(**spec.kwargs)
    except TypeError as err:
        if spec.kwargs and "argument" in str(err):
            raise SourceError(
                f"'{spec}': {first_line(err, with_type=True)}; check the keyword names the factory takes"
            ) from None
        raise


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Move every parameter to meta as it is registered (the approach of accelerate's init_empty_weights)."""
    original = nn.Module.register_parameter

    def register_parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(self, name, param)
        if param is not None and param.device.type != "meta":
            moved = param.detach().to("meta")
            try:
                self._parameters[name] = type(param)(moved, requires_grad=param.requires_grad)
            except TypeError:
                self._parameters[name] = nn.Parameter(moved, requires_grad=param.requires_grad)

    with _BUILD_LOCK:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        try:
            yield
        finally:
            nn.Module.register_parameter = original  # type: ignore[method-assign]


def has_meta_tensors(model: nn.Module) -> bool:
    """True while any parameter or buffer has no data (built from a spec, weights not attached)."""
    return any(t.is_meta for t in _tensors(model))


def _tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    yield from model.parameters()
    yield from model.buffers()


def _close_names(name: str, names: list[str]) -> str:
    import difflib

    return ", ".join(difflib.get_close_matches(name, names, n=3, cutoff=0.6))
