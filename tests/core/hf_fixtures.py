"""Tiny Hugging Face model folders written by transformers' own ``save_pretrained`` (random init, no network).

``make_folder`` builds one model type for one task family from a generic shrunken config (sizes
shrunk, per-layer lists and tables cut to the kept layers, derived sizes and special token ids kept
consistent, ``hf_overrides`` where no general rule works), falling back to a gentler config (default
sizes, fewer layers, a few M parameters at most); the test suite and ``benchmarks/zoo_hf.py`` share it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hf_overrides import DEFAULT_ARGS, FAMILY_OVERRIDES, TYPE_OVERRIDES

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
    "window_size": 2, "d_head": 16, "mamba_n_heads": 4, "mamba_d_head": 16, "num_experts_per_token": 2,
    "linear_head_dim": 16, "linear_num_heads": 2, "num_expert_group": 1, "n_shared_experts": 1,
    "hidden_size_global": 32, "encoder_hash_byte_group_vocab": 99, "expert_ffn_hidden_size": 16,
    "zero_expert_num": 2, "moe_topk": 2, "ffn_hidden_size": 48, "lru_width": 32, "d_latents": 32,
    "num_latents": 16,
}  # fmt: skip
_LISTS = {  # per-stage lists of hierarchical models
    "hidden_sizes": 8, "embed_dims": 8, "embed_dim": 8, "depths": 1, "num_heads": 2,
    "num_attention_heads": 1,
}  # fmt: skip
_GROWING = ("hidden_sizes", "embed_dims", "embed_dim")
_SPECIAL_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id")
_NONE_SIZES = (  # sizes a default may leave None although the model needs them
    "head_dim", "num_key_value_heads", "num_experts_per_tok", "vocab_size", "d_head", "n_routed_experts",
    "n_shared_experts",
)  # fmt: skip
_LAYER_COUNTS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers")
_MAX_LAYERS = 4  # layers kept when a model mixes more than two kinds of layer
NUM_LABELS = 3
GENTLE_MAX_PARAMS = 8_000_000  # the fallback config's model stays small enough for the zoo's minutes


def tiny_config(model_type: str, **overrides: Any) -> Any:
    """The type's default config with its sizes shrunk, rebuilt from a dict (``overrides`` applied)."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    return _rebuild(cls, _shrink(cls(**DEFAULT_ARGS.get(model_type, {})).to_dict()), overrides)


def gentle_config(model_type: str, **overrides: Any) -> Any:
    """The type's default sizes with only its depth cut (two layers, one block per stage), for types
    whose sizes depend on each other in ways the generic shrink breaks (``build`` caps its size)."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    data = _fewer_layers(cls(**DEFAULT_ARGS.get(model_type, {})).to_dict())
    return _rebuild(cls, data, overrides)


def _fewer_layers(data: dict) -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and "model_type" in value:
            value = _fewer_layers(value)
        elif key in _LAYER_COUNTS and _is_int(value) and value > 2:
            value = 2
        elif key in ("depths", "num_layers", "block_repeats") and isinstance(value, list) and value:
            value = [1 if _is_int(v) else v for v in value]
        out[key] = value
    _keep_layers(data, out)
    _clamp_token_ids(out)
    return out


def _rebuild(cls: type, data: dict, overrides: dict) -> Any:
    if "num_labels" in overrides and "id2label" not in overrides:
        # timm_wrapper's to_dict writes its labels as num_classes/label_names, which would outvote num_labels
        for key in ("id2label", "label2id", "num_classes", "label_names"):
            data.pop(key, None)
    data.update(overrides)
    for key in ("model_type", "transformers_version", "architectures", "out_features", "out_indices"):
        data.pop(key, None)
    return cls(**data)


def _shrink(data: dict) -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and "model_type" in value:
            value = _shrink(value)
        elif key in _SIZES and (_is_int(value) or (value is None and key in _NONE_SIZES)):
            value = _SIZES[key]
        elif key in _LISTS and isinstance(value, list) and value and all(_is_int(v) for v in value):
            value = [_LISTS[key] * (2**i if key in _GROWING else 1) for i in range(len(value))]
        out[key] = value
    _derive_sizes(data, out)
    _keep_layers(data, out)
    out.update(TYPE_OVERRIDES.get(data.get("model_type"), {}))
    _clamp_token_ids(out)
    return out


def _derive_sizes(data: dict, out: dict) -> None:
    """Sizes defined by others keep their relation: MLA query widths (nope + rope), extra vocabularies."""
    nope, rope = data.get("qk_nope_head_dim"), data.get("qk_rope_head_dim")
    if _is_int(nope) and _is_int(rope):
        for key in ("head_dim", "qk_head_dim"):
            if data.get(key) == nope + rope:
                out[key] = out["qk_nope_head_dim"] + out["qk_rope_head_dim"]
            elif data.get(key) == rope:
                out[key] = out["qk_rope_head_dim"]
    width = data.get("hidden_size")
    for key, value in data.items():
        if key in _SIZES or not _is_int(value) or value <= 0:
            continue
        if "vocab_size" in key and _is_int(out.get("vocab_size")) and value > out["vocab_size"]:
            out[key] = out["vocab_size"]  # e.g. the unpadded or per-layer-input vocabulary, not token types
        elif key.endswith(("_dim", "_size")) and value == width and _is_int(out.get("hidden_size")):
            out[key] = out["hidden_size"]  # e.g. an adapter's input width


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _keep_layers(data: dict, out: dict) -> None:
    """Cut per-layer lists and tables to the kept layers: one of each kind, at least the new count."""
    key = next((k for k in _LAYER_COUNTS if _is_int(data.get(k)) and _is_int(out.get(k))), None)
    if key is None or data[key] <= out[key] or isinstance(data.get("depths"), list):
        return  # (with ``depths``, the count is of stages, which the shrink keeps)
    old, new = data[key], out[key]
    lists = {k: v for k, v in out.items() if isinstance(v, list) and len(v) == old and k not in _LISTS}
    table = out.get("per_layer_config")
    table = {int(k): _shrink(v) for k, v in table.items()} if _layer_table(table) else None
    kinds = [repr([v[i] for v in lists.values()] + [(table or {}).get(i)]) for i in range(old)]
    keep = sorted({kinds.index(k) for k in kinds})[: max(new, _MAX_LAYERS)]
    keep = sorted(keep + [i for i in range(old) if i not in keep][: max(0, new - len(keep))])
    for name, values in lists.items():
        picked = [values[i] for i in keep]
        if name in _SIZES and all(_is_int(v) for v in picked):  # per-layer sizes (Gemma 3n's widths)
            picked = [_SIZES[name]] * len(picked)
        elif "heads" in name and all(_is_int(v) for v in picked):  # per-layer head counts
            picked = [_SIZES["num_attention_heads"]] * len(picked)
        out[name] = picked
    if table is not None:
        out["per_layer_config"] = {n: table[i] for n, i in enumerate(keep) if i in table}
    for name in _LAYER_COUNTS:
        if _is_int(out.get(name)) and out[name] == new:
            out[name] = len(keep)
    if _is_int(out.get("num_kv_shared_layers")):  # layers reusing others' cache: all of them, or none
        out["num_kv_shared_layers"] = len(keep) if data["num_kv_shared_layers"] == old else 0


def _layer_table(table: Any) -> bool:
    """True for a per-layer table keyed by layer index (``{"05": {...}}``)."""
    return isinstance(table, dict) and all(str(k).isdigit() for k in table)


def _clamp_token_ids(out: dict) -> None:
    """Special token ids (``*_token_id``, ``*_token_index``) move inside the shrunken vocabulary, distinct."""
    text = out.get("text_config")
    vocab = out.get("vocab_size", text.get("vocab_size") if isinstance(text, dict) else None)
    if not _is_int(vocab):
        return
    special = [k for k in out if k in _SPECIAL_IDS or k.endswith(("_token_id", "_token_index"))]
    values = [v for k in special for v in (out[k] if isinstance(out[k], list) else [out[k]])]
    high = sorted({v for v in values if _is_int(v) and v >= vocab})
    moved = {v: vocab - 1 - n for n, v in enumerate(high)}
    for key in special:
        value = out[key]
        if isinstance(value, list):
            out[key] = [moved.get(v, v) if _is_int(v) else v for v in value]
        elif _is_int(value):
            out[key] = moved.get(value, value)


def model_class(family: str, model_type: str) -> type | None:
    """The transformers class for a task family and model type (None when it has none)."""
    import transformers
    from transformers.models.auto import modeling_auto

    names = getattr(modeling_auto, FAMILIES[family][0])
    name = names.get(model_type)
    name = name[0] if isinstance(name, (list, tuple)) else name
    return getattr(transformers, name, None) if name else None


def make_folder(
    root: Path, family: str, model_type: str, check: Callable[[Any], None] | None = None, **overrides: Any
) -> Path:
    """Save a random tiny model of this type and family with save_pretrained; return the folder.

    The generic tiny config comes first; a gentler one (default sizes, fewer layers) is the fallback when
    transformers cannot build the tiny one or ``check(model)`` (e.g. the model's own forward) rejects it.
    """
    cls = model_class(family, model_type)
    if cls is None:
        raise ValueError(f"{model_type} has no {family} model")
    extra = {"num_labels": NUM_LABELS} if family in ("sequence", "image", "token") else {}
    extra.update(FAMILY_OVERRIDES.get((family, model_type), {}))
    errors: list[Exception] = []
    for make, limit in ((tiny_config, None), (gentle_config, GENTLE_MAX_PARAMS)):
        try:
            model = build(cls, make(model_type, **{**extra, **overrides}), limit)
        except Exception as err:
            errors.append(err)
            continue
        try:
            if check is not None:
                check(model)
        except Exception as err:
            errors.append(CheckFailed(f"{type(err).__name__}: {first_line(str(err))}"))
            continue
        folder = root / f"{family}-{model_type}"
        model.save_pretrained(str(folder))
        return folder
    raise next((e for e in errors if isinstance(e, CheckFailed)), errors[0])


class CheckFailed(Exception):
    """A tiny model was built, but ``make_folder``'s ``check`` rejected every config tried."""


def first_line(text: str) -> str:
    """The first non-empty line of an error text, at most 200 characters."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]


def build(cls: type, config: Any, max_params: int | None = None) -> Any:
    """``cls(config)`` seeded, with the sub-config the class takes (as transformers' auto classes pick it).

    ValueError when the model has more than ``max_params`` parameters (counted on the meta device first).
    """
    import torch

    if not isinstance(config, cls.config_class):
        subs = [getattr(config, k, None) for k in getattr(config, "sub_configs", {})]
        config = next((c for c in subs if isinstance(c, cls.config_class)), config)
    if max_params is not None:
        with torch.device("meta"):
            count = sum(p.numel() for p in cls(config).parameters())
        if count > max_params:
            raise ValueError(f"{count / 1e6:.1f}M parameters is more than a tiny model may have")
    torch.manual_seed(0)
    return cls(config).eval()


def expected_head(model: Any, family: str) -> set[str]:
    """Paths a correct head finder may name: the output embeddings of an LM, else the classifier layer."""
    kind = model.config.model_type
    if family in ("causal", "masked") and kind == "perceiver":
        # Perceiver's MLM logits are its decoder's product with the input embeddings (no output layer)
        return {"embedding_decoder", "perceiver.input_preprocessor.embeddings"}
    if family in ("causal", "masked"):
        return _output_embeddings(model)
    if family == "qa" and kind == "lxmert":
        # LXMERT's "question answering" is visual QA: it scores num_qa_labels answers, not spans
        answers = model.config.num_qa_labels
        return {p for p, m in model.named_modules() if getattr(m, "out_features", None) == answers}
    if family == "qa" and kind == "splinter":
        # Splinter's QA head is its question-aware span selection layer (QASS): start and end scores
        # come from bilinear products with the question token, so no Linear has width 2.
        return {p for p, _ in model.named_modules() if p.startswith("splinter_qass")}
    width = 2 if family == "qa" else model.config.num_labels
    found = set()
    for path, module in model.named_modules():
        if getattr(module, "out_features", None) == width or getattr(module, "out_channels", None) == width:
            found.add(path)
    if not found and family == "image":
        # ShieldGemma 2 classifies images by reading its yes/no token logits off its language model's head
        found = _output_embeddings(model)
    return found


def expected_role(model: Any, family: str) -> str:
    """The role a correct head finder gives that head: the family's, but class logits for LXMERT's answers."""
    if family == "qa" and model.config.model_type == "lxmert":
        return "class logits"
    return FAMILIES[family][1]


def _output_embeddings(model: Any) -> set[str]:
    heads = [m.get_output_embeddings() for m in model.modules() if hasattr(m, "get_output_embeddings")]
    heads = [h for h in heads if h is not None]
    # MusicGen's output embeddings are a ModuleList of one head per codebook: each of them is the head
    heads += [item for h in heads if type(h).__name__ == "ModuleList" for item in h]
    return {p for p, m in model.named_modules() if any(m is h for h in heads)}
