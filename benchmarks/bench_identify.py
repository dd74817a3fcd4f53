"""Recognising bare weights: index build time, identification cost, and inspect without vs with --arch.

Each measurement runs in a fresh subprocess that first imports torch, torchvision and timm (the floor
every tool pays) and then times only the work after it, so a busy machine's import noise stays out:
  build      build_index() over every torchvision and timm architecture (once; process pool)
  identify   read the file + load the cached index + identify()               (target <= 1 s)
  inspect    headstudio inspect FILE --json, without --arch vs with --arch     (target <= 1.2x)
Medians of --repeat runs (default 5). The index is cached under --cache (default: a fresh directory
in the work dir, so the first run measures the build).

    .venv/bin/python benchmarks/bench_identify.py [--repeat 5] [--cache DIR] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

IDENTIFY_TARGET = 1.0  # seconds beyond the imports
INSPECT_TARGET = 1.2  # identified / --arch
DEFAULT_WORKDIR = Path.home() / ".cache" / "headstudio-bench" / "identify"
# (file name, spec it was saved from) -- non-default class counts, as people fine-tune them
MODELS = (
    ("weights_a.pth", "torchvision:resnet50(num_classes=10)"),
    ("weights_b.pth", "timm:convnext_nano(num_classes=7)"),
    ("weights_c.pth", "timm:vit_small_patch16_224(num_classes=3)"),
)

_PRELUDE = """
import json, sys, time
import torch, torchvision, timm
start = time.perf_counter()
"""
_GENERATE = """
from headstudio.core.opening.specs import build_model
for name, spec in json.loads(sys.argv[1]):
    torch.manual_seed(0)
    torch.save(build_model(spec, meta=False).state_dict(), sys.argv[2] + "/" + name)
print("{}")
"""
_BUILD = """
from headstudio.core.opening.fingerprint_index import build_index, index_path
index = build_index()
elapsed = time.perf_counter() - start
index.save(index_path())
print(json.dumps({"seconds": elapsed, "archs": len(index.archs), "bytes": index_path().stat().st_size}))
"""
_IDENTIFY = """
from pathlib import Path
from headstudio.core.opening.checkpoints import read_checkpoint
from headstudio.core.opening.fingerprint import identify
best = identify(read_checkpoint(Path(sys.argv[1])).state_dict)[0]
print(json.dumps({"seconds": time.perf_counter() - start, "arch": best.arch, "exact": best.exact}))
"""
_INSPECT = """
import contextlib, io
from headstudio.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    status = main(["inspect", *sys.argv[1:], "--json"])
record = json.loads(out.getvalue())
print(json.dumps({"seconds": time.perf_counter() - start, "arch": record["arch"], "status": status}))
"""


def run(code: str, *args: str, env: dict[str, str]) -> dict:
    """Run PRELUDE + code in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + code, *args], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(code: str, *args: str, env: dict[str, str], repeat: int) -> tuple[float, dict]:
    results = [run(code, *args, env=env) for _ in range(repeat)]
    return statistics.median(r["seconds"] for r in results), results[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--cache", type=Path, default=None, help="index cache dir (default: WORKDIR/cache)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cache = args.cache or args.workdir / "cache"
    env = {**os.environ, "HEADSTUDIO_CACHE_DIR": str(cache)}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    missing = [(n, s) for n, s in MODELS if not (args.workdir / n).exists()]
    if missing:
        run(_GENERATE, json.dumps(missing), str(args.workdir), env=env)
    if not list(cache.glob("fingerprints-*.npz")):
        built = run(_BUILD, env=env)
        print(
            f"index build: {built['seconds']:.0f} s for {built['archs']} architectures, "
            f"{built['bytes'] / 2**20:.1f} MiB cached (once per library versions)"
        )
    print(
        f"{'file (saved from)':52} {'identify':>9} {'inspect':>8} {'--arch':>8} {'ratio':>6}  recognised as"
    )
    for name, spec in MODELS:
        path = str(args.workdir / name)
        ident, found = median(_IDENTIFY, path, env=env, repeat=args.repeat)
        plain, record = median(_INSPECT, path, env=env, repeat=args.repeat)
        given, _ = median(_INSPECT, path, "--arch", spec, env=env, repeat=args.repeat)
        ok = "ok" if ident <= IDENTIFY_TARGET and plain <= INSPECT_TARGET * given else "MISSED"
        print(
            f"{name + ' (' + spec + ')':52} {ident:8.2f}s {plain:7.2f}s {given:7.2f}s {plain / given:5.2f}x"
            f"  {record['arch']}{'' if found['exact'] else ' (not exact)'}  {ok}"
        )
    print(f"targets: identify <= {IDENTIFY_TARGET:.1f} s beyond the imports; inspect <= {INSPECT_TARGET}x")


if __name__ == "__main__":
    main()
