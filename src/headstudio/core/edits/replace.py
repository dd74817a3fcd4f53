"""ReplaceHead and RemoveHead: a new classifier sized from the live trace, or none (a feature extractor)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from headstudio.core.edits.base import Edit, state, traced_input
from headstudio.core.edits.head_builder import ACTIVATIONS, CONVS, HeadSpec
from headstudio.core.edits.hf_config import (
    is_hf_model,
    label_problems,
    restore_config,
    sync_removed,
    sync_replaced,
)
from headstudio.core.edits.paired import (
    PairedTarget,
    build_swaps,
    kept_labels,
    layer_code,
    not_a_class_head,
    paired_problems,
    paired_target,
    plan_swaps,
)
from headstudio.core.errors import EditError
from headstudio.core.model.heads import is_projection
from headstudio.core.modules import (
    feature_size,
    find_module,
    float_dtype,
    module_expr,
    real_device,
    swap_module,
)

if TYPE_CHECKING:
    from headstudio.core.model.document import Document


@dataclass
class ReplaceHead(Edit):
    """Replace the head at ``path`` with a new Linear (or conv of the same kind, or an MLP with ``hidden``).

    Args:
        path: the classifier, e.g. ``fc`` or ``head.fc`` (a head *block* is refused, naming its classifier).
        num_classes: the new class count; ``in_features`` comes from the traced input of ``path``.
        hidden: hidden sizes for an MLP head, e.g. ``(512, 256)``; ``activation`` and ``dropout`` shape it.
        keep_classes: copy trained rows into the new head: N (the first N), a list, or "0-9,15".
        seed: makes the new weights reproducible (the global RNG is left as it was).
        labels: class names of a transformers model (its config's id2label/label2id), one per class.

    Examples::

        >>> doc.apply(ReplaceHead("fc", 7, seed=0))
        >>> doc.apply(ReplaceHead("head.fc", 10, hidden=(512,), dropout=0.2, keep_classes="0-9"))
    """

    kind = "replace_head"
    path: str
    num_classes: int
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    dropout: float = 0.0
    keep_classes: Any = None
    seed: int | None = None
    labels: tuple[str, ...] | None = None
    _old_classes: int | None = state()  # the head's class count before the edit (for describe)
    _code: tuple | None = state()  # (expression, HeadSpec, changed attributes, config lines) for code()
    _paired: tuple | None = state()  # (background added, paired layer count, unit) of a paired edit

    def __post_init__(self) -> None:
        self.hidden = tuple(self.hidden or ())
        self.labels = tuple(self.labels) if isinstance(self.labels, list) else self.labels

    def created_head(self) -> str | None:
        """The new head lives where the old one was."""
        return self.path

    def describe(self) -> str:
        """E.g. 'Replace head fc: 1000 → 10 classes'; paired heads and a background are named."""
        old = self._old_classes
        mlp = f" (MLP {'-'.join(map(str, self.hidden))})" if self.hidden else ""
        paired = self._paired
        unit = "classes"
        if paired is not None:
            background, partners, unit = paired
            mlp += " + background" if background else ""
            mlp += f", {partners} paired layer{'s' if partners != 1 else ''} in step" if partners else ""
        if old:
            return f"Replace head {self.path}: {old} → {self.num_classes} {unit}{mlp}"
        return f"Replace head {self.path} with {self.num_classes} classes{mlp}"

    def class_counts(self) -> tuple[int, int] | None:
        """(before, after) as the model's own class-count fields hold them (a detector's background
        counted, a dense head's classes per anchor); None until applied."""
        if self._undo is None or self._old_classes is None:
            return None
        background = int(self._paired[0]) if self._paired is not None else 0
        return self._old_classes + background, self.num_classes + background

    def changed_paths(self) -> list[str]:
        """The layers this edit swapped (after apply): the head, or every paired layer."""
        if self._undo is None:
            return []
        return [s.path for s in self._undo[0]] if isinstance(self._undo[0], list) else [self.path]

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """Class count, path, sizes, activation, kept classes; a head block points to its classifier."""
        problems = _count_problems(self.num_classes, self.hidden, self.dropout)
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation '{self.activation}' is unknown; use one of {', '.join(ACTIVATIONS)}")
        if self.path:
            wrong = not_a_class_head(doc, self.path)
            if wrong:
                return [*problems, wrong], []
            target = paired_target(doc, self.path)
            if target is not None:
                shaped = bool(self.hidden or self.dropout)
                problems += self._label_problems(doc)
                return paired_problems(doc, target, problems, shaped, self.keep_classes)
        try:
            module, shape = _head_and_input(doc, self.path)
        except EditError as err:
            return [*problems, str(err)], []
        problems += _block_problems(doc, self.path, module, shape)
        problems += self._label_problems(doc)
        if self.keep_classes is not None and not problems:
            problems += self._keep_problems(module, shape)
        warnings = _block_warnings(self.path, module)
        if (
            self.keep_classes is not None
            and getattr(module, "weight", None) is not None
            and module.weight.is_meta
        ):
            warnings.append("the old head has no real weights (meta), so no trained rows can be kept")
        return problems, warnings

    def _keep_problems(self, module: nn.Module, shape: Any) -> list[str]:
        try:
            keep = class_indices(self.keep_classes)
        except EditError as err:
            return [str(err)]
        old = _out_features(module)
        if self.hidden or not isinstance(module, (nn.Linear, *CONVS)):
            return ["keep_classes needs a Linear or conv head replaced by the same kind (no hidden layers)"]
        if len(keep) > self.num_classes:
            return [f"keep_classes keeps {len(keep)} classes but the new head has {self.num_classes}"]
        if old is not None and keep and max(keep) >= old:
            return [f"keep_classes names class {max(keep)} but '{self.path}' has only {old} classes"]
        return []

    def _apply(self, doc: Document) -> None:
        self.notes.clear()
        target = paired_target(doc, self.path)
        if target is not None:
            self._apply_paired(doc, target)
            return
        old, shape = _head_and_input(doc, self.path)
        conv = isinstance(old, CONVS)
        layer_in = feature_size(shape, channels=conv)
        if layer_in is None:
            raise EditError(f"the input of '{self.path}' is {shape}, not a tensor; pick the classifier layer")
        spec = HeadSpec.like(
            old,
            layer_in,
            self.num_classes,
            hidden=self.hidden,
            activation=self.activation,
            dropout=self.dropout,
        )
        new = spec.build(self.seed)
        new.to(dtype=float_dtype(old), device=real_device(old))
        if self.keep_classes is not None and not doc.shadow:
            self._copy_rows(old, new)
        self._old_classes = _out_features(old) or feature_size(doc.trace().outputs.get(self.path), conv)
        expr = module_expr(doc.model, self.path)
        swap_module(doc.model, self.path, new)
        changed = sync_class_attrs(doc.model, self.path, self._old_classes, self.num_classes)
        keep = class_indices(self.keep_classes) if self.keep_classes is not None else None
        config_undo, notes = sync_replaced(
            doc.model, self.path, self._old_classes, self.num_classes, self.labels, keep
        )
        self.notes.extend(notes)
        self._undo = (old, changed, config_undo)
        self._code = (expr, spec, changed, _config_code(doc.model) if config_undo else [])

    def _apply_paired(self, doc: Document, target: PairedTarget) -> None:
        """Resize the class head and every layer carrying its class count, counts kept in step."""
        keep = kept_labels(self.keep_classes, target.background) if self.keep_classes is not None else None
        swaps = plan_swaps(doc, target, self.num_classes, keep)
        real = not doc.shadow
        build_swaps(swaps, self.seed, copy_rows=real)
        if keep and real and swaps[0].old.weight.is_meta:
            self.notes.append("the old head has no real weights (meta), so no trained rows were kept")
        exprs = [module_expr(doc.model, s.path) for s in swaps]
        for swap in swaps:
            swap_module(doc.model, swap.path, swap.new)
        changed: list[tuple] = []
        new_count = self.num_classes + int(target.background)
        for swap in swaps:
            found = sync_class_attrs(doc.model, swap.path, target.role.classes, new_count, target.count_attrs)
            changed += [c for c in found if all(c[0] is not d[0] or c[1] != d[1] for d in changed)]
        self._old_classes = target.user_classes
        unit = "keypoints" if target.role.role == "keypoint logits" else "classes"
        self._paired = (target.background, len(swaps) - 1, unit)
        config_undo, notes = sync_replaced(
            doc.model, target.path, target.user_classes, self.num_classes, self.labels, keep
        )
        self.notes.extend(notes)
        self._undo = (swaps, changed, config_undo)
        self._code = (exprs, changed)

    def _label_problems(self, doc: Document) -> list[str]:
        problems = label_problems(self.labels, self.num_classes)
        if self.labels is not None and not is_hf_model(doc.model):
            problems.append("labels name the classes in a transformers model's config; this model has none")
        return problems

    def _copy_rows(self, old: nn.Module, new: nn.Module) -> None:
        keep = class_indices(self.keep_classes)
        if old.weight.is_meta:
            self.notes.append("the old head has no real weights (meta), so no trained rows were kept")
            return
        with torch.no_grad():
            new.weight[: len(keep)] = old.weight[keep].to(new.weight.dtype)
            if new.bias is not None and old.bias is not None:
                new.bias[: len(keep)] = old.bias[keep].to(new.bias.dtype)

    def _revert(self, doc: Document) -> None:
        old, changed, config_undo = self._undo
        if isinstance(old, list):  # paired layers
            for swap in reversed(old):
                swap_module(doc.model, swap.path, swap.old)
        else:
            swap_module(doc.model, self.path, old)
        restore_attrs(changed)
        restore_config(doc.model, config_undo)

    def code(self) -> list[str]:
        """``model.fc = nn.Linear(512, 10)`` and friends (sizes as the trace saw them)."""
        if isinstance(self._undo[0], list):
            exprs, changed = self._code
            lines = [f"torch.manual_seed({self.seed})"] if self.seed is not None else []
            for swap, expr in zip(self._undo[0], exprs, strict=True):
                lines += layer_code(swap, expr)
            return lines + attr_code(changed)
        expr, spec, changed, config_lines = self._code
        lines = [f"torch.manual_seed({self.seed})"] if self.seed is not None else []
        built = spec.code()
        if self.keep_classes is not None:
            keep = class_indices(self.keep_classes)
            lines += [f"old_head = {expr}", f"{expr} = {built}", "with torch.no_grad():"]
            lines += [f"    {expr}.weight[:{len(keep)}] = old_head.weight[{_index_code(keep)}]"]
            if spec.bias:
                lines += [f"    {expr}.bias[:{len(keep)}] = old_head.bias[{_index_code(keep)}]"]
        else:
            lines.append(f"{expr} = {built}")
        return lines + attr_code(changed) + config_lines


@dataclass
class RemoveHead(Edit):
    """Replace the head at ``path`` with ``nn.Identity``: the model then returns its features.

    Args:
        path: the head module, e.g. ``fc``.

    Examples::

        >>> doc.apply(RemoveHead("fc"))  # resnet18 now outputs [1, 512]
    """

    kind = "remove_head"
    path: str
    _code: tuple | None = state()  # (expression, changed attributes) for code()

    def describe(self) -> str:
        """E.g. 'Remove head fc (output: features)'."""
        return f"Remove head {self.path} (output: features)"

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """The path must name a module the forward calls."""
        try:
            _head_and_input(doc, self.path)
        except EditError as err:
            return [str(err)], []
        return [], []

    def _apply(self, doc: Document) -> None:
        old = find_module(doc.model, self.path, "head")
        expr = module_expr(doc.model, self.path)
        classes = _out_features(old) or feature_size(doc.trace().outputs.get(self.path), False)
        swap_module(doc.model, self.path, nn.Identity())
        changed = sync_class_attrs(doc.model, self.path, classes, 0)
        config_undo, notes = sync_removed(doc.model, self.path)
        self.notes.extend(notes)
        self._undo = (old, changed, config_undo)
        self._code = (expr, changed)

    def _revert(self, doc: Document) -> None:
        old, changed, config_undo = self._undo
        swap_module(doc.model, self.path, old)
        restore_attrs(changed)
        restore_config(doc.model, config_undo)

    def code(self) -> list[str]:
        """``model.fc = nn.Identity()``."""
        expr, changed = self._code
        return [f"{expr} = nn.Identity()", *attr_code(changed)]


def class_indices(spec: Any) -> list[int]:
    """Kept classes from an int N (first N), a list of ints, or a spec string like "0-9,15"."""
    try:
        if isinstance(spec, bool):
            raise ValueError
        if isinstance(spec, int):
            indices = list(range(spec))
        elif isinstance(spec, str):
            indices = []
            for part in (p.strip() for p in spec.split(",") if p.strip()):
                lo, sep, hi = part.partition("-")
                indices += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        else:
            indices = [int(i) for i in spec]
    except (TypeError, ValueError):
        raise EditError(
            f"keep_classes {spec!r} is not understood; give N, a list, or a spec like 0-9"
        ) from None
    if not indices or min(indices) < 0 or len(set(indices)) != len(indices):
        raise EditError(f"keep_classes {spec!r} must name distinct class indices >= 0, e.g. 0-9")
    return indices


def _index_code(keep: list[int]) -> str:
    if keep == list(range(len(keep))):
        return f":{len(keep)}"
    return repr(keep)


def sync_class_attrs(
    model: nn.Module,
    path: str,
    old: int | None,
    new: int,
    attrs: tuple[str, ...] = ("num_classes", "out_features"),
) -> list[tuple]:
    """Keep ``num_classes`` / wrapper ``out_features`` (or ``attrs``) on the head's ancestors in step."""
    changed: list[tuple] = []  # (owner module, attribute, old value, owner path)
    if old is None:
        return changed
    parts = path.split(".")
    for depth in range(len(parts)):
        owner_path = ".".join(parts[:depth])
        owner = model.get_submodule(owner_path)
        for attr in attrs:
            if isinstance(owner, (nn.Linear, *CONVS)) or getattr(owner, attr, None) != old:
                continue
            changed.append((owner, attr, old, owner_path))
            setattr(owner, attr, new)
    return changed


def restore_attrs(changed: list[tuple]) -> None:
    """Undo ``sync_class_attrs``."""
    for owner, attr, old, _ in changed:
        setattr(owner, attr, old)


def attr_code(changed: list[tuple]) -> list[str]:
    """Lines keeping describing attributes consistent, e.g. ``model.num_classes = 10``."""
    lines = []
    for owner, attr, _, owner_path in changed:
        value = getattr(owner, attr)
        lines.append(f"model{'.' + owner_path if owner_path else ''}.{attr} = {value!r}")
    return lines


def _config_code(model: nn.Module) -> list[str]:
    """Lines keeping a transformers config's labels in step with the new head."""
    config = model.config
    lines = [
        f"model.config.id2label = {dict(config.id2label)!r}",
        f"model.config.label2id = {dict(config.label2id)!r}",
    ]
    if hasattr(model, "num_labels"):
        lines.append(f"model.num_labels = {config.num_labels}")
    if getattr(config, "tie_word_embeddings", None) is False:
        lines.append("model.config.tie_word_embeddings = False")
    return lines


def _count_problems(num_classes: Any, hidden: tuple, dropout: Any) -> list[str]:
    problems = []
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
        problems.append(f"num_classes {num_classes!r} must be a whole number of 1 or more")
    if any(not isinstance(h, int) or h <= 0 for h in hidden):
        problems.append(f"hidden sizes {list(hidden)} must be positive whole numbers, e.g. 512,256")
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        problems.append(f"dropout {dropout!r} must be at least 0 and below 1")
    return problems


def _head_and_input(doc: Document, path: str) -> tuple[nn.Module, Any]:
    if not path:
        raise EditError("the head path is empty; name the head module, e.g. fc")
    module = find_module(doc.model, path, "head")
    return module, traced_input(doc, path)


def _block_problems(doc: Document, path: str, module: nn.Module, shape: Any) -> list[str]:
    """A head *block* (pool + norm + fc) is not silently replaced: point to the classifier inside."""
    inner = [(p, m) for p, m in module.named_modules() if p and next(m.parameters(False), None) is not None]
    if not inner:
        return []
    flat = isinstance(shape, list) and len(shape) == 2
    if flat and all(isinstance(m, nn.Linear) for _, m in inner):
        return []  # an MLP on flat features: replacing it whole is what the user means
    heads = [p for p in doc.trace().heads if p.startswith(path + ".")]
    projections = [f"{path}.{p}" for p, m in inner if is_projection(m)]
    target = (heads or projections or [None])[-1 if not heads else 0]
    types = ", ".join(dict.fromkeys(type(m).__name__ for m in module.children()))
    hint = f"replace its classifier '{target}' instead" if target else "pick the classifier layer inside it"
    return [f"'{path}' is a head block ({types}), not a classifier; {hint}"]


def _block_warnings(path: str, module: nn.Module) -> list[str]:
    """Replacing a whole MLP head drops its hidden layers: say so."""
    layers = list(module.children())
    if not any(next(m.parameters(), None) is not None for m in layers):
        return []
    types = ", ".join(type(m).__name__ for m in layers)
    return [f"this replaces the whole block '{path}' ({types}); replace its last layer to keep the others"]


def _out_features(module: nn.Module) -> int | None:
    value = getattr(module, "out_features", None) or getattr(module, "out_channels", None)
    return int(value) if isinstance(value, int) else None
