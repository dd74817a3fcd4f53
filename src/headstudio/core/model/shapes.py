"""Shape tracing: one forward on fake tensors (no compute, no memory) records every module's shapes.

The same pass tracks provenance for head detection. When fake tensors cannot run the model
(data-dependent ops), a real forward on zero weights is the fallback.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch._subclasses import fake_tensor
from torch.func import functional_call

from headstudio.core.errors import first_line
from headstudio.core.model.heads import (
    ROLE_RANK,
    HeadRole,
    HeadTracker,
    head_roles,
    is_barrier,
    is_projection,
)
from headstudio.core.model.inputs import (
    NamedInput,
    config_inputs,
    eager_implementations,
    make_tensors,
    without_cache,
)

Shape = Any  # list[int] for a tensor; nested lists / dicts for containers; None for no tensor

_FAKE_LIMITS: tuple[type[BaseException], ...] = (
    fake_tensor.DataDependentOutputException,
    fake_tensor.DynamicOutputShapeException,
    fake_tensor.UnsupportedOperatorException,
    fake_tensor.UnsupportedFakeTensorException,
    NotImplementedError,
)


class _FakeUnsupported(Exception):
    """Fake tensors cannot run this model; trace it for real instead."""


@dataclass
class Trace:
    """What one forward showed: per-module input/output shapes, call counts, heads, or where it failed."""

    input_shape: tuple[int, ...]
    outputs: dict[str, Shape] = field(default_factory=dict)
    inputs: dict[str, Shape] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    output: Shape = None
    heads_by_output: dict[str, list[str]] = field(default_factory=dict)
    roles: dict[str, HeadRole] = field(default_factory=dict)
    error: str | None = None
    failed_at: str | None = None
    mode: str = "fake"
    fallback: str | None = None  # why the shape-only trace gave way to a real forward

    @property
    def heads(self) -> list[str]:
        """All head paths, primary first: by role (class logits first), then as they reach the output.

        Heads a role rule knows but the output does not show (a keypoint head whose result leaves
        through non-torch code) come after those the trace saw, in their role's place.
        """
        seen: dict[str, None] = {}
        for paths in self.heads_by_output.values():
            seen.update(dict.fromkeys(paths))
        seen.update(dict.fromkeys(self.roles))
        rank = {p: ROLE_RANK.get(self.roles[p].role, 0) if p in self.roles else 0 for p in seen}
        return sorted(seen, key=rank.__getitem__)


def shape_of(value: Any) -> Shape:
    """JSON-ready shape of a module output: lists for tensors, nested lists/dicts, None otherwise."""
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, dict):  # before dataclasses: a ModelOutput holds only the fields it returned
        return {str(k): shape_of(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: shape_of(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [shape_of(v) for v in value]
    if isinstance(getattr(value, "tensors", None), torch.Tensor):
        return list(value.tensors.shape)  # torchvision's ImageList: the padded image batch
    return None


def trace_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    dtype: torch.dtype | None = None,
    inputs: tuple[NamedInput, ...] | None = None,
) -> Trace:
    """One forward for ``input_shape`` (or named ``inputs``) recording shapes; never raises when it fails.

    Shapes come from fake tensors; when they cannot run the model (or, for a model with named inputs,
    fail for any reason, e.g. mixture-of-experts kernels), a real forward runs instead and says why.
    """
    dtype = dtype or input_dtype(model)
    result = _fake_run(model, input_shape, dtype, inputs)
    if isinstance(result, Trace) and (result.error is None or not inputs):
        return result  # plain models: an error on fake tensors is the model's own
    reason = _fake_failure(result)
    with eager_implementations(model) as switched:
        eager = _fake_run(model, input_shape, dtype, inputs) if switched and inputs else None
    if isinstance(eager, Trace) and eager.error is None:
        eager.fallback = (
            f"the shape-only trace failed ({reason}); traced with transformers' eager implementations"
        )
        return eager
    trace = _run(model, input_shape, dtype, fake=False, inputs=inputs)
    trace.fallback = f"the shape-only trace failed ({reason}); shapes come from a real forward"
    return trace


def _fake_run(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype, inputs: Any) -> Trace | str:
    """The fake-tensor trace, or why fake tensors cannot run this model."""
    try:
        return _run(model, input_shape, dtype, fake=True, inputs=inputs)
    except _FakeUnsupported as err:
        return first_line(err.__cause__ or err, with_type=True, limit=160)


def _fake_failure(result: Trace | str) -> str | None:
    if isinstance(result, str):
        return result
    return result.error


def input_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype the model's weights use (inputs must match it)."""
    for p in itertools.chain(model.parameters(), model.buffers()):
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _run(
    model: nn.Module,
    input_shape: tuple[int, ...],
    dtype: torch.dtype,
    fake: bool,
    inputs: tuple[NamedInput, ...] | None = None,
) -> Trace:
    trace = Trace(tuple(input_shape), mode="fake" if fake else "real")
    stack: list[str] = []
    tracker = HeadTracker(stack)
    handles = []
    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(_pre_hook(path, trace, stack)))
        handles.append(
            module.register_forward_hook(
                _post_hook(
                    path,
                    trace,
                    stack,
                    tracker if path and is_barrier(module) else None,
                    is_projection(module),
                )
            )
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), without_cache(model):
            if fake:
                with _quiet_fake_log(), fake_tensor.FakeTensorMode(allow_non_fake_inputs=True):
                    state = {name: _fake_like(t) for name, t in _named_tensors(model)}
                    args, kwargs = _arguments(input_shape, dtype, model, inputs)
                    tracker.mark_weights(model, state)
                    with tracker:
                        out = functional_call(model, state, args, kwargs, strict=False)
            else:
                state = {
                    name: torch.zeros(t.shape, dtype=t.dtype)
                    for name, t in _named_tensors(model)
                    if t.is_meta
                }
                args, kwargs = _arguments(input_shape, dtype, model, inputs)
                tracker.mark_weights(model, state)
                with tracker:
                    out = functional_call(model, state, args, kwargs, strict=False)
        trace.output = shape_of(out)
        trace.heads_by_output = tracker.heads_of(out, model)
        trace.roles = head_roles(model, trace)
    except Exception as err:
        if fake and _is_fake_limit(err):
            raise _FakeUnsupported from err
        else:
            trace.error = first_line(err, with_type=True, limit=300)
            trace.failed_at = stack[-1] if stack else None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return trace


@contextmanager
def _quiet_fake_log() -> Iterator[None]:
    """FakeTensor logs a full traceback when an op rejects a shape; the Trace reports it in one line."""
    logger = logging.getLogger(fake_tensor.__name__)
    was_disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = was_disabled


def _arguments(
    shape: tuple[int, ...], dtype: torch.dtype, model: nn.Module, inputs: tuple[NamedInput, ...] | None
) -> tuple[tuple, dict]:
    if inputs:
        return (), make_tensors(inputs, model, dtype)
    return (_input(shape, dtype, model),), {}


def _input(shape: tuple[int, ...], dtype: torch.dtype, model: nn.Module) -> torch.Tensor:
    if takes_tokens(model):
        return torch.zeros(shape, dtype=torch.long)
    return torch.zeros(shape, dtype=dtype)


def takes_tokens(model: nn.Module) -> bool:
    """The model starts with an Embedding: its input is token ids (long), not values."""
    first = next((m for m in model.modules() if next(m.parameters(recurse=False), None) is not None), None)
    return isinstance(first, nn.Embedding)


def _named_tensors(model: nn.Module):
    return itertools.chain(model.named_parameters(), model.named_buffers())


def _fake_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")


def _pre_hook(path: str, trace: Trace, stack: list[str]):
    def hook(module: nn.Module, args: tuple) -> None:
        stack.append(path)
        if path not in trace.inputs:
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            trace.inputs[path] = shape_of(first)

    return hook


def _post_hook(path: str, trace: Trace, stack: list[str], tracker: HeadTracker | None, projection: bool):
    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        if stack and stack[-1] == path:
            stack.pop()
        trace.calls[path] = trace.calls.get(path, 0) + 1
        trace.outputs.setdefault(path, shape_of(output))
        if tracker is not None:
            tracker.mark(path, output, projection)

    return hook


def _is_fake_limit(err: BaseException) -> bool:
    if isinstance(err, _FAKE_LIMITS):
        return True
    text = str(err).lower()
    return any(s in text for s in ("fake", "meta tensor", "data-dependent", "data pointer", "symbolic"))


def default_input_shape(model: nn.Module) -> tuple[int, ...]:
    """What the model expects: timm's pretrained_cfg, torchvision's image_size, else from its first layer."""
    named = config_inputs(model)
    if named:
        return named[0].shape
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("input_size"), (tuple, list)):
        return (1, *(int(d) for d in cfg["input_size"]))
    if type(model).__name__ == "Inception3":
        return (1, 3, 299, 299)
    size = getattr(model, "image_size", None)
    if isinstance(size, int):
        return (1, 3, size, size)
    first = next((m for m in model.modules() if next(m.parameters(recurse=False), None) is not None), None)
    if isinstance(first, nn.Conv1d):
        return (1, first.in_channels, 1024)
    if isinstance(first, nn.Conv3d):
        return (1, first.in_channels, 16, 112, 112)
    if isinstance(first, nn.Conv2d):
        return (1, first.in_channels, 224, 224)
    if isinstance(first, nn.Linear):
        return (1, first.in_features)
    if isinstance(first, nn.Embedding):
        return (1, 128)
    return (1, 3, 224, 224)
