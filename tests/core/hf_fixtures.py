"""Tiny Hugging Face model folders written by transformers' own ``save_pretrained`` (random init, no network).

``make_folder`` builds one model type for one task family from a generic shrunken config; the test
suite and ``benchmarks/zoo_hf.py`` share it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = {
    "sequence": ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "class logits"),
    "image": ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "class logits"),
    "token": ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "token logits"),
    "qa": ("MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", "span logits"),
    "causal": ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "vocabulary logits"),
    "masked": ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "vocabulary logits"),
}
_SIZES = {
    "hidden_size": 32, "d_model": 32, "n_embd": 32, "embed_dim": 32, "dim": 32, "emb_dim": 32,
    "num_hidden_layers": 2, "n_layer": 2, "n_layers": 2, "num_layers": 2, "encoder_layers": 1,
    "decoder_layers": 1, "num_decoder_layers": 1,
    "num_attention_heads": 2, "n_head": 2, "n_heads": 2, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "num_heads": 2, "num_key_value_heads": 2, "rotary_dim": 8,
    "intermediate_size": 48, "ffn_dim": 48, "encoder_ffn_dim": 48, "decoder_ffn_dim": 48, "d_ff": 48,
    "n_inner": 48, "hidden_dim": 48, "head_dim": 16, "d_kv": 16,
    "vocab_size": 99, "max_position_embeddings": 64, "n_positions": 64,
    "image_size": 64, "patch_size": 4, "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4,
    "moe_intermediate_size": 16, "num_experts_per_tok": 2, "embedding_size": 32,
    "pooler_hidden_size": 32, "qk_rope_head_dim": 16, "qk_nope_head_dim": 16, "v_head_dim": 16,
    "kv_lora_rank": 16, "q_lora_rank": 16, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1,
    "shared_expert_intermediate_size": 16, "num_channels": 3, "projection_dim": 32,
    "window_size": 2,
}  # fmt: skip
_LISTS = {"hidden_sizes": 8, "embed_dims": 8, "depths": 1, "num_heads": 2}
_GROWING = ("hidden_sizes", "embed_dims")
_SPECIAL_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id")
NUM_LABELS = 3


def tiny_config(model_type: str, **overrides: Any) -> Any:
    """The type's default config with its sizes shrunk, rebuilt from a dict (``overrides`` applied)."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    data = _shrink(cls().to_dict())
    if "num_labels" in overrides and "id2label" not in overrides:
        data.pop("id2label", None)
        data.pop("label2id", None)
    data.update(overrides)
    for key in ("model_type", "transformers_version", "architectures", "out_features", "out_indices"):
        data.pop(key, None)
    return cls(**data)


def _shrink(data: dict) -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and "model_type" in value:
            value = _shrink(value)
        elif key in _SIZES and isinstance(value, int) and not isinstance(value, bool):
            value = _SIZES[key]
        elif key in _LISTS and isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            value = [_LISTS[key] * (2**i if key in _GROWING else 1) for i in range(len(value))]
        out[key] = value
    layers = out.get("num_hidden_layers")
    kinds = out.get("layer_types")
    if isinstance(kinds, list) and isinstance(layers, int):
        out["layer_types"] = kinds[:layers]
        if "full_attention" in kinds and "full_attention" not in out["layer_types"]:
            out["layer_types"][-1] = "full_attention"  # hybrid models need one attention layer
    vocab = out.get("vocab_size")
    for key in _SPECIAL_IDS:
        if isinstance(out.get(key), int) and isinstance(vocab, int) and out[key] >= vocab:
            out[key] = vocab - 1
    return out


def model_class(family: str, model_type: str) -> type | None:
    """The transformers class for a task family and model type (None when it has none)."""
    import transformers
    from transformers.models.auto import modeling_auto

    names = getattr(modeling_auto, FAMILIES[family][0])
    name = names.get(model_type)
    name = name[0] if isinstance(name, (list, tuple)) else name
    return getattr(transformers, name, None) if name else None


def make_folder(root: Path, family: str, model_type: str, **overrides: Any) -> Path:
    """Save a random tiny model of this type and family with save_pretrained; return the folder."""
    import torch

    cls = model_class(family, model_type)
    if cls is None:
        raise ValueError(f"{model_type} has no {family} model")
    extra = {"num_labels": NUM_LABELS} if family in ("sequence", "image", "token") else {}
    config = tiny_config(model_type, **{**extra, **overrides})
    torch.manual_seed(0)
    model = cls(config)
    folder = root / f"{family}-{model_type}"
    model.save_pretrained(str(folder))
    return folder


def expected_head(model: Any, family: str) -> set[str]:
    """Paths a correct head finder may name: the output embeddings of an LM, else the classifier layer."""
    if family in ("causal", "masked"):
        out = model.get_output_embeddings()
        return {p for p, m in model.named_modules() if m is out}
    width = 2 if family == "qa" else model.config.num_labels
    found = set()
    for path, module in model.named_modules():
        if getattr(module, "out_features", None) == width or getattr(module, "out_channels", None) == width:
            found.add(path)
    return found
