"""Named, typed model inputs: ``input_ids=1,128:int64``, defaults read from a transformers config.

A plain model takes one positional tensor of ``Document.input_shape``. A model with named inputs (a
Hugging Face model) gets keyword tensors: token ids with an attention mask for text, ``pixel_values``
for vision, sized from its config rather than guessed from its first layer.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from headstudio.core.errors import InputError
from headstudio.core.model.shape_text import parse_sizes

DTYPES: dict[str, torch.dtype] = {
    "int64": torch.long, "long": torch.long, "int32": torch.int32, "int": torch.int32, "bool": torch.bool,
    "float32": torch.float32, "float": torch.float32, "float16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "float64": torch.float64,
}  # fmt: skip
_TEXT_LENGTH = 128
_AUDIO_SAMPLES = 16000
_REGIONS = 36  # image regions fed to region-feature models (LXMERT); the usual detector count


@dataclass(frozen=True)
class NamedInput:
    """One keyword input: its name, shape and dtype name (None: the model's floating dtype)."""

    name: str
    shape: tuple[int, ...]
    dtype: str | None = None

    def to_text(self) -> str:
        """The form the CLI and the app take back: ``input_ids=1,128:int64``."""
        sizes = ",".join(str(d) for d in self.shape)
        return f"{self.name}={sizes}" + (f":{self.dtype}" if self.dtype else "")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def parse_input(text: str) -> NamedInput:
    """``NAME=SIZES[:DTYPE]`` (e.g. ``attention_mask=1,128:int64``) as a NamedInput; InputError if not."""
    name, sep, rest = text.strip().partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise InputError(f"input '{text}' is not NAME=SIZES[:DTYPE], e.g. input_ids=1,128:int64")
    sizes, _, dtype = rest.partition(":")
    dtype = dtype.strip().lower() or None
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"input '{text}': dtype '{dtype}' is unknown; use one of {', '.join(DTYPES)}")
    shape = parse_sizes(sizes, "input shape", "1,128")
    return NamedInput(name, tuple(shape), dtype)


def parse_inputs(texts: Iterable[str] | str) -> tuple[NamedInput, ...]:
    """Several inputs, from a list or one text separated by ';' or spaces (the app's input field)."""
    if isinstance(texts, str):
        texts = texts.replace(";", " ").split()
    found = tuple(parse_input(t) for t in texts if t.strip())
    names = [i.name for i in found]
    if len(set(names)) != len(names):
        raise InputError(f"inputs {', '.join(names)} name one input twice; give each name once")
    return found


def is_named_text(text: str) -> bool:
    """True when an input field holds named inputs (``name=sizes``) rather than bare sizes."""
    return "=" in text


def config_inputs(model: nn.Module, shape: tuple[int, ...] | None = None) -> tuple[NamedInput, ...] | None:
    """The inputs a transformers model's config implies (``shape`` overrides the main one); None otherwise."""
    config = getattr(model, "config", None)
    main = getattr(model, "main_input_name", None)
    if config is None or not isinstance(main, str):
        return None
    accepts = _forward_names(model)
    if main == "input_ids":
        length = _text_length(config)
        rows = _codebooks(config)  # MusicGen: one row of audio codes per codebook
        ids = NamedInput("input_ids", tuple(shape) if shape else (rows, length), "int64")
        found = [ids]
        if "attention_mask" in accepts:
            found.append(NamedInput("attention_mask", ids.shape, "int64"))
        if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in accepts:
            found.append(NamedInput("decoder_input_ids", ids.shape, "int64"))
        if "bbox" in accepts:  # layout models (LayoutLM, LiLT, BROS): one box per token
            found.append(NamedInput("bbox", (*ids.shape, 4), "int64"))
        if "visual_feats" in accepts and isinstance(getattr(config, "visual_feat_dim", None), int):
            found += _region_features(config, ids.shape[0])  # LXMERT: detector features of image regions
        if "lang_ids" in accepts and getattr(config, "languages", None):  # X-MOD: the first language
            found.append(NamedInput("lang_ids", ids.shape[:1], "int64"))
        return tuple(found)
    if main == "pixel_values" and "spatial_shapes" in accepts:
        return _patch_inputs(config, shape)
    if main == "pixel_values":
        channels, size = _image_size(config)
        return (NamedInput(main, tuple(shape) if shape else (1, channels, *size)),)
    if main == "input_values":
        return (NamedInput(main, tuple(shape) if shape else (1, _AUDIO_SAMPLES)),)
    if main == "input_features":
        bins = int(getattr(config, "num_mel_bins", 80) or 80)
        frames = 2 * int(getattr(config, "max_source_positions", 1500) or 1500)
        return (NamedInput(main, tuple(shape) if shape else (1, bins, frames)),)
    if main == "inputs":
        return _perceiver_inputs(model, config, shape)
    return (NamedInput(main, tuple(shape)),) if shape else None


def _perceiver_inputs(
    model: nn.Module, config: Any, shape: tuple[int, ...] | None
) -> tuple[NamedInput, ...] | None:
    """Perceiver's one ``inputs`` argument takes what its preprocessor embeds: token ids or an image."""
    kind = type(getattr(getattr(model, "perceiver", None), "input_preprocessor", None)).__name__
    if kind == "PerceiverTextPreprocessor":
        ids = NamedInput("inputs", tuple(shape) if shape else (1, _text_length(config)), "int64")
        return (ids, NamedInput("attention_mask", ids.shape, "int64"))
    if kind == "PerceiverImagePreprocessor":
        channels, size = _image_size(config)
        return (NamedInput("inputs", tuple(shape) if shape else (1, channels, *size)),)
    return (NamedInput("inputs", tuple(shape)),) if shape else None


def _codebooks(config: Any) -> int:
    count = getattr(config, "num_codebooks", None)
    model_type = str(getattr(config, "model_type", ""))
    return count if model_type.startswith("musicgen") and isinstance(count, int) and count > 0 else 1


def _patch_inputs(config: Any, shape: tuple[int, ...] | None) -> tuple[NamedInput, ...]:
    """NaFlex vision models (SigLIP 2) take an image already cut into patches, with its patch grid."""
    vision = getattr(config, "vision_config", None) or config
    patches = int(getattr(vision, "num_patches", 256))
    size = getattr(vision, "patch_size", 16)
    size = size[0] * size[1] if isinstance(size, (list, tuple)) else size * size
    pixels = NamedInput("pixel_values", tuple(shape) if shape else (1, patches, vision.num_channels * size))
    batch = (pixels.shape[0],)
    return (
        pixels,
        NamedInput("pixel_attention_mask", (*batch, pixels.shape[1]), "int64"),
        NamedInput("spatial_shapes", (*batch, 2), "int64"),
    )


def _region_features(config: Any, batch: int) -> list[NamedInput]:
    boxes = (batch, _REGIONS)
    position = int(getattr(config, "visual_pos_dim", 4) or 4)
    return [
        NamedInput("visual_feats", (*boxes, config.visual_feat_dim)),
        NamedInput("visual_pos", (*boxes, position)),
    ]


def _forward_names(model: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _text_length(config: Any) -> int:
    limits = [getattr(config, a, None) for a in ("max_position_embeddings", "n_positions", "n_ctx")]
    # two positions spare: RoBERTa-style position ids start after the padding index
    limits = [max(1, v - 2) for v in limits if isinstance(v, int) and v > 0]
    return min([_TEXT_LENGTH, *limits])


def _image_size(config: Any) -> tuple[int, tuple[int, int]]:
    vision = getattr(config, "vision_config", None) or config
    channels = getattr(vision, "num_channels", 3)
    size = getattr(vision, "image_size", 224)
    if isinstance(size, dict):
        size = (size.get("height", 224), size.get("width", 224))
    pair = tuple(int(s) for s in size[:2]) if isinstance(size, (list, tuple)) else (int(size), int(size))
    return int(channels if isinstance(channels, int) else 3), pair


def make_tensors(inputs: tuple[NamedInput, ...], model: nn.Module, float_dtype: torch.dtype) -> dict:
    """Tensors for ``inputs``: ordinary token ids (ending with EOS for encoder-decoders), masks of ones."""
    config = getattr(model, "config", None)
    tensors = {}
    for item in inputs:
        dtype = DTYPES[item.dtype] if item.dtype else float_dtype
        if item.name.endswith(("input_ids", "inputs")) and not dtype.is_floating_point:
            tensors[item.name] = _token_ids(item.shape, dtype, config, _answers_questions(model))
        elif item.name.endswith("mask") and not dtype.is_floating_point:
            tensors[item.name] = torch.ones(item.shape, dtype=dtype)
        elif item.name == "spatial_shapes":  # the patch grid: as square as the patch count allows
            patches = next((i.shape[1] for i in inputs if i.name == "pixel_values" and len(i.shape) == 3), 1)
            side = max(d for d in range(1, math.isqrt(patches) + 1) if patches % d == 0)
            tensors[item.name] = torch.tensor([side, patches // side], dtype=dtype).expand(item.shape).clone()
        else:
            tensors[item.name] = torch.zeros(item.shape, dtype=dtype)
    return tensors


@contextmanager
def eager_implementations(model: nn.Module) -> Iterator[bool]:
    """transformers' plain PyTorch ("eager") attention and experts while inside; restored after.

    Yields False for a model without these switches (nothing to try).
    """
    previous = {}
    for name in ("attn", "experts"):
        current = getattr(getattr(model, "config", None), f"_{name}_implementation", None)
        setter = getattr(model, f"set_{name}_implementation", None)
        if callable(setter) and isinstance(current, str) and current != "eager":
            try:
                setter("eager")
                previous[name] = current
            except Exception:  # a model that offers only one implementation
                continue
    try:
        yield bool(previous)
    finally:
        for name, value in previous.items():
            with contextlib.suppress(Exception):
                getattr(model, f"set_{name}_implementation")(value)


@contextmanager
def without_cache(model: nn.Module) -> Iterator[None]:
    """No key/value cache while tracing (not an output of interest); config.use_cache restored after."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "use_cache", None) is not True:
        yield
        return
    config.use_cache = False
    try:
        yield
    finally:
        config.use_cache = True


def _answers_questions(model: nn.Module) -> bool:
    return type(model).__name__.endswith("ForQuestionAnswering")


def _token_ids(
    shape: tuple[int, ...], dtype: torch.dtype, config: Any, question: bool = False
) -> torch.Tensor:
    vocab = int(getattr(config, "vocab_size", 0) or 0) or 2
    special: set[Any] = set()
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(config, name, None)
        special.update(value if isinstance(value, (list, tuple)) else [value])
    token = next((t for t in range(3, vocab) if t not in special), 0)
    ids = torch.full(shape, token, dtype=dtype)
    eos = getattr(config, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
    if getattr(config, "is_encoder_decoder", False) and isinstance(eos, int) and 0 <= eos < vocab and shape:
        ids[..., -1] = eos  # BART/T5 classifiers pool at the end-of-sequence token
    sep = getattr(config, "sep_token_id", None)
    if question and isinstance(sep, int) and 0 <= sep < vocab and shape and shape[-1] >= 4:
        half = shape[-1] // 2  # "question </s></s> context </s>": Longformer counts three separators
        ids[..., [half - 1, half, -1]] = sep
    return ids


def describe_inputs(inputs: tuple[NamedInput, ...]) -> str:
    """``input_ids=1,128:int64 attention_mask=1,128:int64`` (what the app's field shows)."""
    return " ".join(i.to_text() for i in inputs)
