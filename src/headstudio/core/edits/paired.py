"""Paired head edits for dense prediction: the class count changes in every head that carries it.

A detector's classes live in several layers at once: Faster R-CNN's ``cls_score`` (N + background) and
its per-class ``bbox_pred`` (4 x (N + 1)), Mask R-CNN's ``mask_fcn_logits``, RetinaNet/FCOS/SSD
classification convs sized ``num_anchors x N`` on every level, a segmenter's main and auxiliary
classifiers. ``plan_paired`` finds them from the trace's head roles (see core/model/dense_heads.py) and
sizes each new layer like the old one (same type and hyper-parameters, so the state_dict keys stay
those of the library's own builder), with the family's own initialisation, kept rows mapped per anchor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from headstudio.core.edits.head_builder import conv_geometry
from headstudio.core.errors import EditError
from headstudio.core.model.dense_heads import DENSE_RULES
from headstudio.core.model.heads import ROLE_RANK, HeadRole
from headstudio.core.modules import float_dtype, real_device

if TYPE_CHECKING:
    from headstudio.core.model.document import Document

CLASS_ROLES = ("class logits", "mask logits", "auxiliary")
# torchvision families whose class 0 is the background (softmax over N + 1): R-CNN ROI heads, SSD
BACKGROUND_OWNERS = frozenset({"RoIHeads", "SSDHead", "SSDLiteHead"})
# how torchvision initialises each family's class layers (fine-tuning starts where training would)
INITS = {
    "RetinaNetClassificationHead": "prior",
    "FCOSClassificationHead": "prior",
    "SSDClassificationHead": "xavier",
    "SSDLiteClassificationHead": "normal_0.03",
    "MaskRCNNPredictor": "kaiming",
    "KeypointRCNNPredictor": "kaiming",
}
COUNT_ATTRS = ("num_classes", "num_columns")
KEYPOINT_ATTRS = ("out_channels", "num_keypoints")
_PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)  # torchvision's prior probability 0.01 for focal-loss heads
_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


@dataclass
class Swap:
    """One layer resized: where, the old and new modules, kept (new, old) rows, how it was initialised."""

    path: str
    old: nn.Module
    new: nn.Module
    init: str | None
    rows: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class PairedTarget:
    """The head an edit aims at (a predictor or block resolves to its class head) and its partners."""

    path: str
    role: HeadRole
    partners: dict[str, HeadRole]
    background: bool

    @property
    def count_attrs(self) -> tuple[str, ...]:
        """The attributes on the heads' owners that hold this count (kept in step by the edit)."""
        return KEYPOINT_ATTRS if self.role.role == "keypoint logits" else COUNT_ATTRS

    @property
    def user_classes(self) -> int | None:
        """The class count as the user counts it (without the background)."""
        classes = self.role.classes
        return None if classes is None else classes - int(self.background)


def paired_target(doc: Document, path: str) -> PairedTarget | None:
    """The dense head at (or inside) ``path`` and the heads that carry its class count; None otherwise."""
    roles = doc.trace().roles
    target = path if path in roles else _class_head_inside(roles, path)
    if target is None:
        return None
    role = roles[target]
    if role.role not in (*CLASS_ROLES, "keypoint logits") or not role.classes:
        return None
    partners: dict[str, HeadRole] = {}
    if role.role != "keypoint logits":
        for other, r in roles.items():
            per_class_box = r.role == "box regression" and r.anchors == 1
            if other != target and r.classes == role.classes and (r.role in CLASS_ROLES or per_class_box):
                partners[other] = r
    # dense heads, and a segmenter's classifiers that share its class map, change in step; so do twin
    # classifiers averaged into one output (a distilled ViT's head and head_dist); a classifier of its
    # own output is ReplaceHead's plain case
    if not role.rule.startswith(DENSE_RULES) and not (partners and _spatial_output(doc)):
        partners = {p: r for p, r in partners.items() if _share_an_output(doc, target, p)}
        if not partners:
            return None
    return PairedTarget(target, role, partners, _has_background(doc.model, target, role))


def class_count(doc: Document, path: str) -> int | None:
    """The class count a user would type for the dense head at ``path`` (background not counted)."""
    target = paired_target(doc, path)
    return None if target is None else target.user_classes


def not_a_class_head(doc: Document, path: str) -> str | None:
    """A one-line problem when ``path`` is a box regression / objectness head, naming the class head."""
    role = doc.trace().roles.get(path)
    if role is None or role.role not in ("box regression", "objectness"):
        return None
    best = next((p for p in doc.trace().heads if doc.trace().roles.get(p, role).role in CLASS_ROLES), None)
    hint = f"replace the class head '{best}' instead" if best else "pick the class head"
    return f"'{path}' is the {role.role} head ({role.rule}), not a class head; {hint}"


def plan_swaps(doc: Document, target: PairedTarget, num_classes: int, keep: list[int] | None) -> list[Swap]:
    """New layers for the target and its partners, sized for ``num_classes`` (+ background)."""
    new_classes = num_classes + int(target.background)
    swaps = []
    for path, role in {target.path: target.role, **target.partners}.items():
        old = doc.model.get_submodule(path)
        per_class_box = role.role == "box regression"
        width, per = (4, 4) if per_class_box else (role.anchors or 1, 0)
        out = width * new_classes
        new = _resized(old, out)
        rows = _kept_rows(keep, role, target.background, new_classes, per) if keep else []
        swaps.append(Swap(path, old, new, _init_of(doc.model, path), rows))
    return swaps


def build_swaps(swaps: list[Swap], seed: int | None, copy_rows: bool) -> None:
    """Initialise the new layers (seeded, as their family does) and copy kept rows from the old ones."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        for swap in swaps:
            swap.new.reset_parameters()
            _initialise(swap.new, swap.init)
    for swap in swaps:
        swap.new.to(dtype=float_dtype(swap.old), device=real_device(swap.old))
        if copy_rows and swap.rows:
            _copy_rows(swap)


def paired_problems(
    doc: Document, target: PairedTarget, problems: list[str], shaped: bool, keep_classes: Any
) -> tuple[list[str], list[str]]:
    """(problems, warnings) of replacing ``target``: one layer per head (no MLP), kept classes that exist."""
    if shaped:
        problems.append(
            f"'{target.path}' changes in step with {', '.join(target.partners) or 'its class count'} "
            "(sized per class); replace it with a single layer (no hidden sizes or dropout)"
        )
    warnings = []
    if keep_classes is not None and not problems:
        try:
            problems += keep_problems(target, kept_labels(keep_classes, target.background))
        except EditError as err:
            problems.append(str(err))
        if doc.model.get_submodule(target.path).weight.is_meta:
            warnings.append("the old head has no real weights (meta), so no trained rows can be kept")
    return problems, warnings


def keep_problems(target: PairedTarget, keep: list[int]) -> list[str]:
    """Kept classes must exist in the old head; a detector's background (class 0) is always kept."""
    old = target.role.classes or 0
    if target.background and 0 in keep:
        return ["class 0 is this detector's background and is always kept; name object classes from 1"]
    if keep and max(keep) >= old:
        have = f"classes 1-{old - 1} (0 is the background)" if target.background else f"only {old} classes"
        return [f"keep_classes names class {max(keep)} but '{target.path}' has {have}"]
    return []


def kept_labels(spec: Any, background: bool) -> list[int]:
    """Kept class indices; for a detector with background an int N means its first N object classes."""
    from headstudio.core.edits.replace import class_indices

    if background and isinstance(spec, int) and not isinstance(spec, bool) and spec > 0:
        return list(range(1, spec + 1))
    return class_indices(spec)


def layer_code(swap: Swap, expr: str) -> list[str]:
    """``model.x = nn.Conv2d(...)`` plus the family's init and the kept rows, as plain PyTorch."""
    lines = [f"old_layer = {expr}"] if swap.rows else []
    lines.append(f"{expr} = {_layer_expr(swap.new)}")
    if swap.init == "prior":
        lines += [f"nn.init.normal_({expr}.weight, std=0.01)"]
        lines += [f"nn.init.constant_({expr}.bias, {_PRIOR_BIAS!r})  # prior probability 0.01"]
    elif swap.init == "xavier":
        lines += [f"nn.init.xavier_uniform_({expr}.weight)", f"nn.init.zeros_({expr}.bias)"]
    elif swap.init == "normal_0.03":
        lines += [f"nn.init.normal_({expr}.weight, std=0.03)", f"nn.init.zeros_({expr}.bias)"]
    elif swap.init == "kaiming":
        lines += [f'nn.init.kaiming_normal_({expr}.weight, mode="fan_out", nonlinearity="relu")']
        lines += [f"nn.init.zeros_({expr}.bias)"]
    if swap.rows:
        new_rows, old_rows = [n for n, _ in swap.rows], [o for _, o in swap.rows]
        dim = ":, " if _transposed(swap.new) else ""
        lines += ["with torch.no_grad():"]
        lines += [f"    {expr}.weight[{dim}{new_rows}] = old_layer.weight[{dim}{old_rows}]"]
        if swap.new.bias is not None:
            lines += [f"    {expr}.bias[{new_rows}] = old_layer.bias[{old_rows}]"]
    return lines


def _share_an_output(doc: Document, path: str, other: str) -> bool:
    """Both heads feed one returned tensor (averaged or summed), so their class counts must agree."""
    return any(path in paths and other in paths for paths in doc.trace().heads_by_output.values())


def _spatial_output(doc: Document) -> bool:
    """The main output is a map (a segmenter's [N, classes, H, W]), not one score per class."""
    trace = doc.trace()
    out = trace.output.get("out") if isinstance(trace.output, dict) else trace.output
    return isinstance(out, list) and len(out) >= 3 and all(isinstance(d, int) for d in out)


def _class_head_inside(roles: dict[str, HeadRole], path: str) -> str | None:
    inside = [p for p in roles if path and p.startswith(path + ".")]
    inside.sort(key=lambda p: ROLE_RANK.get(roles[p].role, 0))
    return inside[0] if inside else None


def _has_background(model: nn.Module, path: str, role: HeadRole) -> bool:
    if role.role == "keypoint logits":
        return False
    parts = path.split(".")
    owners = (model.get_submodule(".".join(parts[:i])) for i in range(len(parts)))
    return any(type(m).__name__ in BACKGROUND_OWNERS for m in owners)


def _init_of(model: nn.Module, path: str) -> str | None:
    parts = path.split(".")
    for i in range(len(parts) - 1, -1, -1):
        init = INITS.get(type(model.get_submodule(".".join(parts[:i]))).__name__)
        if init:
            return init
    return None


def _resized(old: nn.Module, out: int) -> nn.Module:
    """A new CPU layer like ``old`` (type and hyper-parameters) with ``out`` outputs, on meta until built."""
    if not isinstance(old, _LAYERS):
        raise EditError(f"cannot resize a {type(old).__name__}; paired edits resize Linear and conv layers")
    with torch.device("meta"):
        if isinstance(old, nn.Linear):
            new = nn.Linear(old.in_features, out, bias=old.bias is not None)
        else:
            if old.groups != 1:
                raise EditError(f"cannot resize a grouped {type(old).__name__} (groups={old.groups})")
            new = type(old)(old.in_channels, out, **conv_geometry(old))
    return new.to_empty(device="cpu")


def _layer_expr(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        bias = "" if layer.bias is not None else ", bias=False"
        return f"nn.Linear({layer.in_features}, {layer.out_features}{bias})"
    defaults = {
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "bias": True,
        "padding_mode": "zeros",
        "output_padding": 0,
    }
    args = [f"kernel_size={_short(layer.kernel_size)!r}"]
    for key, value in conv_geometry(layer).items():
        if key != "kernel_size" and _short(value) != defaults[key]:
            args.append(f"{key}={_short(value)!r}")
    return f"nn.{type(layer).__name__}({layer.in_channels}, {layer.out_channels}, {', '.join(args)})"


def _short(value: Any) -> Any:
    """(3, 3) -> 3, as a constructor argument would be written."""
    if isinstance(value, tuple) and value and all(v == value[0] for v in value):
        return value[0]
    return value


def _transposed(layer: nn.Module) -> bool:
    return isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))


def _initialise(layer: nn.Module, init: str | None) -> None:
    with torch.no_grad():
        if init == "prior":
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, _PRIOR_BIAS)
        elif init == "xavier":
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        elif init == "normal_0.03":
            nn.init.normal_(layer.weight, std=0.03)
            nn.init.zeros_(layer.bias)
        elif init == "kaiming":
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)


def _kept_rows(keep: list[int], role: HeadRole, background: bool, new_classes: int, per: int) -> list[tuple]:
    """(new row, old row) pairs: classes anchor-major (a x K + c), per-class boxes class-major (4c + j)."""
    old_classes = role.classes or 0
    old_labels = ([0] if background else []) + keep
    pairs = []
    if per:  # per-class box regression: 4 rows per class
        for new_c, old_c in enumerate(old_labels):
            pairs += [(new_c * per + j, old_c * per + j) for j in range(per)]
        return pairs
    for a in range(role.anchors or 1):
        pairs += [(a * new_classes + n, a * old_classes + o) for n, o in enumerate(old_labels)]
    return pairs


def _copy_rows(swap: Swap) -> None:
    if swap.old.weight.is_meta:
        return
    new_rows = torch.tensor([n for n, _ in swap.rows])
    old_rows = torch.tensor([o for _, o in swap.rows])
    dim = 1 if _transposed(swap.new) else 0
    with torch.no_grad():
        swap.new.weight.index_copy_(
            dim, new_rows, swap.old.weight.index_select(dim, old_rows).to(swap.new.weight)
        )
        if swap.new.bias is not None and swap.old.bias is not None:
            swap.new.bias[new_rows] = swap.old.bias[old_rows].to(swap.new.bias)
