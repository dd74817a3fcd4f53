"""Inspecting a checkpoint: `headstudio inspect` vs the torchinfo pipeline vs a bare `import torch`.

Generates random-init torchvision state_dicts (vit_h_14 ~2.5 GB, resnet50 ~100 MB) once into a cache
directory, then measures, each in a fresh subprocess and interleaved round by round:
  bare       python -c "import torch, torchvision"                  (the RSS / wall baseline)
  headstudio headstudio inspect FILE --arch torchvision:NAME --json  (the real CLI)
  torchinfo  build the model, load_state_dict(torch.load(FILE)), torchinfo.summary(model, (1,3,224,224))
and prints medians of wall time and peak RSS with the ratios against the issue's targets.

    .venv/bin/python benchmarks/bench_inspect.py [--repeat 3] [--quick] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Series, fmt_bytes, fmt_table, python_cmd, run_measured

MODELS = ("vit_h_14", "resnet50")
INPUT_SIZE = (1, 3, 224, 224)
WALL_TARGET = 0.35  # ours / torchinfo, on vit_h_14
RSS_TARGET = 1.5  # ours / bare import
DEFAULT_WORKDIR = Path.home() / ".cache" / "headstudio-bench"

_GENERATE = """
import os, sys, torch, torchvision
name, dst = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = torchvision.models.get_model(name, weights=None)
torch.save(model.state_dict(), dst + ".partial")
os.replace(dst + ".partial", dst)
"""
_BARE = "import torch, torchvision"
_TORCHINFO = """
import sys, torch, torchvision, torchinfo
name, path = sys.argv[1], sys.argv[2]
model = torchvision.models.get_model(name, weights=None)
model.load_state_dict(torch.load(path))
torchinfo.summary(model, input_size={input_size})
"""


def checkpoint(workdir: Path, name: str) -> Path:
    """The cached random-init state_dict for ``name``, generated on first use."""
    path = workdir / f"{name}.pt"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"generating {path} (once) ...", flush=True)
        run = run_measured([*python_cmd(_GENERATE), name, str(path)])
        if run.returncode:
            sys.exit(f"generating {name} failed:\n{run.stderr}")
    return path


def warm_page_cache(path: Path) -> None:
    """Read the file once so every contender starts with it in the page cache (none pays the disk)."""
    with path.open("rb") as fh:
        while fh.read(64 << 20):
            pass


def headstudio_cmd() -> list[str]:
    """The installed console script next to this interpreter, else the module."""
    script = Path(sys.executable).with_name("headstudio")
    return [str(script)] if script.exists() else [sys.executable, "-m", "headstudio.cli"]


def contenders(name: str, path: Path) -> dict[str, list[str]]:
    """Label -> command for one model."""
    torchinfo = _TORCHINFO.format(input_size=INPUT_SIZE)
    return {
        "bare import": python_cmd(_BARE),
        "headstudio inspect": [
            *headstudio_cmd(),
            "inspect",
            str(path),
            "--arch",
            f"torchvision:{name}",
            "--json",
        ],
        "torchinfo pipeline": [*python_cmd(torchinfo), name, str(path)],
    }


def measure_model(name: str, path: Path, repeat: int) -> dict[str, Series]:
    """Run every contender ``repeat`` times, round-robin so load drifts hit all alike."""
    commands = contenders(name, path)
    series = {label: Series(label) for label in commands}
    for round_ in range(repeat):
        for label, cmd in commands.items():
            print(f"  {name} round {round_ + 1}/{repeat}: {label} ...", end="", flush=True)
            run = run_measured(cmd)
            print(f" {run.wall:.2f} s ({run.cpu:.2f} s CPU), {fmt_bytes(run.peak_rss)}", flush=True)
            series[label].runs.append(run)
    return series


def check_ours(series: dict[str, Series]) -> str | None:
    """Why the headstudio runs are not a real result (failed or wrong report), or None."""
    for label, s in series.items():
        if s.failed:
            tail = (s.failed.stderr.strip().splitlines() or ["(no output)"])[-1]
            return f"{label} exited {s.failed.returncode}: {tail}"
    report = json.loads(series["headstudio inspect"].runs[-1].stdout.splitlines()[0])
    if report["error"] or report["trace"]["error"] or not report["head"]:
        return f"headstudio report is incomplete: error={report['error']} trace={report['trace']}"
    return None


def render(name: str, path: Path, series: dict[str, Series]) -> str:
    """The table for one model plus the two target ratios."""
    bare, ours, info = (series[k] for k in ("bare import", "headstudio inspect", "torchinfo pipeline"))
    rows = [
        (
            s.label,
            f"{s.wall:.2f} s",
            f"{s.cpu:.2f} s",
            fmt_bytes(s.peak_rss),
            f"{s.wall / bare.wall:.2f}x",
            f"{s.peak_rss / bare.peak_rss:.2f}x",
        )
        for s in (bare, ours, info)
    ]
    size = fmt_bytes(path.stat().st_size)
    report = json.loads(ours.runs[-1].stdout.splitlines()[0]) if ours.runs[-1].stdout else {}
    head = (report.get("head") or {}).get("path")
    wall_ratio, rss_ratio = ours.wall / info.wall, ours.peak_rss / bare.peak_rss
    return "\n".join(
        [
            f"{name} ({size} state_dict, {len(ours.runs)} runs each, medians; head found: {head!r})",
            fmt_table(("process", "wall", "CPU", "peak RSS", "wall/bare", "RSS/bare"), rows),
            f"headstudio/torchinfo wall: {wall_ratio:.2f}x  {_verdict(name, wall_ratio, WALL_TARGET)}",
            f"headstudio/bare peak RSS:  {rss_ratio:.2f}x  {_verdict(None, rss_ratio, RSS_TARGET)}",
            f"headstudio/torchinfo CPU:  {ours.cpu / info.cpu:.2f}x  (less sensitive to a busy machine)",
            f"torchinfo/bare peak RSS:   {info.peak_rss / bare.peak_rss:.2f}x",
        ]
    )


def _verdict(name: str | None, ratio: float, target: float) -> str:
    """The issue sets the wall target on vit_h_14 only (small models are all import time)."""
    if name not in (None, "vit_h_14"):
        return "(wall target applies to vit_h_14; here import time dominates)"
    return f"(target <= {target}x: {'ok' if ratio <= target else 'MISSED'})"


def main(argv: list[str] | None = None) -> int:
    """Generate (once), measure and print; exit 1 if any contender failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (median shown)")
    parser.add_argument("--quick", action="store_true", help="resnet50 only")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="where checkpoints are cached")
    args = parser.parse_args(argv)
    models = ("resnet50",) if args.quick else MODELS
    free = shutil.disk_usage(args.workdir if args.workdir.exists() else Path.home()).free
    print(
        f"machine: {os.cpu_count()} cores, {sys.platform}; python {sys.version.split()[0]}; "
        f"{fmt_bytes(free)} disk free"
    )
    tables, status = [], 0
    for name in models:
        path = checkpoint(args.workdir, name)
        warm_page_cache(path)
        series = measure_model(name, path, args.repeat)
        problem = check_ours(series)
        if problem:
            print(f"{name}: {problem}", file=sys.stderr)
            status = 1
        tables.append(render(name, path, series))
    print("\n" + "\n\n".join(tables))
    return status


if __name__ == "__main__":
    sys.exit(main())
