"""Edit + save of vit_h_14 to .safetensors: `headstudio.core.saving.atomic` vs `safetensors.torch.save_file`.

Uses the random-init vit_h_14 state_dict that bench_inspect.py caches (generated here if missing). Each
contender runs in a fresh subprocess, interleaved round by round:
  bare        python -c "import torch, torchvision"                     (the RSS baseline)
  headstudio  open_source(FILE, arch) + ReplaceHead(10) + save(doc, OUT.safetensors)
              (streamed write, fsync, full verification by reopening, atomic rename)
  save_file   torch.load(FILE, mmap=True) + replace heads.head with a new Linear + save_file(state, OUT)
Throughput is the file size over the save call's own seconds (measured inside the process, imports
excluded). Peak RSS is the kernel's high-water mark (file-backed mmap pages count once touched);
peak anonymous memory (sampled RssAnon) shows what was really copied.

    .venv/bin/python benchmarks/bench_save.py [--repeat 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Series, fmt_bytes, fmt_table, python_cmd, run_measured
from bench_inspect import DEFAULT_WORKDIR, checkpoint, warm_page_cache

MODEL = "vit_h_14"
THROUGHPUT_TARGET = 0.8  # ours / save_file
RSS_TARGET = 1.5  # ours / bare import
SETTLE_SECONDS = 3.0

_ANON_SAMPLER = """
import threading, time
peak_anon = [0]
def _sample():
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak_anon[0] = max(peak_anon[0], int(line.split()[1]) * 1024)
        time.sleep(0.02)
threading.Thread(target=_sample, daemon=True).start()
"""
_OURS = (
    _ANON_SAMPLER
    + """
import json, sys, time
from headstudio.core.opening.sources import open_source
from headstudio.core.saving.atomic import save
path, out = sys.argv[1], sys.argv[2]
doc = open_source(path, arch="torchvision:vit_h_14")
try:
    from headstudio.core.edits import ReplaceHead
    edit = ReplaceHead(doc.head.path, 10, seed=0)
    edit.apply(doc)
    doc.edits.append(edit)
    edited = True
except ImportError:
    edited = False
t0 = time.perf_counter()
report = save(doc, out)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "bytes": report.bytes_written, "verified": report.tensors_verified,
                  "edited": edited, "peak_anon": peak_anon[0]}))
"""
)
_PLAIN = (
    _ANON_SAMPLER
    + """
import json, os, sys, time, torch
from safetensors.torch import save_file
path, out = sys.argv[1], sys.argv[2]
state = torch.load(path, mmap=True, weights_only=True)
torch.manual_seed(0)
head = torch.nn.Linear(state["heads.head.weight"].shape[1], 10)
state["heads.head.weight"], state["heads.head.bias"] = head.weight.detach(), head.bias.detach()
t0 = time.perf_counter()
save_file(state, out, metadata={"format": "pt"})
seconds = time.perf_counter() - t0
fd = os.open(out, os.O_RDONLY)
os.fsync(fd)
os.close(fd)
synced = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "synced": synced, "bytes": os.path.getsize(out), "verified": 0,
                  "edited": True, "peak_anon": peak_anon[0]}))
"""
)


def contenders(path: Path, out: Path) -> dict[str, list[str]]:
    """Label -> command."""
    return {
        "bare import": python_cmd("import torch, torchvision"),
        "headstudio save": [*python_cmd(_OURS), str(path), str(out)],
        "safetensors save_file": [*python_cmd(_PLAIN), str(path), str(out)],
    }


def settle(out: Path) -> None:
    """Delete the last output and let the disk go quiet (freeing 2.5 GB issues discards on this mount)."""
    out.unlink(missing_ok=True)
    os.sync()
    time.sleep(SETTLE_SECONDS)


def measure(path: Path, out: Path, repeat: int) -> tuple[dict[str, Series], dict[str, list[dict]]]:
    """Round-robin runs; the saved file is removed after each (and the disk settles) so no run pays for
    the previous one's output."""
    commands = contenders(path, out)
    series = {label: Series(label) for label in commands}
    inner: dict[str, list[dict]] = {label: [] for label in commands}
    settle(out)  # an output left by an interrupted run
    for round_ in range(repeat):
        for label, cmd in commands.items():
            print(f"  round {round_ + 1}/{repeat}: {label} ...", end="", flush=True)
            run = run_measured(cmd)
            settle(out)
            if run.returncode:
                sys.exit(f"{label} failed:\n{run.stderr[-2000:]}")
            series[label].runs.append(run)
            speed = ""
            if run.stdout.strip():
                result = json.loads(run.stdout.strip().splitlines()[-1])
                inner[label].append(result)
                speed = f", save {result['bytes'] / result['seconds'] / 1e9:.2f} GB/s"
            print(f" {run.wall:.2f} s, {fmt_bytes(run.peak_rss)}{speed}", flush=True)
    return series, inner


def render(series: dict[str, Series], inner: dict[str, list[dict]]) -> str:
    """The table and the two target ratios."""
    bare = series["bare import"]
    rows, speed, anon = [], {}, {}
    for label, s in series.items():
        runs = inner[label]
        speed[label] = statistics.median(r["bytes"] / r["seconds"] for r in runs) / 1e9 if runs else 0.0
        anon[label] = statistics.median(r["peak_anon"] for r in runs) if runs else 0.0
        rows.append(
            (label, f"{s.wall:.2f} s", f"{s.cpu:.2f} s", f"{speed[label]:.2f} GB/s" if runs else "-",
             fmt_bytes(s.peak_rss),
             f"{s.peak_rss / bare.peak_rss:.2f}x", fmt_bytes(anon[label]) if runs else "-")
        )  # fmt: skip
    ours, plain = "headstudio save", "safetensors save_file"
    ratio, rss = speed[ours] / speed[plain], series[ours].peak_rss / bare.peak_rss
    synced = statistics.median(r["bytes"] / r["synced"] for r in inner[plain]) / 1e9
    edited = all(r["edited"] for r in inner[ours])
    return "\n".join(
        [
            f"{MODEL}: edit ({'ReplaceHead 10' if edited else 'no edit: edits API missing'}) + save "
            f"to .safetensors ({len(bare.runs)} runs each, medians)",
            fmt_table(
                ("process", "wall", "CPU", "save throughput", "peak RSS", "RSS/bare", "peak anon"), rows
            ),
            f"headstudio/save_file throughput: {ratio:.2f}x  (target >= {THROUGHPUT_TARGET}x: "
            f"{'ok' if ratio >= THROUGHPUT_TARGET else 'MISSED'}; ours includes fsync + full verification)",
            f"headstudio/bare peak RSS:        {rss:.2f}x  (target <= {RSS_TARGET}x: "
            f"{'ok' if rss <= RSS_TARGET else 'MISSED'})",
            f"save_file/bare peak RSS:         {series[plain].peak_rss / bare.peak_rss:.2f}x",
            f"save_file + fsync (crash-safe like ours, still unverified): {synced:.2f} GB/s; "
            f"headstudio/that: {speed[ours] / synced:.2f}x",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Generate the checkpoint if needed, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (median shown)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="where checkpoints are cached")
    args = parser.parse_args(argv)
    path = checkpoint(args.workdir, MODEL)
    warm_page_cache(path)
    series, inner = measure(path, args.workdir / f"{MODEL}.saved.safetensors", args.repeat)
    print("\n" + render(series, inner))
    return 0


if __name__ == "__main__":
    sys.exit(main())
