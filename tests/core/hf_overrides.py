"""Per-type corrections to ``hf_fixtures``' generic tiny configs, where no general rule can work.

``TYPE_OVERRIDES`` is applied after the shrink to the config or sub-config of that model type; the
reason is beside each entry.
"""

from __future__ import annotations

from typing import Any

TYPE_OVERRIDES: dict[str, dict[str, Any]] = {
    "timm_wrapper": {"architecture": "test_resnet"},  # timm's 0.5M-parameter test ResNet, not a resnet50
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},  # attention_layers is derived from it
    "reformer": {"axial_pos_embds_dim": [16, 16], "axial_pos_shape": [8, 8]},  # dims sum to hidden_size
    "bit": {"num_groups": 2},  # group norm groups must divide the 8-wide first stage
    "zaya": {"num_experts_per_tok": 1},  # ZAYA supports top-1 routing only
    "esm": {"pad_token_id": 1, "mask_token_id": 32},  # its default has no special tokens at all
    "mamba2": {"num_heads": 4, "n_groups": 1},  # heads * head_dim must be expand * hidden_size
    "lfm2_moe": {"layer_types": ["conv", "full_attention"]},  # its default leaves the layer kinds unset
    # a partial rotary factor of 0.334 needs an even rotary width; sliding-window layers have twice
    # the key/value heads, which must stay at most the attention heads
    "mimo_v2_flash": {"head_dim": 24, "num_key_value_heads": 1},
    "xlstm": {"embedding_dim": 32, "num_blocks": 2},  # its width and depth under other names
    "falcon_h1": {"mamba_d_ssm": 64},  # mamba heads * mamba head width
    "dbrx": {"attn_config": {"kv_n_heads": 1, "rope_theta": 1e4, "clip_qkv": 8.0}},  # default lacks both
    "shieldgemma2": {"yes_token_index": 90, "no_token_index": 91},  # class attributes, not in to_dict()
    "layoutlmv3": {"hidden_size": 36, "coordinate_size": 6, "shape_size": 6},  # 4 * coord + 2 * shape
    "lilt": {"hidden_size": 48},  # six box embeddings of hidden/6 each, layout width hidden/4
    "bros": {"dim_bbox_projection": 16},  # the box projection is one attention head wide
    "bamba": {"attn_layer_indices": [1]},  # all Mamba by default; hybrid as released checkpoints are
    "granitemoehybrid": {"layers_block_type": ["linear_attention", "full_attention"]},  # as bamba
    "dots3_note_text": {"head_dim": 32},  # the sliding-window head must be qk_nope + qk_rope wide
    "dots3_note_vision_encoder": {"adapter_out_dim": 32},  # the vision adapter writes the text width
    "dots3_note_audio_encoder": {"adapter_out_dim": 32},  # so does the audio one
    "qwen4_exp_text": {  # its default leaves its sparse-attention indexer unset
        "indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 8,
        "indexer_compress_ratio": 2,
    },
    "dory": {  # its dict form counts an attention and an mlp block per layer; the three parts sum to them
        "num_hidden_layers": 6, "n_input_layers": 2, "n_recurrent_layers": 2, "n_output_layers": 2,
        "layer_types": ["sliding_attention", "mlp", "full_attention", "mlp", "sliding_attention", "mlp"],
    },
    "cohere_compass_text": {  # its default leaves the RoPE parameters of its attention layers empty
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e4}},
    },
    # hierarchical vision models whose stage widths are spelt out more than once
    "efficientnet": {"width_coefficient": 0.25, "depth_coefficient": 0.1, "hidden_dim": 320},  # round(1280 w)
    "hgnet_v2": {  # the stem feeds stage 1 and the last stage's width is the classifier's input
        "stem_channels": [3, 8, 8], "stage_in_channels": [8, 8, 16, 32], "stage_mid_channels": [8, 8, 8, 8],
        "stage_out_channels": [8, 16, 32, 64], "stage_numb_of_layers": [2, 2, 2, 2],
    },
    "textnet": {"stem_out_channels": 8, "image_size": [64, 64]},  # the stem feeds hidden_sizes[0] = 8
    # Zamba: attention widths serialised beside the sizes they derive from
    "zamba": {  # 2 * hidden, its per-head share, hidden / 16; the shared block needs two hybrid layers
        "attention_hidden_size": 64, "attention_head_dim": 32, "mamba_dt_rank": 2, "num_hidden_layers": 3,
        "layers_block_type": ["linear_attention", "hybrid", "hybrid"],
    },
    "zamba2": {  # 2 * hidden, its per-head share, expand * hidden / mamba heads, hidden / heads
        "attention_hidden_size": 64, "attention_head_dim": 32, "mamba_headdim": 8, "kv_channels": 16,
        "num_query_groups": 2, "hybrid_layer_ids": [1], "adapter_rank": 8,
    },
}  # fmt: skip
DEFAULT_ARGS: dict[str, dict[str, Any]] = {  # types whose default config fails transformers' own validation
    "gemma4_assistant": {"text_config": {"hidden_size_per_layer_input": 0, "vocab_size_per_layer_input": 0}},
}
FAMILY_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("causal", "reformer"): {"is_decoder": True},  # ReformerModelWithLMHead requires it
}
