"""Opening a sharded ~1B-parameter Llama-style bf16 folder: Head Studio vs transformers + torchinfo.

Generates the folder once in /tmp (random bf16 weights written shard by shard, so at most one shard
is ever in memory), then runs each contender in fresh processes (median of --repeat runs):

  import           ``import torch, transformers`` alone (the target's reference)
  config class     the same plus ``from transformers import LlamaConfig`` (reading the config at all)
  model code       the same plus ``from transformers import LlamaConfig, LlamaForCausalLM`` (transformers'
                   lazy import of the model's code: what any tool building the model pays on top)
  headstudio       open the folder + tree with every module's shapes and the head
  transformers     ``from_pretrained`` + ``torchinfo.summary`` with the same token inputs

    PYTHONPATH=src python benchmarks/bench_hf.py [--folder /tmp/hs-llama-1b] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import fmt_bytes, fmt_table, measure, python_cmd

CONFIG = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 2048,
    "tie_word_embeddings": False, "dtype": "bfloat16",
}  # fmt: skip
SHARD_BYTES = 500 * 2**20
LENGTH = 128

IMPORT = "import torch, transformers"
# Reading a Llama config with transformers' own class already pulls in torchvision and torch._dynamo
# (configuration_llama -> utils.type_validators -> video_utils -> image_utils -> torchvision): the floor of
# any tool that reads the config through transformers.
CONFIG_CLASS = "import torch, transformers\nfrom transformers import LlamaConfig"
# transformers imports a model's code lazily; Llama's config module pulls in image utilities, torchvision
# and torch._dynamo. Every contender that builds the model pays this; the bare import above does not.
MODEL_CODE = "import torch, transformers\nfrom transformers import LlamaConfig, LlamaForCausalLM"
HEADSTUDIO = """
import sys
from headstudio.core.opening.sources import open_source
doc = open_source(sys.argv[1])
tree = doc.tree()
assert doc.head.path == "lm_head" and tree.find("model.layers.15.mlp").output_shape == [1, 128, 2048]
print(doc.trace().mode, doc.param_counts()[0])
"""
TRANSFORMERS = """
import sys, torch, torchinfo
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype="auto")
ids = torch.full((1, 128), 5)
info = torchinfo.summary(model, input_data={"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                         depth=10, verbose=0)
print(info.total_params)
"""


def generate(folder: Path) -> int:
    """Write config.json, bf16 shards and the index; returns the parameter count. Skips if present."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    if (folder / "model.safetensors.index.json").exists():
        return json.loads((folder / "model.safetensors.index.json").read_text())["metadata"][
            "total_parameters"
        ]
    folder.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(**CONFIG)
    config.architectures = ["LlamaForCausalLM"]
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlamaForCausalLM(config).state_dict().items()}
    groups, current, size = [], [], 0
    for name, shape in shapes.items():
        nbytes = 2 * int(torch.Size(shape).numel())
        if current and size + nbytes > SHARD_BYTES:
            groups.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    groups.append(current)
    weight_map, total = {}, 0
    generator = torch.Generator().manual_seed(0)
    for i, names in enumerate(groups, 1):
        shard = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: (torch.randn(shapes[n], generator=generator) * 0.02).to(torch.bfloat16) for n in names}
        save_file(tensors, folder / shard, metadata={"format": "pt"})
        total += sum(t.numel() for t in tensors.values())
        weight_map.update(dict.fromkeys(names, shard))
        del tensors
    config.save_pretrained(folder)
    index = {"metadata": {"total_size": 2 * total, "total_parameters": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folder", default="/tmp/hs-llama-1b")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = Path(args.folder)
    params = generate(folder)
    shards = len(list(folder.glob("model-*.safetensors")))
    print(f"{folder}: {params / 1e9:.2f}B parameters, bf16, {shards} shards")
    contenders = [
        ("import torch, transformers", python_cmd(IMPORT)),
        ("+ import LlamaConfig", python_cmd(CONFIG_CLASS)),
        ("+ import Llama model code", python_cmd(MODEL_CODE)),
        ("headstudio open + tree", [*python_cmd(HEADSTUDIO), str(folder)]),
        ("from_pretrained + torchinfo", [*python_cmd(TRANSFORMERS), str(folder)]),
    ]
    results = []
    for _ in range(args.repeat):  # interleaved, so a busy moment hurts every contender alike
        for label, cmd in contenders:
            run = measure(label, cmd, 1)
            if run.failed:
                print(f"{label} failed: {run.failed.stderr[-400:]}")
                return 1
            results.append(run)
    series = {label: [s for s in results if s.label == label] for label, _ in contenders}
    rows = []
    floor = None
    for label, group in series.items():
        runs = [r for s in group for r in s.runs]
        wall = sorted(r.wall for r in runs)[len(runs) // 2]
        rss = sorted(r.peak_rss for r in runs)[len(runs) // 2]
        floor = floor or (wall, rss)
        rows.append(
            (label, f"{wall:.2f} s", f"{wall / floor[0]:.2f}x", fmt_bytes(rss), f"{rss / floor[1]:.2f}x")
        )
    print(fmt_table(("contender", "wall", "vs import", "peak RSS", "vs import"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
