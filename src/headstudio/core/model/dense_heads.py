"""Roles of dense-prediction heads (detection, segmentation): what each parametrised output is for.

By function first: which output a head reaches (``scores``/``labels`` carry classes, ``boxes`` boxes,
``masks``, ``keypoints``, ``aux``), and how the class count shows in its channels: heads on the same
features form a group whose box regression has ``4 x num_anchors`` channels, so a sibling with
``num_anchors x K`` channels holds K classes (K = 1 is objectness), and a per-region Linear next to a
``4 x K`` box regression classifies K classes (R-CNN). Knowledge of torchvision's families decides
where function cannot (ties, and heads whose result leaves through non-torch code). The last rule names
the class head of a model with one main output (an image or video classifier, a segmenter).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from torch import nn

from headstudio.core.model.heads import HeadRole, is_projection

if TYPE_CHECKING:
    from headstudio.core.model.shapes import Trace

CLASS_KEYS = frozenset({"scores", "labels", "logits", "pred_logits", "class_logits", "cls_logits"})
BOX_KEYS = frozenset({"boxes", "pred_boxes", "bbox", "bboxes"})
MASK_KEYS = frozenset({"masks", "pred_masks"})
KEYPOINT_KEYS = frozenset({"keypoints", "keypoints_scores"})
MAIN_KEYS = ("out", "logits")
# the rules below that read a dense-prediction head (what the paired edits work from)
DENSE_RULES = ("output key", "anchor channels", "per-class boxes", "torchvision ")
_DENSE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_KEY_RE = re.compile(r"\[['\"]([^'\"]+)['\"]\]$|\.(\w+)$")

# torchvision head classes: {child name or '*' (every projection inside): role}
FAMILY_ROLES: dict[str, dict[str, str]] = {
    "RPNHead": {"cls_logits": "objectness", "bbox_pred": "box regression"},
    "FastRCNNPredictor": {"cls_score": "class logits", "bbox_pred": "box regression"},
    "MaskRCNNPredictor": {"mask_fcn_logits": "mask logits"},
    "KeypointRCNNPredictor": {"kps_score_lowres": "keypoint logits"},
    "RetinaNetClassificationHead": {"cls_logits": "class logits"},
    "RetinaNetRegressionHead": {"bbox_reg": "box regression"},
    "FCOSClassificationHead": {"cls_logits": "class logits"},
    "FCOSRegressionHead": {"bbox_reg": "box regression", "bbox_ctrness": "objectness"},
    "SSDClassificationHead": {"*": "class logits"},
    "SSDRegressionHead": {"*": "box regression"},
    "SSDLiteClassificationHead": {"*": "class logits"},
    "SSDLiteRegressionHead": {"*": "box regression"},
    "LRASPPHead": {"low_classifier": "class logits", "high_classifier": "class logits"},
}


def key_name(key: str) -> str | None:
    """The last name in a pytree key path: "[0]['boxes']" -> 'boxes'; None for positions."""
    match = _KEY_RE.search(key)
    return (match[1] or match[2]) if match else None


def by_output_and_channels(model: nn.Module, trace: Trace) -> dict[str, HeadRole]:
    """Roles from the outputs each head reaches and the anchor x class layout of its channels."""
    modules = dict(model.named_modules())
    reached = _keys_reached(trace)
    if not any(
        k in BOX_KEYS | MASK_KEYS | KEYPOINT_KEYS or "aux" in k for ks in reached.values() for k in ks
    ):
        return {}  # no detection or auxiliary outputs: nothing dense to tell apart
    roles: dict[str, HeadRole] = {}
    for path, keys in reached.items():
        out = _out_channels(modules[path])
        only = _only_kind(keys)
        if only == "aux":
            roles[path] = HeadRole("auxiliary", "output key 'aux'", 1, out)
        elif only == "masks":
            roles[path] = HeadRole("mask logits", "output key 'masks'", 1, out)
        elif only == "keypoints":
            roles[path] = HeadRole("keypoint logits", "output key 'keypoints'", 1, out)
    for group in _groups(trace, modules, reached):
        roles.update({p: r for p, r in _group_roles(group, modules, reached).items() if p not in roles})
    for path, keys in reached.items():
        out = _out_channels(modules[path])
        if path not in roles and _only_kind(keys) == "boxes":
            roles[path] = HeadRole("box regression", "output key 'boxes'", None, None)
        elif path not in roles and keys and keys <= CLASS_KEYS and not _all_reach(reached, keys):
            roles[path] = HeadRole("class logits", f"output key '{min(keys)}'", 1, out)
    return roles


def _all_reach(reached: dict[str, set[str]], keys: set[str]) -> bool:
    """Every head reaches these keys (then they tell nothing apart)."""
    return all(keys <= other for other in reached.values())


def by_torchvision_family(model: nn.Module, trace: Trace) -> dict[str, HeadRole]:
    """Roles torchvision's head classes imply, for heads function could not decide."""
    roles: dict[str, HeadRole] = {}
    for path, module in model.named_modules():
        known = FAMILY_ROLES.get(type(module).__name__)
        if known is None:
            continue
        rule = f"torchvision {type(module).__name__}"
        for sub, child in module.named_modules():
            name = sub.split(".")[0]
            role = known.get(name) or known.get("*")
            if sub and role and is_projection(child) and not list(child.children()):
                roles[f"{path}.{sub}" if path else sub] = _family_role(module, child, role, rule)
    for path, module in model.named_modules():
        aux = getattr(module, "aux_classifier", None)
        if isinstance(aux, nn.Module):  # torchvision segmentation: classifier + aux_classifier
            prefix = f"{path}." if path else ""
            for attr, role in (("classifier", "class logits"), ("aux_classifier", "auxiliary")):
                last = _last_projection(getattr(module, attr, None))
                if last is not None:
                    rule = f"torchvision {type(module).__name__}.{attr}"
                    roles[prefix + attr + "." + last[0]] = HeadRole(role, rule, 1, _out_channels(last[1]))
    return roles


def by_main_output(model: nn.Module, trace: Trace) -> dict[str, HeadRole]:
    """A model with one main output tensor: heads sized like its class dimension are class heads."""
    shape, key = _main_output(trace)
    if shape is None:
        return {}
    modules = dict(model.named_modules())
    classes = {shape[1], shape[-1]} if len(shape) >= 2 else set()
    roles = {}
    for path in trace.heads_by_output.get(key, []):
        out = _out_channels(modules[path]) or _last_dim(trace.outputs.get(path))
        if out in classes:
            roles[path] = HeadRole("class logits", "main output", 1, out)
    return roles


RULES = [by_output_and_channels, by_main_output, by_torchvision_family]


def _keys_reached(trace: Trace) -> dict[str, set[str]]:
    reached: dict[str, set[str]] = {}
    for key, paths in trace.heads_by_output.items():
        for path in paths:
            reached.setdefault(path, set()).add(key_name(key) or "")
    return reached


def _only_kind(keys: set[str]) -> str | None:
    """'aux', 'masks', 'keypoints' or 'boxes' when every key a head reaches is of that one kind."""
    kinds = set()
    for key in keys:
        if "aux" in key:
            kinds.add("aux")
        elif key in MASK_KEYS:
            kinds.add("masks")
        elif key in KEYPOINT_KEYS:
            kinds.add("keypoints")
        elif key in BOX_KEYS:
            kinds.add("boxes")
        else:
            kinds.add(key)
    return next(iter(kinds)) if len(kinds) == 1 else None


def _groups(trace: Trace, modules: dict[str, nn.Module], reached: dict) -> list[list[str]]:
    """Heads applied to the same features (same traced input shape, same kind of layer)."""
    groups: dict[tuple, list[str]] = {}
    for path in reached:
        shape = trace.inputs.get(path)
        if isinstance(shape, list) and _out_channels(modules[path]):
            dense = isinstance(modules[path], _DENSE)
            groups.setdefault((tuple(shape), dense), []).append(path)
    return list(groups.values())


def _group_roles(group: list[str], modules: dict[str, nn.Module], reached: dict) -> dict[str, HeadRole]:
    """Find the group's box regression (4 x anchors channels), then read the others' channels per anchor."""
    outs = {p: _out_channels(modules[p]) for p in group}
    box = _box_head(group, outs, reached)
    if box is None:
        return {}
    anchors = outs[box] // 4
    dense = isinstance(modules[box], _DENSE)
    others = [p for p in group if p != box]
    per_anchor = {p: outs[p] // anchors for p in others}
    roles: dict[str, HeadRole] = {}
    if not dense:  # per-region: class-specific boxes (4 per class) next to the class scores
        for p in others:
            if outs[p] == anchors:
                roles[p] = HeadRole(
                    "class logits", f"per-class boxes ({outs[box]} = 4 x {anchors})", 1, anchors
                )
                roles[box] = HeadRole("box regression", "per-class boxes", 1, anchors)
        return roles
    roles[box] = HeadRole("box regression", f"anchor channels ({_anchors(anchors)} x 4)", anchors, None)
    singles = [p for p in others if per_anchor[p] == 1]
    many = [p for p in others if per_anchor[p] > 1]
    for p in many:
        k = per_anchor[p]
        rule = f"anchor channels ({_anchors(anchors)} x {k} classes)"
        roles[p] = HeadRole("class logits", rule, anchors, k)
    if len(singles) == 1:  # two heads of 1 per anchor (a one-class FCOS): function cannot tell
        roles[singles[0]] = HeadRole("objectness", f"anchor channels ({_anchors(anchors)} x 1)", anchors, 1)
    return roles


def _anchors(count: int) -> str:
    return f"{count} anchor{'s' if count != 1 else ''}"


def _box_head(group: list[str], outs: dict[str, int], reached: dict) -> str | None:
    """The head whose channels are 4 x anchors, every sibling a multiple of the anchors; ties by output."""
    found = [
        p
        for p in group
        if outs[p] % 4 == 0 and all(outs[q] % (outs[p] // 4) == 0 for q in group) and len(group) > 1
    ]
    if len(found) > 1:
        pairs = [p for p in found if any(outs[q] == outs[p] // 4 for q in group if q != p)]
        found = pairs or found
    if len(found) > 1:
        found = [p for p in found if not _reaches_classes(p, reached, group)] or found
    return found[0] if len(found) == 1 else None


def _reaches_classes(path: str, reached: dict, group: list[str]) -> bool:
    """Whether ``path`` reaches a class-score output that some head of its group does not."""
    keys = reached.get(path, set()) & CLASS_KEYS
    return bool(keys) and any(not (reached.get(q, set()) & CLASS_KEYS) for q in group)


def _family_role(owner: nn.Module, child: nn.Module, role: str, rule: str) -> HeadRole:
    out = _out_channels(child)
    anchors = getattr(owner, "num_anchors", None)
    if not isinstance(anchors, int) or anchors <= 0:
        anchors = _ssd_anchors(owner, child) or 1
    if role == "box regression":  # only R-CNN's predictor regresses a box per class
        per_class = type(owner).__name__ == "FastRCNNPredictor" and out
        return HeadRole(role, rule, anchors, out // 4 if per_class else None)
    return HeadRole(role, rule, anchors, out // anchors if out else None)


def _ssd_anchors(owner: nn.Module, child: nn.Module) -> int | None:
    columns = getattr(owner, "num_columns", None)
    out = _out_channels(child)
    return out // columns if isinstance(columns, int) and columns and out else None


def _last_projection(block: Any) -> tuple[str, nn.Module] | None:
    if not isinstance(block, nn.Module):
        return None
    found = [(p, m) for p, m in block.named_modules() if p and is_projection(m) and not list(m.children())]
    return found[-1] if found else None


def _main_output(trace: Trace) -> tuple[list[int] | None, str]:
    keys = list(trace.heads_by_output)
    if len(keys) == 1 and _is_sizes(trace.output):
        return trace.output, keys[0]
    if isinstance(trace.output, dict):
        for name in MAIN_KEYS:
            key = next((k for k in keys if key_name(k) == name), None)
            if key is not None and _is_sizes(trace.output.get(name)):
                return trace.output[name], key
    return None, ""


def _is_sizes(shape: Any) -> bool:
    return isinstance(shape, list) and bool(shape) and all(isinstance(d, int) for d in shape)


def _last_dim(shape: Any) -> int | None:
    return shape[-1] if _is_sizes(shape) else None


def _out_channels(module: nn.Module) -> int | None:
    value = getattr(module, "out_features", None) or getattr(module, "out_channels", None)
    return int(value) if isinstance(value, int) else None
