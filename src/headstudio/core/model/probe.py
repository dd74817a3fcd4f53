"""Probe: one real forward (eval mode, no grad) on an image or a seeded random input.

Reports each head's output as top-k classes (with names when the checkpoint or config carries them) and,
for the modules asked for, what their outputs looked like (``activations.Activation``). Heads of a
``MultiHead`` are all shown: the ones the model does not run because another is active are run on the
same features after the forward, so the model's own output is never changed by probing.

    >>> doc = open_source("torchvision:resnet18", materialize=True)
    >>> result = probe(doc, make_input(doc, image="cat.jpg"), modules=["layer1"])
    >>> result.heads[0].top[0].name, result.activations["layer1"].describe()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils._pytree import keystr, tree_flatten_with_path

from headstudio.core.errors import EditError, InputError, Progress, UnsupportedOperationError
from headstudio.core.model.activations import Activation, summarize
from headstudio.core.model.class_names import class_names_for
from headstudio.core.model.heads import as_plain_tree
from headstudio.core.model.probe_inputs import DEFAULT_SEED, ProbeInput, image_input, random_input
from headstudio.core.modules import find_module

if TYPE_CHECKING:
    from headstudio.core.model.document import Document

Hook = Callable[[str, nn.Module, tuple, Any], None]
PROGRESS_EVERY_S = 0.05
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class TopClass:
    """One of a head's highest scores: class index, its name if known, raw score and softmax probability."""

    index: int
    name: str | None
    score: float
    probability: float

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "score": self.score, "probability": self.probability}


@dataclass
class HeadOutput:
    """A head's output for the probe input, as its top-k classes."""

    path: str
    name: str
    type: str
    size: int
    top: list[TopClass]
    classes_from: str | None = None  # where the class names came from; None: indices only
    reduced: str = ""  # how a spatial or sequence output became one score per class
    active: bool | None = None  # for a MultiHead's heads: whether the model returns it (all when none set)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "top": [t.to_json() for t in self.top],
            "classes_from": self.classes_from,
            "reduced": self.reduced,
            "active": self.active,
        }


@dataclass
class ProbeResult:
    """What one probe showed: the input, each head's top-k, asked-for activations and the forward time."""

    input: ProbeInput
    heads: list[HeadOutput] = field(default_factory=list)
    activations: dict[str, Activation] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input.to_json(),
            "heads": [h.to_json() for h in self.heads],
            "modules": {p: a.to_json() for p, a in self.activations.items()},
            "seconds": self.seconds,
        }


def make_input(doc: Document, image: str | Path | None = None, seed: int = DEFAULT_SEED) -> ProbeInput:
    """The document's input from an image file (prepared as the model expects) or seeded random values."""
    if image is not None:
        return image_input(image, doc.model, doc.input_shape, doc.origin.arch)
    return random_input(doc.model, doc.input_shape, seed)


def require_weights(model: nn.Module) -> None:
    """Raise UnsupportedOperationError when weights are on the meta device (nothing to compute with)."""
    if any(t.is_meta for t in _tensors(model)):
        raise UnsupportedOperationError(
            "the model's weights are not loaded (meta device: a spec opened without weights); "
            "open it with materialize=True or open a checkpoint file to probe it"
        )


def resolve_modules(model: nn.Module, paths: Sequence[str]) -> list[str]:
    """Check every path names a module; InputError naming close paths otherwise."""
    for path in paths:
        if path:
            try:
                find_module(model, path)
            except EditError as err:
                raise InputError(str(err)) from None
    return list(dict.fromkeys(paths))


def probe(
    doc: Document,
    probe_input: ProbeInput,
    modules: Sequence[str] = (),
    top_k: int = 5,
    all_modules: bool = False,
    progress: Progress | None = None,
) -> ProbeResult:
    """Run ``probe_input`` through ``doc.model`` once; heads' top-k and the activations of ``modules``."""
    model = doc.model
    if not doc.editable:
        raise UnsupportedOperationError("TorchScript archives run without hooks; probe the original model")
    require_weights(model)
    if top_k < 1:
        raise InputError(f"top-k {top_k} must be 1 or more")
    wanted = resolve_modules(model, modules)
    heads = doc.trace().heads_by_output
    multiheads = _multiheads(model)
    captured: dict[str, Any] = {}
    features: dict[str, torch.Tensor] = {}
    result = ProbeResult(probe_input)

    def keep(path: str, module: nn.Module, args: tuple, output: Any) -> None:
        if path in multiheads and path not in features and args:
            features[path] = args[0]
        captured.setdefault(path, output)

    def look(path: str, module: nn.Module, args: tuple, output: Any) -> None:
        if path not in result.activations:
            result.activations[path] = summarize(path, module, output)

    hooks: dict[str, list[Hook]] = {}
    for path in {p for paths in heads.values() for p in paths} | set(multiheads):
        hooks.setdefault(path, []).append(keep)
    paths = [p for p, _ in model.named_modules()] if all_modules else wanted
    for path in paths:
        hooks.setdefault(path, []).append(look)
    out, result.seconds = run_forward(model, probe_input.tensor, hooks, progress)
    with torch.no_grad():
        result.heads = _head_outputs(doc, out, heads, multiheads, captured, features, top_k)
    return result


def run_forward(
    model: nn.Module, x: torch.Tensor, hooks: dict[str, list[Hook]], progress: Progress | None = None
) -> tuple[Any, float]:
    """``model(x)`` in eval mode without grad, calling ``hooks[path]`` on each module's output; (out, s).

    ``progress`` is called between modules (at most every 50 ms), so raising ``Cancelled`` stops the forward.
    """
    handles = []
    modules = dict(model.named_modules())
    for path, calls in hooks.items():
        if path in modules:
            handles.append(modules[path].register_forward_hook(_hook(path, calls)))
    if progress is not None:
        handles += _progress_hooks(model, progress)
    try:
        with _eval(model), torch.no_grad():
            started = time.perf_counter()
            out = model(x)
            seconds = time.perf_counter() - started
    finally:
        for h in handles:
            h.remove()
    return out, seconds


def _hook(path: str, calls: list[Hook]) -> Any:
    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        for call in calls:
            call(path, module, args, output)

    return hook


def _progress_hooks(model: nn.Module, progress: Progress) -> list[Any]:
    """Pre-hooks reporting the running module now and then (a cancel raises from ``progress``)."""
    modules = list(model.named_modules())
    state = {"seen": 0, "last": 0.0}

    def reporter(path: str) -> Any:
        def report(module: nn.Module, args: tuple) -> None:
            state["seen"] += 1
            now = time.perf_counter()
            if now - state["last"] >= PROGRESS_EVERY_S:
                state["last"] = now
                progress(f"running {path or 'the model'}", min(state["seen"] / len(modules), 0.99))

        return report

    return [m.register_forward_pre_hook(reporter(p)) for p, m in modules]


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode for the forward; every module's own training flag is restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _multiheads(model: nn.Module) -> dict[str, nn.Module]:
    from headstudio.core.edits.add_head import MultiHead

    return {p: m for p, m in model.named_modules() if isinstance(m, MultiHead)}


def _head_outputs(
    doc: Document,
    out: Any,
    heads_by_output: dict[str, list[str]],
    multiheads: dict[str, nn.Module],
    captured: dict[str, Any],
    features: dict[str, torch.Tensor],
    top_k: int,
) -> list[HeadOutput]:
    """One HeadOutput per head: the model output it alone feeds, else its own output; MultiHeads expanded."""
    leaves = {keystr(k): v for k, v in tree_flatten_with_path(as_plain_tree(out))[0]}
    values: dict[str, tuple[str, Any, bool | None]] = {}
    for key, paths in heads_by_output.items():
        for path in paths:
            if path in values or any(path.startswith(f"{m}.") for m in multiheads):
                continue
            value = leaves.get(key) if len(paths) == 1 else captured.get(path)
            values[path] = (path, value, None)
    for at, multihead in multiheads.items():
        if at not in captured:
            continue  # not called for this input
        output = captured[at]
        for name, head in multihead.heads.items():
            if isinstance(output, dict):
                value = output.get(name)
            else:
                value = output if name == multihead.active else head(features[at])
            returned = multihead.active is None or multihead.active == name
            values[f"{at}.heads.{name}"] = (name, value, returned)
    container = doc.origin.checkpoint.container if doc.origin.checkpoint else None
    first_of = {at: f"{at}.heads.{next(iter(m.heads))}" for at, m in multiheads.items() if len(m.heads)}
    results = []
    for path, (name, value, active) in values.items():
        if not isinstance(value, torch.Tensor):
            continue
        module = doc.model.get_submodule(path)
        scores, reduced = _scores(value, _is_conv(module))
        added = active is not None and path not in first_of.values()  # a head added by AddHead has no names
        names = None if added else class_names_for(doc.model, scores.numel(), container, doc.origin.arch)
        top = _top(scores, top_k, names[0] if names else None)
        results.append(
            HeadOutput(
                path,
                name,
                type(module).__name__,
                scores.numel(),
                top,
                names[1] if names else None,
                reduced,
                active,
            )
        )
    return results


def _scores(value: torch.Tensor, conv: bool) -> tuple[torch.Tensor, str]:
    """One score per class from a head output: first batch item; spatial mean or last position."""
    v = value.detach().float()
    if v.ndim >= 2:
        v = v[0]
    if v.ndim == 0:
        return v.reshape(1), ""
    if v.ndim == 1:
        return v, ""
    if conv:
        positions = v[0].numel()
        return v.reshape(v.shape[0], -1).mean(dim=1), f"mean over {positions} positions"
    rows = v.reshape(-1, v.shape[-1])
    return rows[-1], f"last of {rows.shape[0]} positions"


def _top(scores: torch.Tensor, k: int, names: list[str] | None) -> list[TopClass]:
    probabilities = torch.softmax(scores.double(), dim=0)
    values, indices = torch.topk(scores, min(k, scores.numel()))
    return [
        TopClass(int(i), names[int(i)] if names else None, float(v), float(probabilities[int(i)]))
        for v, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def _is_conv(module: nn.Module) -> bool:
    if isinstance(module, _CONVS):
        return True
    last = next(
        (m for m in reversed(list(module.modules())) if next(m.parameters(False), None) is not None), None
    )
    return isinstance(last, _CONVS)


def _tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    yield from model.parameters()
    yield from model.buffers()
