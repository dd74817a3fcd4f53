"""Roles of transformers heads, by what they compute: class, token, span or vocabulary logits.

The head itself is found by function (HeadTracker); this names its role from the output field it feeds
and that field's shape, and reports a language-model head whose weight is the input embeddings' (tied).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from torch import nn

from headstudio.core.model.heads import HeadInfo

_SPAN_FIELDS = ("start_logits", "end_logits")


def hf_head_roles(model: nn.Module, heads: list[HeadInfo], trace: Any) -> list[HeadInfo]:
    """``heads`` with role and rule filled in for a transformers model; unchanged for other models."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "get_input_embeddings"):
        return heads
    output = output_embedding_path(model)
    described = [_with_role(model, config, head, trace, head.path == output) for head in heads]
    # what transformers itself calls the output embeddings leads (MobileBERT's logits also use a side matrix)
    return sorted(described, key=lambda head: head.path != output)


def _with_role(model: nn.Module, config: Any, head: HeadInfo, trace: Any, is_output: bool) -> HeadInfo:
    fields = [key for key, paths in trace.heads_by_output.items() if head.path in paths]
    shape = _field_shape(trace.output, fields[0]) if fields else None
    shape = shape if shape is not None else trace.outputs.get(head.path)
    role = _role(fields, shape, _vocabulary_sizes(config), is_output)
    if role is None:
        return head
    rule = f"transformers output {fields[0]}" if fields else "transformers head"
    tied = tied_embedding(model, head.path)
    if tied:
        rule += f"; its weight is tied to the input embeddings ({tied})"
    return dataclasses.replace(head, role=role, rule=rule)


def _field_shape(output: Any, key: str) -> Any:
    """The traced shape of the output field ``key`` (``['logits']``): what the model returns (pooled)."""
    name = key.strip("[]'\"")
    return output.get(name) if isinstance(output, dict) else None


def _vocabulary_sizes(config: Any) -> set[int]:
    text = getattr(config, "get_text_config", lambda: None)() or config
    names = ("vocab_size", "decoder_vocab_size", "target_vocab_size")
    return {v for c in (config, text) for n in names if isinstance(v := getattr(c, n, None), int)}


def output_embedding_path(model: nn.Module) -> str | None:
    """The path of what transformers itself calls the output embeddings (the LM head), whatever its width."""
    try:
        output = model.get_output_embeddings()
    except (AttributeError, NotImplementedError, TypeError):
        return None
    return None if output is None else next((p for p, m in model.named_modules() if m is output), None)


def _role(fields: list[str], shape: Any, vocab: set[int], is_output: bool) -> str | None:
    if any(name in key for key in fields for name in _SPAN_FIELDS):
        return "span logits"
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        return None
    if len(shape) == 2:
        return "class logits"
    if len(shape) == 3:
        return "vocabulary logits" if is_output or shape[-1] in vocab else "token logits"
    return None


def tied_embedding(model: nn.Module, path: str) -> str | None:
    """The path of the input embedding whose weight the module at ``path`` shares, else None."""
    try:
        embeddings = model.get_input_embeddings()
        module = model.get_submodule(path)
    except (AttributeError, NotImplementedError):
        return None
    weight = getattr(module, "weight", None)
    if weight is None or embeddings is None or weight is not getattr(embeddings, "weight", None):
        return None
    return next((p for p, m in model.named_modules() if m is embeddings), None)


def base_of(model: nn.Module) -> nn.Module | None:
    """The model body transformers saves without the head: ``base_model``, else the decoder or ``.model``.

    A few classes name a ``base_model_prefix`` they do not have (Llama 4's causal LM), hence the fallbacks.
    """
    candidates = [getattr(model, "base_model", None), getattr(model, "model", None)]
    getter = getattr(model, "get_decoder", None)
    with contextlib.suppress(AttributeError, NotImplementedError, TypeError):
        candidates.insert(1, getter() if callable(getter) else None)
    return next(
        (
            c
            for c in candidates
            if isinstance(c, nn.Module) and c is not model and hasattr(c, "save_pretrained")
        ),
        None,
    )
