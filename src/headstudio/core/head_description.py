"""A head's description: the fixed table of layer kinds a head file may hold, checked as data.

``describe_head`` turns a live head (one table layer, or a Sequential of them) into JSON-ready data;
``check_description`` validates such data from a file or a recipe (known kinds only, positive sizes
that chain from layer to layer); ``build_described`` builds exactly what a checked description says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from headstudio.core.errors import HeadStudioError, SourceError

FORMAT = "headstudio.head"
VERSION = 1
METADATA_KEY = "headstudio.head"
MAX_LAYERS = 64
MAX_SIZE = 1 << 24
MAX_CLASS_NAME = 200


class HeadFileError(SourceError):
    """A head file (or a recipe's head description) is missing, malformed or lies about its tensors."""


def _pos(v: Any) -> bool:
    return type(v) is int and 0 < v <= MAX_SIZE


def _nonneg(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_SIZE


def _real(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _ints(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and 1 <= len(v) <= 3 and all(check(x) for x in v)


_BOOL = (lambda v: type(v) is bool, "true or false")
_POS = (_pos, "a positive whole number")
_CONV = {
    "in_channels": _POS,
    "out_channels": _POS,
    "kernel_size": (_ints(_pos), "a list of positive sizes"),
    "stride": (_ints(_pos), "a list of positive sizes"),
    "padding": (_ints(_nonneg), "a list of sizes >= 0"),
    "dilation": (_ints(_pos), "a list of positive sizes"),
    "groups": _POS,
    "bias": _BOOL,
}

# kind -> (module class, {field: (check, what it must be)}); nothing outside this table is ever built
LAYER_KINDS: dict[str, tuple[type[nn.Module], dict[str, tuple[Callable[[Any], bool], str]]]] = {
    "linear": (nn.Linear, {"in_features": _POS, "out_features": _POS, "bias": _BOOL}),
    "conv1d": (nn.Conv1d, _CONV),
    "conv2d": (nn.Conv2d, _CONV),
    "conv3d": (nn.Conv3d, _CONV),
    "dropout": (nn.Dropout, {"p": (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)")}),
    "relu": (nn.ReLU, {}),
    "gelu": (nn.GELU, {"approximate": (lambda v: v in ("none", "tanh"), '"none" or "tanh"')}),
    "silu": (nn.SiLU, {}),
    "tanh": (nn.Tanh, {}),
    "sigmoid": (nn.Sigmoid, {}),
    "leaky_relu": (nn.LeakyReLU, {"negative_slope": (_real, "a number")}),
    "identity": (nn.Identity, {}),
    "flatten": (nn.Flatten, {"start_dim": (lambda v: type(v) is int and -8 <= v <= 8, "a dim")}),
    "layer_norm": (
        nn.LayerNorm,
        {
            "normalized_shape": (_ints(_pos), "a list of positive sizes"),
            "eps": (lambda v: _real(v) and v > 0, "a positive number"),
            "elementwise_affine": _BOOL,
            "bias": _BOOL,
        },
    ),
    "batch_norm1d": (
        nn.BatchNorm1d,
        {
            "num_features": _POS,
            "eps": (lambda v: _real(v) and v > 0, "a positive number"),
            "affine": _BOOL,
            "track_running_stats": _BOOL,
        },
    ),
}
_KIND_OF = {cls: kind for kind, (cls, _) in LAYER_KINDS.items()}


# ----- describing a live head
def describe_module(head: nn.Module, path: str = "head") -> list[dict[str, Any]]:
    """The layers of ``head`` (one table layer, or a Sequential of them) as description dicts."""
    leaves = layer_modules(head, path)
    return [_describe_layer(m, p) for p, m in leaves]


def layer_modules(module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    """(path, module) of every table layer in ``head``, in order; HeadStudioError for anything else."""
    if type(module) in _KIND_OF:
        return [(path, module)]
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        return [leaf for name, m in module.named_children() for leaf in layer_modules(m, f"{path}.{name}")]
    kinds = ", ".join(cls.__name__ for cls in _KIND_OF)
    raise HeadStudioError(
        f"'{path}' is a {type(module).__name__}, which a head file cannot describe; export a head made "
        f"of {kinds} (e.g. pick the classifier layer inside it with --head)"
    )


def _describe_layer(module: nn.Module, path: str) -> dict[str, Any]:
    kind = _KIND_OF[type(module)]
    layer: dict[str, Any] = {"kind": kind}
    for name in LAYER_KINDS[kind][1]:
        value = getattr(module, name)
        if name == "bias" and not isinstance(value, bool):
            value = value is not None
        layer[name] = list(value) if isinstance(value, tuple) else value
    if kind.startswith("conv") and (module.padding_mode != "zeros" or isinstance(module.padding, str)):
        raise HeadStudioError(f"'{path}' uses padding {module.padding!r}/{module.padding_mode}; "
                              "head files hold convs with numeric zero padding only")  # fmt: skip
    if kind == "flatten" and module.end_dim != -1:
        raise HeadStudioError(f"'{path}' flattens up to dim {module.end_dim}; head files flatten to the end")
    return layer


def describe_head(head: nn.Module, head_path: str, classes: list[str] | None, source: dict) -> dict:
    """The full description stored in a head file's metadata."""
    layers = describe_module(head, head_path or "head")
    in_features, out_features, channels = _sizes(layers)
    if classes is not None and len(classes) != out_features:
        classes = None  # names for another class count describe another head
    return {
        "format": FORMAT,
        "version": VERSION,
        "layers": layers,
        "input": "channels" if channels else "features",
        "in_features": in_features,
        "out_features": out_features,
        "classes": classes,
        "source": source,
    }


# ----- validating and building a description
def check_description(data: Any) -> dict[str, Any]:
    """The description if it is valid data; HeadFileError naming the first thing wrong otherwise."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HeadFileError(f"the head description is not a {FORMAT} object")
    if data.get("version") != VERSION:
        raise HeadFileError(
            f"head description version {data.get('version')!r}; this Head Studio reads {VERSION}"
        )
    layers = data.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise HeadFileError(f"the head description needs 1 to {MAX_LAYERS} layers")
    for i, layer in enumerate(layers):
        _check_layer(i, layer)
    in_features, out_features, channels = _sizes(layers)
    expected = {"in_features": in_features, "out_features": out_features,
                "input": "channels" if channels else "features"}  # fmt: skip
    for key, value in expected.items():
        if data.get(key) != value:
            raise HeadFileError(
                f"the head description says {key} {data.get(key)!r} but its layers give {value!r}"
            )
    classes = data.get("classes")
    if classes is not None and not (
        isinstance(classes, list)
        and len(classes) == out_features
        and all(isinstance(c, str) and len(c) <= MAX_CLASS_NAME for c in classes)
    ):
        raise HeadFileError(f"the head's class names must be {out_features} short strings or null")
    source = data.get("source")
    if not isinstance(source, dict) or not all(v is None or isinstance(v, str) for v in source.values()):
        raise HeadFileError("the head description's 'source' must map names to strings")
    return data


def _check_layer(i: int, layer: Any) -> None:
    if not isinstance(layer, dict) or layer.get("kind") not in LAYER_KINDS:
        kind = layer.get("kind") if isinstance(layer, dict) else layer
        raise HeadFileError(
            f"head layer {i} has kind {str(kind)[:40]!r}; known kinds: {', '.join(LAYER_KINDS)}"
        )
    fields = LAYER_KINDS[layer["kind"]][1]
    extra = sorted(set(layer) - set(fields) - {"kind"})
    if extra:
        raise HeadFileError(f"head layer {i} ({layer['kind']}) has unknown field {extra[0][:40]!r}")
    for name, (check, what) in fields.items():
        if name not in layer or not check(layer[name]):
            raise HeadFileError(f"head layer {i} ({layer['kind']}): {name} must be {what}")


def _sizes(layers: list[dict]) -> tuple[int, int, bool]:
    """(in, out, takes channels) of a layer list whose sizes chain; HeadFileError otherwise."""
    width: int | None = None
    first: int | None = None
    channels = False
    for i, layer in enumerate(layers):
        kind = layer["kind"]
        takes = layer.get("in_features") or layer.get("in_channels") or layer.get("num_features")
        if kind == "layer_norm":
            takes = layer["normalized_shape"][-1]
        if takes is not None:
            if width is not None and takes != width:
                raise HeadFileError(f"head layer {i} ({kind}) takes {takes} features but gets {width}")
            if first is None:
                first, channels = takes, kind.startswith("conv")
        if kind.startswith("conv") and not len(layer["kernel_size"]) == len(layer["stride"]) == len(
            layer["padding"]) == len(layer["dilation"]) == int(kind[4]):  # fmt: skip
            raise HeadFileError(f"head layer {i} ({kind}) needs {kind[4]} sizes per kernel/stride/padding")
        if kind.startswith("conv") and (layer["in_channels"] % layer["groups"] or
                                        layer["out_channels"] % layer["groups"]):  # fmt: skip
            raise HeadFileError(f"head layer {i} ({kind}): channels must divide by groups")
        width = layer.get("out_features") or layer.get("out_channels") or width
    if (
        first is None
        or width is None
        or not any(layer["kind"] == "linear" or layer["kind"].startswith("conv") for layer in layers)
    ):
        raise HeadFileError("the head description has no Linear or conv layer, so it has no size")
    return first, width, channels


def build_described(layers: list[dict], device: str | torch.device = "cpu") -> nn.Module:
    """The head a *checked* description describes: one layer, or a Sequential of them."""
    modules = []
    with torch.device(device):
        for layer in layers:
            cls = LAYER_KINDS[layer["kind"]][0]
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in layer.items() if k != "kind"}
            modules.append(cls(**kwargs))
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def described_code(layers: list[dict]) -> str:
    """The constructor expression for ``build_described``'s module (plain PyTorch)."""
    parts = []
    for layer in layers:
        cls = LAYER_KINDS[layer["kind"]][0]
        args = ", ".join(
            f"{k}={tuple(v) if isinstance(v, list) else v!r}" for k, v in layer.items() if k != "kind"
        )
        parts.append(f"nn.{cls.__name__}({args})")
    return parts[0] if len(parts) == 1 else "nn.Sequential(" + ", ".join(parts) + ")"
