"""Head files: one head's weights in a .safetensors file, its description (JSON) in the metadata.

The description says how to rebuild the head from a fixed table of layer kinds (Linear, convs,
activations, dropout, norms), so a head file carries no code and no pickle. Reading one is
hostile-input territory: the description is validated as data (known kinds, positive sizes, sizes
that chain) and the file's tensors must be exactly the rebuilt head's names, shapes and dtypes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstudio.core.errors import HeadStudioError, SaveError, SourceError, first_line

FORMAT = "headstudio.head"
VERSION = 1
METADATA_KEY = "headstudio.head"
MAX_LAYERS = 64
MAX_SIZE = 1 << 24
MAX_DESCRIPTION_CHARS = 1 << 20
MAX_CLASS_NAME = 200
_FLOATS = {torch.float32, torch.float16, torch.bfloat16, torch.float64}


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


@dataclass
class HeadFile:
    """A read and validated head file: its description, weights and sha256."""

    path: Path
    sha256: str
    description: dict[str, Any]
    state: dict[str, torch.Tensor]

    @property
    def in_features(self) -> int:
        """The feature (or channel) count the head takes."""
        return int(self.description["in_features"])

    @property
    def out_features(self) -> int:
        """The head's output count (classes)."""
        return int(self.description["out_features"])


# ----- describing a live head
def describe_module(head: nn.Module, path: str = "head") -> list[dict[str, Any]]:
    """The layers of ``head`` (one table layer, or a Sequential of them) as description dicts."""
    leaves = _leaves(head, path)
    return [_describe_layer(m, p) for p, m in leaves]


def _leaves(module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    if type(module) in _KIND_OF:
        return [(path, module)]
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        return [leaf for name, m in module.named_children() for leaf in _leaves(m, f"{path}.{name}")]
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


# ----- reading and writing head files
def file_sha256(path: Path) -> str:
    """The file's sha256 (hex), read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_head_file(path: str | Path) -> HeadFile:
    """Read and validate a head file; HeadFileError (one line) when it is not one or lies."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HeadFileError(f"no head file at {path}; export one with 'headstudio head export'")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            text = metadata.get(METADATA_KEY)
            if not isinstance(text, str):
                raise HeadFileError(f"{path.name} is a .safetensors file without a head description; "
                                    "export heads with 'headstudio head export'")  # fmt: skip
            description = _parse_description(text, path)
            expected = build_described(description["layers"], "meta").state_dict()
            _check_names(path, set(fh.keys()), set(expected))
            state = {name: fh.get_tensor(name) for name in expected}
    except HeadStudioError:
        raise
    except Exception as err:  # safetensors raises several types for a damaged file
        raise HeadFileError(
            f"{path.name} is not a readable .safetensors head file ({first_line(err)})"
        ) from None
    for name, want in expected.items():
        _check_tensor(path, name, state[name], want)
    return HeadFile(path, file_sha256(path), description, state)


def _parse_description(text: str, path: Path) -> dict[str, Any]:
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise HeadFileError(
            f"{path.name}: the head description is {len(text):,} characters; too long to be one"
        )
    try:
        data = json.loads(text)
    except ValueError as err:
        raise HeadFileError(f"{path.name}: the head description is not valid JSON ({err})") from None
    try:
        return check_description(data)
    except HeadFileError as err:
        raise HeadFileError(f"{path.name}: {err}") from None


def _check_names(path: Path, found: set[str], expected: set[str]) -> None:
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing:
        raise HeadFileError(f"{path.name}: the description needs tensor '{missing[0]}' but the file lacks it")
    if extra:
        raise HeadFileError(f"{path.name}: tensor '{extra[0][:80]}' is not part of the described head")


def _check_tensor(path: Path, name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    if tuple(got.shape) != tuple(want.shape):
        raise HeadFileError(
            f"{path.name}: tensor '{name}' has shape {list(got.shape)} but the description gives "
            f"{list(want.shape)}"
        )
    ok = got.dtype in _FLOATS if want.is_floating_point() else got.dtype == want.dtype
    if not ok:
        raise HeadFileError(
            f"{path.name}: tensor '{name}' has dtype {got.dtype}, which this layer cannot hold"
        )


def rebuild_head(head_file: HeadFile, device: str | torch.device = "cpu") -> nn.Module:
    """The head a file describes, with its weights (exactly the file's values, its float dtype)."""
    module = build_described(head_file.description["layers"], device)
    dtypes = {t.dtype for t in head_file.state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        module.to(dtype=dtypes.pop())
    module.load_state_dict(head_file.state)
    return module.eval()


def export_head(head: nn.Module, description: dict[str, Any], target: str | Path) -> HeadFile:
    """Write ``head``'s weights in the described layout to ``target`` atomically; the file as read back."""
    from safetensors.torch import save_file

    from headstudio.core.saving.partial_files import discard, temp_path

    target = Path(target).expanduser()
    check_description(description)
    leaves = [m for _, m in _leaves(head, "head")]
    prefixes = [f"{i}." for i in range(len(leaves))] if len(leaves) > 1 else [""]
    state = {
        prefix + name: tensor.detach().cpu().contiguous()
        for prefix, leaf in zip(prefixes, leaves, strict=True)
        for name, tensor in leaf.state_dict().items()
    }
    expected = build_described(description["layers"], "meta").state_dict()
    if set(state) != set(expected):
        raise HeadStudioError(
            "the head's tensors do not match its description; describe it with describe_head"
        )
    if any(t.is_meta for t in state.values()):
        raise HeadStudioError(
            "the head has no real weights (meta); open a checkpoint or a materialized model"
        )
    temp, lock = temp_path(target)
    try:
        save_file(state, str(temp), {METADATA_KEY: json.dumps(description, ensure_ascii=False)})
        written = read_head_file(temp)
        for name, tensor in state.items():
            if not torch.equal(written.state[name], tensor):
                raise SaveError(f"verification failed: tensor '{name}' differs after writing")
        os.replace(temp, target)
    except HeadStudioError:
        discard(temp)
        raise
    except OSError as err:
        discard(temp)
        raise SaveError(f"could not write {target}: {err.strerror or err}; nothing was changed") from None
    finally:
        if lock is not None:
            os.close(lock)
    written.path, written.sha256 = target, file_sha256(target)
    return written
